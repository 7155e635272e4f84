#!/usr/bin/env python
"""Speed and memory of every mlflow-analyzer command that reads a store, against the obvious
baseline and a floor, measured in the same run.

* Corpora (``corpora.py``): two shapes (``agent``: ~11 spans a trace; ``rag``: ~5 spans with
  large payloads) at each ``--sizes``, built once into ``--cache`` (default
  ``benchmarks/.cache``, gitignored) and reused.
* Stores: the SQLite file itself; the same rows copied into a PostgreSQL server the benchmark
  starts (``--stores`` postgresql, where PostgreSQL's binaries and psycopg2 are installed);
  a real ``mlflow server`` on 127.0.0.1 serving the SQLite file (http).
* Tools: the commands as a user runs them (the ``mlflow-analyzer`` console script): ``stats``,
  ``findings``, ``extract --recipe errors --limit 20``, ``session --list``, ``fetch`` (to a
  file), ``report`` (no charts), ``review --no-llm``; the baseline
  (``mlflow.search_traces`` + pandas: the stats figures); floors (``floors.py``).
* Every measurement is a fresh process: wall time from outside (start-up and imports
  included), peak memory its own ``ru_maxrss`` from ``os.wait4``.
* ``stats`` and the baseline must agree on their figures (``AGREE``/``DISAGREE``).

Prints one table (ratios to the baseline and to the floor, peak memory, milliseconds per
trace and how it grows with size) and ``PASS``/``FAIL``/``SKIP`` lines for the targets; with
``--check`` exits 1 when a target fails.

    python benchmarks/bench.py                                  # the default matrix
    python benchmarks/bench.py --sizes 1000 --stores sqlite --corpora agent
    python benchmarks/bench.py --sizes 1000,10000,50000 --http-sizes 10000 --check
"""

from __future__ import annotations

import argparse
import contextlib
import glob
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
sys.path.insert(0, str(HERE))
import corpora  # noqa: E402

DEFAULT_CACHE = HERE / ".cache"
TOOLS = ("stats", "findings", "extract", "session", "fetch", "report", "review")
FLOOR_OF = {"stats": "stats", "findings": "findings", "extract": "extract", "session": "session",
            "fetch": "fetch", "report": "findings", "review": "findings"}

# Targets (issue 11).
HTTP_SPEEDUP = 5.0  # stats and findings over a tracking server, vs the baseline, at 10,000 traces
SQLITE_STATS_SPEEDUP = 10.0  # stats on SQLite vs the baseline at 10,000 traces
FLOOR_RATIO = 3.0  # findings, extract --limit, session --list within 3x their floor at 50,000 traces
ONE_PASS = 1.3  # report and review --no-llm: at most this times findings (one pass, not one per section)
FETCH_FLOOR_RATIO = 3.0  # fetch: one pass
TARGET_SIZE, FLOOR_SIZE = 10_000, 50_000
PEAK_MB = 300.0  # stats peak RSS

BASELINE_SQL_ENV = {"MLFLOW_SEARCH_TRACES_MAX_THREADS": str(min(8, os.cpu_count() or 1))}

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
    "trace_count": int(len(df)), "error_count": int((state == "ERROR").sum()),
    "error_rate": float((state == "ERROR").mean()) if len(df) else 0.0,
    "latency_ms": dist(lat), "ok_latency_ms": dist(ok), "tokens": tokens,
    "spans": [{"name": n, "count": int(r["count"]), "error_count": int(r["error_count"]),
               "p50_ms": float(r["p50_ms"]), "p95_ms": float(r["p95_ms"])} for n, r in per_span.iterrows()],
}
out["_phases"] = {"import_s": t1 - t0, "search_traces_s": t2 - t1, "pandas_s": time.perf_counter() - t2}
print(json.dumps(out))
"""

# Untimed: the server's workers build their store lazily on their first requests.
WARMUP_CODE = r"""
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
url, exp = sys.argv[1], sys.argv[2]
body = json.dumps({"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": exp}}],
                   "max_results": 5}).encode()
def one(_):
    req = urllib.request.Request(url + "/api/3.0/mlflow/traces/search", data=body,
                                 headers={"Content-Type": "application/json"})
    return len(urllib.request.urlopen(req, timeout=120).read())
