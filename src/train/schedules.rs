//! Learning-rate schedules as graph ops over the optimizer's step counter.
//!
//! A schedule is a function of the step, written with graph ops: the optimizer builds it
//! once, over its `iterations` variable (the `i32` step count, 0 at the first step, as
//! Keras passes `optimizer.iterations` to a schedule), and every step computes its rate
//! inside the same executable. So a schedule never recompiles, never needs a host loop, and
//! is saved and restored with the step count in every checkpoint: a resumed run goes on
//! with the rate it would have had.
//!
//! The rate is computed in `f64` (a handful of scalar ops per step) and cast to each
//! variable's dtype where it is used, so `0.96^(t/1000)` keeps its digits. kiln has no
//! cosine op, so [`CosineDecay`] evaluates `cos` on `[0, π]` with a polynomial (error below
//! `1e-16`), from the ops every backend has.
//!
//! Each type follows Keras 3's formula (`keras.optimizers.schedules`), its constructor
//! checks its arguments where you call it (`#[track_caller]`) and the optimizer reports a
//! bad one with your line at `minimize` or `compile`. A schedule of your own implements
//! [`LearningRateSchedule`].

use super::args::{float, positive, ArgErrors};
use crate::dtype::DType;
use crate::error::Result;
use crate::graph::Tensor;
use std::fmt::Debug;
use std::sync::Arc;

/// A learning rate that is a function of the step, built from graph ops.
///
/// ```
/// use kiln::prelude::*;
/// use kiln::train::LearningRateSchedule;
///
/// /// Halves the rate every 10 steps (what `ExponentialDecay` with staircase does).
/// #[derive(Debug)]
/// struct Halving;
/// impl LearningRateSchedule for Halving {
///     fn build<'g>(&self, step: Tensor<'g>) -> Tensor<'g> {
///         let g = step.graph();
///         let k = (step.cast(DType::F64) / 10.0).cast(DType::I32).cast(DType::F64);
///         g.scalar_of(DType::F64, 0.5).pow(k) * 0.1
///     }
/// }
/// let g = Graph::new();
/// let w = g.variable("w", [1], init::ones());
/// let mut opt = Sgd::new(Halving);
/// let train = opt.minimize(w.square().sum_all(), &[w])?;
/// let lr = opt.learning_rate(&g).unwrap();
/// let mut sess = Session::new(&g)?;
/// let first = sess.run(&[lr, train], &[])?[0].scalar_value::<f64>()?;
/// assert_eq!(first, 0.1);
/// # Ok::<(), kiln::Error>(())
/// ```
pub trait LearningRateSchedule: Debug + Send + Sync {
    /// The rate at `step` (an `i32` scalar, 0 at the first step) as an `f64` scalar.
    fn build<'g>(&self, step: Tensor<'g>) -> Tensor<'g>;

    /// `Ok`, or an error naming each argument given out of its domain when the schedule was
    /// made. The optimizer calls it in [`Optimizer::validate`](super::Optimizer::validate).
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// What an optimizer's constructor takes as its learning rate: a number (the initial value
/// of the `learning_rate` variable) or a [`LearningRateSchedule`].
///
/// ```
/// use kiln::train::{Adam, ExponentialDecay};
/// let _constant = Adam::new(1e-3);
/// let _decayed = Adam::new(ExponentialDecay::new(1e-3, 1000, 0.96));
/// ```
#[derive(Clone, Debug)]
pub enum LearningRate {
    /// A fixed rate (a variable you can still set between steps).
    Constant(f64),
    /// A rate computed from the step count.
    Schedule(Arc<dyn LearningRateSchedule>),
}

impl From<f64> for LearningRate {
    fn from(v: f64) -> Self {
        LearningRate::Constant(v)
    }
}

impl From<f32> for LearningRate {
    fn from(v: f32) -> Self {
        LearningRate::Constant(v as f64)
    }
}

impl<S: LearningRateSchedule + 'static> From<S> for LearningRate {
    fn from(s: S) -> Self {
        LearningRate::Schedule(Arc::new(s))
    }
}

/// `step` as an `f64` scalar.
fn steps_f64(step: Tensor<'_>) -> Tensor<'_> {
    step.cast(DType::F64)
}

/// An `f64` scalar constant in `like`'s graph.
fn c64<'g>(like: Tensor<'g>, v: f64) -> Tensor<'g> {
    like.graph().scalar_of(DType::F64, v)
}

/// `initial_learning_rate · decay_rate ^ (step / decay_steps)`, Keras' `ExponentialDecay`;
/// with `staircase`, the exponent is rounded down, so the rate changes every `decay_steps`.
///
/// ```
/// use kiln::train::{ExponentialDecay, Sgd};
/// // 0.1 at step 0, 0.1·0.5 = 0.05 from step 100 on (staircase), 0.025 from step 200.
/// let opt = Sgd::new(ExponentialDecay::new(0.1, 100, 0.5).staircase(true));
/// ```
#[derive(Clone, Debug)]
pub struct ExponentialDecay {
    initial: f64,
    decay_steps: usize,
    decay_rate: f64,
    staircase: bool,
    args: ArgErrors,
}

