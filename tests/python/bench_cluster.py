"""What Envoy in the path costs: one replica, two rigs streaming at the same time in real time
(4 channels at 256 Hz, chunks of 8 samples, sliding windows every 125 ms into erp-linear-muse),
one straight to the replica and one through Envoy (deploy/envoy/, plaintext on loopback), each
with its own subscriber. Latency is what a client sees: from sending the chunk that holds a
window's last sample (and the samples its resampling looks ahead to) to receiving its prediction. A benchmark, not a test (no pass/fail):

    .venv/bin/python tests/python/bench_cluster.py [--seconds 60]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models"))

import conftest  # noqa: E402,F401  (the generated stubs on the path)
import myelin  # noqa: E402
from common import live  # noqa: E402
from test_cluster import Envoy  # noqa: E402

RATE, CHUNK, CHANNELS = 256, 8, ["TP9", "AF7", "AF8", "TP10"]


def rig(address: str, session: str, seconds: float, out: dict, start: threading.Barrier):
    sent: dict[int, float] = {}  # index of a chunk's last sample -> when it was sent
    latencies: list[float] = []
    rng = np.random.default_rng(7)
    with myelin.Client(address) as client:
        stream = client.open_session(session, CHANNELS, rate=RATE)
        attached = client.attach(session, "erp-linear-muse", hop_s=0.125, latency_budget_ms=100)
        # A window is cut once the samples its resampling looks ahead to have arrived.
        ahead = attached.window_lookahead_samples
        subscription = client.subscribe(attachment=attached.attachment_id)

        def read():
            for p in subscription:
                now = time.perf_counter()
                chunk_end = ((p.window.last_index + ahead) // CHUNK) * CHUNK + CHUNK - 1
                if chunk_end in sent:
                    latencies.append(now - sent[chunk_end])

        threading.Thread(target=read, daemon=True).start()
        start.wait()
        begin = time.perf_counter()
        for k in range(int(seconds * RATE / CHUNK)):
            time.sleep(max(0.0, begin + (k + 1) * CHUNK / RATE - time.perf_counter()))
            sent[k * CHUNK + CHUNK - 1] = time.perf_counter()
            stream.push(rng.standard_normal((CHUNK, 4)))
        stream.wait_acknowledged()
        time.sleep(0.5)
        subscription.cancel()
        stream.close()
    out[session] = np.asarray(latencies) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    server = live.Server(conftest.myelin_bin())
    envoy = Envoy(Path(tempfile.mkdtemp()), {"myelin-0": server})
    try:
        envoy.wait_healthy({"myelin-0"})
        out: dict[str, np.ndarray] = {}
        start = threading.Barrier(2)
        rigs = [threading.Thread(target=rig, args=(server.grpc, "direct", args.seconds, out, start)),
                threading.Thread(target=rig, args=(envoy.address, "via-envoy", args.seconds, out, start))]
        for r in rigs:
            r.start()
        for r in rigs:
            r.join()
    finally:
        envoy.stop()
        server.stop()
    print(f"{args.seconds:.0f} s, both rigs at once; client-seen latency, send of the window's last chunk -> prediction received")
    print(f"{'path':<10} {'windows':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for name in ("direct", "via-envoy"):
        v = out[name]
        print(f"{name:<10} {len(v):>7} {np.percentile(v, 50):>7.2f} {np.percentile(v, 99):>7.2f} {v.max():>7.2f}")
    d, e = out["direct"], out["via-envoy"]
    print(f"Envoy / direct: p50 x{np.percentile(e, 50) / np.percentile(d, 50):.2f}, p99 x{np.percentile(e, 99) / np.percentile(d, 99):.2f}; "
          f"p50 +{np.percentile(e, 50) - np.percentile(d, 50):.2f} ms")


if __name__ == "__main__":
    main()
