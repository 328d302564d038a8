//! Effects: how `assign` nodes become variable updates.
//!
//! A kiln graph is pure: every node is a function of its inputs, so passes may reorder, merge
//! and delete nodes freely. The one effect is [`Op::Assign`], and it is kept out of the
//! program entirely:
//!
//! 1. Before a run, [`collect`] walks back from the fetches and lists every assign it reaches
//!    (through [`Op::Group`] targets and ordinary nodes alike) as a `(variable, value)` pair.
//! 2. The values are computed as extra outputs of the run, next to the user's fetches. Inside
//!    the program an assign is just its value and a group is the constant `true`, so the
//!    optimizer sees a pure graph.
//! 3. When the run has finished, each variable is replaced by its new value.
//!
//! So a run has *snapshot semantics*: every read of a variable sees the value it had when the
//! run began, whatever the order of evaluation, and the JIT can compute new weights while its
//! kernels still read the old ones. This is the semantics of a JAX train step
//! (`params = step(params, batch)`) with the ergonomics of a TF1 train op. Assigning the same
//! variable twice in one run is an error, since no order between the two is defined.

use super::op::Op;
use super::{GraphData, NodeId};
use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};

/// A variable update found behind the fetches of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Update {
    /// The variable.
    pub variable: NodeId,
    /// The node whose value the variable takes.
    pub value: NodeId,
}

/// Every assign reachable from `fetches`, in a deterministic order (depth-first from the
/// fetches, operands in order). Errors if a variable is assigned twice.
pub fn collect(d: &GraphData, fetches: &[NodeId]) -> Result<Vec<Update>> {
    let mut seen: HashSet<NodeId> = HashSet::new();
    let mut stack: Vec<NodeId> = fetches.iter().rev().copied().collect();
    let mut out: Vec<Update> = Vec::new();
    let mut by_var: HashMap<NodeId, NodeId> = HashMap::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(n) = d.get(id) else { continue };
        if matches!(n.op, Op::Assign) {
            let (var, value) = (n.inputs[0], n.inputs[1]);
            if let Some(&first) = by_var.get(&var) {
                let at = |i: NodeId| {
                    d.node(i)
                        .loc
                        .as_ref()
                        .map(|l| format!(" at {l}"))
                        .unwrap_or_default()
                };
                return Err(Error::Feed(format!(
                    "variable {} is assigned twice in one run (assign{} and assign{}); \
                     a run has no order between them",
                    d.node(var).label(),
                    at(first),
                    at(id)
                )));
            }
            by_var.insert(var, id);
            out.push(Update {
                variable: var,
                value,
            });
        }
        stack.extend(n.inputs.iter().rev());
    }
    Ok(out)
}

/// The fetches of a run followed by the values of its updates: what a backend computes.
pub fn with_updates(fetches: &[NodeId], updates: &[Update]) -> Vec<NodeId> {
    fetches
        .iter()
        .copied()
        .chain(updates.iter().map(|u| u.value))
        .collect()
}
