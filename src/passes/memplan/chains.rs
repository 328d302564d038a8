//! Tile chains: which steps run inside another step's image ranges, and the schedule order
//! that follows from it.
//!
//! A convolution's output is computed in tiles of whole images; the elementwise kernel that
//! reads it (bias + ReLU) and the pooling node after that can run on each tile's images as
//! soon as the tile is done, on the same thread, while those images are in cache, instead of
//! as passes over the whole tensor later (issue 17: the passes over conv1's 11 MB output cost
//! more than its product). The backward twin is a max pooling's gradient followed by the
//! ReLU mask. Such a *chain* is a head step (a forward convolution, or a `MaxGrad` pooling
//! node) and its members, each reading the previous one's output:
//!
//! - an elementwise kernel can join when row `n` of its first axis reads only image `n` of
//!   the previous value: its domain's first axis is the images, and every load of that value
//!   is the identity map on the domain (no transpose, shift, broadcast or reversal);
//! - a pooling node can join (after a convolution's kernel): its image `n` reads only image
//!   `n` of its operands;
//! - every other operand of a member is a source or computed before the head (so it is
//!   complete when the head's first tile is), and a member belongs to one chain.
//!
//! A candidate that fails is recorded with the reason, and the dump prints it on the
//! candidate's line (`not chained after %N: ...`), as fusion's notes do.
//!
//! **Liveness.** Chained steps run interleaved, so for the buffer assignment a chain is one
//! step: the schedule puts its members right after the head, and all of them share the
//! head's *time*. Every operand of every member is live until the chain ends (its last use
//! is that time), and every member's output is written from the chain's start (defined at
//! that time), so no member's output can take the slot of a value that dies inside the chain
//! (a convolution's input, dead after the convolution, must not become the ReLU kernel's
//! output: the kernel runs on tile 0 before the convolution reads tile 1). The one sharing
//! left, an elementwise member writing in place over an operand, is allowed only over an
//! operand that no other step of the chain reads; `plan` and `validate` both enforce it.
//!
//! The decision is a function of the program, so the memory plan, its validation and the
//! JIT all derive the same chains. The JIT may still run a chain's steps one after the
//! other (say, when a kernel's split is not by images): that is one of the interleavings the
//! plan allows, so it is always safe.

use super::Program;
use crate::graph::op::{ConvKind, Op, PoolKind};
use crate::graph::NodeId;
use crate::kernel::{Core, Expr};
use std::collections::{HashMap, HashSet};

/// The program's schedule with its chains (see the module docs).
#[derive(Clone, Debug, Default)]
pub(crate) struct Schedule {
    /// The live nodes in run order: `live_order`, each chain's members moved right after
    /// its head.
    pub(crate) order: Vec<NodeId>,
    /// The time of each position of `order`: its own position, or its head's for a member.
    pub(crate) time: Vec<usize>,
    /// Each head's members, in run order.
    pub(crate) members: HashMap<NodeId, Vec<NodeId>>,
    /// Each member's head.
    pub(crate) head: HashMap<NodeId, NodeId>,
    /// Candidates that were not chained: `(candidate, head, why)`.
    pub(crate) refused: Vec<(NodeId, NodeId, String)>,
}

impl Schedule {
    /// The head and members of the chain `id` belongs to (`None` if it is in none).
    pub(crate) fn chain_of(&self, id: NodeId) -> Option<(NodeId, &[NodeId])> {
        let head = self.head.get(&id).copied().unwrap_or(id);
        self.members.get(&head).map(|m| (head, m.as_slice()))
    }

    /// Whether some step of `id`'s chain other than `id` reads `value`.
    pub(crate) fn read_elsewhere_in_chain(&self, p: &Program, id: NodeId, value: NodeId) -> bool {
        let Some((head, members)) = self.chain_of(id) else {
            return false;
        };
        std::iter::once(&head)
            .chain(members)
            .filter(|&&m| m != id)
            .any(|&m| p.graph.node(m).inputs.contains(&value))
    }
}

/// What may follow in a chain.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Kernel,
    Pool,
}

