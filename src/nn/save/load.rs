//! [`load_model`]: a saved directory back into a [`Model`].

use super::config::{Custom, ModelCfg};
use super::CONFIG_FILE;
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::{Graph, NodeId, Tensor};
use crate::nn::model::{Built, Compiled, Model, Row};
use crate::saved::{read_bounded, GRAPH_FILE, MAX_GRAPH_BYTES, VARIABLES_FILE};
use crate::session::Session;
use crate::train::{Config, Optimizer, Step};
use std::path::Path;

/// The largest `model.txt` read (16 MiB: a line per layer and per node index).
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Loads a model written by [`Model::save`]: its graph, weights, optimizer state, run
/// counter and compile settings. Training it continues exactly where the saved model
/// stopped (same weights, slots, step count, learning rate, dropout streams), and
/// `evaluate`, `predict` and `summary` work as before saving.
///
/// Errors, never panics, for: a missing directory or file, a damaged file (bad syntax, a
/// checksum mismatch in the variables, a node index out of range, a node of the wrong kind
/// for its role), a format version this kiln does not read, and variables whose shapes or
/// dtypes disagree with the graph. Custom layers, losses and metrics need no registration
/// (their ops are in the saved graph): see the [module docs](super).
///
/// ```
/// use kiln::nn::load_model;
/// let err = load_model("/nonexistent/model").err().unwrap();
/// assert!(err.to_string().contains("model.txt"));
/// ```
pub fn load_model(dir: impl AsRef<Path>) -> Result<Model> {
    let dir = dir.as_ref();
    let cfg_path = dir.join(CONFIG_FILE);
    let bytes = read_bounded(&cfg_path, MAX_CONFIG_BYTES, "the model config")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::invalid_file(&cfg_path, "the model config is not UTF-8"))?;
    let cfg = ModelCfg::parse(&text, &custom_stand_in)
        .map_err(|e| Error::invalid_file(&cfg_path, e.to_string()))?;
    let graph_path = dir.join(GRAPH_FILE);
    let bytes = read_bounded(&graph_path, MAX_GRAPH_BYTES, "the saved graph")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::invalid_file(&graph_path, "the saved graph is not UTF-8"))?;
    let parsed =
        crate::text::parse(&text).map_err(|e| Error::invalid_file(&graph_path, e.to_string()))?;
    let nodes = Nodes {
        graph: &parsed.graph,
        list: &parsed.outputs,
    };
    let bad = |e: String| Error::invalid_file(&graph_path, e);
    let built = built(&cfg, &nodes).map_err(bad)?;
    let compiled = match &cfg.compile {
        Some(c) => Some((
            Compiled {
                target: nodes
                    .get(c.target, "target", Kind::Placeholder)
                    .map_err(bad)?,
                loss: nodes.get(c.loss_node, "loss", Kind::Any).map_err(bad)?,
                train: nodes.get(c.train, "train", Kind::Any).map_err(bad)?,
                metrics: c
                    .metrics
                    .iter()
                    .map(|(n, i, m)| Ok((n.clone(), nodes.get(*i, n, Kind::Any)?, *m)))
                    .collect::<std::result::Result<_, String>>()
                    .map_err(bad)?,
                // Built by `fit` on its first call with sample or class weights.
                weighted: None,
                // Built by a distributed `fit` on its first call.
                dist: None,
                // Not saved (see `Model::weighted_metrics`).
                weighted_metrics: vec![],
                metric_weight: None,
            },
            c.loss,
            restored_optimizer(&parsed.graph, c, &nodes).map_err(bad)?,
        )),
        None => None,
    };
    let mut session = Session::new(&parsed.graph)?;
    session.restore(dir.join(VARIABLES_FILE))?;
    let mut model = Model::from_parts(cfg.name.clone(), cfg.seed, parsed.graph, built);
    if let Some((c, loss, opt)) = compiled {
        model.compiled = Some(c);
        model.loss = Some(loss);
        model.optimizer = Some(Box::new(opt));
    }
    model.session = Some(session);
    Ok(model)
}

/// What a node of a role must be.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Placeholder,
    Variable,
    Any,
}

/// `graph.kiln`'s `return` line: the nodes `model.txt` refers to by index.
struct Nodes<'a> {
    graph: &'a Graph,
    list: &'a [NodeId],
}

