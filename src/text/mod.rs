//! Text formats: the canonical dump, its parser, and a Graphviz DOT export.
//!
//! The dump is kiln's one textual form of a graph, in the style of XLA's HLO text: one
//! instruction per line, numbered densely in a deterministic topological order, so that
//! identical graphs dump to identical text and two stages of the optimizer compare with
//! `diff`.
//!
//! ```text
//! kiln.graph {
//!   %0 = placeholder() : f32[?,784] "x"
//!   %1 = variable(init=glorot_uniform(seed=1)) : f32[784,256] "dense_1/kernel"
//!   %2 = matmul(%0, %1) : f32[?,256] "dense_1/matmul"
//!   %3 = reduce_sum(%2, axes=[1], keepdims=false) : f32[?]
//!   return %3
//! }
//! ```
//!
//! A line is `%N = op(operands, key=value, ...) : dtype[shape] "name" @ file:line:col`; the
//! name and location are optional, operands always come before attributes, and attributes
//! appear in the order [`Op::attrs`] gives. Lines starting with `#` are comments: passes
//! attach remarks to nodes (why fusion did not absorb a producer) and the dump prints them
//! just above the node. A fused node is followed by its kernel, indented one level deeper,
//! when the dumper has the program's kernel table ([`Dumper::kernels`]): the graph holds only
//! the kernel's id, and the dump prints the kernel's kind and content rather than the id, so
//! two programs with the same kernels dump alike. Without the table a fused node prints its
//! id (`kernel=3`).
//!
//! [`parse`] reads the format back (everything but fused kernels, which are a compiler
//! artifact rebuilt by the fusion pass), re-running every shape rule and checking it against
//! the written type; dump → parse → dump is the identity, and is tested on every op.
//!
//! [`Op::attrs`]: crate::graph::op::Op::attrs

mod cursor;
mod dot;
mod parse;

pub use dot::to_dot;
pub use parse::{parse, Parsed};

use crate::array::{Array, ArrayData};
use crate::graph::op::Op;
use crate::graph::{Graph, GraphData, NodeId};
use crate::kernel::{Kernel, Kernels};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// Options and context for a dump: which nodes, which outputs, which comments.
///
/// ```
/// use kiln::prelude::*;
/// use kiln::text::Dumper;
/// let g = Graph::new();
/// let x = g.placeholder("x", DType::F32, [None, Some(2)]);
/// let y = (x * 2.0).sum_all();
/// let text = Dumper::new(&g.data()).outputs(&[y.id()]).to_string();
/// assert!(text.contains("return %"));
/// ```
pub struct Dumper<'a> {
    graph: &'a GraphData,
    outputs: Vec<NodeId>,
    only_live: bool,
    locations: bool,
    comments: BTreeMap<NodeId, Vec<String>>,
    kernels: Option<&'a Kernels>,
}

impl<'a> Dumper<'a> {
    /// A dumper of every node of `graph`, without locations.
    pub fn new(graph: &'a GraphData) -> Dumper<'a> {
        Dumper {
            graph,
            outputs: vec![],
            only_live: false,
            locations: false,
            comments: BTreeMap::new(),
            kernels: None,
        }
    }

    /// Print each fused node's kernel from `kernels` (its program's table) below it.
    pub fn kernels(mut self, kernels: &'a Kernels) -> Dumper<'a> {
        self.kernels = Some(kernels);
        self
    }

    /// Print a `return` line naming these nodes.
    pub fn outputs(mut self, outputs: &[NodeId]) -> Dumper<'a> {
        self.outputs = outputs.to_vec();
        self
    }

    /// Print only the nodes the outputs depend on.
    pub fn only_live(mut self, yes: bool) -> Dumper<'a> {
        self.only_live = yes;
        self
    }

    /// Print each node's source location (`@ src/main.rs:12:9`).
    pub fn locations(mut self, yes: bool) -> Dumper<'a> {
        self.locations = yes;
        self
    }

    /// Print `text` as a comment above the node `id`.
    pub fn comment(mut self, id: NodeId, text: impl Into<String>) -> Dumper<'a> {
        self.comments.entry(id).or_default().push(text.into());
        self
    }

    /// The dense numbering the dump uses: node id to `%N`.
    pub fn numbering(&self) -> (Vec<NodeId>, HashMap<NodeId, usize>) {
        let order = if self.only_live {
            self.graph.topo_order_from(&self.outputs)
        } else {
            self.graph.topo_order()
        };
        let num = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        (order, num)
    }
}

