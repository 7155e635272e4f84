"""Small agent programs on the real SDKs, traced by real instrumentation: the corpora of
tests/test_realworld_*.py. Run as ``python tests/realworld_apps.py CORPUS OUT_DIR [...]``;
writes ``OUT_DIR/manifest.json`` (store, experiment, the fake server's ground truth, the
planted problems) and, for the autolog corpora, the SQLite store ``OUT_DIR/store.db``.

Corpora:
  openai         mlflow.openai.autolog(), a support agent (tool-calling loop, RAG, sessions)
  anthropic      mlflow.anthropic.autolog(), the same agent on the Messages API (529s)
  langchain      mlflow.langchain.autolog(), a LangGraph graph + a RAG chain on ChatOpenAI
  otel_genai     opentelemetry-instrumentation-openai-v2 (GenAI conventions), OTLP to mlflow server
  openinference  openinference-instrumentation-openai, OTLP to mlflow server

Everything is scripted: the fake model server decides each answer from the request (the
order number in the user's question selects planted faults), the tools sleep a fixed time.

What each layer records (the ground truth counts HTTP requests; the tests map them):
- an SDK's own retries (openai/anthropic ``max_retries``, x-stainless-retry-count > 0) are
  invisible: autolog and both OTel instrumentors write one span per ``create()`` call, OK
  when a retry succeeded, ERROR only when the SDK gave up;
- the app's own retry loop around ``create()`` gives one sibling span per attempt;
- LangChain's ``with_retry`` (SDK retries off) gives a CHAIN span named after the model
  (``ChatOpenAI``) with one CHAT_MODEL ``ChatOpenAI`` span per attempt;
- sessions: MLflow metadata ``mlflow.trace.session`` (autolog), LangGraph ``thread_id``,
  ``gen_ai.conversation.id`` on the agent span (GenAI), ``using_session`` (OpenInference).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.update(MLFLOW_ENABLE_ASYNC_TRACE_LOGGING="false", MLFLOW_MODEL_CATALOG_URI="",
                  MLFLOW_DISABLE_AGENT_HINT="1")

from realworld import DUMMY_KEY, Answer, FakeModels, ground_truth, rate_limited, server_error  # noqa: E402

# --- the support-desk scenario ---------------------------------------------------------------
# 4 sessions x 5 turns. A turn (one trace): classify the question (an expensive model for a
# one-word answer), retrieve policy documents (50 ms; 1.8 s in 3 of 20 calls), a tool-calling
# loop (lookup_order -> check_inventory -> compute_refund, each fed by the previous result;
# check_inventory takes 1.2 s, most of the turn), validate_refund then issue_refund (only when validation
# passed), the same summary requested twice, and a moderation call whose answers carry no
# usage. The conversation history is resent every turn, so prompts grow over a session.

SESSIONS = 4
TURNS = 5
# Latencies a user would be told about (seconds), the rest in milliseconds: the tools sleep,
# which costs wall time but no CPU.
SLOW_RETRIEVAL = {4, 11, 14}  # turn numbers (1-based over the corpus) with a slow retriever
RETRIEVE_MS, RETRIEVE_SLOW_MS = 50, 1800
TOOL_MS = {"lookup_order": 3, "check_inventory": 1200, "compute_refund": 2, "issue_refund": 4, "validate_refund": 1}
RATE_LIMITED_ONCE = {2, 5}  # the first agent call gets one 429; the SDK retries it
RATE_LIMITED_APP_RETRY = {7, 16}  # the first agent call exhausts the SDK's retries; the app retries once, OK
RATE_LIMITED_EXHAUSTED = {13, 19}  # the agent call keeps failing (429; 529 on Anthropic): the turn fails
SERVER_ERROR_ONCE = 9  # the first summary call gets a 5xx once; the SDK retries it
VALIDATION_FAILS = {1, 5, 9, 17}  # validate_refund raises: issue_refund does not run
QUESTIONS = [
    "Where is my refund for order {o}? I returned the blender two weeks ago.",
    "Can you check whether order {o} can be refunded to my card instead of store credit?",
    "The replacement for order {o} never arrived, what now?",
    "I was charged twice for order {o}, please fix it.",
    "Please cancel the remaining items of order {o} and refund them.",
]


def order_of(text: str) -> int | None:
    m = re.search(r"order (\d+)", text)
    return int(m.group(1)) if m else None


def turn_of_order(order: int) -> int:
    return order - 1000


def _sleep(ms: float) -> None:
    time.sleep(ms / 1000)


def tool_lookup_order(order_id: int) -> dict:
    _sleep(TOOL_MS["lookup_order"])
    return {"order_id": order_id, "sku": f"SKU-{order_id % 97}", "total": 40 + order_id % 13}


def tool_check_inventory(sku: str) -> dict:
    _sleep(TOOL_MS["check_inventory"])
    return {"sku": sku, "in_stock": int(sku.split("-")[1]) % 3 != 0}


def tool_compute_refund(total: float, in_stock: bool) -> dict:
    _sleep(TOOL_MS["compute_refund"])
    return {"refund": round(total * (1.0 if in_stock else 1.1), 2)}


def tool_validate_refund(order_id: int, refund: float) -> dict:
    _sleep(TOOL_MS["validate_refund"])
    if turn_of_order(order_id) in VALIDATION_FAILS:
        raise ValueError(f"refund {refund:.2f} exceeds the amount paid for order {order_id}")
    return {"valid": True}


def tool_issue_refund(order_id: int, refund: float) -> dict:
    _sleep(TOOL_MS["issue_refund"])
    return {"refund_id": f"rf-{order_id}", "amount": refund}


TOOLS = {"lookup_order": tool_lookup_order, "check_inventory": tool_check_inventory,
         "compute_refund": tool_compute_refund}
TOOL_SCHEMAS = {
    "lookup_order": {"order_id": "integer"},
    "check_inventory": {"sku": "string"},
    "compute_refund": {"total": "number", "in_stock": "boolean"},
}


def retrieve_policy_docs(question: str, turn: int) -> list[str]:
    _sleep(RETRIEVE_SLOW_MS if turn in SLOW_RETRIEVAL else RETRIEVE_MS)
    return ["Refunds go to the original payment method within 5 business days.",
            "Items out of stock are refunded with a 10% goodwill credit."]


def final_answer(turn: int) -> str:
    words = (f"I have checked your order {1000 + turn} and the refund is on its way to your card; "
             "you will see it within five business days. ").split()
    return " ".join(words[: 18 + turn % 5])


def support_plan(api: str, models: dict):
    """The fake server's script for the support scenario (both APIs)."""

    def plan(req, call_no):
        order = order_of(_last_user_text(req.body, api)) or 0
        turn = turn_of_order(order)
        if req.step == "classifier":
            return Answer(text="refund", delay_ms=5)
        if req.step == "moderation":
            return Answer(text="ok", delay_ms=3, usage=False)
        if req.step == "summary":
            if turn == SERVER_ERROR_ONCE and req.retry_count == 0 and call_no % 2 == 0:
                return server_error(api, 529 if api == "anthropic" else 500)
            return Answer(text="Customer asked about a refund; refund issued.", delay_ms=6)
        if req.step == "agent":
            results = _tool_results_since_user(req.body, api)
            if not results:
                if turn in RATE_LIMITED_ONCE and req.retry_count == 0:
                    return rate_limited(api)
                if turn in RATE_LIMITED_EXHAUSTED or (turn in RATE_LIMITED_APP_RETRY and req.same_body_calls == 0):
                    if api == "anthropic" and turn in RATE_LIMITED_EXHAUSTED:
                        return server_error(api, 529)
                    return rate_limited(api)
                return Answer(tool_calls=[("lookup_order", {"order_id": order})], delay_ms=8)
            last = results[-1]
            if "sku" in last and "in_stock" not in last:
                return Answer(tool_calls=[("check_inventory", {"sku": last["sku"]})], delay_ms=8)
            if "in_stock" in last:
                total = next(r["total"] for r in results if "total" in r)
                return Answer(tool_calls=[("compute_refund", {"total": total, "in_stock": last["in_stock"]})], delay_ms=8)
            return Answer(text=final_answer(turn), delay_ms=8)
        return Answer(text="?", delay_ms=1)

    return plan


