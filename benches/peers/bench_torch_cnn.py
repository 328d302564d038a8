"""PyTorch eager on the Keras "simple MNIST convnet", for the README's per-epoch comparison.

The same model and loop as kiln's `examples/mnist_cnn.rs` and Keras' example:
Conv2D(32, 3x3, valid, ReLU) -> MaxPool 2x2 -> Conv2D(64, 3x3, valid, ReLU) -> MaxPool 2x2 ->
Flatten (1600) -> Dropout(0.5) -> Dense(10); softmax cross-entropy on logits; Adam (lr 1e-3,
eps 1e-7 as Keras); batch 128. Data: the shipped MNIST (data/mnist), pixels scaled to [0, 1],
the last 10% of the training set held out for validation (as Keras' validation_split=0.1),
shuffled every epoch, validation loss and accuracy computed every epoch. Batches are taken by
indexing tensors already in memory (no DataLoader), the fastest way to feed eager PyTorch.
The model runs in PyTorch's own layout, NCHW (what a PyTorch user writes); the images are
converted once, before timing.

For each thread count (torch.set_num_threads), it times EPOCHS epochs (the time of an epoch
includes its validation pass), then the training step alone at batch 128 (forward, backward,
Adam; median of individually timed steps after warm-up, comparable with bench_jax_cnn.py's
cnn_train), and prints JSON lines as the other peer scripts do:

    {"run": 0, "fw": "torch", "bench": "cnn_epoch", "threads": 1, "epoch": 1, "s": ..., ...}
    {"run": 0, "fw": "torch", "bench": "cnn_epoch_median", "threads": 1, "s": ...}
    {"run": 0, "fw": "torch", "bench": "cnn_train", "batch": 128, "threads": 1, "ms": ...}

Run from the repository's root (it reads data/mnist):

    python3 benches/peers/bench_torch_cnn.py [--epochs 3] [--threads 1 2]

For the 1-thread figure on a loaded machine, pin it: `taskset -c 0 ... --threads 1`.
"""
import argparse
import gzip
import json
import os
import statistics
import time

import numpy as np
import torch


def emit(**kw):
    kw = {"run": int(os.environ.get("BENCH_RUN", "0")), **kw}
    print(json.dumps(kw), flush=True)


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def model():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(1600, 10),
    )


def epochs(threads, n_epochs, xt, yt, xv, yv):
    torch.manual_seed(0)
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for epoch in range(n_epochs):
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 128):
            b = perm[i:i + 128]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt[b]), yt[b])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            out = torch.cat([net(xv[i:i + 1000]) for i in range(0, len(xv), 1000)])
            val_loss = loss_fn(out, yv).item()
            val_acc = (out.argmax(1) == yv).float().mean().item()
        times.append(time.perf_counter() - t0)
        emit(fw="torch", bench="cnn_epoch", threads=threads, epoch=epoch + 1, s=times[-1],
             val_loss=val_loss, val_accuracy=val_acc)
    emit(fw="torch", bench="cnn_epoch_median", threads=threads, s=statistics.median(times),
         epochs=n_epochs)


def step(threads, xt, yt, warm=10, iters=50):
    torch.manual_seed(0)
    net = model()
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = xt[:128], yt[:128]

    def one():
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()

    for _ in range(warm):
        one()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        one()
        ts.append((time.perf_counter() - t0) * 1e3)
    emit(fw="torch", bench="cnn_train", batch=128, threads=threads, ms=statistics.median(ts),
         iters=iters)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--data", default="data/mnist")
    args = ap.parse_args()
    x = idx(os.path.join(args.data, "train-images-idx3-ubyte.gz"))
    y = idx(os.path.join(args.data, "train-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28).contiguous()
    y = torch.from_numpy(y.astype(np.int64))
    n_val = len(x) // 10
    xt, yt, xv, yv = x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
    emit(fw="torch", info="versions", torch=torch.__version__, threads=args.threads)
    for t in args.threads:
        torch.set_num_threads(t)
        epochs(t, args.epochs, xt, yt, xv, yv)
        step(t, xt, yt)


if __name__ == "__main__":
    main()
