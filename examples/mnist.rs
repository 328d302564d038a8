//! MNIST (70,000 handwritten digits, 28×28) with a single-layer network and an MLP
//! (784-256-128-10 with dropout), trained with `fit`, validation, early stopping and a
//! checkpoint of the best model. The README's main command:
//!
//! ```sh
//! cargo run --release --example mnist                         # the shipped data/mnist
//! cargo run --release --example mnist -- path/to/fashion      # any IDX set in the same format
//! cargo run --release --example mnist -- --epochs 3 --subset 10000
//! ```
//!
//! Prints per-epoch time and metrics, each network's test accuracy, and writes
//! `mnist_single.svg`, `mnist_mlp.svg` (training curves) and `mnist_best.safetensors` (the
//! MLP's best weights).

mod lab;

use kiln::nn::*;
use kiln::prelude::*;
use std::time::Instant;

fn main() -> Result<()> {
    let a = lab::mnist_args("mnist", 30)?;
    let t0 = Instant::now();
    let m = lab::mnist(a.dir.as_deref())?;
    let (x, y) = match a.subset {
        Some(n) => lab::head(&m.train_x, &m.train_y, n)?,
        None => (m.train_x.clone(), m.train_y.clone()),
    };
    println!(
        "MNIST: {} training and {} test images, loaded in {:.2}s",
        x.shape()[0],
        m.test_x.shape()[0],
        t0.elapsed().as_secs_f64()
    );

    // 1. Softmax regression: one layer, 7,850 parameters.
    let mut single = lab::single_layer(784, 10, 1e-3)?;
    print!("{}", single.summary()?);
    let t = Instant::now();
    let h = single.fit(
        &x,
        &y,
        FitConfig::new()
            .epochs(a.epochs.min(10))
            .batch_size(128)
            .validation_split(0.1),
    )?;
    let secs = t.elapsed().as_secs_f64() / h.epochs() as f64;
    let test = single.evaluate(&m.test_x, &m.test_y, 1000)?;
    h.plot("mnist_single.svg")?;
    println!(
        "single layer: test accuracy {:.4} ({:.2}s per epoch, curves in mnist_single.svg)\n",
        test["accuracy"], secs
    );

    // 2. An MLP with dropout, early stopping and a checkpoint of the best epoch.
    let mut mlp = lab::mlp(784, &[256, 128], 10, 0.2, 1e-3)?;
    print!("{}", mlp.summary()?);
    let t = Instant::now();
    let h = mlp.fit(
        &x,
        &y,
        FitConfig::new()
            .epochs(a.epochs)
            .batch_size(128)
            .validation_split(0.1)
            .callback(
                // Accuracy is what we report, and validation loss starts rising (the
                // network grows overconfident) while validation accuracy still improves.
                EarlyStopping::on("val_accuracy")
                    .patience(5)
                    .restore_best_weights(),
            )
            .callback(
                ModelCheckpoint::new("mnist_best.safetensors")
                    .monitor("val_accuracy")
                    .save_best_only(),
            ),
    )?;
    let secs = t.elapsed().as_secs_f64() / h.epochs() as f64;
    let test = mlp.evaluate(&m.test_x, &m.test_y, 1000)?;
    h.plot("mnist_mlp.svg")?;
    if let Some(e) = h.stopped_epoch {
        println!(
            "early stopping after epoch {}; best weights restored",
            e + 1
        );
    }
    println!(
        "mlp: test accuracy {:.4} ({:.2}s per epoch, {} epochs, curves in mnist_mlp.svg, best \
         weights in mnist_best.safetensors)",
        test["accuracy"],
        secs,
        h.epochs()
    );
    Ok(())
}
