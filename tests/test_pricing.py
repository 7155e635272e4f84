"""The offline price table: model id spellings, cost arithmetic, the file's own contract."""

from __future__ import annotations

import datetime as dt
import json
from importlib import resources

import pytest

from mlflow_analyzer import pricing


@pytest.mark.parametrize(
    "model_id, expected",
    [
        # Anthropic API ids, aliases and snapshots
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4-0", "claude-opus-4"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-3-haiku-20240307", "claude-3-haiku"),
        ("Claude-3.5-Sonnet", "claude-3-5-sonnet"),
        ("claude-4-sonnet", "claude-sonnet-4"),
        # provider prefixes: LiteLLM / OpenRouter / colon style
        ("anthropic/claude-3-5-sonnet-20240620", "claude-3-5-sonnet"),
        ("anthropic/claude-sonnet-4.5:batch", "claude-sonnet-4-5"),
        ("openai:gpt-4o", "gpt-4o"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        # Bedrock and Vertex ids
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", "claude-3-5-sonnet"),
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
        ("anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
        ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),
        ("claude-sonnet-4@20250514", "claude-sonnet-4"),
        ("us.meta.llama3-3-70b-instruct-v1:0", "llama-3.3-70b"),
        ("mistral.mistral-large-2407-v1:0", "mistral-large-2411"),
        ("mistral.mixtral-8x7b-instruct-v0:1", "mixtral-8x7b"),
        ("deepseek.r1-v1:0", "deepseek-r1"),
        # OpenAI, with dates and variants; the longest prefix wins
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-4.1-mini", "gpt-4.1-mini"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("o1", "o1"),
        ("o1-pro-2025-03-19", "o1-pro"),
        ("o3-2025-04-16", "o3"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o4-mini", "o4-mini"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-5-mini", "gpt-5-mini"),
        ("gpt-5-nano-2025-08-07", "gpt-5-nano"),
        ("gpt-5-chat-latest", "gpt-5"),
        ("gpt-5.1-codex", "gpt-5.1"),
        ("gpt-4-1106-preview", "gpt-4-turbo"),
        ("gpt-35-turbo", "gpt-3.5-turbo"),
        # Google
        ("gemini-2.5-pro", "gemini-2.5-pro"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
        ("google/gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("gemini-2.0-flash-lite", "gemini-2.0-flash-lite"),
        ("gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("gemini-1.5-flash-8b-latest", "gemini-1.5-flash-8b"),
        # open models, hosted or local
        ("meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", "llama-3.1-8b"),
        ("llama3.1:8b", "llama-3.1-8b"),
        ("groq/llama-3.3-70b-versatile", "llama-3.3-70b"),
        ("llama3-70b-8192", "llama-3.3-70b"),
        ("accounts/fireworks/models/llama-v3p1-405b-instruct", "llama-3.1-405b"),
        ("mistral-large-latest", "mistral-large"),
        ("mistral-small-2501", "mistral-small"),
        ("mistral:7b", "mistral-7b"),
        ("open-mixtral-8x22b", "mixtral-8x22b"),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b"),
        ("deepseek-chat", "deepseek-v3.2"),
        ("deepseek-ai/DeepSeek-V3", "deepseek-v3"),
        ("deepseek-ai/DeepSeek-R1", "deepseek-r1"),
        ("Qwen/Qwen2.5-72B-Instruct-Turbo", "qwen2.5-72b"),
        ("qwen/qwen-2.5-72b-instruct", "qwen2.5-72b"),
        ("qwen-max-latest", "qwen-max"),
        ("Qwen/Qwen3-235B-A22B-fp8-tput", "qwen3-235b"),
    ],
)
def test_lookup_real_world_spellings(model_id, expected):
    price = pricing.lookup(model_id)
    assert price is not None, model_id
    assert price.name == expected


@pytest.mark.parametrize(
    "model_id",
    ["", "my-finetune", "text-embedding-3-small", "amazon.nova-pro-v1:0", "gpt-5.4", "gpt-4o2"],
)
def test_unknown_model_is_none(model_id):
    assert pricing.lookup(model_id) is None
    assert pricing.estimate_cost(model_id, None, 1000, 1000) is None


def test_lookup_tolerates_none():
    assert pricing.lookup(None) is None  # type: ignore[arg-type]


def test_provider_hint_does_not_override_the_model():
    assert pricing.lookup("gpt-4o", "anthropic").name == "gpt-4o"
    assert pricing.lookup("claude-3-5-sonnet-20241022", "bedrock").name == "claude-3-5-sonnet"


def test_cost_arithmetic():
    # gpt-4o: $2.50 in / $10 out per million tokens
    assert pricing.estimate_cost("gpt-4o", "openai", 1_000_000, 0) == pytest.approx(2.5)
    assert pricing.estimate_cost("gpt-4o", "openai", 2000, 1000) == pytest.approx(0.015)
    # claude-opus-4-1: $15 / $75
    assert pricing.estimate_cost("claude-opus-4-1", "anthropic", 1000, 1000) == pytest.approx(0.09)
    assert pricing.estimate_cost("gpt-4o", None, 0, 0) == 0.0
    assert pricing.estimate_cost("gpt-4o", None, None, None) == 0.0


def test_cache_tokens_priced_separately_when_not_in_input():
    # Raw Anthropic counts: 100 new input tokens, 10,000 read from cache, 2,000 written.
    # claude-sonnet-4: input $3, output $15, cache read $0.30, cache write $3.75.
    cost = pricing.estimate_cost("claude-sonnet-4", "anthropic", 100, 50, 10_000, 2_000)
    expected = (100 * 3 + 50 * 15 + 10_000 * 0.30 + 2_000 * 3.75) / 1e6
    assert cost == pytest.approx(expected)
    # Forcing the convention gives the same answer here.
    forced = pricing.estimate_cost(
        "claude-sonnet-4", "anthropic", 100, 50, 10_000, 2_000, input_includes_cache=False
    )
    assert forced == pytest.approx(expected)


def test_cache_tokens_inside_input_are_not_counted_twice():
    # OpenAI / MLflow-normalized counts: 10,000 prompt tokens, 8,000 of them cached.
    # gpt-4o: input $2.50, cached input $1.25, output $10.
    cost = pricing.estimate_cost("gpt-4o", "openai", 10_000, 100, cache_read_tokens=8_000)
    assert cost == pytest.approx((2_000 * 2.5 + 8_000 * 1.25 + 100 * 10) / 1e6)
    uncached = pricing.estimate_cost(
        "gpt-4o", "openai", 10_000, 100, cache_read_tokens=8_000, input_includes_cache=False
    )
    assert uncached == pytest.approx((10_000 * 2.5 + 8_000 * 1.25 + 100 * 10) / 1e6)


def test_cache_read_is_cheaper_than_input():
    full = pricing.estimate_cost("claude-sonnet-4-5", None, 10_000, 0)
    cached = pricing.estimate_cost("claude-sonnet-4-5", None, 10_000, 0, cache_read_tokens=10_000)
    assert cached == pytest.approx(full / 10)


def test_cheaper_alternative():
    # ratio = how many times cheaper (current price / alternative price, 3:1 in:out mix)
    name, ratio = pricing.cheaper_alternative("claude-opus-4-5-20251101")
    assert name == "claude-sonnet-4-5" and ratio == pytest.approx(5 / 3, abs=1e-3)
    assert pricing.cheaper_alternative("claude-sonnet-4-5") == ("claude-haiku-4-5", 3.0)
    assert pricing.cheaper_alternative("claude-opus-4-1") == ("claude-sonnet-4", 5.0)
    name, ratio = pricing.cheaper_alternative("openai/gpt-4o")
    assert name == "gpt-4o-mini" and ratio == pytest.approx(16.667, abs=1e-3)
    assert pricing.cheaper_alternative("gemini-2.5-pro")[0] == "gemini-2.5-flash"
    assert pricing.cheaper_alternative("gemini-2.5-flash")[0] == "gemini-2.5-flash-lite"
    assert pricing.cheaper_alternative("gpt-4o-mini") is None  # bottom tier
    assert pricing.cheaper_alternative("claude-haiku-4-5") is None
    assert pricing.cheaper_alternative("no-such-model") is None


def test_every_cheaper_alternative_is_cheaper_and_same_provider():
    prices = {p.name: p for p in pricing.all_prices()}
    for price in prices.values():
        if price.cheaper:
            alt = prices[price.cheaper]
            assert alt.provider == price.provider, price.name
            name, ratio = pricing.cheaper_alternative(price.name)
            assert name == alt.name and ratio > 1, price.name


def test_table_file_contract():
    raw = json.loads((resources.files("mlflow_analyzer") / "data" / "pricing.json").read_text())
    dt.date.fromisoformat(raw["as_of"])
    assert raw["source"] and raw["currency"] == "USD" and raw["unit"] == "per_million_tokens"
    assert raw["estimate"] is True
    assert len(raw["models"]) >= 50
    for name, row in raw["models"].items():
        for key in ("input", "output", "cache_read", "cache_write"):
            assert isinstance(row[key], (int, float)) and row[key] >= 0, (name, key)
        assert row["cache_read"] <= row["input"], name
        assert isinstance(row["aliases"], list), name
        assert row["provider"], name
        # Each entry is reachable by its own name.
        assert pricing.lookup(name).name == name


def test_table_info():
    info = pricing.table_info()
    assert set(info) >= {"as_of", "source", "currency", "unit", "estimate"}
    assert info["currency"] == "USD" and info["estimate"] is True


def test_families_covered():
    for model_id in [
        "claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-3-7-sonnet",
        "claude-3-5-haiku", "gpt-4o", "gpt-4o-mini", "gpt-4.1", "o1", "o3", "o3-mini",
        "o4-mini", "gpt-5", "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite",
        "gemini-2.0-flash", "gemini-1.5-pro", "gemini-1.5-flash", "llama-3.1-8b",
        "llama-3.3-70b", "llama-3.1-405b", "mistral-large", "mistral-small", "mixtral-8x7b",
        "deepseek-v3", "deepseek-r1", "qwen-max", "qwen2.5-72b",
    ]:
        assert pricing.lookup(model_id) is not None, model_id
