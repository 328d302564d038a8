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
//!   settings (micro-shards, batch size, epochs, shuffling, `steps_per_epoch`, row counts or
//!   dataset lengths, whether there are weights), then every rank takes
//!   rank 0's variables and run counter ([`crate::dist::broadcast_variables`]).
//! - **Dropout** is keyed per micro-shard: micro-shard `s` of the fit's step `t` runs with the
//!   session's run counter at `base + t·S + s`, so its random stream does not depend on which
//!   rank computes it (random ops draw from `(seed, run, element)`).
//! - **Sample and class weights** (Keras' `sum(w · loss) / batch rows`): micro-shard `s` runs
//!   the weighted loss over its rows, `sum_s(w · loss) / rows_s`, whose gradient scaled by
//!   `rows_s / R` is `sum_s(w · loss) / R`; summed over the micro-shards it is the global
//!   batch's weighted loss, divided by the global batch's rows as in one process (the
//!   normalization is by rows, never by a micro-shard's or a rank's own weight sum).
//! - **Weighted metrics** are sums already (`[sum(w · m), sum(w)]` or weighted counts per
//!   micro-shard): reduced with the logs, divided once, over the epoch, as in one process.
//! - **State updates** (`BatchNormalization`'s moving statistics, any `Ctx::add_update` that
//!   is an `f32` assign): each micro-shard normalizes by its own batch statistics (no
//!   cross-micro-shard statistics in the forward pass) and computes the assign's new value
//!   from them, `moving · m + stat_s · (1 − m)`; the variable takes the sum of these new
//!   values scaled by `rows_s / R`, in micro-shard order (with the gradients, in the same
//!   buckets). That is Keras' `MirroredStrategy` (per-replica statistics, the replicas'
//!   updates averaged), weighted by rows; not `SyncBatchNormalization`: the moving variance
//!   moves toward the row-weighted mean of the micro-shards' variances, not the global
//!   batch's. With one micro-shard it is the plain `fit`'s update, up to f32 rounding.
//! - **Datasets** (`fit_dataset`, `validation_dataset`, `steps_per_epoch`, an endless
//!   dataset): every rank walks the whole dataset in the same order (epoch `e` iterates
//!   `iter_epoch(e)`, so a `shuffle(buffer, seed)` stage gives every rank the same order) and
//!   runs its micro-shards of each batch, cut as above. Before each batch, and at the end,
//!   the ranks compare a hash of its rows (inputs, targets, weights), so a dataset that
//!   differs by rank (a generator with per-process state, a seed from the rank) is an error
//!   naming the batch, not a silent mix or a hang.
//!
//! Refused, with an error naming what to do instead: a state update that is not an `f32`
//! assign of a variable (its new values could not be combined), and what one process
//! refuses too (a custom loss with sample weights).

use super::batch::{rows_of, Logs};
use super::fit::Data;
use super::fit_config::FitConfig;
use super::model::{DistIds, Model};
use crate::dist;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::op::Op;
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
    /// Everything `fit` and [`Model::fit_dataset`] take works distributed: sample and class
    /// weights (the loss divided by the global batch's rows, as in one process),
    /// [`Model::weighted_metrics`], datasets with `steps_per_epoch` (every rank reads the
    /// same batches, compared batch by batch), and `BatchNormalization`, whose micro-shards
    /// normalize by their own statistics and whose moving statistics take the micro-shards'
    /// updates weighted by their rows (Keras' `MirroredStrategy`, not
    /// `SyncBatchNormalization`: see the `nn/fit_dist.rs` module doc).
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
    pub(super) shards: usize,
    pub(super) rank: usize,
    /// Micro-shards per rank.
    pub(super) local: usize,
    pub(super) ids: DistIds,
    /// Each trainable variable's (offset, length, shape) in a flat buffer, laid out from the
    /// last variable backwards (the order the backward pass finishes them).
    pub(super) layout: Vec<(usize, usize, Vec<usize>)>,
    /// Each state update's (offset, length, shape) in the same buffer, after the gradients.
    pub(super) state: Vec<(usize, usize, Vec<usize>)>,
    /// Offset ranges of the buckets in the flat buffer.
    pub(super) buckets: Vec<std::ops::Range<usize>>,
    /// The flat buffer's length: the gradients', then the state updates'.
    pub(super) params: usize,
    /// The run counter when the fit started (rank 0's).
    pub(super) base_runs: u64,
    /// Training steps run by this fit.
    pub(super) steps: u64,
}

