"""Find where spans come from in a Python code base, and the LLM calls no span covers.

:func:`scan` reads every ``.py`` file under a directory with the :mod:`ast` module (the code
is never imported or run) and returns a :class:`LocateResult`:

- ``spans``: span name -> where it is created, from ``@mlflow.trace`` (bare, called, with
  ``name=``; also ``@trace`` after ``from mlflow import trace``), ``mlflow.trace(fn)``,
  ``with mlflow.start_span("x")``, ``mlflow.start_span_no_context(...)`` and an
  ``MlflowClient``'s ``start_span(...)`` / ``start_trace(...)``. A literal span type
  (``SpanType.TOOL`` or ``"TOOL"``) is kept. An f-string name becomes a ``*`` pattern
  (``f"tool:{name}"`` -> ``tool:*``); a name with no literal part is not recorded.
- ``autolog``: every ``mlflow.<flavor>.autolog()`` call (``mlflow.autolog()`` is flavor
  ``"all"``); calls with a literal ``disable=True`` or ``log_traces=False`` are left out,
  as they produce no spans. :data:`AUTOLOG_SPAN_NAMES` lists the span names each flavor
  typically produces.
- ``gaps``: calls to an LLM client that no span covers: the enclosing function is not
  traced, the call is not inside ``with mlflow.start_span(...)`` (nor after a manual span
  start in the same function), and no autolog for that client is enabled anywhere in the
  scanned tree. Recognized clients: ``anthropic`` (``*.messages.create/stream``), ``openai``
  (``*.chat.completions.create``, ``*.responses.create``, ``openai.ChatCompletion.create``
  ...), ``gemini`` (``*.models.generate_content``), ``groq``, ``litellm``
  (``litellm.completion`` / ``acompletion`` ...), ``langchain`` (``invoke`` & co. on a chat
  model built from a ``Chat*`` class, ``init_chat_model``, ``llm.bind_tools(...)`` or a
  ``prompt | llm`` chain) and ``http`` (``httpx`` / ``requests`` ``.post`` to a model
  endpoint such as ``/v1/messages`` or ``/v1/chat/completions``).

Each gap is ``{file, line, function, client, call, reason}`` (``function`` is
``Class.method`` for methods, ``<module>`` for module-level code). Gaps in test code
(``tests/``, ``test_*.py``, ``*_test.py``, ``conftest.py``) are not reported: clients there
are usually mocks. Spans found there are still listed.

To avoid false positives, a receiver is resolved through the file's imports and
assignments (``import openai as oa``, ``from anthropic import Anthropic``,
``client = Anthropic()``, ``self.llm = ChatOpenAI()``, parameter annotations): a receiver
known to be something else (a Twilio client's ``messages.create``, a FastAPI
``TestClient``'s ``post``, a ``ChatPromptTemplate``'s ``invoke``) is never a gap. A receiver
that cannot be resolved (``from app.clients import client``, a factory's result, an
unannotated parameter) counts only when the method path belongs to an LLM SDK
(``.messages.create``, ``.chat.completions.create``, not the ambiguous
``.completions.create``), the call passes ``model=``/``messages=``/``input=``/``contents=``
(or ``**kwargs``), and some file of the repo imports that SDK. An HTTP ``.post`` on an
unresolved receiver also needs an absolute URL or one built on a base URL. Scopes are
approximated (function locals, ``self.`` attributes of the class, module globals).

:func:`resolve` turns a span name from a trace into ``"file:line"``, trying exact,
case/``_``-insensitive, MLflow's de-duplicated names (``step_1``), ``*`` patterns and the
spans of the enabled autolog flavors.
"""

from __future__ import annotations

import ast
import fnmatch
import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

__all__ = ["LocateResult", "scan", "resolve", "AUTOLOG_SPAN_NAMES", "SKIP_DIRS"]

# Directory names never descended into (hidden directories are skipped too).
SKIP_DIRS = frozenset(
    {".venv", "venv", "node_modules", ".git", "site-packages", "build", "dist", "__pycache__"}
)
MAX_FILE_BYTES = 5_000_000  # larger .py files are generated code: skipped, counted

# Span names each autolog flavor typically produces in MLflow 3.x (class or method names
# of the patched client). LangChain spans are named after the runnable, so only the
# usual ones are listed.
AUTOLOG_SPAN_NAMES: dict[str, tuple[str, ...]] = {
    "openai": (
        "Completions", "AsyncCompletions", "Responses", "AsyncResponses",
        "Embeddings", "AsyncEmbeddings",
    ),
    "anthropic": ("Messages.create", "AsyncMessages.create", "Messages", "AsyncMessages"),
    "langchain": (
        "ChatOpenAI", "AzureChatOpenAI", "ChatAnthropic", "ChatGoogleGenerativeAI",
        "ChatVertexAI", "ChatBedrock", "ChatBedrockConverse", "ChatOllama", "ChatGroq",
        "ChatMistralAI", "RunnableSequence", "RunnableParallel", "RunnableLambda",
        "AgentExecutor", "LangGraph", "ChatPromptTemplate", "StrOutputParser",
    ),
    "litellm": ("litellm-completion", "litellm-acompletion", "litellm-embedding"),
    "gemini": (
        "Models.generate_content", "AsyncModels.generate_content", "Chat.send_message",
        "GenerativeModel.generate_content",
    ),
    "groq": ("Completions", "AsyncCompletions"),
    "mistral": ("Chat.complete", "Chat.stream", "Chat.complete_async"),
    "bedrock": (
        "BedrockRuntime.converse", "BedrockRuntime.converse_stream",
        "BedrockRuntime.invoke_model", "BedrockRuntime.invoke_model_with_response_stream",
    ),
    "dspy": ("Predict", "ChainOfThought", "ReAct", "Module.forward"),
}

