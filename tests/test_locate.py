"""locate: span names -> file:line, autolog calls, and LLM calls no span covers.

Each test writes a small repository under tmp_path. Expected lines are found by a marker
comment in the source (``# <gap>``, ``# <span:name>``), so each assertion is an exact
file:line without hand-counted numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlflow_analyzer import locate
from mlflow_analyzer.cli import main

ROOT = Path(__file__).resolve().parents[1]


def make_repo(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def line_of(root: Path, rel: str, marker: str) -> int:
    lines = (root / rel).read_text().splitlines()
    hits = [i for i, line in enumerate(lines, start=1) if marker in line]
    assert len(hits) == 1, f"marker {marker!r} found {len(hits)} times in {rel}"
    return hits[0]


def gap_locations(result: locate.LocateResult) -> list[str]:
    return [f"{g['file']}:{g['line']}" for g in result.gaps]


# --- spans ---------------------------------------------------------------------------------

DECORATORS = """
import mlflow
import mlflow as mf
from mlflow import trace
from mlflow.entities import SpanType


@mlflow.trace
def bare(x):  # <span:bare>
    return x


@mlflow.trace()
async def called(x):  # <span:called>
    return x


@mlflow.trace(name="retrieve_docs", span_type=SpanType.RETRIEVER)
def retrieve(q):  # <span:retrieve_docs>
    return []


@trace(span_type="TOOL")
def imported_trace(q):  # <span:imported_trace>
    return q


@mf.trace(name="aliased")
def aliased_module(q):  # <span:aliased>
    return q


class Agent:
    @mlflow.trace(span_type=SpanType.AGENT)
    def run(self, q):  # <span:run>
        return q


def plain(q):
    return q


def undecorated_helper(q):  # <span:wrapped>
    return q


wrapped = mlflow.trace(undecorated_helper, name="wrapped")
"""


def test_decorated_functions(tmp_path):
    repo = make_repo(tmp_path, {"app/deco.py": DECORATORS})
    spans = locate.scan(repo).spans
    assert set(spans) == {"bare", "called", "retrieve_docs", "imported_trace", "aliased", "run", "wrapped"}
    expected = {
        "bare": ("decorator", None, "bare"),
        "called": ("decorator", None, "called"),
        "retrieve_docs": ("decorator", "RETRIEVER", "retrieve"),
        "imported_trace": ("decorator", "TOOL", "imported_trace"),
        "aliased": ("decorator", None, "aliased_module"),
        "run": ("decorator", "AGENT", "Agent.run"),
        "wrapped": ("trace_wrapper", None, "undecorated_helper"),
    }
    for name, (kind, span_type, function) in expected.items():
        assert spans[name] == [
            {
                "file": "app/deco.py",
                "line": line_of(repo, "app/deco.py", f"<span:{name}>"),
                "kind": kind,
                "span_type": span_type,
                "function": function,
            }
        ], name


MANUAL_SPANS = """
import mlflow
from mlflow import MlflowClient
from mlflow.entities import SpanType

client = MlflowClient()


def pipeline(items, tool):
    with mlflow.start_span("plan") as span:  # <span:plan>
        pass
    with mlflow.start_span(name="act", span_type=SpanType.TOOL):  # <span:act>
        pass
    with mlflow.start_span():  # <span:span>
        pass
    with mlflow.start_span(name=f"tool:{tool}"):  # <span:tool:*>
        pass
    with mlflow.start_span(name=tool):  # fully dynamic: not recorded
        pass
    s1 = mlflow.start_span_no_context(name="background", span_type="TASK")  # <span:background>
    s2 = mlflow.start_span_no_context("positional")  # <span:positional>
    root = client.start_trace("request", span_type="CHAIN")  # <span:request>
    child = client.start_span("step", trace_id=root.trace_id, parent_id=root.span_id)  # <span:step>
