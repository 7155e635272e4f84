"""One span dominating spend at a P0 daily rate (detectors/cost.py)."""

from __future__ import annotations

import pytest

from builders import findings_for


def spec(i):
    usage = {"input_tokens": 50_000, "output_tokens": 500, "total_tokens": 50_500}
    return {"name": "agent", "type": "AGENT", "ms": (0, 5000), "inputs": {"i": i}, "children": [
        {"name": "research", "type": "CHAT_MODEL", "ms": (10, 4000), "inputs": {"q": i}, "usage": usage,
         "attributes": {"mlflow.llm.model": "claude-opus-4-1", "mlflow.llm.provider": "anthropic"}},
        {"name": "tidy", "type": "CHAT_MODEL", "ms": (4000, 4500), "inputs": {"q": i},
         "usage": {"input_tokens": 300, "output_tokens": 50, "total_tokens": 350},
         "attributes": {"mlflow.llm.model": "claude-haiku-4-5", "mlflow.llm.provider": "anthropic"}}]}


@pytest.fixture(scope="module")
def result(trace_store):
    # 12 traces over two hours: about $9 in the sample, over $100 a day
    return findings_for(trace_store.build("cost", [spec(i) for i in range(13)], step_ms=10 * 60_000))


def test_the_span_dominating_spend(result):
    [f] = [f for f in result["findings"] if f["kind"] == "cost_concentration"]
    m = f["metrics"]
    assert f["span_names"] == ["research"] and f["priority"] == "P0"
    assert m["share_of_cost"] > 0.95 and m["cost_per_day_usd"] >= 10
    row = next(s for s in result["stats"]["spans"] if s["name"] == "research")
    assert m["cost_usd"] == pytest.approx(row["cost_usd"], rel=1e-6)
    assert f["confirm"]["now"] == row["cost_usd"]