/// A 64-bit FNV-1a hash of `words`.
pub(super) fn hash(words: impl IntoIterator<Item = u64>) -> u64 {
    words.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, w| {
        w.to_le_bytes().iter().fold(h, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    })
}

/// Ok if every rank gives the same `value`, else an error naming the ranks that differ.
pub(super) fn agree(value: u64, what: &str) -> Result<()> {
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

/// What the ranks compare about a fit's data before training: the rows of arrays (and
/// whether they are weighted), or a dataset's length if known (its batches are compared one
/// by one as they come).
fn data_words(data: &Data<'_>) -> Result<[u64; 2]> {
    Ok(match data {
        Data::Rows { xs, y, w } => [rows_of(xs, Some(y))? as u64, u64::from(w.is_some())],
        Data::Stream {
            ds, class_weight, ..
        } => [
            ds.len().map_or(u64::MAX - 1, |n| n as u64),
            2 + u64::from(class_weight.is_some()),
        ],
    })
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
        let updates = state_updates(&g, &built.updates)?;
        let ids = DistIds {
            grads: grads.iter().map(|t| t.id()).collect(),
            fed: fed.iter().map(|t| t.id()).collect(),
            train: train.id(),
            weighted: None,
            updates,
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
        let train_words = data_words(train)?;
        let val_words = val.map(data_words).transpose()?.unwrap_or([u64::MAX; 2]);
        let ids = self.dist_ids()?;
        let g = self.graph().clone();
        let mut layout = vec![];
        let mut buckets: Vec<std::ops::Range<usize>> = vec![];
        let mut at = 0usize;
        let mut place = |shape: Vec<usize>| -> Result<(usize, usize, Vec<usize>)> {
            let len = shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .ok_or_else(|| Error::invalid("fit (distributed): a variable too large"))?;
            match buckets.last_mut() {
                Some(b)
                    if (b.end - b.start).saturating_add(len).saturating_mul(4) <= BUCKET_BYTES =>
                {
                    b.end += len
                }
                _ => buckets.push(at..at.saturating_add(len)),
            }
            let here = (at, len, shape);
            at = at
                .checked_add(len)
                .ok_or_else(|| Error::invalid("fit (distributed): too many parameters"))?;
            Ok(here)
        };
        for &id in built_trainable(self)?.iter().rev() {
            layout.push(place(g.tensor(id).shape().to_fixed().unwrap_or_default())?);
        }
        layout.reverse(); // back to variable order: layout[v] is variable v's place
        let mut state = vec![];
        for &(var, _) in &ids.updates {
            state.push(place(g.tensor(var).shape().to_fixed().unwrap_or_default())?);
        }
        let settings = [
            shards as u64,
            config.batch_size as u64,
            config.epochs as u64,
            u64::from(config.shuffle),
            config.seed,
            config.steps_per_epoch.map_or(u64::MAX, |n| n as u64),
            train_words[0],
            train_words[1],
            val_words[0],
            val_words[1],
        ];
        agree(
            hash(settings),
            "the fit settings (micro-shards, batch size, epochs, shuffle and seed, \
             steps_per_epoch, training and validation rows or dataset lengths, weights): every \
             rank must call fit with the same",
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
            state,
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

/// Each state update of the layers as (variable, new value): an `f32` assign of a variable,
/// as `BatchNormalization`'s are, or an error naming the update.
fn state_updates(g: &crate::graph::Graph, updates: &[NodeId]) -> Result<Vec<(NodeId, NodeId)>> {
    let mut out = vec![];
    for &u in updates {
        let node = g.data().node(u).clone();
        match (&node.op, node.inputs.as_slice()) {
            (Op::Assign, &[var, value])
                if g.tensor(value).dtype() == DType::F32
                    && g.tensor(var).shape().to_fixed().is_some() =>
            {
                out.push((var, value))
            }
            _ => {
                return Err(Error::invalid(format!(
                    "fit: FitConfig::distributed combines the layers' state updates (Ctx::\
                     add_update) as the micro-shards' new values of an f32 variable, but the \
                     update {} is a {} of {}; make it an f32 `variable.assign(value)`, or \
                     train this model in one process",
                    node.label(),
                    node.op.name(),
                    g.tensor(u).dtype()
                )))
            }
        }
    }
    Ok(out)
}
