"""Traces without a session id while others carry one (detectors/sessions.py)."""

from __future__ import annotations

import pytest

from builders import findings_for


def spec(i):
    return {"name": "chat" if i % 4 else "webhook", "type": "AGENT", "ms": (0, 100), "inputs": {"i": i}}


@pytest.fixture(scope="module")
def traces(trace_store):
    return trace_store.build("sessions", [spec(i) for i in range(12)],
                             metadata=lambda i: {"mlflow.trace.session": f"s-{i // 3}"} if i % 4 else None)


def test_traces_without_a_session(traces):
    [f] = [f for f in findings_for(traces)["findings"] if f["kind"] == "missing_session"]
    assert f["metrics"]["traces_without_session"] == 3 and f["span_names"] == ["webhook"]


def test_no_sessions_at_all_is_skipped_not_clean(traces):
    only = [t for t in traces if not t.session_id]
    [c] = [c for c in findings_for(only)["checks"] if c["id"] == "sessions"]
    assert c["status"] == "skipped"
