#!/usr/bin/env python3
"""Set up a local virtualenv and run the main job or the tests: the README's quick start.

    python3 scripts/bootstrap.py demo     # install, then analyze the demo store
    python3 scripts/bootstrap.py test     # install with test extras, then run the test suite

Needs only Python 3.10+. The virtualenv lives in .venv beside this repo; it is (re)installed
when pyproject.toml changes. Extra arguments go to the command (pytest or the demo). The
install prints a progress line every few seconds; pip's full output goes to
.venv/bootstrap-install.log (shown when something fails).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("MLFLOW_ANALYZER_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
LOG = VENV / "bootstrap-install.log"
PROGRESS_EVERY = 10.0  # seconds between progress lines when not on a terminal


def say(message: str) -> None:
    print(f"bootstrap: {message}", file=sys.stderr, flush=True)


def ensure_venv() -> None:
    if sys.version_info < (3, 10):
        sys.exit(f"mlflow-analyzer needs Python 3.10 or newer (this is {sys.version.split()[0]})")
    stamp = VENV / ".installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PY.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return
    started = time.monotonic()
    if not PY.exists():
        say(f"[1/3] creating the virtualenv {_show(VENV)}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    else:
        say(f"[1/3] reusing the virtualenv {_show(VENV)} (pyproject.toml changed)")
    LOG.write_text("")
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    say("[2/3] updating pip")
    _pip(pip + ["--upgrade", "pip"], "pip")
    say("[3/3] installing mlflow-analyzer and its dependencies (MLflow, jq, matplotlib, pytest...); "
        "the first run downloads about 300 MB and takes a few minutes")
    _pip(pip + ["-e", f"{ROOT}[dev]"], "mlflow-analyzer")
    stamp.write_text(want + "\n")
    say(f"ready in {_duration(time.monotonic() - started)}: {_show(BIN / 'mlflow-analyzer')}")


def _pip(cmd: list[str], what: str) -> None:
    """Run pip with its output in the log, printing progress: how long, how many packages."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", PIP_NO_INPUT="1")  # no build-backend warning wall
    tty = sys.stderr.isatty()
    with LOG.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        offset = log.tell()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        start = last = time.monotonic()
        while proc.poll() is None:
            time.sleep(0.5)
            now = time.monotonic()
            if now - last >= (1.0 if tty else PROGRESS_EVERY):
                last = now
                line = f"  {_duration(now - start)}: {_progress(offset)}"
                if tty:
                    print(f"\r{line:<78}", end="", file=sys.stderr, flush=True)
                else:
                    print(line, file=sys.stderr, flush=True)
        if tty:
            print("\r" + " " * 78 + "\r", end="", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        tail = LOG.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        print("\n".join(tail), file=sys.stderr)
        sys.exit(f"bootstrap: installing {what} failed (exit {proc.returncode}); the whole log: {LOG}")


def _progress(offset: int) -> str:
    """What pip is doing, from its log since ``offset``."""
    with LOG.open("rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", errors="replace")
    collected = len(re.findall(r"^\s*Collecting ", text, re.M))
    downloads = len(re.findall(r"^\s*Downloading ", text, re.M))
    if "Installing collected packages" in text:
        m = re.findall(r"Installing collected packages: (.*)", text)
        n = len(m[-1].split(", ")) if m else 0
        return f"installing {n} packages (unpacking: the longest part)"
    if collected <= 1:
        return "reading mlflow-analyzer's metadata"
    return f"resolving dependencies: {collected} packages so far, {downloads} downloaded"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _show(path: Path) -> str:
    try:
        rel = path.relative_to(Path.cwd())
        return str(rel) if "/" in str(rel) else f"./{rel}"
    except ValueError:
        return str(path)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    ensure_venv()
    env = dict(os.environ, MLFLOW_DISABLE_AGENT_HINT="1")
    if argv[0] == "demo":
        rc = subprocess.call([str(BIN / "mlflow-analyzer"), "demo", *argv[1:]], env=env)
        if "--format" not in argv:
            say(f"to run mlflow-analyzer by name from your shell: source {_show(BIN / 'activate')} "
                f"(or put {_show(BIN)} on your PATH)")
        return rc
    return subprocess.call([str(PY), "-m", "pytest", "-q", *argv[1:]], cwd=ROOT, env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
