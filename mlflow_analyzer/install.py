"""Install the skill pack (skills and the subagent) into a project's or the user's ``.claude``.

What is installed comes from the pack root: ``mlflow_analyzer/pack/`` inside an installed
package (the wheel carries a copy of the repository's ``skills/``, ``agents/`` and
``references/``, made at build time by ``setup.py``), else the checkout holding them above
this package (an editable install or a source tree), found by walking up.

Every install writes a manifest, ``.claude/.mlflow-analyzer-install.json``, listing each file
it wrote with its SHA-256 (or each symlink with its target) and the directories it created.
That manifest is what makes the command safe:

* a path that exists and is not in the manifest is never overwritten (the whole install is
  refused before anything is written);
* a file we wrote that was edited since is neither overwritten nor removed;
* running the same install again changes nothing;
* ``uninstall`` removes exactly the manifest's files, links and directories (directories only
  when empty), then the manifest itself.

Beside the pack, an install writes two launchers, ``bin/mlflow-analyzer`` and ``bin/mlflow``,
that run the Python environment ``install`` ran from, and edits ``settings.json`` in the same
``.claude`` folder (a project's ``.claude/settings.json``, or ``~/.claude/settings.json``):

* always, a SessionStart hook that appends that ``bin/`` to the Bash tool's PATH (through
  ``$CLAUDE_ENV_FILE``), so the commands the skills show resolve in Claude Code even when the
  toolkit's own environment is not on PATH; a ``mlflow-analyzer`` already on PATH comes first;
* with the user's consent only (``allow_commands=True``: ``--allow-commands`` or yes at the
  prompt), the permission rules that let those commands run without asking
  (:func:`allow_rules`).

The manifest records exactly what was added to ``settings.json`` (and which containers were
created for it); ``uninstall`` removes that and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .errors import AnalyzerError, UsageError

MANIFEST_NAME = ".mlflow-analyzer-install.json"
AGENT_FILES = ("mlflow-analyzer.md",)
SKILL_PREFIX = "analyze-mlflow-"
PACKAGED_PACK = "pack"  # mlflow_analyzer/pack/ in a built package (see setup.py)


class InstallError(AnalyzerError):
    """Installing would overwrite or remove something that is not ours."""


# --- the pack --------------------------------------------------------------------------------


def find_pack_root(start: Path | None = None) -> Path:
    """The directory holding ``skills/analyze-mlflow-*/SKILL.md`` and ``agents/mlflow-analyzer.md``:
    the package's own ``pack/`` (a wheel), else the first one above the package (a checkout)."""
    here = (start or Path(__file__)).resolve()
    packaged = here.parent / PACKAGED_PACK
    if is_pack_root(packaged):
        return packaged
    for d in here.parents:
        if is_pack_root(d):
            return d
    raise InstallError(
        f"cannot find the skill pack (skills/ and agents/) in {packaged} or above it: this "
        "install of mlflow-analyzer was built without its pack; reinstall it (pip install DIR, a "
        "wheel or git+URL) or pass --pack DIR"
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
    # What we added to settings.json: {"hook": command or None, "allow": [rules],
    # "created": [containers we created, e.g. "hooks.SessionStart"], "file": bool}
    settings: dict = field(default_factory=dict)

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
                settings=dict(d.get("settings") or {}),
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
            "settings": self.settings,
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


def install(dest: Path, pack: Path, *, link: bool = False, user: bool = False,
            allow_commands: bool | None = None) -> dict:
    """Install (or update) the pack into ``dest`` (a ``.claude`` folder). Idempotent.

    ``allow_commands``: True adds the permission rules to ``settings.json``, False removes the
    ones an earlier install added, None keeps what is there."""
    mode = "link" if link else "copy"
    old = Manifest.load(dest)
    if old is not None and old.mode != mode:
        raise InstallError(
            f"{dest} holds an install made with {'--link' if old.mode == 'link' else 'copies'}; "
            "run with --uninstall first to switch"
        )
    old = old or Manifest(mode=mode)

    wanted = _wanted(pack, mode)
    wanted.update(launchers(dest))
    conflicts = [rel for rel, spec in wanted.items() if not _may_write(dest, rel, spec, old)]
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise InstallError(
            f"refusing to overwrite {dest / conflicts[0]}{more}: not written by mlflow-analyzer "
            "install, or edited since; move it away and run again"
        )
    # Read settings.json before writing anything: a file we cannot read stops the install.
    settings = Settings.load(dest)

    new = Manifest(mode=mode, pack=str(pack), dirs=list(old.dirs))
    written: list[str] = []
    for rel, spec in wanted.items():
        path = dest / rel
        new.dirs.extend(_make_parents(dest, path.parent))
        # An identical file or link that an earlier install did not write is left alone and
        # not recorded: uninstall must not take away what it did not put there.
        if isinstance(spec, tuple):  # a file: copied from the pack, or generated (bytes)
            src, digest = spec
            if path.is_file() and not path.is_symlink() and sha256(path) == digest:
                if rel in old.files:
                    new.files[rel] = digest
                continue
            path.unlink(missing_ok=True)
            if isinstance(src, bytes):
                path.write_bytes(src)
                path.chmod(0o755)
            else:
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

    new.settings = settings.apply(old.settings, hook=path_hook(dest, user),
                                  allow=allow_rules(dest, user), allow_commands=allow_commands)
    settings_changed = settings.save()
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
        "launcher": str(dest / LAUNCHER_DIR / "mlflow-analyzer"),
        "settings": {
            "path": str(settings.path),
            "changed": settings_changed,
            "path_hook": bool(new.settings.get("hook")),
            "allow": list(new.settings.get("allow") or []),
        },
        "manifest": str(dest / MANIFEST_NAME),
    }


