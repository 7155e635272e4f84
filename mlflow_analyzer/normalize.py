"""Raw trace JSON -> the normalized model. The one module that knows attribute keys.

Three conventions are read:

* MLflow (``mlflow.spanType``, ``mlflow.chat.tokenUsage``, ``mlflow.llm.model`` ...), whose
  attribute values are JSON-encoded strings (``"\\"TOOL\\""``);
* OpenTelemetry GenAI semantic conventions (``gen_ai.*``);
* OpenInference (``openinference.span.kind``, ``llm.token_count.*``, ``input.value``).

Span ids in span JSON are base64 (``6kyDDmMvnmQ=``) while assessments cite hex
(``ea4c830e632f9e64``): every id leaves this module as lowercase hex.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from typing import Any, Iterable

from .errors import InputError
from .model import Assessment, Span, Trace

# --- attribute keys ---------------------------------------------------------------------

SPAN_TYPE = "mlflow.spanType"
SPAN_INPUTS = "mlflow.spanInputs"
SPAN_OUTPUTS = "mlflow.spanOutputs"
CHAT_USAGE = "mlflow.chat.tokenUsage"
LLM_MODEL = "mlflow.llm.model"
LLM_PROVIDER = "mlflow.llm.provider"
LLM_COST = "mlflow.llm.cost"

OI_KIND = "openinference.span.kind"
OI_PROMPT_TOKENS = "llm.token_count.prompt"
OI_COMPLETION_TOKENS = "llm.token_count.completion"
OI_TOTAL_TOKENS = "llm.token_count.total"
OI_CACHE_READ = "llm.token_count.prompt_details.cache_read"
OI_CACHE_WRITE = "llm.token_count.prompt_details.cache_write"
OI_MODEL = "llm.model_name"
OI_PROVIDER = ("llm.provider", "llm.system")
OI_INPUT = "input.value"
OI_OUTPUT = "output.value"

GENAI_OPERATION = "gen_ai.operation.name"
GENAI_MODEL = ("gen_ai.response.model", "gen_ai.request.model")
GENAI_PROVIDER = ("gen_ai.provider.name", "gen_ai.system")
GENAI_INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
GENAI_OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
GENAI_TOTAL_TOKENS = ("gen_ai.usage.total_tokens",)
GENAI_CACHE_READ = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
GENAI_CACHE_WRITE = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
)
GENAI_INPUT = ("gen_ai.input.messages", "gen_ai.prompt")
GENAI_OUTPUT = ("gen_ai.output.messages", "gen_ai.completion")

# --- trace metadata and tag keys ----------------------------------------------------------

META_TOKEN_USAGE = "mlflow.trace.tokenUsage"
META_COST = "mlflow.trace.cost"
META_SESSION = "mlflow.trace.session"
META_USER = "mlflow.trace.user"
META_GIT_BRANCH = "mlflow.source.git.branch"
META_GIT_COMMIT = "mlflow.source.git.commit"
META_SOURCE_NAME = "mlflow.source.name"
META_INPUTS = "mlflow.traceInputs"
META_OUTPUTS = "mlflow.traceOutputs"
TAG_TRACE_NAME = "mlflow.traceName"
TAG_SPANS_LOCATION = "mlflow.trace.spansLocation"

_OI_KIND_TO_TYPE = {
    "LLM": "LLM",
    "CHAIN": "CHAIN",
    "TOOL": "TOOL",
    "RETRIEVER": "RETRIEVER",
    "EMBEDDING": "EMBEDDING",
    "AGENT": "AGENT",
    "RERANKER": "RERANKER",
    "GUARDRAIL": "GUARDRAIL",
    "EVALUATOR": "EVALUATOR",
}
_GENAI_OP_TO_TYPE = {
    "chat": "CHAT_MODEL",
    "text_completion": "LLM",
    "generate_content": "LLM",
    "embeddings": "EMBEDDING",
    "execute_tool": "TOOL",
    "invoke_agent": "AGENT",
    "create_agent": "AGENT",
}
_STATUS = {
    "STATUS_CODE_OK": "OK",
    "STATUS_CODE_ERROR": "ERROR",
    "STATUS_CODE_UNSET": "UNSET",
    "OK": "OK",
    "ERROR": "ERROR",
    "UNSET": "UNSET",
    0: "UNSET",
    1: "OK",
    2: "ERROR",
}
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_EXC_PREFIX = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Timeout|Exceeded|Failure|Interrupt|Exit))\s*:\s*(.*)$", re.S)


# --- small decoders -------------------------------------------------------------------------


def decode_value(value: Any) -> Any:
    """Decode one attribute value: MLflow stores each as a JSON-encoded string."""
    if isinstance(value, str) and value:
        c = value[0]
        if c in '"{[-0123456789tfn':
            try:
                return json.loads(value)
            except ValueError:
                return value
    return value


def decode_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: decode_value(v) for k, v in attrs.items()}


def to_hex_id(span_id: Any) -> str | None:
    """A span id as 16 lowercase hex digits, from base64 (span JSON) or hex (assessments)."""
    if span_id is None or span_id == "":
        return None
    if isinstance(span_id, int):
        return f"{span_id:016x}"
    s = str(span_id)
    low = s.lower()
    if _HEX16.match(low):
        return low
    if low.startswith("0x") and _HEX16.match(low[2:]):  # "0x…" hex, not base64 that starts so
        return low[2:]
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return low
    return raw.hex() if raw else low


def _int(value: Any) -> int | None:
    value = decode_value(value)
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return None


def _fast_int(value: Any) -> int | None:
    return value if type(value) is int else None if value is None else _int(value)


def _float(value: Any) -> float | None:
    value = decode_value(value)
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    value = decode_value(value)
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _first(attrs: dict[str, Any], keys: Iterable[str]) -> Any:
    for k in keys:
        if k in attrs:
            return attrs[k]
    return None


def _as_json_text(value: Any) -> str | None:
    """Inputs/outputs kept as JSON text: MLflow's already is; other conventions' may not be."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            inner = json.loads(value)
        except ValueError:
            return json.dumps(value)
        # A JSON-encoded string holding JSON (OpenInference through MLflow): unwrap once.
        if isinstance(inner, str):
            try:
                json.loads(inner)
                return inner
            except ValueError:
                return value
        return value
    return json.dumps(value, default=str)


