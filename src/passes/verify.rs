//! The pass verifier: the program's invariants, checked after every pass.
//!
//! As XLA's `HloVerifier` (added to a pipeline with `AddInvariantChecker`), a [`Verifier`]
//! runs after each pass of a [`super::Pipeline`] (after each member of a [`super::Fixpoint`]
//! too) and turns a broken invariant into [`Error::Internal`] naming the pass that broke it,
//! the node (`%N` as in that pass's dump, or `#index` for a node no output needs) and what is
//! wrong. A pass bug then fails at the pass, not as a wrong number or a crash in the backend.
//!
//! It checks:
//! - **types**: each live node's type, re-inferred with [`op::infer`] from its operands'
//!   stored types, equals its stored type (ARCHITECTURE invariant 1); for a fused node this
//!   includes its operands matching the kernel's parameter types;
//! - **edges**: petgraph's edges mirror `Node::inputs`, one edge per operand weighted by its
//!   position, and no operand is a removed node (invariant 4); and the graph has no cycle;
//! - **outputs** exist and have not been removed;
//! - **concreteness**: no `?` is left after `concretize` ran with a batch size, and no pass
//!   brings one back once every shape was concrete;
//! - **effects**: no `assign` or `group` is live after [`super::lower_effects`];
//! - **kernels**: every fused kernel passes [`Kernel::validate`];
//! - **buffers**: [`check_memory_plan`] (one call site, below, so the backend's own check can
//!   replace it).
//!
//! # When it runs
//! Always, unless turned off with [`super::Pipeline::verify`] or `KILN_VERIFY=0`. It costs
//! about one cheap pass (a walk re-inferring each node's type) per pass: measured on the MLP
//! training graph it is a small share of the pass time and well under 1% of a compile, whose
//! time goes to Cranelift (figures in the commit that made it always-on). Always-on means
//! `cargo test --release`, which CI runs, verifies every program that any test compiles, and
//! a user's pass bug is reported where it happens, in every build.

use super::Program;
use crate::error::{Error, Result};
use crate::graph::op::{self, Arg, Op, OpGroup};
use crate::graph::{GraphData, NodeId};
use crate::kernel::Kernel;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::HashMap;

/// What the verifier knows about the pipeline so far (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Verifier {
    /// Every live shape was concrete at the last check: a `?` may not come back.
    concrete: bool,
}

/// `%N` (the node's number in a dump of the live program) or `#index` for a dead node.
struct Names<'a> {
    g: &'a GraphData,
    num: HashMap<NodeId, usize>,
}

impl Names<'_> {
    fn of(&self, id: NodeId) -> String {
        let Some(n) = self.g.get(id) else {
            return format!("#{} (removed)", id.index());
        };
        let at = match self.num.get(&id) {
            Some(k) => format!("%{k}"),
            None => format!("#{}", id.index()),
        };
        match &n.name {
            Some(name) => format!("{at} = {} {name:?}", n.op.name()),
            None => format!("{at} = {}", n.op.name()),
        }
    }
}

impl Verifier {
    /// A verifier for a pipeline that has not run yet.
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// Checks `p` after the pass named `pass` (a member of a group is named `group/member`);
    /// `batch` is the pipeline's batch size.
    pub fn check(&mut self, p: &Program, pass: &str, batch: Option<usize>) -> Result<()> {
        let fail = |what: String| {
            Error::Internal(format!(
                "the pass `{pass}` broke the program's invariants: {what}"
            ))
        };
        let g = &p.graph;
        check_edges(g).map_err(fail)?;
        if let Some(c) = g.find_cycle() {
            return Err(fail(format!("node #{} is on a cycle", c.index())));
        }
        for (i, &o) in p.outputs.iter().enumerate() {
            if g.get(o).is_none() {
                return Err(fail(format!("output {i} (#{}) was removed", o.index())));
            }
        }
        let order = p.live_order();
        let names = Names {
            g,
            num: order.iter().enumerate().map(|(i, &id)| (id, i)).collect(),
        };
        let at = |id: NodeId, what: String| fail(format!("{}: {what}", names.of(id)));
        let mut concrete = true;
        for &id in &order {
            let n = g.node(id);
            let args: Vec<Arg<'_>> = n
                .inputs
                .iter()
                .map(|&i| Arg {
                    ty: &g.node(i).ty,
                    label: "",
                })
                .collect();
            match op::infer(&n.op, &args, Some(&n.ty)) {
                Ok(t) if t == n.ty => {}
                Ok(t) => return Err(at(id, format!("stored type {}, inferred {t}", n.ty))),
                Err(e) => return Err(at(id, format!("stored type {} is not inferred: {e}", n.ty))),
            }
            concrete &= n.ty.shape.is_fixed();
            match &n.op {
                Op::Assign | Op::Group => {
                    return Err(at(id, "an effect is left after effect lowering".into()))
                }
                Op::Fusion(k) => check_kernel(g, k, &n.inputs).map_err(|e| at(id, e))?,
                _ => {}
            }
        }
        let concretized = pass.rsplit('/').next() == Some("concretize") && batch.is_some();
        if !concrete && (self.concrete || concretized) {
            let id = order.iter().find(|&&i| !g.node(i).ty.shape.is_fixed());
            let what = if self.concrete {
                "a `?` dimension came back after every shape was concrete"
            } else {
                "a `?` dimension is left after concretize"
            };
            return Err(match id {
                Some(&id) => at(id, format!("{what} ({})", g.node(id).ty)),
                None => fail(what.into()),
            });
        }
        self.concrete = concrete;
        // buffer assignment: the one call site; the backend's own validation replaces
        // `check_memory_plan` when buffers move to the backend (issue 15, wired in at merge).
        check_memory_plan(p).map_err(|(id, e)| match id {
            Some(id) => at(id, e),
            None => fail(e),
        })?;
        Ok(())
    }
}

