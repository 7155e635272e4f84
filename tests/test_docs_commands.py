"""Every command the docs show runs, and succeeds: the docs cannot lie.

Scanned: the skills (SKILL.md and their references), the agent, references/ and README.md.
In each fenced ```bash block, every line that runs `mlflow-analyzer` or `mlflow` (optionally
after `VAR=value` assignments) is executed against the corpus store, with its placeholders
(`<tracking-uri>`, `<trace-id>`, ...; see doc_helpers.PLACEHOLDERS) filled in. Other lines
(`mkdir`, `set -a`) are context, not run. The commands of one skill (its SKILL.md, then its
references) share a working directory and run in order, so a file one command writes can be
read by the next, as a user following the skill would do.

An `export VAR=value` line sets the variable for the commands after it in the same group.
README.md writes its examples the way `--help` does (`sqlite:///mlflow.db`,
`--experiment-id 1`, `tr-0123abcd`, `feature/x`, `/path/to/your/repo`): there those example
values stand for the corpus's, as in tests/test_help_examples.py. Each group's working
directory is a fresh git repository (commands such as `report --repo .` expect one).

`mlflow-analyzer` lines run in this process (``cli.main``, what the console script calls);
`mlflow` lines run in a subprocess. A separate test has bash parse every line and checks that
it splits into exactly the arguments used here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from mlflow_analyzer import skill_refs

from doc_helpers import (  # noqa: F401
    REPO,
    cli_env,
    fill_placeholders,
    run_cli,
    run_cli_process,
    shim_bin,
    store_values,
)

# Other documents whose commands are not runnable as written, with the reason. Keep this
# empty: fix the document instead (use placeholders and --output, not `...` and `>`).
NOT_RUN: dict[str, str] = {}  # path -> why its commands are not run
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1"}
RUNNERS = ("mlflow-analyzer", "mlflow")


def _groups() -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    shared = skill_refs.shared_names(REPO)  # a skill's copies of references/: run from there
    for skill in sorted((REPO / "skills").glob("*/SKILL.md")):
        folder = skill.parent
        own = [p for p in sorted(folder.glob("references/**/*.md")) if p.name not in shared]
        groups[folder.relative_to(REPO).as_posix()] = [skill, *own]
    for path in sorted((REPO / "agents").glob("*.md")) + sorted((REPO / "references").glob("*.md")):
        groups[path.relative_to(REPO).as_posix()] = [path]
    if (REPO / "README.md").is_file():
        groups["README.md"] = [REPO / "README.md"]
    return {
        name: [p for p in paths if p.relative_to(REPO).as_posix() not in NOT_RUN]
        for name, paths in groups.items()
    }


def _bash_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, command) for each line of each ```bash block; continuations joined."""
    out: list[tuple[int, str]] = []
    in_block = False
    pending, start = "", 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not in_block:
            in_block = stripped.startswith("```bash")
            continue
        if stripped.startswith("```"):
            in_block = False
            continue
        if not pending:
            start = n
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        command, pending = (pending + stripped).strip(), ""
        if command and not command.startswith("#"):
            out.append((start, command))
    return out


def _runner(command: str) -> str | None:
    words = command.split()
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words.pop(0)
    return words[0] if words and words[0] in RUNNERS else None


EXPORT = re.compile(r"^export ([A-Z_][A-Z0-9_]*)=(\S+)(\s+#.*)?$")


def _steps() -> dict[str, list[tuple[str, str, int, str]]]:
    """Per group, in order: ("run" | "export", file, line, text)."""
    steps: dict[str, list] = {}
    for group, paths in _groups().items():
        for path in paths:
            for line_no, command in _bash_lines(path):
                rel = path.relative_to(REPO).as_posix()
                if EXPORT.match(command):
                    steps.setdefault(group, []).append(("export", rel, line_no, command))
                elif _runner(command):
                    steps.setdefault(group, []).append(("run", rel, line_no, command))
    return steps


STEPS = _steps()


def _commands() -> list[tuple[str, int, str, int, str]]:
    """(group, step index, file, line, command) of every command to run."""
    return [
        (group, i, doc, line, text)
        for group, steps in STEPS.items()
        for i, (kind, doc, line, text) in enumerate(steps)
        if kind == "run"
    ]


def _example_values(text: str, values: dict) -> str:
    """README's --help-style example values, mapped to the corpus's."""
    text = text.replace("sqlite:///mlflow.db", values["tracking-uri"])
    text = re.sub(r"--experiment-id \d+\b", f"--experiment-id {values['experiment-id']}", text)
    text = re.sub(r"\btr-[0-9a-f]{4,}\b", values["trace-id"], text)
    text = text.replace("feature/x", values["branch"])
    return text.replace("/path/to/your/repo", values["repo"])


COMMANDS = _commands()


def test_the_docs_show_commands():
    groups = {c[0] for c in COMMANDS}
    for skill in ("skills/analyze-mlflow-trace", "skills/analyze-mlflow-experiment",
                  "skills/analyze-mlflow-session", "agents/mlflow-analyzer.md"):
        assert skill in groups, f"{skill} shows no runnable command"


