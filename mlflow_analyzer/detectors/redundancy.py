"""Duplicate calls: the same span called again with identical inputs after a successful call
in the same trace."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import Span
from ..stats import span_cost
from .base import Context, Detector, TopK, confidence, finding, keyed, ms, usd


@dataclass
class _RedundantAgg:
    traces: int = 0
    extra_calls: int = 0
    wasted_ms: float = 0.0
    wasted_tokens: int = 0
    wasted_cost: float = 0.0
    top: TopK = field(default_factory=TopK)
    occurrences_total: int = 0


def _informative_inputs(span: Span) -> bool:
    raw = (span.inputs_json or "").strip()
    return raw not in ("", "null", "{}", "[]", '""')


class DuplicateCalls(Detector):
    name = "redundancy"
    title = "duplicate calls with identical inputs"

    def __init__(self, config):
        super().__init__(config)
        self.redundant: dict[str, _RedundantAgg] = keyed(_RedundantAgg)

    def observe(self, trace, facts) -> None:
        counted = facts.counted
        for _, groups in facts.sibling_groups:
            for name, group in groups.items():
                if len(group) < 2:
                    continue
                done: dict[str, Span] = {}
                extra = []
                for s in group:
                    if not _informative_inputs(s):
                        continue
                    key = s.inputs_json
                    first = done.get(key)
                    if first is not None and not first.is_error:
                        extra.append(s)
                    elif first is None:
                        done[key] = s
                rd = self.redundant[name]
                rd.occurrences_total += len(group)
                if extra:
                    rd.traces += 1
                    rd.extra_calls += len(extra)
                    rd.wasted_ms += sum(s.duration_ms for s in extra)
                    for s in extra:
                        if id(s) in counted:
                            rd.wasted_tokens += s.tokens
                            cost, _ = span_cost(s)
                            rd.wasted_cost += cost or 0.0
                    rd.top.add(sum(s.duration_ms for s in extra), facts.trace_id)

    def clean_summary(self, ctx: Context) -> str:
        return f"no call repeated with identical inputs within a trace in {ctx.n:,} traces"

    def findings(self, ctx: Context) -> list[dict]:
        out = []
        for name, r in self.redundant.items():
            if r.traces < 2 and ctx.n > 3:
                continue
            if r.extra_calls == 0:
                continue
            per_day = ctx.per_day
            cost_day = r.wasted_cost * per_day if per_day else None
            out.append(
                finding(
                    category="inefficient_pattern",
                    priority="P1" if (cost_day or 0) >= 1 or r.wasted_ms / r.traces >= 1000 else "P2",
                    confidence=confidence(r.traces, strong=93, base=85),
                    title=f"`{name}` called again with identical inputs in {r.traces} traces",
                    span_names=[name],
                    trace_ids=r.top.ids_desc(),
                    issue=(
                        f"Within single traces, `{name}` is repeated with exactly the same inputs after "
                        f"a successful call: {r.extra_calls} redundant call(s) in {r.traces} traces."
                    ),
                    impact=(
                        f"{ms(r.wasted_ms)} of redundant work in the sample"
                        + (f", {r.wasted_tokens:,} tokens ({usd(r.wasted_cost)})" if r.wasted_tokens else "")
                        + (f", about {usd(cost_day * 30)}/month" if cost_day else "")
                        + "."
                    ),
                    suggestion=(
                        "Memoize the result within the request (or cache it with a short TTL), or pass "
                        "the first result along instead of calling again."
                    ),
                    metrics={
                        "traces": r.traces,
                        "redundant_calls": r.extra_calls,
                        "wasted_ms": round(r.wasted_ms, 1),
                        "wasted_tokens": r.wasted_tokens,
                        "wasted_cost_usd": round(r.wasted_cost, 6),
                        "cost_per_day_usd": None if cost_day is None else round(cost_day, 4),
                        "cost_per_month_usd": None if cost_day is None else round(cost_day * 30, 2),
                        "expected_saving_ms": round(r.wasted_ms, 1),
                    },
                    impact_score=r.wasted_ms / 1000 + r.traces,
                    kind="redundant_calls",
                )
            )
        return out
