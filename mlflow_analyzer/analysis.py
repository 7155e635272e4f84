"""The whole analysis of a source in one pass, shared by `demo`, `report` and `review`:
stats, findings and the latency sample for charts, then the review file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .findings import DEFAULT_MAX_FINDINGS, FindingsAnalyzer, source_arguments
from .sources import Source


@dataclass
class Analysis:
    stats: dict[str, Any]
    findings: list[dict[str, Any]]
    findings_total: int
    latencies: list[float]
    checks: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"findings": self.findings, "findings_total": self.findings_total,
                "checks": self.checks or [], "stats": self.stats}


def analyze_source(
    source: Source,
    *,
    max_findings: int | None = DEFAULT_MAX_FINDINGS,
    repo: str | None = None,
    required_tags: list[str] | None = None,
) -> Analysis:
    locate_result = None
    if repo:
        from .locate import scan

        locate_result = scan(repo)
    from .remote import analysis_stream

    fa = FindingsAnalyzer(required_tags=required_tags)
    traces, remote = analysis_stream(source)
    for trace in traces:
        fa.add(trace)
    result = fa.result(max_findings=max_findings, locate_result=locate_result,
                       source_args=source_arguments(source))
    stats = remote.result() if remote is not None else result["stats"]
    stats.update(source.skip_summary())
    return Analysis(
        stats=stats,
        findings=result["findings"],
        findings_total=result["findings_total"],
        latencies=list(remote.latencies if remote is not None else fa.stats.latencies),
        checks=result["checks"],
    )


def write_review_for(
    analysis: Analysis,
    root: str,
    *,
    branch: str,
    commit: str,
    charts: bool = True,
    **render_kwargs: Any,
) -> dict[str, Any]:
    """Write the review file for an analysis and validate it; returns the paths and problems."""
    from .review import write_review
    from .validate import validate_review

    written = write_review(
        root,
        analysis.stats,
        analysis.findings,
        branch=branch,
        commit=commit,
        latencies=analysis.latencies,
        charts=charts,
        checks=analysis.checks,
        **render_kwargs,
    )
    problems = validate_review(written["path"])
    written["problems"] = [p.to_dict() for p in problems]
    return written
