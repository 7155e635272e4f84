"""`mlflow-analyzer stats`: the statistics pass (see CONTRIBUTING.md for the JSON contract)."""

from __future__ import annotations

import argparse

from ..options import (
    add_output_options,
    add_sample_option,
    add_source_options,
    dump_json,
    example_epilog,
    open_source,
    positive_int,
    write_output,
)


def register(sub) -> None:
    p = sub.add_parser(
        "stats",
        help="trace statistics: counts, error rate, latency percentiles, tokens, cost, per-span and error groups",
        description=(
            "Statistics over an experiment or trace files, computed in one streaming pass: trace "
            "and error counts, latency percentiles (all and OK traces), tokens, cost (MLflow's "
            "recorded cost, else an estimate from the bundled price table), per span name "
            "(count, errors, p50/p95, self time, tokens, cost) and errors grouped at their root "
            "cause by span, exception type and message pattern, fast or slow (timeouts)."
        ),
        epilog=example_epilog(
            "mlflow-analyzer stats --tracking-uri sqlite:///mlflow.db --experiment-id 1 --format text",
            "mlflow-analyzer stats --tracking-uri sqlite:///mlflow.db --experiment-id 1 --group-by tag.environment",
            "mlflow-analyzer stats traces.jsonl --format json",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_options(p)
    add_sample_option(p)
    p.add_argument(
        "--group-by",
        metavar="KEY",
        help="break every figure down by tag.KEY, metadata.KEY, span_type, model, session, user, branch, state or name",
    )
    p.add_argument("--limit", type=positive_int, default=20, help="rows per table in text output (default 20)")
    add_output_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..stats import accumulate, format_text, group_key_function

    if args.group_by:
        group_key_function(args.group_by)  # reject a bad key before reading anything
    source = open_source(args)
    result = accumulate(source, group_by=args.group_by).result()
    result.update(source.skip_summary())
    for w in source.warnings[:5]:
        from ..options import warn

        warn(w)
    text = dump_json(result) if args.format == "json" else format_text(result, limit=args.limit)
    write_output(text, args)
    return 0
