"""The report's MLP and elementwise peers, served to `cargo bench --bench report`.

One process per framework and thread count; it reads requests on stdin and answers each with
one JSON line on stdout, so the report can interleave its samples with kiln's (kiln, JAX,
numpy, PyTorch, kiln, ...) in one run:

    <case> <calls>    run the case <calls> times back to back; answer {"case", "s"}: the
                      wall seconds per call (the first request of a case also compiles it)
    quit              exit

Cases (float32, the workloads of the report's MLP rows):
    train128, train32   one training step of the 784-256-128-10 ReLU MLP: forward, mean
                        sparse softmax cross-entropy, backward, SGD (lr 0.01); He-normal
                        weights (in, out), zero biases; the weights are updated in place
    infer128            the forward pass (logits) at batch 128
    elementwise         sigmoid(a*b + c) * tanh(a) over 16M elements (JAX only)
    compile             JAX: lower + compile of the batch-128 training step, a fresh jit each
                        call after `jax.clear_caches()` (the report's cold-compile row)

Frameworks (`--fw`):
    jax     jax.jit, arguments donated as in a training loop
    numpy   hand-written backprop on numpy/OpenBLAS matmuls
    torch   PyTorch eager, nn.Linear layers and torch.optim.SGD

Threads (`--threads N`): the process pins itself to N cores (the first N it may use) and,
before importing the framework, sets what that framework reads: XLA_FLAGS (one thread:
no Eigen multithreading, one intra-op thread), OPENBLAS_NUM_THREADS / OMP_NUM_THREADS,
torch.set_num_threads. After each answer the process sleeps `--settle` seconds (default 0.1)
before it writes the answer, so OpenBLAS's and Eigen's workers, which spin a while after
work, are asleep before the report times kiln again.

    python3 benches/peers/mlp_peers.py --fw jax --threads 1 <<< "train128 200"
"""
import argparse
import json
import os
import sys
import time

DIMS = (784, 256, 128, 10)
LR = 0.01
N_ELEM = 16 * 1024 * 1024

ap = argparse.ArgumentParser()
ap.add_argument("--fw", choices=["jax", "numpy", "torch"], required=True)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--settle", type=float, default=0.1)
args = ap.parse_args()
T = args.threads

cpus = sorted(os.sched_getaffinity(0))
if T <= len(cpus):
    os.sched_setaffinity(0, cpus[:T])
os.environ["OPENBLAS_NUM_THREADS"] = str(T)
os.environ["OMP_NUM_THREADS"] = str(T)
os.environ["MKL_NUM_THREADS"] = str(T)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if args.fw == "jax" and T == 1:
    os.environ["XLA_FLAGS"] = (
        "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np  # noqa: E402  (after the thread settings)


def mlp_data(batch, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, DIMS[0]), dtype=np.float32)
    y = rng.integers(0, DIMS[-1], size=batch).astype(np.int32)
    return x, y


def mlp_params(seed=1):
    """He-initialised weights (in, out) and zero biases, float32."""
    rng = np.random.default_rng(seed)
    ps = []
    for i in range(3):
        w = (rng.standard_normal((DIMS[i], DIMS[i + 1]), dtype=np.float32)
             * np.float32(np.sqrt(2.0 / DIMS[i])))
        ps += [w, np.zeros(DIMS[i + 1], np.float32)]
    return ps


def elem_data(seed=2):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(N_ELEM, dtype=np.float32) for _ in range(3)]


# Each framework: a dict case -> a function of no arguments running the case once.

