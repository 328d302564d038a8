"""Writes ResNet-50 (v1.5, torchvision's layout) as an ONNX model with seeded random weights,
and optionally times onnxruntime on it.

Issue 18's speed target compares kiln's import of this model with onnxruntime on the same
file. The weights are random (He-normal convolutions, BatchNormalization with random
statistics), which costs the same as trained ones; no network is needed, only `numpy` and
`onnx` (and `onnxruntime` for --time).

    .peers-venv/bin/python benches/peers/resnet50_onnx.py --out target/peers/resnet50.onnx
    .peers-venv/bin/python benches/peers/resnet50_onnx.py --out target/peers/resnet50.onnx --time --threads 1 2

The graph is what PyTorch's exporter writes for torchvision's `resnet50()` at opset 17:
Conv (with bias off) → BatchNormalization → Relu, MaxPool 3×3/2 after the stem, the stride of
each stage's first bottleneck on its 3×3 convolution, a 1×1 projection on the shortcut where
the shape changes, GlobalAveragePool → Flatten → Gemm. The batch dimension is symbolic
(`N`). With --time it prints one JSON line per thread count: the median milliseconds of an
inference at batch 1 (224×224), as the other peer scripts do.
"""

import argparse
import json
import statistics
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Builder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.inits = []
        self.count = 0

    def name(self, kind):
        self.count += 1
        return f"{kind}_{self.count}"

    def init(self, name, arr):
        self.inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def conv(self, x, cin, cout, k, stride=1, pad=0):
        n = self.name("conv")
        std = np.sqrt(2.0 / (cin * k * k))
        w = self.init(n + ".weight", self.rng.normal(0.0, std, (cout, cin, k, k)))
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, w],
                [n],
                name=n,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad] * 4,
            )
        )
        return n

    def bn(self, x, c):
        n = self.name("bn")
        scale = self.init(n + ".weight", self.rng.uniform(0.5, 1.0, c))
        bias = self.init(n + ".bias", self.rng.normal(0.0, 0.1, c))
        mean = self.init(n + ".running_mean", self.rng.normal(0.0, 0.1, c))
        var = self.init(n + ".running_var", self.rng.uniform(0.5, 1.5, c))
        self.nodes.append(
            helper.make_node(
                "BatchNormalization", [x, scale, bias, mean, var], [n], name=n, epsilon=1e-5
            )
        )
        return n

    def op(self, kind, inputs, **attrs):
        n = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [n], name=n, **attrs))
        return n

    def conv_bn(self, x, cin, cout, k, stride=1, pad=0, relu=True):
        y = self.bn(self.conv(x, cin, cout, k, stride, pad), cout)
        return self.op("Relu", [y]) if relu else y


def bottleneck(b, x, cin, width, stride):
    cout = width * 4
    y = b.conv_bn(x, cin, width, 1)
    y = b.conv_bn(y, width, width, 3, stride, 1)
    y = b.conv_bn(y, width, cout, 1, relu=False)
    short = x
    if stride != 1 or cin != cout:
        short = b.conv_bn(x, cin, cout, 1, stride, relu=False)
    return b.op("Relu", [b.op("Add", [y, short])]), cout


def resnet50(seed=0):
    b = Builder(seed)
    x = b.conv_bn("input", 3, 64, 7, 2, 3)
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c = 64
    for width, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for i in range(blocks):
            x, c = bottleneck(b, x, c, width, stride if i == 0 else 1)
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    w = b.init("fc.weight", b.rng.normal(0.0, np.sqrt(1.0 / c), (1000, c)))
    bias = b.init("fc.bias", np.zeros(1000))
    b.nodes.append(helper.make_node("Gemm", [x, w, bias], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        b.nodes,
        "resnet50",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def time_ort(path, threads, runs):
    import onnxruntime as ort

    x = np.random.default_rng(1).normal(size=(1, 3, 224, 224)).astype(np.float32)
    for t in threads:
        so = ort.SessionOptions()
        so.intra_op_num_threads = t
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for _ in range(3):
            sess.run(None, {"input": x})
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(None, {"input": x})
            samples.append((time.perf_counter() - t0) * 1e3)
        print(
            json.dumps(
                {
                    "fw": "onnxruntime",
                    "version": ort.__version__,
                    "bench": "resnet50_infer",
                    "batch": 1,
                    "threads": t,
                    "ms": round(statistics.median(samples), 3),
                    "runs": runs,
                }
            ),
            flush=True,
        )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="where to write the .onnx file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time", action="store_true", help="time onnxruntime on the model")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=int, default=20)
    a = p.parse_args()
    onnx.save(resnet50(a.seed), a.out)
    if a.time:
        time_ort(a.out, a.threads, a.runs)


if __name__ == "__main__":
    main()
