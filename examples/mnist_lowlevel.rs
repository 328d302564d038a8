//! The MNIST MLP (784-256-128-10, ReLU, dropout) written TF1 style: placeholders, variables,
//! an optimizer's train op and a `Session` loop. No `nn` layer is involved.
//!
//! Each epoch is checked on a validation split (the last 10% of the training rows, as
//! Keras' `validation_split` takes them); the test set is used once, at the end.
//!
//! ```sh
//! cargo run --release --example mnist_lowlevel                              # 5 epochs, all of MNIST
//! cargo run --release --example mnist_lowlevel -- --epochs 2 --rows 10000  # fewer
//! cargo run --release --example mnist_lowlevel -- --help
//! ```

mod lab;

use clap::Parser;
use kiln::data;
use kiln::prelude::*;
use std::time::Instant;

/// The MNIST MLP trained by a hand-written `Session` loop, TF1 style.
#[derive(Parser, Debug)]
#[command(name = "mnist_lowlevel", version)]
struct Args {
    /// Epochs to train.
    #[arg(long, default_value_t = 5, value_name = "N")]
    epochs: usize,
    /// Use the first N training rows only (before the validation split).
    #[arg(long, value_name = "N")]
    rows: Option<usize>,
    /// The fraction of the training rows held out to monitor each epoch.
    #[arg(long, default_value_t = 0.1, value_name = "F")]
    validation_split: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let epochs = args.epochs;
    let m = lab::mnist(None)?;
    let (xs, ys) = match args.rows {
        Some(n) => lab::head(&m.train_x, &m.train_y, n)?,
        None => (m.train_x.clone(), m.train_y.clone()),
    };
    // Keras' validation_split: the last rows, before any shuffling.
    let n = xs.shape()[0];
    let n_val = (n as f64 * args.validation_split) as usize;
    if !(0.0..1.0).contains(&args.validation_split) || n_val == 0 || n_val == n {
        return Err(Error::invalid(format!(
            "--validation-split {} leaves {} of {n} rows for validation: give a fraction in \
             (0, 1) that leaves rows on both sides",
            args.validation_split, n_val
        )));
    }
    let rows = |r: std::ops::Range<usize>| -> Result<(Array, Array)> {
        let idx: Vec<usize> = r.collect();
        Ok((data::take_rows(&xs, &idx)?, data::take_rows(&ys, &idx)?))
    };
    let (x_train, y_train) = rows(0..n - n_val)?;
    let (x_val, y_val) = rows(n - n_val..n)?;

    // The graph.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(784)]);
    let y = g.placeholder("y", DType::I32, [None]);
    let training = g.placeholder("training", DType::Bool, Shape::scalar());
    fn dense<'g>(
        g: &'g Graph,
        name: &str,
        input: Tensor<'g>,
        units: usize,
        seed: u64,
    ) -> Tensor<'g> {
        let _scope = g.name_scope(name);
        let fan_in = input.shape().dims()[1].fixed().unwrap_or(0);
        let w = g.variable("kernel", [fan_in, units], init::glorot_uniform(seed));
        let b = g.variable("bias", [units], init::zeros());
        input.matmul(w) + b
    }
    let h1 = dense(&g, "dense", x, 256, 1)
        .relu()
        .dropout(0.2, training, 10);
    let h2 = dense(&g, "dense_1", h1, 128, 2)
        .relu()
        .dropout(0.2, training, 11);
    let logits = dense(&g, "dense_2", h2, 10, 3);
    let loss = logits
        .sparse_softmax_cross_entropy_with_logits(y)
        .mean_all();
    let accuracy = logits.argmax(-1).equal(y).cast(DType::F32).mean_all();
    let vars: Vec<Tensor<'_>> = ["dense", "dense_1", "dense_2"]
        .iter()
        .flat_map(|l| [format!("{l}/kernel"), format!("{l}/bias")])
        .map(|n| g.by_name(&n).expect("variable"))
        .collect();
    let train = Adam::new(1e-3).minimize(loss, &vars)?;

    // The loop.
    let mut sess = Session::new(&g)?;
    for epoch in 0..epochs {
        let t0 = Instant::now();
        let (mut sum, mut n) = (0.0f64, 0usize);
        for (xb, yb) in data::batches(&x_train, &y_train, 128, Some(epoch as u64))? {
            let rows = yb.shape()[0];
            let out = sess.run(
                &[loss, train],
                &[(x, xb), (y, yb), (training, Array::scalar(true))],
            )?;
            sum += out[0].scalar_value::<f32>()? as f64 * rows as f64;
            n += rows;
        }
        let secs = t0.elapsed().as_secs_f64();
        let val = sess.run(
            &[loss, accuracy],
            &[
                (x, x_val.clone()),
                (y, y_val.clone()),
                (training, Array::scalar(false)),
            ],
        )?;
        println!(
            "epoch {}/{epochs}: {secs:.2}s, train loss {:.4}, val loss {:.4}, val accuracy {:.4}",
            epoch + 1,
            sum / n as f64,
            val[0].scalar_value::<f32>()?,
            val[1].scalar_value::<f32>()?
        );
    }
    let test = sess.run(
        &[accuracy],
        &[
            (x, m.test_x.clone()),
            (y, m.test_y.clone()),
            (training, Array::scalar(false)),
        ],
    )?;
    println!(
        "test accuracy {:.4} ({} images)",
        test[0].scalar_value::<f32>()?,
        m.test_y.shape()[0]
    );
    println!("{} executables compiled", sess.compile_count());
    Ok(())
}
