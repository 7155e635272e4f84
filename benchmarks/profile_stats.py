#!/usr/bin/env python
"""Where ``stats`` spends its time on a SQL store: a phase breakdown, optional cProfile.

Runs the same pipeline as ``mlflow-analyzer stats`` (``SqlStoreSource`` ->
``trace_from_parts`` -> ``StatsAccumulator`` -> JSON) on a cached benchmark corpus, with a
timer around each phase:

* ``sql``        -- the SQL queries and fetching their rows (``SqlStoreSource._rows``)
* ``span json``  -- the rest of reading: ``json.loads`` of each span row's content, building
  the info dicts (``iter_raw`` minus ``sql``)
* ``normalize``  -- span and trace model building (``trace_from_parts``): decoding every
  JSON-encoded attribute value, re-parsing span inputs/outputs, ids from base64
* ``accumulate`` -- ``StatsAccumulator.add`` (includes ``Trace.link`` / ``root_causes``)
* ``result``     -- sorting per-span durations, percentiles, the output dict and its JSON

and a floor: the same span rows fetched with ``sqlite3`` and their content parsed, nothing
else. ``--what-if`` sizes two changes: normalize with span inputs/outputs kept as the stored
text (no re-parse), and a sketch that builds spans from the ``spans`` table's columns and
parses span JSON only where needed (checked to give the same figures as ``stats``). ``--cprofile N`` prints the top N functions.

    python benchmarks/profile_stats.py --size 10000
    python benchmarks/profile_stats.py --size 10000 --cprofile 25 --what-if

Uses the corpora ``bench.py`` builds (``corpora.py``, ``benchmarks/.cache/<shape>-N``); builds one if
missing. Internal names (``_rows``) are wrapped, not changed: this is a diagnostic.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def pipeline(uri: str, exp: str) -> dict:
    from mlflow_analyzer.normalize import trace_from_parts
    from mlflow_analyzer.options import dump_json
    from mlflow_analyzer.sources import SqlStoreSource, StoreQuery
    from mlflow_analyzer.stats import StatsAccumulator

    t = {"open": 0.0, "sql": 0.0, "read": 0.0, "normalize": 0.0, "accumulate": 0.0, "result": 0.0}
    a = time.perf_counter()
    src = SqlStoreSource(StoreQuery(tracking_uri=uri, experiment_id=exp))
    t["open"] = time.perf_counter() - a
    rows = src._rows

    def timed_rows(*args, **kwargs):
        b = time.perf_counter()
        try:
            return rows(*args, **kwargs)
        finally:
            t["sql"] += time.perf_counter() - b

    src._rows = timed_rows
    acc = StatsAccumulator()
    it = src.iter_raw()
    n = 0
    rss_samples = []
    while True:
        b = time.perf_counter()
        raw = next(it, None)
        c = time.perf_counter()
        t["read"] += c - b
        if raw is None:
            break
        trace = trace_from_parts(raw["info"], raw["data"]["spans"], raw["info"].get("assessments") or [])
        d = time.perf_counter()
        t["normalize"] += d - c
        acc.add(trace)
        t["accumulate"] += time.perf_counter() - d
        n += 1
        if n % 1000 == 0:
            rss_samples.append(round(current_rss_mb(), 1))
    b = time.perf_counter()
    text = dump_json(acc.result())
    t["result"] = time.perf_counter() - b
    t["span json"] = t.pop("read") - t["sql"]
    return {"traces": n, "phases": t, "rss_every_1000": rss_samples, "bytes": len(text)}


def floor(uri: str, exp: str) -> dict:
    path = uri.split("://", 1)[1]
    path = path[1:] if path.startswith("/") else path
    a = time.perf_counter()
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    n = 0
    for (content,) in con.execute("SELECT content FROM spans WHERE experiment_id = ?", (int(exp),)):
        json.loads(content)
        n += 1
    return {"spans": n, "seconds": time.perf_counter() - a}


def columns_pass(uri: str, exp: str, lean: bool = False) -> tuple[dict, float]:
    """What-if sketch (not the library): the same Trace/Span model and StatsAccumulator, but
    spans built from the ``spans`` table's columns (hex ids, name, type, status, times, cost,
    model) and the span JSON parsed only where the columns do not suffice: ERROR spans (their
    exception events), spans with token usage, spans of unknown type, LLM spans without a
    model. Trace rows, metadata and span rows are three streams ordered by trace id and
    merged, so memory holds one trace at a time. SQLite only; assessments left out.

    ``lean``: moreover, for spans that only need their token usage, SQLite extracts it
    (``json_extract``; PostgreSQL has ``->``, MySQL ``JSON_EXTRACT``) instead of shipping the
    whole span JSON to Python."""
    from itertools import groupby

    from mlflow_analyzer.model import Span, Trace
    from mlflow_analyzer.normalize import META_GIT_BRANCH, META_GIT_COMMIT, META_USER, span_from_dict
    from mlflow_analyzer.stats import StatsAccumulator

    a = time.perf_counter()
    path = uri.split("://", 1)[1]
    path = path[1:] if path.startswith("/") else path
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    e = int(exp)
    infos = con.execute(
        "SELECT request_id, timestamp_ms, execution_time_ms, status, session_id, trace_name, "
        "input_tokens, output_tokens, total_tokens, total_cost FROM trace_info "
        "WHERE experiment_id = ? ORDER BY request_id", (e,))
    meta = groupby(con.execute(
        "SELECT m.request_id, m.key, m.value FROM trace_request_metadata m JOIN trace_info t "
        "ON t.request_id = m.request_id WHERE t.experiment_id = ? AND m.key IN (?, ?, ?) "
        "ORDER BY m.request_id", (e, META_USER, META_GIT_BRANCH, META_GIT_COMMIT)), key=lambda r: r[0])
    full = ("status = 'ERROR' OR type IS NULL OR type = 'UNKNOWN' "
            "OR (model_name IS NULL AND type IN ('LLM', 'CHAT_MODEL'))")
    has_usage = "instr(content, '\"mlflow.chat.tokenUsage\"') > 0"
    if lean:
        content_sql = (f"CASE WHEN {full} THEN content END, CASE WHEN NOT ({full}) AND {has_usage} "
                       "THEN json_extract(content, '$.attributes.\"mlflow.chat.tokenUsage\"') END")
    else:
        content_sql = f"CASE WHEN {full} OR {has_usage} THEN content END, NULL"
    spans = groupby(con.execute(
        "SELECT trace_id, span_id, parent_span_id, name, type, status, start_time_unix_nano, "
        f"end_time_unix_nano, total_cost, model_name, model_provider, {content_sql} "
        "FROM spans WHERE experiment_id = ? ORDER BY trace_id", (e,)), key=lambda r: r[0])
    next_meta = next(meta, None)
    next_spans = next(spans, None)
    acc = StatsAccumulator()
    for rid, ts, dur, status, session, name, tin, tout, ttot, cost in infos:
        md: dict = {}
        while next_meta is not None and next_meta[0] < rid:
            next_meta = next(meta, None)
        if next_meta is not None and next_meta[0] == rid:
            md = {k: v for _, k, v in next_meta[1]}
            next_meta = next(meta, None)
        objs = []
        while next_spans is not None and next_spans[0] < rid:
            next_spans = next(spans, None)
        if next_spans is not None and next_spans[0] == rid:
            for _, sid, parent, sname, stype, sstatus, start, end, scost, model, provider, content, usage \
                    in next_spans[1]:
                if content is not None:
                    objs.append(span_from_dict(json.loads(content)))
                    continue
                span = Span(span_id=sid, parent_id=parent, name=sname, span_type=stype,
                            status=sstatus, start_ns=start, end_ns=max(end, start),
                            model=model, provider=provider, cost_usd=scost, convention="mlflow")
                if usage is not None:
                    u = json.loads(usage)
                    if isinstance(u, str):  # the attribute value is itself JSON text
                        u = json.loads(u)
                    span.input_tokens = u.get("input_tokens")
                    span.output_tokens = u.get("output_tokens")
                    span.total_tokens = u.get("total_tokens")
                    if span.total_tokens is None and (span.input_tokens is not None or span.output_tokens is not None):
                        span.total_tokens = (span.input_tokens or 0) + (span.output_tokens or 0)
                    span.cache_read_tokens = u.get("cache_read_input_tokens")
                    span.cache_write_tokens = u.get("cache_creation_input_tokens")
                objs.append(span)
            next_spans = next(spans, None)
        trace = Trace(trace_id=rid, experiment_id=exp, request_time_ms=ts, state=status,
                      duration_ms=float(dur) if dur is not None else None, spans=objs, metadata=md,
                      name=name, session_id=session, user_id=md.get(META_USER),
                      git_branch=md.get(META_GIT_BRANCH), git_commit=md.get(META_GIT_COMMIT),
                      input_tokens=tin, output_tokens=tout, total_tokens=ttot, cost_usd=cost)
        trace.link()
        acc.add(trace)
    result = acc.result()
    return result, time.perf_counter() - a


def _agreement(ours: dict, sketch: dict) -> list[str]:
    diffs = []
    for k in ("trace_count", "error_count", "latency_ms", "ok_latency_ms", "tokens", "span_count"):
        if ours.get(k) != sketch.get(k):
            diffs.append(k)
    if ours.get("cost_usd") is None or abs((ours["cost_usd"] or 0) - (sketch.get("cost_usd") or 0)) > 1e-6:
        diffs.append("cost_usd")
    keys = ("count", "error_count", "p50_ms", "p95_ms", "self_ms_total", "tokens_total", "type")
    a = {s["name"]: tuple(s[k] for k in keys) for s in ours["spans"]}
    b = {s["name"]: tuple(s[k] for k in keys) for s in sketch["spans"]}
    diffs += [f"span {n}" for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
    ekeys = ("span_name", "exception_type", "message_pattern", "count", "trace_count", "failure_mode")
    if sorted(tuple(x[k] for k in ekeys) for x in ours["errors"]) != sorted(
        tuple(x[k] for k in ekeys) for x in sketch["errors"]
    ):
        diffs.append("errors")
    return diffs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=10000)
    p.add_argument("--cache", type=Path, default=HERE / ".cache")
    p.add_argument("--corpus", default="agent", help="corpus shape (corpora.py: agent or rag; default agent)")
    p.add_argument("--cprofile", type=int, default=0, metavar="N", help="also print cProfile's top N (cumulative)")
    p.add_argument("--what-if", action="store_true",
                   help="re-run with span inputs/outputs kept as stored text (not re-parsed)")
    args = p.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_AGENT_HINT", "1")
    os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")

    sys.path.insert(0, str(HERE))
    import corpora

    m = corpora.ensure(args.corpus, args.size, args.cache.resolve())
    uri, exp = m["tracking_uri"], str(m["experiment_id"])

    base_rss = rss_mb()
    import mlflow_analyzer.normalize  # noqa: F401
    import mlflow_analyzer.sources  # noqa: F401
    import mlflow_analyzer.stats  # noqa: F401

    import_rss = current_rss_mb()
    f = floor(uri, exp)
    print(f"{m['trace_count']:,} traces, {f['spans']:,} spans ({uri})")
    print(f"floor: sqlite3 fetch + json.loads of every span row: {f['seconds']:.2f} s")

    r = pipeline(uri, exp)
    total = sum(r["phases"].values())
    print(f"stats pipeline, in process: {total:.2f} s")
    for k in ("open", "sql", "span json", "normalize", "accumulate", "result"):
        v = r["phases"][k]
        print(f"  {k:<11} {v:6.2f} s  {100 * v / total:5.1f}%")
    print(f"memory: interpreter {base_rss:.0f} MB, + imports {import_rss:.0f} MB, "
          f"during the pass (every 1,000 traces) {r['rss_every_1000'][:3]}..{r['rss_every_1000'][-2:]} MB, "
          f"peak {rss_mb():.0f} MB")

    if args.what_if:
        from mlflow_analyzer import normalize

        original = normalize._as_json_text
        normalize._as_json_text = lambda v: None if v is None else v if isinstance(v, str) else json.dumps(v, default=str)
        try:
            w = pipeline(uri, exp)
        finally:
            normalize._as_json_text = original
        wt = sum(w["phases"].values())
        print(f"what-if, span inputs/outputs not re-parsed: {wt:.2f} s "
              f"(normalize {w['phases']['normalize']:.2f} s instead of {r['phases']['normalize']:.2f} s)")

    if args.what_if and uri.startswith("sqlite:"):
        from mlflow_analyzer.sources import SqlStoreSource, StoreQuery, checked
        from mlflow_analyzer.stats import compute_stats

        real = compute_stats(checked(SqlStoreSource(StoreQuery(tracking_uri=uri, experiment_id=exp))))
        for lean, what in ((False, "span JSON parsed only where needed"),
                           (True, "only ERROR/untyped spans' JSON parsed, token usage extracted by SQLite")):
            sketch, secs = columns_pass(uri, exp, lean=lean)
            diffs = _agreement(real, sketch)
            print(f"what-if, spans from the spans table's columns, {what}: {secs:.2f} s in process; "
                  + ("same figures as stats (counts, latency, tokens, cost, per-span, errors)" if not diffs
                     else "DIFFERS from stats on: " + ", ".join(diffs[:8])))

    if args.cprofile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        pipeline(uri, exp)
        prof.disable()
        print(f"\ncProfile (top {args.cprofile} by total time in the function itself):")
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(args.cprofile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
