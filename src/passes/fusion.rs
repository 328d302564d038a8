//! `fusion`: groups elementwise work into [`Kernel`]s.
//!
//! Consumer-driven, in the manner of XLA's instruction fusion. Nodes are visited from the
//! outputs backwards; each compute node not yet in a kernel becomes the root of a new one,
//! and its producers join while the rules allow:
//!
//! - elementwise ops (unary, binary, `where`, `cast`) join when **all** their users are
//!   already in the kernel: a producer with users elsewhere would be computed twice, so it is
//!   never duplicated and becomes the kernel's parameter instead;
//! - movement ops that are affine views (`broadcast_to`, `permute`, `slice`, and `reshape`
//!   that only adds or drops size-1 axes, or any reshape of a materialized buffer) fold into
//!   the index maps of loads: a broadcast is a stride of 0, a transpose permuted strides;
//! - a reduction joins as the kernel's core when its elementwise consumers are the kernel
//!   (they become its epilogue) and its elementwise producers join as its prologue, so
//!   `log(sum(exp(x - m)))` is one kernel;
//! - a matmul joins as the core of a contraction kernel, its elementwise consumers (bias add,
//!   activation) as the epilogue; its operands are read through strides (no copy for
//!   transposes) but are never computed inside the kernel;
//! - scalar constants become immediates.
//!
//! Each refusal records a reason in [`Program::notes`], and the dump prints it as a comment
//! on the producer's line, as XLA's "Not fusing ... as ..." log lines do.

use super::{Note, Pass, PassOptions, Program};
use crate::error::Result;
use crate::graph::op::{Op, OpGroup, Ty};
use crate::graph::{GraphData, NodeId};
use crate::kernel::{row_major_strides, Body, Core, Expr, ExprId, IndexMap, Kernel, MatOperand};
use smallvec::SmallVec;
use std::collections::{HashMap, HashSet};

/// See the module docs.
pub struct Fusion;

/// Where each axis of a node's value comes from, at a point of the kernel's domain:
/// node axis `j` has index `domain[axis[j]] + offset[j]`, or `offset[j]` if `axis[j]` is None.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum View {
    Axes(SmallVec<[(Option<usize>, usize); 4]>),
}

impl View {
    fn identity(rank: usize) -> View {
        View::Axes((0..rank).map(|i| (Some(i), 0)).collect())
    }

    /// The map that reads a buffer of `shape` at this view, over a domain of `rank` axes.
    fn to_map(&self, shape: &[usize], rank: usize) -> IndexMap {
        match self {
            View::Axes(ax) => {
                let st = row_major_strides(shape);
                let mut strides: SmallVec<[usize; 4]> = SmallVec::from_elem(0, rank);
                let mut offset = 0;
                for (j, &(a, o)) in ax.iter().enumerate() {
                    offset += o * st[j];
                    if let Some(d) = a {
                        if shape[j] > 1 {
                            strides[d] += st[j];
                        }
                    }
                }
                IndexMap { offset, strides }
            }
        }
    }
}

fn fixed(t: &Ty) -> Vec<usize> {
    t.shape.to_fixed().unwrap_or_default()
}

