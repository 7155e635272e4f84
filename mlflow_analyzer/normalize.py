"""Raw trace JSON -> the normalized model. The one module that knows attribute keys.

Two trace schemas are read:

* MLflow 3 (``Trace.to_dict()``, ``mlflow traces get``): ``info.trace_id``, ``request_time``,
  ``state``, ``trace_metadata``; spans with ``span_id``, ``parent_span_id``,
  ``start_time_unix_nano``, ``status{code, message}``;
* MLflow 2.x (trace schema v2, MLflow 2.14-2.22, still in MLflow's own test fixtures):
  ``info.request_id``, ``timestamp_ms``, ``execution_time_ms``, ``status``,
  ``request_metadata``; spans with ``context.span_id``, ``parent_id``, ``start_time``,
  ``end_time``, ``status_code``/``status_message``, events with ``timestamp``.

Three attribute conventions are read:

* MLflow (``mlflow.spanType``, ``mlflow.chat.tokenUsage``, ``mlflow.llm.model`` ...), whose
  attribute values are JSON-encoded strings (``"\\"TOOL\\""``);
* OpenTelemetry GenAI semantic conventions (``gen_ai.*``, ``error.type``, ``user.id``,
  ``session.id``);
* OpenInference (``openinference.span.kind``, ``llm.token_count.*``, ``input.value``,
  ``session.id``, ``user.id``, ``tool.name``).

Span ids in span JSON are base64 (``6kyDDmMvnmQ=``), hex with ``0x`` in schema v2, while
assessments cite plain hex (``ea4c830e632f9e64``): every id leaves this module as lowercase hex.

Input is validated here, once: a value of the wrong type or out of range raises
:class:`~mlflow_analyzer.errors.MalformedTrace` naming the field (``data.spans[3].status``),
so that nothing downstream meets a string where it expects an object, an infinite duration
or a year-0 timestamp. Checks are type checks, not re-parsing. JSON nested deeper than
:data:`MAX_DEPTH` inside an attribute string is kept as text; as a container in the document
itself, it makes the trace malformed (no later ``json.dumps`` or jq can choke on it).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from .errors import MalformedTrace
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

# Who and which conversation, on spans (OpenTelemetry GenAI and general conventions,
# OpenInference): read when the trace metadata lacks MLflow's own keys.
SPAN_SESSION = ("session.id", "gen_ai.conversation.id")
SPAN_USER = ("user.id", "enduser.id")
TOOL_NAME = ("gen_ai.tool.name", "tool.name")
ERROR_TYPE = "error.type"  # OpenTelemetry: the error class (an exception type, "429", "timeout")

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
# An experiment tag (MLflow 3.18): the level names of hierarchical session ids, JSON
# {"version": 1, "levels": [{"name": "trip"}, ...]}, outermost first.
EXPERIMENT_SESSION_HIERARCHY = "mlflow.experiment.sessionHierarchy"

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
# OpenTelemetry SpanKind, as MLflow 3.18 writes it ("SPAN_KIND_CLIENT", the OTLP enum name),
# as the SDK enum prints it ("SpanKind.CLIENT"), or as the OTLP number.
SPAN_KINDS = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_KIND_NUMBER = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATE = {"STATE_UNSPECIFIED": "UNSET", "TRACE_STATUS_UNSPECIFIED": "UNSET", "": "UNSET"}
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_EXC_PREFIX = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Timeout|Exceeded|Failure|Interrupt|Exit))\s*:\s*(.*)$", re.S)

# --- ranges -------------------------------------------------------------------------------

MAX_NS = 2**63 - 1  # OpenTelemetry and MLflow keep nanoseconds in a signed 64-bit integer
MAX_MS = MAX_NS // 1_000_000  # the same instant in milliseconds (year 2262)
MAX_COUNT = 2**53  # token counts: past this, a float could not even hold the value
MAX_USD = 1e12
MAX_DEPTH = 64  # JSON nesting kept as structure; deeper values stay text
_DEPTH_SCAN_MIN = MAX_DEPTH  # a string with fewer brackets than this cannot be too deep


# --- safe JSON ------------------------------------------------------------------------------

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# A JSON string without escapes, quotes or control characters inside: its value is the text
# between the quotes (most attribute values: span types, models, providers, names).
_PLAIN_JSON_STRING = re.compile(r'"[^"\\\x00-\x1f]*"\Z')


def load_json(text: str | bytes) -> Any:
    """``json.loads`` that fails only with ValueError: nesting past the parser's recursion
    limit and lone UTF-16 surrogates (which no UTF-8 output can encode) included.

    (orjson was tried here: it reads integers past 64 bits as floats, and the scan that
    guards against it cost more than orjson saved on span JSON.)"""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested deeper than the parser allows") from None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        value = scrub_surrogates(value)
    return value


def _scrub(s: str) -> str:
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


def scrub_surrogates(value: Any) -> Any:
    """The value with lone surrogates in its strings (and keys) replaced by '?'."""
    if isinstance(value, str):
        return _scrub(value)
    if not isinstance(value, (dict, list)):
        return value
    root = [value]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    while stack:
        parent, key, node = stack.pop()
        if isinstance(node, str):
            parent[key] = _scrub(node)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                if isinstance(v, (str, list, dict)):
                    stack.append((node, i, v))
        elif isinstance(node, dict):
            if any(isinstance(k, str) and _scrub(k) is not k for k in node):
                fixed = {(_scrub(k) if isinstance(k, str) else k): v for k, v in node.items()}
                node.clear()
                node.update(fixed)
            for k, v in node.items():
                if isinstance(v, (str, list, dict)):
                    stack.append((node, k, v))
    return root[0]


def nesting_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Depth of a JSON value (a scalar is 0), counted without recursion; stops past ``limit``."""
    if not isinstance(value, (dict, list)):
        return 0
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        children = node.values() if isinstance(node, dict) else node
        for c in children:
            if isinstance(c, (dict, list)):
                stack.append((c, depth + 1))
    return deepest


