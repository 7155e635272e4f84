"""The review file format: the one place in code that states it.

A review is ``reviews/{branch_dir}/REVIEW-mlflow-{commit}.md``: YAML frontmatter, then
a markdown body with fixed sections and findings under fixed headings. The renderer
(:mod:`mlflow_analyzer.review`) writes from these facts and the validator
(:mod:`mlflow_analyzer.validate`) checks against them; ``references/review.schema.md``
documents the same facts for people and agents (a test keeps the two in agreement).

Branch names are **sanitized**, not nested: ``feature/login`` is written to
``reviews/feature-login/`` (see :func:`branch_dir`), so every review sits exactly one
folder below ``reviews/`` and ``reviews/*/REVIEW-mlflow-*.md`` finds them all. The exact
branch name is kept in the frontmatter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEMA_VERSION = "1.0.0"
REVIEWER_AGENT = "mlflow-analyzer"
REVIEW_TYPE = "mlflow"
DOC_TYPE = "review"
STATUSES = ("draft", "in_progress", "completed")
ACTIVE_FORM = "Analyzing MLflow traces"

# ---- findings -------------------------------------------------------------------------

#: category -> (what it means, usual priority range)
CATEGORIES: dict[str, tuple[str, str]] = {
    "high_cost": ("Operation consuming excessive tokens or money", "P0-P1"),
    "latency_issue": ("Slow operation that hurts users", "P0-P2"),
    "error_pattern": ("Recurring failure type", "P0-P2"),
    "missing_instrumentation": ("Key operation not traced, or traced without data", "P2"),
    "inefficient_pattern": ("Suboptimal approach: wasted or duplicate calls", "P2-P3"),
    "retry_issue": ("Problematic retry behaviour", "P1-P2"),
}

#: priority -> when to use it
PRIORITIES: dict[str, str] = {
    "P0": "cost spike over $10/day, latency over 5 s, or error rate over 10%",
    "P1": "significant cost or latency opportunity",
    "P2": "moderate opportunity, or an instrumentation gap",
    "P3": "minor efficiency",
}
#: P0 thresholds, for whoever assigns priorities.
P0_COST_PER_DAY_USD = 10.0
P0_LATENCY_MS = 5000.0
P0_ERROR_RATE = 0.10
#: Priorities counted in the frontmatter (P3 findings exist but have no count field).
COUNTED_PRIORITIES = ("P0", "P1", "P2")

CONFIDENCE_FLOOR = 70
CONFIDENCE_MAX = 100
MAX_FINDINGS = 10

FINDING_ID_FORMAT = "F-{:03d}"
#: A finding heading, exactly: ``### F-001: Title (P1, Confidence: 92%)``.
FINDING_HEADING_RE = re.compile(
    r"^### (?P<id>F-\d{3}): (?P<title>\S.*?) \((?P<priority>P[0-3]), "
    r"Confidence: (?P<confidence>\d{1,3})%\)$"
)
#: Bold labels each finding carries, in this order (``**Label**: value``).
FINDING_FIELDS = ("Category", "Trace", "Code", "Issue", "Impact", "Suggestion")
#: Optional labels after them (``Confirm``: the command whose figure should move once fixed).
FINDING_OPTIONAL_FIELDS = ("Expected Savings", "Confirm")
FINDING_SEPARATOR = "---"
#: Trace ids cited on a finding's Trace line.
TRACE_ID_RE = re.compile(r"\btr-[0-9a-f]+\b")
CODE_NOT_LOCATED = "not located"

# ---- body -----------------------------------------------------------------------------

TITLE_PREFIX = "# MLflow Analysis: "
#: ``## `` headings that must appear, in this order (others may come between or after).
SECTIONS = (
    "Summary",
    "Trace Overview",
    "Cost Breakdown",
    "Findings",
    "Error Distribution",
    "Recommendations",
)
#: ``## `` headings that may appear, checked when present: name -> table columns. ``Checks``
#: lists every check that ran, so that "healthy" reads apart from "not looked at"; it goes
#: after ``Findings``.
OPTIONAL_SECTIONS = {"Checks": ("Check", "Status", "Summary")}
#: A check's status: it found something, found nothing, or could not run on this data.
CHECK_STATUSES = ("found", "clean", "skipped")
#: First-column labels the Trace Overview table must have.
OVERVIEW_ROWS = ("Traces Analyzed", "Time Range", "Total Cost", "Avg Latency", "Error Rate")
#: Column headers each table must have (more columns are allowed).
TABLE_COLUMNS = {
    "Trace Overview": ("Metric", "Value"),
    "Cost Breakdown": ("Operation", "Count", "Tokens", "Cost", "% of Total"),
    "Error Distribution": ("Error Type", "Count", "% of Errors", "Top Cause"),
}

# ---- frontmatter ----------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One frontmatter field. ``kind``: str, int, count, timestamp, list, or ``X|null``."""

    name: str
    kind: str
    doc: str
    const: str | None = None  # the only allowed value, if any


