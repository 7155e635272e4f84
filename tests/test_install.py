"""`mlflow-analyzer install`: into a temporary repository, twice, then --uninstall, leaves
exactly the expected trees; it never overwrites what it did not write. Its launchers run the
toolkit, its PATH hook makes them resolve, and the permission rules are written only with
consent and removed by --uninstall (only what it added)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_analyzer import __version__
from mlflow_analyzer.install import MANIFEST_NAME, InstallError, find_pack_root, pack_files

from doc_helpers import run_cli

REPO = Path(__file__).resolve().parent.parent


def tree(root: Path) -> dict[str, tuple]:
    """Every path under root: files by content and mtime, links by target, folders."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def same_as_before(before: dict, root: Path, settings_before: dict | None = None) -> None:
    """The tree is what it was; settings.json (rewritten by install) holds the same settings."""
    now = tree(root)
    rel = ".claude/settings.json"
    assert {p: v for p, v in now.items() if p != rel} == {p: v for p, v in before.items() if p != rel}
    assert (rel in now) == (rel in before)
    if settings_before is not None:
        assert settings(root) == settings_before


def install(*args: str, home: Path | None = None):
    return run_cli(["install", *args], env={"HOME": home} if home is not None else None)


@pytest.fixture
def project(tmp_path) -> Path:
    """A repository that already has its own Claude Code settings and a skill of its own."""
    root = tmp_path / "project"
    (root / ".claude" / "skills" / "their-skill").mkdir(parents=True)
    (root / ".claude" / "settings.json").write_text('{"permissions": {"allow": []}}\n')
    (root / ".claude" / "skills" / "their-skill" / "SKILL.md").write_text("---\nname: their-skill\n---\n")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("print('hi')\n")
    return root


LAUNCHERS = {".claude/bin/mlflow-analyzer", ".claude/bin/mlflow"}
RULES = ["Bash(mlflow-analyzer *)", "Bash(.claude/bin/mlflow-analyzer *)"]


def expected_files() -> set[str]:
    return {f".claude/{rel}" for rel in pack_files(REPO)} | LAUNCHERS


def settings(project: Path) -> dict:
    return json.loads((project / ".claude" / "settings.json").read_text())


def hook_commands(data: dict) -> list[str]:
    return [h["command"] for e in data.get("hooks", {}).get("SessionStart", []) for h in e["hooks"]]


def test_pack_root_is_this_checkout():
    assert find_pack_root() == REPO
    names = {rel.split("/")[1] for rel in pack_files(REPO) if rel.startswith("skills/")}
    assert names == {"analyze-mlflow-trace", "analyze-mlflow-experiment", "analyze-mlflow-session"}
    assert "agents/mlflow-analyzer.md" in pack_files(REPO)
    assert "references/review.schema.md" in pack_files(REPO)


def test_install_twice_then_uninstall(project):
    before = tree(project)

    r = install("--target", str(project))
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["mode"] == "copy" and Path(result["dest"]) == project / ".claude"
    after = tree(project)
    added = set(after) - set(before)
    files = {p for p in added if after[p][0] == "file"}
    assert files == expected_files() | {f".claude/{MANIFEST_NAME}"}
    assert {p for p in added if after[p][0] == "dir"} == {
        ".claude/agents", ".claude/references", ".claude/bin",
        *{str(Path(f).parent) for f in expected_files() if f.startswith(".claude/skills/")},
    }
    for rel, src in pack_files(REPO).items():  # copies, byte for byte
        assert (project / ".claude" / rel).read_bytes() == src.read_bytes()
    settings_file = ".claude/settings.json"
    assert all(before[p] == after[p] for p in before if p != settings_file), "a file that was there changed"
    # settings.json: their (empty) rules kept, the PATH hook added, no rule without consent.
    data = settings(project)
    assert data["permissions"] == {"allow": []} and len(hook_commands(data)) == 1
    assert result["settings"]["allow"] == [] and result["settings"]["path_hook"] is True

    # Twice: nothing changes, not even a modification time.
    r = install("--target", str(project))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["written"] == []
    assert tree(project) == after

    # Uninstall: exactly the tree there was (settings.json: the same settings).
    r = install("--target", str(project), "--uninstall")
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads(r.stdout)["removed"]) == sorted(
        [*pack_files(REPO), "bin/mlflow", "bin/mlflow-analyzer"])
    same_as_before(before, project, {"permissions": {"allow": []}})