impl ExponentialDecay {
    /// Starts at `initial_learning_rate` (finite, >= 0) and multiplies it by `decay_rate`
    /// (finite, > 0) every `decay_steps` steps (at least 1).
    #[track_caller]
    pub fn new(initial_learning_rate: f64, decay_steps: usize, decay_rate: f64) -> Self {
        let f = "ExponentialDecay::new";
        let mut args = ArgErrors::default();
        let (lr, rate) = (initial_learning_rate, decay_rate);
        let lr_ok = lr.is_finite() && lr >= 0.0;
        args.check(
            lr_ok,
            f,
            "initial_learning_rate",
            "finite and >= 0",
            float(lr),
        );
        args.check(
            decay_steps >= 1,
            f,
            "decay_steps",
            "at least 1",
            decay_steps,
        );
        args.check(
            positive(rate),
            f,
            "decay_rate",
            "finite and > 0",
            float(rate),
        );
        ExponentialDecay {
            initial: lr,
            decay_steps,
            decay_rate: rate,
            staircase: false,
            args,
        }
    }

    /// Round the exponent down: the rate steps every `decay_steps` instead of decaying
    /// smoothly.
    #[track_caller]
    pub fn staircase(mut self, on: bool) -> Self {
        self.staircase = on;
        self
    }
}

impl LearningRateSchedule for ExponentialDecay {
    fn build<'g>(&self, step: Tensor<'g>) -> Tensor<'g> {
        let mut p = steps_f64(step) / self.decay_steps as f64;
        if self.staircase {
            // The step is never negative, so truncation is the floor.
            p = p.cast(DType::I32).cast(DType::F64);
        }
        c64(step, self.decay_rate).pow(p) * self.initial
    }

    fn validate(&self) -> Result<()> {
        self.args.result()
    }
}

/// Keras 3's `CosineDecay`: an optional linear warm-up from `initial_learning_rate` to
/// `warmup_target` over `warmup_steps`, then a cosine from the peak down to `alpha` times
/// it over `decay_steps`, then constant.
///
/// ```text
/// no warm-up:  lr(t) = initial · ((1 − α)·½(1 + cos(π·min(t, D)/D)) + α)
/// warm-up:     lr(t) = initial + (target − initial)·t/W                 for t < W
///              lr(t) = target · ((1 − α)·½(1 + cos(π·min(t − W, D)/D)) + α)   otherwise
/// ```
///
/// ```
/// use kiln::train::{Adam, CosineDecay};
/// // From 0 up to 1e-3 over 100 steps, then down to 1e-5 over 1000.
/// let opt = Adam::new(CosineDecay::new(0.0, 1000).warmup(1e-3, 100).alpha(0.01));
/// ```
#[derive(Clone, Debug)]
pub struct CosineDecay {
    initial: f64,
    decay_steps: usize,
    alpha: f64,
    warmup: Option<(f64, usize)>,
    args: ArgErrors,
}

impl CosineDecay {
    /// Decays from `initial_learning_rate` (finite, >= 0) over `decay_steps` (at least 1)
    /// to 0, with no warm-up.
    #[track_caller]
    pub fn new(initial_learning_rate: f64, decay_steps: usize) -> Self {
        let f = "CosineDecay::new";
        let lr = initial_learning_rate;
        let mut args = ArgErrors::default();
        let lr_ok = lr.is_finite() && lr >= 0.0;
        args.check(
            lr_ok,
            f,
            "initial_learning_rate",
            "finite and >= 0",
            float(lr),
        );
        args.check(
            decay_steps >= 1,
            f,
            "decay_steps",
            "at least 1",
            decay_steps,
        );
        CosineDecay {
            initial: lr,
            decay_steps,
            alpha: 0.0,
            warmup: None,
            args,
        }
    }

    /// The floor, as a fraction of the peak rate, in `[0, 1]` (Keras' `alpha`, default 0).
    #[track_caller]
    pub fn alpha(mut self, alpha: f64) -> Self {
        let ok = (0.0..=1.0).contains(&alpha);
        let f = "CosineDecay::alpha";
        self.args.check(ok, f, "alpha", "in [0, 1]", float(alpha));
        self.alpha = alpha;
        self
    }

    /// A linear warm-up from the initial rate to `warmup_target` (finite, >= 0) over
    /// `warmup_steps` (at least 1) before the decay starts (Keras' `warmup_target` and
    /// `warmup_steps`).
    #[track_caller]
    pub fn warmup(mut self, warmup_target: f64, warmup_steps: usize) -> Self {
        let f = "CosineDecay::warmup";
        let t = warmup_target;
        let t_ok = t.is_finite() && t >= 0.0;
        self.args
            .check(t_ok, f, "warmup_target", "finite and >= 0", float(t));
        let s_ok = warmup_steps >= 1;
        self.args
            .check(s_ok, f, "warmup_steps", "at least 1", warmup_steps);
        self.warmup = Some((t, warmup_steps));
        self
    }

