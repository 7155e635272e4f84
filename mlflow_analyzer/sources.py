"""Where traces come from: files or a tracking store, streamed as normalized ``Trace``s.

* :class:`FileSource` reads a trace JSON as ``mlflow traces get`` writes it, a search JSON
  (``{"traces": [...]}``), JSONL (one trace per line) or a folder of these.
* :class:`SqlStoreSource` reads an MLflow SQL tracking store (SQLite, PostgreSQL, MySQL)
  directly and read-only, in batches: the span rows' JSON is exactly the span JSON of
  ``Trace.to_dict()``. It avoids ``search_traces`` loading every span through the ORM
  (and its SQLite paging crash in the CLI). A ``--filter`` is resolved by MLflow itself,
  so the filter grammar is MLflow's own.
* :class:`ApiSource` uses the public ``MlflowClient.search_traces`` with paging, for
  tracking servers, Databricks and file stores.

Nothing here writes to a store.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from .errors import InputError, MalformedTrace, NotFoundError, SourceError, UsageError
from .model import Trace
from .normalize import (
    CHAT_USAGE,
    EXPERIMENT_SESSION_HIERARCHY,
    load_json,
    raw_trace_id,
    session_hierarchy_levels,
    META_COST,
    META_INPUTS,
    META_OUTPUTS,
    META_SESSION,
    META_TOKEN_USAGE,
    META_USER,
    TAG_SPANS_LOCATION,
    TAG_TRACE_NAME,
    LIGHT_SPAN_NEEDS_JSON,
    LIGHT_USAGE_PATH,
    span_from_columns,
    trace_from_dict,
    trace_from_parts,
)

PROMOTED_METADATA = (META_SESSION, META_TOKEN_USAGE, META_COST)

BATCH = 200  # traces per SQL round trip
LIGHT_BATCH = 500  # the light read holds less per trace
INFO_BATCH = 1000  # trace records without spans
API_PAGE = 200  # traces per page over the public API: 500 (the server maximum) was no faster end to end and held more memory

#: Seconds one HTTP request to a tracking server may take, and retries of a failed one
#: (MLFLOW_HTTP_REQUEST_TIMEOUT / MLFLOW_HTTP_REQUEST_MAX_RETRIES override them).
HTTP_TIMEOUT = 20
HTTP_RETRIES = 1
#: Seconds the up-front probe of a tracking server waits for an answer.
PROBE_TIMEOUT = 10
#: Seconds to wait for a database server to accept a connection, and for a TCP read.
SQL_CONNECT_TIMEOUT = 10
SQL_READ_TIMEOUT = 60

SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
API_SCHEMES = ("http", "https", "databricks", "databricks-uc", "file", "uc")


def quiet_mlflow_env() -> None:
    """Environment that keeps MLflow quiet and bounded when we import it."""
    os.environ.setdefault("MLFLOW_DISABLE_AGENT_HINT", "1")
    os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
    # Bounded waits: MLflow's defaults (7 retries, 120 s each, exponential backoff) hold a
    # command for many minutes on a frozen or failing server.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_RETRIES))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.5")
    os.environ.setdefault("MLFLOW_SEARCH_TRACES_MAX_THREADS", "8")
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)


# --- time ------------------------------------------------------------------------------------

_SINCE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> int:
    """'24h', '7d', '30m', '2w' or an ISO date/time -> epoch milliseconds."""
    now = now or datetime.now(timezone.utc)
    m = _SINCE.match(text.strip().lower())
    if m:
        delta = timedelta(seconds=float(m.group(1)) * _UNIT[m.group(2)])
        return int((now - delta).timestamp() * 1000)
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r} is neither a duration (30m, 24h, 7d, 2w) nor an ISO date"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


# --- the common surface -------------------------------------------------------------------


SKIP_REASONS_KEPT = 5  # reasons kept (and shown) of the traces a source skipped


@dataclass
class Source:
    """Base: ``iter_traces()`` streams traces; ``get_trace(id)`` fetches one.

    A trace the normalizer refuses (:class:`MalformedTrace`) is skipped, never fatal: it is
    counted in ``skipped`` with the first reasons in ``skip_reasons`` (each one line naming
    the file or store, the trace and the field), and the rest goes on. Commands put
    :meth:`skip_summary` in their output; :func:`check_count` turns "nothing readable" into
    an error that quotes the first reason.
    """

    description: str = ""
    warnings: list[str] = field(default_factory=list)
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)

    def skip(self, reason: Any) -> None:
        self.skipped += 1
        if len(self.skip_reasons) < SKIP_REASONS_KEPT:
            self.skip_reasons.append(str(reason))

    def skip_summary(self) -> dict[str, Any]:
        """``{"skipped": N, "skipped_reasons": [first reasons]}`` for a command's JSON."""
        return {"skipped": self.skipped, "skipped_reasons": list(self.skip_reasons)}

    def entries(self) -> Iterator[tuple[str, Any]]:
        """``(where, raw document)`` pairs, not yet validated (``where`` names the file and
        line, or the store and trace, for messages). Problems that make a whole file
        unreadable are recorded with :meth:`skip` here."""
        raise NotImplementedError  # pragma: no cover

    def normalize(self, raw: Any, where: str | None = None) -> Trace:
        """One raw document as a Trace; MalformedTrace (located at ``where``) if it is not one."""
        if isinstance(raw, Unreadable):
            raise MalformedTrace("", raw.reason)
        try:
            return trace_from_dict(raw)
        except MalformedTrace as exc:
            raise exc.at(where) from None

    def iter_pairs(self) -> Iterator[tuple[dict, Trace]]:
        """``(raw document, Trace)`` for every readable trace; malformed ones are skipped."""
        for where, raw in self.entries():
            try:
                trace = self.normalize(raw, where)
            except MalformedTrace as exc:
                self.skip(exc)
                continue
            yield raw, trace

    def iter_traces(self) -> Iterator[Trace]:
        for _, trace in self.iter_pairs():
            yield trace

    def iter_raw(self) -> Iterator[dict]:
        """Traces as MLflow's own JSON (``Trace.to_dict()`` form), validated: a document
        the normalizer refuses is skipped here too."""
        for raw, _ in self.iter_pairs():
            yield raw

    def iter_trace_infos(self) -> Iterator[Trace]:
        """Traces for commands that need only trace-level fields (state, duration, time,
        session, user, tokens, cost, tags, metadata): stores skip the spans where they can;
        here, whole traces."""
        return self.iter_traces()

    def _built(self, info: dict, spans: list, assessments: list, where: str) -> Trace | None:
        """trace_from_parts, or None after recording the skip of a malformed trace."""
        try:
            return trace_from_parts(info, spans, assessments)
        except MalformedTrace as exc:
            self.skip(exc.at(where))
            return None

    def get_pair(self, trace_id: str) -> tuple[dict, Trace]:
        """The raw document and Trace of one trace id; a malformed one is an error here
        (MalformedTrace with its location), as the one thing asked for."""
        for where, raw in self.entries():
            if raw_trace_id(raw) == trace_id:
                return raw, self.normalize(raw, where)
        raise NotFoundError(f"trace {trace_id} not found in {self.description}")

    def get_raw(self, trace_id: str) -> dict:
        return self.get_pair(trace_id)[0]

    def existing_trace_ids(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` are traces of this source (reviews cite trace ids: each is checked)."""
        found = set()
        for tid in ids:
            try:
                self.get_pair(tid)
            except (NotFoundError, MalformedTrace):
                continue
            found.add(tid)
        return found

    def get_trace(self, trace_id: str) -> Trace:
        return self.get_pair(trace_id)[1]

    def session_levels(self) -> list[str] | None:
        """Level names of hierarchical session ids (the experiment tag
        ``mlflow.experiment.sessionHierarchy``), when the source knows them."""
        return None


# --- files ---------------------------------------------------------------------------------------


class FileSource(Source):
    """Trace JSON files (one trace, a search result, a list), JSONL, folders of these, or
    ``-`` for stdin. An unreadable file or line (not UTF-8, malformed JSON, not a trace) is
    skipped and counted like a malformed trace; a missing path is an error up front."""

    def __init__(self, paths: list[str]):
        super().__init__(description=", ".join(paths))
        self.files: list[Path] = []
        for p in paths:
            path = Path(p)
            if p == "-":
                self.files.append(path)
            elif path.is_dir():
                found = sorted(
                    f for f in path.rglob("*") if f.suffix in (".json", ".jsonl") and f.is_file()
                )
                if not found:
                    raise InputError(f"{p}: no .json or .jsonl trace files in this folder")
                self.files.extend(found)
            elif path.is_file():
                self.files.append(path)
            else:
                raise InputError(f"{p}: no such file or folder")

    def entries(self) -> Iterator[tuple[str, Any]]:
        for path in self.files:
            try:
                yield from _read_trace_file(path)
            except InputError as exc:  # the whole file is unreadable
                self.skip(exc)


def _read_trace_file(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, document) for each trace document of one file; InputError when the file as a
    whole cannot be read (then nothing of it was yielded), a skip per bad JSONL line."""
    import sys

    name = str(path)
    if name == "-":
        fh = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
        if fh is None:  # a text stream (tests redirect stdin): read it as text
            data = sys.stdin.read().encode("utf-8", "surrogateescape")
            yield from _parse_bytes(data, name)
            return
        data = fh.read()
        yield from _parse_bytes(data, name)
        return
    if name.endswith(".jsonl"):
        try:
            fh = open(path, "rb")
        except OSError as exc:
            raise InputError(f"{name}: cannot read ({exc.strerror or exc})") from None
        with fh:
            yield from _jsonl(fh, name)
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or exc})") from None
    yield from _parse_bytes(data, name)


def _utf8(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{name}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def _parse_bytes(data: bytes, name: str) -> Iterator[tuple[str, Any]]:
    body = _utf8(data, name)
    if not body.strip():
        raise InputError(f"{name}: empty file, no traces")
    try:
        doc = load_json(body)
    except json.JSONDecodeError as exc:
        # A JSONL file without the .jsonl suffix: several documents, one per line.
        if "Extra data" in exc.msg and "\n" in body.strip():
            yield from _jsonl(iter(body.splitlines(keepends=True)), name)
            return
        raise InputError(
            f"{name}: malformed or truncated JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:  # nested too deep, an integer of thousands of digits
        raise InputError(f"{name}: unreadable JSON ({_first_line(exc)})") from None
    yield from _documents(doc, name)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _jsonl(lines, name: str) -> Iterator[tuple[str, Any]]:
    """Documents of a JSONL stream (bytes or text lines). A bad line does not stop the file:
    it is yielded as ``(where, Unreadable(reason))``, which the source skips and counts."""
    for lineno, line in enumerate(lines, start=1):
        where = f"{name}:{lineno}"
        if isinstance(line, bytes):
            if not line.strip():
                continue
            try:
                line = line.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield where, Unreadable(f"{where}: not UTF-8 text (byte 0x{line[exc.start]:02x} at column {exc.start + 1})")
                continue
        if not line.strip():
            continue
        try:
            doc = load_json(line)
        except json.JSONDecodeError as exc:
            yield where, Unreadable(f"{where}: malformed or truncated JSON line: {exc.msg} (column {exc.colno})")
            continue
        except ValueError as exc:
            yield where, Unreadable(f"{where}: unreadable JSON line ({_first_line(exc)})")
            continue
        try:
            yield from _documents(doc, where)
        except InputError as exc:
            yield where, Unreadable(str(exc))


class Unreadable:
    """Stands in, among a source's entries, for a document that could not even be parsed;
    normalizing it raises MalformedTrace with the reason, so it is skipped and counted."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


def _documents(doc: Any, name: str) -> Iterator[tuple[str, Any]]:
    if isinstance(doc, dict) and "info" in doc:
        yield name, doc
    elif isinstance(doc, dict) and isinstance(doc.get("traces"), list):
        for i, t in enumerate(doc["traces"]):
            yield f"{name}: traces[{i}]", t
    elif isinstance(doc, list) and doc:
        for i, t in enumerate(doc):
            yield f"{name}: [{i}]", t
    else:
        raise InputError(
            f"{name}: not MLflow trace JSON (expected a trace with 'info' and 'data', "
            "a search result with 'traces', or JSONL of traces)"
        )


# --- tracking stores -----------------------------------------------------------------------------


@dataclass
class StoreQuery:
    tracking_uri: str
    experiment_id: str | None = None
    experiment_name: str | None = None
    filter_string: str | None = None
    order_by: list[str] | None = None
    max_traces: int | None = None
    since_ms: int | None = None
    sample: int | None = None  # over a tracking server: spans for a sample of this many traces

    def mlflow_filter(self) -> str | None:
        parts = []
        if self.filter_string:
            parts.append(self.filter_string)
        if self.since_ms is not None:
            parts.append(f"trace.timestamp_ms >= {self.since_ms}")
        return " AND ".join(parts) or None


def scheme_of(uri: str) -> str:
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", uri):
        return uri.split("://", 1)[0].lower().split("+", 1)[0]
    if uri in ("databricks", "databricks-uc", "uc") or uri.startswith("databricks://"):
        return "databricks"
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", uri) and not re.match(r"^[a-zA-Z]:[\\/]", uri):
        return uri.split(":", 1)[0].lower()
    return "file"  # a plain path is a file store


def open_store(query: StoreQuery) -> Source:
    uri = query.tracking_uri
    scheme = scheme_of(uri)
    if scheme in SQL_SCHEMES:
        return SqlStoreSource(query)
    if scheme in ("http", "https") and os.environ.get("MLFLOW_ANALYZER_HTTP_CLIENT", "rest") != "mlflow":
        _check_reachable(uri)
        from .remote import HttpSource

        return HttpSource(query)
    if scheme in API_SCHEMES:
        return ApiSource(query)
    raise UsageError(
        f"unsupported tracking URI {uri!r}: use sqlite:///path.db, postgresql://, mysql://, "
        "http(s)://host:port, databricks, or a file-store path"
    )


def _mlflow_error(exc: Exception, what: str) -> SourceError:
    msg = str(getattr(exc, "message", None) or exc).strip().splitlines()[0][:300]
    code = getattr(exc, "error_code", "")
    if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in msg.lower() or (
        "does not exist" in msg.lower()
    ):
        return NotFoundError(f"{what}: {msg}")
    return SourceError(f"{what}: {msg}")


class ApiSource(Source):
    """Any tracking store through the public MLflow client, paging search_traces."""

    def __init__(self, query: StoreQuery):
        super().__init__(description=query.tracking_uri)
        self.query = query
        quiet_mlflow_env()
        _check_reachable(query.tracking_uri)
        if scheme_of(query.tracking_uri) == "file":
            # MLflow's file store creates its folder (and a default experiment) when missing.
            path = re.sub(r"^file:(//)?", "", query.tracking_uri)
            if not os.path.isdir(path):
                raise SourceError(f"no file store at {path} (from {query.tracking_uri})")
        from mlflow import MlflowClient

        try:
            self.client = MlflowClient(tracking_uri=query.tracking_uri)
        except Exception as exc:  # an unsupported or malformed URI, found by MLflow
            raise _mlflow_error(exc, f"tracking URI {query.tracking_uri!r}") from None
        self.experiment_id = self._resolve_experiment() if (
            query.experiment_id or query.experiment_name
        ) else None

    def _resolve_experiment(self) -> str:
        q = self.query
        try:
            if q.experiment_id:
                exp = self.client.get_experiment(str(q.experiment_id))
            else:
                exp = self.client.get_experiment_by_name(q.experiment_name)
        except Exception as exc:  # MlflowException, connection errors
            raise _mlflow_error(
                exc, f"experiment {q.experiment_id or q.experiment_name!r} on {q.tracking_uri}"
            ) from None
        if exp is None:
            raise NotFoundError(
                f"experiment {q.experiment_name!r} not found on {q.tracking_uri}"
            )
        return exp.experiment_id

    def entries(self) -> Iterator[tuple[str, Any]]:
        if self.experiment_id is None:
            raise UsageError("give --experiment-id or --experiment-name to read traces from a store")
        for t in search_pages(self.client, self.experiment_id, self.query, include_spans=True, page_size=API_PAGE):
            yield self.query.tracking_uri, t.to_dict()

    def iter_trace_infos(self) -> Iterator[Trace]:
        if self.experiment_id is None:
            raise UsageError("give --experiment-id or --experiment-name to read traces from a store")
        for t in search_pages(self.client, self.experiment_id, self.query, include_spans=False, page_size=500):
            raw = t.to_dict()
            info = raw["info"]
            trace = self._built(info, [], info.get("assessments") or [], self.query.tracking_uri)
            if trace is not None:
                yield trace

    def get_pair(self, trace_id: str) -> tuple[dict, Trace]:
        try:
            t = self.client.get_trace(trace_id, display=False)
        except Exception as exc:
            if getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE":
                raise NotFoundError(f"trace {trace_id} not found on {self.query.tracking_uri}") from None
            raise _mlflow_error(exc, f"trace {trace_id}") from None
        if t is None:
            raise NotFoundError(f"trace {trace_id} not found on {self.query.tracking_uri}")
        raw = t.to_dict()
        return raw, self.normalize(raw, self.query.tracking_uri)

    def session_levels(self) -> list[str] | None:
        if self.experiment_id is None:
            return None
        try:
            tags = self.client.get_experiment(self.experiment_id).tags or {}
        except Exception:
            return None
        return session_hierarchy_levels(tags.get(EXPERIMENT_SESSION_HIERARCHY))


def search_pages(client, experiment_id: str, q: StoreQuery, *, include_spans: bool, page_size: int):
    """Traces from MlflowClient.search_traces, page after page, up to ``q.max_traces``."""
    token = None
    seen = 0
    while True:
        want = page_size if q.max_traces is None else min(page_size, q.max_traces - seen)
        if want <= 0:
            return
        try:
            page = client.search_traces(
                locations=[experiment_id],
                filter_string=q.mlflow_filter(),
                max_results=want,
                order_by=q.order_by or ["timestamp_ms DESC"],
                page_token=token,
                include_spans=include_spans,
            )
        except Exception as exc:
            what = f"filter {q.filter_string!r}" if q.filter_string else f"searching traces on {q.tracking_uri}"
            raise _mlflow_error(exc, what) from None
        for t in page:
            seen += 1
            yield t
        token = page.token
        if not token or not len(page):
            return


def _check_reachable(uri: str, *, timeout: float | None = None) -> None:
    """Fail fast, with one line, when an HTTP tracking server is not listening, does not
    answer (a frozen process accepts connections and never replies), or keeps failing
    (5xx): one probe of ``/health``, retried once."""
    try:
        parsed = urlparse(uri)
        port = parsed.port
    except ValueError as exc:
        raise UsageError(f"malformed tracking URI {uri!r}: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        return
    if not parsed.hostname:
        raise UsageError(f"malformed tracking URI {uri!r}: no host")
    import time
    import urllib.error
    import urllib.request

    timeout = PROBE_TIMEOUT if timeout is None else timeout
    port = port or (443 if parsed.scheme == "https" else 80)
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    url = f"{parsed.scheme}://{host}:{port}{parsed.path.rstrip('/')}/health"
    status = None
    for attempt in range(2):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout):
                return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return  # answering (a proxy asking for auth, no /health): MLflow's client takes over
            status = f"HTTP {exc.code} {exc.reason}".strip()
        except (TimeoutError, socket.timeout):
            raise SourceError(
                f"the tracking server at {uri} accepted the connection but did not answer "
                f"within {timeout:g} s (frozen or overloaded?)") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise SourceError(
                    f"the tracking server at {uri} did not answer within {timeout:g} s") from None
            if isinstance(reason, OSError) and not isinstance(reason, ConnectionError) and (
                "ssl" in type(reason).__module__.lower() or "certificate" in str(reason).lower()):
                return  # TLS set up for MLflow's client (custom CA, insecure): let it decide
            raise SourceError(
                f"cannot reach the tracking server at {uri} "
                f"({getattr(reason, 'strerror', None) or reason})") from None
        except (ConnectionError, OSError) as exc:
            raise SourceError(
                f"cannot reach the tracking server at {uri} ({exc.strerror or exc})") from None
        if attempt == 0:
            time.sleep(1.0)
    raise SourceError(f"the tracking server at {uri} keeps failing ({status}); try again later")


class SqlStoreSource(Source):
    """Read-only, batched reads of an MLflow SQL tracking store's trace tables.

    Reads go through the database's own DB-API driver (``sqlite3``; psycopg2 and others
    through the read-only SQLAlchemy engine's raw connection): rows come back as plain
    tuples, and a SQLite store never imports SQLAlchemy at all.
    """

    def __init__(self, query: StoreQuery):
        super().__init__(description=query.tracking_uri)
        self.query = query
        self.dialect = scheme_of(query.tracking_uri)
        self._engine = None
        self._conn = None
        self._mlflow_store = None
        if self.dialect == "sqlite":
            self._sqlite_uri = _sqlite_ro_uri(query.tracking_uri)
        else:
            self._engine = _engine(query.tracking_uri)
        self._check_schema()
        self.experiment_id = self._resolve_experiment() if (
            query.experiment_id or query.experiment_name
        ) else None
        self._api: ApiSource | None = None

    @property
    def engine(self):
        """The read-only SQLAlchemy engine (created on first use for SQLite)."""
        if self._engine is None:
            self._engine = _engine(self.query.tracking_uri)
        return self._engine

    # -- plumbing
    def _connection(self):
        if self._conn is None:
            if self.dialect == "sqlite":
                import sqlite3

                self._conn = sqlite3.connect(self._sqlite_uri, uri=True, check_same_thread=False)
            else:
                self._conn = self.engine.raw_connection()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # pragma: no cover - closing a read-only connection
                pass
            self._conn = None

    def __getstate__(self):  # a connection does not cross a fork or a pickle
        state = dict(self.__dict__)
        state["_conn"] = None
        state["_engine"] = None
        state["_mlflow_store"] = None
        return state

    def _rows(self, sql: str, params: dict | None = None, expand: tuple[str, ...] = ()):
        """``sql`` with ``:name`` placeholders (``expand`` names bind lists, for ``IN :ids``),
        run on the driver in its own parameter style; rows as tuples."""
        text, args = _bind(sql, params or {}, expand, _paramstyle(self.dialect))
        try:
            cur = self._connection().cursor()
            try:
                cur.execute(text, args)
                return cur.fetchall()
            finally:
                cur.close()
        except Exception as exc:
            if self.dialect != "sqlite" and self._conn is not None:
                with _suppress():
                    self._conn.rollback()  # PostgreSQL: an error aborts the transaction
            first = str(exc).strip().splitlines()[0][:300]
            raise SourceError(f"reading {self.query.tracking_uri}: {first}") from None

    def _check_schema(self) -> None:
        try:
            if self.dialect == "sqlite":
                names = {r[0] for r in self._rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
                self._info_columns = (
                    {r[1] for r in self._rows("PRAGMA table_info(trace_info)")} if "trace_info" in names else set()
                )
            else:
                from sqlalchemy import inspect

                inspector = inspect(self.engine)
                names = set(inspector.get_table_names())
                self._info_columns = (
                    {c["name"] for c in inspector.get_columns("trace_info")} if "trace_info" in names else set()
                )
        except SourceError as exc:
            raise SourceError(str(exc).replace("reading ", "cannot open ", 1)) from None
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise SourceError(f"cannot open {self.query.tracking_uri}: {first}") from None
        missing = {"experiments", "trace_info", "spans"} - names
        if missing:
            raise SourceError(
                f"{self.query.tracking_uri} is not an MLflow 3 tracking store "
                f"(missing tables: {', '.join(sorted(missing))})"
            )

    def _resolve_experiment(self) -> str:
        q = self.query
        if q.experiment_id is not None:
            if not str(q.experiment_id).isdigit():
                raise NotFoundError(f"experiment {q.experiment_id!r} not found in {q.tracking_uri}")
            rows = self._rows(
                "SELECT experiment_id FROM experiments WHERE experiment_id = :e",
                {"e": int(q.experiment_id)},
            )
            what = f"experiment id {q.experiment_id}"
        else:
            rows = self._rows(
                "SELECT experiment_id FROM experiments WHERE name = :n", {"n": q.experiment_name}
            )
            what = f"experiment {q.experiment_name!r}"
        if not rows:
            raise NotFoundError(f"{what} not found in {q.tracking_uri}")
        return str(rows[0][0])

    # -- which traces
    _ORDER = {
        "timestamp_ms": "timestamp_ms",
        "timestamp": "timestamp_ms",
        "execution_time_ms": "execution_time_ms",
        "execution_time": "execution_time_ms",
        "status": "status",
        "name": "trace_name",
    }

    def _order_sql(self) -> str:
        parts = []
        for item in self.query.order_by or ["timestamp_ms DESC"]:
            words = item.strip().split()
            key = words[0].split(".", 1)[-1] if words else ""
            col = self._ORDER.get(key)
            if col is None:
                raise UsageError(
                    f"--order-by {item!r}: use timestamp_ms, execution_time_ms, status or name, "
                    "optionally followed by ASC or DESC"
                )
            direction = words[1].upper() if len(words) > 1 else "ASC"
            if direction not in ("ASC", "DESC"):
                raise UsageError(f"--order-by {item!r}: direction must be ASC or DESC")
            parts.append(f"{col} {direction}")
        parts.append("request_id ASC")
        return ", ".join(parts)

    def trace_ids(self, *, offset: int = 0, limit: int | None = None,
                  having: str | None = None) -> list[str]:
        """The selected trace ids in reading order; ``offset``/``limit`` page them,
        ``having`` keeps traces with a span matching this SQL condition over ``spans``."""
        if self.experiment_id is None:
            raise UsageError("give --experiment-id or --experiment-name to read traces from a store")
        q = self.query
        if q.filter_string:
            ids = self._filtered_ids()
            return ids[offset:] if limit is None else ids[offset:offset + limit]
        sql = "SELECT request_id FROM trace_info WHERE experiment_id = :e"
        params: dict[str, Any] = {"e": int(self.experiment_id)}
        if q.since_ms is not None:
            sql += " AND timestamp_ms >= :since"
            params["since"] = q.since_ms
        if having:
            sql += (" AND EXISTS (SELECT 1 FROM spans WHERE spans.trace_id = trace_info.request_id "
                    f"AND ({having}))")
        sql += f" ORDER BY {self._order_sql()}"
        cap = None if q.max_traces is None else max(0, int(q.max_traces) - offset)
        if limit is not None:
            cap = limit if cap is None else min(cap, limit)
        if cap is not None or offset:
            sql += " LIMIT :lim OFFSET :off"
            params["lim"] = -1 if cap is None and self.dialect == "sqlite" else cap
            params["off"] = offset
            if cap is None and self.dialect != "sqlite":
                sql = sql.replace(" LIMIT :lim", "")
        return [r[0] for r in self._rows(sql, params)]

    def _filtered_ids(self) -> list[str]:
        """Let MLflow evaluate its own filter grammar (its SQL store's filter parsing and
        query building) on our read-only engine; we only take the ids."""
        q = self.query
        store = self.mlflow_store()
        ids: list[str] = []
        token = None
        while True:
            want = 5000 if q.max_traces is None else min(5000, q.max_traces - len(ids))
            if want <= 0:
                break
            try:
                infos, token = store.search_traces(
                    locations=[self.experiment_id], filter_string=q.mlflow_filter(),
                    max_results=want, order_by=q.order_by or ["timestamp_ms DESC"], page_token=token)
            except Exception as exc:
                raise _mlflow_error(exc, f"filter {q.filter_string!r}") from None
            ids.extend(t.trace_id for t in infos)
            if not token or not infos:
                break
        return ids

    def mlflow_store(self):
        """MLflow's own SqlAlchemyStore over this source's read-only engine, built without
        its constructor: the constructor creates or migrates the schema, and opens the
        database read-write (closing that connection checkpoints a WAL database)."""
        if self._mlflow_store is None:
            quiet_mlflow_env()
            import sqlalchemy.orm
            from mlflow.store.db import utils as db_utils
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
            from mlflow.utils.uri import extract_db_type_from_uri

            store = SqlAlchemyStore.__new__(SqlAlchemyStore)
            store._async_logging_queue = None
            store.db_uri = self.query.tracking_uri
            store.db_type = extract_db_type_from_uri(self.query.tracking_uri)
            store.artifact_root_uri = None
            store.engine = self.engine
            store.read_engine = None
            store.ManagedSessionMaker = db_utils._get_managed_session_maker(
                sqlalchemy.orm.sessionmaker(bind=self.engine), store.db_type)
            self._mlflow_store = store
        return self._mlflow_store

    # -- reading
    ID_PAGES = (50, 450, 4500)  # then the rest: a reader who stops early asks for few ids

    def entries(self, *, having: str | None = None) -> Iterator[tuple[str, Any]]:
        """Traces as MLflow's JSON in reading order. Ids come in growing pages and the first
        batches are small, so that a reader who stops early (extract --limit) reads little;
        ``having`` (SQL over ``spans``) skips traces without a matching span."""
        where = self.query.tracking_uri
        offset = 0
        size = 10
        for page in (*self.ID_PAGES, None):
            ids = self.trace_ids(offset=offset, limit=page, having=having)
            offset += len(ids)
            i = 0
            while i < len(ids):
                for raw in self._load_batch(ids[i : i + size]):
                    yield where, raw
                i += size
                size = min(BATCH, size * 2)
            if page is None or len(ids) < page:
                return

    def iter_pairs(self, *, having: str | None = None) -> Iterator[tuple[dict, Trace]]:
        """``(raw, Trace)`` pairs; ``having`` as in :meth:`entries`."""
        for where, raw in self.entries(having=having):
            try:
                trace = self.normalize(raw, where)
            except MalformedTrace as exc:
                self.skip(exc)
                continue
            yield raw, trace

    @property
    def supports_light_read(self) -> bool:
        return self.dialect in LIGHT_DIALECTS

    def iter_traces(self, *, light: bool = False, ids: list[str] | None = None) -> Iterator[Trace]:
        """Traces in the normalized model. ``light=True`` (SQLite and PostgreSQL, for statistics):
        spans without inputs, outputs or attributes, built from the spans table's columns;
        about three times faster on large experiments."""
        light = light and self.supports_light_read
        ids = self.trace_ids() if ids is None else ids
        batch = LIGHT_BATCH if light else BATCH
        where = self.query.tracking_uri
        for i in range(0, len(ids), batch):
            for raw in self._load_batch(ids[i : i + batch], light=light):
                info = raw["info"]
                trace = self._built(info, raw["data"]["spans"], info.get("assessments") or [], where)
                if trace is not None:
                    yield trace

    def iter_trace_infos(self) -> Iterator[Trace]:
        """Trace records without spans (no request/response copies either)."""
        ids = self.trace_ids()
        where = self.query.tracking_uri
        for i in range(0, len(ids), INFO_BATCH):
            for raw in self._load_batch(ids[i : i + INFO_BATCH], light=True, spans=False):
                info = raw["info"]
                trace = self._built(info, [], info.get("assessments") or [], where)
                if trace is not None:
                    yield trace

    def existing_trace_ids(self, ids: list[str]) -> set[str]:
        """One query over trace rows (any experiment of the store)."""
        ids = [str(t) for t in ids]
        found: set[str] = set()
        for i in range(0, len(ids), INFO_BATCH):
            found.update(r[0] for r in self._rows(
                "SELECT request_id FROM trace_info WHERE request_id IN :ids", {"ids": ids[i:i + INFO_BATCH]}, ("ids",)))
        return found

    def session_aggregates(self) -> tuple[dict[str, dict], int, Any] | None:
        """``session --list`` in one GROUP BY over trace rows: ``(per-session aggregates,
        traces without a session, users(session ids) -> {id: user})``; None when the query
        needs MLflow's filter grammar or a trace limit (the generic path answers then)."""
        q = self.query
        if q.filter_string or q.max_traces is not None or "session_id" not in self._info_columns:
            return None
        if self.experiment_id is None:
            raise UsageError("give --experiment-id or --experiment-name to read traces from a store")
        kcol = "`key`" if self.dialect == "mysql" else '"key"'
        # The column MLflow promotes the session to; the metadata row for older traces.
        session = (f"COALESCE(t.session_id, (SELECT m.value FROM trace_request_metadata m WHERE "
                   f"m.request_id = t.request_id AND m.{kcol} = '{META_SESSION}'))")
        where = "t.experiment_id = :e"
        params: dict[str, Any] = {"e": int(self.experiment_id)}
        if q.since_ms is not None:
            where += " AND t.timestamp_ms >= :since"
            params["since"] = q.since_ms
        tokens = "t.total_tokens" if "total_tokens" in self._info_columns else "NULL"
        rows = self._rows(
            f"SELECT s, COUNT(*), SUM(e), SUM(tk), MIN(ts), MAX(ts) FROM (SELECT {session} AS s, "
            f"CASE WHEN t.status = 'ERROR' THEN 1 ELSE 0 END AS e, COALESCE({tokens}, 0) AS tk, "
            f"t.timestamp_ms AS ts FROM trace_info t WHERE {where}) x GROUP BY s",
            params,
        )
        agg: dict[str, dict] = {}
        without = 0
        for sid, turns, errors, tok, first, last in rows:
            if not sid:
                without += int(turns)
                continue
            agg[sid] = {"turns": int(turns), "errors": int(errors or 0), "tokens": int(tok or 0),
                        "first": int(first), "last": int(last), "user": None}
        order = self._order_sql().replace("request_id", "t.request_id").replace("timestamp_ms", "t.timestamp_ms")

        def users(sids: list[str]) -> dict[str, str | None]:
            if not sids:
                return {}
            found: dict[str, str | None] = {}
            for sid, user in self._rows(
                f"SELECT {session} AS s, u.value FROM trace_info t JOIN trace_request_metadata u "
                f"ON u.request_id = t.request_id AND u.{kcol} = '{META_USER}' WHERE {where} "
                f"AND {session} IN :sids ORDER BY {order}",
                {**params, "sids": sids},
                ("sids",),
            ):
                if user and not found.get(sid):
                    found[sid] = user
            return found

        return agg, without, users

    def get_pair(self, trace_id: str) -> tuple[dict, Trace]:
        found = self._load_batch([trace_id])
        if not found:
            raise NotFoundError(f"trace {trace_id} not found in {self.query.tracking_uri}")
        return found[0], self.normalize(found[0], self.query.tracking_uri)

    def session_levels(self) -> list[str] | None:
        if self.experiment_id is None:
            return None
        try:
            rows = self._rows(
                "SELECT value FROM experiment_tags WHERE experiment_id = :e AND "
                + ("`key`" if self.dialect == "mysql" else '"key"') + " = :k",
                {"e": int(self.experiment_id), "k": EXPERIMENT_SESSION_HIERARCHY},
            )
        except SourceError:
            return None
        return session_hierarchy_levels(rows[0][0]) if rows else None

    def _load_batch(self, ids: list[str], *, light: bool = False, spans: bool = True) -> list[dict]:
        """Traces as MLflow's JSON. ``light``: spans from the spans table's columns and no
        request/response metadata copies; ``spans=False``: trace records only."""
        p = {"ids": ids}
        promoted = [c for c in PROMOTED_COLUMNS if c in self._info_columns]
        infos = self._rows(
            "SELECT request_id, experiment_id, timestamp_ms, execution_time_ms, status, "
            "request_preview, response_preview, client_request_id"
            + "".join(f", {c}" for c in promoted)
            + " FROM trace_info WHERE request_id IN :ids",
            p,
            ("ids",),
        )
        by_id: dict[str, dict] = {}
        for row in infos:
            rid, exp, ts, dur, status, req, resp, crid = row[:8]
            info: dict[str, Any] = {
                "trace_id": rid,
                "trace_location": {
                    "type": "MLFLOW_EXPERIMENT",
                    "mlflow_experiment": {"experiment_id": str(exp)},
                },
                "request_time": _iso(ts),
                "state": status,
                "trace_metadata": {},
                "tags": {},
                "request_preview": req,
                "execution_duration_ms": dur,
            }
            if resp is not None:
                info["response_preview"] = resp
            if crid is not None:
                info["client_request_id"] = crid
            _promoted_metadata(info, dict(zip(promoted, row[8:])))
            by_id[rid] = {"info": info, "data": {"spans": []}}
        if not by_id:
            return []
        # The light read skips the bulky request/response copies statistics never read.
        kcol = "`key`" if self.dialect == "mysql" else '"key"'  # a reserved word in MySQL
        skip = f" AND {kcol} NOT IN ('{META_INPUTS}', '{META_OUTPUTS}')" if light else ""
        for key, value, rid in self._rows(
            f"SELECT {kcol}, value, request_id FROM trace_request_metadata WHERE request_id IN :ids" + skip,
            p,
            ("ids",),
        ):
            meta = by_id[rid]["info"]["trace_metadata"]
            if key not in PROMOTED_METADATA or key not in meta:  # the columns win, as in MLflow
                meta[key] = value
        for key, value, rid in self._rows(
            f"SELECT {kcol}, value, request_id FROM trace_tags WHERE request_id IN :ids", p, ("ids",)
        ):
            tags = by_id[rid]["info"]["tags"]
            if key not in tags:  # trace_name column wins
                tags[key] = value
        for row in self._rows(
            "SELECT assessment_id, trace_id, name, assessment_type, value, error, "
            "source_type, source_id, span_id, rationale, valid, created_timestamp "
            "FROM assessments WHERE trace_id IN :ids ORDER BY created_timestamp",
            p,
            ("ids",),
        ):
            by_id[row[1]]["info"].setdefault("assessments", []).append(_assessment_row(row))
        if not spans:
            return [by_id[rid] for rid in ids if rid in by_id]
        if light:
            self._light_spans(by_id, p)
        else:
            for rid, content in self._rows(
                "SELECT trace_id, content FROM spans WHERE trace_id IN :ids", p, ("ids",)
            ):
                try:
                    by_id[rid]["data"]["spans"].append(load_json(content))
                except ValueError:
                    self.warnings.append(f"{rid}: a span row holds malformed JSON; skipped")
        out = []
        for rid in ids:
            raw = by_id.get(rid)
            if raw is None:
                continue
            if not raw["data"]["spans"] and raw["info"]["tags"].get(TAG_SPANS_LOCATION) not in (
                None,
                "TRACKING_STORE",
            ):
                raw = self._via_api(rid) or raw  # spans kept in the artifact store (older traces)
            out.append(raw)
        return out

    def _light_spans(self, by_id: dict, p: dict) -> None:
        rows = self._rows(
            "SELECT trace_id, span_id, parent_span_id, name, type, status, start_time_unix_nano, "
            "end_time_unix_nano, total_cost, model_name, model_provider, "
            f"{_light_usage_sql(self.dialect)}, "
            f"CASE WHEN {_light_needs_json_sql(self.dialect)} THEN content END "
            "FROM spans WHERE trace_id IN :ids",
            p,
            ("ids",),
        )
        for rid, sid, parent, name, stype, status, start, end, cost, model, provider, usage, content in rows:
            spans = by_id[rid]["data"]["spans"]
            if content is not None:
                try:
                    spans.append(load_json(content))
                except ValueError:
                    self.warnings.append(f"{rid}: a span row holds malformed JSON; skipped")
                continue
            spans.append(
                span_from_columns(sid, parent, name, stype, status, start, end, cost, model, provider, usage)
            )

    def _via_api(self, trace_id: str) -> dict | None:
        """A trace whose spans are in the artifact store: MLflow's tracing client over the
        read-only store (never a client that opens the database itself)."""
        try:
            from mlflow.tracing.client import TracingClient

            store = self.mlflow_store()

            class ReadOnlyTracingClient(TracingClient):
                def __init__(self, uri):  # no store lookup: ours is given
                    self.tracking_uri = uri

                @property
                def store(self):
                    return store

            return ReadOnlyTracingClient(self.query.tracking_uri).get_trace(trace_id).to_dict()
        except Exception:
            self.warnings.append(f"{trace_id}: spans are in the artifact store and could not be read")
            return None

    def count(self) -> int:
        rows = self._rows(
            "SELECT COUNT(*) FROM trace_info WHERE experiment_id = :e", {"e": int(self.experiment_id)}
        )
        return int(rows[0][0])


# MLflow 3.x promotes some trace metadata to trace_info columns and rebuilds the metadata
# from them when it reads a trace (see compatibility_metadata_from_columns in MLflow).
PROMOTED_COLUMNS = (
    "session_id",
    "trace_name",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation_input_tokens_above_1hr",
    "input_cost",
    "output_cost",
    "total_cost",
)
_TOKEN_COLUMNS = PROMOTED_COLUMNS[2:8]
_COST_COLUMNS = PROMOTED_COLUMNS[8:]


def _promoted_metadata(info: dict, cols: dict) -> None:
    meta = info["trace_metadata"]
    if cols.get("session_id") is not None:
        meta[META_SESSION] = cols["session_id"]
    if cols.get("trace_name") is not None:
        info["tags"][TAG_TRACE_NAME] = cols["trace_name"]
    # Values go on as the columns hold them: the normalizer checks them (a column of the
    # wrong type makes that one trace malformed, with the field named).
    usage = {c: cols[c] for c in _TOKEN_COLUMNS if cols.get(c) is not None}
    if usage:
        meta[META_TOKEN_USAGE] = json.dumps(usage, default=str)
    cost = {c: cols[c] for c in _COST_COLUMNS if cols.get(c) is not None}
    if cost:
        meta[META_COST] = json.dumps(cost, default=str)


def _assessment_row(row) -> dict:
    aid, tid, name, atype, value, error, stype, sid, span_id, rationale, valid, _ = row
    d: dict[str, Any] = {
        "assessment_id": aid,
        "assessment_name": name,
        "trace_id": tid,
        "source": {"source_type": stype, "source_id": sid},
        "valid": bool(valid),
    }
    if span_id:
        d["span_id"] = span_id
    if rationale is not None:
        d["rationale"] = rationale
    val = _loads(value)
    if atype == "expectation":
        d["expectation"] = {"value": val}
    elif atype == "issue":
        d["issue"] = {"issue_name": val if isinstance(val, str) else name}
    else:
        fb: dict[str, Any] = {"value": val}
        err = _loads(error) if error else None
        if err:
            fb["error"] = err if isinstance(err, dict) else {"error_message": str(err)}
        d["feedback"] = fb
    return d


def _loads(text: Any) -> Any:
    if not isinstance(text, (str, bytes)):
        return text
    try:
        return load_json(text)
    except ValueError:
        return text


def _iso(ms: Any) -> str:
    """Epoch ms as MLflow's protobuf JSON writes it: no fraction on whole seconds."""
    from .model import iso_ms

    if type(ms) is not int or not 0 <= ms <= 253402300799999:  # not a time MLflow wrote
        return ms if ms is not None else _iso(0)  # the normalizer names what is wrong
    text = iso_ms(ms) or ""
    return text.replace(".000Z", "Z") if ms % 1000 == 0 else text


def _sqlite_ro_uri(uri: str) -> str:
    """``sqlite:///relative.db`` or ``sqlite:////abs/path.db`` -> a read-only SQLite URI."""
    if "://" not in uri:
        raise UsageError(f"malformed SQLite URI {uri!r}: use sqlite:///relative.db or sqlite:////abs/path.db")
    # sqlite:///relative.db and sqlite:////absolute/path.db: drop the URI's own slash.
    path = uri.split("://", 1)[1].split("?", 1)[0]
    path = path[1:] if path.startswith("/") else path
    if not path or path == ":memory:":
        raise UsageError(
            f"malformed SQLite URI {uri!r}: use sqlite:///relative.db or sqlite:////abs/path.db"
        )
    if not os.path.isfile(path):
        raise SourceError(f"no SQLite tracking store at {path} (from {uri})")
    return f"file:{Path(path).resolve()}?mode=ro"


def _engine(uri: str):
    """A read-only SQLAlchemy engine. SQLite files open in mode=ro (nothing can be
    written, and a WAL database is never checkpointed); server databases get read-only
    sessions and connect/read timeouts."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    scheme = scheme_of(uri)
    if scheme == "sqlite":
        import sqlite3

        ro = _sqlite_ro_uri(uri)
        return create_engine(
            "sqlite://", creator=lambda: sqlite3.connect(ro, uri=True), poolclass=NullPool
        )
    try:
        engine = create_engine(uri, poolclass=NullPool, connect_args=_connect_args(uri))
    except ImportError as exc:
        raise SourceError(
            f"the database driver for {uri.split('://', 1)[0]} is not installed ({exc}); install it "
            "(e.g. pip install psycopg2-binary with postgresql+psycopg2://, or pymysql with mysql+pymysql://)"
        ) from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise UsageError(f"malformed tracking URI {uri!r}: {first}") from None
    _read_only_sessions(engine)
    return engine


def _driver(uri: str) -> str:
    scheme = uri.split("://", 1)[0].lower()
    return scheme.split("+", 1)[1] if "+" in scheme else ""


def _connect_args(uri: str) -> dict:
    """Timeouts for the DBAPI driver in use (unknown arguments would fail the connect)."""
    scheme, driver = scheme_of(uri), _driver(uri)
    if scheme == "postgresql" and driver in ("", "psycopg2", "psycopg"):
        return {"connect_timeout": SQL_CONNECT_TIMEOUT, "keepalives": 1, "keepalives_idle": 10,
                "keepalives_interval": 5, "keepalives_count": 3}
    if scheme == "mysql" and driver in ("", "mysqldb", "pymysql"):
        return {"connect_timeout": SQL_CONNECT_TIMEOUT, "read_timeout": SQL_READ_TIMEOUT,
                "write_timeout": SQL_READ_TIMEOUT}
    return {}


def _read_only_sessions(engine) -> None:
    """Every connection of a server database starts read-only transactions."""
    from sqlalchemy import event

    name = engine.dialect.name
    statement = {"postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                 "mysql": "SET SESSION TRANSACTION READ ONLY"}.get(name)
    if statement is None:
        return

    @event.listens_for(engine, "connect")
    def _read_only(dbapi_conn, _record):  # pragma: no cover - needs a server
        cur = dbapi_conn.cursor()
        try:
            cur.execute(statement)
        finally:
            cur.close()
        try:
            dbapi_conn.commit()
        except Exception:
            pass


# --- the light read's SQL, per dialect ----------------------------------------------------------

LIGHT_DIALECTS = ("sqlite", "postgresql")


def _light_usage_sql(dialect: str) -> str:
    """SQL extracting a span's mlflow.chat.tokenUsage attribute (a JSON string) from its content."""
    if dialect == "postgresql":
        return f"(CAST(content AS json) -> 'attributes' ->> '{CHAT_USAGE}')"
    return f"json_extract(content, '{LIGHT_USAGE_PATH}')"


def _light_needs_json_sql(dialect: str) -> str:
    """normalize.LIGHT_SPAN_NEEDS_JSON (written for SQLite) in the dialect's functions."""
    sql = LIGHT_SPAN_NEEDS_JSON
    if dialect == "postgresql":
        sql = sql.replace(f"json_extract(content, '{LIGHT_USAGE_PATH}')", _light_usage_sql(dialect))
        sql = re.sub(r"instr\(content, ", "strpos(content, ", sql)
    return sql


# --- SQL text for the DB-API drivers -------------------------------------------------------------

_PLACEHOLDER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_PARAMSTYLE = {"sqlite": "qmark", "mssql": "qmark"}  # psycopg2, pymysql: pyformat


def _paramstyle(dialect: str) -> str:
    return _PARAMSTYLE.get(dialect, "pyformat")


def _bind(sql: str, params: dict, expand: tuple[str, ...], style: str) -> tuple[str, Any]:
    """Rewrite ``:name`` placeholders for the driver: ``?`` (qmark, positional arguments) or
    ``%(name)s`` (pyformat). A name in ``expand`` binds a list: ``IN :ids`` becomes
    ``IN (?, ?, ...)``. Literal ``%`` is doubled for pyformat drivers."""
    positional: list[Any] = []
    named: dict[str, Any] = {}

    def repl(m: "re.Match") -> str:
        name = m.group(1)
        value = params[name]
        if name in expand:
            values = list(value) or [None]  # IN (NULL) matches nothing
            if style == "qmark":
                positional.extend(values)
                return "(" + ", ".join("?" * len(values)) + ")"
            keys = [f"{name}_{i}" for i in range(len(values))]
            named.update(zip(keys, values))
            return "(" + ", ".join(f"%({k})s" for k in keys) + ")"
        if style == "qmark":
            positional.append(value)
            return "?"
        named[name] = value
        return f"%({name})s"

    if style != "qmark":
        sql = sql.replace("%", "%%")
    text = _PLACEHOLDER.sub(repl, sql)
    return (text, positional) if style == "qmark" else (text, named)


def _suppress():
    import contextlib

    return contextlib.suppress(Exception)


def checked(source: Source, traces: Iterator[Trace] | None = None) -> Iterator[Trace]:
    """Stream traces, failing loudly instead of returning a silently empty result: no traces
    at all, or traces none of whose spans carry a known attribute convention."""
    from .normalize import known_convention

    count = 0
    known = False
    for trace in traces if traces is not None else source.iter_traces():
        count += 1
        known = known or known_convention(trace)
        yield trace
    check_count(source, count, known)


def check_count(source: Source, count: int, known: bool) -> None:
    """No traces at all, or none with a known attribute convention: an error, not a result.
    When every trace was skipped as malformed, the error is the (first) reason."""
    if count == 0 and source.skipped:
        first = source.skip_reasons[0] if source.skip_reasons else "unreadable"
        if source.skipped == 1:
            raise InputError(first)
        raise InputError(f"no readable traces in {source.description}: {source.skipped} skipped; first: {first}")
    if count == 0:
        what = source.description
        query = getattr(source, "query", None)
        if query is not None and query.mlflow_filter():
            raise NotFoundError(f"no traces match {query.mlflow_filter()!r} in {what}")
        raise NotFoundError(f"no traces in {what}")
    if not known:
        raise InputError(
            f"none of the {count} traces carries MLflow, OpenTelemetry GenAI or OpenInference span "
            "attributes: unknown attribute convention, nothing to analyze"
        )