def test_install_into_a_bare_folder_and_back(tmp_path):
    r = install("--target", str(tmp_path), "--allow-commands")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / ".claude" / "skills" / "analyze-mlflow-trace" / "SKILL.md").is_file()
    assert settings(tmp_path)["permissions"]["allow"] == RULES
    r = install("--target", str(tmp_path), "--uninstall")
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.iterdir()) == [], "uninstall leaves the folders it created"


def test_never_overwrites_a_file_it_did_not_write(project):
    theirs = project / ".claude" / "agents" / "mlflow-analyzer.md"
    theirs.parent.mkdir()
    theirs.write_text("my own agent\n")
    before = tree(project)
    r = install("--target", str(project))
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "refusing to overwrite" in r.stderr and "mlflow-analyzer.md" in r.stderr
    assert tree(project) == before, "a refused install writes nothing"


def test_edited_files_are_kept(project):
    assert install("--target", str(project)).returncode == 0
    edited = project / ".claude" / "skills" / "analyze-mlflow-trace" / "SKILL.md"
    edited.write_text(edited.read_text() + "\nMy notes.\n")

    # Reinstalling would overwrite the edit: refused.
    r = install("--target", str(project))
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr
    assert edited.read_text().endswith("My notes.\n")

    # Uninstalling removes the rest and keeps the edited file (and its manifest entry).
    r = install("--target", str(project), "--uninstall")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kept"] == ["skills/analyze-mlflow-trace/SKILL.md"]
    assert edited.is_file()
    assert not (project / ".claude" / "agents").exists()
    manifest = json.loads((project / ".claude" / MANIFEST_NAME).read_text())
    assert list(manifest["files"]) == ["skills/analyze-mlflow-trace/SKILL.md"]
    # Once the user deletes it, a second uninstall finishes the job.
    edited.unlink()
    assert install("--target", str(project), "--uninstall").returncode == 0
    assert not (project / ".claude" / MANIFEST_NAME).exists()
    assert not (project / ".claude" / "skills" / "analyze-mlflow-trace").exists()
    assert (project / ".claude" / "skills" / "their-skill" / "SKILL.md").is_file()


def test_link_mode(project):
    before = tree(project)
    r = install("--target", str(project), "--link")
    assert r.returncode == 0, r.stderr
    claude = project / ".claude"
    trace_skill = claude / "skills" / "analyze-mlflow-trace"
    assert trace_skill.is_symlink() and trace_skill.resolve() == REPO / "skills" / "analyze-mlflow-trace"
    assert (claude / "agents" / "mlflow-analyzer.md").resolve() == REPO / "agents" / "mlflow-analyzer.md"
    # Links from the skills to the shared references resolve in the installed tree too.
    assert (trace_skill / "SKILL.md").is_file() and (claude / "references" / "cli.md").is_file()
    linked = tree(project)
    assert json.loads(install("--target", str(project), "--link").stdout)["written"] == []
    assert tree(project) == linked
    # Switching to copies needs an uninstall first.
    r = install("--target", str(project))
    assert r.returncode == 1 and "--uninstall" in r.stderr
    assert install("--target", str(project), "--uninstall").returncode == 0
    same_as_before(before, project, {"permissions": {"allow": []}})


