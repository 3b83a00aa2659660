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
GOLDEN = sorted(ROOT.glob("models/**/*.golden.json"))


def test_there_are_golden_vectors_to_check():
    assert GOLDEN, "no models/**/*.golden.json found"


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_onnx_matches_the_training_framework(path: Path):
    golden = json.loads(path.read_text())
    session = ort.InferenceSession(str(path.parent / golden["onnx"]), providers=["CPUExecutionProvider"])
    inputs = np.asarray(golden["inputs"], dtype=np.float32)
    expected = np.asarray(golden["outputs"], dtype=np.float32)
    (got,) = session.run([golden["output"]], {golden["input"]: inputs})
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=golden["tolerance"], rtol=0)
