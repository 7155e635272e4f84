"""Deterministic findings: problems found by a program, each with numbers and evidence.

One streaming pass feeds the statistics accumulator and a set of detectors; ``result()``
turns what they saw into findings, scores them, ranks them by impact and numbers them.

Detectors, each with thresholds meant to hold on data we have never seen:

* errors grouped at their root cause (span, exception type, message pattern), classified as
  rate limiting, timeout, auth, validation or other; cascades report the cause and name
  the ancestors it propagated to; bursts in time are reported as clusters;
* retries: same-name siblings after a failed attempt, exhausted or recovered, with the
  spacing between attempts (no backoff, fixed, growing);
* slow spans by self time of successful calls and their share of trace latency;
* independent sibling calls run one after another (could run concurrently), with the
  estimated saving;
* redundant calls: the same span with identical inputs repeated in one trace after success;
* cost: prompts growing across a session's turns, an expensive model on a simple task, a
  span dominating spend;
* instrumentation: LLM spans without token usage or model, uninstrumented time inside a span,
  orphan spans, traces without a session id where others have one, required tags missing,
  and (with a repository) LLM/tool client calls with no span around them;
* assessments: failing rates by name; a judge's own errors reported apart.
"""

from __future__ import annotations

import heapq
import json
import re
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from .model import Span, Trace
from .stats import (
    StatsAccumulator,
    counted_spans,
    message_pattern,
    percentile,
    span_cost,
)

from .review_schema import CATEGORIES as _CATEGORY_DOCS
from .review_schema import CONFIDENCE_FLOOR as MIN_CONFIDENCE
from .review_schema import MAX_FINDINGS as DEFAULT_MAX_FINDINGS
from .review_schema import P0_COST_PER_DAY_USD as P0_COST_PER_DAY
from .review_schema import P0_ERROR_RATE, P0_LATENCY_MS
from .review_schema import PRIORITIES as _PRIORITY_DOCS

# The schema module is the one place for categories, priorities and their rules.
CATEGORIES = tuple(_CATEGORY_DOCS)
PRIORITIES = tuple(_PRIORITY_DOCS)

SLOW_NON_LLM_P95_MS = 1000.0  # a tool or retriever slower than this at p95 ...
SLOW_SHARE = 0.20  # ... that takes at least this share of its traces' latency
SLOW_LLM_P95_MS = 15000.0
GAP_MIN_MS = 300.0  # uninstrumented time worth naming
GAP_MIN_SHARE = 0.5  # of the span's own duration
GAP_MIN_OCCURRENCE_SHARE = 0.10  # of the span's occurrences, unless seen often
SEQ_MAX_GAP_MS = 50.0
SEQ_MIN_SHARE = 0.10  # of the parent's occurrences, unless seen in many traces
PARALLELIZABLE_TYPES = frozenset({"TOOL", "RETRIEVER"})  # siblings starting this soon after the previous one ended
SEQ_MIN_SAVING_MS = 150.0
GROWTH_MIN_TURNS = 3
GROWTH_MIN_RATIO = 2.0
GROWTH_MIN_TOKENS = 3000
SIMPLE_MAX_INPUT = 1000
SIMPLE_MAX_OUTPUT = 50
EXPENSIVE_RATIO = 4.0  # a same-provider tier at least this much cheaper exists

_RATE = re.compile(r"\b429\b|rate[ _-]?limit|too many requests|quota|throttl", re.I)
_AUTH = re.compile(
    r"\b40[13]\b|unauthori[sz]ed|forbidden|authenticat|permission denied|invalid api key|"
    r"api[ _-]?key|access denied|credential",
    re.I,
)
_VALID = re.compile(r"validation|invalid|\b422\b|\b400\b|bad request|schema|parse|malformed", re.I)
_VALID_TYPES = re.compile(r"ValueError|ValidationError|TypeError|KeyError|JSONDecodeError|SchemaError", re.I)
_UNAVAILABLE = re.compile(r"\b50[0234]\b|\b529\b|overloaded|unavailable|connection (?:reset|refused|error)", re.I)


def error_kind(error_type: str | None, message: str | None, timeout: bool) -> str:
    text = f"{error_type or ''}: {message or ''}"
    if _RATE.search(text):
        return "rate_limit"
    if timeout:
        return "timeout"
    if _AUTH.search(text):
        return "auth"
    if _VALID_TYPES.search(error_type or "") or _VALID.search(text):
        return "validation"
    if _UNAVAILABLE.search(text):
        return "unavailable"
    return "other"


# --- small helpers -----------------------------------------------------------------------------


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


def _ms(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x / 1000:,.1f} s" if x >= 1000 else f"{x:,.0f} ms"


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _usd(x: float | None) -> str:
    if x is None:
        return "?"
    return f"${x:,.2f}" if x >= 1 else f"${x:,.4f}"


def _conf(n: int, *, strong: int = 90, base: int = 80) -> int:
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


def _values(text: Any, out: set[str], depth: int = 0) -> None:
    """Distinctive leaf values of a decoded JSON value (for data-flow checks)."""
    if depth > 6 or len(out) > 200:
        return
    if isinstance(text, dict):
        for v in text.values():
            _values(v, out, depth + 1)
    elif isinstance(text, list):
        for v in text[:50]:
            _values(v, out, depth + 1)
    elif isinstance(text, str):
        s = text.strip()
        if len(s) >= 4 and s.lower() not in ("true", "false", "none", "null"):
            out.add(s[:200])
    elif isinstance(text, (int, float)) and not isinstance(text, bool) and abs(text) >= 1000:
        out.add(str(text))


def _depends(later: Span, earlier: Span) -> bool:
    """Does ``later`` take something ``earlier`` produced? (Then they cannot run together.)"""
    if not earlier.outputs_json or not later.inputs_json:
        return False
    vals: set[str] = set()
    _values(earlier.outputs, vals)
    if not vals:
        return False
    inputs = later.inputs_json
    return any(v in inputs or json.dumps(v)[1:-1] in inputs for v in vals)


def _informative_inputs(span: Span) -> bool:
    raw = (span.inputs_json or "").strip()
    return raw not in ("", "null", "{}", "[]", '""')


# --- detector state ---------------------------------------------------------------------------------


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


@dataclass
class _GapAgg:
    parents: int = 0  # occurrences with children
    gapped: int = 0
    gap_ms: array = field(default_factory=lambda: array("d"))
    top: TopK = field(default_factory=TopK)
    traces: set = field(default_factory=set)


@dataclass
class _RetryAgg:
    traces: int = 0
    exhausted: int = 0
    recovered: int = 0
    attempts: array = field(default_factory=lambda: array("d"))
    gaps_ms: list = field(default_factory=list)  # per retried trace: gaps between attempts
    wasted_ms: float = 0.0
    same_inputs: int = 0
    exhausted_ids: list = field(default_factory=list)
    recovered_ids: list = field(default_factory=list)
    error_types: Counter = field(default_factory=Counter)
    trace_errors: int = 0  # traces that ended ERROR after exhaustion


