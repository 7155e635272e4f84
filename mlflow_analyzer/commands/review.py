"""``mlflow-analyzer review``: the mlflow-analyzer subagent, headless, through the Anthropic API.

The conversation, its tools and budgets live in :mod:`mlflow_analyzer.headless`; this
module reads the flags, checks them, and turns the outcome into one JSON line on stdout
and an exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import AnalyzerError, UsageError
from ..options import add_source_options, non_negative_int, positive_float, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "review",
        help="run the mlflow-analyzer agent headless (Anthropic API) and write the review",
        description=(
            "Run the mlflow-analyzer subagent without Claude Code: its system prompt is the "
            "body of agents/mlflow-analyzer.md and it works through tools that call this "
            "toolkit in-process (findings, stats, tree, health, extract, fetch, locate, reading "
            "and searching files inside --repo, writing the review). The review goes to "
            "reviews/{branch}/REVIEW-mlflow-{commit}.md under --repo and must pass 'validate'; "
            "problems go back to the model for a bounded number of repairs. Budgets (turns, "
            "tokens) come from the agent file: at 80% the model is told to wrap up; at the "
            "limit the run stops and writes the best valid review it has, saying so. Needs "
            "ANTHROPIC_API_KEY, except with --no-llm (the deterministic review from findings "
            "alone). Progress goes to stderr; a JSON summary to stdout. Exit 0 when a valid "
            "review was written."
        ),
        epilog=(
            "Examples:\n"
            "  mlflow-analyzer review --tracking-uri sqlite:///mlflow.db --experiment-id 1\n"
            "  mlflow-analyzer review --experiment-id 1 --branch feature/rag --pr 42 "
            "--model sonnet\n"
            "  mlflow-analyzer review --experiment-id 1 --no-llm"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_options(p, files=False)
    g = p.add_argument_group("what is reviewed")
    g.add_argument("--repo", default=".", metavar="DIR",
                   help="the code repository: read by the tools, receives reviews/ (default: .)")
    g.add_argument("--branch", help="branch name (default: from git in --repo)")
    g.add_argument("--commit", help="commit, 7-40 hex digits (default: short HEAD of --repo)")
    g.add_argument("--pr", type=positive_int, metavar="N", help="pull request number")
    g.add_argument("--baseline", metavar="BRANCH",
                   help="analyze only the traces of --branch (metadata mlflow.source.git.branch) "
                        "and compare them with this branch's, reporting regressions (default: "
                        "all traces in scope, no comparison)")
    g = p.add_argument_group("the model")
    g.add_argument("--model", metavar="M",
                   help="model id or alias (sonnet, opus, haiku); default: the agent file's")
    g.add_argument("--agent", metavar="FILE",
                   help="agent file (default: .claude/agents/mlflow-analyzer.md in --repo, "
                        "then ~/.claude/agents/, then the toolkit's agents/)")
    g.add_argument("--base-url", metavar="URL",
                   help="Messages API base URL (default: $ANTHROPIC_BASE_URL, else Anthropic's)")
    g.add_argument("--turn-budget", type=positive_int, metavar="N",
                   help="override the agent file's turn budget")
    g.add_argument("--token-budget", type=positive_int, metavar="N",
                   help="override the agent file's token budget (input+output+cache tokens)")
    g.add_argument("--max-repairs", type=non_negative_int, default=3, metavar="N",
                   help="times a failing review goes back to the model (default 3)")
    g.add_argument("--max-retries", type=non_negative_int, default=4, metavar="N",
                   help="client retries of 429/529/5xx/timeouts, with backoff (default 4)")
    g.add_argument("--timeout", type=positive_float, default=300.0, metavar="SECONDS",
                   help="timeout of one API request (default 300)")
    g = p.add_argument_group("modes")
    g.add_argument("--no-llm", action="store_true",
                   help="no model: write the deterministic review from findings alone")
    g.add_argument("--fallback-deterministic", action="store_true",
                   help="when the API keeps failing or the model's review never validates, "
                        "still write a valid review and exit 0: the model's last valid draft, "
                        "else the deterministic one, with a note saying why")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import headless as H
    from .. import review_schema as S
    from ..review import git_context
    from ..sources import parse_since

    repo = Path(args.repo).resolve()
    if not repo.is_dir():
        raise UsageError(f"--repo {args.repo}: no such folder")
    branch, commit = args.branch, args.commit
    if not branch or not commit:
        git_branch, git_commit = git_context(repo)
        branch, commit = branch or git_branch, commit or git_commit
    commit = commit.strip().lower()
    if not S.COMMIT_RE.match(commit):
        raise UsageError(f"--commit {commit!r} is not 7-40 hex digits")
    target = H.ReviewTarget(repo=repo, branch=branch, commit=commit, pr_number=args.pr)

    scope = _scope(args)
    if scope.since:
        parse_since(scope.since)  # a bad --since fails now, not inside every tool call
    check = H.validator(scope.tracking_uri)
    findings_argv = [f"--branch={branch}", f"--baseline={args.baseline}"] if args.baseline else []
    progress = None if args.quiet else H._stderr_progress

    if args.no_llm:
        toolbox = H.Toolbox(scope=scope, target=target, check=check, findings_argv=findings_argv)
        path, problems = H.deterministic_review(target, toolbox, check)
        return _finish(H.RunResult(path, problems, "deterministic"), repo)

    api_key = os.environ.get("ANTHROPIC_API_KEY", "").strip()
    if not api_key:
        raise UsageError("ANTHROPIC_API_KEY is not set: export it (in CI, from a secret), or "
                         "use --no-llm for the deterministic review")
    agent = H.load_agent(H.find_agent_file(repo, args.agent))
    model = H.resolve_model(args.model or agent.model)
    toolbox = H.Toolbox(scope=scope, target=target, check=check, findings_argv=findings_argv,
                        reviewer_model=model)
    budget = H.Budget(turn_limit=args.turn_budget or agent.turn_budget,
                      token_limit=args.token_budget or agent.token_budget,
                      wrap_up_at=agent.wrap_up_threshold)
    client = _client(api_key, args)
    runner = H.HeadlessRunner(client=client, agent=agent, model=model, target=target,
                              toolbox=toolbox, scope=scope, check=check, budget=budget,
                              max_repairs=max(0, args.max_repairs), progress=progress)
    if progress:
        progress(f"[review] {branch} @ {commit}; model {model}; agent {agent.path}; budget "
                 f"{budget.turn_limit} turns / {budget.token_limit:,} tokens")
    try:
        result = runner.run()
    except (H.ApiError, H.ReviewFailed) as exc:
        if not args.fallback_deterministic:
            raise
        if progress:
            progress(f"[fallback] {exc}")
        result = runner.salvage(f"The model run failed: {exc}.", "fallback")
    return _finish(result, repo)


def _scope(args):
    from ..headless import Scope

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise UsageError("give --tracking-uri (or set $MLFLOW_TRACKING_URI)")
    experiment_id = args.experiment_id or (
        None if args.experiment_name else os.environ.get("MLFLOW_EXPERIMENT_ID"))
    if not experiment_id and not args.experiment_name:
        raise UsageError("give --experiment-id or --experiment-name (or $MLFLOW_EXPERIMENT_ID)")
    return Scope(tracking_uri=uri, experiment_id=experiment_id,
                 experiment_name=args.experiment_name, filter_string=args.filter_string,
                 since=args.since, max_traces=args.max_traces, order_by=args.order_by)


def _client(api_key: str, args):
    import anthropic

    base_url = args.base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
    return anthropic.Anthropic(api_key=api_key, base_url=base_url,
                               max_retries=max(0, args.max_retries), timeout=args.timeout)


def _finish(result, repo: Path) -> int:
    summary = result.to_dict(repo)
    print(json.dumps(summary))
    if result.problems:
        from ..redact import message

        for p in result.problems:
            print(message(p.format(summary["path"])), file=sys.stderr)
        raise AnalyzerError(f"the review at {summary['path']} fails validation "
                            f"({len(result.problems)} problem(s))")
    if result.reason:
        from ..redact import message

        print(f"mlflow-analyzer: warning: {message(result.reason)}", file=sys.stderr)
    return 0
