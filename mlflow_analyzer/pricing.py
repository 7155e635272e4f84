"""Offline model prices: look a model up by any common spelling and estimate a call's cost.

The prices live in one file, ``data/pricing.json``: list prices per million tokens for
input, output, cache reads and cache writes, with the date they were compiled (``as_of``)
and where they come from (``source``). It is an *estimate* table: standard tier, no batch
or long-context surcharges. Nothing here touches the network.

    >>> from mlflow_analyzer import pricing
    >>> pricing.lookup("anthropic.claude-3-5-sonnet-20240620-v1:0").name
    'claude-3-5-sonnet'
    >>> pricing.estimate_cost("gpt-4o-mini", "openai", 1_000_000, 0)
    0.15

Model ids are matched after normalization (see :func:`normalize_model`): provider prefixes
(``anthropic/``, ``openai:``, Bedrock's ``us.anthropic.`` and ``-v1:0``, Vertex's
``@20241022``), case, and a few family spellings (``claude-3.5-sonnet``,
``llama3.1:8b``, ``llama-v3p1-70b``, ``Qwen-2.5-72B``). Each table entry's name and aliases
are *prefixes* that must end at a ``-`` boundary, so ``gpt-4o-2024-08-06`` and
``claude-sonnet-4-20250514`` match ``gpt-4o`` and ``claude-sonnet-4``; the longest matching
prefix wins, so ``gpt-4o-mini`` never prices as ``gpt-4o``. A ``.`` is not a boundary:
``gpt-5.4`` does not fall back to ``gpt-5``, it is unknown.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = [
    "ModelPrice",
    "lookup",
    "estimate_cost",
    "cheaper_alternative",
    "table_info",
    "all_prices",
    "normalize_model",
]

PER_TOKENS = 1_000_000  # prices in the table are per million tokens

# Input:output token mix used to compare two models' prices with one number.
_BLEND_INPUT, _BLEND_OUTPUT = 3, 1


@dataclass(frozen=True)
class ModelPrice:
    """One row of the price table, in USD per million tokens."""

    name: str
    provider: str
    input: float
    output: float
    cache_read: float
    cache_write: float
    aliases: tuple[str, ...] = ()
    cheaper: str | None = None  # the same-provider tier below, by table name
    note: str | None = None

    def cost(
        self,
        input_tokens: int | None,
        output_tokens: int | None,
        cache_read_tokens: int | None = 0,
        cache_write_tokens: int | None = 0,
        *,
        input_includes_cache: bool | None = None,
    ) -> float:
        """The cost in USD of one call; see :func:`estimate_cost` for the token conventions."""
        inp = max(int(input_tokens or 0), 0)
        out = max(int(output_tokens or 0), 0)
        read = max(int(cache_read_tokens or 0), 0)
        write = max(int(cache_write_tokens or 0), 0)
        cached = read + write
        if input_includes_cache is None:
            # A subset cannot be larger than the whole: cache tokens above input_tokens can
            # only have been counted apart from it (the raw Anthropic API convention).
            input_includes_cache = 0 < cached <= inp
        uncached = max(inp - cached, 0) if input_includes_cache else inp
        total = (
            uncached * self.input
            + out * self.output
            + read * self.cache_read
            + write * self.cache_write
        )
        return total / PER_TOKENS

    @property
    def blended(self) -> float:
        """A single price per million tokens for a 3:1 input:output mix, for comparisons."""
        return (_BLEND_INPUT * self.input + _BLEND_OUTPUT * self.output) / (
            _BLEND_INPUT + _BLEND_OUTPUT
        )


# --- the table --------------------------------------------------------------------------

PRICE_FIELDS = ("input", "output", "cache_read", "cache_write")


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    text = (resources.files(__package__) / "data" / "pricing.json").read_text("utf-8")
    return json.loads(text)


@functools.lru_cache(maxsize=1)
def _prices() -> dict[str, ModelPrice]:
    prices = {}
    for name, row in _table()["models"].items():
        prices[name] = ModelPrice(
            name=name,
            provider=row["provider"],
            aliases=tuple(row.get("aliases") or ()),
            cheaper=row.get("cheaper"),
            note=row.get("note"),
            **{key: float(row[key]) for key in PRICE_FIELDS},
        )
    return prices


@functools.lru_cache(maxsize=1)
def _patterns() -> dict[str, list[str]]:
    """Every matchable prefix (names and aliases, normalized) -> the entries using it."""
    patterns: dict[str, list[str]] = {}
    for price in _prices().values():
        for raw in (price.name, *price.aliases):
            for pattern in normalize_model(raw):
                names = patterns.setdefault(pattern, [])
                if price.name not in names:
                    names.append(price.name)
    return patterns


def all_prices() -> list[ModelPrice]:
    """Every row of the table, in file order."""
    return list(_prices().values())


def table_info() -> dict[str, Any]:
    """Where the prices come from: ``as_of``, ``source``, ``currency``, ``unit``, ``estimate``."""
    table = _table()
    return {
        "as_of": table["as_of"],
        "source": table["source"],
        "currency": table.get("currency", "USD"),
        "unit": table.get("unit", "per_million_tokens"),
        "estimate": bool(table.get("estimate", True)),
        "models": len(table["models"]),
    }


# --- normalization ------------------------------------------------------------------------

# "openai:gpt-4o", "ollama:llama3.1:8b": a word, a colon, the model.
_PROVIDER_COLON = re.compile(r"^([a-z][a-z0-9_\-]*):(.+)$")
# Bedrock: optional cross-region prefix, then the vendor: "us.anthropic.claude-...".
_BEDROCK = re.compile(
    r"^(?:(?:us|eu|apac|ap|au|jp|ca|global|us-gov)\.)?"
    r"(anthropic|meta|mistral|amazon|cohere|ai21|deepseek|qwen|openai|google|writer)\.(.+)$"
)
# Bedrock version suffixes: "-v1:0", "-v2", ":0".
_BEDROCK_VERSION = re.compile(r"(?:-v\d+(?::\d+)?|:\d+)$")
# "llama3", "llama-3-1", "llama3.1", "llama-v3p1" -> "llama-3" / "llama-3.1".
_LLAMA = re.compile(r"^llama-?v?(\d+)(?:[.p-](\d+))?(?=-|$)")


def _family(name: str) -> str:
    """Fold the spellings of one family into the table's spelling."""
    for prefix in ("meta-llama", "open-mixtral", "open-mistral"):
        if name.startswith(prefix):
            name = name.split("-", 1)[1]
    if name.startswith("claude"):
        return name.replace(".", "-")  # claude-3.5-sonnet, claude-sonnet-4.5
    if name.startswith("llama"):
        return _LLAMA.sub(
            lambda m: f"llama-{m.group(1)}" + (f".{m.group(2)}" if m.group(2) else ""), name
        )
    if name.startswith("qwen-") and name[5:6].isdigit():
        return "qwen" + name[5:]  # qwen-2.5-72b -> qwen2.5-72b
    if name.startswith("deepseek-v"):
        return re.sub(r"^deepseek-v(\d+)p(\d+)", r"deepseek-v\1.\2", name)  # Fireworks
    return name


