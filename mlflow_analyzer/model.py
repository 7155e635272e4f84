"""The normalized trace model every analysis works on.

Built by :mod:`mlflow_analyzer.normalize` from raw trace JSON (a file or a store row);
nothing here knows raw attribute keys. Times are kept in integer nanoseconds as MLflow
records them; helpers expose milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

NS_PER_MS = 1_000_000


def _decode(raw: str | None) -> Any:
    if raw is None:
        return None
    from .normalize import decode_value

    return decode_value(raw)


@dataclass(slots=True)
class Span:
    span_id: str  # 16 hex digits (converted from the base64 of span JSON)
    parent_id: str | None
    name: str
    span_type: str  # MLflow span type ("LLM", "TOOL", ...), custom types kept as given
    status: str  # "OK" | "ERROR" | "UNSET"
    start_ns: int
    end_ns: int
    status_message: str = ""
    error_type: str | None = None
    error_message: str | None = None
    inputs_json: str | None = None  # JSON text, decoded on demand (see .inputs)
    outputs_json: str | None = None
    model: str | None = None
    provider: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cost_usd: float | None = None  # as recorded on the span (mlflow.llm.cost)
    convention: str | None = None  # "mlflow" | "gen_ai" | "openinference" | None
    attributes: dict[str, Any] = field(default_factory=dict)  # decoded, for the views
    kind: str | None = None  # OpenTelemetry SpanKind: CLIENT, SERVER, INTERNAL, PRODUCER, CONSUMER
    tool_name: str | None = None  # gen_ai.tool.name / tool.name, when the span says
    # Filled by Trace.link():
    children: list["Span"] = field(default_factory=list)
    depth: int = 0
    self_ns: int = 0
    orphan: bool = False  # its parent id names no span of the trace: shown as a root
    cycle: bool = False  # on a parent cycle (or its own parent): the cycle is cut at one member
    duplicate_id: bool = False  # another span of the trace has the same id (the first keeps it)

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def duration_ms(self) -> float:
        return self.duration_ns / NS_PER_MS

    @property
    def self_ms(self) -> float:
        return self.self_ns / NS_PER_MS

    @property
    def is_error(self) -> bool:
        return self.status == "ERROR"

    @property
    def is_llm(self) -> bool:
        return self.span_type in LLM_TYPES

    @property
    def has_usage(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None or (
            self.total_tokens is not None
        )

    @property
    def tokens(self) -> int:
        if self.total_tokens is not None:
            return self.total_tokens
        return (self.input_tokens or 0) + (self.output_tokens or 0)

    @property
    def inputs(self) -> Any:
        return _decode(self.inputs_json)

    @property
    def outputs(self) -> Any:
        return _decode(self.outputs_json)

    def gaps_ns(self) -> list[tuple[int, int]]:
        """Intervals inside this span that no child covers (uninstrumented time)."""
        if not self.children:
            return []
        out = []
        cursor = self.start_ns
        for start, end in _merged(
            (max(c.start_ns, self.start_ns), min(c.end_ns, self.end_ns)) for c in self.children
        ):
            if start > cursor:
                out.append((cursor, start))
            cursor = max(cursor, end)
        if self.end_ns > cursor:
            out.append((cursor, self.end_ns))
        return out

    def to_dict(self, trace_start_ns: int | None = None, *, io: bool = True) -> dict[str, Any]:
        base = trace_start_ns if trace_start_ns is not None else self.start_ns
        d: dict[str, Any] = {
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "name": self.name,
            "type": self.span_type,
            "status": self.status,
            "start_offset_ms": round((self.start_ns - base) / NS_PER_MS, 3),
            "duration_ms": round(self.duration_ms, 3),
            "self_ms": round(self.self_ms, 3),
            "depth": self.depth,
            "model": self.model,
            "provider": self.provider,
            "tokens": {
                "input": self.input_tokens,
                "output": self.output_tokens,
                "total": self.total_tokens if self.has_usage else None,
                "cache_read": self.cache_read_tokens,
                "cache_write": self.cache_write_tokens,
            },
            "cost_usd": self.cost_usd,
            "error": (
                {"type": self.error_type, "message": self.error_message}
                if self.is_error or self.error_type
                else None
            ),
            "orphan": self.orphan,
            "cycle": self.cycle,
            "duplicate_id": self.duplicate_id,
            "kind": self.kind,
            "tool_name": self.tool_name,
            "convention": self.convention,
        }
        if io:
            d["inputs"] = self.inputs
            d["outputs"] = self.outputs
            d["attributes"] = _decoded(self.attributes)
        return d


LLM_TYPES = frozenset({"LLM", "CHAT_MODEL"})


@dataclass(slots=True)
class Assessment:
    assessment_id: str
    name: str
    kind: str  # "feedback" | "expectation" | "issue"
    source_type: str | None
    source_id: str | None
    value: Any = None
    rationale: str | None = None
    error_code: str | None = None  # the judge/scorer failed: not a trace error
    error_message: str | None = None
    span_id: str | None = None  # hex
    valid: bool = True

    @property
    def is_judge_error(self) -> bool:
        return self.error_code is not None or self.error_message is not None

    @property
    def passed(self) -> bool | None:
        """True/False for a pass/fail style feedback value, None when it cannot be told."""
        if self.kind != "feedback" or self.is_judge_error:
            return None
        return value_passes(self.value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "assessment_id": self.assessment_id,
            "name": self.name,
            "kind": self.kind,
            "source_type": self.source_type,
            "source_id": self.source_id,
            "value": self.value,
            "passed": self.passed,
            "rationale": self.rationale,
            "error": (
                {"code": self.error_code, "message": self.error_message}
                if self.is_judge_error
                else None
            ),
            "span_id": self.span_id,
            "valid": self.valid,
        }


_PASS_WORDS = {"yes", "true", "pass", "passed", "correct", "good", "ok"}
_FAIL_WORDS = {"no", "false", "fail", "failed", "incorrect", "bad"}


def value_passes(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _PASS_WORDS:
            return True
        if v in _FAIL_WORDS:
            return False
        return None
    if isinstance(value, (int, float)):
        # Scores: treat [0, 1] scales with 0.5 as the bar, 1-5 scales with 3 as the bar.
        if 0 <= value <= 1:
            return value >= 0.5
        if 1 < value <= 5:
            return value >= 3
    return None


@dataclass(slots=True)
class Trace:
    trace_id: str
    experiment_id: str | None
    request_time_ms: int  # epoch milliseconds
    state: str  # "OK" | "ERROR" | "IN_PROGRESS"
    duration_ms: float | None  # execution_duration_ms
    spans: list[Span] = field(default_factory=list)
    assessments: list[Assessment] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    request_preview: str | None = None
    response_preview: str | None = None
    session_id: str | None = None  # the full id (3.18: a JSON array string for a hierarchy)
    session_path: list[str] | None = None  # a hierarchical session id's levels, outermost first
    user_id: str | None = None
    git_branch: str | None = None
    git_commit: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None  # as recorded (mlflow.trace.cost), else summed span costs
    # Filled by link():
    roots: list[Span] = field(default_factory=list)
    by_id: dict[str, Span] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return self.state == "ERROR"

    @property
    def start_ns(self) -> int:
        if self.spans:
            return min(s.start_ns for s in self.spans)
        return self.request_time_ms * NS_PER_MS

    @property
    def orphans(self) -> list[Span]:
        return [s for s in self.spans if s.orphan]

    @property
    def root(self) -> Span | None:
        for s in self.roots:
            if not s.orphan:
                return s
        return self.roots[0] if self.roots else None

    def link(self) -> "Trace":
        """Build the tree: children, depth, self time, and the marks of a span graph that is
        not a tree. Terminates on any input, without recursion, and drops no span:

        * a parent id naming no span: ``orphan``, shown as a root;
        * spans sharing an id: the first (in start order) keeps it for children to attach
          to; the others are ``duplicate_id`` and sit under their own parent;
        * a parent cycle (a span its own parent included): every member is ``cycle``; the
          earliest member becomes a root (its ``parent_id`` cleared, so that walking up
          ``by_id`` from any span ends).
        """
        spans = self.spans
        spans.sort(key=lambda s: (s.start_ns, s.end_ns))
        by_id: dict[str, Span] = {}
        for s in spans:
            s.children = []
            s.orphan = False
            if s.span_id in by_id:
                s.duplicate_id = True
            else:
                s.duplicate_id = False
                by_id[s.span_id] = s
        self.by_id = by_id
        n = len(spans)
        index = {id(s): i for i, s in enumerate(spans)}
        parent: list[int] = [-1] * n
        for i, s in enumerate(spans):
            pid = s.parent_id
            if not pid:
                continue
            p = by_id.get(pid)
            if p is None:
                s.orphan = True
            elif p is s:
                s.cycle = True
                s.parent_id = None
            else:
                parent[i] = index[id(p)]
        # Each span has at most one parent: follow parent links from every unvisited span;
        # meeting a span of the current walk again closes a cycle.
        state = bytearray(n)  # 0 unseen, 1 on the current walk, 2 done
        for i in range(n):
            if state[i]:
                continue
            walk = []
            j = i
            while j >= 0 and state[j] == 0:
                state[j] = 1
                walk.append(j)
                j = parent[j]
            if j >= 0 and state[j] == 1:
                members = walk[walk.index(j):]
                for m in members:
                    spans[m].cycle = True
                cut = min(members)  # the earliest-starting member becomes the root
                parent[cut] = -1
                spans[cut].parent_id = None
            for m in walk:
                state[m] = 2
        self.roots = []
        for i, s in enumerate(spans):
            if parent[i] < 0:
                self.roots.append(s)
            else:
                spans[parent[i]].children.append(s)
        for root in self.roots:
            stack = [(root, 0)]
            while stack:
                span, depth = stack.pop()
                span.depth = depth
                kids = span.children
                if not kids:  # most spans: all their time is their own
                    span.self_ns = span.duration_ns
                    continue
                if len(kids) == 1:
                    c = kids[0]
                    covered = max(0, min(c.end_ns, span.end_ns) - max(c.start_ns, span.start_ns))
                else:
                    covered = sum(e - b for b, e in _merged(
                        (max(c.start_ns, span.start_ns), min(c.end_ns, span.end_ns)) for c in kids
                    ))
                span.self_ns = max(0, span.duration_ns - covered)
                depth += 1
                stack.extend((c, depth) for c in kids)
        return self

    @property
    def cycle_spans(self) -> list[Span]:
        return [s for s in self.spans if s.cycle]

    @property
    def duplicate_id_spans(self) -> list[Span]:
        return [s for s in self.spans if s.duplicate_id]

    def post_order(self) -> Iterator[Span]:
        """Spans children first (every span after all its descendants), without recursion."""
        stack: list[tuple[Span, bool]] = [(r, False) for r in reversed(self.roots)]
        while stack:
            span, expanded = stack.pop()
            if expanded or not span.children:
                yield span
                continue
            stack.append((span, True))
            stack.extend((c, False) for c in reversed(span.children))

    def innermost(self, has) -> list[Span]:
        """Spans with a property none of whose descendants has it (so nothing counts twice),
        in post order."""
        out = []
        below: dict[int, bool] = {}  # id(span) -> some span of its subtree has it
        for span in self.post_order():
            under = False
            for c in span.children:
                if below.pop(id(c)):
                    under = True
            mine = bool(has(span))
            if mine and not under:
                out.append(span)
            below[id(span)] = under or mine
        return out

    def walk(self) -> Iterator[Span]:
        """Spans depth first in start order (roots first)."""
        stack = list(reversed(self.roots))
        while stack:
            span = stack.pop()
            yield span
            stack.extend(reversed(span.children))

    def critical_path(self) -> list[Span]:
        """The spans the root's end waits on, in the order the walk finds them (root first).

        Walks back from a span's end: the child that finishes last gates it; from that
        child's start, the child that finishes last at or before it gates that point; and so
        on down to the span's start, descending the same way into each gating child. A chain
        of children run one after another is therefore critical entirely; a child that runs
        alongside a longer one (ending after the point the walk has reached) is not. Child
        times are clipped to their parent's. Every span on the path lies on it for its whole
        (clipped) duration.
        """
        root = self.root
        if root is None:
            return []
        path = [root]

        def by_end(span: Span) -> list[Span]:
            return sorted(span.children, key=lambda c: min(c.end_ns, span.end_ns), reverse=True)

        # (span, cursor: how far back the walk has come inside it, its children by end, next)
        stack = [[root, root.end_ns, by_end(root), 0]]
        while stack:
            frame = stack[-1]
            span, cursor, kids, i = frame
            while i < len(kids) and min(kids[i].end_ns, span.end_ns) > cursor:
                i += 1  # ends after the point reached: ran alongside a gating sibling
            if i >= len(kids) or cursor <= span.start_ns:
                stack.pop()
                continue
            child = kids[i]
            frame[3] = i + 1
            end = min(child.end_ns, span.end_ns)
            start = max(child.start_ns, span.start_ns)
            if end <= span.start_ns or start >= end:
                continue
            frame[1] = start
            path.append(child)
            stack.append([child, end, by_end(child), 0])
        return path

    def error_spans(self) -> list[Span]:
        return [s for s in self.spans if s.is_error]

    def root_causes(self) -> list[Span]:
        """Error spans none of whose descendants failed: where errors started (in start order)."""
        causes = {id(s) for s in self.innermost(lambda s: s.is_error)}
        return [s for s in self.spans if id(s) in causes]

    def to_dict(self, *, io: bool = True) -> dict[str, Any]:
        base = self.start_ns
        return {
            "trace_id": self.trace_id,
            "experiment_id": self.experiment_id,
            "name": self.name,
            "state": self.state,
            "request_time": iso_ms(self.request_time_ms),
            "duration_ms": self.duration_ms,
            "session_id": self.session_id,
            "user_id": self.user_id,
            "git_branch": self.git_branch,
            "git_commit": self.git_commit,
            "tokens": {
                "input": self.input_tokens,
                "output": self.output_tokens,
                "total": self.total_tokens,
            },
            "cost_usd": self.cost_usd,
            "request_preview": self.request_preview,
            "response_preview": self.response_preview,
            "tags": self.tags,
            "metadata": self.metadata,
            "assessments": [a.to_dict() for a in self.assessments],
            "spans": [s.to_dict(base, io=io) for s in self.walk()],
        }


def _subtree_has_error(span: Span) -> bool:
    stack = [span]
    while stack:
        s = stack.pop()
        if s.is_error:
            return True
        stack.extend(s.children)
    return False


def _merged(intervals) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for b, e in sorted(i for i in intervals if i[1] > i[0]):
        if out and b <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([b, e])
    return [(b, e) for b, e in out]


def iso_ms(ms: int | float | None) -> str | None:
    if ms is None:
        return None
    from datetime import datetime, timezone

    return (
        datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _decoded(attrs: dict[str, Any]) -> dict[str, Any]:
    from .normalize import decode_attributes

    return decode_attributes(attrs)