/// The view of a movement op's input, given the view of its output; None if the op is not an
/// affine view from here.
fn view_through(g: &GraphData, id: NodeId, v: &View) -> Option<View> {
    let n = g.node(id);
    let input = g.node(n.inputs[0]);
    let (ins, outs) = (fixed(&input.ty), fixed(&n.ty));
    let View::Axes(ax) = v;
    match &n.op {
        Op::BroadcastTo => {
            let shift = outs.len() - ins.len();
            Some(View::Axes(
                ins.iter()
                    .enumerate()
                    .map(|(j, &d)| {
                        if d == 1 && outs[j + shift] != 1 {
                            (None, 0)
                        } else {
                            ax[j + shift]
                        }
                    })
                    .collect(),
            ))
        }
        Op::Permute(perm) => {
            let mut out: SmallVec<[(Option<usize>, usize); 4]> =
                SmallVec::from_elem((None, 0), ins.len());
            for (i, &p) in perm.iter().enumerate() {
                out[p] = ax[i];
            }
            Some(View::Axes(out))
        }
        Op::Slice { begin } => Some(View::Axes(
            ax.iter()
                .zip(begin)
                .map(|(&(a, o), &b)| (a, o + b))
                .collect(),
        )),
        Op::Reshape => {
            let a: Vec<usize> = ins.iter().copied().filter(|&d| d != 1).collect();
            let b: Vec<usize> = outs.iter().copied().filter(|&d| d != 1).collect();
            if a != b {
                return None;
            }
            // Only size-1 axes differ: pair the other axes in order.
            let kept: Vec<(Option<usize>, usize)> = outs
                .iter()
                .zip(ax)
                .filter(|(&d, _)| d != 1)
                .map(|(_, &x)| x)
                .collect();
            let mut k = kept.into_iter();
            Some(View::Axes(
                ins.iter()
                    .map(|&d| {
                        if d == 1 {
                            (None, 0)
                        } else {
                            k.next().unwrap_or((None, 0))
                        }
                    })
                    .collect(),
            ))
        }
        _ => None,
    }
}

fn is_view_op(op: &Op) -> bool {
    matches!(
        op,
        Op::BroadcastTo | Op::Permute(_) | Op::Slice { .. } | Op::Reshape
    )
}

/// A view op that stays an affine map of the domain whatever the view of its output:
/// everything but a reshape that does more than add or drop size-1 axes.
fn is_affine_view(g: &GraphData, id: NodeId) -> bool {
    let n = g.node(id);
    match n.op {
        Op::BroadcastTo | Op::Permute(_) | Op::Slice { .. } => true,
        Op::Reshape => {
            let strip =
                |t: &Ty| -> Vec<usize> { fixed(t).into_iter().filter(|&d| d != 1).collect() };
            strip(&n.ty) == strip(&g.node(n.inputs[0]).ty)
        }
        _ => false,
    }
}

fn is_elementwise(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast(_))
}

struct Group<'a> {
    g: &'a GraphData,
    members: HashSet<NodeId>,
    params: Vec<NodeId>,
    memo: HashMap<(NodeId, View), ExprId>,
    exprs: Vec<(Expr, crate::DType)>,
    rank: usize,
    core: Option<NodeId>,
    core_misread: bool,
    notes: Vec<(NodeId, String)>,
}

