"""The anthropic SDK traced by mlflow.anthropic.autolog(): the support agent on the Messages
API (tool_use blocks, 529 overloaded answers, an expensive Opus classifier). The scenario and its planted problems are in tests/realworld_apps.py; the fake server
and the ground truth from its request log in tests/realworld.py; the tests every corpus runs
in tests/realworld_tests.py."""

import pytest

from realworld import build, corpus_dir
from realworld_tests import *  # noqa: F401,F403  (the shared fixtures and tests)
from realworld_tests import parametrize

KINDS = ["rate_limited_and_retried", "tool_raises", "dominant_sequential_tool",
         "bimodal_retriever", "duplicate_identical_calls", "growing_prompt", "expensive_model_tiny_task", "missing_usage", "overloaded_exhausted"]
KNOWN_GAPS = {
    "dominant_sequential_tool": "issue 9 item 2: a tool that is most of a sequential chain is not reported",
    "bimodal_retriever": "issue 9 item 3: a span slow in a minority of its calls is not reported",
    "duplicate_identical_calls": "issue 9 item 5: the duplicate finding names the wrapper, not the LLM call",
    "growing_prompt": "issue 9 item 6: growth is judged against an absolute token floor",
    "health_failed_calls_without_usage": "issue 9 item 8: health counts failed LLM calls as lacking usage",
}
KNOWN_CONTRADICTIONS = {
    "duplicate_names_a_wrapper": "issue 9 item 5: duplicate calls are reported on the wrapper span",
    "duplicate_tokens_understated": "issue 9 item 5: the wrapper's copies report 0 wasted tokens",
}


def pytest_generate_tests(metafunc):
    parametrize(metafunc, KINDS, KNOWN_GAPS, KNOWN_CONTRADICTIONS)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return build("anthropic", corpus_dir(tmp_path_factory.getbasetemp(), "anthropic"))
