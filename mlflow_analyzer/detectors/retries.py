"""Retries: a same-name sibling started after a failed attempt.

Reports, per span, the retry sequences (exhausted or recovered), the attempts per sequence,
the spacing between attempts (none, fixed, growing) and the time spent in failed attempts.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..review_schema import P0_ERROR_RATE
from ..stats import message_pattern, percentile
from ..text import clip
from .base import (
    Context,
    Detector,
    Examples,
    confidence,
    confirm_with,
    finding,
    fired,
    jq_finding_metric,
    keyed,
    ms,
    pct,
    plural,
)


@dataclass
class _RetryAgg:
    traces: int = 0
    exhausted: int = 0
    recovered: int = 0
    attempts: array = field(default_factory=lambda: array("d"))
    gaps_ms: list = field(default_factory=list)  # per retried sequence: gaps between attempts
    wasted_ms: float = 0.0
    same_inputs: int = 0
    exhausted_ids: Examples = field(default_factory=Examples)
    recovered_ids: Examples = field(default_factory=Examples)
    error_types: Counter = field(default_factory=Counter)
    patterns: Counter = field(default_factory=Counter)  # message patterns of the failed attempts
    trace_errors: int = 0  # traces that ended ERROR after exhaustion
    _last_trace: str | None = None


class Retries(Detector):
    name = "retries"
    title = "retry sequences"

    def __init__(self, config):
        super().__init__(config)
        self.retries: dict[tuple, _RetryAgg] = keyed(_RetryAgg)  # span key ->

    def observe(self, trace, facts) -> None:
        tid = facts.trace_id
        for run in facts.retry_runs:
            r = self.retries[(run[0].name, run[0].span_type)]
            if r._last_trace != tid:
                r.traces += 1
                r._last_trace = tid
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
                    if len(r.patterns) < 50:
                        r.patterns[message_pattern(s.error_message or s.status_message)] += 1
            if exhausted:
                r.exhausted += 1
                if trace.is_error:
                    r.trace_errors += 1
                r.exhausted_ids.add(tid)
            else:
                r.recovered += 1
                r.recovered_ids.add(tid)

    def clean_summary(self, ctx: Context) -> str:
        return f"no call retried after a failure in {ctx.n:,} traces"

    def findings(self, ctx: Context) -> list[dict]:
        out = []
        examples = self.config.examples
        for key, r in self.retries.items():
            name = key[0]
            label = ctx.label(key)
            runs = r.exhausted + r.recovered
            if runs == 0 or (r.traces < 2 and ctx.n > 3):
                continue
            flat = [g for gaps in r.gaps_ms for g in gaps]
            spacing = backoff(r.gaps_ms)
            mean_attempts = sum(r.attempts) / len(r.attempts)
            top_error = r.error_types.most_common(1)[0][0] if r.error_types else "Error"
            ids = list(r.exhausted_ids) + [t for t in r.recovered_ids if t not in r.exhausted_ids]
            failed_attempts = sum(r.error_types.values())
            title = (
                f"Retries of {label} exhausted in {r.exhausted} of {plural(runs, 'retry sequence')}"
                if r.exhausted
                else f"{label} needs retries in {plural(r.traces, 'trace')} ({pct(r.traces / ctx.n)})"
            )
            pattern = r.patterns.most_common(1)[0][0] if r.patterns else ""
            cause = f"{top_error}: {clip(pattern, 140)}" if pattern else top_error
            issue = (
                f"{label} failed ({cause}) and was called again: {plural(runs, 'retry sequence')} "
                f"in {plural(r.traces, 'trace')}, {mean_attempts:.1f} attempts per sequence on average "
                f"({plural(failed_attempts, 'failed attempt')}); {r.exhausted} ran out of attempts, "
                f"{r.recovered} recovered. Spacing between attempts: {spacing['label']}"
                + (f" (median {ms(percentile(sorted(flat), 50))})" if flat else "")
                + "."
            )
            if r.same_inputs:
                issue += f" {plural(r.same_inputs, 'sequence')} resent identical inputs."
            impact = (
                f"{ms(r.wasted_ms)} spent in failed attempts in all"
                + (f" ({ms(r.wasted_ms / r.traces)} per affected trace)" if r.traces else "")
                + (f"; {plural(r.trace_errors, 'trace')} failed after exhausting retries." if r.trace_errors else ".")
            )
            if spacing["kind"] in ("none", "fixed"):
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
                finding(
                    category="retry_issue",
                    priority=priority,
                    confidence=confidence(runs, strong=92, base=85),
                    title=title,
                    span_names=[name],
                    trace_ids=ids[:examples],
                    issue=issue,
                    impact=impact,
                    suggestion=suggestion,
                    metrics={
                        "retry_sequences": runs,
                        "traces": r.traces,
                        "exhausted": r.exhausted,
                        "recovered": r.recovered,
                        "mean_attempts": round(mean_attempts, 2),
                        "backoff": spacing,
                        "wasted_ms": round(r.wasted_ms, 1),
                        "failed_traces": r.trace_errors,
                        "identical_inputs_sequences": r.same_inputs,
                        "error_types": dict(r.error_types.most_common(3)),
                        "failed_attempts": failed_attempts,
                        "error_patterns": dict(r.patterns.most_common(3)),
                        "span_type": key[1],
                        "thresholds": [fired("traces with retries", r.traces, ">=", 2)],
                    },
                    impact_score=r.exhausted * 10 + runs,
                    kind="retries_exhausted" if r.exhausted else "retries",
                    keys=[key],
                    confirm=confirm_with(
                        "findings",
                        jq_finding_metric("retries_exhausted" if r.exhausted else "retries", key,
                                          "exhausted" if r.exhausted else "retry_sequences"),
                        r.exhausted if r.exhausted else runs,
                        "0: no retry sequence runs out of attempts" if r.exhausted else "0: no call needs retries",
                    ),
                )
            )
        return out


def backoff(gap_lists: list[list[float]]) -> dict[str, Any]:
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
