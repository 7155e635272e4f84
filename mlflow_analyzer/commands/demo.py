"""`mlflow-analyzer demo`: the main job on an embedded default store."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from ..options import example_epilog, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="build a realistic agent trace corpus in a local SQLite store (once) and analyze it",
        description=(
            "The main job on an embedded default. On first run, builds with MLflow's own tracing "
            "API a realistic travel-agent trace corpus in a local SQLite store (sessions; AGENT, "
            "LLM, TOOL, RETRIEVER and custom spans; models and token usage; assessments, one "
            "judge erroring) with known problems in it. Later runs reuse it. Then runs the "
            "analysis (stats, findings, the review file with charts, validated) and prints where "
            "the results are. Writes only to its own folder (default ~/.mlflow-analyzer/demo, or "
            "$MLFLOW_ANALYZER_HOME)."
        ),
        epilog=example_epilog("mlflow-analyzer demo", "mlflow-analyzer demo --dir /tmp/mlflow-demo --traces 200"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dir", metavar="DIR", help="where the demo store and results live")
    p.add_argument("--traces", type=positive_int, default=400, help="corpus size (default 400, at least 40)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the corpus even if one exists")
    p.add_argument("--format", choices=("text", "json"), default="text", help="text summary (default) or JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import shutil

    from ..analysis import analyze_source, write_review_for
    from ..corpus import demo_directory, ensure_corpus
    from ..errors import UsageError
    from ..sources import SqlStoreSource, StoreQuery

    if args.traces < 40:
        raise UsageError("--traces must be at least 40 (every injected problem needs a few traces)")
    directory = Path(args.dir).expanduser() if args.dir else demo_directory()
    if args.rebuild and (directory / "mlflow.db").exists():
        (directory / "mlflow.db").unlink()
        (directory / "manifest.json").unlink(missing_ok=True)
    print(f"mlflow-analyzer: demo store in {directory} (built once, then reused)", file=sys.stderr)
    manifest = ensure_corpus(directory, n_traces=args.traces)
    uri, exp = manifest["tracking_uri"], manifest["experiment_id"]
    analysis = analyze_source(SqlStoreSource(StoreQuery(uri, experiment_id=exp)))

    results = directory / "results"
    shutil.rmtree(results / "reviews", ignore_errors=True)
    results.mkdir(parents=True, exist_ok=True)
    (results / "stats.json").write_text(json.dumps(analysis.stats, indent=2) + "\n")
    (results / "findings.json").write_text(json.dumps(analysis.to_dict(), indent=2) + "\n")
    commit = hashlib.sha1(json.dumps(manifest.get("params", {}), sort_keys=True).encode()).hexdigest()[:7]
    review = write_review_for(
        analysis, str(results), branch="demo", commit=commit, scope=f"demo experiment {manifest['experiment_name']}"
    )
    summary = {
        "tracking_uri": uri,
        "experiment_id": exp,
        "traces": analysis.stats["trace_count"],
        "error_rate": analysis.stats["error_rate"],
        "findings": len(analysis.findings),
        "review": review["path"],
        "charts": review["charts"],
        "review_valid": not review["problems"],
        "stats_json": str(results / "stats.json"),
        "findings_json": str(results / "findings.json"),
    }
    if args.format == "json":
        print(json.dumps(summary, indent=2))
    else:
        s = analysis.stats
        print(f"Analyzed {s['trace_count']} traces in {uri} (experiment {exp})")
        print(
            f"  errors {s['error_rate'] * 100:.1f}%  latency p50 {s['latency_ms']['p50']:,.0f} ms  "
            f"p95 {s['latency_ms']['p95']:,.0f} ms  tokens {s['tokens']['total']:,}  cost "
            + ("-" if s["cost_usd"] is None else f"${s['cost_usd']:,.2f} (estimate)")
        )
        print(f"\nTop findings ({len(analysis.findings)} of {analysis.findings_total}):")
        for f in analysis.findings:
            print(f"  {f['id']} [{f['priority']}] {f['category']:<24} {f['title']}")
        print(f"\nReview:   {review['path']}" + ("" if not review["problems"] else "  (INVALID: see validate)"))
        for c in review["charts"]:
            print(f"Chart:    {c}")
        print(f"Stats:    {results / 'stats.json'}\nFindings: {results / 'findings.json'}")
        print(
            f"\nNext: {runnable_command()} findings --tracking-uri "
            f"{uri} --experiment-id {exp} --format text"
        )
    return 0 if not review["problems"] else 1


def runnable_command() -> str:
    """How to run this CLI again from the user's shell, as printed: ``mlflow-analyzer`` when
    that resolves to this same program, else the path of the program that is running (e.g.
    ``.venv/bin/mlflow-analyzer`` after the quick start), else ``python -m mlflow_analyzer``."""
    import shlex
    import shutil

    me = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    on_path = shutil.which("mlflow-analyzer")
    if me is not None and me.name == "mlflow-analyzer" and me.is_file():
        if on_path and Path(on_path).resolve() == me.resolve():
            return "mlflow-analyzer"
        path = me.absolute()
        try:  # a relative path as printed runs from here (.venv/bin/mlflow-analyzer)
            rel = str(path.relative_to(Path.cwd()))
            return shlex.quote(rel if "/" in rel else f"./{rel}")
        except ValueError:
            return shlex.quote(str(path))
    if on_path:
        return "mlflow-analyzer"
    return f"{shlex.quote(sys.executable)} -m mlflow_analyzer"
