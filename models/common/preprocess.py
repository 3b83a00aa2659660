"""Offline twin of the server's online preprocessing (server/src/dsp).

Training and evaluation code use these functions so that a model sees, offline, exactly the
windows the server will feed it online. The server's parity test (tests/python/test_dsp_parity.py
and the golden vectors of models/fixtures) checks the two against each other.

Order of operations, as in the server:
  1. causal IIR filter (scipy.signal.sosfilt, zero initial state) over the whole stream at the
     stream rate, on the model's channels;
  2. cut [start, start + length) stream samples;
  3. decimate by an integer factor (x[::k], the filter is the anti-alias stage);
  4. re-reference (average of the model's channels), if asked;
  5. baseline correction over the card's baseline interval;
  6. scaling (fixed centre/scale from the card, or per-window z-score);
  7. clamping.
"""
from __future__ import annotations

import numpy as np
from scipy import signal


def design_sos(bandpass=None, notch=None, rate=None, order=4):
    """Butterworth band-pass (and optional notch) as second-order sections at `rate` Hz."""
    sections = []
    if bandpass is not None:
        sections.append(signal.butter(order, bandpass, btype="bandpass", fs=rate, output="sos"))
    if notch is not None:
        freq, q = notch
        b, a = signal.iirnotch(freq, q, fs=rate)
        sections.append(signal.tf2sos(b, a))
    if not sections:
        return np.zeros((0, 6))
    return np.concatenate(sections, axis=0)


def filter_stream(samples: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """samples: [n_samples, n_channels] float32 as received. Returns float32 like the server,
    which filters in float64 and stores float32."""
    x = samples.astype(np.float64)
    if len(sos):
        x = signal.sosfilt(sos, x, axis=0)
    return x.astype(np.float32)


def window_from_filtered(filtered: np.ndarray, start: int, card: dict, stream_rate: float,
                         window_tmin: float | None = None) -> np.ndarray:
    """Cut and preprocess one window. filtered: [n_samples, model_channels] at the stream rate.
    Returns the model input for one example, laid out as the card says (without batch dim)."""
    model_rate = card["sample_rate_hz"]
    k = int(round(stream_rate / model_rate))
    tmin, tmax = card["window"]["tmin_s"], card["window"]["tmax_s"]
    t = int(round((tmax - tmin) * model_rate))
    seg = filtered[start:start + t * k].astype(np.float32)
    x = seg[::k].T.copy()  # [C, T]
    pre = card.get("preprocessing", {})
    # The server computes in float64 and stores float32 after each step; mirror that.
    if pre.get("reference", "none") == "average" and x.shape[0] > 1:
        x = (x.astype(np.float64) - x.astype(np.float64).mean(axis=0, keepdims=True)).astype(np.float32)
    if pre.get("baseline_s") is not None:
        wt = tmin if window_tmin is None else window_tmin
        b0, b1 = pre["baseline_s"]
        i0 = min(max(int(round((b0 - wt) * model_rate)), 0), t)
        i1 = min(max(int(round((b1 - wt) * model_rate)), 0), t)
        if i1 > i0:
            mean = x[:, i0:i1].astype(np.float64).mean(axis=1, keepdims=True)
            x = (x.astype(np.float64) - mean).astype(np.float32)
    scaling = pre.get("scaling", {"kind": "none"})
    if scaling["kind"] == "fixed":
        c = np.asarray(scaling["center"], dtype=np.float64)[:, None]
        s = np.asarray(scaling["scale"], dtype=np.float64)[:, None]
        x = ((x.astype(np.float64) - c) / s).astype(np.float32)
    elif scaling["kind"] == "window_zscore":
        eps = scaling.get("epsilon", 1e-6)
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=1, keepdims=True)
        std = np.sqrt(((x64 - mean) ** 2).mean(axis=1, keepdims=True)) + eps
        x = ((x64 - mean) / std).astype(np.float32)
    if pre.get("clamp") is not None:
        lim = np.float32(pre["clamp"])
        x = np.clip(x, -lim, lim)
    if card["input"]["layout"] == "time_channels":
        x = x.T.copy()
    return x