def _too_deep(value: Any) -> bool:
    return nesting_depth(value) > MAX_DEPTH


# --- small decoders -------------------------------------------------------------------------


def decode_value(value: Any) -> Any:
    """Decode one attribute value: MLflow stores each as a JSON-encoded string. Text that is
    not JSON, or JSON nested deeper than MAX_DEPTH, stays the string it was."""
    if isinstance(value, str) and value:
        c = value[0]
        if c == '"' and _PLAIN_JSON_STRING.match(value):
            return value[1:-1]
        if c in '"{[-0123456789tfn':
            try:
                decoded = load_json(value)
            except ValueError:
                return value
            if (
                c in "{["
                and len(value) > _DEPTH_SCAN_MIN
                and value.count("[") + value.count("{") > _DEPTH_SCAN_MIN
                and _too_deep(decoded)
            ):
                return value
            if type(decoded) is float and not math.isfinite(decoded):
                return value  # "NaN", "Infinity", 1e400: not numbers anything can add up
            return decoded
    return value


def decode_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: decode_value(v) for k, v in attrs.items()}


def to_hex_id(span_id: Any) -> str | None:
    """A span id as 16 lowercase hex digits, from base64 (span JSON) or hex (assessments)."""
    if span_id is None or span_id == "":
        return None
    if type(span_id) is int:
        return f"{span_id:016x}" if span_id >= 0 else str(span_id)
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


# --- checked readers: each returns a value of the right type, or raises MalformedTrace --------


def describe(value: Any) -> str:
    """A short description of a value for an error message (never a long echo of it: trace
    text may hold secrets and control characters)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        text = str(value) if abs(value) < 10**30 else f"a {len(str(abs(value)))}-digit number"
        return text
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        if len(value) <= 24 and value.isprintable():
            return repr(value)
        return f"a {len(value)}-character string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _whole(value: Any, field: str, high: int, what: str) -> int | None:
    """A whole number in [0, high], from an int, an integral finite float or digit text."""
    t = type(value)
    if t is int:
        n = value
    elif value is None:
        return None
    elif t is float:
        if not math.isfinite(value):
            raise MalformedTrace(field, f"expected {what}, got {describe(value)}")
        if not value.is_integer():
            raise MalformedTrace(field, f"expected {what}, got {describe(value)}")
        if not -high <= value <= high:
            raise MalformedTrace(field, f"{what} out of range: {describe(value)}")
        n = int(value)
    elif t is str:
        s = value.strip()
        if s.isdigit() and len(s) <= 25:
            n = int(s)
        elif s.startswith("-") and s[1:].isdigit() and len(s) <= 26:
            n = int(s)
        else:
            raise MalformedTrace(field, f"expected {what}, got {describe(value)}")
    else:
        raise MalformedTrace(field, f"expected {what}, got {describe(value)}")
    if n < 0:
        raise MalformedTrace(field, f"{what} is negative: {describe(n)}")
    if n > high:
        raise MalformedTrace(field, f"{what} out of range: {describe(n)}")
    return n


def _count(value: Any, field: str) -> int | None:
    """A token count: decoded attribute value, whole and non-negative, or None."""
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value
    if type(value) is str:
        value = decode_value(value)
    return _whole(value, field, MAX_COUNT, "a token count")


def _ns(value: Any, field: str) -> int | None:
    if type(value) is int and 0 <= value <= MAX_NS:
        return value
    return _whole(value, field, MAX_NS, "a time in nanoseconds")


def _amount(value: Any, field: str, high: float, what: str) -> float | None:
    """A finite, non-negative number (a duration, a cost)."""
    if value is None:
        return None
    t = type(value)
    if t is str:
        try:
            value = float(value.strip())
        except ValueError:
            raise MalformedTrace(field, f"expected {what}, got {describe(value)}") from None
    elif t is not int and t is not float:
        raise MalformedTrace(field, f"expected {what}, got {describe(value)}")
    try:
        x = float(value)
    except OverflowError:
        raise MalformedTrace(field, f"{what} out of range: {describe(value)}") from None
    if not math.isfinite(x):
        raise MalformedTrace(field, f"expected {what}, got {describe(value)}")
    if x < 0:
        raise MalformedTrace(field, f"{what} is negative: {describe(value)}")
    if x > high:
        raise MalformedTrace(field, f"{what} out of range: {describe(value)}")
    return x


def _cost_value(value: Any, field: str) -> float | None:
    if type(value) is str:
        value = decode_value(value)
    return _amount(value, field, MAX_USD, "a cost in USD")


def _obj(value: Any, field: str) -> dict:
    """An object, or {} for null/absent."""
    if type(value) is dict:
        return value
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise MalformedTrace(field, f"expected an object, got {describe(value)}")


def _list(value: Any, field: str) -> list:
    if type(value) is list:
        return value
    if value is None:
        return []
    raise MalformedTrace(field, f"expected a list, got {describe(value)}")


def _text(value: Any, field: str) -> str | None:
    """A string field of the trace JSON: a string, a number written as text, or None."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, bool):
        raise MalformedTrace(field, f"expected a string, got {describe(value)}")
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return str(value)
    raise MalformedTrace(field, f"expected a string, got {describe(value)}")


