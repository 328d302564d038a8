//! `ReduceLROnPlateau`: a callback that lowers the optimizer's learning-rate variable when a
//! monitored value stops improving, as Keras 3's.
//!
//! The rate is a variable of the graph (`<optimizer>/learning_rate`), so lowering it is one
//! [`Session::set_variable`](crate::session::Session::set_variable) between epochs: nothing
//! recompiles, and a checkpoint saved later holds the lowered rate. An optimizer made with
//! a schedule has no such variable (its rate is computed from the step count), so the
//! callback refuses it before training rather than doing nothing.

use super::batch::Logs;
use super::callbacks::{Callback, Control, Mode, Monitor, MONITORED};
use super::model::Model;
use crate::array::Array;
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::NodeId;
use crate::train::args::{float, ArgErrors};

/// The log entry that holds the learning rate of each epoch (Keras 3's name).
pub(crate) const LEARNING_RATE: &str = "learning_rate";

/// Multiplies the learning rate by `factor` when the monitored value has not improved for
/// `patience` epochs, then waits `cooldown` epochs before counting again, never going below
/// `min_lr` (Keras 3's `ReduceLROnPlateau`). Each epoch's rate (before any reduction at its
/// end) is logged as `learning_rate`, so it is in the [`History`](super::History).
///
/// ```no_run
/// use kiln::nn::*;
/// use kiln::prelude::*;
/// # let (x, y) = (Array::zeros(DType::F32, [8, 4]), Array::zeros(DType::F32, [8, 1]));
/// let mut model = Sequential::new([Input::new([4]).into(), Dense::new(1).into()]);
/// model.compile(Adam::new(1e-2), Loss::MeanSquaredError, &[])?;
/// let history = model.fit(&x, &y, FitConfig::new().epochs(30).validation_split(0.25)
///     .callback(ReduceLROnPlateau::on("val_loss").factor(0.5).patience(3).min_lr(1e-5)))?;
/// println!("{:?}", history.get("learning_rate"));
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ReduceLROnPlateau {
    monitor: Monitor,
    factor: f64,
    patience: usize,
    cooldown: usize,
    min_lr: f64,
    wait: usize,
    cooldown_counter: usize,
    rate: Option<NodeId>,
    args: ArgErrors,
}

impl ReduceLROnPlateau {
    /// Monitors `name` (`"val_loss"`, not empty) with Keras' defaults: factor 0.1,
    /// patience 10, `min_delta` 1e-4, cooldown 0, `min_lr` 0, mode auto.
    #[track_caller]
    pub fn on(name: &str) -> Self {
        let mut args = ArgErrors::default();
        let f = "ReduceLROnPlateau::on";
        args.check(!name.is_empty(), f, "name", MONITORED, "\"\"");
        let mut monitor = Monitor::new(name);
        monitor.min_delta = 1e-4;
        ReduceLROnPlateau {
            monitor,
            factor: 0.1,
            patience: 10,
            cooldown: 0,
            min_lr: 0.0,
            wait: 0,
            cooldown_counter: 0,
            rate: None,
            args,
        }
    }
    /// What the rate is multiplied by, in `(0, 1)`.
    #[track_caller]
    pub fn factor(mut self, factor: f64) -> Self {
        let ok = factor > 0.0 && factor < 1.0;
        let f = "ReduceLROnPlateau::factor";
        self.args.check(ok, f, "factor", "in (0, 1)", float(factor));
        self.factor = factor;
        self
    }
    /// Epochs without improvement before the rate is lowered (0 lowers it after every
    /// epoch without improvement, as 1 does).
    #[track_caller]
    pub fn patience(mut self, p: usize) -> Self {
        self.patience = p;
        self
    }
    /// The smallest change that counts as an improvement (finite; its sign is ignored).
    #[track_caller]
    pub fn min_delta(mut self, d: f64) -> Self {
        let f = "ReduceLROnPlateau::min_delta";
        self.args
            .check(d.is_finite(), f, "min_delta", "finite", float(d));
        self.monitor.min_delta = d.abs();
        self
    }
    /// Epochs to wait after a reduction before counting epochs without improvement again.
    #[track_caller]
    pub fn cooldown(mut self, epochs: usize) -> Self {
        self.cooldown = epochs;
        self
    }
    /// The rate never goes below this (finite, >= 0).
    #[track_caller]
    pub fn min_lr(mut self, lr: f64) -> Self {
        let ok = lr.is_finite() && lr >= 0.0;
        let f = "ReduceLROnPlateau::min_lr";
        self.args
            .check(ok, f, "min_lr", "finite and >= 0", float(lr));
        self.min_lr = lr;
        self
    }
    /// Whether lower or higher is better.
    #[track_caller]
    pub fn mode(mut self, m: Mode) -> Self {
        self.monitor.mode = m;
        self
    }

