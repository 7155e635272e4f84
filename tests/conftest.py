"""Shared fixtures. Feature-specific fixtures live in their own test files."""

import os

# Writing traces needs these before mlflow is imported (see CONTRIBUTING.md).
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
os.environ.setdefault("MLFLOW_DISABLE_AGENT_HINT", "1")

import pytest  # noqa: E402

# Small enough to build in a few seconds, large enough that every injected problem kind
# has several traces (see mlflow_analyzer/corpus.py and its manifest).
CORPUS_TRACES = 180


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The manifest (ground truth) of a travel-assistant trace corpus in a SQLite store:
    ``corpus["tracking_uri"]``, ``corpus["experiment_id"]``, ``corpus["problems"]``..."""
    from mlflow_analyzer.corpus import ensure_corpus

    return ensure_corpus(tmp_path_factory.mktemp("corpus"), n_traces=CORPUS_TRACES)


@pytest.fixture(scope="session")
def trace_store(tmp_path_factory):
    """A SQLite store for purpose-built traces: ``trace_store.build(name, specs)`` writes them
    into experiment ``name`` and returns them normalized (see builders.TraceStore)."""
    from builders import TraceStore

    return TraceStore(tmp_path_factory.mktemp("traces") / "traces.db")


@pytest.fixture(scope="session")
def realworld_server(tmp_path_factory, request):
    """A real `mlflow server` on 127.0.0.1 receiving OTLP from the OpenTelemetry corpora
    (tests/test_realworld_otel_*.py, tests/realworld.py)."""
    from realworld import OTLP_CORPORA, MlflowServer, start_builds

    server = MlflowServer(tmp_path_factory.mktemp("realworld-server")).start()
    wanted = getattr(request.config, "_realworld_corpora", set()) & OTLP_CORPORA
    start_builds(tmp_path_factory.getbasetemp(), sorted(wanted), server_url=server.url)
    yield server
    server.stop()


def pytest_collection_finish(session):
    """Start the real-instrumentation corpora of the collected tests/test_realworld_*.py
    side by side, early (tests/realworld.py): their apps mostly wait on scripted latencies."""
    from realworld import MODULE_CORPORA, OTLP_CORPORA, start_builds

    wanted = {MODULE_CORPORA[m] for m in {item.module.__name__ for item in session.items if hasattr(item, "module")}
              if m in MODULE_CORPORA}
    session.config._realworld_corpora = wanted
    if wanted - OTLP_CORPORA:
        start_builds(session.config._tmp_path_factory.getbasetemp(), sorted(wanted - OTLP_CORPORA))
