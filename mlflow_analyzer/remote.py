"""Reading a tracking server over its REST API, asking it only for what a command needs.

Measured on a real ``mlflow server`` (MLflow 3.17, SQLite behind it, 2 cores): a page of trace
records costs the server about 0.5 ms a trace, spans cost it 7-10 ms a trace whichever
endpoint serves them (``traces/batchGet`` spends its time turning protobuf into JSON, one
trace per request spends it in the request stack), and the trace metrics endpoint answers an
aggregate over the whole experiment in one SQL query. So:

* trace-level figures (counts, states, latency, tokens, cost, sessions, users, assessments)
  come from trace records without spans: every trace, exact;
* span counts and error counts per span name and type come from the server's metrics
  endpoint (``POST /api/3.0/mlflow/traces/metrics``, view SPANS): exact;
* spans are fetched, in parallel over a few keep-alive connections, for every trace that
  ended in ERROR (their root causes are exact) and for a uniform random sample once
  an experiment holds more than ``DEFAULT_SAMPLE`` traces; span-level figures the sample
  gives (durations, self time, tokens and cost per span name, models) are then estimates, and
  the output says so with the sample size (``"sample"``). ``--sample 0`` reads every span.

Responses are parsed here (no protobuf messages built on the client).
"""

from __future__ import annotations

import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator

from .errors import NotFoundError, SourceError, UsageError
from .model import Trace
from .rest import RestClient, RestNotFound, masked
from .sources import Source

SEARCH_PAGE = 500  # the server's maximum page of trace records
SPAN_BATCH = 25  # traces per batchGet request (measured: 10-50 cost the server the same per trace)
FETCH_THREADS = 4  # concurrent requests: mlflow server runs 4 workers by default
DEFAULT_SAMPLE = 2000  # above this many traces, spans are read for a sample of this size

V3 = "/api/3.0/mlflow/traces"


