//! The losses and metrics added for Keras parity (Huber, hinge, mean absolute error, top-k
//! accuracy), and the open door: a loss or metric of your own, written with graph ops.
//!
//! Each is a function of predictions `p` and targets `y` written once with graph ops, as
//! the older ones in `losses.rs` are; [`Loss`](super::Loss) and [`Metric`](super::Metric)
//! dispatch to them. A metric here is a *batch mean*, which `fit` weights by the rows of the
//! batch, so the epoch value is the exact mean over the epoch's examples: right for
//! accuracies and mean errors. Precision, recall, F1 and AUC are not means of per-example
//! values but ratios of counts over the whole epoch: their graph gives each batch's counts
//! (true and false positives at each threshold, positives, negatives), `fit` sums them
//! over the batches, and [`result`] divides on the host.

use super::losses::Metric;
use crate::array::Array;
use crate::dtype::DType;
use crate::graph::Tensor;
use crate::shape::{Dim, Shape};

/// A loss or metric of your own: a name (for logs and `History`) and a function of the
/// predictions and targets built with graph ops, returning a scalar (the batch mean).
///
/// It is a plain `fn` (a closure that captures nothing coerces to one), so `Loss` and
/// `Metric` stay `Copy`; two are equal when their names are.
///
/// ```
/// use kiln::prelude::*;
/// use kiln::nn::*;
///
/// // Mean absolute error on the log scale, as a loss; the largest error, as a metric.
/// let msle = Loss::custom("log_mae", |p, y| {
///     ((p.abs() + 1.0).log() - (y.abs() + 1.0).log()).abs().mean_all()
/// });
/// let worst = Metric::custom("max_error", |p, y| (p - y).abs().max(&[0, 1], false));
/// let mut model = Sequential::new([Input::new([3]).into(), Dense::new(1).into()]);
/// model.compile(Sgd::new(0.1), msle, &[worst, Metric::MeanAbsoluteError])?;
/// let x = Array::new([2, 3], vec![1.0f32, 0.0, 2.0, 0.5, 1.0, 0.0])?;
/// let y = Array::new([2, 1], vec![1.0f32, 2.0])?;
/// let logs = model.evaluate(&x, &y, 2)?;
/// assert!(logs["max_error"] >= logs["mean_absolute_error"]);
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Custom {
    pub(super) name: &'static str,
    pub(super) f: for<'g> fn(Tensor<'g>, Tensor<'g>) -> Tensor<'g>,
}

impl std::fmt::Debug for Custom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Custom({:?})", self.name)
    }
}

impl PartialEq for Custom {
    fn eq(&self, other: &Custom) -> bool {
        self.name == other.name
    }
}

impl Eq for Custom {}

impl Custom {
    /// The scalar it computes for `p` and `y`.
    #[track_caller]
    pub(super) fn build<'g>(&self, p: Tensor<'g>, y: Tensor<'g>) -> Tensor<'g> {
        let v = (self.f)(p, y);
        if v.rank() == 0 {
            return v.cast(DType::F32);
        }
        p.graph().fail(
            self.name,
            format!(
                "a custom loss or metric must return a scalar (the batch mean), this one \
                 returned {}; end it with mean_all()",
                v.desc()
            ),
        )
    }
}

/// Keras' `huber`: per element `½e²` where `|e| <= δ`, else `δ·|e| − ½δ²` (with
/// `e = p − y`), averaged.
pub(super) fn huber<'g>(p: Tensor<'g>, y: Tensor<'g>, delta: f64) -> Tensor<'g> {
    let e = p - y;
    let a = e.abs();
    let quadratic = e.square() * 0.5;
    let linear = a * delta - 0.5 * delta * delta;
    a.less_equal(delta).select(quadratic, linear).mean_all()
}

/// Keras' `hinge`: `mean(max(1 − y·p, 0))`, with `{0, 1}` targets first mapped to
/// `{−1, 1}` when every target of the batch is 0 or 1 (Keras' rule, decided per batch).
pub(super) fn hinge<'g>(p: Tensor<'g>, y: Tensor<'g>) -> Tensor<'g> {
    // y·(y − 1) is 0 exactly for 0 and 1; summed over the batch, 0 iff all are binary.
    let binary = (y * (y - 1.0)).abs().sum_all().equal(0.0);
    let signed = binary.select(y * 2.0 - 1.0, y);
    (-(signed * p) + 1.0).maximum(0.0).mean_all()
}

/// Whether the target class (the index `class`, `i32` per row) is among the `k` largest
/// predictions of its row: fewer than `k` classes score strictly higher (TensorFlow's
/// `in_top_k`, which counts ties at the boundary as in), as `f32` 0/1 per row.
pub(super) fn in_top_k<'g>(p: Tensor<'g>, class: Tensor<'g>, k: usize) -> Tensor<'g> {
    let depth = p.shape().dims().last().and_then(|d| d.fixed()).unwrap_or(1);
    let target = (p * class.one_hot(depth).cast(p.dtype())).sum(&[-1], true);
    let above = p.greater(target).cast(DType::F32).sum(&[-1], false);
    above.less(k as f32).cast(DType::F32)
}

