//! Weight penalties added to the training loss, as Keras' `kernel_regularizer`.
//!
//! A regularizer is graph ops over a variable: the layer that owns the variable passes the
//! penalty to [`Ctx::add_loss`](super::Ctx::add_loss), and `compile` adds every such term to
//! the loss. So the loss that `fit` and `evaluate` report includes the penalties, as Keras'
//! does, and the gradients see them through the same autodiff as everything else.

use crate::error::Result;
use crate::graph::Tensor;
use crate::train::args::{float, ArgErrors};

/// `l1 · Σ|w| + l2 · Σw²` over a weight (Keras' `L1`, `L2` and `L1L2`; no ½ on the square,
/// as in Keras).
///
/// ```
/// use kiln::prelude::*;
/// use kiln::nn::*;
/// let mut model = Sequential::new([
///     Input::new([4]).into(),
///     Dense::new(8).relu().kernel_regularizer(Regularizer::l2(1e-4)).into(),
///     Dense::new(1).kernel_regularizer(Regularizer::l1_l2(1e-5, 1e-4)).into(),
/// ]);
/// model.compile(Adam::new(1e-3), Loss::MeanSquaredError, &[])?;
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Regularizer {
    l1: f64,
    l2: f64,
    args: ArgErrors,
}

impl Regularizer {
    /// `l1 · Σ|w|` (`l1` finite and >= 0; Keras' default is 0.01).
    #[track_caller]
    pub fn l1(l1: f64) -> Regularizer {
        Regularizer::make("Regularizer::l1", l1, 0.0)
    }
    /// `l2 · Σw²` (`l2` finite and >= 0; Keras' default is 0.01).
    #[track_caller]
    pub fn l2(l2: f64) -> Regularizer {
        Regularizer::make("Regularizer::l2", 0.0, l2)
    }
    /// `l1 · Σ|w| + l2 · Σw²` (both finite and >= 0).
    #[track_caller]
    pub fn l1_l2(l1: f64, l2: f64) -> Regularizer {
        Regularizer::make("Regularizer::l1_l2", l1, l2)
    }

    #[track_caller]
    fn make(f: &'static str, l1: f64, l2: f64) -> Regularizer {
        let mut args = ArgErrors::default();
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        args.check(ok(l1), f, "l1", "finite and >= 0", float(l1));
        args.check(ok(l2), f, "l2", "finite and >= 0", float(l2));
        Regularizer { l1, l2, args }
    }

    /// `Ok`, or the arguments given out of their domain, with the line.
    pub(crate) fn validate(&self) -> Result<()> {
        self.args.result()
    }

    /// The penalty on `w`, an `f32` scalar.
    pub(crate) fn penalty<'g>(&self, w: Tensor<'g>) -> Tensor<'g> {
        let g = w.graph();
        let mut p = g.scalar(0.0);
        if self.l1 != 0.0 {
            p = p + w.abs().sum_all().cast(crate::dtype::DType::F32) * self.l1;
        }
        if self.l2 != 0.0 {
            p = p + w.square().sum_all().cast(crate::dtype::DType::F32) * self.l2;
        }
        p
    }
}
