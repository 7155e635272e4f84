"""``mlflow-analyzer report``: write the review file and its charts.

Inputs come from :func:`build_inputs`, which today reads ``--stats`` and ``--findings``
files; it is the one place to extend when report learns to compute findings from a
trace source itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError, UsageError
from ..options import add_source_options, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write reviews/{branch}/REVIEW-mlflow-{commit}.md with charts",
        description=(
            "Write the review file reviews/{branch}/REVIEW-mlflow-{commit}.md (format: "
            "references/review.schema.md) from a trace source (analyzed here: stats and "
            "findings, with code locations from --repo) or from the JSON of 'stats' and "
            "'findings', with a "
            "latency chart and a cost-by-operation chart (PNG) beside it. Branch and commit "
            "come from git unless given. Prints {\"path\", \"charts\", \"findings_count\"} "
            "as JSON."
        ),
        epilog=(
            "Example:\n"
            "  mlflow-analyzer report --tracking-uri sqlite:///mlflow.db --experiment-id 1 --repo .\n"
            "  mlflow-analyzer report --findings findings.json --branch main --commit abc1234"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_options(p)
    p.add_argument("--stats", metavar="FILE",
                   help="output of 'stats --format json' (default: the stats in --findings)")
    p.add_argument("--findings", metavar="FILE",
                   help="output of 'findings --format json' ({\"findings\": [...], \"stats\": {...}})")
    p.add_argument("--repo", default=".", metavar="DIR",
                   help="git checkout giving branch, commit, the output root and code locations (default: .)")
    p.add_argument("--branch", help="branch name (default: from git)")
    p.add_argument("--commit", help="commit, 7-40 hex digits (default: short HEAD from git)")
    p.add_argument("--pr", type=positive_int, metavar="N", help="pull request number")
    p.add_argument("--model", metavar="M", help="reviewer_model to record")
    p.add_argument("--scope", help="what was analyzed, for the title (default: branch @ commit)")
    p.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    p.add_argument("--output-dir", metavar="DIR",
                   help="folder that receives reviews/... (default: the top of --repo)")
    p.set_defaults(func=run)


def _load_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise InputError(f"{what} file not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{what} file {path} is not valid JSON: {exc}") from None


def build_inputs(args) -> tuple[dict, list[dict]]:
    """``(stats, findings)`` for the review: analyzed from a trace source (files or a
    store), or read from ``--stats`` / ``--findings`` files."""
    if not args.stats and not args.findings:
        from ..analysis import analyze_source
        from ..options import open_source

        analysis = analyze_source(open_source(args), repo=args.repo)
        args._latencies = analysis.latencies
        args._checks = analysis.checks
        return analysis.stats, analysis.findings
    stats, findings = None, []
    if args.findings:
        data = _load_json(args.findings, "findings")
        if isinstance(data, list):
            findings = data
        elif isinstance(data, dict) and isinstance(data.get("findings"), list):
            findings, stats = data["findings"], data.get("stats")
            if isinstance(data.get("checks"), list):
                args._checks = data["checks"]
        else:
            raise InputError(f"{args.findings}: expected {{\"findings\": [...], \"stats\": {{...}}}}")
    if args.stats:
        stats = _load_json(args.stats, "stats")
    if not isinstance(stats, dict):
        raise UsageError("no stats: give --stats FILE, or a findings file that carries stats")
    if "trace_count" not in stats and isinstance(stats.get("stats"), dict):
        stats = stats["stats"]  # a findings file passed as --stats
    return stats, findings


def run(args) -> int:
    from ..review import git_context, git_root, write_review

    stats, findings = build_inputs(args)
    branch, commit = args.branch, args.commit
    if not branch or not commit:
        try:
            git_branch, git_commit = git_context(args.repo)
        except UsageError as exc:
            raise UsageError(f"{exc} (give --branch and --commit)") from None
        branch, commit = branch or git_branch, commit or git_commit
    root = args.output_dir or git_root(args.repo) or args.repo
    if args.output_dir:
        Path(root).mkdir(parents=True, exist_ok=True)
    if not Path(root).is_dir():
        raise UsageError(f"not a folder: {root}")
    result = write_review(
        root, stats, findings, branch=branch, commit=commit, charts=not args.no_charts,
        latencies=getattr(args, "_latencies", None),
        checks=getattr(args, "_checks", None),
        pr_number=args.pr, reviewer_model=args.model, scope=args.scope,
    )
    if "skipped" in stats:  # analyzed from a trace source here
        result["skipped"] = stats["skipped"]
        result["skipped_reasons"] = stats.get("skipped_reasons", [])
    print(json.dumps(result))
    return 0

