"""Slow spans (detectors/latency.py) on traces built for the purpose: a tool that runs in
sequence and is slow in every call is on the critical path in every call, and the saving is
the time it adds to the request, not "cutting its p95 to its p50"."""

from __future__ import annotations

import pytest

from builders import findings_for


def sequential(i):
    d = 1200 + 100 * i  # always slow: 1.2 s .. 4.1 s
    tool_end = 310 + d
    return {"name": "agent", "type": "AGENT", "ms": (0, tool_end + 400), "inputs": {"q": i}, "children": [
        {"name": "plan", "type": "LLM", "ms": (5, 305), "inputs": {"q": i}},
        {"name": "check_policy", "type": "TOOL", "ms": (310, tool_end), "inputs": {"q": i}},
        {"name": "answer", "type": "LLM", "ms": (tool_end + 5, tool_end + 395), "inputs": {"q": i}},
    ]}


def alongside(i):
    # a slow lookup that always runs next to a longer model call: never on the critical path
    return {"name": "agent", "type": "AGENT", "ms": (0, 6000), "inputs": {"q": i}, "children": [
        {"name": "draft", "type": "LLM", "ms": (5, 5990), "inputs": {"q": i}},
        {"name": "prefetch", "type": "TOOL", "ms": (10, 2000 + 20 * i), "inputs": {"q": i}},
    ]}


@pytest.fixture(scope="module")
def result(trace_store):
    traces = trace_store.build("latency", [sequential(i) for i in range(30)] + [alongside(i) for i in range(30)])
    return findings_for(traces)


def slow(result, name):
    return [f for f in result["findings"] if f["kind"] == "slow_span" and f["span_names"] == [name]]


def test_a_sequential_always_slow_tool_is_critical_every_time(result):
    [f] = slow(result, "check_policy")
    m = f["metrics"]
    assert m["critical_path_share"] == 1.0
    assert "critical path in 100.0% of its calls" in f["issue"]
    assert m["slow_calls"] == 30 and m["slow_call_share"] == 1.0 and "every one of" in f["issue"]
    # the time it adds to each request: its mean duration (1.2 .. 4.1 s)
    assert m["expected_saving_ms_per_trace"] == pytest.approx(2650, abs=2)
    assert "p50 would save" not in f["impact"]
    assert m["span_type"] == "TOOL" and f["spans"] == [{"name": "check_policy", "type": "TOOL"}]
    assert {t["name"] for t in m["thresholds"]} == {"self p95 ms", "share of trace latency"}


def test_share_of_latency_is_between_what_the_traces_say(result):
    [f] = slow(result, "check_policy")
    # 1.2 s of 1.91 s up to 4.1 s of 4.81 s: 63% .. 85% of each trace
    assert 0.6 < f["metrics"]["share_of_trace_latency"] < 0.86


def test_a_slow_call_off_the_critical_path_saves_nothing(result):
    [f] = slow(result, "prefetch")
    assert f["metrics"]["critical_path_share"] == 0.0
    assert f["metrics"]["expected_saving_ms_per_trace"] == 0.0
    assert "never on the critical path" in f["impact"] and "adds to the request" not in f["issue"]
    assert f["priority"] == "P3"


def test_fast_spans_are_not_reported(result):
    names = {n for f in result["findings"] if f["category"] == "latency_issue" for n in f["span_names"]}
    assert not names & {"plan", "answer", "draft", "agent"}
