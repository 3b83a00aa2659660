"""Notebook-style: stream a bundled real recording into the server as fast as it takes it, decode
every stimulus with the bundled ERP model, and plot p(target) per stimulus by its true class
(matplotlib when installed, a text plot otherwise).

    python stream_recording.py --server 127.0.0.1:50051 --recording models/data/p300/<run>.csv.gz [--plot out.png]"""

from __future__ import annotations

import argparse
import csv
import gzip

import numpy as np
import numpy.typing as npt

import myelin


def read_recording(path: str) -> tuple[list[str], npt.NDArray[np.float32], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    with (gzip.open if str(path).endswith(".gz") else open)(path, "rt") as f:
        rows = list(csv.reader(f))
    head = rows[0]
    channels = ["TP9", "AF7", "AF8", "TP10"]
    idx = [head.index(c) for c in channels]
    mcol = next(i for i, h in enumerate(head) if h.startswith("Marker"))
    data = np.array([[float(r[i]) for i in idx] for r in rows[1:]], dtype=np.float32)
    return channels, data, np.array([float(r[0]) for r in rows[1:]]), np.array([int(float(r[mcol])) for r in rows[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--recording", required=True)
    parser.add_argument("--plot", help="save the plot here (PNG) instead of showing it")
    args = parser.parse_args()

    channels, data, stamps, codes = read_recording(args.recording)
    with myelin.Client(args.server) as client:
        stream = client.open_session("notebook", channels, rate=256)
        erp = client.attach("notebook", "erp-linear-muse", marker_codes=[1, 2], latency_budget_ms=1000)
        with client.subscribe(attachment=erp.attachment_id) as predictions:
            onsets = np.flatnonzero(codes)
            for begin in range(0, len(data), 64):
                end = min(begin + 64, len(data))
                stream.push(data[begin:end], stamps[begin:end])
                stream.markers([(stamps[i], codes[i]) for i in onsets[(onsets >= begin) & (onsets < end)]])
            stream.close()
            # The attachment's stream ends once the session has ended and its last window is out.
            got = list(predictions)
    # Event-locked: every window opens at a marker.
    target = np.array([p.probabilities[1] for p in got if p.trigger is not None and p.trigger.code == 2])
    other = np.array([p.probabilities[1] for p in got if p.trigger is not None and p.trigger.code == 1])
    print(
        f"{len(got)} predictions: mean p(target) {target.mean():.3f} on targets ({len(target)}), "
        f"{other.mean():.3f} on non-targets ({len(other)})"
    )
    try:
        import matplotlib

        if args.plot:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        plt.hist([other, target], bins=20, label=["non-target", "target"])
        plt.xlabel("p(target)")
        plt.ylabel("stimuli")
        plt.legend()
        plt.savefig(args.plot) if args.plot else plt.show()
    except ImportError:
        for name, values in (("non-target", other), ("target", target)):
            counts, _ = np.histogram(values, bins=10, range=(0, 1))
            print(f"{name:>10} " + " ".join(f"{c:3d}" for c in counts) + "   (p(target) in tenths)")


if __name__ == "__main__":
    main()
