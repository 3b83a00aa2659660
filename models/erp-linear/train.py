"""ERP baseline for the embedded default: band-pass -> polyphase resampling to 32 Hz -> shrinkage LDA, on real Muse EEG.

    .venv/bin/python models/erp-linear/train.py [--data models/data/p300]

Trains on subject 1 session 1 (every run), evaluates on subject 1 session 2 (a held-out
session of the same user) and on subject 2 (cross-subject), and writes erp-linear-muse.onnx
and its card (with the measured metrics). The features are exactly the server's windows: the
script uses models/common/preprocess.py, the offline twin of the server's online preprocessing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
from common import cards, p300, onnx_export, preprocess  # noqa: E402

CHANNELS = p300.CHANNELS
STREAM_RATE = p300.RATE
MODEL_RATE = 32.0
TMIN, TMAX = -0.125, 0.75
BASELINE = [-0.125, 0.0]
CLAMP = 10.0
# A per-user decoder, as P300 rigs calibrate one per user: train on subject 1's first session.
# Subject 2 is reported too, as a cross-subject check (no calibration on that person).
TRAIN = ["subject1_session1"]
TEST = ["subject1_session2", "subject2_session1", "subject2_session2"]


def read_run(path: Path):
    data, markers, _, _ = p300.read_run(path, CHANNELS)
    return data, markers


def epochs_of_run(path: Path, card: dict):
    data, markers = read_run(path)
    filtered = preprocess.filter_stream(data, preprocess.card_sos(card, STREAM_RATE))
    offset = int(round(TMIN * STREAM_RATE))
    length = preprocess.window_reach(card, STREAM_RATE)
    xs, ys = [], []
    for i in np.flatnonzero(markers):
        start = i + offset
        if start < 0 or start + length > len(data):
            continue
        xs.append(preprocess.window_from_filtered(filtered, start, card, STREAM_RATE))
        ys.append(1 if markers[i] == 2 else 0)
    return np.stack(xs), np.array(ys)


def load(data_dir: Path, prefix: str, card: dict):
    runs = p300.runs(data_dir, prefix)
    if not runs:
        raise SystemExit(f"no runs {prefix}_* in {data_dir}")
    parts = [epochs_of_run(p, card) for p in runs]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), len(runs)


def export(path: Path, weights: np.ndarray, bias: float, n_ch: int, n_t: int):
    # probabilities = softmax([0, w.x + b]) = [1 - sigmoid(s), sigmoid(s)], as LDA's predict_proba.
    w = np.zeros((n_ch * n_t, 2), dtype=np.float32)
    w[:, 1] = weights
    b = np.array([0.0, bias], dtype=np.float32)
    onnx.save(onnx_export.linear_softmax("erp_linear_muse", w, b, n_ch, n_t, producer="myelin-erp-linear"), path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "models/data/p300")
    args = parser.parse_args()

    n_t = int(round((TMAX - TMIN) * MODEL_RATE))
    card = {
        "id": "erp-linear-muse",
        "version": "1",
        "task": "classification",
        "modality": "eeg",
        "onnx": "erp-linear-muse.onnx",
        "description": "Visual P300 (target vs non-target) from 4 Muse channels: causal band-pass 1-12 Hz, "
                       "polyphase resampling to 32 Hz (any stream rate), baseline, per-window z-score, shrinkage LDA, calibrated on one user. A classic baseline, not the ERP benchmark's deep model.",
        "channels": CHANNELS,
        "sample_rate_hz": MODEL_RATE,
        "labels": ["non-target", "target"],
        "window": {"tmin_s": TMIN, "tmax_s": TMAX},
        "preprocessing": {
            "baseline_s": BASELINE,
            "clamp": CLAMP,
            # Designed by the server for the stream's rate; resampled to 32 Hz from any rate.
            "filters": [{"kind": "bandpass", "order": 4, "low_hz": 1.0, "high_hz": 12.0}],
            "resample": "polyphase",
            # +-3 samples at 32 Hz: the server decodes a window 94 ms after its end (scipy's
            # default of 10 would wait 312 ms); the 1-12 Hz filter already did most anti-aliasing.
            "resample_half_width": 3,
            # Per-window, per-channel z-score, as the ERP benchmark's data loader does.
            "scaling": {"kind": "window_zscore", "epsilon": 1e-6},
        },
        "input": {"name": "window", "shape": [-1, len(CHANNELS), n_t], "layout": "channels_time", "max_batch": 32},
        "output": {"name": "probs", "shape": [-1, 2], "kind": "probabilities"},
    }
    x_train, y_train, n_train_runs = load(args.data, TRAIN[0], card)

    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=[0.5, 0.5])
    lda.fit(x_train.reshape(len(x_train), -1), y_train)

    onnx_path = HERE / "erp-linear-muse.onnx"
    export(onnx_path, lda.coef_[0].astype(np.float32), float(lda.intercept_[0]), len(CHANNELS), n_t)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    metrics, lines = {}, []
    for prefix in TEST:
        x, y, n_runs = load(args.data, prefix, card)
        p_onnx = session.run(None, {"window": x})[0][:, 1]
        p_sk = lda.predict_proba(x.reshape(len(x), -1))[:, 1]
        assert np.allclose(p_onnx, p_sk, atol=1e-4), "ONNX export disagrees with the fitted model"
        auc = roc_auc_score(y, p_onnx)
        bacc = balanced_accuracy_score(y, p_onnx > 0.5)
        key = prefix.replace("_", "_")
        metrics[f"{key}_auc"] = round(float(auc), 4)
        metrics[f"{key}_balanced_accuracy"] = round(float(bacc), 4)
        lines.append(f"{prefix}: {len(y)} epochs ({int(y.sum())} targets, {n_runs} runs): AUC {auc:.3f}, balanced accuracy {bacc:.3f}")
    card["provenance"] = {
        "data_kind": "real",
        "training_data": f"NeuroTechX eeg-notebooks visual P300, Muse 4-channel EEG (BSD-3): {', '.join(TRAIN)}, "
                         f"all runs ({n_train_runs} runs, {len(y_train)} epochs, {int(y_train.sum())} targets)",
        "split": "train on subject 1 session 1 (all runs); test on subject 1 session 2 (held-out session, same user), "
                 "and on both sessions of subject 2 (cross-subject, no calibration)",
        "metrics": metrics,
        "command": ".venv/bin/python models/erp-linear/train.py",
        "notes": "Metrics are computed offline through models/common/preprocess.py, the twin of the server's "
                 "preprocessing (tests/python/test_python_client.py and tests/python/test_resampling.py check the server against it). Chance AUC is 0.5.",
    }
    cards.write(HERE / "erp-linear-muse.card.toml", card, "# Generated by models/erp-linear/train.py: do not edit by hand.")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
