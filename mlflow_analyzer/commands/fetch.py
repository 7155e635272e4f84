"""`mlflow-analyzer fetch`: traces to files, so that nothing large goes through stdout."""

from __future__ import annotations

import argparse
import json
import re
import time

from ..options import add_source_options, add_trace_id_option, example_epilog, open_source


def register(sub) -> None:
    p = sub.add_parser(
        "fetch",
        help="save one trace to a JSON file, or many traces to JSONL; prints the path and counts",
        description=(
            "Save traces from a tracking store (or re-save files) as MLflow's own trace JSON. "
            "With --trace-id: one trace to a .json file. Without: every trace the source "
            "selects, streamed to a .jsonl file (one trace per line). Only the path and counts "
            "are printed, so large traces never flood the terminal or an agent's context."
        ),
        epilog=example_epilog(
            "mlflow-analyzer fetch --tracking-uri sqlite:///mlflow.db --trace-id tr-0123abcd --output trace.json",
            "mlflow-analyzer fetch --tracking-uri sqlite:///mlflow.db --experiment-id 1 --filter \"trace.status = 'ERROR'\" --max-traces 50 --output errors.jsonl",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_options(p)
    add_trace_id_option(p)
    p.add_argument(
        "--output",
        "-o",
        metavar="PATH",
        help="file to write (default: traces/<trace-id>.json or traces/<experiment>-<time>.jsonl)",
    )
    p.add_argument(
        "--view",
        choices=("raw", "normalized"),
        default="raw",
        help="raw: MLflow's JSON, as 'mlflow traces get' writes it (default); normalized: decoded view",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import redact
    from ..options import check_output_path, write_file

    if args.trace_id:
        from ..options import one_trace

        raw, trace = one_trace(args)
        doc = raw if args.view == "raw" else trace.to_dict()
        path = check_output_path(args.output or f"traces/{_safe(args.trace_id)}.json")
        text = json.dumps(redact.redact_value(doc), indent=2, ensure_ascii=False) + "\n"
        path = write_file(path, redact.note_output(text))
        print(
            json.dumps(
                {
                    "path": str(path),
                    "trace_id": args.trace_id,
                    "state": trace.state,
                    "spans": len(trace.spans),
                    "bytes": path.stat().st_size,
                }
            )
        )
        return 0

    source = open_source(args)
    exp = getattr(source, "experiment_id", None) or "files"
    path = check_output_path(args.output or f"traces/{_safe(str(exp))}-{time.strftime('%Y%m%dT%H%M%S')}.jsonl")
    count = errors = spans = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            for raw, trace in source.iter_pairs():
                doc = raw if args.view == "raw" else trace.to_dict()
                fh.write(redact.note_output(json.dumps(redact.redact_value(doc), ensure_ascii=False)) + "\n")
                count += 1
                errors += trace.is_error
                spans += len(trace.spans)
    except OSError as exc:
        from ..errors import UsageError

        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    if count == 0:
        path.unlink()
        from ..errors import InputError, NotFoundError

        if source.skipped:
            raise InputError(
                source.skip_reasons[0] if source.skipped == 1 else
                f"no readable traces in {source.description}: {source.skipped} skipped; first: "
                f"{source.skip_reasons[0]}; nothing written"
            )
        raise NotFoundError(f"no traces matched in {source.description}; nothing written")
    print(json.dumps({"path": str(path), "traces": count, "error_traces": errors, "spans": spans,
                      "bytes": path.stat().st_size, **source.skip_summary()}))
    return 0


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
