"""Findings against the corpus's ground truth: every injected problem is found with the
right category and span, no healthy span is flagged, distractors stay quiet."""

from __future__ import annotations

import json

import pytest

from builders import cli_ok as run

from mlflow_analyzer.findings import CATEGORIES, analyze
from mlflow_analyzer.sources import SqlStoreSource, StoreQuery

FIELDS = ["id", "category", "priority", "confidence", "title", "span_names", "trace_ids", "code", "issue", "impact", "suggestion"]




@pytest.fixture(scope="module")
def everything(corpus):
    src = SqlStoreSource(StoreQuery(corpus["tracking_uri"], experiment_id=corpus["experiment_id"]))
    return analyze(src.iter_traces(), max_findings=None)


def _matches(problem, finding):
    return (
        finding["category"] == problem["expected_category"]
        and finding["kind"] in problem["acceptable_kinds"]
        and set(problem["span_names"][:1]) & set(finding["span_names"] + [m for m in [finding["metrics"].get("assessment")] if m])
    )


def test_every_injected_problem_is_found(corpus, everything):
    findings = everything["findings"]
    missed = []
    for p in corpus["problems"]:
        if p["kind"] in ("failing_assessment", "judge_error"):
            name = p["details"]["assessment_name"]
            ok = any(f["category"] == p["expected_category"] and f["kind"] == p["expected_kind"]
                     and f["metrics"].get("assessment") == name for f in findings)
        elif p["kind"] == "missing_session":
            ok = any(f["category"] == "missing_instrumentation" and f["kind"] == "missing_session" for f in findings)
        else:
            ok = any(_matches(p, f) for f in findings)
        if not ok:
            missed.append((p["kind"], p["expected_category"], p["span_names"]))
    assert not missed, f"missed: {missed}\nfound: {[(f['category'], f['span_names']) for f in findings]}"


def test_evidence_points_at_injected_traces(corpus, everything):
    by_kind = {p["kind"]: p for p in corpus["problems"]}
    checks = {
        "slow_tool": "latency_issue",
        "redundant_calls": "inefficient_pattern",
        "rate_limit_exhausted": "retry_issue",
        "uninstrumented_time": "missing_instrumentation",
        "cascade": "error_pattern",
    }
    for kind, category in checks.items():
        p = by_kind[kind]
        f = next(f for f in everything["findings"] if f["category"] == category and p["span_names"][0] in f["span_names"])
        assert f["trace_ids"] and set(f["trace_ids"]) <= set(p["trace_ids"]) | set(by_kind.get("rate_limit_recovered", {}).get("trace_ids", [])), kind


def test_no_healthy_span_is_flagged(corpus, everything):
    healthy = set(corpus["healthy_span_names"])
    for f in everything["findings"]:
        assert not healthy & set(f["span_names"]), (f["title"], healthy & set(f["span_names"]))


def test_distractors_stay_quiet(corpus, everything):
    for d in corpus["distractors"]:
        ids = set(d["trace_ids"])
        for f in everything["findings"]:
            if d["kind"] == "parallel_calls" and f["category"] == "latency_issue" and "independent" in f["title"]:
                assert not ids & set(f["trace_ids"]), "concurrent calls reported as sequential"
            if d["kind"] == "repeated_call_different_inputs" and f["category"] == "inefficient_pattern":
                assert not set(d["span_names"]) & set(f["span_names"])
            if d["kind"] == "dependent_sequential_calls" and "independent" in f["title"]:
                assert not set(d["span_names"]) <= set(f["span_names"])
            if d["kind"] == "cheap_model_with_usage":
                assert not set(d["span_names"]) & set(f["span_names"])


def test_cascade_reports_the_cause_not_every_ancestor(corpus, everything):
    p = next(p for p in corpus["problems"] if p["kind"] == "cascade")
    cause = p["details"]["root_cause_span"]
    errs = [f for f in everything["findings"] if f["category"] == "error_pattern" and f["metrics"].get("exception_type")]
    assert any(f["span_names"][0] == cause and set(p["details"]["propagated_to"]) <= set(f["metrics"]["propagated_to"]) for f in errs)
    assert not any(f["span_names"][0] in p["details"]["propagated_to"] for f in errs)