# The autolog flavors that cover each kind of client call ("all" is mlflow.autolog()).
_CLIENT_FLAVORS = {
    "anthropic": {"anthropic"},
    "openai": {"openai"},
    "gemini": {"gemini"},
    "groq": {"groq"},
    "litellm": {"litellm"},
    "langchain": {"langchain"},
    "http": set(),  # no autolog traces raw HTTP calls
}

# --- names of the APIs we recognize (fully qualified, after import resolution) ----------

_TRACE = {"mlflow.trace", "mlflow.tracing.trace", "mlflow.tracing.fluent.trace"}
_START_SPAN = {"mlflow.start_span", "mlflow.tracing.start_span", "mlflow.tracing.fluent.start_span"}
_START_SPAN_NO_CONTEXT = {
    "mlflow.start_span_no_context",
    "mlflow.tracing.start_span_no_context",
    "mlflow.tracing.fluent.start_span_no_context",
}
_AUTOLOG = re.compile(r"^mlflow\.(?:(\w+)\.)?autolog$")
_MLFLOW_CLIENTS = {
    "mlflow.MlflowClient",
    "mlflow.client.MlflowClient",
    "mlflow.tracking.MlflowClient",
    "mlflow.tracking.client.MlflowClient",
}
_SDK_CLASSES = {
    **{f"anthropic.{c}": "anthropic" for c in (
        "Anthropic", "AsyncAnthropic", "Client", "AsyncClient", "AnthropicBedrock",
        "AsyncAnthropicBedrock", "AnthropicVertex", "AsyncAnthropicVertex",
    )},
    **{f"openai.{c}": "openai" for c in (
        "OpenAI", "AsyncOpenAI", "AzureOpenAI", "AsyncAzureOpenAI", "Client", "AsyncClient",
    )},
    "google.genai.Client": "gemini",
    "google.genai.client.Client": "gemini",
    "groq.Groq": "groq",
    "groq.AsyncGroq": "groq",
}
_SDK_MODULES = {"openai": "openai"}  # module-level client: openai.chat.completions.create(...)
_HTTP_CLASSES = {
    "httpx.Client", "httpx.AsyncClient", "requests.Session", "requests.session",
    "requests.sessions.Session", "aiohttp.ClientSession",
}
_HTTP_MODULES = {"httpx", "requests"}
_HTTP_FUNCTIONS = {"httpx.post", "requests.post", "requests.api.post"}
_HTTP_REQUEST_FUNCTIONS = {"httpx.request", "requests.request", "httpx.stream"}
_LITELLM = {
    f"litellm.{f}"
    for f in ("completion", "acompletion", "text_completion", "atext_completion",
              "responses", "aresponses", "completion_with_retries")
}
_OPENAI_LEGACY = {
    "openai.ChatCompletion.create", "openai.ChatCompletion.acreate",
    "openai.Completion.create", "openai.Completion.acreate",
}
_INIT_CHAT_MODEL = {"langchain.chat_models.init_chat_model", "langchain.chat_models.base.init_chat_model"}
_LANGCHAIN_LLM_CLASSES = {"OpenAI", "AzureOpenAI", "Ollama", "OllamaLLM", "VertexAI", "Bedrock", "BedrockLLM"}
_LANGCHAIN_BASE_TYPES = {"BaseChatModel", "BaseLanguageModel", "BaseLLM"}
_LANGCHAIN_RUN = {"invoke", "ainvoke", "stream", "astream", "batch", "abatch"}
_CHAT_WRAPPERS = {
    "bind_tools", "with_structured_output", "bind", "with_retry", "with_config",
    "with_fallbacks", "configurable_fields",
}
_SDK_WRAPPERS = {"with_options", "with_raw_response", "with_streaming_response", "copy"}

# Method paths per SDK, longest first; "specific" paths identify the SDK without knowing
# the receiver's type.
_SDK_PATHS: list[tuple[tuple[str, ...], tuple[str, ...], bool]] = [
    (("beta", "chat", "completions", "parse"), ("openai",), True),
    (("beta", "chat", "completions", "create"), ("openai",), True),
    (("chat", "completions", "create"), ("openai", "groq"), True),
    (("chat", "completions", "parse"), ("openai",), True),
    (("chat", "completions", "stream"), ("openai",), True),
    (("beta", "messages", "create"), ("anthropic",), True),
    (("beta", "messages", "stream"), ("anthropic",), True),
    (("aio", "models", "generate_content"), ("gemini",), True),
    (("aio", "models", "generate_content_stream"), ("gemini",), True),
    (("models", "generate_content"), ("gemini",), True),
    (("models", "generate_content_stream"), ("gemini",), True),
    (("messages", "create"), ("anthropic",), True),
    (("messages", "stream"), ("anthropic",), True),
    (("responses", "create"), ("openai",), True),
    (("responses", "parse"), ("openai",), True),
    (("responses", "stream"), ("openai",), True),
    (("completions", "create"), ("openai", "anthropic"), False),
    (("embeddings", "create"), ("openai",), False),
]
# For an unresolved receiver with a specific path, the SDK it is taken for is the first of
# the path's SDKs that some file of the repo imports (by this top-level package).
_SDK_IMPORT_ROOT = {"anthropic": "anthropic", "openai": "openai", "gemini": "google", "groq": "groq"}

