"""The review validator: clean reviews pass, broken ones fail with the specific problem."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the package is not installed in the test venv

from mlflow_analyzer.review import write_review
from mlflow_analyzer.validate import Problem, store_trace_checker, validate_review

MLFLOW_ENV = {
    "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false",
    "MLFLOW_MODEL_CATALOG_URI": "",
    "MLFLOW_DISABLE_AGENT_HINT": "1",
}
COMMIT = "3f9c2ab"
FAKE_ID = "tr-" + "0badc0de" * 4

STATS = {
    "trace_count": 200, "error_count": 30, "error_rate": 0.15,
    "latency_ms": {"mean": 2100.0, "p50": 1500.0, "p95": 6200.0, "p99": 8000.0, "max": 9100.0},
    "ok_latency_ms": {"mean": 1900.0, "p50": 1400.0, "p95": 5000.0, "p99": 7000.0, "max": 8000.0},
    "tokens": {"input": 900_000, "output": 100_000, "total": 1_000_000},
    "cost_usd": 14.5, "cost_source": "recorded",
    "time_range": {"start": "2025-03-03T09:00:00Z", "end": "2025-03-04T09:00:00Z"},
    "spans": [{"name": "chat", "type": "CHAT_MODEL", "count": 240, "error_count": 30,
               "p50_ms": 1200, "p95_ms": 5800, "self_ms_total": 3e5, "tokens_total": 1_000_000,
               "cost_usd": 14.5}],
    "errors": [{"span_name": "chat", "exception_type": "RateLimitError",
                "message_pattern": "429 Too Many Requests", "count": 30, "trace_count": 30,
                "failure_mode": "fast", "p50_ms": 150, "example_trace_ids": []}],
}


def make_finding(n: int, priority: str, trace_ids=None, **over) -> dict:
    f = {"id": f"F-{n:03d}", "category": "latency_issue", "priority": priority, "confidence": 85,
         "title": f"Finding {n}", "span_names": ["chat"],
         "trace_ids": trace_ids if trace_ids is not None else [f"tr-{n:032x}"],
         "code": "src/app.py:12", "issue": "Slow.", "impact": "Users wait.",
         "suggestion": "Make it fast.", "metrics": {}}
    f.update(over)
    return f


FINDINGS = [make_finding(1, "P0", category="error_pattern"), make_finding(2, "P1"),
            make_finding(3, "P2"), make_finding(4, "P3")]


def make_review(root: Path, findings=FINDINGS, branch="main") -> Path:
    out = write_review(root, STATS, findings, branch=branch, commit=COMMIT, charts=False)
    return Path(out["path"])


@pytest.fixture
def review(tmp_path) -> Path:
    return make_review(tmp_path)


def messages(problems: list[Problem]) -> list[str]:
    return [p.message for p in problems]


def test_clean_review_has_no_problems(review):
    assert validate_review(review) == []


def eleven_findings(text: str) -> str:
    """Append an F-011 block after ten findings and fix the counts."""
    last = text.index("## Error Distribution")
    block = ("---\n\n### F-011: One too many (P2, Confidence: 80%)\n\n**Category**: `retry_issue`\n"
             "**Trace**: none cited\n**Code**: not located\n\n**Issue**: a\n\n**Impact**: b\n\n"
             "**Suggestion**: c\n\n")
    text = text[:last] + block + text[last:]
    return text.replace("findings_count: 10", "findings_count: 11").replace(
        "p2_count: 10", "p2_count: 11")


# (name, edit of the clean text, expected message) -- each broken review gets exactly
# this one problem.
BROKEN = [
    ("missing field", lambda t: re.sub(r"^pr_number: .*\n", "", t, flags=re.M),
     "missing frontmatter field 'pr_number'"),
    ("wrong p0 count", lambda t: t.replace("p0_count: 1", "p0_count: 2"),
     "'p0_count' is 2 but the body has 1"),
    ("wrong findings count", lambda t: t.replace("findings_count: 4", "findings_count: 3"),
     "'findings_count' is 3 but the body has 4"),
    ("bad category", lambda t: t.replace("`latency_issue`", "`slowness`", 1),
     "category 'slowness' is not one of high_cost, latency_issue, error_pattern, "
     "missing_instrumentation, inefficient_pattern, retry_issue"),
    ("confidence 65", lambda t: t.replace("(P1, Confidence: 85%)", "(P1, Confidence: 65%)"),
     "confidence 65% is below the floor of 70%"),
    ("confidence 120", lambda t: t.replace("(P1, Confidence: 85%)", "(P1, Confidence: 120%)"),
     "confidence 120% must be an integer 70..100"),
    ("priority P5", lambda t: t.replace("(P3, Confidence", "(P5, Confidence"),
     "priority 'P5' is not one of P0, P1, P2, P3"),
    ("bad heading", lambda t: t.replace("### F-002: Finding 2 (P1, Confidence: 85%)",
                                        "### F-002 Finding 2 - P1"),
     "bad finding heading '### F-002 Finding 2 - P1': expected "
     "'### F-001: Title (P1, Confidence: 92%)'"),
    ("loose heading", lambda t: t.replace("(P1, Confidence: 85%)", "(P1,  Confidence: 85 %)"),
     "does not match the exact form"),
    ("id out of sequence", lambda t: t.replace("### F-003:", "### F-002:"),
     "finding id 'F-002' out of sequence: expected F-003"),
    ("missing Impact", lambda t: t.replace("**Impact**: Users wait.", "Users wait.", 1),
     "finding lacks '**Impact**:'"),
    ("pr_number as text", lambda t: t.replace("pr_number: null", 'pr_number: "42"'),
     "'pr_number' must be an integer or null, got '42'"),
    ("count as text", lambda t: t.replace("p2_count: 1", "p2_count: one"),
     "'p2_count' must be an integer >= 0, got 'one'"),
    ("negative count", lambda t: t.replace("p2_count: 1", "p2_count: -1"),
     "'p2_count' must be an integer >= 0, got -1"),
    ("created not a timestamp", lambda t: re.sub(r"^created: .*$", "created: yesterday", t, flags=re.M),
     "'created' must be an ISO-8601 timestamp"),
    ("created a bare date", lambda t: re.sub(r"^created: .*$", "created: 2025-03-04", t, flags=re.M),
     "'created' must be an ISO-8601 timestamp"),
    ("generated_tasks not a list", lambda t: t.replace("generated_tasks: []", "generated_tasks: none"),
     "'generated_tasks' must be a list"),
    ("wrong type", lambda t: t.replace("type: review", "type: report"),
     "'type' must be 'review', got 'report'"),
    ("wrong agent", lambda t: t.replace('reviewer_agent: "mlflow-analyzer"', "reviewer_agent: me"),
     "'reviewer_agent' must be 'mlflow-analyzer'"),
    ("bad status", lambda t: t.replace("status: completed", "status: done"),
     "'status' must be one of draft, in_progress, completed, got 'done'"),
    ("id mismatch", lambda t: t.replace('id: "REVIEW-mlflow-3f9c2ab"', 'id: "REVIEW-mlflow-1234567"'),
     "'id' must be 'REVIEW-mlflow-3f9c2ab', got 'REVIEW-mlflow-1234567'"),
    ("missing section", lambda t: t.replace("## Error Distribution\n", ""),
     "missing section '## Error Distribution'"),
    ("sections out of order", lambda t: t.replace("## Summary", "## Scratch").replace(
        "## Recommendations", "## Recommendations\n\nx\n\n## Summary"),
     "section '## Summary' is out of order"),
    ("missing overview row", lambda t: re.sub(r"^\| Error Rate \|.*\n", "", t, flags=re.M),
     "'## Trace Overview' table lacks the row 'Error Rate'"),
    ("missing table column", lambda t: t.replace("| % of Total |", "| Share |"),
     "'## Cost Breakdown' table lacks column(s): % of Total"),
    ("no title", lambda t: t.replace("# MLflow Analysis: ", "# Analysis: "),
     "the body must open with a title '# MLflow Analysis: {scope}'"),
    ("eleven findings", None, "11 findings; at most 10 are allowed"),
    ("no frontmatter", lambda t: t.split("---\n", 2)[2],
     "no YAML frontmatter: the file must start with '---'"),
    ("bad yaml", lambda t: t.replace("subject: ", "subject: [", 1),
     "frontmatter is not valid YAML"),
]


@pytest.mark.parametrize("name, edit, expected", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_review_is_rejected(tmp_path, name, edit, expected):
    if edit is None:  # eleven findings: render ten, then add one by hand
        path = make_review(tmp_path, [make_finding(i, "P2") for i in range(1, 11)])
        path.write_text(eleven_findings(path.read_text()))
    else:
        path = make_review(tmp_path)
        broken = edit(path.read_text())
        assert broken != path.read_text(), "the edit changed nothing"
        path.write_text(broken)
    problems = validate_review(path)
    assert len(problems) == 1, messages(problems)
    assert expected in problems[0].message


def test_problem_carries_line_and_where(review):
    text = review.read_text().replace("(P1, Confidence: 85%)", "(P1, Confidence: 65%)")
    review.write_text(text)
    [p] = validate_review(review)
    line = text.splitlines().index("### F-002: Finding 2 (P1, Confidence: 65%)") + 1
    assert (p.line, p.where, p.field) == (line, "F-002", "F-002")
    assert p.format("r.md") == f"r.md:{line}: confidence 65% is below the floor of 70%"


def test_unquoted_numeric_commit_is_a_type_problem(tmp_path):
    path = make_review(tmp_path).with_name("REVIEW-mlflow-1234567.md")
    text = make_review(tmp_path).read_text().replace("3f9c2ab", "1234567")
    path.write_text(text.replace('commit: "1234567"', "commit: 1234567"))
    assert messages(validate_review(path)) == ["'commit' must be a non-empty string, got 1234567"]


def test_file_name_and_folder_must_match(tmp_path, review):
    other = review.with_name("REVIEW-mlflow-1234567.md")
    other.write_text(review.read_text())
    assert messages(validate_review(other)) == [
        "file name must be 'REVIEW-mlflow-3f9c2ab.md' for commit '3f9c2ab', "
        "got 'REVIEW-mlflow-1234567.md'"]
    wrong_dir = tmp_path / "reviews" / "feature" / review.name
    wrong_dir.parent.mkdir()
    wrong_dir.write_text(review.read_text().replace('branch: "main"', 'branch: "feature/x"'))
    assert messages(validate_review(wrong_dir)) == [
        "a review of branch 'feature/x' belongs in 'reviews/feature-x/', not in 'reviews/feature/'"]


def test_fenced_code_cannot_fake_structure(review):
    text = review.read_text().replace(
        "**Suggestion**: Make it fast.",
        "**Suggestion**: Make it fast:\n```\n## Findings\n### F-009: x (P0, Confidence: 99%)\n```", 1)
    review.write_text(text)
    assert validate_review(review) == []


def test_missing_file():
    assert messages(validate_review("/nonexistent/REVIEW-mlflow-abc1234.md")) == ["file not found"]


def test_trace_check_with_a_callable(review):
    cited = []

    def exists(ids):
        cited.extend(ids)
        return {i for i in ids if i != f"tr-{2:032x}"}

    problems = validate_review(review, trace_exists=exists)
    assert cited == [f"tr-{n:032x}" for n in range(1, 5)]
    assert messages(problems) == [f"trace tr-{2:032x} does not exist in the tracking store"]


# ---- against a real tracking store --------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite store with one real trace: (tracking uri, trace id)."""
    saved = {k: os.environ.get(k) for k in MLFLOW_ENV}
    os.environ.update(MLFLOW_ENV)
    import mlflow

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    uri = f"sqlite:///{path}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("review-validate")
        t0 = time.time_ns()
        root = mlflow.start_span_no_context("agent", span_type="AGENT", inputs={"q": "hi"},
                                            experiment_id=exp, start_time_ns=t0)
        child = mlflow.start_span_no_context("chat", span_type="CHAT_MODEL", parent_span=root,
                                             inputs={"messages": []}, start_time_ns=t0 + 1_000_000)
        child.end(end_time_ns=t0 + 900_000_000)
        root.end(end_time_ns=t0 + 1_000_000_000)
        trace_id = root.trace_id
        assert mlflow.MlflowClient().get_trace(trace_id) is not None
    finally:
        mlflow.set_tracking_uri(previous)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return uri, trace_id


