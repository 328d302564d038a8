//! `Model`: layers wired into a graph, compiled with a loss and an optimizer, run by a session.
//!
//! A model owns its [`Graph`] and, once compiled, a [`Session`]. Building a model is just
//! graph building, so everything the low level offers works on a model's graph: dump it,
//! differentiate it, train it with a hand-written loop ([`Model::graph`], [`Model::input`],
//! [`Model::output`], [`Model::trainable_variables`]).

use super::layers::{Ctx, Layer};
use super::losses::{batch_shape, Loss, Metric};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Tensor};
use crate::session::Session;
use crate::shape::Shape;
use crate::train::Optimizer;
use std::collections::HashMap;

/// One row of `summary()` (also written by [`Model::save`](super::save)).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Row {
    pub name: String,
    /// The layer's type (`Dense`); a `String` because a loaded model's rows come from a file.
    pub kind: String,
    /// The output shape as Keras prints it (`(None, 10)`).
    pub shape: String,
    pub params: usize,
    pub trainable: usize,
}

/// What building the layers produced (all ids in the model's graph).
#[derive(Clone, Debug)]
pub(crate) struct Built {
    pub inputs: Vec<NodeId>,
    pub outputs: Vec<NodeId>,
    pub training: NodeId,
    pub rows: Vec<Row>,
    /// Every layer variable (trainable or not), in creation order.
    pub weights: Vec<NodeId>,
    pub trainable: Vec<NodeId>,
    pub updates: Vec<NodeId>,
    /// The layers' extra loss terms (weight penalties), added to the loss by `compile`.
    pub losses: Vec<NodeId>,
}

/// What `compile` added.
#[derive(Clone, Debug)]
pub(crate) struct Compiled {
    pub target: NodeId,
    pub loss: NodeId,
    /// Each metric's log name, its node and what it is (a batch mean, or counts).
    pub metrics: Vec<(String, NodeId, Metric)>,
    pub train: NodeId,
    /// The sample-weight placeholder, weighted loss and weighted train op, built by `fit`
    /// the first time it is given weights (`nn/sample_weight.rs`).
    pub weighted: Option<(NodeId, NodeId, NodeId)>,
    /// The gradients and the fed-gradient train op of a distributed `fit`, built on its
    /// first call (`nn/fit_dist.rs`).
    pub dist: Option<DistIds>,
    /// `Model::weighted_metrics`: each one's log name, node (a vector that adds up over
    /// batches) and metric (`nn/weighted_metrics.rs`).
    pub weighted_metrics: Vec<(String, NodeId, Metric)>,
    /// Their `[batch]` weight placeholder, fed each batch (ones when it has no weights).
    pub metric_weight: Option<NodeId>,
}

/// The nodes a distributed `fit` runs, built on its first call (kept in the compiled
/// state; defined here, below `fit`, as the module rule of ARCHITECTURE.md wants).
#[derive(Clone, Debug)]
pub(crate) struct DistIds {
    /// The loss's gradient for each trainable variable (one micro-shard's).
    pub(super) grads: Vec<NodeId>,
    /// The reduced gradient of each trainable variable, fed.
    pub(super) fed: Vec<NodeId>,
    /// The model's optimizer applied to `fed`, sharing the compiled train op's state.
    pub(super) train: NodeId,
    /// The sample-weight placeholder, the weighted loss and its gradient for each
    /// trainable variable, built when the first weighted batch comes.
    pub(super) weighted: Option<(NodeId, NodeId, Vec<NodeId>)>,
    /// The layers' state updates (`BatchNormalization`'s moving statistics): each updated
    /// variable and the new value its assign computes from one micro-shard.
    pub(super) updates: Vec<(NodeId, NodeId)>,
}

/// Wires layers inside [`Model::functional`]: applies a layer to a tensor under a unique name.
pub struct Builder<'g> {
    ctx: Ctx<'g>,
    rows: Vec<Row>,
    names: HashMap<String, usize>,
    weights: Vec<NodeId>,
    trainable: Vec<NodeId>,
}

