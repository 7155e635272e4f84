"""Small traces written with MLflow's own tracing API, for tests that need exact shapes.

A spec is a nested dict: {"name", "type", "ms": (start_offset, end_offset), "inputs",
"outputs", "attributes", "usage", "error": (ExceptionClass, message), "status", "never_ended",
"children": [...]}.
"""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
os.environ.setdefault("MLFLOW_DISABLE_AGENT_HINT", "1")

T0 = 1_790_000_000_000_000_000  # a fixed clock (2026-09-21), nanoseconds


def open_store(path) -> tuple[str, str]:
    import mlflow

    uri = f"sqlite:///{path}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.set_experiment("tests")
    return uri, exp.experiment_id


def write_trace(spec: dict, *, t0: int = T0, metadata: dict | None = None) -> str:
    """Write one trace; returns its trace id."""
    import mlflow

    def start(node, parent):
        s_ms, _ = node["ms"]
        span = mlflow.start_span_no_context(
            node["name"],
            span_type=node.get("type", "UNKNOWN"),
            parent_span=parent,
            inputs=node.get("inputs"),
            attributes=node.get("attributes"),
            start_time_ns=t0 + int(s_ms * 1_000_000),
            **({"metadata": metadata} if parent is None and metadata else {}),
        )
        for child in node.get("children", []):
            start(child, span)
        if "usage" in node:
            span.set_attribute("mlflow.chat.tokenUsage", node["usage"])
        if "outputs" in node:
            span.set_outputs(node["outputs"])
        if "error" in node:
            exc_type, msg = node["error"]
            try:
                raise exc_type(msg)
            except Exception as exc:  # noqa: BLE001 - recorded on the span
                span.record_exception(exc)
        elif node.get("status") == "ERROR":
            span.set_status("ERROR")
        if not node.get("never_ended"):  # never ended: never exported, its children are orphans
            span.end(end_time_ns=t0 + int(node["ms"][1] * 1_000_000))
        return span

    root = start(spec, None)
    return root.trace_id


def cli(*args, cwd=None, env_extra=None, timeout=600):
    """Run `python -m mlflow_analyzer ARGS` as a user would, without the test's own MLflow
    environment (set_tracking_uri/set_experiment export MLFLOW_* variables)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "mlflow_analyzer", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def cli_ok(*args, **kw) -> str:
    """Run the CLI, assert success, return stdout."""
    r = cli(*args, **kw)
    assert r.returncode == 0, f"{args}: {r.stderr[-2000:]}"
    return r.stdout


def write_traces(specs: list, *, t0: int = T0, step_ms: float = 60_000, metadata=None) -> list[str]:
    """Write several traces, the i-th starting ``i * step_ms`` after ``t0``; ``metadata`` is
    a dict for all of them or a function of the index returning one. Returns the trace ids."""
    ids = []
    for i, spec in enumerate(specs):
        md = metadata(i) if callable(metadata) else metadata
        ids.append(write_trace(spec, t0=t0 + int(i * step_ms * 1_000_000), metadata=md))
    return ids


def read_traces(uri: str, experiment_id: str) -> list:
    """The store's traces, normalized, oldest first."""
    from mlflow_analyzer.sources import SqlStoreSource, StoreQuery

    src = SqlStoreSource(StoreQuery(uri, experiment_id=experiment_id, order_by=["timestamp_ms ASC"]))
    return list(src.iter_traces())


def findings_for(traces, **kwargs) -> dict:
    """``{"findings", "findings_total", "stats"[, "checks"]}`` for normalized traces, all findings."""
    from mlflow_analyzer.findings import analyze

    kwargs.setdefault("max_findings", None)
    return analyze(traces, **kwargs)


class TraceStore:
    """One SQLite store shared by the detector tests (a new store costs its schema
    migrations): each test module writes its purpose-built traces into its own experiment."""

    def __init__(self, path):
        self.path = path
        self.uri = f"sqlite:///{path}"

    def experiment(self, name: str) -> str:
        """Make ``name`` the active experiment (created if needed) and return its id."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        return mlflow.set_experiment(name).experiment_id

    def build(self, name: str, specs: list, **kwargs) -> list:
        """Write ``specs`` (see :func:`write_traces`) into experiment ``name`` and read them
        back normalized, oldest first."""
        exp = self.experiment(name)
        write_traces(specs, **kwargs)
        return read_traces(self.uri, exp)
