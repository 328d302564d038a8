//! Graph walks: the deterministic topological order and cycle detection, on petgraph.
//!
//! Dumps number nodes densely in this order and are snapshot-tested, CSE and the memory plan
//! visit nodes in it, and the interpreter schedules by it, so the order is part of kiln's
//! observable behaviour: depth-first from each root in turn, operands before users, a node's
//! operands visited in *operand order* (`inputs[0]` first).
//!
//! petgraph's [`DfsPostOrder`] gives exactly that order when a node's neighbours are its
//! operands in reverse: it pushes all neighbours on a stack and visits the last pushed first,
//! marking nodes when they are visited (not when pushed), which is the recursive post-order
//! depth-first search, run iteratively. The stable graph's own edge lists cannot be used as
//! the neighbours: they come newest edge first, and [`GraphData::set_input`] re-adds an edge,
//! so a rewritten operand would move to the back of the walk and change every later dump.
//! [`Operands`] is therefore a petgraph view of the graph whose neighbours are read from
//! `Node::inputs` (which the edges mirror, ARCHITECTURE invariant 4).
//!
//! Both walks are iterative (petgraph's `DfsPostOrder` and [`petgraph::algo::toposort`] keep
//! explicit stacks), so their stack use does not grow with the graph; the recursive
//! `petgraph::algo::is_cyclic_directed` is deliberately not used.

use super::{GraphData, Node, NodeId};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{DfsPostOrder, GraphBase, GraphRef, IntoNeighbors, Visitable};

/// A petgraph view of a graph in which a node's neighbours are its operands, last first,
/// and nodes for which `stop` holds have none (values supplied from outside, such as feeds).
#[derive(Clone, Copy)]
struct Operands<'a> {
    g: &'a GraphData,
    stop: &'a dyn Fn(NodeId) -> bool,
}

impl GraphBase for Operands<'_> {
    type NodeId = NodeIndex<u32>;
    type EdgeId = ();
}

impl GraphRef for Operands<'_> {}

impl Visitable for Operands<'_> {
    type Map = <StableDiGraph<Node, u32> as Visitable>::Map;
    fn visit_map(&self) -> Self::Map {
        self.g.g.visit_map()
    }
    fn reset_map(&self, map: &mut Self::Map) {
        self.g.g.reset_map(map)
    }
}

impl<'a> IntoNeighbors for Operands<'a> {
    type Neighbors =
        std::iter::Map<std::iter::Rev<std::slice::Iter<'a, NodeId>>, fn(&NodeId) -> NodeIndex<u32>>;
    fn neighbors(self, n: NodeIndex<u32>) -> Self::Neighbors {
        let inputs: &'a [NodeId] = if (self.stop)(NodeId(n)) {
            &[]
        } else {
            &self.g.g[n].inputs
        };
        inputs.iter().rev().map(|id| id.0)
    }
}

impl GraphData {
    /// A deterministic topological order of the whole graph: depth-first from each node in
    /// index order, operands before users, operands visited in operand order.
    pub fn topo_order(&self) -> Vec<NodeId> {
        self.walk(&self.ids(), &|_| false)
    }

    /// The nodes that `roots` depend on (roots included), in deterministic topological order.
    pub fn topo_order_from(&self, roots: &[NodeId]) -> Vec<NodeId> {
        self.walk(roots, &|_| false)
    }

    /// [`GraphData::topo_order_from`], not looking past the nodes for which `stop` holds:
    /// they are listed, their operands are not (unless something else needs them). This is
    /// the order of a run in which those nodes are fed.
    pub fn topo_order_until(&self, roots: &[NodeId], stop: impl Fn(NodeId) -> bool) -> Vec<NodeId> {
        self.walk(roots, &stop)
    }

    fn walk(&self, roots: &[NodeId], stop: &dyn Fn(NodeId) -> bool) -> Vec<NodeId> {
        let view = Operands { g: self, stop };
        let mut dfs = DfsPostOrder::empty(view);
        let mut out = Vec::new();
        for r in roots {
            // The visited sets persist across roots: a root already listed yields nothing.
            dfs.move_to(r.0);
            while let Some(n) = dfs.next(view) {
                out.push(NodeId(n));
            }
        }
        out
    }

    /// A node on a cycle, if the graph has one. Graphs built by `add_node` cannot, since a
    /// node's operands exist before it; a pass that rewires operands (with
    /// [`GraphData::replace_all_uses`]) could, and the pass verifier calls this to catch it.
    pub fn find_cycle(&self) -> Option<NodeId> {
        petgraph::algo::toposort(&self.g, None)
            .err()
            .map(|c| NodeId(c.node_id()))
    }
}
