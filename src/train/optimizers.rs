//! The optimizers. Each is its Keras 3 update rule, written once as graph ops.

use super::args::{float, positive, unit_open};
use super::{Config, LearningRate, Optimizer, Step};
use crate::dtype::DType;
use crate::graph::Tensor;

/// Builder methods every optimizer has.
macro_rules! common {
    ($t:ty) => {
        impl $t {
            /// Clip all gradients together to this global norm (finite, > 0) before the step.
            #[track_caller]
            pub fn clip_global_norm(mut self, c: f64) -> Self {
                self.cfg.args.check(
                    positive(c),
                    concat!(stringify!($t), "::clip_global_norm"),
                    "clip_global_norm",
                    "finite and > 0",
                    float(c),
                );
                self.cfg.clip_global_norm = Some(c);
                self
            }
            /// Decoupled weight decay (finite, >= 0): `w -= lr * wd * w` each step.
            #[track_caller]
            pub fn weight_decay(mut self, wd: f64) -> Self {
                self.cfg.args.check(
                    wd.is_finite() && wd >= 0.0,
                    concat!(stringify!($t), "::weight_decay"),
                    "weight_decay",
                    "finite and >= 0",
                    float(wd),
                );
                self.cfg.weight_decay = wd;
                self
            }
            /// Use this scalar float tensor (for example a placeholder) as the learning rate.
            #[track_caller]
            pub fn learning_rate_tensor(mut self, lr: Tensor<'_>) -> Self {
                // One check: a second on the same argument would replace the first.
                let scalar = lr.rank() == 0 && lr.dtype().is_float();
                let allowed = if self.cfg.schedule.is_none() {
                    "a float scalar (f32[] or f64[])"
                } else {
                    "absent: the optimizer was made with a schedule (give one of the two)"
                };
                self.cfg.args.check(
                    scalar && self.cfg.schedule.is_none(),
                    concat!(stringify!($t), "::learning_rate_tensor"),
                    "learning_rate_tensor",
                    allowed,
                    lr.ty(),
                );
                self.cfg.learning_rate_tensor = Some((lr.graph().data().graph_id(), lr.id()));
                self
            }
            /// The prefix of the optimizer's variables (not empty).
            #[track_caller]
            pub fn name(mut self, name: &str) -> Self {
                self.cfg.args.check(
                    !name.is_empty(),
                    concat!(stringify!($t), "::name"),
                    "name",
                    "a non-empty variable prefix",
                    "\"\"",
                );
                self.cfg.name = name.to_string();
                self
            }
        }
    };
}

/// Stochastic gradient descent, with optional momentum and Nesterov momentum (Keras 3):
///
/// ```text
/// momentum = 0:  w ← w − lr·g
/// otherwise:     m ← μ·m − lr·g;   w ← w + m            (Nesterov: w ← w + μ·m − lr·g)
/// ```
#[derive(Clone, Debug)]
pub struct Sgd {
    cfg: Config,
    momentum: f64,
    nesterov: bool,
}

impl Sgd {
    /// SGD with this learning rate: a number (finite, >= 0) or a schedule
    /// ([`ExponentialDecay`](super::ExponentialDecay), ...).
    #[track_caller]
    pub fn new(learning_rate: impl Into<LearningRate>) -> Sgd {
        Sgd {
            cfg: Config::new("Sgd::new", "sgd", learning_rate.into()),
            momentum: 0.0,
            nesterov: false,
        }
    }
    /// Momentum `μ` in `[0, 1)`.
    #[track_caller]
    pub fn momentum(mut self, m: f64) -> Sgd {
        let ok = unit_open(m);
        self.cfg
            .args
            .check(ok, "Sgd::momentum", "momentum", "in [0, 1)", float(m));
        self.momentum = m;
        self
    }
    /// Nesterov momentum.
    #[track_caller]
    pub fn nesterov(mut self, on: bool) -> Sgd {
        self.nesterov = on;
        self
    }
}
common!(Sgd);

