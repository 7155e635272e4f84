"""`mlflow-analyzer session`: a chat session rebuilt as turns, or the sessions of an experiment."""

from __future__ import annotations

import argparse

from ..options import add_source_options, dump_json, example_epilog, positive_int, write_output


def register(sub) -> None:
    p = sub.add_parser(
        "session",
        help="rebuild a chat session's turns (traces sharing mlflow.trace.session), or list sessions",
        description=(
            "Rebuild a multi-turn conversation from the traces sharing its mlflow.trace.session: "
            "per turn the user message, the answer, tools called, errors, tokens and cost, and "
            "assessments; a summary says where it first went wrong and whether the prompt grows "
            "every turn. --list shows the experiment's sessions, those with failures first."
        ),
        epilog=example_epilog(
            "mlflow-analyzer session --tracking-uri sqlite:///mlflow.db --experiment-id 1 --list",
            "mlflow-analyzer session --tracking-uri sqlite:///mlflow.db --experiment-id 1 --session-id sess-0123 --format text",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_options(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--session-id", help="the session to rebuild")
    g.add_argument("--list", action="store_true", help="list the sessions instead")
    p.add_argument("--limit", type=positive_int, default=50, help="sessions listed (default 50)")
    p.add_argument("--clip", type=positive_int, default=600, help="characters kept of each message (default 600)")
    p.add_argument("--format", choices=("json", "text"), default="json", help="json (default) or text")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import NotFoundError
    from ..options import open_source
    from ..sessions import format_session, list_sessions, rebuild, session_list
    from ..sources import checked

    if args.list:
        # Only trace records are needed: a SQL store answers with one GROUP BY, other stores
        # skip reading the spans.
        source = open_source(args)
        summary = getattr(source, "session_aggregates", lambda: None)()
        if summary is not None:
            agg, without, users = summary
            if not agg and not without:
                from ..sources import check_count

                check_count(source, 0, True)
            result = session_list(agg, without, limit=args.limit, users=users)
        else:
            result = list_sessions(checked(source, source.iter_trace_infos()), limit=args.limit)
        result.update(source.skip_summary())
        if args.format == "text":
            lines = [f"{result['sessions']} sessions; {result['traces_without_session']} traces without one"]
            lines += [
                f"{r['session_id']}  {r['turns']} turns  {r['error_turns']} failed  tokens {r['tokens']:,}  {r['first']} .. {r['last']}"
                for r in result["list"]
            ]
            write_output("\n".join(lines), args)
        else:
            write_output(dump_json(result), args)
        return 0
    if not args.inputs and not args.filter_string and "'" not in args.session_id:
        # Let the store select the session's traces (MLflow's filter grammar).
        args.filter_string = f"metadata.`mlflow.trace.session` = '{args.session_id}'"
    source = open_source(args)
    try:
        result = rebuild(args.session_id, checked(source), clip=args.clip)
    except NotFoundError:
        raise NotFoundError(f"no traces with session id {args.session_id!r} in {source.description}") from None
    if not result["turns"]:
        raise NotFoundError(f"no traces with session id {args.session_id!r} in {source.description}")
    result.update(source.skip_summary())
    write_output(dump_json(result) if args.format == "json" else format_session(result), args)
    return 0
