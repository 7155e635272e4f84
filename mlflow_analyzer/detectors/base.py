"""What every detector shares: the interface, the per-trace facts, and small helpers.

A detector is a class with a ``name`` that

* ``observe(trace, facts)``: looks at one normalized trace (``facts`` holds what is computed
  once per trace for all detectors: critical path, counted spans, root causes, sibling
  groups) and keeps *bounded* state (counters, one float per span at most, top-k evidence);
* ``findings(ctx)``: turns that state into finding dicts (see :func:`finding`);
* ``checks(ctx, found)``: says what it looked at, so a reader can tell "healthy" from "not
  looked at" (the default: one check, ``found`` when it reported something, else ``clean``
  with :meth:`Detector.clean_summary`, or ``skipped`` with :meth:`Detector.skipped`).

The registry in :mod:`mlflow_analyzer.detectors` lists the detector classes in order.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

from ..model import Span, Trace
from ..review_schema import CONFIDENCE_FLOOR as MIN_CONFIDENCE
from ..stats import counted_spans

SpanKey = tuple  # (span name, span type): what a span *is*, not only what it is called


def span_key(span: Span) -> SpanKey:
    return (span.name, span.span_type)


# --- configuration and context ------------------------------------------------------------------


@dataclass
class Config:
    """What the user asked for, shared by all detectors."""

    required_tags: list[str] = field(default_factory=list)
    examples: int = 5  # evidence trace ids kept per finding


@dataclass
class Context:
    """What every detector's ``findings`` may read once all traces were observed."""

    stats: dict  # the stats contract (StatsAccumulator.result())
    n: int  # traces observed (at least 1)
    per_day: float | None  # 1 / observed days, when the sample spans at least an hour
    days: float | None
    config: Config
    locate_result: Any = None  # a locate.LocateResult when --repo was given
    code_gaps: bool = True


# --- per-trace facts, computed once for every detector ---------------------------------------


class TraceFacts:
    """Facts about one trace that several detectors need. Each is computed on first use and
    then shared, so the pass over spans stays one pass."""

    def __init__(self, trace: Trace):
        self.trace = trace
        self.trace_id = trace.trace_id
        root = trace.root
        self.duration_ms: float = trace.duration_ms or (root.duration_ms if root else 0.0) or 0.0

    @cached_property
    def critical(self) -> set[int]:
        """``id()`` of the spans on the trace's critical path."""
        return {id(s) for s in self.trace.critical_path()}

    @cached_property
    def counted(self) -> set[int]:
        """``id()`` of the spans whose tokens and cost count (see stats.counted_spans)."""
        return counted_spans(self.trace)

    @cached_property
    def root_causes(self) -> list[Span]:
        return self.trace.root_causes()

    @cached_property
    def parents(self) -> list[Span]:
        """Spans with children, in the trace's span order."""
        return [s for s in self.trace.spans if s.children]

    @cached_property
    def sibling_groups(self) -> list[tuple[Span, dict[str, list[Span]]]]:
        """For each parent: its children grouped by name, each group in start order."""
        out = []
        for parent in self.parents:
            groups: dict[str, list[Span]] = {}
            for c in parent.children:
                groups.setdefault(c.name, []).append(c)
            out.append((parent, groups))
        return out

    @cached_property
    def retry_runs(self) -> list[list[Span]]:
        """Retry sequences: same-name siblings, each started after the previous one failed
        (at most 1 ms of overlap), two attempts or more."""
        runs: list[list[Span]] = []
        for _, groups in self.sibling_groups:
            for group in groups.values():
                if len(group) < 2:
                    continue
                run = [group[0]]
                for prev, cur in zip(group, group[1:]):
                    if prev.is_error and cur.start_ns >= prev.end_ns - 1_000_000:
                        run.append(cur)
                    else:
                        if len(run) > 1:
                            runs.append(run)
                        run = [cur]
                if len(run) > 1:
                    runs.append(run)
        return runs


# --- the interface --------------------------------------------------------------------------------


