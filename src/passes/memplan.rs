//! `memplan`: liveness-based assignment of intermediates to reusable buffers.
//!
//! Runs last, on the fused program. It walks the schedule (the deterministic topological
//! order of the live nodes) and gives each computed value a buffer slot:
//!
//! - a value's slot is free again after its last reader has run;
//! - a new value takes the smallest free slot that is large enough, else enlarges the largest
//!   free slot, else opens a new one, so slots are few and reused;
//! - an elementwise kernel writes **in place** into a parameter's slot when that parameter
//!   dies at this kernel, has the output's size, and is read only at the element being
//!   written (an identity index map), so no element is overwritten before it is read;
//! - a standalone `reshape` aliases its input's slot (same bytes, new shape);
//! - outputs (fetches) and sources (feeds, variables, constants) live outside the plan: an
//!   output is written straight into the buffer handed back to the caller.
//!
//! The report compares the plan's peak (the sum of all slot sizes, all of which live for the
//! whole run) with the unplanned sum of every intermediate's size; outputs are counted apart
//! ([`MemoryPlan::output_bytes`]).

use super::{Pass, PassOptions, Program};
use crate::error::Result;
use crate::graph::op::{Op, OpGroup};
use crate::graph::NodeId;
use crate::kernel::{Core, Expr};
use std::collections::HashMap;

/// See the module docs.
pub struct MemPlan;

/// Where every intermediate lives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Size in bytes of each slot.
    pub slots: Vec<usize>,
    /// The slot of each computed node.
    pub slot_of: HashMap<NodeId, usize>,
    /// Kernels that write over a dying parameter: `(kernel, parameter)`.
    pub in_place: Vec<(NodeId, NodeId)>,
    /// Bytes of all slots: the planned peak of intermediate memory.
    pub peak_bytes: usize,
    /// Bytes of all intermediates if each had its own buffer.
    pub unplanned_bytes: usize,
    /// Bytes of the outputs (fetches). They are not in the slots: each is written to its own
    /// buffer, the one handed back to the caller (or a variable's, for an update).
    pub output_bytes: usize,
}

fn bytes(p: &Program, id: NodeId) -> usize {
    let t = &p.graph.node(id).ty;
    t.shape.numel().unwrap_or(0) * t.dtype.size_bytes()
}

/// Plans the program's memory (its shapes must be concrete).
pub fn plan(p: &Program) -> MemoryPlan {
    let order = p.live_order();
    // Last reader of each value (outputs live to the end).
    let mut last_use: HashMap<NodeId, usize> = HashMap::new();
    for (i, &id) in order.iter().enumerate() {
        for &input in &p.graph.node(id).inputs {
            last_use.insert(input, i);
        }
    }
    for &o in &p.outputs {
        last_use.insert(o, usize::MAX);
    }
    let is_output: std::collections::HashSet<NodeId> = p.outputs.iter().copied().collect();
    let mut plan = MemoryPlan::default();
    let mut free: Vec<usize> = vec![];
    // The slot's current holders: a slot is free when all of them are dead.
    let mut dies_at: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut holder_end: HashMap<usize, usize> = HashMap::new();
    for (i, &id) in order.iter().enumerate() {
        // Release slots whose holders' last use is before this node.
        let ending: Vec<usize> = dies_at.keys().copied().filter(|&k| k < i).collect();
        for k in ending {
            for slot in dies_at.remove(&k).unwrap_or_default() {
                if holder_end.get(&slot) == Some(&k) {
                    free.push(slot);
                    holder_end.remove(&slot);
                }
            }
        }
        let n = p.graph.node(id);
        if n.op.group() == OpGroup::Source {
            continue;
        }
        let need = bytes(p, id);
        if is_output.contains(&id) {
            plan.output_bytes += need;
            continue;
        }
        plan.unplanned_bytes += need;
        let end = last_use.get(&id).copied().unwrap_or(i);
        let mut chosen: Option<usize> = None;
        if let Op::Reshape = n.op {
            chosen = plan.slot_of.get(&n.inputs[0]).copied();
            if chosen.is_some() {
                plan.unplanned_bytes -= need;
            }
        }
        if chosen.is_none() {
            if let Op::Fusion(k) = &n.op {
                if matches!(k.core, Core::None) {
                    for (pi, &param) in n.inputs.iter().enumerate() {
                        let Some(&slot) = plan.slot_of.get(&param) else {
                            continue;
                        };
                        let dying =
                            last_use.get(&param) == Some(&i) && holder_end.get(&slot) == Some(&i);
                        let identity = k.epilogue.exprs.iter().all(|(e, _)| match e {
                            Expr::Load { param: lp, map } => {
                                *lp as usize != pi || map.is_identity(&k.epilogue.domain)
                            }
                            _ => true,
                        });
                        if dying && identity && bytes(p, param) == need && plan.slots[slot] >= need
                        {
                            chosen = Some(slot);
                            plan.in_place.push((id, param));
                            break;
                        }
                    }
                }
            }
        }
        let slot = match chosen {
            Some(s) => s,
            None => {
                free.sort_by_key(|&s| (plan.slots[s], s));
                if let Some(fi) = free.iter().position(|&s| plan.slots[s] >= need) {
                    free.remove(fi)
                } else if let Some(s) = free.pop() {
                    plan.slots[s] = need;
                    s
                } else {
                    plan.slots.push(need);
                    plan.slots.len() - 1
                }
            }
        };
        plan.slot_of.insert(id, slot);
        let prev_end = holder_end.get(&slot).copied().unwrap_or(0);
        let new_end = prev_end.max(end);
        holder_end.insert(slot, new_end);
        dies_at.entry(new_end).or_default().push(slot);
    }
    plan.peak_bytes = plan.slots.iter().sum();
    plan
}

impl Pass for MemPlan {
    fn name(&self) -> &str {
        "memplan"
    }
    fn run(&self, p: &mut Program, _opts: &PassOptions) -> Result<bool> {
        if p.live_order()
            .iter()
            .any(|&id| !p.graph.node(id).ty.shape.is_fixed())
        {
            return Ok(false);
        }
        p.memory = Some(plan(p));
        Ok(false)
    }
}
