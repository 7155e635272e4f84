"""Helpers for the tests that drive the real Claude Code CLI (tests/test_claude_code.py) and
the tests that install from a copy of the repository (tests/test_packaging.py).

- ``claude_code`` (a session fixture): the ``claude`` executable from npm
  (``@anthropic-ai/claude-code``, installed once per test session into a temporary prefix;
  ``$CLAUDE_CODE_BIN`` points at one already installed). Skips where npm is absent.
- ``source_repo`` (a session fixture): the files git would ship, as a fresh one-commit
  repository, without this checkout's .venv, build/ or caches (what a user clones).
- ``run_claude``: ``claude -p`` in a project with a fresh HOME, against a FakeClaudeAPI.
- ``skill_commands``: the commands a SKILL.md shows, placeholders filled for the corpus.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "init.defaultBranch=main"]
CLAUDE_CODE_PACKAGE = "@anthropic-ai/claude-code"


def run(args, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 900)
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stderr[-3000:]}\n{r.stdout[-2000:]}"
    return r


@pytest.fixture(scope="session")
def claude_code(tmp_path_factory) -> Path:
    explicit = os.environ.get("CLAUDE_CODE_BIN")
    if explicit:
        return Path(explicit)
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the real Claude Code CLI comes from npm (@anthropic-ai/claude-code)")
    prefix = tmp_path_factory.mktemp("claude-code")
    run([npm, "install", "--prefix", prefix, "--no-audit", "--no-fund", "--loglevel", "error", CLAUDE_CODE_PACKAGE])
    exe = prefix / "node_modules" / ".bin" / "claude"
    assert exe.exists(), f"npm installed {CLAUDE_CODE_PACKAGE} without a claude executable"
    return exe


@pytest.fixture(scope="session")
def source_repo(tmp_path_factory) -> Path:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    src = tmp_path_factory.mktemp("source") / "mlflow-analyzer"
    for rel in filter(None, files):
        path = REPO / rel
        if not path.exists() and not path.is_symlink():
            continue  # deleted in the work tree
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            dest.symlink_to(os.readlink(path))
        else:
            dest.write_bytes(path.read_bytes())
            dest.chmod(path.stat().st_mode)
    run([*GIT, "init", "-q"], cwd=src)
    run([*GIT, "add", "-A"], cwd=src)
    run([*GIT, "commit", "-qm", "source"], cwd=src)
    return src


def git_project(path: Path) -> Path:
    """A project folder that is a git repository with one commit (reviews need a branch)."""
    path.mkdir(parents=True, exist_ok=True)
    run([*GIT, "init", "-q"], cwd=path)
    run([*GIT, "commit", "-q", "--allow-empty", "-m", "start"], cwd=path)
    return path


def claude_env(home: Path, api_url: str, path: str = "/usr/local/bin:/usr/bin:/bin", **extra) -> dict:
    """The environment of a user running Claude Code: a fresh HOME, no toolkit on PATH
    unless given, the API pointed at the fake server, nothing phoning home."""
    env = {
        "PATH": path,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": api_url,
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "MLFLOW_DISABLE_AGENT_HINT": "1",
    }
    # pip as this machine has it set up (indexes, and its cache: the plugin's environment
    # build then installs what the test run's own install downloaded, as on a machine
    # where pip ran before).
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    env.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    user_conf = Path.home() / ".config" / "pip" / "pip.conf"
    if user_conf.is_file():
        env.setdefault("PIP_CONFIG_FILE", str(user_conf))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_claude(claude: Path, prompt: str, *, cwd: Path, env: dict, args=(), timeout: int = 900):
    r = subprocess.run([str(claude), "-p", prompt, "--output-format", "json", *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"claude -p exited {r.returncode}\nstdout: {r.stdout[-3000:]}\nstderr: {r.stderr[-3000:]}"
    result = json.loads(r.stdout)
    assert not result.get("is_error"), result
    return result


def trust(home: Path, project: Path) -> None:
    """What accepting Claude Code's trust dialog for ``project`` records in ~/.claude.json."""
    path = home / ".claude.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("projects", {}).setdefault(str(project), {})["hasTrustDialogAccepted"] = True
    path.write_text(json.dumps(data))


def skill_commands(skill: str, values: dict, limit: int) -> list[str]:
    """The first ``limit`` mlflow-analyzer commands the skill's SKILL.md shows, filled in."""
    from doc_helpers import fill_placeholders

    out = []
    in_block = False
    for line in (REPO / "skills" / skill / "SKILL.md").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            in_block = stripped.startswith("```bash") and not in_block
            continue
        if in_block and stripped.startswith("mlflow-analyzer "):
            out.append(fill_placeholders(stripped, values))
            if len(out) == limit:
                break
    return out


def python_bin(directory: Path) -> Path:
    """A folder with an ``mlflow-analyzer`` that runs this test run's toolkit: a user's own
    install (pip) on PATH."""
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "mlflow-analyzer"
    exe.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m mlflow_analyzer "$@"\n')
    exe.chmod(0o755)
    return directory
