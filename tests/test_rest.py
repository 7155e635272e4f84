"""The REST client: bounded timeouts and retries, errors in one line with the server named
without its credentials. Against small local HTTP servers (no MLflow needed here)."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from mlflow_analyzer.errors import NotFoundError, SourceError
from mlflow_analyzer.rest import RestClient, masked


class _Handler(http.server.BaseHTTPRequestHandler):
    script: list = []  # (status, body) per request, then 200 {"ok": true}
    seen: list = []

    def log_message(self, *a):
        pass

    def _answer(self):
        self.seen.append((self.command, self.path, dict(self.headers)))
        status, body = self.script.pop(0) if self.script else (200, {"ok": True})
        if status == "hang":
            time.sleep(3)
            status, body = 200, {"late": True}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer


@pytest.fixture()
def server():
    _Handler.script, _Handler.seen = [], []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()


def test_retries_then_answers(server):
    url, h = server
    h.script = [(503, {"error_code": "TEMPORARILY_UNAVAILABLE"}), (429, {}), (200, {"traces": []})]
    c = RestClient(url, retries=2, timeout=5)
    assert c.post_json("/api/3.0/mlflow/traces/search", {"x": 1}) == {"traces": []}
    assert len(h.seen) == 3


def test_gives_up_after_bounded_retries(server):
    url, h = server
    h.script = [(503, {"message": "busy"})] * 5
    c = RestClient(url, retries=1, timeout=5)
    with pytest.raises(SourceError, match="HTTP 503"):
        c.get_json("/x")
    assert len(h.seen) == 2


def test_not_found_is_a_not_found_error(server):
    url, h = server
    h.script = [(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Experiment '9' does not exist.\nmore"})]
    with pytest.raises(NotFoundError, match="RESOURCE_DOES_NOT_EXIST: Experiment '9' does not exist.$"):
        RestClient(url, retries=0).get_json("/api/2.0/mlflow/experiments/get", {"experiment_id": "9"})


def test_timeout_is_bounded_and_credentials_are_masked(server):
    url, h = server
    h.script = [("hang", None)]  # answers after 3 s: a 0.5 s timeout gives up first
    secret_url = url.replace("http://", "http://alice:s3cret@")
    c = RestClient(secret_url, retries=0, timeout=0.5)
    with pytest.raises(SourceError) as exc:
        c.get_json("/slow")
    assert "timed out" in str(exc.value) and "s3cret" not in str(exc.value) and "alice" not in str(exc.value)
    auth = h.seen[0][2].get("Authorization", "")
    assert auth.startswith("Basic ")  # the credentials go in the header, not the message


def test_masked():
    assert masked("https://u:p@host:5000/path") == "https://host:5000/path"
    assert masked("http://host:5000") == "http://host:5000"
