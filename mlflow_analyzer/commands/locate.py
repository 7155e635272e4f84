"""`mlflow-analyzer locate`: where spans are created in a code base, and LLM calls no span covers."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mlflow_analyzer.locate import AUTOLOG_SPAN_NAMES, LocateResult, resolve, scan

MAX_ROWS = 100  # rows per section in text output; --format json has everything


def register(sub) -> None:
    p = sub.add_parser(
        "locate",
        help="map span names to file:line in a repo and list LLM calls no span covers",
        description=(
            "Read the Python files of a repository (with the ast module: nothing is imported "
            "or run) and report where each span name is created (@mlflow.trace, "
            "mlflow.start_span, start_span_no_context, MlflowClient.start_span/start_trace), "
            "which autolog flavors are enabled, and the instrumentation gaps: calls to "
            "Anthropic, OpenAI, Gemini, Groq, LiteLLM, LangChain chat models or model HTTP "
            "endpoints that run outside any span. --span resolves span names from a trace "
            "to file:line. Skips .venv, venv, node_modules, site-packages, build, dist and "
            "hidden directories."
        ),
        epilog=(
            "Example:\n"
            "  mlflow-analyzer locate --repo . --format text\n"
            "  mlflow-analyzer locate --repo ~/src/agent --span retrieve_docs Completions"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repo", required=True, metavar="DIR", help="the repository to scan")
    p.add_argument(
        "--span",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="span names to resolve to file:line (adds a 'resolved' object to the output)",
    )
    p.add_argument("--format", choices=("json", "text"), default="json", help="json (default) or text")
    p.set_defaults(func=run)


def run(args) -> int:
    from mlflow_analyzer.errors import UsageError

    repo = os.path.expanduser(args.repo)
    if not os.path.exists(repo):
        raise UsageError(f"--repo {args.repo}: no such directory")
    if not os.path.isdir(repo):
        raise UsageError(f"--repo {args.repo}: not a directory")
    result = scan(repo)
    resolved = {name: resolve(name, result) for name in args.span}
    if args.format == "json":
        out = result.to_dict()
        if args.span:
            out["resolved"] = resolved
        text = json.dumps(out, indent=2)
    else:
        text = render_text(result, resolved if args.span else None, repo)
    from mlflow_analyzer.options import safe_output

    sys.stdout.write(safe_output(text) + "\n")
    return 0


def render_text(result: LocateResult, resolved: dict[str, str | None] | None, repo: str) -> str:
    """A readable report: resolved names, spans, autolog calls, gaps; each section bounded."""
    lines = [
        f"Scanned {result.files_scanned} Python file(s) under {repo}"
        + (f"; skipped {result.files_skipped} that could not be parsed" if result.files_skipped else "")
        + "."
    ]
    if resolved is not None:
        lines += ["", "Resolved span names"]
        lines += _table(
            ["NAME", "LOCATION"],
            [[name, where or "not found"] for name, where in resolved.items()],
        )

    rows = [
        [name, e["span_type"] or "-", e["kind"], f"{e['file']}:{e['line']}", e["function"]]
        for name, entries in result.spans.items()
        for e in entries
    ]
    lines += ["", f"Spans ({len(result.spans)} name(s))"]
    lines += _table(["NAME", "TYPE", "KIND", "LOCATION", "FUNCTION"], rows) if rows else ["  none found"]

    lines += ["", f"Autolog ({len(result.autolog)})"]
    if result.autolog:
        rows = []
        for a in result.autolog:
            flavor = a["flavor"] + (f" (except {', '.join(a['exclude'])})" if a.get("exclude") else "")
            names = AUTOLOG_SPAN_NAMES.get(a["flavor"], ())
            rows.append([flavor, f"{a['file']}:{a['line']}", ", ".join(names[:4]) or "-"])
        lines += _table(["FLAVOR", "LOCATION", "TYPICAL SPAN NAMES"], rows)
    else:
        lines.append("  none found")

    lines += ["", f"Gaps: LLM calls outside any span ({len(result.gaps)})"]
    if result.gaps:
        rows = [
            [f"{g['file']}:{g['line']}", g["client"], g["function"], g.get("call", "")]
            for g in result.gaps
        ]
        lines += _table(["LOCATION", "CLIENT", "FUNCTION", "CALL"], rows)
    else:
        lines.append("  none found")
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    shown = rows[:MAX_ROWS]
    widths = [max(len(str(r[i])) for r in [header, *shown]) for i in range(len(header))]
    out = []
    for row in [header, *shown]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths)]
        out.append("  " + "  ".join(cells).rstrip())
    if len(rows) > MAX_ROWS:
        out.append(f"  ... {len(rows) - MAX_ROWS} more (use --format json for all)")
    return out
