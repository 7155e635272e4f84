"""Errors grouped at their root cause (span, exception type, message pattern).

Each group is classified (rate limiting, timeout, auth, validation, unavailable upstream,
other); a cascade is reported at its cause with the ancestors it propagated to; a burst in
time (most occurrences in one hour of a longer sample) is reported as a cluster.
"""

from __future__ import annotations

import re
from array import array
from collections import Counter
from dataclasses import dataclass, field

from ..review_schema import P0_ERROR_RATE
from ..stats import error_key, provider_message
from ..text import clip
import json

from .base import Context, Detector, confidence, confirm_with, finding, fired, keyed, ms, pct, plural

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


_LABELS = {
    "rate_limit": "rate limited (429)",
    "timeout": "times out after ~{p50}",
    "auth": "fails authentication",
    "validation": "fails input validation",
    "unavailable": "hits an unavailable upstream",
    "other": "raises {etype}",
}

_SUGGESTIONS = {
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
}

# finding kind per error kind
KINDS = {
    "rate_limit": "rate_limit",
    "timeout": "timeout",
    "auth": "auth_error",
    "validation": "validation_error",
    "unavailable": "upstream_unavailable",
    "other": "error",
}


@dataclass
class _ErrExtra:
    times: array = field(default_factory=lambda: array("q"))
    ancestors: Counter = field(default_factory=Counter)
    trace_errors: int = 0  # traces that ended ERROR with this root cause
    in_retries: int = 0  # occurrences that were attempts of a retry sequence


class ErrorPatterns(Detector):
    name = "errors"
    title = "recurring errors"

    def __init__(self, config):
        super().__init__(config)
        self.extra: dict[tuple, _ErrExtra] = keyed(_ErrExtra)
        self.retried: set[tuple] = set()  # span keys retried after a failure somewhere

    def observe(self, trace, facts) -> None:
        attempts: set[int] = set()
        for run in facts.retry_runs:
            self.retried.add((run[0].name, run[0].span_type))
            attempts.update(id(s) for s in run)
        for root_cause in facts.root_causes:
            key = error_key(root_cause)
            x = self.extra[key]
            if len(x.times) < 20000:
                x.times.append(trace.request_time_ms)
            if root_cause is facts.fatal_cause:
                x.trace_errors += 1  # traces that failed because of it (one cause per trace)
            if id(root_cause) in attempts:
                x.in_retries += 1
            node = trace.by_id.get(root_cause.parent_id) if root_cause.parent_id else None
            while node is not None:
                if node.is_error:
                    x.ancestors[node.name] += 1
                node = trace.by_id.get(node.parent_id) if node.parent_id else None

    def clean_summary(self, ctx: Context) -> str:
        return f"no error recurs in {ctx.n:,} traces"

    def findings(self, ctx: Context) -> list[dict]:
        out = []
        for e in ctx.stats["errors"]:
            count, traces = e["count"], e["trace_count"]
            if count < 2 and ctx.n > 3:
                continue
            skey = (e["span_name"], e.get("span_type", ""))
            key = (*skey, e["exception_type"], e["message_pattern"])
            extra = self.extra.get(key) or _ErrExtra()
            if extra.in_retries >= count:
                continue  # every occurrence was a retry attempt: the retries finding reports them
            kind = error_kind(e["exception_type"], e["example_message"], e["timeout"])
            rate = traces / ctx.n
            failed_rate = extra.trace_errors / ctx.n
            cluster = time_cluster(extra.times, ctx)
            ancestors = [a for a, _ in extra.ancestors.most_common(4)]
            span = e["span_name"]
            label = _LABELS[kind].format(p50=ms(e["p50_ms"]), etype=e["exception_type"])
            title = f"{ctx.label(skey)} {label} in {traces} trace{'s' if traces != 1 else ''} ({pct(rate)})"
            if cluster:
                title += f", clustered in {cluster['window']}"
            how = "slowly, as timeouts do" if e["failure_mode"] == "slow" else "fast"
            example = clip(provider_message(e["example_message"]), 220)
            issue = (
                f"{plural(count, 'failure')} of {ctx.label(skey)} in {plural(traces, 'trace')} with "
                f"{e['exception_type']}: \"{example}\". They fail {how} "
                f"(p50 {ms(e['p50_ms'])} before failing)."
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
                caught = traces - extra.trace_errors
                impact = (
                    f"{plural(extra.trace_errors, 'trace')} ({pct(failed_rate)} of all) end in ERROR because "
                    f"of it" + (f"; {plural(caught, 'other')} caught it." if caught else ".")
                )
            elif traces == 1:
                impact = "The affected trace caught the error and finished OK, possibly degraded."
            else:
                impact = f"All {traces} affected traces caught the error and finished OK, possibly degraded."
            if e["failure_mode"] == "slow":
                impact += f" Each failure holds the request for ~{ms(e['p50_ms'])}."
            # Priorities: error rate over 10% -> P0; a steady or trace-breaking pattern -> P1.
            if failed_rate > P0_ERROR_RATE or rate > P0_ERROR_RATE and extra.trace_errors:
                priority = "P0"
            elif extra.trace_errors or rate >= 0.02 or e["failure_mode"] == "slow":
                priority = "P1"
            else:
                priority = "P2"
            if kind == "rate_limit" and skey in self.retried and not extra.trace_errors:
                # recovered by retries: the retry finding carries it
                priority = "P2" if priority != "P0" else priority
            out.append(
                finding(
                    category="error_pattern",
                    priority=priority,
                    confidence=confidence(count, strong=95, base=85),
                    title=title,
                    span_names=[span] + ancestors,
                    trace_ids=e["example_trace_ids"],
                    issue=issue,
                    impact=impact,
                    suggestion=_SUGGESTIONS[kind],
                    metrics={
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
                        "span_type": skey[1],
                        "thresholds": [fired("root-cause occurrences", count, ">=", 2)],
                    },
                    impact_score=extra.trace_errors * 10 + traces,
                    kind=KINDS[kind],
                    keys=[skey],
                    confirm=confirm_with(
                        "stats",
                        "[.errors[] | select(.span_name == {} and .span_type == {} and .exception_type == {} "
                        "and .message_pattern == {}) | .count] | add // 0".format(
                            *(json.dumps(v) for v in (span, skey[1], e["exception_type"], e["message_pattern"]))),
                        count,
                        "0: no more root-cause errors of this kind",
                    ),
                )
            )
        return out


def time_cluster(times: array, ctx: Context) -> dict | None:
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
    from ..model import iso_ms

    return {
        "count": count,
        "window": "one hour",
        "start": iso_ms(ts[start]),
        "end": iso_ms(ts[start + count - 1]),
    }
