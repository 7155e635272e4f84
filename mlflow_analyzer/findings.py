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
    """Feed traces with ``add``; read ``{"findings", "findings_total", "checks", "stats"}`` with
    ``result``. ``checks``: one entry per check that ran, ``{"id", "detector", "status":
    "clean"|"found"|"skipped", "summary"}``, so "healthy" reads apart from "not looked at"."""

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
        source_args: list[str] | None = None,
    ) -> dict[str, Any]:
        """``source_args``: the command-line arguments naming the trace source, so that each
        finding's ``confirm.command`` can be run as is (``<source>`` stands in without them)."""
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
        checks = [
            c
            for d in self.detectors
            for c in d.checks(ctx, [f for f in found if f["detector"] == d.name])
        ]
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
        for f in found:
            if f.get("confirm"):
                f["confirm"] = self._confirm_command(f["confirm"], source_args, locate_result)
        ordered = [_ordered(f) for f in found]
        return {"findings": ordered, "findings_total": total, "checks": checks, "stats": stats}


    def _confirm_command(self, spec: dict, source_args: list[str] | None, locate_result: Any) -> dict:
        import shlex

        from .detectors.base import CONFIRM_COMMANDS

        source = shlex.join(source_args) if source_args else "<source>"
        if spec["command"] == "findings" and self.config.required_tags:
            source += " --required-tags " + shlex.quote(",".join(self.config.required_tags))
        root = getattr(locate_result, "root", None)
        command = CONFIRM_COMMANDS[spec["command"]].format(
            source=source, repo=shlex.quote(root) if root else "<repo>"
        )
        return {"command": command, "jq": spec["jq"], "shell": f"{command} | jq {shlex.quote(spec['jq'])}",
                "now": spec["now"], "goal": spec["goal"]}


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
    "spans",
    "confirm",
)


def _ordered(f: dict) -> dict:
    return {k: f.get(k) for k in _FIELD_ORDER}


def source_arguments(source: Any) -> list[str]:
    """The command-line arguments that name ``source`` again (files, or a tracking store with
    its experiment, filter, order, limit and start time), for commands a finding suggests.
    A tracking URI carrying credentials is written as ``$MLFLOW_TRACKING_URI``."""
    import re

    files = getattr(source, "files", None)
    if files is not None:
        return [str(f) for f in files] if len(files) <= 20 else sorted({str(f.parent) for f in files})
    q = getattr(source, "query", None)
    if q is None:
        return []
    uri = q.tracking_uri
    if re.match(r"^[a-z][a-z0-9+.-]*://[^/@]*@", uri, re.I):
        uri = "$MLFLOW_TRACKING_URI"
    out = ["--tracking-uri", uri]
    if q.experiment_id:
        out += ["--experiment-id", str(q.experiment_id)]
    elif q.experiment_name:
        out += ["--experiment-name", q.experiment_name]
    if q.filter_string:
        out += ["--filter", q.filter_string]
    for item in q.order_by or []:
        out += ["--order-by", item]
    if q.max_traces:
        out += ["--max-traces", str(q.max_traces)]
    if q.since_ms is not None:
        from .model import iso_ms

        out += ["--since", iso_ms(q.since_ms)]
    return out


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
