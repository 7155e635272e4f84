"""A local stand-in for the Anthropic Messages API that the real Claude Code CLI can talk to.

Claude Code (``claude -p``, pointed at ``ANTHROPIC_BASE_URL``) calls ``POST /v1/messages``
with ``"stream": true`` and reads server-sent events; it also calls ``count_tokens`` and a
few other paths, and sends some requests without tools (titles, summaries). This server:

* answers every ``POST /v1/messages`` by calling ``model(request)``, a function that gets
  the :class:`~fake_anthropic.Recorded` request and returns a
  :func:`~fake_anthropic.reply` (content blocks from :func:`~fake_anthropic.text` and
  :func:`~fake_anthropic.tool_use`); it streams that reply as SSE events when the request
  asks for a stream (``message_start``, ``content_block_start``, ``content_block_delta``
  with ``text_delta`` or ``input_json_delta``, ``content_block_stop``, ``message_delta``,
  ``message_stop``) and as one JSON message otherwise;
* answers ``count_tokens`` and any other path with a harmless JSON body;
* records every request (``server.requests``) so that a test can assert what the client
  showed the model (system text, tools) and what the tools returned (``tool_result``).

:class:`Conversations` is a ready-made ``model``: it tells the main conversation from a
subagent's by the system prompt and plays each one's script, picking the step by the
number of assistant turns already in ``messages``; requests without tools get a short text.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Union

from fake_anthropic import Recorded, Reply, reply, text

Step = Union[Reply, Callable[[Recorded], Reply]]


class FakeClaudeAPI:
    """The server: ``with FakeClaudeAPI(model) as api: ... api.base_url ...``."""

    def __init__(self, model: Callable[[Recorded], Reply]):
        self.model = model
        self.requests: list[Recorded] = []
        self.errors: list[str] = []  # exceptions raised by ``model`` (the answer was a 500)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> "FakeClaudeAPI":
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _json(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._json(200, {})

            def do_HEAD(self):
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = None
                path = self.path.split("?")[0].rstrip("/")
                record = Recorded(path, {k.lower(): v for k, v in self.headers.items()}, body)
                if path.endswith("/count_tokens"):
                    return self._json(200, {"input_tokens": 1000})
                if path != "/v1/messages":
                    return self._json(200, {})
                with api._lock:
                    api.requests.append(record)
                    try:
                        answer = api.model(record)
                    except Exception as exc:  # the test sees it in api.errors
                        api.errors.append(f"{type(exc).__name__}: {exc}")
                        record.status = 500
                        return self._json(500, {"type": "error", "error": {
                            "type": "api_error", "message": f"fake model failed: {exc}"}})
                record.status = 200
                message = _message(answer, (body or {}).get("model") or "claude-test")
                try:
                    if (body or {}).get("stream"):
                        self._stream(message)
                    else:
                        self._json(200, message)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _stream(self, message: dict) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True
                for event, data in _events(message):
                    self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeClaudeAPI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- what the client sent --

    def with_tools(self) -> list[Recorded]:
        return [r for r in self.requests if (r.body or {}).get("tools")]

    def tool_results(self) -> list[dict]:
        """Every tool_result block the client sent back, each once, in order, with the
        ``tool_use`` block it answers under ``"call"``."""
        calls: dict[str, dict] = {}
        seen: dict[str, dict] = {}
        for r in self.requests:
            for message in r.messages:
                content = message.get("content")
                if not isinstance(content, list):
                    continue
                for block in content:
                    if block.get("type") == "tool_use":
                        calls[block["id"]] = block
                    elif block.get("type") == "tool_result" and block.get("tool_use_id") not in seen:
                        seen[block["tool_use_id"]] = {**block, "call": calls.get(block["tool_use_id"])}
        return list(seen.values())


def result_text(block: dict) -> str:
    """The text of a tool_result block (a string, or a list of text blocks)."""
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content or [] if isinstance(b, dict))


def system_and_reminders(record: Recorded) -> str:
    """The system prompt plus the text of every user message: Claude Code lists skills and
    agent types in a system-reminder inside the messages."""
    parts = [record.system_text]
    for message in record.messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(b.get("text", "") for b in content or [] if isinstance(b, dict))
    return "\n".join(parts)


@dataclass
class Conversations:
    """A scripted model with one script per conversation.

    ``scripts`` maps a marker to a list of steps; a request belongs to the first script
    whose marker occurs in its system prompt (``""`` matches every request: put the main
    conversation last). Step ``n`` answers the request that already holds ``n`` assistant
    turns. A step is a reply, or a function of the request returning one. Requests without
    tools, and requests past the end of a script, get a short text reply."""

    scripts: list[tuple[str, list[Step]]]
    unscripted: list[Recorded] = field(default_factory=list)

    def __call__(self, record: Recorded) -> Reply:
        if not (record.body or {}).get("tools"):
            return reply(text("Done."))
        for marker, steps in self.scripts:
            if marker in record.system_text:
                n = sum(1 for m in record.messages if m.get("role") == "assistant")
                if n >= len(steps):
                    self.unscripted.append(record)
                    return reply(text("Done."))
                step = steps[n]
                return step(record) if callable(step) else step
        self.unscripted.append(record)
        return reply(text("Done."))


def _message(answer: Reply, model: str) -> dict:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": answer.content,
        "stop_reason": answer.stop_reason,
        "stop_sequence": None,
        "usage": answer.usage,
    }


def _events(message: dict):
    start = {**message, "content": [], "stop_reason": None,
             "usage": {**message["usage"], "output_tokens": 1}}
    yield "message_start", {"type": "message_start", "message": start}
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield "content_block_start", {"type": "content_block_start", "index": i,
                                          "content_block": {"type": "text", "text": ""}}
            yield "content_block_delta", {"type": "content_block_delta", "index": i,
                                          "delta": {"type": "text_delta", "text": block["text"]}}
        elif block["type"] == "tool_use":
            yield "content_block_start", {"type": "content_block_start", "index": i,
                                          "content_block": {**block, "input": {}}}
            yield "content_block_delta", {"type": "content_block_delta", "index": i,
                                          "delta": {"type": "input_json_delta",
                                                    "partial_json": json.dumps(block["input"])}}
        yield "content_block_stop", {"type": "content_block_stop", "index": i}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                            "usage": {"output_tokens": message["usage"]["output_tokens"]}}
    yield "message_stop", {"type": "message_stop"}