FIELDS: tuple[Field, ...] = (
    Field("id", "str", "`REVIEW-mlflow-{commit}`"),
    Field("version", "str", f"schema version, `{SCHEMA_VERSION}`"),
    Field("type", "str", "always `review`", const=DOC_TYPE),
    Field("status", "str", "one of " + ", ".join(f"`{s}`" for s in STATUSES)),
    Field("created", "timestamp", "ISO-8601, when the review was first written"),
    Field("updated", "timestamp", "ISO-8601, when it was last written"),
    Field("branch", "str", "git branch as named (not sanitized)"),
    Field("commit", "str", "short commit, 7-40 lowercase hex (the tool writes 7-12)"),
    Field("pr_number", "int|null", "pull request number, or null"),
    Field("reviewer_agent", "str", "always `mlflow-analyzer`", const=REVIEWER_AGENT),
    Field("reviewer_model", "str|null", "model that wrote the prose, or null"),
    Field("review_type", "str", "always `mlflow`", const=REVIEW_TYPE),
    Field("findings_count", "count", "number of findings, all priorities (P3 too)"),
    Field("p0_count", "count", "number of P0 findings"),
    Field("p1_count", "count", "number of P1 findings"),
    Field("p2_count", "count", "number of P2 findings"),
    Field("generated_tasks", "list", "ids of tasks created from the findings ([] if none)"),
    Field("subject", "str", "`MLflow analysis for {scope}`"),
    Field("activeForm", "str", f"`{ACTIVE_FORM}`"),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)

#: Fields that may be present; checked when they are.
REDACTED_FIELD = "redacted"
OPTIONAL_FIELDS: tuple[Field, ...] = (
    Field(REDACTED_FIELD, "counts|null",
          "credentials replaced by `[REDACTED:type]`, by type (`{}`: none found; for a headless "
          "review, in everything sent to the model too); `null` when written with `--no-redact`"),
)

# ---- paths ----------------------------------------------------------------------------

REVIEWS_DIR = "reviews"
PATH_PATTERN = "reviews/{branch}/REVIEW-mlflow-{commit}.md"
COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}$")
FILE_NAME_RE = re.compile(r"^REVIEW-mlflow-(?P<commit>[0-9a-f]{7,40})\.md$")


def review_id(commit: str) -> str:
    return f"REVIEW-mlflow-{commit}"


def review_filename(commit: str) -> str:
    return f"{review_id(commit)}.md"


def branch_dir(branch: str) -> str:
    """The folder name for a branch: ``/`` and anything outside ``[A-Za-z0-9._-]``
    become ``-``; leading dots and dashes are dropped (``feature/login`` ->
    ``feature-login``; ``..`` -> ``branch``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", branch).strip("-").lstrip(".-")
    return name or "branch"


def review_relpath(branch: str, commit: str) -> str:
    """``reviews/{branch_dir}/REVIEW-mlflow-{commit}.md`` (POSIX separators)."""
    return f"{REVIEWS_DIR}/{branch_dir(branch)}/{review_filename(commit)}"


def latency_chart_name(commit: str) -> str:
    return f"latency-{commit}.png"


def cost_chart_name(commit: str) -> str:
    return f"cost-{commit}.png"
