//! Keras' `weighted_metrics`: metrics that the sample weights (`FitConfig::sample_weight`,
//! `class_weight`, a dataset's `(x, y, w)` items, `evaluate_weighted`) apply to.
//!
//! Keras 3 semantics:
//! - A mean metric (accuracy, top-k, MAE, MSE) is `sum(w_i · m_i) / sum(w_i)` over the
//!   epoch: a weighted mean of each example's value (Keras' `Mean` with `sample_weight`),
//!   not the loss's `sum(w · loss) / N`. A batch or epoch whose weights are all 0 gives 0
//!   (Keras' `divide_no_nan`). MAE and MSE take each example's mean over its last axes
//!   first, as Keras' per-sample metric functions do.
//! - Precision, recall, F1 and AUC count each example `w` times: weighted true and false
//!   positives, positives and negatives.
//! - Without weights a weighted metric weighs every example 1, and equals its unweighted
//!   form (up to the order of the additions).
//! - Logged under the metric's name, or `weighted_<name>` when an unweighted metric of that
//!   name is compiled too (Keras' rule for a name given in both lists).
//!
//! The graph: one `[batch]` weight placeholder shared by the weighted metrics, fed with the
//! batch's weights (or ones), and per metric a small vector that adds up over batches (a
//! weighted sum and the sum of weights, or the weighted counts), the way `fit` already
//! adds up the counts of precision and AUC.

use super::losses::{Loss, Metric};
use super::metrics::binary_counts_weighted;
use super::model::Model;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::Tensor;

/// The mean over every axis but the first: `[batch, ...]` to `[batch]`.
fn per_row<'g>(t: Tensor<'g>) -> Tensor<'g> {
    let axes: Vec<isize> = (1..t.rank() as isize).collect();
    if axes.is_empty() {
        t
    } else {
        t.mean(&axes, false)
    }
}

/// Each example's value of a mean metric, `[batch]` `f32`; `None` for a metric that counts
/// or a custom one.
fn per_example<'g>(m: &Metric, loss: &Loss, p: Tensor<'g>, y: Tensor<'g>) -> Option<Tensor<'g>> {
    let form = match m {
        Metric::Accuracy => match loss {
            Loss::SparseCategoricalCrossentropy { .. } => Metric::SparseCategoricalAccuracy,
            Loss::CategoricalCrossentropy { .. } => Metric::CategoricalAccuracy,
            _ => Metric::BinaryAccuracy,
        },
        m => *m,
    };
    let hits = match form {
        Metric::TopKCategoricalAccuracy { k } => {
            return Some(super::metrics::in_top_k(p, y.argmax(-1), k))
        }
        Metric::SparseTopKCategoricalAccuracy { k } => {
            let class = y.class_indices().unwrap_or(y);
            return Some(super::metrics::in_top_k(p, class, k));
        }
        Metric::MeanAbsoluteError => return Some(per_row((p - y).abs()).cast(DType::F32)),
        Metric::MeanSquaredError => return Some(per_row((p - y).square()).cast(DType::F32)),
        Metric::Custom(_) | Metric::Precision | Metric::Recall | Metric::F1Score | Metric::Auc => {
            return None
        }
        Metric::SparseCategoricalAccuracy => p.argmax(-1).equal(y.class_indices().unwrap_or(y)),
        Metric::CategoricalAccuracy => p.argmax(-1).equal(y.argmax(-1)),
        Metric::Accuracy | Metric::BinaryAccuracy => {
            let t = if loss.on_logits() { 0.0 } else { 0.5 };
            // [batch, 1] binary targets: one value per example.
            per_row(p.greater(t).equal(y.greater(0.5)).cast(DType::F32))
        }
    };
    Some(hits.cast(DType::F32))
}

