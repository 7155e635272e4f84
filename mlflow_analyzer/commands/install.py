"""`mlflow-analyzer install`: put the skills and the subagent where Claude Code finds them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..options import example_epilog


def register(sub) -> None:
    p = sub.add_parser(
        "install",
        help="copy (or link) the skills and the mlflow-analyzer subagent into .claude/ of a project or ~/.claude",
        description=(
            "Install the skill pack (skills/analyze-mlflow-*, agents/mlflow-analyzer.md and the "
            "references they link to) into DIR/.claude/skills, DIR/.claude/agents and "
            "DIR/.claude/references, or into ~/.claude with --user. Running it "
            "again changes nothing (and updates files it wrote when the pack changed). It never "
            "overwrites a file it did not write: the whole install is refused instead. "
            "--uninstall removes exactly what it installed, as listed in "
            ".claude/.mlflow-analyzer-install.json; files edited since are kept. Prints a JSON "
            "summary. (Installed as a Claude Code plugin, the pack needs none of this.)"
        ),
        epilog=example_epilog(
            "mlflow-analyzer install --target .",
            "mlflow-analyzer install --user --link",
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
    p.add_argument("--uninstall", action="store_true", help="remove what an earlier install wrote")
    p.add_argument(
        "--pack",
        metavar="DIR",
        help="the pack to install: a folder holding skills/ and agents/ (default: the checkout "
        "this package was installed from)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import UsageError
    from ..install import claude_dir, find_pack_root, install, is_pack_root, uninstall

    dest = claude_dir(args.target, args.user)
    if args.uninstall:
        if args.link or args.pack:
            raise UsageError("--uninstall takes no --link or --pack: it removes what the manifest lists")
        result = uninstall(dest)
    else:
        if args.pack:
            pack = Path(args.pack).expanduser().resolve()
            if not is_pack_root(pack):
                raise UsageError(f"--pack {args.pack}: no skills/analyze-mlflow-*/SKILL.md and agents/mlflow-analyzer.md there")
        else:
            pack = find_pack_root()
        result = install(dest, pack, link=args.link)
    print(json.dumps(result, indent=2))
    return 0
