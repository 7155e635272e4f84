"""Redaction: credentials in traces never reach an output, unless --no-redact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from builders import cli
from planted import IN_TEXT, SECRETS, build_planted_store, leaks

from mlflow_analyzer import redact as R


@pytest.fixture(autouse=True)
def _fresh():
    R.set_enabled(True)
    R.reset()
    yield
    R.set_enabled(True)
    R.reset()


# ---- the redactor ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_every_planted_kind_is_redacted_in_text(kind):
    out = R.redact(IN_TEXT[kind])
    assert not leaks(out), out
    assert "[REDACTED:" in out


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_every_planted_kind_is_redacted_inside_json_text(kind):
    doc = {"attributes": {"mlflow.spanInputs": json.dumps({"prompt": IN_TEXT[kind]})}}
    text = json.dumps(R.redact_value(doc))
    assert not leaks(text)
    json.loads(text)  # still JSON


def test_typed_placeholders():
    assert R.redact(f"x {SECRETS['github-token']} y") == "x [REDACTED:github-token] y"
    assert R.redact(f"id {SECRETS['aws-access-key-id']}") == "id [REDACTED:aws-access-key-id]"
    assert R.redact("postgresql://app:s3cret-pw@db:5432/x") == "postgresql://app:[REDACTED:uri-password]@db:5432/x"
    assert R.redact("Authorization: Bearer abc123.def456") == "Authorization: Bearer [REDACTED:bearer-token]"


@pytest.mark.parametrize("text", [
    '{"password": "hunter22"}', "{'password': 'hunter22'}", "password=hunter22 host=db",
    "password: hunter22", "PGPASSWORD=hunter22", 'x-api-key: "abcdef123456"', "GITHUB_TOKEN=abcdef123456",
    "accessToken=abcdef123456", "client_secret = 'abcdef123456'", '\\"api_key\\": \\"abcdef123456\\"',
    "aws_secret_access_key=abcdef123456",
])
def test_values_of_credential_named_keys(text):
    out = R.redact(text)
    assert "hunter22" not in out and "abcdef123456" not in out, out


@pytest.mark.parametrize("text", [
    "tr-0123456789abcdef0123456789abcdef", "6kyDDmMvnmQ=", "ea4c830e632f9e64",
    '"mlflow.chat.tokenUsage": {"input_tokens": 12, "total_tokens": 30}', "max_tokens=16000",
    "token_count: 1234", "the token usage grew; key: tag.environment", "basic authentication failed",
    "https://example.com:8080/path?q=1", "sha 3f786850e387550fdab836ed7e6dc881de23001b",
    "2026-09-21T12:00:00.000Z", "sk-learn pipeline", "retrieve_documents_v2",
])
def test_ordinary_trace_text_is_left_alone(text):
    assert R.redact(text) == text


def test_values_of_credential_keys_in_structures():
    doc = {"password": "pw1", "headers": {"Authorization": "Basic Zm9vOmJhcg=="}, "tokens": {"total": 5},
           "GITHUB_TOKEN": "y1", "max_tokens": 100, "mlflow.chat.tokenUsage": {"input_tokens": 1}}
    out = R.redact_value(doc)
    assert out["password"] == "[REDACTED:password]" and out["GITHUB_TOKEN"] == "[REDACTED:token]"
    assert out["headers"]["Authorization"].startswith("[REDACTED:")
    assert out["tokens"] == {"total": 5} and out["max_tokens"] == 100
    assert out["mlflow.chat.tokenUsage"] == {"input_tokens": 1}


def test_a_cut_off_private_key_is_still_redacted():
    block = SECRETS["private-key"]
    assert not leaks(R.redact("x " + block[: len(block) // 2]))


def test_clip_redacts_before_cutting():
    """A key cut in half is not recognisable any more: clip() redacts first."""
    text = "error: " + SECRETS["aws-access-key-id"] + " denied"
    cut = R.clip(text, 15)
    assert "AKIA" not in cut and cut.startswith("error: ")


def test_message_pattern_redacts_before_masking():
    from mlflow_analyzer.stats import message_pattern

    assert "AKIA" not in message_pattern(f"denied for {SECRETS['aws-access-key-id']} (403)")
    assert "[REDACTED:aws-access-key-id]" in message_pattern(f"denied for {SECRETS['aws-access-key-id']}")


def test_learned_literal_is_redacted_elsewhere():
    R.redact("postgresql://app:Tr0ub4dor-3@db/x")
    assert R.redact("the password Tr0ub4dor-3 again") == "the password [REDACTED:uri-password] again"


def test_disabled_changes_nothing():
    R.set_enabled(False)
    assert R.redact(IN_TEXT["github-token"]) == IN_TEXT["github-token"]


def test_vendored_rules_name_their_source_and_licence():
    info = R.rules_info()
    assert info["source"].startswith("https://github.com/gitleaks/gitleaks")
    assert info["license"] == "MIT" and re.match(r"\d{4}-\d\d-\d\d", info["date"]) and info["rules"] > 100
    doc = json.loads(R.RULES_FILE.read_text())
    assert "Permission is hereby granted" in doc["license_text"]
    for rule in doc["rules"]:  # compiled lazily at run time: every one must compile
        re.compile(rule["regex"])
        for allow in rule.get("allow", []):
            for rx in allow.get("regexes", []):
                re.compile(rx)


def test_gitleaks_rules_catch_formats_we_did_not_write():
    for token in ("glpat-" + "a1b2c3d4e5f6g7h8i9j0", "npm_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
                  "shpat_" + "0123456789abcdef0123456789abcdef", "hf_" + "abcdefghijklmnopqrstuvwxyzabcdefgh"):
        assert "[REDACTED:" in R.redact(f"value {token} end"), token


def test_terminal_safe_neutralizes_escapes():
    evil = "name\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x9b\u202eevil\r"
    out = R.terminal_safe(evil)
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\u202e" not in out and "\r" not in out
    assert "red" in out and "evil" in out


# ---- every command, end to end ------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_planted_store(tmp_path_factory.mktemp("planted") / "mlflow.db")


def _commands(store: dict, out: Path) -> list[list[str]]:
    src = ["--tracking-uri", store["tracking_uri"], "--experiment-id", store["experiment_id"]]
    one = ["--tracking-uri", store["tracking_uri"], "--trace-id", store["trace_ids"][0]]
    from mlflow_analyzer.extract import RECIPES

    cmds = [
        ["findings", *src], ["findings", *src, "--format", "text", "--all"],
        ["stats", *src], ["stats", *src, "--format", "text"], ["stats", *src, "--group-by", "tag.deploy.note"],
        ["tree", *one], ["tree", *one, "--timeline"], ["tree", *one, "--format", "json"],
        ["health", *one], ["health", *one, "--format", "text"],
        ["session", *src, "--list"], ["session", *src, "--session-id", store["session_id"], "--format", "text"],
        ["session", *src, "--session-id", store["session_id"]],
        ["extract", *src, "--program", ".", "--view", "raw", "--max-string", "0"],
        ["extract", *src, "--program", ".", "--max-string", "0", "--limit", "500"],
        ["fetch", *src, "--output", str(out / "fetch.jsonl")],
        ["fetch", *one, "--output", str(out / "one.json")],
        ["fetch", *src, "--view", "normalized", "--output", str(out / "norm.jsonl")],
        ["report", *src, "--branch", "main", "--commit", "abc1234", "--output-dir", str(out / "rep"), "--no-charts"],
        ["review", *src, "--no-llm", "--repo", str(out / "repo"), "--branch", "main", "--commit", "abc1234"],
    ]
    cmds += [["extract", *src, "--recipe", r, "--max-string", "0", "--limit", "500"] for r in RECIPES]
    return cmds


def _written(out: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file() and p.suffix != ".png")


def test_no_planted_secret_in_any_output(planted, tmp_path):
    (tmp_path / "repo").mkdir()
    failures = []
    for argv in _commands(planted, tmp_path):
        r = cli(*argv)
        # A recipe whose span type the store lacks ends in one line ("no traces"), not output.
        ok = r.returncode == 0 or (argv[0] == "extract" and len(r.stderr.strip().splitlines()) == 1)
        assert ok, (argv, r.stderr[-1500:])
        found = leaks(r.stdout + r.stderr)
        if found:
            failures.append((argv[:2], found))
    found = leaks(_written(tmp_path))
    assert not failures and not found, (failures, found)


def test_counts_on_stderr_and_in_the_review(planted, tmp_path):
    src = ["--tracking-uri", planted["tracking_uri"], "--experiment-id", planted["experiment_id"]]
    r = cli("findings", *src)
    lines = [ln for ln in r.stderr.splitlines() if "redacted" in ln]
    assert len(lines) == 1 and re.search(r"redacted \d+ secrets \(.*\); --no-redact shows them", lines[0]), r.stderr
    r = cli("report", *src, "--branch", "main", "--commit", "abc1234", "--output-dir", str(tmp_path), "--no-charts")
    assert r.returncode == 0, r.stderr
    review = Path(json.loads(r.stdout)["path"])
    meta = re.search(r"^redacted: (.*)$", review.read_text(), re.M)
    assert meta and json.loads(meta.group(1)), review.read_text()[:800]
    assert cli("validate", str(review)).returncode == 0


def test_no_redact_shows_raw_text(planted, tmp_path):
    src = ["--tracking-uri", planted["tracking_uri"], "--experiment-id", planted["experiment_id"]]
    r = cli("extract", *src, "--program", ".spans[].inputs", "--max-string", "0", "--limit", "500", "--no-redact")
    assert r.returncode == 0 and "github-token" in leaks(r.stdout)
    assert "redacted" not in r.stderr
    r = cli("report", *src, "--branch", "main", "--commit", "abc1234", "--output-dir", str(tmp_path),
            "--no-charts", "--no-redact")
    assert re.search(r"^redacted: null$", Path(json.loads(r.stdout)["path"]).read_text(), re.M)


def test_error_messages_mask_uri_passwords(tmp_path):
    r = cli("stats", "--tracking-uri", f"postgresql://app:{SECRETS['uri-password']}@127.0.0.1:1/x", "--experiment-id", "1")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert SECRETS["uri-password"] not in r.stderr, r.stderr
