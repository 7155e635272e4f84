"""Every filter in references/filters.md does what the page says, against the corpus store.

Filters under "Works" must select traces, those under "Finds nothing" must select none, and
those under "Rejected" must fail with one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from doc_helpers import fill_placeholders, markdown_section, run_cli, run_cli_process, store_values  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parent.parent
FILTERS_MD = REPO / "references" / "filters.md"


def _section_filters(title: str) -> list[str]:
    """The filter in the first column of each table row of the '## title' section."""
    out = []
    for line in markdown_section(FILTERS_MD, title).splitlines():
        cell = re.match(r"^\|\s*(``?)(.+?)\1\s*\|", line)
        if cell and not set(cell.group(2)) <= set("-"):
            out.append(cell.group(2).strip())
    assert out, f"no filters found in '## {title}'"
    return out


WORKS = _section_filters("Works")
FINDS_NOTHING = _section_filters("Finds nothing")
REJECTED = _section_filters("Rejected")


def _stats(corpus, store_values, filter_string):
    return run_cli(
        [
            "stats",
            "--tracking-uri", corpus["tracking_uri"],
            "--experiment-id", str(corpus["experiment_id"]),
            "--filter", fill_placeholders(filter_string, store_values),
            "--format", "json",
        ]
    )


@pytest.mark.parametrize("filter_string", WORKS)
def test_documented_filter_selects_traces(corpus, store_values, filter_string):
    proc = _stats(corpus, store_values, filter_string)
    assert proc.returncode == 0, f"{filter_string!r} failed: {proc.stderr.strip()}"
    result = json.loads(proc.stdout)
    assert 0 < result["trace_count"] <= corpus["trace_count"], filter_string


@pytest.mark.parametrize("filter_string", FINDS_NOTHING)
def test_documented_pitfall_finds_nothing(corpus, store_values, filter_string):
    proc = _stats(corpus, store_values, filter_string)
    assert proc.returncode == 1, proc.stdout[:500]
    assert "no traces match" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("filter_string", REJECTED)
def test_documented_rejection_is_one_clear_line(corpus, store_values, filter_string):
    proc = _stats(corpus, store_values, filter_string)
    assert proc.returncode != 0, f"{filter_string!r} was accepted"
    err = proc.stderr.strip()
    assert err.count("\n") == 0, f"more than one line on stderr:\n{err}"
    assert err.startswith("mlflow-analyzer: error:"), err
    assert "no traces match" not in err, f"{filter_string!r} was accepted and matched nothing"
    assert "Traceback" not in err and proc.stdout == ""


def test_rejection_is_one_line_in_a_real_process(corpus, store_values):
    """The same as above through the console entry point in a subprocess, where MLflow's own
    logging could add lines to stderr."""
    proc = run_cli_process(
        ["stats", "--tracking-uri", corpus["tracking_uri"], "--experiment-id", corpus["experiment_id"],
         "--filter", REJECTED[0]]
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("mlflow-analyzer: error:")


def test_working_filters_narrow_the_corpus(corpus, store_values):
    """Sanity: the documented filters select, not everything silently."""
    counts = {}
    for f in ("trace.status = 'ERROR'", "trace.status = 'OK'"):
        assert f in WORKS
        proc = _stats(corpus, store_values, f)
        counts[f] = json.loads(proc.stdout)["trace_count"]
    assert sum(counts.values()) == corpus["trace_count"]
