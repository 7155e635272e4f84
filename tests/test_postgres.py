"""The SQL path against a real PostgreSQL server started by the test (skipped, saying why,
where no PostgreSQL server binaries are installed)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from builders import cli_ok, write_trace


def _pg_bin() -> str | None:
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(versions[-1]) if versions else None


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    bindir = _pg_bin()
    if not bindir:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
    pytest.importorskip("psycopg2", reason="psycopg2-binary (the dev extra) is not installed")
    # Under /tmp itself: pytest's own temp folders are private to root, and the server
    # cannot run as root.
    d = Path(tempfile.mkdtemp(prefix="mlflow-analyzer-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(d, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = d / "data"
    subprocess.run([*as_user, f"{bindir}/initdb", "-D", str(data), "-U", "postgres", "-A", "trust"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", str(data), "-l", str(d / "log"), "-w", "-o",
                    f"-k {d} -p {port} -h 127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def store(pg, tmp_path_factory):
    import mlflow
    from test_sources import _spec

    mlflow.set_tracking_uri(pg)
    exp = mlflow.set_experiment("pg").experiment_id
    ids = [
        write_trace(_spec(i, fail=i % 4 == 0), t0=1_790_000_000_000_000_000 + i * 60_000_000_000,
                    metadata={"mlflow.trace.session": f"s-{i % 2}"})
        for i in range(8)
    ]
    files = tmp_path_factory.mktemp("pgfiles") / "traces.jsonl"
    files.write_text("\n".join(json.dumps(mlflow.get_trace(t).to_dict()) for t in ids) + "\n")
    return {"uri": pg, "exp": exp, "ids": ids, "file": str(files)}


def test_stats_over_postgres_match_mlflow_own_json(store):
    direct = json.loads(cli_ok("stats", "--tracking-uri", store["uri"], "--experiment-id", store["exp"]))
    via_files = json.loads(cli_ok("stats", store["file"]))
    assert direct["trace_count"] == 8 and direct["error_count"] == 2
    for key in ("latency_ms", "tokens", "spans", "sessions", "cost_usd"):
        assert direct[key] == via_files[key], key

    def errors(s):  # examples follow reading order: newest first from a store
        return [{k: v for k, v in e.items() if not k.startswith("example")} for e in s["errors"]]

    assert errors(direct) == errors(via_files)


def test_filter_and_findings_over_postgres(store):
    errs = json.loads(cli_ok("stats", "--tracking-uri", store["uri"], "--experiment-id", store["exp"],
                             "--filter", "trace.status = 'ERROR'"))
    assert errs["trace_count"] == 2
    out = json.loads(cli_ok("findings", "--tracking-uri", store["uri"], "--experiment-id", store["exp"]))
    assert any(f["category"] == "error_pattern" and f["span_names"][0] == "lookup" for f in out["findings"])


def test_light_read_and_parallel_pass_over_postgres(store, monkeypatch):
    """PostgreSQL gets SQLite's fast path: the light read (token usage extracted by the
    database, JSON parsed only where the columns cannot say everything) and the forked
    parallel pass; both give the figures of the full read."""
    from mlflow_analyzer import stats as stats_module
    from mlflow_analyzer.sources import SqlStoreSource, StoreQuery

    src = SqlStoreSource(StoreQuery(tracking_uri=store["uri"], experiment_id=store["exp"]))
    assert src.supports_light_read
    full = stats_module.compute_stats(src.iter_traces())
    assert stats_module.compute_stats(src.iter_traces(light=True)) == full
    monkeypatch.setattr(stats_module, "PARALLEL_MIN_TRACES", 0)
    parallel = stats_module.accumulate(src, workers=2).result()
    for key in ("trace_count", "error_count", "latency_ms", "tokens", "spans", "errors"):
        assert parallel[key] == full[key], key


def test_session_list_over_postgres_matches_files(store):
    """session --list on PostgreSQL: one GROUP BY over trace rows, the same list as from the
    same traces' files."""
    direct = json.loads(cli_ok("session", "--tracking-uri", store["uri"], "--experiment-id", store["exp"], "--list"))
    via_files = json.loads(cli_ok("session", store["file"], "--list"))
    assert direct == via_files and direct["sessions"] == 2
