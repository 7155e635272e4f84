"""Prompt growth (detectors/growth.py): judged by the growth ratio and the history's share of
cost, not by a token floor. Prompts growing 14x over five turns (40 to 578 tokens) are found,
as `session` itself says; flat sessions are not."""

from __future__ import annotations

import pytest

from builders import findings_for

GROWING = [40, 150, 290, 430, 578]
FLAT = [300, 310, 295, 305, 300]
MODEL = {"mlflow.llm.model": "gpt-4o-mini", "mlflow.llm.provider": "openai"}


def turn(tokens, i):
    return {"name": "chat", "type": "AGENT", "ms": (0, 800), "inputs": {"message": f"turn {i}"}, "children": [
        {"name": "llm", "type": "CHAT_MODEL", "ms": (10, 700), "inputs": {"messages": [{"role": "user", "content": f"t{i}"}]},
         "attributes": MODEL, "usage": {"input_tokens": tokens, "output_tokens": 30, "total_tokens": tokens + 30}}]}


@pytest.fixture(scope="module")
def built(trace_store):
    specs, sessions = [], []
    for s in range(4):
        for k, tok in enumerate(GROWING if s < 3 else FLAT):
            specs.append(turn(tok, k))
            sessions.append(f"s-{s}")
    traces = trace_store.build("growth", specs, metadata=lambda i: {"mlflow.trace.session": sessions[i]})
    return traces, findings_for(traces)


def test_growth_without_a_token_floor_is_found(built):
    _, result = built
    [f] = [f for f in result["findings"] if f["kind"] == "growing_prompt"]
    m = f["metrics"]
    assert f["span_names"] == ["llm"] and f["category"] == "high_cost"
    assert m["sessions"] == 3 and m["turns"] == 15
    assert m["first_turn_tokens_p50"] == 40 and m["last_turn_tokens_p50"] == 578
    assert m["growth_ratio_p50"] == pytest.approx(578 / 40, abs=0.01)
    assert m["excess_tokens"] == 3 * sum(t - 40 for t in GROWING)
    fired = {t["name"]: t for t in m["thresholds"]}
    assert fired["growth ratio last/first turn (p50)"]["threshold"] == 2.0
    assert "14.4x" in f["title"]


def test_session_agrees(built):
    from mlflow_analyzer.sessions import rebuild

    traces, _ = built
    s = rebuild("s-0", traces)
    assert s["summary"]["prompt_grows_every_turn"] is True
    assert s["summary"]["llm_input_tokens_by_turn"] == GROWING
    assert rebuild("s-3", traces)["summary"]["prompt_grows_every_turn"] is False