    /// `from · ((1 − α)·½(1 + cos(π·t/D)) + α)` for `t` in `[0, D]`.
    fn decay<'g>(&self, t: Tensor<'g>, from: f64) -> Tensor<'g> {
        let d = self.decay_steps as f64;
        let cosine = (cos_0_pi(t / d * std::f64::consts::PI) + 1.0) * 0.5;
        (cosine * (1.0 - self.alpha) + self.alpha) * from
    }
}

impl LearningRateSchedule for CosineDecay {
    fn build<'g>(&self, step: Tensor<'g>) -> Tensor<'g> {
        let t = steps_f64(step);
        let d = self.decay_steps as f64;
        let Some((target, w)) = self.warmup else {
            return self.decay(t.minimum(d), self.initial);
        };
        let w = w as f64;
        let t = t.minimum(d + w);
        let warm = t / w * (target - self.initial) + self.initial;
        let decayed = self.decay(t - w, target);
        t.less(w).select(warm, decayed)
    }

    fn validate(&self) -> Result<()> {
        self.args.result()
    }
}

/// `cos(x)` for an `f64` scalar `x` in `[0, π]`, from mul and add: `−sin(x − π/2)`, with
/// `sin` on `[−π/2, π/2]` as its Taylor series to `y²³` (the first term left out is below
/// `(π/2)²⁵/25! ≈ 5e-21`). kiln has no cosine op; a schedule needs one scalar per step.
fn cos_0_pi(x: Tensor<'_>) -> Tensor<'_> {
    let y = x - std::f64::consts::FRAC_PI_2;
    let y2 = y * y;
    // sin(y) = y · Σ (−1)^k y^{2k} / (2k+1)!, by Horner from the highest term.
    let mut coef = vec![];
    let mut fact = 1.0f64;
    for k in 0..12u32 {
        if k > 0 {
            fact *= ((2 * k) * (2 * k + 1)) as f64;
        }
        let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
        coef.push(sign / fact);
    }
    let mut acc = c64(x, coef[11]);
    for &c in coef[..11].iter().rev() {
        acc = acc * y2 + c;
    }
    -(acc * y)
}

/// Keras' `PiecewiseConstantDecay`: `values[0]` up to and including step `boundaries[0]`,
/// `values[1]` after it up to `boundaries[1]`, ..., `values[n]` after the last boundary.
///
/// ```
/// use kiln::train::{PiecewiseConstant, Sgd};
/// // 0.1 for steps 0..=1000, 0.01 for 1001..=2000, 0.001 after.
/// let opt = Sgd::new(PiecewiseConstant::new(&[1000, 2000], &[0.1, 0.01, 0.001]));
/// ```
#[derive(Clone, Debug)]
pub struct PiecewiseConstant {
    boundaries: Vec<usize>,
    values: Vec<f64>,
    args: ArgErrors,
}

impl PiecewiseConstant {
    /// `boundaries` strictly increasing steps (each at most `i32::MAX`), `values` one more
    /// than them, each finite and >= 0.
    #[track_caller]
    pub fn new(boundaries: &[usize], values: &[f64]) -> Self {
        let f = "PiecewiseConstant::new";
        let mut args = ArgErrors::default();
        let increasing = boundaries.windows(2).all(|w| w[0] < w[1]);
        let fits = boundaries.iter().all(|&b| b <= i32::MAX as usize);
        let allowed = "strictly increasing steps, each at most i32::MAX";
        args.check(
            increasing && fits,
            f,
            "boundaries",
            allowed,
            format!("{boundaries:?}"),
        );
        let count_ok = values.len() == boundaries.len() + 1;
        let all_ok = values.iter().all(|v| v.is_finite() && *v >= 0.0);
        let allowed = format!(
            "one more value than boundaries ({}), each finite and >= 0",
            boundaries.len() + 1
        );
        args.check(
            count_ok && all_ok,
            f,
            "values",
            allowed,
            format!("{values:?}"),
        );
        PiecewiseConstant {
            boundaries: boundaries.to_vec(),
            values: values.to_vec(),
            args,
        }
    }
}

impl LearningRateSchedule for PiecewiseConstant {
    fn build<'g>(&self, step: Tensor<'g>) -> Tensor<'g> {
        let mut lr = c64(step, self.values.first().copied().unwrap_or(0.0));
        for (&b, &v) in self.boundaries.iter().zip(self.values.iter().skip(1)) {
            lr = step.greater(b as i32).select(c64(step, v), lr);
        }
        lr
    }

    fn validate(&self) -> Result<()> {
        self.args.result()
    }
}
