"""Writes the small ONNX models that tests/onnx_models.rs imports, with onnxruntime's outputs.

Run once with a Python that has onnx, onnxruntime, numpy and safetensors (kiln's peers venv):
    python tests/data/onnx-models/make_models.py tests/data/onnx-models
It writes cnn.onnx and mlp.onnx (built with onnx.helper, as torch is not available here; the
CNN's flatten is PyTorch's export of `x.view(x.size(0), -1)`, Shape -> Gather -> Unsqueeze ->
Concat -> Reshape), and for each a safetensors file with the input `x` and onnxruntime's
output `y`, so the Rust test needs no Python. Seeded: the outputs are reproducible.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

rng = np.random.default_rng(18)


def init(name, *shape, scale=0.5):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def ints(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def cnn():
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"], ["b1"], epsilon=1e-5),
        helper.make_node("Relu", ["b1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], kernel_shape=[3, 3], strides=[1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("AveragePool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[1, 1]),
        # PyTorch's x.view(x.size(0), -1)
        helper.make_node("Shape", ["p2"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus_one"], ["shape"], axis=0),
        helper.make_node("Reshape", ["p2", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    inits = [
        init("conv1.weight", 4, 1, 3, 3), init("conv1.bias", 4),
        init("bn1.weight", 4), init("bn1.bias", 4), init("bn1.running_mean", 4, scale=0.1),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "bn1.running_var"),
        init("conv2.weight", 8, 4, 3, 3, scale=0.3), init("conv2.bias", 8),
        init("fc.weight", 3, 8), init("fc.bias", 3),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        ints("axes0", [0]), ints("minus_one", [-1]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    g = helper.make_graph(nodes, "small_cnn", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), (5, 1, 8, 8)


def mlp():
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h1"], transB=1),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("MatMul", ["a1", "fc2.weight"], ["h2"]),
        helper.make_node("Add", ["h2", "fc2.bias"], ["h2b"]),
        helper.make_node("Tanh", ["h2b"], ["a2"]),
        helper.make_node("Gemm", ["a2", "fc3.weight", "fc3.bias"], ["y"], transB=1),
    ]
    inits = [
        init("fc1.weight", 16, 4), init("fc1.bias", 16),
        init("fc2.weight", 16, 8), init("fc2.bias", 8),
        init("fc3.weight", 3, 8), init("fc3.bias", 3),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    g = helper.make_graph(nodes, "small_mlp", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), (6, 4)


def unsupported():
    """Two nodes kiln has no import for: the error must name both, with op and opset."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu_1"),
        helper.make_node("Sin", ["r"], ["h"], name="sin_1"),
        helper.make_node("Cos", ["h"], ["y"], name="cos_1"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    g = helper.make_graph(nodes, "unsupported", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def batch_shape():
    """Shape and Size of an input with a symbolic batch, used as data: kiln reads the batch
    size at run time."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Cast", ["s"], ["y"], to=TensorProto.FLOAT),
        helper.make_node("Size", ["x"], ["n"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    n = helper.make_tensor_value_info("n", TensorProto.INT64, [])
    g = helper.make_graph(nodes, "batch_shape", [x], [y, n])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def main(out):
    for name, m in [("unsupported", unsupported()), ("batch_shape", batch_shape())]:
        onnx.checker.check_model(m, full_check=True)
        onnx.save(m, os.path.join(out, f"{name}.onnx"))
    for name, (model, shape) in [("cnn", cnn()), ("mlp", mlp())]:
        onnx.checker.check_model(model, full_check=True)
        path = os.path.join(out, f"{name}.onnx")
        onnx.save(model, path)
        x = rng.standard_normal(shape).astype(np.float32)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        (y,) = sess.run(None, {"x": x})
        save_file({"x": x, "y": y}, os.path.join(out, f"{name}_io.safetensors"))
        print(name, "ok", y.shape)


if __name__ == "__main__":
    main(sys.argv[1])
