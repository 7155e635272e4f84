"""Lint of the Claude Code surface: the skills follow the Agent Skills spec, the subagent has
Claude Code's frontmatter plus the budgets the headless runner reads, every file a document
links to exists, and the plugin, marketplace and in-repo .claude/ point at the pack."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlflow_analyzer import __version__, skill_refs

REPO = Path(__file__).resolve().parent.parent
SKILLS = sorted(p.parent for p in (REPO / "skills").glob("*/SKILL.md"))
AGENT = REPO / "agents" / "mlflow-analyzer.md"
EXPECTED_SKILLS = {"analyze-mlflow-trace", "analyze-mlflow-experiment", "analyze-mlflow-session"}

# The Agent Skills specification's frontmatter fields (anthropics/skills quick_validate.py).
SPEC_FIELDS = {"name", "description", "license", "allowed-tools", "metadata", "compatibility"}
NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
# Claude Code subagent frontmatter fields, plus `steering` (read by the headless runner).
AGENT_FIELDS = {
    "name", "description", "tools", "disallowedTools", "model", "permissionMode", "skills",
    "hooks", "color", "maxTurns", "memory", "mcpServers", "background", "effort", "steering",
}
# Tools Claude Code 2.1.197 offers a subagent (Grep and Glob are gone: a subagent asking for
# them silently does without). tests/test_claude_code.py checks the real client's list.
CLAUDE_CODE_TOOLS = {"Read", "Write", "Edit", "NotebookEdit", "Bash", "WebFetch", "WebSearch"}
MODEL_ALIASES = {"sonnet", "opus", "haiku", "inherit"}


def frontmatter(path: Path) -> tuple[dict, str]:
    text = path.read_text(encoding="utf-8")
    m = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert m, f"{path}: no YAML frontmatter between --- lines at the top"
    data = yaml.safe_load(m.group(1))
    assert isinstance(data, dict), f"{path}: frontmatter is not a mapping"
    return data, m.group(2)


def test_the_three_skills_exist():
    assert {s.name for s in SKILLS} == EXPECTED_SKILLS


@pytest.mark.parametrize("skill", SKILLS, ids=[s.name for s in SKILLS])
def test_skill_frontmatter_follows_the_spec(skill):
    meta, body = frontmatter(skill / "SKILL.md")
    assert set(meta) <= SPEC_FIELDS, f"fields outside the Agent Skills spec: {set(meta) - SPEC_FIELDS}"
    name = meta.get("name")
    assert name == skill.name, f"name {name!r} must equal the folder name {skill.name!r}"
    assert NAME.match(name) and len(name) <= 64
    desc = meta.get("description")
    assert isinstance(desc, str) and desc.strip(), "description is required"
    assert len(desc) <= 1024, f"description is {len(desc)} characters (at most 1024)"
    assert "<" not in desc and ">" not in desc, "no angle brackets in the description"
    assert "Use it" in desc or "Use this" in desc or "use it" in desc, "say when to use it"
    assert len((skill / "SKILL.md").read_text(encoding="utf-8").splitlines()) < 500


@pytest.mark.parametrize("skill", SKILLS, ids=[s.name for s in SKILLS])
def test_skill_body_drives_the_cli(skill):
    _, body = frontmatter(skill / "SKILL.md")
    assert "mlflow-analyzer " in body
    assert "```bash" in body
    # Big output goes to files and numbers come from the CLI, not from raw JSON in the chat.
    assert "--output" in body
    assert "mlflow traces search --output json" not in body
    assert "info.state" not in body, "MLflow rejects info.state filters (see references/filters.md)"


def test_experiment_skill_covers_the_workflow():
    _, body = frontmatter(REPO / "skills" / "analyze-mlflow-experiment" / "SKILL.md")
    body = " ".join(body.split())
    for needle in ("sqlite", "postgresql", "mysql", "file store", "databricks", "DATABRICKS_TOKEN",
                   "DATABRICKS_CONFIG_PROFILE", "mlflow.env", "mlflow experiments search",
                   "batches of ten", "snake_case", "log_feedback", "consent", "Unattended",
                   "stats", "findings", "verbose", "repetition", "follow-up questions",
                   "inconsistent", "wrong format", "Strengths", "Refuted"):
        assert needle.lower() in body.lower(), f"the experiment skill does not mention {needle!r}"


def test_agent_frontmatter():
    meta, body = frontmatter(AGENT)
    assert set(meta) <= AGENT_FIELDS, f"unknown agent fields: {set(meta) - AGENT_FIELDS}"
    assert meta["name"] == AGENT.stem == "mlflow-analyzer"
    desc = meta["description"]
    assert isinstance(desc, str) and 0 < len(desc) <= 1024 and "<" not in desc and ">" not in desc
    tools = [t.strip() for t in meta["tools"].split(",")] if isinstance(meta["tools"], str) else meta["tools"]
    assert set(tools) == {"Read", "Bash", "Write", "Edit"}
    assert set(tools) <= CLAUDE_CODE_TOOLS
    assert meta["model"] in MODEL_ALIASES or str(meta["model"]).startswith("claude-")
    assert meta["maxTurns"] == 25
    assert meta["steering"] == {"token_budget": 160000, "turn_budget": 25, "wrap_up_threshold": 0.8}


def test_agent_file_loads_in_the_headless_runner():
    if importlib.util.find_spec("mlflow_analyzer.headless") is None:
        pytest.skip("the headless runner (mlflow_analyzer/headless.py) is not built yet")
    from mlflow_analyzer.headless import load_agent

    spec = load_agent(AGENT)
    assert (spec.name, spec.model) == ("mlflow-analyzer", "sonnet")
    assert (spec.turn_budget, spec.token_budget, spec.wrap_up_threshold) == (25, 160000, 0.8)
    assert spec.body.startswith("# MLflow analyzer") and "Quick start" in spec.body


def test_agent_body():
    _, body = frontmatter(AGENT)
    # Claude Code tells every subagent not to write report or findings .md files: this one
    # must say that its review file is the deliverable, before the process starts.
    preamble = body.split("## Inputs")[0]
    assert "The review file is the deliverable" in preamble and "does not apply" in preamble
    assert "600000" in body.split("### 1. Gather")[1].split("###")[0], "first call: a longer timeout"
    assert "review.schema.md" in body.split("\n## ")[0], "the quick start points at the schema"
    assert "reviews/{branch}/REVIEW-mlflow-{commit}.md" in body
    for step in ("Gather", "Aggregate", "Analyze", "Correlate", "Output"):
        assert re.search(rf"^### \d\. {step}$", body, re.M), f"process step {step} missing"
    for needle in ("at least 70%", "At most **10 findings**", "evidence trace ids",
                   "cost and latency estimates", "mlflow-analyzer validate"):
        assert needle.lower() in body.lower(), needle
    assert body.rstrip().splitlines()[-1], "the body ends with the finishing instructions"
    assert "validate" in body.split("## Before you finish")[1]


# --- links ----------------------------------------------------------------------------------------

DOCS = sorted(
    [p for s in SKILLS for p in s.rglob("*.md")]
    + [AGENT]
    + list((REPO / "references").glob("*.md"))
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks (``` or longer fences, as CommonMark has them)."""
    out, fence = [], None
    for line in text.splitlines():
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None and m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                and not line.strip()[len(m.group(1)):].strip():
            fence = None
        elif fence is None:
            out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize("doc", DOCS, ids=[d.relative_to(REPO).as_posix() for d in DOCS])
