"""Every exported model with golden vectors: ONNX Runtime (the runtime the server uses) must
reproduce the training framework's outputs on the stored inputs, within the tolerance stored
with them (PyTorch and ONNX Runtime reorder float32 sums, so exact equality is not expected)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[2]
# models/ (served by default) and evaluation-models/ (the large benchmark networks).
GOLDEN = sorted([*ROOT.glob("models/**/*.golden.json"), *ROOT.glob("evaluation-models/**/*.golden.json")])


def test_there_are_golden_vectors_to_check():
    assert GOLDEN, "no models/**/*.golden.json found"


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_onnx_matches_the_training_framework(path: Path):
    golden = json.loads(path.read_text())
    session = ort.InferenceSession(str(path.parent / golden["onnx"]), providers=["CPUExecutionProvider"])
    # One input ("input"/"inputs") or several ("feeds": name -> values, e.g. the MEG brain
    # module's window, sensor positions and sensor mask).
    if "feeds" in golden:
        feeds = {name: np.asarray(values, dtype=np.float32) for name, values in golden["feeds"].items()}
    else:
        feeds = {golden["input"]: np.asarray(golden["inputs"], dtype=np.float32)}
    expected = np.asarray(golden["outputs"], dtype=np.float32)
    (got,) = session.run([golden["output"]], feeds)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=golden["tolerance"], rtol=0)
