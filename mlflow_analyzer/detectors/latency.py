"""Slow spans: spans slow in most of their calls, by the self time of successful calls, their
share of trace latency and their time on the critical path.

A span whose slowness comes from a minority of its calls (a tail, see :func:`tail_shape`)
is left to the tail-latency detector, which reports how often and how slow.
"""

from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass, field

from ..review_schema import P0_LATENCY_MS
from ..stats import percentile
from .base import (
    Context,
    Detector,
    TopK,
    confidence,
    confirm_with,
    finding,
    fired,
    jq_stat_span,
    keyed,
    ms,
    pct,
    plural,
    stat_row,
    tail_shape,
)

SLOW_NON_LLM_P95_MS = 1000.0  # a tool or retriever slower than this at p95 ...
SLOW_SHARE = 0.20  # ... that takes at least this share of its traces' latency
SLOW_LLM_P95_MS = 15000.0
MIN_CALLS = 3
NEVER_CRITICAL = 0.05  # on the critical path in fewer of its calls: the requests do not wait for it


@dataclass
class LatencyAgg:
    """Per span key: successful calls' self time, duration and critical-path membership."""

    span_type: str = ""
    ok_self: array = field(default_factory=lambda: array("d"))
    ok_dur: array = field(default_factory=lambda: array("d"))
    ok_critical: array = field(default_factory=lambda: array("b"))  # 1: on the critical path
    self_sum: float = 0.0
    trace_dur_sum: float = 0.0
    traces: int = 0
    critical_ms: float = 0.0  # successful calls' time on the critical path, summed
    critical_traces: int = 0  # traces where it was on the critical path
    top: TopK = field(default_factory=TopK)
    is_llm: bool = False
    wrapper: bool = False  # has children (a non-LLM parent): its own time is untraced time
    _last_trace: str | None = None
    _last_critical: str | None = None

    def add(self, span, facts) -> None:
        tid = facts.trace_id
        self.span_type = span.span_type
        self.is_llm = self.is_llm or span.is_llm
        if span.children and not span.is_llm:
            self.wrapper = True
        on_path = id(span) in facts.critical
        if not span.is_error:
            self.ok_self.append(span.self_ms)
            self.ok_dur.append(span.duration_ms)
            self.ok_critical.append(1 if on_path else 0)
            self.top.add(span.self_ms, tid)
            if on_path:
                self.critical_ms += span.duration_ms
                if self._last_critical != tid:
                    self._last_critical = tid
                    self.critical_traces += 1
        self.self_sum += span.self_ms
        if self._last_trace != tid:
            self._last_trace = tid
            self.traces += 1
            self.trace_dur_sum += facts.duration_ms


def observe_latency(table: dict, trace, facts) -> None:
    for span in trace.spans:
        table[(span.name, span.span_type)].add(span, facts)


