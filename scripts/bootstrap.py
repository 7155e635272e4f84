#!/usr/bin/env python3
"""Set up a local virtualenv and run the main job or the tests: the README's quick start.

    python3 scripts/bootstrap.py demo     # install, then analyze the demo store
    python3 scripts/bootstrap.py test     # install with test extras, then run the test suite

Needs only Python 3.10+. The virtualenv lives in .venv beside this repo; it is (re)installed
when pyproject.toml changes. Extra arguments go to the command (pytest or the demo).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("MLFLOW_ANALYZER_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_venv() -> None:
    if sys.version_info < (3, 10):
        sys.exit(f"mlflow-analyzer needs Python 3.10 or newer (this is {sys.version.split()[0]})")
    stamp = VENV / ".installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PY.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return
    if not PY.exists():
        print(f"bootstrap: creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("bootstrap: installing mlflow-analyzer and its dependencies (first run: a few minutes)", file=sys.stderr)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    subprocess.run(pip + ["-e", f"{ROOT}[dev]"], check=True)
    stamp.write_text(want + "\n")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    ensure_venv()
    env = dict(os.environ, MLFLOW_DISABLE_AGENT_HINT="1")
    if argv[0] == "demo":
        return subprocess.call([str(BIN / "mlflow-analyzer"), "demo", *argv[1:]], env=env)
    return subprocess.call([str(PY), "-m", "pytest", "-q", *argv[1:]], cwd=ROOT, env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
