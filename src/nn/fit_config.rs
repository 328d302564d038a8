//! `FitConfig`: the settings of one `fit` call, Keras' keyword arguments as a builder.
//! Each setter checks its argument where the user passes it (`#[track_caller]`), recording a
//! problem with the user's line for `fit` to report.

use super::batch::Inputs;
use super::callbacks::Callback;
use crate::array::Array;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::progress::Verbosity;
use crate::train::args::{float, unit_open, ArgErrors};

/// The settings of one `fit` call (Keras' keyword arguments).
///
/// ```
/// use kiln::prelude::*;
/// use kiln::nn::*;
/// let x = Array::new([10, 1], (0..10).map(|i| i as f32).collect::<Vec<_>>())?;
/// let y = x.clone();
/// let mut m = Sequential::new([Input::new([1]).into(), Dense::new(1).into()]);
/// m.compile(Sgd::new(0.01), Loss::MeanSquaredError, &[])?;
/// let config = FitConfig::new()
///     .epochs(3)
///     .batch_size(4)
///     .validation_split(0.2) // the last 2 rows
///     .seed(7)
///     .verbosity(Verbosity::Silent);
/// let h = m.fit(&x, &y, config)?;
/// assert_eq!(h.get("val_loss").unwrap().len(), 3);
/// // A bad setting is an error from `fit`, naming the line it was given at:
/// let err = m.fit(&x, &y, FitConfig::new().batch_size(0)).unwrap_err().to_string();
/// assert!(err.contains("batch_size"), "{err}");
/// # Ok::<(), kiln::Error>(())
/// ```
pub struct FitConfig {
    pub(super) epochs: usize,
    pub(super) initial_epoch: usize,
    pub(super) steps_per_epoch: Option<usize>,
    pub(super) batch_size: usize,
    pub(super) validation_split: f64,
    pub(super) validation_data: Option<(Vec<Array>, Array)>,
    pub(super) validation_dataset: Option<Dataset>,
    pub(super) sample_weight: Option<Array>,
    pub(super) class_weight: Option<Vec<(usize, f64)>>,
    pub(super) shuffle: bool,
    pub(super) seed: u64,
    pub(super) callbacks: Vec<Box<dyn Callback>>,
    pub(super) verbosity: Verbosity,
    pub(super) terminate_on_nan: bool,
    pub(super) check_finite: bool,
    /// Micro-shards per global batch of a distributed `fit` (`nn/fit_dist.rs`).
    pub(super) micro_shards: Option<usize>,
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
            initial_epoch: 0,
            steps_per_epoch: None,
            batch_size: 32,
            validation_split: 0.0,
            validation_data: None,
            validation_dataset: None,
            sample_weight: None,
            class_weight: None,
            shuffle: true,
            seed: 0,
            callbacks: vec![],
            verbosity: Verbosity::auto(),
            terminate_on_nan: true,
            check_finite: true,
            micro_shards: None,
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
    /// The epoch to start at (0-based), to resume an earlier run, as Keras'
    /// `initial_epoch`: `fit` runs epochs `initial_epoch..epochs` (so `epochs` is the index
    /// to stop at, not a count), shows them as `Epoch 4/10`, and gives callbacks and the
    /// history's `stopped_epoch` the run's own epoch numbers. Each epoch's shuffle order (and
    /// a dataset's `iter_epoch`) depends on the epoch's number, so a model saved after epoch
    /// `k` and resumed with `initial_epoch(k)` trains to the same bits as a run that never
    /// stopped. Less than [`epochs`](Self::epochs), or `fit` says so before training.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::nn::*;
    /// let x = Array::new([4, 1], vec![0f32, 1., 2., 3.])?;
    /// let y = Array::new([4, 1], vec![1f32, 3., 5., 7.])?;
    /// let model = || -> kiln::Result<Model> {
    ///     let mut m = Sequential::new([Input::new([1]).into(), Dense::new(1).into()]);
    ///     m.compile(Sgd::new(0.05), Loss::MeanSquaredError, &[])?;
    ///     Ok(m)
    /// };
    /// let quiet = || FitConfig::new().batch_size(2).verbosity(Verbosity::Silent);
    /// let mut whole = model()?;
    /// let h = whole.fit(&x, &y, quiet().epochs(5))?;
    /// let mut parts = model()?;
    /// parts.fit(&x, &y, quiet().epochs(2))?; // epochs 0 and 1 ...
    /// let h2 = parts.fit(&x, &y, quiet().initial_epoch(2).epochs(5))?; // ... then 2, 3, 4
    /// assert_eq!(h2.get("loss").unwrap(), &h.get("loss").unwrap()[2..]);
    /// assert_eq!(parts.get_weights()?, whole.get_weights()?);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    #[track_caller]
    pub fn initial_epoch(mut self, epoch: usize) -> Self {
        self.initial_epoch = epoch;
        self
    }
    /// Batches per epoch for [`fit_dataset`](super::Model::fit_dataset), as Keras'
    /// `steps_per_epoch`: an epoch ends after `n` batches, and the next epoch goes on from
    /// the same iterator rather than starting the dataset again, so an endless dataset (a
    /// generator that never ends) trains in epochs, and a finite one is read through once
    /// across several epochs. If the dataset ends first, the epoch closes with the batches
    /// it ran and training stops there (`History::stopped_epoch`), as Keras 3 does when "your
    /// input ran out of data". At least 1. Arrays have a length, so `fit` on arrays refuses
    /// it (use [`batch_size`](Self::batch_size)).
    #[track_caller]
    pub fn steps_per_epoch(mut self, n: usize) -> Self {
        let f = "FitConfig::steps_per_epoch";
        self.args
            .check(n >= 1, f, "steps_per_epoch", "at least 1", n);
        self.steps_per_epoch = Some(n);
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
    /// Validate on a dataset's batches instead (Keras' `validation_data` given a
    /// `tf.data.Dataset`): one full iteration per epoch, epoch `e` iterating its epoch `e`.
    /// Not together with [`validation_data`](Self::validation_data) or a
    /// [`validation_split`](Self::validation_split).
    ///
    /// ```no_run
    /// use kiln::data::Dataset;
    /// use kiln::nn::FitConfig;
    /// # let (vx, vy) = (kiln::Array::scalar(0f32), kiln::Array::scalar(0i32));
    /// let val = Dataset::from_arrays(vx, vy)?.batch(256);
    /// let config = FitConfig::new().epochs(5).validation_dataset(&val);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    #[track_caller]
    pub fn validation_dataset(mut self, data: &Dataset) -> Self {
        self.validation_dataset = Some(data.clone());
        self
    }
    /// Weights of the training examples in the loss, one per row of `x` (Keras'
    /// `sample_weight`): the loss becomes `sum(w · loss) / batch size`, Keras 3's
    /// `"sum_over_batch_size"`, so a weight of 0 removes an example from the sum but not
    /// from the count. With a [`validation_split`](Self::validation_split) the held-out
    /// rows keep theirs and `val_loss` is weighted too. The compiled metrics are not weighted;
    /// the [`weighted_metrics`](super::Model::weighted_metrics) are (Keras 3's split).
    /// `f32` or `f64`, finite and not negative; a wrong
    /// length or a bad weight is an error when `fit` starts. Not together with
    /// [`class_weight`](Self::class_weight) (Keras refuses both). For
    /// `fit_dataset`, give the weights in the items instead (`(x, y, w)`).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::nn::*;
    /// let x = Array::new([4, 1], vec![0f32, 1., 2., 3.])?;
    /// let y = Array::new([4, 1], vec![0f32, 2., 4., 60.])?; // the last target is an outlier
    /// let w = Array::new([4], vec![1f32, 1., 1., 0.])?; // ... that weighs nothing
    /// let mut m = Sequential::new([Input::new([1]).into(), Dense::new(1).into()]);
    /// m.compile(Sgd::new(0.05), Loss::MeanSquaredError, &[])?;
    /// let config = FitConfig::new().epochs(200).batch_size(4).sample_weight(&w)
    ///     .verbosity(Verbosity::Silent);
    /// m.fit(&x, &y, config)?;
    /// let p = m.predict(&Array::new([1, 1], vec![3f32])?, 1)?.to_vec::<f32>()?[0];
    /// assert!((p - 6.0).abs() < 0.5, "{p}"); // y = 2x, the outlier ignored
    /// # Ok::<(), kiln::Error>(())
    /// ```
    #[track_caller]
    pub fn sample_weight(mut self, w: &Array) -> Self {
        self.sample_weight = Some(w.clone());
        self
    }
    /// Weights by class (Keras' `class_weight`): each training example weighs its class's
    /// weight in the loss, its class being the label of a sparse target, the `argmax` of a
    /// one-hot row or the rounded value of a `[n, 1]` binary target. A class the map does
    /// not name weighs 1, as in Keras; a class outside the model's output, a class named
    /// twice, or a negative or non-finite weight is an error when `fit` starts. Training
    /// only (validation is not weighted by class, as in Keras); works for `fit_dataset` too.
    ///
    /// ```
    /// use kiln::nn::FitConfig;
    /// // Class 1 is rare: count each of its examples five times.
    /// let config = FitConfig::new().class_weight([(0, 1.0), (1, 5.0)]);
    /// # let _ = config;
    /// ```
    #[track_caller]
    pub fn class_weight(mut self, map: impl IntoIterator<Item = (usize, f64)>) -> Self {
        self.class_weight = Some(map.into_iter().collect());
        self
    }
    /// At most one source of validation data, or an error naming the two given; and an
    /// `initial_epoch` before `epochs`.
    pub(super) fn check_validation(&self) -> Result<()> {
        if self.initial_epoch >= self.epochs {
            return Err(Error::invalid(format!(
                "fit: initial_epoch({}) is not before epochs({}); epochs is the epoch to stop                  at (Keras' meaning), not a count: to run {} more, give epochs({})",
                self.initial_epoch,
                self.epochs,
                self.epochs,
                self.initial_epoch + self.epochs
            )));
        }
        let split = format!("validation_split({})", self.validation_split);
        let given = [
            (self.validation_split > 0.0).then_some(split.as_str()),
            self.validation_data.as_ref().map(|_| "validation_data"),
            self.validation_dataset
                .as_ref()
                .map(|_| "validation_dataset"),
        ];
        let given: Vec<&str> = given.into_iter().flatten().collect();
        if given.len() > 1 {
            return Err(Error::invalid(format!(
                "fit: both {} and {} were given; choose one (Keras would ignore the split)",
                given[0], given[1]
            )));
        }
        Ok(())
    }
    /// Shuffle the training rows each epoch (default true). Arrays only: a dataset
    /// shuffles itself ([`Dataset::shuffle`]).
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
