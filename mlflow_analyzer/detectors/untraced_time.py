"""Untraced time: the part of a span with children that no child covers."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from ..stats import percentile
from .base import Context, Detector, TopK, confidence, confirm_with, fired, gap_finding, jq_finding_metric, keyed, ms, pct

GAP_MIN_MS = 300.0  # uninstrumented time worth naming
GAP_MIN_SHARE = 0.5  # of the span's own duration
GAP_MIN_OCCURRENCE_SHARE = 0.10  # of the span's occurrences, unless seen often


@dataclass
class _GapAgg:
    parents: int = 0  # occurrences with children
    gapped: int = 0
    gap_ms: array = field(default_factory=lambda: array("d"))
    shares: array = field(default_factory=lambda: array("d"))  # untraced share of the span
    top: TopK = field(default_factory=TopK)


class UntracedTime(Detector):
    name = "untraced_time"
    title = "untraced time inside spans"

    def __init__(self, config):
        super().__init__(config)
        self.gaps: dict[tuple, _GapAgg] = keyed(_GapAgg)  # span key ->

    def observe(self, trace, facts) -> None:
        for span in facts.parents:
            if span.is_llm:
                continue
            g = self.gaps[(span.name, span.span_type)]
            g.parents += 1
            gap = sum(e - b for b, e in span.gaps_ns()) / 1e6
            if gap >= GAP_MIN_MS and gap >= GAP_MIN_SHARE * span.duration_ms:
                g.gapped += 1
                g.gap_ms.append(gap)
                g.shares.append(gap / span.duration_ms if span.duration_ms else 1.0)
                g.top.add(gap, facts.trace_id)

    def skipped(self, ctx: Context) -> str | None:
        if not self.gaps:
            return "no span has children: nothing to compare child coverage with"
        return None

    def clean_summary(self, ctx: Context) -> str:
        n = sum(g.parents for g in self.gaps.values())
        return (
            f"no span leaves over {ms(GAP_MIN_MS)} and {pct(GAP_MIN_SHARE)} of its time uncovered "
            f"by child spans ({n:,} parent spans checked)"
        )

    def findings(self, ctx: Context) -> list[dict]:
        out = []
        for key, g in self.gaps.items():
            name, label = key[0], ctx.label(key)
            if g.gapped < 3 and ctx.n > 3:
                continue
            if g.gapped < GAP_MIN_OCCURRENCE_SHARE * g.parents and g.gapped < 10:
                continue
            gaps = sorted(g.gap_ms)
            out.append(
                gap_finding(
                    title=f"{label} has untraced time: p50 {ms(percentile(gaps, 50))} not covered by child spans",
                    names=[name],
                    ids=g.top.ids_desc(),
                    confidence=confidence(g.gapped, strong=90, base=82),
                    issue=(
                        f"In {g.gapped} of {g.parents} occurrences, more than half of {label}'s duration "
                        f"is not covered by any child span (p50 {ms(percentile(gaps, 50))}, p95 "
                        f"{ms(percentile(gaps, 95))}): work happens there that no span describes."
                    ),
                    impact="Latency inside this span cannot be attributed; slow work there is invisible.",
                    suggestion=(
                        "Wrap the untraced work (I/O, parsing, prompt building, external calls) in "
                        "mlflow.start_span(...) or decorate the helper functions with @mlflow.trace."
                    ),
                    metrics={
                        "occurrences": g.parents,
                        "with_gap": g.gapped,
                        "gap_p50_ms": round(percentile(gaps, 50) or 0, 1),
                        "gap_p95_ms": round(percentile(gaps, 95) or 0, 1),
                        "gap_total_ms": round(sum(gaps), 1),
                        "span_type": key[1],
                        "thresholds": [
                            fired("untraced ms", percentile(gaps, 50), ">=", GAP_MIN_MS),
                            fired("untraced share of duration", percentile(sorted(g.shares), 50), ">=", GAP_MIN_SHARE),
                            fired("occurrences with untraced time", g.gapped, ">=", 3),
                        ],
                    },
                    impact_score=sum(gaps) / 1000,
                    kind="uninstrumented_time",
                    keys=[key],
                    confirm=confirm_with("findings", jq_finding_metric("uninstrumented_time", key, "with_gap"),
                                         g.gapped, "0: child spans cover the span's time"),
                )
            )
        return out