impl Group<'_> {
    fn param(&mut self, id: NodeId) -> u32 {
        if let Some(i) = self.params.iter().position(|&p| p == id) {
            return i as u32;
        }
        self.params.push(id);
        self.params.len() as u32 - 1
    }

    fn push(&mut self, e: Expr, t: crate::DType) -> ExprId {
        self.exprs.push((e, t));
        self.exprs.len() as u32 - 1
    }

    fn note(&mut self, id: NodeId, why: String) {
        if !self.notes.iter().any(|(i, _)| *i == id) {
            self.notes.push((id, why));
        }
    }

    fn load(&mut self, id: NodeId, v: &View) -> ExprId {
        let n = self.g.node(id);
        let p = self.param(id);
        let map = v.to_map(&fixed(&n.ty), self.rank);
        self.push(Expr::Load { param: p, map }, n.ty.dtype)
    }

    /// The expression for node `id` seen through view `v`.
    fn expr(&mut self, id: NodeId, v: &View) -> ExprId {
        if let Some(&e) = self.memo.get(&(id, v.clone())) {
            return e;
        }
        let g = self.g;
        let n = g.node(id);
        let dt = n.ty.dtype;
        let e = match &n.op {
            Op::Constant(c) if c.0.len() == 1 => {
                let v = c.0.to_f64_vec()[0];
                self.push(Expr::Const(v.to_bits()), dt)
            }
            _ if Some(id) == self.core => {
                if *v != View::identity(self.rank) {
                    self.core_misread = true;
                }
                self.push(Expr::Core, dt)
            }
            op if is_elementwise(op) && self.members.contains(&id) => {
                let args: SmallVec<[ExprId; 3]> =
                    n.inputs.iter().map(|&i| self.expr(i, v)).collect();
                let e = match op {
                    Op::Unary(u) => Expr::Unary(*u, args[0]),
                    Op::Binary(b) => Expr::Binary(*b, args[0], args[1]),
                    Op::Where => Expr::Where(args[0], args[1], args[2]),
                    _ => Expr::Cast(args[0]),
                };
                self.push(e, dt)
            }
            op if is_view_op(op) => {
                let input = n.inputs[0];
                let materialized =
                    !self.members.contains(&input) || !is_elementwise(&g.node(input).op);
                match view_through(g, id, v) {
                    Some(iv) => self.expr(input, &iv),
                    None if materialized
                        && matches!(op, Op::Reshape)
                        && !is_view_op(&g.node(input).op) =>
                    {
                        // A general reshape of a buffer: same bytes, read linearly.
                        let map = v.to_map(&fixed(&n.ty), self.rank);
                        let p = self.param(input);
                        self.push(Expr::Load { param: p, map }, dt)
                    }
                    None => {
                        // Unreachable by construction (membership stops at such reshapes):
                        // reading the reshape node as a parameter is still correct.
                        self.note(id, format!("{} is not an affine view here", op.name()));
                        self.load(id, v)
                    }
                }
            }
            _ => self.load(id, v),
        };
        self.memo.insert((id, v.clone()), e);
        e
    }
}

/// Decides which producers join the kernel rooted at `root`.
#[allow(clippy::too_many_arguments)] // the fusion pass's state, read-only but for `notes`
fn membership(
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
        let via_solid = us.iter().any(|&u| is_view_chain_into(g, u, &solid, users));
        let via_any = via_solid
            || us
                .iter()
                .any(|&u| is_view_chain_into(g, u, &members, users));
        if !via_any {
            continue;
        }
        // Users that this kernel does not own (duplicated members count as outside: other
        // kernels compute them too, and may need this value as a buffer).
        let outside = us
            .iter()
            .filter(|u| !solid.contains(u) && !is_view_chain_into(g, **u, &solid, users))
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
                notes.push((id, format!("{} is not an affine view", n.op.name())));
            }
            _ => {}
        }
    }
    (members, dups, core)
}

/// Elementwise ops cheap enough to compute twice rather than store and load.
fn is_cheap(op: &Op) -> bool {
    use crate::graph::op::Cost;
    match op {
        Op::Unary(u) => u.props().cost == Cost::Cheap,
        Op::Binary(b) => b.props().cost == Cost::Cheap,
        Op::Where | Op::Cast(_) => true,
        // Not elementwise (fusion never asks), or elementwise but not worth recomputing.
        Op::StopGradient
        | Op::Placeholder
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
        | Op::Fusion(_) => false,
    }
}

/// True if every user can take a producer into its own kernel.
fn all_users_can_fuse(g: &GraphData, us: &[NodeId]) -> bool {
    us.iter().all(|&u| {
        let op = &g.node(u).op;
        is_elementwise(op) || matches!(op, Op::Reduce { .. })
    })
}

/// True if `id` is a member that computes its operands' values itself, or a view op all of
/// whose users are (transitively) such members. A matmul member does not: `gemm` reads its
/// operands from memory, so they are parameters (their own kernels' outputs), never members.
fn is_view_chain_into(
    g: &GraphData,
    id: NodeId,
    members: &HashSet<NodeId>,
    users: &HashMap<NodeId, Vec<NodeId>>,
) -> bool {
    if members.contains(&id) {
        return !matches!(g.node(id).op, Op::MatMul);
    }
    if !is_affine_view(g, id) {
        return false;
    }
    let us = users.get(&id).map(Vec::as_slice).unwrap_or(&[]);
    !us.is_empty() && us.iter().all(|&u| is_view_chain_into(g, u, members, users))
}

