"""Any stream rate: filters the server designs from a card's specification for the stream's own
rate, checked against scipy.signal; windows resampled by rational ratios (256 -> 200 Hz,
1000 -> 120 Hz) through the live server, checked value for value against the offline twin
(models/common/preprocess.py, which uses scipy.signal.resample_poly); and the refusals a rig
gets when a card cannot serve its rate."""
from __future__ import annotations

import json
import subprocess
import threading
import time

import grpc
import numpy as np
import onnx
import pytest
from scipy import signal

import myelin
from common import cards, live, onnx_export, preprocess
from conftest import myelin_bin

# (filters, stream rate): every kind, low and high orders, narrow and wide bands, the rates rigs
# really stream at.
DESIGN_TABLE = [
    ([{"kind": "bandpass", "order": 4, "low_hz": 1.0, "high_hz": 20.0}], 256.0),
    ([{"kind": "bandpass", "order": 4, "low_hz": 0.5, "high_hz": 40.0}], 200.0),
    ([{"kind": "bandpass", "order": 4, "low_hz": 0.5, "high_hz": 40.0}], 250.0),
    ([{"kind": "bandpass", "order": 4, "low_hz": 0.5, "high_hz": 40.0}], 500.0),
    ([{"kind": "bandpass", "order": 4, "low_hz": 0.5, "high_hz": 40.0}], 1000.0),
    ([{"kind": "bandpass", "order": 2, "low_hz": 0.1, "high_hz": 40.0}], 1200.0),
    ([{"kind": "bandpass", "order": 2, "low_hz": 0.1, "high_hz": 40.0}], 2400.0),
    ([{"kind": "bandpass", "order": 8, "low_hz": 8.0, "high_hz": 12.0}], 512.0),
    ([{"kind": "bandpass", "order": 3, "low_hz": 0.5, "high_hz": 200.0}], 2048.0),
    ([{"kind": "lowpass", "order": 6, "cutoff_hz": 40.0}], 1000.0),
    ([{"kind": "lowpass", "order": 1, "cutoff_hz": 100.0}], 2048.0),
    ([{"kind": "highpass", "order": 1, "cutoff_hz": 0.5}], 256.0),
    ([{"kind": "highpass", "order": 5, "cutoff_hz": 0.1}], 600.0),
    ([{"kind": "bandstop", "order": 2, "low_hz": 48.0, "high_hz": 52.0}], 1000.0),
    ([{"kind": "notch", "freq_hz": 50.0, "quality": 30.0}], 1000.0),
    ([{"kind": "notch", "freq_hz": 60.0, "quality": 35.0}], 512.0),
    ([{"kind": "bandpass", "order": 2, "low_hz": 0.5, "high_hz": 200.0}, {"kind": "notch", "freq_hz": 50.0, "quality": 30.0}], 1000.0),
]

PROVENANCE = {
    "data_kind": "fixture",
    "training_data": "none: random weights (seeded); a test fixture, not a decoder",
    "split": "none",
    "command": ".venv/bin/python -m pytest tests/python/test_resampling.py",
    "notes": "Written by the test into a temporary directory.",
}


def write_card(directory, name, *, channels, model_rate, tmin, tmax, filters, resample="polyphase", seed=3, pre=None):
    """A linear fixture model whose second output is its own flattened input, so a prediction
    shows the exact window the server fed it."""
    n_t = int(round((tmax - tmin) * model_rate))
    card = {
        "id": name, "version": "1", "task": "classification", "modality": "eeg", "onnx": f"{name}.onnx",
        "description": "TEST FIXTURE: resampling", "channels": channels, "sample_rate_hz": model_rate,
        "labels": ["a", "b"], "window": {"tmin_s": tmin, "tmax_s": tmax},
        "preprocessing": {"filters": filters, "resample": resample, **(pre or {})},
        "input": {"name": "window", "shape": [-1, len(channels), n_t], "layout": "channels_time", "max_batch": 8},
        "output": {"name": "probs", "shape": [-1, 2], "kind": "probabilities", "embedding": "features"},
        "provenance": PROVENANCE,
    }
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((len(channels) * n_t, 2)).astype(np.float32) * 0.01
    model = onnx_export.linear_softmax(name.replace("-", "_"), weights, np.zeros(2, np.float32), len(channels), n_t, with_features=True)

    onnx.save(model, directory / f"{name}.onnx")
    cards.write(directory / f"{name}.card.toml", card)
    return cards.read(directory / f"{name}.card.toml")


