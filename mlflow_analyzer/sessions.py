"""Chat sessions: traces sharing ``mlflow.trace.session``, rebuilt as turns in time order."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from .model import Trace, iso_ms
from .normalize import trace_inputs, trace_outputs
from .stats import span_cost


def _clip(value: Any, limit: int) -> Any:
    import json

    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if text is None:
        return None
    return text if len(text) <= limit else text[:limit] + f"…[+{len(text) - limit} chars]"


def _last_user_message(inputs: Any) -> Any:
    """The newest user message when inputs are a chat history, else the inputs."""
    msgs = None
    if isinstance(inputs, dict):
        msgs = inputs.get("messages") or inputs.get("history")
    elif isinstance(inputs, list):
        msgs = inputs
    if isinstance(msgs, list):
        for m in reversed(msgs):
            if isinstance(m, dict) and m.get("role") == "user":
                return m.get("content")
    if isinstance(inputs, dict):
        for key in ("message", "question", "query", "input", "prompt", "user_input", "text"):
            if isinstance(inputs.get(key), str):
                return inputs[key]
    return inputs


def turn(trace: Trace, index: int, *, clip: int = 600) -> dict[str, Any]:
    llm = [s for s in trace.spans if s.is_llm]
    tools = [s for s in trace.spans if s.span_type in ("TOOL", "RETRIEVER")]
    cost = trace.cost_usd
    if cost is None:
        priced = [c for c, _ in (span_cost(s) for s in llm if s.has_usage) if c is not None]
        cost = sum(priced) if priced else None
    return {
        "turn": index,
        "trace_id": trace.trace_id,
        "request_time": iso_ms(trace.request_time_ms),
        "state": trace.state,
        "duration_ms": trace.duration_ms,
        "user": _clip(_last_user_message(trace_inputs(trace)), clip),
        "assistant": _clip(trace_outputs(trace), clip),
        "tools": [f"{s.name}{' (ERROR)' if s.is_error else ''}" for s in tools],
        "llm_calls": len(llm),
        "max_llm_input_tokens": max((s.input_tokens or 0 for s in llm), default=0),
        "tokens": trace.total_tokens,
        "cost_usd": cost,
        "errors": [
            {"span": s.name, "type": s.error_type, "message": _clip(s.error_message or s.status_message, 200)}
            for s in trace.root_causes()
        ],
        "assessments": [
            {"name": a.name, "value": a.value, "passed": a.passed, "rationale": _clip(a.rationale, 200),
             "judge_error": a.error_message if a.is_judge_error else None}
            for a in trace.assessments
            if a.valid
        ],
    }


def rebuild(session_id: str, traces: Iterable[Trace], *, clip: int = 600) -> dict[str, Any]:
    ordered = sorted((t for t in traces if t.session_id == session_id), key=lambda t: t.request_time_ms)
    turns = [turn(t, i, clip=clip) for i, t in enumerate(ordered, start=1)]
    growth = [t["max_llm_input_tokens"] for t in turns]
    first_error = next((t["turn"] for t in turns if t["state"] == "ERROR" or t["errors"]), None)
    failing = [
        {"turn": t["turn"], "name": a["name"], "rationale": a["rationale"]}
        for t in turns
        for a in t["assessments"]
        if a["passed"] is False
    ]
    costs = [t["cost_usd"] for t in turns if t["cost_usd"] is not None]
    return {
        "session_id": session_id,
        "user_id": ordered[0].user_id if ordered else None,
        "summary": {
            "turns": len(turns),
            "error_turns": sum(1 for t in turns if t["state"] == "ERROR"),
            "first_problem_turn": first_error,
            "failing_assessments": failing,
            "total_tokens": sum(t["tokens"] or 0 for t in turns),
            "cost_usd": sum(costs) if costs else None,
            "duration_ms_total": sum(t["duration_ms"] or 0 for t in turns),
            "llm_input_tokens_by_turn": growth,
            "prompt_grows_every_turn": len(growth) >= 3 and all(b > a for a, b in zip(growth, growth[1:]) if a),
            "span": [turns[0]["request_time"], turns[-1]["request_time"]] if turns else None,
        },
        "turns": turns,
    }


def list_sessions(traces: Iterable[Trace], *, limit: int = 50) -> dict[str, Any]:
    agg: dict[str, dict] = defaultdict(lambda: {"turns": 0, "errors": 0, "first": None, "last": None, "user": None, "tokens": 0})
    without = 0
    for t in traces:
        if not t.session_id:
            without += 1
            continue
        a = agg[t.session_id]
        a["turns"] += 1
        a["errors"] += t.is_error
        a["tokens"] += t.total_tokens or 0
        a["user"] = a["user"] or t.user_id
        a["first"] = t.request_time_ms if a["first"] is None else min(a["first"], t.request_time_ms)
        a["last"] = t.request_time_ms if a["last"] is None else max(a["last"], t.request_time_ms)
    rows = sorted(agg.items(), key=lambda kv: (-kv[1]["errors"], -kv[1]["turns"], kv[0]))
    return {
        "sessions": len(agg),
        "traces_without_session": without,
        "shown": min(limit, len(rows)),
        "list": [
            {"session_id": sid, "turns": a["turns"], "error_turns": a["errors"], "tokens": a["tokens"],
             "user_id": a["user"], "first": iso_ms(a["first"]), "last": iso_ms(a["last"])}
            for sid, a in rows[:limit]
        ],
    }


def format_session(s: dict[str, Any]) -> str:
    sm = s["summary"]
    lines = [
        f"session {s['session_id']}  user {s['user_id']}  {sm['turns']} turns  {sm['error_turns']} failed  "
        f"tokens {sm['total_tokens']:,}" + ("" if sm["cost_usd"] is None else f"  cost ${sm['cost_usd']:.4f} (estimate)"),
        f"LLM input tokens by turn: {sm['llm_input_tokens_by_turn']}"
        + ("  <- grows every turn" if sm["prompt_grows_every_turn"] else ""),
    ]
    if sm["first_problem_turn"]:
        lines.append(f"first problem at turn {sm['first_problem_turn']}")
    for t in s["turns"]:
        lines += [
            "",
            f"--- turn {t['turn']}  {t['request_time']}  {t['state']}  {t['duration_ms'] or 0:,.0f} ms  {t['trace_id']}",
            f"user: {t['user']}",
            f"assistant: {t['assistant']}",
        ]
        if t["tools"]:
            lines.append("tools: " + ", ".join(t["tools"]))
        for e in t["errors"]:
            lines.append(f"error: {e['span']} {e['type']}: {e['message']}")
        for a in t["assessments"]:
            verdict = "JUDGE ERROR " + str(a["judge_error"]) if a["judge_error"] else f"{a['value']!r}"
            lines.append(f"assessment {a['name']}: {verdict}" + (f" ({a['rationale']})" if a["rationale"] else ""))
    return "\n".join(lines)
