"""Slow spans: the self time of successful calls and their share of trace latency."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from ..review_schema import P0_LATENCY_MS
from ..stats import percentile
from .base import Context, Detector, TopK, confidence, finding, keyed, ms, pct

SLOW_NON_LLM_P95_MS = 1000.0  # a tool or retriever slower than this at p95 ...
SLOW_SHARE = 0.20  # ... that takes at least this share of its traces' latency
SLOW_LLM_P95_MS = 15000.0


@dataclass
class _SlowAgg:
    span_type: str = ""
    ok_self: array = field(default_factory=lambda: array("d"))
    ok_dur: array = field(default_factory=lambda: array("d"))
    self_sum: float = 0.0
    trace_dur_sum: float = 0.0
    traces: int = 0
    critical: int = 0
    top: TopK = field(default_factory=TopK)
    is_llm: bool = False
    wrapper: bool = False  # has children (a non-LLM parent): its own time is untraced time
    _last_trace: str | None = None


class SlowSpans(Detector):
    name = "latency"
    title = "slow spans"

    def __init__(self, config):
        super().__init__(config)
        self.slow: dict[str, _SlowAgg] = keyed(_SlowAgg)

    def observe(self, trace, facts) -> None:
        tid = facts.trace_id
        dur = facts.duration_ms
        critical = facts.critical
        for span in trace.spans:
            agg = self.slow[span.name]
            agg.span_type = span.span_type
            agg.is_llm = agg.is_llm or span.is_llm
            if span.children and not span.is_llm:
                agg.wrapper = True
            if not span.is_error:
                agg.ok_self.append(span.self_ms)
                agg.ok_dur.append(span.duration_ms)
                agg.top.add(span.self_ms, tid)
            agg.self_sum += span.self_ms
            if agg._last_trace != tid:
                agg._last_trace = tid
                agg.traces += 1
                agg.trace_dur_sum += dur
            if id(span) in critical:
                agg.critical += 1

    def clean_summary(self, ctx: Context) -> str:
        return (
            f"no span slower than {ms(SLOW_NON_LLM_P95_MS)} (tools) or {ms(SLOW_LLM_P95_MS)} "
            f"(LLM calls) at p95 with over {pct(SLOW_SHARE)} of its traces' latency"
        )

    def findings(self, ctx: Context) -> list[dict]:
        out = []
        all_ok = ctx.stats["ok_latency_ms"]
        for name, a in self.slow.items():
            if len(a.ok_self) < 3:
                continue
            selfs = sorted(a.ok_self)
            p50 = percentile(selfs, 50) or 0.0
            p95 = percentile(selfs, 95) or 0.0
            share = a.self_sum / a.trace_dur_sum if a.trace_dur_sum else 0.0
            if a.is_llm:
                slow = p95 >= SLOW_LLM_P95_MS and share >= SLOW_SHARE
            elif a.span_type == "AGENT" or a.wrapper:
                # wrappers: their own time is reported as uninstrumented time instead
                slow = False
            else:
                slow = p95 >= SLOW_NON_LLM_P95_MS and share >= SLOW_SHARE
            if not slow:
                continue
            durs = sorted(a.ok_dur)
            crit_share = a.critical / max(len(a.ok_self), 1)
            priority = "P0" if p95 >= P0_LATENCY_MS and crit_share >= 0.5 else "P1" if share >= 0.3 else "P2"
            title = f"`{name}` is slow: p95 {ms(p95)}, {pct(share)} of its traces' latency"
            issue = (
                f"`{name}` ({a.span_type}) takes p50 {ms(p50)} / p95 {ms(p95)} of its own time "
                f"over {len(selfs)} successful calls in {a.traces} traces, and is on the critical "
                f"path {pct(min(crit_share, 1.0))} of the time."
            )
            impact = (
                f"It accounts for {pct(share)} of the latency of the traces it appears in "
                f"(trace p95 {ms(all_ok['p95'])}); cutting its p95 to its p50 would save about "
                f"{ms(max(p95 - p50, 0))} on slow requests."
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
                    confidence=confidence(len(selfs), strong=92, base=82),
                    title=title,
                    span_names=[name],
                    trace_ids=a.top.ids_desc(),
                    issue=issue,
                    impact=impact,
                    suggestion=suggestion,
                    metrics={
                        "count": len(selfs),
                        "traces": a.traces,
                        "self_p50_ms": round(p50, 1),
                        "self_p95_ms": round(p95, 1),
                        "duration_p50_ms": round(percentile(durs, 50) or 0, 1),
                        "duration_p95_ms": round(percentile(durs, 95) or 0, 1),
                        "share_of_trace_latency": round(share, 4),
                        "critical_path_share": round(min(crit_share, 1.0), 4),
                        "expected_saving_ms_p95": round(max(p95 - p50, 0), 1),
                    },
                    impact_score=share * a.traces,
                    kind="slow_span",
                )
            )
        return out
