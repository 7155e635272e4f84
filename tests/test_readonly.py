"""Read-only on every path: no command but demo changes a store. The store file and its
-wal are hashed before and after every read command (with and without --filter) on a WAL
database with pending frames; a SQLite file that is not an MLflow store is refused with
one line and left as it was (the -shm index, which every WAL reader updates, is not data)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from builders import cli, open_store, write_trace


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _state(db: Path) -> tuple:
    return _digest(db), _digest(Path(str(db) + "-wal"))


@pytest.fixture(scope="module")
def wal_store(tmp_path_factory):
    """An MLflow store in WAL mode whose -wal holds frames not yet in the main file."""
    d = tmp_path_factory.mktemp("wal")
    db = d / "mlflow.db"
    uri, exp = open_store(db)
    ids = [write_trace({"name": "agent", "type": "AGENT", "ms": (0, 300 + i),
                        "children": [{"name": "llm", "type": "CHAT_MODEL", "ms": (1, 200),
                                      "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}},
                                     {"name": "tool", "type": "TOOL", "ms": (200, 290),
                                      **({"error": (RuntimeError, "boom")} if i % 2 else {})}]},
                       metadata={"mlflow.trace.session": "s-1"}, t0=1_790_000_000_000_000_000 + i * 10**9)
           for i in range(4)]
    # A writer that dies without closing leaves its frames in the -wal (no checkpoint).
    code = (
        "import os, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "c.execute('PRAGMA journal_mode=WAL')\n"
        "c.execute('PRAGMA wal_autocheckpoint=0')\n"
        "c.execute(\"INSERT INTO trace_tags (key, value, request_id) VALUES ('pending.frame', 'yes', ?)\", (sys.argv[2],))\n"
        "c.commit()\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(db), ids[0]], check=True)
    assert Path(str(db) + "-wal").stat().st_size > 0
    return {"db": db, "uri": f"sqlite:///{db}", "experiment_id": exp, "trace_ids": ids}


def _read_commands(store: dict, out: Path, review: Path) -> list[list[str]]:
    uri, exp, tid = store["uri"], store["experiment_id"], store["trace_ids"][0]
    src = ["--tracking-uri", uri, "--experiment-id", exp]
    cmds = []
    for flt in ([], ["--filter", "trace.execution_time_ms > 301"]):
        cmds += [
            ["stats", *src, *flt], ["findings", *src, *flt], ["extract", *src, *flt, "--recipe", "summary"],
            ["session", *src, *flt, "--list"], ["fetch", *src, *flt, "--output", str(out / "f.jsonl")],
            ["report", *src, *flt, "--branch", "main", "--commit", "abc1234", "--output-dir", str(out / "r"),
             "--no-charts"],
        ]
    cmds += [
        ["tree", "--tracking-uri", uri, "--trace-id", tid], ["health", "--tracking-uri", uri, "--trace-id", tid],
        ["fetch", "--tracking-uri", uri, "--trace-id", tid, "--output", str(out / "one.json")],
        ["session", *src, "--session-id", "s-1"],
        ["validate", str(review), "--tracking-uri", uri],
        ["locate", "--repo", str(out)],
    ]
    return cmds


def test_no_read_command_changes_a_wal_store(wal_store, tmp_path):
    r = cli("report", "--tracking-uri", wal_store["uri"], "--experiment-id", wal_store["experiment_id"],
            "--branch", "main", "--commit", "abc1234", "--output-dir", str(tmp_path / "first"), "--no-charts")
    assert r.returncode == 0, r.stderr
    review = Path(json.loads(r.stdout)["path"])
    before = _state(wal_store["db"])
    assert before[1] is not None
    for argv in _read_commands(wal_store, tmp_path, review):
        r = cli(*argv)
        assert r.returncode == 0, (argv, r.stderr[-1000:])
        assert _state(wal_store["db"]) == before, f"{argv[0]} changed the store"
    # The pending frame was read (the WAL is data), not lost.
    out = cli("fetch", "--tracking-uri", wal_store["uri"], "--trace-id", wal_store["trace_ids"][0],
              "--output", str(tmp_path / "t.json"))
    assert out.returncode == 0
    assert json.loads((tmp_path / "t.json").read_text())["info"]["tags"].get("pending.frame") == "yes"
    assert _state(wal_store["db"]) == before


@pytest.fixture
def other_app_db(tmp_path):
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO users (name) VALUES ('ada')")
    con.commit()
    con.close()
    return db


@pytest.mark.parametrize("argv", [
    ["stats", "--experiment-id", "1"],
    ["findings", "--experiment-id", "1", "--filter", "trace.status = 'ERROR'"],
    ["session", "--experiment-id", "1", "--session-id", "s-1"],
    ["tree", "--trace-id", "tr-0123456789abcdef0123456789abcdef"],
    ["validate", "REVIEW"],
])
def test_a_file_that_is_not_an_mlflow_store_is_refused_and_untouched(other_app_db, tmp_path, argv):
    review = tmp_path / "reviews" / "main" / "REVIEW-mlflow-abc1234.md"
    review.parent.mkdir(parents=True)
    review.write_text("---\nid: x\n---\n")
    argv = [str(review) if a == "REVIEW" else a for a in argv]
    before = _digest(other_app_db)
    r = cli(*argv, "--tracking-uri", f"sqlite:///{other_app_db}")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not an MLflow" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert _digest(other_app_db) == before
    tables = {t for (t,) in sqlite3.connect(other_app_db).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"users"}


def test_a_missing_sqlite_file_is_not_created(tmp_path):
    db = tmp_path / "nothing.db"
    for argv in (["stats", "--experiment-id", "1"], ["validate", str(tmp_path / "x.md")]):
        r = cli(*argv, "--tracking-uri", f"sqlite:///{db}")
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert not db.exists()


def test_a_read_only_copy_can_be_read(wal_store, tmp_path):
    """A store on read-only media (no write permission at all) still reads."""
    d = tmp_path / "ro"
    d.mkdir()
    shutil.copy(wal_store["db"], d / "mlflow.db")
    r = cli("stats", "--tracking-uri", f"sqlite:///{d / 'mlflow.db'}", "--experiment-id", wal_store["experiment_id"])
    assert r.returncode == 0, r.stderr