def test_user_install_goes_to_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    r = install("--user", home=home)
    assert r.returncode == 0, r.stderr
    assert (home / ".claude" / "agents" / "mlflow-analyzer.md").is_file()
    assert (home / ".claude" / "bin" / "mlflow-analyzer").is_file()
    assert install("--user", "--allow-commands", home=home).returncode == 0
    data = json.loads((home / ".claude" / "settings.json").read_text())
    launcher = home / ".claude" / "bin" / "mlflow-analyzer"
    assert data["permissions"]["allow"] == ["Bash(mlflow-analyzer *)", f"Bash({launcher} *)"]
    assert "$HOME/.claude/bin" in hook_commands(data)[0]
    assert install("--user", "--uninstall", home=home).returncode == 0
    assert list(home.iterdir()) == []


def test_update_removes_what_the_pack_no_longer_ships(project, tmp_path):
    pack = tmp_path / "pack"
    for part in ("skills", "agents", "references"):
        shutil.copytree(REPO / part, pack / part)
    assert install("--target", str(project), "--pack", str(pack)).returncode == 0
    (pack / "skills" / "analyze-mlflow-trace" / "references" / "divergence.md").unlink()
    (pack / "agents" / "mlflow-analyzer.md").write_text((REPO / "agents" / "mlflow-analyzer.md").read_text() + "\n")
    r = install("--target", str(project), "--pack", str(pack))
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["removed"] == ["skills/analyze-mlflow-trace/references/divergence.md"]
    assert result["written"] == ["agents/mlflow-analyzer.md"]
    assert not (project / ".claude" / "skills" / "analyze-mlflow-trace" / "references" / "divergence.md").exists()
    manifest = json.loads((project / ".claude" / MANIFEST_NAME).read_text())
    assert "skills/analyze-mlflow-trace/references/divergence.md" not in manifest["files"]


def test_identical_files_it_did_not_write_are_left_alone(project):
    """A copy the user made by hand is not adopted: uninstall must not remove it."""
    mine = project / ".claude" / "agents" / "mlflow-analyzer.md"
    mine.parent.mkdir()
    shutil.copyfile(REPO / "agents" / "mlflow-analyzer.md", mine)
    assert install("--target", str(project)).returncode == 0
    assert install("--target", str(project), "--uninstall").returncode == 0
    assert mine.is_file()


def test_usage_errors(tmp_path):
    r = install("--target", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a directory" in r.stderr
    r = install("--target", str(tmp_path), "--pack", str(tmp_path))
    assert r.returncode == 2 and "--pack" in r.stderr
    r = install("--target", str(tmp_path), "--uninstall")
    assert r.returncode == 1 and "nothing to uninstall" in r.stderr
    r = install("--target", str(tmp_path), "--user")
    assert r.returncode == 2
    r = install("--target", str(tmp_path), "--allow-commands", "--no-allow-commands")
    assert r.returncode == 2
    assert not (tmp_path / ".claude").exists()


def test_a_wheel_without_the_pack_says_so(tmp_path):
    """Installed from a wheel, the package has no skills/ or agents/ above it."""
    fake = tmp_path / "site-packages" / "mlflow_analyzer" / "install.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("")
    with pytest.raises(InstallError) as exc:
        find_pack_root(fake)
    assert "\n" not in str(exc.value) and "--pack" in str(exc.value)


# --- consent, settings.json and the launchers -------------------------------------------------


def test_permission_rules_only_with_consent_and_only_ours_removed(project):
    claude = project / ".claude"
    # The user already allows one of the rules, and has other settings of their own.
    (claude / "settings.json").write_text(json.dumps({
        "permissions": {"allow": ["Bash(mlflow-analyzer *)", "Bash(git status)"]},
        "env": {"FOO": "1"},
        "hooks": {"SessionStart": [{"hooks": [{"type": "command", "command": "echo hi"}]}]},
    }))
    original = settings(project)
    assert install("--target", str(project)).returncode == 0
    assert settings(project)["permissions"] == original["permissions"], "no consent, no rule"

    r = install("--target", str(project), "--allow-commands")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["settings"]["allow"] == ["Bash(.claude/bin/mlflow-analyzer *)"]
    data = settings(project)
    assert data["permissions"]["allow"] == [*original["permissions"]["allow"], "Bash(.claude/bin/mlflow-analyzer *)"]
    assert hook_commands(data)[0] == "echo hi" and len(hook_commands(data)) == 2

    # Run again without a flag (not a terminal): what was consented stays.
    assert install("--target", str(project)).returncode == 0
    assert "Bash(.claude/bin/mlflow-analyzer *)" in settings(project)["permissions"]["allow"]
    # A later "no" takes back what we added, not the rule the user had.
    assert install("--target", str(project), "--no-allow-commands").returncode == 0
    assert settings(project)["permissions"] == original["permissions"]

    assert install("--target", str(project), "--allow-commands").returncode == 0
    assert install("--target", str(project), "--uninstall").returncode == 0
    assert settings(project) == original


def test_unreadable_settings_stop_the_install_before_anything_is_written(project):
    (project / ".claude" / "settings.json").write_text("{not json")
    before = tree(project)
    r = install("--target", str(project))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "settings.json" in r.stderr
    assert tree(project) == before


def test_interactive_consent(tmp_path):
    """In a terminal, install asks; "y" writes the rules, anything else does not."""
    import pty

    for answer, expected in (("y", RULES), ("", [])):
        target = tmp_path / f"answer-{answer or 'none'}"
        target.mkdir()
        leader, follower = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "mlflow_analyzer", "install", "--target", str(target)],
                                stdin=follower, stdout=subprocess.PIPE, stderr=follower,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        os.close(follower)
        seen = b""
        while b"[y/N]" not in seen:
            chunk = os.read(leader, 1024)
            assert chunk, seen
            seen += chunk
        os.write(leader, (answer + "\n").encode())
        out, _ = proc.communicate(timeout=120)
        os.close(leader)
        assert proc.returncode == 0
        assert b"Bash(mlflow-analyzer *)" in seen and b"settings.json" in seen
        assert json.loads(out)["settings"]["allow"] == expected
        allow = settings(target).get("permissions", {}).get("allow", [])
        assert allow == expected