"""


def test_manual_spans(tmp_path):
    repo = make_repo(tmp_path, {"pipe.py": MANUAL_SPANS})
    spans = locate.scan(repo).spans
    expected = {
        "plan": ("start_span", None),
        "act": ("start_span", "TOOL"),
        "span": ("start_span", None),
        "tool:*": ("start_span", None),
        "background": ("start_span_no_context", "TASK"),
        "positional": ("start_span_no_context", None),
        "request": ("client_start_trace", "CHAIN"),
        "step": ("client_start_span", None),
    }
    assert set(spans) == set(expected)
    for name, (kind, span_type) in expected.items():
        (entry,) = spans[name]
        assert entry == {
            "file": "pipe.py",
            "line": line_of(repo, "pipe.py", f"<span:{name}>"),
            "kind": kind,
            "span_type": span_type,
            "function": "pipeline",
        }, name


def test_same_name_in_two_places_sorted(tmp_path):
    repo = make_repo(tmp_path, {
        "b.py": "import mlflow\n\n@mlflow.trace(name='step')\ndef b():\n    pass\n",
        "a.py": "import mlflow\n\ndef a():\n    with mlflow.start_span('step'):\n        pass\n",
    })
    entries = locate.scan(repo).spans["step"]
    assert [(e["file"], e["line"]) for e in entries] == [("a.py", 4), ("b.py", 4)]


# --- autolog -------------------------------------------------------------------------------

AUTOLOG = """
import mlflow
import mlflow.langchain
from mlflow import anthropic as mlflow_anthropic
from mlflow.litellm import autolog as litellm_autolog

mlflow.openai.autolog()  # <openai>
mlflow_anthropic.autolog(log_traces=True)  # <anthropic>
mlflow.langchain.autolog()  # <langchain>
litellm_autolog()  # <litellm>
mlflow.gemini.autolog(disable=True)
mlflow.groq.autolog(log_traces=False)
mlflow.autolog(exclude_flavors=["openai"])  # <all>
"""


def test_autolog_calls(tmp_path):
    repo = make_repo(tmp_path, {"setup_tracing.py": AUTOLOG})
    autolog = locate.scan(repo).autolog
    expected = []
    for flavor in ("openai", "anthropic", "langchain", "litellm", "all"):
        entry = {"flavor": flavor, "file": "setup_tracing.py", "line": line_of(repo, "setup_tracing.py", f"<{flavor}>")}
        if flavor == "all":
            entry["exclude"] = ["openai"]
        expected.append(entry)
    assert autolog == expected  # the disabled gemini and log_traces=False groq calls are left out


# --- gaps ----------------------------------------------------------------------------------

GAPS = """
import anthropic
import httpx
import litellm
import openai as oa
import requests
from anthropic import Anthropic as Claude
from google import genai
from langchain.chat_models import init_chat_model
from langchain_anthropic import ChatAnthropic
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI
from litellm import completion
from openai import AsyncOpenAI

client = anthropic.Anthropic()
claude = Claude()
gpt = oa.OpenAI()
OLLAMA = "http://localhost:11434"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"


def ask_claude(q):
    return client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=[])  # <gap:anthropic-module>


def ask_alias(q):
    with claude.messages.stream(model="claude-haiku-4-5", max_tokens=10, messages=[]) as s:  # <gap:anthropic-alias>
        return s


def inline():
    return anthropic.Anthropic().messages.create(model="m", max_tokens=1, messages=[])  # <gap:anthropic-inline>


def ask_gpt(q):
    return gpt.chat.completions.create(model="gpt-4o", messages=[])  # <gap:openai-alias>


def legacy(q):
    return oa.ChatCompletion.create(model="gpt-3.5-turbo", messages=[])  # <gap:openai-legacy>


def module_client(q):
    return oa.chat.completions.create(model="gpt-4o", messages=[])  # <gap:openai-module>


async def responses(q):
    async_client = AsyncOpenAI()
    return await async_client.responses.create(model="gpt-5", input=q)  # <gap:openai-responses>


def annotated(c: oa.OpenAI, q):
    return c.chat.completions.create(model="gpt-4o", messages=[])  # <gap:openai-annotated>


