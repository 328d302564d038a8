"""PyTorch eager on the lab's MNIST MLP, for the README's per-epoch comparison.

Same model and training as `cargo run --release --example mnist` (the MLP part):
784-256-128-10, ReLU, dropout 0.2 after each hidden layer, softmax cross-entropy, Adam
(lr 1e-3), batch 128, the last 10% of the training set held out for validation (as Keras'
validation_split), shuffled every epoch, validation loss and accuracy computed every epoch.
Batches are taken by indexing tensors already in memory (no DataLoader), which is the
fastest way to feed eager PyTorch. Prints the median seconds per epoch over the epochs run.

    python3 benches/peers/mnist_epoch_torch.py [EPOCHS] [THREADS]
"""
import gzip
import statistics
import sys
import time

import numpy as np
import torch


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.from_numpy(idx("data/mnist/train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255.0)
    y = torch.from_numpy(idx("data/mnist/train-labels-idx1-ubyte.gz").astype(np.int64))
    n_val = len(x) // 10
    xt, yt, xv, yv = x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Dropout(0.2),
        torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Dropout(0.2),
        torch.nn.Linear(128, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 128):
            b = perm[i:i + 128]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[b]), yt[b])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = torch.cat([model(xv[i:i + 128]) for i in range(0, len(xv), 128)])
            val_loss = loss_fn(out, yv).item()
            val_acc = (out.argmax(1) == yv).float().mean().item()
        times.append(time.perf_counter() - t0)
        print(f"epoch {epoch + 1}: {times[-1]:.2f} s, val_loss {val_loss:.4f}, val_accuracy {val_acc:.4f}")
    print(f"torch {torch.__version__}, {threads} thread(s): median {statistics.median(times):.2f} s per epoch")


if __name__ == "__main__":
    main()
