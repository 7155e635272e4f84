"""Span graphs that are not trees: parent cycles (a span its own parent included) and spans
sharing an id. Trace.link cuts each cycle at its earliest member and attaches children to the
first span of a shared id, marking the spans ``cycle`` / ``duplicate_id``."""

from __future__ import annotations

from collections import Counter

from .base import Context, Detector, Examples, confirm_with, fired, gap_finding, jq_finding_metric


class SpanGraph(Detector):
    name = "span_graph"
    title = "parent cycles and duplicate span ids"

    def __init__(self, config):
        super().__init__(config)
        self.traces = 0
        self.names: Counter = Counter()
        self.cycle_spans = 0
        self.duplicate_id_spans = 0
        self.ids = Examples()
        self.spans_seen = 0

    def observe(self, trace, facts) -> None:
        self.spans_seen += len(trace.spans)
        cycles, dups = trace.cycle_spans, trace.duplicate_id_spans
        if cycles or dups:
            self.traces += 1
            self.cycle_spans += len(cycles)
            self.duplicate_id_spans += len(dups)
            for s in cycles + dups:
                self.names[s.name] += 1
            self.ids.add(facts.trace_id)

    def clean_summary(self, ctx: Context) -> str:
        return f"no parent cycles or duplicate span ids among {self.spans_seen:,} spans"

    def findings(self, ctx: Context) -> list[dict]:
        if not self.traces:
            return []
        what = " and ".join(
            w
            for w in (
                f"{self.cycle_spans} spans on parent cycles" if self.cycle_spans else "",
                f"{self.duplicate_id_spans} spans reusing another span's id" if self.duplicate_id_spans else "",
            )
            if w
        )
        return [
            gap_finding(
                title=f"Span tree is not a tree (parent cycles or duplicate span ids) in {self.traces} traces",
                names=[n for n, _ in self.names.most_common(5)],
                ids=self.ids,
                confidence=95,
                issue=(
                    f"{what}: a span is (through its parents) its own ancestor, or two spans of one "
                    "trace carry the same id. Span ids are set by hand or reused, or spans of "
                    "different traces were merged."
                ),
                impact=(
                    "Parent-child links cannot be trusted: the tree shown cuts each cycle at its "
                    "earliest span and attaches children to the first span of a shared id, so self "
                    "time and causes there are approximate."
                ),
                suggestion=(
                    "Let the tracer create span ids (do not pass fixed ids to start_span), start each "
                    "child with its real parent span, and never copy spans between traces."
                ),
                metrics={
                    "traces": self.traces,
                    "cycle_spans": self.cycle_spans,
                    "duplicate_id_spans": self.duplicate_id_spans,
                    "thresholds": [fired("traces with cycles or shared span ids", self.traces, ">=", 1)],
                },
                impact_score=self.traces,
                kind="broken_span_tree",
                confirm=confirm_with("findings", jq_finding_metric("broken_span_tree", None, "traces"),
                                     self.traces, "0 on new traces"),
            )
        ]
