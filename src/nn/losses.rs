//! Losses and metrics, as Keras defines them, built from graph ops.

use crate::dtype::DType;
use crate::graph::Tensor;
use crate::shape::{Dim, Shape};

/// Keras clips probabilities to `[ε, 1-ε]` before taking logs; so do we.
const EPS: f64 = 1e-7;

/// A loss: the mean over the batch of a per-example loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// `mean((y_pred - y)²)`.
    MeanSquaredError,
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

    fn on_logits(&self) -> bool {
        match self {
            Loss::MeanSquaredError => false,
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
}

impl Metric {
    /// The name in logs and `History` (validation adds `val_`).
    pub fn name(&self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::BinaryAccuracy => "binary_accuracy",
            Metric::CategoricalAccuracy => "categorical_accuracy",
            Metric::SparseCategoricalAccuracy => "sparse_categorical_accuracy",
        }
    }

    /// The batch mean of the metric for predictions `p`, targets `y`, under `loss`.
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
