"""Checks a model kiln exported against onnxruntime (run by tests/onnx_export.rs).

Usage: python onnx_export_ort.py DIR [DIR ...]

Each DIR holds `model.onnx`, one `in_<name>.npy` per graph input and one `out_<name>.npy`
per graph output (kiln's results). For each model: `onnx.checker.check_model(full_check=True)`
and strict shape inference must accept it, then onnxruntime (CPU) runs it on the inputs and
every output must match kiln's within |ort - kiln| <= RTOL * |kiln| + ATOL * max|kiln|
(the stated tolerance: 1e-5 relative; the second term covers outputs that are sums
cancelling to near zero). Needs numpy, onnx and onnxruntime; no network. Exit status 0 when
every model matches, 1 otherwise.
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

RTOL = 1e-5
ATOL = 1e-5


def check(d):
    path = os.path.join(d, "model.onnx")
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, strict_mode=True)
    feeds = {}
    want = {}
    for f in sorted(os.listdir(d)):
        if f.startswith("in_") and f.endswith(".npy"):
            feeds[f[3:-4]] = np.load(os.path.join(d, f))
        elif f.startswith("out_") and f.endswith(".npy"):
            want[f[4:-4]] = np.load(os.path.join(d, f))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    got = dict(zip(names, s.run(names, feeds)))
    ok = True
    for name, w in want.items():
        g = got[name]
        if g.shape != w.shape or g.dtype != w.dtype:
            print(f"{d}: output {name}: onnxruntime gives {g.dtype}{g.shape}, kiln {w.dtype}{w.shape}")
            ok = False
            continue
        if w.dtype == np.bool_ or np.issubdtype(w.dtype, np.integer):
            bad = int(np.sum(g != w))
            err = float(bad)
        else:
            scale = float(np.max(np.abs(w))) if w.size else 0.0
            diff = np.abs(g.astype(np.float64) - w.astype(np.float64))
            bound = RTOL * np.abs(w.astype(np.float64)) + ATOL * scale
            bad = int(np.sum(~(diff <= bound)))
            err = float(np.max(diff)) if w.size else 0.0
        print(f"{os.path.basename(d)}: output {name} {w.dtype}{list(w.shape)}: max |ort - kiln| = {err:.3g}, {bad} element(s) out of tolerance")
        ok &= bad == 0
    return ok


if __name__ == "__main__":
    results = [check(d) for d in sys.argv[1:]]
    sys.exit(0 if results and all(results) else 1)