with ThreadPoolExecutor(16) as pool:
    list(pool.map(one, range(48)))
"""


# --- one process -------------------------------------------------------------------------------


class Run:
    def __init__(self, wall: float, rss_mb: float, rc: int, stdout: str, stderr: str, cpu: float):
        self.wall, self.rss_mb, self.rc, self.stdout, self.stderr, self.cpu = wall, rss_mb, rc, stdout, stderr, cpu

    def json(self) -> dict:
        try:
            return json.loads(self.stdout)
        except ValueError:
            lines = [ln for ln in self.stdout.splitlines() if ln.strip()]
            try:
                return json.loads(lines[-1]) if lines else {}
            except ValueError:
                return {}


def measure(cmd: list[str], env: dict, timeout: float | None = None, cwd: str | None = None) -> Run:
    """``cmd`` in a fresh process: wall from outside, that process's peak RSS and CPU time."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, stdin=subprocess.DEVNULL, cwd=cwd)
        deadline = None if timeout is None else start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        wall = time.perf_counter() - start
        rc = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        rss = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
        # Children of the process (forked workers) count in its CPU time once it has waited for them.
        cpu = usage.ru_utime + usage.ru_stime
        return Run(wall, rss, rc, out.read(), err.read(), cpu)


def best_of(n: int, cmd: list[str], env: dict, timeout: float | None = None, cwd: str | None = None) -> Run:
    runs = [measure(cmd, env, timeout, cwd) for _ in range(max(1, n))]
    failed = [r for r in runs if r.rc != 0]
    if failed:
        return failed[0]
    best = min(runs, key=lambda r: r.wall)
    best.rss_mb = max(r.rss_mb for r in runs)
    return best


def child_env(extra: dict | None = None) -> dict:
    # Byte-compiled modules as an installed package has them (PYTHONDONTWRITEBYTECODE would make
    # every run compile the modules changed since the last install).
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "PYTHONDONTWRITEBYTECODE")}
    env.update(MLFLOW_DISABLE_AGENT_HINT="1", MLFLOW_MODEL_CATALOG_URI="", MLFLOW_DISABLE_TELEMETRY="true",
               MLFLOW_ENABLE_ASYNC_TRACE_LOGGING="false")
    env.update(extra or {})
    return env


def cli_command() -> list[str]:
    exe = Path(sys.executable).parent / "mlflow-analyzer"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("mlflow-analyzer")
    return [found] if found else [sys.executable, "-m", "mlflow_analyzer"]


# --- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(db_uri: str, workdir: Path, workers: int | None):
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", db_uri,
           "--default-artifact-root", str(workdir / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port)]
    if workers:
        cmd += ["--workers", str(workers)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=fh, env=child_env(), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("mlflow server exited:\n" + log.read_text()[-2000:])
                if time.time() > deadline:
                    raise RuntimeError("mlflow server did not start in 180 s")
                time.sleep(0.5)
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of every live process in a process group (Linux /proc)."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for d in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(d).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: the process group
            total += (int(fields[11]) + int(fields[12])) / tck
    return total


def pg_bindir() -> str | None:
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(versions[-1]) if versions else None


@contextlib.contextmanager
def postgres_server(cache: Path):
    """A PostgreSQL server on a free port, its data kept in ``cache/postgres`` (reused)."""
    bindir = pg_bindir()
    if not bindir:
        raise RuntimeError("no PostgreSQL server binaries (initdb) on this machine")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        raise RuntimeError("psycopg2 is not installed (pip install psycopg2-binary)") from None
    d = cache / "postgres"
    data = d / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_user = ["runuser", "-u", "nobody", "--"]
    if not (data / "PG_VERSION").is_file():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        if as_user:
            shutil.chown(d, "nobody")
        subprocess.run([*as_user, f"{bindir}/initdb", "-D", str(data), "-U", "postgres", "-A", "trust"],
                       check=True, capture_output=True)
    port = free_port()
    sock = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    if as_user:
        shutil.chown(sock, "nobody")
    subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", str(data), "-l", str(d / "log"), "-w", "-o",
                    f"-k {sock} -p {port} -h 127.0.0.1 -c fsync=off -c synchronous_commit=off", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(sock, ignore_errors=True)


# --- agreement ---------------------------------------------------------------------------------


def close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)


