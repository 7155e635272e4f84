"""Orphan spans: a parent span id that is not in the trace."""

from __future__ import annotations

from collections import Counter

from .base import Context, Detector, Examples, confirm_with, fired, gap_finding


class OrphanSpans(Detector):
    name = "orphans"
    title = "orphan spans"

    def __init__(self, config):
        super().__init__(config)
        self.traces = 0
        self.names: Counter = Counter()
        self.ids = Examples()
        self.spans_seen = 0

    def observe(self, trace, facts) -> None:
        self.spans_seen += len(trace.spans)
        orphans = trace.orphans
        if orphans:
            self.traces += 1
            for s in orphans:
                self.names[s.name] += 1
            self.ids.add(facts.trace_id)

    def clean_summary(self, ctx: Context) -> str:
        return f"no orphan spans: every parent id of {self.spans_seen:,} spans is in its trace"

    def findings(self, ctx: Context) -> list[dict]:
        if not self.traces:
            return []
        return [
            gap_finding(
                title=f"Orphan spans (parent missing) in {self.traces} traces",
                names=[n for n, _ in self.names.most_common(5)],
                ids=self.ids,
                confidence=92,
                issue=(
                    f"{sum(self.names.values())} spans point to a parent span that is not in their "
                    "trace: context was lost across a thread, process or async boundary, or the parent "
                    "was never exported."
                ),
                impact="The trace tree is broken: durations and causes cannot be attributed to the request.",
                suggestion=(
                    "Propagate the tracing context across threads/tasks (copy contextvars, pass the "
                    "parent span explicitly) and make sure parent spans are ended and exported."
                ),
                metrics={"traces": self.traces, "orphan_spans": sum(self.names.values()),
                         "thresholds": [fired("traces with orphan spans", self.traces, ">=", 1)]},
                impact_score=self.traces,
                kind="orphan_spans",
                confirm=confirm_with("stats", ".orphan_spans", ctx.stats.get("orphan_spans"), "0"),
            )
        ]
