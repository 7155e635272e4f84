"""The pack in the real Claude Code CLI (from npm), driven headless (`claude -p`) against a
local fake Messages API (tests/fake_claude_api.py), after each install route a user takes:

- the marketplace (`claude plugin marketplace add` + `claude plugin install`) on a fresh
  machine: the copy is small, the SessionStart hook prepares the toolkit's environment, and
  the first command (passing the longer timeout the skills ask for) answers;
- `--plugin-dir` of a fresh clone;
- `mlflow-analyzer install --target` (the user consented to the permission rules and
  trusted the folder) and `install --user`;
- `npx skills add` (skills only, the user's own toolkit on PATH).

In each, the scripted model checks what Claude Code shows it (the three skills with their
descriptions, the mlflow-analyzer subagent), calls the Skill tool, then the Bash commands the
SKILL.md shows against the corpus store, and the tool results must be the commands' real
output. The plugin and install --target routes also run the subagent: it writes the review
with `report`, edits it, validates it, and the file is on disk and valid. Permissions are the
ones a user would have: --allowedTools, or the consented settings of a trusted folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from claude_helpers import (  # noqa: F401  (claude_code, source_repo: fixtures)
    REPO,
    claude_code,
    claude_env,
    git_project,
    python_bin,
    run,
    run_claude,
    skill_commands,
    source_repo,
    trust,
)
from doc_helpers import run_cli, store_values  # noqa: F401  (store_values: a fixture)
from fake_anthropic import reply, text, tool_use
from fake_claude_api import Conversations, FakeClaudeAPI, result_text, system_and_reminders

from mlflow_analyzer import __version__

SKILLS = ("analyze-mlflow-trace", "analyze-mlflow-experiment", "analyze-mlflow-session")
AGENT_MARKER = "# MLflow analyzer"  # the agent body's title: a subagent's system prompt
FIRST_CALL_TIMEOUT_MS = 600000  # what the skills tell the model to pass on the first command
ALLOW_BASH = "Bash(mlflow-analyzer *)"
ALLOW_REVIEW_EDITS = "Edit(reviews/**)"  # a user approving the subagent's edit of its review


def _description(skill: str) -> str:
    import yaml

    text_ = (REPO / "skills" / skill / "SKILL.md").read_text(encoding="utf-8")
    return yaml.safe_load(text_.split("---")[1])["description"]


def _agent_description() -> str:
    import yaml

    return yaml.safe_load((REPO / "agents" / "mlflow-analyzer.md").read_text().split("---")[1])["description"]


def _python_dir(tmp_path: Path) -> Path:
    """A python3 on PATH as a user's machine has one (the base interpreter, with venv), and
    nothing else of this test run."""
    d = tmp_path / "python-bin"
    d.mkdir()
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    (d / "python3").symlink_to(base if base.exists() else Path(sys._base_executable))
    return d


# --- the scripted model ----------------------------------------------------------------------


class Scenario:
    """Main conversation: Skill, then the SKILL.md's commands, then (optionally) the
    subagent; subagent: findings, report, Read, Edit, validate."""

    def __init__(self, *, skill: str, commands: list[str], agent: str | None, tracking_uri: str,
                 experiment_id: str, workdir: Path):
        self.skill, self.commands, self.agent = skill, commands, agent
        self.uri, self.exp, self.workdir = tracking_uri, experiment_id, workdir
        self.review_path: str | None = None
        main = [reply(text("Using the skill."), tool_use("Skill", {"skill": skill}))]
        for i, command in enumerate(commands):
            call = {"command": command, "description": "Run mlflow-analyzer"}
            if i == 0:
                call["timeout"] = FIRST_CALL_TIMEOUT_MS
            main.append(reply(tool_use("Bash", call)))
        if agent:
            main.append(reply(tool_use("Agent", {
                "description": "Review the traces",
                "subagent_type": agent,
                "prompt": f"Review the traces of experiment {experiment_id} in {tracking_uri} for this "
                          "repository and write the review file.",
            })))
        main.append(reply(text("Finished.")))
        sub = [
            reply(tool_use("Bash", {"command": f"mlflow-analyzer findings --tracking-uri {tracking_uri} "
                                               f"--experiment-id {experiment_id} --repo . --output findings.json",
                                    "timeout": FIRST_CALL_TIMEOUT_MS})),
            reply(tool_use("Bash", {"command": "mlflow-analyzer report --findings findings.json --repo ."})),
            self._read_review,
            lambda req: reply(tool_use("Edit", {"file_path": self.review_path, "old_string": "## Summary",
                                                "new_string": "## Summary\n\nChecked in Claude Code by the "
                                                              "mlflow-analyzer subagent."})),
            lambda req: reply(tool_use("Bash", {"command": f"mlflow-analyzer validate {self.review_path} "
                                                           f"--tracking-uri {tracking_uri}"})),
            lambda req: reply(text(f"The review is written: {self.review_path}")),
        ]
        self.model = Conversations([(AGENT_MARKER, sub), ("", main)])

    def _read_review(self, req):
        report = _last_tool_result(req)
        path = Path(json.loads(report)["path"])
        self.review_path = str(path if path.is_absolute() else self.workdir / path)
        return reply(tool_use("Read", {"file_path": self.review_path}))


def _last_tool_result(req) -> str:
    blocks = [b for b in req.messages[-1]["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
    return result_text(blocks[-1])


def _check_session(api: FakeClaudeAPI, scenario: Scenario, *, namespace: str, expect_agent: bool) -> dict:
    """What the model was shown and what the tools returned; returns the Bash results."""
    assert not api.errors, api.errors
    assert not scenario.model.unscripted, "the client asked more than the script answers"
    first = api.with_tools()[0]
    shown = system_and_reminders(first)
    for skill in SKILLS:
        assert f"- {namespace}{skill}: {_description(skill)[:200]}" in shown, f"{skill} is not listed to the model"
    if expect_agent:
        assert f"- {namespace}mlflow-analyzer: {_agent_description()[:200]}" in shown, "the subagent is not offered"
    results = api.tool_results()
    by_tool: dict[str, list[dict]] = {}
    for r in results:
        by_tool.setdefault(r["call"]["name"], []).append(r)
    (skill_result,) = by_tool["Skill"]
    assert not skill_result.get("is_error"), result_text(skill_result)
    assert result_text(skill_result).startswith(f"Launching skill: {scenario.skill}")
    # The SKILL.md body follows the tool result, with the skill's folder.
    last = system_and_reminders(api.with_tools()[-1])
    assert "Base directory for this skill" in last and "# Analyze one MLflow trace" in last
    bash = {r["call"]["input"]["command"]: r for r in by_tool["Bash"]}
    for command in scenario.commands:
        r = bash[command]
        assert not r.get("is_error"), f"{command}: {result_text(r)}"
    return bash


def _check_trace_commands(bash: dict, scenario: Scenario, values: dict) -> None:
    version, fetch, health, tree = (result_text(bash[c]) for c in scenario.commands)
    assert version.strip().splitlines()[-1] == f"mlflow-analyzer {__version__}"
    assert json.loads(fetch.strip().splitlines()[-1])["trace_id"] == values["trace-id"]
    assert values["trace-id"] in health and "ERROR" in health
    assert values["span-name"] in tree
    assert (scenario.workdir / "trace.json").is_file()


def _check_subagent(api: FakeClaudeAPI, scenario: Scenario, tracking_uri: str) -> None:
    subs = [r for r in api.requests if AGENT_MARKER in r.system_text]
    assert subs, "the subagent never ran"
    tools = set(subs[0].tool_names)
    assert {"Read", "Bash", "Write", "Edit"} <= tools <= {"Read", "Bash", "Write", "Edit"}, tools
    assert "The review file is the deliverable" in subs[0].system_text
    results = {r["call"]["name"] + ":" + json.dumps(r["call"]["input"])[:60]: r for r in api.tool_results()}
    for key, r in results.items():
        assert not r.get("is_error"), f"{key}: {result_text(r)}"
    validated = [r for r in api.tool_results() if r["call"]["name"] == "Bash"
                 and r["call"]["input"]["command"].startswith("mlflow-analyzer validate")]
    assert validated and result_text(validated[0]).startswith("ok: ")
    review = Path(scenario.review_path)
    assert review.is_file() and re.search(r"reviews/[^/]+/REVIEW-mlflow-[0-9a-f]{7,}\.md$", str(review))
    assert "Checked in Claude Code by the mlflow-analyzer subagent." in review.read_text()
    r = run_cli(["validate", str(review), "--tracking-uri", tracking_uri])
    assert r.returncode == 0, r.stderr


def _scenario(values: dict, workdir: Path, *, namespace: str, agent: bool) -> Scenario:
    return Scenario(skill=f"{namespace}analyze-mlflow-trace",
                    commands=skill_commands("analyze-mlflow-trace", values, limit=4),
                    agent=f"{namespace}mlflow-analyzer" if agent else None,
                    tracking_uri=values["tracking-uri"], experiment_id=values["experiment-id"], workdir=workdir)


# --- the plugin --------------------------------------------------------------------------------


def test_claude_plugin_validate_passes(claude_code, tmp_path):
    env = claude_env(tmp_path, "http://127.0.0.1:9")
    for path in (REPO, REPO / "plugin"):
        r = subprocess.run([str(claude_code), "plugin", "validate", "--strict", str(path)], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{path}: {r.stdout}{r.stderr}"
        assert "Validation passed" in r.stdout


@pytest.fixture(scope="module")
def marketplace_install(claude_code, source_repo, store_values, tmp_path_factory):
    """A fresh machine: the marketplace added from a clone, the plugin installed, then one
    Claude Code session that uses a skill and the subagent. The toolkit's environment is
    built there, by the SessionStart hook and the first command; later tests reuse it."""
    base = tmp_path_factory.mktemp("marketplace")
    home = base / "home"
    home.mkdir()
    env = claude_env(home, "http://127.0.0.1:9", path=f"{_python_dir(base)}:/usr/bin:/bin")
    run([claude_code, "plugin", "marketplace", "add", source_repo], env=env, cwd=base)
    run([claude_code, "plugin", "install", "mlflow-analyzer@mlflow-analyzer"], env=env, cwd=base)
    project = git_project(base / "project")
    scenario = _scenario(store_values, project, namespace="mlflow-analyzer:", agent=True)
    with FakeClaudeAPI(scenario.model) as api:
        env["ANTHROPIC_BASE_URL"] = api.base_url
        run_claude(claude_code, "What went wrong in this trace? Then review the traces of this branch.",
                   cwd=project, env=env, args=["--allowedTools", ALLOW_BASH, ALLOW_REVIEW_EDITS])
    data = next((home / ".claude" / "plugins" / "data").iterdir())
    return {"home": home, "api": api, "scenario": scenario, "env_dir": data / "env"}


def test_marketplace_copies_only_the_plugin(marketplace_install):
    cache = marketplace_install["home"] / ".claude" / "plugins" / "cache"
    size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file() and not p.is_symlink())
    assert size < 5_000_000, f"the plugin cache holds {size:,} bytes"
    (installed,) = cache.glob("*/mlflow-analyzer/*")
    assert {p.name for p in installed.iterdir()} >= {"skills", "agents", "references", "bin", "hooks",
                                                      "mlflow_analyzer", "pyproject.toml", ".claude-plugin"}
    assert (installed / "skills" / "analyze-mlflow-trace" / "references" / "cli.md").is_file()
    assert not list(installed.rglob(".venv")) and not (installed / "tests").exists()


def test_marketplace_skill_and_subagent_work_on_first_use(marketplace_install, store_values):
    api, scenario = marketplace_install["api"], marketplace_install["scenario"]
    bash = _check_session(api, scenario, namespace="mlflow-analyzer:", expect_agent=True)
    _check_trace_commands(bash, scenario, store_values)
    # The first command found the environment prepared by the SessionStart hook (ready, or
    # still being installed: then it waited for that build instead of starting its own).
    first = result_text(bash[scenario.commands[0]])
    assert "first run" not in first, "the first command built the environment itself"
    _check_subagent(api, scenario, store_values["tracking-uri"])
    # The environment was built in the plugin's data folder: the trimmed one, not MLflow's
    # whole server package.
    env_dir = marketplace_install["env_dir"]
    assert (env_dir / ".mlflow-analyzer-version").read_text().strip() == __version__
    site = next(env_dir.glob("lib/python*/site-packages"))
    assert (site / "mlflow").is_dir() and not (site / "pyarrow").exists() and not (site / "sklearn").exists()


def test_plugin_dir_of_a_fresh_clone(claude_code, source_repo, marketplace_install, store_values, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", source_repo, clone])
    # Reuse the environment the marketplace test built (same version, same requirements).
    data = home / ".claude" / "plugins" / "data" / "mlflow-analyzer-inline"
    data.mkdir(parents=True)
    (data / "env").symlink_to(marketplace_install["env_dir"])
    project = git_project(tmp_path / "project")
    scenario = _scenario(store_values, project, namespace="mlflow-analyzer:", agent=False)
    with FakeClaudeAPI(scenario.model) as api:
        env = claude_env(home, api.base_url, path=f"{_python_dir(tmp_path)}:/usr/bin:/bin")
        run_claude(claude_code, "What went wrong in this trace?", cwd=project, env=env,
                   args=["--plugin-dir", clone / "plugin", "--allowedTools", ALLOW_BASH])
    bash = _check_session(api, scenario, namespace="mlflow-analyzer:", expect_agent=True)
    _check_trace_commands(bash, scenario, store_values)
    assert not (data / "build.log").exists(), "the ready environment was used"


# --- mlflow-analyzer install ------------------------------------------------------------------


def test_install_target(claude_code, store_values, tmp_path):
    """The user ran `mlflow-analyzer install --target .` and said yes to the permission
    rules, and accepted Claude Code's trust dialog for the folder. The toolkit's own
    environment is not on PATH: the launcher install wrote is found through its hook."""
    home = tmp_path / "home"
    home.mkdir()
    project = git_project(tmp_path / "project")
    r = run_cli(["install", "--target", project, "--allow-commands"])
    assert r.returncode == 0, r.stderr
    trust(home, project)
    scenario = _scenario(store_values, project, namespace="", agent=True)
    with FakeClaudeAPI(scenario.model) as api:
        env = claude_env(home, api.base_url, path="/usr/bin:/bin")
        run_claude(claude_code, "What went wrong in this trace? Then review the traces of this branch.",
                   cwd=project, env=env, args=["--allowedTools", ALLOW_REVIEW_EDITS])
    bash = _check_session(api, scenario, namespace="", expect_agent=True)
    _check_trace_commands(bash, scenario, store_values)
    _check_subagent(api, scenario, store_values["tracking-uri"])


def test_install_user(claude_code, store_values, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    r = run_cli(["install", "--user", "--allow-commands"], env={"HOME": home})
    assert r.returncode == 0, r.stderr
    project = git_project(tmp_path / "project")
    scenario = _scenario(store_values, project, namespace="", agent=False)
    with FakeClaudeAPI(scenario.model) as api:
        env = claude_env(home, api.base_url, path="/usr/bin:/bin")
        run_claude(claude_code, "What went wrong in this trace?", cwd=project, env=env)
    bash = _check_session(api, scenario, namespace="", expect_agent=True)
    _check_trace_commands(bash, scenario, store_values)


# --- npx skills add -------------------------------------------------------------------------------


def test_npx_skills_add(claude_code, source_repo, store_values, tmp_path):
    """`npx skills add` copies the skill folders only: each works alone (its references are
    inside it) with the user's own mlflow-analyzer on PATH."""
    npx = shutil.which("npx")
    if npx is None:
        pytest.skip("npx is not installed (it comes with npm)")
    home = tmp_path / "home"
    home.mkdir()
    project = git_project(tmp_path / "project")
    env = claude_env(home, "http://127.0.0.1:9", path=f"{Path(npx).parent}:/usr/bin:/bin",
                     npm_config_cache=str(tmp_path / "npm-cache"), DO_NOT_TRACK="1")
    run([npx, "--yes", "skills", "add", source_repo, "--skill", "*", "-a", "claude-code", "-y"], cwd=project, env=env)
    for skill in SKILLS:
        folder = project / ".claude" / "skills" / skill
        assert (folder / "SKILL.md").is_file(), f"{skill} was not installed"
        for target in re.findall(r"\]\((references/[^)#]+)", (folder / "SKILL.md").read_text()):
            assert (folder / target).is_file(), f"{skill}: {target} is missing in the installed skill"
    assert not (project / ".claude" / "agents").exists()
    scenario = _scenario(store_values, project, namespace="", agent=False)
    with FakeClaudeAPI(scenario.model) as api:
        env = claude_env(home, api.base_url, path=f"{python_bin(tmp_path / 'user-bin')}:/usr/bin:/bin")
        run_claude(claude_code, "What went wrong in this trace?", cwd=project, env=env,
                   args=["--allowedTools", ALLOW_BASH])
    bash = _check_session(api, scenario, namespace="", expect_agent=False)
    _check_trace_commands(bash, scenario, store_values)