def _str(value: Any) -> str | None:
    """A string from a (decoded) attribute value; containers become their JSON text."""
    value = decode_value(value)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _label(value: Any) -> str | None:
    """A short identifying string (model, provider, session, user, tool): scalars only."""
    value = decode_value(value)
    if value is None or value == "" or isinstance(value, (dict, list, bool)):
        return None
    return value if isinstance(value, str) else str(value)


def _first(attrs: dict[str, Any], keys: Iterable[str]) -> Any:
    for k in keys:
        if k in attrs:
            return attrs[k]
    return None


def _first_key(attrs: dict[str, Any], keys: Iterable[str]) -> str | None:
    for k in keys:
        if k in attrs:
            return k
    return None


def _as_json_text(value: Any) -> str | None:
    """Inputs/outputs kept as JSON text: MLflow's already is; other conventions' may not be."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            inner = load_json(value)
        except ValueError:
            return json.dumps(value)
        # A JSON-encoded string holding JSON (OpenInference through MLflow): unwrap once.
        if isinstance(inner, str):
            try:
                load_json(inner)
                return inner
            except ValueError:
                return value
        return value
    return json.dumps(value, default=str)


def _checked_tree(value: Any, field: str) -> Any:
    """A JSON container held in the document itself: refuse it past MAX_DEPTH."""
    if isinstance(value, (dict, list)) and _too_deep(value):
        raise MalformedTrace(field, f"nested deeper than {MAX_DEPTH} levels")
    return value


# --- spans -----------------------------------------------------------------------------------


def span_kind(value: Any) -> str | None:
    """OpenTelemetry SpanKind as one word (CLIENT, SERVER, INTERNAL, PRODUCER, CONSUMER), from
    MLflow 3.18's "SPAN_KIND_CLIENT", the SDK's "SpanKind.CLIENT" or the OTLP number. Anything
    else is None: the kind never stops a trace from being read."""
    if type(value) is int:
        return _KIND_NUMBER.get(value)
    if not isinstance(value, str) or not value:
        return None
    word = value.strip().upper().rsplit(".", 1)[-1]
    if word.startswith("SPAN_KIND_"):
        word = word[len("SPAN_KIND_"):]
    return word if word in SPAN_KINDS else None


def span_from_dict(d: dict[str, Any]) -> Span:
    """One span of ``Trace.to_dict()["data"]["spans"]`` (also the SQL store's span content),
    in MLflow 3 or MLflow 2.x (schema v2) form. Raises MalformedTrace naming the field."""
    if type(d) is not dict:
        raise MalformedTrace("", f"expected a span object, got {describe(d)}")
    v2 = "span_id" not in d and "context" in d
    if v2:
        context = _obj(d.get("context"), "context")
        raw_id = context.get("span_id")
        id_field = "context.span_id"
        raw_parent = d.get("parent_id")
        parent_field = "parent_id"
        start_key, end_key = "start_time", "end_time"
    else:
        raw_id = d.get("span_id")
        id_field = "span_id"
        raw_parent = d.get("parent_span_id")
        parent_field = "parent_span_id"
        if raw_parent is None and "parent_id" in d:
            raw_parent, parent_field = d.get("parent_id"), "parent_id"
        start_key, end_key = "start_time_unix_nano", "end_time_unix_nano"
    if raw_id is None or raw_id == "":
        raise MalformedTrace(id_field, "missing: this is not MLflow span JSON")
    if type(raw_id) is not str and type(raw_id) is not int:
        raise MalformedTrace(id_field, f"expected a string, got {describe(raw_id)}")
    if raw_parent is not None and type(raw_parent) is not str and type(raw_parent) is not int:
        raise MalformedTrace(parent_field, f"expected a string or null, got {describe(raw_parent)}")
    if "name" not in d:
        raise MalformedTrace("name", "missing: this is not MLflow span JSON")
    name = _text(d.get("name"), "name") or ""

    attrs = d.get("attributes")
    if type(attrs) is not dict:
        attrs = _obj(attrs, "attributes")
    for k, v in attrs.items():
        if v is not None and type(v) is not str and isinstance(v, (dict, list)):
            _checked_tree(v, f"attributes[{json.dumps(k)[:60]}]")

    # Status: {"code", "message"} (v3), {"status_code", "description"} (SpanStatus.to_dict),
    # "OK" (a bare code), or v2's top-level status_code / status_message.
    status = d.get("status")
    if v2 and status is None:
        status = {"code": d.get("status_code"), "message": d.get("status_message")}
    if isinstance(status, (str, int)) and not isinstance(status, bool):
        status = {"code": status}
    status = _obj(status, "status")
    raw_code = status.get("code", status.get("status_code"))
    if raw_code is None:
        code = "UNSET"
    elif type(raw_code) is str:
        code = _STATUS.get(raw_code) or _STATUS.get(raw_code.strip().upper()) or "UNSET"
    elif type(raw_code) is int:
        code = _STATUS.get(raw_code, "UNSET")
    else:
        raise MalformedTrace("status.code", f"expected a status code, got {describe(raw_code)}")
    status_message = _text(status.get("message", status.get("description")), "status.message") or ""

    start_ns = _ns(d.get(start_key), start_key) or 0
    end_ns = _ns(d.get(end_key), end_key)
    if end_ns is None or end_ns < start_ns:
        end_ns = start_ns

    has_mlflow = SPAN_TYPE in attrs or CHAT_USAGE in attrs or LLM_MODEL in attrs
    has_oi = OI_KIND in attrs or OI_PROMPT_TOKENS in attrs or OI_MODEL in attrs
    has_genai = not has_mlflow and not has_oi and any(k.startswith("gen_ai.") for k in attrs)
    convention = "mlflow" if has_mlflow else "openinference" if has_oi else (
        "gen_ai" if has_genai else None
    )

    span_type = _label(attrs.get(SPAN_TYPE))
    if not span_type or span_type == "UNKNOWN":
        kind = _label(attrs.get(OI_KIND))
        op = _label(attrs.get(GENAI_OPERATION))
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
        inp, out, tot, cache_r, cache_w = _usage(usage, f"attributes[{CHAT_USAGE!r}]")
    else:
        k = _first_key(attrs, GENAI_INPUT_TOKENS)
        inp = _count(attrs[k], f"attributes[{k!r}]") if k else None
        k = _first_key(attrs, GENAI_OUTPUT_TOKENS)
        out = _count(attrs[k], f"attributes[{k!r}]") if k else None
        k = _first_key(attrs, GENAI_TOTAL_TOKENS)
        tot = _count(attrs[k], f"attributes[{k!r}]") if k else None
        k = _first_key(attrs, GENAI_CACHE_READ)
        cache_r = _count(attrs[k], f"attributes[{k!r}]") if k else None
        k = _first_key(attrs, GENAI_CACHE_WRITE)
        cache_w = _count(attrs[k], f"attributes[{k!r}]") if k else None
        if inp is None and out is None and tot is None:
            inp = _attr_count(attrs, OI_PROMPT_TOKENS)
            out = _attr_count(attrs, OI_COMPLETION_TOKENS)
            tot = _attr_count(attrs, OI_TOTAL_TOKENS)
            cache_r = _attr_count(attrs, OI_CACHE_READ) if cache_r is None else cache_r
            cache_w = _attr_count(attrs, OI_CACHE_WRITE) if cache_w is None else cache_w
    if tot is None and (inp is not None or out is not None):
        tot = (inp or 0) + (out or 0)

    model = (
        _label(attrs.get(LLM_MODEL))
        or _label(_first(attrs, GENAI_MODEL))
        or _label(attrs.get(OI_MODEL))
    )
    provider = (
        _label(attrs.get(LLM_PROVIDER))
        or _label(_first(attrs, GENAI_PROVIDER))
        or _label(_first(attrs, OI_PROVIDER))
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
    if LLM_COST in attrs:
        field = f"attributes[{LLM_COST!r}]"
        cost_val = decode_value(attrs.get(LLM_COST))
        if isinstance(cost_val, dict):
            cost = _cost_value(cost_val.get("total_cost"), f"{field}.total_cost")
            if cost is None:
                parts = [_cost_value(cost_val.get(k), f"{field}.{k}") for k in ("input_cost", "output_cost")]
                if any(p is not None for p in parts):
                    cost = sum(p or 0.0 for p in parts)
        elif cost_val is not None and cost_val != "":
            cost = _cost_value(cost_val, field)

    events = d.get("events")
    if type(events) is not list:
        events = _list(events, "events")
    error_type, error_message = _exception(events, status_message, attrs)

    return Span(
        span_id=to_hex_id(raw_id) or "",
        parent_id=to_hex_id(raw_parent),
        name=name,
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
        kind=span_kind(d.get("kind")),
        tool_name=_label(_first(attrs, TOOL_NAME)),
    )


def _attr_count(attrs: dict, key: str) -> int | None:
    return _count(attrs[key], f"attributes[{key!r}]") if key in attrs else None


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
    """A span for statistics from the spans table's columns (no inputs, outputs, events).
    The columns are MLflow's own; a value out of range reads as absent."""
    inp = out = tot = cache_r = cache_w = None
    try:
        usage = load_json(usage_json) if usage_json else None
    except ValueError:
        usage = None
    if isinstance(usage, dict):
        try:
            inp, out, tot, cache_r, cache_w = _usage(usage, "usage")
        except MalformedTrace:
            inp = out = tot = cache_r = cache_w = None
        if tot is None and (inp is not None or out is not None):
            tot = (inp or 0) + (out or 0)
    start = _lenient(_ns, start_ns) or 0
    end = _lenient(_ns, end_ns)
    end = end if end is not None and end >= start else start
    cost = _lenient(_cost_value, cost)
    return Span(
        span_id=span_id,
        parent_id=parent_id or None,
        name=name or "",
        span_type=span_type,
        status=_STATUS.get(status, "UNSET"),
        start_ns=start,
        end_ns=end,
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


def _lenient(reader, value):
    try:
        return reader(value, "")
    except MalformedTrace:
        return None


def _usage(usage: dict, field: str = "usage") -> tuple:
    """(input, output, total, cache read, cache write) from mlflow.chat.tokenUsage's dict."""
    g = usage.get
    return (
        _count(g("input_tokens"), f"{field}.input_tokens"),
        _count(g("output_tokens"), f"{field}.output_tokens"),
        _count(g("total_tokens"), f"{field}.total_tokens"),
        _count(g("cache_read_input_tokens"), f"{field}.cache_read_input_tokens"),
        _count(g("cache_creation_input_tokens"), f"{field}.cache_creation_input_tokens"),
    )


def _model_from_inputs(inputs_json: str) -> str | None:
    try:
        inputs = load_json(inputs_json)
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
    """(error type, message). The type: the exception event's, else OpenTelemetry's
    ``error.type`` (a 429 stays a 429), else one parsed from a "Type: message" status message.
    The message: the exception event's, else the status message."""
    etype = emsg = None
    for i, ev in enumerate(events):
        if type(ev) is not dict:
            raise MalformedTrace(f"events[{i}]", f"expected an event object, got {describe(ev)}")
        if ev.get("name") == "exception":
            ea = _obj(ev.get("attributes"), f"events[{i}].attributes")
            etype = _str(ea.get("exception.type"))
            emsg = _str(ea.get("exception.message"))
            if etype or emsg:
                break
    if etype is None:
        etype = _label(attrs.get(ERROR_TYPE))
        if etype == "_OTHER":  # the semantic conventions' "none of the known values"
            etype = None
    if status_message and (etype is None or emsg is None):
        m = _EXC_PREFIX.match(status_message.strip())
        if m:
            etype = etype or m.group(1)
            emsg = emsg or m.group(2)
        else:
            emsg = emsg or status_message
    return etype, emsg


# --- assessments -------------------------------------------------------------------------------


def assessment_from_dict(d: dict[str, Any]) -> Assessment:
    if type(d) is not dict:
        raise MalformedTrace("", f"expected an assessment object, got {describe(d)}")
    source = _obj(d.get("source"), "source")
    kind = "feedback"
    value = None
    err_code = err_msg = None
    if d.get("feedback") is not None:
        fb = _obj(d["feedback"], "feedback")
        value = _checked_tree(fb.get("value"), "feedback.value")
        err = fb.get("error")
        if isinstance(err, str) and err:
            err_code, err_msg = "ERROR", err
        elif err:
            err = _obj(err, "feedback.error")
            err_code = _text(err.get("error_code"), "feedback.error.error_code") or "ERROR"
            err_msg = _text(err.get("error_message"), "feedback.error.error_message")
    elif d.get("expectation") is not None:
        kind = "expectation"
        ex = _obj(d["expectation"], "expectation")
        value = _checked_tree(ex.get("value"), "expectation.value")
        if value is None and "serialized_value" in ex:
            sv = _obj(ex["serialized_value"], "expectation.serialized_value")
            value = decode_value(sv.get("value"))
    elif d.get("issue") is not None:
        kind = "issue"
        value = _text(_obj(d["issue"], "issue").get("issue_name"), "issue.issue_name")
    return Assessment(
        assessment_id=_text(d.get("assessment_id"), "assessment_id") or "",
        name=_text(d.get("assessment_name"), "assessment_name") or _text(d.get("name"), "name") or "",
        kind=kind,
        source_type=_text(source.get("source_type"), "source.source_type"),
        source_id=_text(source.get("source_id"), "source.source_id"),
        value=value,
        rationale=_text(d.get("rationale"), "rationale"),
        error_code=err_code,
        error_message=err_msg,
        span_id=_assessment_span(d.get("span_id")),
        valid=d.get("valid", True) is not False,
    )


def _assessment_span(value: Any) -> str | None:
    if value is None or type(value) is str or type(value) is int:
        return to_hex_id(value)
    raise MalformedTrace("span_id", f"expected a string, got {describe(value)}")


# --- traces --------------------------------------------------------------------------------------

_ISO = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)(?:[Tt ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d{1,9}))?)?)?\s*"
    r"(Z|z|[+-]\d\d(?::?\d\d)?)?$"
)