impl Optimizer for Sgd {
    fn config(&self) -> &Config {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut Config {
        &mut self.cfg
    }
    fn update<'g>(
        &self,
        s: &Step<'g>,
        var: Tensor<'g>,
        grad: Tensor<'g>,
        assigns: &mut Vec<Tensor<'g>>,
    ) -> Tensor<'g> {
        if self.momentum == 0.0 {
            return var - grad * s.lr;
        }
        let m = s.slot(var, "momentum");
        let step = -(grad * s.lr);
        let m_new = m * self.momentum + step;
        assigns.push(m.assign(m_new));
        if self.nesterov {
            var + m_new * self.momentum + step
        } else {
            var + m_new
        }
    }
}

/// Adam with bias correction (Keras 3's form, `epsilon` outside the square root):
///
/// ```text
/// m ← m + (g − m)(1 − β₁);   v ← v + (g² − v)(1 − β₂)
/// α = lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ);   w ← w − α·m / (√v + ε)
/// ```
#[derive(Clone, Debug)]
pub struct Adam {
    cfg: Config,
    beta_1: f64,
    beta_2: f64,
    epsilon: f64,
}

impl Adam {
    /// Adam with this learning rate (a number, or a schedule such as
    /// [`CosineDecay`](super::CosineDecay)), `β₁ = 0.9`, `β₂ = 0.999`, `ε = 1e-7` (Keras
    /// defaults).
    #[track_caller]
    pub fn new(learning_rate: impl Into<LearningRate>) -> Adam {
        Adam {
            cfg: Config::new("Adam::new", "adam", learning_rate.into()),
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        }
    }
    /// `β₁`, in `[0, 1)`.
    #[track_caller]
    pub fn beta_1(mut self, b: f64) -> Adam {
        let ok = unit_open(b);
        self.cfg
            .args
            .check(ok, "Adam::beta_1", "beta_1", "in [0, 1)", float(b));
        self.beta_1 = b;
        self
    }
    /// `β₂`, in `[0, 1)`.
    #[track_caller]
    pub fn beta_2(mut self, b: f64) -> Adam {
        let ok = unit_open(b);
        self.cfg
            .args
            .check(ok, "Adam::beta_2", "beta_2", "in [0, 1)", float(b));
        self.beta_2 = b;
        self
    }
    /// `ε`, finite and > 0.
    #[track_caller]
    pub fn epsilon(mut self, e: f64) -> Adam {
        let ok = positive(e);
        self.cfg
            .args
            .check(ok, "Adam::epsilon", "epsilon", "finite and > 0", float(e));
        self.epsilon = e;
        self
    }
}
common!(Adam);

impl Optimizer for Adam {
    fn config(&self) -> &Config {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut Config {
        &mut self.cfg
    }
    fn update<'g>(
        &self,
        s: &Step<'g>,
        var: Tensor<'g>,
        grad: Tensor<'g>,
        assigns: &mut Vec<Tensor<'g>>,
    ) -> Tensor<'g> {
        let m = s.slot(var, "m");
        let v = s.slot(var, "v");
        let m_new = m + (grad - m) * (1.0 - self.beta_1);
        let v_new = v + (grad.square() - v) * (1.0 - self.beta_2);
        assigns.push(m.assign(m_new));
        assigns.push(v.assign(v_new));
        // The bias correction in f64: `1 − β₂ᵗ` cancels badly in f32 (β₂² = 0.998001 keeps
        // only ~4 significant digits after the subtraction), and it is one scalar per step.
        let g = s.graph;
        let t = s.t.cast(DType::F64);
        let b1t = g.scalar_of(DType::F64, self.beta_1).pow(t);
        let b2t = g.scalar_of(DType::F64, self.beta_2).pow(t);
        let one = g.scalar_of(DType::F64, 1.0);
        let alpha = (s.lr.cast(DType::F64) * (one - b2t).sqrt() / (one - b1t)).cast(var.dtype());
        var - m_new * alpha / (v_new.sqrt() + self.epsilon)
    }
}