# A file whose text contains none of these cannot hold a span, an autolog call or a gap.
_RELEVANT = (
    b"mlflow", b"anthropic", b"openai", b"litellm", b"langchain", b"httpx", b"requests",
    b"aiohttp", b"genai", b"groq", b"completions", b"/v1/", b"/api/", b"generatecontent",
    b"messages", b"generate_content",
)

_MODEL_ENDPOINTS = (
    "/v1/messages", "/completions", "generatecontent", "/api/generate", "/api/chat",
    "/v1/responses",
)


# --- result --------------------------------------------------------------------------------


@dataclass
class LocateResult:
    """What :func:`scan` found. Paths are relative to the scanned directory, ``/``-separated."""

    spans: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    autolog: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    root: str | None = None  # the scanned directory, as given
    files_scanned: int = 0  # parsed
    files_skipped: int = 0  # unreadable, unparsable or too large
    skipped_paths: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spans": self.spans,
            "autolog": self.autolog,
            "gaps": self.gaps,
            "files_scanned": self.files_scanned,
            "files_skipped": self.files_skipped,
        }


# --- scanning ------------------------------------------------------------------------------


def iter_python_files(repo_dir: str) -> Iterator[str]:
    """Every ``.py`` file under ``repo_dir``, in a stable order, skipping :data:`SKIP_DIRS`."""
    for root, dirs, files in os.walk(repo_dir):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(root, name)


def scan(repo_dir: str | os.PathLike[str]) -> LocateResult:
    """Scan the Python files under ``repo_dir``; see the module docstring for what is found.

    Raises ``NotADirectoryError`` when ``repo_dir`` is not a directory.
    """
    repo = os.fspath(repo_dir)
    if not os.path.isdir(repo):
        raise NotADirectoryError(repo)
    result = LocateResult(root=repo)
    candidates: list[dict[str, Any]] = []
    imported: set[str] = set()  # top-level packages imported anywhere in the repo
    for path in iter_python_files(repo):
        rel = os.path.relpath(path, repo).replace(os.sep, "/")
        try:
            if os.path.getsize(path) > MAX_FILE_BYTES:
                raise ValueError("too large")
            with open(path, "rb") as f:
                source = f.read()
            tree = ast.parse(source, filename=rel)
        except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
            result.files_skipped += 1
            result.skipped_paths.append(rel)
            continue
        result.files_scanned += 1
        lowered = source.lower()
        if not any(word in lowered for word in _RELEVANT):
            continue  # mentions no tracing API, LLM client or model endpoint
        scanner = _FileScanner(rel, tree)
        try:
            scanner.run()
        except RecursionError:  # absurdly deep code: keep what was found
            pass
        for name, entry in scanner.spans:
            result.spans.setdefault(name, []).append(entry)
        result.autolog.extend(scanner.autolog)
        candidates.extend(scanner.gap_candidates)
        imported |= scanner.imported_roots

    for entries in result.spans.values():
        entries.sort(key=lambda e: (e["file"], e["line"]))
    result.spans = dict(sorted(result.spans.items()))
    result.autolog.sort(key=lambda e: (e["file"], e["line"]))
    result.gaps = _uncovered(_settle_sdk(candidates, imported), result.autolog)
    return result


def _settle_sdk(candidates: list[dict[str, Any]], imported: set[str]) -> list[dict[str, Any]]:
    """Give unresolved receivers the first of their SDKs the repo imports; drop the rest."""
    kept = []
    for cand in candidates:
        options = cand.pop("_options")
        if options:
            sdk = next((o for o in options if _SDK_IMPORT_ROOT[o] in imported), None)
            if sdk is None:
                continue
            cand["client"], cand["_flavors"] = sdk, set(_CLIENT_FLAVORS[sdk])
        kept.append(cand)
    return kept


def _is_test_path(rel: str) -> bool:
    """``tests/...``, ``test_x.py``, ``x_test.py``, ``conftest.py``."""
    *dirs, name = rel.split("/")
    return (
        any(d in ("test", "tests", "testing") for d in dirs)
        or name.startswith("test_")
        or name.endswith("_test.py")
        or name == "conftest.py"
    )


