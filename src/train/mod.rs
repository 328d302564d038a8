//! Training: optimizers as graph update ops (the pieces of TF1's `tf.train`).
//!
//! An optimizer adds ordinary nodes to the graph: the gradients (via [`crate::autodiff`]),
//! the update arithmetic, and one [`assign`](Tensor::assign) per variable and per slot,
//! grouped into a single *train op*. Fetching the train op runs one step:
//!
//! ```
//! use kiln::prelude::*;
//! use kiln::train::{Optimizer, Sgd};
//!
//! let g = Graph::new();
//! let x = g.placeholder("x", DType::F32, [None, Some(1)]);
//! let y = g.placeholder("y", DType::F32, [None, Some(1)]);
//! let w = g.variable("w", [1, 1], init::zeros());
//! let loss = (x.matmul(w) - y).square().mean_all();
//! let train = Sgd::new(0.1).minimize(loss, &[w])?;
//!
//! let mut sess = Session::new(&g)?;
//! let xv = Array::new([2, 1], vec![1.0f32, 2.0])?;
//! let yv = Array::new([2, 1], vec![3.0f32, 6.0])?; // y = 3x
//! for _ in 0..50 {
//!     sess.run(&[train], &[(x, xv.clone()), (y, yv.clone())])?;
//! }
//! let wv = sess.variable(w).unwrap().to_vec::<f32>()?[0];
//! assert!((wv - 3.0).abs() < 1e-3);
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! Design points, and why:
//! - **State is variables.** Slots (momentum, Adam's moments) and the step count are
//!   variables named `<optimizer>/<variable>/<slot>` and `<optimizer>/iterations`, so a
//!   checkpoint saves and restores them with the weights, and resuming is exact.
//! - **The learning rate is a variable** (`<optimizer>/learning_rate`, initialized from the
//!   constructor's value), or any scalar tensor you pass with `learning_rate_tensor`.
//!   Changing it with [`Session::set_variable`](crate::session::Session::set_variable) never
//!   recompiles: a schedule is a host loop that sets one scalar.
//! - **Formulas are Keras 3's**, so a Keras user gets the numbers they expect: decoupled
//!   weight decay (`w -= lr * wd * w`, before the step) on every optimizer, `epsilon` outside
//!   the square root for Adam and inside it for RMSprop, clipping by the global norm
//!   (`g * c / max(‖g‖, c)`) before anything else.
//! - All updates of a step read the values from before the step (snapshot semantics, see
//!   [`crate::graph::effects`]).

pub(crate) mod args;
mod distributed;
mod optimizers;
mod schedules;

pub use distributed::Distributed;
pub use optimizers::{Adam, AdamW, RmsProp, Sgd};
pub use schedules::{
    CosineDecay, ExponentialDecay, LearningRate, LearningRateSchedule, PiecewiseConstant,
};

use crate::autodiff::gradients;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::{Graph, NodeId, Tensor};
use crate::init;
use crate::shape::Shape;
use std::sync::Arc;

/// What every optimizer shares: learning rate, clipping, weight decay, a name.
#[derive(Clone, Debug)]
pub struct Config {
    /// The initial value of the learning-rate variable (unused with a schedule).
    pub learning_rate: f64,
    /// A schedule computing the learning rate from the step count, instead of a variable.
    pub schedule: Option<Arc<dyn LearningRateSchedule>>,
    /// A user's scalar tensor to use as the learning rate instead of a variable.
    pub learning_rate_tensor: Option<(u64, NodeId)>,
    /// Clip all gradients together so their global norm is at most this.
    pub clip_global_norm: Option<f64>,
    /// Decoupled weight decay: `w -= lr * weight_decay * w` each step.
    pub weight_decay: f64,
    /// The prefix of the optimizer's variables (made unique per graph).
    pub name: String,
    /// The state built by the last `apply_gradients`: (graph id, learning rate, iterations).
    built: Option<(u64, NodeId, NodeId)>,
    /// The next `apply_gradients` on the graph of `built` reuses that state (step count,
    /// learning rate, slots) instead of making its own: `fit`'s weighted train op steps
    /// the same optimizer as the unweighted one (`nn/sample_weight.rs`).
    pub(crate) share_state: bool,
    /// Arguments found invalid by the constructor and builders, with the user's lines.
    pub(crate) args: args::ArgErrors,
}

