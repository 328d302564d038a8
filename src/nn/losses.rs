//! Losses and metrics, as Keras defines them, built from graph ops.

use super::metrics::{self, Custom};
use crate::dtype::DType;
use crate::graph::Tensor;
use crate::shape::{Dim, Shape};

/// Keras clips probabilities to `[ε, 1-ε]` before taking logs; so do we.
const EPS: f64 = 1e-7;

/// A loss: the mean over the batch of a per-example loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Loss {
    /// `mean((y_pred - y)²)`.
    MeanSquaredError,
    /// `mean(|y_pred - y|)`.
    MeanAbsoluteError,
    /// Keras' `Huber`: quadratic for errors up to `delta`, linear beyond.
    Huber {
        /// Where the quadratic part ends (finite, > 0; Keras' default is 1.0).
        delta: f64,
    },
    /// Keras' `Hinge`: `mean(max(1 − y·p, 0))` on `{−1, 1}` targets (`{0, 1}` targets are
    /// mapped to them, as Keras does).
    Hinge,
    /// A loss of your own, made with [`Loss::custom`].
    Custom(Custom),
    /// Binary cross-entropy on `{0,1}` targets shaped like the output.
    BinaryCrossentropy {
        /// The output is a logit (no sigmoid applied), which is more stable.
        from_logits: bool,
    },
    /// Cross-entropy on one-hot (or probability) targets shaped like the output.
    CategoricalCrossentropy {
        /// The output is logits (no softmax applied), which is more stable.
        from_logits: bool,
    },
    /// Cross-entropy on integer class targets (`i32[batch]`; `fit` and `evaluate` also take
    /// `i64` labels, PyTorch's default, and convert them).
    SparseCategoricalCrossentropy {
        /// The output is logits (no softmax applied), which is more stable.
        from_logits: bool,
    },
}

impl Loss {
    /// A loss of your own: `f(predictions, targets)` built with graph ops, returning the
    /// batch mean (a scalar). The targets are `f32`, shaped like the output. See
    /// [`Custom`](super::Custom) for an example.
    pub fn custom(name: &'static str, f: for<'g> fn(Tensor<'g>, Tensor<'g>) -> Tensor<'g>) -> Loss {
        Loss::Custom(Custom { name, f })
    }

    /// The placeholder type of the targets for an output of shape `out`.
    pub(crate) fn target(&self, out: &Shape) -> (DType, Shape) {
        match self {
            Loss::SparseCategoricalCrossentropy { .. } => {
                let mut dims = out.0.clone();
                dims.pop();
                (DType::I32, Shape(dims))
            }
            _ => (DType::F32, out.clone()),
        }
    }

    pub(super) fn on_logits(&self) -> bool {
        match self {
            Loss::MeanSquaredError
            | Loss::MeanAbsoluteError
            | Loss::Huber { .. }
            | Loss::Hinge
            | Loss::Custom(_) => false,
            Loss::BinaryCrossentropy { from_logits }
            | Loss::CategoricalCrossentropy { from_logits }
            | Loss::SparseCategoricalCrossentropy { from_logits } => *from_logits,
        }
    }

    /// The scalar loss of predictions `p` against targets `y`.
    #[track_caller]
    pub fn build<'g>(&self, p: Tensor<'g>, y: Tensor<'g>) -> Tensor<'g> {
        let g = p.graph();
        let clip = |t: Tensor<'g>| t.maximum(EPS).minimum(1.0 - EPS);
        match *self {
            Loss::MeanSquaredError => (p - y).square().mean_all(),
            Loss::MeanAbsoluteError => (p - y).abs().mean_all(),
            Loss::Huber { delta } if !(delta.is_finite() && delta > 0.0) => g.fail(
                "huber",
                format!("Loss::Huber's delta must be finite and > 0, got {delta:?}"),
            ),
            Loss::Huber { delta } => metrics::huber(p, y, delta),
            Loss::Hinge => metrics::hinge(p, y),
            Loss::Custom(c) => c.build(p, y),
            Loss::BinaryCrossentropy { from_logits: true } => {
                p.sigmoid_cross_entropy_with_logits(y).mean_all()
            }
            Loss::BinaryCrossentropy { from_logits: false } => {
                let q = clip(p);
                let one = g.scalar(1.0);
                (-(y * q.log() + (one - y) * (one - q).log())).mean_all()
            }
            Loss::CategoricalCrossentropy { from_logits: true } => {
                p.softmax_cross_entropy_with_logits(y).mean_all()
            }
            Loss::CategoricalCrossentropy { from_logits: false } => {
                (-(y * clip(p).log()).sum(&[-1], false)).mean_all()
            }
            Loss::SparseCategoricalCrossentropy { from_logits: true } => {
                p.sparse_softmax_cross_entropy_with_logits(y).mean_all()
            }
            Loss::SparseCategoricalCrossentropy { from_logits: false }
                if y.class_indices().is_none() =>
            {
                g.fail(
                    "sparse_categorical_crossentropy",
                    format!(
                        "labels must be i32 class indices (or i64 ones), got {} (predictions {}); for \
                         one-hot labels use Loss::CategoricalCrossentropy",
                        y.desc(),
                        p.desc()
                    ),
                )
            }
            Loss::SparseCategoricalCrossentropy { from_logits: false } => {
                let depth = last_dim(&p.shape());
                let onehot = y.class_indices().unwrap_or(y).one_hot(depth);
                (-(onehot * clip(p).log()).sum(&[-1], false)).mean_all()
            }
        }
    }
}

