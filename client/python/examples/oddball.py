"""A PsychoPy-style visual oddball: show a stimulus, send a marker at its onset, react to the
decoder's prediction for it. Runs headless without PsychoPy (the "screen" prints), with a
bundled real Muse recording standing in for the amplifier: its EEG is pushed in real time (or
faster, --speed) and its stimulus sequence is what the loop presents.

    python oddball.py --server 127.0.0.1:50051 --recording models/data/p300/<run>.csv.gz

Exit status 0 when every stimulus got its prediction."""

from __future__ import annotations

import argparse
import csv
import gzip
import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt

import myelin

CHANNELS = ["TP9", "AF7", "AF8", "TP10"]


def read_recording(path: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """eeg-notebooks CSV: (samples [n, 4], timestamps [n], marker codes [n])."""
    with (gzip.open if str(path).endswith(".gz") else open)(path, "rt") as f:
        rows = list(csv.reader(f))
    head = rows[0]
    idx = [head.index(c) for c in CHANNELS]
    mcol = next(i for i, h in enumerate(head) if h.startswith("Marker"))
    data = np.array([[float(r[i]) for i in idx] for r in rows[1:]], dtype=np.float32)
    return data, np.array([float(r[0]) for r in rows[1:]]), np.array([int(float(r[mcol])) for r in rows[1:]])


class Screen:
    """PsychoPy's window when it is installed, else a line on stdout per flip."""

    def __init__(self) -> None:
        self.window: Any  # a psychopy.visual.Window (PsychoPy is optional, untyped)
        try:
            from psychopy import visual

            self.window = visual.Window(fullscr=False)
        except Exception:
            self.window = None

    def show(self, text: str) -> None:
        if self.window is None:
            print(f"[screen] {text}", flush=True)
        else:
            from psychopy import visual

            visual.TextStim(self.window, text=text).draw()
            self.window.flip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--recording", required=True, help="an eeg-notebooks P300 CSV (models/data/p300/)")
    parser.add_argument("--speed", type=float, default=1.0, help="x real time")
    parser.add_argument("--trials", type=int, default=0, help="stimuli to present (0: all)")
    args = parser.parse_args()

    data, stamps, codes = read_recording(args.recording)
    rate = 256.0
    speed: float = args.speed
    client = myelin.Client(args.server)
    stream = client.open_session("oddball", CHANNELS, rate=rate)
    erp = client.attach("oddball", "erp-linear-muse", marker_codes=[1, 2], latency_budget_ms=500)
    predictions = client.subscribe(attachment=erp.attachment_id)
    # The recording's clock, moved onto this stream's: sample i is at start + (t_i - t_0).
    start = stream.now()
    times = start + (stamps - stamps[0])
    onsets = np.flatnonzero(codes)
    if args.trials:
        onsets = onsets[: args.trials]
    # Two seconds past the last onset: its window ends 0.75 s after it, and the decoder reads a
    # little beyond (erp.window_lookahead_samples) before it decodes.
    last_sample = min(len(data), int(onsets[-1]) + 2 * int(rate))
    began = time.monotonic()

    def wall(t: float) -> float:
        return began + (t - start) / speed

    def amplifier() -> None:
        for i in range(0, last_sample, 8):
            j = min(i + 8, last_sample)
            time.sleep(max(0.0, wall(times[j - 1]) - time.monotonic()))
            stream.push(data[i:j], times[i:j])

    pushing = threading.Thread(target=amplifier, daemon=True)
    pushing.start()
    received: dict[float, myelin.Prediction] = {}
    done = threading.Event()

    def react() -> None:
        for p in predictions:
            assert p.trigger is not None  # event-locked: every window opens at a marker
            kind = "target" if p.trigger.code == 2 else "non-target"
            received[p.trigger.timestamp] = p
            print(
                f"[decoder] {kind:10} -> p(target) = {p.probabilities[1]:.2f} ({p.status}, {p.timing.server_latency * 1e3:.2f} ms)",
                flush=True,
            )
            if len(received) == len(onsets):
                done.set()
                return

    threading.Thread(target=react, daemon=True).start()
    screen = Screen()
    for i in onsets:
        time.sleep(max(0.0, wall(times[i]) - time.monotonic()))
        screen.show("X" if codes[i] == 2 else "O")
        stream.marker(int(codes[i]), timestamp=float(times[i]))  # at the flip: the stimulus onset
    pushing.join()
    done.wait(timeout=30)
    predictions.cancel()
    stream.close()
    missing = len(onsets) - len(received)
    print(f"{len(onsets)} stimuli, {len(received)} predictions, {missing} missing", flush=True)
    raise SystemExit(0 if missing == 0 else 1)


if __name__ == "__main__":
    main()
