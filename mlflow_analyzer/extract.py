"""jq over traces: named recipes on the normalized view, or any program on either view.

The normalized view (``Trace.to_dict()``) is what the recipes read: decoded attributes,
hex span ids, ``type``/``status``/``tokens``/``error`` per span, assessments always present
(an empty list when there are none). The raw view is MLflow's own JSON, with its traps
(JSON-encoded attribute strings, base64 span ids, no ``assessments`` key when empty).
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Iterator

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


#: Seconds a jq program may work on one trace without finishing it (an endless loop, a
#: catastrophic regex); MLFLOW_ANALYZER_JQ_TIMEOUT overrides it.
JQ_TIMEOUT = 10.0
#: Seconds the child running jq may take to start and compile the program.
JQ_STARTUP_TIMEOUT = 60.0
#: Bytes of results a jq program may print in all (an unbounded generator).
JQ_MAX_OUTPUT = 32_000_000
#: Address space of the process running jq (a program building a huge value).
JQ_MAX_MEMORY = 2 << 30

# Builtins that reach outside the document: the environment, files (modules), the
# program's own location. Refused before anything runs; the program also runs in a child
# process with an empty environment, so $ENV would be {} anyway.
_FORBIDDEN = re.compile(
    r"\$(?:ENV|__loc__|__prog_args)\b"
    r"|(?<![.\w$\"])(?:env|import|include|input_filename|get_search_list|modulemeta"
    r"|get_prog_origin|get_jq_origin|halt_error|halt|debug|stderr|input_line_number)\b")

_CHILD = r"""
import json, sys
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
except Exception:
    pass
import jq
out = sys.stdout
def emit(x):
    out.write(json.dumps(x, ensure_ascii=False, default=str))
    out.write("\n")
def first(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
try:
    prog = jq.compile(sys.argv[1])
except Exception as e:
    emit(["x", first(e)]); out.flush(); sys.exit(0)
emit(["c"]); out.flush()
for line in sys.stdin:
    tid, doc = json.loads(line)
    n = 0
    try:
        for r in prog.input_value(doc):
            n += 1
            emit(["r", r])
            out.flush()
    except MemoryError:
        emit(["e", tid, "out of memory"]); out.flush(); sys.exit(0)
    except Exception as e:
        emit(["e", tid, first(e)]); out.flush(); sys.exit(0)
    emit(["d", n]); out.flush()
"""


def check_program(program: str) -> None:
    """Refuse jq programs that reach outside the trace document."""
    m = _FORBIDDEN.search(program)
    if m:
        raise UsageError(f"jq program uses {m.group()!r}: programs see only the trace document "
                         "(no environment, no modules or files)")


def compile_program(program: str) -> str:
    """The program, checked (it compiles in the sandbox that runs it)."""
    if not isinstance(program, str) or not program.strip():
        raise UsageError("the jq program is empty")
    check_program(program)
    return program


class JqSandbox:
    """A jq program run in a child process: an empty environment (``$ENV`` is ``{}``), no
    working files, a memory cap, and a time limit per trace. Documents go in one at a
    time; :meth:`run` yields the program's results for one of them.

    A trace the program works on for ``timeout`` seconds without finishing it (an endless
    loop, a catastrophic regex), or results past ``max_bytes``, stop it with one
    UsageError; so does a jq error. Use it as a context manager (the child is killed on
    exit)."""

    def __init__(self, program: str, *, timeout: float | None = None, max_bytes: int = JQ_MAX_OUTPUT):
        import queue
        import subprocess
        import tempfile
        import threading

        check_program(program)
        if timeout is None:
            try:
                timeout = float(os.environ.get("MLFLOW_ANALYZER_JQ_TIMEOUT") or JQ_TIMEOUT)
            except ValueError:
                timeout = JQ_TIMEOUT
        self.timeout, self.max_bytes, self.size = timeout, max_bytes, 0
        self._dir = tempfile.TemporaryDirectory(prefix="mlflow-analyzer-jq-")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _CHILD, program, str(JQ_MAX_MEMORY)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env={}, cwd=self._dir.name)
        except OSError as exc:
            self._dir.cleanup()
            raise UsageError(f"cannot start jq: {exc.strerror or exc}") from None
        self.lines: queue.Queue = queue.Queue(maxsize=1000)

        def read() -> None:
            try:
                for line in self.proc.stdout:
                    self.lines.put(line)
            except (OSError, ValueError):
                pass
            finally:
                self.lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        tag = self._next("compiling the program", JQ_STARTUP_TIMEOUT)
        if tag is None:
            raise UsageError("jq could not start (is the jq package installed?)")
        if tag[0] == "x":
            raise UsageError(f"jq program does not compile: {tag[1]}")

    def _next(self, what: str, timeout: float | None = None):
        """The child's next message, or None at its end; bounded by the time limit."""
        import queue

        timeout = timeout or self.timeout
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise UsageError(
                f"jq program stopped: {what} took longer than {timeout:g} s (an endless "
                "loop or a catastrophic regex?); simplify the program") from None
        if line is None:
            return None
        self.size += len(line)
        if self.size > self.max_bytes:
            self.close()
            raise UsageError(
                f"jq program stopped: more than {self.max_bytes // 1_000_000} MB of results (an "
                "unbounded generator?); narrow the program or lower --limit")
        return json.loads(line)

    def run(self, trace_id: str, doc: Any) -> Iterator[Any]:
        """The results of the program on one document, as they come."""
        data = (json.dumps([trace_id, doc], ensure_ascii=False, default=str) + "\n").encode(
            "utf-8", "surrogatepass")
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the child ended: its last message says why
        while True:
            msg = self._next(f"trace {trace_id}")
            if msg is None:
                raise UsageError(f"jq stopped on trace {trace_id} (out of memory?)")
            if msg[0] == "r":
                yield msg[1]
            elif msg[0] == "d":
                return
            elif msg[0] == "e":
                raise UsageError(f"jq failed on trace {msg[1]}: {msg[2]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for fh in (self.proc.stdin, self.proc.stdout):
            try:
                fh.close()
            except (OSError, ValueError):
                pass
        self._dir.cleanup()

    def __enter__(self) -> "JqSandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
