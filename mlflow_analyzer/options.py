"""Options shared by commands: where traces come from, and how results are printed."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import redact
from .errors import InputError, UsageError
from .model import Trace
from .sources import FileSource, Source, StoreQuery, open_store, parse_since

# Past this many bytes, a result that could be unbounded (extract, tree) goes to a file and
# stdout carries its path: agent harnesses truncate long tool output.
DEFAULT_MAX_OUTPUT = 40_000


def example_epilog(*lines: str) -> str:
    return "Example:\n" + "\n".join(f"  {line}" for line in lines)


def add_source_options(p: argparse.ArgumentParser, *, files: bool = True) -> None:
    g = p.add_argument_group("source (a tracking store, or trace files)")
    if files:
        g.add_argument(
            "inputs",
            nargs="*",
            metavar="FILE",
            help="trace JSON (as 'mlflow traces get' writes it), search JSON, JSONL or a folder",
        )
    g.add_argument(
        "--tracking-uri",
        default=None,
        help="sqlite:///mlflow.db, postgresql://…, mysql://…, http(s)://host:port, databricks, "
        "or a file-store path (default: $MLFLOW_TRACKING_URI)",
    )
    g.add_argument("--experiment-id", help="experiment id")
    g.add_argument("--experiment-name", help="experiment name (instead of --experiment-id)")
    g.add_argument(
        "--filter",
        dest="filter_string",
        help="MLflow trace filter, e.g. \"trace.status = 'ERROR'\" (AND only; see references/filters.md)",
    )
    g.add_argument(
        "--order-by",
        action="append",
        help="timestamp_ms|execution_time_ms|status|name [ASC|DESC] (default: timestamp_ms DESC)",
    )
    g.add_argument("--max-traces", type=_positive_int, help="read at most N traces")
    g.add_argument("--since", help="only traces newer than this: 30m, 24h, 7d, or an ISO date")
    add_redact_option(p)


def add_redact_option(p: argparse.ArgumentParser) -> None:
    """``--no-redact``: every command that prints trace or file content redacts credentials
    by default (see mlflow_analyzer/redact.py)."""
    p.add_argument(
        "--no-redact",
        action="store_true",
        help="print credentials found in traces as they are (default: API keys, tokens, "
        "passwords and private keys become [REDACTED:type]; counts go to stderr)",
    )


def add_sample_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sample",
        type=_non_negative_int,
        metavar="N",
        help="over a tracking server (http/https): when the experiment holds more than N traces, read "
        "spans for a uniform random sample of N of them, plus every trace that ended in ERROR; trace-level "
        "figures stay exact and the output's \"sample\" key lists the estimated ones (default 2000; 0 reads "
        "every span). SQL stores and files are always read in full",
    )


def _non_negative_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return n


def add_output_options(p: argparse.ArgumentParser, *, formats=("json", "text"), default="json") -> None:
    g = p.add_argument_group("output")
    g.add_argument("--format", choices=formats, default=default, help=f"output format (default: {default})")
    g.add_argument("--output", "-o", metavar="FILE", help="write the result to FILE instead of stdout")


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


positive_int = _positive_int


def non_negative_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return n


def positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError("must be a number above 0")
    return x


def store_query(args: argparse.Namespace) -> StoreQuery | None:
    uri = getattr(args, "tracking_uri", None) or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return None
    return StoreQuery(
        tracking_uri=uri,
        experiment_id=getattr(args, "experiment_id", None) or (
            None if getattr(args, "experiment_name", None) else os.environ.get("MLFLOW_EXPERIMENT_ID")
        ),
        experiment_name=getattr(args, "experiment_name", None),
        filter_string=getattr(args, "filter_string", None),
        order_by=getattr(args, "order_by", None),
        max_traces=getattr(args, "max_traces", None),
        since_ms=parse_since(args.since) if getattr(args, "since", None) else None,
        sample=getattr(args, "sample", None),
    )


def open_source(args: argparse.Namespace, *, need_experiment: bool = True) -> Source:
    """Trace files when given, else the tracking store from the flags or environment."""
    inputs = getattr(args, "inputs", None) or []
    if inputs:
        store_flags = [
            f
            for f in ("tracking_uri", "experiment_id", "experiment_name", "filter_string")
            if getattr(args, f, None)
        ]
        if store_flags:
            raise UsageError(
                "give trace files or a tracking store, not both "
                f"(files plus --{store_flags[0].replace('_', '-').replace('-string', '')})"
            )
        return opened(FileSource(inputs))
    query = store_query(args)
    if query is None:
        raise UsageError(
            "no traces given: pass trace files, or --tracking-uri (or $MLFLOW_TRACKING_URI) "
            "with --experiment-id or --experiment-name"
        )
    if need_experiment and not (query.experiment_id or query.experiment_name):
        raise UsageError("give --experiment-id or --experiment-name (or $MLFLOW_EXPERIMENT_ID)")
    return opened(open_store(query))


#: Lines of text output longer than this are clipped (a 100,000-character span name).
MAX_TEXT_LINE = 1000
#: Strings inside JSON output longer than this are clipped (commands with their own
#: bound, such as extract --max-string, do not go through dump_json).
MAX_JSON_STRING = 4000


def safe_output(text: str) -> str:
    """What leaves the process: credentials redacted; JSON with the characters json.dumps
    leaves raw escaped; other text with control characters and ANSI escapes made visible
    and over-long lines clipped."""
    text = redact.redact(text)
    if text.lstrip()[:1] in ("{", "["):
        text = redact.json_safe(text)
    else:
        text = redact.terminal_safe(text)
        if len(text) > MAX_TEXT_LINE:
            text = "\n".join(
                line if len(line) <= MAX_TEXT_LINE
                else line[:MAX_TEXT_LINE] + f"…[+{len(line) - MAX_TEXT_LINE} chars]"
                for line in text.split("\n")
            )
    return redact.note_output(text)


def write_output(text: str, args: argparse.Namespace) -> None:
    text = safe_output(text)
    if not text.endswith("\n"):
        text += "\n"
    out = getattr(args, "output", None)
    if out is not None:
        path = write_file(out, text)
        print(json.dumps({"path": str(path), "bytes": path.stat().st_size}))
    else:
        sys.stdout.write(text)


def check_output_path(out: str, *, what: str = "--output") -> Path:
    """A path a result can be written to, or a UsageError saying why not (before any
    work is done)."""
    if not out or not out.strip():
        raise UsageError(f"{what} is empty: give a file path")
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"{what} {out}: is a folder; give a file path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{what} {out}: {parent} is a file, not a folder")
            break
    if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in path.parts):
        raise UsageError(f"{what} {out[:80]}…: a file or folder name is longer than 255 bytes")
    return path


def write_file(out: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``out`` (folders created), turning OS errors into one line."""
    path = check_output_path(str(out))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def dump_json(obj: Any) -> str:
    """JSON for output: credentials redacted, over-long strings clipped."""
    return json.dumps(_bounded(redact.redact_value(obj)), indent=2, ensure_ascii=False, default=str)


