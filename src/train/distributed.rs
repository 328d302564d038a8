//! `Distributed`: an optimizer wrapper whose train op reduces the gradients across
//! processes before the wrapped optimizer applies them, as Horovod's `DistributedOptimizer`
//! does, with kiln's fixed reduction order (see [`crate::dist`]).
//!
//! - **Micro-shards.** Each rank computes the gradients of `k` micro-shards of the global
//!   batch (one loss each, [`Distributed::minimize_shards`]; `minimize` is `k = 1`). The
//!   world has `S = k × world_size` micro-shards, and the update is the mean of their
//!   gradient sums in global micro-shard order. Since every micro-shard's gradient comes
//!   from the same kernels at the same shapes wherever it is computed, and the sum order
//!   depends only on `S`, one process with `k = S` (the reference mode) and `S/N` per rank
//!   on N ranks train to the same bits.
//! - **Buckets.** Gradients are flattened and concatenated into buckets of at most
//!   [`Distributed::bucket_bytes`] (25 MB, PyTorch DDP's default), filled from the last
//!   variable backwards (the first gradients the backward pass finishes), one `all_reduce`
//!   node per bucket: one exchange per bucket, not per tensor.
//! - **One graph on every rank.** The graph depends on `k`, never on the rank, so
//!   [`crate::dist::check_same_graph`] can compare ranks at start-up; call
//!   [`crate::dist::start`] after making the session (it also broadcasts rank 0's
//!   variables).

use super::{Config, Optimizer, Step};
use crate::autodiff::gradients;
use crate::error::{Error, Result};
use crate::graph::Tensor;

/// See the module docs: `Distributed::new(Adam::new(1e-3))`.
pub struct Distributed<O: Optimizer> {
    inner: O,
    bucket_bytes: usize,
}

impl<O: Optimizer> Distributed<O> {
    /// Wraps `inner`; gradients are averaged over every micro-shard of every rank.
    pub fn new(inner: O) -> Distributed<O> {
        Distributed {
            inner,
            bucket_bytes: 25 << 20,
        }
    }

    /// The largest bucket, in bytes (at least one gradient goes in each bucket, however
    /// large). Smaller buckets mean more exchanges; kiln's steps block, so they buy no
    /// overlap yet.
    pub fn bucket_bytes(mut self, bytes: usize) -> Distributed<O> {
        self.bucket_bytes = bytes.max(1);
        self
    }

    /// The wrapped optimizer.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The train op for this rank's micro-shard losses (`losses[j]` is the mean loss of
    /// micro-shard `j` of this rank, built on the same variables): each loss's gradients,
    /// reduced across ranks in global order and divided by the number of micro-shards in
    /// the world, then the wrapped optimizer's update.
    #[track_caller]
    pub fn minimize_shards<'g>(
        &mut self,
        losses: &[Tensor<'g>],
        var_list: &[Tensor<'g>],
    ) -> Result<Tensor<'g>> {
        self.inner.validate()?;
        if losses.is_empty() || var_list.is_empty() {
            return Err(Error::invalid(
                "Distributed::minimize_shards: needs one loss per micro-shard and variables",
            ));
        }
        let mut per_shard = vec![];
        for &loss in losses {
            per_shard.push(gradients(&[loss], var_list, None)?);
        }
        let reduced = self.reduce(&per_shard)?;
        let gv: Vec<_> = reduced.into_iter().zip(var_list.iter().copied()).collect();
        self.inner.apply_gradients(&gv)
    }

