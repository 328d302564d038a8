//! Layers: the `Layer` trait and the built-in layers.
//!
//! A layer is a function from a tensor to a tensor that may own variables. It adds graph ops
//! when the model is built, through a [`Ctx`] that names its variables, hands out seeds and
//! the model's `training` switch. A custom layer is the same few lines of graph code as a
//! built-in one: nothing here is privileged.

use super::regularizers::Regularizer;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Tensor};
use crate::init::{self, Init};
use crate::shape::{Dim, Shape};
use crate::train::args::{float, positive, unit_open, ArgErrors};
use std::cell::{Cell, RefCell};

/// What a layer sees while it adds its ops.
pub struct Ctx<'g> {
    /// The model's graph.
    pub graph: &'g Graph,
    /// The `bool` scalar placeholder that is true in `fit` and false in `evaluate`/`predict`.
    pub training: Tensor<'g>,
    seed: Cell<u64>,
    created: RefCell<Vec<(NodeId, bool)>>,
    updates: RefCell<Vec<NodeId>>,
    losses: RefCell<Vec<NodeId>>,
}

impl<'g> Ctx<'g> {
    pub(crate) fn new(graph: &'g Graph, training: Tensor<'g>, seed: u64) -> Ctx<'g> {
        Ctx {
            graph,
            training,
            seed: Cell::new(seed),
            created: RefCell::new(vec![]),
            updates: RefCell::new(vec![]),
            losses: RefCell::new(vec![]),
        }
    }

    /// A trainable variable, named inside the layer's scope (`dense_1/kernel`).
    #[track_caller]
    pub fn weight(&self, name: &str, shape: impl Into<Shape>, init: Init) -> Tensor<'g> {
        // `variable` puts the name inside the current scope (the layer's name) itself.
        let v = self.graph.variable(name, shape, init);
        self.created.borrow_mut().push((v.id(), true));
        v
    }

    /// A variable that training does not differentiate (moving statistics and the like).
    #[track_caller]
    pub fn state(&self, name: &str, shape: impl Into<Shape>, init: Init) -> Tensor<'g> {
        // `variable` puts the name inside the current scope (the layer's name) itself.
        let v = self.graph.variable(name, shape, init);
        self.created.borrow_mut().push((v.id(), false));
        v
    }

    /// A scalar that `compile` adds to the training loss (a weight penalty, say), as Keras'
    /// `layer.add_loss`. The loss `fit` and `evaluate` report includes it.
    pub fn add_loss(&self, loss: Tensor<'g>) {
        self.losses.borrow_mut().push(loss.id());
    }

    pub(crate) fn losses(&self) -> Vec<NodeId> {
        self.losses.borrow().clone()
    }

    /// An assign that the train op must run with each step (a moving average, say).
    pub fn add_update(&self, assign: Tensor<'g>) {
        self.updates.borrow_mut().push(assign.id());
    }

    /// A fresh seed for an initializer or a random op: the model's seed, counted up.
    pub fn next_seed(&self) -> u64 {
        let s = self.seed.get();
        self.seed.set(s.wrapping_add(1));
        s
    }

    pub(crate) fn take_created(&self) -> Vec<(NodeId, bool)> {
        std::mem::take(&mut *self.created.borrow_mut())
    }

    pub(crate) fn updates(&self) -> Vec<NodeId> {
        self.updates.borrow().clone()
    }
}

/// A layer: adds its ops to the graph when the model is built. It is `Send`, so that a
/// [`Model`](super::Model) holding layers not yet built can move to another thread.
///
/// ```
/// use kiln::prelude::*;
/// use kiln::nn::{Ctx, Layer};
///
/// /// `y = x * scale`, with one trainable scale per feature.
/// struct Scale;
/// impl Layer for Scale {
///     fn kind(&self) -> &'static str { "Scale" }
///     fn call<'g>(&mut self, ctx: &Ctx<'g>, x: Tensor<'g>) -> kiln::Result<Tensor<'g>> {
///         let n = x.shape().dims().last().and_then(|d| d.fixed()).unwrap_or(1);
///         let s = ctx.weight("scale", [n], init::ones());
///         Ok(x * s)
///     }
/// }
/// ```
pub trait Layer: Send {
    /// The layer's type as `summary()` prints it (`Dense`).
    fn kind(&self) -> &'static str;

    /// Adds the layer's ops: `x` in, the output out. Called once, inside a name scope that is
    /// the layer's unique name (`dense_1`).
    fn call<'g>(&mut self, ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>>;

