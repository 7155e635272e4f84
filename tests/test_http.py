"""The HTTP path against a real `mlflow server` on 127.0.0.1, fed by an OpenTelemetry
client's OTLP/JSON export carrying GenAI and OpenInference attributes, plus MLflow's own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from builders import cli as run
from builders import write_trace


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("server")
    port = _free_port()
    env = dict(os.environ, MLFLOW_DISABLE_AGENT_HINT="1", MLFLOW_MODEL_CATALOG_URI="")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{d}/server.db",
         "--default-artifact-root", str(d / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=open(d / "server.log", "w"), env=env,
        start_new_session=True,  # its uvicorn workers and job runners go down with it
    )

    def stop():
        import signal

        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300  # a new store's migrations take minutes on a loaded machine
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                stop()
                raise RuntimeError((d / "server.log").read_text()[-2000:])
            time.sleep(0.5)
    else:
        stop()
        raise RuntimeError("mlflow server did not start")
    yield {"url": url, "db": f"sqlite:///{d}/server.db"}
    stop()


def _attr(k, v):
    if isinstance(v, int):
        return {"key": k, "value": {"intValue": str(v)}}
    return {"key": k, "value": {"stringValue": v}}


def _otlp(trace_hex, spans):
    return {"resourceSpans": [{"resource": {"attributes": [_attr("service.name", "otel-agent")]},
                               "scopeSpans": [{"scope": {"name": "tests"}, "spans": spans}]}]}


def _span(trace_hex, span_hex, parent, name, start_ms, end_ms, attrs, error=None):
    base = 1_790_000_000_000_000_000
    d = {"traceId": trace_hex, "spanId": span_hex, "name": name, "kind": 1,
         "startTimeUnixNano": str(base + start_ms * 1_000_000), "endTimeUnixNano": str(base + end_ms * 1_000_000),
         "attributes": [_attr(k, v) for k, v in attrs.items()], "status": {"code": 1}}
    if parent:
        d["parentSpanId"] = parent
    if error:
        d["status"] = {"code": 2, "message": error}
        d["events"] = [{"name": "exception", "timeUnixNano": str(base + end_ms * 1_000_000),
                        "attributes": [_attr("exception.type", error.split(":")[0]),
                                       _attr("exception.message", error.split(": ", 1)[1])]}]
    return d


@pytest.fixture(scope="module")
def populated(server):
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(server["url"])
    exp = client.create_experiment("otel")
    genai = _otlp("11" * 16, [
        _span("11" * 16, "a1" * 8, None, "invoke_agent travel", 0, 2000, {"gen_ai.operation.name": "invoke_agent"}),
        _span("11" * 16, "a2" * 8, "a1" * 8, "chat claude", 10, 900, {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.system": "anthropic", "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 80}),
        _span("11" * 16, "a3" * 8, "a1" * 8, "execute_tool search", 950, 1900, {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
            error="TimeoutError: search timed out"),
    ])
    oi = _otlp("22" * 16, [
        _span("22" * 16, "b1" * 8, None, "RAG chain", 0, 1500, {"openinference.span.kind": "CHAIN"}),
        _span("22" * 16, "b2" * 8, "b1" * 8, "ChatOpenAI", 100, 1400, {
            "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini", "llm.provider": "openai",
            "llm.token_count.prompt": 300, "llm.token_count.completion": 40, "input.value": '{"q": "hi"}'}),
    ])
    for payload in (genai, oi):
        req = urllib.request.Request(
            server["url"] + "/v1/traces", data=json.dumps(payload).encode(), method="POST",
            headers={"Content-Type": "application/json", "x-mlflow-experiment-id": exp})
        urllib.request.urlopen(req, timeout=30).read()
    mlflow.set_tracking_uri(server["url"])
    mlflow.set_experiment(experiment_id=exp)
    native = write_trace({"name": "agent", "type": "AGENT", "ms": (0, 500), "inputs": {"q": 1}, "children": [
        {"name": "llm", "type": "LLM", "ms": (10, 400), "attributes": {"mlflow.llm.model": "gpt-4o"},
         "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}}]})
    deadline = time.time() + 30
    while time.time() < deadline and len(client.search_traces(locations=[exp], include_spans=False)) < 3:
        time.sleep(0.5)
    return {**server, "exp": exp, "native": native}




def test_stats_over_http_reads_all_conventions(populated):
    r = run("stats", "--tracking-uri", populated["url"], "--experiment-id", populated["exp"])
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["trace_count"] == 3
    spans = {x["name"]: x for x in s["spans"]}
    assert spans["chat claude"]["type"] == "CHAT_MODEL" and spans["chat claude"]["tokens_total"] == 1280
    assert spans["execute_tool search"]["type"] == "TOOL" and spans["execute_tool search"]["error_count"] == 1
    assert spans["ChatOpenAI"]["type"] == "LLM" and spans["ChatOpenAI"]["tokens_total"] == 340
    assert spans["llm"]["tokens_total"] == 15
    assert {e["exception_type"] for e in s["errors"]} == {"TimeoutError"}
    assert s["tokens"]["total"] == 1280 + 340 + 15
    assert s["conventions"].get("gen_ai") or s["conventions"].get("mlflow")


def test_same_figures_over_http_and_sqlite(populated):
    a = json.loads(run("stats", "--tracking-uri", populated["url"], "--experiment-id", populated["exp"]).stdout)
    b = json.loads(run("stats", "--tracking-uri", populated["db"], "--experiment-id", populated["exp"]).stdout)
    for key in ("trace_count", "error_count", "latency_ms", "tokens", "spans", "errors"):
        assert a[key] == b[key], key


def test_tree_and_health_over_http(populated):
    r = run("tree", "--tracking-uri", populated["url"], "--trace-id", populated["native"])
    assert r.returncode == 0 and "llm [LLM]" in r.stdout
    r = run("health", "--tracking-uri", populated["url"], "--trace-id", "tr-00000000000000000000000000000000")
    assert r.returncode == 1 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_paging_over_http(populated, monkeypatch):
    from mlflow_analyzer import sources

    monkeypatch.setattr(sources, "API_PAGE", 1)  # one trace per page: paging must still see all
    src = sources.ApiSource(sources.StoreQuery(populated["url"], experiment_id=populated["exp"]))
    assert len({t.trace_id for t in src.iter_traces()}) == 3
    src = sources.ApiSource(sources.StoreQuery(populated["url"], experiment_id=populated["exp"], max_traces=2))
    assert len(list(src.iter_traces())) == 2


def test_light_sqlite_read_matches_full_on_otel_spans(populated):
    from mlflow_analyzer.sources import SqlStoreSource, StoreQuery
    from mlflow_analyzer.stats import compute_stats

    src = SqlStoreSource(StoreQuery(populated["db"], experiment_id=populated["exp"]))
    assert compute_stats(src.iter_traces(light=True)) == compute_stats(src.iter_traces())


def test_rest_paging_and_parallel_span_batches(populated, monkeypatch):
    """The REST read pages trace records and fetches spans in parallel batches: with one
    trace per page and per batch it still sees every trace once, in order."""
    from mlflow_analyzer import remote
    from mlflow_analyzer.sources import StoreQuery, open_store

    monkeypatch.setattr(remote, "SEARCH_PAGE", 1)
    monkeypatch.setattr(remote, "SPAN_BATCH", 1)
    src = open_store(StoreQuery(populated["url"], experiment_id=populated["exp"]))
    assert isinstance(src, remote.HttpSource)
    traces = list(src.iter_traces())
    assert len({t.trace_id for t in traces}) == 3 and all(t.spans for t in traces)
    infos = [t.trace_id for t in src.iter_trace_infos()]
    assert infos == [t.trace_id for t in traces]
    capped = open_store(StoreQuery(populated["url"], experiment_id=populated["exp"], max_traces=2))
    assert len(list(capped.iter_traces())) == 2


def test_sampled_stats_over_http_say_so_and_keep_trace_level_figures_exact(populated):
    """Above --sample traces, spans are read for a sample (plus every trace that ended in
    ERROR): trace-level figures and span counts stay exact; the output lists what is
    estimated and from how many traces."""
    exact = json.loads(run("stats", "--tracking-uri", populated["db"], "--experiment-id", populated["exp"]).stdout)
    r = run("stats", "--tracking-uri", populated["url"], "--experiment-id", populated["exp"], "--sample", "1")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["sample"]["traces"] == 3 and s["sample"]["traces_with_spans"] == 1
    assert "spans[].p50_ms" in s["sample"]["estimated"] and s["sample"]["errors_complete"] is True
    for key in ("trace_count", "error_count", "latency_ms", "ok_latency_ms", "tokens", "time_range"):
        assert s[key] == exact[key], key
    by_name = {x["name"]: x for x in exact["spans"]}
    for row in s["spans"]:  # counts per span name from the server's metrics endpoint
        assert row["estimated"] is True
        assert (row["count"], row["error_count"]) == (by_name[row["name"]]["count"], by_name[row["name"]]["error_count"])
    text = run("stats", "--tracking-uri", populated["url"], "--experiment-id", populated["exp"], "--sample", "1",
               "--format", "text").stdout
    assert "estimated from a sample: spans read for 1 of 3 traces" in text
    unsampled = json.loads(run("stats", "--tracking-uri", populated["url"], "--experiment-id", populated["exp"],
                               "--sample", "0").stdout)
    assert "sample" not in unsampled and unsampled["spans"] == exact["spans"]


def test_sampled_findings_over_http(populated):
    r = run("findings", "--tracking-uri", populated["url"], "--experiment-id", populated["exp"], "--sample", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["sample"]["traces_with_spans"] == 1 and out["stats"]["trace_count"] == 3
    full = json.loads(run("findings", "--tracking-uri", populated["url"], "--experiment-id", populated["exp"]).stdout)
    assert "sample" not in full and full["stats"]["trace_count"] == 3


def test_unknown_experiment_over_http_is_one_line(populated):
    r = run("stats", "--tracking-uri", populated["url"], "--experiment-id", "987654")
    assert r.returncode != 0 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = run("stats", "--tracking-uri", populated["url"], "--experiment-name", "no-such-experiment")
    assert r.returncode != 0 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_review_citations_checked_against_the_server(populated):
    """validate's trace check over HTTP asks the server for trace records only."""
    from mlflow_analyzer.validate import store_trace_checker

    fake = "tr-" + "0" * 32
    assert store_trace_checker(populated["url"])([populated["native"], fake]) == {populated["native"]}
