"""Shared parts of the real-instrumentation corpora (tests/test_realworld_*.py).

The corpora are built by small agent programs (tests/realworld_apps.py) that use the REAL
``openai``, ``anthropic`` and LangChain/LangGraph SDKs, traced by MLflow's autolog or by
OpenTelemetry GenAI / OpenInference instrumentors exporting over OTLP to a real
``mlflow server``. The SDKs talk to :class:`FakeModels`, a local HTTP server on 127.0.0.1
that speaks the OpenAI Chat Completions and the Anthropic Messages APIs, answers from a
script (delays, planned 429/500/529 answers, usage numbers) and logs every request.

The ground truth of a corpus is that request log (:func:`ground_truth`): what was really
served, per model, not what an instrumentation is expected to record.

Each corpus is built once per test session in a subprocess (autolog patches SDKs process
wide; the test process must stay clean), cached under the pytest temporary directory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
DUMMY_KEY = "dummy-test-key"  # not shaped like any real provider key


# --- the fake model server ------------------------------------------------------------------


@dataclass
class Answer:
    """What the fake server answers to one request."""

    status: int = 200
    text: str | None = None
    tool_calls: list[tuple[str, dict]] = field(default_factory=list)  # (name, arguments)
    usage: bool = True  # False: the response carries no usage numbers
    delay_ms: float = 0.0  # server-side latency before answering
    error_type: str | None = None  # provider error type, e.g. rate_limit_error
    error_message: str | None = None
    headers: dict = field(default_factory=dict)


@dataclass
class Request:
    index: int
    api: str  # "openai" | "anthropic"
    model: str
    body: dict
    retry_count: int  # the SDK's x-stainless-retry-count header (0 = a new call)
    step: str  # the planning key: the first word of the system prompt
    same_body_calls: int = 0  # earlier new calls (retry count 0) with this exact body
    status: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    delay_ms: float = 0.0

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages") or []

    def last_role(self) -> str | None:
        return self.messages[-1].get("role") if self.messages else None

    def tool_results(self) -> int:
        """How many tool results the conversation holds (both APIs)."""
        n = 0
        for m in self.messages:
            if m.get("role") == "tool":
                n += 1
            elif isinstance(m.get("content"), list):
                n += sum(1 for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_result")
        return n

    def user_turns(self) -> int:
        return sum(1 for m in self.messages if m.get("role") == "user" and not _is_tool_result(m))

    def text(self) -> str:
        return _all_text(self.body)


def _is_tool_result(m: dict) -> bool:
    c = m.get("content")
    return isinstance(c, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in c)


def _all_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(_all_text(v) for k, v in value.items() if k not in ("model", "id", "tool_call_id", "type"))
    if isinstance(value, list):
        return " ".join(_all_text(v) for v in value)
    return ""


def count_tokens(text: str) -> int:
    """The fake tokenizer: one token per whitespace-separated word (at least one)."""
    return max(1, len(text.split()))


def _step(api: str, body: dict) -> str:
    system = body.get("system") if api == "anthropic" else None
    if system is None:
        for m in body.get("messages") or []:
            if m.get("role") in ("system", "developer"):
                system = m.get("content")
                break
    text = _all_text(system or "").strip()
    return text.split()[0].strip(":.,").lower() if text else "default"


Plan = Callable[[Request, int], Answer]  # (request, n-th new call of this step) -> answer


class FakeModels:
    """A scripted OpenAI + Anthropic API on 127.0.0.1. ``plan(request, call_no)`` decides
    each answer; ``call_no`` counts new calls (retry count 0) of the request's step, so an
    SDK's own retry of a call gets the same ``call_no`` and a higher ``retry_count``."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.requests: list[Request] = []
        self._calls: dict[str, int] = {}
        self._bodies: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> "FakeModels":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                status, headers, payload, delay = fake._answer(self.path, dict(self.headers), body)
                if delay:
                    time.sleep(delay / 1000)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _answer(self, path: str, headers: dict, body: dict):
        headers = {k.lower(): v for k, v in headers.items()}
        route = path.split("?")[0].rstrip("/")
        api = {"/v1/chat/completions": "openai", "/chat/completions": "openai",
               "/v1/messages": "anthropic"}.get(route)
        with self._lock:
            if api is None:
                return 404, {}, {"error": {"message": f"no route {path}"}}, 0
            retry = int(headers.get("x-stainless-retry-count") or 0)
            key = json.dumps(body, sort_keys=True)
            req = Request(len(self.requests), api, body.get("model", ""), body, retry, _step(api, body),
                          same_body_calls=self._bodies.get(key, 0) - (1 if retry else 0))
            if retry == 0:
                self._calls[req.step] = self._calls.get(req.step, 0) + 1
                self._bodies[key] = self._bodies.get(key, 0) + 1
            call_no = self._calls.get(req.step, 1) - 1
            self.requests.append(req)
            answer = self.plan(req, call_no)
            req.status, req.delay_ms = answer.status, answer.delay_ms
            if answer.status != 200:
                return answer.status, answer.headers, _error_body(api, answer), answer.delay_ms
            in_tok = count_tokens(req.text())
            text = answer.text or ""
            out_tok = count_tokens(text + " " + json.dumps([a for _, a in answer.tool_calls]))
            if answer.usage:
                req.input_tokens, req.output_tokens = in_tok, out_tok
            payload = (_openai_body if api == "openai" else _anthropic_body)(req, answer, in_tok, out_tok)
            return 200, answer.headers, payload, answer.delay_ms