def uninstall(dest: Path) -> dict:
    """Remove what the manifest lists (files only when unedited), then the directories the
    install created when they are empty, then what it added to settings.json, then the
    manifest."""
    old = Manifest.load(dest)
    if old is None:
        raise InstallError(f"nothing to uninstall: no {MANIFEST_NAME} in {dest}")
    settings = Settings.load(dest)
    settings.apply(old.settings, hook=None, allow=[], allow_commands=False)
    settings_changed = settings.save()
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
    return {"action": "uninstall", "dest": str(dest), "removed": result["removed"], "kept": result["kept"],
            "settings": {"path": str(settings.path), "changed": settings_changed}}


# --- launchers and settings.json ------------------------------------------------------------

LAUNCHER_DIR = "bin"
LAUNCHERS = {"mlflow-analyzer": "mlflow_analyzer", "mlflow": "mlflow"}  # command -> module
SETTINGS_NAME = "settings.json"

_LAUNCHER = """\
#!/bin/sh
# {command}: written by `mlflow-analyzer install` (listed in ../{manifest}; removed by
# `mlflow-analyzer install --uninstall`). Runs `python -m {module}` with the Python
# environment the pack was installed from. Claude Code finds this folder through the
# SessionStart hook install added to settings.json, which appends it to the Bash tool's PATH:
# a {command} earlier on PATH is used instead.
python={python}
if [ -x "$python" ]; then
  exec "$python" -m {module} "$@"
fi
here="$(cd "$(dirname "$0")" && pwd -P)"
old_ifs="$IFS"; IFS=:
for dir in $PATH; do
  if [ -n "$dir" ] && [ -x "$dir/{command}" ] && [ "$(cd "$dir" 2>/dev/null && pwd -P)" != "$here" ]; then
    IFS="$old_ifs"
    exec "$dir/{command}" "$@"
  fi
done
echo "{command}: error: the Python environment this pack was installed from ($python) is gone: install mlflow-analyzer again (pip install ...), then run 'mlflow-analyzer install' again" >&2
exit 127
"""


def launchers(dest: Path) -> dict[str, tuple[bytes, str]]:
    """The launcher scripts, as files to write: {rel path: (content, sha256)}."""
    out = {}
    for command, module in LAUNCHERS.items():
        data = _LAUNCHER.format(command=command, module=module, manifest=MANIFEST_NAME,
                                python=shlex.quote(sys.executable)).encode()
        out[f"{LAUNCHER_DIR}/{command}"] = (data, hashlib.sha256(data).hexdigest())
    return out


def path_hook(dest: Path, user: bool) -> str:
    """The SessionStart hook command that appends the launchers' folder to the Bash tool's
    PATH. A project's uses $CLAUDE_PROJECT_DIR (the repository may move or be cloned); the
    user's the absolute path."""
    folder = "$HOME/.claude/bin" if user else "$CLAUDE_PROJECT_DIR/.claude/bin"
    return (
        '[ -z "$CLAUDE_ENV_FILE" ] || '
        f"printf 'export PATH=\"$PATH:%s\"\\n' \"{folder}\" >> \"$CLAUDE_ENV_FILE\""
    )


