"""Duplicate calls: a call repeated with identical inputs after a successful one, in the same
trace, under the same parent.

The finding names the innermost call that spent the tokens (a LangChain ``RunnableSequence``
repeated whole names the ``ChatOpenAI`` model call inside it), counts the tokens and cost of
every repeated copy's subtree, and counts wall time only for the part of a copy that did not
overlap the call it repeats (concurrent copies waste tokens, not time).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..model import Span, _merged
from ..stats import span_cost
from .base import (
    Context,
    Detector,
    TopK,
    confidence,
    confirm_with,
    finding,
    fired,
    jq_finding_metric,
    keyed,
    ms,
    plural,
    usd,
)


@dataclass
class _RedundantAgg:
    traces: int = 0
    extra_calls: int = 0
    wasted_ms: float = 0.0  # wall time of copies that did not overlap what they repeat
    wasted_tokens: int = 0
    wasted_cost: float = 0.0
    priced: bool = False
    concurrent_copies: int = 0  # copies that ran (at least partly) at the same time as the call they repeat
    spenders: Counter = field(default_factory=Counter)  # span key of the innermost token spender
    top: TopK = field(default_factory=TopK)
    _last_trace: str | None = None


def _informative_inputs(span: Span) -> bool:
    raw = (span.inputs_json or "").strip()
    return raw not in ("", "null", "{}", "[]", '""')


def _spent(span: Span, counted: set[int]) -> tuple[int, float, bool, list[Span]]:
    """Tokens, cost, priced? and the counted spans (those that spent them) in a subtree."""
    tokens, cost, priced, spenders = 0, 0.0, False, []
    stack = [span]
    while stack:
        s = stack.pop()
        if id(s) in counted:
            spenders.append(s)
            tokens += s.tokens
            c, _ = span_cost(s)
            if c is not None:
                cost += c
                priced = True
        stack.extend(s.children)
    return tokens, cost, priced, spenders


def _not_overlapping_ns(span: Span, earlier: list[Span]) -> int:
    """The part of ``span``'s time that none of ``earlier`` covers."""
    covered = sum(
        e - b
        for b, e in _merged(
            (max(x.start_ns, span.start_ns), min(x.end_ns, span.end_ns)) for x in earlier
        )
    )
    return max(0, span.duration_ns - covered)


class DuplicateCalls(Detector):
    name = "redundancy"
    title = "duplicate calls with identical inputs"

    def __init__(self, config):
        super().__init__(config)
        self.redundant: dict[tuple, _RedundantAgg] = keyed(_RedundantAgg)

    def observe(self, trace, facts) -> None:
        counted = facts.counted
        for _, groups in facts.sibling_groups:
            for key, group in groups.items():
                if len(group) < 2:
                    continue
                seen: dict[str, list[Span]] = {}  # inputs -> the calls so far with them
                extra: list[tuple[Span, list[Span]]] = []
                for s in group:
                    if not _informative_inputs(s):
                        continue
                    same = seen.setdefault(s.inputs_json, [])
                    if any(not x.is_error for x in same):  # a success already returned this
                        extra.append((s, list(same)))
                    same.append(s)
                if not extra:
                    continue
                rd = self.redundant[key]
                if rd._last_trace != facts.trace_id:
                    rd._last_trace = facts.trace_id
                    rd.traces += 1
                wall = 0.0
                for s, earlier in extra:
                    rd.extra_calls += 1
                    alone = _not_overlapping_ns(s, earlier) / 1e6
                    wall += alone
                    if alone < s.duration_ms:
                        rd.concurrent_copies += 1
                    tokens, cost, priced, spenders = _spent(s, counted)
                    rd.wasted_tokens += tokens
                    rd.wasted_cost += cost
                    rd.priced |= priced
                    for sp in spenders:
                        rd.spenders[(sp.name, sp.span_type)] += 1
                rd.wasted_ms += wall
                rd.top.add(wall + sum(_spent(s, counted)[0] for s, _ in extra) / 1000, facts.trace_id)

    def clean_summary(self, ctx: Context) -> str:
        return f"no call repeated with identical inputs within a trace in {ctx.n:,} traces"

    def findings(self, ctx: Context) -> list[dict]:
        out = []
        for key, r in self.redundant.items():
            if r.traces < 2 and ctx.n > 3:
                continue
            if r.extra_calls == 0:
                continue
            per_day = ctx.per_day
            cost_day = r.wasted_cost * per_day if per_day and r.priced else None
            spender = r.spenders.most_common(1)[0][0] if r.spenders else key
            inner = spender != key
            what = ctx.label(spender) + (f" (inside {ctx.label(key)})" if inner else "")
            keys = [spender, key] if inner else [key]
            wall = f"{ms(r.wasted_ms)} of wall time" + (
                f" ({plural(r.concurrent_copies, 'copy', 'copies')} ran at the same time as the call "
                "they repeat: only the time they did not overlap it counts)" if r.concurrent_copies else ""
            )
            out.append(
                finding(
                    category="inefficient_pattern",
                    priority="P1" if (cost_day or 0) >= 1 or r.wasted_ms / r.traces >= 1000 else "P2",
                    confidence=confidence(r.traces, strong=93, base=85),
                    title=f"{what} called again with identical inputs in {plural(r.traces, 'trace')}",
                    span_names=[k[0] for k in keys],
                    trace_ids=r.top.ids_desc(),
                    issue=(
                        f"Within single traces, {ctx.label(key)} is repeated with exactly the same inputs "
                        f"after a successful call: {plural(r.extra_calls, 'redundant call')} in "
                        f"{plural(r.traces, 'trace')}"
                        + (f"; the tokens are spent by {ctx.label(spender)} inside it" if inner else "")
                        + "."
                    ),
                    impact=(
                        f"The repeated calls cost {wall}"
                        + (f", {r.wasted_tokens:,} tokens" if r.wasted_tokens else "")
                        + (f" ({usd(r.wasted_cost)})" if r.priced and r.wasted_tokens else "")
                        + (f", about {usd(cost_day * 30)}/month" if cost_day else "")
                        + " in the sample."
                    ),
                    suggestion=(
                        "Memoize the result within the request (or cache it with a short TTL), or pass "
                        "the first result along instead of calling again."
                    ),
                    metrics={
                        "traces": r.traces,
                        "redundant_calls": r.extra_calls,
                        "repeated_span": {"name": key[0], "type": key[1]},
                        "token_spender": {"name": spender[0], "type": spender[1]},
                        "concurrent_copies": r.concurrent_copies,
                        "wasted_ms": round(r.wasted_ms, 1),
                        "wasted_tokens": r.wasted_tokens,
                        "wasted_cost_usd": round(r.wasted_cost, 6) if r.priced else None,
                        "cost_per_day_usd": None if cost_day is None else round(cost_day, 4),
                        "cost_per_month_usd": None if cost_day is None else round(cost_day * 30, 2),
                        "expected_saving_ms": round(r.wasted_ms, 1),
                        "thresholds": [fired("traces with a repeated call", r.traces, ">=", 2)],
                    },
                    impact_score=r.wasted_ms / 1000 + r.traces + r.wasted_tokens / 10_000,
                    kind="redundant_calls",
                    keys=keys,
                    confirm=confirm_with(
                        "findings", jq_finding_metric("redundant_calls", keys[0], "redundant_calls"),
                        r.extra_calls, "0: no call repeated with identical inputs",
                    ),
                )
            )
        return out