def _last_user_text(body: dict, api: str) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") != "user":
            continue
        c = m.get("content")
        if isinstance(c, str):
            return c
        texts = [b.get("text", "") for b in c or [] if isinstance(b, dict) and b.get("type") == "text"]
        if texts:
            return " ".join(texts)
    return ""


def _tool_results_since_user(body: dict, api: str) -> list[dict]:
    out: list[dict] = []
    for m in body.get("messages") or []:
        c = m.get("content")
        if m.get("role") == "tool":
            out.append(_json_or_error(c))
        elif m.get("role") == "user" and isinstance(c, list) and any(
                isinstance(b, dict) and b.get("type") == "tool_result" for b in c):
            out.extend(_json_or_error(b["content"]) for b in c if b.get("type") == "tool_result")
        elif m.get("role") == "user":
            out = []
    return out


def _json_or_error(content) -> dict:
    try:
        value = json.loads(content)
    except (TypeError, ValueError):
        return {"error": str(content)}
    return value if isinstance(value, dict) else {"value": value}


# --- span helpers: one interface over MLflow's fluent API and an OpenTelemetry tracer ----------


class MlflowSpans:
    """App-level spans with MLflow's fluent API (the autolog corpora)."""

    def __init__(self):
        import mlflow

        self.mlflow = mlflow

    @contextmanager
    def span(self, name: str, kind: str, inputs: dict | None = None):
        with self.mlflow.start_span(name, span_type=kind) as s:
            if inputs is not None:
                s.set_inputs(inputs)
            yield s.set_outputs

    def session(self, session_id: str, user: str) -> None:
        self.mlflow.update_current_trace(metadata={"mlflow.trace.session": session_id, "mlflow.trace.user": user})

    def turn(self, session_id: str, user: str):
        from contextlib import nullcontext

        return nullcontext()


