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

    @cached_property
    def shared_names(self) -> set[str]:
        """Span names used by spans of more than one type (LangChain names its retry wrapper
        and its model call alike): those are labelled with their type."""
        seen: dict[str, str] = {}
        shared = set()
        for row in self.stats.get("spans") or []:
            if seen.setdefault(row["name"], row["type"]) != row["type"]:
                shared.add(row["name"])
        return shared

    def label(self, key: SpanKey) -> str:
        """```name``` or ```name` (TYPE)`` when the name alone is ambiguous."""
        name, span_type = key
        return f"`{name}` ({span_type})" if name in self.shared_names else f"`{name}`"


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
    def fatal_cause(self) -> Span | None:
        """The root cause whose error reached the root, when the trace failed: from the root
        down, through the failed child that raised the same error (else the one that ended
        last: earlier failures were caught, since the work went on), to a span with no
        failed child."""
        node = self.trace.root
        if node is None or not node.is_error:
            return None
        while True:
            failed = [c for c in node.children if _subtree_failed(c)]
            if not failed:
                return node
            same = (node.error_type, node.error_message or node.status_message)
            node = max(failed, key=lambda c: (
                c.is_error and (c.error_type, c.error_message or c.status_message) == same, c.is_error, c.end_ns))

    @cached_property
    def parents(self) -> list[Span]:
        """Spans with children, in the trace's span order."""
        return [s for s in self.trace.spans if s.children]

    @cached_property
    def sibling_groups(self) -> list[tuple[Span, dict[SpanKey, list[Span]]]]:
        """For each parent: its children grouped by span key, each group in start order."""
        out = []
        for parent in self.parents:
            groups: dict[SpanKey, list[Span]] = {}
            for c in parent.children:
                groups.setdefault((c.name, c.span_type), []).append(c)
            out.append((parent, groups))
        return out

    @cached_property
    def retry_runs(self) -> list[list[Span]]:
        """Retry sequences: siblings of one span key, each started after the previous one failed
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


def _subtree_failed(span: Span) -> bool:
    stack = [span]
    while stack:
        s = stack.pop()
        if s.is_error:
            return True
        stack.extend(s.children)
    return False


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
            ) + ("; …" if len(found) > 3 else "")
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
    keys: list[SpanKey] | None = None,
    confirm: dict | None = None,
) -> dict:
    """A finding in the contract's shape; ``impact_score`` ranks it within its priority.
    ``keys``: the (name, type) of the spans it is about, when known (``spans`` field).
    ``confirm``: how to confirm a fix, from :func:`confirm_with`."""
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
        "spans": [{"name": n, "type": t} for n, t in keys] if keys else None,
        "confirm": confirm,
        "_impact": impact_score,
    }


def gap_finding(*, title, names, ids, confidence, issue, impact, suggestion, metrics, impact_score,
                kind, priority="P2", keys=None, confirm=None) -> dict:
    """A missing-instrumentation finding."""
    return finding(category="missing_instrumentation", priority=priority, confidence=confidence,
                   title=title, span_names=names, trace_ids=ids, issue=issue, impact=impact,
                   suggestion=suggestion, metrics=metrics, impact_score=impact_score, kind=kind,
                   keys=keys, confirm=confirm)


# --- how to confirm a fix ----------------------------------------------------------------------

#: the commands a confirmation can run: ``{source}`` is the same trace source the findings
#: came from; ``findings`` re-runs with ``--all`` (and the same --required-tags)
CONFIRM_COMMANDS = {
    "stats": "mlflow-analyzer stats {source} --format json",
    "findings": "mlflow-analyzer findings {source} --all --format json",
    "locate": "mlflow-analyzer locate --repo {repo} --format json",
}


def confirm_with(command: str, jq: str, now: Any, goal: str) -> dict:
    """The command whose figure should move once the problem is fixed: ``command`` is a key
    of :data:`CONFIRM_COMMANDS`, ``jq`` the filter that prints the figure from its JSON
    output, ``now`` what it prints today, ``goal`` where it should go."""
    return {"command": command, "jq": jq, "now": now, "goal": goal}


def jq_span(key: SpanKey) -> str:
    """A jq condition selecting the stats row (or finding span) of a span key."""
    import json

    return f".name == {json.dumps(key[0])} and .type == {json.dumps(key[1])}"


def jq_stat_span(key: SpanKey, field_name: str) -> str:
    """The jq filter printing one field of a span's stats row (null when the row is gone)."""
    return f"[.spans[] | select({jq_span(key)}) | .{field_name}] | first"


