"""`session`: a conversation rebuilt as turns, and the list of sessions."""

from __future__ import annotations

import json

from builders import cli as run




def test_growing_session_rebuilt_in_order(corpus):
    p = next(p for p in corpus["problems"] if p["kind"] == "growing_prompt")
    sid = p["details"]["sessions"][0]
    r = run("session", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"], "--session-id", sid)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    times = [t["request_time"] for t in s["turns"]]
    assert times == sorted(times) and s["summary"]["turns"] == len(times) >= 3
    assert s["summary"]["prompt_grows_every_turn"] is True
    assert all(isinstance(t["user"], str) for t in s["turns"])
    text = run("session", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"],
               "--session-id", sid, "--format", "text").stdout
    assert "--- turn 1" in text and "grows every turn" in text


def test_list_and_unknown(corpus):
    r = run("session", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"], "--list")
    listing = json.loads(r.stdout)
    assert listing["sessions"] == corpus["sessions"] if isinstance(corpus["sessions"], int) else listing["sessions"] > 0
    assert listing["traces_without_session"] > 0
    r = run("session", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"], "--session-id", "nope")
    assert r.returncode == 1 and "no traces with session id" in r.stderr


def test_list_reads_trace_records_only_and_gives_the_same_list(corpus, tmp_path):
    """--list needs trace rows only: the store read skips spans, and the list equals the one
    built from whole traces (files holding the same traces)."""
    from mlflow_analyzer.sessions import list_sessions
    from mlflow_analyzer.sources import SqlStoreSource, StoreQuery

    src = SqlStoreSource(StoreQuery(corpus["tracking_uri"], experiment_id=corpus["experiment_id"]))
    infos = list(src.iter_trace_infos())
    assert infos and all(not t.spans for t in infos)
    assert list_sessions(infos, limit=1000) == list_sessions(src.iter_traces(), limit=1000)
    dump = tmp_path / "all.jsonl"
    r = run("fetch", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"],
            "--output", str(dump))
    assert r.returncode == 0, r.stderr
    from_store = json.loads(run("session", "--tracking-uri", corpus["tracking_uri"], "--experiment-id",
                                corpus["experiment_id"], "--list", "--limit", "1000").stdout)
    from_files = json.loads(run("session", str(dump), "--list", "--limit", "1000").stdout)
    assert from_store == from_files