def _error_body(api: str, a: Answer) -> dict:
    if api == "anthropic":
        return {"type": "error", "error": {"type": a.error_type or "api_error", "message": a.error_message or "error"}}
    return {"error": {"message": a.error_message or "error", "type": a.error_type or "server_error",
                      "param": None, "code": a.error_type}}


def _openai_body(req: Request, a: Answer, in_tok: int, out_tok: int) -> dict:
    message: dict = {"role": "assistant", "content": a.text, "refusal": None}
    if a.tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{req.index}_{i}", "type": "function",
             "function": {"name": name, "arguments": json.dumps(args)}}
            for i, (name, args) in enumerate(a.tool_calls)]
    body = {"id": f"chatcmpl-{req.index}", "object": "chat.completion", "created": 1790000000,
            "model": req.model, "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if a.tool_calls else "stop"}]}
    if a.usage:
        body["usage"] = {"prompt_tokens": in_tok, "completion_tokens": out_tok, "total_tokens": in_tok + out_tok}
    return body


def _anthropic_body(req: Request, a: Answer, in_tok: int, out_tok: int) -> dict:
    content = ([{"type": "text", "text": a.text}] if a.text else []) + [
        {"type": "tool_use", "id": f"toolu_{req.index}_{i}", "name": name, "input": args}
        for i, (name, args) in enumerate(a.tool_calls)]
    return {"id": f"msg_{req.index}", "type": "message", "role": "assistant", "model": req.model,
            "content": content, "stop_reason": "tool_use" if a.tool_calls else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": in_tok, "output_tokens": out_tok,
                      "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0} if a.usage else None}


def rate_limited(api: str, delay_ms: float = 2) -> Answer:
    """A 429 that asks the SDK to wait 10 ms before retrying (keeps builds quick)."""
    if api == "anthropic":
        return Answer(429, error_type="rate_limit_error", delay_ms=delay_ms,
                      error_message="Number of request tokens has exceeded your per-minute rate limit",
                      headers={"retry-after-ms": "10"})
    return Answer(429, error_type="rate_limit_exceeded", delay_ms=delay_ms,
                  error_message="Rate limit reached for requests per min (RPM). Please try again in 10ms.",
                  headers={"retry-after-ms": "10"})


def server_error(api: str, status: int = 500, delay_ms: float = 2) -> Answer:
    if status == 529:
        return Answer(529, error_type="overloaded_error", error_message="Overloaded", delay_ms=delay_ms,
                      headers={"retry-after-ms": "10"})
    return Answer(status, error_type="api_error" if api == "anthropic" else "server_error",
                  error_message="The server had an error while processing your request.",
                  delay_ms=delay_ms, headers={"retry-after-ms": "10"})


# --- ground truth from the request log -------------------------------------------------------


def ground_truth(requests: list[Request]) -> dict:
    """What the fake server really served, per model and in total.

    ``requests`` counts every HTTP request; ``calls`` the calls an application made (an SDK's
    own retries, retry count > 0, belong to the call they retry); a call ``failed`` when its
    last attempt got an error; ``tokens`` sums the usage the server reported in its answers."""
    per: dict[str, dict] = {}
    # an SDK's retry belongs to the earliest call with the same body whose latest attempt
    # failed with the previous retry count (concurrent identical calls stay apart)
    calls: list[list[Request]] = []
    waiting: dict[str, list[list[Request]]] = {}
    for r in requests:
        key = json.dumps(r.body, sort_keys=True)
        chain = None
        if r.retry_count:
            chain = next((c for c in waiting.get(key, []) if c[-1].retry_count == r.retry_count - 1), None)
        if chain is None:
            chain = []
            calls.append(chain)
        else:
            waiting[key].remove(chain)
        chain.append(r)
        if r.status != 200:
            waiting.setdefault(key, []).append(chain)
    for r in requests:
        m = per.setdefault(r.model, {"requests": 0, "calls": 0, "failed_calls": 0, "errors_served": {},
                                     "sdk_retries": 0, "input_tokens": 0, "output_tokens": 0,
                                     "answers_without_usage": 0, "delays_ms": []})
        m["requests"] += 1
        m["delays_ms"].append(r.delay_ms)
        if r.status != 200:
            m["errors_served"][str(r.status)] = m["errors_served"].get(str(r.status), 0) + 1
        elif r.input_tokens is None:
            m["answers_without_usage"] += 1
        else:
            m["input_tokens"] += r.input_tokens
            m["output_tokens"] += r.output_tokens
        if r.retry_count:
            m["sdk_retries"] += 1
    for chain in calls:
        m = per[chain[0].model]
        m["calls"] += 1
        if chain[-1].status != 200:
            m["failed_calls"] += 1
    total = {k: sum(m[k] for m in per.values())
             for k in ("requests", "calls", "failed_calls", "sdk_retries", "input_tokens", "output_tokens",
                       "answers_without_usage")}
    return {"models": per, "total": total,
            "log": [{"i": r.index, "api": r.api, "model": r.model, "step": r.step, "retry": r.retry_count,
                     "status": r.status, "input_tokens": r.input_tokens, "output_tokens": r.output_tokens}
                    for r in requests]}


# --- building a corpus once per session ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_TRACKING", "MLFLOW_EXPERIMENT", "OPENAI_", "ANTHROPIC_", "OTEL_"))}
    env.update(MLFLOW_ENABLE_ASYNC_TRACE_LOGGING="false", MLFLOW_MODEL_CATALOG_URI="",
               MLFLOW_DISABLE_AGENT_HINT="1", PYTHONHASHSEED="0")
    env.update(extra)
    return env


# test module -> corpus; the OTLP corpora need a running mlflow server
MODULE_CORPORA = {"test_realworld_openai": "openai", "test_realworld_anthropic": "anthropic",
                  "test_realworld_langchain": "langchain", "test_realworld_otel_genai": "otel_genai",
                  "test_realworld_otel_openinference": "openinference"}
OTLP_CORPORA = {"otel_genai", "openinference"}
_PENDING: dict[Path, subprocess.Popen] = {}


def corpus_dir(basetemp: Path, corpus: str) -> Path:
    return Path(basetemp) / f"realworld-{corpus}"


def _spawn(corpus: str, out: Path, options: dict) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, str(HERE / "realworld_apps.py"), corpus, str(out)]
    for k, v in options.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return subprocess.Popen(args, stdout=open(out / "build.out", "w"), stderr=open(out / "build.err", "w"),
                            env=clean_env(), cwd=HERE.parent)


def start_builds(basetemp: Path, corpora, **options) -> None:
    """Start building ``corpora`` in the background (their apps mostly wait on scripted
    latencies, so they run side by side); :func:`build` collects them."""
    for corpus in corpora:
        out = corpus_dir(basetemp, corpus)
        if out not in _PENDING and not (out / "manifest.json").exists():
            _PENDING[out] = _spawn(corpus, out, options)


def build(corpus: str, out: Path, **options) -> dict:
    """Run the app of ``corpus`` in a subprocess (or wait for the one start_builds began);
    returns its manifest (store, experiment, ground truth, planted problems). Cached: a
    second call with the same ``out`` reads it."""
    manifest = out / "manifest.json"
    if not manifest.exists():
        proc = _PENDING.pop(out, None) or _spawn(corpus, out, options)
        try:
            proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        if proc.returncode != 0 or not manifest.exists():
            raise RuntimeError(f"building the {corpus} corpus failed:\n{(out / 'build.out').read_text()[-3000:]}\n"
                               f"{(out / 'build.err').read_text()[-6000:]}")
    return json.loads(manifest.read_text())


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 with a SQLite store, for the OTLP corpora."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = f"sqlite:///{root}/server.db"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "MlflowServer":
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = open(self.root / "server.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.db,
             "--default-artifact-root", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=self.log, env=clean_env(),
            start_new_session=True)  # its own process group: stop() ends uvicorn/huey children too
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2)
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError((self.root / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("mlflow server did not start")

    def stop(self) -> None:
        import signal

        if self.proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)  # the group this server started, nothing else
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=20)
                    break
                except subprocess.TimeoutExpired:
                    continue
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # workers that outlived their parent
            except (ProcessLookupError, PermissionError):
                pass
            self.proc = None
            self.log.close()


