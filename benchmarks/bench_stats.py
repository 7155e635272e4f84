#!/usr/bin/env python
"""Speed and memory of ``mlflow-analyzer stats`` against the obvious baseline.

The baseline is what a user would write without this tool: ``mlflow.search_traces()``
into pandas, then the same figures with pandas/numpy (trace count, error rate, latency
mean/p50/p95/p99/max, tokens, per-span-name count/p50/p95).

* Corpora (``mlflow_analyzer.corpus.ensure_corpus``) of each ``--sizes`` are built once into
  ``--cache`` (default ``benchmarks/.cache``) and reused.
* Every measurement runs in a fresh process; its wall time is measured from outside (process
  start to exit, interpreter start-up and imports included, as a user sees it) and its peak
  memory is that process's own ``ru_maxrss`` from ``os.wait4``.
* ``stats`` and ``findings`` run as a user runs them: the ``mlflow-analyzer`` console script.
* Over HTTP (unless ``--no-http``): a real ``mlflow server`` on 127.0.0.1 serving the same
  SQLite file; ``stats --tracking-uri http://...`` and the baseline through it.
* Before comparing, the figures of ``stats`` and the baseline are checked to agree.

Prints a table and PASS/FAIL lines for the targets. Exits 0 (it is a benchmark) unless
``--check`` is given and a target failed or the figures disagree.

    python benchmarks/bench_stats.py                      # 1,000 and 10,000 traces
    python benchmarks/bench_stats.py --sizes 1000 --no-http
    python benchmarks/bench_stats.py --check --json-out results.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / ".cache"

# Targets (from the issue).
TARGET_SPEEDUP = 10.0  # stats at least 10x faster than the baseline at 10,000 traces, SQL store
TARGET_SPEEDUP_SIZE = 10_000
TARGET_PEAK_MB = 300.0  # stats peak RSS
TARGET_GROWTH = 1.5  # stats peak RSS at the largest size / at the smallest size

# The baseline on a SQL store: search_traces loads spans with MLFLOW_SEARCH_TRACES_MAX_THREADS
# threads (default max(32, 4 * cpus)) while SQLAlchemy's pool allows 5 + 10 overflow
# connections, so on large experiments it can fail with "QueuePool limit ... reached". We
# lower the thread count to the number of cores (at most 8): it never exceeds the pool, and it
# is also the fastest setting on SQLite, where span loading is bound by the GIL, not I/O
# (10,000 traces, 2 cores: 32 threads 19.7 s, 8: 17.2 s, 4: 14.9 s, 2: 14.7 s, 1: 14.2 s).
# Over HTTP the baseline keeps MLflow's defaults (its threads wait on the network there).
BASELINE_SQL_ENV = {"MLFLOW_SEARCH_TRACES_MAX_THREADS": str(min(8, os.cpu_count() or 1))}

# The baseline, run in a child process: argv = tracking_uri experiment_id.
BASELINE_CODE = r"""
import json, os, sys, time
t0 = time.perf_counter()
import numpy as np
import pandas as pd
import mlflow
t1 = time.perf_counter()
uri, exp = sys.argv[1], sys.argv[2]
mlflow.set_tracking_uri(uri)
df = mlflow.search_traces(locations=[exp], max_results=None, return_type="pandas")
t2 = time.perf_counter()

lat = df["execution_duration"].astype(float)
state = df["state"].astype(str)
ok = lat[state == "OK"]

def dist(s):
    if not len(s):
        return {k: None for k in ("mean", "p50", "p95", "p99", "max")}
    q = s.quantile([0.5, 0.95, 0.99])
    return {"mean": float(s.mean()), "p50": float(q[0.5]), "p95": float(q[0.95]),
            "p99": float(q[0.99]), "max": float(s.max())}

usage = df["trace_metadata"].map(lambda m: json.loads((m or {}).get("mlflow.trace.tokenUsage") or "{}"))
tokens = {k: int(usage.map(lambda u: u.get(k + "_tokens") or 0).sum()) for k in ("input", "output", "total")}

