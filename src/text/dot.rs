//! Graphviz DOT export: `dot -Tsvg graph.dot > graph.svg`.
//!
//! Nodes carry the same `%N` numbers as the text dump, so a picture and a dump can be read
//! side by side. Sources are boxes, fused kernels are filled, invalid nodes are red.

use super::Dumper;
use crate::graph::op::OpGroup;
use crate::graph::GraphData;
use std::fmt::Write as _;

/// The graph as Graphviz DOT text.
///
/// ```
/// use kiln::prelude::*;
/// let g = Graph::new();
/// let x = g.placeholder("x", DType::F32, [2]);
/// let _ = x.exp();
/// let dot = g.to_dot();
/// assert!(dot.starts_with("digraph kiln {"));
/// assert!(dot.contains("n0 -> n1"));
/// ```
pub fn to_dot(g: &GraphData) -> String {
    let (order, num) = Dumper::new(g).numbering();
    let mut out = String::from("digraph kiln {\n  rankdir=TB;\n  node [fontname=\"monospace\"];\n");
    for &id in &order {
        let n = g.node(id);
        let mut label = format!("%{} {}", num[&id], n.op.name());
        if let Some(name) = &n.name {
            let _ = write!(label, "\\n{}", escape(name));
        }
        let _ = write!(label, "\\n{}", n.ty);
        let style = match n.op.group() {
            OpGroup::Source => ", shape=box",
            OpGroup::Fused => ", shape=box, style=filled, fillcolor=\"#dde8ff\"",
            _ => "",
        };
        let color = if g.is_invalid(id) { ", color=red" } else { "" };
        let _ = writeln!(out, "  n{} [label=\"{label}\"{style}{color}];", num[&id]);
    }
    for &id in &order {
        for (pos, i) in g.node(id).inputs.iter().enumerate() {
            if let Some(from) = num.get(i) {
                let _ = writeln!(
                    out,
                    "  n{from} -> n{} [label=\"{pos}\", fontsize=8];",
                    num[&id]
                );
            }
        }
    }
    out.push_str("}\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
