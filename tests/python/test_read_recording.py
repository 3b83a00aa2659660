"""A recording the real server made, read into MNE-Python (from PyPI) with
`myelin.read_recording`: the signal in volts, and the markers and predictions as annotations
at the sample they belong to."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import mne
import numpy as np

import myelin
from common import live, p300
from feed import push_recording

ROOT = Path(__file__).resolve().parents[2]
RUN = p300.runs(ROOT / "models/data/p300", "subject1_session2")[0]
RATE = int(p300.RATE)


def test_read_recording_gives_a_raw_with_markers_and_predictions_as_annotations(tmp_path):
    data, codes, stamps, _ = p300.read_run(RUN, p300.CHANNELS)
    data, codes, stamps = data[: 60 * RATE], codes[: 60 * RATE], stamps[: 60 * RATE]
    env = {"MYELIN_RECORDING__ENABLED": "true", "MYELIN_RECORDING__DIR": str(tmp_path)}
    server = live.Server(os.environ.get("MYELIN_BIN", str(ROOT / "target/debug/myelin")), env=env)
    got: list[myelin.Prediction] = []
    try:
        with myelin.Client(server.grpc) as client:
            stream = client.open_session("mne", p300.CHANNELS, rate=p300.RATE, stream_name="muse")
            erp = client.attach("mne", "erp-linear-muse", marker_codes=[1, 2], latency_budget_ms=2000)
            subscription = client.subscribe(attachment=erp.attachment_id)
            threading.Thread(target=lambda: got.extend(subscription), daemon=True).start()
            time.sleep(0.2)
            push_recording(stream, data, stamps, codes, chunk=32)
            stream.wait_acknowledged()
            expected = int(np.count_nonzero(codes[: len(codes) - RATE]))
            deadline = time.time() + 20
            while len(got) < expected and time.time() < deadline:
                time.sleep(0.05)
            path = Path(client.session("mne").recording_path)
            stream.close()
            subscription.cancel()
            time.sleep(0.5)  # the recorder writes its footers when the session ends
    finally:
        server.stop()
    assert len(got) >= expected > 50

    raw = myelin.read_recording(path)
    assert isinstance(raw, mne.io.BaseRaw)
    assert raw.ch_names == p300.CHANNELS and raw.info["sfreq"] == p300.RATE
    assert set(raw.get_channel_types()) == {"eeg"}
    # Microvolts on the wire, volts in MNE (float32 on the wire).
    np.testing.assert_allclose(raw.get_data(), data.T.astype(np.float32) * 1e-6, rtol=1e-6)

    annotations = raw.annotations
    sent = np.flatnonzero(codes)
    marks = [i for i, d in enumerate(annotations.description) if not d.startswith("prediction/")]
    assert [annotations.description[i] for i in marks] == [str(codes[i]) for i in sent]
    # Onsets within one sample of the marked sample.
    np.testing.assert_allclose(annotations.onset[marks], sent / p300.RATE, atol=1 / p300.RATE)

    predictions = [i for i, d in enumerate(annotations.description) if d.startswith(f"prediction/{erp.attachment_id}: ")]
    assert len(predictions) == len(got)
    for i, p in zip(predictions, got, strict=True):
        assert annotations.description[i] == f"prediction/{erp.attachment_id}: {p.label}"
        # At the window's last sample.
        assert abs(annotations.onset[i] - p.window.last_index / p300.RATE) <= 1 / p300.RATE
        assert json.loads(annotations.extras[i]["prediction"])["sequence"] == p.sequence
    # Without predictions: the markers only.
    assert len(myelin.read_recording(path, predictions=False).annotations) == len(sent)