spans = df[["spans"]].explode("spans").dropna()
sp = pd.DataFrame({
    "name": spans["spans"].map(lambda s: s["name"]),
    "ms": spans["spans"].map(lambda s: (s["end_time_unix_nano"] - s["start_time_unix_nano"]) / 1e6),
    "error": spans["spans"].map(lambda s: (s.get("status") or {}).get("code") == "STATUS_CODE_ERROR"),
})
g = sp.groupby("name")["ms"]
per_span = pd.DataFrame({"count": g.size(), "error_count": sp.groupby("name")["error"].sum(),
                         "p50_ms": g.quantile(0.5), "p95_ms": g.quantile(0.95)})
out = {
    "trace_count": int(len(df)),
    "error_count": int((state == "ERROR").sum()),
    "error_rate": float((state == "ERROR").mean()) if len(df) else 0.0,
    "latency_ms": dist(lat),
    "ok_latency_ms": dist(ok),
    "tokens": tokens,
    "spans": [{"name": n, "count": int(r["count"]), "error_count": int(r["error_count"]),
               "p50_ms": float(r["p50_ms"]), "p95_ms": float(r["p95_ms"])}
              for n, r in per_span.iterrows()],
}
t3 = time.perf_counter()
out["_phases"] = {"import_s": t1 - t0, "search_traces_s": t2 - t1, "pandas_s": t3 - t2}
print(json.dumps(out))
"""

# Raw public-API read throughput over HTTP for a page size: argv = uri experiment_id page_size.
API_PAGE_CODE = r"""
import sys, time
import mlflow
from mlflow import MlflowClient
uri, exp, page = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = MlflowClient(tracking_uri=uri)
n = 0
token = None
t = time.perf_counter()
while True:
    res = client.search_traces(locations=[exp], max_results=page, page_token=token,
                               order_by=["timestamp_ms DESC"], include_spans=True)
    n += len(res)
    token = res.token
    if not token or not len(res):
        break
print(n, time.perf_counter() - t)
"""

# Untimed, before the HTTP measurements: the server's workers initialize their store lazily on
# their first requests (a second or more each); wake all of them so no tool pays for it.
WARMUP_CODE = r"""
import sys
from concurrent.futures import ThreadPoolExecutor
from mlflow import MlflowClient
uri, exp = sys.argv[1], sys.argv[2]
client = MlflowClient(tracking_uri=uri)
with ThreadPoolExecutor(16) as pool:
    list(pool.map(lambda _: len(client.search_traces(locations=[exp], max_results=5)), range(32)))
"""


# --- measuring one process ------------------------------------------------------------------


class Run:
    def __init__(self, label: str, wall: float, rss_mb: float, rc: int, stdout: str, stderr: str):
        self.label, self.wall, self.rss_mb, self.rc = label, wall, rss_mb, rc
        self.stdout, self.stderr = stdout, stderr

    def json(self) -> dict:
        try:
            return json.loads(self.stdout)
        except ValueError:
            lines = [ln for ln in self.stdout.splitlines() if ln.strip()]
            return json.loads(lines[-1]) if lines else {}


def measure(label: str, cmd: list[str], env: dict, timeout: float | None = None) -> Run:
    """Run ``cmd`` in a fresh process; wall time from outside, peak RSS of that process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, stdin=subprocess.DEVNULL)
        deadline = None if timeout is None else start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        # ru_maxrss is in KiB on Linux, bytes on macOS.
        rss = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
        return Run(label, wall, rss, proc.returncode, out.read(), err.read())


def best_of(n: int, label: str, cmd: list[str], env: dict, timeout: float | None = None) -> Run:
    """The fastest of ``n`` runs (peak RSS: the largest seen)."""
    runs = [measure(label, cmd, env, timeout) for _ in range(max(1, n))]
    failed = [r for r in runs if r.rc != 0]
    if failed:
        return failed[0]
    best = min(runs, key=lambda r: r.wall)
    best.rss_mb = max(r.rss_mb for r in runs)
    return best


def child_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    env.update(MLFLOW_DISABLE_AGENT_HINT="1", MLFLOW_MODEL_CATALOG_URI="",
               MLFLOW_DISABLE_TELEMETRY="true")
    env.update(extra or {})
    return env


def cli_command() -> list[str]:
    """``mlflow-analyzer`` as installed next to this interpreter, else ``python -m``."""
    for name in ("mlflow-analyzer", "mlflow-analyzer.exe"):
        exe = Path(sys.executable).parent / name
        if exe.is_file():
            return [str(exe)]
    found = shutil.which("mlflow-analyzer")
    return [found] if found else [sys.executable, "-m", "mlflow_analyzer"]