def test_not_run_list_is_current():
    for rel in NOT_RUN:
        assert (REPO / rel).is_file(), f"{rel} no longer exists: drop it from NOT_RUN"


# --- running ------------------------------------------------------------------------------------


class _Group:
    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.home = cwd.parent / (cwd.name + "-home")
        self.home.mkdir(exist_ok=True)
        self.env: dict[str, str] = {}  # from `export` lines
        self.results: dict[int, tuple[str, object]] = {}  # step index -> (status, result)
        git = ["git", "-c", "user.email=docs@example.com", "-c", "user.name=docs", "-c", "init.defaultBranch=main"]
        subprocess.run([*git, "init", "-q"], cwd=cwd, check=True)
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "start"], cwd=cwd, check=True)


@pytest.fixture(scope="session")
def doc_runs(tmp_path_factory):
    return {"factory": tmp_path_factory, "groups": {}}


def _split(command: str) -> tuple[dict, list[str]]:
    words = shlex.split(command)
    bad = [w for w in words if w in SHELL_OPERATORS]
    assert not bad, f"shell operator {bad[0]!r} in a documented command: use --output, one command per line"
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    return env, words


def _missing_command(argv: list[str]) -> str | None:
    if argv[0] != "mlflow-analyzer" or len(argv) < 2 or argv[1].startswith("-"):
        return None
    if importlib.util.find_spec(f"mlflow_analyzer.commands.{argv[1]}") is None:
        return argv[1]
    return None


def _fill(doc: str, command: str, values: dict) -> str:
    if doc == "README.md":
        command = _example_values(command, values)
    return fill_placeholders(command, values)


def _run_one(group: _Group, kind: str, doc: str, command: str, values: dict):
    command = _fill(doc, command, values)
    if kind == "export":
        name, value = EXPORT.match(command).group(1, 2)
        group.env[name] = value
        return "export", None
    env, argv = _split(command)
    env = {**group.env, **env}
    missing = _missing_command(argv)
    if missing:
        return "skip", f"the `{missing}` command is not built yet (mlflow_analyzer/commands/{missing}.py)"
    if argv[0] == "mlflow-analyzer" and argv[1] == "review" and "--no-llm" not in argv:
        # The Anthropic API is not reachable here: a scripted Messages API answers instead.
        from fake_anthropic import reviewer_api

        with reviewer_api() as api_env:
            proc_env = cli_env(group.home)
            proc_env.update({**env, **api_env})
            return "ran", run_cli_process(argv[1:], cwd=group.cwd, env=proc_env)
    if argv[0] == "mlflow-analyzer":
        return "ran", run_cli(argv[1:], cwd=group.cwd, env={
            "MLFLOW_TRACKING_URI": None, "MLFLOW_EXPERIMENT_ID": None, "HOME": group.home,
            "MLFLOW_ANALYZER_HOME": group.home / "demo", "MLFLOW_ANALYZER_SPILL_DIR": group.home / "spill",
            **env,
        })
    proc_env = cli_env(group.home)
    proc_env.update(env)
    proc_env["PATH"] = str(shim_bin(group.home / "bin")) + os.pathsep + proc_env.get("PATH", "")
    return "ran", subprocess.run(argv, cwd=group.cwd, env=proc_env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "group, index, doc, line, command",
    COMMANDS,
    ids=[f"{doc}:{line}" for _, _, doc, line, _ in COMMANDS],
)
def test_documented_command_runs(doc_runs, store_values, group, index, doc, line, command):
    state = doc_runs["groups"].get(group)
    if state is None:
        state = doc_runs["groups"][group] = _Group(doc_runs["factory"].mktemp("docs"))
    # Run the steps before this one in the same folder first, as a reader would.
    for i, (kind, d, _, text) in enumerate(STEPS[group][: index + 1]):
        if i not in state.results:
            state.results[i] = _run_one(state, kind, d, text, store_values)
    status, result = state.results[index]
    if status == "skip":
        pytest.skip(result)
    assert result.returncode == 0, (
        f"{doc}:{line}: `{command}` exited {result.returncode}\n"
        f"stderr: {result.stderr.strip()[-2000:]}\nstdout: {result.stdout.strip()[-1000:]}"
    )
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr


def test_bash_splits_the_commands_as_the_test_does(store_values, tmp_path):
    """The documented lines are run here from shlex's split; bash must split them the same
    way (quotes, backticks inside filters, no globbing surprises), or a user pasting them
    into a shell would run something else."""
    script = ["sep=$'\\x1f'; end=$'\\x1e'"]
    for name in RUNNERS:
        script.append(f"{name}() {{ printf '%s\\x1f' \"$@\"; printf '\\x1e'; }}")
    expected = []
    for _, _, doc, line, command in COMMANDS:
        filled = _fill(doc, command, store_values)
        env, argv = _split(filled)
        script.append(filled)
        expected.append((f"{doc}:{line}", argv[1:]))
    r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    records = r.stdout.split("\x1e")[:-1]
    assert len(records) == len(expected), r.stderr
    for (where, argv), record in zip(expected, records):
        got = record.split("\x1f")[:-1]
        assert got == argv, f"{where}: bash reads {got}, the test ran {argv}"
