"""Sources: trace files (every shape, and broken ones) and SQLite stores read directly."""

from __future__ import annotations

import json
import os

import pytest

from builders import cli, open_store, write_trace
from mlflow_analyzer.errors import AnalyzerError, InputError, NotFoundError, SourceError, UsageError
from mlflow_analyzer.sources import FileSource, SqlStoreSource, StoreQuery, checked, parse_since




def _spec(i, fail=False):
    node = {"name": "agent", "type": "AGENT", "ms": (0, 100 + i * 10), "inputs": {"i": i}, "children": [
        {"name": "lookup", "type": "TOOL", "ms": (5, 50), "inputs": {"i": i}},
        {"name": "answer", "type": "CHAT_MODEL", "ms": (50, 90), "inputs": {"i": i},
         "attributes": {"mlflow.llm.model": "gpt-4o-mini", "mlflow.llm.provider": "openai"},
         "usage": {"input_tokens": 100 + i, "output_tokens": 10, "total_tokens": 110 + i}},
    ]}
    if fail:
        node["children"][0]["error"] = (ValueError, f"bad input {i}")
        node["status"] = "ERROR"
    return node


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import mlflow

    uri, exp = open_store(tmp_path_factory.mktemp("src") / "s.db")
    ids = []
    for i in range(12):
        meta = {"mlflow.trace.session": f"s-{i % 3}", "mlflow.trace.user": "u-1"} if i % 2 else None
        ids.append(write_trace(_spec(i, fail=i % 4 == 0), t0=1_790_000_000_000_000_000 + i * 60_000_000_000, metadata=meta))
    raw = [mlflow.get_trace(t).to_dict() for t in ids]
    return {"uri": uri, "exp": exp, "ids": ids, "raw": raw}


def test_sqlite_reads_every_trace_identically_to_mlflow(store):
    src = SqlStoreSource(StoreQuery(store["uri"], experiment_id=store["exp"]))
    got = {r["info"]["trace_id"]: r for r in src.iter_raw()}
    assert set(got) == set(store["ids"])
    for want in store["raw"]:
        mine = got[want["info"]["trace_id"]]
        assert mine["data"]["spans"] == sorted(want["data"]["spans"], key=lambda s: s["start_time_unix_nano"]) or \
            sorted(mine["data"]["spans"], key=lambda s: s["span_id"]) == sorted(want["data"]["spans"], key=lambda s: s["span_id"])
        for key in ("state", "execution_duration_ms", "request_time", "request_preview", "trace_metadata", "tags"):
            assert mine["info"][key] == want["info"][key], key
    sessions = {t.session_id for t in src.iter_traces()}
    assert sessions == {None, "s-0", "s-1", "s-2"}  # promoted to trace_info.session_id by MLflow


def test_filter_uses_mlflow_grammar_and_max_traces(store):
    q = StoreQuery(store["uri"], experiment_id=store["exp"], filter_string="trace.status = 'ERROR'")
    errs = list(SqlStoreSource(q).iter_traces())
    assert len(errs) == 3 and all(t.state == "ERROR" for t in errs)
    q = StoreQuery(store["uri"], experiment_id=store["exp"], max_traces=5, order_by=["timestamp_ms ASC"])
    ts = [t.request_time_ms for t in SqlStoreSource(q).iter_traces()]
    assert len(ts) == 5 and ts == sorted(ts)


def test_since_and_order(store):
    newest = max(t["info"]["request_time"] for t in store["raw"])
    q = StoreQuery(store["uri"], experiment_id=store["exp"], since_ms=parse_since(newest))
    assert [t.trace_id for t in SqlStoreSource(q).iter_traces()] == [store["ids"][-1]]
    q = StoreQuery(store["uri"], experiment_id=store["exp"], order_by=["execution_time_ms DESC"])
    durs = [t.duration_ms for t in SqlStoreSource(q).iter_traces()]
    assert durs == sorted(durs, reverse=True)