@functools.lru_cache(maxsize=4096)
def normalize_model(model: str) -> tuple[str, ...]:
    """The candidate spellings of a model id to match against the table, best first.

    ``"us.anthropic.claude-3-5-sonnet-20240620-v1:0"`` -> ``("claude-3-5-sonnet-20240620",
    ...)``. Several candidates come out when a prefix is ambiguous (``mistral:7b`` is an
    Ollama tag, ``openai:gpt-4o`` a provider prefix); the caller keeps the best match.
    """
    text = (model or "").strip().lower()
    if not text:
        return ()
    text = text.rsplit("/", 1)[-1]  # "anthropic/claude-...", "accounts/fireworks/models/..."
    text = text.split("@", 1)[0]  # Vertex: "claude-3-5-sonnet-v2@20241022"
    bases = [text]
    if m := _PROVIDER_COLON.match(text):
        bases.append(m.group(2))
    out: list[str] = []
    for base in bases:
        variants = [base]
        if m := _BEDROCK.match(base):
            vendor, rest = m.groups()
            variants = [rest] if rest.startswith(vendor) else [rest, f"{vendor}-{rest}"]
        for variant in variants:
            variant = _BEDROCK_VERSION.sub("", variant)
            variant = re.sub(r"[:_\s]+", "-", variant).strip("-")
            variant = _family(variant)
            if variant and variant not in out:
                out.append(variant)
    return tuple(out)


