"""tree, health, extract and fetch: bounded, agent-friendly output on real traces."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from builders import cli as run

from mlflow_analyzer.extract import RECIPES




@pytest.fixture(scope="module")
def files(corpus, tmp_path_factory):
    d = tmp_path_factory.mktemp("cmd")
    uri, exp = corpus["tracking_uri"], corpus["experiment_id"]
    r = run("fetch", "--tracking-uri", uri, "--experiment-id", exp, "-o", str(d / "all.jsonl"))
    assert r.returncode == 0, r.stderr
    note = json.loads(r.stdout)
    assert note["traces"] == corpus["trace_count"] and set(note) >= {"path", "traces", "bytes"}
    tid = next(p for p in corpus["problems"] if p["kind"] == "cascade")["trace_ids"][0]
    r = run("fetch", "--tracking-uri", uri, "--trace-id", tid, "-o", str(d / "one.json"))
    assert r.returncode == 0 and len(r.stdout) < 300  # only the path and counts
    # a wide trace: one root with 120 children
    raw = json.loads((d / "one.json").read_text())
    root = next(s for s in raw["data"]["spans"] if s["parent_span_id"] is None)
    wide = dict(raw, data={"spans": [root] + [
        dict(root, span_id=f"{i:016x}", parent_span_id=root["span_id"], name=f"child_{i}") for i in range(120)]})
    (d / "wide.json").write_text(json.dumps(wide))
    return {"dir": d, "tid": tid, "uri": uri, "exp": exp}


def test_fetch_writes_mlflow_json(files):
    raw = json.loads((files["dir"] / "one.json").read_text())
    assert raw["info"]["trace_id"] == files["tid"] and raw["data"]["spans"]


def test_tree_shows_errors_and_is_bounded(files):
    r = run("tree", str(files["dir"] / "one.json"))
    assert r.returncode == 0 and "!!" in r.stdout and "ERROR" in r.stdout
    r = run("tree", str(files["dir"] / "wide.json"), "--max-children", "10")
    assert r.returncode == 0
    assert "sibling span(s) elided" in r.stdout and len(r.stdout.splitlines()) < 20
    r = run("tree", str(files["dir"] / "wide.json"), "--timeline", "--max-spans", "15")
    assert r.returncode == 0 and "more span(s)" in r.stdout and "|" in r.stdout


def test_health_on_a_trace_without_assessments(files):
    raw = json.loads((files["dir"] / "one.json").read_text())
    raw["info"].pop("assessments", None)
    p = files["dir"] / "noassess.json"
    p.write_text(json.dumps(raw))
    r = run("health", str(p))
    assert r.returncode == 0, r.stderr
    h = json.loads(r.stdout)
    assert h["root_causes"] and h["assessments"]["failing"] == []
    assert h["slowest_spans_by_self_time"]


def test_health_tells_judge_errors_apart(corpus, files):
    p = next(p for p in corpus["problems"] if p["kind"] == "judge_error")
    r = run("health", "--tracking-uri", files["uri"], "--trace-id", p["trace_ids"][0])
    h = json.loads(r.stdout)
    assert h["state"] == "OK" and h["assessments"]["judge_errors"]
    assert any("not trace errors" in x for x in h["problems"])


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_yields_results(files, recipe):
    r = run("extract", str(files["dir"] / "all.jsonl"), "--recipe", recipe, "--limit", "5")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert 1 <= len(lines) <= 5, (recipe, r.stderr)
    for line in lines:
        json.loads(line)


def test_extract_raw_view_and_errors(files):
    r = run("extract", str(files["dir"] / "one.json"), "--view", "raw", "-p", ".info.trace_id")
    assert json.loads(r.stdout) == files["tid"]
    r = run("extract", str(files["dir"] / "one.json"), "-p", ".[")
    assert r.returncode == 2 and "does not compile" in r.stderr and "Traceback" not in r.stderr


def test_extract_stops_reading_at_the_limit(corpus, tmp_path):
    """--limit N: the first N results in reading order, the same as the first N of a larger
    limit, and the traces past the limit are not read."""
    src = ["--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"]]
    few = run("extract", *src, "--recipe", "spans", "--limit", "7")
    assert few.returncode == 0, few.stderr
    out = tmp_path / "all.jsonl"
    many = run("extract", *src, "--recipe", "spans", "--limit", "100000", "--output", str(out))
    assert many.returncode == 0, many.stderr
    rows = out.read_text().splitlines()
    assert len(rows) > 7 and few.stdout.splitlines() == rows[:7]
    assert "showing the first 7 results, from " in few.stderr and "more follow" in few.stderr
    read = int(few.stderr.split("from ")[1].split()[0])
    assert read < corpus["trace_count"] / 4, few.stderr


def test_large_extract_output_spills_to_a_file(files, tmp_path):
    r = run("extract", str(files["dir"] / "all.jsonl"), "-p", ".spans[]", "--limit", "5000",
            env_extra={"MLFLOW_ANALYZER_SPILL_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    note = json.loads(r.stdout)
    assert os.path.exists(note["spilled_to"]) and note["bytes"] > 40_000


def test_commands_on_files_do_not_import_mlflow(files):
    code = (
        "import sys; from mlflow_analyzer.cli import main; "
        f"rc = main(['stats', {str(files['dir'] / 'one.json')!r}]); "
        "assert rc == 0; print('MLFLOW' if 'mlflow' in sys.modules else 'NO-MLFLOW', file=sys.stderr)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "NO-MLFLOW" in r.stderr
