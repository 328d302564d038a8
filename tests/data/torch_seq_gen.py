"""Writes tests/data/torch_seq.safetensors and tests/data/torch_seq_io.safetensors.

The weights file has exactly the names, shapes and dtypes of the state_dict of this PyTorch
model (torch 2.x), which `safetensors.torch.save_file(model.state_dict(), ...)` would write:

    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, kernel_size=3),   # 0.weight f32[3,2,3,3] (OIHW), 0.bias f32[3]
        torch.nn.BatchNorm2d(3),                # 1.weight, 1.bias, 1.running_mean,
                                                # 1.running_var f32[3],
                                                # 1.num_batches_tracked i64[] (a 0-d tensor)
        torch.nn.ReLU(),                        # 2: no state
        torch.nn.Flatten(),                     # 3: no state (flattens C, H, W in that order)
        torch.nn.Linear(27, 4),                 # 4.weight f32[4,27] ([out, in]), 4.bias f32[4]
    ).eval()

torch is not installed where this was made, so the values are drawn with numpy (seeded) and
written with `safetensors.numpy.save_file`, which writes the same format. The io file holds an
input batch `x` (NCHW, f32[2,2,5,5], as PyTorch takes it) and `y`, the model's output in eval
mode (BatchNorm uses the running statistics, eps = 1e-5) computed here with numpy in float64
and rounded to f32.

Run from the repository's root: .peers-venv/bin/python tests/data/torch_seq_gen.py
"""

import os

import numpy as np
from safetensors.numpy import save_file

rng = np.random.default_rng(18)
here = os.path.dirname(os.path.abspath(__file__))


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


state = {
    "0.weight": f32(3, 2, 3, 3, scale=0.4),
    "0.bias": f32(3, scale=0.1),
    "1.weight": (1.0 + f32(3, scale=0.2)).astype(np.float32),
    "1.bias": f32(3, scale=0.1),
    "1.running_mean": f32(3, scale=0.3),
    "1.running_var": (0.5 + rng.random(3)).astype(np.float32),
    "1.num_batches_tracked": np.array(1234, dtype=np.int64),
    "4.weight": f32(4, 27, scale=0.2),
    "4.bias": f32(4, scale=0.1),
}
x = f32(2, 2, 5, 5)

# The forward pass in float64.
w = state["0.weight"].astype(np.float64)
n, c, h, wd = x.shape
o, _, kh, kw = w.shape
oh, ow = h - kh + 1, wd - kw + 1
conv = np.zeros((n, o, oh, ow))
for i in range(oh):
    for j in range(ow):
        patch = x[:, :, i : i + kh, j : j + kw].astype(np.float64)  # [n, c, kh, kw]
        conv[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w)
conv += state["0.bias"].astype(np.float64)[None, :, None, None]
bn = lambda k: state[k].astype(np.float64)[None, :, None, None]
z = (conv - bn("1.running_mean")) / np.sqrt(bn("1.running_var") + 1e-5) * bn("1.weight") + bn("1.bias")
z = np.maximum(z, 0.0)
flat = z.reshape(n, -1)  # C, H, W order
y = flat @ state["4.weight"].astype(np.float64).T + state["4.bias"].astype(np.float64)

save_file(state, os.path.join(here, "torch_seq.safetensors"))
save_file({"x": x, "y": y.astype(np.float32)}, os.path.join(here, "torch_seq_io.safetensors"))
print("wrote", sorted(state), "y =", y)
