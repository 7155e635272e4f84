"""Check a review file against the schema in :mod:`mlflow_analyzer.review_schema`.

:func:`validate_review` returns a list of :class:`Problem` (empty when the review is
valid). Given ``trace_exists`` it also checks that every trace id cited on a finding's
Trace line exists; :func:`store_trace_checker` builds that callable over a tracking
store, read-only.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

from . import review_schema as S
from .errors import NotFoundError, SourceError

TraceExists = Callable[[list], set]

# Lenient form of a finding heading, to say what exactly is wrong with one.
_LOOSE_HEADING = re.compile(
    r"^###\s+(?P<id>[^:\s]+):\s*(?P<title>.*?)\s*\((?P<priority>[^,()]*),\s*"
    r"Confidence:\s*(?P<confidence>-?\d+(?:\.\d+)?)\s*%\)\s*$"
)
_LABEL = re.compile(r"^\*\*(?P<label>[^*]+)\*\*:\s*(?P<value>.*)$")


@dataclass
class Problem:
    line: int | None  # 1-based line in the file, when known
    where: str  # a frontmatter field, a section, a finding id, or "file"
    message: str

    @property
    def field(self) -> str:
        return self.where

    def format(self, path: str | os.PathLike) -> str:
        return f"{path}:{self.line}: {self.message}" if self.line else f"{path}: {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


def validate_review(path: str | os.PathLike, *, trace_exists: TraceExists | None = None) -> list[Problem]:
    """All problems of the review at ``path``, in file order.

    ``trace_exists(ids) -> set of the ids that exist``; when given, each cited trace id
    that does not exist is one problem.
    """
    path = Path(path)
    if not path.is_file():
        return [Problem(None, "file", "file not found")]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [Problem(None, "file", f"cannot read: {exc}")]
    v = _Validator(text.splitlines())
    meta = v.frontmatter()
    if meta is not None:
        v.fields(meta)
        v.file_name(path, meta)
    findings = v.body()
    if meta is not None:
        v.counts(meta, findings)
    if trace_exists is not None:
        v.traces(findings, trace_exists)
    return sorted(v.problems, key=lambda p: p.line or 0)


@dataclass
class _Finding:
    line: int
    priority: str | None
    trace_ids: list[tuple[str, int]]  # (id, line)


class _Validator:
    def __init__(self, lines: list[str]):
        self.lines = lines
        self.problems: list[Problem] = []
        self.body_start = 0  # index of the first body line
        self.field_lines: dict[str, int] = {}

    def add(self, line: int | None, where: str, message: str) -> None:
        self.problems.append(Problem(line, where, message))

    # ---- frontmatter ----

    def frontmatter(self) -> dict | None:
        if not self.lines or self.lines[0].strip() != "---":
            self.add(1, "frontmatter", "no YAML frontmatter: the file must start with '---'")
            return None
        end = next((i for i in range(1, len(self.lines)) if self.lines[i].strip() == "---"), None)
        if end is None:
            self.add(1, "frontmatter", "YAML frontmatter is not closed by a '---' line")
            return None
        self.body_start = end + 1
        import yaml

        try:
            meta = yaml.safe_load("\n".join(self.lines[1:end]))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            self.add(mark.line + 2 if mark else 1, "frontmatter",
                     f"frontmatter is not valid YAML: {getattr(exc, 'problem', exc)}")
            return None
        if not isinstance(meta, dict):
            self.add(1, "frontmatter", "frontmatter must be a YAML mapping")
            return None
        for i in range(1, end):
            m = re.match(r"^([A-Za-z_][\w-]*)\s*:", self.lines[i])
            if m:
                self.field_lines.setdefault(m.group(1), i + 1)
        return meta

    def fields(self, meta: dict) -> None:
        for f in S.FIELDS:
            line = self.field_lines.get(f.name, 1)
            if f.name not in meta:
                self.add(1, f.name, f"missing frontmatter field '{f.name}'")
                continue
            value = meta[f.name]
            error = _type_error(f.kind, value)
            if error:
                self.add(line, f.name, f"'{f.name}' {error}, got {value!r}")
            elif f.const is not None and value != f.const:
                self.add(line, f.name, f"'{f.name}' must be '{f.const}', got {value!r}")
        for f in S.OPTIONAL_FIELDS:
            if f.name in meta:
                error = _type_error(f.kind, meta[f.name])
                if error:
                    self.add(self.field_lines.get(f.name, 1), f.name,
                             f"'{f.name}' {error}, got {meta[f.name]!r}")
        status = meta.get("status")
        if isinstance(status, str) and status not in S.STATUSES:
            self.add(self.field_lines.get("status"), "status",
                     f"'status' must be one of {', '.join(S.STATUSES)}, got {status!r}")
        commit = meta.get("commit")
        if isinstance(commit, str):
            if not S.COMMIT_RE.match(commit):
                self.add(self.field_lines.get("commit"), "commit",
                         f"'commit' must be 7-40 lowercase hex digits, got {commit!r}")
            elif isinstance(meta.get("id"), str) and meta["id"] != S.review_id(commit):
                self.add(self.field_lines.get("id"), "id",
                         f"'id' must be '{S.review_id(commit)}', got {meta['id']!r}")

    def file_name(self, path: Path, meta: dict) -> None:
        commit = meta.get("commit")
        if not isinstance(commit, str):
            return
        if path.name != S.review_filename(commit):
            self.add(None, "file", f"file name must be '{S.review_filename(commit)}' for commit "
                     f"{commit!r}, got '{path.name}'")
        branch = meta.get("branch")
        if (isinstance(branch, str) and path.resolve().parent.parent.name == S.REVIEWS_DIR
                and path.resolve().parent.name != S.branch_dir(branch)):
            self.add(None, "file", f"a review of branch {branch!r} belongs in "
                     f"'{S.REVIEWS_DIR}/{S.branch_dir(branch)}/', not in "
                     f"'{S.REVIEWS_DIR}/{path.resolve().parent.name}/'")

    # ---- body ----

    def _outline(self) -> list[tuple[int, str]]:
        """(index, line) of body lines outside fenced code blocks."""
        out, fenced = [], False
        for i in range(self.body_start, len(self.lines)):
            line = self.lines[i]
            if line.lstrip().startswith(("```", "~~~")):
                fenced = not fenced
                continue
            if not fenced:
                out.append((i, line))
        return out

    def body(self) -> list[_Finding]:
        outline = self._outline()
        title = next(((i, ln) for i, ln in outline if ln.startswith("# ")), None)
        if title is None or not title[1].startswith(S.TITLE_PREFIX):
            self.add(title[0] + 1 if title else None, "title",
                     f"the body must open with a title '{S.TITLE_PREFIX}{{scope}}'")
        # Sections: name -> outline lines until the next "## ".
        sections: dict[str, tuple[int, list[tuple[int, str]]]] = {}
        order: list[str] = []
        current: list[tuple[int, str]] | None = None
        for i, ln in outline:
            if ln.startswith("## "):
                name = ln[3:].strip()
                current = []
                if name not in sections:
                    sections[name] = (i, current)
                    order.append(name)
            elif current is not None:
                current.append((i, ln))
        present = [name for name in S.SECTIONS if name in sections]
        for name in S.SECTIONS:
            if name not in sections:
                self.add(None, name, f"missing section '## {name}'")
        in_order = _longest_in_order([order.index(name) for name in present])
        for k, name in enumerate(present):
            if k not in in_order:
                self.add(sections[name][0] + 1, name,
                         f"section '## {name}' is out of order (expected: "
                         f"{', '.join(S.SECTIONS)})")
        for name, columns in S.TABLE_COLUMNS.items():
            if name in sections:
                self.table(name, *sections[name], columns)
        for name, columns in S.OPTIONAL_SECTIONS.items():
            if name in sections:
                self.table(name, *sections[name], columns)
        if "Findings" not in sections:
            return []
        return self.findings(sections["Findings"][1])

    def table(self, name: str, start: int, lines: list[tuple[int, str]], columns: Iterable[str]) -> None:
        rows = [(i, [c.strip() for c in re.split(r"(?<!\\)\|", ln.strip().strip("|"))])
                for i, ln in lines if ln.lstrip().startswith("|")]
        if not rows:
            self.add(start + 1, name, f"section '## {name}' has no table")
            return
        header_line, header = rows[0]
        missing = [c for c in columns if c.lower() not in {h.lower() for h in header}]
        if missing:
            self.add(header_line + 1, name,
                     f"'## {name}' table lacks column(s): {', '.join(missing)}")
        if name == "Checks" and not missing:
            at = [h.lower() for h in header].index("status")
            for i, cells in rows[2:]:
                status = cells[at].strip("` ").lower() if len(cells) > at else ""
                if status not in S.CHECK_STATUSES:
                    self.add(i + 1, name, f"check status {status!r} is not one of "
                             f"{', '.join(S.CHECK_STATUSES)}")
        if name == "Trace Overview":
            labels = {cells[0].lower() for _, cells in rows[2:] if cells}
            for row in S.OVERVIEW_ROWS:
                if row.lower() not in labels:
                    self.add(header_line + 1, name, f"'## {name}' table lacks the row '{row}'")

    def findings(self, lines: list[tuple[int, str]]) -> list[_Finding]:
        blocks: list[tuple[int, str, list[tuple[int, str]]]] = []
        for i, ln in lines:
            if ln.startswith("### "):
                blocks.append((i, ln.rstrip(), []))
            elif blocks:
                blocks[-1][2].append((i, ln))
        found: list[_Finding] = []
        for n, (i, heading, block) in enumerate(blocks, 1):
            found.append(self.finding(n, i + 1, heading, block))
        if len(blocks) > S.MAX_FINDINGS:
            self.add(blocks[S.MAX_FINDINGS][0] + 1, "Findings",
                     f"{len(blocks)} findings; at most {S.MAX_FINDINGS} are allowed")
        return found

    def finding(self, n: int, line: int, heading: str, block: list[tuple[int, str]]) -> _Finding:
        expected_id = S.FINDING_ID_FORMAT.format(n)
        where = expected_id
        priority = None
        strict = S.FINDING_HEADING_RE.match(heading)
        m = strict or _LOOSE_HEADING.match(heading)
        before = len(self.problems)
        if m is None:
            self.add(line, where, f"bad finding heading {heading!r}: expected "
                     "'### F-001: Title (P1, Confidence: 92%)'")
        else:
            fid, priority = m["id"], m["priority"].strip()
            if fid != expected_id:
                self.add(line, where, f"finding id {fid!r} out of sequence: expected {expected_id}")
            if priority not in S.PRIORITIES:
                self.add(line, where, f"priority {priority!r} is not one of "
                         f"{', '.join(S.PRIORITIES)}")
                priority = None
            confidence = float(m["confidence"])
            if confidence < S.CONFIDENCE_FLOOR:
                self.add(line, where, f"confidence {m['confidence']}% is below the floor of "
                         f"{S.CONFIDENCE_FLOOR}%")
            elif confidence > S.CONFIDENCE_MAX or not m["confidence"].isdigit():
                self.add(line, where, f"confidence {m['confidence']}% must be an integer "
                         f"{S.CONFIDENCE_FLOOR}..{S.CONFIDENCE_MAX}")
            if not m["title"].strip():
                self.add(line, where, "finding has an empty title")
            if not strict and len(self.problems) == before:
                self.add(line, where, f"finding heading {heading!r} does not match the exact "
                         "form '### F-001: Title (P1, Confidence: 92%)'")
        labels: dict[str, tuple[int, str]] = {}
        for i, ln in block:
            lm = _LABEL.match(ln.strip())
            if lm:
                labels.setdefault(lm["label"].strip(), (i + 1, lm["value"].strip()))
        for label in S.FINDING_FIELDS:
            if label not in labels:
                self.add(line, where, f"finding lacks '**{label}**:'")
        if "Category" in labels:
            cline, value = labels["Category"]
            category = value.strip("` ")
            if category not in S.CATEGORIES:
                self.add(cline, where, f"category {category!r} is not one of "
                         f"{', '.join(S.CATEGORIES)}")
        traces = []
        if "Trace" in labels:
            tline, value = labels["Trace"]
            traces = [(t, tline) for t in S.TRACE_ID_RE.findall(value)]
        return _Finding(line, priority, traces)

    # ---- cross checks ----

    def counts(self, meta: dict, findings: list[_Finding]) -> None:
        actual = {"findings_count": len(findings)}
        if all(f.priority for f in findings):  # else a heading problem is already reported
            for p in S.COUNTED_PRIORITIES:
                actual[f"{p.lower()}_count"] = sum(f.priority == p for f in findings)
        for name, n in actual.items():
            value = meta.get(name)
            if _type_error("count", value) is None and value != n:
                self.add(self.field_lines.get(name), name,
                         f"'{name}' is {value} but the body has {n}")

    def traces(self, findings: list[_Finding], trace_exists: TraceExists) -> None:
        first_line: dict[str, int] = {}
        for f in findings:
            for tid, line in f.trace_ids:
                first_line.setdefault(tid, line)
        if not first_line:
            return
        existing = set(trace_exists(list(first_line)))
        for tid, line in first_line.items():
            if tid not in existing:
                self.add(line, "Trace", f"trace {tid} does not exist in the tracking store")


def _longest_in_order(positions: list[int]) -> set[int]:
    """Indexes of a longest increasing run (not necessarily contiguous) of ``positions``:
    the sections taken as in place, so only the misplaced ones are reported."""
    best: list[list[int]] = []
    for k, pos in enumerate(positions):
        prev = [best[j] for j in range(k) if positions[j] < pos]
        best.append(max(prev, key=len, default=[]) + [k])
    return set(max(best, key=len, default=[]))


def _type_error(kind: str, value: Any) -> str | None:
    """Why ``value`` is not of ``kind`` (see review_schema.Field), or None."""
    nullable = kind.endswith("|null")
    kind = kind.removesuffix("|null")
    if value is None:
        return None if nullable else "must not be null"
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "str":
        ok = isinstance(value, str) and bool(value.strip())
        return None if ok else "must be a non-empty string"
    if kind == "int":
        return None if is_int else "must be an integer" + (" or null" if nullable else "")
    if kind == "count":
        return None if is_int and value >= 0 else "must be an integer >= 0"
    if kind == "list":
        return None if isinstance(value, list) else "must be a list"
    if kind == "counts":
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in value.items())
        return None if ok else "must be a mapping of names to integers >= 0" + (
            " or null" if nullable else "")
    if kind == "timestamp":
        if isinstance(value, datetime):
            return None
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                parsed = None
            if parsed is not None and "T" in value.upper():
                return None
        return "must be an ISO-8601 timestamp with a time (e.g. 2025-01-31T12:00:00Z)"
    raise ValueError(f"unknown field kind {kind!r}")


def store_trace_checker(tracking_uri: str) -> TraceExists:
    """A ``trace_exists`` over a tracking store, read-only.

    The store is opened by :mod:`mlflow_analyzer.sources` (SQL stores through a read-only
    connection: a file that is not an MLflow store is refused, nothing is initialized or
    migrated, a WAL database is not checkpointed); SQL stores and tracking servers answer
    with one read of trace rows for all the ids. A "not found" or "invalid id" answer counts
    as missing; any other store failure raises :class:`SourceError`, since nothing can then
    be said.
    """
    from .sources import SQL_SCHEMES, StoreQuery, open_store, scheme_of

    opened: list = []

    def source():
        if not opened:
            opened.append(open_store(StoreQuery(tracking_uri=tracking_uri)))
        return opened[0]

    if scheme_of(tracking_uri) in SQL_SCHEMES:
        source()  # a bad store (missing, not MLflow's) fails now, in one line

    def trace_exists(ids: list) -> set:
        src = source()
        if hasattr(src, "existing_trace_ids"):
            return src.existing_trace_ids(list(ids))
        found = set()
        for tid in ids:
            try:
                src.get_raw(tid)
            except NotFoundError:
                continue
            found.add(tid)
        return found

    return trace_exists