def test_every_linked_file_exists(doc):
    text = _prose(doc.read_text(encoding="utf-8"))
    text = re.sub(r"(`+)(.+?)\1", "", text)  # inline code shows paths, it does not link them
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{doc.relative_to(REPO)} links to missing {target}"


@pytest.mark.parametrize("skill", SKILLS, ids=[s.name for s in SKILLS])
def test_every_reference_file_is_linked(skill):
    """Linked from SKILL.md, or from a document SKILL.md links (cli.md links filters.md)."""
    linked = set()
    for doc in [skill / "SKILL.md", *sorted((skill / "references").glob("*.md"))]:
        linked |= {os.path.normpath(doc.parent / t) for t in skill_refs.links(doc.read_text(encoding="utf-8"))}
    for ref in sorted((skill / "references").glob("*.md")):
        assert str(ref) in linked, f"{skill.name}: {ref.name} is never linked"


@pytest.mark.parametrize("skill", SKILLS, ids=[s.name for s in SKILLS])
def test_a_skill_folder_is_self_contained(skill):
    """Installed alone (npx skills add copies only the skill folders), every link still
    resolves: no link leaves the skill's folder."""
    for doc in sorted(skill.rglob("*.md")):
        for target in skill_refs.links(doc.read_text(encoding="utf-8")):
            path = Path(os.path.normpath(doc.parent / target))
            assert path.is_relative_to(skill), f"{doc.relative_to(REPO)} links outside its skill: {target}"