/// Keras' `AUC` thresholds: `-ε`, `i/199` for `i` in `1..=198`, `1 + ε` (ε = 1e-7).
pub(super) fn auc_thresholds() -> Vec<f32> {
    let n = 200;
    let mut t = vec![-1e-7f32];
    t.extend((1..n - 1).map(|i| (i as f64 / (n - 1) as f64) as f32));
    t.push(1.0 + 1e-7);
    t
}

/// The batch's counts for thresholds `t` (`n` of them), as an `f32` vector of `2n + 2`:
/// true positives at each threshold, false positives at each, positives, negatives. A
/// prediction is positive above a threshold (after a sigmoid when the model gives logits),
/// a target when it is not 0 (Keras casts targets to `bool`).
pub(super) fn binary_counts<'g>(
    p: Tensor<'g>,
    y: Tensor<'g>,
    t: &[f32],
    logits: bool,
) -> Tensor<'g> {
    counts(p, y, t, logits, None)
}

/// [`binary_counts`] with each example counted `w` times (`w`: `[batch]` `f32`), for
/// `weighted_metrics`.
pub(super) fn binary_counts_weighted<'g>(
    p: Tensor<'g>,
    y: Tensor<'g>,
    t: &[f32],
    logits: bool,
    w: Tensor<'g>,
) -> Tensor<'g> {
    counts(p, y, t, logits, Some(w))
}

fn counts<'g>(
    p: Tensor<'g>,
    y: Tensor<'g>,
    t: &[f32],
    logits: bool,
    w: Option<Tensor<'g>>,
) -> Tensor<'g> {
    let g = p.graph();
    let p = if logits { p.sigmoid() } else { p };
    let p = p.cast(DType::F32);
    // A trailing axis of 1 beside the thresholds' axis: [?, ..., 1] against [n].
    let mut dims: Vec<Dim> = p.shape().dims().to_vec();
    dims.push(Dim::Fixed(1));
    let pe = p.reshape(Shape(dims.into_iter().collect()));
    let truth = y.not_equal(0.0).cast(DType::F32);
    let te = truth.reshape(pe.shape());
    let thr =
        g.constant(Array::new([t.len()], t.to_vec()).unwrap_or_else(|_| Array::scalar(0.5f32)));
    let above = pe.greater(thr).cast(DType::F32);
    let axes: Vec<isize> = (0..p.rank() as isize).collect();
    let (te, fe, truth, untruth) = match w {
        None => (te, -te + 1.0, truth, -truth + 1.0),
        Some(w) => {
            let we = broadcast_rows(w, pe.rank());
            let wt = broadcast_rows(w, truth.rank());
            (te * we, (-te + 1.0) * we, truth * wt, (-truth + 1.0) * wt)
        }
    };
    let tp = (above * te).sum(&axes, false);
    let fp = (above * fe).sum(&axes, false);
    let pos = truth.sum_all().reshape([1]);
    let neg = untruth.sum_all().reshape([1]);
    g.concat(&[tp, fp, pos, neg], 0)
}

/// `w` (`[batch]`) reshaped to broadcast against a tensor of rank `rank` whose first axis
/// is the batch: `[batch, 1, ..., 1]`.
pub(super) fn broadcast_rows<'g>(w: Tensor<'g>, rank: usize) -> Tensor<'g> {
    if rank <= 1 {
        return w;
    }
    let mut dims = vec![Dim::Batch];
    dims.extend(std::iter::repeat_n(Dim::Fixed(1), rank - 1));
    w.reshape(Shape(dims.into_iter().collect()))
}

/// `a / b`, or 0 when `b` is 0 (Keras' `divide_no_nan`).
fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

/// A metric's value from its summed counts (see [`binary_counts`]); the first number for a
/// batch-mean metric.
pub(super) fn result(m: &Metric, s: &[f64]) -> f64 {
    let n = s.len().saturating_sub(2) / 2;
    let at = |i: usize| s.get(i).copied().unwrap_or(f64::NAN);
    let (pos, neg) = (at(2 * n), at(2 * n + 1));
    match m {
        Metric::Precision => ratio(at(0), at(0) + at(n)),
        Metric::Recall => ratio(at(0), pos),
        Metric::F1Score => ratio(2.0 * at(0), at(0) + at(n) + pos),
        Metric::Auc => {
            // ROC points (false-positive rate, recall) per threshold, summed as trapezoids.
            let x: Vec<f64> = (0..n).map(|i| ratio(at(n + i), neg)).collect();
            let y: Vec<f64> = (0..n).map(|i| ratio(at(i), pos)).collect();
            (0..n.saturating_sub(1))
                .map(|i| (x[i] - x[i + 1]) * (y[i] + y[i + 1]) / 2.0)
                .sum()
        }
        _ => at(0),
    }
}
