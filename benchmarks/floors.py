"""Floors: the least work that reads the inputs of each command's answer, one pass, with the
database driver and the fastest JSON parser at hand (orjson when installed, else json).

Each floor runs in a fresh process like the commands it is compared with:
``python floors.py KIND URI EXPERIMENT_ID`` prints one JSON line of counts (so that the work
cannot be skipped) and the seconds spent after start-up. SQLite (``sqlite3``) and PostgreSQL
(``psycopg2``) only.

* ``stats``: trace rows, and per span the columns and the token usage (extracted by the
  database), every usage JSON parsed: what ``stats``' light read needs.
* ``findings``: trace rows, their metadata, tags and assessments, and every span's JSON
  parsed, every attribute value decoded (MLflow stores each as a JSON string): what the
  detectors read.
* ``session``: one GROUP BY over trace rows (sessions with turns, errors, tokens, first and
  last time, a user).
* ``extract``: the 20 newest error spans (``--recipe errors --limit 20``), their JSON parsed.
* ``fetch``: every trace row and span JSON, written to a JSONL file as MLflow's trace JSON.
"""

from __future__ import annotations

import json
import sys
import time

try:
    import orjson

    loads = orjson.loads
    PARSER = "orjson"
except ImportError:  # pragma: no cover - the dev extra installs it
    loads = json.loads
    PARSER = "json"

USAGE = 'json_extract(s.content, \'$.attributes."mlflow.chat.tokenUsage"\')'
USAGE_PG = "(CAST(s.content AS json) -> 'attributes' ->> 'mlflow.chat.tokenUsage')"


def connect(uri: str):
    if uri.startswith("sqlite"):
        import sqlite3

        path = uri.split("://", 1)[1]
        path = path[1:] if path.startswith("/") else path
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True), "?", USAGE
    import psycopg2

    from urllib.parse import urlparse

    u = urlparse(uri.replace("postgresql+psycopg2://", "postgresql://"))
    con = psycopg2.connect(host=u.hostname, port=u.port, user=u.username, password=u.password,
                           dbname=u.path.lstrip("/"))
    return con, "%s", USAGE_PG


def run(kind: str, uri: str, exp: str, out_path: str | None = None) -> dict:
    con, mark, usage = connect(uri)
    cur = con.cursor()
    e = (int(exp),)
    counts: dict = {}
    if kind == "stats":
        cur.execute("SELECT request_id, timestamp_ms, execution_time_ms, status, session_id, input_tokens, "
                    f"output_tokens, total_tokens, total_cost FROM trace_info WHERE experiment_id = {mark}", e)
        counts["traces"] = len(cur.fetchall())
        cur.execute("SELECT s.trace_id, s.span_id, s.parent_span_id, s.name, s.type, s.status, "
                    "s.start_time_unix_nano, s.end_time_unix_nano, s.total_cost, s.model_name, "
                    f"{usage} FROM spans s JOIN trace_info t ON t.request_id = s.trace_id "
                    f"WHERE t.experiment_id = {mark}", e)
        n = tokens = 0
        for row in cur:
            n += 1
            if row[10]:
                tokens += loads(row[10]).get("total_tokens") or 0
        counts.update(spans=n, tokens=tokens)
    elif kind == "findings":
        cur.execute("SELECT request_id, timestamp_ms, execution_time_ms, status, session_id, total_tokens, "
                    f"total_cost FROM trace_info WHERE experiment_id = {mark}", e)
        counts["traces"] = len(cur.fetchall())
        for table in ("trace_request_metadata", "trace_tags"):
            cur.execute(f'SELECT m."key", m.value, m.request_id FROM {table} m JOIN trace_info t '
                        f"ON t.request_id = m.request_id WHERE t.experiment_id = {mark}", e)
            counts[table] = len(cur.fetchall())
        cur.execute("SELECT a.trace_id, a.name, a.value, a.error, a.source_type FROM assessments a JOIN trace_info t "
                    f"ON t.request_id = a.trace_id WHERE t.experiment_id = {mark}", e)
        assessments = cur.fetchall()
        for r in assessments:
            if r[2]:
                loads(r[2])
        counts["assessments"] = len(assessments)
        cur.execute("SELECT s.trace_id, s.content FROM spans s JOIN trace_info t ON t.request_id = s.trace_id "
                    f"WHERE t.experiment_id = {mark}", e)
        n = values = 0
        for _, content in cur:
            span = loads(content)
            n += 1
            for v in (span.get("attributes") or {}).values():
                if isinstance(v, str) and v[:1] in '"{[-0123456789tfn':
                    try:
                        loads(v)
                    except ValueError:
                        pass
                values += 1
        counts.update(spans=n, attribute_values=values)
    elif kind == "session":
        cur.execute("SELECT t.session_id, COUNT(*), SUM(CASE WHEN t.status = 'ERROR' THEN 1 ELSE 0 END), "
                    "SUM(COALESCE(t.total_tokens, 0)), MIN(t.timestamp_ms), MAX(t.timestamp_ms), MAX(m.value) "
                    "FROM trace_info t LEFT JOIN trace_request_metadata m ON m.request_id = t.request_id "
                    f"AND m.\"key\" = 'mlflow.trace.user' WHERE t.experiment_id = {mark} GROUP BY t.session_id", e)
        rows = cur.fetchall()
        listed = sorted((r for r in rows if r[0] is not None), key=lambda r: (-r[2], -r[1], r[0]))[:50]
        counts.update(sessions=sum(1 for r in rows if r[0] is not None), shown=len(listed),
                      without=sum(r[1] for r in rows if r[0] is None))
    elif kind == "extract":
        cur.execute("SELECT s.trace_id, s.name, s.content FROM spans s JOIN trace_info t ON t.request_id = s.trace_id "
                    f"WHERE t.experiment_id = {mark} AND s.status = 'ERROR' "
                    "ORDER BY t.timestamp_ms DESC, t.request_id LIMIT 20", e)
        rows = [(tid, name, loads(content).get("status")) for tid, name, content in cur.fetchall()]
        counts["results"] = len(rows)
    elif kind == "fetch":
        cur.execute("SELECT request_id, timestamp_ms, execution_time_ms, status, request_preview, "
                    f"response_preview FROM trace_info WHERE experiment_id = {mark} ORDER BY timestamp_ms DESC", e)
        infos = cur.fetchall()
        n = 0
        with open(out_path or "/dev/null", "w", encoding="utf-8") as fh:
            for i in range(0, len(infos), 500):
                chunk = infos[i:i + 500]
                ids = [r[0] for r in chunk]
                cur.execute("SELECT trace_id, content FROM spans WHERE trace_id IN (" + ",".join([mark] * len(ids)) + ")", ids)
                spans: dict = {}
                for tid, content in cur:
                    spans.setdefault(tid, []).append(content)
                for r in chunk:
                    fh.write('{"info": {"trace_id": ' + json.dumps(r[0]) + ', "state": ' + json.dumps(r[3])
                             + '}, "data": {"spans": [' + ", ".join(spans.get(r[0], [])) + "]}}\n")
                    n += 1
        counts["traces"] = n
    else:
        raise SystemExit(f"unknown floor {kind!r}")
    con.close()
    return counts


if __name__ == "__main__":
    t0 = time.perf_counter()
    kind, uri, exp = sys.argv[1:4]
    result = run(kind, uri, exp, sys.argv[4] if len(sys.argv) > 4 else None)
    result["_seconds"] = time.perf_counter() - t0
    result["_parser"] = PARSER
    print(json.dumps(result))
