//! Callbacks: code that runs between epochs of `fit` (early stopping, checkpoints, yours).

use super::batch::Logs;
use super::model::Model;
use crate::array::Array;
use crate::error::{Error, Result};
use crate::train::args::{float, ArgErrors};
use std::path::{Path, PathBuf};

/// Whether `fit` goes on after an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Run the next epoch.
    Continue,
    /// Stop training now.
    Stop,
}

/// Hooks into `fit`. Every method has a default that does nothing.
pub trait Callback {
    /// Before the first epoch.
    fn on_train_begin(&mut self, _model: &mut Model) -> Result<()> {
        Ok(())
    }
    /// Before the first epoch (after its [`on_train_begin`](Self::on_train_begin)), with the
    /// names every epoch's logs will have: `loss`, the compiled metrics, and `val_` of each
    /// when `fit` validates. A callback that reads a log entry checks here that it will
    /// exist, so a misspelt name fails before training rather than after the first epoch.
    fn check_log_names(&mut self, _names: &[String]) -> Result<()> {
        Ok(())
    }
    /// Before each epoch (0-based).
    fn on_epoch_begin(&mut self, _epoch: usize, _model: &mut Model) -> Result<()> {
        Ok(())
    }
    /// Before each training batch: the epoch and step (both 0-based), as Keras'
    /// `on_train_batch_begin`. `fit` calls it only when a callback is given (the default
    /// `TerminateOnNaN` is one), and the default does nothing, so an unused hook costs a
    /// virtual call per batch.
    fn on_train_batch_begin(
        &mut self,
        _epoch: usize,
        _step: usize,
        _model: &mut Model,
    ) -> Result<()> {
        Ok(())
    }
    /// After each training batch (Keras' `on_train_batch_end`): the epoch and step (both
    /// 0-based) and that batch's own loss and metrics (not running means). `Stop` ends
    /// training after this batch: the epoch is closed with the batches run so far.
    fn on_batch_end(
        &mut self,
        _epoch: usize,
        _step: usize,
        _logs: &Logs,
        _model: &mut Model,
    ) -> Result<Control> {
        Ok(Control::Continue)
    }
    /// After each epoch (0-based), before it is recorded and shown: a callback may add
    /// entries to the epoch's logs (`ReduceLROnPlateau` adds `learning_rate`), which the
    /// `History`, the progress line and every `on_epoch_end` then see.
    fn add_epoch_logs(
        &mut self,
        _epoch: usize,
        _logs: &mut Logs,
        _model: &mut Model,
    ) -> Result<()> {
        Ok(())
    }
    /// After each epoch (0-based), with that epoch's logs (`loss`, `val_loss`, ...).
    fn on_epoch_end(&mut self, _epoch: usize, _logs: &Logs, _model: &mut Model) -> Result<Control> {
        Ok(Control::Continue)
    }
    /// After the last epoch.
    fn on_train_end(&mut self, _model: &mut Model) -> Result<()> {
        Ok(())
    }
    /// Whether only rank 0 runs this callback in a distributed `fit`
    /// ([`FitConfig::distributed`](super::FitConfig::distributed)): true for callbacks that
    /// write files or print (checkpoints, plots, logs), false (the default) for callbacks
    /// that decide, which every rank runs on the same reduced logs.
    fn root_only(&self) -> bool {
        false
    }
    /// After [`on_train_end`](Self::on_train_end): the epoch (0-based) whose weights this
    /// callback put back into the model, if it did; `fit` records it as
    /// [`History::restored_epoch`](super::History::restored_epoch).
    fn restored_epoch(&self) -> Option<usize> {
        None
    }
}

/// The names each epoch's logs of `fit` on `model` have: `loss`, the compiled metrics, then
/// the same with `val_` if `validates` (the order `fit` shows them in).
pub(crate) fn log_names(model: &Model, validates: bool) -> Result<Vec<String>> {
    let c = model
        .compiled
        .as_ref()
        .ok_or_else(|| Error::invalid("the model is not compiled yet (call compile)"))?;
    let mut names = vec!["loss".to_string()];
    names.extend(c.metrics.iter().map(|m| m.0.clone()));
    names.extend(c.weighted_metrics.iter().map(|m| m.0.clone()));
    if validates {
        let val: Vec<String> = names.iter().map(|n| format!("val_{n}")).collect();
        names.extend(val);
    }
    Ok(names)
}

