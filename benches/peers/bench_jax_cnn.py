"""JAX (XLA CPU) baseline for a small convnet: the Keras "simple MNIST convnet".

Input 28x28x1 (NHWC) -> Conv2D(32, 3x3, valid, ReLU) -> MaxPool 2x2 -> Conv2D(64, 3x3, valid,
ReLU) -> MaxPool 2x2 -> Flatten (1600) -> Dense(10); softmax cross-entropy; Adam (lr 1e-3).
Times one jitted training step (forward, backward, Adam update) at batch 128 and inference at
batch 128, float32. Threads as in run_all.sh: run the 1-thread case under `taskset -c 0` with
XLA_FLAGS='--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'.
FLOPs at batch 128 (2 per multiply-add): forward conv1 0.050, conv2 0.571, dense 0.004 GFLOP;
a training step (forward, both conv2 gradients, conv1's filter gradient, dense gradients) is about
1.82 GFLOP, so at gemm's ~100 GFLOP/s per core the GEMM bound is about 18 ms at 1 thread.
Random inputs, not MNIST: a step's time does not depend on the values.

    XLA_FLAGS='--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1' \
        taskset -c 0 python3 benches/peers/bench_jax_cnn.py --threads 1
    python3 benches/peers/bench_jax_cnn.py --threads 2
"""
import json
import os
import sys
import time

import numpy as np


# The helpers below are those of the peer set's common.py (threads_arg, timeit, emit,
# env_summary), inlined so that this script runs on its own.
def threads_arg():
    """Thread count requested on the command line (default 1)."""
    for i, a in enumerate(sys.argv):
        if a == "--threads":
            return int(sys.argv[i + 1])
    return 1


def timeit(fn, warm=10, max_iter=500, max_s=3.0, min_iter=10):
    """Median wall time (ms) of fn() over up to max_iter calls / max_s seconds."""
    for _ in range(warm):
        fn()
    ts = []
    t_start = time.perf_counter()
    while len(ts) < max_iter and (len(ts) < min_iter or time.perf_counter() - t_start < max_s):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts)), len(ts)


def emit(**kw):
    kw = {"run": int(os.environ.get("BENCH_RUN", "0")), **kw}
    print(json.dumps(kw), flush=True)


def env_summary():
    keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
            "XLA_FLAGS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    return {k: os.environ.get(k) for k in keys if k in os.environ}


T = threads_arg()

import jax                      # noqa: E402
import jax.numpy as jnp         # noqa: E402

jax.config.update("jax_platforms", "cpu")
DN = ("NHWC", "HWIO", "NHWC")


def params(seed=1):
    rng = np.random.default_rng(seed)
    def he(shape, fan_in):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)))
    return [he((3, 3, 1, 32), 9), np.zeros(32, np.float32),
            he((3, 3, 32, 64), 288), np.zeros(64, np.float32),
            he((1600, 10), 1600), np.zeros(10, np.float32)]


def forward(ps, x):
    w1, b1, w2, b2, w3, b3 = ps
    h = jax.lax.conv_general_dilated(x, w1, (1, 1), "VALID", dimension_numbers=DN) + b1
    h = jax.nn.relu(h)
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    h = jax.lax.conv_general_dilated(h, w2, (1, 1), "VALID", dimension_numbers=DN) + b2
    h = jax.nn.relu(h)
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    h = h.reshape(h.shape[0], -1)
    return h @ w3 + b3


def loss_fn(ps, x, y):
    logp = jax.nn.log_softmax(forward(ps, x))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def adam_step(ps, ms, vs, t, x, y, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7):
    loss, gs = jax.value_and_grad(loss_fn)(ps, x, y)
    t = t + 1
    ms = [b1 * m + (1 - b1) * g for m, g in zip(ms, gs)]
    vs = [b2 * v + (1 - b2) * g * g for v, g in zip(vs, gs)]
    a = lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    ps = [p - a * m / (jnp.sqrt(v) + eps) for p, m, v in zip(ps, ms, vs)]
    return ps, ms, vs, t, loss


def main():
    emit(fw="jax", info="versions", jax=jax.__version__, env=env_summary(), threads=T)
    rng = np.random.default_rng(0)
    bs = 128
    x = jnp.asarray(rng.standard_normal((bs, 28, 28, 1), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, size=bs).astype(np.int32))
    ps = [jnp.asarray(p) for p in params()]
    ms = [jnp.zeros_like(p) for p in ps]
    vs = [jnp.zeros_like(p) for p in ps]
    t = jnp.asarray(0.0, jnp.float32)
    t0 = time.perf_counter()
    step = jax.jit(adam_step, donate_argnums=(0, 1, 2))
    lowered = step.lower(ps, ms, vs, t, x, y)
    lowered.compile()
    emit(fw="jax", bench="cnn_compile_train_step", batch=bs, threads=T, s=time.perf_counter() - t0)
    st = {"s": (ps, ms, vs, t)}

    def run():
        p, m, v, tt = st["s"]
        p, m, v, tt, l = step(p, m, v, tt, x, y)
        st["s"] = (p, m, v, tt)
        l.block_until_ready()
    ms_, n = timeit(run, warm=10, max_s=5.0)
    emit(fw="jax", bench="cnn_train", batch=bs, threads=T, ms=ms_, iters=n)

    fwd = jax.jit(forward)
    ps = [jnp.asarray(p) for p in params()]
    ms_, n = timeit(lambda: fwd(ps, x).block_until_ready(), warm=10, max_s=3.0)
    emit(fw="jax", bench="cnn_infer", batch=bs, threads=T, ms=ms_, iters=n)


if __name__ == "__main__":
    main()
