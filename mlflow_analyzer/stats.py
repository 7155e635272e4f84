"""The statistics pass: one streaming accumulator over normalized traces.

Memory holds one float per trace (latency) and one per span (duration, per span name), never
the traces themselves. Percentiles use linear interpolation between closest ranks, as
``numpy.percentile`` and ``pandas.Series.quantile`` compute them by default.

Errors are grouped at their root cause: an error span none of whose descendants failed. An
uncaught exception also marks every ancestor ERROR; those propagated copies are counted in
the per-span ``error_count`` but not again in ``errors``.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .model import Span, Trace, iso_ms
from .text import clip

TIMEOUT_WORDS = re.compile(r"time[d\s-]*out|deadline exceeded|timeout", re.I)
SLOW_FAILURE_MS = 5000.0


# --- numbers ----------------------------------------------------------------------------------


def percentile(sorted_values, q: float) -> float | None:
    """numpy's default (linear) percentile of an already sorted sequence."""
    n = len(sorted_values)
    if n == 0:
        return None
    if n == 1:
        return float(sorted_values[0])
    rank = (q / 100.0) * (n - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, n - 1)
    frac = rank - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


def distribution(values: Iterable[float]) -> dict[str, float | None]:
    vals = sorted(values)
    if not vals:
        return {"mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "mean": _r(sum(vals) / len(vals)),
        "p50": _r(percentile(vals, 50)),
        "p95": _r(percentile(vals, 95)),
        "p99": _r(percentile(vals, 99)),
        "max": _r(vals[-1]),
    }


def _r(x: float | None, nd: int | None = None) -> float | None:
    """Figures are not rounded: checks compare them with values computed elsewhere."""
    return None if x is None else float(x)


_cost = _r


# --- message patterns ----------------------------------------------------------------------------

