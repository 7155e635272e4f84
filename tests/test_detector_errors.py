"""Errors at their root cause (detectors/errors.py), on LangChain-shaped traces: the retry
wrapper (CHAIN) and the model call (CHAT_MODEL) are both named `ChatOpenAI` and stay apart,
and a provider's error body keeps its own type and message in the pattern and the text."""

from __future__ import annotations

import pytest

from builders import findings_for

OPENAI_429 = ("Error code: 429 - {'error': {'message': 'Rate limit reached for gpt-4o-mini in organization "
              "org-abc on requests per min (RPM): Limit 3, Used 3, Requested 1.', 'type': 'requests', "
              "'param': None, 'code': 'rate_limit_exceeded'}}")
ANTHROPIC_529 = "Error code: 529 - {'type': 'error', 'error': {'type': 'overloaded_error', 'message': 'Overloaded'}}"


class RateLimitError(Exception):
    pass


class OverloadedError(Exception):
    pass


def attempt(start, ok, i):
    span = {"name": "ChatOpenAI", "type": "CHAT_MODEL", "ms": (start, start + 300),
            "inputs": {"messages": [{"role": "user", "content": f"q{i}"}]},
            "attributes": {"mlflow.llm.model": "gpt-4o-mini", "mlflow.llm.provider": "openai"}}
    if ok:
        span["usage"] = {"input_tokens": 50, "output_tokens": 20, "total_tokens": 70}
        span["outputs"] = {"content": "fine"}
    else:
        span["error"] = (RateLimitError, OPENAI_429)
    return span


def spec(i):
    # 10 traces: the wrapper retries once after a 429 (2 model calls); 10: one call succeeds;
    # 4: both attempts fail and the wrapper fails too (the error reaches the root)
    fails = 2 if i >= 20 else 1 if i < 10 else 0
    calls = [attempt(10 + 320 * k, k >= fails, i) for k in range(max(fails, 1) if fails == 2 else fails + 1)]
    wrapper = {"name": "ChatOpenAI", "type": "CHAIN", "ms": (5, 15 + 320 * len(calls)), "inputs": {"q": i},
               "children": calls}
    if fails == 2:
        wrapper["error"] = (RateLimitError, OPENAI_429)
    kids = [wrapper]
    if i % 4 == 0:
        kids.append({"name": "ChatAnthropic", "type": "CHAT_MODEL", "ms": (1000, 1100), "inputs": {"q": i},
                     "error": (OverloadedError, ANTHROPIC_529)})
    root = {"name": "RunnableSequence", "type": "CHAIN", "ms": (0, 1200), "inputs": {"q": i}, "children": kids}
    if fails == 2:
        root["error"] = (RateLimitError, OPENAI_429)
    return root


@pytest.fixture(scope="module")
def result(trace_store):
    return findings_for(trace_store.build("errors", [spec(i) for i in range(24)]))


def test_same_name_spans_of_different_types_are_separate_rows(result):
    rows = {(s["name"], s["type"]): s for s in result["stats"]["spans"]}
    wrapper, model = rows[("ChatOpenAI", "CHAIN")], rows[("ChatOpenAI", "CHAT_MODEL")]
    assert (wrapper["count"], wrapper["error_count"]) == (24, 4)
    assert (model["count"], model["error_count"]) == (10 * 2 + 10 + 4 * 2, 10 + 8)
    assert model["tokens_total"] == 20 * 70 and wrapper["tokens_total"] == 0


def test_root_cause_is_the_model_call_with_the_providers_message(result):
    errors = {(e["span_name"], e["span_type"]): e for e in result["stats"]["errors"]}
    e = errors[("ChatOpenAI", "CHAT_MODEL")]
    assert e["count"] == 18 and ("ChatOpenAI", "CHAIN") not in errors
    assert e["message_pattern"].startswith("Error code: 429 - requests: Rate limit reached for gpt-4o-mini")
    assert "<s>" not in e["message_pattern"]


def test_errors_that_were_all_retry_attempts_are_the_retry_findings(result):
    assert not [f for f in result["findings"] if f["kind"] == "rate_limit"]
    [f] = [f for f in result["findings"] if f["category"] == "retry_issue"]
    assert f["spans"] == [{"name": "ChatOpenAI", "type": "CHAT_MODEL"}] and "`ChatOpenAI` (CHAT_MODEL)" in f["title"]
    m = f["metrics"]
    assert (m["exhausted"], m["recovered"], m["failed_traces"]) == (4, 10, 4)
    assert "Rate limit reached for gpt-4o-mini" in f["issue"] and "{'error'" not in f["issue"]


def test_anthropic_overloaded_body_is_read(result):
    [f] = [f for f in result["findings"] if f["span_names"][0] == "ChatAnthropic"]
    assert f["kind"] == "upstream_unavailable"
    assert f["metrics"]["message_pattern"] == "Error code: 529 - overloaded_error: Overloaded"
    assert f["metrics"]["count"] == 6 and "6 failures" in f["issue"] and "caught the error" in f["impact"]
