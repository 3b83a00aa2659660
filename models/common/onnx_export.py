"""ONNX graphs for linear decoders (weights from any fitting code), opset 17."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def linear_softmax(name: str, weights: np.ndarray, bias: np.ndarray, n_ch: int, n_t: int,
                   with_features: bool = False, producer: str = "myelin") -> onnx.ModelProto:
    """window [batch, n_ch, n_t] -> flatten -> x @ weights + bias -> softmax -> "probs".
    With `with_features`, also outputs the flattened input as "features" (tests use it to see
    the exact window the server fed the model)."""
    n_classes = weights.shape[1]
    nodes = [
        helper.make_node("Reshape", ["window", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["logits0"]),
        helper.make_node("Add", ["logits0", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", n_classes])]
    if with_features:
        nodes.append(helper.make_node("Identity", ["flat"], ["features"]))
        outputs.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_ch * n_t]))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", n_ch, n_t])],
        outputs,
        initializer=[
            numpy_helper.from_array(np.array([-1, n_ch * n_t], dtype=np.int64), "flat_shape"),
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
