//! `dce`: dead-code elimination to the requested outputs.
//!
//! Every node that no output depends on is removed, placeholders and variables included: an
//! executable compiled for some fetches reads only the feeds and variables those need.

use super::{Pass, PassOptions, Program};
use crate::error::Result;
use crate::graph::{GraphData, NodeId};
use std::collections::{BinaryHeap, HashMap, HashSet};

/// See the module docs.
pub struct Dce;

/// Removes from `g` every node that `outputs` do not depend on; returns how many went.
///
/// Users go before their operands (a node is removed only once nothing uses it), and among
/// the nodes ready to go, the newest first. The order is what keeps this linear: petgraph
/// unlinks an edge by walking its source's list of outgoing edges, newest first, so
/// removing a hub's users oldest first (a constant that CSE made shared by thousands of
/// ops of a chain) walked the whole list for each, quadratic in the hub's fan-out.
pub(crate) fn remove_dead(g: &mut GraphData, outputs: &[NodeId]) -> usize {
    let live: HashSet<NodeId> = g.topo_order_from(outputs).into_iter().collect();
    let dead: Vec<NodeId> = g
        .ids()
        .into_iter()
        .filter(|id| !live.contains(id))
        .collect();
    // Users of each dead node still present (every user of a dead node is dead).
    let mut waiting: HashMap<NodeId, usize> = dead.iter().map(|&id| (id, 0)).collect();
    for &id in &dead {
        for &i in &g.node(id).inputs {
            if let Some(w) = waiting.get_mut(&i) {
                *w += 1;
            }
        }
    }
    let mut ready: BinaryHeap<NodeId> =
        dead.iter().copied().filter(|id| waiting[id] == 0).collect();
    let mut removed = 0;
    while let Some(id) = ready.pop() {
        // (`remove_node` hands back the node without its operands.)
        let inputs = g.node(id).inputs.clone();
        if g.remove_node(id).is_none() {
            continue;
        }
        removed += 1;
        for i in inputs {
            if let Some(w) = waiting.get_mut(&i) {
                *w -= 1;
                if *w == 0 {
                    ready.push(i);
                }
            }
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
