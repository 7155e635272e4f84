"""LLM calls in the code no span covers (detectors/code_gaps.py, from locate)."""

from __future__ import annotations

import json
import shlex

from builders import cli_ok, findings_for
from mlflow_analyzer.locate import scan


def test_code_gap_findings_and_their_confirm(tmp_path, trace_store):
    (tmp_path / "app.py").write_text(
        "import anthropic\n\nclient = anthropic.Anthropic()\n\n\n"
        "def answer(q):\n"
        "    return client.messages.create(model='claude-haiku-4-5', max_tokens=10,\n"
        "                                  messages=[{'role': 'user', 'content': q}])\n"
    )
    traces = trace_store.build("code_gaps", [{"name": "agent", "type": "AGENT", "ms": (0, 10)}])
    result = findings_for(traces, locate_result=scan(str(tmp_path)))
    [f] = [f for f in result["findings"] if f["kind"] == "untraced_llm_call"]
    assert f["code"] == "app.py:7" and f["metrics"]["client"] == "anthropic"
    c = f["confirm"]
    argv = shlex.split(c["command"])
    import jq

    assert jq.compile(c["jq"]).input_value(json.loads(cli_ok(*argv[1:]))).first() == c["now"] == 1
    [check] = [c for c in result["checks"] if c["id"] == "code_gaps"]
    assert check["status"] == "found"