def sampled_error(ours: dict, base: dict) -> float:
    """Largest relative error of the per-span p50/p95 a sampled ``stats`` estimated."""
    theirs = {s["name"]: s for s in base.get("spans", [])}
    worst = 0.0
    for s in ours.get("spans", []):
        t = theirs.get(s["name"])
        for key in ("p50_ms", "p95_ms"):
            if t and s.get(key) is not None and t.get(key):
                worst = max(worst, abs(s[key] - t[key]) / abs(t[key]))
    return worst


def compare(ours: dict, base: dict) -> list[str]:
    """Differences between stats' figures and the baseline's. Figures a sampled stats says it
    estimated (over HTTP) are left out here (see sampled_error)."""
    sampled = set((ours.get("sample") or {}).get("estimated") or [])
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
            if f"spans[].{key}" in sampled:
                continue
            if not close(mine[name].get(key), theirs[name].get(key)):
                diffs.append(f"span {name!r} {key}: stats {mine[name].get(key)} vs baseline {theirs[name].get(key)}")
    return diffs


# --- the run -------------------------------------------------------------------------------------


def parse_list(text: str, known: tuple | None = None, what: str = "") -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if known is not None:
        bad = [s for s in items if s not in known]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(bad)} (known: {', '.join(known)})")
    return items


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(s.replace("_", "")) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers like 1000,10000") from None
    if not sizes or sizes[0] < 40:
        raise argparse.ArgumentTypeError("every size must be at least 40 traces (the agent corpus needs it)")
    return sizes


def machine() -> str:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = ", " + line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = f", {int(Path('/proc/meminfo').read_text().split()[1]) / 1024 / 1024:.0f} GB RAM"
    try:
        from importlib.metadata import version

        mv = version("mlflow")
    except Exception:  # pragma: no cover
        mv = "?"
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores{mem}{cpu}; Python {platform.python_version()}, MLflow {mv}"


