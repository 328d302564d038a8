//! Sample and class weights (Keras' `sample_weight` and `class_weight`): the weighted loss,
//! built on first use, and the host-side checks and conversions.
//!
//! Keras 3 semantics, followed exactly:
//! - The loss is `sum(w_i · loss_i) / N`, `N` the number of examples in the batch: the
//!   `"sum_over_batch_size"` reduction, which divides by the batch size, not by the sum of
//!   the weights (keras-team/keras#19740 discusses the difference). A weight of 0 drops an
//!   example from the sum but not from `N`. The layers' penalties (L1/L2) are added
//!   unweighted, as Keras adds `model.losses`.
//! - The epoch's `loss` is the mean of the batch losses weighted by their rows, as for an
//!   unweighted loss (Keras' loss tracker).
//! - The compiled metrics are not weighted: Keras 3 weights only
//!   `compile(weighted_metrics=...)`, which is kiln's [`Model::weighted_metrics`]
//!   (`nn/weighted_metrics.rs`).
//! - `class_weight` maps a class to a weight and becomes each example's weight: the label for
//!   sparse targets, `argmax` for one-hot rows, the rounded value for a `[n, 1]` binary
//!   target. A class missing from the map weighs 1, as in Keras. Both `sample_weight` and
//!   `class_weight` at once is an error, as in Keras.
//!
//! Why built on first use: the weighted loss needs a per-example loss, a placeholder and a
//! second gradient, and a model that never sees weights should compile and run exactly the
//! graph it always did (the same bits, the same compile time). The weighted train op applies
//! the model's own optimizer with its state shared (`train::Config::share_state`: the same
//! step count, learning rate and slots), so weighted and unweighted fits continue one
//! optimizer, as one Keras optimizer object does.

use super::losses::Loss;
use super::model::Model;
use crate::array::Array;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::{NodeId, Tensor};

/// Keras clips probabilities to `[ε, 1-ε]` before taking logs (as `losses.rs` does).
const EPS: f64 = 1e-7;

/// The mean over every axis but the first: `[batch, ...]` to `[batch]`.
fn per_row<'g>(t: Tensor<'g>) -> Tensor<'g> {
    let axes: Vec<isize> = (1..t.rank() as isize).collect();
    if axes.is_empty() {
        t
    } else {
        t.mean(&axes, false)
    }
}

/// The loss of each example, `[batch]`, whose mean over the batch is the loss (Keras'
/// per-sample losses: a mean over the last axis, cross-entropies summed over classes).
pub(crate) fn per_example<'g>(loss: Loss, p: Tensor<'g>, y: Tensor<'g>) -> Result<Tensor<'g>> {
    let g = p.graph();
    let clip = |t: Tensor<'g>| t.maximum(EPS).minimum(1.0 - EPS);
    Ok(match loss {
        Loss::MeanSquaredError => per_row((p - y).square()),
        Loss::MeanAbsoluteError => per_row((p - y).abs()),
        Loss::Huber { delta } => {
            let e = p - y;
            let a = e.abs();
            let quadratic = e.square() * 0.5;
            let linear = a * delta - 0.5 * delta * delta;
            per_row(a.less_equal(delta).select(quadratic, linear))
        }
        Loss::Hinge => {
            let binary = (y * (y - 1.0)).abs().sum_all().equal(0.0);
            let signed = binary.select(y * 2.0 - 1.0, y);
            per_row((-(signed * p) + 1.0).maximum(0.0))
        }
        Loss::BinaryCrossentropy { from_logits: true } => {
            per_row(p.sigmoid_cross_entropy_with_logits(y))
        }
        Loss::BinaryCrossentropy { from_logits: false } => {
            let q = clip(p);
            let one = g.scalar(1.0);
            per_row(-(y * q.log() + (one - y) * (one - q).log()))
        }
        Loss::CategoricalCrossentropy { from_logits: true } => {
            p.softmax_cross_entropy_with_logits(y)
        }
        Loss::CategoricalCrossentropy { from_logits: false } => {
            -(y * clip(p).log()).sum(&[-1], false)
        }
        Loss::SparseCategoricalCrossentropy { from_logits: true } => {
            p.sparse_softmax_cross_entropy_with_logits(y)
        }
        Loss::SparseCategoricalCrossentropy { from_logits: false } => {
            let depth = p.shape().dims().last().and_then(|d| d.fixed()).unwrap_or(1);
            let onehot = y.class_indices().unwrap_or(y).one_hot(depth);
            -(onehot * clip(p).log()).sum(&[-1], false)
        }
        Loss::Custom(c) => {
            return Err(Error::invalid(format!(
                "sample weights need each example's loss, and the custom loss {:?} gives the \
                 batch mean; weight it in the loss itself, or train unweighted",
                c.name
            )))
        }
    })
}

