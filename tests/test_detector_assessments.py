"""Failing assessments and judges that errored (detectors/assessments.py)."""

from __future__ import annotations

import pytest

from builders import findings_for


@pytest.fixture(scope="module")
def traces(trace_store):
    import mlflow
    from mlflow.entities import AssessmentError, AssessmentSource

    spec = {"name": "agent", "type": "AGENT", "ms": (0, 100), "inputs": {"q": 1}}
    trace_store.experiment("assessments")
    from builders import read_traces, write_traces

    ids = write_traces([spec] * 8)
    judge = AssessmentSource(source_type="LLM_JUDGE", source_id="openai:/gpt-4o-mini")
    for i, tid in enumerate(ids):
        mlflow.log_feedback(trace_id=tid, name="relevance", value=i >= 4, rationale="r", source=judge)
        if i < 3:
            mlflow.log_feedback(trace_id=tid, name="groundedness", source=judge,
                                error=AssessmentError(error_code="RATE_LIMIT", error_message="judge got 429"))
    return read_traces(trace_store.uri, trace_store.experiment("assessments"))


def test_failing_assessment_and_judge_errors(traces):
    result = findings_for(traces)
    by = {f["kind"]: f for f in result["findings"] if f["detector"] == "assessments"}
    assert by["failing_assessment"]["metrics"]["fail_rate"] == 0.5
    assert by["failing_assessment"]["category"] == "error_pattern"
    assert by["judge_error"]["metrics"]["judge_errors"] == 3
    assert by["judge_error"]["category"] == "missing_instrumentation"