def _uncovered(candidates: list[dict[str, Any]], autolog: list[dict[str, Any]]) -> list[dict]:
    """The candidate gaps that no enabled autolog flavor covers, with their reason."""
    enabled = {a["flavor"] for a in autolog if a["flavor"] != "all"}
    everything = [set(a.get("exclude", ())) for a in autolog if a["flavor"] == "all"]
    gaps = []
    for cand in candidates:
        flavors = cand.pop("_flavors")
        if flavors & enabled:
            continue
        if flavors and any(flavors - excluded for excluded in everything):
            continue
        client, call, function = cand["client"], cand["call"], cand["function"]
        where = "module-level code" if function == "<module>" else f"{function}()"
        if flavors:
            autologs = " or ".join(f"mlflow.{f}.autolog()" for f in sorted(flavors))
            tail = f"and no {autologs} is enabled in the repo"
        else:
            tail = "and no autolog traces raw HTTP calls"
        cand["reason"] = (
            f"{client} call {call} in {where} runs outside any span: not under "
            f"@mlflow.trace or `with mlflow.start_span(...)`, {tail}"
        )
        gaps.append(cand)
    gaps.sort(key=lambda g: (g["file"], g["line"]))
    return gaps


# --- one file ------------------------------------------------------------------------------


_scope_ids = itertools.count(1)


@dataclass
class _Scope:
    node: ast.AST | None  # None for the module
    qualname: str
    kind: str  # "module" | "function" | "class"
    bindings: dict[str, list[ast.AST]] = field(default_factory=dict)
    traced: bool = False
    manual_span_line: int | None = None  # first line starting a span without `with`
    uid: int = field(default_factory=lambda: next(_scope_ids))


class _Annotation:
    """A parameter or attribute annotation, classified by the type it names."""

    __slots__ = ("node",)

    def __init__(self, node: ast.AST):
        self.node = node