impl Model {
    /// The sample-weight placeholder, the weighted loss and the weighted train op, built
    /// the first time they are needed and kept in the compiled state.
    pub(super) fn weighted_ids(&mut self) -> Result<(NodeId, NodeId, NodeId)> {
        let compiled = self
            .compiled
            .as_ref()
            .ok_or_else(|| Error::invalid("the model is not compiled yet (call compile)"))?;
        if let Some(w) = compiled.weighted {
            return Ok(w);
        }
        let target = compiled.target;
        let loss = self
            .loss
            .ok_or_else(|| Error::Internal("a compiled model without its loss".into()))?;
        let built = self.built()?.clone();
        let g = self.graph().clone();
        let out = g.tensor(built.outputs[0]);
        let y = g.tensor(target);
        let name = if g.by_name("sample_weight").is_none() {
            "sample_weight".to_string()
        } else {
            g.scoped_name(&format!("sample_weight_{}", g.len()))
        };
        let per = per_example(loss, out, y)?;
        let w = g.placeholder(&name, DType::F32, [None]);
        // sum(w · loss) / N: Keras' "sum_over_batch_size".
        let mut lw = (per * w).mean_all();
        for &r in &built.losses {
            lw = lw + g.tensor(r);
        }
        g.check()?;
        let vars: Vec<Tensor<'_>> = built.trainable.iter().map(|&i| g.tensor(i)).collect();
        let grads = crate::autodiff::gradients(&[lw], &vars, None)?;
        let gv: Vec<(Tensor<'_>, Tensor<'_>)> = grads.into_iter().zip(vars).collect();
        let opt = self
            .optimizer
            .as_mut()
            .ok_or_else(|| Error::Internal("a compiled model without its optimizer".into()))?;
        opt.config_mut().share_state = true;
        let train = opt.apply_gradients(&gv);
        opt.config_mut().share_state = false;
        let mut train = train?;
        if !built.updates.is_empty() {
            let mut all = vec![train];
            all.extend(built.updates.iter().map(|&u| g.tensor(u)));
            train = g.group(&all);
        }
        let ids = (w.id(), lw.id(), train.id());
        if let Some(c) = self.compiled.as_mut() {
            c.weighted = Some(ids);
        }
        Ok(ids)
    }
}

/// `w` checked as sample weights for `rows` examples: `f32` (or `f64`, converted) of shape
/// `[rows]`, every weight finite and not negative; an error names the first bad one.
pub(crate) fn check_weights(what: &str, w: &Array, rows: usize) -> Result<Array> {
    let w = match w.dtype() {
        DType::F32 => w.clone(),
        DType::F64 => w.cast(DType::F32),
        other => {
            return Err(Error::invalid(format!(
                "{what}: sample weights must be f32 (or f64), got {other}"
            )))
        }
    };
    if w.shape() != [rows] {
        return Err(Error::invalid(format!(
            "{what}: sample weights have shape {:?}, but there are {rows} examples; give one \
             weight per example, shape [{rows}]",
            w.shape()
        )));
    }
    let v = w.as_slice::<f32>()?;
    if let Some((i, x)) = v
        .iter()
        .enumerate()
        .find(|(_, x)| !(x.is_finite() && **x >= 0.0))
    {
        return Err(Error::invalid(format!(
            "{what}: sample weight {i} is {x}; weights must be finite and not negative"
        )));
    }
    Ok(w)
}

/// Each example's class for `class_weight`, from targets `y` as Keras reads them: the
/// label of a sparse `[n]` target, `argmax` of a `[n, k]` row, the rounded value of a
/// `[n, 1]` one.
fn classes_of(y: &Array) -> Result<Vec<i64>> {
    match y.shape() {
        [_] => Ok(y.to_f64_vec().iter().map(|&v| v as i64).collect()),
        [_, 1] => Ok(y.to_f64_vec().iter().map(|&v| v.round() as i64).collect()),
        [_, k] => Ok(y
            .to_f64_vec()
            .chunks((*k).max(1))
            .map(|r| {
                let mut best = 0;
                for (j, v) in r.iter().enumerate() {
                    if *v > r[best] {
                        best = j;
                    }
                }
                best as i64
            })
            .collect()),
        s => Err(Error::invalid(format!(
            "class_weight: targets of shape {s:?} have no class per example (Keras takes \
             [n] labels, [n, 1] binary targets or [n, k] one-hot rows)"
        ))),
    }
}

/// Sample weights from `class_weight` for targets `y`: each example weighs its class's
/// weight, 1 for a class the map does not name.
pub(crate) fn class_weights(map: &[(usize, f64)], y: &Array) -> Result<Array> {
    let w: Vec<f32> = classes_of(y)?
        .into_iter()
        .map(|c| {
            map.iter()
                .find(|(k, _)| *k as i64 == c)
                .map_or(1.0, |(_, v)| *v as f32)
        })
        .collect();
    Array::new([w.len()], w)
}

/// `class_weight` checked against the model's `classes` (its output's last size, 2 for a
/// single binary output): every class named once, in range, its weight finite and not
/// negative.
pub(crate) fn check_class_weight(map: &[(usize, f64)], classes: usize) -> Result<()> {
    for (i, &(k, v)) in map.iter().enumerate() {
        if k >= classes {
            return Err(Error::invalid(format!(
                "fit: class_weight names class {k}, but the model has {classes} classes \
                 (0..{classes})"
            )));
        }
        if map[..i].iter().any(|(j, _)| *j == k) {
            return Err(Error::invalid(format!(
                "fit: class_weight names class {k} twice"
            )));
        }
        if !(v.is_finite() && v >= 0.0) {
            return Err(Error::invalid(format!(
                "fit: class_weight gives class {k} the weight {v}; weights must be finite and \
                 not negative"
            )));
        }
    }
    Ok(())
}
