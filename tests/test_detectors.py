"""The detector architecture: one module per detector listed in one registry, one pass, and
a new detector is one module plus one registry line (the example in CONTRIBUTING.md runs)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from builders import open_store, read_traces, write_traces
from mlflow_analyzer.detectors import REGISTRY
from mlflow_analyzer.detectors.base import Detector
from mlflow_analyzer.findings import CATEGORIES, FindingsAnalyzer

REPO = Path(__file__).resolve().parent.parent


def test_registry_lists_one_detector_per_module():
    names = [d.name for d in REGISTRY]
    assert len(names) == len(set(names)), names
    modules = [d.__module__ for d in REGISTRY]
    assert len(modules) == len(set(modules)), "one detector per module"
    for d in REGISTRY:
        assert issubclass(d, Detector) and d.name and d.title
        assert d.__module__ == f"mlflow_analyzer.detectors.{d.__module__.rsplit('.', 1)[1]}"
        importlib.import_module(d.__module__)


def _example_source() -> str:
    text = (REPO / "CONTRIBUTING.md").read_text()
    section = text.split("## Adding a detector", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "mlflow_analyzer/detectors/" in code.splitlines()[0]
    return code


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    uri, exp = open_store(tmp_path_factory.mktemp("detectors") / "d.db")

    def spec(i):
        llm = {"name": "answer", "type": "LLM", "ms": (10, 200), "inputs": {"q": f"question {i}"}}
        if i % 3:
            llm["outputs"] = {"text": f"answer {i}"}
        return {"name": "agent", "type": "AGENT", "ms": (0, 250), "inputs": {"q": i}, "children": [llm]}

    write_traces([spec(i) for i in range(6)])
    return read_traces(uri, exp)


def test_the_contributing_example_is_one_module_and_one_line(traces):
    namespace: dict = {}
    code = _example_source().replace("from .base import", "from mlflow_analyzer.detectors.base import")
    exec(compile(code, "empty_answers.py", "exec"), namespace)
    detector = namespace["EmptyAnswers"]
    fa = FindingsAnalyzer(detectors=REGISTRY + (detector,))  # the registry line
    for t in traces:
        fa.add(t)
    out = fa.result(max_findings=None)
    mine = [f for f in out["findings"] if f["detector"] == "empty_answers"]
    assert len(mine) == 1, out["findings"]
    f = mine[0]
    assert f["category"] in CATEGORIES and f["kind"] == "empty_llm_output"
    assert f["metrics"] == {"empty": 2, "llm_calls": 6}
    assert len(f["trace_ids"]) == 2 and set(f["trace_ids"]) <= {t.trace_id for t in traces}


def test_every_detector_has_its_own_test_file():
    for d in REGISTRY:
        module = d.__module__.rsplit(".", 1)[1]
        assert (REPO / "tests" / f"test_detector_{module}.py").is_file(), module
