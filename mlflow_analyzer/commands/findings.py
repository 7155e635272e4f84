"""`mlflow-analyzer findings`: deterministic findings with evidence (see CONTRIBUTING.md)."""

from __future__ import annotations

import argparse

from ..options import add_output_options, add_sample_option, add_source_options, dump_json, example_epilog, positive_int, write_output


def register(sub) -> None:
    p = sub.add_parser(
        "findings",
        help="deterministic findings with evidence: errors, retries, latency, cost, wasted calls, instrumentation gaps",
        description=(
            "Find problems in traces with a program, not by eyeballing JSON: errors grouped at "
            "their root cause (rate limits, timeouts, auth, validation, cascades, bursts), "
            "retries and their exhaustion, slow spans, independent calls run one after another, "
            "redundant identical calls, growing prompts, expensive models on small tasks, LLM "
            "spans without token usage, untraced time, orphan spans, missing session ids, "
            "failing assessments and judge errors. Each finding has a category, priority, "
            "confidence, evidence trace ids and the numbers behind it. Prints "
            "{\"findings\": [...], \"checks\": [...], \"stats\": {...}}, ranked by impact, at most 10 "
            "unless --all; checks lists every check that ran and whether it found something, found "
            "nothing (clean) or could not run on this data (skipped), and each finding's confirm "
            "names the command whose figure should move once it is fixed."
        ),
        epilog=example_epilog(
            "mlflow-analyzer findings --tracking-uri sqlite:///mlflow.db --experiment-id 1 --format text",
            "mlflow-analyzer findings --tracking-uri sqlite:///mlflow.db --experiment-id 1 --repo . --required-tags session_id,user_id",
            "mlflow-analyzer findings --tracking-uri sqlite:///mlflow.db --experiment-id 1 --branch feature/x --baseline main",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_options(p)
    add_sample_option(p)
    p.add_argument("--repo", metavar="DIR", help="source repository: fills each finding's code (file:line) and finds untraced LLM calls")
    p.add_argument("--all", action="store_true", help="report every finding, not only the top 10")
    p.add_argument("--max-findings", type=positive_int, default=10, help="findings to report (default 10)")
    p.add_argument(
        "--required-tags",
        metavar="K1,K2",
        help="report traces lacking these tags/metadata keys (session_id and user_id map to MLflow's session and user)",
    )
    p.add_argument("--branch", help="analyze traces of this git branch (mlflow.source.git.branch)")
    p.add_argument("--baseline", help="with --branch: compare against this branch and report regressions")
    add_output_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import UsageError
    from ..findings import FindingsAnalyzer, source_arguments
    from ..options import open_source

    if args.baseline and not args.branch:
        raise UsageError("--baseline needs --branch")
    locate_result = None
    if args.repo:
        import os

        if not os.path.isdir(args.repo):
            raise UsageError(f"--repo {args.repo}: no such folder")
        from ..locate import scan

        locate_result = scan(args.repo)
    required = args.required_tags.split(",") if args.required_tags else None
    analyzer = FindingsAnalyzer(required_tags=required)
    comparison = None
    if args.branch and args.baseline:
        from ..compare import Comparison

        def side(t):
            return "branch" if t.git_branch == args.branch else "baseline" if t.git_branch == args.baseline else None

        comparison = Comparison(args.branch, args.baseline, side)

    from ..remote import analysis_stream

    source = open_source(args)
    traces, remote = analysis_stream(source)
    on_branch = 0
    for trace in traces:
        if comparison is not None:
            comparison.add(trace)
        if args.branch and trace.git_branch != args.branch:
            continue
        on_branch += 1
        analyzer.add(trace)
    if args.branch and on_branch == 0:
        from ..errors import NotFoundError

        raise NotFoundError(f"no traces with mlflow.source.git.branch = {args.branch!r} in {source.description}")

    limit = None if args.all else args.max_findings
    result = analyzer.result(max_findings=None, locate_result=locate_result,
                             source_args=source_arguments(source))
    if remote is not None:  # over a tracking server: trace-level figures from every trace
        result["stats"] = remote.result()
    findings = result["findings"]
    if comparison is not None:
        cmp = comparison.result()
        extra = comparison.findings(cmp)
        result["comparison"] = cmp
        findings = _merge(extra, findings)
    result["findings_total"] = len(findings)
    if limit is not None:
        findings = findings[:limit]
    for i, f in enumerate(findings, start=1):
        f["id"] = f"F-{i:03d}"
    result["findings"] = findings
    result["stats"].update(source.skip_summary())
    out = {"findings": findings, "findings_total": result["findings_total"], "checks": result["checks"],
           "stats": result["stats"], **source.skip_summary()}
    if result["stats"].get("sample"):
        out["sample"] = {k: v for k, v in result["stats"]["sample"].items() if k != "estimated"}
        out["sample"]["note"] = ("findings come from the traces read in full (traces_with_spans of traces); "
                                 "their counts are the sample's")
    if "comparison" in result:
        out["comparison"] = result["comparison"]
    text = dump_json(out) if args.format == "json" else format_findings(out)
    write_output(text, args)
    return 0


def _merge(regressions: list[dict], findings: list[dict]) -> list[dict]:
    from ..findings import PRIORITIES, _ordered

    for f in regressions:
        f.pop("_impact", None)
    merged = [_ordered(f) for f in regressions] + findings
    merged.sort(key=lambda f: PRIORITIES.index(f["priority"]))  # stable: regressions first per priority
    return merged


def format_findings(result: dict) -> str:
    from ..redact import redact_value

    result = redact_value(result)  # before any clipping: half a key still leaks
    s = result["stats"]
    lines = [
        f"{s['trace_count']:,} traces, {s['error_rate'] * 100:.1f}% errors, p95 "
        f"{s['latency_ms']['p95'] or 0:,.0f} ms, cost "
        + ("-" if s.get("cost_usd") is None else f"${s['cost_usd']:,.4f} (estimate)")
        + f"; {len(result['findings'])} of {result['findings_total']} findings shown",
        "",
    ]
    if result.get("sample"):
        sm = result["sample"]
        lines[-1:-1] = [f"(spans read for a sample of {sm['traces_with_spans']:,} of {sm['traces']:,} traces: "
                        "findings and their counts come from the sample; --sample 0 reads every trace)"]
    for f in result["findings"]:
        lines.append(f"{f['id']} [{f['priority']}] {f['category']} ({f['confidence']}%): {f['title']}")
        if f["code"]:
            lines.append(f"    code: {f['code']}")
        if f["trace_ids"]:
            lines.append("    traces: " + ", ".join(f["trace_ids"][:3]) + (" …" if len(f["trace_ids"]) > 3 else ""))
        lines.append(f"    issue: {f['issue']}")
        lines.append(f"    impact: {f['impact']}")
        lines.append(f"    fix: {f['suggestion']}")
        if f.get("confirm"):
            c = f["confirm"]
            lines.append(f"    confirm: {c['shell']}   (now {c['now']}; goal {c['goal']})")
        lines.append("")
    checks = result.get("checks") or []
    if checks:
        lines.append("checks:")
        for c in checks:
            lines.append(f"  [{c['status']}] {c['id']}: {c['summary']}")
        lines.append("")
    if "comparison" in result:
        c = result["comparison"]
        lines.append(
            f"branch {c['branch']} ({c['branch_summary']['traces']} traces) vs {c['baseline']} "
            f"({c['baseline_summary']['traces']} traces): {len(c['regressions'])} regression(s), "
            f"{len(c['improvements'])} improvement(s)"
        )
    return "\n".join(lines)
