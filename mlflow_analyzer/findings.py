"""Deterministic findings: problems found by a program, each with numbers and evidence.

One streaming pass feeds the statistics accumulator and every detector of
:data:`mlflow_analyzer.detectors.REGISTRY` (one module each, see that package); the facts
several detectors need about a trace (critical path, counted spans, root causes, sibling
groups) are computed once per trace in :class:`~mlflow_analyzer.detectors.base.TraceFacts`.
``result()`` collects the detectors' findings, drops those under the confidence floor,
ranks them by priority then impact, numbers them, fills code locations, and lists the
checks that ran with what each found (``checks``).
"""

from __future__ import annotations

from typing import Any, Iterable

from .detectors import REGISTRY, Config, Context, Detector, TraceFacts
from .detectors.errors import error_kind  # noqa: F401 - public: the error classifier
from .model import Trace
from .review_schema import CATEGORIES as _CATEGORY_DOCS
from .review_schema import CONFIDENCE_FLOOR as MIN_CONFIDENCE
from .review_schema import MAX_FINDINGS as DEFAULT_MAX_FINDINGS
from .review_schema import PRIORITIES as _PRIORITY_DOCS
from .stats import StatsAccumulator

# The schema module is the one place for categories, priorities and their rules.
CATEGORIES = tuple(_CATEGORY_DOCS)
PRIORITIES = tuple(_PRIORITY_DOCS)


class FindingsAnalyzer:
    """Feed traces with ``add``; read ``{"findings", "findings_total", "stats"}`` with ``result``."""

    def __init__(
        self,
        *,
        required_tags: list[str] | None = None,
        examples: int = 5,
        detectors: Iterable[type[Detector]] = REGISTRY,
    ):
        self.stats = StatsAccumulator(examples=examples)
        self.config = Config(
            required_tags=[t.strip() for t in (required_tags or []) if t.strip()],
            examples=examples,
        )
        self.detectors: list[Detector] = [d(self.config) for d in detectors]
        self.trace_count = 0

    def add(self, trace: Trace) -> None:
        self.stats.add(trace)
        self.trace_count += 1
        facts = TraceFacts(trace)
        for d in self.detectors:
            d.observe(trace, facts)

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
        ctx = Context(stats=stats, n=n, per_day=per_day, days=days, config=self.config,
                      locate_result=locate_result, code_gaps=code_gaps)
        found: list[dict[str, Any]] = []
        for d in self.detectors:
            for f in d.findings(ctx):
                f.setdefault("detector", d.name)
                found.append(f)
        found = [f for f in found if f["confidence"] >= MIN_CONFIDENCE]
        found.sort(key=lambda f: (PRIORITIES.index(f["priority"]), -f.get("_impact", 0.0), -f["confidence"]))
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
    "kind",
    "detector",
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
