//! The lab's lesson on overfitting, in two experiments.
//!
//! 1. **Capacity.** Five noisy points from a line, fit by a 2-parameter line and by a
//!    7-parameter polynomial (degree 6). The line's training and validation errors are
//!    close; the polynomial threads every training point (training error about 0) and pays
//!    for it on fresh points from the same line.
//! 2. **Early stopping.** A big MLP (784-512-512-10, no dropout) on 1,000 MNIST images: the
//!    validation loss turns up after a few epochs, `EarlyStopping` stops training and puts
//!    back the best weights. The curves go to `overfitting.svg`.
//!
//! ```sh
//! cargo run --release --example overfitting
//! ```

mod lab;

use kiln::nn::*;
use kiln::prelude::*;

/// The noise's standard deviation.
const NOISE: f32 = 0.1;

/// `y = 2x + 0.9 + noise`, at `n` points of stream `stream`.
fn line_points(n: u64, stream: u64) -> (Vec<f32>, Vec<f32>) {
    let xs: Vec<f32> = (0..n)
        .map(|i| kiln::internals::uniform(3, stream, i, -1.0, 1.0))
        .collect();
    let ys = xs
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            2.0 * x + 0.9 + NOISE * kiln::internals::standard_normal(4, stream, i as u64)
        })
        .collect();
    (xs, ys)
}

/// Features `[x, x², ..., x^degree]` as an `[n, degree]` array.
fn powers(xs: &[f32], degree: usize) -> Array {
    let data = xs
        .iter()
        .flat_map(|&x| (1..=degree as i32).map(move |p| x.powi(p)))
        .collect();
    Array::new([xs.len(), degree], data).expect("shape")
}

/// Fits `y ≈ features · w + b` by full-batch Adam; returns (train MSE, validation MSE).
fn fit_polynomial(
    degree: usize,
    train: &(Vec<f32>, Vec<f32>),
    val: &(Vec<f32>, Vec<f32>),
) -> Result<(f64, f64)> {
    let mut m = Sequential::new([Input::new([degree]).into(), Dense::new(1).into()]).seed(1);
    m.compile(Adam::new(0.05), Loss::MeanSquaredError, &[])?;
    let (xt, yt) = (
        powers(&train.0, degree),
        Array::new([train.1.len(), 1], train.1.clone())?,
    );
    let (xv, yv) = (
        powers(&val.0, degree),
        Array::new([val.1.len(), 1], val.1.clone())?,
    );
    m.fit(
        &xt,
        &yt,
        FitConfig::new()
            .epochs(8000)
            .batch_size(5)
            .verbosity(Verbosity::Silent),
    )?;
    Ok((
        m.evaluate(&xt, &yt, 5)?["loss"],
        m.evaluate(&xv, &yv, 100)?["loss"],
    ))
}

fn main() -> Result<()> {
    lab::no_args(
        "overfitting",
        "The lab's lesson on overfitting: capacity, then early stopping",
    );
    // 1. Capacity.
    // One draw of five points (any draw shows the same pattern, with other numbers).
    let train = line_points(5, 12);
    let val = line_points(100, 1);
    println!("Five noisy points from y = 2x + 0.9; validation on 100 fresh points.\n");
    println!(
        "{:<28} {:>8} {:>14} {:>16}",
        "model", "params", "train MSE", "validation MSE"
    );
    for (name, degree) in [("line (w·x + b)", 1usize), ("polynomial of degree 6", 6)] {
        let (tr, va) = fit_polynomial(degree, &train, &val)?;
        println!("{name:<28} {:>8} {tr:>14.6} {va:>16.6}", degree + 1);
    }

    // 2. Early stopping on an overfit-prone setup.
    let mnist = lab::mnist(None)?;
    let (x, y) = lab::head(&mnist.train_x, &mnist.train_y, 2000)?;
    let idx_t: Vec<usize> = (0..1000).collect();
    let idx_v: Vec<usize> = (1000..2000).collect();
    let (xt, yt) = (
        kiln::data::take_rows(&x, &idx_t)?,
        kiln::data::take_rows(&y, &idx_t)?,
    );
    let (xv, yv) = (
        kiln::data::take_rows(&x, &idx_v)?,
        kiln::data::take_rows(&y, &idx_v)?,
    );
    let mut big = lab::mlp(784, &[512, 512], 10, 0.0, 1e-3)?;
    println!(
        "\nA 784-512-512-10 MLP ({} weights) on 1,000 MNIST images:",
        {
            let w = big.get_weights()?;
            w.iter().map(|(_, a)| a.len()).sum::<usize>()
        }
    );
    let epochs = 40;
    let h = big.fit(
        &xt,
        &yt,
        FitConfig::new()
            .epochs(epochs)
            .batch_size(32)
            .validation_data(&xv, &yv)
            .callback(
                EarlyStopping::on("val_loss")
                    .patience(3)
                    .restore_best_weights(),
            )
            .verbosity(Verbosity::Lines),
    )?;
    let vl = h.get("val_loss").unwrap_or(&[]);
    let best = vl
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    match h.stopped_epoch {
        Some(e) => println!(
            "validation loss was lowest after epoch {} ({:.4}) and rose after it: stopped after \
             epoch {} of {epochs}, best weights restored (validation loss now {:.4})",
            best + 1,
            vl[best],
            e + 1,
            big.evaluate(&xv, &yv, 500)?["loss"]
        ),
        None => println!("no early stop within {epochs} epochs"),
    }
    h.plot("overfitting.svg")?;
    println!("curves in overfitting.svg");
    Ok(())
}
