"""`mlflow-analyzer health`: the quick health check of one trace."""

from __future__ import annotations

import argparse

from ..options import add_source_options, add_trace_id_option, dump_json, example_epilog, one_trace, write_output


def register(sub) -> None:
    p = sub.add_parser(
        "health",
        help="quick health check of one trace: state, errors and root causes, judges, tokens, slowest spans",
        description=(
            "The quick health check of one trace: state, span count, error spans with their "
            "messages and which one is the root cause, assessments (failing ones with rationale; "
            "a judge's own errors told apart from trace errors), token usage and cost, the "
            "slowest spans by self time, LLM spans without token usage, orphan spans. Works on "
            "traces without assessments."
        ),
        epilog=example_epilog(
            "mlflow-analyzer health --tracking-uri sqlite:///mlflow.db --trace-id tr-0123abcd --format text",
            "mlflow-analyzer health trace.json",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_options(p)
    add_trace_id_option(p)
    p.add_argument("--format", choices=("json", "text"), default="json", help="json (default) or text")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..health import format_health, trace_health
    _, trace = one_trace(args)
    h = trace_health(trace)
    write_output(dump_json(h) if args.format == "json" else format_health(h), args)
    return 0