@dataclass
class _RedundantAgg:
    traces: int = 0
    extra_calls: int = 0
    wasted_ms: float = 0.0
    wasted_tokens: int = 0
    wasted_cost: float = 0.0
    top: TopK = field(default_factory=TopK)
    occurrences_total: int = 0


@dataclass
class _SeqAgg:
    parent: str
    names: tuple
    traces: int = 0
    saving_ms: array = field(default_factory=lambda: array("d"))
    total_ms: array = field(default_factory=lambda: array("d"))
    top: TopK = field(default_factory=TopK)


@dataclass
class _SimpleAgg:
    count: int = 0
    in_tokens: array = field(default_factory=lambda: array("d"))
    out_tokens: array = field(default_factory=lambda: array("d"))
    models: Counter = field(default_factory=Counter)
    providers: Counter = field(default_factory=Counter)
    cost: float = 0.0
    priced: bool = False
    estimated: bool = False
    top: TopK = field(default_factory=TopK)


@dataclass
class _ErrExtra:
    times: array = field(default_factory=lambda: array("q"))
    ancestors: Counter = field(default_factory=Counter)
    trace_errors: int = 0  # traces that ended ERROR with this root cause


# --- the analyzer --------------------------------------------------------------------------------------


class FindingsAnalyzer:
    def __init__(
        self,
        *,
        required_tags: list[str] | None = None,
        examples: int = 5,
    ):
        self.stats = StatsAccumulator(examples=examples)
        self.examples = examples
        self.required_tags = [t.strip() for t in (required_tags or []) if t.strip()]
        self.slow: dict[str, _SlowAgg] = defaultdict(_SlowAgg)
        self.gaps: dict[str, _GapAgg] = defaultdict(_GapAgg)
        self.retries: dict[str, _RetryAgg] = defaultdict(_RetryAgg)
        self.redundant: dict[str, _RedundantAgg] = defaultdict(_RedundantAgg)
        self.sequences: dict[tuple, _SeqAgg] = {}
        self.parent_counts: Counter = Counter()
        self.simple: dict[tuple, _SimpleAgg] = defaultdict(_SimpleAgg)  # (span name, model)
        self.span_models: dict[str, str] = {}
        self.cost_top: dict[str, TopK] = defaultdict(TopK)
        self.no_usage: dict[str, list] = defaultdict(lambda: [0, 0, []])  # missing, total, ids
        self.no_model: dict[str, list] = defaultdict(lambda: [0, 0, []])
        self.orphan_traces = 0
        self.orphan_names: Counter = Counter()
        self.orphan_ids: list[str] = []
        self.no_session: list = [0, [], Counter()]  # count, ids, root names
        self.session_turns: dict[tuple, list] = defaultdict(list)  # (session, span) -> [(t, in, id, cost)]
        self.err_extra: dict[tuple, _ErrExtra] = defaultdict(_ErrExtra)
        self.missing_tags: dict[str, list] = defaultdict(lambda: [0, []])
        self.trace_count = 0

    # -- feeding ----------------------------------------------------------------------
    def add(self, trace: Trace) -> None:
        self.stats.add(trace)
        self.trace_count += 1
        tid = trace.trace_id
        dur = trace.duration_ms or (trace.root.duration_ms if trace.root else 0.0)
        critical = {id(s) for s in trace.critical_path()}
        counted = counted_spans(trace)
        seen_names: set[str] = set()

        for span in trace.spans:
            name = span.name
            # slow spans: successful calls only (failures are the error detectors' business)
            agg = self.slow[name]
            agg.span_type = span.span_type
            agg.is_llm = agg.is_llm or span.is_llm
            if not span.is_error:
                agg.ok_self.append(span.self_ms)
                agg.ok_dur.append(span.duration_ms)
                agg.top.add(span.self_ms, tid)
            agg.self_sum += span.self_ms
            if name not in seen_names:
                seen_names.add(name)
                agg.traces += 1
                agg.trace_dur_sum += dur or 0.0
            if id(span) in critical:
                agg.critical += 1

            # uninstrumented time inside spans that have children
            if span.children and not span.is_llm:
                g = self.gaps[name]
                g.parents += 1
                gap = sum(e - b for b, e in span.gaps_ns()) / 1e6
                if gap >= GAP_MIN_MS and gap >= GAP_MIN_SHARE * span.duration_ms:
                    g.gapped += 1
                    g.gap_ms.append(gap)
                    g.top.add(gap, tid)
                    if len(g.traces) < 10000:
                        g.traces.add(tid)

            # instrumentation of LLM spans
            if span.is_llm and not span.is_error:
                nu = self.no_usage[name]
                nu[1] += 1
                if not span.has_usage and not any(c.has_usage for c in span.children):
                    nu[0] += 1
                    if len(nu[2]) < self.examples and tid not in nu[2]:
                        nu[2].append(tid)
                nm = self.no_model[name]
                nm[1] += 1
                if not span.model:
                    nm[0] += 1
                    if len(nm[2]) < self.examples and tid not in nm[2]:
                        nm[2].append(tid)

            # simple tasks on expensive models: measured on counted LLM spans
            if span.is_llm and id(span) in counted and span.has_usage and span.model and not span.is_error:
                s = self.simple[(name, span.model)]
                s.count += 1
                s.in_tokens.append(span.input_tokens or 0)
                s.out_tokens.append(span.output_tokens or 0)
                s.models[span.model] += 1
                if span.provider:
                    s.providers[span.provider] += 1
                cost, est = span_cost(span)
                if cost is not None:
                    s.cost += cost
                    s.priced = True
                    s.estimated |= est
                s.top.add(cost or 0.0, tid)
                self.span_models.setdefault(name, span.model)
                self.cost_top[name].add(cost or 0.0, tid)

            if span.children:
                self._siblings(trace, span, counted)
        if trace.orphans:
            self.orphan_traces += 1
            for s in trace.orphans:
                self.orphan_names[s.name] += 1
            if len(self.orphan_ids) < self.examples:
                self.orphan_ids.append(tid)

        if not trace.session_id:
            self.no_session[0] += 1
            if len(self.no_session[1]) < self.examples:
                self.no_session[1].append(tid)
            self.no_session[2][trace.name or (trace.root.name if trace.root else "?")] += 1
        else:
            per_name: dict[str, tuple[int, float]] = {}
            for span in trace.spans:
                if span.is_llm and span.input_tokens:
                    cost, _ = span_cost(span)
                    prev = per_name.get(span.name)
                    if prev is None or span.input_tokens > prev[0]:
                        per_name[span.name] = (span.input_tokens, cost or 0.0)
            for name, (tokens, cost) in per_name.items():
                turns = self.session_turns[(trace.session_id, name)]
                if len(turns) < 200:
                    turns.append((trace.request_time_ms, tokens, tid, cost))

        keys_in_trace: set[tuple] = set()
        for root_cause in trace.root_causes():
            key = (
                root_cause.name,
                root_cause.error_type or "Error",
                message_pattern(root_cause.error_message or root_cause.status_message),
            )
            x = self.err_extra[key]
            if len(x.times) < 20000:
                x.times.append(trace.request_time_ms)
            if trace.is_error and key not in keys_in_trace:
                x.trace_errors += 1  # traces, not occurrences
            keys_in_trace.add(key)
            node = trace.by_id.get(root_cause.parent_id) if root_cause.parent_id else None
            while node is not None:
                if node.is_error:
                    x.ancestors[node.name] += 1
                node = trace.by_id.get(node.parent_id) if node.parent_id else None

        for tag in self.required_tags:
            if not _has_tag(trace, tag):
                m = self.missing_tags[tag]
                m[0] += 1
                if len(m[1]) < self.examples:
                    m[1].append(tid)

    def _siblings(self, trace: Trace, parent: Span, counted: set[int]) -> None:
        kids = parent.children  # sorted by start
        tid = trace.trace_id
        self.parent_counts[parent.name] += 1
        by_name: dict[str, list[Span]] = defaultdict(list)
        for c in kids:
            by_name[c.name].append(c)

        # retries: a same-name sibling started after a failed attempt
        for name, group in by_name.items():
            if len(group) < 2:
                continue
            runs: list[list[Span]] = []
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
            if runs:
                r = self.retries[name]
                r.traces += 1
                for run in runs:
                    exhausted = run[-1].is_error
                    r.attempts.append(len(run))
                    r.wasted_ms += sum(s.duration_ms for s in run if s.is_error)
                    gaps = [(b.start_ns - a.end_ns) / 1e6 for a, b in zip(run, run[1:])]
                    if len(r.gaps_ms) < 500:
                        r.gaps_ms.append(gaps)
                    if len({s.inputs_json for s in run}) == 1:
                        r.same_inputs += 1
                    for s in run:
                        if s.is_error:
                            r.error_types[s.error_type or "Error"] += 1
                    if exhausted:
                        r.exhausted += 1
                        if trace.is_error:
                            r.trace_errors += 1
                        if len(r.exhausted_ids) < self.examples and tid not in r.exhausted_ids:
                            r.exhausted_ids.append(tid)
                    else:
                        r.recovered += 1
                        if len(r.recovered_ids) < self.examples and tid not in r.recovered_ids:
                            r.recovered_ids.append(tid)

            # redundant: identical inputs again after a successful call
            done: dict[str, Span] = {}
            extra = []
            for s in group:
                if not _informative_inputs(s):
                    continue
                key = s.inputs_json
                first = done.get(key)
                if first is not None and not first.is_error:
                    extra.append(s)
                elif first is None:
                    done[key] = s
            rd = self.redundant[name]
            rd.occurrences_total += len(group)
            if extra:
                rd.traces += 1
                rd.extra_calls += len(extra)
                rd.wasted_ms += sum(s.duration_ms for s in extra)
                for s in extra:
                    if id(s) in counted:
                        rd.wasted_tokens += s.tokens
                        cost, _ = span_cost(s)
                        rd.wasted_cost += cost or 0.0
                rd.top.add(sum(s.duration_ms for s in extra), tid)

        # independent calls run one after another: consecutive non-LLM siblings with
        # distinct names, each starting right after the previous ended, none feeding the next
        candidates = [c for c in kids if c.span_type in PARALLELIZABLE_TYPES and not c.is_error]
        chain: list[Span] = []

        def flush(chain: list[Span]) -> None:
            if len(chain) < 2 or len({c.name for c in chain}) < len(chain):
                return
            total = sum(c.duration_ms for c in chain)
            saving = total - max(c.duration_ms for c in chain)
            if saving < SEQ_MIN_SAVING_MS:
                return
            key = (parent.name, tuple(c.name for c in chain))
            agg = self.sequences.get(key)
            if agg is None:
                agg = self.sequences[key] = _SeqAgg(parent.name, key[1])
            agg.traces += 1
            agg.saving_ms.append(saving)
            agg.total_ms.append(total)
            agg.top.add(saving, tid)

        for c in candidates:
            if chain:
                prev = chain[-1]
                gap_ms = (c.start_ns - prev.end_ns) / 1e6
                sequential = 0 <= gap_ms <= SEQ_MAX_GAP_MS
                independent = not any(_depends(c, p) for p in chain)
                if sequential and independent and c.name not in {p.name for p in chain}:
                    chain.append(c)
                    continue
                flush(chain)
            chain = [c]
        flush(chain)

    # -- results ------------------------------------------------------------------------------
    def result(
        self,
        *,
        max_findings: int | None = DEFAULT_MAX_FINDINGS,
        locate_result: Any = None,
        code_gaps: bool = True,
    ) -> dict[str, Any]:
        stats = self.stats.result()
        n = max(stats["trace_count"], 1)
        days = self.stats.observed_days()
        per_day = (1.0 / days) if days and days >= 1 / 24 else None
        ctx = _Ctx(stats=stats, n=n, per_day=per_day, days=days)
        found: list[dict[str, Any]] = []
        found += self._error_findings(ctx)
        found += self._retry_findings(ctx)
        found += self._slow_findings(ctx)
        found += self._sequential_findings(ctx)
        found += self._redundant_findings(ctx)
        found += self._cost_findings(ctx)
        found += self._instrumentation_findings(ctx)
        found += self._assessment_findings(ctx)
        if locate_result is not None and code_gaps:
            found += _code_gap_findings(locate_result)
        found = [f for f in found if f["confidence"] >= MIN_CONFIDENCE]
        found.sort(key=lambda f: (PRIORITIES.index(f["priority"]), -f.pop("_impact", 0.0), -f["confidence"]))
        for f in found:
            f.pop("_impact", None)
        total = len(found)
        if max_findings is not None:
            found = found[:max_findings]
        for i, f in enumerate(found, start=1):
            f["id"] = f"F-{i:03d}"
        if locate_result is not None:
            from .locate import resolve

            for f in found:
                if f.get("code") is None:
                    for name in f["span_names"]:
                        loc = resolve(name, locate_result)
                        if loc:
                            f["code"] = loc
                            break
        ordered = [_ordered(f) for f in found]
        return {"findings": ordered, "findings_total": total, "stats": stats}

    # errors ---------------------------------------------------------------------------------
    def _error_findings(self, ctx: "_Ctx") -> list[dict]:
        out = []
        retried = {name for name, r in self.retries.items() if r.traces}
        for e in ctx.stats["errors"]:
            count, traces = e["count"], e["trace_count"]
            if count < 2 and ctx.n > 3:
                continue
            key = (e["span_name"], e["exception_type"], e["message_pattern"])
            extra = self.err_extra.get(key) or _ErrExtra()
            kind = error_kind(e["exception_type"], e["example_message"], e["timeout"])
            rate = traces / ctx.n
            failed_rate = extra.trace_errors / ctx.n
            cluster = _time_cluster(extra.times, ctx)
            ancestors = [a for a, _ in extra.ancestors.most_common(4)]
            span = e["span_name"]
            label = {
                "rate_limit": "rate limited (429)",
                "timeout": f"times out after ~{_ms(e['p50_ms'])}",
                "auth": "fails authentication",
                "validation": "fails input validation",
                "unavailable": "hits an unavailable upstream",
                "other": f"raises {e['exception_type']}",
            }[kind]
            title = f"`{span}` {label} in {traces} trace{'s' if traces != 1 else ''} ({_pct(rate)})"
            if cluster:
                title += f", clustered in {cluster['window']}"
            how = "slowly, as timeouts do" if e["failure_mode"] == "slow" else "fast"
            issue = (
                f"{count} failure(s) of `{span}` in {traces} trace(s) with {e['exception_type']}: "
                f"\"{e['example_message'][:160]}\". They fail {how} "
                f"(p50 {_ms(e['p50_ms'])} before failing)."
            )
            if ancestors:
                issue += (
                    f" The error propagates to {', '.join(f'`{a}`' for a in ancestors)}: `{span}` is the "
                    "root cause, not its ancestors."
                )
            if cluster:
                issue += (
                    f" {cluster['count']} of {count} occurrences fall within {cluster['window']} "
                    f"({cluster['start']} to {cluster['end']}): an incident or quota window rather "
                    "than a steady fault."
                )
            if extra.trace_errors:
                impact = (
                    f"{extra.trace_errors} trace(s) ({_pct(failed_rate)} of all) end in ERROR because "
                    f"of it; {traces - extra.trace_errors} others caught it."
                )
            else:
                impact = f"All {traces} affected traces caught the error and finished OK, possibly degraded."
            if e["failure_mode"] == "slow":
                impact += f" Each failure holds the request for ~{_ms(e['p50_ms'])}."
            suggestion = {
                "rate_limit": "Add client-side rate limiting or a token-bucket queue, retry with exponential "
                "backoff and jitter honouring Retry-After, and consider a higher usage tier or "
                "spreading load across keys/regions.",
                "timeout": "Set a tighter timeout with a fast fallback, find why the call hangs "
                "(upstream latency, large payloads), and retry idempotent calls once with backoff.",
                "auth": "Check credential rotation and expiry for this client; fail fast at start-up "
                "when credentials are invalid, and alert on the first 401/403 instead of per request.",
                "validation": "Validate and normalise the inputs before calling (e.g. with a schema), "
                "and fix the prompt or tool schema that produces malformed arguments.",
                "unavailable": "Retry with backoff and a circuit breaker, and add a fallback provider "
                "or cached answer when the upstream is down.",
                "other": "Inspect the example traces' stack traces and handle this error at its source.",
            }[kind]
            # Priorities: error rate over 10% -> P0; a steady or trace-breaking pattern -> P1.
            if failed_rate > P0_ERROR_RATE or rate > P0_ERROR_RATE and extra.trace_errors:
                priority = "P0"
            elif extra.trace_errors or rate >= 0.02 or e["failure_mode"] == "slow":
                priority = "P1"
            else:
                priority = "P2"
            conf = _conf(count, strong=95, base=85)
            category = "error_pattern"
            if kind == "rate_limit" and span in retried and not extra.trace_errors:
                # recovered by retries: the retry finding carries it
                priority = "P2" if priority != "P0" else priority
            out.append(
                {
                    "category": category,
                    "priority": priority,
                    "confidence": conf,
                    "title": title,
                    "span_names": [span] + ancestors,
                    "trace_ids": e["example_trace_ids"],
                    "code": None,
                    "issue": issue,
                    "impact": impact,
                    "suggestion": suggestion,
                    "metrics": {
                        "error_kind": kind,
                        "exception_type": e["exception_type"],
                        "message_pattern": e["message_pattern"],
                        "count": count,
                        "trace_count": traces,
                        "trace_rate": round(rate, 4),
                        "failed_traces": extra.trace_errors,
                        "failed_trace_rate": round(failed_rate, 4),
                        "failure_mode": e["failure_mode"],
                        "p50_ms": e["p50_ms"],
                        "propagated_to": ancestors,
                        "time_cluster": cluster,
                        "first_seen": e["first_seen"],
                        "last_seen": e["last_seen"],
                    },
                    "_impact": extra.trace_errors * 10 + traces,
                }
            )
        return out

    # retries ---------------------------------------------------------------------------------
    def _retry_findings(self, ctx: "_Ctx") -> list[dict]:
        out = []
        for name, r in self.retries.items():
            runs = r.exhausted + r.recovered
            if runs == 0 or (r.traces < 2 and ctx.n > 3):
                continue
            flat = [g for gaps in r.gaps_ms for g in gaps]
            backoff = _backoff(r.gaps_ms)
            mean_attempts = sum(r.attempts) / len(r.attempts)
            top_error = r.error_types.most_common(1)[0][0] if r.error_types else "Error"
            ids = r.exhausted_ids + [t for t in r.recovered_ids if t not in r.exhausted_ids]
            title = (
                f"Retries of `{name}` exhausted in {r.exhausted} of {runs} retry sequences"
                if r.exhausted
                else f"`{name}` needs retries in {r.traces} traces ({_pct(r.traces / ctx.n)})"
            )
            issue = (
                f"`{name}` failed ({top_error}) and was called again {runs} time(s) across "
                f"{r.traces} traces, {mean_attempts:.1f} attempts on average; {r.exhausted} sequence(s) "
                f"ran out of attempts, {r.recovered} recovered. Spacing between attempts: {backoff['label']}"
                + (f" (median {_ms(percentile(sorted(flat), 50))})" if flat else "")
                + "."
            )
            if r.same_inputs:
                issue += f" {r.same_inputs} sequence(s) resent identical inputs."
            impact = (
                f"{_ms(r.wasted_ms)} spent in failed attempts in all"
                + (f" ({_ms(r.wasted_ms / r.traces)} per affected trace)" if r.traces else "")
                + (f"; {r.trace_errors} trace(s) failed after exhausting retries." if r.trace_errors else ".")
            )
            if backoff["kind"] in ("none", "fixed"):
                suggestion = (
                    "Use exponential backoff with jitter (e.g. 1 s, 2 s, 4 s, 8 s) and honour "
                    "Retry-After; cap attempts and fail fast on non-retryable errors."
                )
            else:
                suggestion = (
                    "Backoff is in place but still exhausts: reduce request rate at the source "
                    "(client-side rate limiter, batching, caching), raise the quota, or fall back "
                    "to another model/provider after the last attempt."
                )
            exhausted_rate = r.trace_errors / ctx.n
            priority = "P0" if exhausted_rate > P0_ERROR_RATE else "P1" if r.exhausted else "P2"
            out.append(
                {
                    "category": "retry_issue",
                    "priority": priority,
                    "confidence": _conf(runs, strong=92, base=85),
                    "title": title,
                    "span_names": [name],
                    "trace_ids": ids[: self.examples],
                    "code": None,
                    "issue": issue,
                    "impact": impact,
                    "suggestion": suggestion,
                    "metrics": {
                        "retry_sequences": runs,
                        "traces": r.traces,
                        "exhausted": r.exhausted,
                        "recovered": r.recovered,
                        "mean_attempts": round(mean_attempts, 2),
                        "backoff": backoff,
                        "wasted_ms": round(r.wasted_ms, 1),
                        "failed_traces": r.trace_errors,
                        "identical_inputs_sequences": r.same_inputs,
                        "error_types": dict(r.error_types.most_common(3)),
                    },
                    "_impact": r.exhausted * 10 + runs,
                }
            )
        return out

    # latency ---------------------------------------------------------------------------------
    def _slow_findings(self, ctx: "_Ctx") -> list[dict]:
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
            elif a.span_type == "AGENT" or self.parent_counts.get(name, 0) and self.gaps.get(name):
                # wrappers: their own time is reported as uninstrumented time instead
                slow = False
            else:
                slow = p95 >= SLOW_NON_LLM_P95_MS and share >= SLOW_SHARE
            if not slow:
                continue
            # Compare with the other spans of the same kind: is this one an outlier?
            durs = sorted(a.ok_dur)
            crit_share = a.critical / max(len(a.ok_self), 1)
            priority = "P0" if p95 >= P0_LATENCY_MS and crit_share >= 0.5 else "P1" if share >= 0.3 else "P2"
            title = f"`{name}` is slow: p95 {_ms(p95)}, {_pct(share)} of its traces' latency"
            issue = (
                f"`{name}` ({a.span_type}) takes p50 {_ms(p50)} / p95 {_ms(p95)} of its own time "
                f"over {len(selfs)} successful calls in {a.traces} traces, and is on the critical "
                f"path {_pct(min(crit_share, 1.0))} of the time."
            )
            impact = (
                f"It accounts for {_pct(share)} of the latency of the traces it appears in "
                f"(trace p95 {_ms(all_ok['p95'])}); cutting its p95 to its p50 would save about "
                f"{_ms(max(p95 - p50, 0))} on slow requests."
            )
            suggestion = (
                "Profile this operation: add a cache for repeated lookups, set a timeout with a "
                "fallback, narrow the query or payload, or move it off the request path."
                if not a.is_llm
                else "Shorten prompts and max_tokens, stream the response, or use a faster model for this step."
            )
            out.append(
                {
                    "category": "latency_issue",
                    "priority": priority,
                    "confidence": _conf(len(selfs), strong=92, base=82),
                    "title": title,
                    "span_names": [name],
                    "trace_ids": a.top.ids_desc(),
                    "code": None,
                    "issue": issue,
                    "impact": impact,
                    "suggestion": suggestion,
                    "metrics": {
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
                    "_impact": share * a.traces,
                }
            )
        return out

    def _sequential_findings(self, ctx: "_Ctx") -> list[dict]:
        out = []
        # Keep the longest chain per parent that recurs; drop sub-chains of a reported one.
        items = sorted(self.sequences.values(), key=lambda s: (-len(s.names), -s.traces))
        reported: list[_SeqAgg] = []
        for s in items:
            parent_n = self.parent_counts.get(s.parent, 0)
            if s.traces < 2 and ctx.n > 3:
                continue
            if parent_n and s.traces / parent_n < SEQ_MIN_SHARE and s.traces < 20:
                continue
            if any(r.parent == s.parent and set(s.names) <= set(r.names) for r in reported):
                continue
            savings = sorted(s.saving_ms)
            totals = sorted(s.total_ms)
            mean_saving = sum(savings) / len(savings)
            if mean_saving < SEQ_MIN_SAVING_MS:
                continue
            reported.append(s)
            names = ", ".join(f"`{n}`" for n in s.names)
            saved_total_ms = sum(savings)
            out.append(
                {
                    "category": "latency_issue",
                    "priority": "P1" if mean_saving >= 500 else "P2",
                    "confidence": 88 if s.traces >= 5 else 80,
                    "title": f"{len(s.names)} independent calls under `{s.parent}` run one after another",
                    "span_names": list(s.names) + [s.parent],
                    "trace_ids": s.top.ids_desc(),
                    "code": None,
                    "issue": (
                        f"Under `{s.parent}`, {names} run sequentially (each starts when the previous "
                        f"ends) in {s.traces} traces, and none takes the others' outputs as input."
                    ),
                    "impact": (
                        f"Together they take p50 {_ms(percentile(totals, 50))}; run concurrently they "
                        f"would take about the longest one: ~{_ms(mean_saving)} saved per trace "
                        f"({_ms(saved_total_ms)} over the sample)."
                    ),
                    "suggestion": (
                        "Run them concurrently (asyncio.gather, a thread pool, or parallel tool calls "
                        "in the agent framework), keeping the tracing context for each."
                    ),
                    "metrics": {
                        "traces": s.traces,
                        "parent_occurrences": parent_n,
                        "sequential_p50_ms": round(percentile(totals, 50) or 0, 1),
                        "expected_saving_ms_mean": round(mean_saving, 1),
                        "expected_saving_ms_total": round(saved_total_ms, 1),
                    },
                    "_impact": mean_saving * s.traces / 1000,
                }
            )
        return out

    def _redundant_findings(self, ctx: "_Ctx") -> list[dict]:
        out = []
        for name, r in self.redundant.items():
            if r.traces < 2 and ctx.n > 3:
                continue
            if r.extra_calls == 0:
                continue
            per_day = ctx.per_day
            cost_day = r.wasted_cost * per_day if per_day else None
            out.append(
                {
                    "category": "inefficient_pattern",
                    "priority": "P1" if (cost_day or 0) >= 1 or r.wasted_ms / r.traces >= 1000 else "P2",
                    "confidence": _conf(r.traces, strong=93, base=85),
                    "title": f"`{name}` called again with identical inputs in {r.traces} traces",
                    "span_names": [name],
                    "trace_ids": r.top.ids_desc(),
                    "code": None,
                    "issue": (
                        f"Within single traces, `{name}` is repeated with exactly the same inputs after "
                        f"a successful call: {r.extra_calls} redundant call(s) in {r.traces} traces."
                    ),
                    "impact": (
                        f"{_ms(r.wasted_ms)} of redundant work in the sample"
                        + (f", {r.wasted_tokens:,} tokens ({_usd(r.wasted_cost)})" if r.wasted_tokens else "")
                        + (f", about {_usd(cost_day * 30)}/month" if cost_day else "")
                        + "."
                    ),
                    "suggestion": (
                        "Memoize the result within the request (or cache it with a short TTL), or pass "
                        "the first result along instead of calling again."
                    ),
                    "metrics": {
                        "traces": r.traces,
                        "redundant_calls": r.extra_calls,
                        "wasted_ms": round(r.wasted_ms, 1),
                        "wasted_tokens": r.wasted_tokens,
                        "wasted_cost_usd": round(r.wasted_cost, 6),
                        "cost_per_day_usd": None if cost_day is None else round(cost_day, 4),
                        "cost_per_month_usd": None if cost_day is None else round(cost_day * 30, 2),
                        "expected_saving_ms": round(r.wasted_ms, 1),
                    },
                    "_impact": r.wasted_ms / 1000 + r.traces,
                }
            )
        return out

    # cost ------------------------------------------------------------------------------------
    def _cost_findings(self, ctx: "_Ctx") -> list[dict]:
        out = []
        out += self._growth_findings(ctx)
        out += self._simple_task_findings(ctx)
        total = ctx.stats.get("cost_usd") or 0.0
        if total and ctx.per_day:
            for s in ctx.stats["spans"]:
                cost = s.get("cost_usd") or 0.0
                per_day = cost * ctx.per_day
                if cost / total >= 0.5 and per_day >= P0_COST_PER_DAY:
                    out.append(
                        {
                            "category": "high_cost",
                            "priority": "P0",
                            "confidence": 90,
                            "title": f"`{s['name']}` costs {_usd(per_day)}/day ({_pct(cost / total)} of spend)",
                            "span_names": [s["name"]],
                            "trace_ids": self.cost_top[s["name"]].ids_desc() if s["name"] in self.cost_top else [],
                            "code": None,
                            "issue": (
                                f"`{s['name']}` ({', '.join(s.get('models') or []) or 'unknown model'}) "
                                f"used {s['tokens_total']:,} tokens over {s['count']} calls, "
                                f"{_usd(cost)} in the sample."
                            ),
                            "impact": f"About {_usd(per_day)}/day, {_usd(per_day * 30)}/month at the observed rate (an estimate).",
                            "suggestion": "Trim prompts (retrieved context, history), cap output tokens, cache repeated prompts (prompt caching), or route easy requests to a cheaper model.",
                            "metrics": {
                                "cost_usd": round(cost, 6),
                                "share_of_cost": round(cost / total, 4),
                                "cost_per_day_usd": round(per_day, 4),
                                "cost_per_month_usd": round(per_day * 30, 2),
                                "tokens": s["tokens_total"],
                                "calls": s["count"],
                            },
                            "_impact": per_day,
                        }
                    )
        return out

    def _growth_findings(self, ctx: "_Ctx") -> list[dict]:
        by_span: dict[str, dict] = {}
        for (session, name), turns in self.session_turns.items():
            if len(turns) < GROWTH_MIN_TURNS:
                continue
            turns.sort()
            tokens = [t[1] for t in turns]
            rising = sum(1 for a, b in zip(tokens, tokens[1:]) if b > a)
            if rising < 0.8 * (len(tokens) - 1):
                continue
            if tokens[-1] < GROWTH_MIN_TOKENS or tokens[-1] < GROWTH_MIN_RATIO * max(tokens[0], 1):
                continue
            d = by_span.setdefault(
                name, {"sessions": 0, "first": [], "last": [], "turns": 0, "excess_cost": 0.0, "ids": TopK(), "cost": 0.0,
                       "model": self.span_models.get(name)}
            )
            d["sessions"] += 1
            d["first"].append(tokens[0])
            d["last"].append(tokens[-1])
            d["turns"] += len(tokens)
            base = tokens[0]
            for _, tok, tid, cost in turns:
                if tok > 0 and cost:
                    d["excess_cost"] += cost * max(tok - base, 0) / tok
                d["cost"] += cost
            d["ids"].add(tokens[-1] / max(base, 1), turns[-1][2])
        out = []
        for name, d in by_span.items():
            if d["sessions"] < 2 and ctx.n > 3:
                continue
            per_day = d["excess_cost"] * ctx.per_day if ctx.per_day else None
            model = d["model"]
            priority = "P0" if per_day and per_day > P0_COST_PER_DAY else "P1"
            first = sorted(d["first"])
            last = sorted(d["last"])
            out.append(
                {
                    "category": "high_cost",
                    "priority": priority,
                    "confidence": _conf(d["sessions"], strong=92, base=85),
                    "title": f"Prompt of `{name}` grows every turn ({_fmt_tokens(percentile(first, 50))} to {_fmt_tokens(percentile(last, 50))} tokens per session)",
                    "span_names": [name],
                    "trace_ids": d["ids"].ids_desc(),
                    "code": None,
                    "issue": (
                        f"In {d['sessions']} sessions, the input tokens of `{name}`"
                        + (f" ({model})" if model else "")
                        + f" rise turn after turn, from a median {_fmt_tokens(percentile(first, 50))} on the first "
                        f"turn to {_fmt_tokens(percentile(last, 50))} on the last: the whole conversation "
                        "history is resent each time."
                    ),
                    "impact": (
                        f"{_usd(d['excess_cost'])} of the sample's cost is history above the first turn's size"
                        + (f"; about {_usd(per_day)}/day, {_usd(per_day * 30)}/month (an estimate)" if per_day else "")
                        + "."
                    ),
                    "suggestion": (
                        "Keep a sliding window of recent turns, summarise older history, and use prompt "
                        "caching for the stable prefix; cap retrieved context per turn."
                    ),
                    "metrics": {
                        "sessions": d["sessions"],
                        "turns": d["turns"],
                        "first_turn_tokens_p50": percentile(first, 50),
                        "last_turn_tokens_p50": percentile(last, 50),
                        "excess_cost_usd": round(d["excess_cost"], 6),
                        "cost_per_day_usd": None if per_day is None else round(per_day, 4),
                        "cost_per_month_usd": None if per_day is None else round(per_day * 30, 2),
                        "expected_saving_usd_per_month": None if per_day is None else round(per_day * 30 * 0.7, 2),
                        "model": model,
                    },
                    "_impact": (per_day or 0) * 30 + d["sessions"],
                }
            )
        return out

    def _simple_task_findings(self, ctx: "_Ctx") -> list[dict]:
        try:
            from . import pricing
        except ImportError:  # pragma: no cover
            return []
        out = []
        for (name, model), s in self.simple.items():
            if s.count < 3:
                continue
            alt = pricing.cheaper_alternative(model)
            if not alt:
                continue
            alt_model, ratio = alt
            if ratio < EXPENSIVE_RATIO:
                continue
            p50_in = percentile(sorted(s.in_tokens), 50) or 0
            p50_out = percentile(sorted(s.out_tokens), 50) or 0
            if p50_in > SIMPLE_MAX_INPUT or p50_out > SIMPLE_MAX_OUTPUT:
                continue
            saving = s.cost * (1 - 1 / ratio) if s.priced else None
            per_day = saving * ctx.per_day if saving is not None and ctx.per_day else None
            out.append(
                {
                    "category": "high_cost",
                    "priority": "P1" if (per_day or 0) * 30 >= 10 else "P2",
                    "confidence": 82 if s.count >= 10 else 75,
                    "title": f"`{name}` uses {model} for a small task (~{p50_in:,.0f} tokens in, ~{p50_out:,.0f} out)",
                    "span_names": [name],
                    "trace_ids": s.top.ids_desc(),
                    "code": None,
                    "issue": (
                        f"`{name}` runs on {model} with a median of {p50_in:,.0f} input and {p50_out:,.0f} "
                        f"output tokens over {s.count} calls: a short classification/extraction-sized task "
                        f"on a top-tier model. {alt_model} costs about {ratio:.0f}x less."
                    ),
                    "impact": (
                        f"{_usd(s.cost)} in the sample"
                        + (f", about {_usd(per_day * 30)}/month could be saved" if per_day else "")
                        + (" (an estimate)." if s.estimated or per_day else ".")
                    ),
                    "suggestion": (
                        f"Route this step to {alt_model} (or a fine-tuned small model) and check its "
                        "accuracy on a labelled sample before switching."
                    ),
                    "metrics": {
                        "calls": s.count,
                        "model": model,
                        "cheaper_model": alt_model,
                        "price_ratio": round(ratio, 2),
                        "input_tokens_p50": p50_in,
                        "output_tokens_p50": p50_out,
                        "cost_usd": round(s.cost, 6) if s.priced else None,
                        "expected_saving_usd": None if saving is None else round(saving, 6),
                        "cost_per_month_usd": None if not ctx.per_day or not s.priced else round(s.cost * ctx.per_day * 30, 2),
                        "expected_saving_usd_per_month": None if per_day is None else round(per_day * 30, 2),
                    },
                    "_impact": (per_day or 0) * 30,
                }
            )
        return out

    # instrumentation --------------------------------------------------------------------------
    def _instrumentation_findings(self, ctx: "_Ctx") -> list[dict]:
        out = []
        for name, (missing, total, ids) in self.no_usage.items():
            if missing == 0 or (missing < 2 and ctx.n > 3):
                continue
            out.append(
                _gap_finding(
                    title=f"LLM span `{name}` records no token usage ({missing} of {total} calls)",
                    names=[name],
                    ids=ids,
                    confidence=95,
                    issue=(
                        f"{missing} of {total} `{name}` LLM spans carry no token usage "
                        "(no mlflow.chat.tokenUsage, gen_ai.usage.* or llm.token_count.*), so their "
                        "tokens and cost are invisible to MLflow and to this analysis."
                    ),
                    impact="Cost and token totals are understated; prompt growth or expensive calls here cannot be seen.",
                    suggestion=(
                        "Enable the provider's MLflow autolog (mlflow.anthropic/openai.autolog()) or set "
                        "the usage on the span: span.set_attribute('mlflow.chat.tokenUsage', "
                        "{'input_tokens': ..., 'output_tokens': ..., 'total_tokens': ...})."
                    ),
                    metrics={"spans_without_usage": missing, "llm_spans": total},
                    impact_score=missing,
                )
            )
        for name, (missing, total, ids) in self.no_model.items():
            if missing == 0 or (missing < 2 and ctx.n > 3):
                continue
            if self.no_usage.get(name, [0])[0] == missing:
                continue  # same spans: the usage finding covers it
            out.append(
                _gap_finding(
                    title=f"LLM span `{name}` records no model name ({missing} of {total} calls)",
                    names=[name],
                    ids=ids,
                    confidence=90,
                    issue=f"{missing} of {total} `{name}` spans have no mlflow.llm.model (or gen_ai.request.model).",
                    impact="Cost cannot be priced per model and model changes cannot be compared.",
                    suggestion="Set mlflow.llm.model and mlflow.llm.provider on the span (autolog does this).",
                    metrics={"spans_without_model": missing, "llm_spans": total},
                    impact_score=missing / 2,
                )
            )
        for name, g in self.gaps.items():
            if g.gapped < 3 and ctx.n > 3:
                continue
            if g.gapped < GAP_MIN_OCCURRENCE_SHARE * g.parents and g.gapped < 10:
                continue
            gaps = sorted(g.gap_ms)
            out.append(
                _gap_finding(
                    title=f"`{name}` has untraced time: p50 {_ms(percentile(gaps, 50))} not covered by child spans",
                    names=[name],
                    ids=g.top.ids_desc(),
                    confidence=_conf(g.gapped, strong=90, base=82),
                    issue=(
                        f"In {g.gapped} of {g.parents} occurrences, more than half of `{name}`'s duration "
                        f"is not covered by any child span (p50 {_ms(percentile(gaps, 50))}, p95 "
                        f"{_ms(percentile(gaps, 95))}): work happens there that no span describes."
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
                    },
                    impact_score=sum(gaps) / 1000,
                )
            )
        if self.orphan_traces:
            out.append(
                _gap_finding(
                    title=f"Orphan spans (parent missing) in {self.orphan_traces} traces",
                    names=[n for n, _ in self.orphan_names.most_common(5)],
                    ids=self.orphan_ids,
                    confidence=92,
                    issue=(
                        f"{sum(self.orphan_names.values())} spans point to a parent span that is not in their "
                        "trace: context was lost across a thread, process or async boundary, or the parent "
                        "was never exported."
                    ),
                    impact="The trace tree is broken: durations and causes cannot be attributed to the request.",
                    suggestion=(
                        "Propagate the tracing context across threads/tasks (copy contextvars, pass the "
                        "parent span explicitly) and make sure parent spans are ended and exported."
                    ),
                    metrics={"traces": self.orphan_traces, "orphan_spans": sum(self.orphan_names.values())},
                    impact_score=self.orphan_traces,
                )
            )
        missing_session, ids, roots = self.no_session
        with_session = ctx.n - missing_session
        if missing_session and with_session >= max(3, 0.3 * ctx.n) and (missing_session >= 2 or ctx.n <= 3):
            out.append(
                _gap_finding(
                    title=f"{missing_session} traces have no session id while {with_session} do",
                    names=[n for n, _ in roots.most_common(3)],
                    ids=ids,
                    confidence=90,
                    issue=(
                        f"{missing_session} of {ctx.n} traces lack mlflow.trace.session metadata although "
                        f"the others carry one; they come from {', '.join(f'`{n}`' for n, _ in roots.most_common(3))}."
                    ),
                    impact="These requests cannot be tied to their conversations: session analysis and per-user cost miss them.",
                    suggestion="Set the session on every entry point: mlflow.update_current_trace(metadata={'mlflow.trace.session': session_id}).",
                    metrics={"traces_without_session": missing_session, "traces_with_session": with_session},
                    impact_score=missing_session / 10,
                )
            )
        for tag, (missing, ids) in self.missing_tags.items():
            if not missing:
                continue
            out.append(
                _gap_finding(
                    title=f"Required tag `{tag}` missing on {missing} of {ctx.n} traces",
                    names=[],
                    ids=ids,
                    confidence=95,
                    issue=f"{missing} traces carry no `{tag}` (as a tag, metadata key or the standard session/user field).",
                    impact="Traces cannot be filtered or attributed by this team-standard field.",
                    suggestion=f"Set `{tag}` on every trace (mlflow.update_current_trace(tags={{'{tag}': ...}})).",
                    metrics={"traces_missing": missing, "traces": ctx.n},
                    impact_score=missing / 10,
                )
            )
        return out

    # assessments ------------------------------------------------------------------------------
    def _assessment_findings(self, ctx: "_Ctx") -> list[dict]:
        out = []
        for a in ctx.stats.get("assessments", []):
            judged = a["passed"] + a["failed"]
            if a["failed"] >= 3 and judged >= 5 and a["fail_rate"] and a["fail_rate"] >= 0.1:
                rate = a["fail_rate"]
                out.append(
                    {
                        "category": "error_pattern",
                        "priority": "P1" if rate >= 0.25 else "P2",
                        "confidence": _conf(a["failed"], strong=90, base=80),
                        "title": f"Assessment `{a['name']}` fails on {_pct(rate)} of judged traces",
                        "span_names": [],
                        "trace_ids": a["failing_trace_ids"],
                        "code": None,
                        "issue": (
                            f"`{a['name']}` failed {a['failed']} of {judged} times "
                            f"(sources: {', '.join(f'{k} {v}' for k, v in a['sources'].items())}). Read the "
                            "rationales of the example traces for the common cause."
                        ),
                        "impact": "Users receive answers the evaluation judges wrong; the traces themselves may look healthy.",
                        "suggestion": "Group the failing rationales, confirm the pattern on the example traces, and fix the prompt, retrieval or tool that produces it.",
                        "metrics": {"assessment": a["name"], "failed": a["failed"], "judged": judged, "fail_rate": rate},
                        "_impact": a["failed"],
                    }
                )
            if a["judge_errors"] >= 2 or (a["judge_errors"] and ctx.n <= 3):
                msgs = "; ".join(list(a["judge_error_messages"])[:2])
                out.append(
                    _gap_finding(
                        title=f"Judge `{a['name']}` itself failed on {a['judge_errors']} traces (not trace errors)",
                        names=[],
                        ids=a["judge_error_trace_ids"],
                        confidence=93,
                        issue=(
                            f"The `{a['name']}` scorer returned an error instead of a verdict {a['judge_errors']} "
                            f"time(s) ({msgs}). The traces it judged are not failing because of this; "
                            "they are simply unevaluated."
                        ),
                        impact=f"{a['judge_errors']} traces have no `{a['name']}` verdict: quality metrics are computed on a biased subset.",
                        suggestion="Fix the judge (its model quota, prompt or parser) and re-run the evaluation on these traces.",
                        metrics={"assessment": a["name"], "judge_errors": a["judge_errors"], "judged_ok": judged},
                        impact_score=a["judge_errors"] / 10,
                    )
                )
        return out


@dataclass
class _Ctx:
    stats: dict
    n: int
    per_day: float | None
    days: float | None


def _fmt_tokens(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x / 1000:,.1f}k" if x >= 1000 else f"{x:,.0f}"


def _gap_finding(*, title, names, ids, confidence, issue, impact, suggestion, metrics, impact_score, priority="P2"):
    return {
        "category": "missing_instrumentation",
        "priority": priority,
        "confidence": confidence,
        "title": title,
        "span_names": names,
        "trace_ids": list(ids),
        "code": None,
        "issue": issue,
        "impact": impact,
        "suggestion": suggestion,
        "metrics": metrics,
        "_impact": impact_score,
    }


def _code_gap_findings(locate_result) -> list[dict]:
    gaps = getattr(locate_result, "gaps", None)
    if gaps is None and isinstance(locate_result, dict):
        gaps = locate_result.get("gaps")
    out = []
    for g in gaps or []:
        g = g if isinstance(g, dict) else getattr(g, "__dict__", {})
        where = f"{g.get('file')}:{g.get('line')}"
        out.append(
            _gap_finding(
                title=f"{g.get('client', 'LLM')} call in `{g.get('function')}` has no span",
                names=[],
                ids=[],
                confidence=85,
                issue=f"`{g.get('function')}` at {where} calls {g.get('client')} with no span around it: {g.get('reason', '')}".strip(),
                impact="Its latency, tokens, cost and errors never reach MLflow.",
                suggestion="Decorate the function with @mlflow.trace(span_type='LLM') or enable the client's MLflow autolog.",
                metrics={"file": g.get("file"), "line": g.get("line"), "client": g.get("client")},
                impact_score=0.5,
            )
        )
        out[-1]["code"] = where
    return out


def _has_tag(trace: Trace, tag: str) -> bool:
    aliases = {
        "session_id": trace.session_id,
        "session": trace.session_id,
        "user_id": trace.user_id,
        "user": trace.user_id,
    }
    if aliases.get(tag):
        return True
    return bool(trace.tags.get(tag) or trace.metadata.get(tag))


def _backoff(gap_lists: list[list[float]]) -> dict[str, Any]:
    """Classify the spacing between retry attempts."""
    flat = [g for gaps in gap_lists for g in gaps]
    if not flat:
        return {"kind": "unknown", "label": "unknown", "median_gap_ms": None}
    med = percentile(sorted(flat), 50) or 0.0
    growing = [gaps for gaps in gap_lists if len(gaps) >= 2]
    grows = sum(1 for gaps in growing if all(b > a * 1.3 for a, b in zip(gaps, gaps[1:])))
    if med < 100:
        kind, label = "none", "no backoff (retried immediately)"
    elif growing and grows >= 0.6 * len(growing):
        kind, label = "exponential", "growing backoff"
    else:
        kind, label = "fixed", "fixed delay"
    return {"kind": kind, "label": label, "median_gap_ms": round(med, 1)}


def _time_cluster(times: array, ctx: _Ctx) -> dict | None:
    """The densest one-hour window when it holds most occurrences of an error."""
    if len(times) < 4 or not ctx.days or ctx.days < 0.25:
        return None
    ts = sorted(times)
    window = 3_600_000
    best = (0, 0)
    j = 0
    for i in range(len(ts)):
        while ts[i] - ts[j] > window:
            j += 1
        if i - j + 1 > best[0]:
            best = (i - j + 1, j)
    count, start = best
    if count < 0.6 * len(ts) or window / 86_400_000 > 0.25 * ctx.days:
        return None
    from .model import iso_ms

    return {
        "count": count,
        "window": "one hour",
        "start": iso_ms(ts[start]),
        "end": iso_ms(ts[start + count - 1]),
    }


_FIELD_ORDER = (
    "id",
    "category",
    "priority",
    "confidence",
    "title",
    "span_names",
    "trace_ids",
    "code",
    "issue",
    "impact",
    "suggestion",
    "metrics",
)


def _ordered(f: dict) -> dict:
    return {k: f.get(k) for k in _FIELD_ORDER}


def analyze(
    traces: Iterable[Trace],
    *,
    max_findings: int | None = DEFAULT_MAX_FINDINGS,
    required_tags: list[str] | None = None,
    locate_result: Any = None,
) -> dict[str, Any]:
    """Findings and stats over traces: ``{"findings": [...], "stats": {...}}``."""
    fa = FindingsAnalyzer(required_tags=required_tags)
    for t in traces:
        fa.add(t)
    return fa.result(max_findings=max_findings, locate_result=locate_result)
