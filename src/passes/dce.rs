//! `dce`: dead-code elimination to the requested outputs.
//!
//! Every node that no output depends on is removed, placeholders and variables included: an
//! executable compiled for some fetches reads only the feeds and variables those need.

use super::{Pass, PassOptions, Program};
use crate::error::Result;
use crate::graph::{GraphData, NodeId};
use std::collections::HashSet;

/// See the module docs.
pub struct Dce;

/// Removes from `g` every node that `outputs` do not depend on; returns how many went.
pub(crate) fn remove_dead(g: &mut GraphData, outputs: &[NodeId]) -> usize {
    let live: HashSet<NodeId> = g.topo_order_from(outputs).into_iter().collect();
    let mut removed = 0;
    // Remove users before operands: reverse topological order of the whole graph.
    for id in g.topo_order().into_iter().rev() {
        if !live.contains(&id) && g.remove_node(id).is_some() {
            removed += 1;
        }
    }
    removed
}

impl Pass for Dce {
    fn name(&self) -> &str {
        "dce"
    }
    fn run(&self, p: &mut Program, _opts: &PassOptions) -> Result<bool> {
        let outputs = p.outputs.clone();
        Ok(remove_dead(&mut p.graph, &outputs) > 0)
    }
}
