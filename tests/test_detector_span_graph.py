"""The span-graph detector: parent cycles and duplicate span ids are one instrumentation
finding (graphs from test_span_graph), and a clean corpus says it checked."""

from __future__ import annotations

import json

from mlflow_analyzer import cli as cli_module
from test_span_graph import GRAPHS, _trace


def _run(capsys, *argv):
    code = cli_module.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cycles_and_duplicates_are_an_instrumentation_finding(tmp_path, capsys):
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps(_trace(GRAPHS[g], tid=f"tr-{g}")) for g in sorted(GRAPHS)) + "\n")
    code, out, err = _run(capsys, "findings", "--all", str(p))
    assert code == 0, err
    found = [f for f in json.loads(out)["findings"] if "not a tree" in f["title"]]
    assert len(found) == 1
    f = found[0]
    assert f["category"] == "missing_instrumentation"
    assert f["metrics"]["traces"] == len(GRAPHS)
    assert f["metrics"]["cycle_spans"] > 0 and f["metrics"]["duplicate_id_spans"] > 0
    code, out, err = _run(capsys, "health", str(p), "--trace-id", "tr-cycle_of_three")
    h = json.loads(out)
    assert h["cycle_spans"] == ["s1", "s2", "s3"] and any("parent cycle" in x for x in h["problems"])
    code, out, err = _run(capsys, "tree", str(p), "--trace-id", "tr-duplicate_ids")
    assert "DUPLICATE-ID" in out and "CYCLE" in out


def test_a_tree_is_clean(tmp_path, capsys):
    from test_span_graph import _span

    p = tmp_path / "t.json"
    p.write_text(json.dumps(_trace([_span(0, None), _span(1, f"{1:016x}")])))
    code, out, err = _run(capsys, "findings", "--all", str(p))
    assert code == 0 and not [f for f in json.loads(out)["findings"] if "not a tree" in f["title"]]