def _bash(script: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=900)


def test_the_path_hook_makes_the_launchers_resolve(tmp_path):
    """What Claude Code does with the hook: run it with $CLAUDE_ENV_FILE, source that file
    before each Bash call. Then `mlflow-analyzer` and `mlflow` resolve to working launchers."""
    project = tmp_path / "my project"  # a space in the path
    project.mkdir()
    assert install("--target", str(project)).returncode == 0
    (command,) = hook_commands(settings(project))
    env_file = tmp_path / "session-env.sh"
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CLAUDE_PROJECT_DIR": str(project)}
    r = _bash(command, {**base, "CLAUDE_ENV_FILE": str(env_file)})
    assert r.returncode == 0, r.stderr
    r = _bash(f'. "{env_file}" && command -v mlflow-analyzer && mlflow-analyzer --version && mlflow --version', base)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == str(project / ".claude" / "bin" / "mlflow-analyzer")
    assert lines[1] == f"mlflow-analyzer {__version__}" and "version" in lines[2]
    # Without CLAUDE_ENV_FILE (another client) the hook does nothing and succeeds.
    assert _bash(command, base).returncode == 0


def test_a_launcher_whose_python_is_gone_says_what_to_do(tmp_path):
    assert install("--target", str(tmp_path)).returncode == 0
    launcher = tmp_path / ".claude" / "bin" / "mlflow-analyzer"
    text = launcher.read_text()
    launcher.write_text(text.replace(f"python={sys.executable}", "python=/nonexistent/python"))
    r = subprocess.run([str(launcher), "--version"], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert r.returncode == 127 and r.stderr.count("\n") == 1 and "install" in r.stderr
    # Another mlflow-analyzer on PATH is used instead.
    other = tmp_path / "other"
    other.mkdir()
    (other / "mlflow-analyzer").write_text("#!/bin/sh\necho other $1\n")
    (other / "mlflow-analyzer").chmod(0o755)
    r = subprocess.run([str(launcher), "--version"], env={"PATH": f"{launcher.parent}:{other}:/usr/bin:/bin"},
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "other --version\n"