impl<'g> Builder<'g> {
    /// Applies `layer` to `x`, in a name scope of the layer's unique name (`dense_1`). An
    /// argument the layer was made with out of its domain is reported first
    /// ([`Layer::validate`]).
    pub fn apply(&mut self, layer: impl Into<Box<dyn Layer>>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        let mut layer = layer.into();
        layer.validate()?;
        let base = layer.base_name();
        let n = self.names.entry(base.clone()).or_insert(0);
        let name = if *n == 0 {
            base.clone()
        } else {
            format!("{base}_{n}")
        };
        *n += 1;
        let g = self.ctx.graph;
        let y = {
            let _scope = g.name_scope(&name);
            layer.call(&self.ctx, x)?
        };
        g.check()?;
        let created = self.ctx.take_created();
        let d = g.data();
        let numel = |id: NodeId| d.node(id).ty.shape.numel().unwrap_or(0);
        let params = created.iter().map(|&(id, _)| numel(id)).sum();
        let trainable = created
            .iter()
            .filter(|c| c.1)
            .map(|&(id, _)| numel(id))
            .sum();
        drop(d);
        self.weights.extend(created.iter().map(|c| c.0));
        self.trainable
            .extend(created.iter().filter(|c| c.1).map(|c| c.0));
        self.rows.push(Row {
            name,
            kind: layer.kind().to_string(),
            shape: keras_shape(&y.shape()),
            params,
            trainable,
        });
        Ok(y)
    }

    /// The context layers see (graph, training switch, seeds).
    pub fn ctx(&self) -> &Ctx<'g> {
        &self.ctx
    }
}

/// A Keras-style model: see the [module docs](crate::nn). Made by [`Sequential::new`] or
/// [`Model::functional`]; `compile`, then `fit`, `evaluate`, `predict`, `save`.
///
/// ```
/// use kiln::prelude::*;
/// use kiln::nn::*;
/// // Two inputs joined by graph ops: the functional form.
/// let mut m = Model::functional(&[&[3], &[2]], |b, x| {
///     let h = b.apply(Dense::new(4).relu(), x[0])?;
///     let joined = b.ctx().graph.concat(&[h, x[1]], 1);
///     Ok(vec![b.apply(Dense::new(1), joined)?])
/// })?;
/// m.compile(Adam::new(0.01), Loss::MeanSquaredError, &[Metric::MeanAbsoluteError])?;
/// let (a, c) = (Array::new([4, 3], vec![0.5f32; 12])?, Array::new([4, 2], vec![1f32; 8])?);
/// let y = Array::new([4, 1], vec![1f32; 4])?;
/// let h = m.fit([&a, &c], &y, FitConfig::new().epochs(3).verbosity(Verbosity::Silent))?;
/// assert_eq!(h.epochs(), 3);
/// assert_eq!(m.predict([&a, &c], 4)?.shape(), [4, 1]);
/// # Ok::<(), kiln::Error>(())
/// ```
pub struct Model {
    pub(crate) name: String,
    pending: Vec<Box<dyn Layer>>,
    pub(crate) seed: u64,
    pub(super) graph: Graph,
    pub(crate) built: Option<Built>,
    pub(crate) compiled: Option<Compiled>,
    pub(crate) optimizer: Option<Box<dyn Optimizer>>,
    pub(crate) loss: Option<Loss>,
    pub(crate) session: Option<Session>,
}

/// The Keras name for a model that is a stack of layers: `Sequential::new([...])` makes a
/// [`Model`].
///
/// ```
/// use kiln::prelude::*;
/// use kiln::nn::*;
/// let mut m = Sequential::new([
///     Input::new([4]).into(),
///     Dense::new(8).relu().into(),
///     Dense::new(3).into(),
/// ]);
/// m.compile(Adam::new(1e-3), Loss::SparseCategoricalCrossentropy { from_logits: true },
///     &[Metric::Accuracy])?;
/// let table = m.summary()?;
/// assert!(table.contains("dense_1 (Dense)") && table.contains("Total params: 67"));
/// # Ok::<(), kiln::Error>(())
/// ```
pub struct Sequential;

