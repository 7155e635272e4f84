"""The quick health check of one trace: what failed, where time went, what it cost, what
judges said (a judge's own failure told apart from the trace's)."""

from __future__ import annotations

from typing import Any

from .model import Trace, iso_ms
from .stats import is_timeout, span_cost


def _clip(text: str | None, n: int = 300) -> str | None:
    """Redacted, then shortened: a key is recognised before it is cut."""
    from .redact import clip

    return clip(text, n)


def trace_health(trace: Trace, *, slowest: int = 5) -> dict[str, Any]:
    causes = {id(s) for s in trace.root_causes()}
    error_spans = [
        {
            "span_id": s.span_id,
            "name": s.name,
            "type": s.span_type,
            "error_type": s.error_type,
            "message": _clip(s.error_message or s.status_message),
            "duration_ms": round(s.duration_ms, 3),
            "root_cause": id(s) in causes,
            "timeout": is_timeout(s),
            "depth": s.depth,
        }
        for s in trace.error_spans()
    ]
    feedback = [a for a in trace.assessments if a.kind == "feedback" and a.valid]
    judge_errors = [a for a in feedback if a.is_judge_error]
    failing = [a for a in feedback if a.passed is False]
    passing = [a for a in feedback if a.passed is True]
    other = [a for a in feedback if a.passed is None and not a.is_judge_error]
    # A failed call has no usage to record, and a wrapper's usage is on the call inside it.
    llm_no_usage = [
        s.name for s in trace.spans
        if s.is_llm and not s.is_error and not s.has_usage and not any(c.has_usage for c in s.children)
    ]
    llm_no_model = [s.name for s in trace.spans if s.is_llm and not s.model]
    top = sorted(trace.spans, key=lambda s: s.self_ns, reverse=True)[:slowest]
    cost = trace.cost_usd
    estimated = False
    if cost is None:
        parts = [span_cost(s) for s in trace.spans if s.has_usage]
        priced = [c for c, _ in parts if c is not None]
        if priced:
            cost, estimated = sum(priced), True
    problems = []
    if trace.is_error:
        problems.append("trace state is ERROR")
    elif error_spans:
        problems.append(f"{len(error_spans)} error span(s) inside an OK trace (caught errors)")
    if failing:
        problems.append("failing assessment(s): " + ", ".join(sorted({a.name for a in failing})))
    if judge_errors:
        problems.append(
            "judge/scorer error(s), not trace errors: " + ", ".join(sorted({a.name for a in judge_errors}))
        )
    if llm_no_usage:
        problems.append(f"{len(llm_no_usage)} successful LLM span(s) without token usage")
    if trace.orphans:
        problems.append(f"{len(trace.orphans)} orphan span(s) (parent missing)")
    if trace.cycle_spans:
        problems.append(f"{len(trace.cycle_spans)} span(s) on a parent cycle (cut to show a tree)")
    if trace.duplicate_id_spans:
        problems.append(f"{len(trace.duplicate_id_spans)} span(s) reusing another span's id")
    return {
        "trace_id": trace.trace_id,
        "state": trace.state,
        "request_time": iso_ms(trace.request_time_ms),
        "duration_ms": trace.duration_ms,
        "span_count": len(trace.spans),
        "session_id": trace.session_id,
        "user_id": trace.user_id,
        "problems": problems,
        "root_causes": [e for e in error_spans if e["root_cause"]],
        "error_spans": error_spans,
        "assessments": {
            "failing": [_assessment(a) for a in failing],
            "judge_errors": [_assessment(a) for a in judge_errors],
            "passing": [_assessment(a) for a in passing],
            "other": [_assessment(a) for a in other],
        },
        "tokens": {"input": trace.input_tokens, "output": trace.output_tokens, "total": trace.total_tokens},
        "cost_usd": None if cost is None else round(cost, 6),
        "cost_estimated": estimated,
        "slowest_spans_by_self_time": [
            {
                "name": s.name,
                "type": s.span_type,
                "self_ms": round(s.self_ms, 3),
                "duration_ms": round(s.duration_ms, 3),
                "share_of_trace": (
                    round(s.self_ms / trace.duration_ms, 4) if trace.duration_ms else None
                ),
            }
            for s in top
        ],
        "llm_spans_without_usage": llm_no_usage,
        "llm_spans_without_model": llm_no_model,
        "orphan_spans": [s.name for s in trace.orphans],
        "cycle_spans": [s.name for s in trace.cycle_spans],
        "duplicate_id_spans": [s.name for s in trace.duplicate_id_spans],
        "request_preview": _clip(trace.request_preview, 500),
        "response_preview": _clip(trace.response_preview, 500),
    }


def _assessment(a) -> dict[str, Any]:
    return {
        "name": a.name,
        "value": a.value,
        "source": a.source_type,
        "rationale": _clip(a.rationale),
        "error": (
            None if not a.is_judge_error else f"{a.error_code or 'ERROR'}: {_clip(a.error_message, 200)}"
        ),
        "span_id": a.span_id,
    }


def format_health(h: dict[str, Any]) -> str:
    from .redact import redact_value

    h = redact_value(h)  # before any clipping: half a key still leaks
    lines = [
        f"{h['trace_id']}  {h['state']}  {h['duration_ms']:,.0f}ms  {h['span_count']} spans"
        if h["duration_ms"] is not None
        else f"{h['trace_id']}  {h['state']}  {h['span_count']} spans",
    ]
    lines.append("problems: " + ("; ".join(h["problems"]) if h["problems"] else "none found"))
    if h["root_causes"]:
        lines.append("root causes:")
        for e in h["root_causes"]:
            lines.append(
                f"  {e['name']} [{e['type']}] {e['duration_ms']:,.0f}ms  {e['error_type']}: {e['message']}"
            )
    propagated = [e for e in h["error_spans"] if not e["root_cause"]]
    if propagated:
        lines.append("propagated to: " + ", ".join(e["name"] for e in propagated))
    a = h["assessments"]
    for label, key in (("failing", "failing"), ("judge errors", "judge_errors"), ("passing", "passing")):
        if a[key]:
            lines.append(f"assessments {label}:")
            for x in a[key]:
                detail = x["error"] or x["rationale"] or ""
                lines.append(f"  {x['name']} = {x['value']!r} ({x['source']}) {detail}")
    t = h["tokens"]
    lines.append(
        f"tokens: in {t['input'] or 0:,} out {t['output'] or 0:,} total {t['total'] or 0:,}"
        + ("" if h["cost_usd"] is None else f"   cost ${h['cost_usd']:.4f}" + (" (estimate)" if h["cost_estimated"] else ""))
    )
    lines.append("slowest by self time:")
    for s in h["slowest_spans_by_self_time"]:
        share = "" if s["share_of_trace"] is None else f" ({s['share_of_trace'] * 100:.0f}% of trace)"
        lines.append(f"  {s['name']} [{s['type']}] self {s['self_ms']:,.0f}ms{share}")
    return "\n".join(lines)
