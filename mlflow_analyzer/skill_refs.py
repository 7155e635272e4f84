"""Self-contained skill folders: the shared references each skill links, copied into it.

Every skill must work when it is installed alone (``npx skills add`` copies only the skill
folders): a link may not leave the skill's folder. The shared documents live ONCE in the
repository's ``references/`` (cli.md, filters.md, trace-structure.md, connect.md,
review.schema.md); a skill links its own copy, ``references/NAME.md`` inside its folder, and
:func:`sync` writes those copies from ``references/``: the ones the skill's documents link
to, and the ones those link to in turn (cli.md links filters.md). ``scripts/sync-skill-references``
runs it (``scripts/generate-cli-docs`` too, after writing cli.md); ``tests/test_skills_lint.py``
fails when a copy is missing, stale or no longer linked.

A file in a skill's ``references/`` whose name is also in ``references/`` is always such a
copy: edit the one in ``references/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SHARED = "references"
SKILLS = "skills"
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")


def links(text: str) -> list[str]:
    """Relative link targets in markdown prose (not in code), without their #fragment."""
    out, fence = [], None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            continue
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        line = re.sub(r"(`+)(.+?)\1", "", line)
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            if path:
                out.append(path)
    return out


def shared_names(root: Path) -> set[str]:
    return {p.name for p in (root / SHARED).glob("*.md")}


def skill_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in (root / SKILLS).glob("*/SKILL.md"))


def wanted_copies(root: Path, skill: Path) -> dict[Path, Path]:
    """{copy in the skill: its source in references/} for what the skill links, transitively."""
    shared = shared_names(root)
    refs = skill / "references"
    owned = [skill / "SKILL.md"] + [p for p in sorted(refs.glob("*.md")) if p.name not in shared]
    wanted: dict[Path, Path] = {}
    queue = [(doc, doc.parent) for doc in owned]  # (file to read, folder its links resolve from)
    while queue:
        doc, base = queue.pop(0)
        for target in links(doc.read_text(encoding="utf-8")):
            dest = Path(os.path.normpath(base / target))
            if dest.parent == refs and dest.name in shared and dest not in wanted:
                wanted[dest] = root / SHARED / dest.name
                queue.append((wanted[dest], refs))
    return wanted


def problems(root: Path) -> list[str]:
    """What is out of sync: copies missing or different from references/, copies nothing links."""
    out = []
    shared = shared_names(root)
    for skill in skill_dirs(root):
        wanted = wanted_copies(root, skill)
        for dest, src in sorted(wanted.items()):
            rel = dest.relative_to(root).as_posix()
            if not dest.is_file():
                out.append(f"{rel} is missing (a copy of {SHARED}/{src.name})")
            elif dest.read_bytes() != src.read_bytes():
                out.append(f"{rel} differs from {SHARED}/{src.name}")
        for path in sorted((skill / "references").glob("*.md")):
            if path.name in shared and path not in wanted:
                out.append(f"{path.relative_to(root).as_posix()} is a copy that nothing in the skill links")
    return out


def sync(root: Path) -> list[str]:
    """Write the copies each skill needs and remove the ones it no longer links; returns the
    paths changed (relative to root)."""
    changed = []
    shared = shared_names(root)
    for skill in skill_dirs(root):
        wanted = wanted_copies(root, skill)
        for dest, src in sorted(wanted.items()):
            data = src.read_bytes()
            if not dest.is_file() or dest.read_bytes() != data:
                dest.parent.mkdir(exist_ok=True)
                dest.write_bytes(data)
                changed.append(dest.relative_to(root).as_posix())
        for path in sorted((skill / "references").glob("*.md")):
            if path.name in shared and path not in wanted:
                path.unlink()
                changed.append(path.relative_to(root).as_posix())
    return changed
