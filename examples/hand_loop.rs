//! A `Sequential` model's graph trained by a hand-written loop: `gradients`, an optimizer's
//! `apply_gradients` and a `Session`, TF1 style. The model only builds the graph.
//!
//! ```sh
//! cargo run --release --example hand_loop
//! ```

mod lab;

use kiln::data;
use kiln::nn::*;
use kiln::prelude::*;

fn main() -> Result<()> {
    lab::no_args(
        "hand_loop",
        "A Sequential model's graph trained by a hand-written Session loop",
    );
    let d = lab::iris(42)?;
    let mut model = Sequential::new([
        Input::new([4]).into(),
        Dense::new(16).relu().into(),
        Dropout::new(0.1).into(),
        Dense::new(3).into(),
    ]);
    model.build()?;
    let g = model.graph();
    let (x, logits, training) = (model.input()?, model.output()?, model.training_flag()?);

    // Loss, gradients and the update, written by hand on the model's graph.
    let labels = g.placeholder("labels", DType::I32, [None]);
    let loss = logits
        .sparse_softmax_cross_entropy_with_logits(labels)
        .mean_all();
    let accuracy = logits.argmax(-1).equal(labels).cast(DType::F32).mean_all();
    let vars = model.trainable_variables();
    let grads = gradients(&[loss], &vars, None)?;
    let pairs: Vec<(Tensor<'_>, Tensor<'_>)> = grads.into_iter().zip(vars).collect();
    let train = Sgd::new(0.1).momentum(0.9).apply_gradients(&pairs)?;

    let mut sess = Session::new(g)?;
    for epoch in 0..60 {
        let mut last = 0.0;
        for (xb, yb) in data::batches(&d.x_train, &d.y_train, 16, Some(epoch))? {
            let out = sess.run(
                &[loss, train],
                &[(x, xb), (labels, yb), (training, Array::scalar(true))],
            )?;
            last = out[0].scalar_value::<f32>()?;
        }
        if epoch % 20 == 19 {
            println!("epoch {}: last batch loss {last:.4}", epoch + 1);
        }
    }
    let test = sess.run(
        &[accuracy],
        &[
            (x, d.x_test.clone()),
            (labels, d.y_test.clone()),
            (training, Array::scalar(false)),
        ],
    )?;
    println!("test accuracy {:.4}", test[0].scalar_value::<f32>()?);
    Ok(())
}
