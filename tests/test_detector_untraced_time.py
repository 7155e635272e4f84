"""Untraced time (detectors/untraced_time.py): a span whose children leave most of its time
uncovered, named with how much and how often."""

from __future__ import annotations

import pytest

from builders import findings_for


def spec(i):
    gap = 1500 if i % 2 else 0  # half the calls spend 1.5 s in work no span describes
    return {"name": "agent", "type": "AGENT", "ms": (0, 210 + gap), "inputs": {"i": i}, "children": [
        {"name": "build_context", "type": "CHAIN", "ms": (5, 205 + gap), "inputs": {"i": i}, "children": [
            {"name": "load_memory", "type": "MEMORY", "ms": (10, 200), "inputs": {"i": i}}]}]}


@pytest.fixture(scope="module")
def result(trace_store):
    return findings_for(trace_store.build("untraced", [spec(i) for i in range(10)]))


def test_untraced_time_is_reported_with_how_much_and_how_often(result):
    [f] = [f for f in result["findings"] if f["kind"] == "uninstrumented_time"]
    m = f["metrics"]
    assert f["span_names"] == ["build_context"] and f["category"] == "missing_instrumentation"
    assert (m["occurrences"], m["with_gap"]) == (10, 5)
    assert m["gap_p50_ms"] == pytest.approx(1510, abs=2)  # 5 ms before the child, 1,505 after
    fired = {t["name"]: t for t in m["thresholds"]}
    assert fired["untraced ms"]["threshold"] == 300.0 and fired["untraced share of duration"]["value"] > 0.85
    assert "In 5 of 10 occurrences" in f["issue"]
