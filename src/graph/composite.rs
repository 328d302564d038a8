//! Composite ops, each defined once from primitives.
//!
//! Nothing here needs its own gradient, interpreter or lowering rule: autodiff, passes and the
//! JIT see only the primitives these expand to. The numerically delicate ones subtract the
//! maximum first (`log_softmax`, the cross-entropies), and the maximum goes through
//! `stop_gradient`: the result does not depend on the shift mathematically, so its gradient
//! through the max is exactly zero, and leaving it out keeps gradient graphs small.

use super::builder::Tensor;
use crate::array::Array;
use crate::dtype::DType;
use crate::shape::{normalize_axes, Dim};

impl<'g> Tensor<'g> {
    /// `max(0, x)`.
    ///
    /// Written with the zero first: `maximum` sends the gradient of a tie to its first
    /// operand, so `relu'(0) = 0` as in TF and JAX, and the gradient mask is `y != 0`, read
    /// from the output. The backward pass then never needs the pre-activation, which lets
    /// the fuser fold matmul, bias and activation into one kernel.
    #[track_caller]
    pub fn relu(self) -> Tensor<'g> {
        let zero = self.graph().scalar_of(self.dtype(), 0.0);
        zero.maximum(self)
    }

    /// GELU, the Gaussian error linear unit `x·Φ(x)` (`keras.activations.gelu`).
    ///
    /// With `approximate = false`, the exact form Keras uses by default:
    /// `0.5·x·(1 + erf(x/√2))`. With `approximate = true`, the tanh form
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`. Both are built from primitives (`erf`,
    /// `tanh`, arithmetic), so their gradients, interpretation and fused kernel come for free.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// let g = Graph::new();
    /// let x = g.placeholder("x", DType::F64, [2]);
    /// let (exact, tanh) = (x.gelu(false), x.gelu(true));
    /// let mut interp = Interpreter::new(&g)?;
    /// let out = interp.run(&[exact, tanh], &[(x, Array::new([2], vec![1.0f64, -1.0])?)])?;
    /// let (e, t) = (out[0].to_vec::<f64>()?, out[1].to_vec::<f64>()?);
    /// assert!((e[0] - 0.8413447460685429).abs() < 1e-15); // Φ(1)
    /// assert!((t[0] - 0.8411919906082768).abs() < 1e-15);
    /// assert!((e[1] + 0.15865525393145707).abs() < 1e-15);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    #[track_caller]
    pub fn gelu(self, approximate: bool) -> Tensor<'g> {
        let inner = if approximate {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            (self + self * self * self * 0.044715) * c
        } else {
            self / std::f64::consts::SQRT_2
        };
        let s = if approximate {
            inner.tanh()
        } else {
            inner.erf()
        };
        self * 0.5 * (s + 1.0)
    }

    /// Dropout (`tf.nn.dropout` with a training switch): while `training` (a `bool` scalar,
    /// usually a placeholder) is true, each element is kept with probability `1 - rate` and
    /// scaled by `1 / (1 - rate)`, so the mean is preserved; otherwise the input passes
    /// through unchanged. One graph thus serves training and inference with no recompile.
    ///
    /// The mask comes from a counter-based random op with this `seed`: every run draws a
    /// fresh mask, the same on every backend, and a fixed seed makes training reproducible.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// let g = Graph::new();
    /// let x = g.placeholder("x", DType::F32, [None, Some(4)]);
    /// let training = g.placeholder("training", DType::Bool, Shape::scalar());
    /// let y = x.dropout(0.5, training, 7);
    /// let mut sess = Session::new(&g)?;
    /// let xv = Array::new([1, 4], vec![1.0f32; 4])?;
    /// let off = sess.run(&[y], &[(x, xv.clone()), (training, Array::scalar(false))])?;
    /// assert_eq!(off[0], xv);
    /// let on = sess.run(&[y], &[(x, xv), (training, Array::scalar(true))])?;
    /// assert!(on[0].to_vec::<f32>()?.iter().all(|&v| v == 0.0 || v == 2.0));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    #[track_caller]
    pub fn dropout(self, rate: f64, training: Tensor<'g>, seed: u64) -> Tensor<'g> {
        let g = self.graph();
        if !(0.0..1.0).contains(&rate) {
            return g.fail(
                "dropout",
                format!("rate must be in [0, 1), got {rate} for {}", self.desc()),
            );
        }
        if training.dtype() != DType::Bool || training.rank() != 0 {
            return g.fail(
                "dropout",
                format!("training must be a bool scalar, got {}", training.desc()),
            );
        }
        if rate == 0.0 {
            return self;
        }
        let u = g.random_uniform(self.shape(), 0.0, 1.0, seed);
        let keep = u.greater_equal(g.scalar_of(DType::F32, rate));
        let zero = g.scalar_of(self.dtype(), 0.0);
        let kept = keep.select(self * (1.0 / (1.0 - rate)), zero);
        training.select(kept, self)
    }

    /// `x * x`.
    #[track_caller]
    pub fn square(self) -> Tensor<'g> {
        self * self
    }

    /// Mean over `axes`: `sum / size`, where the size may involve the open batch dimension.
    #[track_caller]
    pub fn mean(self, axes: &[isize], keepdims: bool) -> Tensor<'g> {
        self.sum(axes, keepdims) / self.size(axes)
    }

    /// Mean of all elements, as a scalar.
    #[track_caller]
    pub fn mean_all(self) -> Tensor<'g> {
        let axes: Vec<isize> = (0..self.rank() as isize).collect();
        self.mean(&axes, false)
    }

    /// Minimum over `axes`, as `-max(-x)`.
    #[track_caller]
    pub fn min(self, axes: &[isize], keepdims: bool) -> Tensor<'g> {
        -((-self).max(axes, keepdims))
    }

    /// `log(sum(exp(x)))` over `axis`, stable: `m + log(sum(exp(x - m)))` with `m` the max.
    #[track_caller]
    pub fn logsumexp(self, axis: isize, keepdims: bool) -> Tensor<'g> {
        let m = self.max(&[axis], true).stop_gradient();
        let s = (self - m).exp().sum(&[axis], true).log() + m;
        if keepdims {
            s
        } else {
            let shape = self.shape();
            let mut dims = shape.0.clone();
            if let Ok(a) = normalize_axes(&[axis], shape.rank()) {
                dims.remove(a[0]);
            }
            s.reshape(crate::shape::Shape(dims))
        }
    }

    /// `x - logsumexp(x)` over `axis`: the stable log-softmax.
    #[track_caller]
    pub fn log_softmax(self, axis: isize) -> Tensor<'g> {
        let m = self.max(&[axis], true).stop_gradient();
        let z = self - m;
        z - z.exp().sum(&[axis], true).log()
    }

    /// `exp(x - max) / sum(exp(x - max))` over `axis`.
    #[track_caller]
    pub fn softmax(self, axis: isize) -> Tensor<'g> {
        let m = self.max(&[axis], true).stop_gradient();
        let e = (self - m).exp();
        e / e.sum(&[axis], true)
    }

    /// The index of the first maximum along `axis`, as `i32`. The axis must have a known size.
    #[track_caller]
    pub fn argmax(self, axis: isize) -> Tensor<'g> {
        let shape = self.shape();
        let a = match normalize_axes(&[axis], shape.rank()) {
            Ok(a) => a[0],
            Err(m) => {
                return self
                    .graph()
                    .fail("argmax", format!("{m} of {}", self.desc()))
            }
        };
        let n = match shape.dims()[a] {
            Dim::Fixed(n) => n,
            Dim::Batch => {
                return self.graph().fail(
                    "argmax",
                    format!("cannot take argmax along the open axis of {}", self.desc()),
                )
            }
        };
        let g = self.graph();
        // iota along axis a, shaped [n, 1, ..., 1] so that it broadcasts.
        let mut iota_shape = vec![1usize; shape.rank() - a];
        iota_shape[0] = n;
        let iota = (0..n).map(|i| i as f64).collect();
        let iota = g.constant(Array::from_f64(self.dtype(), iota_shape, iota));
        let is_max = self.equal(self.max(&[axis], true));
        let big = g.scalar_of(self.dtype(), n as f64);
        let first = is_max.select(iota, big).min(&[axis], false);
        first.cast(DType::I32)
    }

    /// Integer class labels as `i32`: `i32` ones as they are; `i64` ones (PyTorch's default)
    /// through `f64`, so that a label outside `i32` saturates (stays out of range, which the
    /// checked loss marks) instead of wrapping into range. `None` for other dtypes.
    #[track_caller]
    pub(crate) fn class_indices(self) -> Option<Tensor<'g>> {
        match self.dtype() {
            DType::I32 => Some(self),
            DType::I64 => Some(self.cast(DType::F64).cast(DType::I32)),
            _ => None,
        }
    }

    /// One-hot encoding of integer labels: `[..] -> f32[.., depth]`.
    #[track_caller]
    pub fn one_hot(self, depth: usize) -> Tensor<'g> {
        let g = self.graph();
        let shape = self.shape();
        let mut dims = shape.0.clone();
        dims.push(Dim::Fixed(1));
        let labels = self.reshape(crate::shape::Shape(dims));
        let iota = (0..depth).map(|i| i as f64).collect();
        let iota = g.constant(Array::from_f64(self.dtype(), vec![depth], iota));
        labels.equal(iota).cast(DType::F32)
    }

    /// Flattens all axes after the first: `[?,28,28] -> [?,784]`.
    #[track_caller]
    pub fn flatten(self) -> Tensor<'g> {
        let shape = self.shape();
        if shape.rank() == 0 {
            return self.reshape([1]);
        }
        let rest: usize = shape.dims()[1..]
            .iter()
            .map(|d| d.fixed().unwrap_or(0))
            .product();
        self.reshape(crate::shape::Shape::from(vec![
            shape.dims()[0],
            Dim::Fixed(rest),
        ]))
    }

    /// Softmax cross-entropy with dense (probability) labels over the last axis:
    /// `-sum(labels * log_softmax(logits), -1)`, one value per row.
    #[track_caller]
    pub fn softmax_cross_entropy_with_logits(self, labels: Tensor<'g>) -> Tensor<'g> {
        -(labels * self.log_softmax(-1)).sum(&[-1], false)
    }

    /// Softmax cross-entropy with integer class labels (`labels[i]` indexes the last axis),
    /// one value per row.
    ///
    /// `labels` must be `i32`: float labels are a build error naming this op, both types and
    /// your line (a fractional label would otherwise match no class and count as zero loss).
    ///
    /// **Out-of-range labels are not checked here**: a label outside `0..classes` (7 with
    /// 3 classes, or -1) matches no class, so its one-hot row is all zeros: that row's loss
    /// is exactly 0 and it sends no gradient to the logits, so it trains nothing and looks
    /// perfect. The graph cannot check values at build time, and a graph op cannot return
    /// an error in the middle of a run. [`Model::fit`](crate::nn::Model::fit) and
    /// [`Model::evaluate`](crate::nn::Model::evaluate) check every label before training
    /// and report the first bad one; a hand-written loop should check its labels once the
    /// same way, or use
    /// [`sparse_softmax_cross_entropy_with_logits_checked`](Self::sparse_softmax_cross_entropy_with_logits_checked),
    /// which makes such a row's loss NaN.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// let g = Graph::new();
    /// let logits = g.placeholder("logits", DType::F32, [None, Some(3)]);
    /// let labels = g.placeholder("labels", DType::F32, [None]);
    /// let _ = logits.sparse_softmax_cross_entropy_with_logits(labels);
    /// let err = g.check().unwrap_err().to_string();
    /// assert!(err.contains("labels must be i32 class indices (or i64 ones)"), "{err}");
    /// ```
    #[track_caller]
    pub fn sparse_softmax_cross_entropy_with_logits(self, labels: Tensor<'g>) -> Tensor<'g> {
        let Some(labels) = labels.class_indices() else {
            return self.graph().fail(
                "sparse_softmax_cross_entropy_with_logits",
                format!(
                    "labels must be i32 class indices (or i64 ones), got {} (logits {}); for one-hot \
                     or probability labels use softmax_cross_entropy_with_logits",
                    labels.desc(),
                    self.desc()
                ),
            );
        };
        let depth = self
            .shape()
            .dims()
            .last()
            .and_then(|d| d.fixed())
            .unwrap_or(0);
        -(labels.one_hot(depth).cast(self.dtype()) * self.log_softmax(-1)).sum(&[-1], false)
    }

    /// [`sparse_softmax_cross_entropy_with_logits`](Self::sparse_softmax_cross_entropy_with_logits)
    /// whose loss is **NaN for every row whose label is outside `0..classes`** (negative, or
    /// the class count or more), and the same value bit for bit for every other row.
    ///
    /// A run cannot stop with an error halfway, so the check marks the row instead of
    /// dropping it: the NaN reaches the mean, so `fit`'s `TerminateOnNaN`, `evaluate`, or a
    /// hand-written loop's `is_finite` test on the loss catches the bad label at the first
    /// batch holding one, where the unchecked form would train on with a zero loss for it.
    /// (Clamping the label into range instead would be silent, and an error is impossible
    /// mid-run.) The NaN is chosen by a `where`, so it sends no gradient: the other rows'
    /// gradients stay finite. The check costs two comparisons and two selects per row.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// let g = Graph::new();
    /// let logits = g.placeholder("logits", DType::F32, [None, Some(3)]);
    /// let labels = g.placeholder("labels", DType::I32, [None]);
    /// let loss = logits.sparse_softmax_cross_entropy_with_logits_checked(labels);
    /// let mut sess = Session::new(&g)?;
    /// let l = Array::new([3, 3], vec![0.5f32; 9])?;
    /// let y = Array::new([3], vec![0i32, 7, -1])?;
    /// let out = sess.run(&[loss], &[(logits, l), (labels, y)])?[0].to_vec::<f32>()?;
    /// assert!(out[0].is_finite() && out[1].is_nan() && out[2].is_nan());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    #[track_caller]
    pub fn sparse_softmax_cross_entropy_with_logits_checked(
        self,
        labels: Tensor<'g>,
    ) -> Tensor<'g> {
        let loss = self.sparse_softmax_cross_entropy_with_logits(labels);
        let Some(labels) = labels.class_indices() else {
            return loss; // already recorded as a build error
        };
        let depth = self
            .shape()
            .dims()
            .last()
            .and_then(|d| d.fixed())
            .unwrap_or(0);
        let depth = i32::try_from(depth).unwrap_or(i32::MAX);
        let below = labels.less(depth).select(loss, f64::NAN);
        labels.greater_equal(0i32).select(below, f64::NAN)
    }

    /// Sigmoid cross-entropy with logits, elementwise, in the stable form
    /// `max(x, 0) - x * z + log(1 + exp(-|x|))`.
    ///
    /// `-|x|` is written `min(x, -x)` rather than with `abs`: at `x = 0` ties go to the
    /// first operand, so `relu` (`max(0, x)`) and `min(x, -x)` take opposite sides and the
    /// kinks cancel into the true derivative `sigmoid(x) - z`. With `abs`, whose subgradient
    /// at 0 is 0, the gradient at exactly 0 would be off by one half.
    #[track_caller]
    pub fn sigmoid_cross_entropy_with_logits(self, labels: Tensor<'g>) -> Tensor<'g> {
        let neg_abs = self.minimum(-self);
        self.relu() - self * labels + (neg_abs.exp() + 1.0).log()
    }
}
