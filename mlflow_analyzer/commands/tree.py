"""`mlflow-analyzer tree`: a trace's span tree, or its timeline, bounded in size."""

from __future__ import annotations

import argparse

from ..options import (
    add_source_options,
    add_trace_id_option,
    dump_json,
    example_epilog,
    one_trace,
    positive_int,
    write_output,
)


def register(sub) -> None:
    p = sub.add_parser(
        "tree",
        help="render a trace's span tree (type, status, duration, self time, tokens, model, error)",
        description=(
            "Render one trace's span tree: per span its type, status, duration, self time "
            "(time not covered by children), model, tokens, cost and error message. "
            "--timeline draws an ASCII waterfall of when each span ran. Output is bounded: "
            "deep or wide parts are elided with a marker saying what was cut."
        ),
        epilog=example_epilog(
            "mlflow-analyzer tree --tracking-uri sqlite:///mlflow.db --trace-id tr-0123abcd",
            "mlflow-analyzer tree trace.json --timeline",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_options(p)
    add_trace_id_option(p)
    p.add_argument("--timeline", action="store_true", help="draw an ASCII waterfall instead of the tree")
    p.add_argument("--max-depth", type=positive_int, default=12, help="deepest level shown (default 12)")
    p.add_argument("--max-children", type=positive_int, default=25, help="children shown per span (default 25)")
    p.add_argument("--max-spans", type=positive_int, default=300, help="spans shown in all (default 300)")
    p.add_argument("--width", type=positive_int, default=60, help="timeline bar width (default 60)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or json")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..tree import render_timeline, render_tree, tree_json

    _, trace = one_trace(args)
    if args.format == "json":
        text = dump_json(tree_json(trace, max_spans=args.max_spans))
    elif args.timeline:
        text = render_timeline(trace, width=args.width, max_spans=args.max_spans)
    else:
        text = render_tree(
            trace, max_depth=args.max_depth, max_children=args.max_children, max_spans=args.max_spans
        )
    write_output(text, args)
    return 0
