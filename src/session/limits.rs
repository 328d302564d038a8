//! What a compile checks before it allocates: every value a run computes, and the
//! intermediates of the buffer assignment, against the allocation limit
//! ([`crate::shape::alloc_limit`]), so that a batch too large for memory is an error naming
//! the op, not an aborting allocation.

use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::NodeId;
use crate::passes::Program;

/// Refuses a compile whose values would not fit the allocation limit
/// ([`crate::shape::alloc_limit`]) at this batch size, naming the first such op of the user's
/// graph, its name and line, its shape and bytes: a batch too large for memory is an error,
/// not an aborting allocation. Values are those a run computes (random numbers included);
/// feeds, variables and constants exist already, and `size` reads only its operand's shape.
pub(super) fn check_sizes(
    d: &crate::GraphData,
    fetches: &[NodeId],
    batch: Option<usize>,
) -> Result<()> {
    let order = d.topo_order_until(fetches, |id| matches!(d.node(id).op, Op::Size { .. }));
    for id in order {
        let n = d.node(id);
        if matches!(
            n.op,
            Op::Placeholder | Op::Variable { .. } | Op::Constant(_)
        ) {
            continue;
        }
        let dims = n.ty.shape.resolve(batch.unwrap_or(1));
        crate::shape::check_value(
            n.op.name(),
            &n.label(),
            n.loc.as_ref(),
            n.ty.dtype,
            &dims,
            n.ty.dtype.size_bytes(),
            batch,
            "",
        )?;
    }
    Ok(())
}

/// Refuses a compiled program whose intermediates (the buffer assignment's slots, one
/// workspace per concurrent run) together pass the allocation limit, naming the largest of
/// them as the user wrote it (`user`, the session's graph, and the `fetches` compiled).
pub(super) fn check_workspace(
    p: &Program,
    user: &crate::GraphData,
    fetches: &[NodeId],
    batch: Option<usize>,
) -> Result<()> {
    let Some(plan) = p.memory() else {
        return Ok(());
    };
    let limit = crate::shape::alloc_limit();
    let total = plan
        .slots()
        .iter()
        .fold(0usize, |a, &b| a.saturating_add(b));
    if total <= limit {
        return Ok(());
    }
    let bytes = |id: &NodeId| {
        let t = &p.graph.node(*id).ty;
        t.shape
            .numel()
            .unwrap_or(0)
            .saturating_mul(t.dtype.size_bytes())
    };
    let largest = plan.slot_of().keys().max_by_key(|id| (bytes(id), **id));
    let (op, loc, what) = match largest {
        Some(&id) => {
            let n = p.graph.node(id);
            let u = user_node(p, user, fetches, id).map(|u| user.node(u));
            let (op, label) = u.map_or((n.op.name(), n.label()), |u| (u.op.name(), u.label()));
            let what = format!(
                "the largest, {label} ({}), needs {} bytes",
                n.ty,
                bytes(&id)
            );
            (op.to_string(), n.loc.clone(), what)
        }
        None => ("run".to_string(), None, String::new()),
    };
    let at = batch.map_or(String::new(), |b| format!(" at batch size {b}"));
    Err(Error::Runtime {
        op,
        // the label is in the message
        name: None,
        loc,
        msg: format!(
            "the run's intermediates{at} need {total} bytes in {} buffers ({what}), more than \
             the allocation limit of {limit} bytes (a smaller batch, or KILN_MAX_ALLOC set to a \
             larger byte count)",
            plan.slots().len()
        ),
    })
}

/// The node of the user's graph (the cone of `fetches`) that the compiled program's node `id`
/// computes: itself, or for a fused
/// node (which carries its root's name and line) the root: the node of that name, else the
/// last compute node of the same dtype and rank created at the same line.
fn user_node(
    p: &Program,
    user: &crate::GraphData,
    fetches: &[NodeId],
    id: NodeId,
) -> Option<NodeId> {
    let n = p.graph.node(id);
    if !matches!(n.op, Op::Fusion(_)) {
        return None; // the program's own node (a random fill, a reshape) names itself
    }
    if let Some(u) = n.name.as_deref().and_then(|name| user.by_name(name)) {
        return Some(u);
    }
    let loc = n.loc.as_ref()?;
    let same = |u: &&NodeId| {
        let m = user.node(**u);
        m.loc.as_ref() == Some(loc)
            && m.ty.dtype == n.ty.dtype
            && m.ty.shape.0.len() == n.ty.shape.0.len()
            && m.op.group() != crate::graph::op::OpGroup::Source
    };
    user.topo_order_from(fetches)
        .iter()
        .filter(same)
        .max()
        .copied()
}
