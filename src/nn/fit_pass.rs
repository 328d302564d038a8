//! One pass over batches, shared by `fit`, `evaluate` and their dataset forms: running a
//! batch, adding up the logs, the per-batch hooks.
//!
//! Where the batches come from is a [`Batches`] source: rows of arrays in a given order
//! (refilled into the previous batch's buffers, as `fit` on arrays always did), or a
//! [`Dataset`](crate::data::Dataset)'s items (`fit_dataset`). The pass itself does not
//! know which, so arrays and datasets train by the same code and, fed the same batches,
//! give the same bits.

use super::batch::Logs;
use super::callbacks::{Callback, Control};
use super::losses::Metric;
use super::model::Model;
use crate::array::Array;
use crate::data::take_rows_into;
use crate::error::{Error, Result};
use crate::graph::{NodeId, Tensor};
use crate::progress::Progress;

/// What one pass over the data gives.
pub(super) struct Pass {
    /// The means over the rows run.
    pub logs: Logs,
    /// A callback asked to stop.
    pub stop: bool,
    /// The first batch whose loss was NaN or infinite.
    pub bad: Option<BadBatch>,
    /// Rows run.
    pub seen: usize,
    /// Batches run.
    pub steps: usize,
    /// The dataset ended before `steps_per_epoch` batches (set by `fit`'s `data_pass`).
    pub ran_out: bool,
}

/// A batch whose loss was NaN or infinite.
pub(super) struct BadBatch {
    /// 0-based.
    pub step: usize,
    /// Its first row (in the order run; evaluation runs rows in order).
    pub first_row: usize,
    /// How many rows it holds.
    pub rows: usize,
    /// Its loss.
    pub loss: f64,
}

/// What a training pass reports each step to: the progress display and the callbacks.
pub(super) struct Hooks<'a> {
    pub epoch: usize,
    pub progress: &'a mut Progress,
    pub callbacks: &'a mut [Box<dyn Callback>],
}

/// The graph nodes one step feeds and fetches.
pub(super) struct StepIds {
    pub inputs: Vec<NodeId>,
    pub training: NodeId,
    pub target: NodeId,
    pub loss: NodeId,
    pub metrics: Vec<(String, NodeId, Metric)>,
    train: NodeId,
    /// The weight placeholder, weighted loss and weighted train op, once a batch has
    /// brought weights.
    weighted: Option<(NodeId, NodeId, NodeId)>,
    /// `Model::weighted_metrics` and their weight placeholder.
    pub weighted_metrics: Vec<(String, NodeId, Metric)>,
    pub metric_weight: Option<NodeId>,
}

/// One batch a source has put in the buffers.
pub(super) struct BatchInfo {
    /// Its rows.
    pub rows: usize,
    /// The row it starts at, for messages (the data's row for arrays, the count of rows
    /// before it in the epoch for a dataset).
    pub first_row: usize,
}

/// Where a pass's batches come from.
pub(super) trait Batches {
    /// Puts the next batch's arrays in `bufs` (the model's inputs, the target, and the
    /// sample weights if the batch has them), or `None` at the end of the pass.
    fn next_into(&mut self, model: &Model, bufs: &mut Vec<Array>) -> Option<Result<BatchInfo>>;
}

/// Rows of arrays in a given order, `batch_size` at a time, copied into the previous
/// batch's buffers: a fresh 400 KB MNIST batch per step cost ~5% of an epoch in page
/// faults.
pub(super) struct RowBatches<'a> {
    pub xs: &'a [&'a Array],
    pub y: &'a Array,
    /// Sample weights, checked, one per row.
    pub w: Option<&'a Array>,
    pub chunks: std::slice::Chunks<'a, usize>,
}

impl Batches for RowBatches<'_> {
    fn next_into(&mut self, _: &Model, bufs: &mut Vec<Array>) -> Option<Result<BatchInfo>> {
        let idx = self.chunks.next()?;
        let arrays = self.xs.iter().chain([&self.y]).chain(self.w.as_ref());
        bufs.resize_with(self.xs.len() + 1 + usize::from(self.w.is_some()), || {
            Array::scalar(0f32)
        });
        for (a, buf) in arrays.zip(bufs.iter_mut()) {
            if let Err(e) = take_rows_into(a, idx, buf) {
                return Some(Err(e));
            }
        }
        Some(Ok(BatchInfo {
            rows: idx.len(),
            first_row: idx[0],
        }))
    }
}

