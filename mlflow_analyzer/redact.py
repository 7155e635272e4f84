"""Credentials out of everything that leaves the process: the one place for redaction.

Trace text is hostile: span inputs, outputs, attributes, exception messages, tags and
assessments carry API keys, tokens and passwords more often than anyone intends. Every
output (findings, stats, the review, extract, tree, health, session, fetch's files,
messages on stderr, what the headless runner sends to the Messages API) goes through
:func:`redact` (text) or :func:`redact_value` (JSON-like values), which replace each
credential by a typed placeholder, ``[REDACTED:github-token]``.

What is recognised, in this order:

* **our rules** (below), written for redaction rather than alerting, so a little looser
  than a scanner's: Anthropic, OpenAI, AWS access key ids and secret keys, GitHub, Google,
  Slack, Stripe, JWTs, bearer and basic credentials, private key blocks (even cut off),
  passwords in URIs (``scheme://user:pass@host``), and the values of keys named like
  password / passwd / secret / token / api_key / apikey / authorization / cookie /
  credentials, in JSON objects, Python dicts, ``key=value`` and ``key: value`` text;
* **gitleaks' rules** (``data/secret-rules.json``, vendored with its source, commit, date
  and MIT licence by ``scripts/update-secret-rules``): about 200 maintained formats,
  each with its keywords (the prefilter), entropy floor and allowlists. Its rules that
  find a token by its own shape run on candidate tokens; its key-context rules
  (``<service>_secret = …``) are covered by the key-name rule;
* **learned literals**: a value redacted once (say the password of a URI) is redacted
  wherever else it appears later in the same run.

Redaction must come BEFORE anything lossy: message-pattern normalization and clipping
cut keys in half, and half a key still leaks. :func:`clip` redacts, then clips.

Cost: nothing runs per span on the analysis path; redaction applies to the text that is
extracted for output. A text is scanned by a few literal searches and two regexes
(candidate tokens, key names); candidate tokens are classified once per distinct token
(cached). See benchmarks/README.md for the measured figure.

``--no-redact`` (a shared option) turns it off for a run: :func:`set_enabled`.
"""

from __future__ import annotations

import base64
import json
import math
import re
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

PLACEHOLDER = "[REDACTED:{}]"
PLACEHOLDER_RE = re.compile(r"\[REDACTED:([a-z0-9-]{1,60})\]")
RULES_FILE = Path(__file__).resolve().parent / "data" / "secret-rules.json"

_state = {"enabled": True}
_tally: Counter = Counter()  # placeholders in what this process has written out
_learned: dict[str, str] = {}  # secret literal -> type, for redacting repeats
MAX_LEARNED = 256
MIN_LEARNED = 8


def set_enabled(enabled: bool) -> None:
    """Turn redaction on (the default) or off (``--no-redact``) for this process."""
    _state["enabled"] = bool(enabled)


def enabled() -> bool:
    return _state["enabled"]


# ---- key names ---------------------------------------------------------------------------

_KEY_WORD_TYPES = {
    "password": "password", "passwd": "password", "passphrase": "password",
    "passwords": "password", "pwd": None,
    "secret": "secret", "secrets": "secret",
    "token": "token", "apikey": "api-key", "authorization": "authorization",
    "cookie": "cookie", "cookies": "cookie", "credential": "credential",
    "credentials": "credential",
}
_KEY_PAIR_TYPES = {
    ("api", "key"): "api-key", ("access", "key"): "access-key", ("secret", "key"): "secret-key",
    ("private", "key"): "private-key", ("auth", "key"): "api-key", ("signing", "key"): "secret-key",
    ("encryption", "key"): "secret-key", ("master", "key"): "secret-key",
    ("account", "key"): "access-key", ("client", "key"): "api-key", ("session", "key"): "secret-key",
    ("set", "cookie"): "cookie", ("auth", "token"): "token",
}
_KEY_SUFFIXES = (("password", "password"), ("passwd", "password"), ("secret", "secret"),
                 ("token", "token"), ("apikey", "api-key"))
_WORDS_RE = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