class OtelSpans:
    """App-level spans with an OpenTelemetry tracer, attributes in the GenAI semantic
    conventions (``genai``) or OpenInference's (``openinference``)."""

    GENAI_OPS = {"AGENT": "invoke_agent", "TOOL": "execute_tool"}

    def __init__(self, tracer, convention: str):
        self.tracer = tracer
        self.convention = convention

    @contextmanager
    def span(self, name: str, kind: str, inputs: dict | None = None):
        from opentelemetry.trace import Status, StatusCode

        attrs: dict = {}
        span_name = name
        if self.convention == "genai":
            op = self.GENAI_OPS.get(kind)
            if op:
                attrs["gen_ai.operation.name"] = op
                span_name = f"{op} {name}"
                if kind == "TOOL":
                    attrs["gen_ai.tool.name"] = name
                    attrs["gen_ai.tool.call.arguments"] = json.dumps(inputs or {})
                else:
                    attrs["gen_ai.agent.name"] = name
        else:
            attrs["openinference.span.kind"] = kind
            attrs["input.value"] = json.dumps(inputs or {})
            attrs["input.mime_type"] = "application/json"
            if kind == "TOOL":
                attrs["tool.name"] = name
            from openinference.instrumentation import get_attributes_from_context

            attrs.update(dict(get_attributes_from_context()))
        with self.tracer.start_as_current_span(span_name, attributes=attrs, record_exception=False,
                                               set_status_on_exception=False) as s:
            def set_outputs(value):
                key = "gen_ai.tool.call.result" if self.convention == "genai" else "output.value"
                if self.convention == "genai" and kind != "TOOL":
                    return
                s.set_attribute(key, json.dumps(value))

            try:
                yield set_outputs
            except Exception as exc:
                s.record_exception(exc)
                s.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                s.set_attribute("error.type", type(exc).__name__)
                raise

    def session(self, session_id: str, user: str) -> None:
        """GenAI conventions: the conversation id on the agent span. OpenInference: set for
        every span by :meth:`turn`."""
        if self.convention == "genai":
            from opentelemetry import trace

            trace.get_current_span().set_attribute("gen_ai.conversation.id", session_id)

    def turn(self, session_id: str, user: str):
        from contextlib import ExitStack, nullcontext

        if self.convention == "genai":
            return nullcontext()
        from openinference.instrumentation import using_session, using_user

        stack = ExitStack()
        stack.enter_context(using_session(session_id))
        stack.enter_context(using_user(user))
        return stack


# --- the OpenAI-API support agent -------------------------------------------------------------


def _openai_tools() -> list[dict]:
    return [{"type": "function", "function": {
        "name": name, "description": f"{name.replace('_', ' ')}",
        "parameters": {"type": "object", "properties": {k: {"type": t} for k, t in props.items()},
                       "required": list(props)}}} for name, props in TOOL_SCHEMAS.items()]


def run_support_openai(client, spans, models: dict, session_prefix: str, openai_mod) -> list[dict]:
    """Drive the scenario; returns one record per turn (trace) with what the app saw."""
    turns = []
    g = 0
    for s in range(1, SESSIONS + 1):
        session_id, user = f"{session_prefix}-{s}", f"customer-{s}"
        history: list[dict] = []
        for t in range(TURNS):
            g += 1
            order = 1000 + g
            question = QUESTIONS[t].format(o=order)
            record = {"turn": g, "session": session_id, "order": order, "ok": True}
            try:
                with spans.turn(session_id, user):
                    _openai_turn(client, spans, models, session_id, user, question, g, history, openai_mod, record)
            except openai_mod.APIStatusError as exc:
                record.update(ok=False, error=type(exc).__name__)
            turns.append(record)
    return turns


