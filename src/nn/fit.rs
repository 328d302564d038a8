//! Running a model: `fit` (the epoch loop, validation, callbacks; it returns a `History`), `evaluate`
//! and `predict` on arrays. One pass over batches is `fit_pass`; the dataset forms of these
//! methods are in `fit_dataset`, and share the epoch loop here.

use super::batch::{concat_rows, rows_of, x_name, Inputs, Logs};
use super::callbacks::{log_names, Control, TerminateOnNaN};
use super::check;
use super::fit_config::FitConfig;
use super::fit_dataset::StreamBatches;
use super::fit_dist::DistRun;
use super::fit_pass::{BadBatch, Hooks, Pass, RowBatches};
use super::history::History;
use super::model::Model;
use super::sample_weight::{check_class_weight, check_weights, class_weights};
use crate::array::Array;
use crate::data::{take_rows, Dataset, DatasetIter};
use crate::error::{Error, Result};
use crate::graph::Tensor;
use crate::progress::Progress;
use crate::session::Session;
use std::time::Instant;

/// How one pass of `fit` runs: its epoch, the batch size and shuffle seed for arrays, the
/// batches per epoch for a dataset (`steps_per_epoch`), and whether it is the run's first
/// epoch.
#[derive(Clone, Copy)]
struct PassOf {
    epoch: usize,
    batch_size: usize,
    shuffle: Option<u64>,
    steps: Option<usize>,
    first: bool,
}

/// Validation inputs, targets and sample weights.
type Split = (Vec<Array>, Array, Option<Array>);

/// What `fit` trains or validates on: rows of arrays, or a dataset's batches.
pub(super) enum Data<'a> {
    /// Arrays, cut into batches of `FitConfig::batch_size` (shuffled per epoch if asked),
    /// with checked sample weights if any.
    Rows {
        xs: Vec<&'a Array>,
        y: &'a Array,
        w: Option<&'a Array>,
    },
    /// A dataset's items, each a batch; checked for NaN and infinity if `check_finite`;
    /// weighted by class if `class_weight` (checked) is given.
    Stream {
        ds: &'a Dataset,
        check_finite: bool,
        class_weight: Option<&'a [(usize, f64)]>,
    },
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