/// Sparse class labels `y` given as `i64` (PyTorch's default) converted to the `i32` of the
/// target placeholder, for `fit` and `evaluate`; any other `y` is returned as it is (the
/// target checks judge it). A label outside `i32` cannot be a class: an error names it
/// (casting would wrap it into range).
pub(crate) fn sparse_labels_i32<'a>(
    loss: Option<Loss>,
    what: &str,
    y: &'a crate::Array,
) -> crate::Result<std::borrow::Cow<'a, crate::Array>> {
    use std::borrow::Cow;
    let sparse = matches!(loss, Some(Loss::SparseCategoricalCrossentropy { .. }));
    let (true, crate::ArrayData::I64(v)) = (sparse, y.data()) else {
        return Ok(Cow::Borrowed(y));
    };
    if let Some((i, x)) = v
        .iter()
        .enumerate()
        .find(|(_, x)| i32::try_from(**x).is_err())
    {
        return Err(crate::Error::invalid(format!(
            "{what}[{i}] = {x} is not a class index (it does not even fit in i32)"
        )));
    }
    Ok(Cow::Owned(y.cast(DType::I32)))
}

fn last_dim(s: &Shape) -> usize {
    s.dims().last().and_then(|d| d.fixed()).unwrap_or(1)
}

/// A metric, averaged over the examples of an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Accuracy in the form that fits the loss (Keras' `"accuracy"`): sparse for sparse
    /// cross-entropy, categorical for categorical, binary for binary and MSE.
    Accuracy,
    /// `round(p) == y` for `{0,1}` targets (threshold 0.5, or 0 on logits).
    BinaryAccuracy,
    /// `argmax(p) == argmax(y)`.
    CategoricalAccuracy,
    /// `argmax(p) == y`.
    SparseCategoricalAccuracy,
    /// The target class (`argmax(y)`) is among the `k` highest predictions.
    TopKCategoricalAccuracy {
        /// How many of the highest predictions count (Keras' default is 5).
        k: usize,
    },
    /// The target class (an `i32` index) is among the `k` highest predictions.
    SparseTopKCategoricalAccuracy {
        /// How many of the highest predictions count (Keras' default is 5).
        k: usize,
    },
    /// `mean(|p − y|)`.
    MeanAbsoluteError,
    /// `mean((p − y)²)`.
    MeanSquaredError,
    /// A metric of your own, made with [`Metric::custom`].
    Custom(Custom),
    /// `tp / (tp + fp)` over the epoch, a prediction above 0.5 being positive (above 0 on
    /// logits) and a nonzero target positive (Keras' `Precision`).
    Precision,
    /// `tp / (tp + fn)` over the epoch (Keras' `Recall`).
    Recall,
    /// The harmonic mean of precision and recall over the epoch, `2tp / (2tp + fp + fn)`,
    /// binary at threshold 0.5.
    F1Score,
    /// The area under the ROC curve over the epoch, from counts at Keras' 200 thresholds
    /// with its trapezoid ("interpolation") sum (Keras' `AUC()`).
    Auc,
}

impl Metric {
    /// A metric of your own: `f(predictions, targets)` built with graph ops, returning the
    /// batch mean (a scalar), logged as `name`. See [`Custom`](super::Custom).
    pub fn custom(
        name: &'static str,
        f: for<'g> fn(Tensor<'g>, Tensor<'g>) -> Tensor<'g>,
    ) -> Metric {
        Metric::Custom(Custom { name, f })
    }

