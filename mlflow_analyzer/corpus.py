"""A realistic agent trace corpus with known problems, written with MLflow's own tracing API.

The corpus is a "travel-assistant" agent (root span ``travel_agent``) answering users in
multi-turn sessions: it loads memory, classifies the intent, rewrites the query, plans with
an LLM, calls tools and retrievers, and writes the answer with another LLM. Problems are
injected into chosen traces (rate limiting with retries, timeouts, auth errors in one hour,
a cascading failure, a slow tool, independent calls run one after another, a prompt that
grows every turn, an expensive model on a trivial task, an LLM span without token usage,
redundant identical calls, uninstrumented time, traces without a session, failing and
erroring judges), next to healthy distractors (fast tools and retrievers, cheap LLM calls
with usage, parallel calls, a tool legitimately called twice, dependent sequential calls,
caught errors, clean traces).

``build_corpus`` writes the traces into a tracking store and returns a JSON-serializable
manifest: the ground truth the findings engine's tests check against. ``ensure_corpus``
builds ``<directory>/mlflow.db`` + ``manifest.json`` once and reuses them.

Everything is deterministic for a seed except the ids MLflow generates (trace and span ids)
and, unless ``end_time`` is given, the clock the timestamps end at. With ``n_traces >= 100``
every problem kind has at least 3 traces (at least 2 sessions grow their prompt); smaller
corpora (down to 40) may miss some.

Two writers produce identical traces (same span JSON, metadata, tags, token and cost
columns; checked by the test suite):

* ``"fluent"`` -- spans go through ``mlflow.start_span_no_context`` and MLflow's synchronous
  exporter writes every span as it ends (several ms per span on SQLite), feedback goes
  through ``mlflow.log_feedback``.
* ``"bulk"`` -- the same spans through the same API and MLflow's own span processor and
  exporter (which compute costs, token roll-ups, size stats, previews), but the exporter's
  tracking client is swapped for a buffer for the duration of the build; the buffered
  ``TraceInfo`` objects (with their feedback attached, as MLflow does for an active trace)
  and ``Span`` objects are then written with the store's own ``start_trace`` and
  multi-trace ``log_spans``. About 5x faster. This relies on one private attribute
  (``MlflowV3SpanExporter._client``); if it is missing, ``"auto"`` falls back to fluent.
  Trace-level cost roll-ups can differ in the last float digit (summation order), nothing else.

On SQLite, both writers turn fsync off while building (see ``_fast_sqlite_commits``).
Measured on a shared 2-CPU machine, bulk: 180 traces ~3 s, 300 ~4 s, 1,000 ~11 s,
10,000 ~90 s (350 MB peak RSS); fluent: 300 ~16 s, 1,000 ~48 s.

Module top level imports the standard library only (mlflow is imported inside functions).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import random
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

CORPUS_VERSION = 3
DEFAULT_EXPERIMENT = "mlflow-analyzer-demo"
AGENT_SPAN = "travel_agent"
MAIN_BRANCH = "main"
FEATURE_BRANCH = "feature/parallel-tools"
REPO_URL = "https://github.com/acme-travel/travel-assistant"
DB_NAME = "mlflow.db"
MANIFEST_NAME = "manifest.json"

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
WINDOW_HOURS = 72
TURN_BUDGET_NS = 50 * NS_PER_S  # no turn lasts longer (worst case ~45 s: timeout + retries)

# Environment MLflow needs to write traces reliably (see CONTRIBUTING.md): the asynchronous
# exporter silently drops traces, and the model-catalog fetch hangs without network.
WRITE_ENVIRONMENT = {
    "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false",
    "MLFLOW_MODEL_CATALOG_URI": "",
    "MLFLOW_DISABLE_AGENT_HINT": "1",
}

PROBLEM_KINDS = (
    "rate_limit_exhausted",
    "rate_limit_recovered",
    "timeout",
    "fast_validation_error",
    "auth_error_cluster",
    "cascade",
    "slow_tool",
    "sequential_independent_calls",
    "growing_prompt",
    "expensive_model_simple_task",
    "llm_without_usage",
    "redundant_calls",
    "uninstrumented_time",
    "missing_session",
    "failing_assessment",
    "judge_error",
)

CATEGORIES = (
    "high_cost",
    "latency_issue",
    "error_pattern",
    "missing_instrumentation",
    "inefficient_pattern",
    "retry_issue",
)

# kind -> (expected category, other categories a reasonable engine may use)
_PROBLEM_CATEGORY = {
    "rate_limit_exhausted": ("retry_issue", ["error_pattern"]),
    "rate_limit_recovered": ("retry_issue", ["latency_issue"]),
    "timeout": ("error_pattern", ["latency_issue"]),
    "fast_validation_error": ("error_pattern", []),
    "auth_error_cluster": ("error_pattern", []),
    "cascade": ("error_pattern", []),
    "slow_tool": ("latency_issue", []),
    "sequential_independent_calls": ("latency_issue", ["inefficient_pattern"]),
    "growing_prompt": ("high_cost", ["inefficient_pattern"]),
    "expensive_model_simple_task": ("high_cost", ["inefficient_pattern"]),
    "llm_without_usage": ("missing_instrumentation", []),
    "redundant_calls": ("inefficient_pattern", ["high_cost", "latency_issue"]),
    "uninstrumented_time": ("missing_instrumentation", ["latency_issue"]),
    "missing_session": ("missing_instrumentation", []),
    "failing_assessment": ("error_pattern", []),
    "judge_error": ("missing_instrumentation", ["error_pattern"]),
}

# kind -> the findings' `kind` that reports it (findings.py / detectors); a retry sequence
# that recovered and one that ran out are one finding about the span's retries
_FINDING_KIND = {
    "rate_limit_exhausted": ("retries_exhausted",),
    "rate_limit_recovered": ("retries_exhausted", "retries"),
    "timeout": ("timeout",),
    "fast_validation_error": ("validation_error",),
    "auth_error_cluster": ("auth_error",),
    "cascade": ("upstream_unavailable",),
    "slow_tool": ("slow_span",),
    "sequential_independent_calls": ("sequential_independent_calls",),
    "growing_prompt": ("growing_prompt",),
    "expensive_model_simple_task": ("expensive_model_simple_task",),
    "llm_without_usage": ("llm_without_usage",),
    "redundant_calls": ("redundant_calls",),
    "uninstrumented_time": ("uninstrumented_time",),
    "missing_session": ("missing_session",),
    "failing_assessment": ("failing_assessment",),
    "judge_error": ("judge_error",),
}

# Span names that carry no injected problem in any trace: a finding naming one is wrong.
HEALTHY_SPAN_NAMES = (
    "load_memory",
    "summarize_history",
    "lookup_airport",
    "search_policies",
    "search_hotels",
)

MODELS = {
    # span name -> (model, provider)
    "summarize_history": ("claude-haiku-4-5", "anthropic"),
    "plan_next_step": ("claude-sonnet-4-5", "anthropic"),
    "generate_response": ("gpt-4.1", "openai"),
    "rewrite_query": ("gpt-4.1-mini", "openai"),
}
INTENT_MODEL_PROD = ("claude-opus-4-1", "anthropic")
INTENT_MODEL_STAGING = ("claude-haiku-4-5", "anthropic")

# Where the application code "raised" each injected error (shows up in stack traces).
CODE = {
    "plan_next_step": ("travel_agent/llm.py", 57, "call_claude"),
    "generate_response": ("travel_agent/llm.py", 112, "call_openai"),
    "search_flights": ("travel_agent/tools/flights.py", 41, "search_flights"),
    "create_booking": ("travel_agent/tools/booking.py", 73, "create_booking"),
    "charge_card": ("travel_agent/tools/payments.py", 29, "charge_card"),
    "check_visa_requirements": ("travel_agent/tools/visa.py", 18, "check_visa_requirements"),
    "gather_destination_info": ("travel_agent/agent.py", 148, "gather_destination_info"),
    "build_context": ("travel_agent/context.py", 22, "build_context"),
    "get_exchange_rate": ("travel_agent/tools/fx.py", 12, "get_exchange_rate"),
    "intent_llm": ("travel_agent/intent.py", 31, "classify_intent"),
    "rewrite_query": ("travel_agent/llm.py", 88, "rewrite_query"),
}

INTENT_WEIGHTS = (
    ("flight_search", 20),
    ("hotel_search", 15),
    ("trip_planning", 18),
    ("booking", 15),
    ("visa_question", 10),
    ("policy_question", 12),
    ("smalltalk", 10),
)

CITIES = (
    ("New York", "JFK", "US"), ("London", "LHR", "GB"), ("Paris", "CDG", "FR"),
    ("Tokyo", "HND", "JP"), ("Berlin", "BER", "DE"), ("Lisbon", "LIS", "PT"),
    ("Rome", "FCO", "IT"), ("Barcelona", "BCN", "ES"), ("Amsterdam", "AMS", "NL"),
    ("Singapore", "SIN", "SG"), ("Sydney", "SYD", "AU"), ("Toronto", "YYZ", "CA"),
    ("Mexico City", "MEX", "MX"), ("Dubai", "DXB", "AE"), ("Seoul", "ICN", "KR"),
    ("San Francisco", "SFO", "US"), ("Chicago", "ORD", "US"), ("Istanbul", "IST", "TR"),
    ("Bangkok", "BKK", "TH"), ("Cape Town", "CPT", "ZA"),
)
AIRLINES = (("BA", "British Airways"), ("AF", "Air France"), ("LH", "Lufthansa"),
            ("UA", "United"), ("DL", "Delta"), ("NH", "ANA"), ("TP", "TAP Air Portugal"),
            ("EK", "Emirates"), ("SQ", "Singapore Airlines"), ("KL", "KLM"))
HOTELS = ("Grand Central Hotel", "Harbor View Inn", "The Linden", "Casa Azul", "Hotel Meridian",
          "Parkside Suites", "Old Town Residence", "Skyline Tower Hotel", "Riverside Lodge")
CURRENCY = {"US": "USD", "GB": "GBP", "FR": "EUR", "JP": "JPY", "DE": "EUR", "PT": "EUR",
            "IT": "EUR", "ES": "EUR", "NL": "EUR", "SG": "SGD", "AU": "AUD", "CA": "CAD",
            "MX": "MXN", "AE": "AED", "KR": "KRW", "TR": "TRY", "TH": "THB", "ZA": "ZAR"}

AGENT_SYSTEM_PROMPT = (
    "You are Wayfarer, the travel assistant of Acme Travel. Help the user search flights and "
    "hotels, plan trips, answer visa and policy questions and make bookings. Use the tools; "
    "never invent prices, times or policies."
)


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def demo_directory() -> Path:
    """Where the ``demo`` command keeps its corpus: ``$MLFLOW_ANALYZER_HOME`` or
    ``~/.mlflow-analyzer/demo``."""
    home = os.environ.get("MLFLOW_ANALYZER_HOME")
    if home:
        return Path(home).expanduser()
    return Path.home() / ".mlflow-analyzer" / "demo"


def configure_environment() -> None:
    """Set the environment MLflow needs to write traces reliably (call before importing
    mlflow; ``build_corpus`` calls it and re-initializes MLflow's tracer anyway)."""
    for key, value in WRITE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    # Async logging must be off whatever the caller set: it silently drops traces.
    os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def build_corpus(
    tracking_uri: str,
    experiment_name: str,
    *,
    n_traces: int = 300,
    seed: int = 7,
    end_time: datetime | None = None,
    writer: str = "auto",
    artifact_location: str | None = None,
) -> dict:
    """Write ``n_traces`` agent traces into a new (or empty) experiment and return the manifest.

    ``writer``: ``"fluent"``, ``"bulk"`` or ``"auto"`` (bulk when available). Raises
    ``ValueError`` for bad arguments or a non-empty experiment and ``RuntimeError`` if the
    store does not hold exactly the traces, spans and assessments written.
    """
    if n_traces < 40:
        raise ValueError("n_traces must be at least 40 (every problem needs a few traces)")
    if writer not in ("auto", "fluent", "bulk"):
        raise ValueError(f"writer must be 'auto', 'fluent' or 'bulk', not {writer!r}")
    if end_time is None:
        end_time = datetime.now(timezone.utc).replace(microsecond=0)
    elif end_time.tzinfo is None:
        end_time = end_time.replace(tzinfo=timezone.utc)
    end_ns = int(end_time.timestamp()) * NS_PER_S

    configure_environment()
    started = time.perf_counter()
    plan = _make_plan(n_traces, seed, end_ns)

    import mlflow
    from mlflow.tracing.provider import reset as reset_tracing

    with _quiet_mlflow_logs(), _use_tracking_uri(mlflow, tracking_uri):
        reset_tracing()  # pick up WRITE_ENVIRONMENT even if mlflow was initialized before
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            experiment_id = client.create_experiment(
                experiment_name, artifact_location=artifact_location
            )
        else:
            experiment_id = experiment.experiment_id
            existing = _count_store(tracking_uri, experiment_id)
            if existing["traces"]:
                raise ValueError(
                    f"experiment {experiment_name!r} already holds {existing['traces']} "
                    "traces; build into a new experiment or store"
                )
        with _fast_sqlite_commits(tracking_uri):
            out = _Writer.open(mlflow, experiment_id, writer)
            try:
                results = _emit_all(mlflow, out, plan, experiment_id)
            except BaseException:
                out.abort()
                raise
            out.close()
        reset_tracing()
        counts = _count_store(tracking_uri, experiment_id)

    expected = {
        "traces": len(results),
        "spans": sum(r.span_count for r in results),
        "assessments": sum(len(plan.traces[r.index].feedback) for r in results),
        "in_progress": 0,
    }
    for key, want in expected.items():
        got = counts.get(key)
        if got is not None and got != want:
            raise RuntimeError(
                f"corpus incomplete: the store holds {got} {key}, {want} were written "
                f"(writer={out.name})"
            )
    manifest = _manifest(plan, results, experiment_id, experiment_name, tracking_uri,
                         n_traces, seed, end_time, out.name)
    manifest["build_seconds"] = round(time.perf_counter() - started, 2)
    return manifest


def ensure_corpus(
    directory: str | Path,
    *,
    n_traces: int = 300,
    experiment_name: str = DEFAULT_EXPERIMENT,
    seed: int = 7,
    writer: str = "auto",
) -> dict:
    """Build ``directory/mlflow.db`` and ``directory/manifest.json`` once, then reuse them.

    Reused when the manifest was made by this corpus version with the same ``n_traces``,
    ``seed`` and ``experiment_name`` and the store still holds exactly its traces (none
    IN_PROGRESS); otherwise the directory's store is deleted and rebuilt from scratch.
    """
    directory = Path(directory).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    db_path = directory / DB_NAME
    manifest_path = directory / MANIFEST_NAME
    params = _params(n_traces, seed, experiment_name)
    with _directory_lock(directory):
        manifest = _reusable_manifest(manifest_path, db_path, params)
        if manifest is not None:
            return manifest
        with contextlib.suppress(FileNotFoundError):
            manifest_path.unlink()
        _forget_cached_store(db_path)
        for path in (db_path, Path(str(db_path) + "-journal"), Path(str(db_path) + "-wal"),
                     Path(str(db_path) + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        shutil.rmtree(directory / "artifacts", ignore_errors=True)
        manifest = build_corpus(
            "sqlite:///" + str(db_path),
            experiment_name,
            n_traces=n_traces,
            seed=seed,
            writer=writer,
            artifact_location=(directory / "artifacts").as_uri(),
        )
        manifest["params"] = params
        tmp = manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
        os.replace(tmp, manifest_path)
        return manifest


# --------------------------------------------------------------------------------------
# Reuse, counting, locking
# --------------------------------------------------------------------------------------


def _params(n_traces: int, seed: int, experiment_name: str) -> dict:
    return {"n_traces": n_traces, "seed": seed, "experiment_name": experiment_name,
            "corpus_version": CORPUS_VERSION}


def _reusable_manifest(manifest_path: Path, db_path: Path, params: dict) -> dict | None:
    if not (manifest_path.is_file() and db_path.is_file()):
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("params") != params:
        return None
    try:
        counts = _sqlite_counts(db_path, str(manifest["experiment_id"]))
    except (sqlite3.Error, KeyError):
        return None
    if counts["traces"] != manifest.get("trace_count") or counts["in_progress"]:
        return None
    if counts["spans"] != manifest.get("span_count"):
        return None
    return manifest


def _sqlite_path(tracking_uri: str) -> Path | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri[len("sqlite:///"):]
    if path in ("", ":memory:"):
        return None
    return Path(path)


def _sqlite_counts(db_path: Path, experiment_id: str) -> dict:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        q = lambda sql: con.execute(sql, (experiment_id,)).fetchone()[0]  # noqa: E731
        return {
            "traces": q("SELECT COUNT(*) FROM trace_info WHERE experiment_id = ?"),
            "in_progress": q("SELECT COUNT(*) FROM trace_info WHERE experiment_id = ? "
                             "AND status = 'IN_PROGRESS'"),
            "spans": q("SELECT COUNT(*) FROM spans WHERE experiment_id = ?"),
            "assessments": q("SELECT COUNT(*) FROM assessments a JOIN trace_info t "
                             "ON a.trace_id = t.request_id WHERE t.experiment_id = ?"),
        }
    finally:
        con.close()


def _count_store(tracking_uri: str, experiment_id: str) -> dict:
    """Trace/span/assessment counts; spans and assessments only for SQLite stores."""
    db_path = _sqlite_path(tracking_uri)
    if db_path is not None:
        return _sqlite_counts(db_path, str(experiment_id))
    import mlflow

    traces = mlflow.search_traces(locations=[str(experiment_id)], return_type="list",
                                  include_spans=False, max_results=None)
    return {
        "traces": len(traces),
        "in_progress": sum(1 for t in traces if str(t.info.state).endswith("IN_PROGRESS")),
        "spans": None,
        "assessments": None,
    }


def _forget_cached_store(db_path: Path) -> None:
    """Drop MLflow's cached store and engine for a SQLite file about to be deleted.

    MLflow caches one store per URI and one SQLAlchemy engine per database URI; after the
    file is replaced, the cached ones would still read the deleted file (or a new file without
    tables). Best effort: these caches are private.
    """
    if "mlflow" not in sys.modules:
        return
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    except ImportError:  # pragma: no cover - other MLflow layout
        return
    engines = getattr(SqlAlchemyStore, "_engine_map", {})
    for uri in list(engines):
        path = _sqlite_path(uri)
        if path is not None and path.resolve() == db_path.resolve():
            engine = engines.pop(uri, None)
            if engine is not None:
                engine.dispose()
    cached = getattr(type(_tracking_store_registry), "_get_store_with_resolved_uri", None)
    if hasattr(cached, "cache_clear"):
        cached.cache_clear()


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _use_tracking_uri(mlflow: Any, uri: str) -> Iterator[None]:
    """Point MLflow (and its tracer) at ``uri`` and restore the previous URI afterwards."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous = getattr(tracking_utils, "_tracking_uri", None)
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


@contextlib.contextmanager
def _fast_sqlite_commits(tracking_uri: str) -> Iterator[None]:
    """While building, SQLite commits skip fsync and keep the rollback journal in memory.

    Each span or trace MLflow writes is its own transaction, and on SQLite a commit is
    dominated by fsync. The data written is unchanged; a crash mid-build can leave a broken
    file, which ``ensure_corpus`` detects and rebuilds (its manifest is written last). Both
    pragmas are per connection: MLflow's engine is disposed before and after, so no pooled
    connection keeps them.
    """
    if _sqlite_path(tracking_uri) is None:
        yield
        return
    try:
        import sqlalchemy
        from mlflow.tracking._tracking_service.utils import _get_store

        engine = _get_store(tracking_uri).engine
    except Exception:  # pragma: no cover - other MLflow layout: just slower
        yield
        return

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous = OFF")
        cursor.execute("PRAGMA journal_mode = MEMORY")
        cursor.close()

    sqlalchemy.event.listen(engine, "connect", on_connect)
    engine.dispose()
    try:
        yield
    finally:
        sqlalchemy.event.remove(engine, "connect", on_connect)
        engine.dispose()


@contextlib.contextmanager
def _quiet_mlflow_logs() -> Iterator[None]:
    names = ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration",
             "mlflow.tracking.fluent", "mlflow.store.db.db_types")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# --------------------------------------------------------------------------------------
# Plan: who asks what, when, and which problems each trace carries (pure Python)
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Session:
    session_id: str | None
    user_id: str | None
    branch: str
    environment: str
    n_turns: int
    start_ns: int
    origin: tuple
    destination: tuple
    date: str
    nights: int
    passengers: int
    growing: bool = False
    turn_starts: list = field(default_factory=list)  # ns, one per turn
    auth_turns: set = field(default_factory=set)  # 0-based turns inside the auth hour
    trace_indexes: list = field(default_factory=list)


@dataclass(eq=False)
class _TracePlan:
    index: int
    session: _Session
    turn: int
    intent: str
    problems: set = field(default_factory=set)
    feedback: list = field(default_factory=list)  # [dict(name, value, rationale, ...)]
    growing_input_tokens: int | None = None

    @property
    def start_ns(self) -> int:
        return self.session.turn_starts[self.turn - 1]

    @property
    def fatal(self) -> bool:
        return bool(self.problems & {"rate_limit_exhausted", "cascade", "auth_error_cluster"})


@dataclass
class _Plan:
    seed: int
    end_ns: int
    sessions: list
    traces: list
    commits: dict
    auth_window: tuple


def _commit(seed: int, branch: str) -> str:
    return hashlib.sha1(f"travel-assistant:{seed}:{branch}".encode()).hexdigest()


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _quota(n: int, rate: float, minimum: int) -> int:
    return max(minimum, round(n * rate))


def _pick(rng: random.Random, pool: list, k: int) -> list:
    pool = list(pool)
    if k >= len(pool):
        return pool
    return rng.sample(pool, k)


def _make_plan(n: int, seed: int, end_ns: int) -> _Plan:
    rng = random.Random(seed)
    window_start = end_ns - WINDOW_HOURS * 3600 * NS_PER_S
    auth_start = end_ns - 40 * 3600 * NS_PER_S
    auth_window = (auth_start, auth_start + 3600 * NS_PER_S)
    commits = {MAIN_BRANCH: _commit(seed, MAIN_BRANCH), FEATURE_BRANCH: _commit(seed, FEATURE_BRANCH)}

    # Sessions of 3-8 turns; about 10% of traces are single requests without a session.
    n_sessionless = _quota(n, 0.10, 3)
    lengths: list[int] = []
    while sum(lengths) < n - n_sessionless:
        lengths.append(rng.choices([3, 4, 5, 6, 7, 8], weights=[22, 22, 18, 14, 12, 12])[0])
    lengths[-1] -= sum(lengths) - (n - n_sessionless)
    if lengths[-1] < 3:
        n_sessionless += lengths.pop()
    n_sessions = len(lengths)

    users = [f"user-{_hex(rng, 6)}" for _ in range(max(3, round(n_sessions * 0.6)))]
    feature = set(rng.sample(range(n_sessions), _quota(n_sessions, 0.2, 2)))
    main_ids = [i for i in range(n_sessions) if i not in feature]
    staging = set(rng.sample(main_ids, round(len(main_ids) * 0.15)))

    def context(r: random.Random) -> dict:
        origin, destination = r.sample(CITIES, 2)
        while CURRENCY[origin[2]] == CURRENCY[destination[2]]:
            origin, destination = r.sample(CITIES, 2)
        day = datetime.fromtimestamp(end_ns / NS_PER_S, timezone.utc) + timedelta(days=r.randint(7, 90))
        return {"origin": origin, "destination": destination, "date": day.strftime("%Y-%m-%d"),
                "nights": r.randint(2, 12), "passengers": r.choice([1, 1, 1, 2, 2, 3, 4])}

    sessions: list[_Session] = []
    for i, length in enumerate(lengths):
        branch = FEATURE_BRANCH if i in feature else MAIN_BRANCH
        env = "staging" if (i in feature or i in staging) else "prod"
        sessions.append(_Session(
            session_id=f"sess-{_hex(rng, 12)}", user_id=rng.choice(users), branch=branch,
            environment=env, n_turns=length, start_ns=0, **context(rng)))
    for _ in range(n_sessionless):
        sessions.append(_Session(
            session_id=None, user_id=None, branch=MAIN_BRANCH, environment="prod", n_turns=1,
            start_ns=0, **context(rng)))

    # Times. A turn starts TURN_BUDGET (longer than any trace) plus a think time after the
    # previous one, so every start time is known here. The prod API key was rotated for one
    # hour (auth_window): every prod call to OpenAI in it fails; a few sessions are put in
    # that hour so small corpora have the cluster too.
    session_main_prod = [s for s in sessions[:n_sessions]
                         if s.branch == MAIN_BRANCH and s.environment == "prod"]
    forced = {id(s) for s in _pick(rng, session_main_prod, _quota(n_sessions, 0.005, 1))}
    forced |= {id(s) for s in _pick(rng, sessions[n_sessions:], _quota(n, 0.002, 2))}
    for s in sessions:
        if id(s) in forced:
            s.start_ns = auth_window[0] + rng.randrange(0, (15 if s.session_id else 55) * 60 * NS_PER_S)
        else:
            s.start_ns = rng.randrange(window_start, end_ns - 3600 * NS_PER_S)
    for s in sessions:
        cur = s.start_ns
        s.turn_starts = []
        for _ in range(s.n_turns):
            s.turn_starts.append(cur)
            cur += TURN_BUDGET_NS + rng.randint(15, 150) * NS_PER_S

    def in_window(ns: int) -> bool:
        return auth_window[0] <= ns < auth_window[1]

    for s in sessions:
        s.auth_turns = {k for k, ns in enumerate(s.turn_starts)
                        if s.environment == "prod" and in_window(ns)}
    # Prompt growth: some long prod sessions on main send the whole history every turn.
    growing_pool = [s for s in session_main_prod if s.n_turns >= 4 and not s.auth_turns]
    for s in _pick(rng, growing_pool, _quota(n_sessions, 0.12, 2)):
        s.growing = True

    # Traces and intents (exact quotas, shuffled).
    traces: list[_TracePlan] = []
    for s in sessions:
        for turn in range(1, s.n_turns + 1):
            s.trace_indexes.append(len(traces))
            traces.append(_TracePlan(index=len(traces), session=s, turn=turn, intent=""))
    total_weight = sum(w for _, w in INTENT_WEIGHTS)
    intents: list[str] = []
    for name, weight in INTENT_WEIGHTS:
        intents += [name] * round(n * weight / total_weight)
    while len(intents) < n:
        intents.append("flight_search")
    intents = intents[:n]
    rng.shuffle(intents)
    for t, intent in zip(traces, intents):
        t.intent = intent
    # Every trace in the auth hour fails at the OpenAI call (unless it aborts before).
    for t in traces:
        if t.turn - 1 in t.session.auth_turns:
            t.problems.add("auth_error_cluster")

    def pool(pred) -> list:
        return [t for t in traces if pred(t)]

    def choose(kind: str, candidates: list, k: int) -> None:
        for t in _pick(rng, candidates, k):
            t.problems.add(kind)

    def choose_peak(kind: str, candidates: list, k: int) -> None:
        """Rate limits mostly hit at peak hours (14:00-17:00 UTC)."""
        peak = [t for t in candidates if 14 <= (t.start_ns // NS_PER_S // 3600) % 24 < 17]
        chosen = _pick(rng, peak, round(k * 0.8))
        taken = {id(t) for t in chosen}
        rest = [t for t in candidates if id(t) not in taken]
        for t in chosen + _pick(rng, rest, k - len(chosen)):
            t.problems.add(kind)

    # Caught errors and recovered retries keep the trace OK: not in traces that fail anyway.
    choose("timeout", pool(lambda t: t.intent in ("flight_search", "booking") and not t.fatal),
           _quota(n, 0.012, 3))
    choose("fast_validation_error",
           pool(lambda t: t.intent == "booking" and not t.fatal and "timeout" not in t.problems),
           _quota(n, 0.02, 3))
    choose("cascade",
           pool(lambda t: t.intent == "booking" and not t.problems and not t.session.growing),
           _quota(n, 0.015, 3))
    choose_peak("rate_limit_exhausted",
                pool(lambda t: t.intent != "smalltalk" and not t.session.growing and not t.fatal),
                _quota(n, 0.015, 3))
    choose_peak("rate_limit_recovered",
                pool(lambda t: t.intent != "smalltalk" and not t.fatal),
                _quota(n, 0.035, 3))
    choose("redundant_calls",
           pool(lambda t: t.intent == "hotel_search" and "rate_limit_exhausted" not in t.problems),
           _quota(n, 0.03, 3))
    choose("uninstrumented_time", traces, _quota(n, 0.12, 3))

    # Always-on patterns (depend on the configuration, not on chance).
    for t in traces:
        s = t.session
        if s.session_id is None:
            t.problems.add("missing_session")
        if s.environment == "prod":
            t.problems.add("expensive_model_simple_task")
        if t.intent in ("flight_search", "hotel_search", "visa_question", "policy_question"):
            t.problems.add("llm_without_usage")
        reaches_tools = "rate_limit_exhausted" not in t.problems
        if t.intent == "trip_planning" and s.branch == MAIN_BRANCH and reaches_tools:
            t.problems.add("sequential_independent_calls")
        if t.intent == "visa_question" and reaches_tools:
            t.problems.add("slow_tool")
        if s.growing:
            t.problems.add("growing_prompt")
    # Growing prompts: 2k input tokens on the first turn to ~25k on the last.
    for s in sessions:
        if not s.growing:
            continue
        step = (25_000 - 2_000) / (s.n_turns - 1)
        for k, idx in enumerate(s.trace_indexes):
            jitter = rng.randint(-150, 150) if 0 < k < s.n_turns - 1 else 0
            traces[idx].growing_input_tokens = int(2_000 + step * k + jitter)

    _plan_feedback(rng, traces, n)
    return _Plan(seed=seed, end_ns=end_ns, sessions=sessions, traces=traces, commits=commits,
                 auth_window=auth_window)


RELEVANCE_FAIL_TIMEOUT = ("The user asked for flight options but the answer only apologises "
                          "that the search is unavailable and offers no alternative.")
RELEVANCE_FAIL_VALIDATION = ("The response asks the user to re-enter the date instead of "
                             "completing the booking.")
RELEVANCE_FAIL_RATIONALES = (
    "The answer talks about hotels although the user asked about flights.",
    "The response is generic and does not use the destination the user gave.",
    "The answer repeats the previous turn instead of addressing the follow-up question.",
)
RELEVANCE_PASS_RATIONALES = (
    "The response answers the user's question directly with concrete options.",
    "The answer addresses the request and uses the tool results.",
    "Relevant: it lists the requested information for the user's destination and dates.",
)


def _plan_feedback(rng: random.Random, traces: list, n: int) -> None:
    """Judges run on traces that produced an answer (state OK)."""
    ok = [t for t in traces if not t.fatal]
    apology = {id(t) for t in ok if t.problems & {"timeout", "fast_validation_error"}}
    judged = set(apology)
    for t in ok:
        if rng.random() < 0.55:
            judged.add(id(t))
    for t in ok:
        if id(t) not in judged:
            continue
        # The apologies after a caught error are judged irrelevant; a few other answers too.
        fail = id(t) in apology or rng.random() < 0.07
        if not fail:
            rationale = rng.choice(RELEVANCE_PASS_RATIONALES)
        elif "timeout" in t.problems:
            rationale = RELEVANCE_FAIL_TIMEOUT
        elif "fast_validation_error" in t.problems:
            rationale = RELEVANCE_FAIL_VALIDATION
        else:
            rationale = rng.choice(RELEVANCE_FAIL_RATIONALES)
        t.feedback.append({
            "name": "relevance", "value": not fail, "source": ("LLM_JUDGE", "openai:/gpt-4.1-mini"),
            "rationale": rationale,
        })
        if fail:
            t.problems.add("failing_assessment")
    # Groundedness: the judge's own calls were rate limited on some traces.
    grounded = [t for t in ok if rng.random() < 0.45]
    errored = set(id(t) for t in _pick(rng, grounded, _quota(n, 0.03, 3)))
    for t in grounded:
        if id(t) in errored:
            t.feedback.append({
                "name": "groundedness", "value": None, "source": ("LLM_JUDGE", "openai:/gpt-4.1-mini"),
                "error": ("RATE_LIMIT", "Judge model call failed: Error code: 429 - Rate limit "
                          "reached for gpt-4.1-mini on requests per min (RPM): Limit 500"),
            })
            t.problems.add("judge_error")
        else:
            yes = rng.random() < 0.93
            t.feedback.append({
                "name": "groundedness", "value": "yes" if yes else "no",
                "source": ("LLM_JUDGE", "openai:/gpt-4.1-mini"),
                "rationale": "Every claim is supported by the tool outputs." if yes else
                "The price quoted is not present in any tool output.",
            })
    # A few users clicked thumbs up/down (on the root span).
    for t in _pick(rng, [t for t in ok if t.session.user_id], _quota(n, 0.03, 3)):
        up = rng.random() < 0.7
        t.feedback.append({
            "name": "user_thumbs", "value": up, "source": ("HUMAN", t.session.user_id),
            "rationale": "great, thanks" if up else "not what I asked for", "on_root_span": True,
        })


# --------------------------------------------------------------------------------------
# Synthesis: a trace as a tree of span specs with explicit times (pure Python)
# --------------------------------------------------------------------------------------


@dataclass
class _Error:
    type: str
    message: str
    code: tuple  # (file, line, function)
    detail: str = ""

    def stacktrace(self) -> str:
        file, line, func = self.code
        return (
            "Traceback (most recent call last):\n"
            f'  File "/srv/travel-assistant/travel_agent/agent.py", line 204, in run_turn\n'
            "    result = await self.step(state)\n"
            f'  File "/srv/travel-assistant/{file}", line {line}, in {func}\n'
            f"    {self.detail or 'return await self._client.request(payload)'}\n"
            f"{self.type}: {self.message}"
        )


@dataclass(eq=False)
class _SpanSpec:
    name: str
    span_type: str
    parent: "_SpanSpec | None"
    start_ns: int
    end_ns: int = 0
    inputs: Any = None
    outputs: Any = None
    attributes: dict = field(default_factory=dict)
    usage: dict | None = None
    error: _Error | None = None
    metadata: dict | None = None  # root only: trace metadata
    tags: dict | None = None  # root only: trace tags
    live: Any = None

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / NS_PER_MS


class _TraceBuilder:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.specs: list[_SpanSpec] = []

    def open(self, name: str, span_type: str, parent: _SpanSpec | None, start_ns: int,
             inputs: Any = None, **attributes: Any) -> _SpanSpec:
        spec = _SpanSpec(name, span_type, parent, start_ns, inputs=inputs, attributes=attributes)
        self.specs.append(spec)
        return spec

    def leaf(self, name: str, span_type: str, parent: _SpanSpec, start_ns: int, ms: float,
             inputs: Any = None, outputs: Any = None, usage: dict | None = None,
             error: _Error | None = None, model: tuple | None = None) -> _SpanSpec:
        attrs = {}
        if model:
            attrs = {"mlflow.llm.model": model[0], "mlflow.llm.provider": model[1]}
        spec = _SpanSpec(name, span_type, parent, start_ns, start_ns + int(ms * NS_PER_MS),
                         inputs=inputs, outputs=outputs, attributes=attrs, usage=usage, error=error)
        self.specs.append(spec)
        return spec

    def gap(self) -> int:
        """Agent overhead between two steps."""
        return int(self.rng.uniform(1.0, 8.0) * NS_PER_MS)

    def lognormal_ms(self, median: float, sigma: float, low: float, high: float) -> float:
        return min(high, max(low, median * math.exp(self.rng.gauss(0.0, sigma))))


def _usage(input_tokens: int, output_tokens: int) -> dict:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens}


def _anthropic_out(text: str | None = None, tool: tuple | None = None) -> dict:
    if tool:
        return {"role": "assistant", "stop_reason": "tool_use",
                "content": [{"type": "tool_use", "id": f"toolu_{tool[2]}", "name": tool[0],
                             "input": tool[1]}]}
    return {"role": "assistant", "stop_reason": "end_turn", "content": [{"type": "text", "text": text}]}


def _openai_out(text: str) -> dict:
    return {"choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}]}


def _user_message(t: _TracePlan, rng: random.Random) -> str:
    s = t.session
    o, d = s.origin[0], s.destination[0]
    templates = {
        "flight_search": [f"Find me a flight from {o} to {d} on {s.date}",
                          f"Any nonstop flights {o} to {d} around {s.date}?",
                          f"What's the cheapest way to fly from {o} to {d} on {s.date}?"],
        "hotel_search": [f"Find a hotel in {d} for {s.nights} nights from {s.date}, under $250 a night",
                         f"I need a hotel near the center of {d}, {s.nights} nights, "
                         f"checking in {s.date}"],
        "trip_planning": [f"I'm visiting {d} from {s.date} for {s.nights} days, what should I plan?",
                          f"Help me plan {s.nights} days in {d} starting {s.date}"],
        "booking": [f"Book the morning flight from {o} to {d} on {s.date} for "
                    f"{s.passengers} passenger(s)",
                    f"Please book {o} to {d} on {s.date}, {s.passengers} adult(s), economy"],
        "visa_question": [f"Do I need a visa to visit {d} for {s.nights} days with a "
                          f"{s.origin[2]} passport?",
                          f"What are the entry requirements for {d} for {s.origin[2]} citizens?"],
        "policy_question": ["What's your cancellation policy for flights booked through you?",
                            "Can I change the date of my booking without a fee?",
                            "Is checked baggage included in the fares you show?"],
        "smalltalk": ["Thanks, that's all for now!", "hi there", "great, thank you"],
    }
    return rng.choice(templates[t.intent])


def _answer(t: _TracePlan, rng: random.Random, problems: set) -> str:
    s = t.session
    d = s.destination[0]
    if "timeout" in problems:
        return ("Sorry, the flight search is not responding right now. Could you try again in a "
                "few minutes?")
    if "fast_validation_error" in problems:
        return "I couldn't read the travel date. Could you give it as YYYY-MM-DD?"
    answers = {
        "flight_search": f"I found 3 flights from {s.origin[0]} to {d} on {s.date}; the cheapest "
                         f"is ${rng.randint(180, 900)} with one stop.",
        "hotel_search": f"Here are 3 hotels in {d} for {s.nights} nights; {rng.choice(HOTELS)} is "
                        f"the best value at ${rng.randint(90, 240)} a night.",
        "trip_planning": f"For {s.nights} days in {d}: expect mild weather, stay near the old town, "
                         "and don't miss the weekend food market.",
        "booking": f"Your flight to {d} on {s.date} is booked for {s.passengers} passenger(s). "
                   "A confirmation email is on its way.",
        "visa_question": f"With a {s.origin[2]} passport you can stay in {d} up to 90 days "
                         "without a visa; your passport must be valid for 6 more months.",
        "policy_question": "Flights can be cancelled free of charge within 24 hours of booking; "
                           "after that the airline's fare rules apply.",
        "smalltalk": "You're welcome! Have a great trip.",
    }
    return answers[t.intent]


def _documents(rng: random.Random, topic: str, city: str, n: int) -> list:
    docs = []
    for i in range(n):
        docs.append({
            "id": f"{topic}-{_hex(rng, 8)}",
            "page_content": f"{city} {topic} guide, section {i + 1}: practical information for "
                            f"travellers, updated {rng.randint(1, 28)} days ago.",
            "metadata": {"doc_uri": f"kb://{topic}/{city.lower().replace(' ', '-')}#{i + 1}",
                         "chunk_id": str(i + 1), "score": round(rng.uniform(0.55, 0.95), 3)},
        })
    return docs


def _synthesize(t: _TracePlan, start_ns: int, commits: dict, seed: int) -> _TraceBuilder:
    """The spans of one turn; times are explicit, so nothing sleeps."""
    rng = random.Random(f"{seed}:{t.index}")
    b = _TraceBuilder(rng)
    s = t.session
    problems = t.problems
    message = _user_message(t, rng)
    metadata = {
        "mlflow.source.git.branch": s.branch,
        "mlflow.source.git.commit": commits[s.branch],
        "mlflow.source.git.repoURL": REPO_URL,
        "mlflow.source.name": "travel_agent/server.py",
        "mlflow.user": "svc-travel-agent",
    }
    if s.session_id:
        metadata["mlflow.trace.session"] = s.session_id
        metadata["mlflow.trace.user"] = s.user_id
    root_inputs = {"message": message}
    if s.session_id:
        root_inputs["turn"] = t.turn
    root = b.open(AGENT_SPAN, "AGENT", None, start_ns, inputs=root_inputs)
    root.metadata = metadata
    root.tags = {"environment": s.environment,
                 "agent_version": "2.3.0" if s.branch == MAIN_BRANCH else "2.4.0-rc1"}
    cur = start_ns + int(rng.uniform(2, 6) * NS_PER_MS)
    fatal: _SpanSpec | None = None  # the deepest span whose error is uncaught

    # 1. Context: memory, history summary, and (sometimes) a slow uninstrumented profile fetch.
    ctx = b.open("build_context", "CHAIN", root, cur,
                 inputs={"session_id": s.session_id, "turn": t.turn})
    mem = b.leaf("load_memory", "MEMORY", ctx, cur + NS_PER_MS // 2, rng.uniform(8, 35),
                 inputs={"session_id": s.session_id, "user_id": s.user_id},
                 outputs={"turns": t.turn - 1, "facts": [f"home_airport={s.origin[1]}"]})
    cur = mem.end_ns + b.gap()
    if t.turn >= 3:
        summ = b.leaf("summarize_history", "LLM", ctx, cur, rng.uniform(250, 650),
                      inputs={"model": MODELS["summarize_history"][0], "max_tokens": 300,
                              "messages": [{"role": "user", "content":
                                            f"Summarize the conversation so far ({t.turn - 1} turns)."}]},
                      outputs=_anthropic_out(f"User is planning a trip from {s.origin[0]} to "
                                             f"{s.destination[0]} around {s.date}."),
                      usage=_usage(rng.randint(600, 1800), rng.randint(80, 200)),
                      model=MODELS["summarize_history"])
        cur = summ.end_ns
    if "uninstrumented_time" in problems:
        cur += int(rng.uniform(1800, 2600) * NS_PER_MS)  # fetch_user_profile(): not traced
    ctx.end_ns = cur + int(rng.uniform(2, 10) * NS_PER_MS)
    ctx.outputs = {"context_tokens": rng.randint(300, 900)}
    cur = ctx.end_ns + b.gap()

    # 2. Intent: a one-word classification (on an opus-class model in prod).
    cls = b.open("classify_intent", "CLASSIFIER", root, cur, inputs={"message": message})
    model = INTENT_MODEL_PROD if s.environment == "prod" else INTENT_MODEL_STAGING
    llm_ms = rng.uniform(350, 750) if model == INTENT_MODEL_PROD else rng.uniform(150, 350)
    intent_span = b.leaf(
        "intent_llm", "CHAT_MODEL", cls, cur + NS_PER_MS, llm_ms,
        inputs={"model": model[0], "max_tokens": 5, "messages": [
            {"role": "system", "content": "Classify the user's intent. Answer with one word: "
             + ", ".join(i for i, _ in INTENT_WEIGHTS) + "."},
            {"role": "user", "content": message}]},
        outputs=_anthropic_out(t.intent), usage=_usage(rng.randint(140, 230), rng.randint(1, 3)),
        model=model)
    cls.end_ns = intent_span.end_ns + int(rng.uniform(1, 4) * NS_PER_MS)
    cls.outputs = {"intent": t.intent}
    cur = cls.end_ns + b.gap()

    # 3. Query rewrite (streamed without usage: no token counts recorded).
    if t.intent in ("flight_search", "hotel_search", "visa_question", "policy_question"):
        rq = b.leaf("rewrite_query", "LLM", root, cur, rng.uniform(250, 550),
                    inputs={"model": MODELS["rewrite_query"][0], "stream": True, "messages": [
                        {"role": "system", "content": "Rewrite the request as a search query."},
                        {"role": "user", "content": message}]},
                    outputs=_openai_out(f"{t.intent.replace('_', ' ')} {s.origin[1]} "
                                        f"{s.destination[1]} {s.date}"),
                    model=MODELS["rewrite_query"])
        cur = rq.end_ns + b.gap()

    # 4. Retrieval for the planner's context (slower on the feature branch: new reranker).
    if t.intent in ("trip_planning", "visa_question"):
        topic, query = (("destinations", f"things to do in {s.destination[0]}")
                        if t.intent == "trip_planning"
                        else ("visas", f"entry requirements {s.destination[2]}"))
        kb = b.leaf("search_knowledge_base", "RETRIEVER", root, cur,
                    rng.uniform(80, 180) if s.branch == MAIN_BRANCH else rng.uniform(450, 800),
                    inputs={"query": query, "top_k": 4},
                    outputs=_documents(rng, topic, s.destination[0], 4))
        cur = kb.end_ns + b.gap()
    elif t.intent == "booking":
        pol = b.leaf("search_policies", "RETRIEVER", root, cur, rng.uniform(40, 110),
                     inputs={"query": "change and cancellation rules", "top_k": 3},
                     outputs=_documents(rng, "policies", "booking", 3))
        cur = pol.end_ns + b.gap()

    # 5. Planning call (rate limited in some traces: retried with 1s/2s/4s backoff).
    tool_for_intent = {"flight_search": "search_flights", "hotel_search": "search_hotels",
                       "trip_planning": "gather_destination_info", "booking": "create_booking",
                       "visa_question": "check_visa_requirements", "policy_question": "search_policies"}
    if t.intent != "smalltalk":
        plan_inputs = {"model": MODELS["plan_next_step"][0], "max_tokens": 1024,
                       "system": AGENT_SYSTEM_PROMPT,
                       "tools": sorted(set(tool_for_intent.values())
                                       | {"get_exchange_rate", "lookup_airport"}),
                       "messages": [{"role": "user", "content": message}]}
        failures = 0
        if "rate_limit_exhausted" in problems:
            failures = 4
        elif "rate_limit_recovered" in problems:
            failures = rng.choice([1, 1, 2])
        for attempt in range(min(failures, 4)):
            err = _Error("RateLimitError",
                         "Error code: 429 - rate_limit_exceeded: This request would exceed your "
                         "organization's rate limit of 80,000 input tokens per minute "
                         f"(request_id: req_{_hex(rng, 24)})",
                         CODE["plan_next_step"], "response = self._anthropic.messages.create(**payload)")
            span = b.leaf("plan_next_step", "CHAT_MODEL", root, cur, rng.uniform(120, 320),
                          inputs=plan_inputs, error=err, model=MODELS["plan_next_step"])
            cur = span.end_ns
            if attempt < 3:
                cur += (2 ** attempt) * NS_PER_S + int(rng.uniform(0, 25) * NS_PER_MS)  # backoff
            if attempt == 3:
                fatal = span
        if fatal is None:
            tool = tool_for_intent[t.intent]
            span = b.leaf("plan_next_step", "CHAT_MODEL", root, cur, rng.uniform(900, 2200),
                          inputs=plan_inputs,
                          outputs=_anthropic_out(tool=(tool, {"query": message[:60]}, _hex(rng, 12))),
                          usage=_usage(rng.randint(2500, 4500), rng.randint(120, 400)),
                          model=MODELS["plan_next_step"])
            cur = span.end_ns + b.gap()

    tool_results: list = []
    if fatal is None:
        cur, fatal = _tools(b, t, root, cur, tool_results)

    # 6. Final answer (OpenAI); prompt grows every turn in some sessions; 401s in one hour.
    if fatal is None:
        history = []
        if t.growing_input_tokens is not None:
            for k in range(1, t.turn):
                history += [
                    {"role": "user", "content": f"(turn {k}) earlier question about {s.destination[0]}"},
                    {"role": "assistant", "content": f"(turn {k}) earlier answer with tool results "
                     + json.dumps({"results": [f"option {j}" for j in range(8)]})}]
        gen_inputs = {"model": MODELS["generate_response"][0], "temperature": 0.3, "messages": [
            {"role": "system", "content": AGENT_SYSTEM_PROMPT}, *history,
            {"role": "user", "content": message},
            *([{"role": "tool", "content": json.dumps(tool_results)[:1500]}] if tool_results else [])]}
        if "auth_error_cluster" in problems:
            err = _Error("AuthenticationError",
                         "Error code: 401 - {'error': {'message': 'Incorrect API key provided: "
                         "sk-proj-****Qz7f. You can find your API key at "
                         "https://platform.openai.com/account/api-keys.', 'type': "
                         "'invalid_request_error', 'code': 'invalid_api_key'}} "
                         f"(request_id: req_{_hex(rng, 24)})",
                         CODE["generate_response"],
                         "response = self._openai.chat.completions.create(**payload)")
            fatal = b.leaf("generate_response", "CHAT_MODEL", root, cur, rng.uniform(90, 260),
                           inputs=gen_inputs, error=err, model=MODELS["generate_response"])
            cur = fatal.end_ns
        else:
            if t.growing_input_tokens is not None:
                in_tok = t.growing_input_tokens
            else:
                in_tok = rng.randint(1500, 3500)
            out_tok = rng.randint(180, 600)
            ms = 400 + out_tok * rng.uniform(3.5, 5.5) + in_tok * 0.02
            gen = b.leaf("generate_response", "CHAT_MODEL", root, cur, ms, inputs=gen_inputs,
                         outputs=_openai_out(_answer(t, rng, problems)), usage=_usage(in_tok, out_tok),
                         model=MODELS["generate_response"])
            cur = gen.end_ns

    # Close the root (and propagate an uncaught error to every ancestor).
    root.end_ns = cur + int(rng.uniform(2, 9) * NS_PER_MS)
    if fatal is not None:
        node = fatal.parent
        while node is not None:
            node.error = fatal.error
            node.end_ns = max(node.end_ns, fatal.end_ns + int(rng.uniform(0.3, 2.0) * NS_PER_MS))
            node = node.parent
        root.end_ns = max(root.end_ns, fatal.end_ns + int(rng.uniform(1, 3) * NS_PER_MS))
    else:
        root.outputs = {"response": _answer(t, rng, problems)}
    # Parents end after their children.
    for spec in reversed(b.specs):
        if spec.parent is not None and spec.parent.end_ns < spec.end_ns:
            spec.parent.end_ns = spec.end_ns + int(rng.uniform(0.5, 3) * NS_PER_MS)
    return b


def _tools(b: _TraceBuilder, t: _TracePlan, root: _SpanSpec, cur: int, results: list):
    """Tool and retriever calls for the intent. Returns (cursor, fatal span or None)."""
    rng = b.rng
    s = t.session
    problems = t.problems
    fatal = None

    def flights(start: int, origin_code: str, dest_code: str) -> _SpanSpec:
        inputs = {"origin": origin_code, "destination": dest_code, "date": s.date,
                  "passengers": s.passengers}
        if "timeout" in problems:
            err = _Error("TimeoutError",
                         f"search_flights timed out after 30s (GET https://api.skyfares.example/v2/"
                         f"search?from={origin_code}&to={dest_code})",
                         CODE["search_flights"],
                         "resp = await self._http.get(url, params=params, timeout=30)")
            return b.leaf("search_flights", "TOOL", root, start, rng.uniform(30_000, 30_060),
                          inputs=inputs, error=err)
        offers = []
        for _ in range(3):
            code, airline = rng.choice(AIRLINES)
            offers.append({"flight_id": f"{code}{rng.randint(10, 999)}-{s.date}", "airline": airline,
                           "depart": f"{rng.randint(6, 21):02d}:{rng.choice(['05', '20', '35', '50'])}",
                           "stops": rng.choice([0, 0, 1]), "price_usd": rng.randint(180, 1400)})
        return b.leaf("search_flights", "TOOL", root, start, b.lognormal_ms(210, 0.2, 140, 320),
                      inputs=inputs, outputs={"flights": offers})

    if t.intent == "flight_search":
        # Two lookups with different inputs, run in parallel (healthy).
        a = b.leaf("lookup_airport", "TOOL", root, cur, rng.uniform(15, 60),
                   inputs={"city": s.origin[0]},
                   outputs={"code": s.origin[1], "city": s.origin[0], "country": s.origin[2]})
        c = b.leaf("lookup_airport", "TOOL", root, cur + int(rng.uniform(0.2, 2) * NS_PER_MS),
                   rng.uniform(15, 60), inputs={"city": s.destination[0]},
                   outputs={"code": s.destination[1], "city": s.destination[0],
                            "country": s.destination[2]})
        cur = max(a.end_ns, c.end_ns) + b.gap()
        f = flights(cur, s.origin[1], s.destination[1])
        cur = f.end_ns + b.gap()
        results.append(f.outputs or {"error": "search_flights timed out"})

    elif t.intent == "hotel_search":
        h = b.leaf("search_hotels", "TOOL", root, cur, b.lognormal_ms(180, 0.2, 110, 290),
                   inputs={"city": s.destination[0], "check_in": s.date, "nights": s.nights,
                           "max_price_usd": 250},
                   outputs={"currency": CURRENCY[s.destination[2]],
                            "hotels": [{"name": name, "price_per_night": rng.randint(90, 240),
                                        "rating": round(rng.uniform(3.6, 4.8), 1)}
                                       for name in rng.sample(HOTELS, 3)]})
        cur = h.end_ns + b.gap()
        results.append(h.outputs)
        # Prices are converted to the user's currency (input derived from the hotel result).
        fx_in = {"base": h.outputs["currency"], "quote": CURRENCY[s.origin[2]]}
        fx_out = {"rate": round(rng.uniform(0.5, 40), 4), "as_of": s.date}
        calls = 2 if "redundant_calls" in problems else 1
        for _ in range(calls):  # the second call repeats the first one exactly
            fx = b.leaf("get_exchange_rate", "TOOL", root, cur, rng.uniform(40, 90),
                        inputs=dict(fx_in), outputs=dict(fx_out))
            cur = fx.end_ns + int(rng.uniform(20, 120) * NS_PER_MS)

    elif t.intent == "trip_planning":
        g = b.open("gather_destination_info", "CHAIN", root, cur,
                   inputs={"city": s.destination[0], "date": s.date, "nights": s.nights})
        parallel = s.branch == FEATURE_BRANCH
        sub = cur + int(rng.uniform(0.5, 2) * NS_PER_MS)
        ends = []
        calls = (
            ("get_weather", {"city": s.destination[0], "date": s.date},
             {"forecast": [{"day": d, "high_c": rng.randint(12, 31), "rain_pct": rng.randint(0, 70)}
                           for d in range(1, 4)]}),
            ("get_hotels", {"city": s.destination[0], "check_in": s.date, "nights": s.nights},
             {"hotels": rng.sample(HOTELS, 3)}),
            ("get_events", {"city": s.destination[0], "from": s.date, "days": s.nights},
             {"events": [f"{s.destination[0]} {e}" for e in rng.sample(
                 ["jazz festival", "food market", "museum night", "harbour fireworks",
                  "design week"], 2)]}),
        )
        for name, inputs, outputs in calls:
            span = b.leaf(name, "TOOL", g, sub, rng.uniform(150, 300), inputs=inputs, outputs=outputs)
            ends.append(span.end_ns)
            results.append(outputs)
            if parallel:
                sub += int(rng.uniform(0.1, 1.5) * NS_PER_MS)  # all started at once
            else:
                sub = span.end_ns + int(rng.uniform(1, 4) * NS_PER_MS)  # one after another
        g.end_ns = max(ends) + int(rng.uniform(1, 4) * NS_PER_MS)
        g.outputs = {"sections": ["weather", "hotels", "events"]}
        cur = g.end_ns + b.gap()

    elif t.intent == "booking":
        f = flights(cur, s.origin[1], s.destination[1])
        cur = f.end_ns + b.gap()
        if f.error is not None:
            results.append({"error": "search_flights timed out"})
            return cur, None  # caught: the agent apologises
        offer = min(f.outputs["flights"], key=lambda o: o["price_usd"])
        date = s.date
        if "fast_validation_error" in problems:
            date = rng.choice([f"{s.date[8:10]}/{s.date[5:7]}/{s.date[:4]}", "next friday",
                               f"{s.date[:4]}-13-{s.date[8:10]}"])
        booking_in = {"flight_id": offer["flight_id"], "passengers": s.passengers,
                      "departure_date": date, "fare_usd": offer["price_usd"]}
        if "fast_validation_error" in problems:
            err = _Error("ValueError",
                         f"invalid date format {date!r} for field 'departure_date': expected YYYY-MM-DD",
                         CODE["create_booking"], "departure = parse_iso_date(payload['departure_date'])")
            bk = b.leaf("create_booking", "TOOL", root, cur, rng.uniform(5, 20), inputs=booking_in,
                        error=err)
            cur = bk.end_ns + b.gap()
            results.append({"error": err.message})
            return cur, None  # caught: the agent asks for the date again
        booking_id = f"BK-{_hex(rng, 8).upper()}"
        billing = CURRENCY[s.origin[2]]
        bk = b.leaf("create_booking", "TOOL", root, cur, rng.uniform(120, 260), inputs=booking_in,
                    outputs={"booking_id": booking_id, "status": "held", "hold_minutes": 15,
                             "billing_currency": billing})
        cur = bk.end_ns + b.gap()
        # Each step uses the previous one's result: dependent, rightly sequential.
        rate = 1.0 if billing == "USD" else round(rng.uniform(0.5, 40), 4)
        fx = b.leaf("get_exchange_rate", "TOOL", root, cur, rng.uniform(40, 90),
                    inputs={"base": "USD", "quote": bk.outputs["billing_currency"]},
                    outputs={"rate": rate, "as_of": s.date})
        cur = fx.end_ns + b.gap()
        amount = round(offer["price_usd"] * s.passengers * fx.outputs["rate"], 2)
        pay = b.open("execute_payment", "CHAIN", root, cur,
                     inputs={"booking_id": booking_id, "amount": amount, "currency": billing,
                             "fx_rate": fx.outputs["rate"]})
        if "cascade" in problems:
            err = _Error("PaymentGatewayError",
                         "upstream payment gateway returned 502 Bad Gateway (gateway=stripe)",
                         CODE["charge_card"], "raise PaymentGatewayError.from_response(resp)")
            ch = b.leaf("charge_card", "TOOL", pay, cur + NS_PER_MS, rng.uniform(800, 1500),
                        inputs={"booking_id": booking_id, "amount": amount, "currency": billing},
                        error=err)
            pay.end_ns = ch.end_ns
            return ch.end_ns, ch  # uncaught: propagates to execute_payment and travel_agent
        ch = b.leaf("charge_card", "TOOL", pay, cur + NS_PER_MS, rng.uniform(200, 480),
                    inputs={"booking_id": booking_id, "amount": amount, "currency": billing},
                    outputs={"status": "captured", "payment_id": f"pi_{_hex(rng, 14)}"})
        pay.end_ns = ch.end_ns + int(rng.uniform(1, 3) * NS_PER_MS)
        pay.outputs = {"status": "captured"}
        cur = pay.end_ns + b.gap()
        results.append({"booking_id": booking_id, "status": "confirmed"})

    elif t.intent == "visa_question":
        v = b.leaf("check_visa_requirements", "TOOL", root, cur, b.lognormal_ms(2800, 0.35, 1500, 9000),
                   inputs={"nationality": s.origin[2], "destination": s.destination[2],
                           "stay_days": s.nights},
                   outputs={"visa_required": False, "max_stay_days": 90,
                            "notes": "Passport valid for 6 months after arrival."})
        cur = v.end_ns + b.gap()
        results.append(v.outputs)

    elif t.intent == "policy_question":
        pol = b.leaf("search_policies", "RETRIEVER", root, cur, rng.uniform(40, 110),
                     inputs={"query": "cancellation and change fees", "top_k": 3},
                     outputs=_documents(rng, "policies", "fees", 3))
        cur = pol.end_ns + b.gap()
        results.append([d["page_content"] for d in pol.outputs])
    return cur, fatal


# --------------------------------------------------------------------------------------
# Writing: fluent (per-span export) or bulk (buffered, written with the store's batch API)
# --------------------------------------------------------------------------------------


class _Writer:
    name = "fluent"

    def __init__(self, mlflow: Any, experiment_id: str):
        self.mlflow = mlflow
        self.experiment_id = experiment_id

    @staticmethod
    def open(mlflow: Any, experiment_id: str, kind: str) -> "_Writer":
        if kind in ("auto", "bulk"):
            try:
                return _BulkWriter(mlflow, experiment_id)
            except _BulkUnavailable as exc:
                if kind == "bulk":
                    raise RuntimeError(f"bulk writer unavailable: {exc}") from exc
                print(f"mlflow-analyzer: bulk trace writer unavailable ({exc}); "
                      "writing span by span", file=sys.stderr)
        return _Writer(mlflow, experiment_id)

    def feedback(self, trace_id: str, fb: dict, root_span_id: str) -> None:
        self.mlflow.log_feedback(trace_id=trace_id, **_feedback_kwargs(fb, root_span_id))

    def trace_done(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _BulkUnavailable(Exception):
    pass


class _BufferingClient:
    """Stands in for the exporter's TracingClient: keeps what the exporter would write."""

    def __init__(self, real: Any):
        self._real = real
        self.spans: list = []
        self.infos: list = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def log_spans(self, location: str, spans: list) -> list:
        self.spans.extend(spans)
        return spans

    def start_trace(self, trace_info: Any) -> Any:
        self.infos.append(trace_info)
        # What the store returns once spans are in it: no artifact upload follows.
        returned = copy.copy(trace_info)
        returned.tags = dict(trace_info.tags)
        returned.tags["mlflow.trace.spansLocation"] = "TRACKING_STORE"
        return returned


class _BulkWriter(_Writer):
    name = "bulk"
    BATCH_TRACES = 400
    BATCH_SPANS = 4000

    def __init__(self, mlflow: Any, experiment_id: str):
        super().__init__(mlflow, experiment_id)
        try:
            from mlflow.tracing.provider import _get_trace_exporter, _get_tracer
        except ImportError as exc:
            raise _BulkUnavailable(str(exc)) from exc
        _get_tracer(__name__)  # initialize MLflow's tracer provider
        exporter = _get_trace_exporter()
        real = getattr(exporter, "_client", None)
        if real is None or not all(hasattr(real, m) for m in ("start_trace", "log_spans")):
            raise _BulkUnavailable("MLflow's trace exporter has no tracking client to buffer")
        if getattr(exporter, "_is_async_enabled", False):
            raise _BulkUnavailable("asynchronous trace logging is on")
        self._exporter = exporter
        self._real = real
        self._buffer = _BufferingClient(real)
        self._feedback: dict[str, list] = {}
        exporter._client = self._buffer

    def feedback(self, trace_id: str, fb: dict, root_span_id: str) -> None:
        from mlflow.entities import Feedback

        self._feedback.setdefault(trace_id, []).append(
            Feedback(trace_id=trace_id, **_feedback_kwargs(fb, root_span_id)))

    def trace_done(self) -> None:
        if len(self._buffer.infos) >= self.BATCH_TRACES:
            self.flush()

    def flush(self) -> None:
        infos, spans = self._buffer.infos, self._buffer.spans
        self._buffer.infos, self._buffer.spans = [], []
        for info in infos:
            # As MLflow does for feedback logged while a trace is active.
            info.assessments.extend(self._feedback.pop(info.trace_id, []))
            self._real.start_trace(info)
        for i in range(0, len(spans), self.BATCH_SPANS):
            self._real.log_spans(self.experiment_id, spans[i:i + self.BATCH_SPANS])
        if self._feedback:  # feedback for traces already flushed (not expected)
            for trace_id, items in self._feedback.items():
                for item in items:
                    self._real.store.create_assessment(item)
            self._feedback = {}

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._exporter._client = self._real

    def abort(self) -> None:
        self._exporter._client = self._real


def _feedback_kwargs(fb: dict, root_span_id: str) -> dict:
    from mlflow.entities import AssessmentError, AssessmentSource

    kwargs: dict[str, Any] = {
        "name": fb["name"],
        "source": AssessmentSource(source_type=fb["source"][0], source_id=fb["source"][1]),
    }
    if fb.get("error"):
        kwargs["error"] = AssessmentError(error_code=fb["error"][0], error_message=fb["error"][1])
    else:
        kwargs["value"] = fb["value"]
    if fb.get("rationale"):
        kwargs["rationale"] = fb["rationale"]
    if fb.get("on_root_span"):
        kwargs["span_id"] = root_span_id
    return kwargs


@dataclass
class _Result:
    index: int
    trace_id: str
    root_span_id: str
    state: str
    start_ns: int
    end_ns: int
    span_count: int
    spans: list  # [(name, span_type, duration_ms, status, parent_name, start_ns, end_ns)]
    usage: dict  # span name -> [input_tokens, ...]
    models: dict  # span name -> model


def _emit_all(mlflow: Any, out: _Writer, plan: _Plan, experiment_id: str) -> list:
    results: list[_Result] = []
    for s in plan.sessions:
        previous_end = 0
        for idx, planned in zip(s.trace_indexes, s.turn_starts):
            t = plan.traces[idx]
            if planned <= previous_end:  # cannot happen within TURN_BUDGET_NS
                raise RuntimeError(f"corpus plan error: turn {t.turn} of a session overlaps")
            b = _synthesize(t, planned, plan.commits, plan.seed)
            result = _emit(mlflow, b, t, experiment_id)
            for fb in t.feedback:
                out.feedback(result.trace_id, fb, result.root_span_id)
            out.trace_done()
            results.append(result)
            previous_end = result.end_ns
    results.sort(key=lambda r: r.index)
    return results


def _emit(mlflow: Any, b: _TraceBuilder, t: _TracePlan, experiment_id: str) -> _Result:
    from mlflow.entities import SpanEvent, SpanStatus, SpanStatusCode

    root = b.specs[0]
    for spec in b.specs:
        kwargs: dict[str, Any] = {
            "span_type": spec.span_type,
            "start_time_ns": spec.start_ns,
        }
        if spec.inputs is not None:
            kwargs["inputs"] = spec.inputs
        if spec.attributes:
            kwargs["attributes"] = spec.attributes
        if spec.parent is None:
            kwargs["experiment_id"] = experiment_id
            kwargs["metadata"] = spec.metadata
            kwargs["tags"] = spec.tags
        else:
            kwargs["parent_span"] = spec.parent.live
        spec.live = mlflow.start_span_no_context(spec.name, **kwargs)
    for spec in reversed(b.specs):  # children end before their parents
        live = spec.live
        if spec.usage is not None:
            live.set_attribute("mlflow.chat.tokenUsage", spec.usage)
        if spec.error is not None:
            err = spec.error
            live.add_event(SpanEvent(name="exception", timestamp=spec.end_ns, attributes={
                "exception.type": err.type, "exception.message": err.message,
                "exception.stacktrace": err.stacktrace()}))
            live.set_status(SpanStatus(SpanStatusCode.ERROR, f"{err.type}: {err.message}"))
        elif spec.outputs is not None:
            live.set_outputs(spec.outputs)
        live.end(end_time_ns=spec.end_ns)
    summary = [(sp.name, sp.span_type, sp.duration_ms, "ERROR" if sp.error else "OK",
                sp.parent.name if sp.parent else None, sp.start_ns, sp.end_ns) for sp in b.specs]
    usage: dict[str, list] = {}
    models: dict[str, str] = {}
    for sp in b.specs:
        if sp.usage:
            usage.setdefault(sp.name, []).append(sp.usage["input_tokens"])
        if "mlflow.llm.model" in sp.attributes:
            models[sp.name] = sp.attributes["mlflow.llm.model"]
    return _Result(index=t.index, trace_id=root.live.trace_id, root_span_id=root.live.span_id,
                   state="ERROR" if root.error else "OK", start_ns=root.start_ns,
                   end_ns=root.end_ns, span_count=len(b.specs), spans=summary, usage=usage,
                   models=models)


# --------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS_PER_S, timezone.utc).isoformat().replace("+00:00", "Z")


def _percentile(values: list, q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return round(values[lo] + (values[hi] - values[lo]) * (pos - lo), 1)


def _manifest(plan: _Plan, results: list, experiment_id: str, experiment_name: str,
              tracking_uri: str, n_traces: int, seed: int, end_time: datetime, writer: str) -> dict:
    by_index = {r.index: r for r in results}
    traces = plan.traces

    def ids(kind: str) -> list:
        return [by_index[t.index].trace_id for t in traces if kind in t.problems]

    def durations(name: str, pred=lambda t: True, status: str | None = None) -> list:
        out = []
        for t in traces:
            if not pred(t):
                continue
            for sp in by_index[t.index].spans:
                if sp[0] == name and (status is None or sp[3] == status):
                    out.append(sp[2])
        return out

    def problem(kind: str, span_names: list, details: dict, trace_ids: list | None = None) -> dict:
        category, also = _PROBLEM_CATEGORY[kind]
        return {"kind": kind, "span_names": span_names,
                "trace_ids": ids(kind) if trace_ids is None else trace_ids,
                "expected_category": category, "acceptable_categories": [category, *also],
                "expected_kind": _FINDING_KIND[kind][0], "acceptable_kinds": list(_FINDING_KIND[kind]),
                "details": details}

    def code(name: str) -> str:
        return f"{CODE[name][0]}:{CODE[name][1]}"

    problems = []
    exhausted = [t for t in traces if "rate_limit_exhausted" in t.problems]
    recovered = [t for t in traces if "rate_limit_recovered" in t.problems]
    rate_details = {"span_type": "CHAT_MODEL", "model": MODELS["plan_next_step"][0],
                    "exception_type": "RateLimitError", "message_contains": "429",
                    "backoff_gaps_s": [1, 2, 4], "code": code("plan_next_step")}
    problems.append(problem("rate_limit_exhausted", ["plan_next_step"], {
        **rate_details, "attempts_per_trace": 4, "trace_state": "ERROR",
        "failed_calls": 4 * len(exhausted)}))
    problems.append(problem("rate_limit_recovered", ["plan_next_step"], {
        **rate_details, "trace_state": "OK",
        "failed_calls": sum(sum(1 for sp in by_index[t.index].spans
                                if sp[0] == "plan_next_step" and sp[3] == "ERROR") for t in recovered)}))
    timeouts = durations("search_flights", status="ERROR")
    problems.append(problem("timeout", ["search_flights"], {
        "span_type": "TOOL", "exception_type": "TimeoutError", "message_contains": "timed out after 30s",
        "failure_mode": "slow", "error_p50_ms": _percentile(timeouts, 0.5),
        "ok_p50_ms": _percentile(durations("search_flights", status="OK"), 0.5),
        "trace_state": "OK", "caught": True, "code": code("search_flights")}))
    problems.append(problem("fast_validation_error", ["create_booking"], {
        "span_type": "TOOL", "exception_type": "ValueError", "message_contains": "invalid date format",
        "failure_mode": "fast",
        "error_p50_ms": _percentile(durations("create_booking", status="ERROR"), 0.5),
        "trace_state": "OK", "caught": True, "code": code("create_booking")}))
    auth = [t for t in traces if "auth_error_cluster" in t.problems]
    auth_times = [by_index[t.index].start_ns for t in auth]
    problems.append(problem("auth_error_cluster", ["generate_response"], {
        "span_type": "CHAT_MODEL", "model": MODELS["generate_response"][0],
        "exception_type": "AuthenticationError", "message_contains": "401",
        "window_start": _iso(plan.auth_window[0]), "window_end": _iso(plan.auth_window[1]),
        "first_error": _iso(min(auth_times)) if auth_times else None,
        "last_error": _iso(max(auth_times)) if auth_times else None,
        "trace_state": "ERROR", "code": code("generate_response")}))
    problems.append(problem("cascade", ["charge_card", "execute_payment", AGENT_SPAN], {
        "root_cause_span": "charge_card", "propagated_to": ["execute_payment", AGENT_SPAN],
        "exception_type": "PaymentGatewayError", "message_contains": "502 Bad Gateway",
        "trace_state": "ERROR", "code": code("charge_card")}))
    visa = durations("check_visa_requirements")
    others = [d for name in ("lookup_airport", "search_hotels", "get_exchange_rate", "get_weather",
                             "get_hotels", "get_events", "create_booking", "charge_card")
              for d in durations(name, status="OK")]
    problems.append(problem("slow_tool", ["check_visa_requirements"], {
        "span_type": "TOOL", "p50_ms": _percentile(visa, 0.5), "p95_ms": _percentile(visa, 0.95),
        "other_tools_p95_ms": _percentile(others, 0.95), "code": code("check_visa_requirements")}))
    seq = [t for t in traces if "sequential_independent_calls" in t.problems]
    par = [t for t in traces if t.intent == "trip_planning" and t.session.branch == FEATURE_BRANCH
           and "rate_limit_exhausted" not in t.problems]
    seq_ids, par_ids = {t.index for t in seq}, {t.index for t in par}
    gather = "gather_destination_info"
    gather_seq_p50 = _percentile(durations(gather, lambda t: t.index in seq_ids), 0.5)
    gather_par_p50 = _percentile(durations(gather, lambda t: t.index in par_ids), 0.5)
    problems.append(problem("sequential_independent_calls", ["get_weather", "get_hotels", "get_events"], {
        "parent_span": "gather_destination_info", "branch": MAIN_BRANCH,
        "sequential_p50_ms": gather_seq_p50, "parallel_p50_ms": gather_par_p50,
        "parallel_distractor_trace_ids": [by_index[t.index].trace_id for t in par],
        "code": code("gather_destination_info")}))
    growing = [s for s in plan.sessions if s.growing]
    problems.append(problem("growing_prompt", ["generate_response"], {
        "span_type": "CHAT_MODEL", "model": MODELS["generate_response"][0],
        "sessions": [s.session_id for s in growing],
        "input_tokens_by_session": {
            s.session_id: [traces[i].growing_input_tokens for i in s.trace_indexes] for s in growing},
        "other_sessions_input_tokens_range": [1500, 3500], "code": code("generate_response")}))
    problems.append(problem("expensive_model_simple_task", ["intent_llm"], {
        "parent_span": "classify_intent", "span_type": "CHAT_MODEL", "model": INTENT_MODEL_PROD[0],
        "environment": "prod", "cheap_model_elsewhere": INTENT_MODEL_STAGING[0],
        "input_tokens_range": [140, 230], "output_tokens_range": [1, 3], "code": code("intent_llm")}))
    problems.append(problem("llm_without_usage", ["rewrite_query"], {
        "span_type": "LLM", "model": MODELS["rewrite_query"][0], "code": code("rewrite_query"),
        "note": "failed LLM attempts (429/401) also lack usage; they are not this problem"}))
    problems.append(problem("redundant_calls", ["get_exchange_rate"], {
        "span_type": "TOOL", "calls_per_trace": 2, "identical_inputs": True,
        "distractor": "lookup_airport is called twice per flight search with different inputs",
        "code": code("get_exchange_rate")}))
    gaps = []
    for t in traces:
        if "uninstrumented_time" not in t.problems:
            continue
        spans = by_index[t.index].spans
        ctx = next(sp for sp in spans if sp[0] == "build_context")
        covered = sum(sp[2] for sp in spans if sp[4] == "build_context")
        gaps.append(covered / ctx[2])
    problems.append(problem("uninstrumented_time", ["build_context"], {
        "span_type": "CHAIN", "duration_ms_range": [1800, 3300],
        "max_child_coverage": round(max(gaps), 3) if gaps else None,
        "missing_operation": "fetch_user_profile", "code": code("build_context")}))
    problems.append(problem("missing_session", [AGENT_SPAN], {
        "metadata_key": "mlflow.trace.session",
        "share": round(sum(1 for t in traces if "missing_session" in t.problems) / len(traces), 3)}))
    rel = [(t, fb) for t in traces for fb in t.feedback if fb["name"] == "relevance"]
    problems.append(problem("failing_assessment", [AGENT_SPAN], {
        "assessment_name": "relevance", "source_type": "LLM_JUDGE", "judged": len(rel),
        "failed": sum(1 for _, fb in rel if fb["value"] is False),
        "fail_rate": round(sum(1 for _, fb in rel if fb["value"] is False) / max(1, len(rel)), 3)}))
    problems.append(problem("judge_error", [AGENT_SPAN], {
        "assessment_name": "groundedness", "source_type": "LLM_JUDGE", "error_code": "RATE_LIMIT",
        "trace_state": "OK", "note": "the judge failed, not the trace"}))

    kb_main = durations("search_knowledge_base", lambda t: t.session.branch == MAIN_BRANCH)
    kb_feat = durations("search_knowledge_base", lambda t: t.session.branch == FEATURE_BRANCH)
    branches = {}
    for branch in (MAIN_BRANCH, FEATURE_BRANCH):
        in_branch = [t for t in traces if t.session.branch == branch]
        branches[branch] = {"commit": plan.commits[branch], "trace_count": len(in_branch),
                            "session_count": sum(1 for s in plan.sessions
                                                 if s.branch == branch and s.session_id),
                            "environments": sorted({t.session.environment for t in in_branch})}
    branches[FEATURE_BRANCH].update({
        "baseline": MAIN_BRANCH,
        "regressed_spans": [{"span_name": "search_knowledge_base",
                             "baseline_p50_ms": _percentile(kb_main, 0.5),
                             "branch_p50_ms": _percentile(kb_feat, 0.5)}],
        "improved_spans": [{"span_name": "gather_destination_info",
                            "baseline_p50_ms": gather_seq_p50, "branch_p50_ms": gather_par_p50}],
    })

    problem_ids = {tid for p in problems for tid in p["trace_ids"]}
    clean = [r.trace_id for r in results if r.trace_id not in problem_ids]
    feedback = [fb for t in traces for fb in t.feedback]
    times = [r.start_ns for r in results]
    return {
        "corpus_version": CORPUS_VERSION,
        "agent": "travel-assistant",
        "root_span_name": AGENT_SPAN,
        "experiment_id": str(experiment_id),
        "experiment_name": experiment_name,
        "tracking_uri": tracking_uri,
        "trace_count": len(results),
        "span_count": sum(r.span_count for r in results),
        "error_trace_count": sum(1 for r in results if r.state == "ERROR"),
        "seed": seed,
        "writer": writer,
        "end_time": _iso(int(end_time.timestamp()) * NS_PER_S),
        "time_range": {"start": _iso(min(times)), "end": _iso(max(r.end_ns for r in results))},
        "problems": problems,
        "healthy_span_names": list(HEALTHY_SPAN_NAMES),
        "clean_trace_ids": clean,
        "distractors": [
            {"kind": "parallel_calls", "span_names": ["get_weather", "get_hotels", "get_events"],
             "trace_ids": [by_index[t.index].trace_id for t in par]},
            {"kind": "parallel_calls", "span_names": ["lookup_airport"],
             "trace_ids": [by_index[t.index].trace_id for t in traces
                           if t.intent == "flight_search" and "rate_limit_exhausted" not in t.problems]},
            {"kind": "repeated_call_different_inputs", "span_names": ["lookup_airport"],
             "trace_ids": [by_index[t.index].trace_id for t in traces
                           if t.intent == "flight_search" and "rate_limit_exhausted" not in t.problems]},
            {"kind": "dependent_sequential_calls",
             "span_names": ["search_flights", "create_booking", "get_exchange_rate", "execute_payment"],
             "trace_ids": [by_index[t.index].trace_id for t in traces
                           if t.intent == "booking" and not t.problems & {
                               "rate_limit_exhausted", "timeout", "fast_validation_error"}]},
            {"kind": "dependent_sequential_calls", "span_names": ["lookup_airport", "search_flights"],
             "trace_ids": [by_index[t.index].trace_id for t in traces
                           if t.intent == "flight_search" and "rate_limit_exhausted" not in t.problems]},
            {"kind": "dependent_sequential_calls", "span_names": ["search_hotels", "get_exchange_rate"],
             "trace_ids": [by_index[t.index].trace_id for t in traces
                           if t.intent == "hotel_search" and "rate_limit_exhausted" not in t.problems]},
            {"kind": "caught_error_trace_ok", "span_names": ["search_flights", "create_booking"],
             "trace_ids": ids("timeout") + ids("fast_validation_error")},
            {"kind": "cheap_model_with_usage", "span_names": ["summarize_history"],
             "trace_ids": [by_index[t.index].trace_id for t in traces if t.turn >= 3]},
        ],
        "custom_span_types": ["MEMORY", "CLASSIFIER"],
        "models": sorted({m[0] for m in MODELS.values()}
                         | {INTENT_MODEL_PROD[0], INTENT_MODEL_STAGING[0]}),
        "branches": branches,
        "sessions": sum(1 for s in plan.sessions if s.session_id),
        "users": len({s.user_id for s in plan.sessions if s.user_id}),
        "environments": {env: sum(1 for t in traces if t.session.environment == env)
                         for env in ("prod", "staging")},
        "assessments": {
            "count": len(feedback),
            "by_name": {name: sum(1 for fb in feedback if fb["name"] == name)
                        for name in sorted({fb["name"] for fb in feedback})},
            "errors": sum(1 for fb in feedback if fb.get("error")),
        },
    }
