"""Build hook: the wheel carries the Claude Code pack (skills/, agents/, references/).

The repository keeps ONE copy of the pack, at its root, where Claude Code, the plugin and
`npx skills add` read it. Building the wheel (`pip install .`, `pip install git+URL`,
`python -m build`) copies those folders into the package as `mlflow_analyzer/pack/`, so that
`mlflow-analyzer install` and the headless `review` find them in an installed package with no
checkout beside it. An editable install (`pip install -e .`) copies nothing: the package then
finds the pack in the checkout above it. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACK_PARTS = ("skills", "agents", "references")


class build_py_with_pack(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        missing = [p for p in PACK_PARTS if not (ROOT / p).is_dir()]
        if missing:
            raise SystemExit(f"cannot build mlflow-analyzer: {', '.join(missing)} missing beside setup.py")
        dest = Path(self.build_lib) / "mlflow_analyzer" / "pack"
        shutil.rmtree(dest, ignore_errors=True)  # a skill removed since the last build must go
        for part in PACK_PARTS:
            shutil.copytree(ROOT / part, dest / part,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


setup(cmdclass={"build_py": build_py_with_pack})