/// Petgraph's edges mirror `Node::inputs` (invariant 4), for every node, removed ones
/// included (a removed node has neither operands nor edges).
fn check_edges(g: &GraphData) -> Result<(), String> {
    for idx in g.g.node_indices() {
        let id = NodeId(idx);
        let mut edges: Vec<(usize, NodeId)> =
            g.g.edges_directed(idx, Direction::Incoming)
                .map(|e| (*e.weight() as usize, NodeId(e.source())))
                .collect();
        edges.sort();
        let inputs: Vec<(usize, NodeId)> = match g.get(id) {
            Some(n) => n.inputs.iter().copied().enumerate().collect(),
            None => vec![],
        };
        if edges != inputs {
            let show = |v: &[(usize, NodeId)]| {
                v.iter()
                    .map(|(pos, i)| format!("{pos}:#{}", i.index()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(format!(
                "node #{}: its edges [{}] do not mirror its operands [{}]",
                idx.index(),
                show(&edges),
                show(&inputs)
            ));
        }
        if let Some(&(pos, i)) = inputs.iter().find(|(_, i)| g.get(*i).is_none()) {
            return Err(format!(
                "node #{}: operand {pos} is the removed node #{}",
                idx.index(),
                i.index()
            ));
        }
    }
    Ok(())
}

/// A fused kernel is valid and its parameters are its operands' types.
fn check_kernel(g: &GraphData, k: &Kernel, inputs: &[NodeId]) -> Result<(), String> {
    k.validate().map_err(|e| format!("invalid kernel: {e}"))?;
    for (i, (&input, t)) in inputs.iter().zip(&k.params).enumerate() {
        if g.node(input).ty != *t {
            return Err(format!(
                "kernel parameter {i} is {t}, its operand is {}",
                g.node(input).ty
            ));
        }
    }
    Ok(())
}

fn bytes(g: &GraphData, id: NodeId) -> usize {
    let t = &g.node(id).ty;
    t.shape.numel().unwrap_or(0) * t.dtype.size_bytes()
}

/// The memory plan, if there is one, fits the program: every computed value that is not an
/// output has a slot, large enough, and no two values alive at the same time share a slot,
/// except a kernel writing over a parameter that dies there (an in-place update) and a
/// reshape aliasing its input. On failure, the node concerned (if one) and what is wrong.
///
/// A value is alive from the step that computes it to the last step that reads it (outputs
/// to the end); a reshape that shares its input's slot makes the two one value.
pub fn check_memory_plan(p: &Program) -> Result<(), (Option<NodeId>, String)> {
    let Some(plan) = &p.memory else {
        return Ok(());
    };
    let g = &p.graph;
    let order = p.live_order();
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut last: HashMap<NodeId, usize> = HashMap::new();
    for (i, &id) in order.iter().enumerate() {
        for &input in &g.node(id).inputs {
            last.insert(input, i);
        }
    }
    for &o in &p.outputs {
        last.insert(o, usize::MAX);
    }
    for (&id, &slot) in &plan.slot_of {
        if !pos.contains_key(&id) {
            return Err((
                None,
                format!(
                    "a slot is planned for #{}, which no output needs",
                    id.index()
                ),
            ));
        }
        let size = *plan.slots.get(slot).ok_or((
            Some(id),
            format!("planned in slot {slot}, which does not exist"),
        ))?;
        if size < bytes(g, id) {
            return Err((
                Some(id),
                format!("needs {} bytes, its slot {slot} has {size}", bytes(g, id)),
            ));
        }
        if p.outputs.contains(&id) {
            return Err((Some(id), "an output is planned in a slot".into()));
        }
    }
    // Alias classes: a reshape sharing its input's slot joins the input's class.
    let mut root: HashMap<NodeId, NodeId> = HashMap::new();
    let mut span: HashMap<NodeId, (usize, usize)> = HashMap::new();
    for (i, &id) in order.iter().enumerate() {
        let n = g.node(id);
        if n.op.group() == OpGroup::Source || p.outputs.contains(&id) {
            continue;
        }
        let Some(&slot) = plan.slot_of.get(&id) else {
            return Err((Some(id), "a computed value has no slot".into()));
        };
        let r = match n.op {
            Op::Reshape if plan.slot_of.get(&n.inputs[0]) == Some(&slot) => root[&n.inputs[0]],
            _ => id,
        };
        root.insert(id, r);
        let end = last.get(&id).copied().unwrap_or(i);
        let s = span.entry(r).or_insert((i, end));
        s.1 = s.1.max(end);
    }
    let mut by_slot: HashMap<usize, Vec<(usize, usize, NodeId)>> = HashMap::new();
    for (&r, &(start, end)) in &span {
        by_slot
            .entry(plan.slot_of[&r])
            .or_default()
            .push((start, end, r));
    }
    for (slot, mut vals) in by_slot {
        vals.sort();
        let mut active: Vec<(usize, usize, NodeId)> = vec![];
        for v in vals {
            active.retain(|a| a.1 >= v.0);
            for a in &active {
                let in_place = a.1 == v.0
                    && plan
                        .in_place
                        .iter()
                        .any(|&(k, q)| k == v.2 && root.get(&q) == Some(&a.2));
                if !in_place {
                    return Err((
                        Some(v.2),
                        format!("shares slot {slot} with #{} while it is alive", a.2.index()),
                    ));
                }
            }
            active.push(v);
        }
    }
    Ok(())
}
