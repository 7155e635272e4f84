#!/usr/bin/env python3
"""First use of the Claude Code plugin: how long the first command a skill runs takes.

Claude Code's Bash tool gives a command 120 s by default (the skills ask for 600 s on the
first call). After a fresh plugin install the toolkit's environment does not exist yet; this
measures what the first `mlflow-analyzer --version` costs in each case, from a fresh process,
with the plugin copied as Claude Code's cache holds it (links replaced by their targets) and
a fresh data folder each time:

  cold    no SessionStart hook: the first command builds the environment itself;
  hook    the plugin's SessionStart hook runs when the session opens, the first command
          comes --delay seconds later (the user's question and the model's first turn) and
          waits for the build the hook started;
  ready   the environment exists: --version, then the skill's first real command
          (`fetch --trace-id ... --output trace.json` on a small corpus store);
  full    for comparison (--scenarios full): a virtualenv with MLflow's whole package, as
          the plugin built before (`pip install mlflow`).

Each line: scenario, seconds of the first command, margin left of the Bash tool's 120 s
default, the environment's size on disk. pip's cache is used as a user's machine would
after one earlier install; --no-cache makes pip download everything (a fresh machine).

    .venv/bin/python benchmarks/bench_first_use.py
    .venv/bin/python benchmarks/bench_first_use.py --delay 5 --scenarios cold,hook,ready,full
    .venv/bin/python benchmarks/bench_first_use.py --no-cache --json-out first-use.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "plugin"
BASH_DEFAULT_TIMEOUT_S = 120
SCENARIOS = ("cold", "hook", "ready", "full")


def du(path: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def plugin_copy(dest: Path) -> Path:
    shutil.copytree(PLUGIN, dest, symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def base_env(home: Path, data: Path, no_cache: bool) -> dict:
    python_dir = home / "python-bin"
    python_dir.mkdir(parents=True, exist_ok=True)
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not (python_dir / "python3").exists():
        (python_dir / "python3").symlink_to(base if base.exists() else Path(sys._base_executable))
    env = {k: v for k, v in os.environ.items() if k.startswith(("PIP_", "http", "HTTP", "SSL_", "REQUESTS_"))}
    env.update({"PATH": f"{python_dir}:/usr/bin:/bin", "HOME": str(home), "MLFLOW_ANALYZER_DATA": str(data),
                "MLFLOW_DISABLE_AGENT_HINT": "1", "LANG": "C.UTF-8"})
    if not no_cache:  # the cache of this machine's user (HOME is a fresh folder)
        env.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    user_conf = Path.home() / ".config" / "pip" / "pip.conf"  # this machine's indexes
    if user_conf.is_file():
        env.setdefault("PIP_CONFIG_FILE", str(user_conf))
    if no_cache:
        env["PIP_NO_CACHE_DIR"] = "1"
    return env


def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=1800)
    elapsed = time.monotonic() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {r.returncode}): {r.stderr[-2000:]}")
    return elapsed, r


def corpus_store(cache: Path) -> tuple[str, str]:
    """A small corpus store (built once in a child process) and one of its trace ids."""
    code = ("import json, sys; from mlflow_analyzer.corpus import ensure_corpus; "
            "m = ensure_corpus(sys.argv[1], n_traces=60, experiment_name='first-use', seed=7); "
            "print(json.dumps({'uri': m['tracking_uri'], 'exp': str(m['experiment_id'])}))")
    env = dict(os.environ, MLFLOW_ENABLE_ASYNC_TRACE_LOGGING="false", MLFLOW_MODEL_CATALOG_URI="",
               MLFLOW_DISABLE_AGENT_HINT="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code, str(cache / "corpus-60")], env=env, capture_output=True,
                       text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"building the corpus failed: {r.stderr[-2000:]}")
    store = json.loads(r.stdout.strip().splitlines()[-1])
    r = subprocess.run([sys.executable, "-m", "mlflow_analyzer", "fetch", "--tracking-uri", store["uri"],
                        "--experiment-id", store["exp"], "--max-traces", "1", "--output", str(cache / "one.jsonl")],
                       env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"finding a trace failed: {r.stderr[-2000:]}")
    trace_id = json.loads((cache / "one.jsonl").read_text().splitlines()[0])["info"]["trace_id"]
    return store["uri"], trace_id


def run_scenarios(args) -> list[dict]:
    rows = []
    work = Path(tempfile.mkdtemp(prefix="first-use-"))
    try:
        plugin = plugin_copy(work / "plugin")
        exe = str(plugin / "bin" / "mlflow-analyzer")
        version = [exe, "--version"]
        for name in args.scenarios:
            home = work / f"home-{name}"
            data = home / "data"
            env = base_env(home, data, args.no_cache)
            row = {"scenario": name}
            if name == "cold":
                row["first_command_s"], _ = timed(version, env, work)
            elif name == "hook":
                hook_env = dict(env, CLAUDE_PLUGIN_ROOT=str(plugin), CLAUDE_PLUGIN_DATA=str(data))
                hook_env.pop("MLFLOW_ANALYZER_DATA")
                hook_s, _ = timed([str(plugin / "hooks" / "session-start")], hook_env, work)
                row["hook_s"] = hook_s
                time.sleep(args.delay)
                row["delay_s"] = args.delay
                row["first_command_s"], _ = timed(version, env, work)
            elif name == "ready":
                ready = args.env_dir
                if ready is None:
                    timed(version, env, work)  # build once, untimed
                else:
                    data.mkdir(parents=True)
                    (data / "env").symlink_to(ready)
                    stamp = Path(ready) / ".mlflow-analyzer-version"
                    if not stamp.exists():
                        raise SystemExit(f"--env-dir {ready}: not an environment the plugin built")
                best = min(timed(version, env, work)[0] for _ in range(args.repeat))
                row["first_command_s"] = best
                uri, trace_id = args.store
                fetch = [exe, "fetch", "--tracking-uri", uri, "--trace-id", trace_id, "--output",
                         str(work / "trace.json")]
                row["fetch_s"] = min(timed(fetch, env, work)[0] for _ in range(args.repeat))
            elif name == "full":
                venv = data / "full-env"
                start = time.monotonic()
                subprocess.run([str(home / "python-bin" / "python3"), "-m", "venv", str(venv)], env=env, check=True)
                spec = subprocess.run(["sed", "-n", 's/^ *"\\(mlflow[<>=!~][^"]*\\)".*/\\1/p', str(ROOT / "pyproject.toml")],
                                      capture_output=True, text=True).stdout.split()[0]
                subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                                "--disable-pip-version-check", spec, "jq", "pyyaml"], env=env, check=True,
                               capture_output=True)
                row["first_command_s"] = time.monotonic() - start
                row["env_bytes"] = du(venv)
            if name != "full":
                env_dir = data / "env"
                row["env_bytes"] = du(env_dir.resolve()) if env_dir.exists() else None
            row["margin_s"] = BASH_DEFAULT_TIMEOUT_S - row["first_command_s"]
            rows.append(row)
            print_row(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def print_header(args) -> None:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"first use of the plugin: {os.cpu_count()} cores, load average "
          f"{', '.join(f'{x:.1f}' for x in load) if load else 'n/a'}; pip cache "
          f"{'off (everything downloaded)' if args.no_cache else 'on'}; hook delay {args.delay:g} s")
    print(f"{'scenario':<8} {'first command s':>15} {'margin of 120 s':>15} {'env MB':>8}  notes")


def print_row(row: dict) -> None:
    notes = []
    if "fetch_s" in row:
        notes.append(f"fetch {row['fetch_s']:.2f} s")
    if "hook_s" in row:
        notes.append(f"hook returned in {row['hook_s']:.2f} s, first command {row['delay_s']:g} s later")
    mb = f"{row['env_bytes'] / 1e6:,.0f}" if row.get("env_bytes") else "-"
    print(f"{row['scenario']:<8} {row['first_command_s']:>15.1f} {row['margin_s']:>15.1f} {mb:>8}  {'; '.join(notes)}",
          flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="cold,hook,ready",
                    help=f"comma separated, of {', '.join(SCENARIOS)} (default: cold,hook,ready)")
    ap.add_argument("--delay", type=float, default=10.0,
                    help="seconds between the hook and the first command (default 10)")
    ap.add_argument("--repeat", type=int, default=3, help="ready: fastest of N runs (default 3)")
    ap.add_argument("--no-cache", action="store_true", help="pip downloads everything (a fresh machine)")
    ap.add_argument("--env-dir", help="ready: use this environment the plugin built instead of building one")
    ap.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache"), help="where the corpus store is kept")
    ap.add_argument("--json-out", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {unknown[0]!r} (choose from {', '.join(SCENARIOS)})")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    args.store = corpus_store(cache) if "ready" in args.scenarios else None
    print_header(args)
    rows = run_scenarios(args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"load": os.getloadavg(), "no_cache": args.no_cache,
                                                   "delay_s": args.delay, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
