"""Real-peer tests: a Python client generated from proto/ with grpcio-tools talks to the real
`myelin` binary ($MYELIN_BIN, built by deploy/test.sh)."""
from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import threading
import time
import queue
from pathlib import Path

import grpc
import numpy as np
import pylsl
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models"))

from common import live  # noqa: E402

live.load_stubs(Path(__file__).resolve().parent / "_gen")

from myelin.v1 import myelin_pb2 as pb  # noqa: E402
from myelin.v1 import myelin_pb2_grpc as rpc  # noqa: E402

QUIET = ["C3", "Cz", "C4", "Pz"]


def pytest_configure(config):
    config.addinivalue_line("markers", "realtime: takes minutes of wall time (a recording pushed in real time)")


def myelin_bin() -> str:
    path = os.environ.get("MYELIN_BIN", str(ROOT / "target/debug/myelin"))
    assert Path(path).exists(), f"{path} missing: run `cargo build --bins` (deploy/test.sh does)"
    return path


def make_certs(directory: Path, *clients: str) -> Path:
    """A CA, a server certificate for localhost and a client certificate per name in `clients`
    (rcgen, `myelin-test-certs`), in `directory`."""
    tool = Path(myelin_bin()).with_name("myelin-test-certs")
    subprocess.run([str(tool), str(directory), *clients], check=True, stdout=subprocess.DEVNULL)
    return directory


def token_hash(token: str) -> str:
    """A token's salted hash as `[[auth.principals]] token_hashes` take it."""
    salt = secrets.token_bytes(16)
    return f"sha256:{salt.hex()}:{hashlib.sha256(salt + token.encode()).hexdigest()}"


@pytest.fixture(name="myelin_bin")
def myelin_bin_fixture() -> str:
    return myelin_bin()


@pytest.fixture
def server():
    s = live.Server(myelin_bin())
    yield s
    s.stop()


def header(session: str, channels=QUIET, rate: float = 128.0, **fields) -> pb.IngestRequest:
    return pb.IngestRequest(header=pb.StreamHeader(
        session_id=session, modality=pb.MODALITY_EEG, nominal_rate_hz=rate, clock=pb.CLOCK_SOURCE_UNIX,
        channels=[pb.Channel(label=c, type="EEG", unit="uV") for c in channels], **fields))


def drain(call):
    """Reads a call's replies on a thread until it ends (however it ends)."""
    def run():
        try:
            for _ in call:
                pass
        except grpc.RpcError:
            pass

    threading.Thread(target=run, daemon=True).start()


def rss_mib(server) -> float:
    for line in open(f"/proc/{server.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Healthy:
    """A session streaming in real time (x4) with a sliding attachment, counting its predictions."""

    def __init__(self, channel):
        decoding = rpc.DecodingStub(channel)
        self.requests: queue.Queue = queue.Queue()
        self.requests.put(header("healthy"))
        self.call = rpc.IngestStub(channel).Stream(iter(self.requests.get, None))
        drain(self.call)
        attached = live.attach(decoding, pb.AttachRequest(
            session_id="healthy", model_id="fixture-linear", latency_budget_ms=2000,
            window=pb.WindowPolicy(sliding=pb.SlidingWindow(hop_s=0.25))))
        self.count = 0
        subscription = decoding.Subscribe(pb.SubscribeRequest(attachment_id=attached.attachment_id))

        def read():
            try:
                for p in subscription:
                    assert p.status == pb.PREDICTION_STATUS_OK, p
                    self.count += 1
            except grpc.RpcError:
                pass

        threading.Thread(target=read, daemon=True).start()
        self.stopped = threading.Event()
        threading.Thread(target=self.stream, daemon=True).start()
        self.assert_decoding()

    def stream(self):
        rng = np.random.default_rng(5)
        sent = 0
        while not self.stopped.is_set():
            x = rng.standard_normal((16, 4)).astype("<f4")
            self.requests.put(pb.IngestRequest(chunk=pb.SampleChunk(
                first_sample_index=sent, n_samples=16, samples=x.tobytes(),
                regular=pb.RegularTimestamps(first_seconds=sent / 128.0, rate_hz=128.0))))
            sent += 16
            time.sleep(16 / 128.0 / 4)

    def assert_decoding(self):
        before, deadline = self.count, time.monotonic() + 10
        while self.count < before + 3:
            assert time.monotonic() < deadline, "the healthy session stopped receiving predictions"
            time.sleep(0.02)


def make_outlet(name, kind, channels, rate, fmt, source_id, labels=None):
    info = pylsl.StreamInfo(name, kind, channels, rate, fmt, source_id)
    if labels:
        chns = info.desc().append_child("channels")
        for label in labels:
            ch = chns.append_child("channel")
            ch.append_child_value("label", label)
    return pylsl.StreamOutlet(info, chunk_size=0, max_buffered=360)
