//! The losses and metrics added for Keras parity (Huber, hinge, mean absolute error, top-k
//! accuracy), and the open door: a loss or metric of your own, written with graph ops.
//!
//! Each is a function of predictions `p` and targets `y` written once with graph ops, as
//! the older ones in `losses.rs` are; [`Loss`](super::Loss) and [`Metric`](super::Metric)
//! dispatch to them. A metric here is a *batch mean*, which `fit` weights by the rows of the
//! batch, so the epoch value is the exact mean over the epoch's examples: right for
//! accuracies and mean errors. Precision, recall, F1 and AUC are not means of per-example
//! values (they are ratios of counts over the whole epoch), so they need counts summed
//! across batches; see the module's note in ARCHITECTURE.md ("The Keras layer").

use crate::dtype::DType;
use crate::graph::Tensor;

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