    /// The base of the layer's name (`dense` gives `dense`, `dense_1`, ...): the kind in
    /// snake case by Keras' rule, so `BatchNormalization` gives `batch_normalization` and
    /// `Conv2D` gives `conv2d`, as in Keras (and in checkpoints written by it).
    fn base_name(&self) -> String {
        snake_case(self.kind())
    }

    /// `Ok`, or an error naming each argument given out of its domain when the layer was
    /// made (`Dropout::new(1.5)`): the function, your `file:line:col`, the argument, its
    /// allowed range and the value. [`Model::add`](super::Model::add), `build` and `compile`
    /// call it before building, so the mistake is reported at the first `Result`, at your
    /// line. The built-in layers check their arguments in their `#[track_caller]`
    /// constructors and builders; a custom layer may do the same (the default: no check).
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// For [`Input`]: the shape of one example. Other layers return `None`.
    fn input_shape(&self) -> Option<Vec<usize>> {
        None
    }
}

/// Keras' `to_snake_case`: an underscore before a capital that starts a capitalized word
/// (`Max|Pooling2D`) or follows a lower-case letter (`my|LSTM`), then lower case. A capital
/// after a digit stays joined (`Conv2D` is `conv2d`, not `conv2_d`).
fn snake_case(kind: &str) -> String {
    let c: Vec<char> = kind
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let mut s = String::new();
    for (i, &ch) in c.iter().enumerate() {
        let starts_word = c.get(i + 1).is_some_and(|n| n.is_lowercase());
        let after_lower = i > 0 && c[i - 1].is_lowercase();
        if ch.is_uppercase() && i > 0 && (starts_word || after_lower) {
            s.push('_');
        }
        s.extend(ch.to_lowercase());
    }
    s
}

impl<L: Layer + 'static> From<L> for Box<dyn Layer> {
    fn from(l: L) -> Box<dyn Layer> {
        Box::new(l)
    }
}

/// The feature count of a `[batch, features]` input, or an error naming the layer.
fn features(x: Tensor<'_>, layer: &str) -> Result<usize> {
    match x.shape().dims() {
        [_, Dim::Fixed(n)] => Ok(*n),
        _ => Err(Error::invalid(format!(
            "{layer} takes a [batch, features] input, got {} (add a Flatten first)",
            x.shape()
        ))),
    }
}

/// The channel count of a `[batch, ..., channels]` input (rank 2 or more), or an error.
fn channels(x: Tensor<'_>) -> Result<usize> {
    match x.shape().dims() {
        [_, .., Dim::Fixed(n)] => Ok(*n),
        _ => Err(Error::invalid(format!(
            "BatchNormalization takes a [batch, features] or [batch, ..., channels] input, \
             got {}",
            x.shape()
        ))),
    }
}

/// An activation function, as Keras names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// The identity.
    Linear,
    /// `max(0, x)`.
    Relu,
    /// `1/(1+e^-x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// Softmax over the last axis.
    Softmax,
}

impl Activation {
    /// Applies the activation.
    #[track_caller]
    pub fn apply<'g>(self, x: Tensor<'g>) -> Tensor<'g> {
        match self {
            Activation::Linear => x,
            Activation::Relu => x.relu(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Tanh => x.tanh(),
            Activation::Softmax => x.softmax(-1),
        }
    }
}

impl Layer for Activation {
    fn kind(&self) -> &'static str {
        "Activation"
    }
    fn call<'g>(&mut self, _ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        Ok(self.apply(x))
    }
}

/// The shape of one example; the first layer of a `Sequential` model (`Input::new([784])`).
#[derive(Clone, Debug)]
pub struct Input {
    shape: Vec<usize>,
    args: ArgErrors,
}

impl Input {
    /// An input of examples shaped `shape` (the batch axis is added); every size at least 1.
    #[track_caller]
    pub fn new(shape: impl AsRef<[usize]>) -> Input {
        let shape = shape.as_ref().to_vec();
        let mut args = ArgErrors::default();
        let ok = shape.iter().all(|&n| n >= 1);
        args.check(
            ok,
            "Input::new",
            "shape",
            "sizes of at least 1",
            format!("{shape:?}"),
        );
        Input { shape, args }
    }
}

impl Layer for Input {
    fn kind(&self) -> &'static str {
        "InputLayer"
    }
    fn validate(&self) -> Result<()> {
        self.args.result()
    }
    fn call<'g>(&mut self, _ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        Ok(x)
    }
    fn input_shape(&self) -> Option<Vec<usize>> {
        Some(self.shape.clone())
    }
}