def jax_cases():
    import jax
    import jax.numpy as jnp

    def forward(ps, x):
        w1, b1, w2, b2, w3, b3 = ps
        h = jax.nn.relu(x @ w1 + b1)
        h = jax.nn.relu(h @ w2 + b2)
        return h @ w3 + b3

    def loss_fn(ps, x, y):
        logp = jax.nn.log_softmax(forward(ps, x))
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def step(ps, x, y):
        loss, gs = jax.value_and_grad(loss_fn)(ps, x, y)
        return [p - LR * g for p, g in zip(ps, gs)], loss

    step_j = jax.jit(step, donate_argnums=(0,))
    fwd_j = jax.jit(forward)

    def train(batch):
        x, y = (jnp.asarray(v) for v in mlp_data(batch))
        st = {"ps": [jnp.asarray(p) for p in mlp_params()]}

        def run():
            st["ps"], loss = step_j(st["ps"], x, y)
            loss.block_until_ready()
        return run

    def infer():
        x = jnp.asarray(mlp_data(128)[0])
        ps = [jnp.asarray(p) for p in mlp_params()]
        return lambda: fwd_j(ps, x).block_until_ready()

    def elementwise():
        a, b, c = (jnp.asarray(v) for v in elem_data())
        ew = jax.jit(lambda a, b, c: jax.nn.sigmoid(a * b + c) * jnp.tanh(a))
        return lambda: ew(a, b, c).block_until_ready()

    def compile_():
        x, y = (jnp.asarray(v) for v in mlp_data(128))
        ps = [jnp.asarray(p) for p in mlp_params()]
        def run():
            jax.clear_caches()  # else a second lower + compile of `step` is a cache hit
            jax.jit(step).lower(ps, x, y).compile()
        return run

    return {"train128": lambda: train(128), "train32": lambda: train(32),
            "infer128": infer, "elementwise": elementwise, "compile": compile_}


def numpy_cases():
    def forward(ps, x):
        w1, b1, w2, b2, w3, b3 = ps
        h1 = np.maximum(x @ w1 + b1, 0)
        h2 = np.maximum(h1 @ w2 + b2, 0)
        return h1, h2, h2 @ w3 + b3

    def train_step(ps, x, y):
        w1, b1, w2, b2, w3, b3 = ps
        n = x.shape[0]
        h1, h2, logits = forward(ps, x)
        m = logits.max(axis=1, keepdims=True)
        e = np.exp(logits - m)
        s = e.sum(axis=1, keepdims=True)
        g = e / s
        loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - logits[np.arange(n), y]))
        g[np.arange(n), y] -= 1
        g *= np.float32(1.0 / n)
        gw3, gb3 = h2.T @ g, g.sum(0)
        g2 = (g @ w3.T) * (h2 > 0)
        gw2, gb2 = h1.T @ g2, g2.sum(0)
        g1 = (g2 @ w2.T) * (h1 > 0)
        gw1, gb1 = x.T @ g1, g1.sum(0)
        for p, gp in zip(ps, (gw1, gb1, gw2, gb2, gw3, gb3)):
            p -= np.float32(LR) * gp
        return loss

    def train(batch):
        x, y = mlp_data(batch)
        ps = mlp_params()
        return lambda: train_step(ps, x, y)

    def infer():
        x = mlp_data(128)[0]
        ps = mlp_params()
        return lambda: forward(ps, x)

    return {"train128": lambda: train(128), "train32": lambda: train(32), "infer128": infer}


def torch_cases():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(T)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    def model():
        ps = mlp_params()
        layers = []
        for i in range(3):
            lin = nn.Linear(DIMS[i], DIMS[i + 1])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(ps[2 * i].T.copy()))
                lin.bias.copy_(torch.from_numpy(ps[2 * i + 1]))
            layers.append(lin)
            if i < 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    def train(batch):
        m = model()
        opt = torch.optim.SGD(m.parameters(), lr=LR)
        x, y = mlp_data(batch)
        x, y = torch.from_numpy(x), torch.from_numpy(y).long()

        def run():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
        return run

    def infer():
        m = model()
        x = torch.from_numpy(mlp_data(128)[0])

        def run():
            with torch.no_grad():
                m(x)
        return run

    return {"train128": lambda: train(128), "train32": lambda: train(32), "infer128": infer}


def main():
    makers = {"jax": jax_cases, "numpy": numpy_cases, "torch": torch_cases}[args.fw]()
    ready = {}
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        case, calls = words[0], int(words[1]) if len(words) > 1 else 1
        if case not in makers:
            print(json.dumps({"case": case, "error": f"{args.fw} has no case {case}"}),
                  flush=True)
            continue
        if case not in ready:
            ready[case] = makers[case]()
        run = ready[case]
        t0 = time.perf_counter()
        for _ in range(max(calls, 1)):
            run()
        s = (time.perf_counter() - t0) / max(calls, 1)
        time.sleep(args.settle)
        print(json.dumps({"case": case, "s": s}), flush=True)


if __name__ == "__main__":
    main()