# --- spans -----------------------------------------------------------------------------------


def span_from_dict(d: dict[str, Any]) -> Span:
    """One span of ``Trace.to_dict()["data"]["spans"]`` (also the SQL store's span content)."""
    if not isinstance(d, dict) or "span_id" not in d or "name" not in d:
        raise InputError("a span lacks 'span_id' or 'name': this is not MLflow span JSON")
    attrs = d.get("attributes") or {}
    status = d.get("status") or {}
    if isinstance(status, str):
        status = {"code": status}
    code = _STATUS.get(status.get("code"), "UNSET")
    status_message = status.get("message") or ""

    start_ns = _int(d.get("start_time_unix_nano")) or 0
    end_ns = _int(d.get("end_time_unix_nano"))
    if end_ns is None or end_ns < start_ns:
        end_ns = start_ns

    has_mlflow = SPAN_TYPE in attrs or CHAT_USAGE in attrs or LLM_MODEL in attrs
    has_oi = OI_KIND in attrs or OI_PROMPT_TOKENS in attrs or OI_MODEL in attrs
    has_genai = any(k.startswith("gen_ai.") for k in attrs)
    convention = "mlflow" if has_mlflow else "openinference" if has_oi else (
        "gen_ai" if has_genai else None
    )

    span_type = _str(attrs.get(SPAN_TYPE))
    if not span_type or span_type == "UNKNOWN":
        kind = _str(attrs.get(OI_KIND))
        op = _str(attrs.get(GENAI_OPERATION))
        span_type = (
            _OI_KIND_TO_TYPE.get((kind or "").upper())
            or _GENAI_OP_TO_TYPE.get((op or "").lower())
            or span_type
            or "UNKNOWN"
        )

    # Token usage: MLflow's dict first, then GenAI, then OpenInference.
    inp = out = tot = cache_r = cache_w = None
    usage = decode_value(attrs.get(CHAT_USAGE))
    if isinstance(usage, dict):
        inp, out, tot, cache_r, cache_w = _usage(usage)
    else:
        inp = _int(_first(attrs, GENAI_INPUT_TOKENS))
        out = _int(_first(attrs, GENAI_OUTPUT_TOKENS))
        tot = _int(_first(attrs, GENAI_TOTAL_TOKENS))
        cache_r = _int(_first(attrs, GENAI_CACHE_READ))
        cache_w = _int(_first(attrs, GENAI_CACHE_WRITE))
        if inp is None and out is None and tot is None:
            inp = _int(attrs.get(OI_PROMPT_TOKENS))
            out = _int(attrs.get(OI_COMPLETION_TOKENS))
            tot = _int(attrs.get(OI_TOTAL_TOKENS))
            cache_r = _int(attrs.get(OI_CACHE_READ))
            cache_w = _int(attrs.get(OI_CACHE_WRITE))
    if tot is None and (inp is not None or out is not None):
        tot = (inp or 0) + (out or 0)

    model = (
        _str(attrs.get(LLM_MODEL))
        or _str(_first(attrs, GENAI_MODEL))
        or _str(attrs.get(OI_MODEL))
    )
    provider = (
        _str(attrs.get(LLM_PROVIDER))
        or _str(_first(attrs, GENAI_PROVIDER))
        or _str(_first(attrs, OI_PROVIDER))
    )

    inputs_json = _as_json_text(
        attrs.get(SPAN_INPUTS) or attrs.get(OI_INPUT) or _first(attrs, GENAI_INPUT)
    )
    outputs_json = _as_json_text(
        attrs.get(SPAN_OUTPUTS) or attrs.get(OI_OUTPUT) or _first(attrs, GENAI_OUTPUT)
    )
    if model is None and span_type in ("LLM", "CHAT_MODEL") and inputs_json:
        model = _model_from_inputs(inputs_json)

    cost = None
    cost_val = decode_value(attrs.get(LLM_COST))
    if isinstance(cost_val, dict):
        cost = _float(cost_val.get("total_cost"))
        if cost is None:
            parts = [_float(cost_val.get(k)) for k in ("input_cost", "output_cost")]
            if any(p is not None for p in parts):
                cost = sum(p or 0.0 for p in parts)
    elif cost_val is not None:
        cost = _float(cost_val)

    error_type, error_message = _exception(d.get("events") or [], status_message, attrs)

    return Span(
        span_id=to_hex_id(d.get("span_id")) or "",
        parent_id=to_hex_id(d.get("parent_span_id") or d.get("parent_id")),
        name=str(d.get("name") or ""),
        span_type=span_type,
        status=code,
        start_ns=start_ns,
        end_ns=end_ns,
        status_message=status_message,
        error_type=error_type,
        error_message=error_message,
        inputs_json=inputs_json,
        outputs_json=outputs_json,
        model=model,
        provider=provider,
        input_tokens=inp,
        output_tokens=out,
        total_tokens=tot,
        cache_read_tokens=cache_r,
        cache_write_tokens=cache_w,
        cost_usd=cost,
        convention=convention,
        attributes=attrs,
    )


