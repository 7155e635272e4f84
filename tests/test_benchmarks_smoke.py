"""The benchmark runs end to end on tiny corpora: corpora built once and reused, every tool,
the baseline, the floors, the table, the agreement check and the target lines. No timing is
asserted here (figures live in benchmarks/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


def _env():
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}


def test_bench_runs_every_tool_on_a_tiny_corpus(tmp_path):
    cache = tmp_path / "cache"
    r = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", "60", "--corpora", "agent", "--stores", "sqlite",
         "--cache", str(cache), "--json-out", str(tmp_path / "results.json"), "--markdown"],
        capture_output=True, text=True, env=_env(), timeout=1800,
    )
    out = r.stdout
    assert r.returncode == 0, r.stderr[-3000:] + out[-3000:]
    assert "corpus agent      60 traces" in out
    header = next(line for line in out.splitlines() if line.startswith("corpus  size"))
    for col in ("wall s", "peak MB", "ms/trace", "baseline/ours", "ours/floor"):
        assert col in header
    rows = [line.split() for line in out.splitlines() if line.startswith("agent   60")]
    tools = {row[3] for row in rows}
    assert tools >= {"stats", "findings", "extract", "session", "fetch", "report", "review", "baseline",
                     "floor:stats", "floor:findings", "floor:session", "floor:extract", "floor:fetch"}, out
    assert all(row[4] != "failed" for row in rows), out
    assert "AGREE [agent 60 sqlite]" in out and "DISAGREE" not in out
    assert "PASS  stats and the baseline agree" in out and "stats peak memory" in out
    assert "| corpus | size | store | tool |" in out  # --markdown
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert {r["tool"] for r in results} >= {"stats", "baseline"}
    # Reused, not rebuilt, on a second run.
    again = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", "60", "--corpora", "agent", "--stores", "sqlite", "--tools", "stats",
         "--no-baseline", "--no-floors", "--cache", str(cache)],
        capture_output=True, text=True, env=_env(), timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reused" in again.stdout


def test_bench_rejects_bad_arguments():
    r = subprocess.run([sys.executable, str(BENCH), "--sizes", "10"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "at least 40" in r.stderr
    r = subprocess.run([sys.executable, str(BENCH), "--stores", "oracle"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown store" in r.stderr


def test_multiplied_corpus_is_read_by_mlflow_like_any_other(tmp_path, monkeypatch):
    """Corpora above the build limit are the built one copied with fresh ids, sessions and
    times: MLflow itself reads every copy, and the figures scale with the copies."""
    sys.path.insert(0, str(BENCH.parent))
    import corpora

    monkeypatch.setattr(corpora, "BUILD_LIMIT", {"agent": 60, "rag": 60})
    base = corpora.ensure("agent", 60, tmp_path)
    big = corpora.ensure("agent", 150, tmp_path)
    assert big["trace_count"] == 150 and big["span_count"] > 2 * base["span_count"]
    import mlflow

    mlflow.set_tracking_uri(big["tracking_uri"])
    found = mlflow.search_traces(locations=[big["experiment_id"]], max_results=None, return_type="list")
    assert len(found) == 150 and len({t.info.trace_id for t in found}) == 150
    assert all(len(t.data.spans) > 0 for t in found)
    r = subprocess.run([sys.executable, "-m", "mlflow_analyzer", "stats", "--tracking-uri", big["tracking_uri"],
                        "--experiment-id", big["experiment_id"]], capture_output=True, text=True, env=_env())
    s = json.loads(r.stdout)
    one = json.loads(subprocess.run([sys.executable, "-m", "mlflow_analyzer", "stats", "--tracking-uri",
                                     base["tracking_uri"], "--experiment-id", base["experiment_id"]],
                                    capture_output=True, text=True, env=_env()).stdout)
    assert s["trace_count"] == 150 and s["sessions"]["count"] > 2 * one["sessions"]["count"]
    assert s["latency_ms"]["max"] == one["latency_ms"]["max"]


def test_bench_first_use_runs(tmp_path):
    """The first-use benchmark's table, on a ready environment made of this interpreter (no
    environment is built here; the figures come from real runs, see benchmarks/README.md)."""
    from mlflow_analyzer import __version__

    env_dir = tmp_path / "env"
    (env_dir / "bin").mkdir(parents=True)
    (env_dir / "bin" / "python").symlink_to(sys.executable)
    (env_dir / ".mlflow-analyzer-version").write_text(__version__ + "\n")
    bench = BENCH.parent / "bench_first_use.py"
    r = subprocess.run([sys.executable, str(bench), "--scenarios", "ready", "--env-dir", str(env_dir),
                        "--repeat", "1", "--cache", str(tmp_path / "cache"), "--json-out", str(tmp_path / "out.json")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-2000:]
    assert "scenario" in r.stdout and "first command s" in r.stdout and "margin of 120 s" in r.stdout
    (row,) = __import__("json").loads((tmp_path / "out.json").read_text())["rows"]
    assert row["scenario"] == "ready" and row["first_command_s"] > 0 and row["fetch_s"] > 0