thread_local! {
    /// Set by [`without_chains`] (tests compare chained runs with unchained ones).
    static OFF: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether chains are formed: not under [`without_chains`], nor with `KILN_CHAIN=0` in the
/// environment (read once; for measuring what chaining buys).
fn enabled() -> bool {
    static ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !OFF.with(|o| o.get()) && *ENV.get_or_init(|| std::env::var("KILN_CHAIN").as_deref() != Ok("0"))
}

/// Runs `f` with no chains formed on this thread (its pipelines and compiles then plan and
/// run every step on its own, as before chaining).
#[cfg(test)]
pub(crate) fn without_chains<R>(f: impl FnOnce() -> R) -> R {
    let was = OFF.with(|o| o.replace(true));
    let r = f();
    OFF.with(|o| o.set(was));
    r
}

/// The schedule of `p` (see the module docs).
pub(crate) fn schedule(p: &Program) -> Schedule {
    let live = p.live_order();
    if !enabled() {
        let time = (0..live.len()).collect();
        return Schedule {
            order: live,
            time,
            ..Schedule::default()
        };
    }
    let pos: HashMap<NodeId, usize> = live.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut users: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    for &id in &live {
        for &i in &p.graph.node(id).inputs {
            let u = users.entry(i).or_default();
            if u.last() != Some(&id) {
                u.push(id);
            }
        }
    }
    let mut s = Schedule::default();
    for &h in &live {
        let plan: &[Want] = match &p.graph.node(h).op {
            Op::Conv {
                kind: ConvKind::Forward,
                ..
            } => &[Want::Kernel, Want::Pool],
            Op::Pool {
                kind: PoolKind::MaxGrad,
                ..
            } => &[Want::Kernel],
            _ => continue,
        };
        if s.head.contains_key(&h) || images(p, h).is_none() {
            continue;
        }
        let mut prev = h;
        let mut members = vec![];
        for &want in plan {
            let mut next = None;
            for &u in users.get(&prev).map_or(&[][..], |v| v.as_slice()) {
                if s.head.contains_key(&u) || s.members.contains_key(&u) {
                    continue;
                }
                match joins(p, &pos, h, prev, u, want) {
                    Ok(()) if next.is_none() => next = Some(u),
                    Ok(()) => s.refused.push((
                        u,
                        h,
                        "another reader of the same value is chained already".into(),
                    )),
                    Err(why) => s.refused.push((u, h, why)),
                }
            }
            let Some(u) = next else { break };
            s.head.insert(u, h);
            members.push(u);
            prev = u;
        }
        if !members.is_empty() {
            s.members.insert(h, members);
        }
    }
    let mut moved: HashSet<NodeId> = HashSet::new();
    for &id in &live {
        if s.head.contains_key(&id) {
            continue;
        }
        let t = s.order.len();
        s.order.push(id);
        s.time.push(t);
        for &m in s.members.get(&id).map_or(&[][..], |v| v.as_slice()) {
            moved.insert(m);
            s.order.push(m);
            s.time.push(t);
        }
    }
    debug_assert_eq!(moved.len(), s.head.len());
    s
}

/// The batch (first) extent of `id`'s 4-D concrete type.
fn images(p: &Program, id: NodeId) -> Option<usize> {
    let d = p.graph.node(id).ty.shape.to_fixed()?;
    (d.len() == 4).then(|| d[0])
}

/// Whether `u`, a reader of `prev` (the head `h` or a member), can join `h`'s chain as
/// `want`; the error says why not.
fn joins(
    p: &Program,
    pos: &HashMap<NodeId, usize>,
    h: NodeId,
    prev: NodeId,
    u: NodeId,
    want: Want,
) -> Result<(), String> {
    let n = p.graph.node(u);
    // Sources (feeds, variables, constants) exist before any step runs.
    let late = n.inputs.iter().find(|&&i| {
        i != prev
            && super::computed(&p.graph.node(i).op)
            && pos.get(&i).is_none_or(|&at| at > pos[&h])
    });
    let batch = images(p, prev).unwrap_or(0);
    match (&n.op, want) {
        (Op::Fusion(k), Want::Kernel) => {
            let k = p.kernels.get(*k).ok_or("its kernel is missing")?;
            if !matches!(k.core, Core::None) {
                return Err(format!("a {} kernel, not elementwise", k.kind()));
            }
            let dom = &k.epilogue.domain;
            if dom.len() < 2 || dom[0] != batch || dom[1..].iter().product::<usize>() < 2 {
                return Err("its first axis is not the images".into());
            }
            let same = p.graph.node(prev).ty.shape.to_fixed().as_deref() == Some(&dom[..]);
            let identity = k.epilogue.exprs.iter().all(|(e, _)| match e {
                Expr::Load { param, map } => {
                    n.inputs.get(*param as usize) != Some(&prev) || map.is_identity(dom)
                }
                _ => true,
            });
            if !same || !identity {
                return Err("it reads other images' elements (a transpose, a shifted, \
                            reversed or broadcast view)"
                    .into());
            }
        }
        (Op::Pool { .. }, Want::Pool) => {}
        (Op::Pool { .. }, Want::Kernel) => return Err("a pooling step after a pooling step".into()),
        (_, Want::Kernel) => return Err(format!("{} is not an elementwise kernel", n.op.name())),
        (_, Want::Pool) => return Err(format!("{} is not a pooling step", n.op.name())),
    }
    if let Some(&l) = late {
        return Err(format!(
            "it also reads {}, computed after the chain's head",
            p.graph.node(l).label()
        ));
    }
    Ok(())
}