def test_experiment_by_name_and_unknowns(store):
    src = SqlStoreSource(StoreQuery(store["uri"], experiment_name="tests"))
    assert src.experiment_id == store["exp"]
    with pytest.raises(NotFoundError):
        SqlStoreSource(StoreQuery(store["uri"], experiment_id="999"))
    with pytest.raises(NotFoundError):
        SqlStoreSource(StoreQuery(store["uri"], experiment_name="nope"))
    with pytest.raises(NotFoundError):
        SqlStoreSource(StoreQuery(store["uri"], experiment_id=store["exp"])).get_raw("tr-deadbeef")
    with pytest.raises(UsageError):
        list(SqlStoreSource(StoreQuery(store["uri"], experiment_id=store["exp"], order_by=["bogus"])).iter_raw())


def test_store_is_opened_read_only(store, tmp_path):

    before = os.stat(store["uri"].split(":///", 1)[1]).st_mtime_ns
    list(SqlStoreSource(StoreQuery(store["uri"], experiment_id=store["exp"])).iter_traces())
    assert os.stat(store["uri"].split(":///", 1)[1]).st_mtime_ns == before
    with pytest.raises(SourceError, match="no SQLite tracking store"):
        SqlStoreSource(StoreQuery(f"sqlite:///{tmp_path}/missing.db", experiment_id="0"))
    assert not (tmp_path / "missing.db").exists()  # we did not create one


def test_files_every_shape(store, tmp_path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps(store["raw"][0]))
    search = tmp_path / "search.json"
    search.write_text(json.dumps({"traces": store["raw"][:3]}))
    jsonl = tmp_path / "many.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in store["raw"]) + "\n")
    assert len(list(FileSource([str(one)]).iter_traces())) == 1
    assert len(list(FileSource([str(search)]).iter_traces())) == 3
    assert len(list(FileSource([str(jsonl)]).iter_traces())) == 12
    assert len(list(FileSource([str(tmp_path)]).iter_traces())) == 16  # a folder of them


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"info": {"trace_id": "tr-1"', "malformed or truncated"),
        ("", "empty"),
        ('{"hello": 1}', "not MLflow trace JSON"),
        ('{"traces": []}', "no traces"),
        ('[{"data": {}}]', "info: missing"),
    ],
)
def test_bad_files_fail_with_one_line(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(AnalyzerError, match=match):
        list(checked(FileSource([str(p)])))
    r = cli("stats", str(p))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and match.split()[0] in r.stderr


def test_truncated_jsonl_line_is_named_and_skipped(store, tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(store["raw"][0]) + "\n" + json.dumps(store["raw"][1])[:200] + "\n")
    source = FileSource([str(p)])
    assert len(list(source.iter_traces())) == 1  # the rest goes on
    assert source.skipped == 1 and "t.jsonl:2" in source.skip_reasons[0]


def test_cli_errors_are_one_line(store, tmp_path):
    cases = [
        (["stats", "--tracking-uri", store["uri"], "--experiment-id", "424242"], 1, "not found"),
        (["tree", "--tracking-uri", store["uri"], "--trace-id", "tr-00"], 1, "not found"),
        (["stats", "--tracking-uri", "bogus://x", "--experiment-id", "1"], 2, "unsupported tracking URI"),
        (["stats", "--tracking-uri", "http://127.0.0.1:9", "--experiment-id", "1"], 1, "cannot reach"),
        (["stats", str(tmp_path / "nothing.json")], 1, "no such file"),
        (["stats", "--tracking-uri", store["uri"], "--experiment-id", store["exp"], "--filter", "info.state = 'ERROR'"], 1, "filter"),
        (["stats", "--tracking-uri", store["uri"], "--experiment-id", store["exp"], "--filter", "trace.status = 'IN_PROGRESS'"], 1, "no traces match"),
        (["stats", "--tracking-uri", store["uri"], "--experiment-id", store["exp"], "--since", "yesterday"], 2, "--since"),
        (["stats"], 2, "no traces given"),
        (["stats", "--tracking-uri", "mysql://u@127.0.0.1:1/x", "--experiment-id", "1"], 1, "driver"),
    ]
    for args, code, text in cases:
        r = cli(*args)
        assert r.returncode == code, (args, r.stderr)
        assert text in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr


def test_parse_since():
    from datetime import datetime, timezone

    now = datetime(2026, 1, 2, tzinfo=timezone.utc)
    assert parse_since("24h", now) == int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
    assert parse_since("2026-01-01", now) == parse_since("24h", now)
    with pytest.raises(UsageError):
        parse_since("soon", now)