def _openai_turn(client, spans, models, session_id, user, question, g, history, openai_mod, record):
    def chat(step_system: str, model: str, messages: list[dict], **kw):
        resp = client.chat.completions.create(
            model=model, messages=[{"role": "system", "content": step_system}, *messages], **kw)
        return resp.choices[0].message

    with spans.span("support_turn", "AGENT", {"question": question}) as set_out:
        spans.session(session_id, user)
        intent = chat("classifier: answer with one word: refund, status or other.", models["classifier"],
                      [{"role": "user", "content": question}]).content
        with spans.span("retrieve_policy", "RETRIEVER", {"query": question}) as out:
            docs = retrieve_policy_docs(question, g)
            out([{"page_content": d} for d in docs])
        system = "agent: You are a support agent for an online shop. Policy: " + " ".join(docs)
        history.append({"role": "user", "content": question})
        results: dict = {}
        while True:
            for attempt in range(2):  # the app's own retry of a rate-limited call
                try:
                    msg = chat(system, models["agent"], history, tools=_openai_tools())
                    break
                except openai_mod.RateLimitError:
                    if attempt == 1:
                        raise
            if not msg.tool_calls:
                answer = msg.content
                history.append({"role": "assistant", "content": answer})
                break
            history.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
                for c in msg.tool_calls]})
            for call in msg.tool_calls:
                args = json.loads(call.function.arguments)
                with spans.span(call.function.name, "TOOL", args) as out:
                    result = TOOLS[call.function.name](**args)
                    out(result)
                results.update(result)
                history.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
        refund = {"order_id": record["order"], "refund": results["refund"]}
        try:
            with spans.span("validate_refund", "TOOL", refund) as out:
                out(tool_validate_refund(**refund))
            with spans.span("issue_refund", "TOOL", refund) as out:
                out(tool_issue_refund(**refund))
            record["refund_issued"] = True
        except ValueError:
            record["refund_issued"] = False
        for _ in range(2):  # the UI and the audit log each ask for the same summary
            with spans.span("summarize", "CHAIN", {"answer": answer}) as out:
                out(chat("summary: summarize the reply in one line.", models["summary"],
                         [{"role": "user", "content": answer}]).content)
        chat("moderation: reply ok when the text is safe.", models["moderation"], [{"role": "user", "content": answer}])
        set_out({"answer": answer, "intent": intent})


# --- the Anthropic-API support agent ----------------------------------------------------------


def _anthropic_tools() -> list[dict]:
    return [{"name": name, "description": name.replace("_", " "),
             "input_schema": {"type": "object", "properties": {k: {"type": t} for k, t in props.items()},
                              "required": list(props)}} for name, props in TOOL_SCHEMAS.items()]


def run_support_anthropic(client, spans, models: dict, session_prefix: str, anthropic_mod) -> list[dict]:
    turns = []
    g = 0
    for s in range(1, SESSIONS + 1):
        session_id, user = f"{session_prefix}-{s}", f"customer-{s}"
        history: list[dict] = []
        for t in range(TURNS):
            g += 1
            order = 1000 + g
            question = QUESTIONS[t].format(o=order)
            record = {"turn": g, "session": session_id, "order": order, "ok": True}
            try:
                _anthropic_turn(client, spans, models, session_id, user, question, g, history, anthropic_mod, record)
            except anthropic_mod.APIStatusError as exc:
                record.update(ok=False, error=type(exc).__name__)
            turns.append(record)
    return turns