impl Config {
    /// The settings of optimizer `func` (`Sgd::new`) made with `learning_rate`: a schedule,
    /// or a number that must be finite and not negative (checked here, reported by
    /// [`Optimizer::validate`]). Zero is allowed, as in Keras: a run with frozen weights
    /// (dropout and metrics still run) is a real use, kiln's own tests make one; a negative
    /// rate climbs the loss, and NaN or infinity poisons every weight at the first step.
    #[track_caller]
    pub(crate) fn new(func: &'static str, name: &str, learning_rate: LearningRate) -> Config {
        let mut args = args::ArgErrors::default();
        let (learning_rate, schedule) = match learning_rate {
            LearningRate::Constant(v) => (v, None),
            LearningRate::Schedule(s) => (0.0, Some(s)),
        };
        args.check(
            learning_rate.is_finite() && learning_rate >= 0.0,
            func,
            "learning_rate",
            "finite and >= 0",
            args::float(learning_rate),
        );
        Config {
            learning_rate,
            schedule,
            learning_rate_tensor: None,
            clip_global_norm: None,
            weight_decay: 0.0,
            name: name.to_string(),
            built: None,
            share_state: false,
            args,
        }
    }

    /// Records that the optimizer's learning rate and step count are nodes `lr` and
    /// `iterations` of graph `graph_id`: a model loaded from disk (`nn::load_model`) points
    /// its restored optimizer at the loaded graph's nodes this way.
    pub(crate) fn set_built(&mut self, graph_id: u64, lr: NodeId, iterations: NodeId) {
        self.built = Some((graph_id, lr, iterations));
    }
}

/// What one variable's update sees.
pub struct Step<'g> {
    /// The graph.
    pub graph: &'g Graph,
    /// The learning rate, a scalar of the variable's dtype.
    pub lr: Tensor<'g>,
    /// The 1-based step number of this update, a scalar of the variable's dtype.
    pub t: Tensor<'g>,
    prefix: String,
    /// Slots that exist already are reused (`Config::share_state`).
    share: bool,
}

