//! The high-level API, Keras style: layers, models, `compile`/`fit`/`evaluate`/`predict`,
//! callbacks.
//!
//! ```no_run
//! use kiln::prelude::*;
//! use kiln::nn::*;
//!
//! # fn main() -> kiln::Result<()> {
//! # let (x_train, y_train) = (Array::zeros(DType::F32, [8, 784]), Array::zeros(DType::I32, [8]));
//! let mut model = Sequential::new([
//!     Input::new([784]).into(),
//!     Dense::new(256).relu().into(),
//!     Dropout::new(0.2).into(),
//!     Dense::new(10).into(),
//! ]);
//! model.compile(
//!     Adam::new(1e-3),
//!     Loss::SparseCategoricalCrossentropy { from_logits: true },
//!     &[Metric::Accuracy],
//! )?;
//! print!("{}", model.summary()?);
//! let history = model.fit(&x_train, &y_train, FitConfig::new()
//!     .epochs(20).batch_size(128).validation_split(0.1)
//!     .callback(EarlyStopping::on("val_loss").patience(3).restore_best_weights()))?;
//! # #[cfg(feature = "ui")] // the SVG needs the default `ui` feature
//! history.plot("curves.svg")?;
//! # Ok(()) }
//! ```
//!
//! The two levels mix. A model *is* a graph and a session: [`Model::graph`] and friends give
//! the low level everything a hand-written loop needs, and a custom [`Layer`] is a few lines
//! of graph ops that `Sequential` uses like a built-in layer. Design notes:
//! - **Built once, run many times.** `compile` adds loss, metrics and the optimizer's train op
//!   to the graph; `fit` then only feeds batches. The `training` switch is a placeholder, so
//!   `fit` (dropout on) and `evaluate`/`predict` (off) share one graph; the session compiles
//!   one executable per fetch set and batch size (the last partial batch gets its own).
//! - **Epoch metrics are exact means**: each batch's mean is weighted by its row count.
//! - **Layers name their variables as Keras does** (`dense/kernel`, `dense_1/bias`), so
//!   checkpoints read naturally.

mod batch;
mod callbacks;
mod check;
mod conv;
mod csv_logger;
mod export;
mod fit;
mod fit_config;
mod fit_dataset;
mod fit_dist;
mod fit_dist_pass;
mod fit_pass;
mod history;
mod layers;
mod losses;
mod metrics;
mod model;
mod plateau;
mod pool;
mod regularizers;
mod reshape;
mod sample_weight;
pub mod save;
mod tensorboard;
mod weighted_metrics;
mod weights;

pub use crate::progress::Verbosity;
pub use batch::{Inputs, Logs};
#[cfg(feature = "ui")]
pub use callbacks::PlotCurves;
pub use callbacks::{Callback, Control, EarlyStopping, Mode, ModelCheckpoint, TerminateOnNaN};
pub use conv::{Conv2D, DepthwiseConv2D};
pub use csv_logger::CSVLogger;
pub use fit_config::FitConfig;
pub use history::History;
pub use layers::{
    Activation, BatchNormalization, Ctx, Dense, Dropout, Flatten, Input, Layer, Softmax,
};
pub use losses::{Loss, Metric};
pub use metrics::Custom;
pub use model::{Builder, Model, Sequential};
pub use plateau::ReduceLROnPlateau;
pub use pool::{AveragePooling2D, GlobalAveragePooling2D, MaxPooling2D};
pub use regularizers::Regularizer;
pub use reshape::Reshape;
pub use save::load_model;
pub use tensorboard::TensorBoard;
pub use weights::{TorchLayout, WeightMap};