def fmt_table(rows: list[list[str]], left: int = 4) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _interrupt(signum, frame):  # servers started here are stopped by their context managers
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started in the background
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=parse_sizes, default=[1000, 10000, 50000], help="corpus sizes (default 1000,10000,50000)")
    p.add_argument("--corpora", type=lambda t: parse_list(t, corpora.SHAPES, "corpus"), default=list(corpora.SHAPES),
                   help="corpus shapes (default agent,rag)")
    p.add_argument("--stores", type=lambda t: parse_list(t, ("sqlite", "postgresql", "http"), "store"),
                   default=["sqlite", "postgresql", "http"], help="stores (default sqlite,postgresql,http)")
    p.add_argument("--tools", type=lambda t: parse_list(t, TOOLS, "tool"), default=list(TOOLS),
                   help="commands to time (default all: " + ",".join(TOOLS) + ")")
    p.add_argument("--http-sizes", type=parse_sizes, default=[10000],
                   help="sizes measured over HTTP, among --sizes (default 10000)")
    p.add_argument("--postgres-sizes", type=parse_sizes, default=None,
                   help="sizes measured on PostgreSQL, among --sizes (default: all)")
    p.add_argument("--baseline-sizes", type=parse_sizes, default=None,
                   help="sizes where the baseline runs (default: all; at 50,000 it takes minutes and GBs)")
    p.add_argument("--http-corpora", type=lambda t: parse_list(t, corpora.SHAPES, "corpus"), default=None,
                   help="corpus shapes measured over HTTP (default: all of --corpora)")
    p.add_argument("--server-workers", type=int, default=None, help="mlflow server --workers (default: MLflow's, 4)")
    p.add_argument("--no-baseline", action="store_true", help="skip the baseline")
    p.add_argument("--no-floors", action="store_true", help="skip the floors")
    p.add_argument("--repeat", type=int, default=1, help="runs per measurement, the fastest reported (default 1)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"corpora cache (default {DEFAULT_CACHE})")
    p.add_argument("--json-out", type=Path, help="also write every measurement as JSON here")
    p.add_argument("--markdown", action="store_true", help="also print the table as Markdown (for the README)")
    p.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    try:
        args = p.parse_args(argv)
    except argparse.ArgumentTypeError as exc:  # pragma: no cover - argparse reports type errors itself
        p.error(str(exc))
    args.cache = args.cache.resolve()
    sizes = args.sizes
    http_sizes = [n for n in args.http_sizes if n in sizes] if "http" in args.stores else []
    pg_sizes = [n for n in (args.postgres_sizes or sizes) if n in sizes] if "postgresql" in args.stores else []
    base_sizes = [] if args.no_baseline else [n for n in (args.baseline_sizes or sizes) if n in sizes]
    http_corpora = args.http_corpora or args.corpora

    started = datetime.now(timezone.utc)
    print(f"mlflow-analyzer benchmark, {started:%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}")
    load = os.getloadavg()[0]
    print(f"load average at start: {load:.2f}" + ("  (other work is running: timings are noisy)" if load > 1.5 else ""))
    print("baseline: mlflow.search_traces(locations=[exp], max_results=None, return_type='pandas') + pandas; on SQL stores "
          + " ".join(f"{k}={v}" for k, v in BASELINE_SQL_ENV.items())
          + " (MLflow's 32 span-loading threads overflow its 5+10 pooled connections); over HTTP MLflow's defaults")
    from floors import PARSER

    print(f"floors: benchmarks/floors.py (one pass, the database driver, {PARSER} to parse JSON)")
    print(flush=True)

    # Corpora, built (once) in a child each: this process stays small (a child's peak RSS on
    # Linux starts at its parent's RSS when forked).
    args.cache.mkdir(parents=True, exist_ok=True)
    manifests: dict[tuple[str, int], dict] = {}
    for shape in args.corpora:
        for n in sizes:
            t = time.perf_counter()
            code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import corpora; from pathlib import Path; "
                    "print(json.dumps(corpora.ensure(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))))")
            r = subprocess.run([sys.executable, "-c", code, str(HERE), shape, str(n), str(args.cache)],
                               capture_output=True, text=True, env=child_env())
            if r.returncode != 0:
                raise SystemExit(f"building the {shape} corpus of {n} traces failed:\n{r.stderr[-3000:]}")
            m = json.loads(r.stdout.strip().splitlines()[-1])
            manifests[(shape, n)] = m
            how = (f"reused (first built in {m.get('build_seconds')} s, {m.get('writer')})" if m.get("reused")
                   else f"built in {time.perf_counter() - t:.0f} s ({m.get('writer')})")
            print(f"corpus {shape:<5} {n:>7,} traces {m['span_count']:>9,} spans: {how}", flush=True)
    print(flush=True)

    import mlflow_analyzer

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(mlflow_analyzer.__file__).parent), str(HERE)],
                   env=child_env(), capture_output=True)  # byte-compiled modules ready for every tool alike
    subprocess.run([sys.executable, "-c", "import mlflow, pandas, mlflow_analyzer.cli, mlflow_analyzer.findings"],
                   env=child_env(), capture_output=True)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"(this process: {own:.0f} MB; no child's peak RSS reads below its parent's at fork on Linux)")
    cli = cli_command()
    results: list[dict] = []
    disagreements: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="bench-scratch-"))

    def record(shape, n, store, tool, run: Run, extra: dict | None = None) -> dict:
        row = {"corpus": shape, "size": n, "store": store, "tool": tool, "wall_s": round(run.wall, 3),
               "peak_rss_mb": round(run.rss_mb, 1), "cpu_s": round(run.cpu, 2), "rc": run.rc, **(extra or {})}
        results.append(row)
        status = "" if run.rc == 0 else f"  FAILED (exit {run.rc}): {run.stderr.strip()[-300:]}"
        more = "".join(f"  {k} {v}" for k, v in (extra or {}).items() if k in ("server_cpu_s", "note"))
        print(f"  {shape:<5} {n:>7,} {store:<10} {tool:<14} {run.wall:8.2f} s {run.rss_mb:7.0f} MB{more}{status}", flush=True)
        return row

    def measure_store(shape: str, n: int, store: str, uri: str, exp: str, server_pgid: int | None = None) -> None:
        src = ["--tracking-uri", uri, "--experiment-id", exp]
        env = child_env()
        ours_stats = None
        for tool in args.tools:
            work = scratch / f"{shape}-{n}-{store}-{tool}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            cmd = {
                "stats": cli + ["stats", *src, "--format", "json"],
                "findings": cli + ["findings", *src, "--format", "json"],
                "extract": cli + ["extract", *src, "--recipe", "errors", "--limit", "20"],
                "session": cli + ["session", *src, "--list"],
                "fetch": cli + ["fetch", *src, "--output", str(work / "all.jsonl")],
                "report": cli + ["report", *src, "--branch", "bench", "--commit", "0000000", "--no-charts",
                                 "--repo", str(work), "--output-dir", str(work)],
                "review": cli + ["review", *src, "--no-llm", "--quiet", "--branch", "bench", "--commit", "0000000",
                                 "--repo", str(work)],
            }[tool]
            before = group_cpu(server_pgid) if server_pgid else None
            run = best_of(args.repeat, cmd, env, timeout=3600, cwd=str(work))
            extra = {}
            if before is not None:
                extra["server_cpu_s"] = round(group_cpu(server_pgid) - before, 1)
            if tool == "stats" and run.rc == 0:
                ours_stats = run.json()
                if ours_stats.get("sample"):
                    extra["note"] = f"sample {ours_stats['sample']}"
            if tool == "findings" and run.rc == 0:
                out = run.json()
                extra["findings"] = out.get("findings_total")
                if out.get("sample") or (out.get("stats") or {}).get("sample"):
                    extra["note"] = f"sample {out.get('sample') or out['stats']['sample']}"
            record(shape, n, store, tool, run, extra)
            shutil.rmtree(work, ignore_errors=True)
        if n in base_sizes:
            before = group_cpu(server_pgid) if server_pgid else None
            run = best_of(args.repeat, [sys.executable, "-c", BASELINE_CODE, uri, exp],
                          child_env(BASELINE_SQL_ENV if store != "http" else None), timeout=7200)
            extra = {"phases": run.json().get("_phases", {}) if run.rc == 0 else {}}
            if before is not None:
                extra["server_cpu_s"] = round(group_cpu(server_pgid) - before, 1)
            record(shape, n, store, "baseline", run, extra)
            if run.rc == 0 and ours_stats is not None:
                diffs = compare(ours_stats, run.json())
                tag = f"[{shape} {n:,} {store}]"
                if diffs:
                    disagreements.append(f"{tag} " + "; ".join(diffs[:4]))
                    print(f"  DISAGREE {tag}: " + "; ".join(diffs[:4]) + (f" (+{len(diffs) - 4})" if len(diffs) > 4 else ""))
                elif ours_stats.get("sample"):
                    smp = ours_stats["sample"]
                    print(f"  AGREE {tag}: exact figures agree (counts, latency percentiles, tokens, per-span counts and "
                          f"errors); per-span p50/p95 estimated from {smp['traces_with_spans']:,} of {smp['traces']:,} "
                          f"traces, largest relative error {100 * sampled_error(ours_stats, run.json()):.1f}%")
                else:
                    print(f"  AGREE {tag}: stats and the baseline agree on counts, latency percentiles, tokens, per-span figures")
        if not args.no_floors and store != "http":
            for kind in sorted({FLOOR_OF[t] for t in args.tools}):
                out = scratch / "floor.jsonl"
                run = best_of(args.repeat, [sys.executable, str(HERE / "floors.py"), kind, uri, exp, str(out)], child_env())
                record(shape, n, store, f"floor:{kind}", run)
                with contextlib.suppress(OSError):
                    out.unlink()

    print("measuring (each run a fresh process; wall from outside, peak RSS its own):", flush=True)
    for shape in args.corpora:
        for n in sizes:
            m = manifests[(shape, n)]
            if "sqlite" in args.stores:
                measure_store(shape, n, "sqlite", m["tracking_uri"], m["experiment_id"])

    if pg_sizes:
        try:
            with postgres_server(args.cache) as pg_uri:
                for shape in args.corpora:
                    for n in pg_sizes:
                        t = time.perf_counter()
                        code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import corpora; "
                                "print(json.dumps(corpora.load_postgres(json.loads(sys.argv[2]), sys.argv[3], sys.argv[4])))")
                        r = subprocess.run([sys.executable, "-c", code, str(HERE), json.dumps(manifests[(shape, n)]),
                                            pg_uri, f"bench-{shape}-{n}"], capture_output=True, text=True, env=child_env())
                        if r.returncode != 0:
                            print(f"  PostgreSQL {shape} {n:,}: loading failed: {r.stderr.strip()[-500:]}")
                            continue
                        info = json.loads(r.stdout.strip().splitlines()[-1])
                        print(f"  PostgreSQL: {shape} {n:,} traces " + ("reused" if info["reused"] else
                              f"loaded in {time.perf_counter() - t:.0f} s"), flush=True)
                        measure_store(shape, n, "postgresql", pg_uri, info["experiment_id"])
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"  PostgreSQL skipped: {exc}")

    for shape in (s for s in http_corpora if s in args.corpora):
        for n in http_sizes:
            m = manifests[(shape, n)]
            try:
                with mlflow_server(m["tracking_uri"], scratch / f"server-{shape}-{n}", args.server_workers) as (url, proc):
                    warm = measure([sys.executable, "-c", WARMUP_CODE, url, m["experiment_id"]], child_env())
                    print(f"  mlflow server {url} (workers: {args.server_workers or 'default 4'}) on the {shape} "
                          f"{n:,} store; warmed up in {warm.wall:.1f} s (untimed)", flush=True)
                    measure_store(shape, n, "http", url, m["experiment_id"], server_pgid=proc.pid)
            except RuntimeError as exc:
                print(f"  HTTP {shape} {n:,} skipped: {exc}")
    shutil.rmtree(scratch, ignore_errors=True)
    report(args, results, disagreements, sizes, started)
    failed = targets(results, disagreements, args)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"date": started.isoformat(), "machine": machine(), "results": results,
                                             "disagreements": disagreements}, indent=1) + "\n")
    return 1 if (args.check and failed) else 0


