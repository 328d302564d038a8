//! Running a model: `fit` (the epoch loop, validation, callbacks, the `History`), `evaluate`
//! and `predict`.

use super::batch::{concat_rows, rows_of, x_name, Inputs, Logs};
use super::callbacks::{log_names, Callback, Control, TerminateOnNaN};
use super::check;
use super::fit_config::FitConfig;
use super::losses::Metric;
use super::model::Model;
use crate::array::Array;
use crate::data::{take_rows, take_rows_into};
use crate::error::{Error, Result};
use crate::graph::{NodeId, Tensor};
use crate::progress::Progress;
use crate::session::Session;
use std::collections::BTreeMap;
use std::time::Instant;

/// What `fit` returns: each logged value per epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Values by name, one per epoch run.
    pub history: BTreeMap<String, Vec<f64>>,
    /// The epoch (0-based) at which a callback stopped training, if one did.
    pub stopped_epoch: Option<usize>,
}

impl History {
    /// The series for `name` (`"val_loss"`).
    pub fn get(&self, name: &str) -> Option<&[f64]> {
        self.history.get(name).map(|v| v.as_slice())
    }
    /// How many epochs ran.
    pub fn epochs(&self) -> usize {
        self.history.get("loss").map_or(0, |v| v.len())
    }
    /// Writes the curves as SVG: loss and validation loss, with each metric beside them
    /// (see [`crate::plot::plot_curves`]).
    ///
    /// Only with the default-on `ui` cargo feature (plotters): a build without it has no
    /// `plot` at all, so a call to it is a compile error rather than a failure at the end of
    /// a training run.
    ///
    /// A path whose directory does not exist fails here, after training; the
    /// [`PlotCurves`](super::PlotCurves) callback draws the same picture during `fit` and
    /// reports a bad path before the first epoch.
    #[cfg(feature = "ui")]
    pub fn plot(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        crate::plot::plot_curves(path, &self.history, "training curves")
    }
}

/// Validation inputs and targets.
type Split = (Vec<Array>, Array);

/// What one pass over the data gives.
struct Pass {
    /// The means over the rows run.
    logs: Logs,
    /// A callback asked to stop.
    stop: bool,
    /// The first batch whose loss was NaN or infinite.
    bad: Option<BadBatch>,
}

/// A batch whose loss was NaN or infinite.
struct BadBatch {
    /// 0-based.
    step: usize,
    /// Its first row (in the order run; evaluation runs rows in order).
    first_row: usize,
    /// How many rows it holds.
    rows: usize,
    /// Its loss.
    loss: f64,
}

/// The error for a validation pass with a non-finite loss at 0-based `epoch`.
fn validation_failed(epoch: usize, b: &BadBatch, n: usize) -> Error {
    Error::invalid(format!(
        "fit: the validation loss became {} at epoch {}, validation batch {} (rows {}..{} of \
         {n}); training stopped (TerminateOnNaN). The model's outputs overflow on those rows \
         (very large weights, or a log of 0); FitConfig::terminate_on_nan(false) records the \
         value in the history instead, as Keras does",
        b.loss,
        epoch + 1,
        b.step + 1,
        b.first_row,
        b.first_row + b.rows,
    ))
}

/// What a training pass reports each step to: the progress display and the callbacks.
struct Hooks<'a> {
    epoch: usize,
    progress: &'a mut Progress,
    callbacks: &'a mut [Box<dyn Callback>],
}

/// The graph nodes one step feeds and fetches.
struct StepIds {
    inputs: Vec<NodeId>,
    training: NodeId,
    target: NodeId,
    loss: NodeId,
    metrics: Vec<(String, NodeId, Metric)>,
    train: NodeId,
}

/// How a logged value adds up over batches: a batch mean weighted by the batch's rows, or
/// counts summed and then divided ([`Metric::counts`]).
#[derive(Clone, Copy)]
enum Combine {
    Mean,
    Counts(Metric),
}

/// The running sums of one logged value over a pass.
#[derive(Clone)]
struct Sum {
    how: Combine,
    sums: Vec<f64>,
}

