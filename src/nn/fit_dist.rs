//! `fit` across processes (issue 19, Keras style): [`FitConfig::distributed`].
//!
//! Every global batch (`batch_size` rows, from the same shuffled order on every rank) is cut
//! into `S` micro-shards, rows `s·R/S .. (s+1)·R/S` of a batch of `R` rows; rank `r` of `N`
//! computes micro-shards `r·S/N .. (r+1)·S/N`. Per micro-shard, one run of the model's loss,
//! metrics and gradients (the same executable at the same shape wherever it runs); the
//! gradients, scaled by the micro-shard's share of the batch (`rows_s / R`), are summed in
//! global micro-shard order by [`crate::dist::all_reduce_f32`] (buckets of 25 MB), and one
//! run of the optimizer applies the sum. So the bits depend on `S`, never on `N`: one process
//! with `distributed(S)` (the *reference mode*) and N processes train to the same weights and
//! the same `History`.
//!
//! - **Logs** are reduced exactly: each micro-shard gives `loss × rows` and each metric's
//!   `mean × rows` (or its counts, for precision, recall, F1, AUC), summed in micro-shard
//!   order by [`crate::dist::all_reduce_f64`] every batch; the epoch's value is the sum over
//!   batches divided by the rows, or the metric of the summed counts, as in one process.
//!   Validation runs the same way (its batches cut into micro-shards too).
//! - **Decisions** (early stopping, `ReduceLROnPlateau`, `TerminateOnNaN`, checkpoints'
//!   "best") are computed by every rank from these reduced logs, which are the same bits on
//!   every rank; at each epoch's end the ranks compare a hash of the logs and of the stop
//!   decision, so a callback that decided from anything else is an error, not a hang.
//! - **Only rank 0** prints progress and runs the callbacks that write files
//!   ([`Callback::root_only`]: `ModelCheckpoint`, `PlotCurves`, `CSVLogger`).
//! - **Start**: the ranks compare the graph ([`crate::dist::check_same_graph`]) and the
//!   settings (micro-shards, batch size, epochs, shuffling, row counts), then every rank takes
//!   rank 0's variables and run counter ([`crate::dist::broadcast_variables`]).
//! - **Dropout** is keyed per micro-shard: micro-shard `s` of the fit's step `t` runs with the
//!   session's run counter at `base + t·S + s`, so its random stream does not depend on which
//!   rank computes it (random ops draw from `(seed, run, element)`).
//!
//! Not (yet) distributed: `fit_dataset`, sample and class weights, and layers with state
//! updates (`BatchNormalization`'s moving statistics would need the same ordered reduction);
//! each is an error naming what to do instead.

use super::batch::{rows_of, Logs};
use super::callbacks::Control;
use super::fit::Data;
use super::fit_config::FitConfig;
use super::fit_pass::{BadBatch, Hooks, Pass};
use super::losses::Metric;
use super::model::{DistIds, Model};
use crate::array::Array;
use crate::data::take_rows_into;
use crate::dist;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::{NodeId, Tensor};
use crate::progress::Verbosity;

/// The largest bucket of gradients reduced by one collective, in bytes (PyTorch DDP's
/// default, as `train::Distributed`).
const BUCKET_BYTES: usize = 25 << 20;

impl FitConfig {
    /// Trains data-parallel across the processes of [`crate::dist`] (`mpirun -np N`, kiln
    /// built with the `mpi` feature, `kiln::dist::init()` called first), with every global
    /// batch of `batch_size` rows cut into `micro_shards` micro-shards, `micro_shards / N` per
    /// process. The result (weights and `History`) depends on `micro_shards`, not on `N`: one
    /// process with the same setting is the bitwise reference. `micro_shards` is at least 1
    /// and a multiple of the process count (checked when `fit` starts).
    ///
    /// ```no_run
    /// # use kiln::prelude::*;
    /// # use kiln::nn::*;
    /// # fn main() -> kiln::Result<()> {
    /// # let (mut model, x, y) = (Sequential::new([]), Array::scalar(0f32), Array::scalar(0i32));
    /// let world = kiln::dist::init()?; // first, on every rank
    /// let config = FitConfig::new().epochs(5).batch_size(128).distributed(4);
    /// let history = model.fit(&x, &y, config)?; // the same bits on 1, 2 or 4 processes
    /// if world.is_root() {
    ///     model.save_weights("weights.safetensors")?;
    /// }
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn distributed(mut self, micro_shards: usize) -> Self {
        let f = "FitConfig::distributed";
        let allowed = "at least 1 (micro-shards per global batch)";
        self.args
            .check(micro_shards >= 1, f, "micro_shards", allowed, micro_shards);
        self.micro_shards = Some(micro_shards);
        self
    }
}

