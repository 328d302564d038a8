//! Whole models on disk: [`Model::save`], [`load_model`] and [`Model::save_inference`].
//!
//! A saved model is a directory, as Keras' `.keras` is a zip of a config and the weights:
//! - `model.txt`: the format version, the model's name and seed, its layers (the summary's
//!   rows), which graph nodes play which role (inputs, outputs, the `training` switch,
//!   weights, the loss, the train op, each metric, the optimizer's learning rate and step
//!   count) and the compile settings (loss, metrics, optimizer); see `config.rs` for the
//!   grammar. [`FORMAT_VERSION`] is checked on load.
//! - `graph.kiln`: the whole graph in the canonical text format ([`crate::text`]), with a
//!   `return` line listing the nodes `model.txt` refers to by position.
//! - `variables.safetensors`: a [checkpoint](crate::checkpoint) of every variable: weights,
//!   optimizer slots, the learning rate and the step counter, with the session's run counter
//!   (so dropout masks continue) and a checksum.
//!
//! **Why the graph, not a layer config, is the source of truth.** Keras rebuilds a model
//! by calling each layer's constructor with its saved config, which is why a custom layer or
//! loss needs `custom_objects` at load time and why a layer whose config does not capture
//! everything cannot be saved. kiln's layers, losses, metrics, regularizers and schedules are
//! graph ops, and the graph's text format round-trips every op exactly (tested on every op),
//! so the saved graph *is* the model: a loaded model runs the very ops the saved one ran, and
//! training resumes bit for bit (tests/save_model.rs checks this against an uninterrupted
//! run, in the same process and in a fresh one). Custom layers, [`Loss::custom`] and
//! [`Metric::custom`](super::Metric::custom) therefore load without being registered: their
//! ops are in the graph, and `model.txt` keeps their names (`custom name="half_mse"`). What
//! cannot come back is their *code*: compiling a loaded model again with the loss it
//! reports ([`Model::loss`]) is an error saying the code was not saved; pass the
//! `Loss::custom` value again, as Keras' `custom_objects` would.
//!
//! The optimizer comes back as its state (slots, step count, learning rate or schedule:
//! all graph nodes and variables) behind a stand-in [`Optimizer`](crate::train::Optimizer) that reports the
//! learning-rate and step-count nodes, so `ReduceLROnPlateau` and logging keep working.
//!
//! **Writing is atomic** for the whole directory: the three files are written into a fresh,
//! randomly named directory beside the target, then it is renamed into place (the previous
//! model, if any, is moved aside first and removed after). A crash leaves either model, or
//! the new one beside the old one's `.kiln-old-*` copy, never a mix of files. A directory
//! that exists and is not a saved model (no `model.txt` or `graph.kiln`) is never replaced.
//!
//! ```
//! use kiln::prelude::*;
//! use kiln::nn::*;
//! let dir = std::env::temp_dir().join(format!("kiln-save-doc-{}", std::process::id()));
//! let mut model = Sequential::new([Input::new([2]).into(), Dense::new(1).into()]);
//! model.compile(Sgd::new(0.1), Loss::MeanSquaredError, &[Metric::MeanAbsoluteError])?;
//! let x = Array::new([4, 2], vec![0.0f32, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0])?;
//! let y = Array::new([4, 1], vec![1.0f32, 1.0, 2.0, 0.0])?;
//! let cfg = || FitConfig::new().epochs(2).batch_size(2).verbosity(Verbosity::Silent);
//! model.fit(&x, &y, cfg())?;
//! model.save(&dir)?;
//!
//! let mut back = load_model(&dir)?;
//! assert_eq!(back.get_weights()?, model.get_weights()?);
//! back.fit(&x, &y, cfg())?; // continues with the optimizer's state
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), kiln::Error>(())
//! ```

mod config;
mod dir;
mod inference;
mod load;

pub use config::FORMAT_VERSION;
pub use load::load_model;

use super::losses::Loss;
use super::model::{Built, Compiled, Model};
use crate::error::{Error, Result};
use crate::graph::NodeId;
use crate::session::Session;
use crate::text::Dumper;
use config::{CompileCfg, LayerRow, ModelCfg, OptimizerCfg};
use std::path::Path;

