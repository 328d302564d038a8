//! A small convnet written TF1 style, with no `nn` layer: placeholders, variables,
//! `conv2d` with `Conv2dOptions`, `max_pool2d`, a loss, `autodiff::grad` to look at a
//! gradient, an optimizer's `minimize` for the train op, and a `Session` loop that prints
//! the loss going down.
//!
//! The images are fed NCHW (`[n, 1, 28, 28]`, PyTorch's and ONNX's layout) with an OIHW
//! filter, by `DataFormat::Nchw` on the convolution and the pooling: kiln computes in NHWC
//! and the passes fold the transposes that this inserts.
//!
//! ```sh
//! cargo run --release --example conv_lowlevel                              # 3 epochs, 5,000 images
//! cargo run --release --example conv_lowlevel -- --epochs 5 --rows 20000
//! ```

mod lab;

use clap::Parser;
use kiln::data;
use kiln::prelude::*;
use kiln::{Conv2dOptions, DataFormat, Pool2dOptions};

/// A small convnet trained TF1 style on MNIST images fed NCHW.
#[derive(Parser, Debug)]
#[command(name = "conv_lowlevel", version)]
struct Args {
    /// Epochs to train.
    #[arg(long, default_value_t = 3, value_name = "N")]
    epochs: usize,
    /// Training images (the first N of MNIST's training set).
    #[arg(long, default_value_t = 5000, value_name = "N")]
    rows: usize,
}

fn main() -> Result<()> {
    let Args { epochs, rows } = Args::parse();
    let m = lab::mnist(None)?;
    let (xs, ys) = lab::head(&m.train_x, &m.train_y, rows)?;
    // One grey channel: [n, 784] is already [n, 1, 28, 28] in memory.
    let n = xs.shape()[0];
    let x_train = xs.reshape([n, 1, 28, 28])?;
    let (xt, yt) = lab::head(&m.test_x, &m.test_y, 2000)?;
    let x_test = xt.reshape([2000, 1, 28, 28])?;

    // The graph: conv 3×3 (16 filters) + ReLU → max pool 2 → flatten → dense 10.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(1), Some(28), Some(28)]);
    let y = g.placeholder("y", DType::I32, [None]);
    // OIHW. The fan-based initializers read Keras' HWIO layout, so give He-uniform's bound,
    // sqrt(6 / fan_in) with fan_in = 1·3·3, directly.
    let limit = (6.0f64 / 9.0).sqrt();
    let filter = g.variable(
        "conv/filter",
        [16, 1, 3, 3],
        init::uniform(-limit, limit, 1),
    );
    let bias = g.variable("conv/bias", [1, 16, 1, 1], init::zeros());
    let nchw = Conv2dOptions::new().format(DataFormat::Nchw);
    let h = (x.conv2d(filter, &nchw) + bias).relu(); // [?, 16, 26, 26]
    let h = h.max_pool2d(&Pool2dOptions::new([2, 2]).format(DataFormat::Nchw)); // [?, 16, 13, 13]
    let w = g.variable("dense/kernel", [16 * 13 * 13, 10], init::glorot_uniform(2));
    let b = g.variable("dense/bias", [10], init::zeros());
    let logits = h.flatten().matmul(w) + b;
    let loss = logits
        .sparse_softmax_cross_entropy_with_logits(y)
        .mean_all();
    let accuracy = logits.argmax(-1).equal(y).cast(DType::F32).mean_all();
    println!("feature maps {}, logits {}", h.shape(), logits.shape());

    // A gradient is a graph node like any other: here the filter's, itself convolutions.
    let d_filter = kiln::autodiff::grad(loss, &[filter])?[0];
    let train = Adam::new(1e-3).minimize(loss, &[filter, bias, w, b])?;

    // The loop.
    let mut sess = Session::new(&g)?;
    let first = data::take_rows(&x_train, &(0..128).collect::<Vec<_>>())?;
    let first_y = data::take_rows(&ys, &(0..128).collect::<Vec<_>>())?;
    let out = sess.run(&[loss, d_filter], &[(x, first), (y, first_y)])?;
    println!(
        "before training: loss {:.4}, filter gradient {:?}",
        out[0].scalar_value::<f32>()?,
        out[1].shape()
    );
    for epoch in 0..epochs {
        let (mut sum, mut n) = (0.0f64, 0usize);
        for (step, (xb, yb)) in data::batches(&x_train, &ys, 64, Some(epoch as u64))?.enumerate() {
            let k = yb.shape()[0];
            let out = sess.run(&[loss, train], &[(x, xb), (y, yb)])?;
            sum += out[0].scalar_value::<f32>()? as f64 * k as f64;
            n += k;
            if epoch == 0 && step % 20 == 0 {
                println!("  step {step:3}: loss {:.4}", out[0].scalar_value::<f32>()?);
            }
        }
        let acc = sess.run(&[accuracy], &[(x, x_test.clone()), (y, yt.clone())])?;
        println!(
            "epoch {}/{epochs}: train loss {:.4}, accuracy on 2,000 test images {:.4}",
            epoch + 1,
            sum / n as f64,
            acc[0].scalar_value::<f32>()?
        );
    }
    Ok(())
}