def parse_time_ms(value: Any, field: str) -> int | None:
    """Epoch milliseconds from an int/float (ms), digit text, or ISO-8601 text (what
    ``request_time`` holds in MLflow 3's JSON). Years before 1970 or past 2262 are refused."""
    if value is None or value == "":
        return None
    if type(value) is float and math.isfinite(value) and 0 <= value <= MAX_MS:
        return int(value)
    if type(value) is str and not value.strip().lstrip("-").isdigit():
        m = _ISO.match(value.strip())
        if not m:
            raise MalformedTrace(field, f"expected an ISO-8601 time or epoch milliseconds, got {describe(value)}")
        y, mo, d_, h, mi, s, frac, tz = m.groups()
        try:
            dt = datetime(int(y), int(mo), int(d_), int(h or 0), int(mi or 0), int(s or 0), tzinfo=timezone.utc)
        except ValueError as exc:  # "year 0 is out of range", "month must be in 1..12"
            raise MalformedTrace(field, f"impossible time {describe(value)} ({exc})") from None
        if tz and tz not in "Zz":
            sign = -1 if tz[0] == "-" else 1
            digits = tz[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            dt -= sign * offset
        ms = int(dt.timestamp()) * 1000 + (int((frac or "0").ljust(3, "0")[:3]))
        if ms < 0 or ms > MAX_MS:
            raise MalformedTrace(field, f"time out of range (1970 to 2262): {describe(value)}")
        return ms
    return _whole(value, field, MAX_MS, "a time in epoch milliseconds")


def _json_dict(value: Any) -> dict:
    v = decode_value(value)
    return v if isinstance(v, dict) else {}


def _string_map(value: Any, field: str) -> dict[str, str]:
    """tags / trace_metadata: string values (numbers and booleans written as text; null dropped)."""
    m = _obj(value, field)
    out: dict[str, str] = {}
    for k, v in m.items():
        t = type(v)
        if t is str:
            out[k] = v
        elif v is None:
            continue
        elif t is bool:
            out[k] = "true" if v else "false"
        elif t is int or t is float:
            out[k] = str(v)
        else:
            raise MalformedTrace(f"{field}[{json.dumps(k)[:60]}]", f"expected a string, got {describe(v)}")
    return out


def raw_trace_id(d: Any) -> str | None:
    """The id of a raw trace document (``info.trace_id``, v2 ``info.request_id``), or None
    when the document is not shaped like a trace. Never raises."""
    if not isinstance(d, dict):
        return None
    info = d.get("info")
    if not isinstance(info, dict):
        return None
    tid = info.get("trace_id") or info.get("request_id")
    return tid if isinstance(tid, str) and tid else None


def raw_state(d: Any) -> str | None:
    """``info.state`` (v2: ``info.status``) of a raw trace document, or None. Never raises."""
    info = d.get("info") if isinstance(d, dict) else None
    state = (info.get("state") or info.get("status")) if isinstance(info, dict) else None
    return state if isinstance(state, str) else None


def raw_span_count(d: Any) -> int:
    """How many spans a raw trace document holds (0 when it is not shaped like a trace)."""
    data = d.get("data") if isinstance(d, dict) else None
    spans = data.get("spans") if isinstance(data, dict) else None
    return len(spans) if isinstance(spans, list) else 0


def _strict() -> bool:
    return bool(os.environ.get("MLFLOW_ANALYZER_DEBUG"))


def trace_from_dict(d: dict[str, Any]) -> Trace:
    """A trace as ``mlflow traces get`` / ``Trace.to_dict()`` writes it (MLflow 3 or 2.x).
    Raises MalformedTrace for anything else."""
    return _guarded(_trace_from_dict, d, raw_trace_id(d), d)


def trace_from_parts(
    info: dict[str, Any], spans: list[Any], assessments: list[dict[str, Any]]
) -> Trace:
    """Build a Trace from its info (to_dict form, v3 or v2), span JSON objects (or Spans
    already built) and assessment objects. Raises MalformedTrace naming the field."""
    return _guarded(_trace_from_parts, info, raw_trace_id({"info": info}), info, spans, assessments)


def _guarded(build, first, trace_id, *args) -> Trace:
    try:
        return build(*args)
    except MalformedTrace as exc:
        if exc.trace_id is None:
            exc.trace_id = _clip_id(trace_id)
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
            RecursionError, UnicodeError) as exc:
        # A shape no check foresaw: still one trace skipped with a reason, never a crash of
        # the whole run. MLFLOW_ANALYZER_DEBUG=1 lets it through (the fuzz suite sets it).
        if _strict():
            raise
        raise MalformedTrace("", f"unreadable ({type(exc).__name__})", trace_id=_clip_id(trace_id)) from None


