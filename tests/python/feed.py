"""Feeding a recording through the public client, as a rig or task script would."""
from __future__ import annotations

import time

import numpy as np

import myelin


def push_recording(session: myelin.SessionStream, data, stamps, codes, speed: float = 0.0, chunk: int = 16):
    """Pushes samples [n, C] stamped `stamps`, each chunk's markers (nonzero `codes`) right after
    it, at `speed` x real time (0: as fast as the server takes them)."""
    started = time.monotonic()
    for begin in range(0, len(data), chunk):
        end = min(begin + chunk, len(data))
        if speed:
            time.sleep(max(0.0, started + (stamps[end - 1] - stamps[0]) / speed - time.monotonic()))
        session.push(data[begin:end], stamps[begin:end])
        onsets = np.flatnonzero(codes[begin:end]) + begin
        session.markers([(stamps[i], codes[i]) for i in onsets])