impl Sum {
    /// Adds one batch of `rows` rows whose fetched value is `v`.
    fn add(&mut self, v: &[f64], rows: usize) {
        let add: Vec<f64> = match self.how {
            Combine::Mean => vec![v.first().copied().unwrap_or(f64::NAN) * rows as f64],
            Combine::Counts(_) => v.to_vec(),
        };
        if self.sums.is_empty() {
            self.sums = add;
        } else {
            self.sums.iter_mut().zip(add).for_each(|(s, a)| *s += a);
        }
    }

    /// The value over `seen` rows so far.
    fn value(&self, seen: usize) -> f64 {
        match self.how {
            _ if seen == 0 => f64::NAN,
            Combine::Mean => self.sums.first().map_or(f64::NAN, |s| s / seen as f64),
            Combine::Counts(m) => m.result(&self.sums),
        }
    }

    /// One batch's own value from its fetched `v`.
    fn of_batch(&self, v: &[f64]) -> f64 {
        match self.how {
            Combine::Mean => v.first().copied().unwrap_or(f64::NAN),
            Combine::Counts(m) => m.result(v),
        }
    }
}

impl Model {
    fn ids(&self) -> Result<StepIds> {
        let b = self.built()?;
        let c = self
            .compiled
            .as_ref()
            .ok_or_else(|| Error::invalid("the model is not compiled yet (call compile)"))?;
        Ok(StepIds {
            inputs: b.inputs.clone(),
            training: b.training,
            target: c.target,
            loss: c.loss,
            metrics: c.metrics.clone(),
            train: c.train,
        })
    }