def _provider_key(provider: str | None) -> str | None:
    if not provider:
        return None
    p = provider.strip().lower()
    for key, words in (
        ("anthropic", ("anthropic", "claude")),
        ("openai", ("openai", "azure")),
        ("google", ("google", "gemini", "vertex")),
        ("meta", ("meta", "llama")),
        ("mistral", ("mistral",)),
        ("deepseek", ("deepseek",)),
        ("alibaba", ("alibaba", "qwen", "dashscope")),
    ):
        if any(w in p for w in words):
            return key
    return p


# --- public API --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def lookup(model: str, provider: str | None = None) -> ModelPrice | None:
    """The table row for ``model``, or None when no entry matches.

    ``provider`` (as recorded on a span: ``"anthropic"``, ``"openai"``, ``"bedrock"`` ...)
    only breaks ties between equally specific matches; the model id decides.
    """
    if not model or not isinstance(model, str):
        return None
    patterns = _patterns()
    prices = _prices()
    want = _provider_key(provider)
    best: tuple[int, int, int] | None = None
    best_name: str | None = None
    for rank, candidate in enumerate(normalize_model(model)):
        # Every prefix of the candidate that ends at a "-" boundary, and the whole of it.
        cuts = [i for i, ch in enumerate(candidate) if ch == "-"] + [len(candidate)]
        for cut in cuts:
            for name in patterns.get(candidate[:cut], ()):
                score = (cut, int(prices[name].provider == want), -rank)
                if best is None or score > best:
                    best, best_name = score, name
    return prices[best_name] if best_name else None


def estimate_cost(
    model: str,
    provider: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read_tokens: int | None = 0,
    cache_write_tokens: int | None = 0,
    *,
    input_includes_cache: bool | None = None,
) -> float | None:
    """The estimated cost in USD of one call, or None for a model not in the table.

    Cache tokens are always priced at the cache rates; the question is whether
    ``input_tokens`` already counts them. APIs disagree: Anthropic's ``input_tokens``
    excludes cache reads and writes, OpenAI's and Gemini's prompt tokens include cached
    tokens. MLflow's autologging records both the same way, cache tokens *included* (its
    Anthropic autolog adds them to ``input_tokens``: ``mlflow/anthropic/autolog.py`` in
    3.17), and the OpenTelemetry GenAI and OpenInference conventions count them in the
    input too.

    ``input_includes_cache``:

    - ``True``: ``input_tokens`` includes cache tokens; the uncached input priced at the
      input rate is ``input_tokens - cache_read - cache_write`` (never below 0).
    - ``False``: ``input_tokens`` is the uncached input only (raw Anthropic API counts).
    - ``None`` (default): decide per call. When ``cache_read + cache_write`` exceeds
      ``input_tokens`` the cache tokens cannot be part of it, so they are priced on top
      (``False``); otherwise they are taken as included (``True``), which is what traces
      recorded by MLflow carry. Without cache tokens both readings agree.
    """
    price = lookup(model, provider)
    if price is None:
        return None
    return price.cost(
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_write_tokens,
        input_includes_cache=input_includes_cache,
    )


def cheaper_alternative(model: str) -> tuple[str, float] | None:
    """A cheaper tier of the same provider for ``model``, and how many times cheaper it is.

    Returns ``(name, ratio)`` where ``ratio`` = the model's price / the alternative's price,
    both at a 3:1 input:output token mix, so always > 1 (5.0: a fifth of the price; moving
    a cost C saves ``C * (1 - 1 / ratio)``). The tiers go one step down within a family:
    opus -> sonnet -> haiku, ``gpt-4o`` -> ``gpt-4o-mini``, Gemini pro -> flash -> flash-lite.
    None when the model is unknown, already the cheapest tier the table knows, or the
    named tier is not cheaper.
    """
    price = lookup(model)
    if price is None or not price.cheaper:
        return None
    alt = _prices().get(price.cheaper)
    if alt is None or alt.blended <= 0 or alt.blended >= price.blended:
        return None
    return alt.name, round(price.blended / alt.blended, 3)