def _anthropic_turn(client, spans, models, session_id, user, question, g, history, anthropic_mod, record):
    def chat(system: str, model: str, messages: list[dict], **kw):
        return client.messages.create(model=model, max_tokens=512, system=system, messages=messages, **kw)

    def text_of(msg) -> str:
        return " ".join(b.text for b in msg.content if b.type == "text")

    with spans.span("support_turn", "AGENT", {"question": question}) as set_out:
        spans.session(session_id, user)
        intent = text_of(chat("classifier: answer with one word: refund, status or other.", models["classifier"],
                              [{"role": "user", "content": question}]))
        with spans.span("retrieve_policy", "RETRIEVER", {"query": question}) as out:
            docs = retrieve_policy_docs(question, g)
            out([{"page_content": d} for d in docs])
        system = "agent: You are a support agent for an online shop. Policy: " + " ".join(docs)
        history.append({"role": "user", "content": [{"type": "text", "text": question}]})
        results: dict = {}
        while True:
            for attempt in range(2):  # the app's own retry of a rate-limited call
                try:
                    msg = chat(system, models["agent"], history, tools=_anthropic_tools())
                    break
                except anthropic_mod.RateLimitError:
                    if attempt == 1:
                        raise
            calls = [b for b in msg.content if b.type == "tool_use"]
            history.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]})
            if not calls:
                answer = text_of(msg)
                break
            blocks = []
            for call in calls:
                with spans.span(call.name, "TOOL", dict(call.input)) as out:
                    result = TOOLS[call.name](**call.input)
                    out(result)
                results.update(result)
                blocks.append({"type": "tool_result", "tool_use_id": call.id, "content": json.dumps(result)})
            history.append({"role": "user", "content": blocks})
        refund = {"order_id": record["order"], "refund": results["refund"]}
        try:
            with spans.span("validate_refund", "TOOL", refund) as out:
                out(tool_validate_refund(**refund))
            with spans.span("issue_refund", "TOOL", refund) as out:
                out(tool_issue_refund(**refund))
            record["refund_issued"] = True
        except ValueError:
            record["refund_issued"] = False
        for _ in range(2):  # the UI and the audit log each ask for the same summary
            with spans.span("summarize", "CHAIN", {"answer": answer}) as out:
                out(text_of(chat("summary: summarize the reply in one line.", models["summary"],
                                 [{"role": "user", "content": answer}])))
        chat("moderation: reply ok when the text is safe.", models["moderation"], [{"role": "user", "content": answer}])
        set_out({"answer": answer, "intent": intent})


# --- corpora ------------------------------------------------------------------------------------

OPENAI_MODELS = {"classifier": "gpt-4o", "agent": "gpt-4o-mini", "summary": "gpt-4o-mini", "moderation": "gpt-4.1-nano"}


def support_problems(llm: str, *, wrapper_names: dict | None = None) -> list[dict]:
    """The planted problems of the support scenario, by the span names ``llm`` (the span an
    instrumentation writes for a chat call) and the app's own span names."""
    w = {"tool": lambda n: n, "agent": "support_turn", **(wrapper_names or {})}
    tool = w["tool"]
    return [
        {"kind": "rate_limited_and_retried", "category": "retry_issue", "span": llm, "exception_type": "RateLimitError"},
        {"kind": "tool_raises", "category": "error_pattern", "span": tool("validate_refund"), "exception_type": "ValueError"},
        {"kind": "dominant_sequential_tool", "category": "latency_issue", "span": tool("check_inventory")},
        {"kind": "bimodal_retriever", "category": "latency_issue", "span": "retrieve_policy"},
        {"kind": "duplicate_identical_calls", "category": "inefficient_pattern", "span": llm},
        {"kind": "growing_prompt", "category": "high_cost", "span": llm},
        {"kind": "expensive_model_tiny_task", "category": "high_cost", "span": llm},
        {"kind": "missing_usage", "category": "missing_instrumentation", "span": llm},
    ]


def support_facts(turns: list[dict], llm: str, tool=lambda n: n) -> dict:
    return {
        "turns": turns,
        "dependent_pairs": [[tool("validate_refund"), tool("issue_refund")]],
        "never_failing_spans": [tool("lookup_order"), tool("check_inventory"), tool("compute_refund"),
                                tool("issue_refund"), "retrieve_policy", "summarize"],
        "wrappers": ["summarize", "support_turn"],
        "sessions": sorted({t["session"] for t in turns}),
        "slow_retrieval_turns": sorted(SLOW_RETRIEVAL),
    }


def build_openai(out: Path) -> dict:
    import mlflow
    import openai

    fake = FakeModels(support_plan("openai", OPENAI_MODELS)).start()
    uri, exp = _sqlite_store(mlflow, out)
    mlflow.openai.autolog()
    client = openai.OpenAI(base_url=fake.base_url + "/v1", api_key=DUMMY_KEY, max_retries=2)
    turns = run_support_openai(client, MlflowSpans(), OPENAI_MODELS, "support-openai", openai)
    fake.stop()
    return {"tracking_uri": uri, "experiment_id": exp, "truth": ground_truth(fake.requests),
            "problems": support_problems("Completions"), **support_facts(turns, "Completions")}


ANTHROPIC_MODELS = {"classifier": "claude-opus-4-1", "agent": "claude-sonnet-4-5",
                    "summary": "claude-haiku-4-5", "moderation": "claude-3-5-haiku"}