def find(results, shape, n, store, tool):
    for r in results:
        if (r["corpus"], r["size"], r["store"], r["tool"]) == (shape, n, store, tool) and r["rc"] == 0:
            return r
    return None


def report(args, results, disagreements, sizes, started) -> None:
    print()
    head = ["corpus", "size", "store", "tool", "wall s", "peak MB", "ms/trace", "x size", "baseline/ours", "ours/floor"]
    rows = [head]
    md = []
    for r in results:
        base = find(results, r["corpus"], r["size"], r["store"], "baseline")
        is_floor = r["tool"].startswith("floor:")
        floor = None if is_floor or r["tool"] == "baseline" else find(
            results, r["corpus"], r["size"], r["store"], "floor:" + FLOOR_OF.get(r["tool"], ""))
        smallest = next((find(results, r["corpus"], n, r["store"], r["tool"]) for n in sizes
                         if find(results, r["corpus"], n, r["store"], r["tool"])), None)
        per = 1000 * r["wall_s"] / r["size"] if r["rc"] == 0 else None
        growth = ""
        if smallest and smallest is not r and per:
            growth = f"{per / (1000 * smallest['wall_s'] / smallest['size']):.2f}"
        row = [r["corpus"], f"{r['size']:,}", r["store"], r["tool"],
               f"{r['wall_s']:.2f}" if r["rc"] == 0 else "failed", f"{r['peak_rss_mb']:.0f}",
               f"{per:.3f}" if per is not None else "", growth,
               f"{base['wall_s'] / r['wall_s']:.1f}x" if base and r is not base and r["rc"] == 0 and not is_floor else "",
               f"{r['wall_s'] / floor['wall_s']:.1f}x" if floor and r["rc"] == 0 else ""]
        rows.append(row)
        md.append("| " + " | ".join(row) + " |")
    print(fmt_table(rows))
    print("\n(x size: ms/trace at this size over ms/trace at the smallest size measured: 1.0 is linear, "
          "below 1.0 start-up amortized)")
    if args.markdown:
        print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        print("\n".join(md))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}\n")


