"""The stats benchmark runs end to end on a tiny corpus: its table, agreement check and
target lines appear. No timing is asserted here (figures live in benchmarks/README.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_stats.py"


def test_bench_stats_runs_on_a_tiny_corpus(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    r = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", "60", "--no-http", "--cache", str(tmp_path / "cache"),
         "--json-out", str(tmp_path / "results.json")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    out = r.stdout
    assert r.returncode == 0, r.stderr[-3000:] + out[-3000:]
    assert "corpus     60 traces" in out
    # The table: header, and one row per tool.
    assert "size  store   tool" in out and "peak RSS MB" in out and "baseline/ours (time)" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("60 ")]
    assert {row[2] for row in rows} >= {"stats", "baseline", "findings"}, out
    # The comparison is guarded by the figures agreeing.
    assert "AGREE [60 traces, sqlite]: stats and baseline agree on trace_count, error_count" in out, out
    assert "DISAGREE" not in out
    assert "PASS  stats and baseline figures agree" in out
    assert "stats peak memory" in out
    # Reused, not rebuilt, on a second run.
    again = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", "60", "--no-http", "--no-findings", "--cache",
         str(tmp_path / "cache")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reused" in again.stdout
    assert (tmp_path / "results.json").is_file()


def test_bench_stats_rejects_a_corpus_too_small():
    r = subprocess.run([sys.executable, str(BENCH), "--sizes", "10", "--no-http"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "at least 40" in r.stderr


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