    /// Runs one batch of rows `idx`; returns its loss and metrics (a batch mean, or a
    /// metric's counts).
    fn run_batch(
        &mut self,
        ids: &StepIds,
        xs: &[&Array],
        y: &Array,
        idx: &[usize],
        training: bool,
        bufs: &mut Vec<Array>,
    ) -> Result<Vec<Vec<f64>>> {
        let g = self.graph().clone();
        // The batch arrays of the previous step are refilled in place: a fresh 400 KB MNIST
        // batch per step cost ~5% of an epoch in page faults.
        bufs.resize_with(xs.len() + 1, || Array::scalar(0f32));
        for (a, buf) in xs.iter().chain([&y]).zip(bufs.iter_mut()) {
            take_rows_into(a, idx, buf)?;
        }
        let mut feeds: Vec<(Tensor<'_>, Array)> = ids
            .inputs
            .iter()
            .chain([&ids.target])
            .zip(bufs.drain(..))
            .map(|(&id, a)| (g.tensor(id), a))
            .collect();
        feeds.push((g.tensor(ids.training), Array::scalar(training)));
        let mut fetch = vec![g.tensor(ids.loss)];
        fetch.extend(ids.metrics.iter().map(|m| g.tensor(m.1)));
        if training {
            fetch.push(g.tensor(ids.train));
        }
        let out = self.session()?.run(&fetch, &feeds);
        feeds.pop();
        bufs.extend(feeds.into_iter().map(|(_, a)| a));
        let out = out?;
        Ok(out
            .iter()
            .take(1 + ids.metrics.len())
            .map(|a| a.to_f64_vec())
            .collect())
    }

    /// Loss and metrics over `x`, `y` in batches (dropout off), weighted by batch size.
    ///
    /// `x` and `y` are checked first as `fit` checks them (dtype, shape, label range, and
    /// NaN or infinite values, named by sample and feature).
    ///
    /// A batch whose loss is NaN or infinite makes this an error naming the batch and its
    /// rows. Keras returns the NaN as the result; kiln does not, because a NaN printed at the
    /// end of a script is exactly the silent failure to avoid, and with finite data it means
    /// the model itself overflows (huge weights, a log of 0): `predict` on the rows named
    /// shows where. `fit` validates with the same rule unless
    /// [`FitConfig::terminate_on_nan(false)`](FitConfig::terminate_on_nan), which records the
    /// NaN in the history, as Keras does.
    pub fn evaluate(&mut self, x: impl Inputs, y: &Array, batch_size: usize) -> Result<Logs> {
        let y = &*super::losses::sparse_labels_i32(self.loss, "evaluate: y", y)?;
        let xs = x.arrays();
        check::batch_size("evaluate", batch_size)?;
        check::inputs("evaluate", self, &xs)?;
        check::targets("evaluate", "y", self, y)?;
        let hint = "the loss would not be finite; remove or replace that value";
        for (i, a) in xs.iter().enumerate() {
            check::finite("evaluate", &x_name(&xs, i, "x"), a, hint)?;
        }
        check::finite("evaluate", "y", y, hint)?;
        let n = rows_of(&xs, Some(y))?;
        let pass = self.evaluate_rows(&xs, y, batch_size)?;
        match pass.bad {
            None => Ok(pass.logs),
            Some(b) => Err(Error::invalid(format!(
                "evaluate: the loss is {} on batch {} (rows {}..{} of {n}), so the mean loss \
                 is not finite; x and y hold only finite values, so the model's outputs \
                 overflow there (very large weights, or a log of 0): predict on those rows \
                 shows them",
                b.loss,
                b.step + 1,
                b.first_row,
                b.first_row + b.rows,
            ))),
        }
    }

    /// `evaluate` without its checks: one pass over all rows in order, dropout off.
    fn evaluate_rows(&mut self, xs: &[&Array], y: &Array, batch_size: usize) -> Result<Pass> {
        let n = rows_of(xs, Some(y))?;
        let order: Vec<usize> = (0..n).collect();
        self.epoch_pass(xs, y, &order, batch_size, false, None)
    }

    /// One pass over `order` in batches: the logs, whether a callback asked to stop (after a
    /// batch), and the first batch whose loss was not finite.
    fn epoch_pass(
        &mut self,
        xs: &[&Array],
        y: &Array,
        order: &[usize],
        batch_size: usize,
        training: bool,
        mut hooks: Option<Hooks<'_>>,
    ) -> Result<Pass> {
        let ids = self.ids()?;
        let mut names = vec!["loss".to_string()];
        names.extend(ids.metrics.iter().map(|m| m.0.clone()));
        let hows = std::iter::once(Combine::Mean).chain(ids.metrics.iter().map(|m| {
            if m.2.counts() {
                Combine::Counts(m.2)
            } else {
                Combine::Mean
            }
        }));
        let mut sums: Vec<Sum> = hows.map(|how| Sum { how, sums: vec![] }).collect();
        let mut seen = 0usize;
        let mut bufs = vec![];
        let mut stop = false;
        let mut bad = None;
        for (step, chunk) in order.chunks(batch_size).enumerate() {
            if let Some(h) = hooks.as_mut() {
                for cb in h.callbacks.iter_mut() {
                    cb.on_train_batch_begin(h.epoch, step, self)?;
                }
            }
            let fetched = self.run_batch(&ids, xs, y, chunk, training, &mut bufs)?;
            let vals: Vec<f64> = sums
                .iter()
                .zip(&fetched)
                .map(|(s, v)| s.of_batch(v))
                .collect();
            if bad.is_none() && !vals[0].is_finite() {
                bad = Some(BadBatch {
                    step,
                    first_row: chunk[0],
                    rows: chunk.len(),
                    loss: vals[0],
                });
            }
            for (s, v) in sums.iter_mut().zip(&fetched) {
                s.add(v, chunk.len());
            }
            seen += chunk.len();
            let Some(h) = hooks.as_mut() else { continue };
            if h.progress.shows_steps() {
                let running: Vec<(&str, f64)> = names
                    .iter()
                    .zip(&sums)
                    .map(|(n, s)| (n.as_str(), s.value(seen)))
                    .collect();
                h.progress.step(step, &running);
            }
            if !h.callbacks.is_empty() {
                let batch: Logs = names.iter().cloned().zip(vals).collect();
                for cb in h.callbacks.iter_mut() {
                    if cb.on_batch_end(h.epoch, step, &batch, self)? == Control::Stop {
                        stop = true;
                    }
                }
                if stop {
                    break;
                }
            }
        }
        let logs = names
            .into_iter()
            .zip(sums)
            .map(|(n, s)| (n, s.value(seen)))
            .collect();
        Ok(Pass { logs, stop, bad })
    }

    /// Everything `fit` checks before training: the config's arguments (with the lines they
    /// were given at), then `x`, `y` and the validation data against the model, then their
    /// values (NaN and infinity) unless switched off.
    fn fit_checks(&self, xs: &[&Array], y: &Array, config: &FitConfig) -> Result<()> {
        config.args.result()?;
        check::batch_size("fit", config.batch_size)?;
        check::inputs("fit", self, xs)?;
        check::targets("fit", "y", self, y)?;
        if let Some((vx, vy)) = &config.validation_data {
            if config.validation_split > 0.0 {
                return Err(Error::invalid(format!(
                    "fit: both validation_split({}) and validation_data were given; choose \
                     one (Keras would ignore the split)",
                    config.validation_split
                )));
            }
            let vrefs: Vec<&Array> = vx.iter().collect();
            check::inputs("fit (validation_data x)", self, &vrefs)?;
            check::targets("fit", "validation_data's y", self, vy)?;
        }
        if rows_of(xs, Some(y))? == 0 {
            return Err(Error::invalid("fit: no training rows"));
        }
        if !config.check_finite {
            return Ok(());
        }
        let hint = "a non-finite input makes the loss NaN. Remove or replace that value \
                    (FitConfig::check_finite(false) skips this check)";
        for (i, a) in xs.iter().enumerate() {
            check::finite("fit", &x_name(xs, i, "x"), a, hint)?;
        }
        check::finite("fit", "y", y, hint)?;
        if let Some((vx, vy)) = &config.validation_data {
            let vrefs: Vec<&Array> = vx.iter().collect();
            for (i, a) in vrefs.iter().enumerate() {
                let name = x_name(&vrefs, i, "validation_data's x");
                check::finite("fit", &name, a, hint)?;
            }
            check::finite("fit", "validation_data's y", vy, hint)?;
        }
        Ok(())
    }

    /// Trains for `config.epochs` epochs and returns the per-epoch history. Calling `fit`
    /// again continues from the current weights and optimizer state.
    ///
    /// Before any batch runs, the config's settings are checked (an error names the line
    /// where a bad one was given), then `x` and `y` (and the validation data) against the
    /// model: dtypes, per-example shapes, and for sparse cross-entropy every label is a
    /// class index of the output. A mistake is an error naming the argument and the
    /// model's shape. Their values are checked for NaN and infinity (see
    /// [`FitConfig::check_finite`]), and the callbacks' `on_train_begin` and `check_log_names`
    /// run (a `ModelCheckpoint` to a missing directory, or on a name the logs lack, fails). By default training stops with an error at the first NaN or infinite batch
    /// loss (see [`FitConfig::terminate_on_nan`]), training or validation.
    pub fn fit(&mut self, x: impl Inputs, y: &Array, mut config: FitConfig) -> Result<History> {
        let y = &*super::losses::sparse_labels_i32(self.loss, "fit: y", y)?;
        if let Some((_, vy)) = &mut config.validation_data {
            let what = "fit: validation_data's y";
            *vy = super::losses::sparse_labels_i32(self.loss, what, vy)?.into_owned();
        }
        let xs_all = x.arrays();
        self.fit_checks(&xs_all, y, &config)?;
        let n = rows_of(&xs_all, Some(y))?;
        // Keras holds out the last rows, before any shuffling.
        let n_val = (n as f64 * config.validation_split).floor() as usize;
        let n_train = n - n_val;
        let (xs_owned, y_train, val): (Vec<Array>, Array, Option<Split>) = if n_val > 0 {
            let ti: Vec<usize> = (0..n_train).collect();
            let vi: Vec<usize> = (n_train..n).collect();
            let xt = xs_all
                .iter()
                .map(|a| take_rows(a, &ti))
                .collect::<Result<_>>()?;
            let xv = xs_all
                .iter()
                .map(|a| take_rows(a, &vi))
                .collect::<Result<_>>()?;
            (xt, take_rows(y, &ti)?, Some((xv, take_rows(y, &vi)?)))
        } else {
            (
                xs_all.iter().map(|a| (*a).clone()).collect(),
                y.clone(),
                config.validation_data.take(),
            )
        };
        let xs: Vec<&Array> = xs_owned.iter().collect();
        let steps = n_train.div_ceil(config.batch_size);
        let mut progress = Progress::new(config.verbosity, config.epochs, steps);
        let mut history = History::default();
        let mut callbacks = std::mem::take(&mut config.callbacks);
        if config.terminate_on_nan {
            callbacks.insert(0, Box::new(TerminateOnNaN::new()));
        }
        let log_names = log_names(self, val.is_some())?;
        for cb in callbacks.iter_mut() {
            cb.on_train_begin(self)?;
            cb.check_log_names(&log_names)?;
        }
        for epoch in 0..config.epochs {
            let t0 = Instant::now();
            for cb in callbacks.iter_mut() {
                cb.on_epoch_begin(epoch, self)?;
            }
            progress.begin_epoch(epoch);
            let order = if config.shuffle {
                crate::data::permutation(n_train, config.seed.wrapping_add(epoch as u64))
            } else {
                (0..n_train).collect()
            };
            let hooks = Hooks {
                epoch,
                progress: &mut progress,
                callbacks: &mut callbacks,
            };
            let pass =
                self.epoch_pass(&xs, &y_train, &order, config.batch_size, true, Some(hooks))?;
            let (mut logs, mut stop) = (pass.logs, pass.stop);
            if let Some((vx, vy)) = &val {
                let vrefs: Vec<&Array> = vx.iter().collect();
                let vp = self.evaluate_rows(&vrefs, vy, config.batch_size)?;
                if let (Some(b), true) = (&vp.bad, config.terminate_on_nan) {
                    return Err(validation_failed(epoch, b, vy.shape()[0]));
                }
                for (k, v) in vp.logs {
                    logs.insert(format!("val_{k}"), v);
                }
            }
            for cb in callbacks.iter_mut() {
                cb.add_epoch_logs(epoch, &mut logs, self)?;
            }
            for (k, v) in &logs {
                history.history.entry(k.clone()).or_default().push(*v);
            }
            // Keras' order: loss, metrics, then the same for validation.
            let rank = |k: &str| {
                (
                    k.starts_with("val_"),
                    k.trim_start_matches("val_") != "loss",
                )
            };
            let mut shown: Vec<(&str, f64)> = logs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            shown.sort_by_key(|(k, _)| rank(k));
            progress.end_epoch(epoch, &shown, t0.elapsed().as_secs_f64());
            for cb in callbacks.iter_mut() {
                if cb.on_epoch_end(epoch, &logs, self)? == Control::Stop {
                    stop = true;
                }
            }
            if stop {
                history.stopped_epoch = Some(epoch);
                break;
            }
        }
        for cb in callbacks.iter_mut() {
            cb.on_train_end(self)?;
        }
        Ok(history)
    }

    /// The (first) output on `x`, in batches of `batch_size`, with dropout off.
    pub fn predict(&mut self, x: impl Inputs, batch_size: usize) -> Result<Array> {
        Ok(self.predict_outputs(x, batch_size)?.remove(0))
    }

    /// Every output on `x` (for models with several), in batches, with dropout off.
    pub fn predict_outputs(&mut self, x: impl Inputs, batch_size: usize) -> Result<Vec<Array>> {
        let xs = x.arrays();
        check::batch_size("predict", batch_size)?;
        check::inputs("predict", self, &xs)?;
        let built = self.built()?.clone();
        let n = rows_of(&xs, None)?;
        let bs = batch_size;
        let g = self.graph().clone();
        if self.session.is_none() {
            // An uncompiled model (a multi-output one, say) still predicts.
            self.session = Some(Session::new(&g)?);
        }
        let fetch: Vec<Tensor<'_>> = built.outputs.iter().map(|&o| g.tensor(o)).collect();
        let mut parts: Vec<Vec<Array>> = vec![vec![]; fetch.len()];
        // Full batches of `bs`, then what is left in power-of-two pieces, largest first
        // (40 rows: 32 + 8). A session compiles once per batch size, so predicting any
        // number of rows compiles at most 1 + log2(bs) programs, and every run holds real
        // rows only (no padding: inference computes each row alone, bitwise the same in any
        // batch).
        let mut start = 0;
        loop {
            let left = n - start;
            let len = match left {
                0 => 0,
                l if l >= bs => bs,
                l => 1 << l.ilog2(),
            };
            let end = start + len;
            let idx: Vec<usize> = (start..end).collect();
            let mut feeds = vec![];
            for (&id, a) in built.inputs.iter().zip(&xs) {
                feeds.push((g.tensor(id), take_rows(a, &idx)?));
            }
            feeds.push((g.tensor(built.training), Array::scalar(false)));
            let sess = self
                .session
                .as_mut()
                .ok_or_else(|| Error::invalid("predict: no session"))?;
            for (p, a) in parts.iter_mut().zip(sess.run(&fetch, &feeds)?) {
                p.push(a);
            }
            start = end;
            if start >= n {
                break;
            }
        }
        parts.iter().map(|p| concat_rows(p)).collect()
    }
}