impl Model {
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
        self.evaluate_inner(&x.arrays(), y, None, batch_size)
    }

    /// [`evaluate`](Model::evaluate) with the loss weighted by `sample_weight`, one weight
    /// per row (Keras' `evaluate(x, y, sample_weight=w)`): `sum(w · loss) / batch size` per
    /// batch, as [`FitConfig::sample_weight`] trains; the compiled metrics are not weighted,
    /// the [`weighted_metrics`](Model::weighted_metrics) are (Keras 3's split).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::nn::*;
    /// let mut m = Sequential::new([Input::new([1]).into(), Dense::new(1).into()]);
    /// m.compile(Sgd::new(0.1), Loss::MeanSquaredError, &[])?;
    /// m.set_weights(&[("dense/kernel".into(), Array::new([1, 1], vec![0f32])?),
    ///     ("dense/bias".into(), Array::new([1], vec![0f32])?)])?;
    /// let x = Array::new([2, 1], vec![0f32, 0.])?;
    /// let y = Array::new([2, 1], vec![1f32, 3.])?; // squared errors 1 and 9
    /// let w = Array::new([2], vec![2f32, 0.])?;
    /// let logs = m.evaluate_weighted(&x, &y, &w, 2)?;
    /// assert_eq!(logs["loss"], (2.0 * 1.0 + 0.0 * 9.0) / 2.0); // divided by 2 examples
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn evaluate_weighted(
        &mut self,
        x: impl Inputs,
        y: &Array,
        sample_weight: &Array,
        batch_size: usize,
    ) -> Result<Logs> {
        self.evaluate_inner(&x.arrays(), y, Some(sample_weight), batch_size)
    }

    /// `evaluate` with optional sample weights.
    fn evaluate_inner(
        &mut self,
        xs: &[&Array],
        y: &Array,
        w: Option<&Array>,
        batch_size: usize,
    ) -> Result<Logs> {
        let y = &*super::losses::sparse_labels_i32(self.loss, "evaluate: y", y)?;
        let xs = xs.to_vec();
        check::batch_size("evaluate", batch_size)?;
        check::inputs("evaluate", self, &xs)?;
        check::targets("evaluate", "y", self, y)?;
        let hint = "the loss would not be finite; remove or replace that value";
        for (i, a) in xs.iter().enumerate() {
            check::finite("evaluate", &x_name(&xs, i, "x"), a, hint)?;
        }
        check::finite("evaluate", "y", y, hint)?;
        let n = rows_of(&xs, Some(y))?;
        let w = w
            .map(|w| check_weights("evaluate: sample_weight", w, n))
            .transpose()?;
        let pass = self.evaluate_rows(&xs, y, w.as_ref(), batch_size)?;
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
    fn evaluate_rows(
        &mut self,
        xs: &[&Array],
        y: &Array,
        w: Option<&Array>,
        batch_size: usize,
    ) -> Result<Pass> {
        let n = rows_of(xs, Some(y))?;
        let order: Vec<usize> = (0..n).collect();
        let mut src = RowBatches {
            xs,
            y,
            w,
            chunks: order.chunks(batch_size),
        };
        self.epoch_pass(&mut src, false, None)
    }

    /// Everything `fit` checks before training: the config's arguments (with the lines they
    /// were given at), then `x`, `y` and the validation data against the model, then their
    /// values (NaN and infinity) unless switched off.
    fn fit_checks(&self, xs: &[&Array], y: &Array, config: &FitConfig) -> Result<()> {
        config.args.result()?;
        config.check_validation()?;
        check::batch_size("fit", config.batch_size)?;
        check::inputs("fit", self, xs)?;
        check::targets("fit", "y", self, y)?;
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
        check::finite("fit", "y", y, hint)
    }

    /// `validation_data`'s arrays checked against the model as `x` and `y` are (their `i64`
    /// labels converted first), for `fit` and `fit_dataset`.
    pub(super) fn validation_arrays_checks(&self, config: &mut FitConfig) -> Result<()> {
        let Some((vx, vy)) = &mut config.validation_data else {
            return Ok(());
        };
        let what = "fit: validation_data's y";
        *vy = super::losses::sparse_labels_i32(self.loss, what, vy)?.into_owned();
        let vrefs: Vec<&Array> = vx.iter().collect();
        check::inputs("fit (validation_data x)", self, &vrefs)?;
        check::targets("fit", "validation_data's y", self, vy)?;
        if !config.check_finite {
            return Ok(());
        }
        let hint = "a non-finite input makes the loss NaN. Remove or replace that value \
                    (FitConfig::check_finite(false) skips this check)";
        for (i, a) in vrefs.iter().enumerate() {
            let name = x_name(&vrefs, i, "validation_data's x");
            check::finite("fit", &name, a, hint)?;
        }
        check::finite("fit", "validation_data's y", vy, hint)
    }

    /// The checked sample weights of the training rows, from `sample_weight` or
    /// `class_weight` (not both, as in Keras), or `None`.
    fn training_weights(
        &self,
        config: &mut FitConfig,
        y: &Array,
        n: usize,
    ) -> Result<Option<Array>> {
        match (config.sample_weight.take(), &config.class_weight) {
            (Some(_), Some(_)) => Err(Error::invalid(
                "fit: both sample_weight and class_weight were given; Keras refuses both at \
                 once too: fold the class weights into the sample weights",
            )),
            (Some(w), None) => Ok(Some(check_weights("fit: sample_weight", &w, n)?)),
            (None, Some(map)) => {
                check_class_weight(map, self.classes()?)?;
                Ok(Some(class_weights(map, y)?))
            }
            (None, None) => Ok(None),
        }
    }

    /// The number of classes `class_weight` may name: the output's last size, or 2 for a
    /// single (binary) output.
    pub(super) fn classes(&self) -> Result<usize> {
        let out = self.graph().tensor(self.built()?.outputs[0]).shape();
        let k = out.dims().last().and_then(|d| d.fixed()).unwrap_or(1);
        Ok(if k == 1 { 2 } else { k })
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
        if let Some(n) = config.steps_per_epoch {
            return Err(Error::invalid(format!(
                "fit: steps_per_epoch({n}) is for a dataset (fit_dataset), whose length may be \
                 unknown; arrays have one, so an epoch is all their rows (set batch_size)"
            )));
        }
        let xs_all = x.arrays();
        self.fit_checks(&xs_all, y, &config)?;
        self.validation_arrays_checks(&mut config)?;
        let n = rows_of(&xs_all, Some(y))?;
        let w_all = self.training_weights(&mut config, y, n)?;
        // Keras holds out the last rows, before any shuffling.
        let n_val = (n as f64 * config.validation_split).floor() as usize;
        let n_train = n - n_val;
        let cut = |a: &Array, r: std::ops::Range<usize>| take_rows(a, &r.collect::<Vec<_>>());
        let (xs_owned, y_train, w_train, val): (Vec<Array>, Array, Option<Array>, Option<Split>) =
            if n_val > 0 {
                let xt = xs_all
                    .iter()
                    .map(|a| cut(a, 0..n_train))
                    .collect::<Result<_>>()?;
                let xv = xs_all
                    .iter()
                    .map(|a| cut(a, n_train..n))
                    .collect::<Result<_>>()?;
                let wt = w_all.as_ref().map(|w| cut(w, 0..n_train)).transpose()?;
                let wv = w_all.as_ref().map(|w| cut(w, n_train..n)).transpose()?;
                let yv = cut(y, n_train..n)?;
                (xt, cut(y, 0..n_train)?, wt, Some((xv, yv, wv)))
            } else {
                let val = config.validation_data.take().map(|(vx, vy)| (vx, vy, None));
                let xt = xs_all.iter().map(|a| (*a).clone()).collect();
                (xt, y.clone(), w_all, val)
            };
        let xs: Vec<&Array> = xs_owned.iter().collect();
        let steps = n_train.div_ceil(config.batch_size);
        let train = Data::Rows {
            xs,
            y: &y_train,
            w: w_train.as_ref(),
        };
        let val_rows = val.as_ref().map(|(vx, vy, vw)| Data::Rows {
            xs: vx.iter().collect(),
            y: vy,
            w: vw.as_ref(),
        });
        let val_ds = config.validation_dataset.take();
        let check_finite = config.check_finite;
        let val = val_rows.or(val_ds.as_ref().map(|ds| Data::Stream {
            ds,
            check_finite,
            class_weight: None,
        }));
        self.fit_loop(&train, val.as_ref(), steps, config)
    }

    /// The epoch loop of `fit` and `fit_dataset`, after their checks: `steps` batches per
    /// epoch for the progress bar (0 if unknown).
    pub(super) fn fit_loop(
        &mut self,
        train: &Data<'_>,
        val: Option<&Data<'_>>,
        steps: usize,
        mut config: FitConfig,
    ) -> Result<History> {
        let mut dist = self.dist_begin(&mut config, train, val)?;
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
        // With `steps_per_epoch`, the dataset's iterator goes on from one epoch to the next.
        let mut carry: Option<DatasetIter> = None;
        for epoch in config.initial_epoch..config.epochs {
            let t0 = Instant::now();
            for cb in callbacks.iter_mut() {
                cb.on_epoch_begin(epoch, self)?;
            }
            progress.begin_epoch(epoch);
            let hooks = Hooks {
                epoch,
                progress: &mut progress,
                callbacks: &mut callbacks,
            };
            let seed = config
                .shuffle
                .then(|| config.seed.wrapping_add(epoch as u64));
            let how = PassOf {
                epoch,
                batch_size: config.batch_size,
                shuffle: seed,
                steps: config.steps_per_epoch,
                first: epoch == config.initial_epoch,
            };
            let pass = self.data_pass(train, &how, &mut carry, dist.as_mut(), Some(hooks))?;
            if pass.ran_out && pass.steps == 0 {
                // The dataset ended exactly at an epoch's boundary (`steps_per_epoch`).
                history.stopped_epoch = epoch.checked_sub(1);
                break;
            }
            let (mut logs, mut stop, pass_steps) = (pass.logs, pass.stop, pass.steps);
            if let Some(v) = val {
                progress.validating();
                let how = PassOf {
                    steps: None,
                    shuffle: None,
                    first: true,
                    ..how
                };
                let vp = self.data_pass(v, &how, &mut None, dist.as_mut(), None)?;
                if let (Some(b), true) = (&vp.bad, config.terminate_on_nan) {
                    return Err(validation_failed(epoch, b, vp.seen));
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
            progress.end_epoch(epoch, &shown, t0.elapsed().as_secs_f64(), pass_steps);
            for cb in callbacks.iter_mut() {
                if cb.on_epoch_end(epoch, &logs, self)? == Control::Stop {
                    stop = true;
                }
            }
            if dist.is_some() {
                Model::dist_agree(epoch, &logs, stop)?;
            }
            if stop {
                history.stopped_epoch = Some(epoch);
                break;
            }
        }
        if let Some(d) = &dist {
            self.dist_end(d)?;
        }
        for cb in callbacks.iter_mut() {
            cb.on_train_end(self)?;
            history.restored_epoch = cb.restored_epoch().or(history.restored_epoch);
        }
        Ok(history)
    }

    /// One pass over `data` as `how` says: training (with `hooks`) when there are hooks,
    /// evaluation otherwise. Arrays run in batches of `batch_size`, in the order of the
    /// permutation of `shuffle`'s seed or in order; a dataset runs its own batches, `steps`
    /// of them if given, from the iterator in `carry` if one was left there by the previous
    /// epoch (and leaves its own there for the next, unless the dataset ended). With `dist`,
    /// the batches run cut into micro-shards (`fit_dist`).
    fn data_pass(
        &mut self,
        data: &Data<'_>,
        how: &PassOf,
        carry: &mut Option<DatasetIter>,
        dist: Option<&mut DistRun>,
        hooks: Option<Hooks<'_>>,
    ) -> Result<Pass> {
        let training = hooks.is_some();
        let epoch = how.epoch;
        match data {
            Data::Rows { xs, y, w } => {
                let n = rows_of(xs, Some(y))?;
                let order = match how.shuffle {
                    Some(seed) => crate::data::permutation(n, seed),
                    None => (0..n).collect(),
                };
                let mut src = RowBatches {
                    xs,
                    y,
                    w: *w,
                    chunks: order.chunks(how.batch_size),
                };
                match dist {
                    Some(d) => self.dist_pass(d, &mut src, false, hooks),
                    None => self.epoch_pass(&mut src, training, hooks),
                }
            }
            Data::Stream {
                ds,
                check_finite,
                class_weight,
            } => {
                let what = if training {
                    "fit_dataset"
                } else {
                    "validation"
                };
                let iter = match carry.take() {
                    Some(it) => it,
                    None => ds.iter_epoch(epoch as u64),
                };
                let mut src = StreamBatches::new(iter, what, *check_finite, *class_weight);
                src.limit = how.steps;
                let mut pass = match dist {
                    Some(d) => self.dist_pass(d, &mut src, true, hooks)?,
                    None => self.epoch_pass(&mut src, training, hooks)?,
                };
                if how.steps.is_some() {
                    // Keras 3: an input that runs out stops training after this epoch.
                    pass.ran_out = src.ran_out;
                    pass.stop |= src.ran_out;
                    if !src.ran_out {
                        *carry = Some(src.into_inner());
                    }
                }
                if pass.seen == 0 && !pass.stop && (how.first || how.steps.is_none()) {
                    return Err(Error::invalid(format!(
                        "{what}: the dataset gave no batches in epoch {}",
                        epoch + 1
                    )));
                }
                Ok(pass)
            }
        }
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