class _FileScanner:
    def __init__(self, rel: str, tree: ast.Module):
        self.rel = rel
        self.tree = tree
        self.aliases: dict[str, str] = {}  # local name -> qualified name
        self.imported_roots: set[str] = set()
        self.is_test = _is_test_path(rel)  # gaps in test code (mocked clients) are not reported
        self.local_classes: set[str] = set()
        self.class_attrs: dict[int, dict[str, list[ast.AST]]] = {}  # id(ClassDef) -> self.X
        self.wrapped_functions: set[str] = set()  # names passed to mlflow.trace(fn)
        self.function_lines: dict[str, int] = {}  # function name -> its first def line
        self.spans: list[tuple[str, dict[str, Any]]] = []
        self.autolog: list[dict[str, Any]] = []
        self.gap_candidates: list[dict[str, Any]] = []
        self._with_span_calls: set[int] = set()
        self._decorator_calls: set[int] = set()
        self._seen_calls: set[int] = set()
        # traversal state
        self._scopes: list[_Scope] = []
        self._classes: list[ast.ClassDef] = []
        self._span_blocks = 0
        self._classified: dict[tuple[int, int, int], tuple[str, str | None] | None] = {}

    # -- setup ----------------------------------------------------------------------------

    def run(self) -> None:
        calls = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    root = a.name.split(".")[0]
                    self.imported_roots.add(root)
                    self.aliases[a.asname or root] = a.name if a.asname else root
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                self.imported_roots.add(node.module.split(".")[0])
                for a in node.names:
                    if a.name != "*":
                        self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.function_lines.setdefault(node.name, node.lineno)
            elif isinstance(node, ast.ClassDef):
                self.local_classes.add(node.name)
                self.class_attrs[id(node)] = self._collect_class_attrs(node)
            elif isinstance(node, ast.Call):
                calls.append(node)
        for call in calls:  # after all imports are known
            self._note_trace_wrapper(call)
        module = _Scope(None, "<module>", "module", self._collect_bindings(self.tree.body))
        self._scopes.append(module)
        for stmt in self.tree.body:
            self._visit(stmt)

    def _collect_bindings(self, body: list[ast.stmt], args: ast.arguments | None = None):
        """Names assigned in one scope (nested functions and classes excluded)."""
        bindings: dict[str, list[ast.AST]] = {}

        def bind(target: ast.AST, value: ast.AST) -> None:
            if isinstance(target, ast.Name):
                bindings.setdefault(target.id, []).append(value)

        if args is not None:
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if a.annotation is not None:
                    bind(ast.Name(id=a.arg), _Annotation(a.annotation))
        for node in _walk_scope(body):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    bind(target, node.value)
            elif isinstance(node, ast.AnnAssign):
                bind(node.target, node.value if node.value is not None else _Annotation(node.annotation))
            elif isinstance(node, ast.NamedExpr):
                bind(node.target, node.value)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        bind(item.optional_vars, item.context_expr)
        return bindings

    def _collect_class_attrs(self, cls: ast.ClassDef) -> dict[str, list[ast.AST]]:
        """``self.X = ...`` in any method, and ``X: T`` / ``X = ...`` in the class body."""
        attrs: dict[str, list[ast.AST]] = {}
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                value = stmt.value if stmt.value is not None else _Annotation(stmt.annotation)
                attrs.setdefault(stmt.target.id, []).append(value)
            elif isinstance(stmt, ast.Assign):
                for t in stmt.targets:
                    if isinstance(t, ast.Name):
                        attrs.setdefault(t.id, []).append(stmt.value)
        for method in cls.body:
            if not isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            # def __init__(self, client: Anthropic): self.client = client
            params = {
                a.arg: _Annotation(a.annotation)
                for a in [*method.args.posonlyargs, *method.args.args, *method.args.kwonlyargs]
                if a.annotation is not None
            }
            for node in _walk_scope(method.body):
                targets: list[ast.AST] = []
                value: ast.AST | None = None
                if isinstance(node, ast.Assign):
                    targets, value = node.targets, node.value
                elif isinstance(node, ast.AnnAssign):
                    targets = [node.target]
                    value = node.value if node.value is not None else _Annotation(node.annotation)
                if isinstance(value, ast.Name) and value.id in params:
                    value = params[value.id]
                for t in targets:
                    if (
                        isinstance(t, ast.Attribute)
                        and isinstance(t.value, ast.Name)
                        and t.value.id in ("self", "cls")
                        and value is not None
                    ):
                        attrs.setdefault(t.attr, []).append(value)
        return attrs

    def _self_attr(self, node: ast.AST) -> list[ast.AST]:
        """The values assigned to ``self.X`` in the enclosing class, for ``node`` = ``self.X``."""
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
            and self._classes
        ):
            return self.class_attrs.get(id(self._classes[-1]), {}).get(node.attr, [])
        return []

    def _note_trace_wrapper(self, call: ast.Call) -> None:
        """``mlflow.trace(fn)`` or ``mlflow.trace(name=...)(fn)`` traces ``fn``."""
        target = _wrapped_function(call, self._qualname)
        if target is not None:
            self.wrapped_functions.add(target)

    # -- names ----------------------------------------------------------------------------

    def _qualname(self, node: ast.AST) -> str | None:
        """``oa.chat`` -> ``openai.chat`` when ``import openai as oa``; None if not imported."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self._qualname(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def _text(self, node: ast.AST) -> str:
        """Source-like text of a callee for messages: ``self.client.messages.create``."""
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return f"{self._text(node.value)}.{node.attr}"
        if isinstance(node, ast.Call):
            return f"{self._text(node.func)}(...)"
        return "<expr>"

    def _string(self, node: ast.AST | None, depth: int = 0) -> str | None:
        """A string expression with ``*`` for its unknown parts; None if not string-like."""
        if node is None or depth > 5:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            parts = []
            for v in node.values:
                if isinstance(v, ast.Constant) and isinstance(v.value, str):
                    parts.append(v.value)
                else:
                    parts.append("*")
            return re.sub(r"\*+", "*", "".join(parts))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self._string(node.left, depth + 1), self._string(node.right, depth + 1)
            if left is None and right is None:
                return None
            return re.sub(r"\*+", "*", (left or "*") + (right or "*"))
        if isinstance(node, ast.Name):
            for value in self._lookup(node.id):
                if not isinstance(value, _Annotation):
                    text = self._string(value, depth + 1)
                    if text is not None:
                        return text
            return "*"
        if isinstance(node, ast.Attribute):
            for value in self._self_attr(node):
                if not isinstance(value, _Annotation):
                    text = self._string(value, depth + 1)
                    if text is not None:
                        return text
            return "*"
        return None

    def _lookup(self, name: str) -> list[ast.AST]:
        for scope in reversed(self._scopes):
            if scope.kind != "class" and name in scope.bindings:
                return scope.bindings[name]
        return []

    # -- classification of receivers ------------------------------------------------------

    def _classify(self, node: ast.AST, depth: int = 0) -> tuple[str, str | None] | None:
        """What an expression holds: ``("sdk", "openai")``, ``("chat", hint)``, ``("http",
        None)``, ``("mlflow", None)``, ``("other", ...)``, or None when unknown.

        Memoized per scope, and cut on cycles (``x = f(x)``) and past a small depth."""
        if depth > 8:
            return None
        key = (id(node), self._scopes[-1].uid, id(self._classes[-1]) if self._classes else 0)
        if key in self._classified:
            return self._classified[key]
        self._classified[key] = None  # a cycle back to this node resolves to unknown
        kind = self._classify_uncached(node, depth)
        self._classified[key] = kind
        return kind

    def _classify_uncached(self, node: ast.AST, depth: int) -> tuple[str, str | None] | None:
        if isinstance(node, _Annotation):
            return self._classify_type(node.node)
        if isinstance(node, ast.Await):
            return self._classify(node.value, depth + 1)
        if isinstance(node, ast.Call):
            q = self._qualname(node.func)
            if q:
                kind = self._classify_type_name(q)
                if kind is not None:
                    return kind
                # Another library's class (twilio's Client, FastAPI's TestClient) is known
                # not to be an LLM client; a factory function's result is unknown.
                return ("other", q) if q.rsplit(".", 1)[-1][:1].isupper() else None
            if isinstance(node.func, ast.Attribute):
                inner = self._classify(node.func.value, depth + 1)
                if inner is None:
                    return None
                if inner[0] == "sdk" and node.func.attr in _SDK_WRAPPERS:
                    return inner
                if inner[0] == "chat" and node.func.attr in _CHAT_WRAPPERS:
                    return inner
                return ("other", None)
            if isinstance(node.func, ast.Name) and node.func.id in self.local_classes:
                return ("other", node.func.id)
            return None
        if isinstance(node, ast.Name):
            q = self.aliases.get(node.id)
            if q is not None:
                if q in _SDK_MODULES:
                    return ("sdk", _SDK_MODULES[q])
                if q in _HTTP_MODULES:
                    return ("http", None)
                return None  # e.g. `from app.clients import client`: defined elsewhere
            for value in self._lookup(node.id):
                kind = self._classify(value, depth + 1)
                if kind is not None:
                    return kind
            return None
        if isinstance(node, ast.Attribute):
            for value in self._self_attr(node):
                kind = self._classify(value, depth + 1)
                if kind is not None:
                    return kind
            return None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # prompt | llm
            for side in (node.left, node.right):
                kind = self._classify(side, depth + 1)
                if kind is not None and kind[0] == "chat":
                    return kind
            return None
        if isinstance(node, ast.IfExp):
            return self._classify(node.body, depth + 1) or self._classify(node.orelse, depth + 1)
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                kind = self._classify(value, depth + 1)
                if kind is not None:
                    return kind
        return None

    def _classify_type(self, node: ast.AST) -> tuple[str, str | None] | None:
        """Classify an annotation: ``Anthropic``, ``Optional[OpenAI]``, ``httpx.Client | None``."""
        if isinstance(node, ast.Subscript):  # Optional[X], Annotated[X, ...]
            inner = node.slice
            if isinstance(inner, ast.Tuple) and inner.elts:
                inner = inner.elts[0]
            return self._classify_type(inner)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self._classify_type(node.left) or self._classify_type(node.right)
        q = self._qualname(node)
        return self._classify_type_name(q) if q else None

    def _classify_type_name(self, q: str) -> tuple[str, str | None] | None:
        if q in _SDK_CLASSES:
            return ("sdk", _SDK_CLASSES[q])
        if q in _HTTP_CLASSES:
            return ("http", None)
        if q in _MLFLOW_CLIENTS:
            return ("mlflow", None)
        if q in _INIT_CHAT_MODEL:
            return ("chat", None)
        root, cls = q.split(".", 1)[0], q.rsplit(".", 1)[-1]
        if root.startswith("langchain") and _is_langchain_model_class(cls):
            hint = None
            if "OpenAI" in cls:
                hint = "openai"
            elif "Anthropic" in cls:
                hint = "anthropic"
            elif "Groq" in cls:
                hint = "groq"
            return ("chat", hint)
        return None

    # -- traversal ------------------------------------------------------------------------

    def _function_name(self) -> str:
        for scope in reversed(self._scopes):
            if scope.kind == "function":
                return scope.qualname
        return "<module>"

    def _prefix(self) -> str:
        top = self._scopes[-1]
        return "" if top.kind == "module" else top.qualname + "."

    def _visit(self, node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self._visit_function(node)
        elif isinstance(node, ast.ClassDef):
            for d in node.decorator_list:
                self._visit_decorator(d)
            for child in [*node.bases, *node.keywords]:
                self._visit(child)
            scope = _Scope(node, self._prefix() + node.name, "class")
            self._scopes.append(scope)
            self._classes.append(node)
            for stmt in node.body:
                self._visit(stmt)
            self._classes.pop()
            self._scopes.pop()
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            opened = 0
            for item in node.items:
                expr = item.context_expr
                if isinstance(expr, ast.Call) and self._qualname(expr.func) in _START_SPAN:
                    self._with_span_calls.add(id(expr))
                    self._record_span(expr, "start_span", default="span")
                    opened += 1
                self._visit(expr)
                if item.optional_vars is not None:
                    self._visit(item.optional_vars)
            self._span_blocks += opened
            for stmt in node.body:
                self._visit(stmt)
            self._span_blocks -= opened
        elif isinstance(node, ast.Call):
            self._visit_call(node)
            for child in ast.iter_child_nodes(node):
                self._visit(child)
        else:
            for child in ast.iter_child_nodes(node):
                self._visit(child)

    def _visit_decorator(self, node: ast.AST) -> None:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                self._decorator_calls.add(id(sub))
        self._visit(node)

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        qualname = self._prefix() + node.name
        traced = node.name in self.wrapped_functions
        for d in node.decorator_list:
            target = d.func if isinstance(d, ast.Call) else d
            if self._qualname(target) in _TRACE:
                traced = True
                kw = _keywords(d) if isinstance(d, ast.Call) else {}
                name = self._string(kw.get("name")) if "name" in kw else node.name
                self._add_span(name, node.lineno, "decorator", kw.get("span_type"), qualname)
            self._visit_decorator(d)
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self._visit(default)
        scope = _Scope(node, qualname, "function", self._collect_bindings(node.body, node.args))
        scope.traced = traced
        self._scopes.append(scope)
        for stmt in node.body:
            self._visit(stmt)
        self._scopes.pop()

    def _visit_call(self, call: ast.Call) -> None:
        if id(call) in self._seen_calls:
            return
        self._seen_calls.add(id(call))
        q = self._qualname(call.func)
        if q is not None:
            if m := _AUTOLOG.match(q):
                self._record_autolog(call, m.group(1) or "all")
                return
            if q in _START_SPAN:
                if id(call) not in self._with_span_calls:  # span = mlflow.start_span(...)
                    self._record_span(call, "start_span", default="span")
                    self._mark_manual_span(call)
                return
            if q in _START_SPAN_NO_CONTEXT:
                self._record_span(call, "start_span_no_context")
                self._mark_manual_span(call)
                return
        fn = _wrapped_function(call, self._qualname)
        if fn is not None:  # mlflow.trace(fn), mlflow.trace(name="x")(fn)
            kw = _keywords(call.func if isinstance(call.func, ast.Call) else call)
            name = self._string(kw["name"]) if "name" in kw else fn
            # Point at the wrapped function when it is defined in this file.
            line = self.function_lines.get(fn, call.lineno)
            self._add_span(name, line, "trace_wrapper", kw.get("span_type"), fn)
            return
        if isinstance(call.func, ast.Attribute) and call.func.attr in ("start_span", "start_trace"):
            if self._classify(call.func.value) == ("mlflow", None):
                kind = "client_" + call.func.attr
                self._record_span(call, kind)
                self._mark_manual_span(call)
                return
        if id(call) in self._decorator_calls:
            return
        llm = self._llm_call(call, q)
        if llm is not None and not self.is_test:
            self._check_coverage(call, *llm)

    # -- spans and autolog ----------------------------------------------------------------

    def _record_span(self, call: ast.Call, kind: str, default: str | None = None) -> None:
        kw = _keywords(call)
        name_node = kw.get("name") or (call.args[0] if call.args else None)
        name = self._string(name_node) if name_node is not None else default
        self._add_span(name, call.lineno, kind, kw.get("span_type"), self._function_name())

    def _add_span(self, name: str | None, line: int, kind: str, span_type: ast.AST | None,
                  function: str) -> None:
        if not name or not name.strip("*"):
            return  # no literal part: nothing to match a trace's span name against
        self.spans.append((name, {
            "file": self.rel,
            "line": line,
            "kind": kind,
            "span_type": _span_type(span_type),
            "function": function,
        }))

    def _mark_manual_span(self, call: ast.Call) -> None:
        scope = self._scopes[-1]
        if scope.manual_span_line is None:
            scope.manual_span_line = call.lineno

    def _record_autolog(self, call: ast.Call, flavor: str) -> None:
        kw = _keywords(call)
        if _is_const(kw.get("disable"), True) or _is_const(kw.get("log_traces"), False):
            return
        entry: dict[str, Any] = {"flavor": flavor, "file": self.rel, "line": call.lineno}
        exclude = kw.get("exclude_flavors")
        if flavor == "all" and isinstance(exclude, (ast.List, ast.Tuple, ast.Set)):
            entry["exclude"] = sorted(
                e.value for e in exclude.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
            )
        self.autolog.append(entry)

    # -- LLM calls ------------------------------------------------------------------------

    def _llm_call(self, call: ast.Call, q: str | None) -> tuple | None:
        """``(client, autolog flavors that would cover it[, SDK options])`` for an LLM call,
        else None. SDK options come with an unresolved receiver: the call counts only if
        the repo imports one of those SDKs, checked once every file is read."""
        if q in _LITELLM:
            return "litellm", _CLIENT_FLAVORS["litellm"]
        if q in _OPENAI_LEGACY:
            return "openai", _CLIENT_FLAVORS["openai"]
        if q in _HTTP_FUNCTIONS:
            return ("http", set()) if self._is_model_url(_url_arg(call, 0), strict=False) else None
        if q in _HTTP_REQUEST_FUNCTIONS:
            return ("http", set()) if self._is_http_post(call) else None
        if not isinstance(call.func, ast.Attribute):
            return None
        attr = call.func.attr
        chain = _attr_chain(call.func)  # ["client", "chat", "completions", "create"] (base first)
        for path, sdks, specific in _SDK_PATHS:
            if len(chain) > len(path) and tuple(chain[-len(path):]) == path:
                receiver = _strip_attrs(call.func, len(path))
                kind = self._classify(receiver)
                if kind is not None:
                    if kind[0] == "sdk" and kind[1] in sdks:
                        return kind[1], _CLIENT_FLAVORS[kind[1]]
                    return None  # a known object of another kind: not this SDK
                if specific and _looks_like_llm_args(call):
                    return sdks[0], _CLIENT_FLAVORS[sdks[0]], sdks  # decided repo-wide
                return None
        if attr not in _LANGCHAIN_RUN and attr not in ("post", "request"):
            return None
        kind = self._classify(call.func.value)
        if attr in _LANGCHAIN_RUN and kind is not None and kind[0] == "chat":
            flavors = {"langchain"} | ({kind[1]} if kind[1] else set())
            return "langchain", flavors
        if attr in ("post", "request", "stream"):
            if kind is not None and kind[0] != "http":
                return None  # a test client, a web app's route decorator, ...
            if attr == "post":
                url = _url_arg(call, 0)
            elif self._is_http_post(call):
                url = _url_arg(call, 1)
            else:
                return None
            if self._is_model_url(url, strict=kind is None):
                return "http", set()
        return None

    def _is_http_post(self, call: ast.Call) -> bool:
        method = _keywords(call).get("method") or (call.args[0] if call.args else None)
        return _is_const_str(method) and method.value.upper() == "POST"

    def _is_model_url(self, node: ast.AST | None, strict: bool) -> bool:
        """Whether a URL expression points at a model endpoint. ``strict`` (receiver of
        unknown type) also asks for an absolute URL or one built on a base URL, so that a
        test client's ``client.post("/api/chat")`` is not taken for a model call."""
        text = self._string(node)
        if not text:
            return False
        low = text.lower()
        if not any(endpoint in low for endpoint in _MODEL_ENDPOINTS):
            return False
        return not strict or "://" in low or low.startswith("*")

    def _check_coverage(self, call: ast.Call, client: str, flavors: set[str],
                        options: tuple[str, ...] = ()) -> None:
        functions = [s for s in self._scopes if s.kind == "function"]
        if self._span_blocks > 0 or any(s.traced for s in functions):
            return
        if functions and functions[-1].manual_span_line is not None:
            if functions[-1].manual_span_line <= call.lineno:
                return
        self.gap_candidates.append({
            "file": self.rel,
            "line": call.lineno,
            "function": self._function_name(),
            "client": client,
            "call": self._text(call.func),
            "_flavors": set(flavors),
            "_options": options,
        })


