"""Helpers for the tests that hold the docs to the truth (skills, agent, references, README).

- ``run_cli`` runs ``mlflow-analyzer`` in this process (``cli.main``, what the console script
  calls), capturing its output; ``run_cli_process`` runs it in a subprocess.
- ``store_values`` (a fixture) gives the value of each documentation placeholder, looked up
  in the corpus store: ``<tracking-uri>``, ``<experiment-id>``, ``<experiment-name>``,
  ``<trace-id>`` (an ERROR trace), ``<span-name>`` (its root-cause span), ``<session-id>``
  (the session that trace is a turn of), ``<assessment-name>`` and ``<failing-value>`` (a feedback
  and the value it has where it fails), ``<repo>`` (a git repository whose code creates the
  corpus's spans), ``<review-file>`` (where ``report --repo <repo>`` writes the review),
  ``<branch>`` (a branch of the corpus other than main).
- ``fill_placeholders`` substitutes them, and fails on any placeholder it does not know.
"""

from __future__ import annotations

import functools
import io
import os
import re
import subprocess
import sys
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"<([a-z][a-z0-9-]*)>")
PLACEHOLDERS = (
    "tracking-uri",
    "experiment-id",
    "experiment-name",
    "trace-id",
    "span-name",
    "session-id",
    "assessment-name",
    "failing-value",
    "repo",
    "review-file",
    "branch",
)


def cli_env(home: Path | None = None) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "ANTHROPIC_API_KEY")
    }
    env["MLFLOW_DISABLE_AGENT_HINT"] = "1"
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if home is not None:
        env["HOME"] = str(home)
        env["MLFLOW_ANALYZER_HOME"] = str(home / "mlflow-analyzer-demo")
        env["MLFLOW_ANALYZER_SPILL_DIR"] = str(home / "spill")
    return env


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_cli(args: list[str], *, cwd: Path | None = None, env: dict | None = None) -> Result:
    """``mlflow-analyzer ARGS`` in this process: fast (MLflow is imported once). ``env``
    changes the environment for the call (a None value unsets the variable)."""
    from mlflow_analyzer.cli import main

    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    with patched_environ(env or {}):
        try:
            if cwd is not None:
                os.chdir(cwd)
            with redirect_stdout(out), redirect_stderr(err):
                try:
                    rc = main([str(a) for a in args])
                except SystemExit as exc:  # argparse
                    rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        finally:
            os.chdir(here)
    return Result(rc, out.getvalue(), err.getvalue())


@contextmanager
def patched_environ(changes: dict):
    saved = {k: os.environ.get(k) for k in changes}
    try:
        for k, v in changes.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def markdown_section(path: Path, title: str) -> str:
    """The text of the ``## title`` section of a markdown file (up to the next ``## ``)."""
    text = path.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"{path.name} has no '## {title}' section"
    return m.group(1)


def run_cli_process(args: list[str], *, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    return subprocess.run(
        [sys.executable, "-m", "mlflow_analyzer", *map(str, args)],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def shim_bin(directory: Path) -> Path:
    """A folder with ``mlflow-analyzer`` and ``mlflow`` executables that run this checkout's
    toolkit and the test interpreter's MLflow, to put first on PATH for shell commands."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, module in (("mlflow-analyzer", "mlflow_analyzer"), ("mlflow", "mlflow")):
        path = directory / name
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
        path.chmod(0o755)
    return directory


def fill_placeholders(text: str, values: dict) -> str:
    unknown = sorted({m.group(1) for m in PLACEHOLDER.finditer(text)} - set(values))
    if unknown:
        raise AssertionError(
            f"unknown placeholder(s) {', '.join(f'<{u}>' for u in unknown)} in: {text}\n"
            f"known: {', '.join(f'<{p}>' for p in PLACEHOLDERS)}"
        )
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


@pytest.fixture(scope="session")
def store_values(corpus, tmp_path_factory) -> dict:
    values = dict(_lookups(corpus["tracking_uri"], str(corpus["experiment_id"])))
    values.update(
        {
            "tracking-uri": corpus["tracking_uri"],
            "experiment-id": str(corpus["experiment_id"]),
            "experiment-name": corpus["experiment_name"],
        }
    )
    repo = _code_repo(tmp_path_factory.mktemp("code-repo"), corpus)
    short = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, check=True,
                           capture_output=True, text=True).stdout.strip()
    values["repo"] = str(repo)
    values["review-file"] = str(repo / "reviews" / "main" / f"REVIEW-mlflow-{short}.md")
    values["branch"] = next(b for b in corpus["branches"] if b != "main")
    assert set(values) == set(PLACEHOLDERS)
    return values


@functools.lru_cache(maxsize=None)
def _lookups(tracking_uri: str, experiment_id: str) -> tuple:
    """Values read from the store through MLflow's public API (not through our sources)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    infos = client.search_traces(locations=[experiment_id], max_results=5000, include_spans=False)

    # An ERROR trace that belongs to a session: the trace docs and the session docs can
    # then use the same <trace-id> (a turn of <session-id>).
    errors = sorted(
        (t for t in infos if str(t.info.state).endswith("ERROR")
         and t.info.trace_metadata.get("mlflow.trace.session")),
        key=lambda t: t.info.trace_id,
    )
    assert errors, "the corpus store holds no ERROR trace that belongs to a session"
    trace = client.get_trace(errors[0].info.trace_id)
    session_id = trace.info.trace_metadata["mlflow.trace.session"]
    failed = [s for s in trace.data.spans if str(s.status.status_code).endswith("ERROR")]
    parents = {s.parent_id for s in failed}
    root_causes = [s for s in failed if s.span_id not in parents]
    span_name = (root_causes or failed)[0].name

    assessment = failing = None
    for t in sorted(infos, key=lambda t: t.info.trace_id):
        for a in t.info.assessments or []:
            fb = getattr(a, "feedback", None)
            if fb is None or fb.error is not None:
                continue
            if fb.value is False or (isinstance(fb.value, str) and fb.value.lower() in ("no", "fail")):
                assessment, failing = a.name, ("false" if fb.value is False else fb.value)
                break
        if assessment:
            break
    assert assessment, "the corpus store holds no failing feedback"
    return (
        ("trace-id", trace.info.trace_id),
        ("span-name", span_name),
        ("session-id", session_id),
        ("assessment-name", assessment),
        ("failing-value", failing),
    )


def _code_repo(directory: Path, corpus: dict) -> Path:
    """A git repository with one commit whose Python code creates the corpus's span names."""
    names = sorted({n for p in corpus.get("problems", []) for n in p.get("span_names", [])})
    names.append(corpus.get("root_span_name") or "agent")
    lines = ["import mlflow", ""]
    for i, name in enumerate(dict.fromkeys(names)):
        lines += ["", f"@mlflow.trace(name={name!r})", f"def step_{i}(*args, **kwargs):", "    return None", ""]
    pkg = directory / "app"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "agent.py").write_text("\n".join(lines))
    git = ["git", "-c", "user.email=docs@example.com", "-c", "user.name=docs", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=directory, check=True)
    subprocess.run([*git, "add", "-A"], cwd=directory, check=True)
    subprocess.run([*git, "commit", "-qm", "agent code"], cwd=directory, check=True)
    return directory
