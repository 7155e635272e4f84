"""Tail latency: a span that is slow only in a minority of its calls (bimodal or heavy-tailed),
reported with how often, how slow against its typical call, the time spent in the tail and
the traces of its slowest calls. The rules are in :func:`~.base.tail_shape`."""

from __future__ import annotations

from .base import (
    TAIL_MAX_SHARE,
    TAIL_MIN_CALLS,
    TAIL_MIN_EXTRA_MS,
    TAIL_MIN_MS,
    TAIL_MIN_SHARE,
    TAIL_RATIO,
    Context,
    Detector,
    confidence,
    confirm_with,
    finding,
    fired,
    jq_finding_metric,
    keyed,
    ms,
    pct,
    plural,
    tail_shape,
)
from .latency import LatencyAgg, observe_latency


class TailLatency(Detector):
    name = "tail_latency"
    title = "spans slow only sometimes"

    def __init__(self, config):
        super().__init__(config)
        self.table: dict[tuple, LatencyAgg] = keyed(LatencyAgg)

    def observe(self, trace, facts) -> None:
        observe_latency(self.table, trace, facts)

    def skipped(self, ctx: Context) -> str | None:
        if not any(len(a.ok_self) >= TAIL_MIN_CALLS for a in self.table.values()):
            return f"no span has {TAIL_MIN_CALLS} successful calls: too few to tell a tail"
        return None

    def clean_summary(self, ctx: Context) -> str:
        n = sum(1 for a in self.table.values() if len(a.ok_self) >= TAIL_MIN_CALLS)
        return (
            f"no span with {TAIL_MIN_CALLS}+ calls ({n} checked) has a slow minority "
            f"({pct(TAIL_MIN_SHARE)}-{pct(TAIL_MAX_SHARE)} of calls at {TAIL_RATIO:.0f}x its median "
            f"and over {ms(TAIL_MIN_MS)})"
        )

    def findings(self, ctx: Context) -> list[dict]:
        out = []
        for key, a in self.table.items():
            if a.span_type == "AGENT" or (a.wrapper and not a.is_llm):
                continue  # a wrapper's own time is untraced time: its children are checked
            selfs = sorted(a.ok_self)
            shape = tail_shape(selfs)
            if shape is None:
                continue
            cut = shape["cut_ms"]
            median = shape["median_ms"]
            critical_tail = critical_excess = 0
            for v, crit in zip(a.ok_self, a.ok_critical):
                if v >= cut and crit:
                    critical_tail += 1
                    critical_excess += v - median
            ids = [t for score, t in sorted(a.top.heap, reverse=True) if score >= cut]
            label = ctx.label(key)
            count, n = shape["tail_calls"], shape["calls"]
            ratio = shape["ratio"]
            how_slow = f"{ratio:.0f}x its median of {ms(median)}" if ratio else f"against a median of {ms(median)}"
            title = (
                f"{label} is slow in {pct(shape['tail_share'])} of calls: {ms(shape['tail_median_ms'])} "
                f"vs {ms(median)} typically"
            )
            issue = (
                f"{plural(count, 'call')} of {n:,} successful {label} calls ({pct(shape['tail_share'])}) take "
                f"{ms(cut)} or more, median {ms(shape['tail_median_ms'])} (max {ms(shape['tail_max_ms'])}): "
                f"{how_slow}. The other calls are fast, so this is a tail (a second mode or "
                "heavy tail: cold cache, lock, retry inside the call, an upstream's slow path), "
                "not a slow operation."
            )
            if critical_tail:
                impact = (
                    f"{ms(shape['tail_ms_total'])} spent in the slow calls, {ms(shape['excess_ms_total'])} "
                    f"above the median. {critical_tail} of them were on the critical path: bringing them "
                    f"to the typical time would take ~{ms(critical_excess / critical_tail)} off each of "
                    "those requests."
                )
            else:
                impact = (
                    f"{ms(shape['tail_ms_total'])} spent in the slow calls, but none was on the critical "
                    "path: they ran alongside longer work and did not delay the requests."
                )
            out.append(
                finding(
                    category="latency_issue",
                    priority="P1" if critical_tail and shape["tail_median_ms"] >= 2000 else "P2",
                    confidence=confidence(count, strong=90, base=80),
                    title=title,
                    span_names=[key[0]],
                    trace_ids=ids,
                    issue=issue,
                    impact=impact,
                    suggestion=(
                        "Open the slowest traces and compare their calls' inputs and attributes with "
                        "typical ones (payload size, cache hit, upstream, retries inside the call); put a "
                        "timeout near the typical time with a fast fallback or a hedged second request."
                    ),
                    metrics={
                        "calls": n,
                        "span_type": a.span_type,
                        "tail_calls": count,
                        "tail_share": round(shape["tail_share"], 4),
                        "median_ms": round(median, 1),
                        "tail_cut_ms": round(cut, 1),
                        "tail_median_ms": round(shape["tail_median_ms"], 1),
                        "tail_max_ms": round(shape["tail_max_ms"], 1),
                        "tail_to_median_ratio": None if ratio is None else round(ratio, 2),
                        "tail_ms_total": round(shape["tail_ms_total"], 1),
                        "tail_excess_ms_total": round(shape["excess_ms_total"], 1),
                        "critical_tail_calls": critical_tail,
                        "expected_saving_ms_per_slow_trace": (
                            round(critical_excess / critical_tail, 1) if critical_tail else 0.0
                        ),
                        "thresholds": [
                            fired("calls", n, ">=", TAIL_MIN_CALLS),
                            fired("tail call / median", cut / median if median else None, ">=", TAIL_RATIO),
                            fired("tail call - median ms", cut - median, ">=", TAIL_MIN_EXTRA_MS),
                            fired("tail median ms", shape["tail_median_ms"], ">=", TAIL_MIN_MS),
                            fired("tail share", shape["tail_share"], ">=", TAIL_MIN_SHARE),
                            fired("tail share", shape["tail_share"], "<=", TAIL_MAX_SHARE),
                        ],
                    },
                    impact_score=critical_excess / 1000 + count,
                    kind="tail_latency",
                    keys=[key],
                    confirm=confirm_with(
                        "findings", jq_finding_metric("tail_latency", key, "tail_calls"), count,
                        f"0: no call {TAIL_RATIO:.0f}x slower than the typical one",
                    ),
                )
            )
        return out
