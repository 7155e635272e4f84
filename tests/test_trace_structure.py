"""references/trace-structure.md against real traces: every documented path exists in the
corpus with the documented type, in the raw view (what MLflow writes, as `fetch` saves it and
`extract --view raw` reads it) and in the normalized view (`extract`'s default)."""

from __future__ import annotations

import base64
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from doc_helpers import markdown_section, run_cli

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "references" / "trace-structure.md"
JQ_TYPES = {"string", "number", "boolean", "object", "array", "null"}


def _rows(section: str) -> list[tuple[str, set[str]]]:
    rows = []
    for line in markdown_section(DOC, section).splitlines():
        cell = re.match(r"^\|\s*`(\.[^`]+)`\s*\|\s*([^|]*?)\s*\|", line)
        if cell:
            types = {t.strip() for t in cell.group(2).split(" or ")}
            assert types <= JQ_TYPES, f"{cell.group(1)}: unknown type(s) {types - JQ_TYPES}"
            rows.append((cell.group(1), types))
    assert rows, f"no paths in '## {section}'"
    return rows


RAW = _rows("Raw view")
NORMALIZED = _rows("Normalized view")


@pytest.fixture(scope="module")
def traces_file(corpus, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("structure") / "traces.jsonl"
    r = run_cli(["fetch", "--tracking-uri", corpus["tracking_uri"], "--experiment-id",
                 corpus["experiment_id"], "--output", path])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["traces"] == corpus["trace_count"]
    return path


def _types_by_path(traces_file: Path, rows, view: str, corpus) -> dict[str, set[str]]:
    """Run one jq program over every trace: for each path, the jq types of its values."""
    program = "{" + ", ".join(f"{json.dumps(p)}: {_types_program(p)}" for p, _ in rows) + "}"
    out = traces_file.parent / f"types-{view}.jsonl"
    r = run_cli(["extract", traces_file, "--view", view, "--program", program,
                 "--limit", corpus["trace_count"] + 10, "--max-string", "0", "--output", out])
    assert r.returncode == 0, r.stderr
    seen: dict[str, set[str]] = defaultdict(set)
    lines = out.read_text().splitlines()
    assert len(lines) == corpus["trace_count"]
    for line in lines:
        for path, types in json.loads(line).items():
            seen[path].update(types)
    return seen


def _types_program(path: str) -> str:
    """jq: the types of the values at ``path``, where a missing key yields nothing (plain jq
    would yield null, and absent must not pass for null)."""
    tokens = re.findall(r'\.[A-Za-z_][A-Za-z0-9_]*|\["[^"]+"\]|\[\]', path)
    assert "".join(tokens) == path, f"cannot parse the path {path}"
    *prefix, last = tokens
    step = ".[]?" if last == "[]" else (
        f"select(type == \"object\" and has({_key(last)})) | .[{_key(last)}]")
    return f"[(({''.join(prefix) or '.'})?) | {step} | type]"


def _key(token: str) -> str:
    return json.dumps(token[1:]) if token.startswith(".") else token[1:-1]


@pytest.fixture(scope="module")
def raw_types(traces_file, corpus):
    return _types_by_path(traces_file, RAW, "raw", corpus)


@pytest.fixture(scope="module")
def normalized_types(traces_file, corpus):
    return _types_by_path(traces_file, NORMALIZED, "normalized", corpus)


@pytest.mark.parametrize("path, types", RAW, ids=[p for p, _ in RAW])
def test_raw_path(raw_types, path, types):
    seen = raw_types.get(path, set())
    assert seen, f"{path} is documented but no corpus trace has it (raw view)"
    assert seen <= types, f"{path}: documented as {sorted(types)}, found {sorted(seen)}"


@pytest.mark.parametrize("path, types", NORMALIZED, ids=[p for p, _ in NORMALIZED])
def test_normalized_path(normalized_types, path, types):
    seen = normalized_types.get(path, set())
    assert seen, f"{path} is documented but no corpus trace has it (normalized view)"
    assert seen <= types, f"{path}: documented as {sorted(types)}, found {sorted(seen)}"


def test_mapping_rows_name_documented_paths():
    mapping = markdown_section(DOC, "Mapping")
    raw, norm = {p for p, _ in RAW}, {p for p, _ in NORMALIZED}
    pairs = re.findall(r"^\|\s*`(\.[^`]+)`[^|]*\|\s*`(\.[^`]+)`[^|]*\|", mapping, re.M)
    assert pairs
    for r, n in pairs:
        assert any(r == p or p.startswith(r) for p in raw), f"mapping names undocumented raw path {r}"
        assert any(n == p or p.startswith(n) for p in norm), f"mapping names undocumented path {n}"


# --- the facts the prose states ---------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_traces(traces_file) -> list[dict]:
    return [json.loads(line) for line in traces_file.read_text().splitlines()]


def test_attribute_values_are_json_encoded_strings(raw_traces):
    for t in raw_traces:
        for span in t["data"]["spans"]:
            for key, value in span["attributes"].items():
                assert isinstance(value, str), (key, value)
                json.loads(value)  # raises if not JSON text
    span_type = raw_traces[0]["data"]["spans"][0]["attributes"]["mlflow.spanType"]
    assert span_type.startswith('"') and span_type.endswith('"')


def test_span_ids_are_base64_raw_and_hex_normalized(traces_file, raw_traces, corpus):
    out = traces_file.parent / "ids.jsonl"
    r = run_cli(["extract", traces_file, "--program", "{trace_id, ids: [.spans[].span_id]}",
                 "--limit", corpus["trace_count"] + 10, "--output", out])
    assert r.returncode == 0, r.stderr
    normalized = {d["trace_id"]: d["ids"] for d in map(json.loads, out.read_text().splitlines())}
    for t in raw_traces:
        raw_ids = [s["span_id"] for s in t["data"]["spans"]]
        decoded = {base64.b64decode(i, validate=True).hex() for i in raw_ids}
        assert all(len(base64.b64decode(i)) == 8 for i in raw_ids)
        assert decoded == set(normalized[t["info"]["trace_id"]])
        assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in normalized[t["info"]["trace_id"]])


