"""The command reference (``references/cli.md``), generated from the CLI's own parser.

``render_cli_reference()`` walks the argparse parser that ``mlflow-analyzer --help`` prints,
so the reference says exactly what the commands accept. ``scripts/generate-cli-docs`` writes
it; ``tests/test_cli_docs.py`` fails when the file and the parser disagree. The rendering is
independent of the terminal width and of the Python version's help layout.
"""

from __future__ import annotations

import argparse
import textwrap

CLI_REFERENCE_PATH = "references/cli.md"

_HEADER = """\
# mlflow-analyzer command reference

Generated from the command's own parser by `scripts/generate-cli-docs`;
`tests/test_cli_docs.py` fails when this file and `mlflow-analyzer --help` disagree, so edit
the command modules, not this file. A user error ends with an `mlflow-analyzer: error: …` line
on stderr and a non-zero exit (2 for bad flags, 1 for an unreachable store, an unknown id or
an unreadable file). Trace filters (`--filter`) are MLflow's own grammar: see
[filters.md](filters.md).
"""


def render_cli_reference() -> str:
    from .cli import build_parser

    parser = build_parser()
    sub = _subparsers_action(parser)
    commands = list(sub.choices.items()) if sub else []
    helps = {a.dest: a.help for a in (sub._choices_actions if sub else [])}

    out = [_HEADER, _paragraphs(parser.description or ""), ""]
    out.append("| Command | What it does |")
    out.append("|---------|--------------|")
    for name, _ in commands:
        out.append(f"| [`{name}`](#{name}) | {_cell(helps.get(name) or '')} |")
    out.append("")
    for name, p in commands:
        out.extend(_command(name, p))
    return "\n".join(out).rstrip() + "\n"


def _subparsers_action(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _command(name: str, p: argparse.ArgumentParser) -> list[str]:
    out = [f"## {name}", ""]
    out.append(f"`{_synopsis(p)}`")
    out.append("")
    if p.description:
        out.append(_paragraphs(p.description))
        out.append("")
    for group in p._action_groups:
        rows = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not rows:
            continue
        title = group.title or "options"
        out.append(f"**{title[0].upper() + title[1:]}**")
        out.append("")
        out.append("| Argument | Meaning |")
        out.append("|----------|---------|")
        for a in rows:
            out.append(f"| {_cell(_invocation(a), code=True)} | {_cell(_help(p, a))} |")
        out.append("")
    for mx in p._mutually_exclusive_groups:
        if mx.required:
            names = ", ".join(f"`{a.option_strings[-1]}`" for a in mx._group_actions)
            out.append(f"One of {names} is required.")
            out.append("")
    if p.epilog:
        out.extend(_epilog(p.epilog))
    return out


def _synopsis(p: argparse.ArgumentParser) -> str:
    parts = [p.prog]
    if any(a.option_strings and not isinstance(a, argparse._HelpAction) for a in p._actions):
        parts.append("[options]")
    for a in p._actions:
        if not a.option_strings:
            parts.append(_positional(a))
    return " ".join(parts)


def _positional(a: argparse.Action) -> str:
    m = _metavar(a)
    if a.nargs == "*":
        return f"[{m} ...]"
    if a.nargs == "+":
        return f"{m} [{m} ...]"
    if a.nargs == "?":
        return f"[{m}]"
    return m


def _metavar(a: argparse.Action) -> str:
    if a.metavar is not None:
        return str(a.metavar)
    if a.choices is not None:
        return "{" + ",".join(map(str, a.choices)) + "}"
    return a.dest.upper() if a.option_strings else a.dest


def _invocation(a: argparse.Action) -> str:
    if not a.option_strings:
        return _positional(a)
    if a.nargs == 0:
        return ", ".join(a.option_strings)
    m = _metavar(a)
    return ", ".join(f"{o} {m}" for o in a.option_strings)


def _help(p: argparse.ArgumentParser, a: argparse.Action) -> str:
    text = a.help or ""
    if "%" in text:
        params = dict(vars(a), prog=p.prog)
        for key, value in list(params.items()):
            if value is argparse.SUPPRESS:
                del params[key]
            elif hasattr(value, "__name__"):
                params[key] = value.__name__
        if params.get("choices") is not None:
            params["choices"] = ", ".join(map(str, params["choices"]))
        try:
            text = text % params
        except (KeyError, TypeError, ValueError):
            pass
    if a.required and a.option_strings:
        text += " (required)"
    if isinstance(a, argparse._AppendAction):
        text += " (repeatable)"
    return " ".join(text.split())


def _paragraphs(text: str) -> str:
    """Prose paragraphs joined into lines; indented blocks (lists, tables) kept as text."""
    blocks = []
    for para in text.strip("\n").split("\n\n"):
        lines = para.split("\n")
        if any(line.startswith((" ", "\t")) for line in lines[1:]) or para.startswith((" ", "\t")):
            head = [] if lines[0].startswith((" ", "\t")) else [_escape(lines.pop(0))]
            block = "\n".join(head) + ("\n\n" if head else "")
            block += "```text\n" + textwrap.dedent("\n".join(lines)).strip("\n") + "\n```"
            blocks.append(block)
        else:
            blocks.append(_escape(" ".join(para.split())))
    return "\n\n".join(blocks)


def _epilog(epilog: str) -> list[str]:
    lines = epilog.strip("\n").split("\n")
    title = "Examples" if sum(1 for ln in lines if ln.startswith((" ", "\t"))) > 1 else "Example"
    if lines and not lines[0].startswith((" ", "\t")) and lines[0].rstrip(":").lower() in ("example", "examples"):
        lines = lines[1:]
    body = textwrap.dedent("\n".join(lines)).strip("\n")
    return [f"{title}:", "", "```text", body, "```", ""]


def _cell(text: str, *, code: bool = False) -> str:
    text = text.replace("|", "\\|")
    return f"`{text}`" if code else _escape(text)


def _escape(text: str) -> str:
    """Markdown outside code: angle brackets would be read as HTML tags."""
    return text.replace("<", "\\<").replace(">", "\\>")
