"""Independent calls run one after another (detectors/parallelism.py): reported only with no
data dependence and no control dependence, at a confidence that says how much was seen."""

from __future__ import annotations

import pytest

from builders import findings_for

N = 40


def chain(parent, calls, i, *, start=0):
    """calls: [(name, inputs, outputs or None, failed)] run one after another, 200 ms each."""
    kids, t = [], start + 2
    for name, inputs, outputs, failed in calls:
        kid = {"name": name, "type": "TOOL", "ms": (t, t + 200), "inputs": inputs}
        if failed:
            kid["error"] = (RuntimeError, f"{name} failed")
        elif outputs is not None:
            kid["outputs"] = outputs
        kids.append(kid)
        t += 202
    return {"name": parent, "type": "CHAIN", "ms": (start, t + 2), "inputs": {"i": i}, "children": kids}


def spec(i):
    parts = []
    # control dependence: fetch_orders never runs when fetch_user fails (8 of 40)
    user_fails = i % 5 == 0
    calls = [("fetch_user", {"uid": i}, {"ok": True}, user_fails)]
    if not user_fails:
        calls.append(("fetch_orders", {"uid": i}, {"n": 3}, False))
    parts.append(chain("lookup", calls, i))
    # presence follows the first call's result: second only half of the time
    route = [("classify", {"q": i}, {"label": "a" if i % 2 else "b"}, False)]
    if i % 2:
        route.append(("escalate", {"q": i}, {"done": True}, False))
    parts.append(chain("route", route, i, start=1000))
    # independent, failures seen: the later calls still run after an earlier one failed
    parts.append(chain("enrich", [
        ("get_weather", {"city": f"c{i}"}, {"t": 20}, i % 7 == 0),
        ("get_news", {"city": f"c{i}"}, {"n": 2}, i % 9 == 0),
        ("get_events", {"city": f"c{i}"}, {"e": 1}, False)], i, start=2000))
    # independent, never failing: not seen whether they need each other
    parts.append(chain("gather", [("get_a", {"k": i}, {"a": 1}, False), ("get_b", {"k": i}, {"b": 2}, False)],
                       i, start=3000))
    # data dependence: the second takes the first's output
    parts.append(chain("book", [("hold", {"k": i}, {"booking_id": f"BK-{i:06d}"}, False),
                                ("pay", {"booking": f"BK-{i:06d}"}, {"paid": True}, False)], i, start=4000))
    return {"name": "agent", "type": "AGENT", "ms": (0, 5000), "inputs": {"i": i}, "children": parts}


@pytest.fixture(scope="module")
def result(trace_store):
    return findings_for(trace_store.build("parallelism", [spec(i) for i in range(N)]))


def seq(result):
    return {f["span_names"][-1]: f for f in result["findings"] if f["kind"] == "sequential_independent_calls"}


def test_a_call_that_needs_the_previous_to_succeed_is_not_independent(result):
    assert "lookup" not in seq(result)


def test_a_call_whose_presence_follows_the_previous_result_is_not_independent(result):
    assert "route" not in seq(result)


def test_data_dependence_is_not_independent(result):
    assert "book" not in seq(result)


def test_independence_seen_through_failures_is_confident(result):
    f = seq(result)["enrich"]
    assert f["span_names"] == ["get_weather", "get_news", "get_events", "enrich"]
    assert f["metrics"]["failures_seen"] == ["get_weather", "get_news"] and not f["metrics"]["never_failed"]
    assert f["confidence"] >= 90
    assert "still ran after" in f["issue"]


def test_independence_never_tested_by_a_failure_says_so(result):
    f = seq(result)["gather"]
    assert f["confidence"] <= 80
    assert f["metrics"]["never_failed"] == ["get_a"]
    assert "was not seen" in f["issue"]
    assert f["metrics"]["expected_saving_ms_mean"] == pytest.approx(200, abs=5)