def new_id() -> str:
    return uuid.uuid4().hex


# --- reading a corpus back, and the checks every test file shares ----------------------------

LLM_TYPES = ("LLM", "CHAT_MODEL")


def store_traces(manifest: dict) -> list:
    """Every trace of the corpus, through MLflow's own client (the reference reader)."""
    from mlflow import MlflowClient

    client = MlflowClient(manifest["tracking_uri"])
    out, token = [], None
    while True:
        page = client.search_traces(locations=[manifest["experiment_id"]], max_results=200, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def span_status(span) -> str:
    return str(span.status.status_code).rsplit(".", 1)[-1].replace("STATUS_CODE_", "")


def span_ms(span) -> float:
    return (span.end_time_ns - span.start_time_ns) / 1e6


def trace_state(trace) -> str:
    return str(trace.info.state).rsplit(".", 1)[-1]


def cli_json(*args) -> dict:
    from builders import cli

    r = cli(*args)
    assert r.returncode == 0, f"{args}: {r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return json.loads(r.stdout)


def source_args(manifest: dict) -> list[str]:
    return ["--tracking-uri", manifest["tracking_uri"], "--experiment-id", manifest["experiment_id"]]


def check_exact_stats(manifest: dict, traces: list, stats: dict) -> None:
    """stats against the fake server's log and against numpy over MLflow's own reader."""
    import numpy as np

    truth = manifest["truth"]["total"]
    assert stats["trace_count"] == len(traces) == len(manifest["turns"])
    assert stats["error_count"] == sum(1 for t in manifest["turns"] if not t["ok"]) == sum(
        1 for t in traces if trace_state(t) == "ERROR")
    assert stats["tokens"]["input"] == truth["input_tokens"]
    assert stats["tokens"]["output"] == truth["output_tokens"]
    assert stats["tokens"]["total"] == truth["input_tokens"] + truth["output_tokens"]
    # one LLM span per call the application made (an SDK's own retries stay inside it)
    llm_spans = [s for t in traces for s in t.data.spans if s.span_type in LLM_TYPES]
    assert len(llm_spans) == truth["calls"]
    assert sum(1 for s in llm_spans if span_status(s) == "ERROR") == truth["failed_calls"]
    # cost: what MLflow priced, summed
    mlflow_cost = sum(json.loads(t.info.trace_metadata.get("mlflow.trace.cost", "{}")).get("total_cost", 0)
                      for t in traces)
    assert mlflow_cost > 0
    assert stats["cost_usd"] == pytest_approx(mlflow_cost)
    # latency percentiles: numpy's linear interpolation over execution_duration_ms
    durations = np.array([t.info.execution_duration for t in traces], dtype=float)
    for key, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert stats["latency_ms"][key] == pytest_approx(float(np.percentile(durations, q)))
    assert stats["latency_ms"]["max"] == pytest_approx(float(durations.max()))
    assert stats["latency_ms"]["mean"] == pytest_approx(float(durations.mean()), abs=0.05)
    ok = np.array([t.info.execution_duration for t in traces if trace_state(t) == "OK"], dtype=float)
    assert stats["ok_latency_ms"]["p95"] == pytest_approx(float(np.percentile(ok, 95)))


def check_span_rows(traces: list, stats: dict, names: list[str]) -> None:
    """Per-span rows of ``names`` (spans whose name belongs to one type only): counts,
    errors and percentiles against numpy over the stored spans."""
    import numpy as np

    rows = {(r["name"], r["type"]): r for r in stats["spans"]}
    for name in names:
        spans = [s for t in traces for s in t.data.spans if s.name == name]
        types = {s.span_type or "UNKNOWN" for s in spans}
        assert len(types) == 1, (name, types)
        row = rows[(name, types.pop())]
        ms = np.array([span_ms(s) for s in spans])
        assert row["count"] == len(spans), name
        assert row["error_count"] == sum(1 for s in spans if span_status(s) == "ERROR"), name
        assert row["p50_ms"] == pytest_approx(float(np.percentile(ms, 50)), abs=0.01), name
        assert row["p95_ms"] == pytest_approx(float(np.percentile(ms, 95)), abs=0.01), name


def pytest_approx(value, **kw):
    import pytest

    kw.setdefault("rel", 1e-6)
    kw.setdefault("abs", 1e-9)
    return pytest.approx(value, **kw)


# The (category, finding kind) pairs that report each planted problem kind
FINDING_KINDS = {
    # rate-limited calls the app retried: the retry finding carries the errors (the project's
    # own corpus expects the same: retry_issue, error_pattern accepted)
    "rate_limited_and_retried": {("retry_issue", "retries"), ("retry_issue", "retries_exhausted"),
                                 ("error_pattern", "rate_limit")},
    "tool_raises": {("error_pattern", "validation_error"), ("error_pattern", "error")},
    "overloaded_exhausted": {("error_pattern", "upstream_unavailable"), ("error_pattern", "error"),
                             ("retry_issue", "retries_exhausted")},
    "dominant_sequential_tool": {("latency_issue", "slow_span")},
    "bimodal_retriever": {("latency_issue", "tail_latency"), ("latency_issue", "slow_span")},
    "duplicate_identical_calls": {("inefficient_pattern", "redundant_calls")},
    "growing_prompt": {("high_cost", "growing_prompt")},
    "expensive_model_tiny_task": {("high_cost", "expensive_model_simple_task")},
    "missing_usage": {("missing_instrumentation", "llm_without_usage")},
}


def matches(problem: dict, finding: dict) -> bool:
    """A finding reports a planted problem: the right category and finding kind, the
    problem's span named first (the span the finding is about), and for errors the
    exception type (its last dotted part)."""
    if (finding["category"], finding.get("kind")) not in FINDING_KINDS[problem["kind"]]:
        return False
    if problem["span"] not in finding["span_names"][:1]:
        return False
    want = problem.get("exception_type")
    if want:
        m = finding["metrics"]
        got = {str(m.get("exception_type") or "")} | set(m.get("error_types") or {})
        return want in {g.rsplit(".", 1)[-1] for g in got}
    return True


CONTRADICTION_KINDS = ("unknown_trace_ids", "error_for_span_that_never_failed", "independence_of_dependent_calls",
                       "duplicate_names_a_wrapper", "duplicate_tokens_understated",
                       "duplicate_time_of_concurrent_copies", "critical_path_understated")


def contradictions(manifest: dict, traces: list, findings: list[dict]) -> list[tuple[str, str]]:
    """Statements in findings that the stored traces contradict, as (kind, text)."""
    import re

    problems = []
    by_name: dict[str, list] = {}
    for t in traces:
        for s in t.data.spans:
            by_name.setdefault(s.name, []).append((t, s))
    store_ids = {t.info.trace_id for t in traces}
    never_failing = set(manifest.get("never_failing_spans", []))
    wrappers = set(manifest.get("wrappers", []))
    for f in findings:
        first = f["span_names"][0] if f["span_names"] else None
        if not set(f["trace_ids"]) <= store_ids:
            problems.append(("unknown_trace_ids", f"{f['id']}: trace ids not in the store: {f['title']}"))
        if f["category"] == "error_pattern" and first:
            failed = [s for _, s in by_name.get(first, []) if span_status(s) == "ERROR"]
            if not failed or first in never_failing:
                problems.append(("error_for_span_that_never_failed",
                                 f"{f['id']}: an error finding for `{first}`, which never failed: {f['title']}"))
        text = " ".join([f["title"], f["issue"], f["impact"]])
        if re.search(r"independent|parallel", text, re.I):
            for a, b in manifest.get("dependent_pairs", []):
                if a in f["span_names"] and b in f["span_names"]:
                    problems.append(("independence_of_dependent_calls",
                                     f"{f['id']}: `{b}` runs only after `{a}` succeeded, yet: {f['title']}"))
        if re.search(r"identical inputs|duplicate|called again", f["title"], re.I) and f["category"] == "inefficient_pattern":
            if first in wrappers:
                problems.append(("duplicate_names_a_wrapper",
                                 f"{f['id']}: the duplicate-call finding names the wrapper `{first}`: {f['title']}"))
        if f.get("kind") == "redundant_calls" and first in by_name:
            problems.extend(_duplicate_contradictions(f, first, traces))
        m = re.search(r"on the critical path (\d+(?:\.\d+)?)% of the time", text)
        if m and first in by_name:
            share = _sequential_share(by_name[first])
            if float(m.group(1)) + 5 < share * 100:
                problems.append(("critical_path_understated",
                                 f"{f['id']}: says `{first}` is on the critical path {m.group(1)}% of the time; "
                                 f"it overlaps no sibling in {share:.0%} of its calls: {f['title']}"))
    return problems


def _span_tokens(span, spans) -> int:
    """Tokens the span spent: its own usage, or its descendants' when it has none."""
    usage = span.get_attribute("mlflow.chat.tokenUsage")
    if isinstance(usage, dict):
        return int(usage.get("total_tokens") or 0)
    return sum(_span_tokens(c, spans) for c in spans if c.parent_id == span.span_id)


def _duplicate_contradictions(f: dict, name: str, traces: list) -> list[tuple[str, str]]:
    """A duplicate-call finding against the copies in the store: the tokens the repeated
    copies spent, and whether any copy ran after (not alongside) the first."""
    tokens, sequential = 0, 0
    for t in traces:
        groups: dict[str, list] = {}
        for s in t.data.spans:
            if s.name == name:
                groups.setdefault(json.dumps(s.inputs, sort_keys=True, default=str), []).append(s)
        for copies in groups.values():
            copies.sort(key=lambda s: s.start_time_ns)
            for c in copies[1:]:
                tokens += _span_tokens(c, t.data.spans)
                if c.start_time_ns >= copies[0].end_time_ns:
                    sequential += 1
    out = []
    m = f["metrics"]
    if tokens and m.get("wasted_tokens") == 0:
        out.append(("duplicate_tokens_understated",
                    f"{f['id']}: reports 0 wasted tokens; the repeated copies of `{name}` spent {tokens:,}: {f['title']}"))
    if not sequential and (m.get("wasted_ms") or 0) > 0:
        out.append(("duplicate_time_of_concurrent_copies",
                    f"{f['id']}: counts {m['wasted_ms']} ms wasted; every copy of `{name}` ran alongside the first: {f['title']}"))
    return out


def _sequential_share(occurrences: list) -> float:
    """Share of a span's calls that overlap none of their siblings under a root parent:
    such a call is entirely on its trace's critical path."""
    hits = 0
    for t, s in occurrences:
        sib = [x for x in t.data.spans if x.parent_id == s.parent_id and x.span_id != s.span_id]
        parent = next((x for x in t.data.spans if x.span_id == s.parent_id), None)
        overlapped = any(x.start_time_ns < s.end_time_ns and s.start_time_ns < x.end_time_ns for x in sib)
        if parent is not None and parent.parent_id is None and not overlapped:
            hits += 1
    return hits / len(occurrences) if occurrences else 0.0
