"""Recordings as the disk really behaves, read back by pyxdf: every stream of a file has a
footer, the empty ones too (as LabRecorder writes them); and a disk that stalls (a real ext4
filesystem, frozen with fsfreeze, the way a saturated or failing disk holds writes) delays only
the session being opened on it, never the listings and attaches of the others, and is reported
once per 10 s rather than once per lost event."""
from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import pyxdf
from myelin.v1 import myelin_pb2 as pb
from myelin.v1 import myelin_pb2_grpc as rpc

from common import live
from conftest import Healthy, drain, header


def test_every_stream_of_a_recording_has_a_footer_the_empty_ones_too(myelin_bin, tmp_path):
    server = live.Server(myelin_bin, env={"MYELIN_RECORDING__ENABLED": "true", "MYELIN_RECORDING__DIR": str(tmp_path)})
    try:
        with grpc.insecure_channel(server.grpc) as channel:
            x = np.random.default_rng(1).standard_normal((256, 4)).astype("<f4")
            requests = [header("quiet"), pb.IngestRequest(chunk=pb.SampleChunk(
                first_sample_index=0, n_samples=256, samples=x.tobytes(),
                regular=pb.RegularTimestamps(first_seconds=5.0, rate_hz=128.0)))]
            for _ in rpc.IngestStub(channel).Stream(iter(requests), timeout=10):
                pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(s.live for s in rpc.DecodingStub(channel).ListSessions(pb.ListSessionsRequest()).sessions):
                time.sleep(0.05)
    finally:
        server.stop()
    [path] = tmp_path.glob("quiet-*.xdf")
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    names = {s["info"]["name"][0]: s for s in streams}
    assert set(names) == {"quiet", "quiet/markers", "quiet/clock-offsets"}, set(names)
    for name, stream in names.items():
        assert "footer" in stream, f"{name} has no footer"
        footer = stream["footer"]["info"]
        assert int(footer["sample_count"][0]) == len(stream["time_stamps"]), (name, footer)
    assert int(names["quiet"]["footer"]["info"]["sample_count"][0]) == 256
    assert int(names["quiet/markers"]["footer"]["info"]["sample_count"][0]) == 0


class FrozenDisk:
    """A small ext4 filesystem on a loop device, which `freeze()` stalls as a saturated disk does
    (every write and fsync waits) until `thaw()`."""

    def __init__(self, tmp: Path):
        self.image, self.mount = tmp / "disk.img", tmp / "disk"
        self.mount.mkdir()
        subprocess.run(["truncate", "-s", "256M", str(self.image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True)
        mounted = subprocess.run(["mount", "-o", "loop", str(self.image), str(self.mount)], capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a loop filesystem here (needs root with CAP_SYS_ADMIN): {mounted.stderr.strip()}")
        self.frozen = False

    def freeze(self):
        subprocess.run(["fsfreeze", "-f", str(self.mount)], check=True)
        self.frozen = True

    def thaw(self):
        if self.frozen:
            subprocess.run(["fsfreeze", "-u", str(self.mount)], check=True)
            self.frozen = False

    def remove(self):
        self.thaw()
        subprocess.run(["umount", str(self.mount)], check=False)


@pytest.fixture
def disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("freezing a filesystem needs root")
    d = FrozenDisk(tmp_path)
    yield d
    d.remove()


def timed(call) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_a_stalled_disk_delays_no_other_session(myelin_bin, disk, tmp_path):
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        # A small recording queue, so that the healthy session's own events fill it within seconds
        # of the disk freezing.
        server = live.Server(myelin_bin, stderr=log, env={
            "MYELIN_RECORDING__ENABLED": "true", "MYELIN_RECORDING__DIR": str(disk.mount / "recordings"),
            "MYELIN_RECORDING__QUEUE_EVENTS": "128", "RUST_LOG": "warn"})
    try:
        channel = grpc.insecure_channel(server.grpc)
        decoding = rpc.DecodingStub(channel)
        healthy = Healthy(channel)  # recorded to the same disk
        disk.freeze()
        # A new session whose recording file cannot be created until the disk comes back.
        opening: queue.Queue = queue.Queue()
        opening.put(header("stalled"))
        drain(rpc.IngestStub(channel).Stream(iter(opening.get, None)))
        time.sleep(0.5)
        slowest = {"ListSessions": 0.0, "Attach": 0.0}
        for _ in range(20):
            slowest["ListSessions"] = max(slowest["ListSessions"], timed(lambda: decoding.ListSessions(pb.ListSessionsRequest(), timeout=5)))
            slowest["Attach"] = max(slowest["Attach"], timed(lambda: decoding.Attach(pb.AttachRequest(
                session_id="healthy", model_id="fixture-linear", window=pb.WindowPolicy(sliding=pb.SlidingWindow(hop_s=1.0))), timeout=5)))
            time.sleep(0.2)
        healthy.assert_decoding()
        listed = {s.session_id for s in decoding.ListSessions(pb.ListSessionsRequest()).sessions}
        assert "stalled" not in listed, "the stalled session cannot have opened: its file cannot be created"
        time.sleep(12)  # more than one warning interval of the stalled recorder
        warnings = log_path.read_text().count("recording queue full")
        dropped = metric(server, "myelin_recording_dropped_total")
        healthy.assert_decoding()
        disk.thaw()
        deadline = time.monotonic() + 10
        while "stalled" not in {s.session_id for s in decoding.ListSessions(pb.ListSessionsRequest()).sessions}:
            assert time.monotonic() < deadline, "the stalled session opened once the disk came back"
            time.sleep(0.05)
        print(f"\nwhile the disk was frozen: slowest ListSessions {slowest['ListSessions'] * 1000:.1f} ms, "
              f"slowest Attach {slowest['Attach'] * 1000:.1f} ms; {dropped:.0f} events dropped, "
              f"{warnings} 'recording queue full' warnings")
        assert slowest["ListSessions"] < 0.1 and slowest["Attach"] < 0.1, slowest
        assert dropped > 100, f"the recorder's queue filled ({dropped} dropped)"
        assert 1 <= warnings <= 3, f"{warnings} warnings for {dropped:.0f} dropped events: one per 10 s, not one per event"
        healthy.stopped.set()
        opening.put(None)
        channel.close()
    finally:
        disk.thaw()
        server.stop()


def metric(server, name: str) -> float:
    return next(float(line.split()[-1]) for line in urlget(server, "/metrics").splitlines() if line.startswith(name))


def urlget(server, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{server.http}{path}", timeout=10) as response:
        return response.read().decode()
