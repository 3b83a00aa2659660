"""One P300 recording at the rates EEG amplifiers stream at: a real Muse session (256 Hz), and the
same session resampled to 250, 500 and 1000 Hz as a rig at those rates would record it. The ERP
card designs its 1-12 Hz filter for each stream's rate and resamples polyphase to its 32 Hz, so
the served AUC must stay within 0.01 of the 256 Hz run (the issue's goal)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

import myelin
from common import live, p300
from conftest import myelin_bin

ROOT = Path(__file__).resolve().parents[2]
SESSION = "subject1_session2"  # held out from erp-linear-muse's training


def read_session():
    parts, codes = [], []
    for path in p300.runs(ROOT / "models/data/p300", SESSION):
        data, markers, _, _ = p300.read_run(path, p300.CHANNELS)
        parts.append(data)
        codes.append(markers)
    return np.concatenate(parts).astype(np.float64), np.concatenate(codes)


def auc(scores, labels) -> float:
    scores, labels = np.asarray(scores), np.asarray(labels, dtype=bool)
    ranks = np.empty(len(scores))
    ranks[scores.argsort(kind="mergesort")] = np.arange(1, len(scores) + 1)
    for s in np.unique(scores):
        ranks[scores == s] = ranks[scores == s].mean()
    n1, n0 = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def serve(server, rate, x, events):
    """Streams `x` at `rate` on a regular clock with a marker at each (index, code); returns
    {event ordinal: target probability}."""
    stamps = 100.0 + np.arange(len(x)) / rate
    ordinal_of = {index: n for n, (index, _) in enumerate(events)}
    code_at = dict(events)
    got = []
    session = f"p300-{int(rate)}"
    with myelin.Client(server.grpc) as client:
        stream = client.open_session(session, p300.CHANNELS, rate=rate)
        attachment = client.attach(session, "erp-linear-muse", marker_codes=[1, 2], latency_budget_ms=10000)
        subscription = client.subscribe(attachment=attachment.attachment_id)
        threading.Thread(target=lambda: got.extend(subscription), daemon=True).start()
        time.sleep(0.3)
        for begin in range(0, len(x), 128):
            end = min(begin + 128, len(x))
            stream.push(x[begin:end].astype(np.float32), stamps[begin:end])
            stream.markers([(stamps[i], code_at[i]) for i in range(begin, end) if i in code_at])
        stream.wait_acknowledged()
        deadline = time.time() + 60
        while len(got) < len(events) - 3 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        subscription.cancel()
        stream.close()
    scores = {}
    onsets = np.array(sorted(code_at))
    for p in got:
        if p.status == "ok":
            # The card's window starts 0.125 s before its marker (the server rounds half away
            # from zero, Python half to even: at 500 Hz they differ by one sample).
            at = p.window.first_index + 0.125 * rate
            marker = int(onsets[np.argmin(np.abs(onsets - at))])
            assert abs(marker - at) <= 1, (marker, at)
            assert ordinal_of[marker] not in scores, "two windows for one marker"
            scores[ordinal_of[marker]] = p.probabilities[1]
    return scores


@pytest.fixture(scope="module")
def server():
    s = live.Server(myelin_bin(), env={"MYELIN_PUBLISH__SUBSCRIBER_QUEUE": "8192"})
    yield s
    s.stop()


def test_served_auc_is_the_same_at_every_amplifier_rate(server):
    x, codes = read_session()
    onsets = np.flatnonzero((codes == 1) | (codes == 2))
    labels = codes[onsets] == 2
    results = {}
    for rate in [256.0, 250.0, 500.0, 1000.0]:
        up, down = int(rate), 256
        g = np.gcd(up, down)
        resampled = x if rate == 256.0 else signal.resample_poly(x, up // g, down // g, axis=0)
        events = [(int(round(i * rate / 256.0)), int(codes[i])) for i in onsets]
        scores = serve(server, rate, resampled, events)
        results[rate] = scores
    # The same events in every run: those every rate decoded (the last few may lack lookahead).
    common = sorted(set.intersection(*(set(s) for s in results.values())))
    assert len(common) >= len(onsets) - 5
    aucs = {rate: auc([s[n] for n in common], labels[common]) for rate, s in results.items()}
    print("served AUC by stream rate on", len(common), "held-out epochs:", {f"{r:g} Hz": round(a, 4) for r, a in aucs.items()})
    assert aucs[256.0] > 0.7
    for rate in (250.0, 500.0, 1000.0):
        assert abs(aucs[rate] - aucs[256.0]) <= 0.01, aucs
