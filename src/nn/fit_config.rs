//! `FitConfig`: the settings of one `fit` call, Keras' keyword arguments as a builder.
//! Each setter checks its argument where the user passes it (`#[track_caller]`), recording a
//! problem with the user's line for `fit` to report.

use super::batch::Inputs;
use super::callbacks::Callback;
use crate::array::Array;
use crate::progress::Verbosity;
use crate::train::args::{float, unit_open, ArgErrors};

/// The settings of one `fit` call (Keras' keyword arguments).
pub struct FitConfig {
    pub(super) epochs: usize,
    pub(super) batch_size: usize,
    pub(super) validation_split: f64,
    pub(super) validation_data: Option<(Vec<Array>, Array)>,
    pub(super) shuffle: bool,
    pub(super) seed: u64,
    pub(super) callbacks: Vec<Box<dyn Callback>>,
    pub(super) verbosity: Verbosity,
    pub(super) terminate_on_nan: bool,
    pub(super) check_finite: bool,
    pub(super) args: ArgErrors,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig::new()
    }
}

impl FitConfig {
    /// One epoch, batches of 32, no validation, shuffled with seed 0, progress shown as fits
    /// the terminal, the data checked for NaN and infinity, training stopped at a non-finite
    /// loss.
    ///
    /// Each setting is checked when you give it (`epochs(0)`, `validation_split(1.5)`) and a
    /// bad one makes `fit` return an error naming your line, before anything runs.
    #[track_caller]
    pub fn new() -> FitConfig {
        FitConfig {
            epochs: 1,
            batch_size: 32,
            validation_split: 0.0,
            validation_data: None,
            shuffle: true,
            seed: 0,
            callbacks: vec![],
            verbosity: Verbosity::auto(),
            terminate_on_nan: true,
            check_finite: true,
            args: ArgErrors::default(),
        }
    }
    /// Number of epochs, at least 1.
    #[track_caller]
    pub fn epochs(mut self, n: usize) -> Self {
        let f = "FitConfig::epochs";
        self.args.check(n >= 1, f, "epochs", "at least 1", n);
        self.epochs = n;
        self
    }
    /// Rows per batch (the last batch holds the remainder), at least 1.
    #[track_caller]
    pub fn batch_size(mut self, n: usize) -> Self {
        let f = "FitConfig::batch_size";
        self.args.check(n >= 1, f, "batch_size", "at least 1", n);
        self.batch_size = n;
        self
    }
    /// Hold out the last `fraction` of the rows (before shuffling) for validation; in
    /// `[0, 1)`, and not together with [`validation_data`](Self::validation_data).
    #[track_caller]
    pub fn validation_split(mut self, fraction: f64) -> Self {
        let (f, ok) = ("FitConfig::validation_split", unit_open(fraction));
        let allowed = "in [0, 1) (the fraction of the rows held out)";
        self.args
            .check(ok, f, "validation_split", allowed, float(fraction));
        self.validation_split = fraction;
        self
    }
    /// Validate on these inputs and targets instead (not together with a
    /// [`validation_split`](Self::validation_split)).
    #[track_caller]
    pub fn validation_data(mut self, x: impl Inputs, y: &Array) -> Self {
        self.validation_data = Some((x.arrays().into_iter().cloned().collect(), y.clone()));
        self
    }
    /// Shuffle the training rows each epoch (default true).
    #[track_caller]
    pub fn shuffle(mut self, on: bool) -> Self {
        self.shuffle = on;
        self
    }
    /// The shuffle seed (epoch `e` uses `seed + e`).
    #[track_caller]
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = s;
        self
    }
    /// Adds a callback.
    #[track_caller]
    pub fn callback(mut self, c: impl Callback + 'static) -> Self {
        self.callbacks.push(Box::new(c));
        self
    }
    /// Whether a [`TerminateOnNaN`](super::TerminateOnNaN) runs first among the callbacks (default true): `fit`
    /// then stops with an error at the first batch whose loss is NaN or infinite, naming
    /// the epoch and step. `false` lets training go on through non-finite losses.
    #[track_caller]
    pub fn terminate_on_nan(mut self, on: bool) -> Self {
        self.terminate_on_nan = on;
        self
    }
    /// Whether `fit` checks `x`, `y` and the validation data for NaN and infinity before
    /// training (default true), and names the argument, the sample and the feature of the
    /// first one.
    ///
    /// Keras has no such check, but one pass over the data costs little beside an epoch (the
    /// MNIST training set takes under 0.1 s, an epoch of the README's MLP 0.75 s), and a NaN in
    /// the data otherwise shows only as a NaN loss, at a batch that `TerminateOnNaN` names but
    /// cannot explain. `false` skips it (for data too large to read twice, or known clean).
    #[track_caller]
    pub fn check_finite(mut self, on: bool) -> Self {
        self.check_finite = on;
        self
    }
    /// Progress output: bar, one line per epoch, or silent.
    #[track_caller]
    pub fn verbosity(mut self, v: Verbosity) -> Self {
        self.verbosity = v;
        self
    }
}
