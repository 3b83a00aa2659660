"""The native Riemannian decoder (xDAWN covariances + tangent space + logistic regression) against
pyRiemann on the same epochs: a real Muse P300 session streams into the server, which calibrates
the decoder live; the held-out session then streams through the calibrated model. pyRiemann and
scikit-learn, fitted here on the windows the offline twin cuts from the same stream, must give
the same target probabilities within 1e-4. Also: decoder = "best" reports both candidates'
cross-validation and keeps the better one; unknown decoders are refused."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from pyriemann.estimation import XdawnCovariances
from pyriemann.tangentspace import TangentSpace
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import myelin
from common import cards, live, p300, preprocess
from conftest import myelin_bin

ROOT = Path(__file__).resolve().parents[2]
CARD = ROOT / "models/erp-linear/erp-linear-muse.card.toml"
CALIBRATION_EPOCHS = 400


def read_session(prefix: str):
    channels, x, ts, codes = p300.read_session(ROOT / "models/data/p300", prefix)
    return channels, x.astype(np.float32), ts, codes


def stream(client, session, channels, x, ts, codes, attachment_kwargs, calibrate=None):
    """Streams a session with one attachment of erp-linear-muse (or `attachment_kwargs`), with a
    calibration running on it if `calibrate` (kwargs) is given. Returns (predictions, result)."""
    got, result = [], {}
    ingest = client.open_session(session, channels, rate=p300.RATE)
    attachment = client.attach(session, marker_codes=[1, 2], latency_budget_ms=10000, **attachment_kwargs)
    subscription = client.subscribe(attachment=attachment.attachment_id)
    threading.Thread(target=lambda: got.extend(subscription), daemon=True).start()
    calibrating = None
    if calibrate is not None:
        calibrating = threading.Thread(target=lambda: result.update(
            value=client.calibrate(attachment.attachment_id, [2], [1], **calibrate)), daemon=True)
        calibrating.start()
    time.sleep(0.5)  # the calibration's collector is in place before the first window
    for begin in range(0, len(x), 64):
        end = min(begin + 64, len(x))
        ingest.push(x[begin:end], ts[begin:end])
        ingest.markers([(ts[i], int(codes[i])) for i in range(begin, end) if codes[i]])
    ingest.wait_acknowledged()
    events = int(((codes == 1) | (codes == 2)).sum())
    deadline = time.time() + 60
    while len(got) < events - 2 and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    subscription.cancel()
    ingest.close()
    if calibrating is not None:
        calibrating.join(timeout=120)
    return sorted(got, key=lambda p: p.sequence), result.get("value")


def twin_windows(card, x, starts):
    filtered = preprocess.filter_stream(x, preprocess.card_sos(card, p300.RATE))
    return np.stack([preprocess.window_from_filtered(filtered, s, card, p300.RATE) for s in starts]).astype(np.float64)


@pytest.fixture(scope="module")
def erp_server(tmp_path_factory):
    server = live.Server(myelin_bin(), env={"MYELIN_MODELS__CALIBRATIONS_DIR": str(tmp_path_factory.mktemp("calibrations")),
                                            "MYELIN_PUBLISH__SUBSCRIBER_QUEUE": "8192"})
    yield server
    server.stop()


def test_the_native_riemannian_decoder_equals_pyriemann_on_the_same_epochs(erp_server):
    card = cards.read(CARD)
    with myelin.Client(erp_server.grpc) as client:
        channels, x, ts, codes = read_session("subject1_session1")
        base, calibration = stream(client, "riemann-train", channels, x, ts, codes, {"model_id": card["id"]},
                                   calibrate=dict(max_epochs=CALIBRATION_EPOCHS, decoder="xdawn_riemann", keep_current_model=True,
                                                  model_id="riemann-s1"))
        assert calibration is not None and calibration.decoder == "xdawn_riemann"
        assert calibration.epochs == CALIBRATION_EPOCHS and list(calibration.candidates) == ["xdawn_riemann"]
        # The epochs the collector kept: the attachment's first windows (none was refused).
        collected = [p for p in base if p.status != "error"][:CALIBRATION_EPOCHS]
        assert all(p.trigger is not None for p in collected)
        idx = [channels.index(c) for c in card["channels"]]
        train_x = twin_windows(card, x[:, idx], [p.window.first_index for p in collected])
        train_y = np.array([p.trigger.code == 2 for p in collected])
        assert int(train_y.sum()) == calibration.target_epochs

        test_channels, test_x, test_ts, test_codes = read_session("subject1_session2")
        served, _ = stream(client, "riemann-test", test_channels, test_x, test_ts, test_codes,
                           {"model_id": "riemann-s1", "model_version": calibration.model_version})
    served = [p for p in served if p.status == "ok"]
    assert len(served) > 900
    assert {p.model_id for p in served} == {"riemann-s1"}
    test_x = twin_windows(card, test_x[:, [test_channels.index(c) for c in card["channels"]]], [p.window.first_index for p in served])
    # pyRiemann's pipeline as a lab would write it (nfilter = the server's default 2 per class);
    # the logistic regression solved to convergence, as the server solves it (scikit-learn's
    # default tol of 1e-4 stops lbfgs short of the optimum both are defined by).
    pipeline = make_pipeline(XdawnCovariances(nfilter=2), TangentSpace(metric="riemann"), LogisticRegression(tol=1e-12, max_iter=100000))
    pipeline.fit(train_x, train_y)
    expected = pipeline.predict_proba(test_x)[:, 1]
    got = np.array([p.probabilities[1] for p in served])
    difference = np.abs(got - expected)
    print(f"native Riemannian vs pyRiemann on {len(served)} held-out epochs: max |p - p_ref| = {difference.max():.2e}")
    assert difference.max() <= 1e-4


def test_best_cross_validates_both_decoders_and_keeps_the_better(erp_server):
    card = cards.read(CARD)
    channels, x, ts, codes = read_session("subject1_session2")
    with myelin.Client(erp_server.grpc) as client:
        _, calibration = stream(client, "best-train", channels, x, ts, codes, {"model_id": card["id"]},
                                calibrate=dict(max_epochs=500, decoder="best", keep_current_model=True, model_id="best-s1"))
        assert set(calibration.candidates) == {"xdawn_lda", "xdawn_riemann"}
        best = max(calibration.candidates, key=lambda k: calibration.candidates[k][0])
        assert calibration.decoder == best
        assert calibration.cv_auc == calibration.candidates[best][0]
        print("calibration candidates (cv AUC, balanced accuracy):", calibration.candidates, "->", calibration.decoder)
        listed = {m.id: m for m in client.models()}
        assert "best-s1" in listed

        ingest = client.open_session("bad-decoder", channels, rate=p300.RATE)
        attachment = client.attach("bad-decoder", card["id"], marker_codes=[1, 2])
        for bad in ["riemann", "XDAWN_LDA", "x" * 100_000]:
            with pytest.raises(myelin.MyelinError) as refused:
                client.calibrate(attachment.attachment_id, [2], [1], max_epochs=10, decoder=bad)
            assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "decoder must be empty, xdawn_lda, xdawn_riemann or best" in refused.value.details
            assert len(refused.value.details) < 300
        ingest.close()