def test_skill_copies_of_the_shared_references_are_in_sync():
    """Each skill's copies of references/*.md are byte-equal to the one source, and exist for
    every shared document the skill links."""
    problems = skill_refs.problems(REPO)
    assert not problems, "; ".join(problems) + ": run scripts/sync-skill-references"
    copies = skill_refs.wanted_copies(REPO, REPO / "skills" / "analyze-mlflow-trace")
    assert {p.name for p in copies} >= {"cli.md", "filters.md", "trace-structure.md", "connect.md"}


def test_the_sync_script_repairs_drift(tmp_path):
    root = tmp_path / "pack"
    for part in ("skills", "references"):
        shutil.copytree(REPO / part, root / part)
    copy = root / "skills" / "analyze-mlflow-session" / "references" / "cli.md"
    copy.write_text(copy.read_text() + "stale\n")
    (root / "skills" / "analyze-mlflow-trace" / "references" / "filters.md").unlink()
    (root / "skills" / "analyze-mlflow-trace" / "references" / "review.schema.md").write_text("not linked\n")
    assert len(skill_refs.problems(root)) == 3
    changed = skill_refs.sync(root)
    assert sorted(changed) == [
        "skills/analyze-mlflow-session/references/cli.md",
        "skills/analyze-mlflow-trace/references/filters.md",
        "skills/analyze-mlflow-trace/references/review.schema.md",
    ]
    assert skill_refs.problems(root) == []
    assert not (root / "skills" / "analyze-mlflow-trace" / "references" / "review.schema.md").exists()


# --- plugin, marketplace, .claude/ -------------------------------------------------------------------


PLUGIN = REPO / "plugin"
WRAPPER = PLUGIN / "bin" / "mlflow-analyzer"
# plugin/ is the plugin the marketplace installs: its own files, and links to the one copy of
# everything else (Claude Code copies the links' targets into its plugin cache).
PLUGIN_LINKS = {"skills": "../skills", "agents": "../agents", "references": "../references",
                "mlflow_analyzer": "../mlflow_analyzer", "pyproject.toml": "../pyproject.toml"}
PLUGIN_OWN = {".claude-plugin", "bin", "hooks"}


def test_plugin_manifest():
    plugin = json.loads((PLUGIN / ".claude-plugin" / "plugin.json").read_text())
    assert plugin["name"] == "mlflow-analyzer"
    assert plugin["version"] == __version__, "keep plugin.json's version with the package's"
    assert plugin["description"]
    for key in ("skills", "agents", "commands", "hooks"):  # default locations at the plugin root
        assert key not in plugin
    assert (PLUGIN / "skills" / "analyze-mlflow-trace" / "SKILL.md").is_file()
    assert (PLUGIN / "agents" / "mlflow-analyzer.md").is_file()