def targets(results, disagreements, args) -> bool:
    failed = False

    def verdict(ok, text):
        nonlocal failed
        if ok is None:
            print(f"SKIP  {text}")
            return
        failed |= not ok
        print(f"{'PASS' if ok else 'FAIL'}  {text}")

    def ratio(shape, n, store, tool, other, want, fmt, invert=False):
        a, b = find(results, shape, n, store, tool), find(results, shape, n, store, other)
        if not a or not b:
            return verdict(None, fmt.format(shape=shape, n=n, r="?", a="?", b="?") + " (not measured)")
        r = (a["wall_s"] / b["wall_s"]) if invert else (b["wall_s"] / a["wall_s"])
        ok = r <= want if invert else r >= want
        verdict(ok, fmt.format(shape=shape, n=n, r=f"{r:.1f}x", a=f"{a['wall_s']:.2f} s", b=f"{b['wall_s']:.2f} s"))

    for shape in args.corpora:
        for tool in ("stats", "findings"):
            if tool in args.tools:
                ratio(shape, TARGET_SIZE, "http", tool, "baseline", HTTP_SPEEDUP,
                      f"{tool} over HTTP {{r}} faster than the baseline at {{n:,}} traces, {{shape}} (target >= {HTTP_SPEEDUP:.0f}x; {{a}} vs {{b}})")
        if "stats" in args.tools:
            ratio(shape, TARGET_SIZE, "sqlite", "stats", "baseline", SQLITE_STATS_SPEEDUP,
                  f"stats on SQLite {{r}} faster than the baseline at {{n:,}} traces, {{shape}} (target >= {SQLITE_STATS_SPEEDUP:.0f}x; {{a}} vs {{b}})")
        for tool in ("findings", "extract", "session"):
            if tool in args.tools:
                ratio(shape, FLOOR_SIZE, "sqlite", tool, "floor:" + tool, FLOOR_RATIO,
                      f"{tool} on SQLite {{r}} its floor at {{n:,}} traces, {{shape}} (target <= {FLOOR_RATIO:.0f}x; {{a}} vs {{b}})", invert=True)
        if "fetch" in args.tools:
            ratio(shape, FLOOR_SIZE, "sqlite", "fetch", "floor:fetch", FETCH_FLOOR_RATIO,
                  f"fetch on SQLite {{r}} its floor at {{n:,}} traces, {{shape}} (one pass; target <= {FETCH_FLOOR_RATIO:.0f}x; {{a}} vs {{b}})", invert=True)
        for tool in ("report", "review"):
            if tool in args.tools and "findings" in args.tools:
                ratio(shape, FLOOR_SIZE, "sqlite", tool, "findings", ONE_PASS,
                      f"{tool} on SQLite {{r}} findings at {{n:,}} traces, {{shape}} (one pass; target <= {ONE_PASS}x; {{a}} vs {{b}})", invert=True)
    stats_rows = [r for r in results if r["tool"] == "stats" and r["store"] in ("sqlite", "postgresql")]
    if stats_rows:
        worst = max(stats_rows, key=lambda r: r["peak_rss_mb"])
        verdict(worst["peak_rss_mb"] < PEAK_MB, f"stats peak memory at most {worst['peak_rss_mb']:.0f} MB "
                f"({worst['corpus']} {worst['size']:,} {worst['store']}; target < {PEAK_MB:.0f} MB)")
    if disagreements:
        verdict(False, "stats and the baseline agree (" + " | ".join(disagreements)[:800] + ")")
    elif any(r["tool"] == "baseline" for r in results):
        verdict(True, "stats and the baseline agree wherever both ran")
    else:
        verdict(None, "stats and the baseline agree (no baseline ran)")
    for store in ("postgresql",):
        for shape in args.corpora:
            a, b = find(results, shape, TARGET_SIZE, store, "stats"), find(results, shape, TARGET_SIZE, store, "baseline")
            if a and b:
                print(f"INFO  stats on PostgreSQL {b['wall_s'] / a['wall_s']:.1f}x faster than the baseline at "
                      f"{TARGET_SIZE:,} traces, {shape} ({a['wall_s']:.2f} s vs {b['wall_s']:.2f} s)")
    return failed


if __name__ == "__main__":
    sys.exit(main())
