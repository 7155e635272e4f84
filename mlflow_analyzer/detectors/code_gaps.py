"""LLM client calls in the code (from --repo) that no span covers."""

from __future__ import annotations

import json

from .base import Context, Detector, confirm_with, fired, gap_finding


class CodeGaps(Detector):
    name = "code_gaps"
    title = "untraced LLM calls in the code"

    def observe(self, trace, facts) -> None:
        pass

    def skipped(self, ctx: Context) -> str | None:
        if ctx.locate_result is None:
            return "no --repo given: the code was not scanned"
        if not ctx.code_gaps:
            return "not asked for"
        return None

    def clean_summary(self, ctx: Context) -> str:
        scanned = getattr(ctx.locate_result, "files_scanned", None)
        where = f" in {scanned:,} Python files" if isinstance(scanned, int) else ""
        return f"every LLM client call found{where} runs under a span or an enabled autolog"

    def findings(self, ctx: Context) -> list[dict]:
        if ctx.locate_result is None or not ctx.code_gaps:
            return []
        gaps = getattr(ctx.locate_result, "gaps", None)
        if gaps is None and isinstance(ctx.locate_result, dict):
            gaps = ctx.locate_result.get("gaps")
        out = []
        for g in gaps or []:
            g = g if isinstance(g, dict) else getattr(g, "__dict__", {})
            where = f"{g.get('file')}:{g.get('line')}"
            f = gap_finding(
                title=f"{g.get('client', 'LLM')} call in `{g.get('function')}` has no span",
                names=[],
                ids=[],
                confidence=85,
                issue=f"`{g.get('function')}` at {where} calls {g.get('client')} with no span around it: {g.get('reason', '')}".strip(),
                impact="Its latency, tokens, cost and errors never reach MLflow.",
                suggestion="Decorate the function with @mlflow.trace(span_type='LLM') or enable the client's MLflow autolog.",
                metrics={"file": g.get("file"), "line": g.get("line"), "client": g.get("client"),
                         "thresholds": [fired("LLM calls outside any span", 1, ">=", 1)]},
                impact_score=0.5,
                kind="untraced_llm_call",
                confirm=confirm_with(
                    "locate",
                    f"[.gaps[] | select(.file == {json.dumps(g.get('file'))} and .function == {json.dumps(g.get('function'))})] | length",
                    1, "0: the call runs under a span"),
            )
            f["code"] = where
            out.append(f)
        return out
