//! A layer of your own, written with graph ops, inside a `Sequential` model trained by `fit`.
//!
//! `Gated` computes `x · W ⊙ sigmoid(x · V)` (a gated linear unit): two weight matrices and
//! elementwise graph ops. The model treats it like any built-in layer: it is named, counted in
//! `summary()`, differentiated, optimized, fused and JIT-compiled with the rest.
//!
//! ```sh
//! cargo run --release --example custom_layer
//! ```

mod lab;

use kiln::nn::*;
use kiln::prelude::*;

/// A gated linear unit with `units` outputs.
struct Gated {
    units: usize,
}

impl Layer for Gated {
    fn kind(&self) -> &'static str {
        "Gated"
    }

    fn call<'g>(&mut self, ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        let fan_in = x.shape().dims()[1]
            .fixed()
            .ok_or_else(|| Error::invalid("Gated needs a known feature count"))?;
        let w = ctx.weight(
            "w",
            [fan_in, self.units],
            init::glorot_uniform(ctx.next_seed()),
        );
        let v = ctx.weight(
            "v",
            [fan_in, self.units],
            init::glorot_uniform(ctx.next_seed()),
        );
        Ok(x.matmul(w) * x.matmul(v).sigmoid())
    }
}

fn main() -> Result<()> {
    lab::no_args(
        "custom_layer",
        "A layer of your own (a gated linear unit) inside a Sequential model",
    );
    let d = lab::iris(42)?;
    let mut model = Sequential::new([
        Input::new([4]).into(),
        Gated { units: 16 }.into(),
        Dense::new(3).into(),
    ]);
    model.compile(
        Adam::new(0.02),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::Accuracy],
    )?;
    print!("{}", model.summary()?);
    let h = model.fit(
        &d.x_train,
        &d.y_train,
        FitConfig::new()
            .epochs(60)
            .batch_size(16)
            .verbosity(Verbosity::Silent),
    )?;
    let test = model.evaluate(&d.x_test, &d.y_test, 32)?;
    println!(
        "train accuracy {:.4}, test accuracy {:.4}",
        h.get("accuracy")
            .and_then(|a| a.last())
            .unwrap_or(&f64::NAN),
        test["accuracy"]
    );
    Ok(())
}