def test_assessment_span_ids_are_hex_and_join_the_spans(raw_traces):
    joined = 0
    for t in raw_traces:
        hex_ids = {base64.b64decode(s["span_id"]).hex() for s in t["data"]["spans"]}
        for a in t["info"].get("assessments", []):
            if a.get("span_id"):
                assert re.fullmatch(r"[0-9a-f]{16}", a["span_id"]), a["span_id"]
                assert a["span_id"] in hex_ids
                joined += 1
    assert joined, "no assessment in the corpus names a span"


def test_optional_keys_are_absent_not_null(raw_traces):
    states = {t["info"]["state"] for t in raw_traces}
    assert {"OK", "ERROR"} <= states
    for t in raw_traces:
        info = t["info"]
        if info["state"] == "ERROR":
            assert "response_preview" not in info
        if "assessments" in info:
            assert info["assessments"], "assessments present but empty: MLflow omits the key"
    assert any("assessments" not in t["info"] for t in raw_traces)


def test_an_uncaught_error_marks_the_ancestors(raw_traces):
    for t in raw_traces:
        if t["info"]["state"] != "ERROR":
            continue
        spans = {s["span_id"]: s for s in t["data"]["spans"]}
        failed = [s for s in spans.values() if s["status"]["code"] == "STATUS_CODE_ERROR"]
        assert failed
        root = next(s for s in spans.values() if s["parent_span_id"] is None)
        assert root["status"]["code"] == "STATUS_CODE_ERROR"
        exc = [e for s in failed for e in s["events"] if e["name"] == "exception"]
        assert exc and all("exception.type" in e["attributes"] for e in exc)
        return
    pytest.fail("no ERROR trace in the corpus")


def test_raw_view_matches_mlflows_own_json(raw_traces, corpus):
    """`fetch` writes what MLflow's Trace.to_dict() writes: same info keys, same metadata."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=corpus["tracking_uri"])
    for t in raw_traces[:5]:
        ours = t["info"]
        theirs = client.get_trace(ours["trace_id"]).to_dict()["info"]
        assert set(ours) == set(theirs)
        assert ours["trace_metadata"] == theirs["trace_metadata"]
        assert ours["state"] == theirs["state"]
        assert ours["execution_duration_ms"] == theirs["execution_duration_ms"]


def test_fetch_normalized_is_the_normalized_view(traces_file, corpus, raw_traces, tmp_path):
    tid = raw_traces[0]["info"]["trace_id"]
    out = tmp_path / "one.json"
    r = run_cli(["fetch", traces_file, "--trace-id", tid, "--view", "normalized", "--output", out])
    assert r.returncode == 0, r.stderr
    fetched = json.loads(out.read_text())
    r = run_cli(["extract", traces_file, "--trace-id", tid, "--program", ".", "--max-string", "0"])
    extracted = json.loads(r.stdout)
    for span in extracted["spans"]:
        assert isinstance(span.pop("root_cause"), bool)  # the one field extract adds
    # jq numbers are doubles: integers past 2**53 (nanosecond times) come back rounded.
    assert _doubles(fetched) == _doubles(extracted)


def _doubles(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) > 2**53:
        return float(value)
    if isinstance(value, list):
        return [_doubles(v) for v in value]
    if isinstance(value, dict):
        return {k: _doubles(v) for k, v in value.items()}
    return value