    /// The mean over the world's micro-shards of `per_shard[j][v]` (this rank's gradient of
    /// variable `v` on micro-shard `j`), one `all_reduce` per bucket.
    #[track_caller]
    pub fn reduce<'g>(&self, per_shard: &[Vec<Tensor<'g>>]) -> Result<Vec<Tensor<'g>>> {
        let Some(first) = per_shard.first() else {
            return Err(Error::invalid("Distributed::reduce: no micro-shards"));
        };
        let Some(g) = first.first().map(|t| t.graph()) else {
            return Err(Error::invalid("Distributed::reduce: no gradients"));
        };
        if per_shard.iter().any(|s| s.len() != first.len()) {
            return Err(Error::invalid(
                "Distributed::reduce: every micro-shard needs one gradient per variable",
            ));
        }
        let total = per_shard.len() * crate::dist::world_size();
        let scale = 1.0 / total as f64;
        let mut out: Vec<Option<Tensor<'g>>> = vec![None; first.len()];
        for bucket in buckets(first, self.bucket_bytes) {
            let flat = |s: &Vec<Tensor<'g>>| {
                let parts: Vec<Tensor<'g>> = bucket
                    .iter()
                    .map(|&v| s[v].reshape([numel(s[v])]))
                    .collect();
                g.concat(&parts, 0)
            };
            let parts: Vec<Tensor<'g>> = per_shard.iter().map(flat).collect();
            let sum = g.all_reduce(&parts);
            let mut at = 0;
            for &v in &bucket {
                let n = numel(first[v]);
                let piece = sum.slice(&[at], [n]).reshape(first[v].shape());
                out[v] = Some(piece * scale);
                at += n;
            }
        }
        g.check()?;
        out.into_iter()
            .map(|t| t.ok_or_else(|| Error::Internal("a gradient in no bucket".into())))
            .collect()
    }
}

/// The element count of a gradient (a variable's, so concrete).
fn numel(t: Tensor<'_>) -> usize {
    t.shape().numel().unwrap_or(0)
}

/// Variable indices in buckets: from the last variable backwards, a new bucket when the
/// next would pass `cap` bytes or changes dtype.
fn buckets(grads: &[Tensor<'_>], cap: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = vec![];
    let mut bytes = 0;
    for v in (0..grads.len()).rev() {
        let b = numel(grads[v]) * grads[v].dtype().size_bytes();
        let same_dtype = out
            .last()
            .and_then(|k| k.first())
            .is_some_and(|&u| grads[u].dtype() == grads[v].dtype());
        match out.last_mut() {
            Some(k) if same_dtype && bytes + b <= cap => {
                k.push(v);
                bytes += b;
            }
            _ => {
                out.push(vec![v]);
                bytes = b;
            }
        }
    }
    out
}

impl<O: Optimizer> Optimizer for Distributed<O> {
    fn config(&self) -> &Config {
        self.inner.config()
    }
    fn config_mut(&mut self) -> &mut Config {
        self.inner.config_mut()
    }
    fn update<'g>(
        &self,
        step: &Step<'g>,
        var: Tensor<'g>,
        grad: Tensor<'g>,
        assigns: &mut Vec<Tensor<'g>>,
    ) -> Tensor<'g> {
        self.inner.update(step, var, grad, assigns)
    }
    fn validate(&self) -> Result<()> {
        self.inner.validate()
    }

    /// One micro-shard per rank: [`Distributed::minimize_shards`] with `[loss]`.
    #[track_caller]
    fn minimize<'g>(&mut self, loss: Tensor<'g>, var_list: &[Tensor<'g>]) -> Result<Tensor<'g>> {
        self.minimize_shards(&[loss], var_list)
    }

    /// Reduces the gradients (one micro-shard per rank), then the wrapped optimizer's
    /// `apply_gradients`.
    #[track_caller]
    fn apply_gradients<'g>(
        &mut self,
        grads_and_vars: &[(Tensor<'g>, Tensor<'g>)],
    ) -> Result<Tensor<'g>> {
        self.inner.validate()?;
        let grads: Vec<Tensor<'g>> = grads_and_vars.iter().map(|p| p.0).collect();
        let reduced = self.reduce(&[grads])?;
        let gv: Vec<_> = reduced
            .into_iter()
            .zip(grads_and_vars.iter().map(|p| p.1))
            .collect();
        self.inner.apply_gradients(&gv)
    }
}
