"""Real-peer tests: a Python client generated from proto/ with grpcio-tools talks to the real
`myelin` binary ($MYELIN_BIN, built by deploy/test.sh)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models"))

from common import live  # noqa: E402

live.load_stubs(Path(__file__).resolve().parent / "_gen")


def pytest_configure(config):
    config.addinivalue_line("markers", "realtime: takes minutes of wall time (a recording pushed in real time)")


def myelin_bin() -> str:
    path = os.environ.get("MYELIN_BIN", str(ROOT / "target/debug/myelin"))
    assert Path(path).exists(), f"{path} missing: run `cargo build --bins` (deploy/test.sh does)"
    return path


@pytest.fixture(name="myelin_bin")
def myelin_bin_fixture() -> str:
    return myelin_bin()


@pytest.fixture
def server():
    s = live.Server(myelin_bin())
    yield s
    s.stop()