    /// The name in logs and `History` (validation adds `val_`).
    pub fn name(&self) -> &'static str {
        match self {
            Metric::TopKCategoricalAccuracy { .. } => "top_k_categorical_accuracy",
            Metric::SparseTopKCategoricalAccuracy { .. } => "sparse_top_k_categorical_accuracy",
            Metric::MeanAbsoluteError => "mean_absolute_error",
            Metric::MeanSquaredError => "mean_squared_error",
            Metric::Custom(c) => c.name,
            Metric::Precision => "precision",
            Metric::Recall => "recall",
            Metric::F1Score => "f1_score",
            Metric::Auc => "auc",
            Metric::Accuracy => "accuracy",
            Metric::BinaryAccuracy => "binary_accuracy",
            Metric::CategoricalAccuracy => "categorical_accuracy",
            Metric::SparseCategoricalAccuracy => "sparse_categorical_accuracy",
        }
    }

    /// Whether the metric is a ratio of counts over the epoch ([`Metric::Precision`],
    /// [`Metric::Recall`], [`Metric::F1Score`], [`Metric::Auc`]) rather than a batch mean:
    /// then [`build`](Self::build) gives the batch's counts, which add up over batches, and
    /// [`result`](Self::result) turns their sum into the value.
    pub fn counts(&self) -> bool {
        matches!(
            self,
            Metric::Precision | Metric::Recall | Metric::F1Score | Metric::Auc
        )
    }

    /// The value from the counts summed over batches (for a metric that
    /// [`counts`](Self::counts)); for a batch-mean metric, the first number given.
    pub fn result(&self, sums: &[f64]) -> f64 {
        metrics::result(self, sums)
    }

    /// The batch mean of the metric for predictions `p`, targets `y`, under `loss`; for a
    /// metric that [`counts`](Self::counts), the batch's counts (an `f32` vector).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::nn::{Loss, Metric};
    /// let g = Graph::new();
    /// let p = g.constant(Array::new([4, 1], vec![0.9f32, 0.8, 0.3, 0.6])?);
    /// let y = g.constant(Array::new([4, 1], vec![1.0f32, 0.0, 1.0, 1.0])?);
    /// let loss = Loss::BinaryCrossentropy { from_logits: false };
    /// let counts = Metric::Precision.build(&loss, p, y);
    /// let c = Session::new(&g)?.run(&[counts], &[])?[0].to_f64_vec();
    /// assert_eq!(Metric::Precision.result(&c), 2.0 / 3.0); // 0.9 and 0.6 right, 0.8 wrong
    /// assert_eq!(Metric::Recall.result(&c), 2.0 / 3.0); // 0.3 missed
    /// # Ok::<(), kiln::Error>(())
    /// ```
    #[track_caller]
    pub fn build<'g>(&self, loss: &Loss, p: Tensor<'g>, y: Tensor<'g>) -> Tensor<'g> {
        let form = match self {
            Metric::Accuracy => match loss {
                Loss::SparseCategoricalCrossentropy { .. } => Metric::SparseCategoricalAccuracy,
                Loss::CategoricalCrossentropy { .. } => Metric::CategoricalAccuracy,
                _ => Metric::BinaryAccuracy,
            },
            m => *m,
        };
        let hits = match form {
            Metric::TopKCategoricalAccuracy { k } => {
                return metrics::in_top_k(p, y.argmax(-1), k).mean_all()
            }
            Metric::SparseTopKCategoricalAccuracy { k } => {
                return metrics::in_top_k(p, y.class_indices().unwrap_or(y), k).mean_all()
            }
            Metric::MeanAbsoluteError => return (p - y).abs().mean_all(),
            Metric::MeanSquaredError => return (p - y).square().mean_all(),
            Metric::Custom(c) => return c.build(p, y),
            Metric::Precision | Metric::Recall | Metric::F1Score => {
                return metrics::binary_counts(p, y, &[0.5], loss.on_logits())
            }
            Metric::Auc => {
                return metrics::binary_counts(p, y, &metrics::auc_thresholds(), loss.on_logits())
            }
            Metric::SparseCategoricalAccuracy => p.argmax(-1).equal(y.class_indices().unwrap_or(y)),
            Metric::CategoricalAccuracy => p.argmax(-1).equal(y.argmax(-1)),
            _ => {
                let t = if loss.on_logits() { 0.0 } else { 0.5 };
                p.greater(t).equal(y.greater(0.5))
            }
        };
        hits.cast(DType::F32).mean_all()
    }
}

/// The shape `[?, rest...]`.
pub(crate) fn batch_shape(rest: &[usize]) -> Shape {
    let mut dims = vec![Dim::Batch];
    dims.extend(rest.iter().map(|&d| Dim::Fixed(d)));
    Shape(dims.into_iter().collect())
}