fn mat_operand(grp: &mut Group<'_>, id: NodeId, rank: usize) -> MatOperand {
    let g = grp.g;
    let mut v = View::identity(rank);
    let mut cur = id;
    while is_view_op(&g.node(cur).op) {
        match view_through(g, cur, &v) {
            Some(nv) => {
                v = nv;
                cur = g.node(cur).inputs[0];
            }
            None => break,
        }
    }
    let map = v.to_map(&fixed(&g.node(cur).ty), rank);
    let param = grp.param(cur);
    MatOperand {
        param,
        offset: map.offset,
        strides: map.strides,
    }
}

struct Built {
    kernel: Kernel,
    params: Vec<NodeId>,
    /// Members owned by this kernel (duplicated cheap producers excluded).
    members: HashSet<NodeId>,
    notes: Vec<(NodeId, String)>,
}

/// Builds the kernel rooted at `root`; None if its core would be read through a view (the
/// caller then retries without a core).
fn build(
    g: &GraphData,
    root: NodeId,
    users: &HashMap<NodeId, Vec<NodeId>>,
    outputs: &HashSet<NodeId>,
    assigned: &HashSet<NodeId>,
    needed: &HashSet<NodeId>,
    allow_core: bool,
) -> Option<Built> {
    let n = g.node(root);
    let mut notes = vec![];
    let (members, dups, core) = membership(
        g, root, users, outputs, assigned, needed, allow_core, &mut notes,
    );
    let out_shape = fixed(&n.ty);
    let mut grp = Group {
        g,
        members: members.clone(),
        params: vec![],
        memo: HashMap::new(),
        exprs: vec![],
        rank: out_shape.len(),
        core: None,
        core_misread: false,
        notes: vec![],
    };
    let (prologue, kcore) = match core.map(|c| (c, &g.node(c).op)) {
        Some((c, Op::Reduce { op, axes, .. })) => {
            let x = g.node(c).inputs[0];
            let dom = fixed(&g.node(x).ty);
            grp.rank = dom.len();
            grp.expr(x, &View::identity(dom.len()));
            let body = Body {
                domain: dom,
                exprs: std::mem::take(&mut grp.exprs),
            };
            grp.memo.clear();
            grp.rank = out_shape.len();
            (
                body,
                Core::Reduce {
                    op: *op,
                    axes: axes.clone(),
                },
            )
        }
        Some((c, Op::MatMul)) => {
            let cn = g.node(c);
            let (a, b) = (cn.inputs[0], cn.inputs[1]);
            let cs = fixed(&cn.ty);
            let r = cs.len();
            let k = fixed(&g.node(a).ty)[r - 1];
            let ao = mat_operand(&mut grp, a, r);
            let bo = mat_operand(&mut grp, b, r);
            let batch = cs[..r - 2].iter().copied().collect();
            (
                Body::default(),
                Core::MatMul {
                    a: ao,
                    b: bo,
                    batch,
                    m: cs[r - 2],
                    k,
                    n: cs[r - 1],
                },
            )
        }
        _ => (Body::default(), Core::None),
    };
    grp.core = core;
    grp.expr(root, &View::identity(out_shape.len()));
    if grp.core_misread {
        return None;
    }
    let epilogue = Body {
        domain: out_shape,
        exprs: std::mem::take(&mut grp.exprs),
    };
    notes.append(&mut grp.notes);
    let kernel = Kernel {
        params: grp.params.iter().map(|&i| g.node(i).ty.clone()).collect(),
        prologue,
        core: kcore,
        epilogue,
        out: n.ty.clone(),
    };
    let owned = members.difference(&dups).copied().collect();
    Some(Built {
        kernel,
        params: grp.params,
        members: owned,
        notes,
    })
}

impl Pass for Fusion {
    fn name(&self) -> &str {
        "fusion"
    }

