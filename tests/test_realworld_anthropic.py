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
KNOWN_GAPS = {}
KNOWN_CONTRADICTIONS = {}


def pytest_generate_tests(metafunc):
    parametrize(metafunc, KINDS, KNOWN_GAPS, KNOWN_CONTRADICTIONS)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return build("anthropic", corpus_dir(tmp_path_factory.getbasetemp(), "anthropic"))
