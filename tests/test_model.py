"""The normalized model, built from traces MLflow itself wrote (ids, types, tokens, errors,
assessments, tree, self time, gaps, critical path, orphans)."""

from __future__ import annotations

import json

import pytest

from builders import T0, open_store, write_trace
from mlflow_analyzer.normalize import decode_value, span_from_dict, to_hex_id, trace_from_dict

SPEC = {
    "name": "agent",
    "type": "AGENT",
    "ms": (0, 3000),
    "inputs": {"q": "weather in Paris?"},
    "outputs": {"a": "sunny"},
    "children": [
        {
            "name": "plan",
            "type": "CHAT_MODEL",
            "ms": (10, 810),
            "inputs": {"messages": [{"role": "user", "content": "weather in Paris?"}]},
            "attributes": {"mlflow.llm.model": "claude-sonnet-4-5", "mlflow.llm.provider": "anthropic"},
            "usage": {"input_tokens": 1000, "output_tokens": 50, "total_tokens": 1050},
            "outputs": {"content": "call get_weather"},
        },
        {
            "name": "get_weather",
            "type": "TOOL",
            "ms": (900, 1400),
            "inputs": {"city": "Paris"},
            "error": (TimeoutError, "weather API timed out after 0.5s"),
        },
        {"name": "memory", "type": "MEMORY", "ms": (1500, 1600), "inputs": {"k": 1}},
    ],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import mlflow
    from mlflow.entities import AssessmentError, AssessmentSource

    uri, exp = open_store(tmp_path_factory.mktemp("model") / "m.db")
    tid = write_trace(SPEC, metadata={"mlflow.trace.session": "s-1", "mlflow.trace.user": "u-9"})
    judge = AssessmentSource(source_type="LLM_JUDGE", source_id="judge")
    mlflow.log_feedback(trace_id=tid, name="relevance", value=False, rationale="off topic", source=judge)
    raw = mlflow.get_trace(tid).to_dict()
    span_hex = next(s for s in raw["data"]["spans"] if s["name"] == "plan")["span_id"]
    mlflow.log_feedback(
        trace_id=tid,
        name="groundedness",
        error=AssessmentError(error_code="RATE_LIMIT", error_message="judge got 429"),
        source=judge,
        span_id=to_hex_id(span_hex),
    )
    return {"uri": uri, "exp": exp, "tid": tid, "raw": mlflow.get_trace(tid).to_dict()}


def test_raw_json_has_the_documented_traps(store):
    raw = store["raw"]
    span = raw["data"]["spans"][0]
    assert span["attributes"]["mlflow.spanType"] == '"AGENT"'  # JSON-encoded string
    assert span["span_id"].endswith("=")  # base64
    assert isinstance(raw["info"]["request_time"], str)


def test_trace_fields(store):
    t = trace_from_dict(store["raw"])
    assert t.trace_id == store["tid"]
    assert t.state == "OK"
    assert t.duration_ms == 3000
    assert t.session_id == "s-1" and t.user_id == "u-9"
    assert t.input_tokens == 1000 and t.output_tokens == 50 and t.total_tokens == 1050
    assert t.cost_usd is not None and t.cost_usd > 0  # MLflow priced the span itself
    assert t.experiment_id == store["exp"]
    assert abs(t.request_time_ms - T0 // 1_000_000) < 1000


def test_spans_types_tokens_errors(store):
    t = trace_from_dict(store["raw"])
    by = {s.name: s for s in t.spans}
    assert {s.span_type for s in t.spans} == {"AGENT", "CHAT_MODEL", "TOOL", "MEMORY"}  # custom kept
    plan = by["plan"]
    assert plan.model == "claude-sonnet-4-5" and plan.provider == "anthropic"
    assert (plan.input_tokens, plan.output_tokens, plan.total_tokens) == (1000, 50, 1050)
    assert plan.cost_usd and plan.is_llm and plan.convention == "mlflow"
    assert plan.inputs["messages"][0]["content"] == "weather in Paris?"
    tool = by["get_weather"]
    assert tool.status == "ERROR" and tool.error_type == "TimeoutError"
    assert "timed out" in tool.error_message
    assert [s.name for s in t.root_causes()] == ["get_weather"]
    assert all(len(s.span_id) == 16 for s in t.spans)
    assert by["plan"].parent_id == by["agent"].span_id


def test_tree_self_time_gaps_critical_path(store):
    t = trace_from_dict(store["raw"])
    root = t.root
    assert root.name == "agent" and root.depth == 0
    assert [c.name for c in root.children] == ["plan", "get_weather", "memory"]
    # children cover 800 + 500 + 100 ms of 3000
    assert root.self_ms == pytest.approx(1600, abs=1)
    gaps = [(b - root.start_ns) / 1e6 for b, _ in root.gaps_ns()]
    assert gaps == pytest.approx([0, 810, 1400, 1600], abs=1)
    # plan, get_weather and memory run one after another: the whole chain gates the end
    assert [s.name for s in t.critical_path()] == ["agent", "memory", "get_weather", "plan"]


def test_assessments_judge_error_is_not_a_trace_error(store):
    t = trace_from_dict(store["raw"])
    by = {a.name: a for a in t.assessments}
    assert by["relevance"].passed is False and by["relevance"].rationale == "off topic"
    g = by["groundedness"]
    assert g.is_judge_error and g.passed is None and g.error_code == "RATE_LIMIT"
    assert g.span_id == t.by_id[g.span_id].span_id  # hex id joins the span
    assert t.state == "OK"


def test_orphans_detected():
    raw = {
        "info": {"trace_id": "tr-1", "request_time": "2026-01-01T00:00:00Z", "state": "OK", "execution_duration_ms": 10},
        "data": {
            "spans": [
                {"span_id": "AAAAAAAAAAE=", "parent_span_id": None, "name": "root", "start_time_unix_nano": 0,
                 "end_time_unix_nano": 10_000_000, "status": {"code": "STATUS_CODE_OK"},
                 "attributes": {"mlflow.spanType": '"CHAIN"'}},
                {"span_id": "AAAAAAAAAAI=", "parent_span_id": "AAAAAAAAAAk=", "name": "lost", "start_time_unix_nano": 1,
                 "end_time_unix_nano": 5, "status": {"code": "STATUS_CODE_OK"}, "attributes": {}},
            ]
        },
    }
    t = trace_from_dict(raw)
    assert [s.name for s in t.orphans] == ["lost"]
    assert t.root.name == "root"
    assert t.assessments == []  # no 'assessments' key is fine


def test_genai_and_openinference_conventions():
    genai = span_from_dict({
        "span_id": "0000000000000001", "name": "chat gpt-4o", "start_time_unix_nano": 0, "end_time_unix_nano": 1,
        "status": {"code": "STATUS_CODE_ERROR", "message": "RateLimitError: Error code: 429"},
        "attributes": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                       "gen_ai.system": "openai", "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": "30"},
    })
    assert genai.span_type == "CHAT_MODEL" and genai.model == "gpt-4o" and genai.provider == "openai"
    assert (genai.input_tokens, genai.output_tokens, genai.total_tokens) == (120, 30, 150)
    assert genai.error_type == "RateLimitError" and genai.convention == "gen_ai"
    oi = span_from_dict({
        "span_id": "AAAAAAAAAAM=", "name": "ChatOpenAI", "start_time_unix_nano": 0, "end_time_unix_nano": 1,
        "status": {"code": "STATUS_CODE_OK"},
        "attributes": {"openinference.span.kind": '"LLM"', "llm.model_name": '"gpt-4o-mini"',
                       "llm.token_count.prompt": "200", "llm.token_count.completion": "20",
                       "llm.token_count.prompt_details.cache_read": "100",
                       "input.value": json.dumps(json.dumps({"q": 1}))},
    })
    assert oi.span_type == "LLM" and oi.model == "gpt-4o-mini" and oi.convention == "openinference"
    assert (oi.input_tokens, oi.output_tokens, oi.cache_read_tokens) == (200, 20, 100)
    assert oi.inputs == {"q": 1}


def test_id_and_value_decoding():
    assert to_hex_id("6kyDDmMvnmQ=") == "ea4c830e632f9e64"
    assert to_hex_id("ea4c830e632f9e64") == "ea4c830e632f9e64"
    assert to_hex_id("0xb4Ql9S4Co=") == "d316f8425f52e02a"  # base64 that happens to start with 0x
    assert to_hex_id("0xea4c830e632f9e64") == "ea4c830e632f9e64"
    assert decode_value('"TOOL"') == "TOOL"
    assert decode_value("plain text") == "plain text"
    assert decode_value('{"a": 1}') == {"a": 1}