/// One distributed `fit` call in progress.
pub(super) struct DistRun {
    shards: usize,
    rank: usize,
    /// Micro-shards per rank.
    local: usize,
    ids: DistIds,
    /// Each trainable variable's (offset, length, shape) in a flat gradient buffer, laid out
    /// from the last variable backwards (the order the backward pass finishes them).
    layout: Vec<(usize, usize, Vec<usize>)>,
    /// Offset ranges of the buckets in the flat buffer.
    buckets: Vec<std::ops::Range<usize>>,
    /// The flat buffer's length.
    params: usize,
    /// The run counter when the fit started (rank 0's).
    base_runs: u64,
    /// Training steps run by this fit.
    steps: u64,
}

/// A 64-bit FNV-1a hash of `words`.
fn hash(words: impl IntoIterator<Item = u64>) -> u64 {
    words.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, w| {
        w.to_le_bytes().iter().fold(h, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    })
}

/// Ok if every rank gives the same `value`, else an error naming the ranks that differ.
fn agree(value: u64, what: &str) -> Result<()> {
    let all = dist::all_gather_u64(value)?;
    let odd: Vec<String> = (0..all.len())
        .filter(|&r| all[r] != all[0])
        .map(|r| r.to_string())
        .collect();
    if odd.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "fit (distributed): rank {} disagree{} with rank 0 on {what}",
        odd.join(", "),
        if odd.len() == 1 { "s" } else { "" }
    )))
}

/// The rows of a `Data::Rows`, or the error for a dataset.
fn rows_data(data: &Data<'_>, what: &str) -> Result<usize> {
    match data {
        Data::Rows { xs, y, w } => {
            if w.is_some() {
                return Err(Error::invalid(
                    "fit: FitConfig::distributed does not take sample_weight or class_weight \
                     yet; train unweighted, or in one process",
                ));
            }
            rows_of(xs, Some(y))
        }
        Data::Stream { .. } => Err(Error::invalid(format!(
            "fit_dataset: FitConfig::distributed reads arrays only for now ({what} is a \
             dataset); give fit the arrays, or train the dataset in one process"
        ))),
    }
}