impl<'g> Step<'g> {
    /// A zero-initialized slot variable shaped like `var`, named
    /// `<optimizer>/<variable>/<slot>`.
    #[track_caller]
    pub fn slot(&self, var: Tensor<'g>, slot: &str) -> Tensor<'g> {
        let (name, dtype, shape) = {
            let d = self.graph.data();
            let n = d.node(var.id());
            (n.name.clone(), n.ty.dtype, n.ty.shape.clone())
        };
        let vname = name.as_deref().unwrap_or("var").to_string();
        let full = format!("{}/{vname}/{slot}", self.prefix);
        if self.share {
            if let Some(t) = self.graph.by_name(&full) {
                return t;
            }
        }
        self.graph.variable_of(&full, dtype, shape, init::zeros())
    }

    /// A scalar constant of `like`'s dtype.
    pub fn scalar(&self, like: Tensor<'g>, v: f64) -> Tensor<'g> {
        self.graph.scalar_of(like.dtype(), v)
    }
}

/// An optimizer: a rule that turns gradients into variable updates. It is `Send`, so a
/// model holding one can move to another thread.
///
/// Implementors write [`Optimizer::update`] (one variable's step) and give access to their
/// [`Config`]; `apply_gradients` and `minimize` build the rest.
pub trait Optimizer: Send {
    /// The shared settings.
    fn config(&self) -> &Config;
    /// The shared settings, mutably.
    fn config_mut(&mut self) -> &mut Config;

    /// The new value of `var` given its (clipped) gradient `grad`. Slot updates are pushed
    /// onto `assigns` as [`Tensor::assign`] nodes; read slots before the step, as with every
    /// read in a run.
    fn update<'g>(
        &self,
        step: &Step<'g>,
        var: Tensor<'g>,
        grad: Tensor<'g>,
        assigns: &mut Vec<Tensor<'g>>,
    ) -> Tensor<'g>;

    /// `Ok`, or an error naming each argument given out of its domain to the optimizer's
    /// constructor or builders (`Sgd::new(-0.1)`, `.momentum(1.5)`): the function, your line,
    /// the argument, its allowed range and the value. `minimize`, `apply_gradients` and
    /// `Model::compile` call it before adding anything to the graph.
    fn validate(&self) -> Result<()> {
        let c = self.config();
        c.args.result()?;
        match &c.schedule {
            Some(s) => s.validate(),
            None => Ok(()),
        }
    }

    /// The train op for `loss` over `var_list`: gradients, then [`Optimizer::apply_gradients`].
    #[track_caller]
    fn minimize<'g>(&mut self, loss: Tensor<'g>, var_list: &[Tensor<'g>]) -> Result<Tensor<'g>> {
        self.validate()?;
        let grads = gradients(&[loss], var_list, None)?;
        let gv: Vec<(Tensor<'g>, Tensor<'g>)> =
            grads.into_iter().zip(var_list.iter().copied()).collect();
        self.apply_gradients(&gv)
    }

    /// The train op applying `(gradient, variable)` pairs: one target that clips the
    /// gradients, applies weight decay and the optimizer's rule to every variable, and
    /// increments the step count.
    #[track_caller]
    fn apply_gradients<'g>(
        &mut self,
        grads_and_vars: &[(Tensor<'g>, Tensor<'g>)],
    ) -> Result<Tensor<'g>> {
        self.validate()?;
        let Some(&(_, first)) = grads_and_vars.first() else {
            return Err(Error::invalid("apply_gradients: no variables to update"));
        };
        let g = first.graph();
        for &(grad, var) in grads_and_vars {
            let d = g.data();
            let ok_var = grad.graph().same_as(g)
                && var.graph().same_as(g)
                && matches!(d.get(var.id()).map(|n| &n.op), Some(Op::Variable { .. }));
            drop(d);
            if !ok_var {
                return Err(Error::invalid(format!(
                    "apply_gradients: {var:?} is not a variable of the graph"
                )));
            }
            if !var.dtype().is_float() || grad.dtype() != var.dtype() || grad.shape() != var.shape()
            {
                return Err(Error::invalid(format!(
                    "apply_gradients: gradient {grad:?} does not match variable {var:?}"
                )));
            }
        }
        let cfg = self.config().clone();
        let shared = match cfg.built {
            Some((gid, lr, it)) if cfg.share_state && gid == g.data().graph_id() => {
                Some((g.tensor(lr), g.tensor(it)))
            }
            _ => None,
        };
        if let Some((lr, iterations)) = shared {
            let name = g
                .data()
                .node(iterations.id())
                .name
                .clone()
                .unwrap_or_default();
            let prefix = name
                .strip_suffix("/iterations")
                .unwrap_or(&cfg.name)
                .to_string();
            return apply_with(self, grads_and_vars, &cfg, prefix, lr, iterations, true);
        }
        let prefix = unique_prefix(g, &cfg.name);
        // The learning-rate variable comes before the step count, as it always has, so the
        // graphs (and their dumps) of optimizers without a schedule keep their node order.
        let fixed = match (cfg.learning_rate_tensor, &cfg.schedule) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "apply_gradients: the optimizer has both a schedule and a \
                     learning_rate_tensor; give one",
                ))
            }
            (Some((gid, id)), None) if gid == g.data().graph_id() => Some(g.tensor(id)),
            (Some(_), None) => {
                return Err(Error::invalid(
                    "apply_gradients: the learning-rate tensor belongs to another graph",
                ))
            }
            (None, Some(_)) => None,
            (None, None) => Some(g.variable(
                &format!("{prefix}/learning_rate"),
                Shape::scalar(),
                init::constant(cfg.learning_rate),
            )),
        };
        let iterations = g.variable_of(
            &format!("{prefix}/iterations"),
            DType::I32,
            Shape::scalar(),
            init::zeros(),
        );
        // Keras passes a schedule the step count before this step's increment: 0 at the
        // first step.
        let lr = match (fixed, &cfg.schedule) {
            (Some(lr), _) => lr,
            (None, Some(s)) => s.build(iterations),
            (None, None) => {
                return Err(Error::Internal(
                    "apply_gradients: neither a learning rate nor a schedule".into(),
                ))
            }
        };
        apply_with(self, grads_and_vars, &cfg, prefix, lr, iterations, false)
    }

    /// The learning-rate tensor the last `apply_gradients` on `g` used: a variable (set it
    /// with `Session::set_variable`; `ReduceLROnPlateau` does), the schedule's value at the
    /// current step (an `f64` scalar to fetch), or the tensor given to
    /// `learning_rate_tensor`.
    fn learning_rate<'g>(&self, g: &'g Graph) -> Option<Tensor<'g>> {
        match self.config().built {
            Some((gid, lr, _)) if gid == g.data().graph_id() => Some(g.tensor(lr)),
            _ => None,
        }
    }

    /// The step-count variable (`i32`) of the last `apply_gradients` on `g`.
    fn iterations<'g>(&self, g: &'g Graph) -> Option<Tensor<'g>> {
        match self.config().built {
            Some((gid, _, it)) if gid == g.data().graph_id() => Some(g.tensor(it)),
            _ => None,
        }
    }
}