impl std::fmt::Display for Dumper<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (order, num) = self.numbering();
        let mut out = String::from("kiln.graph {\n");
        for &id in &order {
            if let Some(cs) = self.comments.get(&id) {
                for c in cs {
                    for line in c.lines() {
                        let _ = writeln!(out, "  # {line}");
                    }
                }
            }
            let node = self.graph.node(id);
            out.push_str("  ");
            let kernel = match &node.op {
                Op::Fusion(k) => self.kernels.and_then(|t| t.get(*k)),
                _ => None,
            };
            write_node(&mut out, self.graph, id, &num, self.locations, kernel);
            out.push('\n');
            if let Some(k) = kernel {
                let mut block = String::new();
                k.write_block("kernel", &mut block);
                for line in block.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        if !self.outputs.is_empty() {
            let outs: Vec<String> = self
                .outputs
                .iter()
                .map(|o| match num.get(o) {
                    Some(n) => format!("%{n}"),
                    None => "%?".to_string(),
                })
                .collect();
            let _ = writeln!(out, "  return {}", outs.join(", "));
        }
        out.push_str("}\n");
        f.write_str(&out)
    }
}

/// Writes one instruction (without indentation or newline).
fn write_node(
    out: &mut String,
    g: &GraphData,
    id: NodeId,
    num: &HashMap<NodeId, usize>,
    locations: bool,
    kernel: Option<&Kernel>,
) {
    let node = g.node(id);
    let _ = write!(out, "%{} = {}(", num[&id], node.op.name());
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !first {
            out.push_str(", ");
        }
        first = false;
    };
    for i in &node.inputs {
        sep(out);
        match num.get(i) {
            Some(n) => {
                let _ = write!(out, "%{n}");
            }
            None => out.push_str("%?"),
        }
    }
    if let Op::Constant(c) = &node.op {
        sep(out);
        out.push_str("value=");
        write_value(out, &c.0);
    }
    let attrs = match kernel {
        Some(k) => vec![("kind", k.kind().to_string())],
        None => node.op.attrs(),
    };
    for (k, v) in attrs {
        sep(out);
        let _ = write!(out, "{k}={v}");
    }
    let _ = write!(out, ") : {}", node.ty);
    if let Some(n) = &node.name {
        let _ = write!(out, " {n:?}");
    }
    if locations {
        if let Some(l) = &node.loc {
            let _ = write!(out, " @ {l}");
        }
    }
    if g.is_invalid(id) {
        out.push_str("  # invalid");
    }
}

/// A constant's elements: one scalar, or a flat row-major list (the shape is in the type).
fn write_value(out: &mut String, a: &Array) {
    fn list<T>(out: &mut String, v: &[T], scalar: bool, f: impl Fn(&T) -> String) {
        if scalar {
            out.push_str(&f(&v[0]));
            return;
        }
        out.push('[');
        for (i, x) in v.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&f(x));
        }
        out.push(']');
    }
    let scalar = a.shape().is_empty();
    match a.data() {
        ArrayData::F32(v) => list(out, v, scalar, |x| format!("{x:?}")),
        ArrayData::F64(v) => list(out, v, scalar, |x| format!("{x:?}")),
        ArrayData::I32(v) => list(out, v, scalar, |x| x.to_string()),
        ArrayData::Bool(v) => list(out, v, scalar, |x| x.to_string()),
        ArrayData::I64(v) => list(out, v, scalar, |x| x.to_string()),
        ArrayData::I8(v) => list(out, v, scalar, |x| x.to_string()),
        ArrayData::U8(v) => list(out, v, scalar, |x| x.to_string()),
        // The f32 value's shortest form, which parses back (through f32) to the same half.
        ArrayData::F16(v) => list(out, v, scalar, |x| format!("{:?}", x.to_f32())),
        ArrayData::BF16(v) => list(out, v, scalar, |x| format!("{:?}", x.to_f32())),
    }
}

impl GraphData {
    /// The canonical dump of every node, without source locations (see [`crate::text`]).
    pub fn dump(&self) -> String {
        Dumper::new(self).to_string()
    }

    /// The dump with each node's source location.
    pub fn dump_with_locations(&self) -> String {
        Dumper::new(self).locations(true).to_string()
    }
}

impl Graph {
    /// The canonical dump of the graph (see [`crate::text`]).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// let g = Graph::new();
    /// let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    /// let _y = x.exp().named("y");
    /// assert_eq!(
    ///     g.dump(),
    ///     "kiln.graph {\n  %0 = placeholder() : f32[?,3] \"x\"\n  %1 = exp(%0) : f32[?,3] \"y\"\n}\n"
    /// );
    /// ```
    pub fn dump(&self) -> String {
        self.data().dump()
    }

    /// The dump with each node's source location.
    pub fn dump_with_locations(&self) -> String {
        self.data().dump_with_locations()
    }

    /// Graphviz DOT text of the graph (see [`to_dot`]).
    pub fn to_dot(&self) -> String {
        to_dot(&self.data())
    }

    /// Parses a dump back into a graph (see [`parse`]).
    pub fn parse(text: &str) -> crate::Result<Graph> {
        Ok(parse(text)?.graph)
    }
}
