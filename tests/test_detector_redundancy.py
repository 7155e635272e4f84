"""Duplicate calls (detectors/redundancy.py), on the shape LangChain's autolog writes: a
`RunnableSequence` (CHAIN) repeated with identical inputs, holding a `ChatOpenAI` retry
wrapper (CHAIN) around the `ChatOpenAI` model call (CHAT_MODEL) that spends the tokens. The
finding names the model call, counts the copies' tokens and cost, and counts wall time only
for copies that did not run at the same time as the call they repeat."""

from __future__ import annotations

import pytest

from builders import findings_for

USAGE = {"input_tokens": 60, "output_tokens": 42, "total_tokens": 102}
MODEL = {"mlflow.llm.model": "gpt-4o-mini", "mlflow.llm.provider": "openai"}


def sequence(start, i):
    msgs = {"messages": [{"role": "user", "content": f"summarize ticket {i}"}]}
    return {"name": "RunnableSequence", "type": "CHAIN", "ms": (start, start + 900), "inputs": {"ticket": i},
            "outputs": {"summary": f"s{i}"}, "children": [
                {"name": "ChatOpenAI", "type": "CHAIN", "ms": (start + 5, start + 890), "inputs": msgs, "children": [
                    {"name": "ChatOpenAI", "type": "CHAT_MODEL", "ms": (start + 10, start + 880), "inputs": msgs,
                     "attributes": MODEL, "usage": USAGE, "outputs": {"content": f"s{i}"}}]}]}


def spec(i):
    concurrent = i < 10  # the same request sent twice at once (e.g. a batch with a duplicate)
    second = 3 if concurrent else 950
    return {"name": "agent", "type": "CHAIN", "ms": (0, second + 920), "inputs": {"i": i},
            "children": [sequence(0, i), sequence(second, i)]}


@pytest.fixture(scope="module")
def result(trace_store):
    return findings_for(trace_store.build("redundancy", [spec(i) for i in range(20)]))


def test_the_duplicate_names_the_model_call_that_spent_the_tokens(result):
    [f] = [f for f in result["findings"] if f["kind"] == "redundant_calls"]
    assert f["span_names"] == ["ChatOpenAI", "RunnableSequence"]
    assert f["spans"] == [{"name": "ChatOpenAI", "type": "CHAT_MODEL"}, {"name": "RunnableSequence", "type": "CHAIN"}]
    assert "`ChatOpenAI` (CHAT_MODEL)" in f["title"]  # the name alone is ambiguous here
    m = f["metrics"]
    assert m["redundant_calls"] == 20 and m["traces"] == 20
    assert m["wasted_tokens"] == 20 * 102
    assert m["wasted_cost_usd"] and m["wasted_cost_usd"] > 0


def test_wall_time_counts_only_copies_that_did_not_overlap(result):
    [f] = [f for f in result["findings"] if f["kind"] == "redundant_calls"]
    m = f["metrics"]
    assert m["concurrent_copies"] == 10
    # the 10 sequential copies whole, the 10 concurrent ones for the 3 ms they started late
    assert m["wasted_ms"] == pytest.approx(10 * 900 + 10 * 3, abs=1)
    assert "ran at the same time" in f["impact"]


def test_stats_keep_the_wrapper_and_the_model_call_apart(result):
    rows = {(s["name"], s["type"]): s for s in result["stats"]["spans"]}
    assert rows[("ChatOpenAI", "CHAIN")]["count"] == 40 and rows[("ChatOpenAI", "CHAT_MODEL")]["count"] == 40
    assert rows[("ChatOpenAI", "CHAT_MODEL")]["tokens_total"] == 40 * 102
    assert rows[("ChatOpenAI", "CHAIN")]["tokens_total"] == 0
