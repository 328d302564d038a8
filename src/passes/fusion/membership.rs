//! Which producers join a kernel: the rules in the docs of [`super`], decided from the
//! kernel's root towards its inputs, users before producers.

use super::{is_affine_view, is_elementwise};
use crate::graph::op::Op;
use crate::graph::{GraphData, NodeId};
use std::collections::{HashMap, HashSet};

/// Decides which producers join the kernel rooted at `root`.
#[allow(clippy::too_many_arguments)] // the fusion pass's state, read-only but for `notes`
pub(super) fn membership(
    g: &GraphData,
    root: NodeId,
    users: &HashMap<NodeId, Vec<NodeId>>,
    outputs: &HashSet<NodeId>,
    assigned: &HashSet<NodeId>,
    needed: &HashSet<NodeId>,
    allow_core: bool,
    notes: &mut Vec<(NodeId, String)>,
) -> (HashSet<NodeId>, HashSet<NodeId>, Option<NodeId>) {
    let mut members: HashSet<NodeId> = HashSet::from([root]);
    // Cheap producers computed again inside this kernel; their own producers are not
    // absorbed through them (they are read as parameters).
    let mut dups: HashSet<NodeId> = HashSet::new();
    let mut solid: HashSet<NodeId> = HashSet::from([root]);
    let root_node = g.node(root);
    let mut core = match root_node.op {
        Op::Reduce { .. } | Op::MatMul => Some(root),
        _ => None,
    };
    // Candidates in reverse topological order: users are decided before their producers.
    let order = g.topo_order_from(&[root]);
    for &id in order.iter().rev() {
        if id == root || assigned.contains(&id) {
            continue;
        }
        let n = g.node(id);
        let us = users.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        // Reached through a member the kernel owns, or only through a duplicated one (then
        // the candidate can only be duplicated too, so no kernel owns what another needs).
        let via_solid = us
            .iter()
            .any(|&u| is_view_chain_into(g, u, &solid, users, needed));
        let via_any = via_solid
            || us
                .iter()
                .any(|&u| is_view_chain_into(g, u, &members, users, needed));
        if !via_any {
            continue;
        }
        // Users that this kernel does not own (duplicated members count as outside: other
        // kernels compute them too, and may need this value as a buffer).
        let outside = us
            .iter()
            .filter(|u| !is_view_chain_into(g, **u, &solid, users, needed))
            .count()
            + usize::from(outputs.contains(&id) || needed.contains(&id));
        match &n.op {
            op if is_elementwise(op)
                && !via_solid
                && is_cheap(op)
                && !needed.contains(&id)
                && all_users_can_fuse(g, us) =>
            {
                members.insert(id);
                dups.insert(id);
            }
            op if is_elementwise(op) && !via_solid => {}
            op if is_elementwise(op) => {
                if outside == 0 {
                    members.insert(id);
                    solid.insert(id);
                } else if is_cheap(op) && !needed.contains(&id) && all_users_can_fuse(g, us) {
                    members.insert(id);
                    dups.insert(id);
                } else if is_cheap(op) {
                    notes.push((id, format!("{outside} user(s) outside the kernel, and not all of them can compute it")));
                } else {
                    notes.push((id, format!("{outside} user(s) outside the kernel (an expensive producer is never duplicated)")));
                }
            }
            Op::Reduce { .. } | Op::MatMul
                if allow_core
                    && via_solid
                    && core.is_none()
                    && outside == 0
                    && n.ty == root_node.ty
                    && us.iter().all(|u| solid.contains(u)) =>
            {
                core = Some(id);
                members.insert(id);
                solid.insert(id);
            }
            Op::Reduce { .. } | Op::MatMul => {
                let why = if outside > 0 {
                    format!("{} with {outside} user(s) outside the kernel", n.op.name())
                } else if core.is_some() {
                    "the consumer kernel already has a core".to_string()
                } else if n.ty != root_node.ty {
                    format!(
                        "its {} result is broadcast into the kernel (a {} fuses only as the core of a kernel of its own shape)",
                        n.ty, n.op.name()
                    )
                } else {
                    format!("the {} is read through a view", n.op.name())
                };
                notes.push((id, why));
            }
            Op::Pad { .. } | Op::Concat { .. } => {
                notes.push((
                    id,
                    format!("{} reads its operands from memory", n.op.name()),
                ));
            }
            _ => {}
        }
    }
    (members, dups, core)
}

/// Elementwise ops cheap enough to compute twice rather than store and load.
pub(super) fn is_cheap(op: &Op) -> bool {
    use crate::graph::op::Cost;
    match op {
        Op::Unary(u) => u.props().cost == Cost::Cheap,
        Op::Binary(b) => b.props().cost == Cost::Cheap,
        Op::Where | Op::Cast(_) | Op::StopGradient => true,
        // Not elementwise (fusion never asks), or elementwise but not worth recomputing.
        Op::Placeholder
        | Op::Variable { .. }
        | Op::Constant(_)
        | Op::Random { .. }
        | Op::Reduce { .. }
        | Op::Reshape
        | Op::Permute(_)
        | Op::BroadcastTo
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Concat { .. }
        | Op::MatMul
        | Op::Size { .. }
        | Op::Assign
        | Op::Group
        | Op::Pool { .. }
        | Op::Fusion(_) => false,
    }
}

/// True if every user can take a producer into its own kernel.
pub(super) fn all_users_can_fuse(g: &GraphData, us: &[NodeId]) -> bool {
    us.iter().all(|&u| {
        let op = &g.node(u).op;
        is_elementwise(op) || matches!(op, Op::Reduce { .. })
    })
}

/// True if `id` is a member that computes its operands' values itself, or a view op all of
/// whose users are (transitively) such members. A matmul member does not: `gemm` reads its
/// operands from memory, so they are parameters (their own kernels' outputs), never members.
/// Nor do a pad or a concat (a kernel root): they read their operands through guarded loads,
/// and a value computed at a point outside the guard would not be zero. A view whose own
/// value is needed (an output, an operand read from memory) is not a chain either: it roots
/// a kernel that reads what it views.
pub(super) fn is_view_chain_into(
    g: &GraphData,
    id: NodeId,
    members: &HashSet<NodeId>,
    users: &HashMap<NodeId, Vec<NodeId>>,
    needed: &HashSet<NodeId>,
) -> bool {
    if members.contains(&id) {
        return !matches!(
            g.node(id).op,
            Op::MatMul | Op::Pad { .. } | Op::Concat { .. }
        );
    }
    if !is_affine_view(g, id) || needed.contains(&id) {
        return false;
    }
    let us = users.get(&id).map(Vec::as_slice).unwrap_or(&[]);
    !us.is_empty()
        && us
            .iter()
            .all(|&u| is_view_chain_into(g, u, members, users, needed))
}