impl Sequential {
    /// A model applying `layers` in order. The first layer should be an
    /// [`Input`](super::Input) giving the shape of one example.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(layers: impl IntoIterator<Item = Box<dyn Layer>>) -> Model {
        Model {
            name: "sequential".into(),
            pending: layers.into_iter().collect(),
            seed: 42,
            graph: Graph::new(),
            built: None,
            compiled: None,
            optimizer: None,
            loss: None,
            session: None,
        }
    }
}

impl Model {
    /// A model over `graph` whose layers are already built (and maybe compiled): what
    /// [`load_model`](super::load_model) assembles from a saved directory.
    pub(crate) fn from_parts(name: String, seed: u64, graph: Graph, built: Built) -> Model {
        Model {
            name,
            pending: vec![],
            seed,
            graph,
            built: Some(built),
            compiled: None,
            optimizer: None,
            loss: None,
            session: None,
        }
    }

    /// Appends a layer (before the model is built). A layer made with an argument out of
    /// its domain (`Dropout::new(1.5)`) is refused here, with the line where it was made.
    pub fn add(&mut self, layer: impl Into<Box<dyn Layer>>) -> Result<()> {
        if self.built.is_some() {
            return Err(Error::invalid("add: the model is already built"));
        }
        let layer = layer.into();
        layer.validate()?;
        self.pending.push(layer);
        Ok(())
    }

    /// The base seed for initializers and dropout (default 42); set before building.
    pub fn seed(mut self, seed: u64) -> Model {
        self.seed = seed;
        self
    }

    /// A model wired by hand, like Keras' functional API: `inputs` are the shapes of one
    /// example of each input; `wire` applies layers and returns the outputs.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::nn::{Dense, Model};
    /// let model = Model::functional(&[&[4], &[3]], |b, ins| {
    ///     let a = b.apply(Dense::new(8).relu(), ins[0])?;
    ///     let c = b.apply(Dense::new(8).relu(), ins[1])?;
    ///     let out = b.apply(Dense::new(2), a + c)?;
    ///     Ok(vec![out])
    /// })?;
    /// assert_eq!(model.trainable_variables().len(), 6);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn functional<F>(inputs: &[&[usize]], wire: F) -> Result<Model>
    where
        F: for<'g> FnOnce(&mut Builder<'g>, &[Tensor<'g>]) -> Result<Vec<Tensor<'g>>>,
    {
        let mut m = Sequential::new([]);
        m.name = "functional".into();
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|s| s.to_vec()).collect();
        m.build_with(&shapes, |b, ins| wire(b, ins))?;
        Ok(m)
    }

