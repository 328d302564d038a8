//! The MNIST MLP (784-256-128-10, ReLU, dropout) written TF1 style: placeholders, variables,
//! an optimizer's train op and a `Session` loop. No `nn` layer is involved.
//!
//! ```sh
//! cargo run --release --example mnist_lowlevel              # 5 epochs on all of MNIST
//! cargo run --release --example mnist_lowlevel -- 2 10000   # epochs, training rows
//! ```

mod lab;

use kiln::data;
use kiln::prelude::*;
use std::time::Instant;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let epochs = args.next().flatten().unwrap_or(5);
    let rows = args.next().flatten();
    let m = lab::mnist(None)?;
    let (x_train, y_train) = match rows {
        Some(n) => lab::head(&m.train_x, &m.train_y, n)?,
        None => (m.train_x.clone(), m.train_y.clone()),
    };

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
        let test = sess.run(
            &[accuracy],
            &[
                (x, m.test_x.clone()),
                (y, m.test_y.clone()),
                (training, Array::scalar(false)),
            ],
        )?;
        println!(
            "epoch {}/{epochs}: {secs:.2}s, train loss {:.4}, test accuracy {:.4}",
            epoch + 1,
            sum / n as f64,
            test[0].scalar_value::<f32>()?
        );
    }
    println!("{} executables compiled", sess.compile_count());
    Ok(())
}
