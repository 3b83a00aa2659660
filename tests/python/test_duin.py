"""Du-IN served live: synthetic sEEG generated with a seed the model never saw (3; it was trained
on seed 1 and tested on seed 2) streams into the server with word-onset markers; the served
top-1 accuracy must match the offline evaluation of the same ONNX model on the same windows."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import myelin
from common import cards, preprocess

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models/duin"))
import synthetic  # noqa: E402

CARD = ROOT / "models/duin/duin-synthetic-s01.card.toml"


@pytest.mark.skipif(not CARD.exists(), reason="the bundled Du-IN model is missing (models/duin/train.py)")
def test_served_du_in_matches_its_offline_evaluation(server):
    card = cards.read(CARD)
    subject = synthetic.Subject(subject_seed=0)
    x, events = subject.stream(n_trials=61, seed=3)
    rate = synthetic.RATE
    ts = 5000.0 + np.arange(len(x)) / rate
    codes = np.zeros(len(x), dtype=int)
    for onset, word in events:
        codes[onset] = word + 1  # marker code = word number (1-based)

    # Offline: the same windows, the same preprocessing (causal filter over the whole stream,
    # z-score from the card), ONNX Runtime for Python.
    session = ort.InferenceSession(str(CARD.parent / card["onnx"]), providers=["CPUExecutionProvider"])
    offset = int(round(card["window"]["tmin_s"] * rate))
    filtered = preprocess.filter_stream(x, preprocess.card_sos(card, rate))
    offline = {}
    for onset, word in events:
        window = preprocess.window_from_filtered(filtered, onset + offset, card, rate)
        offline[onset + offset] = (word, session.run(None, {"window": window[None]})[0][0])
    offline_top1 = np.mean([np.argmax(scores) == word for word, scores in offline.values()])

    # Through the public client (myelin-client), as a lab would stream it.
    with myelin.Client(server.grpc) as client:
        stream = client.open_session("seeg", synthetic.CHANNELS, rate=rate, modality="seeg")
        attached = client.attach("seeg", card["id"], subject="s01", top_k=5, latency_budget_ms=2000, marker_codes=list(range(1, 62)))
        got = []
        subscription = client.subscribe(attachment=attached.attachment_id)
        threading.Thread(target=lambda: got.extend(subscription), daemon=True).start()
        time.sleep(0.2)
        for begin in range(0, len(x), 250):
            end = min(begin + 250, len(x))
            stream.push(x[begin:end], ts[begin:end])
            onsets = np.flatnonzero(codes[begin:end]) + begin
            stream.markers([(ts[i], codes[i]) for i in onsets])
        stream.wait_acknowledged()
        deadline = time.time() + 60
        while len(got) < len(events) and time.time() < deadline:
            time.sleep(0.1)
        subscription.cancel()
        stream.close()

    assert len(got) == len(events)
    served_top1 = np.mean([p.top_labels[0] == synthetic.WORDS[p.trigger.code - 1] for p in got])
    agree = 0
    for p in got:
        word, scores = offline[p.window.first_index]
        np.testing.assert_allclose(p.probabilities, scores, atol=1e-4)
        assert p.top_labels == [synthetic.WORDS[i] for i in np.argsort(-scores)[:5]] or \
            np.allclose(sorted(p.top_probabilities, reverse=True), np.sort(scores)[::-1][:5], atol=1e-4)
        agree += int(np.argmax(p.probabilities) == np.argmax(scores))
    print(f"Du-IN on unseen synthetic stream: served top-1 {served_top1:.3f}, offline top-1 {offline_top1:.3f}, "
          f"chance {1 / 61:.3f}; top-1 agreement {agree}/{len(got)}")
    # Tolerance: the served and offline windows are the same samples through the same float32
    # graph; only summation order differs (1e-4), so at most one near-tie may flip: 1/61.
    assert abs(served_top1 - offline_top1) <= 1 / 61 + 1e-9
    assert served_top1 > 3 / 61, "well above chance (1/61)"