_PATTERNS = [
    (re.compile(r"(https?://[^\s?#)'\"]+)[?#][^\s)'\"]*"), r"\1?<query>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"\btr-[0-9a-f]+\b"), "<trace>"),
    (re.compile(r"\b(?:req|msg|call|run|id)[_-][A-Za-z0-9]{6,}\b"), "<id>"),
    (re.compile(r"\b[0-9a-f]{12,}\b", re.I), "<hex>"),
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?Z?"), "<time>"),
    (re.compile(r"'[^']{1,80}'"), "'<s>'"),
    (re.compile(r'"[^"]{1,80}"'), '"<s>"'),
    # Keep HTTP status codes recognisable (429, 401, 503), mask other numbers.
    (re.compile(r"(?<![\w.,])(?!(?:4\d\d|5\d\d)\b)\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w])"), "<n>"),
    (re.compile(r"(?<![\w.])(?!(?:4\d\d|5\d\d)\b)\d+(?:\.\d+)?(?![\w])"), "<n>"),
]


def message_pattern(message: str | None, limit: int = 160) -> str:
    """A message with ids, numbers and quoted values masked, so that similar errors group.

    A provider's error body (``Error code: 429 - {'type': 'error', 'error': {'type':
    'rate_limit_error', 'message': ...}}``) is read first, so the pattern keeps the
    provider's own type and message (:func:`provider_message`).
    """
    if not message:
        return ""
    from .redact import redact  # before anything lossy: a masked or cut key still leaks

    text = provider_message(" ".join(redact(str(message)).split()))[:400]
    for rx, repl in _PATTERNS:
        text = rx.sub(repl, text)
    return clip(text, limit)


_BODY_START = re.compile(r"[{\[]")


def _balanced(text: str, start: int) -> int | None:
    """The index just past the bracket closing the one at ``start`` (quotes respected)."""
    pairs = {"{": "}", "[": "]"}
    stack, quote, i = [], None, start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch in pairs:
            stack.append(pairs[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
            if not stack:
                return i + 1
        i += 1
    return None


def _parse_body(body: str):
    import ast
    import json

    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(body)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return None


def provider_message(message: str) -> str:
    """An error message whose provider error body (a JSON or Python-literal dict, as the
    OpenAI and Anthropic SDKs print it) is replaced by the provider's type, message and code:
    ``Error code: 429 - rate_limit_error: This request would exceed ...``. Anything else is
    returned unchanged."""
    if not message or "{" not in message:
        return message
    m = _BODY_START.search(message)
    while m is not None:
        end = _balanced(message, m.start())
        if end is None:
            break
        body = _parse_body(message[m.start():end])
        if isinstance(body, dict):
            err = body.get("error") if isinstance(body.get("error"), dict) else body
            text = err.get("message") or err.get("detail") or body.get("message")
            if isinstance(text, str) and text.strip():
                etype = err.get("type") or (body.get("type") if body.get("type") != "error" else None)
                code = err.get("code")
                parts = [str(etype)] if isinstance(etype, str) and etype else []
                readable = (": ".join(parts + [text.strip()])
                            + (f" ({code})" if isinstance(code, str) and code and code != etype else ""))
                return (message[: m.start()] + readable + message[end:]).strip()
        m = _BODY_START.search(message, end)
    return _provider_message_by_keys(message)


_KEY_VALUE = r"""['"]{key}['"]\s*:\s*(['"])(?P<v>.*?)(?:\1\s*(?=[,}}])|$)"""
_MESSAGE_KEY = re.compile(_KEY_VALUE.format(key="message"))
_TYPE_KEY = re.compile(_KEY_VALUE.format(key="type"))


def _provider_message_by_keys(message: str) -> str:
    """The fallback for a body that does not parse (cut short, or quotes inside quotes)."""
    m = _MESSAGE_KEY.search(message)
    start = message.find("{")
    if m is None or start < 0 or m.start() < start:
        return message
    types = [t.group("v") for t in _TYPE_KEY.finditer(message, start, m.start()) if t.group("v") != "error"]
    text = m.group("v").strip()
    return (message[:start] + (f"{types[-1]}: " if types else "") + text).strip()


def error_key(span: Span) -> tuple:
    """How root-cause errors group: (span name, span type, exception type, message pattern)."""
    return (
        span.name,
        span.span_type,
        span.error_type or "Error",
        message_pattern(span.error_message or span.status_message),
    )


def is_timeout(span: Span) -> bool:
    return bool(
        TIMEOUT_WORDS.search(span.error_type or "") or TIMEOUT_WORDS.search(span.error_message or "")
    )


# --- cost -------------------------------------------------------------------------------------------


def span_cost(span: Span) -> tuple[float | None, bool]:
    """(cost in USD, estimated?) for one span: MLflow's recorded cost, else our price table."""
    if span.cost_usd is not None:
        return span.cost_usd, False
    if not span.has_usage or not span.model:
        return None, False
    try:
        from . import pricing
    except ImportError:  # pragma: no cover - pricing ships with the package
        return None, False
    est = pricing.estimate_cost(
        span.model,
        span.provider,
        span.input_tokens or 0,
        span.output_tokens or 0,
        span.cache_read_tokens or 0,
        span.cache_write_tokens or 0,
    )
    return (est, True) if est is not None else (None, False)


def counted_spans(trace: Trace) -> set[int]:
    """ids (python id()) of spans whose tokens/cost count: those with usage or cost none of
    whose descendants also has them, so nested LLM wrappers do not count twice."""
    return {id(s) for s in trace.innermost(lambda s: s.has_usage or s.cost_usd is not None)}


# --- accumulators ------------------------------------------------------------------------------------


@dataclass
class _SpanAgg:
    name: str
    span_type: str = ""
    durations: array = field(default_factory=lambda: array("d"))
    error_count: int = 0
    self_ns: int = 0
    tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    priced: bool = False
    estimated: bool = False
    models: Counter = field(default_factory=Counter)
    traces: int = 0
    kinds: dict = field(default_factory=dict)  # (span type, convention) -> count
    _last_trace: str | None = None

    @property
    def types(self) -> Counter:
        out: Counter = Counter()
        for (t, _), n in self.kinds.items():
            out[t] += n
        return out


@dataclass
class _ErrorAgg:
    span_name: str
    exception_type: str
    pattern: str
    span_type: str = ""
    count: int = 0
    traces: set = field(default_factory=set)
    durations: array = field(default_factory=lambda: array("d"))
    timeouts: int = 0
    examples: list = field(default_factory=list)
    example_message: str = ""
    first_ms: int | None = None
    last_ms: int | None = None


@dataclass
class _ModelAgg:
    model: str
    provider: str | None = None
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cost: float = 0.0
    priced: bool = False
    estimated: bool = False
    errors: int = 0


@dataclass
class _AssessmentAgg:
    name: str
    count: int = 0
    passed: int = 0
    failed: int = 0
    judge_errors: int = 0
    sources: Counter = field(default_factory=Counter)
    failing_traces: list = field(default_factory=list)
    judge_error_traces: list = field(default_factory=list)
    judge_error_messages: Counter = field(default_factory=Counter)


class StatsAccumulator:
    """Feed traces with ``add``; read the contract dict with ``result``."""

    def __init__(self, *, group_by: str | None = None, examples: int = 5):
        self.examples = examples
        self.trace_count = 0
        self.error_count = 0
        self.latencies = array("d")
        self.ok_latencies = array("d")
        self.in_tokens = 0
        self.out_tokens = 0
        self.total_tokens = 0
        self.cost = 0.0
        self.any_cost = False
        self.any_estimated = False
        self.any_recorded = False
        self.start_ms: int | None = None
        self.end_ms: int | None = None
        self.spans: dict[tuple, _SpanAgg] = {}  # (name, span type): what a span is
        self.errors: dict[tuple, _ErrorAgg] = {}
        self.models: dict[str, _ModelAgg] = {}
        self.assessments: dict[str, _AssessmentAgg] = {}
        self.states: Counter = Counter()
        self.sessions: set[str] = set()
        self.without_session = 0
        self.users: set[str] = set()
        self.span_total = 0
        self.orphan_spans = 0
        self.branches: Counter = Counter()
        self.cost_by_day: dict[str, float] = defaultdict(float)
        self.group_by = group_by
        self.groups: dict[str, StatsAccumulator] = {}
        self._group_key = group_key_function(group_by) if group_by else None

    # -- feeding
    def add(self, trace: Trace) -> None:
        if self._group_key is not None:
            for key in self._group_key(trace):
                acc = self.groups.get(key)
                if acc is None:
                    acc = self.groups[key] = StatsAccumulator(examples=self.examples)
                    acc._span_filter = _span_filter(self.group_by, key)
                acc.add(trace)
        span_filter = getattr(self, "_span_filter", None)
        self.trace_count += 1
        self.states[trace.state] += 1
        if trace.is_error:
            self.error_count += 1
        if trace.duration_ms is not None:
            self.latencies.append(trace.duration_ms)
            if trace.state == "OK":
                self.ok_latencies.append(trace.duration_ms)
        ts = trace.request_time_ms
        self.start_ms = ts if self.start_ms is None else min(self.start_ms, ts)
        end = ts + int(trace.duration_ms or 0)
        self.end_ms = end if self.end_ms is None else max(self.end_ms, end)
        if trace.session_id:
            self.sessions.add(trace.session_id)
        else:
            self.without_session += 1
        if trace.user_id:
            self.users.add(trace.user_id)
        if trace.git_branch:
            self.branches[trace.git_branch] += 1

        self.in_tokens += trace.input_tokens or 0
        self.out_tokens += trace.output_tokens or 0
        self.total_tokens += trace.total_tokens or 0

        counted = counted_spans(trace)
        trace_cost = 0.0
        trace_priced = False
        tid = trace.trace_id
        for span in trace.spans:
            if span_filter is not None and not span_filter(span):
                continue
            self.span_total += 1
            if span.orphan:
                self.orphan_spans += 1
            skey = (span.name, span.span_type)
            agg = self.spans.get(skey)
            if agg is None:
                agg = self.spans[skey] = _SpanAgg(span.name, span.span_type)
            key = (span.span_type, span.convention)  # span types and conventions, tallied per name
            agg.kinds[key] = agg.kinds.get(key, 0) + 1
            agg.durations.append(span.duration_ms)
            agg.self_ns += span.self_ns
            if agg._last_trace != tid:
                agg.traces += 1
                agg._last_trace = tid
            if span.is_error:
                agg.error_count += 1
            if span.model:
                agg.models[span.model] += 1
            if id(span) in counted:
                agg.tokens += span.tokens
                agg.input_tokens += span.input_tokens or 0
                agg.output_tokens += span.output_tokens or 0
                cost, estimated = span_cost(span)
                if cost is not None:
                    agg.cost += cost
                    agg.priced = True
                    agg.estimated |= estimated
                    trace_cost += cost
                    trace_priced = True
                    if estimated:
                        self.any_estimated = True
                    else:
                        self.any_recorded = True
                if span.model:
                    m = self.models.get(span.model)
                    if m is None:
                        m = self.models[span.model] = _ModelAgg(span.model, span.provider)
                    m.calls += 1
                    m.input_tokens += span.input_tokens or 0
                    m.output_tokens += span.output_tokens or 0
                    m.cache_read_tokens += span.cache_read_tokens or 0
                    if cost is not None:
                        m.cost += cost
                        m.priced = True
                        m.estimated |= estimated
                    if span.is_error:
                        m.errors += 1
            elif span.is_llm and span.model and span.is_error:
                m = self.models.get(span.model)
                if m is None:
                    m = self.models[span.model] = _ModelAgg(span.model, span.provider)
                m.calls += 1
                m.errors += 1
        for span in trace.root_causes():
            if span_filter is not None and not span_filter(span):
                continue
            self._add_error(trace, span)
        if not trace_priced and trace.cost_usd is not None and span_filter is None:
            trace_cost, trace_priced = trace.cost_usd, True
            self.any_recorded = True
        if trace_priced:
            self.cost += trace_cost
            self.any_cost = True
            self.cost_by_day[(iso_ms(trace.request_time_ms) or "")[:10]] += trace_cost
        for a in trace.assessments:
            if not a.valid or a.kind != "feedback":
                continue
            agg = self.assessments.get(a.name)
            if agg is None:
                agg = self.assessments[a.name] = _AssessmentAgg(a.name)
            agg.count += 1
            agg.sources[a.source_type or "UNKNOWN"] += 1
            if a.is_judge_error:
                agg.judge_errors += 1
                agg.judge_error_messages[message_pattern(a.error_message or a.error_code)] += 1
                if len(agg.judge_error_traces) < self.examples:
                    agg.judge_error_traces.append(tid)
            elif a.passed is True:
                agg.passed += 1
            elif a.passed is False:
                agg.failed += 1
                if len(agg.failing_traces) < self.examples:
                    agg.failing_traces.append(tid)

    # -- merging (the parallel pass feeds disjoint, ordered slices of traces to workers)
    def merge(self, other: "StatsAccumulator") -> "StatsAccumulator":
        """Fold in an accumulator fed with the traces that come after this one's."""
        for name in ("trace_count", "error_count", "in_tokens", "out_tokens", "total_tokens",
                     "cost", "without_session", "span_total", "orphan_spans"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("any_cost", "any_estimated", "any_recorded"):
            setattr(self, name, getattr(self, name) or getattr(other, name))
        self.latencies.extend(other.latencies)
        self.ok_latencies.extend(other.ok_latencies)
        self.start_ms = _opt(min, self.start_ms, other.start_ms)
        self.end_ms = _opt(max, self.end_ms, other.end_ms)
        for name in ("states", "branches"):
            getattr(self, name).update(getattr(other, name))
        self.sessions |= other.sessions
        self.users |= other.users
        for day, cost in other.cost_by_day.items():
            self.cost_by_day[day] += cost
        for name, b in other.spans.items():
            a = self.spans.get(name)
            if a is None:
                self.spans[name] = b
                continue
            for k, n in b.kinds.items():
                a.kinds[k] = a.kinds.get(k, 0) + n
            a.models.update(b.models)
            a.durations.extend(b.durations)
            for f in ("error_count", "self_ns", "tokens", "input_tokens", "output_tokens", "cost", "traces"):
                setattr(a, f, getattr(a, f) + getattr(b, f))
            a.priced |= b.priced
            a.estimated |= b.estimated
        for key, b in other.errors.items():
            a = self.errors.get(key)
            if a is None:
                self.errors[key] = b
                continue
            a.count += b.count
            a.traces |= b.traces
            a.durations.extend(b.durations)
            a.timeouts += b.timeouts
            a.examples = (a.examples + [t for t in b.examples if t not in a.examples])[: self.examples]
            a.first_ms = _opt(min, a.first_ms, b.first_ms)
            a.last_ms = _opt(max, a.last_ms, b.last_ms)
        for key, b in other.models.items():
            a = self.models.get(key)
            if a is None:
                self.models[key] = b
                continue
            for f in ("calls", "input_tokens", "output_tokens", "cache_read_tokens", "cost", "errors"):
                setattr(a, f, getattr(a, f) + getattr(b, f))
            a.priced |= b.priced
            a.estimated |= b.estimated
        for key, b in other.assessments.items():
            a = self.assessments.get(key)
            if a is None:
                self.assessments[key] = b
                continue
            for f in ("count", "passed", "failed", "judge_errors"):
                setattr(a, f, getattr(a, f) + getattr(b, f))
            a.sources.update(b.sources)
            a.judge_error_messages.update(b.judge_error_messages)
            a.failing_traces = (a.failing_traces + b.failing_traces)[: self.examples]
            a.judge_error_traces = (a.judge_error_traces + b.judge_error_traces)[: self.examples]
        for key, b in other.groups.items():
            a = self.groups.get(key)
            if a is None:
                self.groups[key] = b
            else:
                a.merge(b)
        return self

    def __getstate__(self):  # the group-key function is a closure: rebuilt after unpickling
        state = dict(self.__dict__)
        state["_group_key"] = None
        state.pop("_span_filter", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.group_by:
            self._group_key = group_key_function(self.group_by)

    def _add_error(self, trace: Trace, span: Span) -> None:
        key = error_key(span)
        agg = self.errors.get(key)
        if agg is None:
            agg = self.errors[key] = _ErrorAgg(span.name, key[2], key[3], span.span_type)
            from .redact import clip

            agg.example_message = clip(span.error_message or span.status_message or "", 300, marker=False)
        agg.count += 1
        agg.traces.add(trace.trace_id)
        agg.durations.append(span.duration_ms)
        if is_timeout(span):
            agg.timeouts += 1
        if len(agg.examples) < self.examples and trace.trace_id not in agg.examples:
            agg.examples.append(trace.trace_id)
        t = trace.request_time_ms
        agg.first_ms = t if agg.first_ms is None else min(agg.first_ms, t)
        agg.last_ms = t if agg.last_ms is None else max(agg.last_ms, t)

    # -- reading
    @property
    def span_types(self) -> Counter:
        out: Counter = Counter()
        for agg in self.spans.values():
            for (t, _), n in agg.kinds.items():
                out[t] += n
        return out

    @property
    def conventions(self) -> Counter:
        out: Counter = Counter()
        for agg in self.spans.values():
            for (_, c), n in agg.kinds.items():
                if c:
                    out[c] += n
        return out

    def observed_days(self) -> float | None:
        if self.start_ms is None or self.end_ms is None:
            return None
        return max(self.end_ms - self.start_ms, 0) / 86_400_000

    def result(self) -> dict[str, Any]:
        spans_out = []
        for agg in self.spans.values():
            d = sorted(agg.durations)
            p50 = percentile(d, 50)
            spans_out.append(
                {
                    "name": agg.name,
                    "type": agg.span_type,
                    "count": len(d),
                    "trace_count": agg.traces,
                    "error_count": agg.error_count,
                    "error_rate": _r(agg.error_count / len(d) if d else 0.0, 4),
                    "mean_ms": _r(sum(d) / len(d)) if d else None,
                    "p50_ms": _r(p50),
                    "p95_ms": _r(percentile(d, 95)),
                    "max_ms": _r(d[-1]) if d else None,
                    "self_ms_total": _r(agg.self_ns / 1e6),
                    "tokens_total": agg.tokens,
                    "input_tokens": agg.input_tokens,
                    "output_tokens": agg.output_tokens,
                    "cost_usd": _cost(agg.cost) if agg.priced else None,
                    "cost_estimated": agg.estimated,
                    "models": [m for m, _ in agg.models.most_common(3)],
                }
            )
        spans_out.sort(key=lambda s: (-(s["self_ms_total"] or 0), s["name"], s["type"]))

        errors_out = []
        for agg in self.errors.values():
            d = sorted(agg.durations)
            p50 = percentile(d, 50) or 0.0
            slow = agg.timeouts * 2 >= agg.count or p50 >= SLOW_FAILURE_MS
            errors_out.append(
                {
                    "span_name": agg.span_name,
                    "span_type": agg.span_type,
                    "exception_type": agg.exception_type,
                    "message_pattern": agg.pattern,
                    "example_message": agg.example_message,
                    "count": agg.count,
                    "trace_count": len(agg.traces),
                    "failure_mode": "slow" if slow else "fast",
                    "timeout": agg.timeouts * 2 >= agg.count,
                    "p50_ms": _r(p50),
                    "max_ms": _r(d[-1]) if d else None,
                    "first_seen": iso_ms(agg.first_ms),
                    "last_seen": iso_ms(agg.last_ms),
                    "example_trace_ids": agg.examples,
                }
            )
        errors_out.sort(key=lambda e: (-e["count"], e["span_name"]))

        priced_total = _cost(self.cost) if self.any_cost else None
        days = self.observed_days()
        out: dict[str, Any] = {
            "trace_count": self.trace_count,
            "error_count": self.error_count,
            "error_rate": _r(self.error_count / self.trace_count if self.trace_count else 0.0, 6),
            "states": dict(self.states),
            "latency_ms": distribution(self.latencies),
            "ok_latency_ms": distribution(self.ok_latencies),
            "tokens": {"input": self.in_tokens, "output": self.out_tokens, "total": self.total_tokens},
            "cost_usd": priced_total,
            "cost_source": (
                None
                if priced_total is None
                else "mixed"
                if self.any_estimated and self.any_recorded
                else "estimated"
                if self.any_estimated
                else "recorded"
            ),
            "cost_per_day_usd": (
                _cost(self.cost / days) if priced_total is not None and days and days >= 1 / 24 else None
            ),
            "cost_by_day": {day: _cost(c) for day, c in sorted(self.cost_by_day.items())},
            "time_range": {"start": iso_ms(self.start_ms), "end": iso_ms(self.end_ms)},
            "observed_days": _r(days, 4) if days is not None else None,
            "span_count": self.span_total,
            "span_types": dict(self.span_types.most_common()),
            "spans": spans_out,
            "errors": errors_out,
            "models": [
                {
                    "model": m.model,
                    "provider": m.provider,
                    "calls": m.calls,
                    "errors": m.errors,
                    "input_tokens": m.input_tokens,
                    "output_tokens": m.output_tokens,
                    "cache_read_tokens": m.cache_read_tokens,
                    "cost_usd": _cost(m.cost) if m.priced else None,
                    "cost_estimated": m.estimated,
                }
                for m in sorted(self.models.values(), key=lambda m: (-m.cost, -m.calls))
            ],
            "assessments": [
                {
                    "name": a.name,
                    "count": a.count,
                    "passed": a.passed,
                    "failed": a.failed,
                    "fail_rate": _r(a.failed / (a.passed + a.failed), 4) if (a.passed + a.failed) else None,
                    "judge_errors": a.judge_errors,
                    "judge_error_messages": dict(a.judge_error_messages.most_common(3)),
                    "sources": dict(a.sources),
                    "failing_trace_ids": a.failing_traces,
                    "judge_error_trace_ids": a.judge_error_traces,
                }
                for a in sorted(self.assessments.values(), key=lambda a: a.name)
            ],
            "sessions": {
                "count": len(self.sessions),
                "traces_without_session": self.without_session,
                "users": len(self.users),
            },
            "branches": dict(self.branches.most_common()),
            "orphan_spans": self.orphan_spans,
            "conventions": dict(self.conventions),
        }
        if self.group_by:
            out["group_by"] = self.group_by
            out["groups"] = [
                {"key": key, **{k: v for k, v in acc.result().items()}}
                for key, acc in sorted(self.groups.items(), key=lambda kv: (-kv[1].trace_count, kv[0]))
            ]
        return out


def _opt(f, a, b):
    return b if a is None else a if b is None else f(a, b)


# --- grouping ------------------------------------------------------------------------------------------


def group_key_function(spec: str) -> Callable[[Trace], list[str]]:
    """Trace -> the group keys it falls in, for --group-by SPEC.

    tag.K, metadata.K, session, user, branch, commit, state, name: one key per trace;
    span_type (or type) and model: one key per distinct value among the trace's spans (the
    group's span figures then cover only spans of that type or model).
    """
    from .errors import UsageError

    s = spec.strip()
    if s.startswith("tag."):
        k = s[4:].strip("`")
        return lambda t: [t.tags.get(k) or "(none)"]
    if s.startswith("metadata."):
        k = s[9:].strip("`")
        return lambda t: [t.metadata.get(k) or "(none)"]
    simple = {
        "session": lambda t: t.session_id,
        "user": lambda t: t.user_id,
        "branch": lambda t: t.git_branch,
        "commit": lambda t: t.git_commit,
        "state": lambda t: t.state,
        "status": lambda t: t.state,
        "name": lambda t: t.name,
    }
    if s in simple:
        f = simple[s]
        return lambda t: [f(t) or "(none)"]
    if s in ("span_type", "type", "span.type"):
        return lambda t: sorted({sp.span_type for sp in t.spans}) or ["(none)"]
    if s in ("model", "span.model"):
        return lambda t: sorted({sp.model for sp in t.spans if sp.model}) or ["(none)"]
    raise UsageError(
        f"--group-by {spec!r}: use tag.KEY, metadata.KEY, span_type, model, session, user, "
        "branch, commit, state or name"
    )


def _span_filter(spec: str | None, key: str):
    if spec in ("span_type", "type", "span.type"):
        return lambda sp: sp.span_type == key
    if spec in ("model", "span.model"):
        return lambda sp: (sp.model or "(none)") == key
    return None


def compute_stats(traces: Iterable[Trace], *, group_by: str | None = None) -> dict[str, Any]:
    acc = StatsAccumulator(group_by=group_by)
    for t in traces:
        acc.add(t)
    return acc.result()


# --- text rendering ---------------------------------------------------------------------------------------


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}{unit}"
    if isinstance(v, int):
        return f"{v:,}{unit}"
    return f"{v}{unit}"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_text(stats: dict[str, Any], *, limit: int = 20) -> str:
    from .redact import redact_value

    stats = redact_value(stats)  # before any clipping: half a key still leaks
    lat, ok = stats["latency_ms"], stats["ok_latency_ms"]
    cost = stats.get("cost_usd")
    lines = [
        f"traces: {stats['trace_count']:,}   errors: {stats['error_count']:,} "
        f"({stats['error_rate'] * 100:.1f}%)   spans: {stats.get('span_count', 0):,}",
        f"time range: {stats['time_range']['start']} .. {stats['time_range']['end']}",
        f"latency ms (all): mean {_fmt(lat['mean'])}  p50 {_fmt(lat['p50'])}  p95 {_fmt(lat['p95'])}  "
        f"p99 {_fmt(lat['p99'])}  max {_fmt(lat['max'])}",
        f"latency ms (OK):  mean {_fmt(ok['mean'])}  p50 {_fmt(ok['p50'])}  p95 {_fmt(ok['p95'])}  "
        f"p99 {_fmt(ok['p99'])}  max {_fmt(ok['max'])}",
        f"tokens: input {stats['tokens']['input']:,}  output {stats['tokens']['output']:,}  "
        f"total {stats['tokens']['total']:,}",
        "cost: "
        + ("not priced" if cost is None else f"${cost:,.4f} (estimate; {stats.get('cost_source')})"),
        "",
        *([f"(span figures estimated from a sample: spans read for {stats['sample']['traces_with_spans']:,} of "
           f"{stats['sample']['traces']:,} traces; trace-level figures are exact; --sample 0 reads every trace)", ""]
          if stats.get("sample") else []),
        "spans by self time:",
        table(
            ["name", "type", "count", "errors", "p50 ms", "p95 ms", "self ms", "tokens", "cost $"],
            [
                [
                    s["name"][:40],
                    s["type"],
                    _fmt(s["count"]),
                    _fmt(s["error_count"]),
                    _fmt(s["p50_ms"]),
                    _fmt(s["p95_ms"]),
                    _fmt(s["self_ms_total"]),
                    _fmt(s["tokens_total"]),
                    "-" if s["cost_usd"] is None else f"{s['cost_usd']:.4f}",
                ]
                for s in stats["spans"][:limit]
            ],
        ),
    ]
    if len(stats["spans"]) > limit:
        lines.append(f"(+{len(stats['spans']) - limit} more span names; --format json for all)")
    if stats.get("models"):
        lines += [
            "",
            "models:",
            table(
                ["model", "calls", "errors", "input tok", "output tok", "cost $"],
                [
                    [m["model"], m["calls"], m["errors"], _fmt(m["input_tokens"]), _fmt(m["output_tokens"]),
                     "-" if m["cost_usd"] is None else f"{m['cost_usd']:.4f}"]
                    for m in stats["models"][:limit]
                ],
            ),
        ]
    if stats.get("cost_by_day"):
        lines += ["", "cost by day (UTC, estimate): " + ", ".join(
            f"{d} ${c:,.2f}" for d, c in list(stats["cost_by_day"].items())[-14:])]
    if stats["errors"]:
        lines += [
            "",
            "errors (root causes):",
            table(
                ["span", "type", "count", "traces", "mode", "p50 ms", "pattern"],
                [
                    [
                        e["span_name"][:30],
                        e["exception_type"][:30],
                        e["count"],
                        e["trace_count"],
                        e["failure_mode"],
                        _fmt(e["p50_ms"]),
                        e["message_pattern"][:70],
                    ]
                    for e in stats["errors"][:limit]
                ],
            ),
        ]
    if stats.get("assessments"):
        lines += [
            "",
            "assessments:",
            table(
                ["name", "count", "passed", "failed", "fail rate", "judge errors"],
                [
                    [
                        a["name"],
                        a["count"],
                        a["passed"],
                        a["failed"],
                        "-" if a["fail_rate"] is None else f"{a['fail_rate'] * 100:.1f}%",
                        a["judge_errors"],
                    ]
                    for a in stats["assessments"]
                ],
            ),
        ]
    for g in stats.get("groups", []):
        lines += [
            "",
            f"[{stats['group_by']} = {g['key']}] traces {g['trace_count']:,}  errors "
            f"{g['error_rate'] * 100:.1f}%  p50 {_fmt(g['latency_ms']['p50'])} ms  "
            f"p95 {_fmt(g['latency_ms']['p95'])} ms  tokens {g['tokens']['total']:,}  cost "
            + ("-" if g["cost_usd"] is None else f"${g['cost_usd']:,.4f}"),
        ]
    return "\n".join(lines)


# --- the pass over a source ---------------------------------------------------------------------

PARALLEL_MIN_TRACES = 2000  # below this, starting workers costs more than it saves


def _slice_worker(job) -> tuple["StatsAccumulator", list[str], tuple[int, list[str]]]:
    query, ids, group_by = job
    from .sources import SqlStoreSource

    source = SqlStoreSource(query)
    acc = StatsAccumulator(group_by=group_by)
    for trace in source.iter_traces(light=True, ids=ids):
        acc.add(trace)
    return acc, source.warnings, (source.skipped, source.skip_reasons)


def accumulate(source, *, group_by: str | None = None, workers: int | None = None) -> StatsAccumulator:
    """The statistics of every trace of a source, failing loudly on an empty or unreadable one.

    A large SQLite experiment is read in contiguous slices by forked worker processes, one
    per core, whose accumulators are merged in order: the same figures, about twice as fast
    on two cores. Elsewhere (other stores, files, no fork) it is one streaming pass.
    """
    import os

    from .sources import SqlStoreSource, check_count, checked

    from .remote import HttpSource, RemoteStats

    if isinstance(source, HttpSource):  # a tracking server: see remote.py
        return RemoteStats(source, group_by=group_by)
    light = isinstance(source, SqlStoreSource) and source.supports_light_read
    if not light:
        acc = StatsAccumulator(group_by=group_by)
        for trace in checked(source):
            acc.add(trace)
        return acc
    ids = source.trace_ids()
    workers = workers or min(os.cpu_count() or 1, 4)
    import multiprocessing

    if workers > 1 and len(ids) >= PARALLEL_MIN_TRACES and "fork" in multiprocessing.get_all_start_methods():
        size = -(-len(ids) // workers)
        jobs = [(source.query, ids[i : i + size], group_by) for i in range(0, len(ids), size)]
        with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
            parts = pool.map(_slice_worker, jobs)
        acc = parts[0][0]
        for part, _, _ in parts[1:]:
            acc.merge(part)
        for _, warnings, (skipped, reasons) in parts:
            source.warnings.extend(warnings)
            for reason in reasons:
                source.skip(reason)
            source.skipped += skipped - len(reasons)  # counted, beyond the reasons kept
    else:
        acc = StatsAccumulator(group_by=group_by)
        for trace in source.iter_traces(light=True, ids=ids):
            acc.add(trace)
    check_count(source, acc.trace_count, known=bool(acc.conventions) or acc.span_total == 0)
    return acc