/// The config file's name inside a saved-model directory.
pub const CONFIG_FILE: &str = "model.txt";

/// The nodes a saved model refers to, in the order of `graph.kiln`'s `return` line.
#[derive(Default)]
struct Roles(Vec<NodeId>);

impl Roles {
    fn one(&mut self, id: NodeId) -> usize {
        self.0.push(id);
        self.0.len() - 1
    }

    fn all(&mut self, ids: &[NodeId]) -> Vec<usize> {
        ids.iter().map(|&id| self.one(id)).collect()
    }
}

impl Model {
    /// Saves the whole model into the directory `dir`: layers (as the graph and a summary),
    /// weights, optimizer state (slots, step count, learning rate or schedule) and compile
    /// settings, so [`load_model`] gives back a model that trains on exactly as this one
    /// would. See the [module docs](self) for the format. A model that is not compiled
    /// saves its layers and weights (fresh ones if it has no session yet).
    ///
    /// The write is atomic (the whole directory is replaced at once); an existing `dir`
    /// that is not a saved model is refused, never overwritten.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let built = self.built().map_err(|_| {
            Error::invalid("save: the model is not built yet (call build or compile)")
        })?;
        let fresh;
        let session = match &self.session {
            Some(s) => s,
            None => {
                fresh = Session::new(self.graph())?;
                &fresh
            }
        };
        let (cfg, roles) = self.config(built)?;
        let graph_text = Dumper::new(&self.graph().data())
            .outputs(&roles.0)
            .to_string();
        dir::replace(dir.as_ref(), |tmp| {
            crate::atomic::write(&tmp.join(crate::saved::GRAPH_FILE), graph_text.as_bytes())?;
            session.save(tmp.join(crate::saved::VARIABLES_FILE))?;
            crate::atomic::write(&tmp.join(CONFIG_FILE), cfg.to_text().as_bytes())
        })
    }

    /// `model.txt`'s contents and the nodes its indices refer to.
    fn config(&self, b: &Built) -> Result<(ModelCfg, Roles)> {
        let mut r = Roles::default();
        let mut cfg = ModelCfg {
            name: self.name.clone(),
            seed: self.seed,
            inputs: r.all(&b.inputs),
            outputs: r.all(&b.outputs),
            training: r.one(b.training),
            weights: r.all(&b.weights),
            trainable: r.all(&b.trainable),
            updates: r.all(&b.updates),
            losses: r.all(&b.losses),
            layers: b
                .rows
                .iter()
                .map(|row| LayerRow {
                    name: row.name.clone(),
                    kind: row.kind.clone(),
                    shape: row.shape.clone(),
                    params: row.params,
                    trainable: row.trainable,
                })
                .collect(),
            compile: None,
        };
        if let (Some(c), Some(loss), Some(opt)) = (&self.compiled, self.loss, &self.optimizer) {
            let g = self.graph();
            let (lr, it) = match (opt.learning_rate(g), opt.iterations(g)) {
                (Some(lr), Some(it)) => (lr.id(), it.id()),
                _ => {
                    return Err(Error::invalid(
                        "save: the optimizer built no learning-rate and step-count nodes in \
                         this model's graph",
                    ))
                }
            };
            cfg.compile = Some(compile_cfg(&mut r, c, loss, opt.config(), lr, it));
        }
        Ok((cfg, r))
    }
}

fn compile_cfg(
    r: &mut Roles,
    c: &Compiled,
    loss: Loss,
    opt: &crate::train::Config,
    lr: NodeId,
    it: NodeId,
) -> CompileCfg {
    CompileCfg {
        loss,
        target: r.one(c.target),
        loss_node: r.one(c.loss),
        train: r.one(c.train),
        metrics: c
            .metrics
            .iter()
            .map(|(name, id, m)| (name.clone(), r.one(*id), *m))
            .collect(),
        optimizer: OptimizerCfg {
            name: opt.name.clone(),
            lr: r.one(lr),
            iterations: r.one(it),
            learning_rate: opt.learning_rate,
        },
    }
}