@lru_cache(maxsize=8192)
def key_type(key: str) -> str | None:
    """The placeholder type for the value of a key with this name, or None when the key
    does not name a credential. ``api_key``, ``x-api-key``, ``GITHUB_TOKEN``,
    ``accessToken``, ``db_password``, ``Authorization`` do; ``tokens``, ``max_tokens``,
    ``token_count``, ``mlflow.chat.tokenUsage``, ``key`` do not."""
    if not isinstance(key, str) or len(key) > 100:
        return None
    words = [w.lower() for w in _WORDS_RE.findall(key)]
    if not words:
        return None
    last = words[-1]
    kind = None
    if last in _KEY_WORD_TYPES:
        kind = _KEY_WORD_TYPES[last]
    elif len(words) >= 2 and (words[-2], last) in _KEY_PAIR_TYPES:
        kind = _KEY_PAIR_TYPES[(words[-2], last)]
    else:
        for suffix, t in _KEY_SUFFIXES:
            if last.endswith(suffix) and len(last) > len(suffix):
                kind = t
                break
    if kind and "aws" in words and ("secret" in words or kind == "access-key"):
        kind = "aws-secret-key"
    return kind


_NOT_SECRET_VALUES = {"", "null", "none", "true", "false", "undefined", "nil", "n/a", "redacted",
                      "[redacted]", "***", "****", "*****", "xxx", "xxxx", "<redacted>", "changeme"}
_TEMPLATE_RE = re.compile(r"^(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\{\{.*\}\}|<[^<>]{1,40}>|%[sdr]|\*+|x+|\.\.\.|…)$")


def _is_secret_value(value: str) -> bool:
    v = value.strip()
    if v.lower() in _NOT_SECRET_VALUES or _TEMPLATE_RE.match(v):
        return False
    return not PLACEHOLDER_RE.fullmatch(v)


# ---- our rules ---------------------------------------------------------------------------

_B = r"(?<![A-Za-z0-9])"  # a token starts here
_E = r"(?![A-Za-z0-9])"

#: (type, regex, group) for tokens recognisable by their own shape: applied to candidate
#: tokens (runs of token characters), first match wins.
_TOKEN_RULES = [
    ("anthropic-key", re.compile(r"sk-ant-[A-Za-z0-9_-]{8,}"), 0),
    ("openai-key", re.compile(_B + r"sk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{16,}"), 0),
    ("openai-key", re.compile(_B + r"sk-[A-Za-z0-9]{20,}" + _E), 0),
    ("aws-access-key-id", re.compile(_B + r"(?:AKIA|ASIA|ABIA|ACCA|AROA|AIDA|A3T[A-Z0-9])[A-Z0-9]{12,}" + _E), 0),
    ("github-token", re.compile(_B + r"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{16,}"), 0),
    ("github-token", re.compile(_B + r"github_pat_[A-Za-z0-9_]{16,}"), 0),
    ("google-api-key", re.compile(_B + r"AIza[0-9A-Za-z_-]{30,}"), 0),
    ("slack-token", re.compile(_B + r"xox[abposre]-[A-Za-z0-9-]{8,}"), 0),
    ("stripe-key", re.compile(_B + r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{8,}"), 0),
    ("jwt", re.compile(_B + r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), 0),
    # A bare 40-character AWS-style secret key: mixed case, a digit, a / or +.
    ("aws-secret-key", re.compile(r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=]))"
                                  r"(?=[^/+]*[/+])(?=.*[a-z])(?=.*[A-Z])(?=.*[0-9])[A-Za-z0-9/+]{40}"), 0),
]
#: Literal triggers for the token rules: a candidate is classified only if it holds one.
_TOKEN_TRIGGERS = ("sk-", "AKIA", "ASIA", "ABIA", "ACCA", "AROA", "AIDA", "A3T", "gh", "github_pat_",
                   "AIza", "xox", "_live_", "_test_", "eyJ", "/", "+")

_CANDIDATE_RE = re.compile(r"[A-Za-z0-9_\-+/.~]{12,}")