def jq_finding_metric(kind: str, key: SpanKey | None, metric: str, where: str | None = None) -> str:
    """The jq filter printing a metric of the finding of ``kind`` about ``key`` (0 once gone)."""
    import json

    cond = [f".kind == {json.dumps(kind)}"]
    if key is not None:
        cond.append(f"(.spans // [])[0] == {json.dumps({'name': key[0], 'type': key[1]})}")
    if where:
        cond.append(where)
    return f"[.findings[] | select({' and '.join(cond)}) | .metrics.{metric}] | first // 0"


def stat_row(ctx: "Context", key: SpanKey) -> dict:
    for row in ctx.stats.get("spans") or []:
        if row["name"] == key[0] and row["type"] == key[1]:
            return row
    return {}


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


def fired(name: str, value: Any, op: str, limit: Any) -> dict:
    """One threshold a finding passed, for its ``metrics["thresholds"]``: which rule fired,
    with the measured value and the limit (``op`` is ">=", "<=", ">" or "<")."""
    if isinstance(value, float):
        value = round(value, 4)
    return {"name": name, "value": value, "op": op, "threshold": limit}


# --- latency distribution shape (shared by the slow-span and tail-latency detectors) --------------

TAIL_MIN_CALLS = 20  # successful calls needed to tell a tail from noise
TAIL_RATIO = 3.0  # a tail call takes at least this many times the median ...
TAIL_MIN_EXTRA_MS = 500.0  # ... and at least this much more than the median
TAIL_MIN_MS = 1000.0  # and the tail's median call is at least this slow
TAIL_MIN_SHARE = 0.02  # the tail is at least this share of calls (or TAIL_MIN_COUNT calls) ...
TAIL_MIN_COUNT = 3
TAIL_MAX_SHARE = 0.25  # ... and a minority: beyond this the span is simply slow


def tail_shape(values: Any) -> dict | None:
    """The slow minority of a sorted sequence of call times (ms), or None when there is none.

    A call is in the tail when it takes at least :data:`TAIL_RATIO` times the median and
    :data:`TAIL_MIN_EXTRA_MS` more than it. The tail counts when there are enough calls
    (:data:`TAIL_MIN_CALLS`), the tail is at least :data:`TAIL_MIN_SHARE` of them (and
    :data:`TAIL_MIN_COUNT` calls) but no more than :data:`TAIL_MAX_SHARE`, and its median call
    takes at least :data:`TAIL_MIN_MS`: a bimodal or heavy-tailed span, slow only sometimes.
    """
    import bisect

    from ..stats import percentile

    n = len(values)
    if n < TAIL_MIN_CALLS:
        return None
    median = percentile(values, 50) or 0.0
    cut = max(TAIL_RATIO * median, median + TAIL_MIN_EXTRA_MS)
    first = bisect.bisect_left(values, cut)
    count = n - first
    if count < TAIL_MIN_COUNT or count < TAIL_MIN_SHARE * n or count > TAIL_MAX_SHARE * n:
        return None
    tail = values[first:]
    tail_median = percentile(tail, 50) or 0.0
    if tail_median < TAIL_MIN_MS:
        return None
    return {
        "calls": n,
        "median_ms": median,
        "cut_ms": cut,
        "tail_calls": count,
        "tail_share": count / n,
        "tail_median_ms": tail_median,
        "tail_max_ms": float(tail[-1]),
        "ratio": tail_median / median if median > 0 else None,
        "tail_ms_total": float(sum(tail)),
        "excess_ms_total": float(sum(v - median for v in tail)),
    }
