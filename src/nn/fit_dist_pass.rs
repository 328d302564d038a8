//! One pass of a distributed `fit` (the design is `fit_dist`'s module doc): each global
//! batch, from arrays or a dataset, cut into micro-shards; each micro-shard's run (loss,
//! metrics, weighted metrics, gradients, new values of the layers' state); the ordered
//! reductions; the optimizer's step.

use super::fit_dist::{agree, hash, DistRun};
use super::fit_pass::{log_plan, BadBatch, BatchInfo, Batches, Combine, Hooks, Pass, StepIds};
use super::model::Model;
use crate::array::{Array, ArrayData};
use crate::data::take_rows_into;
use crate::dist;
use crate::error::{Error, Result};
use crate::graph::{NodeId, Tensor};

/// Where a logged value sits in a micro-shard's vector of sums, and how it adds up.
struct Slot {
    at: usize,
    len: usize,
    how: Combine,
}

/// What every micro-shard of a pass runs: the logged values' places, and whether it trains.
struct Plan {
    ids: StepIds,
    slots: Vec<Slot>,
    training: bool,
}

/// One micro-shard of a batch: global index `s`, rows `lo..hi` of the batch's `rows`.
struct Shard {
    s: usize,
    lo: usize,
    hi: usize,
    rows: usize,
}

/// A hash of an array's dtype, shape and elements (word by word: a batch of MNIST is
/// 100,000 numbers, hashed each step of a dataset pass).
fn content_hash(a: &Array) -> u64 {
    fn fold<T: Copy>(h: u64, v: &[T], f: impl Fn(T) -> u64) -> u64 {
        v.iter()
            .fold(h, |h, &x| (h ^ f(x)).wrapping_mul(0x0000_0100_0000_01b3))
    }
    let h = hash(
        [a.dtype() as u64]
            .into_iter()
            .chain(a.shape().iter().map(|&d| d as u64)),
    );
    match a.data() {
        ArrayData::F32(v) => fold(h, v, |x| u64::from(x.to_bits())),
        ArrayData::F64(v) => fold(h, v, f64::to_bits),
        ArrayData::I32(v) => fold(h, v, |x| x as u32 as u64),
        ArrayData::I64(v) => fold(h, v, |x| x as u64),
        ArrayData::Bool(v) => fold(h, v, u64::from),
        ArrayData::I8(v) => fold(h, v, |x| x as u8 as u64),
        ArrayData::U8(v) => fold(h, v, u64::from),
        ArrayData::F16(v) => fold(h, v, |x| u64::from(x.to_bits())),
        ArrayData::BF16(v) => fold(h, v, |x| u64::from(x.to_bits())),
    }
}

/// Ok if every rank read the same batch `step` of a dataset (or all reached its end, or all
/// failed to read it). A rank whose read failed goes on to report its own error.
fn agree_batch(step: usize, next: &Option<Result<BatchInfo>>, bufs: &[Array]) -> Result<()> {
    let word = match next {
        None => 1,
        Some(Err(_)) => 2,
        Some(Ok(info)) => hash(
            [info.rows as u64]
                .into_iter()
                .chain(bufs.iter().map(content_hash)),
        ),
    };
    let what = format!(
        "batch {} of the dataset (its rows, or its end): every rank must read the same \
         batches in the same order (the same dataset and shuffle seed, nothing that depends \
         on the rank)",
        step + 1
    );
    match (agree(word, &what), next) {
        (Err(_), Some(Err(_))) | (Ok(()), _) => Ok(()),
        (Err(e), _) => Err(e),
    }
}

