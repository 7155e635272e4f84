"""Retries (detectors/retries.py): sequences of the same call after failures, exhausted or
recovered, with numbers that say what they count."""

from __future__ import annotations

import pytest

from builders import findings_for


class ServiceUnavailable(Exception):
    pass


def spec(i):
    exhausted = i >= 8
    kids, t = [], 10
    for k, gap in enumerate((200, 400, 0)):
        last = k == 2
        kid = {"name": "fetch_rates", "type": "TOOL", "ms": (t, t + 100), "inputs": {"pair": "EURUSD"}}
        if not last or exhausted:
            kid["error"] = (ServiceUnavailable, "503 Service Unavailable")
        else:
            kid["outputs"] = {"rate": 1.08}
        kids.append(kid)
        t += 100 + gap
    # two lookups of the same tool that both succeed: not a retry
    kids += [{"name": "lookup", "type": "TOOL", "ms": (t + 5, t + 30), "inputs": {"k": 1}, "outputs": {"v": 1}},
             {"name": "lookup", "type": "TOOL", "ms": (t + 31, t + 60), "inputs": {"k": 2}, "outputs": {"v": 2}}]
    root = {"name": "agent", "type": "AGENT", "ms": (0, t + 70), "inputs": {"i": i}, "children": kids}
    if exhausted:
        root["error"] = (ServiceUnavailable, "503 Service Unavailable")
    return root


@pytest.fixture(scope="module")
def result(trace_store):
    return findings_for(trace_store.build("retries", [spec(i) for i in range(12)]))


def test_retry_sequences_counted_and_worded(result):
    [f] = [f for f in result["findings"] if f["category"] == "retry_issue"]
    m = f["metrics"]
    assert f["kind"] == "retries_exhausted" and f["span_names"] == ["fetch_rates"]
    assert (m["retry_sequences"], m["traces"], m["exhausted"], m["recovered"]) == (12, 12, 4, 8)
    assert m["mean_attempts"] == 3.0 and m["failed_attempts"] == 8 * 2 + 4 * 3
    assert m["failed_traces"] == 4
    assert m["backoff"]["kind"] == "exponential"
    assert "12 retry sequences in 12 traces, 3.0 attempts per sequence on average (28 failed attempts)" in f["issue"]
    assert "time(s)" not in f["issue"] and "sequence(s)" not in f["issue"]
    assert f["title"] == "Retries of `fetch_rates` exhausted in 4 of 12 retry sequences"


def test_repeated_successful_calls_are_not_retries(result):
    assert not [f for f in result["findings"] if "lookup" in f["span_names"] and f["category"] == "retry_issue"]