def test_timeouts_told_from_fast_failures(corpus, everything):
    errs = {f["span_names"][0]: f for f in everything["findings"] if f["metrics"].get("error_kind")}
    timeout = next(p for p in corpus["problems"] if p["kind"] == "timeout")["span_names"][0]
    fast = next(p for p in corpus["problems"] if p["kind"] == "fast_validation_error")["span_names"][0]
    assert errs[timeout]["metrics"]["error_kind"] == "timeout" and errs[timeout]["metrics"]["failure_mode"] == "slow"
    assert errs[fast]["metrics"]["error_kind"] == "validation" and errs[fast]["metrics"]["failure_mode"] == "fast"
    auth = next(p for p in corpus["problems"] if p["kind"] == "auth_error_cluster")
    f = errs[auth["span_names"][0]]
    assert f["metrics"]["error_kind"] == "auth" and f["metrics"]["time_cluster"], "auth errors come in one window"


def test_retries_exhausted_and_backoff(corpus, everything):
    p = next(p for p in corpus["problems"] if p["kind"] == "rate_limit_exhausted")
    f = next(f for f in everything["findings"] if f["category"] == "retry_issue")
    assert f["metrics"]["exhausted"] == len(p["trace_ids"])
    assert f["metrics"]["backoff"]["kind"] == "exponential"


def test_judge_errors_are_not_trace_errors(corpus, everything):
    p = next(p for p in corpus["problems"] if p["kind"] == "judge_error")
    f = next(f for f in everything["findings"] if f["metrics"].get("assessment") == p["details"]["assessment_name"] and "itself failed" in f["title"])
    assert f["category"] == "missing_instrumentation"
    errors = {e["span_name"] for e in everything["stats"]["errors"]}
    assert p["details"]["assessment_name"] not in errors


def test_contract_shape_and_limits(corpus):
    out = json.loads(run("findings", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"], "--format", "json"))
    assert set(out) >= {"findings", "stats"}
    assert 0 < len(out["findings"]) <= 10
    assert out["stats"]["trace_count"] == corpus["trace_count"]
    for i, f in enumerate(out["findings"], start=1):
        assert list(f)[: len(FIELDS)] == FIELDS
        assert f["id"] == f"F-{i:03d}"
        assert f["category"] in CATEGORIES and f["priority"] in ("P0", "P1", "P2", "P3")
        assert 70 <= f["confidence"] <= 100 and isinstance(f["confidence"], int)
        assert isinstance(f["span_names"], list) and isinstance(f["trace_ids"], list)
    prios = [f["priority"] for f in out["findings"]]
    assert prios == sorted(prios), "ranked by priority first"
    more = json.loads(run("findings", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"], "--all"))
    assert len(more["findings"]) == more["findings_total"] >= len(out["findings"])


def test_branch_against_baseline_finds_the_regression(corpus):
    b = corpus["branches"]
    feature = next(k for k in b if k != "main") if isinstance(b, dict) else None
    assert feature, corpus["branches"]
    out = json.loads(run("findings", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"],
                         "--branch", feature, "--baseline", "main", "--all"))
    cmp = out["comparison"]
    assert cmp["branch_summary"]["traces"] > 0 and cmp["baseline_summary"]["traces"] > 0
    assert cmp["regressions"], cmp
    assert all(r["p_value"] < 0.05 for r in cmp["regressions"])
    assert any(f["metrics"].get("regression") for f in out["findings"])


def test_required_tags_and_text(corpus):
    out = json.loads(run("findings", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"],
                         "--required-tags", "session_id,team", "--all"))
    titles = [f["title"] for f in out["findings"]]
    assert any("`team` missing" in t for t in titles)
    text = run("findings", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"], "--format", "text")
    assert "F-001" in text


def test_repo_fills_code_and_finds_untraced_llm_calls(corpus, tmp_path):
    slow = next(p for p in corpus["problems"] if p["kind"] == "slow_tool")["span_names"][0]
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "tools.py").write_text(
        "import mlflow\n\n\n"
        f"@mlflow.trace(name={slow!r}, span_type='TOOL')\n"
        "def check(country):\n"
        "    return country\n"
    )
    (tmp_path / "agent" / "summary.py").write_text(
        "import anthropic\n\nclient = anthropic.Anthropic()\n\n\n"
        "def summarize(text):\n"
        "    return client.messages.create(model='claude-haiku-4-5', max_tokens=100,\n"
        "                                  messages=[{'role': 'user', 'content': text}])\n"
    )
    out = json.loads(run("findings", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"],
                         "--repo", str(tmp_path), "--all"))
    located = next(f for f in out["findings"] if f["category"] == "latency_issue" and slow in f["span_names"])
    assert located["code"] == "agent/tools.py:5"  # the decorated function
    gaps = [f for f in out["findings"] if f["category"] == "missing_instrumentation" and f["code"]]
    assert any(f["code"].startswith("agent/summary.py:") for f in gaps)
