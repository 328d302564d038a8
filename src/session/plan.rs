//! What a set of fetches needs besides its executable, found once by walking the graph and
//! kept in the session's plan cache: the assigns behind the fetches, the `bool` switches the
//! JIT specializes on, and the placeholders the feed check reads.

use super::Backend;
use crate::error::Result;
use crate::graph::op::Op;
use crate::graph::{effects, GraphData, NodeId};
use std::sync::{Arc, Mutex};

/// What a set of fetches needs besides its executable.
pub(super) struct FetchPlan {
    /// The assigns behind the fetches.
    pub(super) updates: Arc<[effects::Update]>,
    /// The scalar `bool` placeholders the fetches (with their updates) depend on: the
    /// switches an executable is specialized on.
    pub(super) switches: Vec<NodeId>,
    /// `feeds::check`'s cache: the last fed set (sorted ids) and the placeholders the
    /// fetches read with it (walking the cone every run cost more than the rest of the
    /// check: ~70K instructions per step of the MLP).
    pub(super) needed: Mutex<Option<(Vec<NodeId>, Vec<NodeId>)>>,
}

/// The assigns behind `user`'s fetches and, for the JIT, the `bool` switches they depend on
/// (a walk over their cone, made once per set of fetches).
pub(super) fn plan(d: &GraphData, backend: Backend, user: &[NodeId]) -> Result<FetchPlan> {
    let updates: Arc<[effects::Update]> = effects::collect(d, user)?.into();
    let switches = match backend {
        Backend::Interpreter => vec![],
        Backend::Jit => {
            let all = effects::with_updates(user, &updates);
            let mut s: Vec<NodeId> = d
                .topo_order_from(&all)
                .into_iter()
                .filter(|&id| {
                    let n = d.node(id);
                    n.op == Op::Placeholder
                        && n.ty.dtype == crate::DType::Bool
                        && n.ty.shape.rank() == 0
                })
                .collect();
            s.sort_unstable();
            s
        }
    };
    Ok(FetchPlan {
        updates,
        switches,
        needed: Mutex::new(None),
    })
}