#: (type, regex, group, anchors, back) for credentials found by their context: at each
#: occurrence of an anchor literal, the regex is matched from ``back`` characters before it
#: (None: from the start of the URI scheme before a "://").
_CONTEXT_RULES = [
    # A private key block, up to its END line, or (cut off) to the end of the string.
    ("private-key", re.compile(
        r"-----BEGIN[A-Z0-9 _-]{0,40}PRIVATE KEY(?: BLOCK)?-----"
        r"(?:(?!-----END)[^\"'\x00]){0,20000}?"
        r"(?:-----END[A-Z0-9 _]{0,60}-{0,5}|(?=[\"'\x00])|\Z)"), 0,
     ("-----BEGIN",), 0),
    # scheme://user:password@host: the password (the last @ before the host ends it).
    ("uri-password", re.compile(
        r"[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/?#@'\"<>\\\[\]\x00]*:"
        r"([^\s/?#'\"<>\\\x00]+)@(?=[^\s/?#@'\"<>\\\x00]*(?:[/?#:\s'\"<>\\\x00]|$))"), 1, ("://",), None),
    ("bearer-token", re.compile(r"(?:[Bb]earer|BEARER)[ \t]+([A-Za-z0-9._~+/-]{8,}=*)"), 1,
     ("earer", "EARER"), 1),
    ("basic-auth", re.compile(r"(?:[Bb]asic|BASIC)[ \t]+([A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])"),
     1, ("asic ", "ASIC "), 1),
    ("aws-secret-key", re.compile(
        r"(?i:aws)[A-Za-z0-9_.\-\"' ]{0,40}(?i:secret)[A-Za-z0-9_.\-\"' ]{0,40}[:=>]+[ \t\"']*"
        r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"), 1, ("aws", "AWS", "Aws"), 0),
    ("slack-webhook", re.compile(r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_+-]{8,}"), 0,
     ("hooks.slack.com",), 8),
]
_SCHEME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+.-")


def _bearer_ok(value: str) -> bool:
    return bool(re.search(r"[0-9._~+/=-]", value))


def _basic_ok(value: str) -> bool:
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (ValueError, TypeError):
        return False
    return b":" in decoded


_VALIDATORS = {"bearer-token": _bearer_ok, "basic-auth": _basic_ok}

# Key-name rule: a credential-like key word, then (around the key) a separator and a value.
_KEYWORD_LITERALS = ("pass", "secret", "token", "key", "authorization", "credential", "cookie")
_KEYCHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_KV_TAIL = re.compile(
    r"""(?:\\*["'])?[ \t]*(?:=>|:=|[:=])[ \t]*(?:(?P<q>\\*["'])|(?P<scheme>(?:[Bb]earer|[Bb]asic|[Tt]oken)[ \t]+))?""")
_UNQUOTED_VALUE = re.compile(r"""[^\s,;&'"<>()\[\]{}\\\x00]+""")
_DQ_VALUE = re.compile(r"""(?:[^"\\\n\x00]|\\.){0,4096}""")
MAX_VALUE = 4096


# ---- gitleaks' rules ------------------------------------------------------------------------


class _Rule:
    """One gitleaks rule; its regexes are compiled on first use (most runs meet none of
    the keywords, and compiling all of them costs a command start-up ~150 ms)."""

    __slots__ = ("id", "type", "_d", "_rx", "keywords", "group", "entropy", "_allow")

    def __init__(self, d: dict):
        self.id = d["id"]
        self.type = _family(d["id"])
        self._d = d
        self._rx = None
        self._allow = None
        self.keywords = tuple(d["keywords"])
        self.group = d.get("group")
        self.entropy = d.get("entropy")

    @property
    def rx(self) -> re.Pattern:
        if self._rx is None:
            self._rx = re.compile(self._d["regex"])
        return self._rx

    @property
    def allow(self) -> list:
        if self._allow is None:
            self._allow = [(a.get("target", "secret"), [re.compile(r) for r in a.get("regexes", [])],
                            tuple(a.get("stopwords", ()))) for a in self._d.get("allow", [])]
        return self._allow


def _family(rule_id: str) -> str:
    """gitleaks rule ids, folded into the placeholder types of our own rules."""
    for prefix, kind in (("github-", "github-token"), ("anthropic-", "anthropic-key"),
                         ("openai-", "openai-key"), ("slack-webhook", "slack-webhook"),
                         ("slack-", "slack-token"), ("stripe-", "stripe-key"),
                         ("gcp-api-key", "google-api-key"), ("jwt", "jwt"),
                         ("aws-access-token", "aws-access-key-id"), ("private-key", "private-key")):
        if rule_id.startswith(prefix):
            return kind
    return rule_id


_SEMI_GENERIC = re.compile(r"\[\\w\.-\]\{0,50\}\?")


@lru_cache(maxsize=1)
def _gitleaks() -> tuple[list[_Rule], tuple[str, ...], dict]:
    """(token-shape rules, their keywords, the file's metadata)."""
    try:
        doc = json.loads(RULES_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # pragma: no cover - shipped with the package
        return [], (), {}
    rules = []
    for d in doc.get("rules", []):
        if _SEMI_GENERIC.search(d["regex"][:40]):
            continue  # "<service> ... = value": the key-name rule's job
        rules.append(_Rule(d))  # the converter checked that every regex compiles
    keywords = tuple(sorted({k for r in rules for k in r.keywords}))
    meta = {k: doc.get(k) for k in ("source", "commit", "date", "license")}
    meta["rules"] = len(rules)
    return rules, keywords, meta


def rules_info() -> dict:
    """Where the vendored rules come from (source, commit, date, licence, count)."""
    return dict(_gitleaks()[2])


def _entropy(s: str) -> float:
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _gitleaks_hits(token: str) -> list[tuple[int, int, str]]:
    rules, keywords, _ = _gitleaks()
    low = token.lower()
    present = {k for k in keywords if k in low}
    if not present:
        return []
    hits = []
    for rule in rules:
        if not any(k in present for k in rule.keywords):
            continue
        for m in rule.rx.finditer(token):
            g = rule.group if rule.group is not None else (1 if rule.rx.groups else 0)
            try:
                secret, start, end = m.group(g), m.start(g), m.end(g)
            except IndexError:
                secret, start, end = m.group(0), m.start(), m.end()
            if not secret:
                secret, start, end = m.group(0), m.start(), m.end()
            if rule.entropy and _entropy(secret) < rule.entropy:
                continue
            if _allowed(rule, secret, m.group(0), token):
                continue
            hits.append((start, end, rule.type))
    return hits


def _allowed(rule: _Rule, secret: str, match: str, line: str) -> bool:
    for target, regexes, stopwords in rule.allow:
        text = {"match": match, "line": line}.get(target, secret)
        if any(r.search(text) for r in regexes):
            return True
        low = secret.lower()
        if any(s in low for s in stopwords):
            return True
    return False


# ---- scanning --------------------------------------------------------------------------------

_dirty: dict[str, tuple] = {}  # candidate token -> its secret spans
_clean: set[str] = set()  # candidate tokens known to hold none
MAX_TOKEN_CACHE = 100_000
_PLAIN_TOKEN = re.compile(r"(?:tr-)?[0-9a-f._-]+|[0-9._:+-]+")


def _classify_token(token: str) -> tuple:
    """Secret spans (start, end, type) inside one candidate token."""
    spans: list[tuple[int, int, str]] = []
    if any(t in token for t in _TOKEN_TRIGGERS):
        for kind, rx, g in _TOKEN_RULES:
            for m in rx.finditer(token):
                spans.append((m.start(g), m.end(g), kind))
    if not spans and not _PLAIN_TOKEN.fullmatch(token):
        kw = _keyword_re()
        if kw is not None and kw.search(token.lower()):
            spans.extend(_gitleaks_hits(token))
    return tuple(spans)


@lru_cache(maxsize=1)
def _keyword_re():
    """One regex (a trie of gitleaks' keywords): does a token hold any keyword at all?"""
    keywords = _gitleaks()[1]
    if not keywords:
        return None
    trie: dict = {}
    for w in keywords:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        alts = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if "" in node:
            return ""  # a keyword ends here: its prefix is enough
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return re.compile(build(trie))


def _token_spans(text: str) -> list[tuple[int, int, str]]:
    tokens = _CANDIDATE_RE.findall(text)
    if not tokens:
        return []
    new = set(tokens)
    new.difference_update(_clean)
    found = False
    for tok in new:
        hit = _dirty.get(tok)
        if hit is None:
            hit = _classify_token(tok)
            if len(_clean) + len(_dirty) >= MAX_TOKEN_CACHE:
                _clean.clear()
                _dirty.clear()
            if hit:
                _dirty[tok] = hit
            else:
                _clean.add(tok)
        found = found or bool(hit)
    if not found:
        return []
    spans = []
    for m in _CANDIDATE_RE.finditer(text):
        hit = _dirty.get(m.group())
        if hit:
            base = m.start()
            spans.extend((base + s, base + e, kind) for s, e, kind in hit)
    return spans


def _key_value_spans(text: str, low: str) -> list[tuple[int, int, str]]:
    out = []
    n = len(text)
    seen: set[int] = set()
    for word in _KEYWORD_LITERALS:
        i = low.find(word)
        while i >= 0:
            # The key around the keyword.
            ks = i
            while ks > 0 and text[ks - 1] in _KEYCHARS:
                ks -= 1
            ke = i + len(word)
            while ke < n and text[ke] in _KEYCHARS:
                ke += 1
            i = low.find(word, ke)
            if ks in seen:
                continue
            seen.add(ks)
            kind = key_type(text[ks:ke])
            if kind is None:
                continue
            m = _KV_TAIL.match(text, ke)
            if m is None:
                continue
            vs = m.end()
            q = m.group("q")
            if q:
                quote = q[-1]
                if quote == '"' and len(q) == 1:
                    vm = _DQ_VALUE.match(text, vs)
                    ve = vm.end() if vm else vs
                else:
                    ve = text.find(q, vs)
                    if ve < 0 or ve - vs > MAX_VALUE:
                        nl = text.find("\n", vs)
                        ve = min(n, vs + MAX_VALUE) if nl < 0 else min(nl, vs + MAX_VALUE)
            else:
                vm = _UNQUOTED_VALUE.match(text, vs)
                ve = vm.end() if vm else vs
            value = text[vs:ve]
            if ve > vs and _is_secret_value(value):
                out.append((vs, ve, kind))
    return out


def _spans(text: str) -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []
    for kind, rx, g, anchors, back in _CONTEXT_RULES:
        check = _VALIDATORS.get(kind)
        for anchor in anchors:
            i = text.find(anchor)
            while i >= 0:
                if back is None:  # the URI scheme before "://"
                    start = i
                    while start > 0 and i - start < 31 and text[start - 1] in _SCHEME_CHARS:
                        start -= 1
                    if start > 0 and text[start - 1].isalnum():
                        start = i  # no clean scheme start: not a URI
                else:
                    start = i - back
                m = rx.match(text, start) if start >= 0 else None
                if m and not (back == 1 and start > 0 and text[start - 1].isalnum()):
                    if not check or check(m.group(g)):
                        spans.append((m.start(g), m.end(g), kind))
                    i = text.find(anchor, max(m.end(), i + 1))
                else:
                    i = text.find(anchor, i + 1)
    spans.extend(_token_spans(text))
    low = text.lower()
    if len(low) == len(text) and any(w in low for w in _KEYWORD_LITERALS):
        spans.extend(_key_value_spans(text, low))
    return spans


def _merge(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Replace the spans (earliest first, longest on ties; overlaps dropped)."""
    spans.sort(key=lambda s: (s[0], -s[1]))
    out = []
    pos = 0
    for s, e, kind in spans:
        if s < pos:
            continue
        # Never end inside an escape sequence of JSON text: give back an odd backslash.
        run = (e - s) - len(text[s:e].rstrip("\\"))
        if run % 2:
            e -= 1
        if e <= s:
            continue
        secret = text[s:e]
        if not _is_secret_value(secret) and kind not in ("private-key",):
            continue
        out.append(text[pos:s])
        out.append(PLACEHOLDER.format(kind))
        pos = e
        if len(secret) >= MIN_LEARNED and len(_learned) < MAX_LEARNED and "\n" not in secret:
            _learned.setdefault(secret, kind)
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def _learned_pass(text: str) -> str:
    for secret, kind in _learned.items():
        if secret in text:
            text = text.replace(secret, PLACEHOLDER.format(kind))
    return text


def redact(text: Any) -> Any:
    """``text`` with every credential replaced by ``[REDACTED:type]`` (non-strings are
    returned as they are; nothing changes when redaction is off)."""
    if not _state["enabled"] or not isinstance(text, str) or len(text) < 8:
        return text
    short = len(text) <= 1000
    if short:
        hit = _short_cache.get(text)
        if hit is not None:
            return _learned_pass(hit) if _learned else hit
    out = text
    spans = _spans(text)
    if spans:
        out = _merge(text, spans)
    if short:
        if len(_short_cache) >= MAX_SHORT_CACHE:
            _short_cache.clear()
        _short_cache[text] = out
    if _learned:
        out = _learned_pass(out)
    return out


_short_cache: dict[str, str] = {}  # span names and error messages repeat
MAX_SHORT_CACHE = 20_000


def redact_value(value: Any) -> Any:
    """A copy of a JSON-like value with strings redacted and the scalar values of
    credential-named keys (``password``, ``api_key``, ...) replaced by placeholders.

    The strings of the value are scanned together (joined by NUL, which no rule crosses):
    one scan per document instead of one per string."""
    if not _state["enabled"]:
        return value
    if isinstance(value, str):
        return redact(value)
    strings: dict[str, None] = {}
    _collect(value, strings)
    mapping: dict[str, str] = {}
    batch = [t for t in strings if "\x00" not in t]
    if batch:
        parts = redact("\x00".join(batch)).split("\x00") if len(batch) > 1 else [redact(batch[0])]
        if len(parts) == len(batch):
            mapping = {t: r for t, r in zip(batch, parts) if r != t}
        else:  # pragma: no cover - a rule crossed a NUL: redact one by one
            mapping = {t: r for t in batch if (r := redact(t)) != t}
    for t in strings:
        if "\x00" in t and (r := redact(t)) != t:
            mapping[t] = r
    return _rebuild(value, mapping)


def _collect(value: Any, out: dict) -> None:
    if isinstance(value, str):
        if len(value) >= 8:
            out[value] = None
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and len(k) >= 8:
                out[k] = None
            _collect(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect(v, out)


def _rebuild(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            kind = key_type(k) if isinstance(k, str) else None
            if kind and isinstance(v, str) and _is_secret_value(v) and not PLACEHOLDER_RE.search(v):
                out[k] = PLACEHOLDER.format(kind)
                if len(v) >= MIN_LEARNED and len(_learned) < MAX_LEARNED:
                    _learned.setdefault(v, kind)
            elif kind and isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = PLACEHOLDER.format(kind)
            else:
                out[mapping.get(k, k) if isinstance(k, str) else k] = _rebuild(v, mapping)
        return out
    if isinstance(value, (list, tuple)):
        return [_rebuild(v, mapping) for v in value]
    return value


def clip(text: Any, limit: int, *, marker: bool = True) -> Any:
    """Redact, then shorten to ``limit`` characters (saying how much was cut): a key is
    never cut in half before it is recognised."""
    if text is None:
        return None
    text = redact(str(text))
    if limit <= 0 or len(text) <= limit:
        return text
    cut = text[:limit]
    # Do not cut a placeholder in half.
    open_at = cut.rfind("[REDACTED:")
    if open_at >= 0 and "]" not in cut[open_at:]:
        cut = cut[:open_at]
    return cut + (f"…[+{len(text) - len(cut)} chars]" if marker else "")


# ---- the tally -------------------------------------------------------------------------------


def count(text: str) -> Counter:
    """Placeholders in a text, by type."""
    return Counter(PLACEHOLDER_RE.findall(text)) if "[REDACTED:" in text else Counter()


def note_output(text: str) -> str:
    """Count the placeholders of a text this process writes out (stderr summary)."""
    if _state["enabled"] and "[REDACTED:" in text:
        _tally.update(count(text))
    return text


def tally() -> Counter:
    return Counter(_tally)


def summary_line() -> str | None:
    """``redacted 3 secrets (github-token 2, password 1); --no-redact shows them`` or None."""
    if not _tally or not _state["enabled"]:
        return None
    total = sum(_tally.values())
    parts = ", ".join(f"{k} {v}" for k, v in sorted(_tally.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"redacted {total} secret{'s' if total != 1 else ''} ({parts}); --no-redact shows them"


def reset() -> None:
    """Forget the tally and learned literals (tests, and each in-process command run)."""
    _tally.clear()
    _learned.clear()


# ---- terminals --------------------------------------------------------------------------------

_ANSI_RE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC (title changes, hyperlinks)
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC
    r"|\x1b[@-Z\\-_]?"  # other escapes
)
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_JSON_UNSAFE_RE = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """Text for a terminal: ANSI escape sequences and control characters (but newline and
    tab), bidirectional overrides and zero-width characters shown as visible escapes."""
    if not isinstance(text, str):
        return text
    if "\x1b" in text:
        text = _ANSI_RE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    return _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                           else f"\\u{ord(m.group()):04x}", text)


def json_safe(text: str) -> str:
    """JSON text with the characters json.dumps leaves raw (C1 controls, bidi overrides)
    written as \\u escapes: still the same JSON, harmless on a terminal."""
    return _JSON_UNSAFE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def message(text: Any) -> str:
    """A diagnostic line for stderr: redacted (passwords in URIs too, even with
    --no-redact), control characters neutralized, one line."""
    s = str(text)
    was = _state["enabled"]
    _state["enabled"] = True
    try:
        s = redact(s)
    finally:
        _state["enabled"] = was
    s = " ".join(s.splitlines()) if "\n" in s or "\r" in s else s
    return terminal_safe(s)


def print_summary(stream=None) -> None:
    line = summary_line()
    if line:
        print(f"mlflow-analyzer: {line}", file=stream or sys.stderr)