def _trace_from_dict(d: Any) -> Trace:
    if type(d) is not dict:
        raise MalformedTrace("", f"not an MLflow trace: expected an object with 'info' and 'data', got {describe(d)}")
    if "info" not in d:
        raise MalformedTrace("info", "missing: not an MLflow trace (expected an object with 'info' and 'data')")
    info = d["info"]
    if type(info) is not dict:
        raise MalformedTrace("info", f"expected an object, got {describe(info)}")
    data = _obj(d.get("data"), "data")
    spans_raw = data.get("spans")
    if type(spans_raw) is not list:
        spans_raw = _list(spans_raw, "data.spans")
    assessments = info.get("assessments")
    if type(assessments) is not list:
        assessments = _list(assessments, "info.assessments")
    return _trace_from_parts(info, spans_raw, assessments)


def _clip_id(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    text = value if value.isprintable() else value.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 80 else text[:77] + "..."


def _trace_from_parts(info: dict[str, Any], spans: list[Any], assessments: list[Any]) -> Trace:
    if type(info) is not dict:
        raise MalformedTrace("info", f"expected an object, got {describe(info)}")
    trace_id = info.get("trace_id") or info.get("request_id")
    id_field = "info.trace_id" if "trace_id" in info else "info.request_id"
    if not trace_id:
        raise MalformedTrace("info.trace_id", "missing: not an MLflow trace")
    if type(trace_id) is not str:
        raise MalformedTrace(id_field, f"expected a string, got {describe(trace_id)}")
    location = _obj(info.get("trace_location"), "info.trace_location")
    experiment = _obj(location.get("mlflow_experiment"), "info.trace_location.mlflow_experiment")
    experiment_id = _text(experiment.get("experiment_id"), "info.trace_location.mlflow_experiment.experiment_id")
    if experiment_id is None:
        experiment_id = _text(info.get("experiment_id"), "info.experiment_id")
    if "trace_metadata" in info and info["trace_metadata"] is not None:
        metadata = _string_map(info["trace_metadata"], "info.trace_metadata")
    else:
        metadata = _string_map(info.get("request_metadata"), "info.request_metadata")
    tags = _string_map(info.get("tags"), "info.tags")
    raw_state = info.get("state")
    state_field = "info.state"
    if raw_state is None:
        raw_state, state_field = info.get("status"), "info.status"
    state = (_text(raw_state, state_field) or "UNSET").strip().upper()
    state = _STATE.get(state, state)
    if "execution_duration_ms" in info:
        duration = _amount(info["execution_duration_ms"], "info.execution_duration_ms", MAX_MS, "a duration in milliseconds")
    else:
        duration = _amount(info.get("execution_time_ms"), "info.execution_time_ms", MAX_MS, "a duration in milliseconds")
    if "request_time" in info:
        request_ms = parse_time_ms(info["request_time"], "info.request_time")
    else:
        request_ms = parse_time_ms(info.get("timestamp_ms"), "info.timestamp_ms")

    span_objs = []
    for i, s in enumerate(spans):
        if isinstance(s, Span):
            span_objs.append(s)
            continue
        try:
            span_objs.append(span_from_dict(s))
        except MalformedTrace as exc:
            raise exc.within(f"data.spans[{i}]") from None
    assessment_objs = []
    for i, a in enumerate(assessments):
        try:
            assessment_objs.append(assessment_from_dict(a))
        except MalformedTrace as exc:
            raise exc.within(f"info.assessments[{i}]") from None

    trace = Trace(
        trace_id=trace_id,
        experiment_id=experiment_id,
        request_time_ms=request_ms or 0,
        state=state,
        duration_ms=duration,
        spans=span_objs,
        assessments=assessment_objs,
        tags=tags,
        metadata=metadata,
        name=tags.get(TAG_TRACE_NAME),
        request_preview=_text(info.get("request_preview"), "info.request_preview"),
        response_preview=_text(info.get("response_preview"), "info.response_preview"),
        # MLflow 3 keeps session and user in the metadata; MLflow 2.x kept them as tags.
        session_id=metadata.get(META_SESSION) or tags.get(META_SESSION) or None,
        user_id=metadata.get(META_USER) or tags.get(META_USER) or None,
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
    if trace.session_id is None or trace.user_id is None:
        _people_from_spans(trace)
    trace.session_path = session_path(trace.session_id)

    usage = _json_dict(metadata.get(META_TOKEN_USAGE))
    if usage:
        field = f"info.trace_metadata[{META_TOKEN_USAGE!r}]"
        trace.input_tokens = _count(usage.get("input_tokens"), f"{field}.input_tokens")
        trace.output_tokens = _count(usage.get("output_tokens"), f"{field}.output_tokens")
        trace.total_tokens = _count(usage.get("total_tokens"), f"{field}.total_tokens")
    else:
        leaves = trace.innermost(lambda s: s.has_usage)
        if leaves:
            trace.input_tokens = sum(s.input_tokens or 0 for s in leaves)
            trace.output_tokens = sum(s.output_tokens or 0 for s in leaves)
            trace.total_tokens = sum(s.tokens for s in leaves)
    cost = _json_dict(metadata.get(META_COST))
    total_cost = _cost_value(cost.get("total_cost"), f"info.trace_metadata[{META_COST!r}].total_cost") if cost else None
    if total_cost is not None:
        trace.cost_usd = total_cost
    else:
        priced = trace.innermost(lambda s: s.cost_usd is not None)
        if priced:
            trace.cost_usd = sum(s.cost_usd or 0.0 for s in priced)
    return trace


def _people_from_spans(trace: Trace) -> None:
    """Session and user from span attributes (OpenTelemetry / OpenInference keys), root first,
    when the trace metadata lacks MLflow's keys."""
    for span in trace.walk():
        attrs = span.attributes
        if not attrs:
            continue
        if trace.session_id is None:
            trace.session_id = _label(_first(attrs, SPAN_SESSION))
        if trace.user_id is None:
            trace.user_id = _label(_first(attrs, SPAN_USER))
        if trace.session_id is not None and trace.user_id is not None:
            return


# --- sessions ---------------------------------------------------------------------------------------


def session_path(session_id: str | None) -> list[str] | None:
    """The levels of a hierarchical session id (MLflow 3.18: a compact JSON array of strings,
    outermost first, e.g. '["trip-2","ep-2","turn-5"]'), or None for a plain id."""
    if not session_id or session_id[0] != "[":
        return None
    try:
        value = load_json(session_id)
    except ValueError:
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def session_key(session_id: str | None, level: int | None) -> str | None:
    """The session a trace belongs to at hierarchy ``level`` (0 = outermost): the id of the
    first ``level + 1`` levels, serialized as MLflow does; a plain id, or a path shorter than
    the level, is its own group. ``level=None``: the full id."""
    if session_id is None or level is None:
        return session_id
    path = session_path(session_id)
    if path is not None and len(path) > level:
        return json.dumps(path[: level + 1], separators=(",", ":"), ensure_ascii=False)
    return session_id


def session_hierarchy_levels(tag_value: Any) -> list[str] | None:
    """Level names from the ``mlflow.experiment.sessionHierarchy`` experiment tag, or None
    when it is absent or not the documented shape."""
    if not isinstance(tag_value, str) or not tag_value:
        return None
    try:
        data = load_json(tag_value)
    except ValueError:
        return None
    if not isinstance(data, dict) or type(data.get("version")) is not int:
        return None
    levels = data.get("levels")
    if not isinstance(levels, list) or not levels:
        return None
    names = []
    for level in levels:
        name = level.get("name") if isinstance(level, dict) else None
        if not isinstance(name, str) or not name:
            return None
        names.append(name)
    return names if len(set(names)) == len(names) else None


def session_level_index(level: str, names: list[str] | None) -> int:
    """A ``--session-level`` value (a level name from the hierarchy tag, or a 1-based
    number) as a 0-based index. Raises ValueError with a message for a user."""
    text = level.strip()
    if names and text in names:
        return names.index(text)
    if text.isdigit() and int(text) >= 1:
        return int(text) - 1
    if names:
        raise ValueError(f"session level {level!r} is not one of this experiment's levels ({', '.join(names)}) nor a number from 1")
    raise ValueError(
        f"session level {level!r}: no level names are declared here (experiment tag "
        f"{EXPERIMENT_SESSION_HIERARCHY}); give a number from 1 (outermost level)"
    )


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