/// AdamW: [`Adam`] with decoupled weight decay, `0.004` by default as in Keras.
/// `AdamW::new(lr)` makes an [`Adam`] so configured (its variables are named `adamw/...`);
/// every `Adam` setting applies.
pub struct AdamW;

impl AdamW {
    /// Adam with this learning rate (a number or a schedule) and weight decay 0.004.
    #[allow(clippy::new_ret_no_self)]
    #[track_caller]
    pub fn new(learning_rate: impl Into<LearningRate>) -> Adam {
        let mut cfg = Config::new("AdamW::new", "adamw", learning_rate.into());
        cfg.weight_decay = 0.004;
        Adam {
            cfg,
            ..Adam::new(1.0)
        }
    }
}

/// RMSprop (Keras 3's form, `epsilon` inside the square root), with optional momentum:
///
/// ```text
/// a ← ρ·a + (1 − ρ)·g²;   Δ = lr·g / √(a + ε)
/// momentum = 0: w ← w − Δ;   otherwise: m ← μ·m + Δ;  w ← w − m
/// ```
#[derive(Clone, Debug)]
pub struct RmsProp {
    cfg: Config,
    rho: f64,
    momentum: f64,
    epsilon: f64,
}

impl RmsProp {
    /// RMSprop with this learning rate (a number or a schedule), `ρ = 0.9`, no momentum,
    /// `ε = 1e-7` (Keras defaults).
    #[track_caller]
    pub fn new(learning_rate: impl Into<LearningRate>) -> RmsProp {
        RmsProp {
            cfg: Config::new("RmsProp::new", "rmsprop", learning_rate.into()),
            rho: 0.9,
            momentum: 0.0,
            epsilon: 1e-7,
        }
    }
    /// `ρ`, the decay of the squared-gradient average, in `[0, 1)`.
    #[track_caller]
    pub fn rho(mut self, r: f64) -> RmsProp {
        let ok = unit_open(r);
        self.cfg
            .args
            .check(ok, "RmsProp::rho", "rho", "in [0, 1)", float(r));
        self.rho = r;
        self
    }
    /// Momentum `μ`, in `[0, 1)`.
    #[track_caller]
    pub fn momentum(mut self, m: f64) -> RmsProp {
        let ok = unit_open(m);
        self.cfg
            .args
            .check(ok, "RmsProp::momentum", "momentum", "in [0, 1)", float(m));
        self.momentum = m;
        self
    }
    /// `ε`, finite and > 0.
    #[track_caller]
    pub fn epsilon(mut self, e: f64) -> RmsProp {
        let ok = positive(e);
        self.cfg.args.check(
            ok,
            "RmsProp::epsilon",
            "epsilon",
            "finite and > 0",
            float(e),
        );
        self.epsilon = e;
        self
    }
}
common!(RmsProp);

impl Optimizer for RmsProp {
    fn config(&self) -> &Config {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut Config {
        &mut self.cfg
    }
    fn update<'g>(
        &self,
        s: &Step<'g>,
        var: Tensor<'g>,
        grad: Tensor<'g>,
        assigns: &mut Vec<Tensor<'g>>,
    ) -> Tensor<'g> {
        let a = s.slot(var, "velocity");
        let a_new = a * self.rho + grad.square() * (1.0 - self.rho);
        assigns.push(a.assign(a_new));
        let delta = grad * s.lr / (a_new + self.epsilon).sqrt();
        if self.momentum == 0.0 {
            return var - delta;
        }
        let m = s.slot(var, "momentum");
        let m_new = m * self.momentum + delta;
        assigns.push(m.assign(m_new));
        var - m_new
    }
}