# --- corpora ---------------------------------------------------------------------------------


BUILD_CODE = r"""
import json, sys, time
from mlflow_analyzer.corpus import ensure_corpus
directory, n = sys.argv[1], int(sys.argv[2])
m = ensure_corpus(directory, n_traces=n, experiment_name=f"bench-{n}", seed=7)
keys = ("tracking_uri", "experiment_id", "trace_count", "span_count", "writer", "build_seconds")
print(json.dumps({k: m.get(k) for k in keys}))
"""


def _looks_reusable(manifest_path: Path, n: int) -> bool:
    """A cheap guess, for the progress line only: ensure_corpus decides (and checks counts)."""
    from mlflow_analyzer.corpus import CORPUS_VERSION  # standard library only at import

    try:
        params = json.loads(manifest_path.read_text()).get("params") or {}
    except (OSError, ValueError):
        return False
    return params.get("n_traces") == n and params.get("corpus_version") == CORPUS_VERSION


def build_corpora(sizes: list[int], cache: Path) -> dict[int, dict]:
    """Build (or reuse) each corpus in a child process: this process stays small, because a
    child's peak RSS on Linux starts at its parent's RSS when it was forked."""
    out = {}
    for n in sizes:
        directory = cache / f"corpus-{n}"
        manifest_path = directory / "manifest.json"
        before = manifest_path.stat().st_mtime_ns if manifest_path.is_file() else None
        if not _looks_reusable(manifest_path, n):
            print(f"corpus {n:>6,} traces: building (once; 10,000 traces take a few minutes) ...",
                  flush=True)
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", BUILD_CODE, str(directory), str(n)],
                           capture_output=True, text=True, env=child_env())
        took = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"building the {n}-trace corpus failed:\n{r.stderr[-3000:]}")
        manifest = json.loads(r.stdout.strip().splitlines()[-1])
        reused = before is not None and manifest_path.stat().st_mtime_ns == before
        how = (f"reused (checked in {took:.2f} s; first built in {manifest.get('build_seconds')} s, "
               f"{manifest.get('writer')} writer)" if reused
               else f"built in {took:.1f} s ({manifest.get('writer')} writer)")
        print(f"corpus {n:>6,} traces, {manifest.get('span_count') or 0:>7,} spans: {how}  "
              f"[{directory}]", flush=True)
        out[n] = manifest
    return out


# --- the mlflow server ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(db_uri: str, workdir: Path, workers: int | None):
    port = free_port()
    log = workdir / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", db_uri,
           "--default-artifact-root", str(workdir / "server-artifacts"),
           "--host", "127.0.0.1", "--port", str(port)]
    if workers:
        cmd += ["--workers", str(workers)]
    with open(log, "w") as log_fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log_fh, env=child_env(),
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("mlflow server exited:\n" + log.read_text()[-2000:])
                if time.time() > deadline:
                    raise RuntimeError("mlflow server did not start in 120 s")
                time.sleep(0.5)
        yield url
    finally:
        # The server forks uvicorn workers: stop its whole process group (ours alone).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()


# --- agreement -------------------------------------------------------------------------------


def close(a, b, rel: float = 1e-9, abs_: float = 1e-6) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)


def compare(ours: dict, base: dict) -> list[str]:
    """Differences between stats' figures and the baseline's (empty list: they agree)."""
    diffs = []
    for key in ("trace_count", "error_count"):
        if ours.get(key) != base.get(key):
            diffs.append(f"{key}: stats {ours.get(key)} vs baseline {base.get(key)}")
    for dist in ("latency_ms", "ok_latency_ms"):
        for q in ("mean", "p50", "p95", "p99", "max"):
            a, b = (ours.get(dist) or {}).get(q), (base.get(dist) or {}).get(q)
            if not close(a, b):
                diffs.append(f"{dist}.{q}: stats {a} vs baseline {b}")
    if ours.get("tokens") != base.get("tokens"):
        diffs.append(f"tokens: stats {ours.get('tokens')} vs baseline {base.get('tokens')}")
    mine = {s["name"]: s for s in ours.get("spans", [])}
    theirs = {s["name"]: s for s in base.get("spans", [])}
    if set(mine) != set(theirs):
        diffs.append(f"span names differ: {sorted(set(mine) ^ set(theirs))[:5]}")
    for name in sorted(set(mine) & set(theirs)):
        for key in ("count", "error_count", "p50_ms", "p95_ms"):
            if not close(mine[name].get(key), theirs[name].get(key)):
                diffs.append(f"span {name!r} {key}: stats {mine[name].get(key)} vs "
                             f"baseline {theirs[name].get(key)}")
    return diffs


