"""Offline twin of the server's online preprocessing (server/src/dsp).

Training and evaluation code use these functions so that a model sees, offline, exactly the
windows the server will feed it online. The parity tests check the two against each other:
tests/python/test_resampling.py (filter design and rational resampling against scipy, through
the live server) and tests/tests/golden_e2e.rs (the golden vectors of models/fixtures).

Order of operations, as in the server:
  1. causal IIR filter (scipy.signal.sosfilt, zero initial state) over the whole stream at the
     stream rate, on the model's channels: the card's fixed `filter` sections (for streams at its
     design rate only), or its `filters` specification designed for the stream's rate
     (scipy.signal.butter / iirnotch);
  2. cut the window starting at stream sample `start`;
  3. to the model's rate: decimate by an integer factor (x[::k], the filter is the anti-alias
     stage), or, for `resample = "polyphase"`, resample by the rational ratio model/stream with
     scipy.signal.resample_poly's filter, the model's grid starting at `start` and reading the
     stream on both sides of the window (what the server waits for before decoding);
  4. re-reference (average of the model's channels), if asked;
  5. baseline correction over the card's baseline interval;
  6. scaling (fixed centre/scale from the card, per-window z-score, or the session's own
     median/IQR fitted on its first seconds);
  7. clamping.
"""
from __future__ import annotations

import math

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


def design_filters(filters: list, rate: float) -> np.ndarray:
    """A card's `preprocessing.filters` specification as second-order sections at `rate` Hz."""
    sections = []
    for f in filters:
        kind = f["kind"]
        if kind == "notch":
            b, a = signal.iirnotch(f["freq_hz"], f["quality"], fs=rate)
            sections.append(np.concatenate([b, a])[None, :])
        elif kind in ("lowpass", "highpass"):
            sections.append(signal.butter(f["order"], f["cutoff_hz"], btype=kind, fs=rate, output="sos"))
        elif kind in ("bandpass", "bandstop"):
            sections.append(signal.butter(f["order"], [f["low_hz"], f["high_hz"]], btype=kind, fs=rate, output="sos"))
        else:
            raise ValueError(f"unknown filter kind {kind!r}")
    if not sections:
        return np.zeros((0, 6))
    return np.concatenate(sections, axis=0)


def card_sos(card: dict, stream_rate: float) -> np.ndarray:
    """The stream filter the server uses for this card on a stream at `stream_rate` Hz."""
    pre = card.get("preprocessing", {})
    if pre.get("filter") is not None:
        fixed = pre["filter"]
        if abs(fixed["design_rate_hz"] - stream_rate) > 1e-9:
            raise ValueError(f"{card['id']}: fixed filter coefficients are for {fixed['design_rate_hz']} Hz streams")
        return np.asarray(fixed["sos"], dtype=np.float64)
    return design_filters(pre.get("filters", []), stream_rate)


def resample_ratio(stream_rate: float, model_rate: float) -> tuple[int, int]:
    """(up, down): model_rate / stream_rate reduced, from rates in millihertz (as the server)."""
    fs, fm = int(round(stream_rate * 1000)), int(round(model_rate * 1000))
    g = math.gcd(fs, fm)
    return fm // g, fs // g


def polyphase_reach(up: int, down: int, t: int, half_width: int = 10) -> tuple[int, int]:
    """(history, reach): stream samples a window of `t` model samples reads before its first
    sample, and from its first sample on (the filter spans +-half_width samples of the slower
    rate; scipy's default is 10)."""
    half = half_width * max(up, down)
    return half // up, ((t - 1) * down + half) // up + 1


def window_reach(card: dict, stream_rate: float) -> int:
    """Stream samples from a window's first sample through the last one it reads (the server
    decodes the window once they have arrived): a window starting at `start` needs the
    stream up to start + reach."""
    model_rate = card["sample_rate_hz"]
    t = int(round((card["window"]["tmax_s"] - card["window"]["tmin_s"]) * model_rate))
    up, down = resample_ratio(stream_rate, model_rate)
    if card.get("preprocessing", {}).get("resample", "decimate") == "polyphase" and (up, down) != (1, 1):
        return polyphase_reach(up, down, t, card["preprocessing"].get("resample_half_width", 10))[1]
    return t * int(round(stream_rate / model_rate))


def polyphase_window(filtered: np.ndarray, start: int, up: int, down: int, t: int, half_width: int = 10) -> np.ndarray:
    """Model samples 0..t of the window whose first stream sample is `start`: sample j at stream
    time start + j * down / up, by scipy.signal.resample_poly on a segment that begins a whole
    number of output samples earlier. Returns [t, channels] float32."""
    history, reach = polyphase_reach(up, down, t, half_width)
    q = -(-history // down)  # whole output samples of lead-in covering the filter's history
    s0, end = start - q * down, start + reach
    seg = np.zeros((end - s0, filtered.shape[1]), dtype=np.float64)
    lo = max(s0, 0)
    seg[lo - s0:] = filtered[lo:end]
    # resample_poly's own filter for this half-width (its default design when half_width = 10).
    taps = signal.firwin(2 * half_width * max(up, down) + 1, 1.0 / max(up, down), window=("kaiser", 5.0))
    y = signal.resample_poly(seg, up, down, axis=0, window=taps, padtype="constant")
    return y[q * up:q * up + t].astype(np.float32)


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
    tmin, tmax = card["window"]["tmin_s"], card["window"]["tmax_s"]
    t = int(round((tmax - tmin) * model_rate))
    pre = card.get("preprocessing", {})
    up, down = resample_ratio(stream_rate, model_rate)
    if pre.get("resample", "decimate") == "polyphase" and (up, down) != (1, 1):
        x = polyphase_window(filtered, start, up, down, t, pre.get("resample_half_width", 10)).T.copy()  # [C, T]
    else:
        k = int(round(stream_rate / model_rate))
        seg = filtered[start:start + t * k].astype(np.float32)
        x = seg[::k].T.copy()  # [C, T]
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
    elif scaling["kind"] == "session_robust":
        # Median and IQR per channel of the first fit_seconds of the filtered stream, as the
        # server fits them on the first samples an attachment filters (a stream from its start).
        n = max(1, int(round(scaling["fit_seconds"] * stream_rate)))
        q25, q50, q75 = np.percentile(filtered[:n].astype(np.float64), [25, 50, 75], axis=0)
        iqr = q75 - q25
        iqr[~(iqr > 0)] = 1.0
        x = ((x.astype(np.float64) - q50[:, None]) / iqr[:, None]).astype(np.float32)
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