    fn build_with<F>(&mut self, shapes: &[Vec<usize>], wire: F) -> Result<()>
    where
        F: for<'g> FnOnce(&mut Builder<'g>, &[Tensor<'g>]) -> Result<Vec<Tensor<'g>>>,
    {
        let g = &self.graph;
        let inputs: Vec<Tensor<'_>> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let name = if i == 0 {
                    "input".to_string()
                } else {
                    format!("input_{i}")
                };
                g.placeholder(&name, DType::F32, batch_shape(s))
            })
            .collect();
        let training = g.placeholder("training", DType::Bool, Shape::scalar());
        let mut b = Builder {
            ctx: Ctx::new(g, training, self.seed),
            rows: vec![],
            names: HashMap::new(),
            weights: vec![],
            trainable: vec![],
        };
        let outputs = wire(&mut b, &inputs)?;
        g.check()?;
        if outputs.is_empty() {
            return Err(Error::invalid("a model needs at least one output"));
        }
        self.built = Some(Built {
            inputs: inputs.iter().map(|t| t.id()).collect(),
            outputs: outputs.iter().map(|t| t.id()).collect(),
            training: training.id(),
            updates: b.ctx.updates(),
            losses: b.ctx.losses(),
            rows: b.rows,
            weights: b.weights,
            trainable: b.trainable,
        });
        if self.session.is_none() {
            // The weights exist once the model is built, as in Keras: `get_weights` and
            // `set_weights` work before `compile` (which keeps their values).
            self.session = Some(Session::new(g)?);
        }
        Ok(())
    }

    /// Builds the graph from the layers and creates the weights (done by `compile` and
    /// `summary` when needed; `get_weights` works from here on). The
    /// layers' arguments are checked first ([`Layer::validate`]): `Sequential::new` cannot
    /// return an error, so a bad one given there is reported here, at its own line.
    pub fn build(&mut self) -> Result<()> {
        if self.built.is_some() {
            return Ok(());
        }
        for l in &self.pending {
            l.validate()?;
        }
        let mut layers = std::mem::take(&mut self.pending);
        let shape = match layers.first().and_then(|l| l.input_shape()) {
            Some(s) => s,
            None => {
                return Err(Error::invalid(
                    "a Sequential model needs an Input layer first (Input::new([784]))",
                ))
            }
        };
        layers.remove(0);
        self.build_with(&[shape], move |b, ins| {
            let mut x = ins[0];
            for l in layers {
                x = b.apply(l, x)?;
            }
            Ok(vec![x])
        })
    }

    pub(crate) fn built(&self) -> Result<&Built> {
        self.built
            .as_ref()
            .ok_or_else(|| Error::invalid("the model is not built yet (call build or compile)"))
    }

    /// Chooses the optimizer, loss and metrics, and adds the loss, metrics and train op to
    /// the graph. The model is built first if needed; the session `build` made is kept (a
    /// used one is replaced by a new one holding its weights).
    ///
    /// The optimizer's and the layers' arguments are checked first
    /// ([`Optimizer::validate`], [`Layer::validate`]): a learning rate of `-0.1` or a dropout
    /// rate of `1.5` is an error naming the line where you wrote it, and the model is left
    /// as it was.
    pub fn compile(
        &mut self,
        optimizer: impl Optimizer + 'static,
        loss: Loss,
        metrics: &[Metric],
    ) -> Result<()> {
        optimizer.validate()?;
        self.build()?;
        let built = self.built()?.clone();
        if built.outputs.len() != 1 {
            return Err(Error::invalid(format!(
                "compile supports models with one output, this one has {}: train a \
                 multi-output model with a hand-written loop (gradients, an optimizer, a Session)",
                built.outputs.len()
            )));
        }
        let g = &self.graph;
        let out = g.tensor(built.outputs[0]);
        let (dt, shape) = loss.target(&out.shape());
        let tname = if g.by_name("target").is_none() {
            "target".to_string()
        } else {
            g.scoped_name(&format!("target_{}", g.len()))
        };
        let y = g.placeholder(&tname, dt, shape);
        let mut l = loss.build(out, y);
        // Keras reports the loss with the layers' penalties in it, and trains on that.
        for &r in &built.losses {
            l = l + g.tensor(r);
        }
        let ms: Vec<(String, NodeId, Metric)> = metrics
            .iter()
            .map(|m| (m.name().to_string(), m.build(&loss, out, y).id(), *m))
            .collect();
        g.check()?;
        let mut opt: Box<dyn Optimizer> = Box::new(optimizer);
        let trainable: Vec<Tensor<'_>> = built.trainable.iter().map(|&i| g.tensor(i)).collect();
        let mut train = opt.minimize(l, &trainable)?;
        if !built.updates.is_empty() {
            let mut all = vec![train];
            all.extend(built.updates.iter().map(|&u| g.tensor(u)));
            train = g.group(&all);
        }
        self.compiled = Some(Compiled {
            target: y.id(),
            loss: l.id(),
            metrics: ms,
            train: train.id(),
            weighted: None,
            dist: None,
            weighted_metrics: vec![],
            metric_weight: None,
        });
        self.loss = Some(loss);
        self.optimizer = Some(opt);
        let sess = match self.session.take() {
            // The session `build` made, never run or compiled: it holds the weights (and any
            // `set_weights`); only the optimizer's new variables need values, instead of
            // initializing every weight a second time.
            Some(mut s) if s.run_count() == 0 && s.compile_count() == 0 => {
                s.init_new_variables()?;
                s
            }
            old => {
                let mut sess = Session::new(&self.graph)?;
                // Recompiling keeps the weights trained so far.
                for (name, value) in old.iter().flat_map(|o| o.named_variables()) {
                    if let Some(t) = self.graph.by_name(&name) {
                        sess.set_variable(t, value.clone())?;
                    }
                }
                sess
            }
        };
        self.session = Some(sess);
        Ok(())
    }

    /// A Keras-style table of the layers, their output shapes (`(None, 26, 26, 32)`) and
    /// parameter counts. The columns are Keras' widths, widened when a name or shape needs
    /// more, so every cell stays whole on one line (a layer's name can be copied from it).
    pub fn summary(&mut self) -> Result<String> {
        self.build()?;
        let built = self.built()?;
        let cells: Vec<(String, String, usize)> = built
            .rows
            .iter()
            .map(|r| {
                (
                    format!("{} ({})", r.name, r.kind),
                    r.shape.clone(),
                    r.params,
                )
            })
            .collect();
        let widest = |f: fn(&(String, String, usize)) -> usize, min: usize| {
            cells.iter().map(f).fold(min, |w, n| w.max(n + 1))
        };
        let name_w = widest(|c| c.0.chars().count(), 28);
        let shape_w = widest(|c| c.1.chars().count(), 26);
        let width = name_w + shape_w + 11;
        let row = |a: &str, b: &str, c: &str| format!(" {a:<name_w$}{b:<shape_w$}{c:>9}\n");
        let line = "_".repeat(width);
        let mut s = format!("Model: \"{}\"\n{line}\n", self.name);
        s += &row("Layer (type)", "Output Shape", "Param #");
        s += &format!("{}\n", "=".repeat(width));
        for (name, shape, params) in &cells {
            s += &row(name, shape, &params.to_string());
        }
        let total: usize = built.rows.iter().map(|r| r.params).sum();
        let trainable: usize = built.rows.iter().map(|r| r.trainable).sum();
        s += &format!("{}\n", "=".repeat(width));
        s += &format!("Total params: {}\n", thousands(total));
        s += &format!("Trainable params: {}\n", thousands(trainable));
        s += &format!("Non-trainable params: {}\n", thousands(total - trainable));
        s += &format!("{line}\n");
        Ok(s)
    }

    /// The model's graph: add ops, differentiate, dump, or run it with your own session.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The first input placeholder (`f32[?, ...]`).
    pub fn input(&self) -> Result<Tensor<'_>> {
        Ok(self.graph.tensor(self.built()?.inputs[0]))
    }

    /// All input placeholders.
    pub fn inputs(&self) -> Result<Vec<Tensor<'_>>> {
        Ok(self
            .built()?
            .inputs
            .iter()
            .map(|&i| self.graph.tensor(i))
            .collect())
    }

    /// The first output.
    pub fn output(&self) -> Result<Tensor<'_>> {
        Ok(self.graph.tensor(self.built()?.outputs[0]))
    }

    /// All outputs.
    pub fn outputs(&self) -> Result<Vec<Tensor<'_>>> {
        Ok(self
            .built()?
            .outputs
            .iter()
            .map(|&i| self.graph.tensor(i))
            .collect())
    }

    /// The `training` switch (`bool[]`): feed `true` to enable dropout.
    pub fn training_flag(&self) -> Result<Tensor<'_>> {
        Ok(self.graph.tensor(self.built()?.training))
    }

    /// The trainable variables of all layers.
    pub fn trainable_variables(&self) -> Vec<Tensor<'_>> {
        self.built
            .iter()
            .flat_map(|b| b.trainable.iter().map(|&i| self.graph.tensor(i)))
            .collect()
    }

    /// The session that runs the model (after `compile`), for low-level access.
    pub fn session(&mut self) -> Result<&mut Session> {
        self.session
            .as_mut()
            .ok_or_else(|| Error::invalid("the model is not compiled yet"))
    }

    /// The optimizer given to `compile`.
    pub fn optimizer(&self) -> Option<&dyn Optimizer> {
        self.optimizer.as_deref()
    }

    /// The loss given to `compile` (for a model from [`load_model`](super::load_model), the
    /// one it was saved with).
    pub fn loss(&self) -> Option<Loss> {
        self.loss
    }
}

/// A shape as Keras prints it: `(None, 26, 26, 32)`, a 1-tuple as `(10,)`.
fn keras_shape(shape: &Shape) -> String {
    let dims: Vec<String> = shape
        .dims()
        .iter()
        .map(|d| d.fixed().map_or("None".to_string(), |n| n.to_string()))
        .collect();
    if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
