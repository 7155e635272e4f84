"""Malformed traces: checked once at the boundary, one clear line naming the file (and line),
the trace and the field; skipped and counted in multi-trace sources, fatal in single-trace
commands; never an internal error."""

from __future__ import annotations

import copy
import json

import pytest

from builders import cli, open_store, write_trace
from mlflow_analyzer import cli as cli_module
from mlflow_analyzer.errors import MalformedTrace
from mlflow_analyzer.normalize import MAX_DEPTH, trace_from_dict

SPEC = {
    "name": "agent",
    "type": "AGENT",
    "ms": (0, 900),
    "inputs": {"q": "hi"},
    "children": [
        {
            "name": "llm",
            "type": "CHAT_MODEL",
            "ms": (10, 500),
            "attributes": {"mlflow.llm.model": "gpt-4o-mini"},
            "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        },
        {"name": "tool", "type": "TOOL", "ms": (510, 800), "error": (ValueError, "bad input")},
    ],
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    import mlflow
    from mlflow.entities import AssessmentSource

    open_store(tmp_path_factory.mktemp("malformed") / "m.db")
    tid = write_trace(SPEC, metadata={"mlflow.trace.session": "s-1"})
    mlflow.log_feedback(trace_id=tid, name="ok", value=True,
                        source=AssessmentSource(source_type="HUMAN", source_id="me"))
    return mlflow.get_trace(tid).to_dict()


def _span(raw, name):
    return next(s for s in raw["data"]["spans"] if s["name"] == name)


def _set(path, value):
    """A mutation of the raw trace: path is a list of keys (span names select a span)."""
    def apply(raw):
        node = raw
        for key in path[:-1]:
            node = _span(raw, key[5:]) if isinstance(key, str) and key.startswith("span:") else node[key]
        node[path[-1]] = value
        return raw
    return apply


DEEP = [[]]
for _ in range(MAX_DEPTH + 5):
    DEEP = [DEEP]

# (mutation, the field the message must name, words of the problem)
CASES = [
    (_set(["info"], "x"), "info", "expected an object"),
    (_set(["data"], ["x"]), "data", "expected an object"),
    (_set(["data", "spans"], "x"), "data.spans", "expected a list"),
    (_set(["data", "spans"], [5]), "data.spans[0]", "expected a span object"),
    (_set(["info", "trace_id"], 5), "info.trace_id", "expected a string"),
    (_set(["info", "request_time"], "0000-01-01T00:00:00Z"), "info.request_time", "impossible time"),
    (_set(["info", "request_time"], "soon"), "info.request_time", "ISO-8601"),
    (_set(["info", "request_time"], -5), "info.request_time", "negative"),
    (_set(["info", "execution_duration_ms"], float("inf")), "info.execution_duration_ms", "expected a duration"),
    (_set(["info", "execution_duration_ms"], -1), "info.execution_duration_ms", "negative"),
    (_set(["info", "execution_duration_ms"], "long"), "info.execution_duration_ms", "expected a duration"),
    (_set(["info", "tags"], "x"), "info.tags", "expected an object"),
    (_set(["info", "tags", "k"], {"a": 1}), 'info.tags["k"]', "expected a string"),
    (_set(["info", "trace_metadata", "mlflow.trace.tokenUsage"], '{"input_tokens": -3}'),
     "tokenUsage'].input_tokens", "negative"),
    (_set(["info", "assessments"], [5]), "info.assessments[0]", "expected an assessment object"),
    (_set(["info", "assessments"], {"a": 1}), "info.assessments", "expected a list"),
    (_set(["span:llm", "start_time_unix_nano"], "soon"), "start_time_unix_nano", "expected a time"),
    (_set(["span:llm", "start_time_unix_nano"], -5), "start_time_unix_nano", "negative"),
    (_set(["span:llm", "start_time_unix_nano"], float("nan")), "start_time_unix_nano", "expected a time"),
    (_set(["span:llm", "end_time_unix_nano"], 10**30), "end_time_unix_nano", "out of range"),
    (_set(["span:llm", "end_time_unix_nano"], float("1e400")), "end_time_unix_nano", "expected a time"),
    (_set(["span:llm", "attributes"], "x"), "attributes", "expected an object"),
    (_set(["span:llm", "attributes", "mlflow.chat.tokenUsage"], '{"input_tokens": "many"}'),
     "input_tokens", "expected a token count"),
    (_set(["span:tool", "attributes", "gen_ai.usage.input_tokens"], [1]), "input_tokens", "a list"),
    (_set(["span:llm", "attributes", "mlflow.llm.cost"], '{"total_cost": -1}'), "total_cost", "negative"),
    (_set(["span:llm", "attributes", "deep"], DEEP), "attributes", "nested deeper"),
    (_set(["span:llm", "status"], {"code": ["x"]}), "status.code", "expected a status code"),
    (_set(["span:llm", "status"], [1, 2]), "status", "expected an object"),
    (_set(["span:llm", "span_id"], {"a": 1}), "span_id", "expected a string"),
    (_set(["span:llm", "parent_span_id"], [1]), "parent_span_id", "expected a string or null"),
    (_set(["span:llm", "name"], {"a": 1}), "name", "expected a string"),
    (_set(["span:tool", "events"], {"a": 1}), "events", "expected a list"),
    (_set(["span:tool", "events"], ["x"]), "events[0]", "expected an event object"),
    (_set(["span:tool", "events"], [{"name": "exception", "attributes": "x"}]), "events[0].attributes", "expected an object"),
]


@pytest.mark.parametrize("mutate, field, words", CASES, ids=[c[1] + ":" + c[2] for c in CASES])
def test_malformed_trace_names_the_field(base, mutate, field, words):
    raw = mutate(copy.deepcopy(base))
    with pytest.raises(MalformedTrace) as info:
        trace_from_dict(raw)
    message = str(info.value)
    assert field in message and words in message, message
    assert "\n" not in message
    if isinstance(raw.get("info"), dict) and isinstance(raw["info"].get("trace_id"), str):
        assert raw["info"]["trace_id"] in message  # names the trace


def test_values_that_are_odd_but_readable_are_read(base):
    raw = copy.deepcopy(base)
    llm = _span(raw, "llm")
    llm["attributes"]["deep_text"] = json.dumps(DEEP)  # JSON text nested deeper than kept: stays text
    llm["attributes"]["mlflow.spanInputs"] = "[" * 20000 + "]" * 20000  # past the parser's limit
    llm["attributes"]["mlflow.spanOutputs"] = json.dumps({"a": "\ud800"})  # a lone surrogate
    llm["attributes"]["nan"] = "NaN"
    llm["start_time_unix_nano"] = str(llm["start_time_unix_nano"])  # int64 as text (protobuf JSON)
    llm["kind"] = {"weird": True}  # 3.18's span kind, unreadable: ignored, never fatal
    raw["info"]["tags"]["n"] = 5  # numbers in string maps are written as text
    t = trace_from_dict(raw)
    span = next(s for s in t.spans if s.name == "llm")
    assert isinstance(span.to_dict()["attributes"]["deep_text"], str)
    assert isinstance(span.inputs, str)
    json.dumps(t.to_dict(), ensure_ascii=False).encode("utf-8")  # every string encodes
    assert span.kind is None and t.tags["n"] == "5"


def _write_jsonl(path, docs):
    path.write_text("\n".join(json.dumps(d) for d in docs) + "\n")


def _run(capsys, *argv):
    code = cli_module.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_multi_trace_source_skips_and_counts(base, tmp_path, capsys):
    bad = copy.deepcopy(base)
    bad["info"]["trace_id"] = "tr-bad"
    _span(bad, "llm")["start_time_unix_nano"] = "soon"
    good2 = copy.deepcopy(base)
    good2["info"]["trace_id"] = "tr-good2"
    p = tmp_path / "mixed.jsonl"
    _write_jsonl(p, [base, bad, good2])
    code, out, err = _run(capsys, "stats", str(p))
    assert code == 0, err
    stats = json.loads(out)
    assert stats["trace_count"] == 2 and stats["skipped"] == 1
    reason = stats["skipped_reasons"][0]
    assert f"{p}:2" in reason and "tr-bad" in reason and "data.spans[" in reason and "start_time_unix_nano" in reason
    assert err.count("\n") == 1 and "skipped 1 malformed" in err

    code, out, err = _run(capsys, "findings", str(p))
    result = json.loads(out)
    assert code == 0 and result["skipped"] == 1 and result["stats"]["skipped"] == 1
    code, out, err = _run(capsys, "session", "--list", str(p))
    assert code == 0 and json.loads(out)["skipped"] == 1
    code, out, err = _run(capsys, "extract", "--recipe", "summary", str(p))
    assert code == 0 and len(out.splitlines()) == 2 and "skipped 1" in err
    code, out, err = _run(capsys, "fetch", str(p), "--output", str(tmp_path / "out.jsonl"))
    assert code == 0 and json.loads(out)["skipped"] == 1 and json.loads(out)["traces"] == 2
    code, out, err = _run(capsys, "stats", str(p), "--format", "text")
    assert code == 0 and "skipped 1 malformed" in err


def test_unreadable_files_in_a_folder_are_skipped(base, tmp_path, capsys):
    (tmp_path / "good.json").write_text(json.dumps(base))
    (tmp_path / "latin1.json").write_bytes(b'{"info": {"trace_id": "tr-\xe9"}}')
    (tmp_path / "truncated.json").write_text(json.dumps(base)[:300])
    (tmp_path / "deep.json").write_text("[" * 50000 + "]" * 50000)
    (tmp_path / "other.json").write_text('{"hello": 1}')
    (tmp_path / "lines.jsonl").write_bytes(json.dumps(base).encode() + b"\n\xff\xfe\n{bad\n")
    code, out, err = _run(capsys, "stats", str(tmp_path))
    assert code == 0, err
    stats = json.loads(out)
    assert stats["trace_count"] == 2 and stats["skipped"] == 6
    reasons = " | ".join(stats["skipped_reasons"])
    assert "not UTF-8" in reasons and "malformed or truncated JSON" in reasons


def test_all_malformed_is_an_error_with_the_reason(base, tmp_path, capsys):
    bad = copy.deepcopy(base)
    bad["info"]["request_time"] = "0000-01-01T00:00:00Z"
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(bad))
    for argv in (["stats", str(p)], ["findings", str(p)], ["tree", str(p)], ["health", str(p)],
                 ["extract", "--recipe", "spans", str(p)], ["session", "--list", str(p)],
                 ["tree", str(p), "--trace-id", base["info"]["trace_id"]],
                 ["fetch", str(p), "--trace-id", base["info"]["trace_id"], "--output", str(tmp_path / "o.json")]):
        code, out, err = _run(capsys, *argv)
        assert code == 1, (argv, err)
        assert err.count("\n") == 1 and "internal error" not in err, (argv, err)
        assert str(p) in err and base["info"]["trace_id"] in err and "info.request_time" in err, (argv, err)
        assert "year 0 is out of range" in err


def test_single_trace_command_names_the_jsonl_line(base, tmp_path, capsys):
    bad = copy.deepcopy(base)
    bad["info"]["trace_id"] = "tr-bad"
    _span(bad, "tool")["events"] = "boom"
    p = tmp_path / "t.jsonl"
    _write_jsonl(p, [base, bad])
    code, out, err = _run(capsys, "health", str(p), "--trace-id", "tr-bad")
    assert code == 1 and f"{p}:2: trace tr-bad: data.spans[" in err and ".events: expected a list" in err
    code, out, err = _run(capsys, "health", str(p), "--trace-id", base["info"]["trace_id"])
    assert code == 0 and json.loads(out)["trace_id"] == base["info"]["trace_id"]


def test_a_subprocess_sees_one_line_and_no_traceback(base, tmp_path):
    bad = copy.deepcopy(base)
    bad["data"]["spans"] = "oops"
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(bad))
    r = cli("tree", str(p))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "data.spans: expected a list" in r.stderr
