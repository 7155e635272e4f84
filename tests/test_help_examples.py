"""Every command's --help shows runnable examples, and each one runs (placeholders filled
from the corpus) and succeeds."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_analyzer.cli import COMMAND_MODULES, build_parser


def _examples() -> list[tuple[str, str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    out = []
    for name, p in sub.choices.items():
        lines = (p.epilog or "").splitlines()
        cmds = [line.strip() for line in lines if line.strip().startswith("mlflow-analyzer ")]
        assert cmds, f"`{name} --help` shows no example"
        out += [(name, c) for c in cmds]
    return out


EXAMPLES = _examples()


def test_every_listed_command_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) == set(COMMAND_MODULES)


@pytest.fixture(scope="module")
def workdir(corpus, tmp_path_factory):
    """A folder holding what the examples name: trace files, findings.json, a git repo."""
    d = tmp_path_factory.mktemp("examples")
    env = _env(d)
    tid = corpus["problems"][0]["trace_ids"][0]
    base = [sys.executable, "-m", "mlflow_analyzer"]
    uri, exp = corpus["tracking_uri"], corpus["experiment_id"]
    subprocess.run(base + ["fetch", "--tracking-uri", uri, "--trace-id", tid, "-o", "trace.json"], cwd=d, check=True, env=env)
    subprocess.run(base + ["fetch", "--tracking-uri", uri, "--experiment-id", exp, "--max-traces", "20", "-o", "traces.jsonl"], cwd=d, check=True, env=env)
    with open(d / "findings.json", "w") as fh:
        subprocess.run(base + ["findings", "--tracking-uri", uri, "--experiment-id", exp], cwd=d, check=True, stdout=fh, env=env)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=d, check=True)
    (d / "agent.py").write_text("import mlflow\n\n@mlflow.trace(name='retrieve_docs')\ndef retrieve(q):\n    return q\n")
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init", "--allow-empty"], cwd=d, check=True)
    session = next(p for p in corpus["problems"] if p["kind"] == "growing_prompt")["details"]["sessions"][0]
    return {"dir": d, "trace_id": tid, "uri": uri, "exp": exp, "session_id": session}


def _env(d: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "ANTHROPIC_API_KEY")}
    env["HOME"] = str(d / "home")
    env["MLFLOW_ANALYZER_HOME"] = str(d / "demo-home")
    return env


def _fill(cmd: str, w: dict, feature_branch: str) -> list[str]:
    cmd = cmd.replace("sqlite:///mlflow.db", w["uri"])
    cmd = re.sub(r"--experiment-id \d+", f"--experiment-id {w['exp']}", cmd)
    cmd = re.sub(r"\btr-[0-9a-f]{4,}\b", w["trace_id"], cmd)
    cmd = cmd.replace("feature/x", feature_branch)
    cmd = re.sub(r"\bsess-0123\b", w["session_id"], cmd)
    cmd = cmd.replace("~/src/agent", ".")
    args = shlex.split(cmd)
    return [sys.executable, "-m", "mlflow_analyzer", *args[1:]]


@pytest.mark.parametrize("command, example", EXAMPLES, ids=[f"{c}:{i}" for i, (c, _) in enumerate(EXAMPLES)])
def test_example_runs(command, example, workdir, corpus):
    feature = next(b for b in corpus["branches"] if b != "main")
    argv = _fill(example, workdir, feature)
    if command == "validate":
        reviews = sorted((workdir["dir"] / "reviews").rglob("REVIEW-mlflow-*.md"))
        if not reviews:
            subprocess.run([sys.executable, "-m", "mlflow_analyzer", "report", "--findings", "findings.json", "--branch", "main", "--commit", "abc1234"],
                           cwd=workdir["dir"], check=True, env=_env(workdir["dir"]))
    env = _env(workdir["dir"])
    if "--tracking-uri" not in example:  # examples that rely on the environment, as users set it
        env["MLFLOW_TRACKING_URI"] = workdir["uri"]
    if command == "review" and "--no-llm" not in example:
        from fake_anthropic import reviewer_api  # the API is not reachable here

        with reviewer_api() as api_env:
            r = subprocess.run(argv, cwd=workdir["dir"], capture_output=True, text=True, env={**env, **api_env}, timeout=300)
    else:
        r = subprocess.run(argv, cwd=workdir["dir"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, f"{example}\n{r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr
