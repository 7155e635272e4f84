"""Planted credentials: one of each kind the redactor knows, and a store that carries them
in every place a trace can hold text (span inputs, outputs, attributes, exception
messages, span names, tags, metadata, assessments). Used by test_redact and test_attack.

Each value is made up (random characters in the real formats); ``LEAK_MARKS`` are the
substrings that must never appear in any output (a secret's distinctive middle, so that
a half key is caught too).
"""

from __future__ import annotations

import random
import string

_rng = random.Random(20261201)


def _chars(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


PG_PASSWORD = "pgPw-" + _chars(14)
SECRETS: dict[str, str] = {
    "anthropic-key": "sk-ant-api03-" + _chars(93, string.ascii_letters + string.digits + "_-") + "AA",
    "openai-key": "sk-proj-" + _chars(58) + "T3BlbkFJ" + _chars(58),
    "aws-access-key-id": "AKIA" + _chars(16, string.ascii_uppercase + "234567"),
    "aws-secret-key": _chars(18) + "/" + _chars(10) + "+" + _chars(10),
    "github-token": "ghp_" + _chars(36),
    "bearer-token": "bt1." + _chars(30, string.ascii_letters + string.digits + "-_"),
    "uri-password": PG_PASSWORD,
    "google-api-key": "AIza" + _chars(35, string.ascii_letters + string.digits + "_-"),
    "slack-token": "xoxb-" + _chars(12, string.digits) + "-" + _chars(13, string.digits) + "-" + _chars(24),
    "stripe-key": "sk_live_" + _chars(24),
    "jwt": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI" + _chars(20) + "In0." + _chars(43),
    "private-key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow" + _chars(60) + "\n" + _chars(64)
    + "\n-----END RSA PRIVATE KEY-----",
    "password": "hunter-" + _chars(12),
    "api-key": "k3y-" + _chars(24, string.ascii_lowercase + string.digits),
    "gitlab-pat": "glpat-" + _chars(20),
}

#: How each secret is written in trace text (what a leaky application logs).
IN_TEXT: dict[str, str] = {
    "anthropic-key": f"using ANTHROPIC key {SECRETS['anthropic-key']} for the call",
    "openai-key": f"client = OpenAI(api='{SECRETS['openai-key']}')",
    "aws-access-key-id": f"AWS id {SECRETS['aws-access-key-id']} in us-east-1",
    "aws-secret-key": f"AWS_SECRET_ACCESS_KEY={SECRETS['aws-secret-key']}",
    "github-token": f"git clone https://x-access-token:{SECRETS['github-token']}@github.com/o/r",
    "bearer-token": f"Authorization: Bearer {SECRETS['bearer-token']}",
    "uri-password": f"could not connect to postgresql://app:{PG_PASSWORD}@db.internal:5432/prod",
    "google-api-key": f"maps key={SECRETS['google-api-key']}",
    "slack-token": f"slack {SECRETS['slack-token']}",
    "stripe-key": f"stripe.api_key = \"{SECRETS['stripe-key']}\"",
    "jwt": f"session jwt {SECRETS['jwt']} expired",
    "private-key": f"key file:\n{SECRETS['private-key']}\n",
    "password": f"{{'user': 'app', 'password': '{SECRETS['password']}'}}",
    "api-key": f'{{"api_key": "{SECRETS["api-key"]}", "retries": 3}}',
    "gitlab-pat": f"token glpat {SECRETS['gitlab-pat']}",
}


def leak_marks() -> dict[str, list[str]]:
    """kind -> substrings whose presence in an output means a leak (the whole secret and
    a distinctive middle part, so that a clipped half key counts as a leak)."""
    out = {}
    for kind, value in SECRETS.items():
        if kind == "private-key":
            body = value.split("\n")[1]
            out[kind] = [body[6:30]]
        else:
            mid = value[len(value) // 3: len(value) // 3 + 12]
            out[kind] = [value, mid]
    return out


LEAK_MARKS = leak_marks()


def leaks(text: str) -> list[str]:
    """Kinds of planted secret that appear in ``text``."""
    return sorted(kind for kind, marks in LEAK_MARKS.items() if any(m in text for m in marks))


def build_planted_store(path) -> dict:
    """A SQLite store whose traces carry every planted secret in every text field.
    Returns {"tracking_uri", "experiment_id", "trace_ids", "session_id"}."""
    import mlflow
    from mlflow.entities import AssessmentSource

    from builders import T0, open_store, write_trace

    uri, exp = open_store(path)
    ids = []
    kinds = list(SECRETS)
    for i, kind in enumerate(kinds):
        text = IN_TEXT[kind]
        spec = {
            "name": "agent",
            "type": "AGENT",
            "ms": (0, 900),
            "inputs": {"question": f"q{i}: {text}", "headers": {"Authorization": f"Bearer {SECRETS['bearer-token']}"}},
            "outputs": {"answer": text},
            "attributes": {"app.config": text, "db_password": SECRETS["password"]},
            "children": [
                {
                    "name": "llm",
                    "type": "CHAT_MODEL",
                    "ms": (10, 600),
                    "inputs": {"messages": [{"role": "user", "content": text}]},
                    "outputs": {"content": f"echo: {text}"},
                    "attributes": {"mlflow.llm.model": "gpt-4o-mini"},
                    "usage": {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120},
                },
                {
                    "name": f"tool {SECRETS['github-token'] if kind == 'github-token' else 'lookup'}",
                    "type": "TOOL",
                    "ms": (600, 850),
                    "inputs": {"query": text},
                    "error": (RuntimeError, f"tool failed: {text}") if i % 2 == 0 else None,
                },
            ],
        }
        if spec["children"][1]["error"] is None:
            del spec["children"][1]["error"]
        tid = write_trace(spec, t0=T0 + i * 1_000_000_000,
                          metadata={"mlflow.trace.session": "s-planted", "app.secret_note": text})
        client = mlflow.MlflowClient(tracking_uri=uri)
        client.set_trace_tag(tid, "deploy.note", text)
        client.set_trace_tag(tid, "api_token", SECRETS["api-key"])
        mlflow.log_feedback(trace_id=tid, name="safety", value=False, rationale=f"leaked: {text}",
                            source=AssessmentSource(source_type="LLM_JUDGE", source_id="judge"))
        ids.append(tid)
    return {"tracking_uri": uri, "experiment_id": exp, "trace_ids": ids, "session_id": "s-planted"}
