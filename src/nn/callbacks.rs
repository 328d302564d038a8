//! Callbacks: code that runs between epochs of `fit` (early stopping, checkpoints, yours).

use super::batch::Logs;
use super::model::Model;
use crate::array::Array;
use crate::error::{Error, Result};
use std::path::PathBuf;

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
    /// After each training batch: the epoch and step (both 0-based) and that batch's own
    /// loss and metrics (not running means). `Stop` ends training after this batch: the
    /// epoch is closed with the batches run so far.
    fn on_batch_end(
        &mut self,
        _epoch: usize,
        _step: usize,
        _logs: &Logs,
        _model: &mut Model,
    ) -> Result<Control> {
        Ok(Control::Continue)
    }
    /// After each epoch (0-based), with that epoch's logs (`loss`, `val_loss`, ...).
    fn on_epoch_end(&mut self, _epoch: usize, _logs: &Logs, _model: &mut Model) -> Result<Control> {
        Ok(Control::Continue)
    }
    /// After the last epoch.
    fn on_train_end(&mut self, _model: &mut Model) -> Result<()> {
        Ok(())
    }
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
struct Monitor {
    name: String,
    mode: Mode,
    min_delta: f64,
    best: Option<f64>,
}

impl Monitor {
    /// Watches `name` in auto mode with no minimum change.
    fn new(name: &str) -> Monitor {
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

    fn value(&self, logs: &Logs) -> Result<f64> {
        logs.get(&self.name).copied().ok_or_else(|| {
            Error::invalid(format!(
                "callback monitors {:?}, which the logs do not have (they have: {})",
                self.name,
                logs.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// True if `v` beats the best so far by more than `min_delta` (and records it).
    fn improved(&mut self, v: f64) -> bool {
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
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    monitor: Monitor,
    patience: usize,
    restore_best_weights: bool,
    wait: usize,
    best_weights: Option<Vec<(String, Array)>>,
    best_epoch: Option<usize>,
    stopped_epoch: Option<usize>,
}

impl EarlyStopping {
    /// Monitors `name` (`"val_loss"`), patience 0, `min_delta` 0, mode auto.
    pub fn on(name: &str) -> EarlyStopping {
        EarlyStopping {
            monitor: Monitor::new(name),
            patience: 0,
            restore_best_weights: false,
            wait: 0,
            best_weights: None,
            best_epoch: None,
            stopped_epoch: None,
        }
    }
    /// Epochs without improvement before stopping.
    pub fn patience(mut self, p: usize) -> Self {
        self.patience = p;
        self
    }
    /// The smallest change that counts as an improvement.
    pub fn min_delta(mut self, d: f64) -> Self {
        self.monitor.min_delta = d.abs();
        self
    }
    /// Whether lower or higher is better.
    pub fn mode(mut self, m: Mode) -> Self {
        self.monitor.mode = m;
        self
    }
    /// On stopping, put back the weights of the best epoch.
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
        self.wait = 0;
        self.monitor.best = None;
        self.best_weights = None;
        self.stopped_epoch = None;
        Ok(())
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
            }
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
    }
}

/// Saves the model's weights after epochs, as Keras' `ModelCheckpoint`: every epoch, or only
/// when the monitored value improves. `{epoch}` in the path is replaced by the 1-based epoch.
#[derive(Clone, Debug)]
pub struct ModelCheckpoint {
    path: PathBuf,
    monitor: Monitor,
    save_best_only: bool,
    saved: Vec<PathBuf>,
}

impl ModelCheckpoint {
    /// Saves to `path` after every epoch, monitoring `val_loss` in auto mode.
    pub fn new(path: impl Into<PathBuf>) -> ModelCheckpoint {
        ModelCheckpoint {
            path: path.into(),
            monitor: Monitor::new("val_loss"),
            save_best_only: false,
            saved: vec![],
        }
    }
    /// The monitored log entry.
    pub fn monitor(mut self, name: &str) -> Self {
        self.monitor.name = name.into();
        self
    }
    /// Whether lower or higher is better.
    pub fn mode(mut self, m: Mode) -> Self {
        self.monitor.mode = m;
        self
    }
    /// Save only when the monitored value improves.
    pub fn save_best_only(mut self) -> Self {
        self.save_best_only = true;
        self
    }
    /// The files written so far, in order.
    pub fn saved(&self) -> &[PathBuf] {
        &self.saved
    }
}

impl Callback for ModelCheckpoint {
    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, model: &mut Model) -> Result<Control> {
        let save = if self.save_best_only {
            let v = self.monitor.value(logs)?;
            self.monitor.improved(v)
        } else {
            true
        };
        if save {
            let p = PathBuf::from(
                self.path
                    .to_string_lossy()
                    .replace("{epoch}", &(epoch + 1).to_string()),
            );
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
