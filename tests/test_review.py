"""The review renderer, its charts, git detection, the report command, and the schema doc."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the package is not installed in the test venv

from mlflow_analyzer import review_schema as S
from mlflow_analyzer.errors import InputError, UsageError
from mlflow_analyzer.review import (
    fmt_ms,
    fmt_pct,
    fmt_usd,
    git_context,
    prepare_findings,
    render_review,
    write_review,
)
from mlflow_analyzer.validate import validate_review

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sample_stats(**over) -> dict:
    """A stats object following the contract in CONTRIBUTING.md."""
    stats = {
        "trace_count": 1840, "error_count": 228, "error_rate": 0.1239,
        "latency_ms": {"mean": 2480.2, "p50": 1900.0, "p95": 6210.5, "p99": 9870.0, "max": 14020},
        "ok_latency_ms": {"mean": 2300.0, "p50": 1850.0, "p95": 5900.0, "p99": 9000.0, "max": 12000},
        "tokens": {"input": 14_100_000, "output": 1_602_300, "total": 15_702_300},
        "cost_usd": 58.2, "cost_source": "estimated", "cost_per_day_usd": 58.2,
        "time_range": {"start": "2025-03-03T09:00:00Z", "end": "2025-03-04T09:00:00+00:00"},
        "spans": [
            {"name": "chat_completion", "type": "CHAT_MODEL", "count": 2310, "error_count": 228,
             "p50_ms": 1500, "p95_ms": 5200, "self_ms_total": 3.9e6, "tokens_total": 14_900_000,
             "cost_usd": 54.1, "cost_estimated": True},
            {"name": "summarize_history", "type": "LLM", "count": 410, "error_count": 0,
             "p50_ms": 800, "p95_ms": 1400, "self_ms_total": 3.4e5, "tokens_total": 802_300,
             "cost_usd": 4.1, "cost_estimated": True},
            {"name": "search | docs", "type": "RETRIEVER", "count": 1840, "error_count": 0,
             "p50_ms": 120, "p95_ms": 300, "self_ms_total": 2.4e5, "tokens_total": 0,
             "cost_usd": None},
        ],
        "errors": [
            {"span_name": "chat_completion", "exception_type": "RateLimitError",
             "message_pattern": "Error code: 429 - Rate limit reached", "count": 228,
             "trace_count": 228, "failure_mode": "fast", "p50_ms": 180,
             "example_trace_ids": ["tr-5b1e0c7a9d2f4e6b8a0c1d3e5f7a9b1c"]},
        ],
    }
    stats.update(over)
    return stats


def finding(n: int, priority="P1", category="latency_issue", confidence=85, **over) -> dict:
    """A finding following the contract in CONTRIBUTING.md."""
    f = {
        "id": f"F-{n:03d}", "category": category, "priority": priority, "confidence": confidence,
        "title": f"Finding number {n}", "span_names": ["chat_completion"],
        "trace_ids": [f"tr-{n:032x}", f"tr-{n + 100:032x}"], "code": f"src/app.py:{10 * n}",
        "issue": f"Issue {n}: the span takes 6,210 ms at p95.", "impact": "Users wait.",
        "suggestion": "1. Do this\n2. Then that", "metrics": {"counts": {"traces": 12}},
    }
    f.update(over)
    return f


def sample_findings() -> list[dict]:
    return [
        finding(1, "P0", "error_pattern", 95, title="Rate limits fail 12% of requests"),
        finding(2, "P1", "high_cost", 92, title="History resent on every turn",
                metrics={"cost_per_day_usd": 54.1, "expected_saving_usd_per_month": 1070}),
        finding(3, "P2", "missing_instrumentation", 80, code=None, trace_ids=[],
                title="Retriever spans carry no inputs"),
        finding(4, "P3", "inefficient_pattern", 74, title="Embedding computed twice",
                suggestion="Cache it:\n```python\n## not a heading\ncache[q] = embed(q)\n```"),
    ]


def write(tmp_path, **kw) -> dict:
    args = dict(branch="feature/chat-memory", commit="3f9c2ab", charts=False)
    args.update(kw)
    return write_review(tmp_path, sample_stats(), sample_findings(), **args)


# ---- rendering ---------------------------------------------------------------------------


def test_rendered_review_validates_clean(tmp_path):
    out = write(tmp_path, pr_number=42, reviewer_model="claude-opus-4-5")
    path = Path(out["path"])
    assert path == tmp_path / "reviews" / "feature-chat-memory" / "REVIEW-mlflow-3f9c2ab.md"
    assert validate_review(path) == []
    text = path.read_text()
    assert 'branch: "feature/chat-memory"' in text
    assert "pr_number: 42" in text and "findings_count: 4" in text
    assert "p0_count: 1\np1_count: 1\np2_count: 1\n" in text  # the P3 finding is not counted


CHECKS = [
    {"id": "orphans", "detector": "orphans", "status": "clean", "summary": "no orphan spans: every parent id of 40 spans is in its trace"},
    {"id": "errors", "detector": "errors", "status": "found", "summary": "1 finding: Rate limits fail 12% of requests"},
    {"id": "code_gaps", "detector": "code_gaps", "status": "skipped", "summary": "no --repo given: the code was not scanned"},
]


def test_checks_and_confirm_are_written_and_valid(tmp_path):
    findings = sample_findings()
    findings[0]["confirm"] = {
        "command": "mlflow-analyzer stats --tracking-uri sqlite:///m.db --experiment-id 1 --format json",
        "jq": "[.errors[] | select(.span_name == \"chat_completion\") | .count] | add // 0",
        "shell": "mlflow-analyzer stats --tracking-uri sqlite:///m.db --experiment-id 1 --format json | jq "
                 "'[.errors[] | select(.span_name == \"chat_completion\") | .count] | add // 0'",
        "now": 228, "goal": "0: no more root-cause errors of this kind"}
    out = write_review(tmp_path, sample_stats(), findings, branch="main", commit="3f9c2ab", charts=False, checks=CHECKS)
    path = Path(out["path"])
    assert validate_review(path) == []
    text = path.read_text()
    assert text.index("## Findings") < text.index("## Checks") < text.index("## Error Distribution")
    assert "| `errors` | found |" in text and "| `orphans` | clean | no orphan spans" in text
    assert text.index("| `errors` | found") < text.index("| `orphans` | clean") < text.index("| `code_gaps` | skipped")
    assert "**Confirm**: `mlflow-analyzer stats --tracking-uri sqlite:///m.db" in text
    assert "prints 228 now; 0: no more root-cause errors of this kind" in text
    path.write_text(text.replace("| `orphans` | clean |", "| `orphans` | fine |"))
    problems = validate_review(path)
    assert len(problems) == 1 and "check status 'fine'" in problems[0].message


def test_recommendations_are_not_cut_mid_word_or_mid_code(tmp_path):
    findings = sample_findings()
    findings[1]["suggestion"] = ("Set the session on every entry point with "
                                 "`mlflow.update_current_trace(metadata={'mlflow.trace.session': session_id})` "
                                 + "and keep it stable for the whole conversation " * 5)
    text = render_review(sample_stats(), findings, branch="main", commit="3f9c2ab")
    rec = next(line for line in text.splitlines() if line.startswith("2. **F-002**"))
    assert rec.endswith("…") and rec.count("`") % 2 == 0
    kept = rec.split("(P1): ", 1)[1][:-1]
    suggestion = " ".join(findings[1]["suggestion"].split())
    assert suggestion.startswith(kept) and suggestion[len(kept)] == " "  # cut between words


def test_finding_layout_is_exact(tmp_path):
    text = render_review(sample_stats(), sample_findings(), branch="main", commit="3f9c2ab")
    assert (
        "### F-002: History resent on every turn (P1, Confidence: 92%)\n\n"
        "**Category**: `high_cost`\n"
        f"**Trace**: `tr-{2:032x}` (+1 more)\n"
        "**Code**: `src/app.py:20`\n\n"
        "**Issue**: Issue 2: the span takes 6,210 ms at p95.\n\n"
        "**Impact**: Users wait.\n\n"
        "**Suggestion**:\n1. Do this\n2. Then that\n\n"
        "**Expected Savings**: ~$1,070.00/month\n\n---\n\n### F-003"
    ) in text
    assert "**Trace**: none cited\n**Code**: not located" in text


def test_tables_and_numbers(tmp_path):
    text = render_review(sample_stats(), sample_findings(), branch="main", commit="3f9c2ab")
    assert "| Traces Analyzed | 1,840 |" in text
    assert "| Total Cost | $58.20 (estimate) |" in text
    assert "| Avg Latency | 2,480 ms |" in text
    assert "| Error Rate | 12.4% (228 traces) |" in text
    assert "| Time Range | 2025-03-03 09:00:00 UTC to 2025-03-04 09:00:00 UTC |" in text
    assert "| Cost per Day | $58.20 (estimate) |" in text
    assert "| chat_completion (CHAT_MODEL) | 2,310 | 14,900,000 | $54.10 (est.) | 93.0% |" in text
    assert "RateLimitError | chat_completion | 228 | 100.0% |" in text
    assert "search \\| docs" not in text  # no tokens, no cost: not in the cost table


def test_cost_is_labelled_estimate_only_when_stats_say_so():
    recorded = sample_stats(cost_source="recorded")
    for s in recorded["spans"]:
        s["cost_estimated"] = False
    plain = render_review(recorded, [], branch="main", commit="3f9c2ab")
    assert "est" not in plain.split("## Findings")[0].replace("Rate", "")
    assert "| Total Cost | $58.20 |" in plain
    mixed = sample_stats(cost_source="mixed")
    mixed["spans"][1]["cost_estimated"] = False
    text = render_review(mixed, [], branch="main", commit="3f9c2ab")
    assert "| Total Cost | $58.20 (partly estimated) |" in text
    assert "| $54.10 (est.) |" in text and "| $4.10 |" in text
    assert "Costs marked (est.) are estimates" in text


def test_tokens_stand_in_when_no_span_has_cost():
    stats = sample_stats(cost_usd=None, cost_source=None, cost_per_day_usd=None)
    for s in stats["spans"]:
        s["cost_usd"] = None
    text = render_review(stats, [], branch="main", commit="3f9c2ab")
    assert "| Total Cost | not recorded |" in text
    assert "% of Total is the share of tokens" in text
    assert "| chat_completion (CHAT_MODEL) | 2,310 | 14,900,000 | — | 94.9% |" in text


def test_number_formats():
    assert fmt_usd(1234.561) == "$1,234.56" and fmt_usd(0.0042) == "$0.0042"
    assert fmt_ms(1234.4) == "1,234 ms" and fmt_ms(3.44) == "3.4 ms"
    assert fmt_pct(0.123) == "12.3%" and fmt_usd(None) == "—"


def test_prepare_findings_filters_orders_caps_and_renumbers():
    raw = [finding(i, "P2", confidence=80) for i in range(1, 12)]
    raw.insert(5, finding(99, "P0", confidence=90, title="urgent"))
    raw.append(finding(50, "P1", confidence=65))  # under the floor
    kept, dropped = prepare_findings(raw)
    assert [f["id"] for f in kept] == [f"F-{i:03d}" for i in range(1, 11)]
    assert kept[0]["title"] == "urgent" and kept[1]["title"] == "Finding number 1"
    assert dropped == {"below_floor": 1, "over_limit": 2}
    text = render_review(sample_stats(), raw, branch="main", commit="3f9c2ab")
    assert "2 lower-priority findings beyond the limit of 10 were left out" in text


@pytest.mark.parametrize("bad, message", [
    ({"category": "expensive"}, "category 'expensive'"),
    ({"priority": "P4"}, "priority 'P4'"),
    ({"confidence": 101}, "over 100"),
    ({"confidence": "high"}, "not a number"),
    ({"impact": ""}, "'impact' must be non-empty"),
])
def test_render_rejects_findings_the_schema_cannot_hold(bad, message):
    with pytest.raises(InputError, match=re.escape(message)):
        render_review(sample_stats(), [finding(1, **bad)], branch="main", commit="3f9c2ab")


def test_render_rejects_bad_commit_and_pr():
    with pytest.raises(UsageError):
        render_review(sample_stats(), [], branch="main", commit="xyz")
    with pytest.raises(UsageError):
        render_review(sample_stats(), [], branch="main", commit="3f9c2ab", pr_number="42")


def test_heading_lines_inside_finding_text_are_escaped(tmp_path):
    f = finding(1, suggestion="Do this.\n## Not a section\n---\nDone.")
    out = write_review(tmp_path, sample_stats(), [f], branch="main", commit="3f9c2ab", charts=False)
    text = Path(out["path"]).read_text()
    assert "\n\\## Not a section\n\\---\n" in text
    assert validate_review(out["path"]) == []


def test_rewrite_keeps_created(tmp_path):
    first = write(tmp_path, created="2025-01-01T00:00:00Z")
    write(tmp_path)
    text = Path(first["path"]).read_text()
    assert "created: 2025-01-01T00:00:00Z" in text
    assert validate_review(first["path"]) == []


def test_branch_dir_sanitizes():
    assert S.branch_dir("feature/login") == "feature-login"
    assert S.branch_dir("../../etc") == "etc"
    assert S.branch_dir("fix: a b") == "fix-a-b"
    assert S.branch_dir("..") == "branch"
    assert S.review_relpath("a/b", "abc1234") == "reviews/a-b/REVIEW-mlflow-abc1234.md"


# ---- charts ------------------------------------------------------------------------------


def test_charts_are_png_beside_the_review_and_linked(tmp_path):
    out = write(tmp_path, charts=True)
    folder = Path(out["path"]).parent
    assert [Path(c).name for c in out["charts"]] == ["latency-3f9c2ab.png", "cost-3f9c2ab.png"]
    for chart in out["charts"]:
        assert Path(chart).parent == folder
        assert Path(chart).read_bytes()[:8] == PNG_MAGIC
    text = Path(out["path"]).read_text()
    assert "![Latency distribution](latency-3f9c2ab.png)" in text
    assert "![Cost by operation](cost-3f9c2ab.png)" in text
    assert validate_review(out["path"]) == []


def test_latency_histogram_from_values_and_missing_data(tmp_path):
    out = write_review(tmp_path, sample_stats(), [], branch="main", commit="abcdef0",
                       latencies=[100 + 37 * i % 900 for i in range(500)])
    assert Path(out["charts"][0]).read_bytes()[:8] == PNG_MAGIC
    empty = sample_stats(latency_ms={}, spans=[], cost_usd=None)
    out = write_review(tmp_path, empty, [], branch="main", commit="abcdef1")
    assert out["charts"] == []
    assert "![" not in Path(out["path"]).read_text()
    assert validate_review(out["path"]) == []


# ---- git ---------------------------------------------------------------------------------


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.fixture
def git_repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "feature/x")
    (repo / "a.txt").write_text("a")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "a")
    return repo


def test_git_context(git_repo, monkeypatch):
    branch, commit = git_context(git_repo)
    assert branch == "feature/x"
    assert re.fullmatch(r"[0-9a-f]{7,12}", commit)
    _git(git_repo, "checkout", "-q", "--detach")
    for var in ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME", "BRANCH_NAME"):
        monkeypatch.delenv(var, raising=False)
    assert git_context(git_repo) == ("detached", commit)
    monkeypatch.setenv("GITHUB_HEAD_REF", "pr-branch")
    assert git_context(git_repo) == ("pr-branch", commit)


def test_git_context_outside_a_repo(tmp_path):
    with pytest.raises(UsageError):
        git_context(tmp_path)


# ---- the report command ------------------------------------------------------------------


def cli(*args, cwd=REPO):
    from builders import cli as run_cli

    return run_cli(*map(str, args), cwd=cwd, timeout=120)


def test_report_command_from_findings_file(tmp_path, git_repo):
    findings = tmp_path / "findings.json"
    findings.write_text(json.dumps({"findings": sample_findings(), "stats": sample_stats()}))
    r = cli("report", "--findings", findings, "--repo", git_repo, "--pr", 7, "--model", "m1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    _, commit = git_context(git_repo)
    assert out["path"] == str(git_repo / "reviews" / "feature-x" / f"REVIEW-mlflow-{commit}.md")
    assert out["findings_count"] == 4 and len(out["charts"]) == 2
    assert all(Path(c).read_bytes()[:8] == PNG_MAGIC for c in out["charts"])
    assert "pr_number: 7" in Path(out["path"]).read_text()
    v = cli("validate", out["path"])
    assert v.returncode == 0 and v.stdout.strip() == f"ok: {out['path']}"


def test_report_command_flags_and_separate_stats(tmp_path):
    stats, findings = tmp_path / "stats.json", tmp_path / "findings.json"
    stats.write_text(json.dumps(sample_stats()))
    findings.write_text(json.dumps(sample_findings()))  # a bare list is accepted too
    r = cli("report", "--stats", stats, "--findings", findings, "--branch", "main",
            "--commit", "ABC1234", "--no-charts", "--output-dir", tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out == {"path": str(tmp_path / "reviews/main/REVIEW-mlflow-abc1234.md"),
                   "charts": [], "findings_count": 4}


@pytest.mark.parametrize("args, code, message", [
    ([], 2, "no traces given"),  # neither files, a store, nor --findings/--stats
    (["--findings", "nope.json"], 1, "findings file not found"),
    (["--stats", "{bad}", "--branch", "main", "--commit", "abc1234"], 1, "not valid JSON"),
    (["--stats", "{stats}", "--branch", "main", "--commit", "nothex!"], 2, "not 7-40 hex"),
    (["--stats", "{stats}", "--repo", "{tmp}"], 2, "give --branch and --commit"),
])
def test_report_command_errors(tmp_path, args, code, message):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "stats.json").write_text(json.dumps(sample_stats()))
    args = [a.format(bad=tmp_path / "bad.json", stats=tmp_path / "stats.json", tmp=tmp_path)
            for a in args]
    r = cli("report", *args, "--output-dir", tmp_path)
    assert r.returncode == code
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.stdout == ""


# ---- the schema doc agrees with the module -----------------------------------------------

DOC = REPO / "references" / "review.schema.md"


def test_doc_states_the_module_facts():
    doc = DOC.read_text()
    for field in S.FIELDS + S.OPTIONAL_FIELDS:
        assert f"| `{field.name}` |" in doc, field.name
    for name in list(S.CATEGORIES) + list(S.PRIORITIES):
        assert f"| `{name}` |" in doc, name
    for category, (meaning, priorities) in S.CATEGORIES.items():
        assert f"| `{category}` | {meaning} | {priorities} |" in doc
    for priority, when in S.PRIORITIES.items():
        assert when.split(",")[0] in doc
    for section in S.SECTIONS:
        assert f"`## {section}`" in doc
    for columns in list(S.TABLE_COLUMNS.values()) + list(S.OPTIONAL_SECTIONS.values()):
        assert " | ".join(columns) in doc
    for name in S.OPTIONAL_SECTIONS:
        assert f"`## {name}`" in doc
    for status in S.CHECK_STATUSES:
        assert f"`{status}`" in doc
    for row in S.OVERVIEW_ROWS:
        assert f"`{row}`" in doc
    for label in S.FINDING_FIELDS + S.FINDING_OPTIONAL_FIELDS:
        assert f"**{label}**" in doc
    assert f"at least **{S.CONFIDENCE_FLOOR}**" in doc and f"At most **{S.MAX_FINDINGS}**" in doc
    assert S.PATH_PATTERN in doc and S.SCHEMA_VERSION in doc and S.ACTIVE_FORM in doc
    plain = re.sub(r"\?P<\w+>", "", S.FINDING_HEADING_RE.pattern).replace(r"(\S.*?)", "(Title)")
    assert f"`{plain}`" in doc  # the heading regex, named groups left out
    for status in S.STATUSES:
        assert f"`{status}`" in doc


def test_doc_example_is_a_valid_review(tmp_path):
    example = DOC.read_text().split("````markdown\n", 1)[1].split("\n````", 1)[0]
    commit = re.search(r'^commit: "(\w+)"', example, re.M).group(1)
    path = tmp_path / "reviews" / "feature-chat-memory" / S.review_filename(commit)
    path.parent.mkdir(parents=True)
    path.write_text(example + "\n")
    assert validate_review(path) == []
    for line in example.splitlines():
        if line.startswith("### F-"):
            assert S.FINDING_HEADING_RE.match(line), line
