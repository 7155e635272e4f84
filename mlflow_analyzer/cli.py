"""The ``mlflow-analyzer`` command: a thin argparse layer over the library.

Each command lives in its own module, which exposes ``register(subparsers)``: it adds
its parser and sets ``func`` to a ``run(args) -> int`` function. Command modules import
only the standard library and light modules at import time; mlflow, pandas and jq are
imported inside ``run`` where a store or a program actually needs them, so that commands
over local files stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from . import redact
from .errors import AnalyzerError

# Order is the order shown in --help.
COMMAND_MODULES = [
    "fetch",
    "tree",
    "health",
    "extract",
    "session",
    "stats",
    "findings",
    "locate",
    "report",
    "validate",
    "review",
    "install",
    "demo",
]

PROG = "mlflow-analyzer"


# Import names whose distribution is named otherwise.
_DISTRIBUTIONS = {"yaml": "pyyaml"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``only``, the parser with just that command (what running the
    command needs: start-up does not import the other twelve command modules)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Find what is wrong in the MLflow traces of LLM and agent applications: errors "
            "and their causes, slow spans, token cost, retries, wasted calls and "
            "instrumentation gaps. Read-only against tracking stores."
        ),
        epilog="Run 'mlflow-analyzer COMMAND --help' for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in ([only] if only else COMMAND_MODULES):
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as exc:  # a command not built yet
            if exc.name and exc.name.endswith(f"commands.{name}"):
                continue
            raise
        module.register(sub)
    return parser


_depth = [0]  # > 1 while a command runs another in-process (the headless runner's tools)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_AGENT_HINT", "1")
    words = sys.argv[1:] if argv is None else argv
    command = words[0] if words and words[0] in COMMAND_MODULES else None
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    empty = _empty_option(parser, args)
    if empty:
        print(f"{PROG} {args.command}: error: {empty} is empty: give a value", file=sys.stderr)
        return 2
    _depth[0] += 1
    outer = _depth[0] == 1
    saved = redact.enabled()
    if outer:
        redact.reset()
        redact.set_enabled(not getattr(args, "no_redact", False))
    elif getattr(args, "no_redact", False):
        redact.set_enabled(False)
    try:
        return _run(args)
    finally:
        _depth[0] -= 1
        if outer:
            redact.print_summary(sys.stderr)
        redact.set_enabled(saved)


def _empty_option(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The first option given an empty (or blank) value, as the user wrote it; an empty
    value is never what was meant (an unset shell variable) and would silently mean
    'not given'."""
    sub = None
    for action in parser._actions:  # argparse keeps the sub-parsers here
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices.get(args.command)
    for action in (sub._actions if sub else []):
        value = getattr(args, action.dest, None)
        if isinstance(value, list) and action.nargs is None and not isinstance(
                action, (argparse._AppendAction, argparse._ExtendAction)):
            return max(action.option_strings, key=len)  # "--opt=--": argparse drops the value
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            if action.option_strings:
                return max(action.option_strings, key=len)
            return action.metavar or action.dest
    return None


def _run(args) -> int:
    from . import options

    frame = options.begin_command()
    try:
        if getattr(args, "output", None) is not None:  # an unwritable output fails before any work
            options.check_output_path(args.output)
        code = int(args.func(args) or 0)
        for source in frame:
            line = options.skip_warning(source)
            if line:
                print(f"{PROG}: warning: {redact.message(line)}", file=sys.stderr)
        sys.stdout.flush()
        return code
    except AnalyzerError as exc:
        print(f"{PROG}: error: {redact.message(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:  # an optional dependency this environment lacks
        top = (exc.name or "").split(".")[0]
        if not top or top == __package__ or os.environ.get("MLFLOW_ANALYZER_DEBUG"):
            raise
        dist = _DISTRIBUTIONS.get(top, top)
        print(f"{PROG}: error: this command needs the Python package {dist!r}, which the "
              f"environment of {sys.executable} lacks: {sys.executable} -m pip install {dist}",
              file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Output piped into head & co: not an error worth a traceback.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except OSError as exc:  # stdout on a full disk, a closed descriptor...
        if os.environ.get("MLFLOW_ANALYZER_DEBUG"):
            raise
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"{PROG}: error: cannot write{where}: {redact.message(exc.strerror or exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: one line, the traceback only on request
        if os.environ.get("MLFLOW_ANALYZER_DEBUG"):
            raise
        print(
            f"{PROG}: internal error: {type(exc).__name__}: {redact.message(exc)} "
            "(set MLFLOW_ANALYZER_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 3
    finally:
        options.end_command(frame)


if __name__ == "__main__":
    raise SystemExit(main())