/// How a logged value adds up over batches: a batch mean weighted by the batch's rows, or
/// counts summed and then divided ([`Metric::counts`]).
#[derive(Clone, Copy)]
pub(super) enum Combine {
    Mean,
    Counts(Metric),
    /// A weighted mean metric: `[sum(w · m), sum(w)]` summed, then divided.
    WeightedMean,
}

/// `a / b`, or 0 when `b` is 0 (Keras' `divide_no_nan`).
fn ratio(s: &[f64]) -> f64 {
    match s {
        [_, b] if *b == 0.0 => 0.0,
        [a, b] => a / b,
        _ => f64::NAN,
    }
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
            Combine::Counts(_) | Combine::WeightedMean => v.to_vec(),
        };
        if self.sums.is_empty() {
            self.sums = add;
        } else {
            self.sums.iter_mut().zip(add).for_each(|(s, a)| *s += a);
        }
    }

    /// The value over `seen` rows so far.
    fn value(&self, seen: usize) -> f64 {
        self.how.value(&self.sums, seen)
    }

    /// One batch's own value from its fetched `v`.
    fn of_batch(&self, v: &[f64]) -> f64 {
        match self.how {
            Combine::Mean => v.first().copied().unwrap_or(f64::NAN),
            Combine::Counts(m) => m.result(v),
            Combine::WeightedMean => ratio(v),
        }
    }
}

impl Combine {
    /// The value of a logged value's `sums` (a mean's sum of `batch mean × rows`, a metric's
    /// counts, a weighted mean's `[sum(w · m), sum(w)]`) over `rows` rows.
    pub(super) fn value(self, sums: &[f64], rows: usize) -> f64 {
        match self {
            _ if rows == 0 => f64::NAN,
            Combine::Mean => sums.first().map_or(f64::NAN, |s| s / rows as f64),
            Combine::Counts(m) => m.result(sums),
            Combine::WeightedMean => ratio(sums),
        }
    }
}

/// The logged values of a pass: their names (`loss`, the metrics, the weighted metrics) and
/// how each adds up over batches.
pub(super) fn log_plan(ids: &StepIds) -> (Vec<String>, Vec<Combine>) {
    let mut names = vec!["loss".to_string()];
    names.extend(ids.metrics.iter().map(|m| m.0.clone()));
    names.extend(ids.weighted_metrics.iter().map(|m| m.0.clone()));
    let hows = std::iter::once(Combine::Mean)
        .chain(ids.metrics.iter().map(|m| {
            if m.2.counts() {
                Combine::Counts(m.2)
            } else {
                Combine::Mean
            }
        }))
        .chain(ids.weighted_metrics.iter().map(|m| {
            if m.2.counts() {
                Combine::Counts(m.2)
            } else {
                Combine::WeightedMean
            }
        }))
        .collect();
    (names, hows)
}

impl Model {
    /// Before batch `step` of a training pass: every callback's `on_train_batch_begin`.
    pub(super) fn batch_begin(&mut self, h: &mut Hooks<'_>, step: usize) -> Result<()> {
        for cb in h.callbacks.iter_mut() {
            cb.on_train_batch_begin(h.epoch, step, self)?;
        }
        Ok(())
    }

    /// After batch `step`: the progress line with the running values (`running`, in the
    /// order of `names`, computed only when the bar shows steps), then every callback's
    /// `on_batch_end` with the batch's own values `vals`. True if a callback asked to stop.
    pub(super) fn batch_end(
        &mut self,
        h: &mut Hooks<'_>,
        step: usize,
        names: &[String],
        vals: Vec<f64>,
        running: impl FnOnce() -> Vec<f64>,
    ) -> Result<bool> {
        if h.progress.shows_steps() {
            let running: Vec<(&str, f64)> =
                names.iter().map(String::as_str).zip(running()).collect();
            h.progress.step(step, &running);
        }
        let mut stop = false;
        if !h.callbacks.is_empty() {
            let batch: Logs = names.iter().cloned().zip(vals).collect();
            for cb in h.callbacks.iter_mut() {
                if cb.on_batch_end(h.epoch, step, &batch, self)? == Control::Stop {
                    stop = true;
                }
            }
        }
        Ok(stop)
    }

