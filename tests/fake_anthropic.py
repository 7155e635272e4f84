"""A scripted stand-in for the Anthropic Messages API, for tests that cannot reach the network.

:class:`FakeAnthropic` is a real HTTP server (``http.server.ThreadingHTTPServer`` on
127.0.0.1, a free port, in a daemon thread) that answers ``POST /v1/messages`` with the
scripted turns in order, and records every request so that a test can assert what the
client sent. Point the real ``anthropic`` client at it with ``base_url=server.base_url``
(or ``ANTHROPIC_BASE_URL``).

A script item is one of:

* a reply built with :func:`reply` (content blocks from :func:`text` and :func:`tool_use`,
  a stop reason, usage numbers, and optionally a delay before answering, to make the
  client time out);
* an error built with :func:`error` (status, error type, message, headers), e.g.
  ``error(429, "rate_limit_error", headers={"retry-after": "0"})``;
* a callable ``item(body) -> reply or error`` that builds its answer from the request.

When the script runs out, the server answers 500 with ``x-should-retry: false`` so that
the test fails with a clear message instead of hanging or retrying.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union


@dataclass
class Reply:
    content: list[dict]
    stop_reason: str
    usage: dict
    delay: float = 0.0  # seconds to wait before answering (to make the client time out)


@dataclass
class Error:
    status: int
    type: str
    message: str
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


ScriptItem = Union[Reply, Error, Callable[[dict], Union[Reply, Error]]]


@dataclass
class Recorded:
    path: str
    headers: dict
    body: Any  # the parsed JSON request body (None when it was not JSON)
    status: int = 0  # the status the server answered

    # -- helpers for assertions --

    @property
    def messages(self) -> list[dict]:
        return (self.body or {}).get("messages") or []

    @property
    def system_text(self) -> str:
        system = (self.body or {}).get("system")
        if isinstance(system, str):
            return system
        return "\n".join(b.get("text", "") for b in system or [] if isinstance(b, dict))

    @property
    def tool_names(self) -> list[str]:
        return [t.get("name") for t in (self.body or {}).get("tools") or []]

    def last_user_blocks(self) -> list[dict]:
        """Content blocks of the last user message (a string becomes one text block)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str):
                    return [{"type": "text", "text": content}]
                return list(content or [])
        return []

    def tool_results(self) -> list[dict]:
        """The tool_result blocks of the last user message."""
        return [b for b in self.last_user_blocks() if b.get("type") == "tool_result"]

    def last_user_text(self) -> str:
        return "\n".join(b.get("text", "") for b in self.last_user_blocks() if b.get("type") == "text")


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def tool_use(name: str, input: dict | None = None, id: str | None = None) -> dict:
    return {"type": "tool_use", "id": id or f"toolu_{uuid.uuid4().hex[:20]}", "name": name,
            "input": input or {}}


def reply(*content: dict, stop_reason: str | None = None, input_tokens: int = 100,
          output_tokens: int = 20, cache_read: int = 0, cache_creation: int = 0,
          delay: float = 0.0) -> Reply:
    """An assistant message; the stop reason defaults to tool_use when a block calls a tool."""
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens,
             "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": cache_creation}
    return Reply(list(content), stop_reason, usage, delay)


def error(status: int, type: str = "api_error", message: str = "scripted error",
          headers: dict | None = None, delay: float = 0.0) -> Error:
    return Error(status, type, message, dict(headers or {}), delay)


class FakeAnthropic:
    """The scripted server. Use as a context manager, or call start() and stop()."""

    def __init__(self, script: list[ScriptItem] | None = None, model: str = "claude-test"):
        self.script: list[ScriptItem] = list(script or [])
        self.model = model
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self) -> "FakeAnthropic":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = None
                status, headers, payload, delay = fake._answer(self.path, dict(self.headers), body)
                if delay:
                    time.sleep(delay)  # outside the lock: the client's retry is answered meanwhile
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.send_header("request-id", f"req_fake_{len(fake.requests)}")
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeAnthropic":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def remaining(self) -> int:
        return len(self.script)

    # -- answering --

    def _answer(self, path: str, headers: dict, body: Any) -> tuple[int, dict, dict, float]:
        with self._lock:
            record = Recorded(path, {k.lower(): v for k, v in headers.items()}, body)
            self.requests.append(record)
            if path.split("?")[0].rstrip("/") != "/v1/messages":
                status, extra, payload, delay = (404, {}, _error_body("not_found_error",
                                                                      f"no route {path}"), 0.0)
            elif not self.script:
                status, extra, payload, delay = (500, {"x-should-retry": "false"},
                                                 _error_body("api_error",
                                                             "fake server: script exhausted"), 0.0)
            else:
                item = self.script.pop(0)
                if callable(item):
                    item = item(body)
                delay = item.delay
                if isinstance(item, Error):
                    status, extra, payload = item.status, item.headers, _error_body(item.type, item.message)
                else:
                    status, extra, payload = 200, {}, {
                        "id": f"msg_{uuid.uuid4().hex[:24]}",
                        "type": "message",
                        "role": "assistant",
                        "model": (body or {}).get("model") or self.model,
                        "content": item.content,
                        "stop_reason": item.stop_reason,
                        "stop_sequence": None,
                        "usage": item.usage,
                    }
            record.status = status
            return status, extra, payload, delay


def _error_body(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


def scripted_reviewer() -> list[ScriptItem]:
    """A short, plausible review session for documented `review` commands: read the
    findings, write the review with `report`, finish."""
    return [
        reply(text("Reading the findings first."), tool_use("findings", {}), input_tokens=2000),
        reply(tool_use("report", {}), input_tokens=6000),
        reply(text("The review is written and validated."), input_tokens=9000),
    ]


@contextmanager
def reviewer_api():
    """A FakeAnthropic running ``scripted_reviewer()``, with the environment variables that
    point the real client at it: ``with reviewer_api() as env: run(..., env=env)``."""
    server = FakeAnthropic(scripted_reviewer())
    server.start()
    try:
        yield {"ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": "test"}
    finally:
        server.stop()
