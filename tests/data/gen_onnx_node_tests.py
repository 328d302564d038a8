"""Writes the ONNX backend node test suite (model.onnx + test_data_set_N/{input,output}_K.pb per
case) from the `onnx` PyPI package's own case generators, offline.
Usage: python tests/data/gen_onnx_node_tests.py OUT_DIR   (needs: pip install onnx numpy; onnx 1.23.2 writes 1,858 tensor cases)"""
import os
import sys

from onnx import numpy_helper
from onnx.backend.test.case import node as node_test


def tensor_bytes(value, name):
    if hasattr(value, "SerializeToString"):
        return value.SerializeToString()
    return numpy_helper.from_array(value, name).SerializeToString()


def main(out):
    written, skipped = 0, []
    for case in node_test.collect_testcases(None):
        d = os.path.join(out, case.name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        try:
            for i, (inputs, outputs) in enumerate(case.data_sets):
                dd = os.path.join(d, f"test_data_set_{i}")
                os.makedirs(dd, exist_ok=True)
                for j, x in enumerate(inputs):
                    with open(os.path.join(dd, f"input_{j}.pb"), "wb") as f:
                        f.write(tensor_bytes(x, case.model.graph.input[j].name))
                for j, y in enumerate(outputs):
                    with open(os.path.join(dd, f"output_{j}.pb"), "wb") as f:
                        f.write(tensor_bytes(y, case.model.graph.output[j].name))
            written += 1
        except Exception as e:  # sequences, maps and optionals are not plain tensors
            skipped.append(f"{case.name}: {type(e).__name__}")
    print(f"{written} cases written to {out}; {len(skipped)} with non-tensor data skipped")
    for s in skipped:
        print("  skipped", s)


if __name__ == "__main__":
    main(sys.argv[1])