def via_factory(q):
    c = make_client()
    return c.chat.completions.create(model="gpt-4o", messages=[])  # <gap:openai-unresolved>


def lite(q):
    return completion(model="gpt-4o-mini", messages=[])  # <gap:litellm-from>


async def lite_async(q):
    return await litellm.acompletion(model="gpt-4o-mini", messages=[])  # <gap:litellm-module>


def gemini(q):
    g = genai.Client()
    return g.models.generate_content(model="gemini-2.5-flash", contents=q)  # <gap:gemini>


class Chain:
    def __init__(self):
        self.llm = ChatOpenAI(model="gpt-4o-mini")
        self.prompt = ChatPromptTemplate.from_messages([("user", "{q}")])

    def run(self, q):
        chain = self.prompt | self.llm
        return chain.invoke({"q": q})  # <gap:langchain-chain>

    async def tools(self, q):
        return await self.llm.bind_tools([]).ainvoke(q)  # <gap:langchain-bind-tools>


def lc_anthropic(q):
    llm = ChatAnthropic(model="claude-haiku-4-5")
    return llm.invoke(q)  # <gap:langchain-anthropic>


def lc_init(q):
    model = init_chat_model("gpt-4o")
    return model.stream(q)  # <gap:langchain-init>


def ollama(q):
    return httpx.post(f"{OLLAMA}/api/generate", json={"prompt": q})  # <gap:http-httpx>


def raw_anthropic(q):
    return requests.post(ANTHROPIC_URL, json={}, headers={})  # <gap:http-requests>


async def raw_async(q):
    async with httpx.AsyncClient(base_url=OLLAMA) as http:
        return await http.post("/api/chat", json={})  # <gap:http-client>


class Service:
    def __init__(self, client: anthropic.Anthropic, session: requests.Session):
        self.client = client
        self.session = session

    def call(self, q):
        self.session.post(OLLAMA + "/v1/chat/completions", json={})  # <gap:http-session>
        return self.client.messages.create(model="m", max_tokens=1, messages=[])  # <gap:anthropic-self>


ask_gpt("module level")
gpt.chat.completions.create(model="gpt-4o", messages=[])  # <gap:module-level>
"""

EXPECTED_GAPS = {
    # marker: (client, function)
    "anthropic-module": ("anthropic", "ask_claude"),
    "anthropic-alias": ("anthropic", "ask_alias"),
    "anthropic-inline": ("anthropic", "inline"),
    "openai-alias": ("openai", "ask_gpt"),
    "openai-legacy": ("openai", "legacy"),
    "openai-module": ("openai", "module_client"),
    "openai-responses": ("openai", "responses"),
    "openai-annotated": ("openai", "annotated"),
    "openai-unresolved": ("openai", "via_factory"),
    "litellm-from": ("litellm", "lite"),
    "litellm-module": ("litellm", "lite_async"),
    "gemini": ("gemini", "gemini"),
    "langchain-chain": ("langchain", "Chain.run"),
    "langchain-bind-tools": ("langchain", "Chain.tools"),
    "langchain-anthropic": ("langchain", "lc_anthropic"),
    "langchain-init": ("langchain", "lc_init"),
    "http-httpx": ("http", "ollama"),
    "http-requests": ("http", "raw_anthropic"),
    "http-client": ("http", "raw_async"),
    "http-session": ("http", "Service.call"),
    "anthropic-self": ("anthropic", "Service.call"),
    "module-level": ("openai", "<module>"),
}


def test_every_gap_style_found_exactly(tmp_path):
    repo = make_repo(tmp_path, {"app/llm.py": GAPS})
    result = locate.scan(repo)
    expected = sorted(
        (line_of(repo, "app/llm.py", f"<gap:{marker}>"), client, function)
        for marker, (client, function) in EXPECTED_GAPS.items()
    )
    found = [(g["line"], g["client"], g["function"]) for g in result.gaps]
    assert found == expected
    for gap in result.gaps:
        assert gap["file"] == "app/llm.py"
        assert set(gap) == {"file", "line", "function", "client", "call", "reason"}
        assert gap["reason"]
    by_line = {g["line"]: g for g in result.gaps}
    g = by_line[line_of(repo, "app/llm.py", "<gap:anthropic-module>")]
    assert g["call"] == "client.messages.create"
    assert "mlflow.anthropic.autolog()" in g["reason"]
    g = by_line[line_of(repo, "app/llm.py", "<gap:langchain-chain>")]
    assert "mlflow.langchain.autolog()" in g["reason"] and "mlflow.openai.autolog()" in g["reason"]


NEAR_MISSES = """
import anthropic
import mlflow
import requests
from fastapi import FastAPI
from fastapi.testclient import TestClient
from langchain_core.prompts import ChatPromptTemplate
from langgraph.graph import StateGraph
from twilio.rest import Client as Twilio

