"""Any span graph terminates and loses no span: duplicate ids, self-parents, parent cycles,
a root that is its own parent, tens of thousands of levels. Cycles and duplicates are marked
on the spans and reported as an instrumentation finding."""

from __future__ import annotations

import json

import pytest

from mlflow_analyzer import cli as cli_module
from mlflow_analyzer.normalize import trace_from_dict

T0 = 1_790_000_000_000_000_000


def _span(i, parent, *, sid=None, name=None, error=False):
    return {
        "trace_id": "AAAAAAAAAAAAAAAAAAAAAA==",
        "span_id": sid or f"{i + 1:016x}",
        "parent_span_id": parent,
        "name": name or f"s{i}",
        "start_time_unix_nano": T0 + i * 1000,
        "end_time_unix_nano": T0 + 10_000_000 - i * 1000,
        "status": {"code": "STATUS_CODE_ERROR" if error else "STATUS_CODE_OK", "message": ""},
        "attributes": {"mlflow.spanType": '"CHAIN"'},
        "events": [],
    }


def _trace(spans, tid="tr-graph"):
    return {
        "info": {
            "trace_id": tid,
            "request_time": "2026-09-21T10:00:00Z",
            "state": "OK",
            "execution_duration_ms": 10,
            "trace_metadata": {},
            "tags": {},
        },
        "data": {"spans": spans},
    }


def _ids(i):
    return f"{i + 1:016x}"


GRAPHS = {
    # every span with the same id, each claiming itself as parent
    "same_id_everywhere": [_span(i, "00000000000000aa", sid="00000000000000aa") for i in range(6)],
    # the root is its own parent
    "root_own_parent": [_span(0, _ids(0))] + [_span(i, _ids(0)) for i in range(1, 4)],
    # a normal root, and three spans whose parents loop: 1 -> 2 -> 3 -> 1
    "cycle_of_three": [_span(0, None), _span(1, _ids(3)), _span(2, _ids(1)), _span(3, _ids(2)),
                       _span(4, _ids(2))],
    # two spans share an id; children of that id, a cycle through the duplicate
    "duplicate_ids": [_span(0, None), _span(1, _ids(0), sid="00000000000000dd"),
                      _span(2, _ids(0), sid="00000000000000dd"), _span(3, "00000000000000dd"),
                      _span(4, _ids(4))],
    # every span its own parent
    "all_self_parents": [_span(i, _ids(i)) for i in range(5)],
    # a two-span cycle and nothing else
    "only_a_cycle": [_span(0, _ids(1)), _span(1, _ids(0))],
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graph_terminates_and_keeps_every_span(name):
    raw = _trace(GRAPHS[name])
    t = trace_from_dict(raw)
    walked = list(t.walk())
    assert len(walked) == len(raw["data"]["spans"])  # nothing dropped
    assert len({id(s) for s in walked}) == len(walked)  # nothing twice
    assert t.roots and t.root is not None
    # walking up by parent id ends for every span
    for s in t.spans:
        seen = 0
        node = s
        while node.parent_id and node.parent_id in t.by_id:
            node = t.by_id[node.parent_id]
            seen += 1
            assert seen <= len(t.spans)
    d = t.to_dict()
    assert len(d["spans"]) == len(walked)
    assert any(s["cycle"] or s["duplicate_id"] for s in d["spans"])


def test_cycle_members_are_marked_and_cut_at_the_earliest():
    t = trace_from_dict(_trace(GRAPHS["cycle_of_three"]))
    by_name = {s.name: s for s in t.spans}
    assert [by_name[n].cycle for n in ("s0", "s1", "s2", "s3", "s4")] == [False, True, True, True, False]
    assert by_name["s1"] in t.roots and by_name["s1"].parent_id is None  # the earliest member
    assert [c.name for c in by_name["s1"].children] == ["s2"]
    assert not any(s.orphan for s in t.spans)


def test_duplicate_ids_are_marked_and_children_attach_to_the_first():
    t = trace_from_dict(_trace(GRAPHS["duplicate_ids"]))
    by_name = {s.name: s for s in t.spans}
    assert by_name["s2"].duplicate_id and not by_name["s1"].duplicate_id
    assert [c.name for c in by_name["s1"].children] == ["s3"]
    assert by_name["s4"].cycle  # its own parent


def _deep_chain(depth: int, *, errors: bool = True) -> dict:
    spans = [_span(i, _ids(i - 1) if i else None, error=errors and i >= depth - 3) for i in range(depth)]
    return _trace(spans, tid="tr-deep")


def test_tens_of_thousands_of_levels():
    depth = 20_000
    t = trace_from_dict(_deep_chain(depth))
    assert max(s.depth for s in t.spans) == depth - 1
    assert [s.name for s in t.root_causes()] == [f"s{depth - 1}"]
    assert len(t.innermost(lambda s: True)) == 1


def _run(capsys, *argv):
    code = cli_module.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


COMMANDS = [
    ["tree"], ["tree", "--timeline"], ["tree", "--format", "json"], ["tree", "--max-depth", "100000"],
    ["health"], ["stats"], ["findings", "--all"], ["extract", "--recipe", "errors"],
    ["extract", "--recipe", "slow"], ["session", "--list"],
]


@pytest.mark.parametrize("graph", sorted(GRAPHS) + ["deep"])
def test_every_command_terminates(graph, tmp_path, capsys):
    raw = _deep_chain(20_000) if graph == "deep" else _trace(GRAPHS[graph])
    p = tmp_path / "t.json"
    p.write_text(json.dumps(raw))
    for argv in COMMANDS:
        code, out, err = _run(capsys, *argv, str(p))
        assert code == 0, (argv, err)
        assert "internal error" not in err
    code, out, err = _run(capsys, "report", str(p), "--repo", str(tmp_path), "--branch", "b",
                          "--commit", "abc1234", "--no-charts")
    assert code == 0, err
