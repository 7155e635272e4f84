"""LLM spans without token usage or model (detectors/llm_usage.py): successful calls only; a
failed call has no usage to record (and `health` does not call it one)."""

from __future__ import annotations

import pytest

from builders import findings_for


class APIError(Exception):
    pass


def spec(i):
    kids = [{"name": "stream_answer", "type": "LLM", "ms": (10, 300), "inputs": {"q": i},
             "attributes": {"mlflow.llm.model": "gpt-4o"}},  # streamed: no usage recorded
            {"name": "plan", "type": "CHAT_MODEL", "ms": (300, 500), "inputs": {"q": i},
             "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}}]  # no model name
    if i % 2:
        kids.append({"name": "judge", "type": "LLM", "ms": (500, 600), "inputs": {"q": i},
                     "attributes": {"mlflow.llm.model": "gpt-4o"}, "error": (APIError, "500 Internal Server Error")})
    return {"name": "agent", "type": "AGENT", "ms": (0, 700), "inputs": {"i": i}, "children": kids}


@pytest.fixture(scope="module")
def built(trace_store):
    traces = trace_store.build("llm_usage", [spec(i) for i in range(6)])
    return traces, findings_for(traces)


def test_successful_calls_without_usage_or_model(built):
    _, result = built
    by = {(f["kind"], f["span_names"][0]): f for f in result["findings"] if f["detector"] == "llm_usage"}
    assert set(by) == {("llm_without_usage", "stream_answer"), ("llm_without_model", "plan")}
    assert by[("llm_without_usage", "stream_answer")]["metrics"]["spans_without_usage"] == 6


def test_health_does_not_count_failed_calls_as_missing_usage(built):
    from mlflow_analyzer.health import trace_health

    traces, _ = built
    failed = next(t for t in traces if any(s.name == "judge" for s in t.spans))
    h = trace_health(failed)
    assert h["llm_spans_without_usage"] == ["stream_answer"]
    assert "1 successful LLM span(s) without token usage" in h["problems"]