/// Scales `grads` by `c / max(‖grads‖, c)`, with `‖·‖` the norm of all of them together.
#[track_caller]
pub fn clip_by_global_norm<'g>(grads: Vec<Tensor<'g>>, c: f64) -> Vec<Tensor<'g>> {
    let Some(first) = grads.first() else {
        return grads;
    };
    let g = first.graph();
    let mut sq = g.scalar(0.0);
    for &x in &grads {
        let axes: Vec<isize> = (0..x.rank() as isize).collect();
        sq = sq + x.square().sum(&axes, false).cast(DType::F32);
    }
    let norm = sq.sqrt();
    let cc = g.scalar(c as f32);
    let scale = cc / norm.maximum(cc);
    grads
        .into_iter()
        .map(|x| x * scale.cast(x.dtype()))
        .collect()
}

/// The rest of `apply_gradients` once the learning rate and step count exist: clipping,
/// each variable's update (slots made, or reused when `share`), the step increment.
#[track_caller]
fn apply_with<'g, O: Optimizer + ?Sized>(
    opt: &mut O,
    grads_and_vars: &[(Tensor<'g>, Tensor<'g>)],
    cfg: &Config,
    prefix: String,
    lr: Tensor<'g>,
    iterations: Tensor<'g>,
    share: bool,
) -> Result<Tensor<'g>> {
    let g = lr.graph();
    let t = (iterations + 1i32).cast(DType::F32);
    let grads = match cfg.clip_global_norm {
        Some(c) => clip_by_global_norm(grads_and_vars.iter().map(|p| p.0).collect(), c),
        None => grads_and_vars.iter().map(|p| p.0).collect(),
    };
    let mut assigns = vec![iterations.assign_add(1i32)];
    for (&(_, var), grad) in grads_and_vars.iter().zip(grads) {
        let dt = var.dtype();
        let step = Step {
            graph: g,
            lr: lr.cast(dt),
            t: t.cast(dt),
            prefix: prefix.clone(),
            share,
        };
        let mut new = opt.update(&step, var, grad, &mut assigns);
        if cfg.weight_decay != 0.0 {
            new = new - var * step.lr * cfg.weight_decay;
        }
        assigns.push(var.assign(new));
    }
    g.check()?;
    opt.config_mut().built = Some((g.data().graph_id(), lr.id(), iterations.id()));
    Ok(g.group(&assigns))
}

/// `name`, or `name_1`, `name_2`, ... : the first prefix no variable of `g` uses yet.
fn unique_prefix(g: &Graph, name: &str) -> String {
    let taken = |p: &str| g.by_name(&format!("{p}/iterations")).is_some();
    if !taken(name) {
        return name.to_string();
    }
    (1..)
        .map(|i| format!("{name}_{i}"))
        .find(|p| !taken(p))
        .unwrap_or_else(|| name.to_string())
}