/// A fully connected layer: `activation(x · kernel + bias)`.
///
/// ```
/// use kiln::prelude::*;
/// use kiln::nn::*;
/// let mut m = Sequential::new([
///     Input::new([2]).into(),
///     Dense::new(3).relu().kernel_regularizer(Regularizer::l2(1e-4)).into(),
///     Dense::new(1).use_bias(false).into(),
/// ]);
/// m.build()?;
/// let names: Vec<String> = m.get_weights()?.into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["dense/kernel", "dense/bias", "dense_1/kernel"]); // as Keras names them
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Dense {
    units: usize,
    activation: Activation,
    use_bias: bool,
    kernel_initializer: Option<Init>,
    bias_initializer: Init,
    kernel_regularizer: Option<Regularizer>,
    args: ArgErrors,
}

impl Dense {
    /// `units` outputs (at least 1), no activation, a bias, Glorot-uniform kernel (seeded by
    /// the model).
    #[track_caller]
    pub fn new(units: usize) -> Dense {
        let mut args = ArgErrors::default();
        args.check(units >= 1, "Dense::new", "units", "at least 1", units);
        Dense {
            args,
            units,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: None,
            bias_initializer: init::zeros(),
            kernel_regularizer: None,
        }
    }
    /// A penalty on the kernel, added to the training loss (Keras' `kernel_regularizer`).
    #[track_caller]
    pub fn kernel_regularizer(mut self, r: Regularizer) -> Dense {
        self.kernel_regularizer = Some(r);
        self
    }
    /// The activation.
    #[track_caller]
    pub fn activation(mut self, a: Activation) -> Dense {
        self.activation = a;
        self
    }
    /// Shorthand for `.activation(Activation::Relu)`.
    #[track_caller]
    pub fn relu(self) -> Dense {
        self.activation(Activation::Relu)
    }
    /// With or without the bias.
    #[track_caller]
    pub fn use_bias(mut self, on: bool) -> Dense {
        self.use_bias = on;
        self
    }
    /// The kernel's initializer (default: Glorot uniform with the model's next seed).
    #[track_caller]
    pub fn kernel_initializer(mut self, i: Init) -> Dense {
        self.kernel_initializer = Some(i);
        self
    }
    /// The bias initializer (default: zeros).
    #[track_caller]
    pub fn bias_initializer(mut self, i: Init) -> Dense {
        self.bias_initializer = i;
        self
    }
}

impl Layer for Dense {
    fn kind(&self) -> &'static str {
        "Dense"
    }
    fn validate(&self) -> Result<()> {
        self.args.result()?;
        self.kernel_regularizer
            .iter()
            .try_for_each(|r| r.validate())
    }
    fn call<'g>(&mut self, ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        let fan_in = features(x, &format!("Dense({})", self.units))?;
        let ki = self
            .kernel_initializer
            .clone()
            .unwrap_or_else(|| init::glorot_uniform(ctx.next_seed()));
        let w = ctx.weight("kernel", [fan_in, self.units], ki);
        if let Some(r) = &self.kernel_regularizer {
            ctx.add_loss(r.penalty(w));
        }
        let mut y = x.matmul(w);
        if self.use_bias {
            let b = ctx.weight("bias", [self.units], self.bias_initializer.clone());
            y = y + b;
        }
        Ok(self.activation.apply(y))
    }
}

/// Dropout: while training, zero each element with probability `rate` and scale the rest by
/// `1/(1-rate)`; the identity in `evaluate` and `predict`.
#[derive(Clone, Debug)]
pub struct Dropout {
    rate: f64,
    seed: Option<u64>,
    args: ArgErrors,
}

impl Dropout {
    /// Dropout with this rate, in `[0, 1)`, seeded by the model.
    #[track_caller]
    pub fn new(rate: f64) -> Dropout {
        let mut args = ArgErrors::default();
        let allowed = "in [0, 1) (the fraction of inputs dropped while training)";
        args.check(
            unit_open(rate),
            "Dropout::new",
            "rate",
            allowed,
            float(rate),
        );
        Dropout {
            rate,
            seed: None,
            args,
        }
    }
    /// An explicit seed.
    #[track_caller]
    pub fn seed(mut self, s: u64) -> Dropout {
        self.seed = Some(s);
        self
    }
}