def test_plugin_folder_holds_only_the_plugin():
    """What a marketplace install copies: a few MB, no .venv, tests, benchmarks or caches."""
    entries = {p.name for p in PLUGIN.iterdir()}
    assert entries == set(PLUGIN_LINKS) | PLUGIN_OWN
    for name, target in PLUGIN_LINKS.items():
        assert os.readlink(PLUGIN / name) == target, f"plugin/{name} must link {target}"
    size = 0
    for dirpath, dirnames, filenames in os.walk(PLUGIN, followlinks=True):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        size += sum(os.path.getsize(os.path.join(dirpath, f)) for f in filenames)
    assert size < 5_000_000, f"the plugin is {size:,} bytes"


def test_marketplace_manifest():
    market = json.loads((REPO / ".claude-plugin" / "marketplace.json").read_text())
    assert NAME.match(market["name"]) and market["owner"]["name"]
    (entry,) = market["plugins"]
    assert entry["name"] == "mlflow-analyzer" and entry["source"] == "./plugin"
    assert entry.get("version", __version__) == __version__
    assert not (REPO / ".claude-plugin" / "plugin.json").exists(), "the plugin is plugin/, not the root"


def _wrapper_env(tmp_path, **extra) -> dict:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           "MLFLOW_ANALYZER_DATA": str(tmp_path / "data")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _ready_env(data: Path) -> Path:
    """A private environment as the wrapper builds it, made of the test's interpreter."""
    venv = data / "env"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / ".mlflow-analyzer-version").write_text(__version__ + "\n")
    return venv


