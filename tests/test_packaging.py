"""Installed without a checkout (a wheel, `pip install .`, `pip install git+URL`), the toolkit carries its pack:
`install --target`, `install --user` and the headless runner find the skills, the subagent
and the references inside the package.

Each route gets a fresh virtualenv holding only the built package (`--no-deps`); the
dependencies come from this test run's environment through a .pth line, so nothing is
downloaded and the checkout is not importable (no PYTHONPATH, the working directory
elsewhere, and the editable install's finder is not loaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from mlflow_analyzer.install import pack_files

from claude_helpers import REPO, run, source_repo  # noqa: F401  (source_repo: a fixture)


def _run(args, **kw):
    return run(args, **kw)


def _bare_venv(path: Path) -> Path:
    """A virtualenv with no packages; this run's site-packages appended for the dependencies."""
    _run([sys.executable, "-m", "venv", "--without-pip", path])
    python = path / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(purelib, "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path


def _pip_into(venv: Path, *args):
    return _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
                 "--no-deps", "--disable-pip-version-check", "-q", *args])


def _clean_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"HOME": str(home), "MLFLOW_DISABLE_AGENT_HINT": "1", "PYTHONWARNINGS": "ignore"})
    return env


@pytest.fixture(scope="session")
def wheel(source_repo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
          "-w", out, source_repo])
    (whl,) = out.glob("mlflow_analyzer-*.whl")
    return whl


def test_the_wheel_carries_the_pack(wheel):
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in pack_files(REPO):
        assert f"mlflow_analyzer/pack/{rel}" in names, f"{rel} is not in the wheel"
    assert "mlflow_analyzer/data/pricing.json" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "benchmarks/"))]


def _check_installed(venv: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    env = _clean_env(home)
    exe = venv / "bin" / "mlflow-analyzer"
    where = _run([venv / "bin" / "python", "-c", "import mlflow_analyzer; print(mlflow_analyzer.__file__)"],
                 cwd=tmp_path, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), f"imported {where}, not the installed package"

    r = _run([exe, "install", "--target", project, "--no-allow-commands"], cwd=tmp_path, env=env)
    result = json.loads(r.stdout)
    installed = project / ".claude"
    for rel in pack_files(REPO):
        assert (installed / rel).read_bytes() == (REPO / rel).read_bytes(), rel
    assert (installed / "bin" / "mlflow-analyzer").read_text().count(str(venv / "bin" / "python")) == 1
    r = _run([installed / "bin" / "mlflow-analyzer", "--version"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert r.stdout.startswith("mlflow-analyzer ")
    assert Path(result["pack"]).is_relative_to(venv)

    _run([exe, "install", "--user", "--no-allow-commands"], cwd=tmp_path, env=env)
    assert (home / ".claude" / "agents" / "mlflow-analyzer.md").is_file()
    assert (home / ".claude" / "skills" / "analyze-mlflow-trace" / "references" / "cli.md").is_file()

    # The headless runner reads the packaged agent when none is installed in the project.
    bare = tmp_path / "bare"
    bare.mkdir()
    agent = _run([venv / "bin" / "python", "-c",
                  "import sys; from pathlib import Path; from mlflow_analyzer.headless import find_agent_file; "
                  "print(find_agent_file(Path(sys.argv[1])))", bare],
                 cwd=tmp_path, env=_clean_env(tmp_path / "nohome")).stdout.strip()
    assert Path(agent).is_relative_to(venv) and agent.endswith("pack/agents/mlflow-analyzer.md")

    _run([exe, "install", "--target", project, "--uninstall"], cwd=tmp_path, env=env)
    assert not installed.exists()


def test_wheel_install_then_install_target_and_user(wheel, tmp_path):
    venv = _bare_venv(tmp_path / "venv")
    _pip_into(venv, wheel)
    _check_installed(venv, tmp_path)


@pytest.mark.parametrize("route", ["directory", "git"])
def test_pip_install_a_checkout_or_a_git_url(route, source_repo, tmp_path):
    """`pip install .` from a clone, and `pip install git+URL` (a local file:// URL)."""
    venv = _bare_venv(tmp_path / "venv")
    _pip_into(venv, source_repo if route == "directory" else f"git+file://{source_repo}")
    _check_installed(venv, tmp_path)


def test_a_missing_optional_package_is_one_line(corpus, tmp_path):
    """The plugin's trimmed environment has no `anthropic` (only `review` needs it): the
    command says what to install, in one line, instead of a traceback."""
    code = ("import sys; sys.modules['anthropic'] = None\n"
            "from mlflow_analyzer.cli import main\n"
            "sys.exit(main(['review', '--tracking-uri', sys.argv[1], '--experiment-id', sys.argv[2],"
            " '--repo', sys.argv[3], '--branch', 'b', '--commit', 'abc1234']))")
    r = subprocess.run([sys.executable, "-c", code, corpus["tracking_uri"], str(corpus["experiment_id"]),
                        str(tmp_path)], cwd=tmp_path,
                       env={**_clean_env(tmp_path), "PYTHONPATH": str(REPO), "ANTHROPIC_API_KEY": "x",
                            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "'anthropic'" in last and "pip install anthropic" in last and "Traceback" not in r.stderr
