"""Tail latency (detectors/tail_latency.py): a retriever that is many times slower than usual
in a small share of its calls, seconds each time, is reported with how often, how slow, the
time in the tail and its traces; an always-slow span and fast noise are not tails."""

from __future__ import annotations

import pytest

from builders import findings_for

SLOW = {3, 11, 19, 27, 35, 43}  # 6 of 48 calls (12.5%)


def spec(i):
    kb = 2500 + 250 * (i % 5) if i in SLOW else 80 + (i * 7) % 40  # 2.5-3.5 s vs 80-120 ms
    noisy = 100 + (i * 37) % 200  # 100-300 ms, no tail
    small = 400 if i in SLOW else 50  # 8x slower but not even half a second: not worth a finding
    t = 5
    kids = []
    for name, kind, ms in (("search_docs", "RETRIEVER", kb), ("rank", "TOOL", noisy), ("cache_get", "TOOL", small)):
        kids.append({"name": name, "type": kind, "ms": (t, t + ms), "inputs": {"q": i}})
        t += ms + 2
    return {"name": "agent", "type": "AGENT", "ms": (0, t + 10), "inputs": {"q": i}, "children": kids}


@pytest.fixture(scope="module")
def built(trace_store):
    traces = trace_store.build("tail", [spec(i) for i in range(48)])
    slow_ids = {traces[i].trace_id for i in SLOW}
    return findings_for(traces), slow_ids


def test_the_bimodal_retriever_is_a_tail(built):
    result, slow_ids = built
    [f] = [f for f in result["findings"] if f["kind"] == "tail_latency"]
    m = f["metrics"]
    assert f["span_names"] == ["search_docs"] and f["category"] == "latency_issue"
    assert m["tail_calls"] == 6 and m["calls"] == 48 and m["tail_share"] == 0.125
    assert 80 <= m["median_ms"] <= 120
    assert m["tail_median_ms"] == pytest.approx(3125, abs=1)  # of 2.5, 2.75, 3, 3.25, 3.25, 3.5 s
    assert m["tail_to_median_ratio"] > 20
    assert m["tail_ms_total"] == pytest.approx(sum(2500 + 250 * (i % 5) for i in SLOW), abs=2)
    assert f["trace_ids"] and set(f["trace_ids"]) <= slow_ids
    assert m["critical_tail_calls"] == 6  # sequential: each slow call delayed its request
    assert "12.5% of calls" in f["title"]
    assert {t["name"] for t in m["thresholds"]} >= {"calls", "tail median ms", "tail share"}


def test_the_tail_is_not_called_a_slow_operation(built):
    result, _ = built
    assert not [f for f in result["findings"] if f["kind"] == "slow_span" and "search_docs" in f["span_names"]]


def test_noise_and_small_tails_are_not_reported(built):
    result, _ = built
    names = {n for f in result["findings"] if f["kind"] in ("slow_span", "tail_latency") for n in f["span_names"]}
    assert names == {"search_docs"}


def test_checks_say_what_was_looked_at(built):
    result, _ = built
    checks = {c["id"]: c for c in result["checks"]}
    assert checks["tail_latency"]["status"] == "found"
    assert checks["latency"]["status"] == "clean"
