"""What the findings say beyond the findings: the checks that ran (clean, found or skipped),
and each finding's confirm command, which runs against the store and prints today's figure."""

from __future__ import annotations

import json
import shlex

import pytest

from builders import cli_ok
from mlflow_analyzer import review_schema as S
from mlflow_analyzer.detectors import REGISTRY


@pytest.fixture(scope="module")
def out(corpus):
    return json.loads(cli_ok("findings", "--tracking-uri", corpus["tracking_uri"], "--experiment-id",
                             corpus["experiment_id"], "--all", "--format", "json"))


def test_every_detector_reports_its_checks(out):
    checks = out["checks"]
    assert {c["detector"] for c in checks} == {d.name for d in REGISTRY}
    for c in checks:
        assert set(c) == {"id", "detector", "status", "summary"} and c["summary"]
        assert c["status"] in S.CHECK_STATUSES
    by = {c["id"]: c for c in checks}
    found = {f["detector"] for f in out["findings"]}
    for c in checks:
        assert (c["status"] == "found") == (c["detector"] in found), c
    assert by["orphans"]["status"] == "clean" and "no orphan spans" in by["orphans"]["summary"]
    assert by["required_tags"]["status"] == "skipped" and by["code_gaps"]["status"] == "skipped"


def test_every_confirm_command_runs_and_prints_todays_figure(out):
    import jq

    outputs: dict[str, object] = {}
    assert all(f["confirm"] for f in out["findings"])
    for f in out["findings"]:
        c = f["confirm"]
        assert c["shell"] == f"{c['command']} | jq {shlex.quote(c['jq'])}"
        argv = shlex.split(c["command"])
        assert argv[0] == "mlflow-analyzer"
        if c["command"] not in outputs:
            outputs[c["command"]] = json.loads(cli_ok(*argv[1:]))
        got = jq.compile(c["jq"]).input_value(outputs[c["command"]]).first()
        assert got == c["now"], (f["title"], c)
        assert c["goal"]


def test_text_output_lists_checks_and_confirm(corpus):
    text = cli_ok("findings", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"],
                  "--format", "text")
    assert "\nchecks:\n" in text and "[clean] orphans:" in text
    assert "    confirm: mlflow-analyzer " in text


def test_every_finding_says_which_threshold_fired(out):
    for f in out["findings"]:
        th = f["metrics"].get("thresholds")
        assert th and all(set(t) == {"name", "value", "op", "threshold"} for t in th), f["title"]