client = anthropic.Anthropic()
sms = Twilio("sid", "token")
app = FastAPI()
graph = StateGraph(dict).compile()


def notify(to, notifier):
    sms.messages.create(body="hi", from_="+1", to=to)  # a Twilio text message
    notifier.messages.create(body="hi", to=to)  # unknown receiver, no model/messages args
    db.create(table="x")  # an unrelated .create


@app.post("/v1/chat/completions")  # a route definition, not a call to a model
def route():
    return {}


def test_route():
    TestClient(app).post("/api/chat", json={})


def upload():
    requests.post("https://example.com/upload", data=b"")


def render(q):
    return ChatPromptTemplate.from_messages([("user", "{q}")]).invoke({"q": q})


def run_graph(state):
    return graph.invoke(state)


def completions_unknown(thing):
    return thing.completions.create(model="m")  # ambiguous path on an unknown receiver


@mlflow.trace
def traced(q):
    def inner():
        return client.messages.create(model="m", max_tokens=1, messages=[])
    return client.messages.create(model="m", max_tokens=1, messages=[])


def in_span(q):
    with mlflow.start_span("call_llm"):
        return client.messages.create(model="m", max_tokens=1, messages=[])


def manual_span(q):
    span = mlflow.start_span_no_context("manual")
    try:
        return client.messages.create(model="m", max_tokens=1, messages=[])
    finally:
        span.end()


def wrapped_later(q):
    return client.messages.create(model="m", max_tokens=1, messages=[])


wrapped = mlflow.trace(wrapped_later)
"""

def test_near_misses_are_not_gaps(tmp_path):
    repo = make_repo(tmp_path, {"svc/near.py": NEAR_MISSES})
    result = locate.scan(repo)
    assert result.gaps == []
    assert result.files_scanned == 1


UNRESOLVED = """
class Inbox:
    def __init__(self, api):
        self.api = api

    def send(self):
        return self.api.messages.create(model="x", messages=[])  # <gap>
