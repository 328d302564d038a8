//! Building one kernel: the expression of each member at the kernel's points, views folded
//! into loads through [`crate::view`].

use super::membership::membership;
use super::{fixed, is_elementwise};
use crate::graph::op::Op;
use crate::graph::{GraphData, NodeId};
use crate::kernel::{Body, Core, Expr, ExprId, Kernel, MatOperand};
use crate::view::{Movement, Through, View};
use smallvec::SmallVec;
use std::collections::{HashMap, HashSet};

struct Group<'a> {
    g: &'a GraphData,
    members: HashSet<NodeId>,
    params: Vec<NodeId>,
    memo: HashMap<(NodeId, View), ExprId>,
    exprs: Vec<(Expr, crate::DType)>,
    /// The loop extents of the body being built.
    domain: Vec<usize>,
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

    /// Node `id`'s buffer, of shape `shape`, read through `v` (zero where `v` reads nothing).
    fn load_as(&mut self, id: NodeId, shape: &[usize], v: &View, dt: crate::DType) -> ExprId {
        match v.index_map(shape, &self.domain) {
            Some(map) => {
                let p = self.param(id);
                self.push(Expr::Load { param: p, map }, dt)
            }
            None => self.push(Expr::Const(0f64.to_bits()), dt),
        }
    }

    fn load(&mut self, id: NodeId, v: &View) -> ExprId {
        let n = self.g.node(id);
        self.load_as(id, &fixed(&n.ty), v, n.ty.dtype)
    }

    /// The expression for node `id` seen through view `v`. A member is computed here only
    /// where `v` reads it plainly (no pad or concat guard): a value computed at a point the
    /// guard excludes would not be the zero it must read there.
    fn expr(&mut self, id: NodeId, v: &View) -> ExprId {
        if let Some(&e) = self.memo.get(&(id, v.clone())) {
            return e;
        }
        let g = self.g;
        let n = g.node(id);
        let dt = n.ty.dtype;
        let plain = v.is_plain(&fixed(&n.ty), &self.domain);
        let e = match &n.op {
            Op::Constant(c) if c.0.len() == 1 && plain => {
                let v = c.0.to_f64_vec()[0];
                self.push(Expr::Const(v.to_bits()), dt)
            }
            Op::Size { axes } => {
                let shape = fixed(&g.node(n.inputs[0]).ty);
                let k: usize = axes.iter().map(|&a| shape[a]).product();
                self.push(Expr::Const((k as f64).to_bits()), dt)
            }
            _ if Some(id) == self.core => {
                if *v != View::identity(self.domain.len()) {
                    self.core_misread = true;
                }
                self.push(Expr::Core, dt)
            }
            op if is_elementwise(op) && self.members.contains(&id) && plain => {
                let args: SmallVec<[ExprId; 3]> =
                    n.inputs.iter().map(|&i| self.expr(i, v)).collect();
                let e = match op {
                    // The identity: no expression of its own.
                    Op::StopGradient => return self.memoized(id, v, args[0]),
                    Op::Unary(u) => Expr::Unary(*u, args[0]),
                    Op::Binary(b) => Expr::Binary(*b, args[0], args[1]),
                    Op::Where => Expr::Where(args[0], args[1], args[2]),
                    Op::Cast(_) => Expr::Cast(args[0]),
                    // `is_elementwise` (this arm's guard) admits none of these.
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
                    | Op::Fusion(_) => unreachable!("{} is not elementwise", op.name()),
                };
                self.push(e, dt)
            }
            op => match Movement::of(op) {
                Some(mv) => self.movement(id, mv, v),
                None => self.load(id, v),
            },
        };
        self.memoized(id, v, e)
    }

    fn memoized(&mut self, id: NodeId, v: &View, e: ExprId) -> ExprId {
        self.memo.insert((id, v.clone()), e);
        e
    }

    /// A movement op seen through `v`: its operands through the view it implies.
    fn movement(&mut self, id: NodeId, mv: Movement<'_>, v: &View) -> ExprId {
        let g = self.g;
        let n = g.node(id);
        let out = fixed(&n.ty);
        let ins: Vec<Vec<usize>> = n.inputs.iter().map(|&i| fixed(&g.node(i).ty)).collect();
        let in_refs: Vec<&[usize]> = ins.iter().map(Vec::as_slice).collect();
        match v.through(mv, &in_refs, &out, &self.domain) {
            Through::Input(k, iv) => self.expr(n.inputs[k], &iv),
            Through::Parts { axis, parts } => {
                let mut bounds: SmallVec<[usize; 4]> = SmallVec::new();
                let mut ids: SmallVec<[ExprId; 4]> = SmallVec::new();
                for (k, lo, hi, pv) in parts {
                    if bounds.is_empty() {
                        bounds.push(lo);
                    }
                    ids.push(self.expr(n.inputs[k], &pv));
                    bounds.push(hi);
                }
                self.push(
                    Expr::Select {
                        axis,
                        bounds,
                        parts: ids,
                    },
                    n.ty.dtype,
                )
            }
            Through::Linear(lv) => {
                let input = n.inputs[0];
                let materialized =
                    !self.members.contains(&input) || !is_elementwise(&g.node(input).op);
                if materialized && Movement::of(&g.node(input).op).is_none() {
                    // A general reshape of a buffer: same bytes, read linearly.
                    self.load_as(input, &out, &lv, n.ty.dtype)
                } else {
                    // Unreachable by construction (membership stops at such reshapes):
                    // reading the reshape node as a parameter is still correct.
                    self.note(id, format!("{} is not an affine view here", n.op.name()));
                    self.load(id, v)
                }
            }
        }
    }
}

