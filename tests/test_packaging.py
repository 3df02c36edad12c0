"""A newcomer's first minutes: ``python -m build`` makes an sdist and a wheel that install into
clean venvs and run ``pqselfenc --version`` and the README's main job; the README's test command
is one self-sufficient command on a fresh Debian machine, and it is what CI runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from _cli_helpers import clean_env
from test_cli_process import README, doc_block

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# What a copy of the checkout leaves out: VCS data, caches and earlier build output.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", ".venv*",
    "api", "results", "chunks",
)  # fmt: skip


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False,
                          **kwargs)  # type: ignore[call-overload]  # fmt: skip
    assert done.returncode == 0, f"{cmd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, built from a copy of the checkout (the build writes next to
    its sources) with the installed setuptools: no download."""
    work = tmp_path_factory.mktemp("build")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(work / "dist"),
          str(source)])  # fmt: skip
    return work / "dist"


def _venv(where: Path) -> Path:
    _run([sys.executable, "-m", "venv", str(where)])
    return where / "bin"


def _venv_env(bin_dir: Path, home: Path) -> dict[str, str]:
    """A fresh HOME with the venv first on PATH, and nothing that points back at this checkout
    (PYTHONPATH would import the sources instead of what was installed)."""
    env = clean_env(home)
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(bin_dir.parent)
    return env


def _check_installed(bin_dir: Path, artifact: Path, tmp_path: Path) -> None:
    """Install ``artifact`` (with the page's extras) and run the version and the main job."""
    env = _venv_env(bin_dir, tmp_path / "home")
    _run([str(bin_dir / "pip"), "install", "-q", f"{artifact}[compression,parallel]"], env=env)
    where = _run([str(bin_dir / "python"), "-c", "import pqselfenc; print(pqselfenc.__file__)"],
                 env=env, cwd=tmp_path)  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(bin_dir.parent)
    version = _run(["pqselfenc", "--version"], env=env, cwd=tmp_path)
    assert version.stdout.strip() == f"pqselfenc {VERSION}"
    job = doc_block("main-job", README)
    assert job.startswith("pip install -e . && ")
    job = job.removeprefix("pip install -e . && ")  # installed above, from the artifact
    done = _run(["bash", "-euo", "pipefail", "-c", job], env=env, cwd=tmp_path)
    assert done.stdout.rstrip().endswith("OK")
    chunks = tmp_path / "home" / ".local" / "share" / "pqselfenc" / "chunks"
    assert sum(1 for p in chunks.rglob("*") if p.is_file()) >= 3


@pytest.mark.slow
def test_the_wheel_installs_and_runs_the_main_job(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("pqselfenc-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read(f"pqselfenc-{VERSION}.dist-info/METADATA").decode()
    assert "pqselfenc/py.typed" in names and "pqselfenc/keys/defaults.py" in names
    assert not any(n.startswith("tests/") for n in names)
    assert "Provides-Extra: compression" in meta and "Provides-Extra: parallel" in meta
    _check_installed(_venv(tmp_path / "venv"), wheel, tmp_path)


@pytest.mark.slow
def test_the_sdist_installs_and_runs_the_main_job(dist: Path, tmp_path: Path) -> None:
    (sdist,) = dist.glob("pqselfenc-*.tar.gz")
    _check_installed(_venv(tmp_path / "venv"), sdist, tmp_path)


def test_build_tools_are_in_the_dev_extra() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = " ".join(meta["project"]["optional-dependencies"]["dev"])
    assert re.search(r"\bbuild\b", dev) and "setuptools>=70.1" in dev  # bdist_wheel built in
    assert meta["build-system"]["build-backend"] == "setuptools.build_meta"


def _apt_packages(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9][a-z0-9.+-]+", text)) - {"y", "qq", "no-install-recommends"}


def test_the_readme_test_command_is_one_self_sufficient_command() -> None:
    """A fresh Debian machine has no package lists: ``apt-get install`` alone finds nothing."""
    section = README.read_text().split("## Run the tests", 1)[1]
    command = section.split("```sh\n", 1)[1].split("```", 1)[0].strip()
    assert "\n" not in command
    steps = [s.strip() for s in command.split("&&")]
    assert steps[0] == "apt-get update"
    assert steps[1].startswith("apt-get install -y ")
    assert steps[-1] == "bash scripts/test.sh"
    wanted = _apt_packages(steps[1].removeprefix("apt-get install -y "))
    assert {"gnome-keyring", "dbus-user-session", "restic", "softhsm2"} <= wanted
    ci = (ROOT / ".ci" / "run").read_text()
    listed = re.search(r"for pkg in ([^;]+); do", ci)
    assert listed is not None and _apt_packages(listed.group(1)) == wanted
    assert "apt-get update" in ci
