"""references/cli.md is what the parser says: regenerated, it is byte for byte the same, and
everything `mlflow-analyzer COMMAND --help` prints (commands, options, examples) is in it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_analyzer.cli import build_parser
from mlflow_analyzer.docs import CLI_REFERENCE_PATH, render_cli_reference

from doc_helpers import cli_env, markdown_section

REPO = Path(__file__).resolve().parent.parent
CLI_MD = REPO / CLI_REFERENCE_PATH


def _commands() -> dict:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(sub.choices)


COMMANDS = _commands()


def _section(name: str) -> str:
    return markdown_section(CLI_MD, name)


def test_reference_is_up_to_date():
    assert CLI_MD.is_file(), f"{CLI_REFERENCE_PATH} is missing: run scripts/generate-cli-docs"
    assert CLI_MD.read_text(encoding="utf-8") == render_cli_reference(), (
        f"{CLI_REFERENCE_PATH} differs from the CLI's parser: run scripts/generate-cli-docs"
    )


def test_generator_script_check_mode():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "generate-cli-docs"), "--check"],
                       capture_output=True, text=True, env=cli_env())
    assert r.returncode == 0, r.stderr


def test_rendering_does_not_depend_on_the_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    narrow = render_cli_reference()
    monkeypatch.setenv("COLUMNS", "200")
    assert render_cli_reference() == narrow


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_is_in_the_reference(name):
    """Each option and example `COMMAND --help` prints appears in the command's section."""
    r = subprocess.run([sys.executable, "-m", "mlflow_analyzer", name, "--help"],
                       capture_output=True, text=True, env=cli_env())
    assert r.returncode == 0, r.stderr
    section = _section(name)
    # The option list: lines that start (after indentation) with an option string.
    options = set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)", r.stdout, re.M)) - {"--help"}
    assert options, f"no options parsed from `{name} --help`"
    missing = sorted(o for o in options if f"`{o}" not in section and f", {o}" not in section)
    assert not missing, f"`{name} --help` shows {missing}, not in {CLI_REFERENCE_PATH}"
    for line in r.stdout.splitlines():
        if line.strip().startswith("mlflow-analyzer "):
            assert line.strip() in section, f"example missing from {CLI_REFERENCE_PATH}: {line.strip()}"
    first_sentence = " ".join((COMMANDS[name].description or "").split()).split(". ")[0]
    assert first_sentence.replace("<", "\\<").replace(">", "\\>") in section


def test_every_command_is_listed():
    text = CLI_MD.read_text(encoding="utf-8")
    for name in COMMANDS:
        assert f"| [`{name}`](#{name}) |" in text
