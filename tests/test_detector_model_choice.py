"""An expensive model on a small task (detectors/model_choice.py)."""

from __future__ import annotations

import pytest

from builders import findings_for


def llm(name, model, provider, tokens_in, tokens_out, start):
    return {"name": name, "type": "CHAT_MODEL", "ms": (start, start + 300), "inputs": {"messages": [{"role": "user", "content": "x"}]},
            "attributes": {"mlflow.llm.model": model, "mlflow.llm.provider": provider},
            "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}}


def spec(i):
    return {"name": "agent", "type": "AGENT", "ms": (0, 1000), "inputs": {"i": i}, "children": [
        llm("classify", "claude-opus-4-1", "anthropic", 150 + i, 2, 10),  # one word out of a top-tier model
        llm("summarize", "claude-haiku-4-5", "anthropic", 400, 20, 400),  # already the cheap tier
        llm("write", "claude-opus-4-1", "anthropic", 3000, 800, 700)]}  # a real task


@pytest.fixture(scope="module")
def result(trace_store):
    return findings_for(trace_store.build("model_choice", [spec(i) for i in range(12)], step_ms=10 * 60_000))


def test_small_task_on_a_top_tier_model(result):
    [f] = [f for f in result["findings"] if f["kind"] == "expensive_model_simple_task"]
    m = f["metrics"]
    assert f["span_names"] == ["classify"] and m["model"] == "claude-opus-4-1" and m["calls"] == 12
    assert m["cheaper_model"] and m["price_ratio"] >= 4
    assert m["input_tokens_p50"] == pytest.approx(155.5) and m["output_tokens_p50"] == 2
    assert m["expected_saving_usd"] == pytest.approx(m["cost_usd"] * (1 - 1 / m["price_ratio"]), rel=0.01)
    assert {t["name"] for t in m["thresholds"]} == {"price ratio to the cheaper tier", "input tokens p50", "output tokens p50"}
