"""Real-peer tests: a Python client generated from proto/ with grpcio-tools talks to the real
`myelin` binary ($MYELIN_BIN, built by deploy/test.sh)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GEN = Path(__file__).resolve().parent / "_gen"
sys.path.insert(0, str(ROOT / "models"))


def _generate_stubs():
    from grpc_tools import protoc

    GEN.mkdir(exist_ok=True)
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{ROOT / 'proto'}",
        f"--python_out={GEN}",
        f"--grpc_python_out={GEN}",
        str(ROOT / "proto/myelin/v1/myelin.proto"),
    ])
    assert rc == 0, "grpc_tools.protoc failed"
    for d in (GEN / "myelin", GEN / "myelin" / "v1"):
        (d / "__init__.py").touch()
    sys.path.insert(0, str(GEN))


_generate_stubs()


def myelin_bin() -> str:
    path = os.environ.get("MYELIN_BIN", str(ROOT / "target/debug/myelin"))
    assert Path(path).exists(), f"{path} missing: run `cargo build --bins` (deploy/test.sh does)"
    return path


class Server:
    def __init__(self, env: dict[str, str] | None = None):
        full_env = dict(os.environ,
                        MYELIN_SERVER__GRPC_ADDR="127.0.0.1:0",
                        MYELIN_SERVER__HTTP_ADDR="127.0.0.1:0",
                        RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        full_env.update(env or {})
        self.proc = subprocess.Popen([myelin_bin(), "serve"], cwd=ROOT, env=full_env,
                                     stdout=subprocess.PIPE, text=True)
        line = ""
        for line in self.proc.stdout:
            if line.startswith("myelin ready "):
                break
        else:
            raise RuntimeError(f"myelin exited before it was ready (code {self.proc.wait()})")
        fields = dict(kv.split("=", 1) for kv in line.split()[2:])
        self.grpc, self.http = fields["grpc"], fields["http"]
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()
