//! The graph walks (`src/graph/walk.rs`): the topological order every dump, pass and backend
//! relies on, and cycle detection.

use kiln::graph::{GraphData, NodeId};
use kiln::prelude::*;
use std::collections::HashSet;

mod common;
use common::*;

/// The order as it was specified before the walk moved to petgraph: depth-first post-order
/// from each root, operands in operand order. The petgraph walk must reproduce it exactly
/// (dumps number nodes by it and are snapshot-tested).
fn reference_order(g: &GraphData, roots: &[NodeId]) -> Vec<NodeId> {
    reference_order_until(g, roots, &HashSet::new())
}

/// The same, not looking past `fed` nodes (the old walk of the interpreter, which now uses `topo_order_until`).
fn reference_order_until(g: &GraphData, roots: &[NodeId], fed: &HashSet<NodeId>) -> Vec<NodeId> {
    let mut seen = HashSet::new();
    let mut out = vec![];
    for &root in roots {
        if !seen.insert(root) {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        while let Some((id, i)) = stack.pop() {
            let inputs: &[NodeId] = if fed.contains(&id) {
                &[]
            } else {
                &g.node(id).inputs
            };
            if i < inputs.len() {
                stack.push((id, i + 1));
                if seen.insert(inputs[i]) {
                    stack.push((inputs[i], 0));
                }
            } else {
                out.push(id);
            }
        }
    }
    out
}

#[test]
fn the_order_is_depth_first_in_operand_order() {
    for seed in 0..80 {
        let (g, outs) = random_graph(seed);
        let mut d = g.snapshot();
        assert_eq!(d.topo_order_from(&outs), reference_order(&d, &outs));
        assert_eq!(d.topo_order(), reference_order(&d, &d.ids()));
        // Feeding every third node.
        let fed: HashSet<NodeId> = d.ids().into_iter().step_by(3).collect();
        assert_eq!(
            d.topo_order_until(&outs, |id| fed.contains(&id)),
            reference_order_until(&d, &outs, &fed)
        );
        // Rewired operands keep operand order (petgraph's own edge lists would put a re-added
        // edge first).
        let ids = d.ids();
        for &id in ids.iter().rev().take(4) {
            let n = d.node(id).clone();
            if n.inputs.len() == 2 && d.node(n.inputs[0]).ty == d.node(n.inputs[1]).ty {
                kiln::internals::set_input(&mut d, id, 0, n.inputs[1]);
                kiln::internals::set_input(&mut d, id, 1, n.inputs[0]);
            }
        }
        assert_eq!(d.topo_order_from(&outs), reference_order(&d, &outs));
        assert_eq!(d.find_cycle(), None);
    }
}

#[test]
fn a_walk_stops_at_fed_nodes() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3]);
    let a = x.exp();
    let b = a.tanh();
    let c = b + x;
    let d = g.data();
    let order = d.topo_order_until(&[c.id()], |id| id == b.id());
    // `b` is fed: `a` is not needed, `x` still is (through `c`).
    assert_eq!(order, vec![b.id(), x.id(), c.id()]);
}

#[test]
fn a_cycle_made_by_rewiring_is_found() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3]);
    let a = x.exp();
    let b = a.tanh();
    let mut d = g.snapshot();
    assert_eq!(d.find_cycle(), None);
    kiln::internals::set_input(&mut d, a.id(), 0, b.id());
    let on_cycle = d.find_cycle().expect("a cycle");
    assert!(on_cycle == a.id() || on_cycle == b.id());
}

/// Stack use must not depend on the graph's size: a chain of 100,000 nodes is walked, checked
/// for cycles and dumped on a thread with a 256 KiB stack.
#[test]
fn deep_chains_need_no_deep_stack() {
    let worker = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let g = Graph::new();
            let x = g.placeholder("x", DType::F32, [2]);
            let mut t = x;
            for _ in 0..100_000 {
                t = -t;
            }
            let d = g.data();
            let order = d.topo_order_from(&[t.id()]);
            assert_eq!(order.len(), 100_001);
            assert_eq!(order[0], x.id());
            assert_eq!(d.topo_order().len(), 100_001);
            assert_eq!(d.find_cycle(), None);
            order.last().copied()
        })
        .unwrap();
    assert!(worker.join().unwrap().is_some());
}