    pub(super) fn ids(&self) -> Result<StepIds> {
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
            weighted: c.weighted,
            weighted_metrics: c.weighted_metrics.clone(),
            metric_weight: c.metric_weight,
        })
    }

    /// Runs the batch held in `bufs` (inputs, target, and weights if it has them); returns
    /// its loss and metrics (a batch mean, or a metric's counts). The arrays go back into
    /// `bufs` for reuse. A weighted batch runs the weighted loss and train op, built the
    /// first time one comes.
    fn run_batch(
        &mut self,
        ids: &mut StepIds,
        training: bool,
        bufs: &mut Vec<Array>,
    ) -> Result<Vec<Vec<f64>>> {
        let weighted = bufs.len() == ids.inputs.len() + 2;
        let (weight, loss, train) = match (weighted, ids.weighted) {
            (false, _) => (None, ids.loss, ids.train),
            (true, Some((w, l, t))) => (Some(w), l, t),
            (true, None) => {
                let (w, l, t) = self.weighted_ids()?;
                ids.weighted = Some((w, l, t));
                (Some(w), l, t)
            }
        };
        let g = self.graph().clone();
        // The weighted metrics' weights: the batch's, or ones.
        let metric_w = match ids.metric_weight {
            None => None,
            Some(id) => {
                let w = match (weighted, bufs.last()) {
                    (true, Some(w)) => w.clone(),
                    _ => {
                        let rows = bufs.get(ids.inputs.len()).map_or(0, |y| y.shape()[0]);
                        Array::new([rows], vec![1f32; rows])?
                    }
                };
                Some((g.tensor(id), w))
            }
        };
        let mut feeds: Vec<(Tensor<'_>, Array)> = ids
            .inputs
            .iter()
            .chain([&ids.target])
            .chain(weight.as_ref())
            .zip(bufs.drain(..))
            .map(|(&id, a)| (g.tensor(id), a))
            .collect();
        let own = feeds.len();
        feeds.push((g.tensor(ids.training), Array::scalar(training)));
        feeds.extend(metric_w);
        let mut fetch = vec![g.tensor(loss)];
        fetch.extend(ids.metrics.iter().map(|m| g.tensor(m.1)));
        fetch.extend(ids.weighted_metrics.iter().map(|m| g.tensor(m.1)));
        if training {
            fetch.push(g.tensor(train));
        }
        let out = self.session()?.run(&fetch, &feeds);
        feeds.truncate(own);
        bufs.extend(feeds.into_iter().map(|(_, a)| a));
        let out = out?;
        Ok(out
            .iter()
            .take(1 + ids.metrics.len() + ids.weighted_metrics.len())
            .map(|a| a.to_f64_vec())
            .collect())
    }

    /// One pass over `src`'s batches: the logs, whether a callback asked to stop (after a
    /// batch), and the first batch whose loss was not finite.
    pub(super) fn epoch_pass(
        &mut self,
        src: &mut dyn Batches,
        training: bool,
        mut hooks: Option<Hooks<'_>>,
    ) -> Result<Pass> {
        let mut ids = self.ids()?;
        let (names, hows) = log_plan(&ids);
        let mut sums: Vec<Sum> = hows
            .into_iter()
            .map(|how| Sum { how, sums: vec![] })
            .collect();
        let mut seen = 0usize;
        let mut bufs = vec![];
        let mut stop = false;
        let mut bad = None;
        let mut step = 0usize;
        while let Some(info) = src.next_into(self, &mut bufs) {
            let info = info?;
            if let Some(h) = hooks.as_mut() {
                self.batch_begin(h, step)?;
            }
            let fetched = self.run_batch(&mut ids, training, &mut bufs)?;
            let vals: Vec<f64> = sums
                .iter()
                .zip(&fetched)
                .map(|(s, v)| s.of_batch(v))
                .collect();
            if bad.is_none() && !vals[0].is_finite() {
                bad = Some(BadBatch {
                    step,
                    first_row: info.first_row,
                    rows: info.rows,
                    loss: vals[0],
                });
            }
            for (s, v) in sums.iter_mut().zip(&fetched) {
                s.add(v, info.rows);
            }
            seen += info.rows;
            step += 1;
            let Some(h) = hooks.as_mut() else { continue };
            let running = || sums.iter().map(|s| s.value(seen)).collect();
            if self.batch_end(h, step - 1, &names, vals, running)? {
                stop = true;
                break;
            }
        }
        let logs = names
            .into_iter()
            .zip(sums)
            .map(|(n, s)| (n, s.value(seen)))
            .collect();
        Ok(Pass {
            logs,
            stop,
            bad,
            seen,
            steps: step,
            ran_out: false,
        })
    }
}
