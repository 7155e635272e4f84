"""Bounded waits and clean edges: a frozen, failing or absent server, unwritable outputs,
empty or negative options and bad URIs each end in one clear line (no traceback, no
"internal error", no hang); credentials in URIs never reach a message; trace text cannot
drive the terminal; long names are clipped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from builders import cli, open_store, write_trace

HANG_GUARD = 120  # seconds: a command still running then has hung (not a timing assertion)


def one_line_error(r) -> str:
    assert r.returncode != 0, r.stdout[-500:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri, exp = open_store(tmp_path_factory.mktemp("edges") / "mlflow.db")
    evil = "evil\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x9b\u202e" + "N" * 100_000
    tid = write_trace({"name": evil, "type": "AGENT", "ms": (0, 500), "children": [
        {"name": "llm", "type": "CHAT_MODEL", "ms": (1, 400),
         "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}},
        {"name": "tool\x1b[2J", "type": "TOOL", "ms": (400, 480), "error": (RuntimeError, "bad\x1b[31m " + "M" * 5000)}]})
    return {"uri": uri, "exp": exp, "tid": tid}


# ---- servers that freeze, fail or are not there ------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server():
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(50)
    held = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    t.join()
    for c in held:
        c.close()
    sock.close()


@pytest.fixture
def failing_server():
    """Answers 500 to everything."""
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _fail(self):
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _fail

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.mark.parametrize("kind", ["silent", "failing", "absent"])
def test_a_bad_server_is_one_line(kind, request):
    url = {"silent": lambda: request.getfixturevalue("silent_server"),
           "failing": lambda: request.getfixturevalue("failing_server"),
           "absent": lambda: f"http://127.0.0.1:{_free_port()}"}[kind]()
    for argv in (["stats", "--experiment-id", "1"], ["tree", "--trace-id", "tr-0123456789abcdef0123456789abcdef"]):
        r = cli(*argv, "--tracking-uri", url, timeout=HANG_GUARD)
        line = one_line_error(r)
        assert "tracking server" in line, line


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("frozen")
    port = _free_port()
    env = dict(os.environ, MLFLOW_DISABLE_AGENT_HINT="1", MLFLOW_MODEL_CATALOG_URI="")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{d}/s.db",
         "--default-artifact-root", str(d / "a"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.skip("mlflow server did not start")
    yield {"url": url, "proc": proc}
    os.killpg(proc.pid, signal.SIGCONT)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_a_frozen_mlflow_server_is_one_line(real_server):
    assert cli("stats", "--tracking-uri", real_server["url"], "--experiment-id", "0").returncode in (0, 1)
    os.killpg(real_server["proc"].pid, signal.SIGSTOP)
    try:
        r = cli("stats", "--tracking-uri", real_server["url"], "--experiment-id", "0", timeout=HANG_GUARD)
        assert "did not answer" in one_line_error(r)
    finally:
        os.killpg(real_server["proc"].pid, signal.SIGCONT)


# ---- outputs, options, URIs ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["/dev/full", "FILE/under", "DIR", "LONG"])
def test_unwritable_outputs_are_one_line(store, tmp_path, where):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    out = {"/dev/full": "/dev/full", "FILE/under": str(tmp_path / "afile" / "out.json"),
           "DIR": str(tmp_path / "adir"), "LONG": str(tmp_path / ("n" * 300))}[where]
    src = ["--tracking-uri", store["uri"], "--experiment-id", store["exp"]]
    one = ["--tracking-uri", store["uri"], "--trace-id", store["tid"]]
    for argv in (["stats", *src], ["findings", *src], ["fetch", *src], ["extract", *src, "--recipe", "summary"],
                 ["tree", *one], ["health", *one], ["fetch", *one]):
        r = cli(*argv, "--output", out)
        one_line_error(r)


def test_stdout_on_a_full_disk_is_one_line(store):
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "mlflow_analyzer", "stats", "--tracking-uri", store["uri"],
                            "--experiment-id", store["exp"]], stdout=full, stderr=subprocess.PIPE, text=True,
                           timeout=HANG_GUARD)
    one_line_error(r)


@pytest.mark.parametrize("argv", [
    ["stats", "--output", ""], ["stats", "--since", ""], ["stats", "--since", "   "], ["stats", "--filter", ""],
    ["stats", "--experiment-id", ""], ["stats", "--tracking-uri", ""], ["stats", "--group-by", ""],
    ["stats", "--limit", "0"], ["stats", "--limit", "-3"], ["stats", "--max-traces", "0"],
    ["extract", "--max-string", "-3", "--recipe", "io"], ["extract", "--limit", "0", "--recipe", "io"],
    ["extract", "--limit", "-1", "--recipe", "io"], ["extract", "--program", ""],
    ["tree", "--trace-id", ""], ["tree", "--max-spans", "-1"], ["findings", "--max-findings", "0"],
    ["findings", "--repo", ""], ["findings", "--branch", ""], ["session", "--session-id", ""],
    ["session", "--list", "--limit", "-5"], ["report", "--pr", "-1"], ["report", "--output-dir", ""],
    ["review", "--timeout", "-1"], ["review", "--timeout", "0"], ["review", "--max-retries", "-1"],
    ["review", "--max-repairs", "-2"], ["review", "--repo", ""], ["validate", ""],
    ["locate", "--repo", ""], ["fetch", "--output", ""], ["stats", "--order-by", ""],
])
def test_empty_or_negative_options_are_usage_errors(store, argv):
    full = list(argv)
    if argv[0] not in ("validate", "locate"):
        full += ["--tracking-uri", store["uri"]] if "--tracking-uri" not in argv else []
        full += ["--experiment-id", store["exp"]] if "--experiment-id" not in argv else []
    r = cli(*full)
    assert r.returncode == 2, (argv, r.returncode, r.stderr[-500:])
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr


@pytest.mark.parametrize("uri", [
    "sqlite:", "sqlite://", "sqlite:///", "http://", "http://:80", "http://host:99999", "http://[::1",
    "foo://bar", "postgresql://", "mysql+nosuchdriver://u:p@h/db", "databricks-uc://", "::::",
    "postgresql://app:S3cr3tPw@127.0.0.1:1/db", "http://user:S3cr3tPw@127.0.0.1:1",
])
def test_bad_uris_are_one_line_and_mask_passwords(uri):
    r = cli("stats", "--tracking-uri", uri, "--experiment-id", "1", timeout=HANG_GUARD)
    line = one_line_error(r)
    assert "S3cr3tPw" not in r.stderr, line


# ---- what reaches a terminal ----------------------------------------------------------------


def test_escape_sequences_never_reach_the_terminal_and_names_are_clipped(store):
    src = ["--tracking-uri", store["uri"], "--experiment-id", store["exp"]]
    one = ["--tracking-uri", store["uri"], "--trace-id", store["tid"]]
    for argv in (["findings", *src, "--format", "text"], ["stats", *src, "--format", "text"],
                 ["tree", *one], ["tree", *one, "--timeline"], ["health", *one, "--format", "text"],
                 ["findings", *src], ["stats", *src], ["health", *one], ["tree", *one, "--format", "json"]):
        r = cli(*argv)
        assert r.returncode == 0, (argv, r.stderr[-500:])
        for stream in (r.stdout, r.stderr):
            assert "\x1b" not in stream and "\x07" not in stream and "\x9b" not in stream and "\u202e" not in stream
        assert len(r.stdout) < 100_000, (argv, len(r.stdout))
        if r.stdout.lstrip().startswith("{"):
            json.loads(r.stdout)
