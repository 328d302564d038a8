//! `memplan`: the backend's buffer assignment, planned from liveness.
//!
//! Runs last, on the fused program. It walks the schedule (the deterministic topological
//! order of the live nodes) and gives each computed value a buffer slot:
//!
//! - a value's slot is free again after its last reader has run;
//! - a new value takes the smallest free slot that is large enough, else enlarges the largest
//!   free slot, else opens a new one, so slots are few and reused;
//! - an elementwise kernel writes **in place** into a parameter's slot when that parameter
//!   dies at this kernel and every parameter living in that slot is read only at the element
//!   being written (an identity index map, the output's element size and count), so no
//!   element is overwritten before it is read;
//! - a standalone `reshape` aliases its input's slot (same bytes, new shape);
//! - outputs (fetches) and stored sources (feeds, variables, constants) live outside the
//!   plan: an output is written straight into the buffer handed back to the caller. (Random
//!   numbers are computed, so they get slots like any other value.)
//!
//! The plan belongs to the backend: the JIT runs native code on these buffers, so a wrong
//! plan is memory corruption, not a wrong number. That is why it cannot be written from
//! outside the crate ([`Program::memory`] only reads it) and why `validate` re-derives every
//! value's live range and checks the plan before the JIT uses it (and the pass verifier after
//! this pass): every value has a slot large enough for it, and two values alive at the same
//! time never share a slot, except the two cases above, checked precisely. A program that
//! reaches the JIT without a plan (a pipeline without this pass) is planned by the JIT itself
//! with [`plan`], and validated the same way.
//!
//! The program dump shows the plan (XLA's "buffer assignment"): a header comment listing
//! the slots, and above each planned value a comment `buffer slotN: B B of S B, live
//! %def..%last` (`, in place over %x` or `, aliases %x` for the two sharing cases).
//!
//! The report compares the plan's peak (the sum of all slot sizes, all of which live for the
//! whole run) with the unplanned sum of every intermediate's size; outputs are counted apart
//! ([`MemoryPlan::output_bytes`]).

use super::{Pass, PassOptions, Program};
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::NodeId;
use crate::kernel::{Core, Expr};
use std::collections::{HashMap, HashSet};

/// See the module docs.
pub struct MemPlan;

/// Where every intermediate lives: the backend's buffer assignment.
///
/// Read-only outside the crate (the JIT trusts it after `validate`); see the module docs.
///
/// ```compile_fail,E0616
/// fn shrink(plan: &mut kiln::passes::memplan::MemoryPlan) {
///     plan.slots[0] = 1;
/// }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryPlan {
    pub(crate) slots: Vec<usize>,
    pub(crate) slot_of: HashMap<NodeId, usize>,
    pub(crate) in_place: Vec<(NodeId, NodeId)>,
    pub(crate) peak_bytes: usize,
    pub(crate) unplanned_bytes: usize,
    pub(crate) output_bytes: usize,
}

impl MemoryPlan {
    /// Size in bytes of each slot.
    pub fn slots(&self) -> &[usize] {
        &self.slots
    }

    /// The slot of each computed node.
    pub fn slot_of(&self) -> &HashMap<NodeId, usize> {
        &self.slot_of
    }

    /// Kernels that write over a dying parameter: `(kernel, parameter)`.
    pub fn in_place(&self) -> &[(NodeId, NodeId)] {
        &self.in_place
    }

    /// Bytes of all slots: the planned peak of intermediate memory.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }

    /// Bytes of all intermediates if each had its own buffer.
    pub fn unplanned_bytes(&self) -> usize {
        self.unplanned_bytes
    }

    /// Bytes of the outputs (fetches). They are not in the slots: each is written to its own
    /// buffer, the one handed back to the caller (or a variable's, for an update).
    pub fn output_bytes(&self) -> usize {
        self.output_bytes
    }
}

/// Whether a value is computed by a step into a buffer of its own (a slot or an output),
/// rather than read where it already is: feeds, variables and constants (the JIT's
/// `Loc::Feed`/`Var`/`Const`). Random numbers are sources but are computed.
pub(crate) fn computed(op: &Op) -> bool {
    !matches!(op, Op::Placeholder | Op::Variable { .. } | Op::Constant(_))
}

fn bytes(p: &Program, id: NodeId) -> usize {
    let t = &p.graph.node(id).ty;
    t.shape.numel().unwrap_or(0) * t.dtype.size_bytes()
}

