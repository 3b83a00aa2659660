"""Deep ERP decoders on real Muse EEG, trained with PyTorch (CPU, minutes) and exported to ONNX.

    python3 -m venv .venv-train && .venv-train/bin/pip install -r models/erp-deep/requirements.txt
    .venv-train/bin/python models/erp-deep/train.py            # all four leave-one-session-out folds
    .venv-train/bin/python models/erp-deep/train.py --train subject1_session1

Two small EEGNet-style networks (Lawhern et al. 2018's layout; not the ERP benchmark's
"EEGNet", which is models/erp-benchmark's TemporalSpatialConv):
* mini-eegnet: Conv2d(1->16, temporal kernel 7), BN, ELU, depthwise temporal conv (7), time
  pooling by 2, depthwise conv across all channels, pointwise conv, BN, ELU, adaptive average
  pooling to 4 time steps, linear (738 parameters on 4 channels).
* mini-eegnet-wide: the same shape with more filters (F1 = 32, depth multiplier 2, F2 = 64),
  dropout and a longer temporal kernel (6,018 parameters on 4 channels).

Preprocessing: causal band-pass 1-20 Hz designed for the stream's rate, polyphase resampling to
64 Hz (a filter of +-3 model samples: windows are decoded 47 ms after their end), baseline,
per-window z-score. For each training session, both are trained on every run of that session and exported as
erp-<arch>-<session>.onnx with a card and golden vectors (inputs and PyTorch outputs). The
windows come from models/common/preprocess.py, the offline twin of the server's
preprocessing, so the server feeds the ONNX graph exactly what PyTorch saw. Held-out metrics
are measured through the live server by models/erp-eval/evaluate.py, which writes them into
the cards.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
from common import cards, p300, preprocess  # noqa: E402

CHANNELS = p300.CHANNELS
STREAM_RATE = p300.RATE
MODEL_RATE = 64.0
TMIN, TMAX = -0.125, 0.75
SESSIONS = ["subject1_session1", "subject1_session2", "subject2_session1", "subject2_session2"]


class EEGNet(nn.Module):
    """Input [batch, channels, time] -> class logits."""

    def __init__(self, n_channels: int, n_classes: int = 2, f1: int = 16, depth: int = 1, f2: int = 16,
                 kernel: int = 7, dropout: float = 0.0):
        super().__init__()
        self.temporal = nn.Sequential(
            nn.Conv2d(1, f1, (1, kernel), padding=(0, kernel // 2), bias=False),
            nn.BatchNorm2d(f1),
            nn.ELU(),
            nn.Conv2d(f1, f1, (1, kernel), padding=(0, kernel // 2), groups=f1, bias=False),
            nn.AvgPool2d((1, 2)),
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(f1, f1 * depth, (n_channels, 1), groups=f1, bias=False),
            nn.Conv2d(f1 * depth, f2, 1, bias=False),
            nn.BatchNorm2d(f2),
            nn.ELU(),
            nn.Dropout(dropout),
        )
        self.pool = nn.AdaptiveAvgPool2d((1, 4))
        self.head = nn.Linear(f2 * 4, n_classes)

    def forward(self, x):
        x = x.unsqueeze(1)
        x = self.spatial(self.temporal(x))
        return self.head(self.pool(x).flatten(1))


ARCHS = {
    "mini-eegnet": dict(f1=16, depth=1, f2=16, kernel=7, dropout=0.0),
    "mini-eegnet-wide": dict(f1=32, depth=2, f2=64, kernel=15, dropout=0.25),
}


def model_id(arch: str, session: str) -> str:
    return f"erp-{arch}-{session.replace('_', '-')}"


def card_for(arch: str, session: str, n_t: int) -> dict:
    return {
        "id": model_id(arch, session),
        "version": "1",
        "task": "classification",
        "modality": "eeg",
        "onnx": f"{model_id(arch, session)}.onnx",
        "description": f"{arch}, a small EEGNet-style network (PyTorch), for visual P300 target vs non-target on 4 Muse "
                       f"channels, trained on {session}.",
        "channels": CHANNELS,
        "sample_rate_hz": MODEL_RATE,
        "labels": ["non-target", "target"],
        "window": {"tmin_s": TMIN, "tmax_s": TMAX},
        "preprocessing": {
            "baseline_s": [TMIN, 0.0],
            "clamp": 20.0,
            "filters": [{"kind": "bandpass", "order": 4, "low_hz": 1.0, "high_hz": 20.0}],
            "resample": "polyphase",
            "resample_half_width": 3,
            "scaling": {"kind": "window_zscore", "epsilon": 1e-6},
        },
        "input": {"name": "window", "shape": [-1, len(CHANNELS), n_t], "layout": "channels_time", "max_batch": 32},
        "output": {"name": "logits", "shape": [-1, 2], "kind": "logits"},
    }


def read_run(path: Path):
    data, markers, _, _ = p300.read_run(path, CHANNELS)
    return data, markers


def epochs(data_dir: Path, session: str, card: dict):
    xs, ys = [], []
    sos = preprocess.card_sos(card, STREAM_RATE)
    offset = int(round(TMIN * STREAM_RATE))
    length = preprocess.window_reach(card, STREAM_RATE)
    for path in p300.runs(data_dir, session):
        data, markers = read_run(path)
        filtered = preprocess.filter_stream(data, sos)
        for i in np.flatnonzero(markers):
            if i + offset < 0 or i + offset + length > len(data):
                continue
            xs.append(preprocess.window_from_filtered(filtered, i + offset, card, STREAM_RATE))
            ys.append(1 if markers[i] == 2 else 0)
    return np.stack(xs).astype(np.float32), np.array(ys)


def train(arch: str, x: np.ndarray, y: np.ndarray, seed: int = 0, epochs_n: int = 60) -> nn.Module:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = EEGNet(len(CHANNELS), **ARCHS[arch])
    weights = torch.tensor([1.0, (y == 0).sum() / max((y == 1).sum(), 1)], dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs_n)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    for epoch in range(epochs_n):
        model.train()
        order = rng.permutation(len(x))
        total = 0.0
        for b in range(0, len(order), 64):
            idx = order[b:b + 64]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if epoch % 20 == 19 or epoch == epochs_n - 1:
            print(f"    epoch {epoch + 1}/{epochs_n}: loss {total / len(x):.4f}", flush=True)
    model.eval()
    return model


def export(model: nn.Module, card: dict, x: np.ndarray):
    onnx_path = HERE / card["onnx"]
    example = torch.from_numpy(x[:1])
    torch.onnx.export(model, (example,), str(onnx_path), input_names=["window"], output_names=["logits"],
                      dynamic_axes={"window": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    golden_in = x[:16]
    with torch.no_grad():
        golden_out = model(torch.from_numpy(golden_in)).numpy()
    golden = {"model": card["id"], "onnx": card["onnx"], "input": card["input"]["name"], "output": card["output"]["name"],
              "tolerance": 1e-4, "inputs": golden_in.tolist(), "outputs": golden_out.tolist(),
              "note": "outputs computed by PyTorch; tests/python/test_golden_models.py checks ONNX Runtime against them"}
    (HERE / f"{Path(card['onnx']).stem}.golden.json").write_text(json.dumps(golden))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "models/data/p300")
    parser.add_argument("--train", choices=SESSIONS, action="append", help="training session(s); default: all four")
    parser.add_argument("--arch", choices=list(ARCHS), action="append")
    args = parser.parse_args()
    torch.set_num_threads(2)
    n_t = int(round((TMAX - TMIN) * MODEL_RATE))
    for session in args.train or SESSIONS:
        for arch in args.arch or list(ARCHS):
            card = card_for(arch, session, n_t)
            x, y = epochs(args.data, session, card)
            n_params = sum(p.numel() for p in EEGNet(len(CHANNELS), **ARCHS[arch]).parameters())
            print(f"{card['id']}: {len(y)} epochs ({y.sum()} targets), {n_params} parameters", flush=True)
            started = time.time()
            model = train(arch, x, y)
            export(model, card, x)
            card["provenance"] = {
                "data_kind": "real",
                "training_data": f"NeuroTechX eeg-notebooks visual P300, Muse 4-channel EEG (BSD-3): {session}, all runs "
                                 f"({len(y)} epochs, {int(y.sum())} targets)",
                "split": f"train on {session}; evaluated on the other session of the same subject (whole session held out), "
                         f"through the live server",
                "metrics": {"parameters": float(n_params), "train_seconds": round(time.time() - started, 1)},
                "command": f".venv-train/bin/python models/erp-deep/train.py --train {session} --arch {arch} && "
                           f".venv/bin/python models/erp-eval/evaluate.py",
                "notes": "Held-out metrics (served_*) are written by models/erp-eval/evaluate.py from predictions "
                         "received from a running myelin server.",
            }
            cards.write(HERE / f"{card['id']}.card.toml", card,
                        "# Generated by models/erp-deep/train.py; served_* metrics by models/erp-eval/evaluate.py.")
            print(f"  wrote {card['onnx']} in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
