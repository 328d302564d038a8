//! The README's MLP on MNIST trained twice with the same seed: from arrays with `fit`, and
//! from a generator with `fit_dataset`, the generator making each shuffled batch when it is
//! pulled (on a prefetch thread). Prints both test accuracies and whether the histories and
//! the weights are bitwise the same (issue 20: "a generator-backed dataset trains MNIST to
//! the same accuracy as arrays, with the same seed").
//!
//! ```sh
//! cargo run --release --example mnist_stream                  # 5 epochs, all 60,000 images
//! cargo run --release --example mnist_stream -- --epochs 2 --subset 10000
//! ```

mod lab;

use kiln::data::{permutation, take_rows, Dataset};
use kiln::nn::*;
use kiln::prelude::*;
use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<()> {
    let a = lab::mnist_args("mnist_stream", 5)?;
    let m = lab::mnist(a.dir.as_deref())?;
    let (x, y) = match a.subset {
        Some(n) => lab::head(&m.train_x, &m.train_y, n)?,
        None => (m.train_x.clone(), m.train_y.clone()),
    };
    let (seed, bs) = (42u64, 128usize);
    let config = || FitConfig::new().epochs(a.epochs).batch_size(bs).seed(seed);

    let t = Instant::now();
    let mut arrays = lab::mlp(784, &[256, 128], 10, 0.2, 1e-3)?;
    let ha = arrays.fit(&x, &y, config())?;
    let ta = t.elapsed().as_secs_f64();

    // The generator: epoch e shuffles with seed + e, as `fit` does, and cuts batches of
    // `bs` rows; it holds the arrays, and makes each batch only when it is pulled.
    let (xs, ys) = (Arc::new(x.clone()), Arc::new(y.clone()));
    let stream = Dataset::from_epoch_generator(move |epoch| {
        let (xs, ys) = (xs.clone(), ys.clone());
        let order = permutation(xs.shape()[0], seed.wrapping_add(epoch));
        let batches: Vec<Vec<usize>> = order.chunks(bs).map(<[usize]>::to_vec).collect();
        batches
            .into_iter()
            .map(move |idx| Ok((take_rows(&xs, &idx)?, take_rows(&ys, &idx)?)))
    })
    .prefetch(2);
    let t = Instant::now();
    let mut streamed = lab::mlp(784, &[256, 128], 10, 0.2, 1e-3)?;
    let hs = streamed.fit_dataset(&stream, config())?;
    let ts = t.elapsed().as_secs_f64();

    let acc_a = arrays.evaluate(&m.test_x, &m.test_y, 1000)?["accuracy"];
    let acc_s = streamed.evaluate(&m.test_x, &m.test_y, 1000)?["accuracy"];
    let same_weights = arrays
        .get_weights()?
        .iter()
        .zip(streamed.get_weights()?)
        .all(|((_, wa), (_, ws))| wa.bits_eq(&ws));
    println!(
        "\n{} training images, {} epochs, seed {seed}:\n\
         arrays    (fit):         test accuracy {acc_a:.4} ({ta:.1}s)\n\
         generator (fit_dataset): test accuracy {acc_s:.4} ({ts:.1}s)\n\
         history bitwise equal: {}, weights bitwise equal: {same_weights}",
        x.shape()[0],
        a.epochs,
        ha == hs,
    );
    if ha != hs || !same_weights {
        return Err(Error::invalid(
            "the generator's run differs from the arrays' run",
        ));
    }
    Ok(())
}
