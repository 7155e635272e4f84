"""LangChain/LangGraph traced by mlflow.langchain.autolog(): the support desk as a LangGraph
graph on ChatOpenAI (with_retry, a raising @tool, threads as sessions, a RAG chain batched
twice on the same input). The scenario and its planted problems are in tests/realworld_apps.py; the fake server
and the ground truth from its request log in tests/realworld.py; the tests every corpus runs
in tests/realworld_tests.py."""

import pytest

from realworld import build, corpus_dir
from realworld_tests import *  # noqa: F401,F403  (the shared fixtures and tests)
from realworld_tests import parametrize

KINDS = ["rate_limited_and_retried", "tool_raises", "dominant_sequential_tool", "bimodal_retriever",
         "duplicate_identical_calls", "growing_prompt", "expensive_model_tiny_task", "missing_usage"]
KNOWN_GAPS = {
    # under heavy machine load the LangGraph overhead can push the 1.2 s tool below 20% of its traces
    "dominant_sequential_tool": "issue 9 item 2: found unless machine load inflates the LangGraph overhead",
}
KNOWN_CONTRADICTIONS = {}


def pytest_generate_tests(metafunc):
    parametrize(metafunc, KINDS, KNOWN_GAPS, KNOWN_CONTRADICTIONS)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return build("langchain", corpus_dir(tmp_path_factory.getbasetemp(), "langchain"))
