"""Branch against baseline: what got worse, with sample sizes and a significance test.

Latency and cost per trace are compared with the Mann-Whitney U test (normal
approximation with tie correction; no distribution assumed), error rates with the
two-proportion z-test. A change is reported when it is significant (p < 0.05) and large
enough to matter (at least 20% worse, or 2 percentage points more errors).
"""

from __future__ import annotations

import math
from array import array
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from .model import Trace
from .stats import percentile, span_cost

ALPHA = 0.05
MIN_RATIO = 1.2
MIN_RATE_DELTA = 0.02
MIN_N = 5


def mann_whitney_p(a, b) -> float | None:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation)."""
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        return None
    combined = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    n = n1 + n2
    ranks_a = 0.0
    ties = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and combined[j + 1][0] == combined[i][0]:
            j += 1
        rank = (i + j) / 2 + 1
        t = j - i + 1
        if t > 1:
            ties += t**3 - t
        ranks_a += rank * sum(1 for k in range(i, j + 1) if combined[k][1] == 0)
        i = j + 1
    u = ranks_a - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (abs(u - mean) - 0.5) / math.sqrt(var)
    return math.erfc(max(z, 0) / math.sqrt(2))


def two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float | None:
    if n1 == 0 or n2 == 0:
        return None
    p = (x1 + x2) / (n1 + n2)
    if p in (0.0, 1.0):
        return 1.0
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    z = abs(x1 / n1 - x2 / n2) / se
    return math.erfc(z / math.sqrt(2))


@dataclass
class _Side:
    n: int = 0
    errors: int = 0
    latency: array = field(default_factory=lambda: array("d"))
    cost: array = field(default_factory=lambda: array("d"))
    spans: dict = field(default_factory=lambda: defaultdict(lambda: array("d")))
    span_errors: dict = field(default_factory=lambda: defaultdict(int))
    examples: list = field(default_factory=list)
    slow_examples: dict = field(default_factory=dict)  # span name -> (ms, trace id)

    def add(self, t: Trace) -> None:
        self.n += 1
        self.errors += t.is_error
        if t.duration_ms is not None:
            self.latency.append(t.duration_ms)
        cost = t.cost_usd
        if cost is None:
            priced = [c for c, _ in (span_cost(s) for s in t.spans if s.has_usage) if c is not None]
            cost = sum(priced) if priced else None
        if cost is not None:
            self.cost.append(cost)
        if len(self.examples) < 5:
            self.examples.append(t.trace_id)
        for s in t.spans:
            if not s.is_error:
                self.spans[s.name].append(s.duration_ms)
                best = self.slow_examples.get(s.name)
                if best is None or s.duration_ms > best[0]:
                    self.slow_examples[s.name] = (s.duration_ms, t.trace_id)
            else:
                self.span_errors[s.name] += 1

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latency)
        return {
            "traces": self.n,
            "error_rate": round(self.errors / self.n, 4) if self.n else None,
            "latency_p50_ms": percentile(lat, 50),
            "latency_p95_ms": percentile(lat, 95),
            "cost_per_trace_usd": round(sum(self.cost) / len(self.cost), 6) if self.cost else None,
        }


class Comparison:
    """Feed every trace; ``side_of`` says whether it is on the branch, the baseline or neither."""

    def __init__(self, branch: str, baseline: str, side_of: Callable[[Trace], str | None]):
        self.branch, self.baseline = branch, baseline
        self.side_of = side_of
        self.sides = {"branch": _Side(), "baseline": _Side()}

    def add(self, trace: Trace) -> None:
        side = self.side_of(trace)
        if side in self.sides:
            self.sides[side].add(trace)

    def result(self) -> dict[str, Any]:
        b, a = self.sides["branch"], self.sides["baseline"]
        regressions: list[dict] = []
        improvements: list[dict] = []

        def judge(metric, scope, xs, ys, *, higher_is_worse=True, kind="ratio", example=None):
            if len(xs) < MIN_N or len(ys) < MIN_N:
                return
            p = mann_whitney_p(xs, ys)
            if p is None:
                return
            mx, my = percentile(sorted(xs), 50), percentile(sorted(ys), 50)
            if metric == "cost_per_trace_usd":
                mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            if not my:
                return
            ratio = mx / my
            entry = {
                "metric": metric,
                "scope": scope,
                "branch_value": round(mx, 6),
                "baseline_value": round(my, 6),
                "ratio": round(ratio, 3),
                "p_value": round(p, 6),
                "branch_n": len(xs),
                "baseline_n": len(ys),
                "example_trace_id": example,
            }
            if p < ALPHA and ratio >= MIN_RATIO:
                regressions.append(entry)
            elif p < ALPHA and ratio <= 1 / MIN_RATIO:
                improvements.append(entry)

        judge("latency_p50_ms", "trace", b.latency, a.latency, example=b.examples[0] if b.examples else None)
        judge("cost_per_trace_usd", "trace", b.cost, a.cost, example=b.examples[0] if b.examples else None)
        for name in sorted(set(b.spans) & set(a.spans)):
            ex = b.slow_examples.get(name, (0, None))[1]
            judge("latency_p50_ms", name, b.spans[name], a.spans[name], example=ex)
        p = two_proportion_p(b.errors, b.n, a.errors, a.n)
        if p is not None and b.n >= MIN_N and a.n >= MIN_N:
            rb, ra = b.errors / b.n, a.errors / a.n
            entry = {
                "metric": "error_rate",
                "scope": "trace",
                "branch_value": round(rb, 4),
                "baseline_value": round(ra, 4),
                "ratio": round(rb / ra, 3) if ra else None,
                "p_value": round(p, 6),
                "branch_n": b.n,
                "baseline_n": a.n,
                "example_trace_id": b.examples[0] if b.examples else None,
            }
            if p < ALPHA and rb - ra >= MIN_RATE_DELTA:
                regressions.append(entry)
            elif p < ALPHA and ra - rb >= MIN_RATE_DELTA:
                improvements.append(entry)
        regressions.sort(key=lambda r: r["p_value"])
        return {
            "branch": self.branch,
            "baseline": self.baseline,
            "branch_summary": b.summary(),
            "baseline_summary": a.summary(),
            "regressions": regressions,
            "improvements": improvements,
            "test": "Mann-Whitney U (latency, cost), two-proportion z (error rate); alpha 0.05",
        }

    def findings(self, result: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        result = result or self.result()
        out = []
        for r in result["regressions"]:
            conf = 95 if r["p_value"] < 0.001 else 90 if r["p_value"] < 0.01 else 80
            scope = "traces" if r["scope"] == "trace" else f"`{r['scope']}`"
            if r["metric"] == "error_rate":
                category = "error_pattern"
                title = (
                    f"Error rate up on `{self.branch}`: {r['branch_value'] * 100:.1f}% vs "
                    f"{r['baseline_value'] * 100:.1f}% on `{self.baseline}`"
                )
                priority = "P0" if r["branch_value"] > 0.10 else "P1"
            elif r["metric"] == "cost_per_trace_usd":
                category = "high_cost"
                title = (
                    f"Cost per trace up {(r['ratio'] - 1) * 100:.0f}% on `{self.branch}` "
                    f"(${r['branch_value']:.4f} vs ${r['baseline_value']:.4f})"
                )
                priority = "P1"
            else:
                category = "latency_issue"
                title = (
                    f"{scope} slower on `{self.branch}`: p50 {r['branch_value']:,.0f} ms vs "
                    f"{r['baseline_value']:,.0f} ms on `{self.baseline}` (+{(r['ratio'] - 1) * 100:.0f}%)"
                )
                priority = "P0" if r["branch_value"] >= 5000 else "P1"
            out.append(
                {
                    "category": category,
                    "priority": priority,
                    "confidence": conf,
                    "title": title,
                    "span_names": [] if r["scope"] == "trace" else [r["scope"]],
                    "trace_ids": [r["example_trace_id"]] if r["example_trace_id"] else [],
                    "code": None,
                    "issue": (
                        f"Compared with `{self.baseline}`, {r['metric']} of {scope} on `{self.branch}` is "
                        f"{r['branch_value']:,} vs {r['baseline_value']:,} (n = {r['branch_n']} vs "
                        f"{r['baseline_n']}; p = {r['p_value']:.4g})."
                    ),
                    "impact": "A regression introduced on this branch: it will reach users when the branch merges.",
                    "suggestion": "Diff the code paths behind this span between the two commits and fix or justify the change before merging.",
                    "metrics": dict(r, regression=True),
                    "_impact": 100.0 / max(r["p_value"], 1e-9) if r["p_value"] else 1e9,
                }
            )
        return out
