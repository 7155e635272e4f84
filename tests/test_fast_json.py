"""The normalizer's fast JSON path (plain strings decoded without parsing) gives exactly what
the standard library gives."""

from __future__ import annotations

import pytest

from mlflow_analyzer import normalize

CASES = ['"TOOL"', '"a\\"b"', '"x"y"', '""', '"line\nbreak"', '"\u00fc"', "123", "01", "-4.5e3",
         '{"a": [1, {"b": null}]}', "NaN", "Infinity", '"\\ud800"', "[1,2]", "true", "nul",
         "18446744073709551616123", "[" * 80 + "]" * 80, '{"k": 1e400}', "", "plain text"]


@pytest.mark.parametrize("text", CASES)
def test_decode_value_is_the_same_with_and_without_the_fast_path(text, monkeypatch):
    fast = normalize.decode_value(text)
    monkeypatch.setattr(normalize, "_PLAIN_JSON_STRING", normalize.re.compile(r"(?!)"))  # never matches
    assert normalize.decode_value(text) == fast or (fast != fast)  # NaN-safe


def test_load_json_errors_are_value_errors():
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ValueError):
        normalize.load_json(deep)
