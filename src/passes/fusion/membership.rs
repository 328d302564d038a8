//! Which producers join a kernel: the rules in the docs of [`super`], decided from the
//! kernel's root towards its inputs, users before producers.
//!
//! The walk visits only the kernel's neighbourhood (its members, the views between them and
//! their direct operands), never the rest of the graph, and every question about a view chain
//! is answered once per node: so fusing a program costs time linear in its size, however many
//! kernels it has (a chain of 20,000 ops makes thousands of kernels). Nothing here recurses:
//! the graph can be as deep as it likes.

use super::{is_affine_view, is_elementwise};
use crate::graph::op::Op;
use crate::graph::{GraphData, NodeId};
use std::collections::{BinaryHeap, HashMap, HashSet};

/// The most members a kernel gets. A longer chain of fusible ops is cut into kernels of this
/// size: one kernel body per chain would make one Cranelift function as long as the chain,
/// whose compile time (register allocation) grows faster than its length. A cut costs one
/// store and one load per element, noise next to a few hundred ops.
pub(super) const MAX_MEMBERS: usize = 256;

/// Decides which producers join the kernel rooted at `root`. `pos` is each live node's
/// position in a topological order of the program.
#[allow(clippy::too_many_arguments)] // the fusion pass's state, read-only but for `notes`
pub(super) fn membership(
    g: &GraphData,
    root: NodeId,
    users: &HashMap<NodeId, Vec<NodeId>>,
    outputs: &HashSet<NodeId>,
    assigned: &HashSet<NodeId>,
    needed: &HashSet<NodeId>,
    allow_core: bool,
    pos: &HashMap<NodeId, usize>,
    notes: &mut Vec<(NodeId, String)>,
) -> (HashSet<NodeId>, HashSet<NodeId>, Option<NodeId>) {
    let mut members: HashSet<NodeId> = HashSet::from([root]);
    // Cheap producers computed again inside this kernel; their own producers are not
    // absorbed through them (they are read as parameters).
    let mut dups: HashSet<NodeId> = HashSet::new();
    let mut solid: HashSet<NodeId> = HashSet::from([root]);
    // Whether a node is a view chain into `solid` (resp. `members`), per node. A candidate's
    // answer depends only on its users and theirs, all decided before it, so it is final
    // once asked.
    let mut into_solid: HashMap<NodeId, bool> = HashMap::new();
    let mut into_members: HashMap<NodeId, bool> = HashMap::new();
    let root_node = g.node(root);
    let mut core = match root_node.op {
        Op::Reduce { .. } | Op::MatMul => Some(root),
        _ => None,
    };
    // Candidates in reverse topological order (users are decided before their producers):
    // a max-heap on the position, fed with the operands of each member and of each view
    // (a producer reached through neither can never join). Everything a popped node's
    // users could be has a higher position and was popped before it.
    let at = |id: NodeId| pos.get(&id).copied().unwrap_or(0);
    let mut queue: BinaryHeap<(usize, NodeId)> = BinaryHeap::new();
    let mut queued: HashSet<NodeId> = HashSet::from([root]);
    let mut expand = |id: NodeId, queue: &mut BinaryHeap<(usize, NodeId)>| {
        for &i in &g.node(id).inputs {
            if queued.insert(i) {
                queue.push((at(i), i));
            }
        }
    };
    expand(root, &mut queue);
    while let Some((_, id)) = queue.pop() {
        let n = g.node(id);
        let joins = is_elementwise(&n.op)
            || matches!(
                n.op,
                Op::Reduce { .. } | Op::MatMul | Op::Pad { .. } | Op::Concat { .. }
            );
        if assigned.contains(&id) || !joins {
            // Nothing to decide (a source, a view, a member of another kernel), and its
            // users need not be looked at: a source may have thousands.
            if is_affine_view(g, id) {
                expand(id, &mut queue);
            }
            continue;
        }
        let us = users.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        let mut chain_solid = |u| is_view_chain_into(g, u, &solid, users, needed, &mut into_solid);
        // Reached through a member the kernel owns, or only through a duplicated one (then
        // the candidate can only be duplicated too, so no kernel owns what another needs).
        let via_solid = us.iter().any(|&u| chain_solid(u));
        // Users that this kernel does not own (duplicated members count as outside: other
        // kernels compute them too, and may need this value as a buffer).
        let outside = us.iter().filter(|&&u| !chain_solid(u)).count()
            + usize::from(outputs.contains(&id) || needed.contains(&id));
        let via_any = via_solid
            || us
                .iter()
                .any(|&u| is_view_chain_into(g, u, &members, users, needed, &mut into_members));
        if !via_any {
            continue;
        }
        if n.can_fail_at_run() && read_through_slice(g, id, users) {
            // Fuzz finding F10: inside a kernel it would be computed only where the slice
            // reads it, so an error outside the slice would go unreported, while the
            // interpreter computes it in full and reports it.
            notes.push((
                id,
                "it can fail at run time and a slice reads it: computed in full, as the interpreter does, so both backends report the same errors".to_string(),
            ));
            continue;
        }
        let full = members.len() >= MAX_MEMBERS;
        match &n.op {
            op if is_elementwise(op) && full => {
                notes.push((id, format!("the kernel already has {MAX_MEMBERS} members (a longer body would compile in more than linear time)")));
            }
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
        if members.contains(&id) || is_affine_view(g, id) {
            expand(id, &mut queue);
        }
    }
    (members, dups, core)
}

/// Whether some user reads `id` through a slice (after any chain of other views): then a
/// kernel would compute only part of it.
fn read_through_slice(g: &GraphData, id: NodeId, users: &HashMap<NodeId, Vec<NodeId>>) -> bool {
    let mut stack = vec![id];
    let mut seen = HashSet::from([id]);
    while let Some(v) = stack.pop() {
        for &u in users.get(&v).map(Vec::as_slice).unwrap_or(&[]) {
            if matches!(g.node(u).op, Op::Slice { .. }) {
                return true;
            }
            if is_affine_view(g, u) && seen.insert(u) {
                stack.push(u);
            }
        }
    }
    false
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
        | Op::Conv { .. }
        | Op::Size { .. }
        | Op::Assign
        | Op::Group
        | Op::Pool { .. }
        | Op::AllReduce
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
///
/// Answers are kept in `memo`, which must belong to this `members` set and be asked only
/// about nodes whose users are all decided. The walk up a chain of views keeps its own
/// stack: a chain may be as long as the graph.
pub(super) fn is_view_chain_into(
    g: &GraphData,
    id: NodeId,
    members: &HashSet<NodeId>,
    users: &HashMap<NodeId, Vec<NodeId>>,
    needed: &HashSet<NodeId>,
    memo: &mut HashMap<NodeId, bool>,
) -> bool {
    let mut stack = vec![id];
    while let Some(&top) = stack.last() {
        if memo.contains_key(&top) {
            stack.pop();
            continue;
        }
        let known = if members.contains(&top) {
            Some(!matches!(
                g.node(top).op,
                Op::MatMul | Op::Pad { .. } | Op::Concat { .. }
            ))
        } else if !is_affine_view(g, top) || needed.contains(&top) {
            Some(false)
        } else {
            let us = users.get(&top).map(Vec::as_slice).unwrap_or(&[]);
            if us.is_empty() || us.iter().any(|u| memo.get(u) == Some(&false)) {
                Some(false)
            } else if let Some(&next) = us.iter().find(|u| !memo.contains_key(u)) {
                stack.push(next);
                None
            } else {
                Some(true)
            }
        };
        if let Some(answer) = known {
            memo.insert(top, answer);
            stack.pop();
        }
    }
    memo[&id]
}