def _deref_copy(tmp_path) -> Path:
    """The plugin as Claude Code's cache holds it: links replaced by what they point at."""
    import shutil

    dest = tmp_path / "cache" / "mlflow-analyzer"
    shutil.copytree(PLUGIN, dest, symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_plugin_bin_runs_this_plugins_toolkit(tmp_path):
    assert os.access(WRAPPER, os.X_OK) and WRAPPER.read_text().startswith("#!/usr/bin/env bash")
    plugin = _deref_copy(tmp_path)
    # With $MLFLOW_ANALYZER_PYTHON, through a symlink to the script, and as `mlflow`.
    link = tmp_path / "elsewhere" / "mlflow-analyzer"
    link.parent.mkdir()
    link.symlink_to(plugin / "bin" / "mlflow-analyzer")
    env = _wrapper_env(tmp_path, MLFLOW_ANALYZER_PYTHON=sys.executable)
    for exe in (plugin / "bin" / "mlflow-analyzer", link):
        r = subprocess.run([str(exe), "--version"], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"mlflow-analyzer {__version__}"
    r = subprocess.run([str(plugin / "bin" / "mlflow"), "--version"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "version" in r.stdout, r.stderr
    # The code that runs is the plugin's own copy (first on PYTHONPATH), not another install.
    fake = tmp_path / "fake-python"
    fake.write_text('#!/bin/sh\necho "$PYTHONPATH" "$@"\n')
    fake.chmod(0o755)
    r = subprocess.run([str(plugin / "bin" / "mlflow-analyzer"), "stats", "x y"], capture_output=True, text=True,
                       env=_wrapper_env(tmp_path, MLFLOW_ANALYZER_PYTHON=fake), timeout=120)
    assert r.stdout == f"{plugin} -m mlflow_analyzer stats x y\n"
    assert not (tmp_path / "data").exists(), "nothing built"


def test_plugin_bin_uses_its_ready_environment(tmp_path):
    """The environment built earlier for this version is used without checks."""
    plugin = _deref_copy(tmp_path)
    _ready_env(tmp_path / "data")
    r = subprocess.run([str(plugin / "bin" / "mlflow-analyzer"), "--version"], env=_wrapper_env(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"mlflow-analyzer {__version__}" and r.stderr == ""


def test_plugin_bin_in_a_checkout_uses_the_checkouts_virtualenv(tmp_path):
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("this checkout has no .venv (scripts/bootstrap.py makes it)")
    r = subprocess.run([str(WRAPPER), "--version"], env=_wrapper_env(tmp_path), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"mlflow-analyzer {__version__}", r.stderr
    assert not (tmp_path / "data").exists()


def test_plugin_bin_waits_for_the_build_under_way(tmp_path):
    """The SessionStart hook's build holds the lock: the first command waits for it instead
    of starting a second build, then runs."""
    plugin = _deref_copy(tmp_path)
    data = tmp_path / "data"
    (data / "build.lock").mkdir(parents=True)
    builder = subprocess.Popen(["sleep", "300"])
    try:
        (data / "build.lock" / "pid").write_text(f"{builder.pid}\n")
        waiter = subprocess.Popen([str(plugin / "bin" / "mlflow-analyzer"), "--version"], env=_wrapper_env(tmp_path),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The waiter says it is waiting, then the "build" finishes.
        first = waiter.stderr.readline()
        assert "waiting for the toolkit's environment" in first
        _ready_env(data)
        out, err = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, err
        assert out.strip() == f"mlflow-analyzer {__version__}"
    finally:
        builder.kill()
        builder.wait()


def test_plugin_bin_takes_over_a_dead_builders_lock(tmp_path):
    """A build that died leaves its lock: the next command takes over (here it then stops at
    once, with no Python to build with, saying so in one line)."""
    plugin = _deref_copy(tmp_path)
    data = tmp_path / "data"
    (data / "build.lock").mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (data / "build.lock" / "pid").write_text(f"{dead.pid}\n")
    nopython = tmp_path / "nopython"
    nopython.mkdir()
    for tool in ("sed", "head", "cat", "dirname", "basename", "readlink", "mkdir", "rm", "sleep", "mktemp"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if found:
            (nopython / tool).symlink_to(found)
    env = _wrapper_env(tmp_path, PATH=nopython)
    r = subprocess.run([shutil.which("bash"), str(plugin / "bin" / "mlflow-analyzer"), "--version"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "needs Python 3.10" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (data / "build.lock").exists()


def test_session_start_hook_is_quick_silent_and_shares_the_data_folder(tmp_path):
    hooks = json.loads((PLUGIN / "hooks" / "hooks.json").read_text())
    (entry,) = hooks["hooks"]["SessionStart"]
    (hook,) = entry["hooks"]
    assert hook["type"] == "command" and "${CLAUDE_PLUGIN_ROOT}/hooks/session-start" in hook["command"]
    plugin = _deref_copy(tmp_path)
    data = tmp_path / "plugin-data"
    _ready_env(data)
    env_file = tmp_path / "session.env"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CLAUDE_PLUGIN_ROOT": str(plugin),
           "CLAUDE_PLUGIN_DATA": str(data), "CLAUDE_ENV_FILE": str(env_file)}
    r = subprocess.run(["bash", "-c", hook["command"]], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    # The Bash tool's commands get the plugin's data folder: the same environment.
    r = subprocess.run(["bash", "-c", f'. "{env_file}"; echo "$MLFLOW_ANALYZER_DATA"'], capture_output=True,
                       text=True)
    assert r.stdout.strip() == str(data)


def test_repo_claude_dir_activates_the_pack():
    claude = REPO / ".claude"
    for skill in EXPECTED_SKILLS:
        link = claude / "skills" / skill
        assert link.is_symlink() and not os.path.isabs(os.readlink(link)), f"{link} must be a relative link"
        assert link.resolve() == (REPO / "skills" / skill).resolve()
    agent = claude / "agents" / "mlflow-analyzer.md"
    assert agent.is_symlink() and agent.resolve() == AGENT.resolve()
    # Skills link ../../references/...: the same files from .claude/skills/<name>/.
    assert (claude / "references").resolve() == (REPO / "references").resolve()
    settings = json.loads((claude / "settings.json").read_text())
    assert "Bash(mlflow-analyzer *)" in settings["permissions"]["allow"]
    assert "Bash(plugin/bin/mlflow-analyzer *)" in settings["permissions"]["allow"]
