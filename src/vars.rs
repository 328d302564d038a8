//! The variable store: the values of a graph's variables between runs, for either backend.
//!
//! [`Session`](crate::session::Session) (JIT or interpreter) and
//! [`Interpreter`](crate::interp::Interpreter) hold their variables in a [`VarStore`], so
//! there is one place where variables are initialized, set and updated:
//!
//! - **Initialized lazily.** A variable gets its value from its [`Init`](crate::init::Init)
//!   when the store is made, and one added to the graph afterwards (a layer built later, an
//!   optimizer's slots) gets it before the next run ([`VarStore::init_missing`]).
//! - **Set with checks.** [`VarStore::set`] refuses a node that is not a variable of this
//!   graph and a value of another dtype or shape, naming both.
//! - **Updated after a run** ([`VarStore::apply`]): a run computes its assigns' values as
//!   extra outputs (snapshot semantics, see [`crate::graph::effects`]), and the store then
//!   swaps them in. With double buffering on (the session), a variable's previous value is
//!   kept as the buffer its next update is written into ([`VarStore::take_spare`]), so a
//!   training step allocates nothing for its variables.
//! - **The run counter**, which selects each run's random stream and which checkpoints save.

use crate::array::Array;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::effects::Update;
use crate::graph::op::{Op, Ty};
use crate::graph::{Graph, NodeId};
use std::collections::HashMap;

/// Variable values, their spare buffers and the run counter of one graph.
pub(crate) struct VarStore {
    graph: Graph,
    values: HashMap<NodeId, Array>,
    /// Each updated variable's previous value, when double buffering is on.
    spare: HashMap<NodeId, Array>,
    double_buffer: bool,
    runs: u64,
    /// How many node indices [`VarStore::init_missing`] has looked at: a user graph only
    /// grows (invariant 5), so a variable added since has an index at or past this, and a
    /// run on a large graph does not look at every node for new variables.
    seen: usize,
}

impl VarStore {
    /// A store for `graph` with every variable initialized; `double_buffer` keeps each
    /// replaced value for [`VarStore::take_spare`].
    pub(crate) fn new(graph: &Graph, double_buffer: bool) -> Result<VarStore> {
        let mut s = VarStore {
            graph: graph.clone(),
            values: HashMap::new(),
            spare: HashMap::new(),
            double_buffer,
            runs: 0,
            seen: 0,
        };
        s.init_missing()?;
        Ok(s)
    }

    /// Gives every variable without a value (one added to the graph since) its initial
    /// value.
    ///
    /// A value larger than [`crate::shape::alloc_limit`] is an error naming the variable, its
    /// shape and the bytes, instead of an allocation that aborts the process.
    pub(crate) fn init_missing(&mut self) -> Result<()> {
        let d = self.graph.data();
        let bound = petgraph::visit::NodeIndexable::node_bound(&d.g);
        let new = (self.seen..bound).map(|i| NodeId(petgraph::graph::NodeIndex::new(i)));
        for id in new {
            let Some(n) = d.get(id) else { continue };
            if let (Op::Variable { init }, Some(shape)) = (&n.op, n.ty.shape.to_fixed()) {
                if self.values.contains_key(&id) {
                    continue;
                }
                let what = format!("variable {}", n.label());
                crate::shape::check_alloc(&what, n.ty.dtype, &shape).map_err(Error::invalid)?;
                self.values.insert(id, init.try_fill(n.ty.dtype, &shape)?);
            }
        }
        self.seen = bound;
        Ok(())
    }

    /// Every value, by variable: what a backend reads.
    pub(crate) fn values(&self) -> &HashMap<NodeId, Array> {
        &self.values
    }

    /// The current value of a variable.
    pub(crate) fn get(&self, id: NodeId) -> Option<&Array> {
        self.values.get(&id)
    }

    /// `(name, id, type)` of every named variable, in the graph's order.
    pub(crate) fn specs(&self) -> Vec<(String, NodeId, Ty)> {
        let d = self.graph.data();
        d.variables()
            .into_iter()
            .filter_map(|id| {
                let n = d.node(id);
                Some((n.name.as_deref()?.to_string(), id, n.ty.clone()))
            })
            .collect()
    }

    /// Every named variable's name and current value, in the graph's order.
    pub(crate) fn named(&self) -> Vec<(String, &Array)> {
        self.specs()
            .into_iter()
            .filter_map(|(name, id, _)| Some((name, self.values.get(&id)?)))
            .collect()
    }

    /// Replaces a variable's value after checking that `id` is a variable of this graph and
    /// that `value` has its dtype and shape; `f64_for_f32` also accepts an `f64` value for
    /// an `f32` variable (the interpreter's `f64` precision).
    pub(crate) fn set(&mut self, id: NodeId, value: Array, f64_for_f32: bool) -> Result<()> {
        let d = self.graph.data();
        let n = d
            .get(id)
            .ok_or_else(|| Error::invalid("set_variable: not a node of this graph"))?;
        if !matches!(n.op, Op::Variable { .. }) {
            return Err(Error::invalid(format!(
                "set_variable: {} is not a variable",
                n.label()
            )));
        }
        let dtype_ok = value.dtype() == n.ty.dtype
            || (f64_for_f32 && n.ty.dtype == DType::F32 && value.dtype() == DType::F64);
        if !dtype_ok || n.ty.shape.to_fixed().as_deref() != Some(value.shape()) {
            return Err(Error::invalid(format!(
                "set_variable: {} is {}, the value is {}{:?}",
                n.label(),
                n.ty,
                value.dtype(),
                value.shape()
            )));
        }
        drop(d);
        self.values.insert(id, value);
        Ok(())
    }

    /// Sets variables whose dtypes and shapes the caller has checked (a restore checks the
    /// whole file first).
    pub(crate) fn put_checked(&mut self, values: Vec<(NodeId, Array)>) {
        self.values.extend(values);
    }

    /// The buffer `variable`'s next update may be written into: its previous value, or an
    /// empty array when there is none (the backend then allocates).
    pub(crate) fn take_spare(&mut self, variable: NodeId) -> Array {
        self.spare
            .remove(&variable)
            .unwrap_or_else(|| Array::zeros(DType::F32, [0]))
    }

    /// Stores a run's updates: each variable takes its new value, cast to the variable's
    /// dtype if the backend computed in another (the interpreter's `f64` precision). With
    /// double buffering, the old value becomes the variable's spare buffer.
    pub(crate) fn apply(&mut self, updates: &[Update], values: impl IntoIterator<Item = Array>) {
        let d = self.graph.data();
        for (u, value) in updates.iter().zip(values) {
            let dtype = d.node(u.variable).ty.dtype;
            let value = if value.dtype() == dtype {
                value
            } else {
                value.cast(dtype)
            };
            if let Some(old) = self.values.insert(u.variable, value) {
                if self.double_buffer {
                    self.spare.insert(u.variable, old);
                }
            }
        }
    }

    /// How many runs have been counted.
    pub(crate) fn runs(&self) -> u64 {
        self.runs
    }

    /// Sets the run counter (a restore does, to resume random streams exactly).
    pub(crate) fn set_runs(&mut self, runs: u64) {
        self.runs = runs;
    }

    /// Counts one more run and returns the new count.
    pub(crate) fn count_run(&mut self) -> u64 {
        self.runs += 1;
        self.runs
    }
}
