"""Install the skill pack (skills and the subagent) into a project's or the user's ``.claude``.

What is installed comes from the pack root: the checkout holding ``skills/`` and ``agents/``
next to this package (an editable install), found by walking up from the package directory.

Every install writes a manifest, ``.claude/.mlflow-analyzer-install.json``, listing each file
it wrote with its SHA-256 (or each symlink with its target) and the directories it created.
That manifest is what makes the command safe:

* a path that exists and is not in the manifest is never overwritten (the whole install is
  refused before anything is written);
* a file we wrote that was edited since is neither overwritten nor removed;
* running the same install again changes nothing;
* ``uninstall`` removes exactly the manifest's files, links and directories (directories only
  when empty), then the manifest itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .errors import AnalyzerError, UsageError

MANIFEST_NAME = ".mlflow-analyzer-install.json"
AGENT_FILES = ("mlflow-analyzer.md",)
SKILL_PREFIX = "analyze-mlflow-"


class InstallError(AnalyzerError):
    """Installing would overwrite or remove something that is not ours."""


# --- the pack --------------------------------------------------------------------------------


def find_pack_root(start: Path | None = None) -> Path:
    """The directory holding ``skills/analyze-mlflow-*/SKILL.md`` and ``agents/mlflow-analyzer.md``,
    searched from the package directory upwards."""
    here = (start or Path(__file__)).resolve()
    for d in [here, *here.parents]:
        if is_pack_root(d):
            return d
    raise InstallError(
        f"cannot find the skill pack (skills/ and agents/) above {here.parent}: this install of "
        "mlflow-analyzer has no pack; install it from a checkout (pip install -e DIR) or pass --pack DIR"
    )


def is_pack_root(d: Path) -> bool:
    return (d / "agents" / AGENT_FILES[0]).is_file() and any(
        (s / "SKILL.md").is_file() for s in (d / "skills").glob(f"{SKILL_PREFIX}*")
    )


def pack_items(pack: Path) -> list[tuple[str, Path]]:
    """(destination relative to .claude, source) for each skill folder, the agent file and
    each shared reference the skills and the agent link to (``../../references/cli.md`` from
    a skill resolves to ``.claude/references/cli.md`` once installed, as in the plugin)."""
    items: list[tuple[str, Path]] = []
    for skill in sorted((pack / "skills").glob(f"{SKILL_PREFIX}*")):
        if (skill / "SKILL.md").is_file():
            items.append((f"skills/{skill.name}", skill))
    for name in AGENT_FILES:
        items.append((f"agents/{name}", pack / "agents" / name))
    for ref in sorted((pack / "references").glob("*.md")):
        items.append((f"references/{ref.name}", ref))
    return items


def pack_files(pack: Path) -> dict[str, Path]:
    """Every file to copy: destination path relative to .claude -> source file."""
    out: dict[str, Path] = {}
    for rel, src in pack_items(pack):
        if src.is_dir():
            for f in sorted(src.rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts and not f.name.endswith(".pyc"):
                    out[f"{rel}/{f.relative_to(src).as_posix()}"] = f
        else:
            out[rel] = src
    return out


# --- the manifest ------------------------------------------------------------------------------


@dataclass
class Manifest:
    mode: str = "copy"  # "copy" | "link"
    pack: str = ""
    version: str = __version__
    files: dict[str, str] = field(default_factory=dict)  # rel path -> sha256
    links: dict[str, str] = field(default_factory=dict)  # rel path -> link target
    dirs: list[str] = field(default_factory=list)  # directories we created ("" is .claude)

    @classmethod
    def load(cls, dest: Path) -> "Manifest | None":
        path = dest / MANIFEST_NAME
        if not path.is_file():
            return None
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                mode=d["mode"],
                pack=d.get("pack", ""),
                version=d.get("version", ""),
                files=dict(d.get("files") or {}),
                links=dict(d.get("links") or {}),
                dirs=list(d.get("dirs") or []),
            )
        except (ValueError, KeyError, TypeError):
            raise InstallError(f"{path} is not a manifest this tool can read; move it away first") from None

    def save(self, dest: Path) -> None:
        data = {
            "tool": "mlflow-analyzer install",
            "version": self.version,
            "mode": self.mode,
            "pack": self.pack,
            "files": dict(sorted(self.files.items())),
            "links": dict(sorted(self.links.items())),
            "dirs": sorted(set(self.dirs)),
        }
        path = dest / MANIFEST_NAME
        text = json.dumps(data, indent=2) + "\n"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- planning and doing ------------------------------------------------------------------------------


def claude_dir(target: str | None, user: bool) -> Path:
    if user:
        return Path.home() / ".claude"
    base = Path(target or ".").expanduser()
    if not base.is_dir():
        raise UsageError(f"--target {base}: not a directory")
    return base.resolve() / ".claude"


def install(dest: Path, pack: Path, *, link: bool = False) -> dict:
    """Install (or update) the pack into ``dest`` (a ``.claude`` folder). Idempotent."""
    mode = "link" if link else "copy"
    old = Manifest.load(dest)
    if old is not None and old.mode != mode:
        raise InstallError(
            f"{dest} holds an install made with {'--link' if old.mode == 'link' else 'copies'}; "
            "run with --uninstall first to switch"
        )
    old = old or Manifest(mode=mode)

    wanted = _wanted(pack, mode)
    conflicts = [rel for rel, spec in wanted.items() if not _may_write(dest, rel, spec, old)]
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise InstallError(
            f"refusing to overwrite {dest / conflicts[0]}{more}: not written by mlflow-analyzer "
            "install, or edited since; move it away and run again"
        )

    new = Manifest(mode=mode, pack=str(pack), dirs=list(old.dirs))
    written: list[str] = []
    for rel, spec in wanted.items():
        path = dest / rel
        new.dirs.extend(_make_parents(dest, path.parent))
        # An identical file or link that an earlier install did not write is left alone and
        # not recorded: uninstall must not take away what it did not put there.
        if mode == "copy":
            src, digest = spec
            if path.is_file() and not path.is_symlink() and sha256(path) == digest:
                if rel in old.files:
                    new.files[rel] = digest
                continue
            path.unlink(missing_ok=True)
            shutil.copyfile(src, path)
            new.files[rel] = digest
        else:
            if _link_intact(path, spec):
                if rel in old.links:
                    new.links[rel] = spec
                continue
            path.unlink(missing_ok=True)
            path.symlink_to(spec, target_is_directory=Path(spec).is_dir())
            new.links[rel] = spec
        written.append(rel)

    # What an earlier install wrote and this pack no longer ships: removed if untouched.
    stale = Manifest(
        files={r: h for r, h in old.files.items() if r not in wanted},
        links={r: t for r, t in old.links.items() if r not in wanted},
        dirs=new.dirs,
    )
    gone = _remove(dest, stale)
    new.files.update({r: stale.files[r] for r in gone["kept"] if r in stale.files})
    new.links.update({r: stale.links[r] for r in gone["kept"] if r in stale.links})
    new.dirs = [d for d in dict.fromkeys(new.dirs) if (dest / d).is_dir()]
    new.save(dest)
    return {
        "action": "install",
        "dest": str(dest),
        "mode": mode,
        "pack": str(pack),
        "written": written,
        "unchanged": len(wanted) - len(written),
        "removed": gone["removed"],
        "manifest": str(dest / MANIFEST_NAME),
    }


def uninstall(dest: Path) -> dict:
    """Remove what the manifest lists (files only when unedited), then the directories the
    install created when they are empty, then the manifest."""
    old = Manifest.load(dest)
    if old is None:
        raise InstallError(f"nothing to uninstall: no {MANIFEST_NAME} in {dest}")
    result = _remove(dest, old)
    if result["kept"]:
        # Keep a manifest of what is left, so that a later uninstall can finish the job.
        kept = set(result["kept"])
        Manifest(
            mode=old.mode,
            pack=old.pack,
            files={r: h for r, h in old.files.items() if r in kept},
            links={r: t for r, t in old.links.items() if r in kept},
            dirs=[d for d in old.dirs if (dest / d).is_dir()],
        ).save(dest)
    else:
        (dest / MANIFEST_NAME).unlink(missing_ok=True)
    _remove_dirs(dest, old.dirs)
    return {"action": "uninstall", "dest": str(dest), "removed": result["removed"], "kept": result["kept"]}


def _wanted(pack: Path, mode: str) -> dict:
    if mode == "copy":
        return {rel: (src, sha256(src)) for rel, src in pack_files(pack).items()}
    return {rel: str(src.resolve()) for rel, src in pack_items(pack)}


def _may_write(dest: Path, rel: str, spec, old: Manifest) -> bool:
    """Yes when nothing is there, when it already is what we would write, or when an earlier
    install wrote it and it was not edited since."""
    path = dest / rel
    for parent in Path(rel).parents:  # a file where a folder must go
        p = dest / parent
        if p.exists() and not p.is_dir():
            return False
    if not path.exists() and not path.is_symlink():
        return True
    if isinstance(spec, tuple):  # a copy
        if path.is_symlink() or not path.is_file():
            return False
        digest = sha256(path)
        return digest == spec[1] or old.files.get(rel) == digest
    return _link_intact(path, spec) or (rel in old.links and _link_intact(path, old.links[rel]))


def _link_intact(path: Path, target: str) -> bool:
    return path.is_symlink() and os.readlink(path) == target


def _remove(dest: Path, m: Manifest) -> dict:
    removed: list[str] = []
    kept: list[str] = []
    for rel, digest in sorted(m.files.items()):
        path = dest / rel
        if path.is_symlink() or not path.exists():
            continue
        if path.is_file() and sha256(path) == digest:
            path.unlink()
            removed.append(rel)
            _prune_empty(dest, path.parent, m.dirs)
        else:
            kept.append(rel)
    for rel, target in sorted(m.links.items()):
        path = dest / rel
        if _link_intact(path, target):
            path.unlink()
            removed.append(rel)
            _prune_empty(dest, path.parent, m.dirs)
        elif path.exists() or path.is_symlink():
            kept.append(rel)
    return {"removed": removed, "kept": kept}


def _prune_empty(dest: Path, d: Path, created: list[str]) -> None:
    """Remove the folders we created that became empty, from ``d`` upwards."""
    created_set = set(created)
    while d != dest and d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
        if d.relative_to(dest).as_posix() not in created_set:
            break
        d.rmdir()
        d = d.parent


def _remove_dirs(dest: Path, dirs: list[str]) -> None:
    for rel in sorted(set(dirs), key=lambda r: (-len(Path(r).parts) if r else 1, r)):
        d = dest / rel if rel else dest
        if d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
            d.rmdir()


def _make_parents(dest: Path, d: Path) -> list[str]:
    """mkdir -p below ``dest``, returning the folders created (relative to ``dest``, "" for
    ``dest`` itself); folders above ``dest`` are created when missing but not recorded."""
    created = []
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.mkdir()
        created.append("")
    missing = []
    p = d
    while p != dest and not p.is_dir():
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        p.mkdir()
        created.append(p.relative_to(dest).as_posix())
    return created