def design(card_path, rate) -> dict:
    out = subprocess.run([myelin_bin(), "models", "design", str(card_path), "--rate", repr(rate)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("filters,rate", DESIGN_TABLE, ids=[f"{'+'.join(f['kind'] for f in fs)}-{r:g}Hz-{i}" for i, (fs, r) in enumerate(DESIGN_TABLE)])
def test_filters_designed_for_the_stream_rate_equal_scipy(tmp_path, filters, rate):
    write_card(tmp_path, "fixture-design", channels=["C3", "C4"], model_rate=100.0, tmin=0.0, tmax=0.5, filters=filters)
    got = np.asarray(design(tmp_path / "fixture-design.card.toml", rate)["sos"])
    expected = preprocess.design_filters(filters, rate)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    # And as a filter: the same impulse response.
    impulse = np.zeros(4096)
    impulse[0] = 1.0
    np.testing.assert_allclose(signal.sosfilt(got, impulse), signal.sosfilt(expected, impulse), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("stream_rate,model_rate,half_width",
                         [(256.0, 200.0, 10), (1000.0, 120.0, 10), (1200.0, 120.0, 10), (250.0, 64.0, 10), (2048.0, 200.0, 10),
                          (256.0, 32.0, 3), (500.0, 32.0, 1)])
def test_the_resampling_filter_is_scipys_resample_poly_filter(tmp_path, stream_rate, model_rate, half_width):
    write_card(tmp_path, "fixture-design", channels=["C3"], model_rate=model_rate, tmin=0.0, tmax=0.5,
               filters=[{"kind": "lowpass", "order": 2, "cutoff_hz": 15.0}], pre={"resample_half_width": half_width})
    resample = design(tmp_path / "fixture-design.card.toml", stream_rate)["resample"]
    up, down = preprocess.resample_ratio(stream_rate, model_rate)
    assert (resample["method"], resample["up"], resample["down"]) == ("polyphase", up, down)
    half = half_width * max(up, down)
    expected = signal.firwin(2 * half + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up
    if half_width == 10:  # scipy's own default filter, as resample_poly designs it
        assert len(expected) == 20 * max(up, down) + 1
    np.testing.assert_allclose(resample["taps"], expected, rtol=1e-9, atol=1e-15)
    history, reach = preprocess.polyphase_reach(up, down, int(round(0.5 * model_rate)), half_width)
    assert resample["history"] == history
    assert resample["lookahead"] == reach - ((int(round(0.5 * model_rate)) - 1) * down // up + 1)


def test_a_card_refuses_rates_it_cannot_serve_with_a_clear_error(tmp_path):
    write_card(tmp_path, "fixture-design", channels=["C3"], model_rate=50.0, tmin=0.0, tmax=0.5,
               filters=[{"kind": "bandpass", "order": 4, "low_hz": 0.5, "high_hz": 40.0}])
    out = subprocess.run([myelin_bin(), "models", "design", str(tmp_path / "fixture-design.card.toml"), "--rate", "64"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "band-pass 0.5-40 Hz, order 4 cannot be designed for a 64 Hz stream" in out.stderr
    assert "Nyquist frequency (32 Hz)" in out.stderr
    out = subprocess.run([myelin_bin(), "models", "design", str(tmp_path / "fixture-design.card.toml"), "--rate", "250.123"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "phases" in out.stderr, out.stderr


def stream_signal(rate: float, seconds: float, n_channels: int, seed: int):
    """EEG-like test signal: noise, a 10 Hz rhythm, 35 Hz, and 55/90 Hz content a 120 or 200 Hz
    model must not see aliased, per channel with its own phase and offset."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = rng.standard_normal((n, n_channels)) * 2.0
    for ch in range(n_channels):
        x[:, ch] += 20 * np.sin(2 * np.pi * 10 * t + ch) + 5 * np.sin(2 * np.pi * 35 * t + 2 * ch)
        x[:, ch] += 8 * np.sin(2 * np.pi * 55 * t + ch) + 8 * np.sin(2 * np.pi * 90 * t) + 30.0 * ch
    return x.astype(np.float32)


def serve_and_collect(server, session, card, x, rate, onsets, **attach):
    stamps = 5000.0 + np.arange(len(x)) / rate
    got = []
    with myelin.Client(server.grpc) as client:
        stream = client.open_session(session, card["channels"], rate=rate)
        attachment = client.attach(session, card["id"], marker_codes=[7], latency_budget_ms=10000, include_embedding=True, **attach)
        subscription = client.subscribe(attachment=attachment.attachment_id)
        threading.Thread(target=lambda: got.extend(subscription), daemon=True).start()
        time.sleep(0.3)
        onset_set = set(onsets)
        for begin in range(0, len(x), 50):
            end = min(begin + 50, len(x))
            stream.push(x[begin:end], stamps[begin:end])
            stream.markers([(stamps[i], 7) for i in range(begin, end) if i in onset_set])
        stream.wait_acknowledged()
        deadline = time.time() + 60
        while len(got) < len(onsets) and time.time() < deadline:
            time.sleep(0.1)
        subscription.cancel()
        stream.close()
    return attachment, got


@pytest.mark.parametrize("stream_rate,model_rate,tmin,tmax", [(256.0, 200.0, -0.2, 0.8), (1000.0, 120.0, -0.5, 1.0)])
def test_served_windows_equal_the_offline_twin_after_rational_resampling(tmp_path, stream_rate, model_rate, tmin, tmax):
    models = tmp_path / "models"
    models.mkdir()
    channels = ["Fz", "Cz", "Pz", "Oz"]
    name = f"fixture-resample-{int(model_rate)}"
    card = write_card(models, name, channels=channels, model_rate=model_rate, tmin=tmin, tmax=tmax,
                      filters=[{"kind": "bandpass", "order": 4, "low_hz": 0.5, "high_hz": 40.0},
                               {"kind": "notch", "freq_hz": 50.0, "quality": 30.0}],
                      pre={"reference": "average", "baseline_s": [tmin, 0.0], "clamp": 50.0})
    x = stream_signal(stream_rate, 30.0, len(channels), seed=int(stream_rate))
    # Onsets at irregular sample positions, the first close to the stream's start (the filter
    # then reads zeros before it, as offline) and none whose window runs past the end.
    rng = np.random.default_rng(1)
    first = int(round(-tmin * stream_rate)) + 1
    onsets = [first] + (first + np.cumsum(rng.integers(int(0.6 * stream_rate), int(1.3 * stream_rate), size=20))).tolist()
    onsets = [o for o in onsets if o + (tmax + 0.5) * stream_rate < len(x)]
    server = live.Server(myelin_bin(), env={"MYELIN_MODELS__DIR": str(models)})
    try:
        attachment, got = serve_and_collect(server, "resampled", card, x, stream_rate, onsets)
    finally:
        server.stop()
    up, down = preprocess.resample_ratio(stream_rate, model_rate)
    history, reach = preprocess.polyphase_reach(up, down, card["input"]["shape"][2])
    span = ((card["input"]["shape"][2] - 1) * down) // up + 1
    assert attachment.window_lookahead_samples == reach - span > 0
    assert len(got) == len(onsets), [p.error_reason for p in got if p.status != "ok"]
    assert all(p.status == "ok" for p in got), [p.error_reason for p in got]
    filtered = preprocess.filter_stream(x, preprocess.card_sos(card, stream_rate))
    offset = int(round(tmin * stream_rate))
    for p in got:
        start = p.window.first_index
        assert start - offset in onsets
        expected = preprocess.window_from_filtered(filtered, start, card, stream_rate)
        np.testing.assert_allclose(np.asarray(p.embedding).reshape(expected.shape), expected, rtol=1e-4, atol=2e-4)


def test_session_robust_scaling_is_fitted_on_the_first_seconds_then_frozen(tmp_path):
    """Robust scaling fitted per session (median / IQR of the first 2 s the attachment filters):
    windows cut before the fit are refused with the reason; every later one equals the twin."""
    models = tmp_path / "models"
    models.mkdir()
    channels = ["Fz", "Cz", "Pz", "Oz"]
    card = write_card(models, "fixture-robust", channels=channels, model_rate=200.0, tmin=-0.2, tmax=0.8,
                      filters=[{"kind": "bandpass", "order": 4, "low_hz": 0.5, "high_hz": 40.0}],
                      pre={"baseline_s": [-0.2, 0.0], "scaling": {"kind": "session_robust", "fit_seconds": 2.0}})
    rate = 256.0
    x = stream_signal(rate, 20.0, len(channels), seed=11) * np.array([1.0, 5.0, 0.2, 30.0], np.float32)
    onsets = [60, 200] + list(range(700, len(x) - 400, 233))  # the first two windows are cut before 2 s
    server = live.Server(myelin_bin(), env={"MYELIN_MODELS__DIR": str(models)})
    try:
        _, got = serve_and_collect(server, "robust", card, x, rate, onsets)
    finally:
        server.stop()
    assert len(got) == len(onsets)
    refused = [p for p in got if p.status == "error"]
    assert len(refused) == 2 and all("robust scaling" in p.error_reason for p in refused), [p.error_reason for p in got]
    filtered = preprocess.filter_stream(x, preprocess.card_sos(card, rate))
    ok = [p for p in got if p.status == "ok"]
    assert len(ok) == len(onsets) - 2
    for p in ok:
        expected = preprocess.window_from_filtered(filtered, p.window.first_index, card, rate)
        np.testing.assert_allclose(np.asarray(p.embedding).reshape(expected.shape), expected, rtol=1e-4, atol=2e-4)
    # The statistics really are the session's: channel 3 (30x the amplitude) is scaled to the
    # same spread as channel 0.
    last = np.asarray(ok[-1].embedding).reshape(expected.shape)
    assert 0.3 < np.std(last[3]) / np.std(last[0]) < 3


def test_cards_with_fixed_coefficients_serve_their_design_rate_only(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    card = write_card(models, "fixture-fixed", channels=["C3", "C4"], model_rate=64.0, tmin=0.0, tmax=0.5, filters=[], resample="decimate")
    text = (models / "fixture-fixed.card.toml").read_text()
    sos = preprocess.design_sos(bandpass=(1.0, 20.0), rate=128.0, order=2)
    text += "\n[preprocessing.filter]\ndesign_rate_hz = 128.0\nsos = " + cards._value(sos.tolist()) + "\n"
    (models / "fixture-fixed.card.toml").write_text(text.replace("filters = []\n", ""))
    server = live.Server(myelin_bin(), env={"MYELIN_MODELS__DIR": str(models)})
    try:
        with myelin.Client(server.grpc) as client:
            stream = client.open_session("fixed-256", card["channels"], rate=256.0)
            with pytest.raises(myelin.MyelinError) as refused:
                client.attach("fixed-256", "fixture-fixed", marker_codes=[1])
            assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "fixed coefficients designed for 128 Hz streams; this stream is 256 Hz" in str(refused.value)
            stream.close()
            stream = client.open_session("fixed-128", card["channels"], rate=128.0)
            assert client.attach("fixed-128", "fixture-fixed", marker_codes=[1]).window_model_samples == 32
            stream.close()
            # A decimate-only card refuses a rate that is not an integer multiple of its own.
            stream = client.open_session("fixed-100", card["channels"], rate=100.0)
            with pytest.raises(myelin.MyelinError) as refused:
                client.attach("fixed-100", "fixture-fixed", marker_codes=[1])
            assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
            stream.close()
    finally:
        server.stop()