def build_anthropic(out: Path) -> dict:
    import anthropic
    import mlflow

    fake = FakeModels(support_plan("anthropic", ANTHROPIC_MODELS)).start()
    uri, exp = _sqlite_store(mlflow, out)
    mlflow.anthropic.autolog()
    client = anthropic.Anthropic(base_url=fake.base_url, api_key=DUMMY_KEY, max_retries=2)
    turns = run_support_anthropic(client, MlflowSpans(), ANTHROPIC_MODELS, "support-anthropic", anthropic)
    fake.stop()
    problems = support_problems("Messages.create")
    problems.append({"kind": "overloaded_exhausted", "category": "error_pattern", "span": "Messages.create",
                     "exception_type": "OverloadedError"})
    return {"tracking_uri": uri, "experiment_id": exp, "truth": ground_truth(fake.requests),
            "problems": problems, **support_facts(turns, "Messages.create")}


# --- the LangGraph support graph -------------------------------------------------------------
# The same desk as a LangGraph graph on ChatOpenAI: the model drives every tool, including
# validate_refund (a @tool that raises) and issue_refund (called only after a successful
# validation). The agent's model is wrapped in LangChain's own retry (with_retry), with the
# SDK's retries off, so each attempt is a CHAT_MODEL span under a CHAIN span that LangChain
# names after the model too (ChatOpenAI). Sessions are LangGraph threads (thread_id) with a
# checkpointer, so the whole conversation is resent every turn. After the graph, a RAG
# summary chain runs twice on the same input concurrently (batch).


def langchain_plan(models: dict):
    def plan(req, call_no):
        order = order_of(_last_user_text(req.body, "openai")) or 0
        turn = turn_of_order(order)
        if req.step == "classifier":
            return Answer(text="refund", delay_ms=5)
        if req.step == "moderation":
            return Answer(text="ok", delay_ms=3, usage=False)
        if req.step == "summary":
            if turn == SERVER_ERROR_ONCE and req.retry_count == 0 and req.same_body_calls == 0:
                return server_error("openai", 500)
            return Answer(text="Customer asked about a refund; refund handled.", delay_ms=6)
        if req.step == "agent":
            results = _tool_results_since_user(req.body, "openai")
            if not results:
                if turn in RATE_LIMITED_ONCE and req.same_body_calls == 0:
                    return rate_limited("openai")
                if turn in RATE_LIMITED_EXHAUSTED:
                    return rate_limited("openai")
                return Answer(tool_calls=[("lookup_order", {"order_id": order})], delay_ms=8)
            last = results[-1]
            if "sku" in last and "in_stock" not in last:
                return Answer(tool_calls=[("check_inventory", {"sku": last["sku"]})], delay_ms=8)
            if "in_stock" in last:
                total = next(r["total"] for r in results if "total" in r)
                return Answer(tool_calls=[("compute_refund", {"total": total, "in_stock": last["in_stock"]})], delay_ms=8)
            if "refund" in last and "refund_id" not in last:
                return Answer(tool_calls=[("validate_refund", {"order_id": order, "refund": last["refund"]})], delay_ms=8)
            if last.get("valid"):
                refund = next(r["refund"] for r in results if "refund" in r)
                return Answer(tool_calls=[("issue_refund", {"order_id": order, "refund": refund})], delay_ms=8)
            return Answer(text=final_answer(turn), delay_ms=8)
        return Answer(text="?", delay_ms=1)

    return plan


LANGCHAIN_MODELS = {"classifier": "gpt-4o", "agent": "gpt-4o-mini", "summary": "gpt-4o-mini", "moderation": "gpt-4.1-nano"}


LANGCHAIN_SESSIONS = 4


