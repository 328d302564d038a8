//! The lab's recipes, shared by the examples and by the CI smoke tests (`tests/lab.rs`
//! includes this file), so what CI checks is exactly what the examples run.
#![allow(dead_code)]

use kiln::data;
use kiln::nn::*;
use kiln::prelude::*;
use std::path::{Path, PathBuf};

/// The repository's root (where `data/` lives).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Iris, split 80/20 stratified, standardized with statistics of the training split only.
pub struct Iris {
    pub x_train: Array,
    pub y_train: Array,
    pub x_test: Array,
    pub y_test: Array,
    pub classes: Vec<String>,
}

pub fn iris(seed: u64) -> Result<Iris> {
    let (x, y, classes) = data::load_iris(root().join("data/iris/iris.csv"))?;
    let (xtr, ytr, xte, yte) = data::train_test_split(&x, &y, 0.2, seed, true)?;
    let scaler = data::Standard::fit(&xtr)?;
    Ok(Iris {
        x_train: scaler.transform(&xtr)?,
        y_train: ytr,
        x_test: scaler.transform(&xte)?,
        y_test: yte,
        classes,
    })
}

fn sparse_logits() -> Loss {
    Loss::SparseCategoricalCrossentropy { from_logits: true }
}

/// Softmax regression: one dense layer from the features to the class logits.
pub fn single_layer(features: usize, classes: usize, lr: f64) -> Result<Model> {
    let mut m = Sequential::new([Input::new([features]).into(), Dense::new(classes).into()]);
    m.compile(Adam::new(lr), sparse_logits(), &[Metric::Accuracy])?;
    Ok(m)
}

/// A multi-layer perceptron: `hidden` ReLU layers, each followed by dropout if `dropout > 0`.
pub fn mlp(
    features: usize,
    hidden: &[usize],
    classes: usize,
    dropout: f64,
    lr: f64,
) -> Result<Model> {
    let mut layers: Vec<Box<dyn Layer>> = vec![Input::new([features]).into()];
    for &h in hidden {
        layers.push(Dense::new(h).relu().into());
        if dropout > 0.0 {
            layers.push(Dropout::new(dropout).into());
        }
    }
    layers.push(Dense::new(classes).into());
    let mut m = Sequential::new(layers);
    m.compile(Adam::new(lr), sparse_logits(), &[Metric::Accuracy])?;
    Ok(m)
}

/// The two Iris networks, untrained: softmax regression, and a small MLP. Iris needs little
/// capacity: with 4-16-16-3 the test accuracy depended on the shuffle order (27 to 29 of 30
/// flowers over eight seeds), with 4-4-4-3 it is 28 or 29 for every one of them.
pub fn iris_networks() -> Result<Vec<(&'static str, Model)>> {
    Ok(vec![
        ("single", single_layer(4, 3, 0.05)?),
        ("mlp", mlp(4, &[4, 4], 3, 0.0, 0.01)?),
    ])
}

/// MNIST from `dir` (the shipped `data/mnist` by default): pixels scaled to [0, 1].
pub fn mnist(dir: Option<&Path>) -> Result<data::Mnist> {
    let d = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root().join("data/mnist"));
    data::load_mnist(d)
}

/// The first `n` rows of `x` and `y`.
pub fn head(x: &Array, y: &Array, n: usize) -> Result<(Array, Array)> {
    let idx: Vec<usize> = (0..n.min(x.shape()[0])).collect();
    Ok((data::take_rows(x, &idx)?, data::take_rows(y, &idx)?))
}

/// Keras' "simple MNIST convnet", untrained: two 3×3 ReLU convolutions (32 and 64 filters),
/// each followed by 2×2 max pooling, then flatten, dropout 0.5 and a dense layer to the
/// class logits; Adam at `lr`. 34,826 parameters, as in Keras.
pub fn mnist_cnn(lr: f64) -> Result<Model> {
    let mut m = Sequential::new([
        Input::new([28, 28, 1]).into(),
        Conv2D::new(32, [3, 3]).relu().into(),
        MaxPooling2D::new([2, 2]).into(),
        Conv2D::new(64, [3, 3]).relu().into(),
        MaxPooling2D::new([2, 2]).into(),
        Flatten.into(),
        Dropout::new(0.5).into(),
        Dense::new(10).into(),
    ]);
    m.compile(Adam::new(lr), sparse_logits(), &[Metric::Accuracy])?;
    Ok(m)
}

/// The MNIST examples' command line: `[DIR] [--epochs N] [--subset N]`, parsed by `clap`
/// (`--help`, `--version`; an unknown option or a bad number is an error with clap's message).
#[derive(Debug, clap::Parser)]
#[command(
    version,
    about = "Trains on MNIST: the shipped data/mnist, or any IDX set in its format"
)]
pub struct MnistArgs {
    /// An IDX data directory other than the shipped `data/mnist`.
    pub dir: Option<PathBuf>,
    /// Epochs to train.
    #[arg(long = "epochs", value_name = "N")]
    epochs_given: Option<usize>,
    /// Train on the first N images only.
    #[arg(long, value_name = "N")]
    pub subset: Option<usize>,
    /// Epochs to train (`--epochs`, or the example's default).
    #[arg(skip)]
    pub epochs: usize,
}

/// Parses the MNIST examples' command line for example `name`, whose default is `epochs`
/// epochs; `--help` prints the usage and exits, a bad argument exits with clap's error.
pub fn mnist_args(name: &'static str, epochs: usize) -> Result<MnistArgs> {
    Ok(mnist_args_from(name, epochs, std::env::args_os()).unwrap_or_else(|e| e.exit()))
}

/// [`mnist_args`] on the given command line (its first item is the program's name).
pub fn mnist_args_from<I, T>(
    name: &'static str,
    epochs: usize,
    args: I,
) -> std::result::Result<MnistArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let cmd = MnistArgs::command()
        .name(name)
        .mut_arg("epochs_given", |a| {
            a.help(format!("Epochs to train [default: {epochs}]"))
        });
    let mut a = MnistArgs::from_arg_matches(&cmd.try_get_matches_from(args)?)?;
    a.epochs = a.epochs_given.unwrap_or(epochs);
    Ok(a)
}

/// The command line of an example that takes no argument: `--help` and `--version` work,
/// anything else is an error with clap's message (never silently ignored).
pub fn no_args(name: &'static str, about: &'static str) {
    clap::Command::new(name)
        .version(env!("CARGO_PKG_VERSION"))
        .about(about)
        .get_matches();
}
