//! `fold`: constant folding.
//!
//! A node whose operands are all constants is evaluated once, with the reference interpreter,
//! and replaced by a constant. Results are therefore exactly what the interpreter would
//! compute at run time. Two kinds of node are left alone: `broadcast_to` (a broadcast scalar
//! is cheaper to keep symbolic; fusion turns it into an immediate) and results larger than
//! [`MAX_FOLD_ELEMENTS`] (folding would trade a cheap kernel for a big literal).

use super::{Pass, PassOptions, Program};
use crate::array::ConstValue;
use crate::error::Result;
use crate::graph::op::{Op, OpGroup};
use crate::interp::{evaluate, Precision};
use std::collections::HashMap;
use std::sync::Arc;

/// Largest result, in elements, that folding materializes.
pub const MAX_FOLD_ELEMENTS: usize = 1 << 16;

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
            if n.op.group() == OpGroup::Source || matches!(n.op, Op::BroadcastTo) {
                continue;
            }
            let all_const = n
                .inputs
                .iter()
                .all(|&i| matches!(p.graph.node(i).op, Op::Constant(_)));
            if !all_const || n.ty.shape.numel().is_none_or(|k| k > MAX_FOLD_ELEMENTS) {
                continue;
            }
            let loc = n.loc.clone();
            // An evaluation error (integer division by zero) is left for run time to report.
            let Ok(mut v) = evaluate(&p.graph, &[id], &[], &no_vars, Precision::F32, 0) else {
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