"""


def test_unresolved_receiver_counts_only_if_the_repo_uses_the_sdk(tmp_path):
    alone = make_repo(tmp_path / "alone", {"inbox.py": UNRESOLVED})
    assert locate.scan(alone).gaps == []
    both = make_repo(tmp_path / "both", {
        "inbox.py": UNRESOLVED,
        "clients.py": "import anthropic\n\nclient = anthropic.Anthropic()\n",
    })
    gaps = locate.scan(both).gaps
    assert [(g["file"], g["line"], g["client"]) for g in gaps] == [
        ("inbox.py", line_of(both, "inbox.py", "<gap>"), "anthropic")
    ]


def test_client_imported_from_another_module(tmp_path):
    repo = make_repo(tmp_path, {
        "app/__init__.py": "",
        "app/clients.py": "from openai import OpenAI\n\nclient = OpenAI()\n",
        "app/ask.py": """
            from app.clients import client
            from .clients import client as relative


            def ask(q):
                a = client.chat.completions.create(model="gpt-4o", messages=[])  # <gap:abs>
                return relative.chat.completions.create(**q)  # <gap:rel>
        """,
    })
    assert gap_locations(locate.scan(repo)) == [
        f"app/ask.py:{line_of(repo, 'app/ask.py', '<gap:abs>')}",
        f"app/ask.py:{line_of(repo, 'app/ask.py', '<gap:rel>')}",
    ]


def test_test_code_is_not_reported_as_gaps(tmp_path):
    code = "import litellm\nimport mlflow\n\n@mlflow.trace\ndef helper():\n    pass\n\ndef f():\n    return litellm.completion(model='m', messages=[])\n"
    repo = make_repo(tmp_path, {
        "tests/helpers.py": code, "test_app.py": code, "app_test.py": code, "conftest.py": code,
        "app.py": code,
    })
    result = locate.scan(repo)
    assert gap_locations(result) == ["app.py:9"]
    assert len(result.spans["helper"]) == 5  # spans are still recorded everywhere


def test_autolog_anywhere_covers_its_flavor_only(tmp_path):
    files = {
        "app/llm.py": GAPS,
        "app/main.py": "import mlflow\n\nmlflow.openai.autolog()\nmlflow.litellm.autolog()\n",
    }
    repo = make_repo(tmp_path, files)
    result = locate.scan(repo)
    covered = {"openai", "litellm"}
    expected = sorted(
        line_of(repo, "app/llm.py", f"<gap:{marker}>")
        for marker, (client, _) in EXPECTED_GAPS.items()
        if client not in covered
        # ChatOpenAI is traced by the openai autolog; ChatAnthropic / init_chat_model are not
        and marker not in ("langchain-chain", "langchain-bind-tools")
    )
    assert [g["line"] for g in result.gaps] == expected


def test_mlflow_autolog_covers_every_sdk_but_not_raw_http(tmp_path):
    repo = make_repo(tmp_path, {"app/llm.py": GAPS, "app/main.py": "import mlflow\nmlflow.autolog()\n"})
    assert {g["client"] for g in locate.scan(repo).gaps} == {"http"}


def test_mlflow_autolog_exclude_flavors(tmp_path):
    files = {
        "app/llm.py": GAPS,
        "app/main.py": "import mlflow\nmlflow.autolog(exclude_flavors=['anthropic'])\n",
    }
    clients = {g["client"] for g in locate.scan(make_repo(tmp_path, files)).gaps}
    assert clients == {"http", "anthropic"}


def test_disabled_autolog_does_not_cover(tmp_path):
    files = {
        "a.py": "import anthropic\nc = anthropic.Anthropic()\n\ndef f():\n    return c.messages.create(model='m', messages=[])\n",
        "b.py": "import mlflow\nmlflow.anthropic.autolog(disable=True)\n",
    }
    assert gap_locations(locate.scan(make_repo(tmp_path, files))) == ["a.py:5"]


# --- walking the tree ----------------------------------------------------------------------


def test_skipped_directories_and_unparsable_files(tmp_path):
    gap = "import litellm\n\ndef f():\n    return litellm.completion(model='m', messages=[])\n"
    files = {"src/ok.py": gap, "src/broken.py": "def broken(:\n", "src/notes.txt": gap}
    for skipped in (".venv", "venv", "node_modules", ".git", "build", "dist", ".hidden",
                    "lib/python3.11/site-packages"):
        files[f"{skipped}/pkg/mod.py"] = gap
    repo = make_repo(tmp_path, files)
    result = locate.scan(repo)
    assert result.files_scanned == 1
    assert result.files_skipped == 1
    assert gap_locations(result) == ["src/ok.py:4"]


def test_scan_rejects_a_file(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("x = 1\n")
    with pytest.raises(NotADirectoryError):
        locate.scan(path)


# --- resolve -------------------------------------------------------------------------------


def test_resolve(tmp_path):
    repo = make_repo(tmp_path, {
        "app/deco.py": DECORATORS,
        "pipe.py": MANUAL_SPANS,
        "main.py": "import mlflow\n\nmlflow.openai.autolog()\nmlflow.anthropic.autolog()\n",
    })
    result = locate.scan(repo)
    deco = lambda name: f"app/deco.py:{line_of(repo, 'app/deco.py', f'<span:{name}>')}"  # noqa: E731
    assert locate.resolve("retrieve_docs", result) == deco("retrieve_docs")
    assert locate.resolve("Retrieve-Docs", result) == deco("retrieve_docs")
    assert locate.resolve("retrievedocs", result) == deco("retrieve_docs")
    assert locate.resolve("retrieve_docs_2", result) == deco("retrieve_docs")  # MLflow de-dup
    assert locate.resolve("tool:web_search", result) == f"pipe.py:{line_of(repo, 'pipe.py', '<span:tool:*>')}"
    assert locate.resolve("Completions", result) == "main.py:3"
    assert locate.resolve("AsyncCompletions", result) == "main.py:3"
    assert locate.resolve("Messages.create", result) == "main.py:4"
    assert locate.resolve("AsyncMessages", result) == "main.py:4"
    assert locate.resolve("ChatOpenAI", result) is None  # langchain autolog not enabled
    assert locate.resolve("nothing_like_it", result) is None
    assert locate.resolve("", result) is None


def test_resolve_with_mlflow_autolog(tmp_path):
    repo = make_repo(tmp_path, {"main.py": "import mlflow\nmlflow.autolog()\n"})
    result = locate.scan(repo)
    assert locate.resolve("ChatOpenAI", result) == "main.py:2"
    assert locate.resolve("litellm-completion", result) == "main.py:2"


def test_to_dict_is_json(tmp_path):
    repo = make_repo(tmp_path, {"app/llm.py": GAPS, "app/deco.py": DECORATORS})
    d = locate.scan(repo).to_dict()
    assert list(d) == ["spans", "autolog", "gaps", "files_scanned", "files_skipped"]
    assert json.loads(json.dumps(d)) == d


# --- the command ---------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_DISABLE_AGENT_HINT": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mlflow_analyzer", "locate", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_cli_json(tmp_path):
    repo = make_repo(tmp_path, {"app/llm.py": GAPS, "app/deco.py": DECORATORS})
    proc = run_cli("--repo", str(repo), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == locate.scan(repo).to_dict()
    assert len(out["gaps"]) == len(EXPECTED_GAPS)


def test_cli_span_and_text(tmp_path):
    repo = make_repo(tmp_path, {"app/deco.py": DECORATORS, "app/llm.py": GAPS})
    proc = run_cli("--repo", str(repo), "--span", "retrieve_docs", "missing", "--format", "text")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    line = line_of(repo, "app/deco.py", "<span:retrieve_docs>")
    assert f"retrieve_docs  app/deco.py:{line}" in text
    assert "missing        not found" in text
    assert "RETRIEVER" in text
    assert f"app/llm.py:{line_of(repo, 'app/llm.py', '<gap:anthropic-module>')}" in text
    assert "client.messages.create" in text

    proc = run_cli(f"--repo={repo}", "--span=retrieve_docs")
    assert json.loads(proc.stdout)["resolved"] == {"retrieve_docs": f"app/deco.py:{line}"}


def test_cli_in_process(tmp_path, capsys):
    repo = make_repo(tmp_path, {"app/deco.py": DECORATORS})
    assert main(["locate", "--repo", str(repo)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["files_scanned"] == 1 and out["gaps"] == []


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_cli_bad_repo(tmp_path, kind):
    target = tmp_path / "nope"
    if kind == "file":
        target.write_text("x = 1\n")
    proc = run_cli("--repo", str(target))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlflow-analyzer: error: --repo")
    assert "Traceback" not in proc.stderr


def test_cli_help_has_example():
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "Example:\n  mlflow-analyzer locate --repo . --format text" in proc.stdout


def test_command_module_imports_only_stdlib():
    code = (
        "import sys; import mlflow_analyzer.commands.locate; "
        "heavy = ('mlflow', 'pandas', 'jq', 'anthropic', 'numpy', 'matplotlib'); "
        "print([m for m in sys.modules if m.split('.')[0] in heavy])"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