def _duration_ms(value: Any) -> float | None:
    """protobuf Duration JSON ("4.990s") -> milliseconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value)
    try:
        return round(float(text[:-1]) * 1000.0, 3) if text.endswith("s") else float(text)
    except ValueError:
        return None


def info_dict(raw: dict) -> dict:
    """A trace record from the REST API in ``Trace.to_dict()["info"]`` form."""
    info = dict(raw)
    if "execution_duration_ms" not in info and "execution_duration" in info:
        info["execution_duration_ms"] = _duration_ms(info.pop("execution_duration"))
    return info


def _any_value(v: dict) -> Any:
    """An OpenTelemetry AnyValue (protobuf JSON) -> a Python value."""
    if not isinstance(v, dict):
        return v
    if "string_value" in v:
        return v["string_value"]
    if "int_value" in v:
        return int(v["int_value"])
    if "double_value" in v:
        return v["double_value"]
    if "bool_value" in v:
        return v["bool_value"]
    if "kvlist_value" in v:
        return {x.get("key"): _any_value(x.get("value") or {}) for x in (v["kvlist_value"] or {}).get("values", [])}
    if "array_value" in v:
        return [_any_value(x) for x in (v["array_value"] or {}).get("values", [])]
    if "bytes_value" in v:
        return v["bytes_value"]
    return None


def span_dict(otel: dict) -> dict:
    """A span of ``traces/batchGet`` (OpenTelemetry protobuf JSON) in MLflow's span JSON form.

    MLflow encodes every attribute as a JSON string; the server decodes them into typed
    AnyValues. Strings are re-encoded (so that ``"true"`` stays a string); objects, lists and
    numbers are handed over decoded, which the normalizer takes as they are."""
    attrs = {}
    for a in otel.get("attributes") or ():
        value = _any_value(a.get("value") or {})
        attrs[a.get("key")] = json.dumps(value) if isinstance(value, str) else value
    events = []
    for e in otel.get("events") or ():
        events.append({"name": e.get("name"), "time_unix_nano": e.get("time_unix_nano"),
                       "attributes": {a.get("key"): _any_value(a.get("value") or {}) for a in e.get("attributes") or ()}})
    status = otel.get("status") or {}
    return {
        "trace_id": otel.get("trace_id"),
        "span_id": otel.get("span_id"),
        "parent_span_id": otel.get("parent_span_id") or None,
        "name": otel.get("name"),
        "start_time_unix_nano": int(otel.get("start_time_unix_nano") or 0),
        "end_time_unix_nano": int(otel["end_time_unix_nano"]) if otel.get("end_time_unix_nano") is not None else None,
        "events": events,
        "status": {"code": status.get("code") or "STATUS_CODE_UNSET", "message": status.get("message") or ""},
        "attributes": attrs,
    }


class HttpSource(Source):
    """An MLflow tracking server (http/https) read through its REST API."""

    def __init__(self, query, *, sample: int | None = None, threads: int | None = None):
        super().__init__(description=masked(query.tracking_uri))
        self.query = query
        if sample is None:
            sample = query.sample
        self.sample = DEFAULT_SAMPLE if sample is None else sample
        self.threads = threads or int(os.environ.get("MLFLOW_ANALYZER_HTTP_THREADS") or FETCH_THREADS)
        self.client = RestClient(query.tracking_uri)
        self.experiment_id = self._resolve_experiment() if (query.experiment_id or query.experiment_name) else None

    # -- experiments
    def _resolve_experiment(self) -> str:
        q = self.query
        try:
            if q.experiment_id is not None:
                doc = self.client.get_json("/api/2.0/mlflow/experiments/get", {"experiment_id": str(q.experiment_id)})
            else:
                doc = self.client.get_json("/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": q.experiment_name})
        except RestNotFound:
            what = f"experiment id {q.experiment_id}" if q.experiment_id is not None else f"experiment {q.experiment_name!r}"
            raise NotFoundError(f"{what} not found on {self.description}") from None
        except SourceError as exc:
            if "INVALID_PARAMETER_VALUE" in str(exc) and q.experiment_id is not None:
                raise NotFoundError(f"experiment id {q.experiment_id} not found on {self.description}") from None
            raise
        exp = doc.get("experiment") or {}
        if not exp.get("experiment_id"):
            raise NotFoundError(f"experiment {q.experiment_id or q.experiment_name!r} not found on {self.description}")
        return str(exp["experiment_id"])

    def _need_experiment(self) -> str:
        if self.experiment_id is None:
            raise UsageError("give --experiment-id or --experiment-name to read traces from a store")
        return self.experiment_id

    # -- trace records
    def search(self, filter_string: str | None = None, *, limit: int | None = None,
               order_by: list[str] | None = None) -> Iterator[dict]:
        """Trace records (``info`` dicts), page after page, up to ``limit``."""
        exp = self._need_experiment()
        q = self.query
        token, seen = None, 0
        while True:
            want = SEARCH_PAGE if limit is None else min(SEARCH_PAGE, limit - seen)
            if want <= 0:
                return
            body: dict[str, Any] = {
                "locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": exp}}],
                "max_results": want,
                "order_by": order_by or q.order_by or ["timestamp_ms DESC"],
            }
            if filter_string:
                body["filter"] = filter_string
            if token:
                body["page_token"] = token
            try:
                doc = self.client.post_json(f"{V3}/search", body)
            except SourceError as exc:
                if filter_string and "INVALID_PARAMETER_VALUE" in str(exc):
                    raise UsageError(f"filter {filter_string!r}: {str(exc).split(': ', 2)[-1]}") from None
                raise
            page = doc.get("traces") or []
            for t in page:
                seen += 1
                yield info_dict(t)
            token = doc.get("next_page_token")
            if not token or not page:
                return

    def _records(self) -> Iterator[dict]:
        return self.search(self.query.mlflow_filter(), limit=self.query.max_traces)

    def iter_trace_infos(self) -> Iterator[Trace]:
        where = self.description
        for info in self._records():
            trace = self._built(info, [], info.get("assessments") or [], where)
            if trace is not None:
                yield trace

    def session_levels(self) -> list[str] | None:
        from .sources import EXPERIMENT_SESSION_HIERARCHY, session_hierarchy_levels

        if self.experiment_id is None:
            return None
        try:
            doc = self.client.get_json("/api/2.0/mlflow/experiments/get", {"experiment_id": self.experiment_id})
        except SourceError:
            return None
        tags = {t.get("key"): t.get("value") for t in (doc.get("experiment") or {}).get("tags") or []}
        return session_hierarchy_levels(tags.get(EXPERIMENT_SESSION_HIERARCHY))

    # -- spans
    def _batch(self, ids: list[str]) -> dict[str, list[dict]]:
        doc = self.client.get_json(f"{V3}/batchGet", {"trace_ids": ids})
        out: dict[str, list[dict]] = {}
        for t in doc.get("traces") or []:
            tid = (t.get("trace_info") or {}).get("trace_id")
            out[tid] = [span_dict(s) for s in t.get("spans") or []]
        return out

    def fetch_spans(self, ids: list[str]) -> Iterator[tuple[str, list[dict]]]:
        """``(trace id, spans)`` for ``ids``, in their order, fetched in parallel batches."""
        batches = [ids[i:i + SPAN_BATCH] for i in range(0, len(ids), SPAN_BATCH)]
        if not batches:
            return
        with ThreadPoolExecutor(max(1, min(self.threads, len(batches)))) as pool:
            # Bounded read-ahead: at most 2 x threads batches in flight, so memory stays flat.
            window = 2 * self.threads
            futures = [pool.submit(self._batch, b) for b in batches[:window]]
            for i, batch in enumerate(batches):
                got = futures[i].result()
                futures[i] = None  # let it go
                if i + window < len(batches):
                    futures.append(pool.submit(self._batch, batches[i + window]))
                for tid in batch:
                    if tid in got:
                        yield tid, got[tid]
                    else:
                        self.warnings.append(f"{tid}: the server returned no spans for this trace")
                        yield tid, []

    def entries(self) -> Iterator[tuple[str, Any]]:
        """Every trace the query selects with its spans (exact: no sampling), in pages."""
        infos = []
        for info in self._records():
            infos.append(info)
            if len(infos) >= SEARCH_PAGE:
                yield from self._with_spans(infos)
                infos = []
        yield from self._with_spans(infos)

    def _with_spans(self, infos: list[dict]) -> Iterator[tuple[str, dict]]:
        by_id = {i["trace_id"]: i for i in infos}
        for tid, spans in self.fetch_spans(list(by_id)):
            yield self.description, {"info": by_id[tid], "data": {"spans": spans}}

    def get_pair(self, trace_id: str) -> tuple[dict, Trace]:
        try:
            doc = self.client.get_json(f"{V3}/batchGet", {"trace_ids": [trace_id]})
        except RestNotFound:
            doc = {}
        traces = doc.get("traces") or []
        if not traces:
            raise NotFoundError(f"trace {trace_id} not found on {self.description}")
        t = traces[0]
        raw = {"info": info_dict(t.get("trace_info") or {}), "data": {"spans": [span_dict(s) for s in t.get("spans") or []]}}
        return raw, self.normalize(raw, self.description)

    def existing_trace_ids(self, ids: list[str]) -> set[str]:
        """Trace records only (``traces/batchGetInfos``), in batches."""
        found: set[str] = set()
        ids = [str(t) for t in ids]
        for i in range(0, len(ids), 100):
            try:
                doc = self.client.post_json(f"{V3}/batchGetInfos", {"trace_ids": ids[i:i + 100]})
            except RestNotFound:
                continue
            found.update((t or {}).get("trace_id") for t in doc.get("trace_infos") or [])
        return {t for t in found if t}

    # -- the server's aggregates
    def span_counts(self) -> dict[str, dict] | None:
        """Per span name: ``count``, ``error_count`` and ``types`` from the metrics endpoint,
        for the whole experiment; None when it cannot answer for this query (a --filter or
        --max-traces it does not take, an older server)."""
        q = self.query
        if q.filter_string or q.max_traces is not None:
            return None
        out: dict[str, dict] = {}
        try:
            for dims, count in self._metric("span_count", ["span_name", "span_status"]):
                row = out.setdefault(dims["span_name"], {"count": 0, "error_count": 0, "types": {}})
                row["count"] += int(count)
                if dims.get("span_status") == "ERROR":
                    row["error_count"] += int(count)
            for dims, count in self._metric("span_count", ["span_name", "span_type"]):
                row = out.setdefault(dims["span_name"], {"count": 0, "error_count": 0, "types": {}})
                row["types"][dims.get("span_type") or "UNKNOWN"] = int(count)
        except SourceError:
            return None
        return out

    def _metric(self, metric: str, dimensions: list[str]) -> Iterator[tuple[dict, float]]:
        body: dict[str, Any] = {"experiment_ids": [self._need_experiment()], "view_type": "SPANS",
                                "metric_name": metric, "aggregations": [{"aggregation_type": "COUNT"}],
                                "dimensions": dimensions, "max_results": 1000}
        if self.query.since_ms is not None:
            body["start_time_ms"] = self.query.since_ms
        token = None
        while True:
            if token:
                body["page_token"] = token
            doc = self.client.post_json(f"{V3}/metrics", body)
            for dp in doc.get("data_points") or []:
                yield dp.get("dimensions") or {}, (dp.get("values") or {}).get("COUNT") or 0
            token = doc.get("next_page_token")
            if not token:
                return


# --- the sampled pass ------------------------------------------------------------------------


@dataclass
class RemotePass:
    """What a command reads from a server: every trace record, and spans for some traces."""

    infos: list[dict]
    spans: dict[str, list[dict]]  # trace id -> spans, for the traces read in full
    sample_ids: set = field(default_factory=set)  # the uniform sample (when sampling)
    error_ids: set = field(default_factory=set)  # traces that ended in ERROR
    sampled: bool = False
    errors_complete: bool = True

    @property
    def total(self) -> int:
        return len(self.infos)

    def trace(self, source: Source, info: dict) -> Trace | None:
        """The trace of a record (with its spans when read); None when malformed (the source
        counts it as skipped)."""
        return source._built(info, self.spans.get(info["trace_id"]) or [], info.get("assessments") or [],
                             source.description)

    def describe(self) -> dict:
        return {
            "traces": self.total,
            "traces_with_spans": len(self.sample_ids),
            "method": "uniform random sample of traces (seeded by the experiment id); every trace "
                      "that ended in ERROR is also read in full for the errors table",
            "error_traces_read": len(self.error_ids & set(self.spans)),
            "errors_complete": self.errors_complete,
        }


def read_pass(source: HttpSource, *, sample: int | None = None) -> RemotePass:
    """Every trace record; spans for all traces, or (above ``sample`` traces) for a uniform
    sample of ``sample`` traces plus every trace that ended in ERROR (up to ``sample`` of them)."""
    sample = source.sample if sample is None else sample
    infos = list(source._records())
    ids = [i["trace_id"] for i in infos]
    if not sample or len(ids) <= sample:
        spans = dict(source.fetch_spans(ids))
        return RemotePass(infos=infos, spans=spans, sample_ids=set(ids), sampled=False)
    rng = random.Random(f"mlflow-analyzer:{source.experiment_id}")
    chosen = set(rng.sample(ids, sample))
    # Traces that ended in ERROR are read in full: their root causes are exact. (The server's
    # own filter for traces with any error span, span.status = 'ERROR', took minutes on 10,000
    # traces: caught errors inside OK traces come from the sample.)
    error_set = {i["trace_id"] for i in infos if str(i.get("state") or "").upper() == "ERROR"}
    complete = len(error_set) <= sample
    if not complete:  # a very error-heavy experiment: a sample of them too
        error_set = set(rng.sample(sorted(error_set), sample))
    read = [t for t in ids if t in chosen or t in error_set]
    spans = dict(source.fetch_spans(read))
    return RemotePass(infos=infos, spans=spans, sample_ids=chosen, error_ids=error_set, sampled=True,
                      errors_complete=complete)


# --- statistics over a server ----------------------------------------------------------------


class RemoteStats:
    """The statistics of a server's experiment: ``result()`` is the stats contract dict.

    Trace-level figures come from every trace record. When spans were read for a sample, the
    span-level figures are the sample's, scaled to the experiment (counts and error counts
    per span name exact from the server's metrics endpoint when it answers), and
    ``result()["sample"]`` says which figures are estimates and from how many traces."""

    def __init__(self, source: HttpSource, *, group_by: str | None = None):
        from .stats import StatsAccumulator

        self.source = source
        self.plan = read_pass(source)
        self.all = StatsAccumulator(group_by=group_by)
        self.sample = StatsAccumulator() if self.plan.sampled else None
        self.counts = source.span_counts() if self.plan.sampled else None
        self.latencies = self.all.latencies
        self._fed = False

    def traces(self) -> Iterator[Trace]:
        """Feed the statistics with every trace record (and the spans read), yielding the
        traces read in full for the uniform sample (all of them when not sampling): what the
        findings analyze."""
        from .sources import check_count

        known = False
        plan = self.plan
        for info in plan.infos:
            trace = plan.trace(self.source, info)
            if trace is None:
                continue
            known = known or not trace.spans or any(s.convention for s in trace.spans)
            self.all.add(trace)
            if info["trace_id"] in plan.sample_ids:
                if self.sample is not None:
                    self.sample.add(trace)
                yield trace
        self._fed = True
        check_count(self.source, self.all.trace_count, known)

    def result(self) -> dict[str, Any]:
        if not self._fed:
            for _ in self.traces():
                pass
        out = self.all.result()
        if self.sample is None:
            return out
        s = self.sample.result()
        n, total = self.sample.trace_count, self.all.trace_count
        f = total / n if n else 0.0
        counts = self.counts
        rows = []
        seen = set()
        for row in s["spans"]:
            seen.add(row["name"])
            exact = (counts or {}).get(row["name"])
            scale = (exact["count"] / row["count"]) if exact and row["count"] else f
            r = dict(row)
            r["count"] = exact["count"] if exact else round(row["count"] * f)
            r["error_count"] = exact["error_count"] if exact else round(row["error_count"] * f)
            r["error_rate"] = r["error_count"] / r["count"] if r["count"] else 0.0
            r["trace_count"] = round(row["trace_count"] * f)
            r["self_ms_total"] = row["self_ms_total"] * scale
            for k in ("tokens_total", "input_tokens", "output_tokens"):
                r[k] = round(row[k] * scale)
            if row["cost_usd"] is not None:
                r["cost_usd"] = row["cost_usd"] * scale
            if exact and exact["types"]:
                r["type"] = max(exact["types"].items(), key=lambda kv: kv[1])[0]
            r["estimated"] = True
            rows.append(r)
        # Span names the sample missed (rare ones): what the traces read in full say.
        for row in out["spans"]:
            if row["name"] not in seen:
                exact = (counts or {}).get(row["name"])
                r = dict(row, estimated=True)
                if exact:
                    r.update(count=exact["count"], error_count=exact["error_count"],
                             error_rate=exact["error_count"] / exact["count"] if exact["count"] else 0.0)
                rows.append(r)
        rows.sort(key=lambda r: (-(r["self_ms_total"] or 0), r["name"]))
        out["spans"] = rows
        out["span_count"] = sum(c["count"] for c in counts.values()) if counts else round(s["span_count"] * f)
        out["span_types"] = {k: round(v * f) for k, v in s["span_types"].items()}
        out["orphan_spans"] = round(s["orphan_spans"] * f)
        out["conventions"] = {k: round(v * f) for k, v in s["conventions"].items()}
        models = []
        for m in s["models"]:
            m = dict(m)
            for k in ("calls", "errors", "input_tokens", "output_tokens", "cache_read_tokens"):
                m[k] = round(m[k] * f)
            if m["cost_usd"] is not None:
                m["cost_usd"] = m["cost_usd"] * f
            m["estimated"] = True
            models.append(m)
        out["models"] = models
        estimated = ["spans[].mean_ms", "spans[].p50_ms", "spans[].p95_ms", "spans[].max_ms",
                     "spans[].self_ms_total", "spans[].trace_count", "spans[].tokens_total",
                     "spans[].cost_usd", "models", "span_types", "conventions", "orphan_spans"]
        if counts is None:
            estimated += ["spans[].count", "spans[].error_count", "span_count"]
        estimated.append("errors (caught errors inside OK traces: from the sample)"
                         if self.plan.errors_complete else "errors")
        out["sample"] = dict(self.plan.describe(), estimated=estimated,
                             exact="trace-level figures (counts, states, latency, tokens, cost, sessions, "
                                   "assessments) from every trace record" + (
                                       "; span counts and error counts per span name from the server's "
                                       "metrics endpoint" if counts is not None else "")
                                   + ("; errors of every trace that ended in ERROR" if self.plan.errors_complete else ""))
        return out


def analysis_stream(source: Source) -> tuple[Iterator[Trace], RemoteStats | None]:
    """The traces a whole analysis (findings, report, review) reads from ``source``, and, over a
    tracking server, the :class:`RemoteStats` whose ``result()`` replaces the statistics of
    those traces (exact trace-level figures for every trace, sampled span-level ones)."""
    from .sources import checked

    if isinstance(source, HttpSource):
        remote = RemoteStats(source)
        return remote.traces(), remote
    return checked(source), None
