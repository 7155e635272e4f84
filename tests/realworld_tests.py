"""The tests every real-instrumentation corpus runs: ``from realworld_tests import *`` in
tests/test_realworld_*.py. A test module defines the session fixture ``corpus`` (the
manifest from realworld.build), ``KINDS`` (its planted problems), ``KNOWN_GAPS`` (planted
problem kind, or a check name, -> why it fails on main today) and ``KNOWN_CONTRADICTIONS``
(kind of false statement -> why), and calls :func:`parametrize` from pytest_generate_tests.

Known gaps are non-strict expected failures: when a fix lands they show as XPASS; then
drop them from the module's list so that they stay fixed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realworld import check_exact_stats, check_span_rows, cli_json, contradictions, matches, source_args, span_status, store_traces, trace_state

__all__ = [
    "traces", "stats", "findings", "all_findings", "kinds", "known_gaps", "known_contradictions", "exported",
    "parametrize", "test_ground_truth_is_the_server_log", "test_stats_exact", "test_span_rows_exact",
    "test_planted_problem_is_found", "test_same_name_spans_are_separate_rows", "test_no_finding_contradicted_by_the_traces", "test_known_contradiction_is_gone",
    "test_per_trace_commands_run_cleanly", "test_sessions_rebuilt", "test_health_counts_llm_spans_without_usage",
    "test_file_commands_give_the_store_figures",
]

# --- the tests every corpus runs (imported by tests/test_realworld_*.py) ---------------------
# A test module defines the fixture ``corpus`` (the manifest) and ``KNOWN_GAPS`` (planted
# problem kind -> why it is not found yet), then imports these names.



@pytest.fixture(scope="module")
def traces(corpus):
    return store_traces(corpus)


@pytest.fixture(scope="module")
def stats(corpus):
    return cli_json("stats", *source_args(corpus), "--format", "json")


@pytest.fixture(scope="module")
def findings(corpus):
    """The default findings output: the top 10 a reader sees."""
    return cli_json("findings", *source_args(corpus), "--format", "json")["findings"]


def parametrize(metafunc, kinds: list[str], known_gaps: dict[str, str], known_contradictions: dict[str, str]) -> None:
    """The module's pytest_generate_tests: one test per planted problem and per known
    contradiction, known gaps as expected failures."""
    if "kind" in metafunc.fixturenames:
        metafunc.parametrize("kind", planted(kinds, known_gaps))
    if "contradiction" in metafunc.fixturenames:
        metafunc.parametrize("contradiction", planted(sorted(known_contradictions), known_contradictions)
                             or [pytest.param(None, marks=pytest.mark.skip(reason="none known"))])


def planted(kinds: list[str], known_gaps: dict[str, str]) -> list:
    """Parameters for test_planted_problem_is_found: known gaps are expected failures
    (not strict: when a fix lands they pass and show as XPASS, then drop them here)."""
    return [pytest.param(k, marks=pytest.mark.xfail(reason=known_gaps[k], strict=False)) if k in known_gaps else k
            for k in kinds]


def expect_gap(request, known_gaps: dict, key: str) -> None:
    """Mark this test an expected failure when ``key`` is a known gap of the module (the
    test still runs: a fix shows as XPASS)."""
    if key in known_gaps:
        request.node.add_marker(pytest.mark.xfail(reason=known_gaps[key], strict=False))


@pytest.fixture(scope="module")
def kinds(request):
    return request.module.KINDS


@pytest.fixture(scope="module")
def known_gaps(request):
    return request.module.KNOWN_GAPS


@pytest.fixture(scope="module")
def known_contradictions(request):
    return request.module.KNOWN_CONTRADICTIONS


def test_ground_truth_is_the_server_log(corpus, kinds):
    truth = corpus["truth"]
    assert sorted(p["kind"] for p in corpus["problems"]) == sorted(kinds)
    assert truth["total"]["requests"] == len(truth["log"]) > truth["total"]["calls"] > 0
    served = {s for m in truth["models"].values() for s in m["errors_served"]}
    assert "429" in served and served & {"500", "529"}
    assert truth["total"]["answers_without_usage"] > 0 and truth["total"]["sdk_retries"] > 0


def test_stats_exact(corpus, traces, stats):
    check_exact_stats(corpus, traces, stats)
    assert stats["sessions"]["count"] == len(corpus["sessions"])


def test_span_rows_exact(corpus, traces, stats):
    by_type: dict[str, set] = {}
    for t in traces:
        for s in t.data.spans:
            by_type.setdefault(s.name, set()).add(s.span_type)
    check_span_rows(traces, stats, sorted(n for n, ts in by_type.items() if len(ts) == 1))


def test_same_name_spans_are_separate_rows(request, traces, stats, known_gaps):
    """Spans sharing a name but not a type (LangChain's retry wrapper and the model call it
    wraps are both `ChatOpenAI`) are separate rows with their own counts."""
    expect_gap(request, known_gaps, "same_name_rows")
    import numpy as np

    groups: dict[tuple, list] = {}
    for t in traces:
        for s in t.data.spans:
            groups.setdefault((s.name, s.span_type or "UNKNOWN"), []).append(s)
    rows = {(r["name"], r["type"]): r for r in stats["spans"]}
    for (name, kind), spans in groups.items():
        if sum(1 for n, _ in groups if n == name) < 2:
            continue
        row = rows.get((name, kind))
        assert row, f"no row for {name} [{kind}]"
        assert row["count"] == len(spans) and row["error_count"] == sum(1 for s in spans if span_status(s) == "ERROR")
        assert row["p50_ms"] == pytest.approx(float(np.percentile([(s.end_time_ns - s.start_time_ns) / 1e6 for s in spans], 50)), abs=0.01)


def test_planted_problem_is_found(corpus, findings, kind):
    problem = next(p for p in corpus["problems"] if p["kind"] == kind)
    hit = [f for f in findings if matches(problem, f)]
    assert hit, (f"{kind}: no {problem['category']} finding about `{problem['span']}` in the top {len(findings)}: "
                 + "; ".join(f"{f['category']} {f['span_names'][:1]} {f['title']}" for f in findings))


@pytest.fixture(scope="module")
def all_findings(corpus):
    return cli_json("findings", *source_args(corpus), "--format", "json", "--all")["findings"]


def test_no_finding_contradicted_by_the_traces(corpus, traces, all_findings, known_contradictions):
    """Every finding (--all, not only the top 10), except the known gaps checked below."""
    bad = [text for kind, text in contradictions(corpus, traces, all_findings) if kind not in known_contradictions]
    assert not bad, "\n".join(bad)


def test_known_contradiction_is_gone(corpus, traces, all_findings, contradiction):
    bad = [text for kind, text in contradictions(corpus, traces, all_findings) if kind == contradiction]
    assert not bad, "\n".join(bad)


def test_per_trace_commands_run_cleanly(corpus, traces, exported):
    from builders import cli  # noqa: F811

    failed = next(t for t in traces if trace_state(t) == "ERROR")
    caught = next(t for t in traces if trace_state(t) == "OK" and any(span_status(s) == "ERROR" for s in t.data.spans))
    for t in (failed, caught):
        tid = t.info.trace_id
        health = cli_json("health", *source_args(corpus), "--trace-id", tid)
        assert health["state"] == trace_state(t)
        assert {e["name"] for e in health["error_spans"]} == {s.name for s in t.data.spans if span_status(s) == "ERROR"}
    r = cli("tree", *source_args(corpus), "--trace-id", failed.info.trace_id)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert all(s.name in r.stdout for s in failed.data.spans)
    # the file-based commands on the exported corpus (they never import mlflow: quick)
    all_file = str(exported / "all.jsonl")
    r = cli("tree", all_file, "--trace-id", caught.info.trace_id, "--timeline")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for recipe in ("errors", "llm", "tools", "retrievers", "slow", "io", "spans", "summary"):
        r = cli("extract", all_file, "--recipe", recipe, "--limit", "500", "--output", str(exported / f"{recipe}.jsonl"))
        assert r.returncode == 0 and "Traceback" not in r.stderr, (recipe, r.stderr[-2000:])
    rows = [json.loads(line) for line in (exported / "llm.jsonl").read_text().splitlines()]
    assert len(rows) == corpus["truth"]["total"]["calls"]
    errors = [json.loads(line) for line in (exported / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == sum(1 for t in traces for s in t.data.spans if span_status(s) == "ERROR")


def test_sessions_rebuilt(corpus):
    listed = cli_json("session", *source_args(corpus), "--list")
    text = json.dumps(listed)
    assert all(s in text for s in corpus["sessions"])
    session = corpus["sessions"][0]
    out = cli_json("session", *source_args(corpus), "--session-id", session)
    assert len(out["turns"]) == sum(1 for t in corpus["turns"] if t["session"] == session)


def test_health_counts_llm_spans_without_usage(request, corpus, traces, known_gaps):
    expect_gap(request, known_gaps, "health_failed_calls_without_usage")
    """A failed LLM call has no usage because it has no answer: it is not an
    instrumentation gap. On the failed turn no answer lacked usage."""
    failed = next(t for t in traces if trace_state(t) == "ERROR")
    health = cli_json("health", *source_args(corpus), "--trace-id", failed.info.trace_id)
    assert not any("without token usage" in p for p in health["problems"]), health["problems"]


@pytest.fixture(scope="module")
def exported(corpus, tmp_path_factory):
    """The corpus as files: every trace in one JSONL, and three traces as single JSON files."""
    from builders import cli

    d = tmp_path_factory.mktemp(f"export-{corpus['corpus']}")
    r = cli("fetch", *source_args(corpus), "--output", str(d / "all.jsonl"))
    assert r.returncode == 0, r.stderr[-2000:]
    return d


def test_file_commands_give_the_store_figures(corpus, exported, stats):
    from builders import cli

    files = cli_json("stats", str(exported / "all.jsonl"), "--format", "json")
    for key in ("trace_count", "error_count", "tokens", "latency_ms", "cost_usd", "errors"):
        assert files[key] == stats[key], key
    line = (exported / "all.jsonl").read_text().splitlines()[0]
    single = exported / "one.json"
    single.write_text(line)
    for cmd in (["health"], ["tree"]):
        r = cli(*cmd, str(single))
        assert r.returncode == 0 and "Traceback" not in r.stderr, (cmd, r.stderr[-2000:])
    r = cli("findings", str(exported / "all.jsonl"), "--format", "json")
    assert r.returncode == 0, r.stderr[-2000:]


# --- OpenTelemetry corpora only: trace files that hold nothing but the OpenTelemetry keys -----
# MLflow's server translates some GenAI/OpenInference attributes into its own keys when it
# ingests OTLP (mlflow.spanType, mlflow.chat.tokenUsage, mlflow.trace.session, ...). Files
# written by other tools carry only the instrumentation's own keys: strip MLflow's.

OTEL_ONLY_TESTS = ["otel_only", "test_otel_only_files_count_llm_calls_and_tokens", "test_otel_only_files_find_sessions"]


def _strip_mlflow_keys(trace: dict) -> dict:
    info = trace["info"]
    info["trace_metadata"] = {k: v for k, v in (info.get("trace_metadata") or {}).items()
                              if not k.startswith("mlflow.") or k == "mlflow.trace_schema.version"}
    for span in trace["data"]["spans"]:
        span["attributes"] = {k: v for k, v in span["attributes"].items() if not k.startswith("mlflow.")}
    return trace


@pytest.fixture(scope="module")
def otel_only(exported):
    path = exported / "otel-only.jsonl"
    lines = [json.dumps(_strip_mlflow_keys(json.loads(line))) for line in (exported / "all.jsonl").read_text().splitlines()]
    assert lines and not any('"mlflow.spanType"' in line for line in lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_otel_only_files_count_llm_calls_and_tokens(request, corpus, otel_only, known_gaps):
    expect_gap(request, known_gaps, "otel_only_llm_calls")
    s = cli_json("stats", str(otel_only), "--format", "json")
    truth = corpus["truth"]["total"]
    assert s["tokens"]["input"] == truth["input_tokens"] and s["tokens"]["output"] == truth["output_tokens"]
    assert sum(r["count"] for r in s["spans"] if r["type"] in ("LLM", "CHAT_MODEL")) == truth["calls"]


def test_otel_only_files_find_sessions(request, corpus, otel_only, known_gaps):
    expect_gap(request, known_gaps, "otel_only_sessions")
    s = cli_json("stats", str(otel_only), "--format", "json")
    assert s["sessions"]["count"] == len(corpus["sessions"])
    listed = json.dumps(cli_json("session", str(otel_only), "--list"))
    assert all(sid in listed for sid in corpus["sessions"])
