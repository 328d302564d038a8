//! Ops that can fail while a graph runs, and the error that names them.
//!
//! A build error names the op, its operands and the user's line; a runtime error must too,
//! on both backends. The interpreter evaluates the user's nodes, so it names the node it is
//! evaluating. The JIT runs fused kernels, whose member ops are gone from the optimized
//! graph: fusion records, for each kernel, the user's nodes inside it that can fail
//! ([`GraphData::fallible_between`]), and the executable names those when the kernel reports
//! a failure. Both go through [`Node::runtime_error`], so the message is the same.

use super::op::{BinaryOp, Op};
use super::{GraphData, Node, NodeId};
use crate::dtype::DType;
use crate::error::Error;
use std::collections::HashSet;

impl Node {
    /// True if evaluating this node can fail for some operand values: an integer division
    /// (by zero). Every other op is total (float arithmetic gives NaN or inf, not an error).
    pub(crate) fn can_fail_at_run(&self) -> bool {
        match &self.op {
            Op::Binary(b) => match b {
                BinaryOp::Div => matches!(self.ty.dtype, DType::I32 | DType::I64),
                BinaryOp::Add
                | BinaryOp::Sub
                | BinaryOp::Mul
                | BinaryOp::Pow
                | BinaryOp::Rem
                | BinaryOp::Max
                | BinaryOp::Min
                | BinaryOp::Eq
                | BinaryOp::Ne
                | BinaryOp::Lt
                | BinaryOp::Le
                | BinaryOp::Gt
                | BinaryOp::Ge => false,
            },
            Op::Placeholder
            | Op::Variable { .. }
            | Op::Constant(_)
            | Op::Random { .. }
            | Op::Unary(_)
            | Op::Where
            | Op::Cast(_)
            | Op::Reduce { .. }
            | Op::Reshape
            | Op::Permute(_)
            | Op::BroadcastTo
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Concat { .. }
            | Op::MatMul
            | Op::Conv { .. }
            | Op::Pool { .. }
            | Op::StopGradient
            | Op::Size { .. }
            | Op::Assign
            | Op::Group
            | Op::AllReduce
            // A kernel's own members are recorded when it is built.
            | Op::Fusion(_) => false,
        }
    }

    /// How a runtime error names this node: `div "ratio" at src/main.rs:12:9` (the op, the
    /// name if any, the user's line if known).
    pub(crate) fn site(&self) -> String {
        let name = self.name.as_deref().map(|n| format!(" {n:?}"));
        let at = self.loc.as_ref().map(|l| format!(" at {l}"));
        format!(
            "{}{}{}",
            self.op.name(),
            name.unwrap_or_default(),
            at.unwrap_or_default()
        )
    }

    /// An [`Error::Runtime`] naming this node's op, its name and the user's line:
    /// `div "ratio" at src/main.rs:12:9: integer division by zero`.
    pub(crate) fn runtime_error(&self, msg: impl Into<String>) -> Error {
        Error::Runtime {
            op: self.op.name().to_string(),
            name: self.name.as_deref().map(str::to_string),
            loc: self.loc.clone(),
            msg: msg.into(),
        }
    }
}

impl GraphData {
    /// The nodes that can fail at run time ([`Node::can_fail_at_run`]) among those computed
    /// in one kernel: `root` and what it reads, back to the kernel's parameters `params`
    /// (a fused node, or the operand of a `size`, which reads only a shape, is not walked
    /// through). Copies, in creation order, taken before the kernel replaces them.
    pub(crate) fn fallible_between(&self, root: NodeId, params: &[NodeId]) -> Vec<Node> {
        let stop: HashSet<NodeId> = params.iter().copied().collect();
        let mut seen: HashSet<NodeId> = HashSet::from([root]);
        let mut stack = vec![root];
        let mut found = vec![];
        while let Some(id) = stack.pop() {
            let n = self.node(id);
            if n.can_fail_at_run() {
                found.push(id);
            }
            if matches!(n.op, Op::Fusion(_) | Op::Size { .. }) {
                continue;
            }
            for &i in &n.inputs {
                if !stop.contains(&i) && seen.insert(i) {
                    stack.push(i);
                }
            }
        }
        found.sort_unstable();
        found.into_iter().map(|id| self.node(id).clone()).collect()
    }
}