def _bounded(value: Any, limit: int = MAX_JSON_STRING) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"…[+{len(value) - limit} chars]"
    if isinstance(value, dict):
        return {k: _bounded(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_bounded(v, limit) for v in value]
    return value


def spill_if_large(text: str, *, name: str, limit: int = DEFAULT_MAX_OUTPUT, summary: dict | None = None) -> str:
    """Return text, or, when it is larger than ``limit``, write it to a file and return a
    short JSON note with the path, so that agent harnesses do not truncate it silently."""
    if len(text) <= limit:
        return text
    text = redact.note_output(redact.redact(text))
    directory = Path(os.environ.get("MLFLOW_ANALYZER_SPILL_DIR") or tempfile.gettempdir()) / "mlflow-analyzer"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".out", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise UsageError(f"cannot write the large result to {directory}: {exc.strerror or exc}") from None
    note = {
        "spilled_to": path,
        "bytes": len(text.encode("utf-8")),
        "reason": f"output larger than {limit} characters; read the file, or narrow the query (--limit)",
    }
    if summary:
        note["summary"] = summary
    return dump_json(note)


def warn(message: str) -> None:
    print(f"mlflow-analyzer: warning: {redact.message(message)}", file=sys.stderr)


def add_trace_id_option(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--trace-id",
        required=required,
        help="the trace (tr-…); with files, picks it among the traces they hold",
    )


def one_trace(args: argparse.Namespace) -> tuple[dict, "Trace"]:
    """The one trace a command is about, as MLflow's JSON and as a normalized Trace:
    --trace-id from a store or files, or the single trace a file holds. A malformed trace
    is an error here (one line naming the file, the trace and the field)."""
    trace_id = getattr(args, "trace_id", None)
    inputs = getattr(args, "inputs", None) or []
    if not inputs:
        if not trace_id:
            raise UsageError("give --trace-id (with --tracking-uri or $MLFLOW_TRACKING_URI), or a trace file")
        source = open_source(args, need_experiment=False)
        return source.get_pair(trace_id)
    source = open_source(args)
    if trace_id:
        return source.get_pair(trace_id)
    from .sources import Unreadable

    found = None
    unreadable = None
    for where, raw in source.entries():
        if isinstance(raw, Unreadable):
            unreadable = unreadable or raw.reason
            continue
        if found is not None:
            raise UsageError(f"{source.description} holds several traces: pick one with --trace-id")
        found = (where, raw)
    if found is None:
        reason = unreadable or (source.skip_reasons[0] if source.skip_reasons else None)
        raise InputError(reason or f"{source.description}: no traces")
    where, raw = found
    return raw, source.normalize(raw, where)


def one_raw_trace(args: argparse.Namespace) -> dict:
    return one_trace(args)[0]


# The sources opened by the command running now (a stack: `review` runs commands inside
# its own), so that the CLI can say on stderr what every one of them skipped.
_OPENED: list[list[Source]] = []


def opened(source: Source) -> Source:
    if _OPENED:
        _OPENED[-1].append(source)
    return source


def begin_command() -> list[Source]:
    frame: list[Source] = []
    _OPENED.append(frame)
    return frame


def end_command(frame: list[Source]) -> None:
    for i in range(len(_OPENED) - 1, -1, -1):
        if _OPENED[i] is frame:
            del _OPENED[i]
            return


def skip_warning(source: Source) -> str | None:
    """The stderr line for the traces a source skipped, or None."""
    if not source.skipped:
        return None
    first = source.skip_reasons[0] if source.skip_reasons else ""
    more = f" (and {source.skipped - 1} more; see \"skipped_reasons\" in JSON output)" if source.skipped > 1 else ""
    return f"skipped {source.skipped} malformed trace(s) or file(s): {first}{more}"