class SlowSpans(Detector):
    name = "latency"
    title = "slow spans"

    def __init__(self, config):
        super().__init__(config)
        self.slow: dict[tuple, LatencyAgg] = keyed(LatencyAgg)

    def observe(self, trace, facts) -> None:
        observe_latency(self.slow, trace, facts)

    def clean_summary(self, ctx: Context) -> str:
        return (
            f"no span slower than {ms(SLOW_NON_LLM_P95_MS)} (tools) or {ms(SLOW_LLM_P95_MS)} "
            f"(LLM calls) at p95 with {pct(SLOW_SHARE)} or more of its traces' latency"
        )

    def findings(self, ctx: Context) -> list[dict]:
        out = []
        all_ok = ctx.stats["ok_latency_ms"]
        for key, a in self.slow.items():
            name = key[0]
            if len(a.ok_self) < MIN_CALLS or a.span_type == "AGENT" or (a.wrapper and not a.is_llm):
                continue  # wrappers: their own time is reported as untraced time instead
            selfs = sorted(a.ok_self)
            p50 = percentile(selfs, 50) or 0.0
            p95 = percentile(selfs, 95) or 0.0
            share = a.self_sum / a.trace_dur_sum if a.trace_dur_sum else 0.0
            limit = SLOW_LLM_P95_MS if a.is_llm else SLOW_NON_LLM_P95_MS
            if p95 < limit or share < SLOW_SHARE:
                continue
            if tail_shape(selfs) is not None:
                continue  # slow only in a minority of calls: the tail-latency detector's
            n = len(selfs)
            slow_calls = n - bisect.bisect_left(selfs, limit)
            durs = sorted(a.ok_dur)
            crit_share = sum(a.ok_critical) / n
            crit_per_trace = a.critical_ms / a.critical_traces if a.critical_traces else 0.0
            if crit_share < NEVER_CRITICAL:
                priority = "P3"  # slow, but the requests do not wait for it
            elif p95 >= P0_LATENCY_MS and crit_share >= 0.5:
                priority = "P0"
            else:
                priority = "P1" if share >= 0.3 else "P2"
            label = ctx.label(key)
            how_often = (
                "every one of" if slow_calls == n else f"{pct(slow_calls / n)} of"
            )
            title = f"{label} is slow: p95 {ms(p95)}, {pct(share)} of its traces' latency"
            issue = (
                f"{label} ({a.span_type}) takes over {ms(limit)} in {how_often} its "
                f"{plural(n, 'successful call')} in {plural(a.traces, 'trace')}: p50 {ms(p50)}, p95 "
                f"{ms(p95)} of its own time. It is on the critical path in {pct(crit_share)} of its calls"
                + (", so its time adds to the request's." if crit_share else
                   ": it always runs alongside longer work.")
            )
            if crit_share > 0:
                impact = (
                    f"It accounts for {pct(share)} of the latency of the traces it appears in "
                    f"(trace p95 {ms(all_ok['p95'])}). On the critical path it adds {ms(crit_per_trace)} "
                    "per trace on average: every millisecond cut from it comes off those requests, up to "
                    f"{ms(crit_per_trace)} if it were cached or moved off the request path."
                )
            else:
                impact = (
                    f"It accounts for {pct(share)} of the latency of the traces it appears in, but it "
                    "runs alongside longer work and is never on the critical path: making it faster "
                    "would not shorten the requests until that work is faster too."
                )
            suggestion = (
                "Profile this operation: add a cache for repeated lookups, set a timeout with a "
                "fallback, narrow the query or payload, or move it off the request path."
                if not a.is_llm
                else "Shorten prompts and max_tokens, stream the response, or use a faster model for this step."
            )
            out.append(
                finding(
                    category="latency_issue",
                    priority=priority,
                    confidence=confidence(n, strong=92, base=82),
                    title=title,
                    span_names=[name],
                    trace_ids=a.top.ids_desc(),
                    issue=issue,
                    impact=impact,
                    suggestion=suggestion,
                    metrics={
                        "count": n,
                        "traces": a.traces,
                        "span_type": a.span_type,
                        "slow_calls": slow_calls,
                        "slow_call_share": round(slow_calls / n, 4),
                        "self_p50_ms": round(p50, 1),
                        "self_p95_ms": round(p95, 1),
                        "duration_p50_ms": round(percentile(durs, 50) or 0, 1),
                        "duration_p95_ms": round(percentile(durs, 95) or 0, 1),
                        "share_of_trace_latency": round(share, 4),
                        "critical_path_share": round(crit_share, 4),
                        "critical_ms_per_trace": round(crit_per_trace, 1),
                        "expected_saving_ms_per_trace": round(crit_per_trace, 1),
                        "thresholds": [
                            fired("self p95 ms", p95, ">=", limit),
                            fired("share of trace latency", share, ">=", SLOW_SHARE),
                        ],
                    },
                    impact_score=share * a.traces,
                    kind="slow_span",
                    keys=[key],
                    confirm=confirm_with(
                        "stats", jq_stat_span(key, "p95_ms"), stat_row(ctx, key).get("p95_ms"),
                        f"below {ms(limit)}: the span's p95 duration",
                    ),
                )
            )
        return out
