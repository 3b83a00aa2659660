"""What the cluster's session directory costs on session open: two servers side by side in one
run, one on its own and one with `[cluster]` (Debian's nats-server -js on loopback; claiming a
session is a JetStream key-value read and create before it opens, and its record is written
once it runs). Each open is a raw Ingest call (grpcio, the stubs generated from proto/): the
header and one chunk of 16 samples; the time is from starting the call to the chunk's
acknowledgement, which the server sends once the session is open and has taken the chunk.
Opens alternate between the two servers. A benchmark, not a test (no pass/fail):

    .venv/bin/python tests/python/bench_directory.py [--opens 200]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import QUIET, header, myelin_bin, pb, rpc  # noqa: E402
from common import live  # noqa: E402
from test_cluster import free_port  # noqa: E402
from test_nats import Nats  # noqa: E402


def open_once(stub, session: str) -> float:
    chunk = pb.IngestRequest(chunk=pb.SampleChunk(
        first_sample_index=0, n_samples=16, samples=np.zeros((16, len(QUIET)), "<f4").tobytes(),
        regular=pb.RegularTimestamps(first_seconds=time.time(), rate_hz=128.0)))
    started = time.perf_counter()
    call = stub.Stream(iter([header(session), chunk]))
    for reply in call:
        if reply.samples_accepted_until >= 16:
            elapsed = time.perf_counter() - started
            call.cancel()
            return elapsed
    raise RuntimeError(f"session {session}: the stream ended without acknowledging the chunk")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opens", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"nats://127.0.0.1:{free_port()}"
        nats = Nats(int(url.rsplit(":", 1)[1]), store=f"{tmp}/jetstream")
        single = live.Server(myelin_bin())
        replica = live.Server(myelin_bin(), env={"MYELIN_CLUSTER__REPLICA": "bench-0", "MYELIN_CLUSTER__NATS_URL": url})
        times: dict[str, list[float]] = {"single server": [], "with the directory": []}
        try:
            channels = {name: grpc.insecure_channel(s.grpc) for name, s in (("single server", single), ("with the directory", replica))}
            stubs = {name: rpc.IngestStub(c) for name, c in channels.items()}
            for i in range(-10, args.opens):  # the first ten warm up both
                for name, stub in stubs.items():
                    elapsed = open_once(stub, f"bench-{i + 10:05d}")
                    if i >= 0:
                        times[name].append(elapsed * 1e3)
        finally:
            single.stop()
            replica.stop()
            nats.stop()
    print(f"session open to first acknowledgement, {args.opens} opens each, alternating:")
    print("| server | p50 | p99 | max |")
    print("|---|---|---|---|")
    for name, values in times.items():
        v = np.asarray(values)
        print(f"| {name} | {np.percentile(v, 50):.2f} ms | {np.percentile(v, 99):.2f} ms | {v.max():.2f} ms |")
    a, b = (np.asarray(times[k]) for k in times)
    print(f"| directory / single | x{np.percentile(b, 50) / np.percentile(a, 50):.2f} (+{np.percentile(b, 50) - np.percentile(a, 50):.2f} ms) "
          f"| x{np.percentile(b, 99) / np.percentile(a, 99):.2f} | |")


if __name__ == "__main__":
    main()