impl Model {
    /// One pass of a distributed `fit` over `src`'s batches (training when there are
    /// hooks); `each_batch` compares every batch across the ranks first (for a dataset,
    /// whose items the ranks read each on their own).
    pub(super) fn dist_pass(
        &mut self,
        d: &mut DistRun,
        src: &mut dyn Batches,
        each_batch: bool,
        mut hooks: Option<Hooks<'_>>,
    ) -> Result<Pass> {
        let training = hooks.is_some();
        let ids = self.ids()?;
        let g = self.graph().clone();
        let (names, hows) = log_plan(&ids);
        let nodes: Vec<NodeId> = ids.metrics.iter().map(|m| m.1).collect();
        let weighted_nodes = ids.weighted_metrics.iter().map(|m| m.1);
        // Each logged value's place in the per-micro-shard vector: a mean (× rows) takes one
        // number, a counting or weighted metric its vector.
        let mut slots = vec![];
        let mut width = 0;
        for (how, id) in hows
            .iter()
            .zip([ids.loss].into_iter().chain(nodes).chain(weighted_nodes))
        {
            let len = match how {
                Combine::Mean => 1,
                _ => g.tensor(id).shape().numel().unwrap_or(1),
            };
            slots.push(Slot {
                at: width,
                len,
                how: *how,
            });
            width += len;
        }
        let plan = Plan {
            ids,
            slots,
            training,
        };
        let (mut bufs, mut part) = (vec![], vec![]);
        let mut sums = vec![0f64; width];
        let (mut seen, mut step, mut stop, mut bad) = (0usize, 0usize, false, None);
        let mut flat = vec![vec![0f32; if training { d.params } else { 0 }]; d.local];
        loop {
            let next = src.next_into(self, &mut bufs);
            if each_batch {
                agree_batch(step, &next, &bufs)?;
            }
            let Some(info) = next else { break };
            let info = info?;
            if let Some(h) = hooks.as_mut() {
                self.batch_begin(h, step)?;
            }
            let rows = info.rows;
            let mut logs = vec![vec![0f64; width]; d.local];
            for (j, (log, grads)) in logs.iter_mut().zip(flat.iter_mut()).enumerate() {
                let s = d.rank * d.local + j;
                let cut = |s: usize| {
                    s.checked_mul(rows)
                        .map(|x| x / d.shards)
                        .ok_or_else(|| Error::invalid("fit (distributed): a batch too large"))
                };
                let shard = Shard {
                    s,
                    lo: cut(s)?,
                    hi: cut(s + 1)?,
                    rows,
                };
                if shard.hi == shard.lo {
                    grads.iter_mut().for_each(|x| *x = 0.0);
                    continue;
                }
                let out = self.micro_shard(d, &plan, &shard, &bufs, &mut part)?;
                gather(d, &plan, &shard, &out, log, grads)?;
            }
            let mut batch = vec![0f64; width];
            let parts: Vec<&[f64]> = logs.iter().map(|l| l.as_slice()).collect();
            dist::all_reduce_f64(&parts, &mut batch)?;
            if training {
                self.dist_apply(d, &flat)?;
            }
            let value =
                |sums: &[f64], rows: usize, k: &Slot| k.how.value(&sums[k.at..k.at + k.len], rows);
            let vals: Vec<f64> = plan.slots.iter().map(|k| value(&batch, rows, k)).collect();
            if bad.is_none() && !vals[0].is_finite() {
                bad = Some(BadBatch {
                    step,
                    first_row: info.first_row,
                    rows,
                    loss: vals[0],
                });
            }
            sums.iter_mut().zip(&batch).for_each(|(s, b)| *s += b);
            seen += rows;
            step += 1;
            let Some(h) = hooks.as_mut() else { continue };
            let running = || plan.slots.iter().map(|k| value(&sums, seen, k)).collect();
            if self.batch_end(h, step - 1, &names, vals, running)? {
                stop = true;
                break;
            }
        }
        let logs = names
            .into_iter()
            .zip(&plan.slots)
            .map(|(n, k)| (n, k.how.value(&sums[k.at..k.at + k.len], seen)))
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

    /// Runs micro-shard `sh` of the batch in `bufs` (inputs, target, and weights if it has
    /// them; `part` holds the micro-shard's rows): its loss, metrics and weighted metrics,
    /// and when training its gradients and the new values of the layers' state.
    fn micro_shard(
        &mut self,
        d: &mut DistRun,
        plan: &Plan,
        sh: &Shard,
        bufs: &[Array],
        part: &mut Vec<Array>,
    ) -> Result<Vec<Array>> {
        let ids = &plan.ids;
        let n_in = ids.inputs.len();
        let weighted = bufs.len() == n_in + 2;
        if weighted && d.ids.weighted.is_none() {
            self.dist_weighted(d)?;
        }
        let g = self.graph().clone();
        let idx: Vec<usize> = (sh.lo..sh.hi).collect();
        part.resize_with(bufs.len(), || Array::scalar(0f32));
        for (a, buf) in bufs.iter().zip(part.iter_mut()) {
            take_rows_into(a, &idx, buf)?;
        }
        let (loss, grads) = match (&d.ids.weighted, weighted) {
            (Some((_, lw, gw)), true) => (*lw, gw),
            _ => (ids.loss, &d.ids.grads),
        };
        let mut place: Vec<NodeId> = ids.inputs.clone();
        place.push(ids.target);
        if let (Some((w, _, _)), true) = (&d.ids.weighted, weighted) {
            place.push(*w);
        }
        // The weighted metrics' weights: the micro-shard's, or ones.
        let metric_w = match ids.metric_weight {
            None => None,
            Some(id) => Some((
                g.tensor(id),
                match part.get(n_in + 1) {
                    Some(w) if weighted => w.clone(),
                    _ => Array::new([idx.len()], vec![1f32; idx.len()])?,
                },
            )),
        };
        let mut feeds: Vec<(Tensor<'_>, Array)> = place
            .iter()
            .map(|&id| g.tensor(id))
            .zip(part.drain(..))
            .collect();
        let own = feeds.len();
        feeds.push((g.tensor(ids.training), Array::scalar(plan.training)));
        feeds.extend(metric_w);
        let mut fetch = vec![g.tensor(loss)];
        fetch.extend(ids.metrics.iter().map(|m| g.tensor(m.1)));
        fetch.extend(ids.weighted_metrics.iter().map(|m| g.tensor(m.1)));
        if plan.training {
            fetch.extend(grads.iter().map(|&id| g.tensor(id)));
            fetch.extend(d.ids.updates.iter().map(|&(_, v)| g.tensor(v)));
        }
        let sess = self.session()?;
        if plan.training {
            // Dropout keyed by (step, micro-shard), not by rank.
            sess.set_run_count(d.base_runs + d.steps * d.shards as u64 + sh.s as u64);
        }
        let out = sess.run(&fetch, &feeds);
        feeds.truncate(own);
        part.extend(feeds.into_iter().map(|(_, a)| a));
        out
    }

    /// Reduces this rank's micro-shard gradients and state values (flat, scaled) bucket by
    /// bucket in global order, applies the gradients' sum with the model's optimizer and
    /// gives each updated state variable its sum.
    pub(super) fn dist_apply(&mut self, d: &mut DistRun, flat: &[Vec<f32>]) -> Result<()> {
        let mut total = vec![0f32; d.params];
        for b in &d.buckets {
            let parts: Vec<&[f32]> = flat.iter().map(|gr| &gr[b.clone()]).collect();
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
        for ((at, len, shape), &(var, _)) in d.state.iter().zip(&d.ids.updates) {
            let value = Array::new(shape.clone(), total[*at..*at + *len].to_vec())?;
            sess.set_variable(g.tensor(var), value)?;
        }
        Ok(())
    }

    /// The weighted loss and its gradients, built when a distributed `fit` meets its first
    /// weighted batch (every rank meets it at the same batch).
    fn dist_weighted(&mut self, d: &mut DistRun) -> Result<()> {
        let (w, lw, _) = self.weighted_ids()?;
        let built = self.built()?.clone();
        let g = self.graph().clone();
        let vars: Vec<Tensor<'_>> = built.trainable.iter().map(|&i| g.tensor(i)).collect();
        let grads = crate::autodiff::gradients(&[g.tensor(lw)], &vars, None)?;
        g.check()?;
        let weighted = Some((w, lw, grads.iter().map(|t| t.id()).collect()));
        d.ids.weighted.clone_from(&weighted);
        if let Some(c) = self.compiled.as_mut().and_then(|c| c.dist.as_mut()) {
            c.weighted = weighted;
        }
        Ok(())
    }
}

/// A micro-shard's outputs `out` into this rank's vectors: its logged sums into `log`, and
/// when training its gradients and new state values, scaled by its share of the batch's rows,
/// into `flat`.
fn gather(
    d: &DistRun,
    plan: &Plan,
    sh: &Shard,
    out: &[Array],
    log: &mut [f64],
    flat: &mut [f32],
) -> Result<()> {
    let rows = sh.hi - sh.lo;
    for (k, a) in plan.slots.iter().zip(out) {
        let v = a.to_f64_vec();
        if v.len() < k.len {
            return Err(Error::Internal(format!(
                "a logged value of {} numbers, {} expected",
                v.len(),
                k.len
            )));
        }
        match k.how {
            Combine::Mean => log[k.at] = v.first().copied().unwrap_or(f64::NAN) * rows as f64,
            _ => log[k.at..k.at + k.len].copy_from_slice(&v[..k.len]),
        }
    }
    if plan.training {
        let share = (rows as f64 / sh.rows as f64) as f32;
        let rest = out.get(plan.slots.len()..).unwrap_or_default();
        if rest.len() != d.layout.len() + d.state.len() {
            return Err(Error::Internal(format!(
                "{} gradients and state values fetched, {} expected",
                rest.len(),
                d.layout.len() + d.state.len()
            )));
        }
        let places = d.layout.iter().chain(&d.state);
        for ((at, len, _), a) in places.zip(rest) {
            let src = a.as_slice::<f32>()?;
            if src.len() != *len {
                return Err(Error::Internal(format!(
                    "a gradient or state of {} numbers for a variable of {len}",
                    src.len()
                )));
            }
            for (o, x) in flat[*at..*at + *len].iter_mut().zip(src) {
                *o = x * share;
            }
        }
    }
    Ok(())
}
