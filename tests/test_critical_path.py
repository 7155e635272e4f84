"""The critical path: walking back from each span's end through the children that gate it,
on traces written with MLflow's tracing API for the purpose."""

from __future__ import annotations

import pytest

from builders import open_store, read_traces, write_trace


def leaf(name, start, end, kind="TOOL"):
    return {"name": name, "type": kind, "ms": (start, end), "inputs": {"x": name}}


SHAPES = {
    # a tool chain run one after another: all of it is critical
    "sequential": {"name": "agent", "type": "AGENT", "ms": (0, 1000), "children": [
        leaf("a", 10, 300), leaf("b", 305, 700), leaf("c", 705, 990)]},
    # three calls at once: only the longest gates the end
    "parallel": {"name": "agent", "type": "AGENT", "ms": (0, 1000), "children": [
        leaf("a", 10, 900), leaf("b", 20, 300), leaf("c", 30, 500)]},
    # two at once, then a third: the third and the longer of the two
    "fan_then_chain": {"name": "agent", "type": "AGENT", "ms": (0, 1000), "children": [
        leaf("a", 0, 400), leaf("b", 0, 200), leaf("c", 410, 900)]},
    # nested: a chain inside a parallel branch
    "nested": {"name": "agent", "type": "AGENT", "ms": (0, 2000), "children": [
        {"name": "branch", "type": "CHAIN", "ms": (0, 1900), "children": [
            leaf("x", 10, 900), leaf("y", 900, 1800)]},
        leaf("side", 0, 1200),
        leaf("early", 1905, 1950)]},
}


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    uri, exp = open_store(tmp_path_factory.mktemp("critical") / "c.db")
    ids = {name: write_trace(spec) for name, spec in SHAPES.items()}
    by_id = {t.trace_id: t for t in read_traces(uri, exp)}
    return {name: by_id[tid] for name, tid in ids.items()}


def names(trace):
    return [s.name for s in trace.critical_path()]


def test_a_sequential_chain_is_entirely_critical(traces):
    assert names(traces["sequential"]) == ["agent", "c", "b", "a"]


def test_parallel_siblings_only_the_longest(traces):
    assert names(traces["parallel"]) == ["agent", "a"]


def test_fan_out_then_chain(traces):
    assert names(traces["fan_then_chain"]) == ["agent", "c", "a"]


def test_nested_chain_inside_a_branch(traces):
    # early (last to end) gates the end; before it, branch; inside branch, y then x;
    # side ran alongside branch and ended first
    assert names(traces["nested"]) == ["agent", "early", "branch", "y", "x"]