# The light read of a SQL store (statistics only): spans built from the spans table's columns,
# with token usage extracted by the database. A span whose columns cannot be trusted to say
# everything (an error, no type, an LLM call without model or usage) is read in full instead:
# LIGHT_SPAN_NEEDS_JSON is that rule, in SQL over the spans table.
LIGHT_USAGE_PATH = f'$.attributes."{CHAT_USAGE}"'
LIGHT_SPAN_NEEDS_JSON = (
    "status = 'ERROR' OR type IS NULL OR type = 'UNKNOWN' OR end_time_unix_nano IS NULL "
    "OR (type IN ('LLM', 'CHAT_MODEL') AND (model_name IS NULL "
    f"OR (json_extract(content, '{LIGHT_USAGE_PATH}') IS NULL "
    # usage under another convention's keys (an LLM span without any is read as it is)
    "AND (instr(content, '\"gen_ai.usage.') > 0 OR instr(content, '\"llm.token_count.') > 0))))"
)


def span_from_columns(
    span_id: str,
    parent_id: str | None,
    name: str | None,
    span_type: str,
    status: str,
    start_ns: int,
    end_ns: int | None,
    cost: float | None,
    model: str | None,
    provider: str | None,
    usage_json: str | None,
) -> Span:
    """A span for statistics from the spans table's columns (no inputs, outputs, events)."""
    inp = out = tot = cache_r = cache_w = None
    try:
        usage = json.loads(usage_json) if usage_json else None
    except ValueError:
        usage = None
    if isinstance(usage, dict):
        inp, out, tot, cache_r, cache_w = _usage(usage)
        if tot is None and (inp is not None or out is not None):
            tot = (inp or 0) + (out or 0)
    end = end_ns if end_ns is not None and end_ns >= start_ns else start_ns
    return Span(
        span_id=span_id,
        parent_id=parent_id or None,
        name=name or "",
        span_type=span_type,
        status=_STATUS.get(status, "UNSET"),
        start_ns=int(start_ns),
        end_ns=int(end),
        model=model,
        provider=provider,
        input_tokens=inp,
        output_tokens=out,
        total_tokens=tot,
        cache_read_tokens=cache_r,
        cache_write_tokens=cache_w,
        cost_usd=cost,
        convention="mlflow",
    )


