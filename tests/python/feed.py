"""Feeding a recording through the public client, as a rig or task script would."""
from __future__ import annotations

import threading
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


def collect(client: myelin.Client, attachment_id: str) -> list:
    """Every prediction of an attachment from now on, appended by a reader thread."""
    got: list = []
    subscription = client.subscribe(attachment=attachment_id)
    threading.Thread(target=lambda: got.extend(subscription), daemon=True).start()
    time.sleep(0.3)
    return got


def wait_for(got: list, count: int, timeout: float = 20.0) -> list:
    """Waits until `got` holds `count` items (or `timeout` passes); returns it."""
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return got
