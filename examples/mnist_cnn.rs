//! Keras' "simple MNIST convnet" (keras.io/examples/vision/mnist_convnet): two 3×3 ReLU
//! convolutions with 2×2 max pooling, dropout 0.5 and a dense softmax layer, 34,826
//! parameters, trained with Adam at batch 128 on 54,000 images (`validation_split(0.1)`),
//! 15 epochs as in Keras. The README's convnet command:
//!
//! ```sh
//! cargo run --release --example mnist_cnn                       # the shipped data/mnist
//! cargo run --release --example mnist_cnn -- path/to/fashion    # any 28×28 IDX set
//! cargo run --release --example mnist_cnn -- --epochs 3 --subset 10000
//! KILN_THREADS=1 cargo run --release --example mnist_cnn        # time one core
//! ```
//!
//! Prints the summary, per-epoch time and metrics, the test accuracy, and writes
//! `mnist_cnn.svg` (training curves).

mod lab;

use kiln::nn::*;
use kiln::prelude::*;
use std::time::Instant;

fn main() -> Result<()> {
    let a = lab::mnist_args("mnist_cnn", 15)?;
    let t0 = Instant::now();
    // The same pixels as the MLP's, seen as NHWC images [n, 28, 28, 1].
    let m = lab::mnist(a.dir.as_deref())?.into_images()?;
    let (x, y) = match a.subset {
        Some(n) => lab::head(&m.train_x, &m.train_y, n)?,
        None => (m.train_x.clone(), m.train_y.clone()),
    };
    println!(
        "MNIST: {} training and {} test images, loaded in {:.2}s; {} thread(s)",
        x.shape()[0],
        m.test_x.shape()[0],
        t0.elapsed().as_secs_f64(),
        kiln::threads::threads()
    );

    let mut cnn = lab::mnist_cnn(1e-3)?;
    print!("{}", cnn.summary()?);
    let t = Instant::now();
    let h = cnn.fit(
        &x,
        &y,
        FitConfig::new()
            .epochs(a.epochs)
            .batch_size(128)
            .validation_split(0.1),
    )?;
    let secs = t.elapsed().as_secs_f64() / h.epochs() as f64;
    let test = cnn.evaluate(&m.test_x, &m.test_y, 1000)?;
    h.plot("mnist_cnn.svg")?;
    println!(
        "convnet: test accuracy {:.4} ({:.2}s per epoch, {} epochs, curves in mnist_cnn.svg)",
        test["accuracy"],
        secs,
        h.epochs()
    );
    Ok(())
}