# --- small AST helpers -----------------------------------------------------------------------


def _walk_scope(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Nodes of one scope, not descending into nested functions, classes or lambdas."""
    stack: list[ast.AST] = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                stack.append(child)


def _wrapped_function(call: ast.Call, qualname) -> str | None:
    """The function name ``fn`` in ``mlflow.trace(fn)`` / ``mlflow.trace(name=...)(fn)``."""
    if not call.args or not isinstance(call.args[0], (ast.Name, ast.Attribute)):
        return None
    func = call.func
    if qualname(func) in _TRACE or (isinstance(func, ast.Call) and qualname(func.func) in _TRACE):
        target = call.args[0]
        return target.id if isinstance(target, ast.Name) else target.attr
    return None


def _is_langchain_model_class(cls: str) -> bool:
    """``ChatOpenAI``, ``AzureChatOpenAI``, ``OllamaLLM``: yes; ``ChatPromptTemplate``: no."""
    if any(word in cls for word in ("Prompt", "Message", "History", "Template", "Result", "Generation")):
        return False
    return (
        cls.startswith(("Chat", "AzureChat"))
        or cls.endswith(("Chat", "LLM"))
        or cls in _LANGCHAIN_LLM_CLASSES
        or cls in _LANGCHAIN_BASE_TYPES
    )


def _keywords(call: ast.Call) -> dict[str, ast.AST]:
    return {k.arg: k.value for k in call.keywords if k.arg}


def _is_const(node: ast.AST | None, value: Any) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _is_const_str(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _span_type(node: ast.AST | None) -> str | None:
    """``SpanType.TOOL`` or ``"TOOL"`` -> ``"TOOL"``; anything computed -> None."""
    if _is_const_str(node):
        return node.value
    if isinstance(node, ast.Attribute):
        base = node.value
        base_name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", None)
        if base_name == "SpanType":
            return node.attr
    return None


def _attr_chain(node: ast.AST) -> list[str]:
    """``a.b.c.d`` -> ``["b", "c", "d"]`` preceded by the base's name when it has one."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    else:
        parts.append("<expr>")
    return parts[::-1]


def _strip_attrs(node: ast.AST, count: int) -> ast.AST:
    for _ in range(count):
        node = node.value  # type: ignore[attr-defined]
    return node


def _url_arg(call: ast.Call, position: int) -> ast.AST | None:
    kw = _keywords(call)
    if "url" in kw:
        return kw["url"]
    return call.args[position] if len(call.args) > position else None


def _looks_like_llm_args(call: ast.Call) -> bool:
    """An LLM SDK call names its model or messages (or forwards ``**kwargs``)."""
    names = {k.arg for k in call.keywords}
    return None in names or bool(names & {"model", "messages", "input", "contents"})


# --- resolving a trace's span name ---------------------------------------------------------


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.:]+", "", name).casefold()


