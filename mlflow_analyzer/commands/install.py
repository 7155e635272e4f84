"""`mlflow-analyzer install`: put the skills and the subagent where Claude Code finds them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..options import example_epilog


def register(sub) -> None:
    p = sub.add_parser(
        "install",
        help="copy (or link) the skills and the mlflow-analyzer subagent into .claude/ of a project or ~/.claude",
        description=(
            "Install the skill pack (skills/analyze-mlflow-*, agents/mlflow-analyzer.md and the "
            "references they link to) into DIR/.claude/skills, DIR/.claude/agents and "
            "DIR/.claude/references, or into ~/.claude with --user, with launchers "
            ".claude/bin/mlflow-analyzer and .claude/bin/mlflow that run this Python "
            "environment. In the same folder's settings.json it adds a SessionStart hook that "
            "puts .claude/bin on the PATH of Claude Code's Bash tool (after what is already "
            "there), so the commands the skills show resolve; and, only with your consent (a "
            "question when run in a terminal, or --allow-commands), the permission rules "
            "Bash(mlflow-analyzer *) and Bash(.claude/bin/mlflow-analyzer *) that let them run "
            "without asking. Running it again changes nothing (and updates files it wrote when "
            "the pack changed). It never overwrites a file it did not write: the whole install "
            "is refused instead. --uninstall removes exactly what it installed, as listed in "
            ".claude/.mlflow-analyzer-install.json, settings included; files edited since are "
            "kept. Prints a JSON summary. (Installed as a Claude Code plugin, the pack needs "
            "none of this.)"
        ),
        epilog=example_epilog(
            "mlflow-analyzer install --target .",
            "mlflow-analyzer install --target . --allow-commands",
            "mlflow-analyzer install --user --link --no-allow-commands",
            "mlflow-analyzer install --target . --uninstall",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--target", metavar="DIR", help="project folder that receives .claude/ (default: .)")
    where.add_argument("--user", action="store_true", help="install into ~/.claude instead, for every project")
    p.add_argument(
        "--link",
        action="store_true",
        help="symlink the skill folders and the agent file instead of copying them (follows a checkout)",
    )
    consent = p.add_mutually_exclusive_group()
    consent.add_argument(
        "--allow-commands",
        dest="allow_commands",
        action="store_const",
        const=True,
        help="add the permission rules for mlflow-analyzer commands to settings.json without asking",
    )
    consent.add_argument(
        "--no-allow-commands",
        dest="allow_commands",
        action="store_const",
        const=False,
        help="do not add them (and remove the ones an earlier install added); without either "
        "flag, a terminal is asked and anything else keeps what is there",
    )
    p.add_argument("--uninstall", action="store_true", help="remove what an earlier install wrote")
    p.add_argument(
        "--pack",
        metavar="DIR",
        help="the pack to install: a folder holding skills/ and agents/ (default: the one in this "
        "installed package, or the checkout it runs from)",
    )
    p.set_defaults(func=run, allow_commands=None)


def run(args) -> int:
    from ..errors import UsageError
    from ..install import allow_rules, claude_dir, find_pack_root, install, is_pack_root, uninstall

    dest = claude_dir(args.target, args.user)
    if args.uninstall:
        if args.link or args.pack or args.allow_commands is not None:
            raise UsageError("--uninstall takes no --link, --pack or --allow-commands: it removes what the manifest lists")
        result = uninstall(dest)
        print(json.dumps(result, indent=2))
        print(f"mlflow-analyzer: removed the pack from {dest}", file=sys.stderr)
        return 0
    if args.pack:
        pack = Path(args.pack).expanduser().resolve()
        if not is_pack_root(pack):
            raise UsageError(f"--pack {args.pack}: no skills/analyze-mlflow-*/SKILL.md and agents/mlflow-analyzer.md there")
    else:
        pack = find_pack_root()
    allow = args.allow_commands
    rules = allow_rules(dest, args.user)
    if allow is None and _interactive() and not _already_allowed(dest, rules):
        allow = _ask(dest, rules)
    result = install(dest, pack, link=args.link, user=args.user, allow_commands=allow)
    print(json.dumps(result, indent=2))
    _tell(result, dest, args.user, rules)
    return 0


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def _already_allowed(dest: Path, rules: list[str]) -> bool:
    try:
        data = json.loads((dest / "settings.json").read_text(encoding="utf-8"))
        allow = data["permissions"]["allow"]
        return all(r in allow for r in rules)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _ask(dest: Path, rules: list[str]) -> bool:
    print(
        "Claude Code asks before each command the skills run. Let it run mlflow-analyzer commands\n"
        "(read-only against your tracking store) without asking? This adds to\n"
        f"{dest / 'settings.json'}:\n"
        + "".join(f"  permissions.allow: {r}\n" for r in rules)
        + "(--uninstall removes them again.) [y/N] ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    try:
        answer = sys.stdin.readline()
    except (OSError, KeyboardInterrupt):
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def _tell(result: dict, dest: Path, user: bool, rules: list[str]) -> None:
    where = "every project" if user else str(dest.parent)
    lines = [f"mlflow-analyzer: installed the skills and the mlflow-analyzer subagent for {where} ({dest})"]
    settings = result["settings"]
    if settings["allow"]:
        lines.append("  mlflow-analyzer commands run without asking (permission rules in "
                     f"{settings['path']})")
    else:
        lines.append("  Claude Code will ask before each mlflow-analyzer command; to allow them, run "
                     "this again with --allow-commands")
    if not user:
        lines.append(f"  next: start Claude Code in {dest.parent} and ask \"analyze trace tr-...\"")
    print("\n".join(lines), file=sys.stderr)