def build_langchain(out: Path) -> dict:
    import mlflow
    import openai
    from langchain_core.documents import Document
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    fake = FakeModels(langchain_plan(LANGCHAIN_MODELS)).start()
    uri, exp = _sqlite_store(mlflow, out)
    mlflow.langchain.autolog()
    base = fake.base_url + "/v1"

    @tool
    def lookup_order(order_id: int) -> str:
        """Look an order up."""
        return json.dumps(tool_lookup_order(order_id))

    @tool
    def check_inventory(sku: str) -> str:
        """Check whether a product is in stock."""
        return json.dumps(tool_check_inventory(sku))

    @tool
    def compute_refund(total: float, in_stock: bool) -> str:
        """Compute the refund for an order."""
        return json.dumps(tool_compute_refund(total, in_stock))

    @tool
    def validate_refund(order_id: int, refund: float) -> str:
        """Check a refund against what was paid."""
        return json.dumps(tool_validate_refund(order_id, refund))

    @tool
    def issue_refund(order_id: int, refund: float) -> str:
        """Pay a refund out."""
        return json.dumps(tool_issue_refund(order_id, refund))

    tools = [lookup_order, check_inventory, compute_refund, validate_refund, issue_refund]

    class PolicyRetriever(BaseRetriever):
        def _get_relevant_documents(self, query, *, run_manager=None):
            order = order_of(query) or 0
            return [Document(page_content=d) for d in retrieve_policy_docs(query, turn_of_order(order))]

    retriever = PolicyRetriever()
    classifier = ChatOpenAI(model=LANGCHAIN_MODELS["classifier"], base_url=base, api_key=DUMMY_KEY, max_retries=2)
    agent_llm = ChatOpenAI(model=LANGCHAIN_MODELS["agent"], base_url=base, api_key=DUMMY_KEY, max_retries=0)
    agent = agent_llm.bind_tools(tools).with_retry(
        stop_after_attempt=3, wait_exponential_jitter=False, retry_if_exception_type=(openai.RateLimitError,))
    summary_llm = ChatOpenAI(model=LANGCHAIN_MODELS["summary"], base_url=base, api_key=DUMMY_KEY, max_retries=2)
    summary_chain = (ChatPromptTemplate.from_messages([("system", "summary: summarize the reply in one line."),
                                                       ("human", "{answer}")]) | summary_llm | StrOutputParser())
    moderation = ChatOpenAI(model=LANGCHAIN_MODELS["moderation"], base_url=base, api_key=DUMMY_KEY, max_retries=2)

    class State(MessagesState):
        policy: str

    def classify(state):
        question = state["messages"][-1].content
        classifier.invoke([SystemMessage("classifier: answer with one word: refund, status or other."),
                           HumanMessage(question)])
        return {}

    def retrieve(state):
        docs = retriever.invoke(state["messages"][-1].content)
        return {"policy": " ".join(d.page_content for d in docs)}

    def call_agent(state):
        system = SystemMessage("agent: You are a support agent for an online shop. Policy: " + state["policy"])
        return {"messages": [agent.invoke([system, *state["messages"]])]}

    def route(state):
        return "tools" if state["messages"][-1].tool_calls else END

    graph = StateGraph(State)
    graph.add_node("classify", classify)
    graph.add_node("retrieve", retrieve)
    graph.add_node("agent", call_agent)
    graph.add_node("tools", ToolNode(tools, handle_tool_errors=True))
    graph.add_edge(START, "classify")
    graph.add_edge("classify", "retrieve")
    graph.add_edge("retrieve", "agent")
    graph.add_conditional_edges("agent", route, ["tools", END])
    graph.add_edge("tools", "agent")
    app = graph.compile(checkpointer=InMemorySaver())

    @mlflow.trace(name="support_turn", span_type="AGENT")
    def turn(question: str, thread: str):
        result = app.invoke({"messages": [HumanMessage(question)]}, config={"configurable": {"thread_id": thread}})
        answer = result["messages"][-1].content
        summary_chain.batch([{"answer": answer}, {"answer": answer}])  # UI and audit log, same input
        moderation.invoke([SystemMessage("moderation: reply ok when the text is safe."), HumanMessage(answer)])
        return answer

    turns = []
    g = 0
    for s in range(1, LANGCHAIN_SESSIONS + 1):
        thread = f"support-langchain-{s}"
        for t in range(TURNS):
            g += 1
            record = {"turn": g, "session": thread, "order": 1000 + g, "ok": True}
            try:
                turn(QUESTIONS[t].format(o=1000 + g), thread)
            except openai.APIStatusError as exc:
                record.update(ok=False, error=type(exc).__name__)
            turns.append(record)
    fake.stop()
    problems = [
        {"kind": "rate_limited_and_retried", "category": "retry_issue", "span": "ChatOpenAI",
         "exception_type": "OpenAIRateLimitError"},  # langchain-openai's subclass of openai's
        {"kind": "tool_raises", "category": "error_pattern", "span": "validate_refund", "exception_type": "ValueError"},
        {"kind": "dominant_sequential_tool", "category": "latency_issue", "span": "check_inventory"},
        {"kind": "bimodal_retriever", "category": "latency_issue", "span": "PolicyRetriever"},
        {"kind": "duplicate_identical_calls", "category": "inefficient_pattern", "span": "ChatOpenAI"},
        {"kind": "growing_prompt", "category": "high_cost", "span": "ChatOpenAI"},
        {"kind": "expensive_model_tiny_task", "category": "high_cost", "span": "ChatOpenAI"},
        {"kind": "missing_usage", "category": "missing_instrumentation", "span": "ChatOpenAI"},
    ]
    return {"tracking_uri": uri, "experiment_id": exp, "truth": ground_truth(fake.requests), "problems": problems,
            "turns": turns, "dependent_pairs": [["validate_refund", "issue_refund"]],
            "never_failing_spans": ["lookup_order", "check_inventory", "compute_refund", "issue_refund",
                                    "PolicyRetriever", "classify", "retrieve"],
            "wrappers": ["RunnableSequence", "support_turn", "LangGraph", "agent"],
            "sessions": sorted({t["session"] for t in turns}), "slow_retrieval_turns": sorted(SLOW_RETRIEVAL)}


