#!/usr/bin/env python
"""What redaction costs: in-process throughput on a corpus, and whole commands with and
without ``--no-redact``.

* The corpus (``mlflow_analyzer.corpus.ensure_corpus``, ``--traces`` traces) is built once
  into ``--cache`` (default ``benchmarks/.cache``) and reused.
* Throughput: every trace's raw JSON (what ``fetch`` writes) through
  ``redact.redact_value`` (the structural pass, one scan per document) and, as text,
  through ``redact.redact``; MB/s of JSON and microseconds per trace. Redaction is then
  checked to change nothing on the corpus (it holds no credentials: a change would be a
  false positive).
* Commands: ``findings`` and ``fetch`` over the corpus, as a user runs them (fresh
  processes, wall time from outside), with and without ``--no-redact``; the best of
  ``--repeat`` runs.

    python benchmarks/bench_redact.py --traces 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / "benchmarks" / ".cache"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--traces", type=int, default=1000, help="corpus size (default 1000)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--repeat", type=int, default=3, help="runs per command (best kept)")
    args = p.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
    os.environ.setdefault("MLFLOW_DISABLE_AGENT_HINT", "1")
    sys.path.insert(0, str(ROOT))
    from mlflow_analyzer import redact
    from mlflow_analyzer.corpus import ensure_corpus
    from mlflow_analyzer.sources import StoreQuery, open_store

    t0 = time.perf_counter()
    manifest = ensure_corpus(args.cache / f"corpus-{args.traces}", n_traces=args.traces)
    print(f"corpus: {args.traces} traces ({time.perf_counter() - t0:.1f} s to build or reuse)")
    uri, exp = manifest["tracking_uri"], str(manifest["experiment_id"])
    docs = list(open_store(StoreQuery(tracking_uri=uri, experiment_id=exp)).iter_raw())
    texts = [json.dumps(d, ensure_ascii=False) for d in docs]
    mb = sum(len(t) for t in texts) / 1e6

    redact.rules_info()  # rule compilation, once per process, measured apart
    t = time.perf_counter()
    redact.redact("warm-up text with a key=value pair and https://u:p@h/x")
    warm = time.perf_counter() - t
    t = time.perf_counter()
    out = [redact.redact_value(d) for d in docs]
    structural = time.perf_counter() - t
    t = time.perf_counter()
    out_text = [redact.redact(x) for x in texts]
    textual = time.perf_counter() - t
    changed = sum(a != b for a, b in zip(docs, out)) + sum(a != b for a, b in zip(texts, out_text))
    print(f"rules: {redact.rules_info()['rules']} gitleaks rules + ours; first use {warm * 1000:.0f} ms")
    print(f"structural (redact_value): {structural:.2f} s for {len(docs)} traces, {mb:.1f} MB: "
          f"{mb / structural:.1f} MB/s, {structural / len(docs) * 1e6:,.0f} us per trace")
    print(f"text (redact):             {textual:.2f} s: {mb / textual:.1f} MB/s")
    print(f"false positives on the corpus: {changed} changed documents")

    exe = [sys.executable, "-m", "mlflow_analyzer"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in (("findings", ["findings", "--tracking-uri", uri, "--experiment-id", exp]),
                          ("fetch", ["fetch", "--tracking-uri", uri, "--experiment-id", exp,
                                     "--output", str(Path(tmp) / "f.jsonl")])):
            best = {}
            for flag in ("", "--no-redact"):
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    subprocess.run(exe + cmd + ([flag] if flag else []), check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    times.append(time.perf_counter() - t)
                best[flag] = min(times)
            print(f"{name:9} redacted {best['']:.2f} s, --no-redact {best['--no-redact']:.2f} s "
                  f"(+{best[''] - best['--no-redact']:.2f} s)")
    return 0 if changed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