def allow_rules(dest: Path, user: bool) -> list[str]:
    """The permission rules offered at install: the command, and its launcher called by path."""
    launcher = str(dest / LAUNCHER_DIR / "mlflow-analyzer") if user else f".claude/{LAUNCHER_DIR}/mlflow-analyzer"
    return ["Bash(mlflow-analyzer *)", f"Bash({launcher} *)"]


class Settings:
    """settings.json of a .claude folder, edited in place: only our hook and rules."""

    def __init__(self, path: Path, data: dict | None):
        self.path = path
        self.existed = data is not None
        self.data = data if data is not None else {}
        self._original = json.dumps(self.data, sort_keys=True)

    @classmethod
    def load(cls, dest: Path) -> "Settings":
        path = dest / SETTINGS_NAME
        if not path.exists():
            return cls(path, None)
        try:
            data = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InstallError(f"cannot read {path} ({exc}): fix it or move it away, then run again") from None
        if not isinstance(data, dict):
            raise InstallError(f"{path} is not a JSON object: fix it or move it away, then run again")
        return cls(path, data)

    def apply(self, record: dict, *, hook: str | None, allow: list[str], allow_commands: bool | None) -> dict:
        """Bring our additions to what is wanted; returns the new record of what is ours."""
        record = dict(record or {})
        created = list(record.get("created") or [])
        ours_hook = record.get("hook")
        ours_allow = list(record.get("allow") or [])

        # The PATH hook: exactly one entry of ours.
        entries = self._list(("hooks", "SessionStart"), create=False)
        if ours_hook and ours_hook != hook and entries is not None:
            entries[:] = [e for e in entries if not _is_our_hook(e, ours_hook)]
            ours_hook = None
        if hook:
            entries = self._list(("hooks", "SessionStart"), create=True, created=created)
            if not any(_has_command(e, hook) for e in entries):
                entries.append({"hooks": [{"type": "command", "command": hook}]})
                ours_hook = hook
        # Permission rules: only with consent; a "no" takes back what we added.
        rules = self._list(("permissions", "allow"), create=False)
        if allow_commands is False or allow_commands is None:
            if allow_commands is False and rules is not None:
                rules[:] = [r for r in rules if r not in ours_allow]
                ours_allow = []
            else:  # keep ours that are still there (the user may have removed some)
                ours_allow = [r for r in ours_allow if rules is not None and r in rules]
        else:
            rules = self._list(("permissions", "allow"), create=True, created=created)
            if not all(r in allow for r in ours_allow):  # rules of an older version
                rules[:] = [r for r in rules if r not in ours_allow or r in allow]
                ours_allow = [r for r in ours_allow if r in allow]
            for rule in allow:
                if rule not in rules:
                    rules.append(rule)
                    ours_allow.append(rule)
        # Containers we created and emptied go again, as does a file we created.
        for key in sorted(created, key=lambda k: -k.count(".")):
            parent_keys = key.split(".")
            parent = self.data
            for k in parent_keys[:-1]:
                parent = parent.get(k) if isinstance(parent, dict) else None
            if isinstance(parent, dict) and parent.get(parent_keys[-1]) in ([], {}):
                del parent[parent_keys[-1]]
                created.remove(key)
        made_file = bool(record.get("file")) or (not self.existed and bool(self.data))
        self.remove_file = made_file and not self.data
        out = {"hook": ours_hook, "allow": ours_allow, "created": created, "file": made_file}
        return {k: v for k, v in out.items() if v}

    def _list(self, keys: tuple[str, str], *, create: bool, created: list | None = None):
        node = self.data
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            value = node.get(key)
            if value is None:
                if not create:
                    return None
                value = [] if last else {}
                node[key] = value
                created.append(".".join(keys[: i + 1]))
            if not isinstance(value, list if last else dict):
                raise InstallError(f"{self.path}: {'.'.join(keys[: i + 1])} is not a JSON "
                                   f"{'list' if last else 'object'}; fix it, then run again")
            node = value
        return node

    def save(self) -> bool:
        """Write (or remove) the file when something changed; True when it did."""
        if getattr(self, "remove_file", False):
            if self.path.exists():
                self.path.unlink()
                return True
            return False
        if json.dumps(self.data, sort_keys=True) == self._original:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2) + "\n", encoding="utf-8")
        return True


def _has_command(entry, command: str) -> bool:
    return isinstance(entry, dict) and any(
        isinstance(h, dict) and h.get("command") == command for h in entry.get("hooks") or [])


def _is_our_hook(entry, command: str) -> bool:
    return entry == {"hooks": [{"type": "command", "command": command}]}


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