/// The kernel of a fused node (`None` for any other op, or an id not in the table, which the
/// verifier reports).
fn fused_kernel<'p>(p: &'p Program, op: &Op) -> Option<&'p crate::kernel::Kernel> {
    match op {
        Op::Fusion(k) => p.kernels.get(*k),
        _ => None,
    }
}

/// Whether kernel `id` may write its output over the buffer holding the values for which
/// `in_buf` is true (all dead after this kernel): it must be elementwise, and read each of
/// its parameters living in that buffer only at the element it is writing, with the output's
/// element size and count, so no element is overwritten before it is read.
fn overwrites_safely(p: &Program, id: NodeId, in_buf: impl Fn(NodeId) -> bool) -> bool {
    let n = p.graph.node(id);
    let Some(k) = fused_kernel(p, &n.op) else {
        return false;
    };
    if !matches!(k.core, Core::None) {
        return false;
    }
    let (elem, len) = (n.ty.dtype.size_bytes(), n.ty.shape.numel());
    n.inputs
        .iter()
        .enumerate()
        .filter(|&(_, &i)| in_buf(i))
        .all(|(pi, &i)| {
            let t = &p.graph.node(i).ty;
            let reads = |body: &crate::kernel::Body,
                         ok: &dyn Fn(&crate::kernel::IndexMap) -> bool| {
                body.exprs.iter().all(|(e, _)| match e {
                    Expr::Load { param, map } => *param as usize != pi || ok(map),
                    _ => true,
                })
            };
            t.dtype.size_bytes() == elem
                && t.shape.numel() == len
                && len.is_some()
                && reads(&k.epilogue, &|m| m.is_identity(&k.epilogue.domain))
                && reads(&k.prologue, &|_| false)
        })
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
    // The slot's current holders: a slot is free when all of them are dead. Ordered by
    // position, so each step looks only at the slots that die before it (a scan of every
    // pending death per step would be quadratic in a long chain whose forward values live
    // until its backward pass).
    let mut dies_at: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    let mut holder_end: HashMap<usize, usize> = HashMap::new();
    for (i, &id) in order.iter().enumerate() {
        // Release slots whose holders' last use is before this node.
        while let Some(entry) = dies_at.first_entry().filter(|e| *e.key() < i) {
            let (k, slots) = entry.remove_entry();
            for slot in slots {
                if holder_end.get(&slot) == Some(&k) {
                    free.push(slot);
                    holder_end.remove(&slot);
                }
            }
        }
        let n = p.graph.node(id);
        if !computed(&n.op) {
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
            if let Some(k) = fused_kernel(p, &n.op) {
                if matches!(k.core, Core::None) {
                    for &param in &n.inputs {
                        let Some(&slot) = plan.slot_of.get(&param) else {
                            continue;
                        };
                        let dying =
                            last_use.get(&param) == Some(&i) && holder_end.get(&slot) == Some(&i);
                        // Inputs in this slot are its current holders (they are alive here).
                        let in_slot = |x: NodeId| plan.slot_of.get(&x) == Some(&slot);
                        if dying && plan.slots[slot] >= need && overwrites_safely(p, id, in_slot) {
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

/// Each live value's schedule position and the position of its last reader (its own if it
/// has none); outputs are read by the caller after the last step.
fn live_ranges(p: &Program, order: &[NodeId]) -> (HashMap<NodeId, usize>, HashMap<NodeId, usize>) {
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut last = HashMap::new();
    for (i, &id) in order.iter().enumerate() {
        for &input in &p.graph.node(id).inputs {
            last.insert(input, i);
        }
    }
    for &o in &p.outputs {
        last.insert(o, usize::MAX);
    }
    (pos, last)
}

fn internal(msg: String) -> Error {
    Error::Internal(format!("buffer assignment: {msg}"))
}

/// Checks `plan` against `p` (see the module docs): every computed value that is not an output
/// has a slot at least its size, and a value is written into a slot only once every earlier
/// holder is dead, unless it is a `reshape` of a current holder (an alias) or an elementwise
/// kernel overwriting holders that die there, reading them only at the element it writes.
/// Entries for nodes that are not live are ignored. A failure is [`Error::Internal`]: a plan
/// is made by the compiler, never by the user.
pub(crate) fn validate(p: &Program, plan: &MemoryPlan) -> Result<()> {
    let order = p.live_order();
    let (pos, last) = live_ranges(p, &order);
    let outputs: HashSet<NodeId> = p.outputs.iter().copied().collect();
    let label = |id: NodeId| format!("%{} {}", pos[&id], p.graph.node(id).label());
    let mut holders: Vec<Vec<NodeId>> = vec![vec![]; plan.slots.len()];
    for &id in &order {
        if !computed(&p.graph.node(id).op) || outputs.contains(&id) {
            continue;
        }
        let slot = *plan.slot_of.get(&id).ok_or_else(|| {
            let l = label(id);
            internal(format!(
                "{l} has no slot (was the program changed after memplan?)"
            ))
        })?;
        let size = *plan.slots.get(slot).ok_or_else(|| {
            let n = plan.slots.len();
            internal(format!("{} is in slot {slot} of {n}", label(id)))
        })?;
        let need = bytes(p, id);
        if size < need {
            return Err(internal(format!(
                "slot {slot} holds {size} B but {} needs {need} B",
                label(id)
            )));
        }
        holders[slot].push(id);
    }
    for (slot, vals) in holders.iter().enumerate() {
        // The values sharing the slot's bytes right now (a value and its reshape aliases),
        // and the last position any of them is read at.
        // (`in_group` is `group` as a set: a chain of reshapes can make it long.)
        let mut group: Vec<NodeId> = vec![];
        let mut in_group: HashSet<NodeId> = HashSet::new();
        let mut group_end = 0;
        for &id in vals {
            let (at, end) = (pos[&id], last.get(&id).copied().unwrap_or(pos[&id]));
            let n = p.graph.node(id);
            if group.is_empty() || group_end < at {
                group = vec![id];
                in_group = HashSet::from([id]);
                group_end = end;
            } else if matches!(n.op, Op::Reshape) && in_group.contains(&n.inputs[0]) {
                group.push(id);
                in_group.insert(id);
                group_end = group_end.max(end);
            } else if group_end == at && overwrites_safely(p, id, |x| in_group.contains(&x)) {
                group = vec![id];
                in_group = HashSet::from([id]);
                group_end = end;
            } else {
                let alive = group
                    .iter()
                    .copied()
                    .max_by_key(|g| last.get(g).copied().unwrap_or(0))
                    .unwrap_or(group[0]);
                let until = last.get(&alive).map_or("the end".to_string(), |&l| {
                    if l == usize::MAX {
                        "the end".to_string()
                    } else {
                        format!("%{l}")
                    }
                });
                return Err(internal(format!(
                    "slot {slot}: {} is written while {} (read until {until}) still lives there",
                    label(id),
                    label(alive)
                )));
            }
        }
    }
    Ok(())
}

impl MemoryPlan {
    /// The plan as dump comments, keyed by node, numbered as `num` (the dump's `%N`): a
    /// header on the first live node, then one line per planned value (see the module docs).
    pub(crate) fn annotations(
        &self,
        p: &Program,
        num: &HashMap<NodeId, usize>,
    ) -> Vec<(NodeId, String)> {
        let order = p.live_order();
        let (_, last) = live_ranges(p, &order);
        let mut out = vec![];
        let Some(&first) = order.first() else {
            return out;
        };
        let slots: Vec<String> = self
            .slots
            .iter()
            .enumerate()
            .map(|(s, b)| format!("slot{s} {b} B"))
            .collect();
        out.push((
            first,
            format!(
                "buffers: [{}], peak {} B ({} B unplanned), outputs {} B apart",
                slots.join(", "),
                self.peak_bytes,
                self.unplanned_bytes,
                self.output_bytes
            ),
        ));
        let n_of = |id: &NodeId| num.get(id).map_or("%?".to_string(), |n| format!("%{n}"));
        for &id in &order {
            let Some(&slot) = self.slot_of.get(&id) else {
                continue;
            };
            let n = p.graph.node(id);
            let size = self.slots.get(slot).copied().unwrap_or(0);
            let mut line = format!(
                "buffer slot{slot}: {} B of {size} B, live {}",
                bytes(p, id),
                n_of(&id)
            );
            if let Some(l) = last.get(&id).filter(|&&l| l != usize::MAX) {
                line += &format!("..{}", n_of(&order[*l]));
            }
            if matches!(n.op, Op::Reshape) && self.slot_of.get(&n.inputs[0]) == Some(&slot) {
                line += &format!(", aliases {}", n_of(&n.inputs[0]));
            }
            if let Some((_, over)) = self.in_place.iter().find(|(k, _)| *k == id) {
                line += &format!(", in place over {}", n_of(over));
            }
            out.push((id, line));
        }
        out
    }
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

#[cfg(test)]
mod tests;