/// The batch's vector for weighted metric `m` with weights `w` (`[batch]` `f32`): the
/// weighted counts for a metric that counts, else `[sum(w · m_i), sum(w)]`.
fn build<'g>(
    m: &Metric,
    loss: &Loss,
    p: Tensor<'g>,
    y: Tensor<'g>,
    w: Tensor<'g>,
) -> Result<Tensor<'g>> {
    let g = p.graph();
    match m {
        Metric::Precision | Metric::Recall | Metric::F1Score => {
            return Ok(binary_counts_weighted(p, y, &[0.5], loss.on_logits(), w))
        }
        Metric::Auc => {
            let t = super::metrics::auc_thresholds();
            return Ok(binary_counts_weighted(p, y, &t, loss.on_logits(), w));
        }
        _ => {}
    }
    let Some(v) = per_example(m, loss, p, y) else {
        return Err(Error::invalid(format!(
            "weighted_metrics: the custom metric {:?} gives the batch mean, and a weighted \
             metric needs each example's value; weight it in the metric itself",
            m.name()
        )));
    };
    let num = (v * w).sum_all().reshape([1]);
    let den = w.sum_all().reshape([1]);
    Ok(g.concat(&[num, den], 0))
}

impl Model {
    /// Metrics weighted by the sample weights, as Keras' `compile(weighted_metrics=...)`:
    /// call it after [`compile`](Model::compile) (which forgets them, as a recompile in
    /// Keras does). Each is logged as its name, or `weighted_<name>` if the compiled
    /// metrics have that name too; a mean metric becomes `sum(w · m) / sum(w)`, precision,
    /// recall, F1 and AUC count each example `w` times, and without weights each example
    /// weighs 1. `Metric::custom` cannot be weighted (it gives a batch mean). Not saved by
    /// [`Model::save`]: call it again after [`load_model`](super::load_model).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::nn::*;
    /// let mut m = Sequential::new([Input::new([1]).into(), Dense::new(1).into()]);
    /// m.compile(Sgd::new(0.1), Loss::MeanSquaredError, &[Metric::MeanAbsoluteError])?;
    /// m.weighted_metrics(&[Metric::MeanAbsoluteError])?;
    /// m.set_weights(&[("dense/kernel".into(), Array::new([1, 1], vec![0f32])?),
    ///     ("dense/bias".into(), Array::new([1], vec![0f32])?)])?;
    /// let x = Array::new([3, 1], vec![0f32; 3])?;
    /// let y = Array::new([3, 1], vec![1f32, 2., 6.])?; // absolute errors 1, 2, 6
    /// let w = Array::new([3], vec![3f32, 1., 0.])?;
    /// let logs = m.evaluate_weighted(&x, &y, &w, 3)?;
    /// assert_eq!(logs["mean_absolute_error"], 3.0); // (1 + 2 + 6) / 3
    /// assert_eq!(logs["weighted_mean_absolute_error"], 1.25); // (3·1 + 1·2) / (3 + 1)
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn weighted_metrics(&mut self, metrics: &[Metric]) -> Result<()> {
        let c = self.compiled.as_ref().ok_or_else(|| {
            Error::invalid("weighted_metrics: the model is not compiled yet (call compile first)")
        })?;
        let loss = self
            .loss
            .ok_or_else(|| Error::Internal("a compiled model without its loss".into()))?;
        let taken: Vec<String> = c.metrics.iter().map(|m| m.0.clone()).collect();
        let target = c.target;
        let built = self.built()?.clone();
        let g = self.graph().clone();
        let p = g.tensor(built.outputs[0]);
        let y = g.tensor(target);
        let name = if g.by_name("metric_weight").is_none() {
            "metric_weight".to_string()
        } else {
            g.scoped_name(&format!("metric_weight_{}", g.len()))
        };
        let w = g.placeholder(&name, DType::F32, [None]);
        let mut out = vec![];
        for m in metrics {
            let base = m.name();
            let log = if taken.iter().any(|t| t == base) {
                format!("weighted_{base}")
            } else {
                base.to_string()
            };
            if out.iter().any(|(n, _, _)| *n == log) {
                return Err(Error::invalid(format!(
                    "weighted_metrics: {log:?} is given twice"
                )));
            }
            out.push((log, build(m, &loss, p, y, w)?.id(), *m));
        }
        g.check()?;
        let c = self
            .compiled
            .as_mut()
            .ok_or_else(|| Error::Internal("compiled state vanished".into()))?;
        c.weighted_metrics = out;
        c.metric_weight = Some(w.id());
        Ok(())
    }
}
