"""The synthetic trace corpus: complete in the store, and the injected shapes are real."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mlflow_analyzer import corpus as corpus_mod
from mlflow_analyzer.corpus import PROBLEM_KINDS, CATEGORIES, build_corpus, ensure_corpus


@pytest.fixture(scope="module")
def mlflow_at(corpus):
    """mlflow pointed at the corpus store for this module (restored afterwards)."""
    import mlflow

    with corpus_mod._use_tracking_uri(mlflow, corpus["tracking_uri"]):
        yield mlflow


@pytest.fixture(scope="module")
def infos(mlflow_at, corpus):
    return mlflow_at.search_traces(locations=[corpus["experiment_id"]], return_type="list",
                                   include_spans=False, max_results=None)


def problem(corpus, kind):
    return next(p for p in corpus["problems"] if p["kind"] == kind)


def spans_named(trace, name):
    return sorted((s for s in trace.data.spans if s.name == name), key=lambda s: s.start_time_ns)


def is_error(span):
    return span.status.status_code.value == "ERROR" if hasattr(span.status.status_code, "value") \
        else str(span.status.status_code).endswith("ERROR")


def exception_event(span):
    events = [e for e in span.events if e.name == "exception"]
    assert events, f"{span.name} has no exception event"
    return events[0].attributes


def state(trace):
    return str(trace.info.state).rsplit(".", 1)[-1]


# --- the store ---------------------------------------------------------------------------


def test_store_holds_exactly_the_manifest_traces(corpus, infos):
    assert len(infos) == corpus["trace_count"] == 180
    states = [str(t.info.state).rsplit(".", 1)[-1] for t in infos]
    assert "IN_PROGRESS" not in states
    assert states.count("ERROR") == corpus["error_trace_count"] > 0
    store_ids = {t.info.trace_id for t in infos}
    for p in corpus["problems"]:
        assert set(p["trace_ids"]) <= store_ids, p["kind"]
    assert sum(len(t.info.assessments) for t in infos) == corpus["assessments"]["count"]


def test_manifest_is_json_and_names_every_problem(corpus):
    json.dumps(corpus)
    kinds = [p["kind"] for p in corpus["problems"]]
    assert sorted(kinds) == sorted(PROBLEM_KINDS)
    for p in corpus["problems"]:
        assert p["expected_category"] in CATEGORIES
        assert p["expected_category"] in p["acceptable_categories"]
        assert set(p["acceptable_categories"]) <= set(CATEGORIES)
        assert p["span_names"], p["kind"]
        assert len(set(p["trace_ids"])) >= 2, p["kind"]
    assert len(problem(corpus, "growing_prompt")["details"]["sessions"]) >= 1
    flagged = {name for p in corpus["problems"] for name in p["span_names"]}
    assert corpus["healthy_span_names"] and not flagged & set(corpus["healthy_span_names"])
    assert corpus["sessions"] > 10
    assert set(corpus["branches"]) == {"main", "feature/parallel-tools"}


# --- injected shapes, checked on the stored traces ----------------------------------------


def test_rate_limit_retries_until_exhaustion(corpus, mlflow_at):
    p = problem(corpus, "rate_limit_exhausted")
    for trace_id in p["trace_ids"][:3]:
        trace = mlflow_at.get_trace(trace_id)
        assert state(trace) == "ERROR"
        attempts = spans_named(trace, "plan_next_step")
        assert len(attempts) == 4 and all(is_error(s) for s in attempts)
        assert len({s.parent_id for s in attempts}) == 1  # siblings
        assert len({json.dumps(s.inputs, sort_keys=True) for s in attempts}) == 1  # same inputs
        for s in attempts:
            event = exception_event(s)
            assert event["exception.type"] == "RateLimitError"
            assert "429" in event["exception.message"]
            assert s.status.description.startswith("RateLimitError: Error code: 429")
        gaps = [(b.start_time_ns - a.end_time_ns) / 1e9 for a, b in zip(attempts, attempts[1:])]
        assert [round(g) for g in gaps] == [1, 2, 4]
        root = next(s for s in trace.data.spans if s.parent_id is None)
        assert is_error(root) and exception_event(root)["exception.type"] == "RateLimitError"


def test_rate_limit_retried_then_recovered(corpus, mlflow_at):
    for trace_id in problem(corpus, "rate_limit_recovered")["trace_ids"][:3]:
        trace = mlflow_at.get_trace(trace_id)
        assert state(trace) == "OK"
        attempts = spans_named(trace, "plan_next_step")
        assert len(attempts) >= 2
        assert all(is_error(s) for s in attempts[:-1]) and not is_error(attempts[-1])
        assert len({json.dumps(s.inputs, sort_keys=True) for s in attempts}) == 1
        assert attempts[-1].get_attribute("mlflow.chat.tokenUsage")["input_tokens"] > 0


def test_slow_timeouts_and_fast_validation_errors(corpus, mlflow_at):
    for trace_id in problem(corpus, "timeout")["trace_ids"]:
        trace = mlflow_at.get_trace(trace_id)
        (span,) = [s for s in spans_named(trace, "search_flights") if is_error(s)]
        assert exception_event(span)["exception.type"] == "TimeoutError"
        assert "timed out after 30s" in exception_event(span)["exception.message"]
        assert (span.end_time_ns - span.start_time_ns) / 1e6 >= 30_000
        assert state(trace) == "OK"  # caught by the agent
    for trace_id in problem(corpus, "fast_validation_error")["trace_ids"]:
        trace = mlflow_at.get_trace(trace_id)
        (span,) = spans_named(trace, "create_booking")
        assert exception_event(span)["exception.type"] == "ValueError"
        assert "invalid date format" in exception_event(span)["exception.message"]
        assert (span.end_time_ns - span.start_time_ns) / 1e6 <= 20
        assert state(trace) == "OK"


def test_auth_errors_cluster_in_one_hour(corpus, mlflow_at):
    p = problem(corpus, "auth_error_cluster")
    start = datetime.fromisoformat(p["details"]["window_start"].replace("Z", "+00:00"))
    for trace_id in p["trace_ids"]:
        trace = mlflow_at.get_trace(trace_id)
        assert state(trace) == "ERROR"
        (span,) = spans_named(trace, "generate_response")
        event = exception_event(span)
        assert event["exception.type"] == "AuthenticationError" and "401" in event["exception.message"]
        offset = trace.info.request_time / 1000 - start.timestamp()
        assert 0 <= offset < 3600


def test_cascade_marks_every_ancestor(corpus, mlflow_at):
    for trace_id in problem(corpus, "cascade")["trace_ids"]:
        trace = mlflow_at.get_trace(trace_id)
        by_id = {s.span_id: s for s in trace.data.spans}
        (leaf,) = spans_named(trace, "charge_card")
        chain = [leaf]
        while chain[-1].parent_id:
            chain.append(by_id[chain[-1].parent_id])
        assert [s.name for s in chain] == ["charge_card", "execute_payment", "travel_agent"]
        assert all(is_error(s) for s in chain)
        assert {exception_event(s)["exception.type"] for s in chain} == {"PaymentGatewayError"}
        assert state(trace) == "ERROR"


def test_slow_tool_against_fast_tools(corpus, mlflow_at):
    details = problem(corpus, "slow_tool")["details"]
    assert details["p95_ms"] > 3000 and details["other_tools_p95_ms"] < 400
    trace = mlflow_at.get_trace(problem(corpus, "slow_tool")["trace_ids"][0])
    (span,) = spans_named(trace, "check_visa_requirements")
    assert span.span_type == "TOOL" and (span.end_time_ns - span.start_time_ns) / 1e6 > 1000


def test_sequential_calls_and_parallel_distractor(corpus, mlflow_at):
    names = ["get_weather", "get_hotels", "get_events"]
    p = problem(corpus, "sequential_independent_calls")
    for trace_id in p["trace_ids"][:3]:
        trace = mlflow_at.get_trace(trace_id)
        calls = sorted((spans_named(trace, n)[0] for n in names), key=lambda s: s.start_time_ns)
        assert len({s.parent_id for s in calls}) == 1
        for a, b in zip(calls, calls[1:]):
            assert b.start_time_ns >= a.end_time_ns  # one after another
        assert trace.info.trace_metadata["mlflow.source.git.branch"] == "main"
    parallel = p["details"]["parallel_distractor_trace_ids"]
    assert parallel
    for trace_id in parallel[:3]:
        trace = mlflow_at.get_trace(trace_id)
        calls = sorted((spans_named(trace, n)[0] for n in names), key=lambda s: s.start_time_ns)
        assert max(s.start_time_ns for s in calls) < min(s.end_time_ns for s in calls)  # overlap
        assert trace.info.trace_metadata["mlflow.source.git.branch"] == "feature/parallel-tools"


def test_growing_prompt_per_session(corpus, mlflow_at, infos):
    details = problem(corpus, "growing_prompt")["details"]
    session = details["sessions"][0]
    turns = sorted((t for t in infos if t.info.trace_metadata.get("mlflow.trace.session") == session),
                   key=lambda t: t.info.request_time)
    tokens = []
    for info in turns:
        (span,) = spans_named(mlflow_at.get_trace(info.info.trace_id), "generate_response")
        assert span.get_attribute("mlflow.llm.model") == "gpt-4.1"
        tokens.append(span.get_attribute("mlflow.chat.tokenUsage")["input_tokens"])
    assert len(tokens) >= 4 and tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    assert tokens[0] <= 2500 and tokens[-1] >= 20_000
    assert tokens == details["input_tokens_by_session"][session]


def test_expensive_model_on_one_word_task(corpus, mlflow_at):
    trace = mlflow_at.get_trace(problem(corpus, "expensive_model_simple_task")["trace_ids"][0])
    (span,) = spans_named(trace, "intent_llm")
    assert span.get_attribute("mlflow.llm.model") == "claude-opus-4-1"
    usage = span.get_attribute("mlflow.chat.tokenUsage")
    assert usage["input_tokens"] < 300 and usage["output_tokens"] <= 3
    assert span.get_attribute("mlflow.llm.cost")["total_cost"] > 0  # priced by MLflow
    parent = next(s for s in trace.data.spans if s.span_id == span.parent_id)
    assert parent.name == "classify_intent" and parent.span_type == "CLASSIFIER"


def test_llm_span_without_usage(corpus, mlflow_at):
    trace = mlflow_at.get_trace(problem(corpus, "llm_without_usage")["trace_ids"][0])
    (span,) = spans_named(trace, "rewrite_query")
    assert span.get_attribute("mlflow.llm.model") == "gpt-4.1-mini"
    assert span.get_attribute("mlflow.chat.tokenUsage") is None
    assert span.get_attribute("mlflow.llm.cost") is None
    ok_llm = [s for s in trace.data.spans if s.name == "intent_llm"]
    assert ok_llm[0].get_attribute("mlflow.chat.tokenUsage") is not None


def test_redundant_calls_and_legitimate_repeat(corpus, mlflow_at):
    trace = mlflow_at.get_trace(problem(corpus, "redundant_calls")["trace_ids"][0])
    calls = spans_named(trace, "get_exchange_rate")
    assert len(calls) == 2 and calls[0].inputs == calls[1].inputs
    repeat = next(d for d in corpus["distractors"] if d["kind"] == "repeated_call_different_inputs")
    trace = mlflow_at.get_trace(repeat["trace_ids"][0])
    lookups = spans_named(trace, "lookup_airport")
    assert len(lookups) == 2 and lookups[0].inputs != lookups[1].inputs


def test_uninstrumented_time(corpus, mlflow_at):
    for trace_id in problem(corpus, "uninstrumented_time")["trace_ids"][:3]:
        trace = mlflow_at.get_trace(trace_id)
        (ctx,) = spans_named(trace, "build_context")
        children = [s for s in trace.data.spans if s.parent_id == ctx.span_id]
        covered = sum(s.end_time_ns - s.start_time_ns for s in children)
        duration = ctx.end_time_ns - ctx.start_time_ns
        assert duration >= 1.8e9 and covered / duration < 0.3


def test_sessions_users_tags_and_git_metadata(corpus, infos):
    by_id = {t.info.trace_id: t.info for t in infos}
    missing = set(problem(corpus, "missing_session")["trace_ids"])
    for trace_id, info in by_id.items():
        meta = info.trace_metadata
        assert info.tags["environment"] in ("prod", "staging")
        branch = meta["mlflow.source.git.branch"]
        assert meta["mlflow.source.git.commit"] == corpus["branches"][branch]["commit"]
        if trace_id in missing:
            assert "mlflow.trace.session" not in meta and "mlflow.trace.user" not in meta
        else:
            assert meta["mlflow.trace.session"].startswith("sess-")
            assert meta["mlflow.trace.user"].startswith("user-")
    sessions = {i.trace_metadata.get("mlflow.trace.session") for i in by_id.values()} - {None}
    assert len(sessions) == corpus["sessions"]
    branches = [i.trace_metadata["mlflow.source.git.branch"] for i in by_id.values()]
    feature = corpus["branches"]["feature/parallel-tools"]
    assert branches.count("feature/parallel-tools") == feature["trace_count"]
    assert branches.count("main") > branches.count("feature/parallel-tools") > 0
    assert 0 < len(missing) < len(by_id) / 5


def test_assessments_failing_erroring_and_human(corpus, infos):
    by_id = {t.info.trace_id: t.info for t in infos}
    for trace_id in problem(corpus, "judge_error")["trace_ids"]:
        info = by_id[trace_id]
        assert str(info.state).endswith("OK")
        (fb,) = [a for a in info.assessments if a.name == "groundedness"]
        assert fb.feedback.error.error_code == "RATE_LIMIT" and fb.feedback.value is None
        assert fb.source.source_type == "LLM_JUDGE"
    for trace_id in problem(corpus, "failing_assessment")["trace_ids"]:
        (fb,) = [a for a in by_id[trace_id].assessments if a.name == "relevance"]
        assert fb.feedback.value is False and fb.rationale
    human = [a for i in by_id.values() for a in i.assessments if a.source.source_type == "HUMAN"]
    assert len(human) >= 2 and all(a.span_id for a in human)


def test_custom_span_types_kept(corpus, mlflow_at):
    trace = mlflow_at.get_trace(problem(corpus, "expensive_model_simple_task")["trace_ids"][0])
    types = {s.span_type for s in trace.data.spans}
    assert {"MEMORY", "CLASSIFIER", "AGENT", "CHAT_MODEL", "CHAIN"} <= types


def test_feature_branch_regression_recorded(corpus):
    feature = corpus["branches"]["feature/parallel-tools"]
    (regressed,) = feature["regressed_spans"]
    assert regressed["branch_p50_ms"] > 2 * regressed["baseline_p50_ms"]
    (improved,) = feature["improved_spans"]
    assert improved["branch_p50_ms"] < improved["baseline_p50_ms"]


# --- reuse, rebuild, writers ----------------------------------------------------------


def test_ensure_corpus_reuses_the_store(corpus):
    directory = Path(corpus["tracking_uri"][len("sqlite:///"):]).parent
    started = time.perf_counter()
    again = ensure_corpus(directory, n_traces=corpus["params"]["n_traces"])
    assert time.perf_counter() - started < 2
    assert again == corpus


def test_ensure_corpus_rebuilds_a_stale_directory(tmp_path):
    (tmp_path / "mlflow.db").write_text("not a database")
    (tmp_path / "manifest.json").write_text(json.dumps({"params": {"n_traces": 1}}))
    manifest = ensure_corpus(tmp_path, n_traces=40, experiment_name="stale")
    assert manifest["trace_count"] == 40 and manifest["params"]["n_traces"] == 40
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    # Parameters changed: rebuilt from scratch, not appended.
    other = ensure_corpus(tmp_path, n_traces=41, experiment_name="stale")
    assert other["trace_count"] == 41
    assert corpus_mod._sqlite_counts(tmp_path / "mlflow.db", other["experiment_id"])["traces"] == 41


def test_module_imports_no_mlflow_at_top_level():
    code = ("import sys, mlflow_analyzer.corpus; "
            "print('mlflow' in sys.modules or 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"


def _normalized(tracking_uri, experiment_name):
    import mlflow

    with corpus_mod._use_tracking_uri(mlflow, tracking_uri):
        exp = mlflow.get_experiment_by_name(experiment_name)
        traces = mlflow.search_traces(locations=[exp.experiment_id], return_type="list",
                                      max_results=None)
    out = {}
    for trace in traces:
        d = trace.to_dict()
        text = json.dumps(d).replace(d["info"]["trace_id"], "TRACE")
        spans = sorted(d["data"]["spans"], key=lambda s: (s["start_time_unix_nano"], s["name"]))
        for i, s in enumerate(spans):
            text = text.replace(s["span_id"], f"S{i}").replace(s["trace_id"], "OTEL")
            text = text.replace(base64.b64decode(s["span_id"]).hex(), f"S{i}")
        d = json.loads(text)
        d["info"]["tags"].pop("mlflow.artifactLocation", None)
        for a in d["info"].get("assessments", []):
            for key in ("assessment_id", "create_time", "last_update_time"):
                a.pop(key, None)
        d["info"]["assessments"] = sorted(d["info"].get("assessments", []),
                                          key=lambda a: a["assessment_name"])
        d["data"]["spans"].sort(key=lambda s: (s["start_time_unix_nano"], s["name"]))
        out[d["info"]["request_time"]] = d
    return out


def _same(a, b, path="") -> list:
    """Differences, treating JSON-in-strings as JSON and floats as equal to 1e-9."""
    if isinstance(a, str) and isinstance(b, str) and a != b:
        try:
            return _same(json.loads(a), json.loads(b), path)
        except ValueError:
            return [path]
    if isinstance(a, float) or isinstance(b, float):
        numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
        ok = numbers and math.isclose(a, b, rel_tol=1e-9)
        return [] if ok else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path} keys"]
        return [d for k in a for d in _same(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path} len"]
        return [d for x, y in zip(a, b) for d in _same(x, y, f"{path}[]")]
    return [] if a == b else [path]


def test_bulk_writer_matches_fluent_writer(tmp_path):
    end = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
    uris = {}
    for writer in ("fluent", "bulk"):
        uri = f"sqlite:///{tmp_path / writer}.db"
        manifest = build_corpus(uri, "equivalence", n_traces=40, seed=3, end_time=end, writer=writer)
        assert manifest["writer"] == writer and manifest["trace_count"] == 40
        uris[writer] = uri
    fluent = _normalized(uris["fluent"], "equivalence")
    bulk = _normalized(uris["bulk"], "equivalence")
    assert fluent.keys() == bulk.keys() and len(fluent) == 40
    diffs = [d for key in fluent for d in _same(fluent[key], bulk[key])]
    assert diffs == []
    # Token and cost columns of the SQL store agree too.
    import sqlite3

    cols = ("name, type, status, start_time_unix_nano, end_time_unix_nano, input_cost, "
            "output_cost, total_cost, model_name, model_provider")
    rows = {w: sorted(sqlite3.connect(tmp_path / f"{w}.db").execute(f"SELECT {cols} FROM spans"),
                      key=lambda r: (r[3], r[0])) for w in uris}
    assert rows["fluent"] == rows["bulk"]
    tcols = ("timestamp_ms, execution_time_ms, status, request_preview, response_preview, "
             "trace_name, session_id, input_tokens, output_tokens, total_tokens, total_cost")
    trows = {w: sorted(sqlite3.connect(tmp_path / f"{w}.db").execute(f"SELECT {tcols} FROM trace_info"))
             for w in uris}
    for f, b in zip(trows["fluent"], trows["bulk"]):
        assert f[:-1] == b[:-1] and math.isclose(f[-1], b[-1], rel_tol=1e-9)