/// Whether a monitored value improves downwards or upwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `max` for names containing `acc`, else `min` (as Keras).
    Auto,
    /// Smaller is better.
    Min,
    /// Larger is better.
    Max,
}

/// Tracks the best value of a monitored log entry.
#[derive(Clone, Debug)]
pub(super) struct Monitor {
    pub(super) name: String,
    pub(super) mode: Mode,
    pub(super) min_delta: f64,
    pub(super) best: Option<f64>,
}

impl Monitor {
    /// Watches `name` in auto mode with no minimum change.
    pub(super) fn new(name: &str) -> Monitor {
        Monitor {
            name: name.into(),
            mode: Mode::Auto,
            min_delta: 0.0,
            best: None,
        }
    }

    fn lower_is_better(&self) -> bool {
        match self.mode {
            Mode::Min => true,
            Mode::Max => false,
            Mode::Auto => !self.name.contains("acc"),
        }
    }

    pub(super) fn value(&self, logs: &Logs) -> Result<f64> {
        logs.get(&self.name).copied().ok_or_else(|| {
            Error::invalid(format!(
                "callback monitors {:?}, which the logs do not have (they have: {})",
                self.name,
                logs.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Refuses a monitored name that the logs of `fit` will not have (`names`), naming
    /// the callback `who`, the name and the available ones, with a hint for a `val_` name
    /// when nothing validates.
    pub(super) fn check_name(&self, who: &str, names: &[String]) -> Result<()> {
        if names.contains(&self.name) {
            return Ok(());
        }
        let hint = if self.name.starts_with("val_") && !names.iter().any(|n| n.starts_with("val_"))
        {
            "; val_ entries exist only when fit validates (FitConfig::validation_split or \
             validation_data)"
        } else {
            "; monitor one of those"
        };
        Err(Error::invalid(format!(
            "{who} monitors {:?}, which fit's logs will not have (they will have: {}){hint}",
            self.name,
            names.join(", ")
        )))
    }

    /// True if `v` beats the best so far by more than `min_delta` (and records it).
    pub(super) fn improved(&mut self, v: f64) -> bool {
        let better = match self.best {
            None => !v.is_nan(),
            Some(b) if self.lower_is_better() => v < b - self.min_delta,
            Some(b) => v > b + self.min_delta,
        };
        if better {
            self.best = Some(v);
        }
        better
    }
}

/// Stops training when a monitored value has not improved for `patience` epochs, as Keras'
/// `EarlyStopping`; optionally puts back the weights of the best epoch.
///
/// ```
/// use kiln::prelude::*;
/// use kiln::nn::*;
/// let x = Array::new([8, 1], (0..8).map(|i| i as f32 / 8.0).collect::<Vec<_>>())?;
/// let y = Array::new([8, 1], (0..8).map(|i| (i % 2) as f32).collect::<Vec<_>>())?; // noise
/// let mut m = Sequential::new([Input::new([1]).into(), Dense::new(1).into()]);
/// m.compile(Sgd::new(0.5), Loss::MeanSquaredError, &[])?;
/// // A min_delta nothing reaches: no epoch after the first counts as better.
/// let stop = EarlyStopping::on("loss").patience(2).min_delta(10.0).restore_best_weights();
/// let h = m.fit(&x, &y, FitConfig::new().epochs(50).callback(stop)
///     .verbosity(Verbosity::Silent))?;
/// assert_eq!(h.stopped_epoch, Some(2)); // epochs 1 and 2 without improvement
/// assert_eq!(h.restored_epoch, Some(0)); // the model holds epoch 0's weights
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    monitor: Monitor,
    patience: usize,
    restore_best_weights: bool,
    wait: usize,
    best_weights: Option<Vec<(String, Array)>>,
    best_epoch: Option<usize>,
    stopped_epoch: Option<usize>,
    /// The epoch whose weights were put back, in this run.
    restored: Option<usize>,
    args: ArgErrors,
}

impl EarlyStopping {
    /// Monitors `name` (`"val_loss"`, not empty), patience 0, `min_delta` 0, mode auto.
    #[track_caller]
    pub fn on(name: &str) -> EarlyStopping {
        let mut args = ArgErrors::default();
        args.check(
            !name.is_empty(),
            "EarlyStopping::on",
            "name",
            MONITORED,
            "\"\"",
        );
        EarlyStopping {
            args,
            monitor: Monitor::new(name),
            patience: 0,
            restore_best_weights: false,
            wait: 0,
            best_weights: None,
            best_epoch: None,
            stopped_epoch: None,
            restored: None,
        }
    }
    /// Epochs without improvement before stopping (any count: 0 stops at the first epoch
    /// without improvement, as 1 does, as in Keras).
    #[track_caller]
    pub fn patience(mut self, p: usize) -> Self {
        self.patience = p;
        self
    }
    /// The smallest change that counts as an improvement (finite; its sign is ignored, as
    /// in Keras).
    #[track_caller]
    pub fn min_delta(mut self, d: f64) -> Self {
        let f = "EarlyStopping::min_delta";
        self.args
            .check(d.is_finite(), f, "min_delta", "finite", float(d));
        self.monitor.min_delta = d.abs();
        self
    }
    /// Whether lower or higher is better.
    #[track_caller]
    pub fn mode(mut self, m: Mode) -> Self {
        self.monitor.mode = m;
        self
    }
    /// On stopping, put back the weights of the best epoch.
    #[track_caller]
    pub fn restore_best_weights(mut self) -> Self {
        self.restore_best_weights = true;
        self
    }
    /// The best epoch seen (0-based).
    pub fn best_epoch(&self) -> Option<usize> {
        self.best_epoch
    }
}

impl Callback for EarlyStopping {
    fn on_train_begin(&mut self, _model: &mut Model) -> Result<()> {
        self.args.result()?;
        self.wait = 0;
        self.monitor.best = None;
        self.best_weights = None;
        self.stopped_epoch = None;
        self.restored = None;
        Ok(())
    }

    /// Refuses a monitored name the logs will not have, before any epoch runs.
    fn check_log_names(&mut self, names: &[String]) -> Result<()> {
        self.monitor.check_name("EarlyStopping", names)
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, model: &mut Model) -> Result<Control> {
        let v = self.monitor.value(logs)?;
        if self.monitor.improved(v) {
            self.wait = 0;
            self.best_epoch = Some(epoch);
            if self.restore_best_weights {
                self.best_weights = Some(model.get_weights()?);
            }
            return Ok(Control::Continue);
        }
        // Keras 3: the epochs without improvement reach `patience`, never on the first epoch.
        self.wait += 1;
        if self.wait >= self.patience && epoch > 0 {
            self.stopped_epoch = Some(epoch);
            if let Some(w) = &self.best_weights {
                model.set_weights(w)?;
                self.restored = self.best_epoch;
            }
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
    }

    fn restored_epoch(&self) -> Option<usize> {
        self.restored
    }
}

/// Saves the model's weights after epochs, as Keras' `ModelCheckpoint`: every epoch, or only
/// when the monitored value improves. `{epoch}` in the path is replaced by the 1-based epoch.
///
/// ```
/// use kiln::prelude::*;
/// use kiln::nn::*;
/// let dir = tempfile::tempdir().unwrap();
/// let x = Array::new([4, 1], vec![0f32, 1., 2., 3.])?;
/// let y = Array::new([4, 1], vec![1f32, 3., 5., 7.])?;
/// let mut m = Sequential::new([Input::new([1]).into(), Dense::new(1).into()]);
/// m.compile(Sgd::new(0.05), Loss::MeanSquaredError, &[])?;
/// let every = ModelCheckpoint::new(dir.path().join("w-{epoch}.safetensors")).monitor("loss");
/// m.fit(&x, &y, FitConfig::new().epochs(3).callback(every).verbosity(Verbosity::Silent))?;
/// assert!(dir.path().join("w-3.safetensors").exists());
/// m.load_weights(dir.path().join("w-1.safetensors"))?; // back to the first epoch's weights
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ModelCheckpoint {
    path: PathBuf,
    monitor: Monitor,
    save_best_only: bool,
    saved: Vec<PathBuf>,
    args: ArgErrors,
}

impl ModelCheckpoint {
    /// Saves to `path` (a file path) after every epoch, monitoring `val_loss` in auto mode.
    ///
    /// Its directory must exist: `fit` checks it (and that kiln can create a file there)
    /// before the first epoch, so a typo in the path costs no training time.
    #[track_caller]
    pub fn new(path: impl Into<PathBuf>) -> ModelCheckpoint {
        let path = path.into();
        let mut args = ArgErrors::default();
        let ok = path.file_name().is_some();
        let f = "ModelCheckpoint::new";
        args.check(ok, f, "path", "a file path", format!("{:?}", path));
        ModelCheckpoint {
            path,
            monitor: Monitor::new("val_loss"),
            save_best_only: false,
            saved: vec![],
            args,
        }
    }
    /// The monitored log entry (not empty).
    #[track_caller]
    pub fn monitor(mut self, name: &str) -> Self {
        let f = "ModelCheckpoint::monitor";
        self.args
            .check(!name.is_empty(), f, "name", MONITORED, "\"\"");
        self.monitor.name = name.into();
        self
    }
    /// Whether lower or higher is better.
    #[track_caller]
    pub fn mode(mut self, m: Mode) -> Self {
        self.monitor.mode = m;
        self
    }
    /// Save only when the monitored value improves.
    #[track_caller]
    pub fn save_best_only(mut self) -> Self {
        self.save_best_only = true;
        self
    }
    /// The files written so far, in order.
    pub fn saved(&self) -> &[PathBuf] {
        &self.saved
    }
    /// The path for 0-based `epoch`: `{epoch}` replaced by `epoch + 1`.
    fn epoch_path(&self, epoch: usize) -> PathBuf {
        let s = self.path.to_string_lossy();
        if !s.contains("{epoch}") {
            return self.path.clone();
        }
        PathBuf::from(s.replace("{epoch}", &(epoch + 1).to_string()))
    }
}

/// Draws the training curves to an SVG file after every epoch, as
/// [`History::plot`](super::History::plot) draws them after `fit`: the file shows the run so
/// far while it trains (each write replaces it atomically, so a viewer never sees half a
/// file), and it is there even if training stops with an error.
///
/// Unlike a `history.plot(path)` after `fit`, a path whose directory does not exist is
/// reported before the first epoch. Only with the default-on `ui` cargo feature.
#[cfg(feature = "ui")]
#[derive(Clone, Debug)]
pub struct PlotCurves {
    path: PathBuf,
    title: String,
    series: std::collections::BTreeMap<String, Vec<f64>>,
    args: ArgErrors,
}

#[cfg(feature = "ui")]
impl PlotCurves {
    /// Writes the curves to `path` (a file path, `.svg`), titled "training curves".
    #[track_caller]
    pub fn new(path: impl Into<PathBuf>) -> PlotCurves {
        let path = path.into();
        let mut args = ArgErrors::default();
        let ok = path.file_name().is_some();
        let f = "PlotCurves::new";
        args.check(ok, f, "path", "a file path", format!("{:?}", path));
        PlotCurves {
            path,
            title: "training curves".into(),
            series: Default::default(),
            args,
        }
    }
    /// The picture's title.
    #[track_caller]
    pub fn title(mut self, title: &str) -> Self {
        self.title = title.into();
        self
    }
}

#[cfg(feature = "ui")]
impl Callback for PlotCurves {
    /// Writes a file: rank 0 only in a distributed `fit`.
    fn root_only(&self) -> bool {
        true
    }
    fn on_train_begin(&mut self, _model: &mut Model) -> Result<()> {
        self.args.result()?;
        self.series.clear();
        check_output_path("PlotCurves", &self.path)
    }

    fn on_epoch_end(&mut self, _epoch: usize, logs: &Logs, _model: &mut Model) -> Result<Control> {
        for (k, v) in logs {
            self.series.entry(k.clone()).or_default().push(*v);
        }
        crate::plot::plot_curves(&self.path, &self.series, &self.title)?;
        Ok(Control::Continue)
    }
}

/// What a monitored name must be.
pub(super) const MONITORED: &str = "the name of a logged value (\"val_loss\", \"accuracy\", ...)";

/// Checks, before training, that `who` (a callback) will be able to write `path`: its
/// directory exists and takes a new file (probed with a temporary file, the way every kiln
/// write starts, removed at once). The error names `path` as the user gave it, never the
/// temporary, and says it was found before training.
pub(crate) fn check_output_path(who: &str, path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        let what = if dir.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        return Err(Error::io(
            path,
            format!(
                "{who} cannot write here: the directory {} {what} (kiln does not create \
                 it; create it, or fix the path). Found before training started",
                dir.display()
            ),
            std::io::ErrorKind::NotFound.into(),
        ));
    }
    tempfile::Builder::new()
        .prefix(crate::atomic::TEMP_PREFIX)
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| {
            Error::io(
                path,
                format!(
                    "{who} cannot write here: kiln cannot create a file in {}. Found before \
                     training started",
                    dir.display()
                ),
                e,
            )
        })
}

impl Callback for ModelCheckpoint {
    /// Writes a file: rank 0 only in a distributed `fit`.
    fn root_only(&self) -> bool {
        true
    }
    /// Reports bad arguments, and a directory that does not exist or takes no new file,
    /// before any epoch runs.
    fn on_train_begin(&mut self, _model: &mut Model) -> Result<()> {
        self.args.result()?;
        check_output_path("ModelCheckpoint", &self.epoch_path(0))
    }

    /// With `save_best_only`, refuses a monitored name the logs will not have, before any
    /// epoch runs (without it nothing is monitored).
    fn check_log_names(&mut self, names: &[String]) -> Result<()> {
        if self.save_best_only {
            self.monitor.check_name("ModelCheckpoint", names)?;
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, model: &mut Model) -> Result<Control> {
        let save = if self.save_best_only {
            let v = self.monitor.value(logs)?;
            self.monitor.improved(v)
        } else {
            true
        };
        if save {
            let p = self.epoch_path(epoch);
            model.save_weights(&p)?;
            self.saved.push(p);
        }
        Ok(Control::Continue)
    }
}

/// Stops training at the first batch whose loss is NaN or infinite, as Keras'
/// `TerminateOnNaN`, and makes `fit` return an error naming the epoch and step (counted from
/// 1, as the progress bar counts) rather than a `History` that looks like a finished run.
///
/// `fit` runs one first by default; [`FitConfig::terminate_on_nan(false)`](super::FitConfig::terminate_on_nan)
/// turns that off (adding one yourself then turns it back on).
#[derive(Clone, Copy, Debug, Default)]
pub struct TerminateOnNaN;

impl TerminateOnNaN {
    /// The callback (it has no settings).
    #[track_caller]
    pub fn new() -> TerminateOnNaN {
        TerminateOnNaN
    }
}

impl Callback for TerminateOnNaN {
    fn on_batch_end(
        &mut self,
        epoch: usize,
        step: usize,
        logs: &Logs,
        _model: &mut Model,
    ) -> Result<Control> {
        match logs.get("loss") {
            Some(&v) if !v.is_finite() => Err(Error::invalid(format!(
                "fit: the loss became {v} at epoch {}, step {}; training stopped \
                 (TerminateOnNaN). Look for NaN or infinite values in x and y, or lower the \
                 learning rate; FitConfig::terminate_on_nan(false) trains on regardless",
                epoch + 1,
                step + 1
            ))),
            _ => Ok(Control::Continue),
        }
    }
}
