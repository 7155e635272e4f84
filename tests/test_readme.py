"""The README's quick start: exactly two commands; CI runs the test one; the demo one works
on this checkout as written."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _quick_start() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    demo, test = _quick_start()
    assert "demo" in demo and "test" in test and len(_quick_start()) == 2
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert test in ci.splitlines(), "CI must run the README's test command"


def test_quick_start_demo_runs_as_written(tmp_path):
    demo, _ = _quick_start()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    env["MLFLOW_ANALYZER_HOME"] = str(tmp_path / "demo")
    r = subprocess.run(demo, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Top findings" in r.stdout and "Review:" in r.stdout
    review = next((tmp_path / "demo" / "results" / "reviews").rglob("REVIEW-mlflow-*.md"))
    assert review.read_text().startswith("---\n")
    # The next command it prints runs as printed, in the same shell (no PATH set up).
    (nxt,) = [line[len("Next: "):] for line in r.stdout.splitlines() if line.startswith("Next: ")]
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not Path(p, "mlflow-analyzer").exists()) or "/usr/bin:/bin"
    n = subprocess.run(nxt, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert n.returncode == 0, f"{nxt}: {n.stderr[-2000:]}"
    assert "F-001" in n.stdout
    # ... and the quick start says how to run it by name.
    assert "activate" in r.stderr