class Detector:
    """Base class: override ``observe`` and ``findings`` (and ``clean_summary``)."""

    #: registry id, also the ``detector`` of its findings and checks
    name: str = ""
    #: what the check looks for, for the list of checks ("retry storms")
    title: str = ""

    def __init__(self, config: Config):
        self.config = config

    def observe(self, trace: Trace, facts: TraceFacts) -> None:  # pragma: no cover - interface
        pass

    def findings(self, ctx: Context) -> list[dict]:  # pragma: no cover - interface
        return []

    # -- what was checked
    def skipped(self, ctx: Context) -> str | None:
        """Why the check could not run on this data (None: it ran)."""
        return None

    def clean_summary(self, ctx: Context) -> str:
        return f"no {self.title} in {ctx.n:,} traces"

    def checks(self, ctx: Context, found: list[dict]) -> list[dict]:
        why = self.skipped(ctx)
        if why:
            status, summary = "skipped", why
        elif found:
            status = "found"
            summary = f"{len(found)} finding{'s' if len(found) != 1 else ''}: " + "; ".join(
                f["title"] for f in found[:3]
            )
        else:
            status, summary = "clean", self.clean_summary(ctx)
        return [{"id": self.name, "detector": self.name, "status": status, "summary": summary}]


# --- building findings ------------------------------------------------------------------------------


def finding(
    *,
    category: str,
    priority: str,
    confidence: int,
    title: str,
    span_names: list[str],
    trace_ids: list[str],
    issue: str,
    impact: str,
    suggestion: str,
    metrics: dict,
    impact_score: float,
    kind: str,
    code: str | None = None,
) -> dict:
    """A finding in the contract's shape; ``impact_score`` ranks it within its priority."""
    return {
        "category": category,
        "priority": priority,
        "confidence": confidence,
        "title": title,
        "span_names": span_names,
        "trace_ids": list(trace_ids),
        "code": code,
        "issue": issue,
        "impact": impact,
        "suggestion": suggestion,
        "metrics": metrics,
        "kind": kind,
        "_impact": impact_score,
    }


def gap_finding(*, title, names, ids, confidence, issue, impact, suggestion, metrics, impact_score,
                kind, priority="P2") -> dict:
    """A missing-instrumentation finding."""
    return finding(category="missing_instrumentation", priority=priority, confidence=confidence,
                   title=title, span_names=names, trace_ids=ids, issue=issue, impact=impact,
                   suggestion=suggestion, metrics=metrics, impact_score=impact_score, kind=kind)


# --- small helpers ---------------------------------------------------------------------------------


class TopK:
    """The k largest (score, trace_id) pairs, one entry per trace id."""

    def __init__(self, k: int = 5):
        self.k = k
        self.heap: list[tuple[float, str]] = []
        self.ids: set[str] = set()

    def add(self, score: float, trace_id: str) -> None:
        if trace_id in self.ids:
            return
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, (score, trace_id))
            self.ids.add(trace_id)
        elif score > self.heap[0][0]:
            _, old = heapq.heapreplace(self.heap, (score, trace_id))
            self.ids.discard(old)
            self.ids.add(trace_id)

    def ids_desc(self) -> list[str]:
        return [t for _, t in sorted(self.heap, reverse=True)]

    def __len__(self) -> int:
        return len(self.heap)


class Examples(list):
    """The first ``k`` distinct trace ids seen."""

    def __init__(self, k: int = 5):
        super().__init__()
        self.k = k

    def add(self, trace_id: str) -> None:
        if len(self) < self.k and trace_id not in self:
            self.append(trace_id)


def ms(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x / 1000:,.1f} s" if x >= 1000 else f"{x:,.0f} ms"


def pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def usd(x: float | None) -> str:
    if x is None:
        return "?"
    return f"${x:,.2f}" if x >= 1 else f"${x:,.4f}"


def fmt_tokens(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x / 1000:,.1f}k" if x >= 1000 else f"{x:,.0f}"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 trace``, ``3 traces``: numbers say what they count."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def confidence(n: int, *, strong: int = 90, base: int = 80) -> int:
    """Confidence from the number of observations behind a pattern."""
    if n >= 20:
        return min(98, strong + 5)
    if n >= 10:
        return strong
    if n >= 5:
        return max(base, strong - 5)
    if n >= 3:
        return base
    return max(MIN_CONFIDENCE, base - 8)


def keyed(factory: Callable[[], Any]) -> dict:
    """A dict that builds missing entries (a defaultdict without the repr noise)."""
    from collections import defaultdict

    return defaultdict(factory)
