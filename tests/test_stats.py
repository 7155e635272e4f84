"""The stats contract, checked against figures computed independently here from
MLflow's own Python API (search_traces + numpy), on the realistic corpus."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from builders import cli_ok as run

from mlflow_analyzer.stats import message_pattern, percentile




@pytest.fixture(scope="module")
def truth(corpus):
    """Independent figures from mlflow.search_traces."""
    import mlflow

    mlflow.set_tracking_uri(corpus["tracking_uri"])
    traces = mlflow.search_traces(locations=[corpus["experiment_id"]], return_type="list", max_results=None)
    lat = np.array([t.info.execution_duration for t in traces], dtype=float)
    ok = np.array([t.info.execution_duration for t in traces if t.info.state.value == "OK"], dtype=float)
    tokens = defaultdict(int)
    spans = defaultdict(lambda: {"durs": [], "errors": 0, "tokens": 0})
    for t in traces:
        usage = t.info.token_usage or {}
        for k in ("input_tokens", "output_tokens", "total_tokens"):
            tokens[k] += usage.get(k, 0) or 0
        for s in t.data.spans:
            d = spans[s.name]
            d["durs"].append((s.end_time_ns - s.start_time_ns) / 1e6)
            d["errors"] += s.status.status_code.value == "ERROR"
            u = s.get_attribute("mlflow.chat.tokenUsage")
            if u:
                d["tokens"] += u.get("total_tokens", 0)
    return {
        "n": len(traces),
        "errors": sum(t.info.state.value == "ERROR" for t in traces),
        "lat": lat,
        "ok": ok,
        "tokens": tokens,
        "spans": spans,
        "start": min(t.info.request_time for t in traces),
    }


@pytest.fixture(scope="module")
def stats(corpus):
    return json.loads(run("stats", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"], "--format", "json"))


def test_counts_and_rates(stats, truth, corpus):
    assert stats["trace_count"] == truth["n"] == corpus["trace_count"]
    assert stats["error_count"] == truth["errors"]
    assert stats["error_rate"] == pytest.approx(truth["errors"] / truth["n"])


@pytest.mark.parametrize("key, q", [("p50", 50), ("p95", 95), ("p99", 99)])
def test_latency_percentiles_match_numpy(stats, truth, key, q):
    assert stats["latency_ms"][key] == pytest.approx(np.percentile(truth["lat"], q), abs=1e-3)
    assert stats["ok_latency_ms"][key] == pytest.approx(np.percentile(truth["ok"], q), abs=1e-3)


def test_latency_mean_max(stats, truth):
    assert stats["latency_ms"]["mean"] == pytest.approx(truth["lat"].mean(), abs=1e-3)
    assert stats["latency_ms"]["max"] == pytest.approx(truth["lat"].max())
    assert stats["ok_latency_ms"]["max"] == pytest.approx(truth["ok"].max())


def test_tokens_and_cost(stats, truth):
    assert stats["tokens"] == {
        "input": truth["tokens"]["input_tokens"],
        "output": truth["tokens"]["output_tokens"],
        "total": truth["tokens"]["total_tokens"],
    }
    assert stats["cost_usd"] is not None and stats["cost_usd"] > 0
    assert stats["cost_source"] in ("recorded", "mixed", "estimated")


def test_per_span_figures(stats, truth):
    got = {s["name"]: s for s in stats["spans"]}
    assert set(got) == set(truth["spans"])
    for name, d in truth["spans"].items():
        s = got[name]
        assert s["count"] == len(d["durs"]), name
        assert s["error_count"] == d["errors"], name
        assert s["p50_ms"] == pytest.approx(np.percentile(d["durs"], 50), abs=1e-3), name
        assert s["p95_ms"] == pytest.approx(np.percentile(d["durs"], 95), abs=1e-3), name
        assert s["tokens_total"] == d["tokens"], name
        for key in ("name", "type", "count", "error_count", "p50_ms", "p95_ms", "self_ms_total", "tokens_total", "cost_usd"):
            assert key in s
    custom = {s["type"] for s in stats["spans"]}
    assert {"MEMORY", "CLASSIFIER"} & custom, "custom span types are kept as they are"


def test_time_range_and_errors_shape(stats, truth):
    assert stats["time_range"]["start"].startswith(
        __import__("datetime").datetime.utcfromtimestamp(truth["start"] / 1000).strftime("%Y-%m-%dT%H:%M")
    )
    assert stats["errors"], "the corpus has errors"
    for e in stats["errors"]:
        assert {"span_name", "exception_type", "message_pattern", "count", "trace_count", "failure_mode"} <= set(e)
        assert e["failure_mode"] in ("fast", "slow")
    modes = {e["failure_mode"] for e in stats["errors"]}
    assert modes == {"fast", "slow"}, "the corpus has both timeouts and fast failures"


def test_group_by(corpus):
    s = json.loads(run("stats", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"], "--group-by", "tag.environment"))
    assert {g["key"] for g in s["groups"]} >= {"prod"}
    assert sum(g["trace_count"] for g in s["groups"]) == s["trace_count"]
    s = json.loads(run("stats", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"], "--group-by", "model"))
    for g in s["groups"]:
        if g["key"] != "(none)":
            assert all(m["model"] == g["key"] for m in g["models"])


def test_filter_and_text(corpus):
    s = json.loads(run("stats", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"], "--filter", "trace.status = 'ERROR'"))
    assert s["error_rate"] == 1.0
    text = run("stats", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"], "--format", "text")
    assert "latency ms (all)" in text and "errors (root causes)" in text


def test_percentile_matches_numpy_on_edge_cases():
    for vals in ([1.0], [1.0, 2.0], [5, 1, 9, 3], list(range(101))):
        for q in (0, 50, 95, 99, 100):
            assert percentile(sorted(vals), q) == pytest.approx(np.percentile(vals, q))


def test_message_pattern_groups_similar_errors():
    a = message_pattern("Error code: 429 - rate_limit_exceeded for req_abc123456 after 3 tries")
    b = message_pattern("Error code: 429 - rate_limit_exceeded for req_zzz999999 after 5 tries")
    assert a == b and "429" in a


def test_light_read_gives_the_same_stats(corpus):
    """stats reads SQLite without parsing most span JSON; the figures must not change."""
    from mlflow_analyzer.sources import SqlStoreSource, StoreQuery
    from mlflow_analyzer.stats import compute_stats

    src = SqlStoreSource(StoreQuery(corpus["tracking_uri"], experiment_id=corpus["experiment_id"]))
    assert compute_stats(src.iter_traces(light=True)) == compute_stats(src.iter_traces())
    grouped = [compute_stats(src.iter_traces(light=light), group_by="model") for light in (True, False)]
    assert grouped[0] == grouped[1]


def _close(a, b, path="stats"):
    import math

    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)


@pytest.mark.parametrize("group_by", [None, "tag.environment"])
def test_parallel_pass_gives_the_same_stats(corpus, monkeypatch, group_by):
    """Large SQLite experiments are read by forked workers and merged: same figures
    (sums may differ in the last bits of floating point)."""
    from mlflow_analyzer import stats as stats_module
    from mlflow_analyzer.sources import SqlStoreSource, StoreQuery

    src = SqlStoreSource(StoreQuery(corpus["tracking_uri"], experiment_id=corpus["experiment_id"]))
    serial = stats_module.compute_stats(src.iter_traces(), group_by=group_by)
    monkeypatch.setattr(stats_module, "PARALLEL_MIN_TRACES", 0)
    parallel = stats_module.accumulate(src, group_by=group_by, workers=3).result()
    _close(serial, parallel)
