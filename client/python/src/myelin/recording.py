"""Myelin's recordings (XDF) read into MNE-Python: the signal as an `mne.io.Raw`, the session's
markers and every attachment's predictions as its annotations.

Needs the `mne` extra (`pip install "myelin-client[mne]"`: MNE-Python and pyxdf); importing
`myelin` does not.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import mne

# Units a recording's channels may carry, as the factor that takes them to MNE's SI units.
_TO_SI = {
    "v": 1.0,
    "volts": 1.0,
    "mv": 1e-3,
    "millivolts": 1e-3,
    "uv": 1e-6,
    "µv": 1e-6,
    "μv": 1e-6,
    "microvolts": 1e-6,
    "nv": 1e-9,
    "nanovolts": 1e-9,
    "t": 1.0,
    "tesla": 1.0,
    "ft": 1e-15,
    "femtotesla": 1e-15,
}
# XDF channel types (the stream's modality when a channel has none) as MNE channel types.
_MNE_TYPES = {
    "eeg": "eeg",
    "seeg": "seeg",
    "ecog": "ecog",
    "meg": "mag",
    "mag": "mag",
    "grad": "grad",
    "eog": "eog",
    "emg": "emg",
    "ecg": "ecg",
}


@dataclass(frozen=True)
class _Event:
    timestamp: float
    description: str


def read_recording(path: str | os.PathLike[str], *, predictions: bool = True, stream: str | None = None) -> mne.io.RawArray:
    """Reads a recording Myelin wrote (`recording.enabled`) into an `mne.io.Raw`.

    - The signal: the file's sampled stream (or the one named `stream`), in SI units (channels
      recorded in microvolts are scaled to volts, as MNE expects), channel types from the
      recording (EEG, sEEG, ECoG; MEG as magnetometers; anything else `misc`).
    - Annotations: each marker (description: its label, or its code), and with `predictions`,
      each prediction at the last sample of its window, described as
      `prediction/<attachment>: <top label or id>` (or `: <status>` when it is not ok); the
      prediction's JSON as recorded is kept in the annotation's `extras` under "prediction".
      Onsets are placed by timestamp on the samples' own timestamps, so a gap the session
      repaired or a clock that drifted does not shift them.
    """
    try:
        import mne
        import pyxdf
    except ImportError as error:  # pragma: no cover - depends on the extra
        raise ImportError('read_recording needs MNE-Python and pyxdf: pip install "myelin-client[mne]"') from error

    # The data timestamps are already on the recording machine's clock (the server corrected
    # LSL sources); pyxdf's own synchronisation and dejittering would move them.
    streams, header = pyxdf.load_xdf(os.fspath(path), synchronize_clocks=False, dejitter_timestamps=False)
    data = _signal_stream(streams, stream)
    info = data["info"]
    timestamps = np.asarray(data["time_stamps"], dtype=np.float64)
    values = np.asarray(data["time_series"], dtype=np.float64)
    if values.ndim != 2 or len(timestamps) == 0:
        raise ValueError(f"{os.fspath(path)}: stream {_first(info, 'name')!r} has no samples")
    rate = float(_first(info, "nominal_srate"))
    names, kinds, scales = _channels(info, values.shape[1])
    raw = mne.io.RawArray((values * scales).T, mne.create_info(names, rate, kinds), verbose="error")

    events: list[_Event] = []
    extras: list[dict[str, Any]] = []
    for s in streams:
        name = _first(s["info"], "name")
        kind = _first(s["info"], "type")
        if name.endswith("/markers") and kind == "Markers":
            for t, v in zip(s["time_stamps"], s["time_series"], strict=True):
                events.append(_Event(float(t), str(v[0])))
                extras.append({})
        elif predictions and kind == "Predictions":
            attachment = name.removeprefix("predictions/")
            for t, v in zip(s["time_stamps"], s["time_series"], strict=True):
                recorded = json.loads(v[0])
                events.append(_Event(float(t), f"prediction/{attachment}: {_outcome(recorded)}"))
                extras.append({"prediction": v[0]})
    if events:
        # Onset: the fractional sample index of the event's timestamp on the samples' own clock.
        index = np.interp([e.timestamp for e in events], timestamps, np.arange(len(timestamps), dtype=np.float64))
        raw.set_annotations(
            mne.Annotations(
                onset=index / rate,
                duration=np.zeros(len(events)),
                description=[e.description for e in events],
                extras=extras,
            )
        )
    _set_meas_date(raw, header)
    return raw


def _first(info: dict[str, Any], key: str) -> str:
    value = info.get(key, [""])
    return str(value[0]) if value else ""


def _signal_stream(streams: list[dict[str, Any]], name: str | None) -> dict[str, Any]:
    sampled = [s for s in streams if _first(s["info"], "channel_format") != "string" and float(_first(s["info"], "nominal_srate") or 0) > 0]
    if name is not None:
        sampled = [s for s in sampled if _first(s["info"], "name") == name]
    if not sampled:
        found = ", ".join(repr(_first(s["info"], "name")) for s in streams)
        raise ValueError(f"no sampled stream{f' named {name!r}' if name else ''} in the recording (streams: {found})")
    return sampled[0]


def _channels(info: dict[str, Any], count: int) -> tuple[list[str], list[str], npt.NDArray[np.float64]]:
    modality = _first(info, "type").lower()
    described: list[dict[str, Any]] = []
    with contextlib.suppress(KeyError, IndexError, TypeError):
        described = info["desc"][0]["channels"][0]["channel"]
    names, kinds, scales = [], [], np.ones(count)
    for i in range(count):
        channel = described[i] if i < len(described) else {}
        label = _first(channel, "label") if channel else ""
        names.append(label or f"ch{i + 1}")
        unit = (_first(channel, "unit") if channel else "").strip().lower()
        kind = _MNE_TYPES.get((_first(channel, "type") if channel else "").lower()) or _MNE_TYPES.get(modality, "misc")
        if unit in _TO_SI:
            scales[i] = _TO_SI[unit]
        elif kind != "misc":
            # A unit MNE would misread: keep the values as recorded, typed as misc.
            kind = "misc"
        kinds.append(kind)
    return names, kinds, scales


def _outcome(prediction: dict[str, Any]) -> str:
    status = str(prediction.get("status", ""))
    if status != "ok":
        return status
    if "probabilities" in prediction and prediction.get("labels"):
        probabilities = prediction["probabilities"]
        return str(prediction["labels"][int(np.argmax(probabilities))])
    if prediction.get("ids"):
        return str(prediction["ids"][0])
    return status


def _set_meas_date(raw: mne.io.RawArray, header: dict[str, Any]) -> None:
    """The file header's UTC datetime, where it has one MNE accepts."""
    from datetime import datetime, timezone

    stamp = _first(header.get("info", {}), "datetime")
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return
    raw.set_meas_date(when if when.tzinfo else when.replace(tzinfo=timezone.utc))
