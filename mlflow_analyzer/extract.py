"""jq over traces: named recipes on the normalized view, or any program on either view.

The normalized view (``Trace.to_dict()``) is what the recipes read: decoded attributes,
hex span ids, ``type``/``status``/``tokens``/``error`` per span, assessments always present
(an empty list when there are none). The raw view is MLflow's own JSON, with its traps
(JSON-encoded attribute strings, base64 span ids, no ``assessments`` key when empty).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from .errors import UsageError

# name -> (description, program). Programs see one trace (normalized view) at a time.
RECIPES: dict[str, tuple[str, str]] = {
    "errors": (
        "error spans with type, message, duration and whether they are the root cause",
        '.trace_id as $t | .spans[] | select(.status == "ERROR") '
        "| {trace_id: $t, span: .name, type, error, duration_ms, root_cause}",
    ),
    "llm": (
        "LLM / chat-model spans: model, tokens, cost, duration, status",
        '.trace_id as $t | .spans[] | select(.type == "LLM" or .type == "CHAT_MODEL") '
        "| {trace_id: $t, span: .name, model, provider, tokens, cost_usd, duration_ms, status}",
    ),
    "tools": (
        "tool spans: name, status, duration, inputs, error",
        '.trace_id as $t | .spans[] | select(.type == "TOOL") '
        "| {trace_id: $t, span: .name, status, duration_ms, inputs, error}",
    ),
    "retrievers": (
        "retriever spans: query inputs, number of documents returned, duration",
        '.trace_id as $t | .spans[] | select(.type == "RETRIEVER") '
        "| {trace_id: $t, span: .name, status, duration_ms, inputs, "
        "documents: (if (.outputs | type) == \"array\" then (.outputs | length) else null end)}",
    ),
    "slow": (
        "the five spans with the most self time in each trace",
        ".trace_id as $t | .duration_ms as $d | [.spans[] | {trace_id: $t, span: .name, type, "
        "self_ms, duration_ms, share_of_trace: (if $d then (.self_ms / $d) else null end)}] "
        "| sort_by(-.self_ms) | .[:5][]",
    ),
    "io": (
        "each trace's request and response (the root span's inputs and outputs)",
        "{trace_id, state, duration_ms, session_id, "
        "inputs: (.spans[0].inputs // .request_preview), outputs: (.spans[0].outputs // .response_preview)}",
    ),
    "assessments": (
        "assessments with value, rationale, source, and judge errors told apart",
        ".trace_id as $t | .state as $state | .assessments[] | {trace_id: $t, trace_state: $state, "
        "name, kind, value, passed, rationale, source_type, judge_error: .error, span_id}",
    ),
    "spans": (
        "a compact row per span: name, type, status, duration, self time, model, tokens",
        ".trace_id as $t | .spans[] | {trace_id: $t, span: .name, type, status, depth, "
        "start_offset_ms, duration_ms, self_ms, model, total_tokens: .tokens.total}",
    ),
    "summary": (
        "one row per trace: state, duration, span count, tokens, cost, session",
        "{trace_id, state, request_time, duration_ms, spans: (.spans | length), "
        "errors: ([.spans[] | select(.status == \"ERROR\")] | length), tokens: .tokens.total, "
        "cost_usd, session_id}",
    ),
}

# Traces a recipe can produce results for, as SQL over the spans table (a SQL store skips the
# others; any source gives the same results without it). A span whose type column says
# nothing (OpenTelemetry spans typed by their attributes) always qualifies.
_UNTYPED = "type IS NULL OR type IN ('', 'UNKNOWN')"
RECIPE_SPANS: dict[str, str] = {
    "errors": "status = 'ERROR'",
    "llm": f"type IN ('LLM', 'CHAT_MODEL') OR {_UNTYPED}",
    "tools": f"type = 'TOOL' OR {_UNTYPED}",
    "retrievers": f"type = 'RETRIEVER' OR {_UNTYPED}",
}


def recipe_help() -> str:
    width = max(len(n) for n in RECIPES)
    return "\n".join(f"  {n:<{width}}  {d}" for n, (d, _) in RECIPES.items())


def compile_program(program: str):
    import jq

    try:
        return jq.compile(program)
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UsageError(f"jq program does not compile: {first}") from None


def run_program(compiled, docs: Iterable[tuple[str, Any]]) -> Iterator[Any]:
    """Yield every output of the program over each (trace_id, document)."""
    for trace_id, doc in docs:
        try:
            results = compiled.input_value(doc).all()
        except ValueError as exc:
            first = str(exc).strip().splitlines()[0]
            raise UsageError(f"jq failed on trace {trace_id}: {first}") from None
        yield from results


def clip_strings(value: Any, limit: int) -> Any:
    """Shorten long strings inside a result, saying how much was cut. Credentials are
    redacted first (a key cut in half would not be recognised any more)."""
    from .redact import redact_value

    return _clip_strings(redact_value(value), limit)


def _clip_strings(value: Any, limit: int) -> Any:
    if limit <= 0:
        return value
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"…[+{len(value) - limit} chars]"
    if isinstance(value, list):
        return [_clip_strings(v, limit) for v in value]
    if isinstance(value, dict):
        return {k: _clip_strings(v, limit) for k, v in value.items()}
    return value


def normalized_view(trace) -> dict[str, Any]:
    d = trace.to_dict(io=True)
    causes = {s.span_id for s in trace.root_causes()}
    for s in d["spans"]:
        s["root_cause"] = s["span_id"] in causes
    return d