impl Model {
    /// The distributed nodes, built the first time (the loss's gradients and the optimizer
    /// applied to fed gradients).
    fn dist_ids(&mut self) -> Result<DistIds> {
        let compiled = self
            .compiled
            .as_ref()
            .ok_or_else(|| Error::invalid("the model is not compiled yet (call compile)"))?;
        if let Some(d) = &compiled.dist {
            return Ok(d.clone());
        }
        let loss_id = compiled.loss;
        let built = self.built()?.clone();
        let g = self.graph().clone();
        let vars: Vec<Tensor<'_>> = built.trainable.iter().map(|&i| g.tensor(i)).collect();
        if let Some(v) = vars.iter().find(|v| v.dtype() != DType::F32) {
            return Err(Error::invalid(format!(
                "fit: FitConfig::distributed reduces f32 gradients; the trainable variable \
                 {v:?} is {}",
                v.dtype()
            )));
        }
        let grads = crate::autodiff::gradients(&[g.tensor(loss_id)], &vars, None)?;
        let fed: Vec<Tensor<'_>> = vars
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let name = format!("distributed/grad_{i}");
                let name = if g.by_name(&name).is_none() {
                    name
                } else {
                    format!("distributed_{}/grad_{i}", g.len())
                };
                g.placeholder(&name, DType::F32, v.shape())
            })
            .collect();
        let gv: Vec<(Tensor<'_>, Tensor<'_>)> = fed.iter().copied().zip(vars).collect();
        let opt = self
            .optimizer
            .as_mut()
            .ok_or_else(|| Error::Internal("a compiled model without its optimizer".into()))?;
        opt.config_mut().share_state = true;
        let train = opt.apply_gradients(&gv);
        opt.config_mut().share_state = false;
        let train = train?;
        g.check()?;
        let ids = DistIds {
            grads: grads.iter().map(|t| t.id()).collect(),
            fed: fed.iter().map(|t| t.id()).collect(),
            train: train.id(),
        };
        if let Some(c) = self.compiled.as_mut() {
            c.dist = Some(ids.clone());
        }
        Ok(ids)
    }

    /// What a distributed `fit` does before its first epoch (nothing without
    /// [`FitConfig::distributed`]): checks, the agreement of the ranks, rank 0's variables
    /// everywhere; progress silenced and file-writing callbacks dropped on the other ranks.
    pub(super) fn dist_begin(
        &mut self,
        config: &mut FitConfig,
        train: &Data<'_>,
        val: Option<&Data<'_>>,
    ) -> Result<Option<DistRun>> {
        let Some(shards) = config.micro_shards else {
            return Ok(None);
        };
        let (size, rank) = (dist::world_size(), dist::rank());
        if !shards.is_multiple_of(size) {
            return Err(Error::invalid(format!(
                "fit: FitConfig::distributed({shards}) on {size} processes: the micro-shards \
                 must divide evenly among the processes (a multiple of {size})"
            )));
        }
        if config.steps_per_epoch.is_some() {
            return Err(Error::invalid(
                "fit: FitConfig::distributed does not take steps_per_epoch yet (every rank \
                 passes over all its rows each epoch); leave it unset, or train in one process",
            ));
        }
        if self
            .compiled
            .as_ref()
            .is_some_and(|c| !c.weighted_metrics.is_empty())
        {
            return Err(Error::invalid(
                "fit: FitConfig::distributed does not reduce Model::weighted_metrics yet; \
                 compile without them, or train in one process",
            ));
        }
        if !self.built()?.updates.is_empty() {
            return Err(Error::invalid(
                "fit: FitConfig::distributed cannot train layers with state updates yet \
                 (BatchNormalization's moving statistics are not reduced across ranks); train \
                 this model in one process",
            ));
        }
        let n_train = rows_data(train, "the training data")?;
        let n_val = val
            .map(|v| rows_data(v, "the validation data"))
            .transpose()?;
        let ids = self.dist_ids()?;
        let g = self.graph().clone();
        let mut layout = vec![];
        let mut buckets: Vec<std::ops::Range<usize>> = vec![];
        let mut at = 0;
        for &id in built_trainable(self)?.iter().rev() {
            let shape = g.tensor(id).shape().to_fixed().unwrap_or_default();
            let len: usize = shape.iter().product();
            match buckets.last_mut() {
                Some(b) if (b.end - b.start + len) * 4 <= BUCKET_BYTES => b.end += len,
                _ => buckets.push(at..at + len),
            }
            layout.push((at, len, shape));
            at += len;
        }
        layout.reverse(); // back to variable order: layout[v] is variable v's place
        let settings = [
            shards as u64,
            config.batch_size as u64,
            config.epochs as u64,
            u64::from(config.shuffle),
            config.seed,
            n_train as u64,
            n_val.map_or(u64::MAX, |n| n as u64),
        ];
        agree(
            hash(settings),
            "the fit settings (micro-shards, batch size, epochs, shuffle and seed, training \
             and validation rows): every rank must call fit with the same",
        )?;
        dist::check_same_graph(&g)?;
        let sess = self.session()?;
        dist::broadcast_variables(sess)?;
        let base_runs = sess.run_count();
        if rank != 0 {
            config.verbosity = Verbosity::Silent;
            config.callbacks.retain(|c| !c.root_only());
        }
        Ok(Some(DistRun {
            shards,
            rank,
            local: shards / size,
            ids,
            layout,
            buckets,
            params: at,
            base_runs,
            steps: 0,
        }))
    }

    /// After the last epoch: the run counter where the reference run leaves it, whatever
    /// this rank's validation runs did to it.
    pub(super) fn dist_end(&mut self, d: &DistRun) -> Result<()> {
        let runs = d.base_runs + d.steps * d.shards as u64;
        self.session()?.set_run_count(runs);
        Ok(())
    }

    /// One pass of a distributed `fit` over `data` (training when there are hooks):
    /// see the module docs.
    pub(super) fn dist_pass(
        &mut self,
        d: &mut DistRun,
        data: &Data<'_>,
        batch_size: usize,
        shuffle: Option<u64>,
        mut hooks: Option<Hooks<'_>>,
    ) -> Result<Pass> {
        let Data::Rows { xs, y, .. } = data else {
            return Err(Error::Internal("a distributed pass over a dataset".into()));
        };
        let training = hooks.is_some();
        let n = rows_of(xs, Some(y))?;
        let order = match shuffle {
            Some(seed) => crate::data::permutation(n, seed),
            None => (0..n).collect(),
        };
        let ids = self.ids()?;
        let g = self.graph().clone();
        let training_flag = g.tensor(self.built()?.training);
        let mut names = vec!["loss".to_string()];
        names.extend(ids.metrics.iter().map(|m| m.0.clone()));
        // Each logged value's place in the per-micro-shard vector: a mean (× rows) takes one
        // number, a counting metric its counts.
        let mut kinds: Vec<(usize, usize, Option<Metric>)> = vec![(0, 1, None)];
        let mut width = 1;
        for m in &ids.metrics {
            let len = if m.2.counts() {
                g.tensor(m.1).shape().numel().unwrap_or(1)
            } else {
                1
            };
            kinds.push((width, len, m.2.counts().then_some(m.2)));
            width += len;
        }
        let value = |sums: &[f64], rows: usize, k: &(usize, usize, Option<Metric>)| match k.2 {
            _ if rows == 0 => f64::NAN,
            Some(m) => m.result(&sums[k.0..k.0 + k.1]),
            None => sums[k.0] / rows as f64,
        };
        let mut fetch = vec![g.tensor(ids.loss)];
        fetch.extend(ids.metrics.iter().map(|m| g.tensor(m.1)));
        if training {
            fetch.extend(d.ids.grads.iter().map(|&id| g.tensor(id)));
        }
        let inputs: Vec<Tensor<'_>> = ids.inputs.iter().map(|&i| g.tensor(i)).collect();
        let target = g.tensor(ids.target);
        let mut bufs: Vec<Array> = vec![Array::scalar(0f32); xs.len() + 1];
        let mut sums = vec![0f64; width];
        let (mut seen, mut step, mut stop, mut bad) = (0usize, 0usize, false, None);
        let mut grads = vec![vec![0f32; if training { d.params } else { 0 }]; d.local];
        for idx in order.chunks(batch_size) {
            let rows = idx.len();
            if let Some(h) = hooks.as_mut() {
                for cb in h.callbacks.iter_mut() {
                    cb.on_train_batch_begin(h.epoch, step, self)?;
                }
            }
            let mut logs = vec![vec![0f64; width]; d.local];
            for j in 0..d.local {
                let s = d.rank * d.local + j;
                let (lo, hi) = (s * rows / d.shards, (s + 1) * rows / d.shards);
                if hi == lo {
                    grads[j].iter_mut().for_each(|x| *x = 0.0);
                    continue;
                }
                for (a, buf) in xs.iter().chain([y]).zip(bufs.iter_mut()) {
                    take_rows_into(a, &idx[lo..hi], buf)?;
                }
                let mut feeds: Vec<(Tensor<'_>, Array)> = inputs
                    .iter()
                    .chain([&target])
                    .copied()
                    .zip(bufs.drain(..))
                    .collect();
                feeds.push((training_flag, Array::scalar(training)));
                let sess = self.session()?;
                if training {
                    // Dropout keyed by (step, micro-shard), not by rank.
                    sess.set_run_count(d.base_runs + d.steps * d.shards as u64 + s as u64);
                }
                let out = sess.run(&fetch, &feeds);
                feeds.pop();
                bufs.extend(feeds.into_iter().map(|(_, a)| a));
                let out = out?;
                let part = hi - lo;
                for (k, a) in kinds.iter().zip(&out) {
                    let v = a.to_f64_vec();
                    if v.len() < k.1 {
                        return Err(Error::Internal(format!(
                            "a logged value of {} numbers, {} expected",
                            v.len(),
                            k.1
                        )));
                    }
                    match k.2 {
                        Some(_) => logs[j][k.0..k.0 + k.1].copy_from_slice(&v[..k.1]),
                        None => logs[j][k.0] = v.first().copied().unwrap_or(f64::NAN) * part as f64,
                    }
                }
                if training {
                    let share = (part as f64 / rows as f64) as f32;
                    let gs = &out[1 + ids.metrics.len()..];
                    for ((at, len, _), a) in d.layout.iter().zip(gs) {
                        let src = a.as_slice::<f32>()?;
                        if src.len() != *len {
                            return Err(Error::Internal(format!(
                                "a gradient of {} numbers for a variable of {len}",
                                src.len()
                            )));
                        }
                        for (o, x) in grads[j][*at..*at + *len].iter_mut().zip(src) {
                            *o = x * share;
                        }
                    }
                }
            }
            let mut batch = vec![0f64; width];
            let parts: Vec<&[f64]> = logs.iter().map(|l| l.as_slice()).collect();
            dist::all_reduce_f64(&parts, &mut batch)?;
            if training {
                self.dist_apply(d, &grads)?;
            }
            let vals: Vec<f64> = kinds.iter().map(|k| value(&batch, rows, k)).collect();
            if bad.is_none() && !vals[0].is_finite() {
                bad = Some(BadBatch {
                    step,
                    first_row: idx[0],
                    rows,
                    loss: vals[0],
                });
            }
            sums.iter_mut().zip(&batch).for_each(|(s, b)| *s += b);
            seen += rows;
            step += 1;
            let Some(h) = hooks.as_mut() else { continue };
            if h.progress.shows_steps() {
                let running: Vec<(&str, f64)> = names
                    .iter()
                    .zip(&kinds)
                    .map(|(n, k)| (n.as_str(), value(&sums, seen, k)))
                    .collect();
                h.progress.step(step - 1, &running);
            }
            if !h.callbacks.is_empty() {
                let logs: Logs = names.iter().cloned().zip(vals).collect();
                for cb in h.callbacks.iter_mut() {
                    if cb.on_batch_end(h.epoch, step - 1, &logs, self)? == Control::Stop {
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
            .zip(&kinds)
            .map(|(n, k)| (n, value(&sums, seen, k)))
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

    /// Reduces this rank's micro-shard gradients (flat, scaled) bucket by bucket in global
    /// order and applies their sum with the model's optimizer.
    fn dist_apply(&mut self, d: &mut DistRun, grads: &[Vec<f32>]) -> Result<()> {
        let mut total = vec![0f32; d.params];
        for b in &d.buckets {
            let parts: Vec<&[f32]> = grads.iter().map(|gr| &gr[b.clone()]).collect();
            dist::all_reduce_f32(&parts, &mut total[b.clone()])?;
        }
        let g = self.graph().clone();
        let mut feeds = Vec::with_capacity(d.layout.len());
        for ((at, len, shape), &id) in d.layout.iter().zip(&d.ids.fed) {
            feeds.push((
                g.tensor(id),
                Array::new(shape.clone(), total[*at..*at + *len].to_vec())?,
            ));
        }
        d.steps += 1;
        let sess = self.session()?;
        sess.set_run_count(d.base_runs + d.steps * d.shards as u64 - 1);
        sess.run(&[g.tensor(d.ids.train)], &feeds)?;
        Ok(())
    }

    /// At an epoch's end: Ok if every rank has the same logs and stop decision.
    pub(super) fn dist_agree(epoch: usize, logs: &Logs, stop: bool) -> Result<()> {
        let words = logs
            .iter()
            .flat_map(|(k, v)| [hash(k.bytes().map(u64::from)), v.to_bits()])
            .chain([epoch as u64, u64::from(stop)]);
        agree(
            hash(words),
            &format!(
                "the logs or the decision to stop at the end of epoch {}: a callback decided \
                 from something other than the reduced logs",
                epoch + 1
            ),
        )
    }
}

/// The trainable variables' ids.
fn built_trainable(m: &Model) -> Result<Vec<NodeId>> {
    Ok(m.built()?.trainable.clone())
}