/// A matmul operand: the buffer under its chain of unguarded views, read through strides.
fn mat_operand(grp: &mut Group<'_>, id: NodeId) -> MatOperand {
    let g = grp.g;
    let dom = fixed(&g.node(id).ty);
    let mut v = View::identity(dom.len());
    let mut cur = id;
    while let Some(mv) = Movement::of(&g.node(cur).op).filter(|m| !m.is_guarded()) {
        let n = g.node(cur);
        let x = fixed(&g.node(n.inputs[0]).ty);
        match v.through(mv, &[&x], &fixed(&n.ty), &dom) {
            Through::Input(0, nv) if nv.is_plain(&x, &dom) => {
                v = nv;
                cur = n.inputs[0];
            }
            _ => break,
        }
    }
    let (cur, map) = match v.index_map(&fixed(&g.node(cur).ty), &dom) {
        Some(m) if m.bounds.is_empty() && m.offset >= 0 => (cur, m),
        // Unreachable (unguarded views read in bounds): the operand itself is a buffer.
        _ => (id, crate::view::IndexMap::contiguous(&dom)),
    };
    let param = grp.param(cur);
    MatOperand {
        param,
        offset: map.offset as usize,
        strides: map.strides,
    }
}

pub(super) struct Built {
    pub kernel: Kernel,
    pub params: Vec<NodeId>,
    /// Members owned by this kernel (duplicated cheap producers excluded).
    pub members: HashSet<NodeId>,
    pub notes: Vec<(NodeId, String)>,
}

/// Builds the kernel rooted at `root`; None if its core would be read through a view (the
/// caller then retries without a core).
pub(super) fn build(
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
        domain: out_shape.clone(),
        core: None,
        core_misread: false,
        notes: vec![],
    };
    let (prologue, kcore) = match core.map(|c| (c, &g.node(c).op)) {
        Some((c, Op::Reduce { op, axes, .. })) => {
            let x = g.node(c).inputs[0];
            let dom = fixed(&g.node(x).ty);
            grp.domain = dom.clone();
            grp.expr(x, &View::identity(dom.len()));
            let body = Body {
                domain: dom,
                exprs: std::mem::take(&mut grp.exprs),
            };
            grp.memo.clear();
            grp.domain = out_shape.clone();
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
            let ao = mat_operand(&mut grp, a);
            let bo = mat_operand(&mut grp, b);
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