impl Nodes<'_> {
    fn get(&self, i: usize, role: &str, kind: Kind) -> std::result::Result<NodeId, String> {
        let id = *self.list.get(i).ok_or_else(|| {
            format!(
                "model.txt names node {i} of the return line for {role}, which lists {} nodes",
                self.list.len()
            )
        })?;
        let d = self.graph.data();
        let op = &d.node(id).op;
        let ok = match kind {
            Kind::Any => true,
            Kind::Placeholder => matches!(op, Op::Placeholder),
            Kind::Variable => matches!(op, Op::Variable { .. }),
        };
        if !ok {
            return Err(format!(
                "the node for {role} is {}, not a {}",
                d.node(id).label(),
                if kind == Kind::Variable {
                    "variable"
                } else {
                    "placeholder"
                }
            ));
        }
        Ok(id)
    }

    fn all(&self, v: &[usize], role: &str, kind: Kind) -> std::result::Result<Vec<NodeId>, String> {
        v.iter().map(|&i| self.get(i, role, kind)).collect()
    }
}

fn built(cfg: &ModelCfg, n: &Nodes<'_>) -> std::result::Result<Built, String> {
    if cfg.inputs.is_empty() || cfg.outputs.is_empty() {
        return Err("the model has no inputs or no outputs".into());
    }
    Ok(Built {
        inputs: n.all(&cfg.inputs, "an input", Kind::Placeholder)?,
        outputs: n.all(&cfg.outputs, "an output", Kind::Any)?,
        training: n.get(cfg.training, "the training switch", Kind::Placeholder)?,
        rows: cfg
            .layers
            .iter()
            .map(|l| Row {
                name: l.name.clone(),
                kind: l.kind.clone(),
                shape: l.shape.clone(),
                params: l.params,
                trainable: l.trainable,
            })
            .collect(),
        weights: n.all(&cfg.weights, "a weight", Kind::Variable)?,
        trainable: n.all(&cfg.trainable, "a trainable weight", Kind::Variable)?,
        updates: n.all(&cfg.updates, "an update", Kind::Any)?,
        losses: n.all(&cfg.losses, "a layer loss", Kind::Any)?,
    })
}

/// The stand-in for the saved model's optimizer: its state is in the graph (slots, step
/// count, learning rate or schedule), and this points at the rate and step-count nodes.
struct Restored {
    config: Config,
}

impl Optimizer for Restored {
    fn config(&self) -> &Config {
        &self.config
    }

    fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// Never reached through kiln (a model's optimizer is only lent out as `&dyn`); a
    /// graph error if it were.
    fn update<'g>(
        &self,
        step: &Step<'g>,
        _var: Tensor<'g>,
        _grad: Tensor<'g>,
        _assigns: &mut Vec<Tensor<'g>>,
    ) -> Tensor<'g> {
        step.graph.fail(
            "minimize",
            format!(
                "the optimizer {:?} was loaded from a saved model: its state is in the graph, \
                 its update rule is not; compile the model with a new optimizer instead",
                self.config.name
            ),
        )
    }
}

fn restored_optimizer(
    g: &Graph,
    c: &super::config::CompileCfg,
    n: &Nodes<'_>,
) -> std::result::Result<Restored, String> {
    let o = &c.optimizer;
    let lr = n.get(o.lr, "the learning rate", Kind::Any)?;
    let it = n.get(o.iterations, "the step count", Kind::Variable)?;
    let mut config = Config::new("load_model", &o.name, o.learning_rate.into());
    config.set_built(g.data().graph_id(), lr, it);
    Ok(Restored { config })
}

/// A custom loss or metric read back: its name, and a function that refuses to build it
/// again (its ops are already in the graph; its code was not saved).
fn custom_stand_in(name: &str) -> Custom {
    Custom {
        // One small string per custom object per load; `Custom` holds a `&'static str`.
        name: Box::leak(name.to_string().into_boxed_str()),
        f: not_saved,
    }
}

fn not_saved<'g>(p: Tensor<'g>, _y: Tensor<'g>) -> Tensor<'g> {
    p.graph().fail(
        "custom",
        "this custom loss or metric was loaded from a saved model: its ops are in the \
         graph, its code is not; pass Loss::custom / Metric::custom again to compile"
            .to_string(),
    )
}