    /// The current rate (the variable's value, as `f64`).
    fn current(&self, model: &mut Model) -> Result<(NodeId, f64)> {
        let id = self
            .rate
            .ok_or_else(|| Error::Internal("ReduceLROnPlateau: not started".into()))?;
        let g = model.graph().clone();
        let v = model
            .session()?
            .variable(g.tensor(id))
            .ok_or_else(|| Error::Internal("ReduceLROnPlateau: the rate has no value".into()))?
            .to_f64_vec();
        Ok((id, v.first().copied().unwrap_or(f64::NAN)))
    }
}

impl Callback for ReduceLROnPlateau {
    /// Reports bad arguments, and an optimizer whose rate is not a variable (a schedule, or
    /// a tensor of your own), before any epoch runs.
    fn on_train_begin(&mut self, model: &mut Model) -> Result<()> {
        self.args.result()?;
        self.wait = 0;
        self.cooldown_counter = 0;
        self.monitor.best = None;
        let g = model.graph().clone();
        let rate = model.optimizer().and_then(|o| o.learning_rate(&g));
        let Some(rate) = rate else {
            return Err(Error::invalid(
                "ReduceLROnPlateau: the model has no optimizer yet (call compile)",
            ));
        };
        if !matches!(g.data().node(rate.id()).op, Op::Variable { .. }) {
            return Err(Error::invalid(format!(
                "ReduceLROnPlateau: the optimizer's learning rate is {}, not a variable (it \
                 was made with a schedule or a learning_rate_tensor), so there is no rate to \
                 lower; give the optimizer a number, or drop the callback",
                rate.desc()
            )));
        }
        self.rate = Some(rate.id());
        Ok(())
    }

    fn check_log_names(&mut self, names: &[String]) -> Result<()> {
        self.monitor.check_name("ReduceLROnPlateau", names)
    }

    fn add_epoch_logs(&mut self, _epoch: usize, logs: &mut Logs, model: &mut Model) -> Result<()> {
        let (_, lr) = self.current(model)?;
        logs.insert(LEARNING_RATE.to_string(), lr);
        Ok(())
    }

    fn on_epoch_end(&mut self, _epoch: usize, logs: &Logs, model: &mut Model) -> Result<Control> {
        let v = self.monitor.value(logs)?;
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.wait = 0;
        }
        if self.monitor.improved(v) {
            self.wait = 0;
            return Ok(Control::Continue);
        }
        if self.cooldown_counter > 0 {
            return Ok(Control::Continue);
        }
        self.wait += 1;
        if self.wait < self.patience {
            return Ok(Control::Continue);
        }
        let (id, old) = self.current(model)?;
        // Keras compares with the floor in float32, the variable's dtype.
        if old > self.min_lr as f32 as f64 {
            let new = (old * self.factor).max(self.min_lr);
            let g = model.graph().clone();
            let value = Array::from_f64(g.tensor(id).dtype(), vec![], vec![new]);
            model.session()?.set_variable(g.tensor(id), value)?;
            self.cooldown_counter = self.cooldown;
            self.wait = 0;
        }
        Ok(Control::Continue)
    }
}
