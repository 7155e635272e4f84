"""Benchmark corpora: two differently shaped trace corpora at any size, built once and cached.

* ``agent``: the travel-assistant agent of :mod:`mlflow_analyzer.corpus` (about 11 spans a
  trace, tool calls, retries, sessions, judges), written through MLflow's tracing API by its
  bulk writer. Sizes above 10,000 are the 10,000-trace corpus multiplied (see below).
* ``rag``: a retrieval-augmented support bot (3 to 7 spans a trace: guardrail, embedding,
  vector search with large document payloads, rerank, a chat model from three providers,
  sometimes an order-lookup tool), written through MLflow's public fluent API
  (``mlflow.start_span_no_context`` with explicit timestamps, ``mlflow.log_feedback``).
  Different failure modes (retriever timeouts caught inside OK traces, rate limits retried or
  exhausted, auth errors), heavier payloads per span, fewer spans per trace.

Writing traces through MLflow costs milliseconds per span, so a corpus larger than its
shape's ``BUILD_LIMIT`` is built by *multiplying* the ``BUILD_LIMIT`` corpus: every row of the
trace tables is copied ``factor - 1`` times with fresh trace ids (span JSON, metadata, tags and
assessments rewritten to match), each copy shifted back in time by the corpus's own time span
plus a day, with its own session ids. The copies are real MLflow rows (MLflow and the server
read them like any other), spread over time as a longer-running application would write them.

``load_postgres`` copies a SQLite corpus into a PostgreSQL database whose schema MLflow
itself created (its migrations run when a client first opens the store).

Standard library only at module top; mlflow is imported inside functions.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

RAG_VERSION = 1
MULTIPLY_VERSION = 1
# Traces written through MLflow per shape; larger corpora multiply that one. The agent corpus
# has a bulk writer (10,000 traces in 2-10 minutes here); the rag corpus goes through the
# fluent API (~1,000 traces in 1-9 minutes on a shared 2-core machine).
BUILD_LIMIT = {"agent": 10_000, "rag": 1_000}
DB_NAME = "mlflow.db"
MANIFEST = "manifest.json"
SHAPES = ("agent", "rag")

WRITE_ENV = {
    "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false",
    "MLFLOW_MODEL_CATALOG_URI": "",
    "MLFLOW_DISABLE_AGENT_HINT": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def corpus_dir(cache: Path, shape: str, n: int) -> Path:
    return Path(cache) / f"{shape}-{n}"


def ensure(shape: str, n: int, cache: Path) -> dict:
    """The manifest of the ``shape`` corpus with ``n`` traces, built if missing."""
    if shape not in SHAPES:
        raise ValueError(f"unknown corpus shape {shape!r} (known: {', '.join(SHAPES)})")
    for k, v in WRITE_ENV.items():
        os.environ.setdefault(k, v)
    directory = corpus_dir(cache, shape, n)
    manifest = _reusable(directory, shape, n)
    if manifest is not None:
        manifest["reused"] = True
        return manifest
    started = time.perf_counter()
    limit = BUILD_LIMIT[shape]
    if n > limit:
        base = ensure(shape, limit, cache)
        factor = -(-n // limit)
        manifest = multiply(Path(base["db_path"]), directory, factor, n, base)
    elif shape == "agent":
        manifest = _agent(directory, n)
    else:
        manifest = _rag(directory, n)
    manifest.update(shape=shape, n=n, build_seconds=round(time.perf_counter() - started, 1),
                    version=_version(shape, n))
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    manifest["reused"] = False
    return manifest


def _version(shape: str, n: int) -> str:
    from mlflow_analyzer.corpus import CORPUS_VERSION

    base = f"agent{CORPUS_VERSION}" if shape == "agent" else f"rag{RAG_VERSION}"
    return base + (f"-x{MULTIPLY_VERSION}" if n > BUILD_LIMIT[shape] else "")


def _reusable(directory: Path, shape: str, n: int) -> dict | None:
    try:
        m = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if m.get("version") != _version(shape, n) or m.get("trace_count") != n:
        return None
    if not Path(m.get("db_path", "")).is_file():
        return None
    counts = sqlite_counts(Path(m["db_path"]), m["experiment_id"])
    return m if counts["traces"] == n else None


def sqlite_counts(db: Path, experiment_id: str | int) -> dict:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        traces = c.execute("SELECT COUNT(*) FROM trace_info WHERE experiment_id = ?",
                           (int(experiment_id),)).fetchone()[0]
        spans = c.execute("SELECT COUNT(*) FROM spans s JOIN trace_info t ON t.request_id = s.trace_id "
                          "WHERE t.experiment_id = ?", (int(experiment_id),)).fetchone()[0]
    return {"traces": traces, "spans": spans}


def _finish(directory: Path, experiment_id: str) -> dict:
    db = (directory / DB_NAME).resolve()
    counts = sqlite_counts(db, experiment_id)
    return {"tracking_uri": f"sqlite:///{db}", "db_path": str(db), "experiment_id": str(experiment_id),
            "trace_count": counts["traces"], "span_count": counts["spans"]}


# --- agent: the package's own corpus -----------------------------------------------------------


def _agent(directory: Path, n: int) -> dict:
    from mlflow_analyzer.corpus import ensure_corpus

    m = ensure_corpus(directory / "build", n_traces=n, experiment_name=f"bench-agent-{n}", seed=7)
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / DB_NAME
    if db.exists():
        db.unlink()
    os.replace(directory / "build" / "mlflow.db", db)
    shutil.rmtree(directory / "build", ignore_errors=True)
    out = _finish(directory, m["experiment_id"])
    out["writer"] = m.get("writer")
    return out


# --- rag: a retrieval-augmented support bot, through the fluent API -----------------------------

_TOPICS = ["refund", "shipping", "password reset", "invoice", "warranty", "order status",
           "subscription", "account deletion", "discount code", "device setup", "return label",
           "data export", "two-factor login", "billing address", "plan upgrade"]
_MODELS = [("gpt-4o-mini", "openai", 0.70), ("claude-3-5-haiku-20241022", "anthropic", 0.25),
           ("gpt-4o", "openai", 0.05)]
_WORDS = ("the customer account order refund policy within days business support ticket "
          "shipping carrier label warehouse invoice payment card billing subscription plan "
          "renewal cancel device firmware reset password email verification code region "
          "warranty coverage replacement parts return window store credit exchange").split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def _pick_model(rng: random.Random) -> tuple[str, str]:
    r = rng.random()
    for model, provider, weight in _MODELS:
        r -= weight
        if r < 0:
            return model, provider
    return _MODELS[0][0], _MODELS[0][1]


def _rag(directory: Path, n: int, seed: int = 11) -> dict:
    import mlflow
    from mlflow.entities import AssessmentError, AssessmentSource, SpanEvent, SpanStatus, SpanStatusCode

    from mlflow_analyzer.corpus import _fast_sqlite_commits

    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    uri = f"sqlite:///{directory / DB_NAME}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.set_experiment(f"bench-rag-{n}").experiment_id
    rng = random.Random(seed)
    end_ns = int(time.time() // 3600 * 3600) * 1_000_000_000
    window_ns = 7 * 86400 * 1_000_000_000
    starts = sorted(end_ns - int(rng.random() * window_ns) for _ in range(n))
    sessions: list[tuple[str, str, int]] = []  # session id, user id, turns left
    with _fast_sqlite_commits(uri):
        for i, t0 in enumerate(starts):
            if sessions and rng.random() < 0.55:
                k = rng.randrange(len(sessions))
                sid, uid, left = sessions[k]
                sessions[k] = (sid, uid, left - 1)
                if left <= 1:
                    sessions.pop(k)
            elif rng.random() < 0.75:
                sid, uid = f"s-{rng.getrandbits(48):012x}", f"u-{rng.getrandbits(24):06x}"
                sessions.append((sid, uid, rng.randint(1, 6)))
            else:
                sid, uid = None, f"u-{rng.getrandbits(24):06x}"
            _rag_trace(mlflow, rng, exp, t0, sid, uid, i, SpanEvent, SpanStatus, SpanStatusCode,
                       AssessmentSource, AssessmentError)
    out = _finish(directory, exp)
    if out["trace_count"] != n:
        raise RuntimeError(f"rag corpus: wrote {n} traces, the store holds {out['trace_count']}")
    out["writer"] = "fluent"
    return out


def _rag_trace(mlflow, rng, exp, t0, sid, uid, i, SpanEvent, SpanStatus, SpanStatusCode,
               AssessmentSource, AssessmentError) -> None:
    ms = 1_000_000
    topic = rng.choice(_TOPICS)
    question = f"How do I handle a {topic} for order {rng.randint(10000, 99999)}? {_text(rng, rng.randint(4, 20))}"
    tier = rng.choice(["free", "pro", "enterprise"])
    metadata = {"mlflow.trace.user": uid, "mlflow.source.git.branch": "main",
                "mlflow.source.git.commit": "4f1c2e9d8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d"}
    if sid:
        metadata["mlflow.trace.session"] = sid
    tags = {"environment": "prod" if rng.random() < 0.8 else "staging", "app_version": rng.choice(["1.8.2", "1.9.0"])}
    root = mlflow.start_span_no_context("support_bot", span_type="CHAIN", inputs={"question": question, "customer_tier": tier},
                                        experiment_id=exp, metadata=metadata, tags=tags, start_time_ns=t0)
    cur = t0 + rng.randint(1, 4) * ms
    children = []

    def leaf(name, stype, dur_ms, inputs, outputs=None, attributes=None, error=None):
        nonlocal cur
        start = cur
        end = start + int(dur_ms * ms)
        span = mlflow.start_span_no_context(name, span_type=stype, parent_span=root, inputs=inputs,
                                            attributes=attributes or {}, start_time_ns=start)
        if error:
            etype, emsg = error
            span.add_event(SpanEvent(name="exception", timestamp=end, attributes={
                "exception.type": etype, "exception.message": emsg,
                "exception.stacktrace": f"Traceback (most recent call last):\n  File \"bot/{name}.py\", line {rng.randint(20, 300)}\n{etype}: {emsg}"}))
            span.set_status(SpanStatus(SpanStatusCode.ERROR, f"{etype}: {emsg}"))
        elif outputs is not None:
            span.set_outputs(outputs)
        children.append((span, end))
        cur = end + rng.randint(0, 3) * ms
        return span

    blocked = False
    if rng.random() < 0.2:
        blocked = rng.random() < 0.03
        leaf("moderate_input", "GUARDRAIL", rng.uniform(15, 60), {"text": question},
             {"flagged": blocked, "categories": ["self-harm"] if blocked else []})
    fatal = None
    answer = None
    if blocked:
        answer = "I can't help with that request."
    else:
        leaf("embed_query", "EMBEDDING", rng.uniform(12, 45), {"input": question, "model": "text-embedding-3-small"},
             {"dimensions": 1536})
        k = rng.randint(4, 12)
        timeout = rng.random() < 0.03
        docs = [{"page_content": _text(rng, rng.randint(40, 160)),
                 "metadata": {"doc_id": f"kb-{rng.randint(1, 4000)}", "source": f"https://help.example.com/{topic.replace(' ', '-')}/{rng.randint(1, 99)}"}}
                for _ in range(k)]
        leaf("vector_search", "RETRIEVER", 1500 + rng.uniform(0, 40) if timeout else rng.lognormvariate(4.4, 0.6),
             {"query": question, "top_k": k},
             None if timeout else docs,
             error=("TimeoutError", "vector store query exceeded 1500 ms (index=kb-prod, shard=3)") if timeout else None)
        if not timeout and rng.random() < 0.6:
            leaf("rerank", "RERANKER", rng.uniform(25, 120), {"query": question, "documents": len(docs)},
                 [{"doc_id": d["metadata"]["doc_id"], "score": round(rng.random(), 3)} for d in docs[:5]])
        if rng.random() < 0.1:
            denied = rng.random() < 0.05
            leaf("lookup_order", "TOOL", rng.lognormvariate(5.5, 0.5), {"order_id": rng.randint(10000, 99999)},
                 {"status": rng.choice(["shipped", "processing", "delivered"])},
                 error=("PermissionError", "403 Forbidden: token lacks scope orders:read") if denied else None)
            if denied:
                fatal = ("PermissionError", "403 Forbidden: token lacks scope orders:read")
        model, provider = _pick_model(rng)
        context = "" if timeout else " ".join(d["page_content"] for d in docs[:5])
        messages = [{"role": "system", "content": "You are the support assistant. Answer from the context only."},
                    {"role": "user", "content": f"Context: {context}\n\nQuestion: {question}"}]
        attempts = 1
        if fatal is None and rng.random() < 0.04:
            attempts = 2 if rng.random() < 0.75 else 3
        for attempt in range(attempts):
            limited = attempt < attempts - 1 or (attempts == 3)
            in_tok = 120 + len(context) // 4 + rng.randint(0, 40)
            out_tok = rng.randint(40, 400)
            slow = rng.random() < 0.01
            attrs = {"mlflow.llm.model": model, "mlflow.llm.provider": provider}
            if limited:
                leaf("generate_answer", "CHAT_MODEL", rng.uniform(80, 300), {"messages": messages, "model": model}, attributes=attrs,
                     error=("RateLimitError", f"Error code: 429 - rate limit reached for {model} (requests per minute)"))
                cur += rng.randint(500, 2000) * ms
                continue
            answer = _text(rng, rng.randint(20, 90))
            span = leaf("generate_answer", "CHAT_MODEL", rng.uniform(15000, 30000) if slow else rng.lognormvariate(7.2, 0.45),
                        {"messages": messages, "model": model},
                        {"choices": [{"message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                         "model": model}, attributes=attrs)
            span.set_attribute("mlflow.chat.tokenUsage", {"input_tokens": in_tok, "output_tokens": out_tok,
                                                          "total_tokens": in_tok + out_tok})
        if attempts == 3:
            fatal = ("RateLimitError", f"Error code: 429 - rate limit reached for {model} (requests per minute)")
    for span, end in children:
        span.end(end_time_ns=end)
    root_end = cur + rng.randint(1, 5) * ms
    if fatal:
        etype, emsg = fatal
        root.add_event(SpanEvent(name="exception", timestamp=root_end, attributes={"exception.type": etype, "exception.message": emsg}))
        root.set_status(SpanStatus(SpanStatusCode.ERROR, f"{etype}: {emsg}"))
    else:
        root.set_outputs({"answer": answer})
    root.end(end_time_ns=root_end)
    if rng.random() < 0.35:
        source = AssessmentSource(source_type="LLM_JUDGE", source_id="openai:/gpt-4.1-mini")
        if rng.random() < 0.02:
            mlflow.log_feedback(trace_id=root.trace_id, name="groundedness", source=source,
                                error=AssessmentError(error_code="RATE_LIMIT_EXCEEDED", error_message="judge call failed: 429"))
        else:
            ok = fatal is None and rng.random() > 0.12
            mlflow.log_feedback(trace_id=root.trace_id, name="groundedness", value=ok, source=source,
                                rationale="Every claim is supported by the retrieved context." if ok else
                                "The answer states a refund window the context does not mention.")


# --- multiplying a corpus --------------------------------------------------------------------------

_TRACE_TABLES = ("trace_info", "trace_request_metadata", "trace_tags", "assessments", "spans")


def _fresh_id(old: str, copy_no: int) -> str:
    return "tr-" + hashlib.sha256(f"{old}/{copy_no}".encode()).hexdigest()[:32]


def _b64(trace_id: str) -> str:
    return base64.b64encode(bytes.fromhex(trace_id[3:])).decode()


def multiply(src_db: Path, directory: Path, factor: int, n: int, base: dict) -> dict:
    """A corpus of ``n`` traces: ``src_db``'s experiment copied ``factor`` times (the first
    copy is the original), each copy with fresh trace ids and session ids, shifted back in time."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    db = directory / DB_NAME
    shutil.copyfile(src_db, db)
    exp = int(base["experiment_id"])
    con = sqlite3.connect(db)
    con.execute("PRAGMA synchronous = OFF")
    con.execute("PRAGMA journal_mode = MEMORY")
    cols = {t: [r[1] for r in con.execute(f'PRAGMA table_info("{t}")')] for t in _TRACE_TABLES}
    lo, hi = con.execute("SELECT MIN(timestamp_ms), MAX(timestamp_ms + execution_time_ms) FROM trace_info "
                         "WHERE experiment_id = ?", (exp,)).fetchone()
    shift_ms = (hi - lo) + 86_400_000
    ids = [r[0] for r in con.execute("SELECT request_id FROM trace_info WHERE experiment_id = ? "
                                     "ORDER BY timestamp_ms DESC, request_id", (exp,))]
    per_copy = len(ids)
    remaining = n - per_copy
    if remaining < 0:  # fewer wanted than the base holds: keep the newest n
        drop = ids[n:]
        for i in range(0, len(drop), 500):
            chunk = drop[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for t in _TRACE_TABLES:
                key = "trace_id" if t in ("assessments", "spans") else "request_id"
                con.execute(f'DELETE FROM "{t}" WHERE {key} IN ({marks})', chunk)
        con.commit()
        remaining = 0
    src = sqlite3.connect(f"file:{src_db}?mode=ro", uri=True)
    copy_no = 1
    while remaining > 0:
        take = ids[:min(per_copy, remaining)]
        _copy(src, con, cols, take, copy_no, shift_ms * copy_no)
        remaining -= len(take)
        copy_no += 1
    con.commit()
    con.close()
    src.close()
    out = _finish(directory, str(exp))
    out.update(writer=f"multiplied x{factor} from {base.get('n') or per_copy} ({base.get('writer')})")
    return out


def _copy(src, dst, cols, ids, copy_no, shift_ms) -> None:
    shift_ns = shift_ms * 1_000_000
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        new = {old: _fresh_id(old, copy_no) for old in chunk}
        marks = ",".join("?" * len(chunk))
        sessions: dict[str, str] = {}

        def session(old: str | None) -> str | None:
            if old is None:
                return None
            if old not in sessions:
                sessions[old] = f"{old}-c{copy_no}"
            return sessions[old]

        c = cols["trace_info"]
        rows = []
        for r in src.execute(f'SELECT {",".join(c)} FROM trace_info WHERE request_id IN ({marks})', chunk):
            d = dict(zip(c, r))
            d["request_id"] = new[d["request_id"]]
            d["timestamp_ms"] -= shift_ms
            if d.get("session_id"):
                d["session_id"] = session(d["session_id"])
            if d.get("client_request_id"):
                d["client_request_id"] = f"{d['client_request_id']}-c{copy_no}"
            rows.append(tuple(d[k] for k in c))
        _insert(dst, "trace_info", c, rows)
        for table in ("trace_request_metadata", "trace_tags"):
            c = cols[table]
            rows = []
            for r in src.execute(f'SELECT {",".join(chr(34) + x + chr(34) for x in c)} FROM "{table}" '
                                 f'WHERE request_id IN ({marks})', chunk):
                d = dict(zip(c, r))
                d["request_id"] = new[d["request_id"]]
                if d["key"] == "mlflow.trace.session":
                    d["value"] = session(d["value"])
                elif d["key"] == "mlflow.artifactLocation" and d["value"]:
                    d["value"] = d["value"].replace(r[c.index("request_id")], d["request_id"])
                rows.append(tuple(d[k] for k in c))
            _insert(dst, table, c, rows)
        c = cols["assessments"]
        rows = []
        for r in src.execute(f'SELECT {",".join(c)} FROM assessments WHERE trace_id IN ({marks})', chunk):
            d = dict(zip(c, r))
            d["assessment_id"] = "a-" + hashlib.sha256(f"{d['assessment_id']}/{copy_no}".encode()).hexdigest()[:32]
            d["trace_id"] = new[d["trace_id"]]
            for k in ("created_timestamp", "last_updated_timestamp", "trace_timestamp_ms"):
                if d.get(k) is not None:
                    d[k] -= shift_ms
            rows.append(tuple(d[k] for k in c))
        _insert(dst, "assessments", c, rows)
        c = cols["spans"]
        rows = []
        for r in src.execute(f'SELECT {",".join(c)} FROM spans WHERE trace_id IN ({marks})', chunk):
            d = dict(zip(c, r))
            old = d["trace_id"]
            d["trace_id"] = new[old]
            d["start_time_unix_nano"] -= shift_ns
            if d.get("end_time_unix_nano") is not None:
                d["end_time_unix_nano"] -= shift_ns
            content = json.loads(d["content"])
            content["trace_id"] = _b64(new[old])
            content["start_time_unix_nano"] -= shift_ns
            if content.get("end_time_unix_nano") is not None:
                content["end_time_unix_nano"] -= shift_ns
            attrs = content.get("attributes") or {}
            if "mlflow.traceRequestId" in attrs:
                attrs["mlflow.traceRequestId"] = json.dumps(new[old])
            if "mlflow.spanStartTimeNs" in attrs:
                attrs["mlflow.spanStartTimeNs"] = json.dumps(int(json.loads(attrs["mlflow.spanStartTimeNs"])) - shift_ns)
            for ev in content.get("events") or []:
                if isinstance(ev.get("time_unix_nano"), int):
                    ev["time_unix_nano"] -= shift_ns
            text = json.dumps(content)
            for old_sid, new_sid in sessions.items():
                if old_sid in text:
                    text = text.replace(old_sid, new_sid)
            d["content"] = text
            rows.append(tuple(d[k] for k in c))
        _insert(dst, "spans", c, rows)


def _insert(con, table: str, cols: list[str], rows: list[tuple]) -> None:
    if rows:
        names = ",".join(f'"{c}"' for c in cols)
        con.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({",".join("?" * len(cols))})', rows)


# --- PostgreSQL ----------------------------------------------------------------------------------


def load_postgres(manifest: dict, pg_uri: str, name: str) -> dict:
    """Copy the corpus of ``manifest`` (SQLite) into experiment ``name`` of ``pg_uri``; reuse
    it when an experiment of that name already holds the same number of traces."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(pg_uri)
    kw = dict(host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database)
    with psycopg2.connect(**kw) as pg, pg.cursor() as cur:
        cur.execute("SELECT to_regclass('public.experiments')")
        have = cur.fetchone()[0] is not None
        if have:
            cur.execute("SELECT e.experiment_id, COUNT(t.request_id) FROM experiments e LEFT JOIN trace_info t "
                        "ON t.experiment_id = e.experiment_id WHERE e.name = %s GROUP BY e.experiment_id", (name,))
            row = cur.fetchone()
            if row and row[1] == manifest["trace_count"]:
                return {"tracking_uri": pg_uri, "experiment_id": str(row[0]), "reused": True}
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=pg_uri)  # runs MLflow's migrations on first use
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        client.delete_experiment(exp.experiment_id)
        with psycopg2.connect(**kw) as pg, pg.cursor() as cur:
            cur.execute("UPDATE experiments SET name = name || '-deleted-' || experiment_id WHERE experiment_id = %s",
                        (int(exp.experiment_id),))
    new_exp = int(client.create_experiment(name))
    src = sqlite3.connect(f"file:{manifest['db_path']}?mode=ro", uri=True)
    old_exp = int(manifest["experiment_id"])
    from psycopg2.extras import execute_values

    with psycopg2.connect(**kw) as pg, pg.cursor() as cur:
        for table in _TRACE_TABLES:
            scols = [r[1] for r in src.execute(f'PRAGMA table_info("{table}")')]
            cur.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s", (table,))
            pcols = dict(cur.fetchall())
            use = [c for c in scols if c in pcols]
            join_col = "trace_id" if table in ("spans", "assessments") else "request_id"
            sql = (f'SELECT {",".join("x." + chr(34) + c + chr(34) for c in use)} FROM "{table}" x '
                   f'JOIN trace_info t ON t.request_id = x.{join_col} WHERE t.experiment_id = ?')
            if table == "trace_info":
                sql = f'SELECT {",".join(chr(34) + c + chr(34) for c in use)} FROM trace_info WHERE experiment_id = ?'
            bools = [i for i, c in enumerate(use) if pcols[c] == "boolean"]
            exp_cols = [i for i, c in enumerate(use) if c == "experiment_id"]
            batch: list[tuple] = []
            names = ",".join(f'"{c}"' for c in use)
            for row in src.execute(sql, (old_exp,)):
                row = list(row)
                for i in bools:
                    row[i] = None if row[i] is None else bool(row[i])
                for i in exp_cols:
                    if row[i] is not None:
                        row[i] = new_exp
                batch.append(tuple(row))
                if len(batch) >= 2000:
                    execute_values(cur, f'INSERT INTO "{table}" ({names}) VALUES %s', batch, page_size=2000)
                    batch = []
            if batch:
                execute_values(cur, f'INSERT INTO "{table}" ({names}) VALUES %s', batch, page_size=2000)
        cur.execute("ANALYZE")
    src.close()
    return {"tracking_uri": pg_uri, "experiment_id": str(new_exp), "reused": False}
