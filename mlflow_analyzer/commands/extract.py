"""`mlflow-analyzer extract`: jq over traces, with named recipes on the normalized view."""

from __future__ import annotations

import argparse
import json
import sys

from ..extract import RECIPE_SPANS, RECIPES, recipe_help
from ..options import (
    add_source_options,
    add_trace_id_option,
    example_epilog,
    non_negative_int,
    positive_int,
    safe_output,
    spill_if_large,
    write_output,
)


def register(sub) -> None:
    p = sub.add_parser(
        "extract",
        help="run a jq program or a named recipe over traces (normalized or raw view)",
        description=(
            "Run a jq program over each trace and print every result as one JSON line. Named "
            "recipes read the normalized view, where attributes are decoded, span ids are hex "
            "and assessments are always a list. --view raw runs your program on MLflow's own "
            "JSON instead. --limit bounds the number of results (reading stops there: traces "
            "past the limit are not read); long strings are clipped "
            "(--max-string); a large result is written to a file whose path is printed.\n\n"
            "recipes:\n" + recipe_help()
        ),
        epilog=example_epilog(
            "mlflow-analyzer extract --tracking-uri sqlite:///mlflow.db --experiment-id 1 --recipe errors --limit 20",
            "mlflow-analyzer extract trace.json --program '.spans[] | select(.type == \"TOOL\") | .name'",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_options(p)
    add_trace_id_option(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--recipe", choices=sorted(RECIPES), help="a named recipe (listed above)")
    g.add_argument("--program", "-p", metavar="JQ", help="a jq program, run once per trace")
    p.add_argument(
        "--view",
        choices=("normalized", "raw"),
        default="normalized",
        help="the document jq sees (default: normalized; recipes always use normalized)",
    )
    p.add_argument("--limit", type=positive_int, default=50, help="at most N results (default 50)")
    p.add_argument("--max-string", type=non_negative_int, default=1000, help="clip strings longer than N characters (0: never)")
    p.add_argument("--output", "-o", metavar="FILE", help="write the results to FILE (JSONL)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..extract import JqSandbox, clip_strings, compile_program, normalized_view
    from ..options import one_trace, open_source

    program = RECIPES[args.recipe][1] if args.recipe else args.program
    view = "normalized" if args.recipe else args.view
    compile_program(program)  # refused before anything is read

    source = None
    if args.trace_id:
        pairs = iter([one_trace(args)])
    else:
        source = open_source(args)
        having = RECIPE_SPANS.get(args.recipe) if args.recipe else None
        pairs = source.iter_pairs(having=having) if having and hasattr(source, "trace_ids") else source.iter_pairs()

    # Traces are read and converted one at a time, and reading stops as soon as --limit
    # results are in: the total beyond the limit is not counted (that would mean reading
    # every trace of the experiment).
    # The program runs in a sandbox (no environment, no files, time and output limits).
    lines: list[str] = []
    traces_seen = 0
    more = False
    with JqSandbox(program) as jq:
        for raw, trace in pairs:
            traces_seen += 1
            tid = trace.trace_id
            doc = raw if view == "raw" else normalized_view(trace)
            for result in jq.run(tid, doc):
                if len(lines) == args.limit:
                    more = True
                    break
                lines.append(json.dumps(clip_strings(result, args.max_string), ensure_ascii=False, default=str))
            if len(lines) == args.limit:
                break
    if traces_seen == 0:
        from ..errors import NotFoundError
        from ..sources import check_count

        if source is not None:
            check_count(source, 0, True)
        raise NotFoundError("no traces to extract from")
    text = "\n".join(lines)
    if len(lines) == args.limit:
        print(
            f"mlflow-analyzer: showing the first {len(lines)} results, from {traces_seen} traces; "
            + ("more follow" if more else "there may be more")
            + " (raise --limit)",
            file=sys.stderr,
        )
    elif not lines:
        print(f"mlflow-analyzer: the program produced no results over {traces_seen} traces", file=sys.stderr)
    if args.output:
        write_output(text, args)
    elif text:
        sys.stdout.write(safe_output(spill_if_large(text, name="extract", summary={"results": len(lines), "traces": traces_seen})) + "\n")
    return 0
