"""Independent calls run one after another: consecutive tool/retriever siblings with
distinct names, each starting right after the previous ended, none feeding the next."""

from __future__ import annotations

import json
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..model import Span
from ..stats import percentile
from .base import Context, Detector, TopK, finding, ms

SEQ_MAX_GAP_MS = 50.0  # siblings starting this soon after the previous one ended
SEQ_MIN_SHARE = 0.10  # of the parent's occurrences, unless seen in many traces
PARALLELIZABLE_TYPES = frozenset({"TOOL", "RETRIEVER"})
SEQ_MIN_SAVING_MS = 150.0


@dataclass
class _SeqAgg:
    parent: str
    names: tuple
    traces: int = 0
    saving_ms: array = field(default_factory=lambda: array("d"))
    total_ms: array = field(default_factory=lambda: array("d"))
    top: TopK = field(default_factory=TopK)


class SequentialCalls(Detector):
    name = "parallelism"
    title = "independent calls run one after another"

    def __init__(self, config):
        super().__init__(config)
        self.sequences: dict[tuple, _SeqAgg] = {}
        self.parent_counts: Counter = Counter()

    def observe(self, trace, facts) -> None:
        tid = facts.trace_id
        for parent in facts.parents:
            self.parent_counts[parent.name] += 1
            candidates = [c for c in parent.children if c.span_type in PARALLELIZABLE_TYPES and not c.is_error]
            chain: list[Span] = []
            for c in candidates:
                if chain:
                    prev = chain[-1]
                    gap_ms = (c.start_ns - prev.end_ns) / 1e6
                    sequential = 0 <= gap_ms <= SEQ_MAX_GAP_MS
                    independent = not any(_depends(c, p) for p in chain)
                    if sequential and independent and c.name not in {p.name for p in chain}:
                        chain.append(c)
                        continue
                    self._flush(parent, chain, tid)
                chain = [c]
            self._flush(parent, chain, tid)

    def _flush(self, parent: Span, chain: list[Span], tid: str) -> None:
        if len(chain) < 2 or len({c.name for c in chain}) < len(chain):
            return
        total = sum(c.duration_ms for c in chain)
        saving = total - max(c.duration_ms for c in chain)
        if saving < SEQ_MIN_SAVING_MS:
            return
        key = (parent.name, tuple(c.name for c in chain))
        agg = self.sequences.get(key)
        if agg is None:
            agg = self.sequences[key] = _SeqAgg(parent.name, key[1])
        agg.traces += 1
        agg.saving_ms.append(saving)
        agg.total_ms.append(total)
        agg.top.add(saving, tid)

    def clean_summary(self, ctx: Context) -> str:
        return (
            "no tool or retriever calls run back to back without depending on each other "
            f"(saving at least {ms(SEQ_MIN_SAVING_MS)})"
        )

    def findings(self, ctx: Context) -> list[dict]:
        out = []
        # Keep the longest chain per parent that recurs; drop sub-chains of a reported one.
        items = sorted(self.sequences.values(), key=lambda s: (-len(s.names), -s.traces))
        reported: list[_SeqAgg] = []
        for s in items:
            parent_n = self.parent_counts.get(s.parent, 0)
            if s.traces < 2 and ctx.n > 3:
                continue
            if parent_n and s.traces / parent_n < SEQ_MIN_SHARE and s.traces < 20:
                continue
            if any(r.parent == s.parent and set(s.names) <= set(r.names) for r in reported):
                continue
            savings = sorted(s.saving_ms)
            totals = sorted(s.total_ms)
            mean_saving = sum(savings) / len(savings)
            if mean_saving < SEQ_MIN_SAVING_MS:
                continue
            reported.append(s)
            names = ", ".join(f"`{n}`" for n in s.names)
            saved_total_ms = sum(savings)
            out.append(
                finding(
                    category="latency_issue",
                    priority="P1" if mean_saving >= 500 else "P2",
                    confidence=88 if s.traces >= 5 else 80,
                    title=f"{len(s.names)} independent calls under `{s.parent}` run one after another",
                    span_names=list(s.names) + [s.parent],
                    trace_ids=s.top.ids_desc(),
                    issue=(
                        f"Under `{s.parent}`, {names} run sequentially (each starts when the previous "
                        f"ends) in {s.traces} traces, and none takes the others' outputs as input."
                    ),
                    impact=(
                        f"Together they take p50 {ms(percentile(totals, 50))}; run concurrently they "
                        f"would take about the longest one: ~{ms(mean_saving)} saved per trace "
                        f"({ms(saved_total_ms)} over the sample)."
                    ),
                    suggestion=(
                        "Run them concurrently (asyncio.gather, a thread pool, or parallel tool calls "
                        "in the agent framework), keeping the tracing context for each."
                    ),
                    metrics={
                        "traces": s.traces,
                        "parent_occurrences": parent_n,
                        "sequential_p50_ms": round(percentile(totals, 50) or 0, 1),
                        "expected_saving_ms_mean": round(mean_saving, 1),
                        "expected_saving_ms_total": round(saved_total_ms, 1),
                    },
                    impact_score=mean_saving * s.traces / 1000,
                    kind="sequential_independent_calls",
                )
            )
        return out


def _values(text: Any, out: set[str], depth: int = 0) -> None:
    """Distinctive leaf values of a decoded JSON value (for data-flow checks)."""
    if depth > 6 or len(out) > 200:
        return
    if isinstance(text, dict):
        for v in text.values():
            _values(v, out, depth + 1)
    elif isinstance(text, list):
        for v in text[:50]:
            _values(v, out, depth + 1)
    elif isinstance(text, str):
        s = text.strip()
        if len(s) >= 4 and s.lower() not in ("true", "false", "none", "null"):
            out.add(s[:200])
    elif isinstance(text, (int, float)) and not isinstance(text, bool) and abs(text) >= 1000:
        out.add(str(text))


def _depends(later: Span, earlier: Span) -> bool:
    """Does ``later`` take something ``earlier`` produced? (Then they cannot run together.)"""
    if not earlier.outputs_json or not later.inputs_json:
        return False
    vals: set[str] = set()
    _values(earlier.outputs, vals)
    if not vals:
        return False
    inputs = later.inputs_json
    return any(v in inputs or json.dumps(v)[1:-1] in inputs for v in vals)