impl Layer for Dropout {
    fn kind(&self) -> &'static str {
        "Dropout"
    }
    fn validate(&self) -> Result<()> {
        self.args.result()
    }
    fn call<'g>(&mut self, ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        let seed = self.seed.unwrap_or_else(|| ctx.next_seed());
        Ok(x.dropout(self.rate, ctx.training, seed))
    }
}

/// Flattens each example: `[batch, 28, 28] -> [batch, 784]`, and NHWC feature maps
/// `[batch, 5, 5, 64] -> [batch, 1600]` in row-major (H, W, C) order, the order of Keras'
/// `Flatten` on channels-last images, so a Keras `Dense` kernel after it loads unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flatten;

impl Layer for Flatten {
    fn kind(&self) -> &'static str {
        "Flatten"
    }
    fn call<'g>(&mut self, _ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        Ok(x.flatten())
    }
}

/// Softmax over the last axis.
#[derive(Clone, Copy, Debug, Default)]
pub struct Softmax;

impl Layer for Softmax {
    fn kind(&self) -> &'static str {
        "Softmax"
    }
    fn call<'g>(&mut self, _ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        Ok(x.softmax(-1))
    }
}

/// Batch normalization (Keras semantics): while training, normalize each feature with the
/// batch's mean and (biased) variance and update moving averages of both; at inference,
/// normalize with the moving averages. `gamma` and `beta` are trained.
///
/// The features are the last axis (Keras' `axis=-1`): on `[batch, features]` rows the
/// statistics are over the batch, on NHWC images `[batch, H, W, C]` they are per channel over
/// the batch and every position, as a convnet wants.
///
/// The moving averages are variables updated by assigns that the layer hands to the model
/// ([`Ctx::add_update`]); the model groups them with the optimizer's train op, so they move
/// exactly once per training step and never in `evaluate` or `predict`.
#[derive(Clone, Debug)]
pub struct BatchNormalization {
    momentum: f64,
    epsilon: f64,
    args: ArgErrors,
}

impl Default for BatchNormalization {
    fn default() -> Self {
        BatchNormalization::new()
    }
}

impl BatchNormalization {
    /// Momentum 0.99 and epsilon 0.001, as Keras.
    #[track_caller]
    pub fn new() -> BatchNormalization {
        BatchNormalization {
            momentum: 0.99,
            epsilon: 1e-3,
            args: ArgErrors::default(),
        }
    }
    /// The moving averages' momentum, in `[0, 1]` (1 freezes them).
    #[track_caller]
    pub fn momentum(mut self, m: f64) -> Self {
        let (func, ok) = ("BatchNormalization::momentum", (0.0..=1.0).contains(&m));
        self.args.check(ok, func, "momentum", "in [0, 1]", float(m));
        self.momentum = m;
        self
    }
    /// Added to the variance before the square root: finite and > 0.
    #[track_caller]
    pub fn epsilon(mut self, e: f64) -> Self {
        let (func, ok) = ("BatchNormalization::epsilon", positive(e));
        self.args
            .check(ok, func, "epsilon", "finite and > 0", float(e));
        self.epsilon = e;
        self
    }
}

impl Layer for BatchNormalization {
    fn kind(&self) -> &'static str {
        "BatchNormalization"
    }
    fn validate(&self) -> Result<()> {
        self.args.result()
    }
    fn call<'g>(&mut self, ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        let n = channels(x)?;
        let gamma = ctx.weight("gamma", [n], init::ones());
        let beta = ctx.weight("beta", [n], init::zeros());
        let moving_mean = ctx.state("moving_mean", [n], init::zeros());
        let moving_var = ctx.state("moving_variance", [n], init::ones());
        // Statistics over every axis but the channels: [batch] for rows, [batch, H, W] for
        // NHWC images. The [n] vectors broadcast back along the trailing axis.
        let axes: Vec<isize> = (0..x.rank() as isize - 1).collect();
        let mean = x.mean(&axes, false);
        let var = (x - mean).square().mean(&axes, false);
        let eps = self.epsilon;
        let train = (x - mean) / (var + eps).sqrt() * gamma + beta;
        let infer = (x - moving_mean) / (moving_var + eps).sqrt() * gamma + beta;
        let m = self.momentum;
        ctx.add_update(moving_mean.assign(moving_mean * m + mean * (1.0 - m)));
        ctx.add_update(moving_var.assign(moving_var * m + var * (1.0 - m)));
        Ok(ctx.training.select(train, infer))
    }
}
