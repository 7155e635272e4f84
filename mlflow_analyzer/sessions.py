"""Chat sessions: traces sharing ``mlflow.trace.session``, rebuilt as turns in time order."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable

from .model import Trace, iso_ms
from .normalize import trace_inputs, trace_outputs
from .stats import span_cost


def _clip(value: Any, limit: int) -> Any:
    import json

    if value is None:
        return None
    from .redact import redact, redact_value

    # Redacted before it is cut: half a key is not recognisable any more.
    text = redact(value) if isinstance(value, str) else json.dumps(redact_value(value), ensure_ascii=False, default=str)
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit + 1)
    cut = cut if cut > limit * 0.6 else limit  # at a word when there is one near the limit
    return text[:cut] + f"…[+{len(text) - cut} chars]"


_USER_ROLES = {"user", "human"}
_ASSISTANT_ROLES = {"assistant", "ai", "model"}
_TEXT_KEYS = ("message", "question", "query", "input", "prompt", "user_input", "text", "content", "inputs")
_ANSWER_KEYS = ("response", "answer", "output", "text", "content", "result", "outputs", "final_answer")


def _decoded(value: Any) -> Any:
    """JSON text decoded (MLflow keeps previews and metadata as JSON strings)."""
    import json

    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _text(content: Any) -> str | None:
    """The text of a message's content: a string, or text parts (OpenAI, Anthropic, Gemini)."""
    content = _decoded(content)
    if isinstance(content, str):
        return content.strip() or None
    if isinstance(content, dict):
        for key in ("text", "content", "input_text"):
            if isinstance(content.get(key), str):
                return content[key].strip() or None
        return None
    if isinstance(content, list):
        parts = [t for t in (_text(p) for p in content if not _is_tool_block(p)) if t]
        return "\n".join(parts) or None
    return None


def _is_tool_block(part: Any) -> bool:
    return isinstance(part, dict) and str(part.get("type", "")).startswith(("tool_", "function"))


def _role_and_content(m: Any) -> tuple[str | None, Any]:
    """(role, content) of one chat message in the shapes SDKs and LangChain write."""
    if isinstance(m, (list, tuple)) and len(m) == 2 and isinstance(m[0], str):
        return m[0].lower(), m[1]  # ("user", "text"), as LangGraph accepts
    if not isinstance(m, dict):
        return None, None
    if m.get("lc") and isinstance(m.get("kwargs"), dict):  # a serialized LangChain message
        cls = str((m.get("id") or [""])[-1])
        role = {"HumanMessage": "human", "AIMessage": "ai", "SystemMessage": "system"}.get(cls, m["kwargs"].get("type"))
        return (role or "").lower() or None, m["kwargs"].get("content")
    role = m.get("role") or m.get("type")
    content = m.get("content") if "content" in m else m.get("parts")
    return (str(role).lower() if role else None), content


def _messages(value: Any) -> list | None:
    """The chat message list in a request, if it is one."""
    if isinstance(value, dict):
        for key in ("messages", "history", "contents", "chat_history"):
            if isinstance(value.get(key), list):
                return value[key]
        return None
    if isinstance(value, list) and value and all(_role_and_content(m)[0] for m in value[:3] if not isinstance(m, list)):
        return value
    return None


def _flatten(msgs: list) -> list:
    out = []
    for m in msgs:
        if isinstance(m, list) and m and not (len(m) == 2 and isinstance(m[0], str)):
            out.extend(m)  # LangChain batches: [[message, ...]]
        else:
            out.append(m)
    return out


def _last_message(value: Any, roles: set[str], keys: tuple[str, ...], depth: int = 0) -> str | None:
    value = _decoded(value)
    if depth > 4 or value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    msgs = _messages(value)
    if msgs is not None:
        for m in reversed(_flatten(msgs)):
            role, content = _role_and_content(m)
            if role in roles:
                text = _text(content)
                if text:
                    return text
    if isinstance(value, dict):
        if "choices" in value and roles is _ASSISTANT_ROLES:  # an OpenAI chat completion
            for choice in value.get("choices") or []:
                if isinstance(choice, dict):
                    text = _text((choice.get("message") or {}).get("content")) or _text(choice.get("text"))
                    if text:
                        return text
        if value.get("role") in roles or value.get("type") in roles:  # one message (Anthropic reply)
            text = _text(value.get("content"))
            if text:
                return text
        for key in keys:
            if key in value:
                text = _last_message(value[key], roles, keys, depth + 1)
                if text:
                    return text
    return None


def user_message(trace: Trace) -> str | None:
    """The user's message in a turn: the last user message of a chat-style request (OpenAI
    and Anthropic messages, LangChain and LangGraph messages, Gemini contents), a plain
    string, or the ``query``/``question``/``input``/... of a dict; from the trace's inputs,
    its request preview, or the first LLM call's messages."""
    llm = next((s for s in trace.spans if s.is_llm), None)
    for value in (trace_inputs(trace), trace.request_preview, llm.inputs if llm else None):
        text = _last_message(value, _USER_ROLES, _TEXT_KEYS)
        if text:
            return text
    return None


def assistant_message(trace: Trace) -> str | None:
    """The answer of a turn, read the same way (OpenAI choices, Anthropic content blocks,
    LangChain messages, or a dict's ``response``/``answer``/``output``/...)."""
    for value in (trace_outputs(trace), trace.response_preview):
        text = _last_message(value, _ASSISTANT_ROLES, _ANSWER_KEYS)
        if text:
            return text
    return None


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
        "user": _clip(user_message(trace), clip),
        "assistant": _clip(assistant_message(trace), clip),
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
    return session_list(agg, without, limit=limit)


def session_list(agg: dict[str, dict], without: int, *, limit: int = 50,
                 users: Callable[[list[str]], dict[str, str | None]] | None = None) -> dict[str, Any]:
    """The ``session --list`` answer from per-session aggregates (turns, errors, tokens,
    first, last, user): sessions with failures first. ``users`` fills the user of the shown
    sessions when the aggregates do not carry it (the SQL path asks for those only)."""
    rows = sorted(agg.items(), key=lambda kv: (-kv[1]["errors"], -kv[1]["turns"], kv[0]))
    shown = rows[:limit]
    if users is not None:
        found = users([sid for sid, _ in shown])
        for sid, a in shown:
            a["user"] = found.get(sid)
    return {
        "sessions": len(agg),
        "traces_without_session": without,
        "shown": len(shown),
        "list": [
            {"session_id": sid, "turns": a["turns"], "error_turns": a["errors"], "tokens": a["tokens"],
             "user_id": a["user"], "first": iso_ms(a["first"]), "last": iso_ms(a["last"])}
            for sid, a in shown
        ],
    }


def format_session(s: dict[str, Any]) -> str:
    from .redact import redact_value

    s = redact_value(s)  # before any clipping: half a key still leaks
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
            f"user: {t['user'] if t['user'] is not None else '(no user message recorded)'}",
            f"assistant: {t['assistant'] if t['assistant'] is not None else '(no answer recorded)'}",
        ]
        if t["tools"]:
            lines.append("tools: " + ", ".join(t["tools"]))
        for e in t["errors"]:
            lines.append(f"error: {e['span']} {e['type']}: {e['message']}")
        for a in t["assessments"]:
            verdict = "JUDGE ERROR " + str(a["judge_error"]) if a["judge_error"] else f"{a['value']!r}"
            lines.append(f"assessment {a['name']}: {verdict}" + (f" ({a['rationale']})" if a["rationale"] else ""))
    return "\n".join(lines)