# --- main ------------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(s.replace("_", "").replace(",", "")) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: expected numbers like 1000,10000") from None
    if not sizes or sizes[0] < 40:
        raise argparse.ArgumentTypeError("every size must be at least 40 traces (the corpus needs it)")
    return sizes


def machine() -> str:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GB RAM"
    try:
        from importlib.metadata import version

        mlflow_version = version("mlflow")
    except Exception:  # pragma: no cover
        mlflow_version = "?"
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores{mem}"
            + (f", {cpu}" if cpu else "")
            + f"; Python {platform.python_version()}, MLflow {mlflow_version}")


def fmt_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=parse_sizes, default=[1000, 10000],
                   help="corpus sizes in traces, comma separated (default 1000,10000)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help=f"where corpora are built once and reused (default {DEFAULT_CACHE})")
    p.add_argument("--no-http", action="store_true", help="skip the measurements over a real mlflow server")
    p.add_argument("--http-sizes", default="1000",
                   help="sizes also measured over HTTP, among --sizes (default 1000; 'all' for every size)")
    p.add_argument("--http-page-sizes", default="",
                   help="also time the raw public API (search_traces with spans) over HTTP at these "
                        "page sizes, e.g. 100,200,500 (default: skip)")
    p.add_argument("--server-workers", type=int, default=None,
                   help="mlflow server --workers (default: MLflow's own default, 4)")
    p.add_argument("--no-findings", action="store_true", help="do not time findings")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per measurement; the fastest is reported (default 1)")
    p.add_argument("--json-out", type=Path, help="also write the measurements as JSON here")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when a target fails or stats and the baseline disagree")
    args = p.parse_args(argv)

    sizes = args.sizes
    if args.http_sizes.strip().lower() == "all":
        http_sizes = list(sizes)
    elif not args.http_sizes.strip():
        http_sizes = []
    else:
        try:
            http_sizes = [n for n in parse_sizes(args.http_sizes) if n in sizes]
        except argparse.ArgumentTypeError as exc:
            p.error(str(exc).replace("--sizes", "--http-sizes"))
    if args.no_http:
        http_sizes = []

    started = datetime.now(timezone.utc)
    print(f"mlflow-analyzer stats benchmark, {started:%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    print(f"load average at start: {load:.2f}"
          + ("  (other work is running: timings will be noisy; --repeat 3 reports the fastest run)"
             if load > 0.5 * (os.cpu_count() or 1) else ""))
    print("baseline: mlflow.search_traces(locations=[exp], max_results=None, return_type='pandas') "
          "+ pandas/numpy;")
    print("  on SQLite with " + " ".join(f"{k}={v}" for k, v in BASELINE_SQL_ENV.items())
          + " (MLflow's default of 32 span-loading threads exceeds its 5+10 pooled connections: "
            "QueuePool limit errors on big experiments; fewer threads are also faster there);"
            " over HTTP with MLflow's defaults")
    print(flush=True)

    args.cache.mkdir(parents=True, exist_ok=True)
    corpora = build_corpora(sizes, args.cache)
    print(flush=True)

    # Warm-up, untimed: byte-compiled modules and the OS file cache ready for every tool alike.
    subprocess.run([sys.executable, "-c", "import mlflow, pandas, numpy, sqlalchemy, "
                    "mlflow_analyzer.stats, mlflow_analyzer.findings, mlflow_analyzer.sources"],
                   env=child_env(), capture_output=True)
    for n in sizes:
        with contextlib.suppress(OSError), open(args.cache / f"corpus-{n}" / "mlflow.db", "rb") as fh:
            while fh.read(1 << 20):
                pass
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    print(f"(this process peaks at {own:.0f} MB: on Linux no child's peak RSS reads below its "
          "parent's at fork, so it stays small)")

    cli = cli_command()
    env_ours = child_env()
    env_base = {"sqlite": child_env(BASELINE_SQL_ENV), "http": child_env()}
    results: list[dict] = []
    disagreements: list[str] = []

    def record(size: int, store: str, tool: str, run: Run, extra: dict | None = None) -> dict:
        row = {"size": size, "store": store, "tool": tool, "wall_s": round(run.wall, 3),
               "peak_rss_mb": round(run.rss_mb, 1), "rc": run.rc, **(extra or {})}
        results.append(row)
        status = "" if run.rc == 0 else f"  FAILED (exit {run.rc}): {run.stderr.strip()[-400:]}"
        print(f"  {size:>6,} {store:<6} {tool:<9} {run.wall:8.2f} s  {run.rss_mb:7.1f} MB{status}", flush=True)
        return row

    def stats_vs_baseline(size: int, store: str, uri: str, exp: str) -> None:
        stats_cmd = cli + ["stats", "--tracking-uri", uri, "--experiment-id", exp, "--format", "json"]
        ours = best_of(args.repeat, "stats", stats_cmd, env_ours)
        record(size, store, "stats", ours)
        base = best_of(args.repeat, "baseline", [sys.executable, "-c", BASELINE_CODE, uri, exp], env_base[store])
        phases = {}
        if base.rc == 0:
            with contextlib.suppress(ValueError):
                phases = base.json().get("_phases", {})
        record(size, store, "baseline", base, {"phases": phases})
        if phases:
            print("         baseline phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
        if ours.rc != 0 or base.rc != 0:
            disagreements.append(f"{size} {store}: a run failed, nothing to compare")
            return
        diffs = compare(ours.json(), base.json())
        what = "trace_count, error_count, latency mean/p50/p95/p99/max (all, OK), tokens, per-span count/errors/p50/p95"
        if diffs:
            disagreements.append(f"{size} {store}: " + "; ".join(diffs[:5]))
            print(f"  DISAGREE [{size} traces, {store}]: stats and baseline differ on "
                  + "; ".join(diffs[:5]) + (f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else ""))
        else:
            print(f"  AGREE [{size} traces, {store}]: stats and baseline agree on {what}")

    print("measuring (each run is a fresh process; wall from outside, peak RSS its own):", flush=True)
    for n in sizes:
        m = corpora[n]
        uri, exp = m["tracking_uri"], str(m["experiment_id"])
        stats_vs_baseline(n, "sqlite", uri, exp)
        if not args.no_findings:
            run = best_of(args.repeat, "findings",
                          cli + ["findings", "--tracking-uri", uri, "--experiment-id", exp, "--format", "json"],
                          env_ours)
            extra = {}
            if run.rc == 0:
                with contextlib.suppress(ValueError):
                    extra["findings"] = len(run.json().get("findings", []))
            record(n, "sqlite", "findings", run, extra)

    page_sizes = [int(s) for s in args.http_page_sizes.split(",") if s.strip()]

    def over_http(n: int, url: str) -> None:
        exp = str(corpora[n]["experiment_id"])
        warm = measure("warm-up", [sys.executable, "-c", WARMUP_CODE, url, exp], env_ours)
        print(f"  mlflow server on {url} (workers: {args.server_workers or 'MLflow default, 4'}) "
              f"serving the {n:,}-trace store; warmed up in {warm.wall:.1f} s (untimed)"
              + ("" if warm.rc == 0 else f" -- warm-up failed: {warm.stderr.strip()[-300:]}"), flush=True)
        stats_vs_baseline(n, "http", url, exp)
        for page in page_sizes:
            run = measure("api", [sys.executable, "-c", API_PAGE_CODE, url, exp, str(page)], env_ours)
            if run.rc != 0:
                print(f"         public API, page size {page}: failed: {run.stderr.strip()[-300:]}")
                continue
            count, secs = run.stdout.split()
            print(f"         public API, page size {page:>5}: {int(count):,} traces in {float(secs):.2f} s "
                  f"({int(count) / float(secs):,.0f} traces/s), process {run.wall:.2f} s, {run.rss_mb:.0f} MB",
                  flush=True)
            results.append({"size": n, "store": "http", "tool": f"api-page-{page}", "wall_s": round(run.wall, 3),
                            "read_s": round(float(secs), 3), "peak_rss_mb": round(run.rss_mb, 1), "rc": 0})

    for n in http_sizes:
        try:
            server = mlflow_server(corpora[n]["tracking_uri"], args.cache / f"corpus-{n}", args.server_workers)
            url = server.__enter__()
        except RuntimeError as exc:
            print(f"  HTTP at {n:,} traces skipped: {exc}")
            continue
        try:
            over_http(n, url)
        finally:
            server.__exit__(None, None, None)

    # --- the table
    def find(size, store, tool):
        for r in results:
            if (r["size"], r["store"], r["tool"]) == (size, store, tool) and r["rc"] == 0:
                return r
        return None

    print()
    rows = [["size", "store", "tool", "wall s", "peak RSS MB", "baseline/ours (time)", "baseline/ours (RSS)"]]
    for r in results:
        if r["tool"].startswith("api-page"):
            continue
        base = find(r["size"], r["store"], "baseline")
        ratio_t = ratio_m = ""
        if r["tool"] != "baseline" and base and r["rc"] == 0:
            ratio_t = f"{base['wall_s'] / r['wall_s']:.1f}x"
            ratio_m = f"{base['peak_rss_mb'] / r['peak_rss_mb']:.1f}x"
        wall = f"{r['wall_s']:.2f}" if r["rc"] == 0 else "failed"
        rows.append([f"{r['size']:,}", r["store"], r["tool"], wall, f"{r['peak_rss_mb']:.0f}", ratio_t, ratio_m])
    print(fmt_table(rows))
    print()

    if hasattr(os, "getloadavg"):
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        print()

    # --- targets
    failed = False

    def verdict(ok: bool | None, text: str) -> None:
        nonlocal failed
        if ok is None:
            print(f"SKIP  {text}")
            return
        failed |= not ok
        print(f"{'PASS' if ok else 'FAIL'}  {text}")

    ours_big, base_big = find(TARGET_SPEEDUP_SIZE, "sqlite", "stats"), find(TARGET_SPEEDUP_SIZE, "sqlite", "baseline")
    if ours_big and base_big:
        speed = base_big["wall_s"] / ours_big["wall_s"]
        verdict(speed >= TARGET_SPEEDUP,
                f"stats {speed:.1f}x faster than the baseline at {TARGET_SPEEDUP_SIZE:,} traces on SQLite "
                f"(target >= {TARGET_SPEEDUP:.0f}x; {ours_big['wall_s']:.2f} s vs {base_big['wall_s']:.2f} s)")
    else:
        verdict(None, f"speed target needs --sizes including {TARGET_SPEEDUP_SIZE} (stats and baseline both succeeding)")
    for n in sizes:
        r = find(n, "sqlite", "stats")
        if r:
            verdict(r["peak_rss_mb"] < TARGET_PEAK_MB,
                    f"stats peak memory {r['peak_rss_mb']:.0f} MB at {n:,} traces (target < {TARGET_PEAK_MB:.0f} MB)")
        else:
            verdict(False, f"stats did not run at {n:,} traces")
    small, large = find(sizes[0], "sqlite", "stats"), find(sizes[-1], "sqlite", "stats")
    if len(sizes) > 1 and small and large:
        growth = large["peak_rss_mb"] / small["peak_rss_mb"]
        verdict(growth < TARGET_GROWTH,
                f"stats memory growth {growth:.2f}x from {sizes[0]:,} to {sizes[-1]:,} traces "
                f"({small['peak_rss_mb']:.0f} -> {large['peak_rss_mb']:.0f} MB; target < {TARGET_GROWTH}x)")
    else:
        verdict(None, "memory growth target needs two sizes (e.g. --sizes 1000,10000)")
    if disagreements:
        verdict(False, "stats and baseline figures agree (" + " | ".join(disagreements)[:600] + ")")
    else:
        verdict(True, "stats and baseline figures agree at every size and store measured")
    for r in results:
        if r["store"] == "http" and r["tool"] == "stats":
            base = find(r["size"], "http", "baseline")
            tail = f", baseline {base['wall_s']:.2f} s ({base['wall_s'] / r['wall_s']:.1f}x)" if base else ""
            print(f"INFO  over HTTP (public API) at {r['size']:,} traces: stats {r['wall_s']:.2f} s, "
                  f"{r['peak_rss_mb']:.0f} MB{tail}")

    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"date": started.isoformat(), "machine": machine(),
                                             "results": results, "disagreements": disagreements}, indent=1) + "\n")
    return 1 if (args.check and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
