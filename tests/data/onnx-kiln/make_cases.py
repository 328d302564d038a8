"""Writes kiln's own ONNX node cases (the backend node tests' layout: model.onnx and
test_data_set_0/{input,output}_K.pb) for what the standard suite does not cover: 3-D
convolution (none in onnx 1.23.2's node tests), an open batch axis, pads wider than the axis,
integer powers that wrap, float remainders at the edges. Expected outputs come from onnx's
reference evaluator. Run once with the repo's .peers-venv python from this directory:

    KILN_PYTHON make_cases.py .   # (onnxruntime too, for the grouped ConvTranspose)
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

OUT = sys.argv[1] if len(sys.argv) > 1 else "."
rng = np.random.default_rng(18)
DT = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE,
      np.int32: TensorProto.INT32, np.int64: TensorProto.INT64}


def run_ort(model, feeds):
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def case(name, op, inputs, attrs, n_out=1, opset=22, batch_param=False, out_names=None, ort=False):
    names = [f"x{i}" for i in range(len(inputs))]
    outs = out_names or [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    vin = []
    for i, (n, a) in enumerate(zip(names, inputs)):
        shape = list(a.shape)
        if batch_param and i == 0:
            shape[0] = "N"
        vin.append(helper.make_tensor_value_info(n, DT[a.dtype.type], shape))
    if ort:
        # onnx's reference ConvTranspose mishandles groups; onnxruntime is the reference here.
        vout0 = [helper.make_tensor_value_info(o, DT[inputs[0].dtype.type], None) for o in outs]
        m0 = helper.make_model(helper.make_graph([node], name, vin, vout0),
                               opset_imports=[helper.make_opsetid("", opset)])
        m0.ir_version = 10
        sess_outs = run_ort(m0, dict(zip(names, inputs)))
    else:
        sess_outs = ReferenceEvaluator(
            helper.make_model(
                helper.make_graph([node], name, vin, [helper.make_tensor_value_info(o, 0, None) for o in outs]),
                opset_imports=[helper.make_opsetid("", opset)],
            )
        ).run(None, dict(zip(names, inputs)))
    vout = [helper.make_tensor_value_info(o, DT[r.dtype.type], list(r.shape)) for o, r in zip(outs, sess_outs)]
    model = helper.make_model(
        helper.make_graph([node], name, vin, vout),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    d = os.path.join(OUT, name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    onnx.save(model, os.path.join(d, "model.onnx"))
    for k, a in enumerate(inputs):
        t = numpy_helper.from_array(a)
        open(os.path.join(d, "test_data_set_0", f"input_{k}.pb"), "wb").write(t.SerializeToString())
    for k, a in enumerate(sess_outs):
        t = numpy_helper.from_array(a)
        open(os.path.join(d, "test_data_set_0", f"output_{k}.pb"), "wb").write(t.SerializeToString())


def r(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# 3-D convolutions: groups, strides, dilations, asymmetric pads, bias; f64; an open batch.
case("kiln_conv3d_groups_strides_pads", "Conv", [r(2, 4, 5, 6, 7), r(6, 2, 3, 2, 3), r(6)],
     dict(group=2, strides=[2, 1, 2], dilations=[1, 2, 1], pads=[1, 0, 2, 0, 1, 1]))
case("kiln_conv3d_f64_same_upper", "Conv", [r(1, 3, 4, 5, 5, dtype=np.float64), r(2, 3, 3, 3, 3, dtype=np.float64)],
     dict(auto_pad="SAME_UPPER", strides=[2, 2, 1]))
case("kiln_conv3d_open_batch", "Conv", [r(2, 2, 4, 4, 3), r(3, 2, 2, 3, 1)],
     dict(strides=[1, 1, 1]), batch_param=True)
# 3-D pools on an open batch, and MaxPool's indices in 3-D (column-major too).
case("kiln_maxpool3d_open_batch", "MaxPool", [r(2, 3, 5, 6, 4)],
     dict(kernel_shape=[2, 3, 2], strides=[2, 2, 1], pads=[1, 1, 0, 0, 1, 1]), batch_param=True)
case("kiln_averagepool3d_pads_ceil", "AveragePool", [r(1, 2, 5, 5, 6)],
     dict(kernel_shape=[3, 2, 3], strides=[2, 2, 2], pads=[1, 0, 1, 1, 1, 0], ceil_mode=1))
case("kiln_maxpool3d_indices_column_major", "MaxPool", [r(2, 2, 4, 5, 3)],
     dict(kernel_shape=[2, 2, 2], strides=[1, 2, 1], pads=[0, 1, 1, 1, 0, 0], storage_order=1), n_out=2)
case("kiln_maxpool2d_indices_dilated_ties", "MaxPool",
     [np.round(r(2, 3, 6, 7)).astype(np.float32)],
     dict(kernel_shape=[3, 2], strides=[1, 2], dilations=[2, 1], pads=[1, 1, 2, 0]), n_out=2)
# Pads wider than the axis (reflected and wrapped more than once) on two axes.
x = r(2, 3, 4)
pads = np.array([0, 5, 2, 1, 4, 7], dtype=np.int64)
for mode in ["reflect", "wrap", "edge"]:
    case(f"kiln_pad_{mode}_wide", "Pad", [x, pads], dict(mode=mode), opset=19)
# Integer powers that wrap, with a run-time exponent; a float exponent.
base = rng.integers(-9, 10, size=(3, 5)).astype(np.int64)
exp = rng.integers(0, 45, size=(3, 5)).astype(np.int64)
case("kiln_pow_int64_wraps", "Pow", [base, exp], {}, opset=15)
case("kiln_pow_int32_wraps", "Pow", [base.astype(np.int32), exp.astype(np.int32)], {}, opset=15)
# Float remainders with large quotients, both fmods.
a = (r(4, 6, dtype=np.float64) * 1e6)
b = r(4, 6, dtype=np.float64) * 1e-3
for f in [0, 1]:
    case(f"kiln_mod_float64_large_quotients_fmod_{f}", "Mod", [a, b], dict(fmod=f), opset=13)
    case(f"kiln_mod_float32_large_quotients_fmod_{f}", "Mod", [a.astype(np.float32), b.astype(np.float32)], dict(fmod=f), opset=13)
# Training-mode BatchNormalization on 3-D input with momentum.
case("kiln_batchnorm_training_3d_momentum", "BatchNormalization",
     [r(4, 3, 5), r(3), r(3), r(3), np.abs(r(3))],
     dict(training_mode=1, momentum=0.7, epsilon=1e-3), n_out=3, opset=15)
# 3-D transposed convolutions: groups, strides, dilations, pads, output_padding; an open batch.
case("kiln_convtranspose3d_groups_strides_pads", "ConvTranspose", [r(2, 4, 3, 4, 3), r(4, 3, 2, 3, 2), r(6)],
     dict(group=2, strides=[2, 1, 3], dilations=[2, 1, 1], pads=[1, 0, 0, 0, 1, 1], output_padding=[1, 0, 2]), ort=True)
case("kiln_convtranspose3d_open_batch_output_shape", "ConvTranspose", [r(2, 2, 3, 3, 2), r(2, 3, 2, 2, 2)],
     dict(strides=[2, 2, 1], output_shape=[7, 6, 3]), batch_param=True)
# count_include_pad with ceil-mode windows past the padded extent (2-D and 3-D).
case("kiln_averagepool2d_ceil_count_include_pad", "AveragePool", [r(1, 2, 6, 7)],
     dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1, count_include_pad=1))
case("kiln_averagepool3d_ceil_count_include_pad", "AveragePool", [r(2, 1, 5, 4, 6)],
     dict(kernel_shape=[2, 3, 2], strides=[2, 2, 3], pads=[0, 1, 0, 1, 0, 1], ceil_mode=1, count_include_pad=1))