def _usage(usage: dict) -> tuple:
    """(input, output, total, cache read, cache write) from mlflow.chat.tokenUsage's dict."""
    g = usage.get
    return (
        _fast_int(g("input_tokens")),
        _fast_int(g("output_tokens")),
        _fast_int(g("total_tokens")),
        _fast_int(g("cache_read_input_tokens")),
        _fast_int(g("cache_creation_input_tokens")),
    )


def _model_from_inputs(inputs_json: str) -> str | None:
    try:
        inputs = json.loads(inputs_json)
    except ValueError:
        return None
    if isinstance(inputs, dict):
        for key in ("model", "model_name"):
            if isinstance(inputs.get(key), str):
                return inputs[key]
        params = inputs.get("invocation_params")
        if isinstance(params, dict):
            for key in ("model", "model_name"):
                if isinstance(params.get(key), str):
                    return params[key]
    return None


def _exception(events: list, status_message: str, attrs: dict) -> tuple[str | None, str | None]:
    for ev in events:
        if isinstance(ev, dict) and ev.get("name") == "exception":
            ea = ev.get("attributes") or {}
            etype = _str(ea.get("exception.type"))
            emsg = _str(ea.get("exception.message"))
            if etype or emsg:
                return etype, emsg
    if status_message:
        m = _EXC_PREFIX.match(status_message.strip())
        if m:
            return m.group(1), m.group(2)
        return None, status_message
    etype = _str(attrs.get("error.type"))
    if etype:
        return etype, None
    return None, None


# --- assessments -------------------------------------------------------------------------------


def assessment_from_dict(d: dict[str, Any]) -> Assessment:
    source = d.get("source") or {}
    kind = "feedback"
    value = None
    err_code = err_msg = None
    if "feedback" in d and d["feedback"] is not None:
        fb = d["feedback"]
        value = fb.get("value")
        err = fb.get("error")
        if err:
            err_code = err.get("error_code") or "ERROR"
            err_msg = err.get("error_message")
    elif "expectation" in d and d["expectation"] is not None:
        kind = "expectation"
        value = d["expectation"].get("value")
        if value is None and "serialized_value" in d["expectation"]:
            value = decode_value((d["expectation"]["serialized_value"] or {}).get("value"))
    elif "issue" in d and d["issue"] is not None:
        kind = "issue"
        value = d["issue"].get("issue_name")
    return Assessment(
        assessment_id=str(d.get("assessment_id") or ""),
        name=str(d.get("assessment_name") or d.get("name") or ""),
        kind=kind,
        source_type=source.get("source_type"),
        source_id=source.get("source_id"),
        value=value,
        rationale=d.get("rationale"),
        error_code=err_code,
        error_message=err_msg,
        span_id=to_hex_id(d.get("span_id")),
        valid=d.get("valid", True) is not False,
    )


# --- traces --------------------------------------------------------------------------------------


def _time_ms(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, (int, float)):
        return int(value)
    s = str(value)
    if s.isdigit():
        return int(s)
    try:
        return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise InputError(f"unreadable trace request_time {s!r}") from None


def _json_dict(value: Any) -> dict:
    v = decode_value(value)
    return v if isinstance(v, dict) else {}


def trace_from_dict(d: dict[str, Any]) -> Trace:
    """A trace as ``mlflow traces get`` / ``Trace.to_dict()`` writes it."""
    if not isinstance(d, dict) or "info" not in d:
        raise InputError("not an MLflow trace: expected an object with 'info' and 'data'")
    info = d["info"] or {}
    data = d.get("data") or {}
    spans_raw = data.get("spans") if isinstance(data, dict) else None
    if spans_raw is None:
        spans_raw = []
    if not isinstance(spans_raw, list):
        raise InputError("not an MLflow trace: 'data.spans' is not a list")
    return trace_from_parts(info, spans_raw, info.get("assessments") or [])