def _where(entry: dict[str, Any]) -> str:
    return f"{entry['file']}:{entry['line']}"


def resolve(span_name: str, result: LocateResult) -> str | None:
    """``"file:line"`` of the code that creates spans named ``span_name``, or None.

    Tries, in order: the exact name; a case-, ``_``/``-``/space-insensitive match; the name
    without MLflow's de-duplication suffix (``retrieve_2`` -> ``retrieve``); ``*`` patterns
    from f-string names; and the spans of enabled autolog flavors (``Completions`` ->
    the ``mlflow.openai.autolog()`` call).
    """
    if not span_name:
        return None
    names = [span_name]
    base = re.sub(r"_\d+$", "", span_name)
    if base != span_name:
        names.append(base)
    for name in names:
        if name in result.spans:
            return _where(result.spans[name][0])
    normalized = {}
    for key, entries in result.spans.items():
        normalized.setdefault(_norm(key), entries)
    for name in names:
        if _norm(name) in normalized:
            return _where(normalized[_norm(name)][0])
    for name in names:
        for key, entries in result.spans.items():
            if "*" in key and fnmatch.fnmatchcase(name.casefold(), key.casefold()):
                return _where(entries[0])
    for name in names:
        wanted = _norm(name)
        for entry in result.autolog:
            flavors = (
                [f for f in AUTOLOG_SPAN_NAMES if f not in entry.get("exclude", ())]
                if entry["flavor"] == "all"
                else [entry["flavor"]]
            )
            for flavor in flavors:
                if any(_norm(n) == wanted for n in AUTOLOG_SPAN_NAMES.get(flavor, ())):
                    return _where(entry)
    return None