    fn run(&self, p: &mut Program, _opts: &PassOptions) -> Result<bool> {
        let order = p.live_order();
        if order
            .iter()
            .any(|&id| !p.graph.node(id).ty.shape.is_fixed())
        {
            // Fusion needs concrete shapes; without a batch size there is nothing to do.
            return Ok(false);
        }
        let mut users: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for &id in &order {
            for &i in &p.graph.node(id).inputs {
                let e = users.entry(i).or_default();
                if !e.contains(&id) {
                    e.push(id);
                }
            }
        }
        let outputs: HashSet<NodeId> = p.outputs.iter().copied().collect();
        let mut assigned: HashSet<NodeId> = HashSet::new();
        // Values that must exist as buffers: outputs, operands of ops that are not fused
        // (pad, concat, views that no kernel absorbs), and every kernel parameter.
        let mut needed: HashSet<NodeId> = outputs.clone();
        for &id in &order {
            let op = &p.graph.node(id).op;
            let fusable = is_elementwise(op)
                || is_view_op(op)
                || matches!(op, Op::Reduce { .. } | Op::MatMul);
            if !fusable {
                needed.extend(p.graph.node(id).inputs.iter().copied());
            }
        }
        let mut built: Vec<(NodeId, Built)> = vec![];
        for &root in order.iter().rev() {
            let op = &p.graph.node(root).op;
            let is_root = is_elementwise(op) || matches!(op, Op::Reduce { .. } | Op::MatMul);
            if assigned.contains(&root) || !is_root {
                continue;
            }
            // Consumers come first, so every reader of `root` is decided: if no kernel reads it
            // as a parameter, each one computes it itself and it needs no kernel.
            if !needed.contains(&root) {
                continue;
            }
            let b = match build(&p.graph, root, &users, &outputs, &assigned, &needed, true) {
                Some(b) => b,
                None => build(&p.graph, root, &users, &outputs, &assigned, &needed, false)
                    .ok_or_else(|| crate::Error::invalid("fusion: no kernel without a core"))?,
            };
            b.kernel.validate().map_err(|e| {
                crate::Error::invalid(format!("fusion built an invalid kernel: {e}"))
            })?;
            assigned.extend(b.members.iter().copied());
            needed.extend(b.params.iter().copied());
            built.push((root, b));
        }
        let changed = !built.is_empty();
        let mut kernel_of: HashMap<NodeId, NodeId> = HashMap::new();
        let mut pending_notes = vec![];
        for (root, b) in built {
            let n = p.graph.node(root);
            let (loc, ty) = (n.loc.clone(), n.ty.clone());
            let name = n.name.as_deref().map(str::to_string);
            let kernel = p.kernels.add(b.kernel);
            let f = p
                .graph
                .add_node(Op::Fusion(kernel), &b.params, Some(ty), None, loc);
            p.replace(root, f);
            if let Some(name) = name {
                let _ = p.graph.rename(root, &format!("{name}.unfused"));
                let _ = p.graph.rename(f, &name);
            }
            kernel_of.insert(root, f);
            for (producer, why) in b.notes {
                pending_notes.push((producer, f, why));
            }
        }
        for (producer, consumer, why) in pending_notes {
            // A producer that became a kernel root is noted on its kernel.
            let at = kernel_of.get(&producer).copied().unwrap_or(producer);
            p.notes.entry(at).or_default().push(Note {
                consumer: Some(consumer),
                text: why,
            });
        }
        let outs = p.outputs.clone();
        super::dce::remove_dead(&mut p.graph, &outs);
        p.notes.retain(|id, _| p.graph.get(*id).is_some());
        Ok(changed)
    }
}

/// Counts the kernels a program runs: fused kernels, and compute ops left unfused.
pub fn kernel_count(p: &Program) -> usize {
    p.live_order()
        .into_iter()
        .filter(|&id| {
            let op = &p.graph.node(id).op;
            !matches!(op.group(), OpGroup::Source) && !matches!(op, Op::Reshape)
        })
        .count()
}
