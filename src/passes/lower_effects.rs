//! `lower_effects`: every program becomes pure before any other pass sees it.
//!
//! The one effect in a kiln graph is `assign(variable, value)`, grouped by `group` into train
//! ops. Effects are collected from the user's graph before the pipeline runs
//! ([`crate::graph::effects::collect`]): the values being assigned become extra outputs, and
//! the session stores them into the variables after the run. Inside the program, then, an
//! assign *means* its value and a group *means* the constant `true`; this pass rewrites them
//! so, and removes the effect nodes (nothing uses them any more).
//!
//! It is **mandatory**: [`super::Pipeline`] runs it before its editable passes, whatever they
//! are (an empty pipeline included), and the pass verifier refuses an `assign` or `group` in
//! the program after it. It used to be two rules inside `simplify`, so a pipeline without
//! `simplify` handed assigns to the backends and changed what the graph meant.
//!
//! It changes no value: an assign's output *is* its value, and a group's is `true`.

use super::{Pass, PassOptions, Program};
use crate::array::{Array, ConstValue};
use crate::error::Result;
use crate::graph::op::Op;
use std::sync::Arc;

/// See the module docs.
pub struct LowerEffects;

/// The name the pass reports under (in [`super::PipelineReport`] and dumps).
pub(crate) const NAME: &str = "lower_effects";

impl Pass for LowerEffects {
    fn name(&self) -> &str {
        NAME
    }

    fn run(&self, p: &mut Program, _opts: &PassOptions) -> Result<bool> {
        let mut changed = false;
        // Operands before users: a group's assigns are lowered before the group.
        for id in p.live_order() {
            let n = p.graph.node(id);
            let new = match n.op {
                Op::Assign => n.inputs[1],
                Op::Group => {
                    let loc = n.loc.clone();
                    let t = ConstValue(Arc::new(Array::scalar(true)));
                    p.graph.add_node(Op::Constant(t), &[], None, None, loc)
                }
                _ => continue,
            };
            p.replace(id, new);
            p.graph.remove_node(id);
            changed = true;
        }
        Ok(changed)
    }
}
