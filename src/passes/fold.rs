//! `fold`: constant folding.
//!
//! A node whose operands are all constants is evaluated once, with the reference interpreter,
//! and replaced by a constant. Results are therefore exactly what the interpreter would
//! compute at run time. Two kinds of node are left alone: `broadcast_to` (a broadcast scalar
//! is cheaper to keep symbolic; fusion turns it into an immediate) and results larger than
//! `MAX_FOLD_ELEMENTS` (folding would trade a cheap kernel for a big literal).
//!
//! An elementwise op whose operands are all *broadcast scalars* (`broadcast_to` of a scalar
//! constant) is folded on the scalars and broadcast again: `neg(broadcast_to(c))` becomes
//! `broadcast_to(-c)`, whatever the shape. Gradient seeds are made of such nodes (the seed of
//! a mean is `broadcast_to(1/n)`), and without this rule each would become a kernel that
//! computes one number into a whole buffer.

use super::{Pass, PassOptions, Program};
use crate::array::ConstValue;
use crate::error::Result;
use crate::graph::op::{Op, OpGroup};
use crate::graph::{GraphData, NodeId};
use crate::interp::{evaluate, evaluate_lowered, Precision};
use std::collections::HashMap;
use std::sync::Arc;

/// Largest result, in elements, that folding materializes.
pub(crate) const MAX_FOLD_ELEMENTS: usize = 1 << 16;

/// See the module docs.
pub struct Fold;

impl Pass for Fold {
    fn name(&self) -> &str {
        "fold"
    }
    fn run(&self, p: &mut Program, _opts: &PassOptions) -> Result<bool> {
        let mut changed = false;
        let no_vars = HashMap::new();
        for id in p.live_order() {
            let n = p.graph.node(id);
            // A collective communicates: never evaluated at compile time.
            if n.op.group() == OpGroup::Source || matches!(n.op, Op::BroadcastTo | Op::AllReduce) {
                continue;
            }
            if let Some(c) = fold_broadcast_scalars(p, id) {
                p.replace(id, c);
                changed = true;
                continue;
            }
            let n = p.graph.node(id);
            let all_const = n
                .inputs
                .iter()
                .all(|&i| matches!(p.graph.node(i).op, Op::Constant(_)));
            if !all_const || n.ty.shape.numel().is_none_or(|k| k > MAX_FOLD_ELEMENTS) {
                continue;
            }
            let loc = n.loc.clone();
            // An evaluation error (integer division by zero) is left for run time to report.
            // (A fused node, in a pipeline folding after fusion, needs the program's kernels.)
            let folded = evaluate_lowered(
                &p.graph,
                &p.kernels,
                &[id],
                &[],
                &no_vars,
                Precision::F32,
                0,
            );
            let Ok(mut v) = folded else {
                continue;
            };
            let value = v.remove(0);
            let c = p.graph.add_node(
                Op::Constant(ConstValue(Arc::new(value))),
                &[],
                None,
                None,
                loc,
            );
            p.replace(id, c);
            changed = true;
        }
        Ok(changed)
    }
}

/// `op(broadcast_to(c1), ..., broadcast_to(ck))` with scalar constants `ci`, as
/// `broadcast_to(op(c1, ..., ck))`; `None` if the node is not of that form.
fn fold_broadcast_scalars(p: &mut Program, id: NodeId) -> Option<NodeId> {
    let n = p.graph.node(id);
    if !matches!(n.op, Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast(_))
        || n.ty.shape.rank() == 0
    {
        return None;
    }
    let mut scalars = vec![];
    for &i in &n.inputs {
        let m = p.graph.node(i);
        let c = match &m.op {
            Op::BroadcastTo => p.graph.node(m.inputs[0]),
            _ => return None,
        };
        match &c.op {
            // One element of any shape broadcasts as its scalar does.
            Op::Constant(v) if v.0.len() == 1 => {
                let a = (*v.0).clone().reshape(Vec::<usize>::new()).ok()?;
                scalars.push(ConstValue(Arc::new(a)));
            }
            _ => return None,
        }
    }
    // Evaluate the op on the scalars in a scratch graph, with the interpreter.
    let mut scratch = GraphData::new();
    let ins: Vec<NodeId> = scalars
        .into_iter()
        .map(|v| scratch.add_node(Op::Constant(v), &[], None, None, None))
        .collect();
    let (op, ty, loc) = (n.op.clone(), n.ty.clone(), n.loc.clone());
    let out = scratch.add_node(op, &ins, None, None, None);
    if scratch.check().is_err() {
        return None;
    }
    let value = evaluate(&scratch, &[out], &[], &HashMap::new(), Precision::F32, 0)
        .ok()?
        .remove(0);
    let c = p.graph.add_node(
        Op::Constant(ConstValue(Arc::new(value))),
        &[],
        None,
        None,
        loc.clone(),
    );
    Some(p.graph.add_node(Op::BroadcastTo, &[c], Some(ty), None, loc))
}
