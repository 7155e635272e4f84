"""Every trace shape a user has: MLflow 2.x (schema v2) JSON as MLflow 2.14 and 2.22 wrote
it (fixtures made by tests/fixtures/mlflow2/make_traces.py with those versions), and
OpenTelemetry GenAI / OpenInference keys read from the raw span attributes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlflow_analyzer import cli as cli_module
from mlflow_analyzer.normalize import span_from_dict, span_kind, trace_from_dict

V2 = Path(__file__).parent / "fixtures" / "mlflow2"
V2_VERSIONS = ["2.14.3", "2.22.5"]


def _run(capsys, *argv):
    code = cli_module.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_mlflow2_trace_json(version):
    raw = json.loads((V2 / f"trace-{version}.json").read_text())
    assert raw["info"]["request_metadata"]["mlflow.trace_schema.version"] == "2"  # really v2
    t = trace_from_dict(raw)
    assert t.trace_id == raw["info"]["request_id"]
    assert t.state == "OK" and t.duration_ms == raw["info"]["execution_time_ms"]
    assert t.request_time_ms == raw["info"]["timestamp_ms"]
    assert t.experiment_id == raw["info"]["experiment_id"]
    assert [s.name for s in t.walk()] == ["agent", "plan", "get_weather"]
    assert [s.depth for s in t.walk()] == [0, 1, 1]
    assert not t.orphans and len(t.spans[0].span_id) == 16
    plan = next(s for s in t.spans if s.name == "plan")
    assert plan.span_type == "CHAT_MODEL" and plan.model == "gpt-4o-mini"
    assert (plan.input_tokens, plan.output_tokens, plan.total_tokens) == (120, 30, 150)
    tool = next(s for s in t.spans if s.name == "get_weather")
    assert tool.status == "ERROR" and tool.error_type == "TimeoutError"
    assert tool.error_message == "weather API timed out for Paris"
    assert tool.start_ns == next(s for s in raw["data"]["spans"] if s["name"] == "get_weather")["start_time"]
    assert t.total_tokens == 150 and t.root.inputs == {"question": "weather in Paris?"}
    if version == "2.22.5":  # 2.14 had no session; 2.x kept it as a tag
        assert (t.session_id, t.user_id) == ("s-v2", "u-v2")


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_mlflow2_search_json_through_the_commands(version, capsys):
    path = str(V2 / f"search-{version}.json")
    code, out, err = _run(capsys, "stats", path)
    assert code == 0, err
    stats = json.loads(out)
    assert stats["trace_count"] == 2 and stats["error_count"] == 1 and stats["skipped"] == 0
    assert {e["exception_type"] for e in stats["errors"]} == {"TimeoutError", "ValueError"}
    assert stats["tokens"]["total"] == 150
    for argv in (["health"], ["tree"], ["findings"], ["extract", "--recipe", "errors"]):
        trace_id = json.loads((V2 / f"trace-{version}.json").read_text())["info"]["request_id"]
        extra = ["--trace-id", trace_id] if argv[0] in ("health", "tree") else []
        code, out, err = _run(capsys, *argv, path, *extra)
        assert code == 0, (argv, err)


def _otel_span(attrs, *, sid="00000000000000a1", parent=None, status=None, events=None, name="op", kind=None):
    d = {
        "trace_id": "AAAAAAAAAAAAAAAAAAAAAA==",
        "span_id": sid,
        "parent_span_id": parent,
        "name": name,
        "start_time_unix_nano": 1_790_000_000_000_000_000,
        "end_time_unix_nano": 1_790_000_001_000_000_000,
        "status": status or {"code": "STATUS_CODE_OK", "message": ""},
        "attributes": attrs,
        "events": events or [],
    }
    if kind is not None:
        d["kind"] = kind
    return d


def _trace(spans, metadata=None):
    return {
        "info": {"trace_id": "tr-otel", "request_time": "2026-09-21T10:00:00.5Z", "state": "OK",
                 "trace_metadata": metadata or {}, "tags": {}},
        "data": {"spans": spans},
    }


@pytest.mark.parametrize("encode", [False, True], ids=["plain", "json-encoded"])
def test_opentelemetry_session_user_tool_and_error_type(encode):
    def v(x):
        return json.dumps(x) if encode else x

    root = _otel_span({"gen_ai.operation.name": v("invoke_agent"), "gen_ai.conversation.id": v("conv-7"),
                       "enduser.id": v("alice")}, name="agent")
    tool = _otel_span(
        {"gen_ai.operation.name": v("execute_tool"), "gen_ai.tool.name": v("search"), "error.type": v("429")},
        sid="00000000000000a2", parent="00000000000000a1", name="execute_tool search",
        status={"code": "STATUS_CODE_ERROR", "message": "Error code: 429 - {'type': 'error'}"},
    )
    chat = _otel_span(
        {"gen_ai.operation.name": v("chat"), "gen_ai.request.model": v("gpt-4o"),
         "gen_ai.provider.name": v("openai"), "gen_ai.usage.input_tokens": v(100),
         "gen_ai.usage.output_tokens": v(20), "gen_ai.usage.cache_read.input_tokens": v(40)},
        sid="00000000000000a3", parent="00000000000000a1", name="chat gpt-4o",
    )
    t = trace_from_dict(_trace([root, tool, chat]))
    assert (t.session_id, t.user_id) == ("conv-7", "alice")  # from spans: no metadata keys
    s_tool = next(s for s in t.spans if s.name.startswith("execute_tool"))
    assert s_tool.span_type == "TOOL" and s_tool.tool_name == "search"
    assert s_tool.error_type == "429"  # error.type wins over a generic type from the message
    assert s_tool.error_message.startswith("Error code: 429")
    s_chat = next(s for s in t.spans if s.name.startswith("chat"))
    assert s_chat.span_type == "CHAT_MODEL" and (s_chat.model, s_chat.provider) == ("gpt-4o", "openai")
    assert (s_chat.input_tokens, s_chat.output_tokens, s_chat.cache_read_tokens) == (100, 20, 40)
    assert s_chat.convention == "gen_ai" and t.total_tokens == 120


def test_openinference_session_user_and_tool():
    root = _otel_span({"openinference.span.kind": "AGENT", "session.id": "sess-9", "user.id": "bob"})
    tool = _otel_span({"openinference.span.kind": "TOOL", "tool.name": "lookup",
                       "llm.token_count.prompt": 3}, sid="00000000000000a2", parent="00000000000000a1")
    t = trace_from_dict(_trace([root, tool]))
    assert (t.session_id, t.user_id) == ("sess-9", "bob")
    assert t.spans[1].tool_name == "lookup" and t.spans[1].span_type == "TOOL"


def test_metadata_wins_over_span_attributes():
    root = _otel_span({"session.id": "from-span", "user.id": "span-user"})
    t = trace_from_dict(_trace([root], metadata={"mlflow.trace.session": "from-meta"}))
    assert (t.session_id, t.user_id) == ("from-meta", "span-user")


def test_error_type_precedence():
    exc_event = [{"name": "exception", "attributes": {"exception.type": "openai.RateLimitError",
                                                      "exception.message": "slow down"}}]
    s = span_from_dict(_otel_span({"error.type": "429"}, events=exc_event,
                                  status={"code": "STATUS_CODE_ERROR", "message": "RateLimitError: slow down"}))
    assert (s.error_type, s.error_message) == ("openai.RateLimitError", "slow down")
    s = span_from_dict(_otel_span({}, status={"code": "STATUS_CODE_ERROR", "message": "KeyError: 'x'"}))
    assert (s.error_type, s.error_message) == ("KeyError", "'x'")
    s = span_from_dict(_otel_span({"error.type": "_OTHER"}, status={"code": "STATUS_CODE_ERROR", "message": "boom"}))
    assert (s.error_type, s.error_message) == (None, "boom")


@pytest.mark.parametrize("value, kind", [
    ("SPAN_KIND_CLIENT", "CLIENT"), ("SPAN_KIND_INTERNAL", "INTERNAL"), ("SpanKind.SERVER", "SERVER"),
    (3, "CLIENT"), ("client", "CLIENT"), ("SPAN_KIND_UNSPECIFIED", None), ("weird", None), (None, None),
    ([1], None), (True, None),
])
def test_span_kind(value, kind):
    assert span_kind(value) == kind
    assert span_from_dict(_otel_span({}, kind=value)).kind == kind
