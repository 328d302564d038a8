//! Iris (150 flowers, 4 features, 3 species) with a single-layer network (softmax
//! regression) and a multi-layer one, both trained with `fit` on a stratified 80/20 split.
//!
//! ```sh
//! cargo run --release --example iris
//! ```
//!
//! Prints each network's test accuracy and writes `iris_single.svg` and `iris_mlp.svg` (the
//! training curves, with the test split as validation data: it is only watched, never used to
//! choose anything).

mod lab;

use kiln::nn::*;
use kiln::prelude::*;

fn main() -> Result<()> {
    lab::no_args(
        "iris",
        "Iris with softmax regression and a small MLP, trained with fit",
    );
    let d = lab::iris(42)?;
    println!(
        "Iris: {} training and {} test flowers, classes {:?}",
        d.x_train.shape()[0],
        d.x_test.shape()[0],
        d.classes
    );
    for (name, mut model) in lab::iris_networks()? {
        print!("{}", model.summary()?);
        let history = model.fit(
            &d.x_train,
            &d.y_train,
            FitConfig::new()
                .epochs(100)
                .batch_size(16)
                .validation_data(&d.x_test, &d.y_test)
                .verbosity(Verbosity::Silent),
        )?;
        let test = model.evaluate(&d.x_test, &d.y_test, 32)?;
        let path = format!("iris_{name}.svg");
        history.plot(&path)?;
        println!(
            "{name}: train accuracy {:.4}, test accuracy {:.4} (curves in {path})\n",
            history
                .get("accuracy")
                .and_then(|a| a.last())
                .unwrap_or(&f64::NAN),
            test["accuracy"]
        );
    }
    Ok(())
}
