"""``mlflow-analyzer validate``: check a review file against the schema."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError


def register(sub) -> None:
    p = sub.add_parser(
        "validate",
        help="check a review file against references/review.schema.md",
        description=(
            "Check a review file: frontmatter fields and types, sections, finding headings, "
            "categories, priorities, confidence (70..100), at most 10 findings, counts that "
            "match the findings, and the file name. With --tracking-uri, every trace id cited "
            "on a Trace line must exist in that store (read-only). Prints each problem as "
            "FILE:LINE: message and exits 1, or prints 'ok: FILE' and exits 0."
        ),
        epilog=(
            "Example:\n"
            "  mlflow-analyzer validate reviews/main/REVIEW-mlflow-abc1234.md "
            "--tracking-uri sqlite:///mlflow.db"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="the review markdown file")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="tracking store whose traces the review cites (checked when given)")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="text (default) or json: {\"file\", \"ok\", \"problems\": [...]}")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..validate import store_trace_checker, validate_review

    if not Path(args.file).is_file():
        raise InputError(f"no such review file: {args.file}")
    checker = store_trace_checker(args.tracking_uri) if args.tracking_uri else None
    problems = validate_review(args.file, trace_exists=checker)
    from ..options import dump_json, safe_output

    if args.format == "json":
        print(safe_output(dump_json({"file": args.file, "ok": not problems,
                                     "problems": [p.to_dict() for p in problems]})))
    elif problems:
        print(safe_output("\n".join(p.format(args.file) for p in problems)))
    else:
        print(safe_output(f"ok: {args.file}"))
    return 1 if problems else 0
