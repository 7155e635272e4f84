"""Tags the team requires on every trace (detectors/required_tags.py)."""

from __future__ import annotations

import pytest

from builders import findings_for


@pytest.fixture(scope="module")
def traces(trace_store):
    spec = {"name": "agent", "type": "AGENT", "ms": (0, 100)}
    return trace_store.build("required_tags", [spec] * 4,
                             metadata=lambda i: {"mlflow.trace.user": "u-1", **({"team": "search"} if i else {})})


def test_missing_required_tags(traces):
    result = findings_for(traces, required_tags=["team", "user_id"])
    [f] = [f for f in result["findings"] if f["kind"] == "missing_tag"]
    assert f["metrics"]["tag"] == "team" and f["metrics"]["traces_missing"] == 1
    [c] = [c for c in result["checks"] if c["id"] == "required_tags"]
    assert c["status"] == "found"


def test_without_required_tags_the_check_is_skipped(traces):
    [c] = [c for c in findings_for(traces)["checks"] if c["id"] == "required_tags"]
    assert c["status"] == "skipped"
