"""Reading the bundled P300 recordings (models/data/p300: eeg-notebooks CSV, gzipped)."""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np

CHANNELS = ["TP9", "AF7", "AF8", "TP10"]
RATE = 256.0


def read_run(path: Path, channels=None):
    """(samples [n, channels] float32, marker codes [n], timestamps [n], channel labels).
    `channels=None` keeps every signal column (Right AUX included)."""
    opener = gzip.open if Path(path).suffix == ".gz" else open
    with opener(path, "rt") as f:
        rows = list(csv.reader(f))
    head = rows[0]
    if channels is None:
        channels = [h for h in head if h != "timestamps" and not h.startswith("Marker")]
    idx = [head.index(c) for c in channels]
    mcol = next(i for i, h in enumerate(head) if h.startswith("Marker"))
    data = np.array([[float(r[i]) for i in idx] for r in rows[1:]], dtype=np.float32)
    markers = np.array([int(float(r[mcol])) for r in rows[1:]])
    timestamps = np.array([float(r[0]) for r in rows[1:]])
    return data, markers, timestamps, list(channels)


def runs(data_dir: Path, session: str):
    """The run files of a session ("subject1_session2"), in recording order."""
    return sorted(Path(data_dir).glob(session + "_*.csv*"))


def read_session(data_dir: Path, session: str):
    """All runs of a session on one continuous clock, 1 s between runs: (channel labels,
    samples [n, channels], timestamps [n], marker codes [n])."""
    parts, codes, stamps, start, channels = [], [], [], None, None
    for path in runs(data_dir, session):
        data, markers, ts, channels = read_run(path)
        start = ts[0] if start is None else start
        ts = ts - ts[0] + start
        start = ts[-1] + 1.0
        parts.append(data)
        stamps.append(ts)
        codes.append(markers)
    return channels, np.concatenate(parts), np.concatenate(stamps), np.concatenate(codes)