def trace_from_parts(
    info: dict[str, Any], spans: list[dict[str, Any]], assessments: list[dict[str, Any]]
) -> Trace:
    """Build a Trace from its info (to_dict form), span JSON objects and assessment objects."""
    trace_id = info.get("trace_id") or info.get("request_id")
    if not trace_id:
        raise InputError("not an MLflow trace: 'info' has no 'trace_id'")
    location = info.get("trace_location") or {}
    experiment_id = (location.get("mlflow_experiment") or {}).get("experiment_id") or info.get(
        "experiment_id"
    )
    metadata = {k: v for k, v in (info.get("trace_metadata") or info.get("request_metadata") or {}).items()}
    tags = dict(info.get("tags") or {})
    state = str(info.get("state") or info.get("status") or "UNSET").upper()
    state = {"STATE_UNSPECIFIED": "UNSET"}.get(state, state)
    duration = info.get("execution_duration_ms", info.get("execution_time_ms"))

    span_objs = [s if isinstance(s, Span) else span_from_dict(s) for s in spans]
    trace = Trace(
        trace_id=str(trace_id),
        experiment_id=str(experiment_id) if experiment_id is not None else None,
        request_time_ms=_time_ms(info.get("request_time", info.get("timestamp_ms"))),
        state=state,
        duration_ms=float(duration) if duration is not None else None,
        spans=span_objs,
        assessments=[assessment_from_dict(a) for a in assessments],
        tags=tags,
        metadata=metadata,
        name=tags.get(TAG_TRACE_NAME),
        request_preview=info.get("request_preview"),
        response_preview=info.get("response_preview"),
        session_id=metadata.get(META_SESSION) or None,
        user_id=metadata.get(META_USER) or None,
        git_branch=metadata.get(META_GIT_BRANCH) or None,
        git_commit=metadata.get(META_GIT_COMMIT) or None,
    )
    trace.link()
    if trace.name is None and trace.root is not None:
        trace.name = trace.root.name
    if trace.duration_ms is None and trace.root is not None:
        trace.duration_ms = trace.root.duration_ms
    if trace.request_time_ms == 0 and span_objs:
        trace.request_time_ms = trace.start_ns // 1_000_000

    usage = _json_dict(metadata.get(META_TOKEN_USAGE))
    if usage:
        trace.input_tokens = _int(usage.get("input_tokens"))
        trace.output_tokens = _int(usage.get("output_tokens"))
        trace.total_tokens = _int(usage.get("total_tokens"))
    else:
        leaves = _innermost(trace, lambda s: s.has_usage)
        if leaves:
            trace.input_tokens = sum(s.input_tokens or 0 for s in leaves)
            trace.output_tokens = sum(s.output_tokens or 0 for s in leaves)
            trace.total_tokens = sum(s.tokens for s in leaves)
    cost = _json_dict(metadata.get(META_COST))
    if cost and _float(cost.get("total_cost")) is not None:
        trace.cost_usd = _float(cost.get("total_cost"))
    else:
        priced = _innermost(trace, lambda s: s.cost_usd is not None)
        if priced:
            trace.cost_usd = sum(s.cost_usd or 0.0 for s in priced)
    return trace


def _innermost(trace: Trace, has) -> list[Span]:
    """Spans with a property none of whose descendants has it (so nothing counts twice)."""
    out = []

    def visit(span: Span) -> bool:
        below = False
        for c in span.children:
            below = visit(c) or below
        if has(span) and not below:
            out.append(span)
            return True
        return below or has(span)

    for root in trace.roots:
        visit(root)
    return out


def trace_inputs(trace: Trace) -> Any:
    """The trace's request: mlflow.traceInputs metadata, else the root span's inputs."""
    raw = trace.metadata.get(META_INPUTS)
    if raw is not None:
        return decode_value(raw)
    return trace.root.inputs if trace.root else None


def trace_outputs(trace: Trace) -> Any:
    raw = trace.metadata.get(META_OUTPUTS)
    if raw is not None:
        return decode_value(raw)
    return trace.root.outputs if trace.root else None


def known_convention(trace: Trace) -> bool:
    """True when any span carries MLflow, GenAI or OpenInference attributes."""
    return not trace.spans or any(s.convention for s in trace.spans)