# --- OpenTelemetry instrumentation exporting over OTLP to a real mlflow server ---------------


def _otel_provider(server_url: str, experiment_id: str, service: str):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"{server_url}/v1/traces",
                                headers={"x-mlflow-experiment-id": experiment_id}, timeout=30)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    return provider


def _wait_for_traces(server_url: str, experiment_id: str, count: int) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(server_url)
    deadline = time.time() + 120
    while time.time() < deadline:
        traces = client.search_traces(locations=[experiment_id], include_spans=False, max_results=500)
        if len(traces) >= count and all(str(t.info.state).endswith("OK") or str(t.info.state).endswith("ERROR")
                                        for t in traces):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the server holds {len(traces)} of {count} traces")


def _otel_support(out: Path, server_url: str, convention: str) -> dict:
    import openai
    from mlflow import MlflowClient

    exp = MlflowClient(server_url).create_experiment(f"realworld-{convention}-{os.getpid()}-{int(time.time())}")
    provider = _otel_provider(server_url, exp, f"support-{convention}")
    if convention == "genai":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    else:
        from openinference.instrumentation.openai import OpenAIInstrumentor
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    fake = FakeModels(support_plan("openai", OPENAI_MODELS)).start()
    client = openai.OpenAI(base_url=fake.base_url + "/v1", api_key=DUMMY_KEY, max_retries=2)
    spans = OtelSpans(provider.get_tracer("support-desk"), convention)
    turns = run_support_openai(client, spans, OPENAI_MODELS, f"support-{convention}", openai)
    fake.stop()
    provider.force_flush()
    provider.shutdown()
    _wait_for_traces(server_url, exp, len(turns))
    return {"tracking_uri": server_url, "experiment_id": exp, "truth": ground_truth(fake.requests), "turns": turns}


def build_otel_genai(out: Path, server_url: str) -> dict:
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
    os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "span_only"
    base = _otel_support(out, server_url, "genai")
    llm = "chat gpt-4o-mini"  # the instrumentor names spans "{operation} {model}"
    tool = lambda n: f"execute_tool {n}"  # noqa: E731
    problems = support_problems(llm, wrapper_names={"tool": tool, "agent": "invoke_agent support_turn"})
    for p in problems:  # the classifier's span is named after its model
        if p["kind"] == "expensive_model_tiny_task":
            p["span"] = "chat gpt-4o"
        if p["kind"] == "missing_usage":
            p["span"] = "chat gpt-4.1-nano"
    facts = support_facts(base["turns"], llm, tool)
    facts["wrappers"] = ["summarize", "invoke_agent support_turn"]
    return {**base, "problems": problems, **facts}


def build_openinference(out: Path, server_url: str) -> dict:
    # OpenInference writes one attribute per message field: the SDK's default limit of 128
    # attributes would drop the oldest ones of a long conversation.
    os.environ["OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"] = "4096"
    base = _otel_support(out, server_url, "openinference")
    llm = "ChatCompletion"
    return {**base, "problems": support_problems(llm), **support_facts(base["turns"], llm)}


def _sqlite_store(mlflow, out: Path) -> tuple[str, str]:
    uri = f"sqlite:///{out / 'store.db'}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.set_experiment("realworld").experiment_id
    return uri, exp


CORPORA = {"openai": build_openai, "anthropic": build_anthropic, "langchain": build_langchain,
           "otel_genai": build_otel_genai, "openinference": build_openinference}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", choices=sorted(CORPORA))
    ap.add_argument("out", type=Path)
    ap.add_argument("--server-url")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(args.out)  # no git metadata from the caller's checkout, no mlruns/ left behind
    kw = {"server_url": args.server_url} if args.server_url else {}
    manifest = {"corpus": args.corpus, **CORPORA[args.corpus](args.out, **kw)}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