@pytest.fixture
def citing_review(tmp_path, store) -> Path:
    _, real = store
    # Only the first trace id of a finding is written on its Trace line, so cite one each.
    findings = [make_finding(1, "P0", trace_ids=[real, "tr-ffff"]),
                make_finding(2, "P1", trace_ids=[FAKE_ID])]
    return make_review(tmp_path, findings)


def test_store_check_flags_exactly_the_made_up_trace(citing_review, store):
    uri, real = store
    problems = validate_review(citing_review, trace_exists=store_trace_checker(uri))
    assert messages(problems) == [f"trace {FAKE_ID} does not exist in the tracking store"]
    assert store_trace_checker(uri)([real, FAKE_ID]) == {real}


def test_store_check_refuses_a_missing_sqlite_file(tmp_path):
    from mlflow_analyzer.errors import SourceError

    with pytest.raises(SourceError):
        store_trace_checker(f"sqlite:///{tmp_path}/none.db")
    assert not (tmp_path / "none.db").exists()


# ---- the command -------------------------------------------------------------------------


def cli(*args):
    env = {**os.environ, **MLFLOW_ENV}
    return subprocess.run([sys.executable, "-m", "mlflow_analyzer", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=180)


def test_validate_command_ok_and_problems(review):
    r = cli("validate", review)
    assert (r.returncode, r.stdout) == (0, f"ok: {review}\n")
    text = review.read_text()
    review.write_text(text.replace("p0_count: 1", "p0_count: 3").replace("`latency_issue`", "`x`", 1))
    r = cli("validate", review)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    assert all(re.match(rf"{re.escape(str(review))}:\d+: ", ln) for ln in lines)
    assert "'p0_count' is 3 but the body has 1" in r.stdout and "category 'x'" in r.stdout
    j = cli("validate", review, "--format", "json")
    assert j.returncode == 1
    out = json.loads(j.stdout)
    assert out["ok"] is False and {p["where"] for p in out["problems"]} == {"p0_count", "F-002"}


def test_validate_command_with_tracking_uri(citing_review, store):
    uri, _ = store
    r = cli("validate", citing_review, "--tracking-uri", uri)
    assert r.returncode == 1, r.stderr
    assert r.stdout.splitlines() == [
        f"{citing_review}:{_line_of(citing_review, FAKE_ID)}: "
        f"trace {FAKE_ID} does not exist in the tracking store"]


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if needle in ln)


def test_validate_command_errors(tmp_path, review):
    r = cli("validate", tmp_path / "missing.md")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == f"mlflow-analyzer: error: no such review file: {tmp_path / 'missing.md'}"
    r = cli("validate", review, "--tracking-uri", f"sqlite:///{tmp_path}/none.db")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "no SQLite tracking store" in r.stderr
