"""Orphan spans (detectors/orphans.py): a span whose parent never reached the store."""

from __future__ import annotations

import pytest

from builders import findings_for


def spec(i, orphan):
    worker = {"name": "worker", "type": "CHAIN", "ms": (10, 400), "children": [
        {"name": "step", "type": "TOOL", "ms": (20, 100), "inputs": {"i": i}}]}
    if orphan:
        worker["never_ended"] = True  # e.g. lost in a thread: never exported
    return {"name": "agent", "type": "AGENT", "ms": (0, 500), "inputs": {"i": i}, "children": [worker]}


@pytest.fixture(scope="module")
def traces(trace_store):
    return trace_store.build("orphans", [spec(i, i < 3) for i in range(6)])


def test_orphans_are_reported(traces):
    result = findings_for(traces)
    [f] = [f for f in result["findings"] if f["kind"] == "orphan_spans"]
    assert f["metrics"]["traces"] == 3 and f["span_names"] == ["step"]
    assert f["confirm"]["now"] == 3 == result["stats"]["orphan_spans"]


def test_clean_says_so(traces):
    result = findings_for(traces[3:])
    [c] = [c for c in result["checks"] if c["id"] == "orphans"]
    assert c["status"] == "clean" and c["summary"].startswith("no orphan spans")
