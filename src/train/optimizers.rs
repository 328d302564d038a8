//! The optimizers. Each is its Keras 3 update rule, written once as graph ops.

use super::{Config, Optimizer, Step};
use crate::dtype::DType;
use crate::graph::Tensor;

/// Builder methods every optimizer has.
macro_rules! common {
    ($t:ty) => {
        impl $t {
            /// Clip all gradients together to this global norm before the step.
            pub fn clip_global_norm(mut self, c: f64) -> Self {
                self.cfg.clip_global_norm = Some(c);
                self
            }
            /// Decoupled weight decay: `w -= lr * wd * w` each step.
            pub fn weight_decay(mut self, wd: f64) -> Self {
                self.cfg.weight_decay = wd;
                self
            }
            /// Use this scalar tensor (for example a placeholder) as the learning rate.
            pub fn learning_rate_tensor(mut self, lr: Tensor<'_>) -> Self {
                self.cfg.learning_rate_tensor = Some((lr.graph().data().graph_id(), lr.id()));
                self
            }
            /// The prefix of the optimizer's variables.
            pub fn name(mut self, name: &str) -> Self {
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
    /// SGD with this learning rate.
    pub fn new(learning_rate: f64) -> Sgd {
        Sgd {
            cfg: Config::new("sgd", learning_rate),
            momentum: 0.0,
            nesterov: false,
        }
    }
    /// Momentum `μ` in `[0, 1)`.
    pub fn momentum(mut self, m: f64) -> Sgd {
        self.momentum = m;
        self
    }
    /// Nesterov momentum.
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
    /// Adam with this learning rate, `β₁ = 0.9`, `β₂ = 0.999`, `ε = 1e-7` (Keras defaults).
    pub fn new(learning_rate: f64) -> Adam {
        Adam {
            cfg: Config::new("adam", learning_rate),
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        }
    }
    /// `β₁`.
    pub fn beta_1(mut self, b: f64) -> Adam {
        self.beta_1 = b;
        self
    }
    /// `β₂`.
    pub fn beta_2(mut self, b: f64) -> Adam {
        self.beta_2 = b;
        self
    }
    /// `ε`.
    pub fn epsilon(mut self, e: f64) -> Adam {
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
    /// Adam with this learning rate and weight decay 0.004.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(learning_rate: f64) -> Adam {
        Adam::new(learning_rate).weight_decay(0.004).name("adamw")
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
    /// RMSprop with this learning rate, `ρ = 0.9`, no momentum, `ε = 1e-7` (Keras defaults).
    pub fn new(learning_rate: f64) -> RmsProp {
        RmsProp {
            cfg: Config::new("rmsprop", learning_rate),
            rho: 0.9,
            momentum: 0.0,
            epsilon: 1e-7,
        }
    }
    /// `ρ`, the decay of the squared-gradient average.
    pub fn rho(mut self, r: f64) -> RmsProp {
        self.rho = r;
        self
    }
    /// Momentum `μ`.
    pub fn momentum(mut self, m: f64) -> RmsProp {
        self.momentum = m;
        self
    }
    /// `ε`.
    pub fn epsilon(mut self, e: f64) -> RmsProp {
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
