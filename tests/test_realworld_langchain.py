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
    "dominant_sequential_tool": "issue 9 item 2: the 1.2 s tool of the sequential chain is not reported on the LangGraph corpus",
    "health_failed_calls_without_usage": "issue 9 item 8: health counts failed LLM calls as lacking usage",
    "same_name_rows": "issue 9 item 5: the ChatOpenAI retry wrapper (CHAIN) and model call (CHAT_MODEL) are one row",
}
KNOWN_CONTRADICTIONS = {}


def pytest_generate_tests(metafunc):
    parametrize(metafunc, KINDS, KNOWN_GAPS, KNOWN_CONTRADICTIONS)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return build("langchain", corpus_dir(tmp_path_factory.getbasetemp(), "langchain"))
