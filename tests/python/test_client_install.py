"""The Python client as users install it: each standard route (pip from the directory, pip from
a git URL with #subdirectory, `python -m build` then pip) in its own fresh virtual environment,
each importing `myelin` and running the oddball example against the real server; and the
committed wire stubs checked against proto/."""
from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common import p300

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "client/python"
RUN = p300.runs(ROOT / "models/data/p300", "subject1_session2")[1]
# pip and build talk to the package registry: nothing of the project's .venv leaks in.
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def fresh_venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    return where / "bin/python"


def pip(python: Path, *args: str, cwd: Path | None = None) -> None:
    run = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *args], cwd=cwd, env=CLEAN_ENV,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]


def copy_of_the_package(where: Path) -> Path:
    """The package directory as a clone has it (no build leftovers of earlier runs)."""
    shutil.copytree(PACKAGE, where, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "dist"))
    return where


def install_from_directory(python: Path, tmp: Path) -> None:
    pip(python, str(copy_of_the_package(tmp / "repo/client/python")))


def install_from_git_url(python: Path, tmp: Path) -> None:
    repo = tmp / "repo"
    copy_of_the_package(repo / "client/python")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "--quiet", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "--quiet", "-m", "client"], check=True)
    pip(python, f"git+file://{repo}#subdirectory=client/python")


def install_with_build(python: Path, tmp: Path) -> None:
    source = copy_of_the_package(tmp / "repo/client/python")
    pip(python, "build")
    built = subprocess.run([str(python), "-m", "build", "--outdir", str(tmp / "dist"), str(source)], env=CLEAN_ENV,
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-4000:]
    sdist = next((tmp / "dist").glob("myelin_client-*.tar.gz"))
    listing = subprocess.run(["tar", "tzf", str(sdist)], capture_output=True, text=True, check=True).stdout
    assert "src/myelin/_wire/myelin_pb2_grpc.py" in listing and "src/myelin/py.typed" in listing, listing
    pip(python, str(next((tmp / "dist").glob("myelin_client-*.whl"))))


@pytest.mark.parametrize("install", [install_from_directory, install_from_git_url, install_with_build], ids=lambda f: f.__name__)
def test_each_standard_install_route_gives_a_package_that_streams(install, server, tmp_path):
    python = fresh_venv(tmp_path / "venv")
    install(python, tmp_path)
    tools = subprocess.run([str(python), "-m", "pip", "show", "grpcio-tools"], capture_output=True)
    assert tools.returncode != 0, "the client needs no grpcio-tools"
    where = subprocess.run([str(python), "-c", "import myelin, myelin._wire.myelin_pb2_grpc; print(myelin.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=CLEAN_ENV)
    assert where.returncode == 0, where.stderr
    assert str(tmp_path / "venv") in where.stdout, f"imported from {where.stdout}, not the fresh environment"
    example = tmp_path / "oddball.py"
    shutil.copy(PACKAGE / "examples/oddball.py", example)
    run = subprocess.run([str(python), str(example), "--server", server.grpc, "--recording", str(RUN), "--speed", "10", "--trials", "40"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=180, env=CLEAN_ENV)
    print(run.stdout[-400:], run.stderr[-2000:])
    assert run.returncode == 0, run.stderr
    assert "40 stimuli, 40 predictions, 0 missing" in run.stdout


def test_the_committed_wire_stubs_match_proto(tmp_path):
    fresh = tmp_path / "wire"
    subprocess.run([str(PACKAGE / "generate_stubs.sh"), str(fresh)], check=True)
    committed = PACKAGE / "src/myelin/_wire"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.suffix in (".py", ".pyi"))
    _, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, f"stale stubs {mismatch or errors}: run client/python/generate_stubs.sh and commit"
