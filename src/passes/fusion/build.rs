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
    ///
    /// The walk keeps its own stack of tasks rather than recursing (a kernel's members and the
    /// views between them can be as deep as the graph), and visits operands first, in order,
    /// each looked up in `memo` when its turn comes: the order in which a recursive walk would
    /// push the expressions, so a kernel's body does not depend on how it is walked.
    fn expr(&mut self, id: NodeId, v: &View) -> ExprId {
        let mut tasks = vec![Task::Visit(id, v.clone())];
        while let Some(task) = tasks.pop() {
            match task {
                Task::Visit(id, v) => {
                    if !self.memo.contains_key(&(id, v.clone())) {
                        self.visit(id, v, &mut tasks);
                    }
                }
                Task::Finish(id, v, then) => {
                    let e = match then {
                        Then::Same(k) => self.memo[&(k, v.clone())],
                        Then::Input(k, iv) => self.memo[&(k, iv)],
                        Then::Compute => self.compute(id, &v),
                        Then::Select {
                            axis,
                            bounds,
                            parts,
                        } => {
                            let ids = parts.into_iter().map(|p| self.memo[&p]).collect();
                            let dt = self.g.node(id).ty.dtype;
                            self.push(
                                Expr::Select {
                                    axis,
                                    bounds,
                                    parts: ids,
                                },
                                dt,
                            )
                        }
                    };
                    self.memo.insert((id, v), e);
                }
            }
        }
        self.memo[&(id, v.clone())]
    }

    /// Decides how node `id` is read through `v`: an expression made at once (memoized here),
    /// or tasks that make its operands' first (pushed on `tasks`, the last one first).
    fn visit(&mut self, id: NodeId, v: View, tasks: &mut Vec<Task>) {
        let g = self.g;
        let n = g.node(id);
        let dt = n.ty.dtype;
        let plain = v.is_plain(&fixed(&n.ty), &self.domain);
        let e = match &n.op {
            Op::Constant(c) if c.0.len() == 1 && plain => {
                // The interpreter's slot (an i64 constant's bits: `src/cast.rs`).
                let c = c.0.to_slots()[0];
                self.push(Expr::Const(c.to_bits()), dt)
            }
            Op::Size { axes } => {
                let shape = fixed(&g.node(n.inputs[0]).ty);
                let k: usize = axes.iter().map(|&a| shape[a]).product();
                self.push(Expr::Const((k as f64).to_bits()), dt)
            }
            _ if Some(id) == self.core => {
                if v != View::identity(self.domain.len()) {
                    self.core_misread = true;
                }
                self.push(Expr::Core, dt)
            }
            op if is_elementwise(op) && self.members.contains(&id) && plain => {
                // `stop_gradient` is the identity: no expression of its own.
                let then = match op {
                    Op::StopGradient => Then::Same(n.inputs[0]),
                    _ => Then::Compute,
                };
                tasks.push(Task::Finish(id, v.clone(), then));
                for &i in n.inputs.iter().rev() {
                    tasks.push(Task::Visit(i, v.clone()));
                }
                return;
            }
            op => match Movement::of(op) {
                Some(mv) => match self.movement(id, mv, &v, tasks) {
                    Some(e) => e,
                    // `movement` pushed the tasks that make the expression.
                    None => return,
                },
                None => self.load(id, &v),
            },
        };
        self.memo.insert((id, v), e);
    }

    /// The expression of elementwise member `id` at the points of `v`, from its operands'.
    fn compute(&mut self, id: NodeId, v: &View) -> ExprId {
        let n = self.g.node(id);
        let args: SmallVec<[ExprId; 3]> = n
            .inputs
            .iter()
            .map(|&i| self.memo[&(i, v.clone())])
            .collect();
        let e = match &n.op {
            Op::Unary(u) => Expr::Unary(*u, args[0]),
            Op::Binary(b) => Expr::Binary(*b, args[0], args[1]),
            Op::Where => Expr::Where(args[0], args[1], args[2]),
            Op::Cast(_) => Expr::Cast(args[0]),
            // `visit` computes only elementwise ops, and `stop_gradient` has no expression.
            op @ (Op::StopGradient
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
            | Op::Conv { .. }
            | Op::Pool { .. }
            | Op::Size { .. }
            | Op::Assign
            | Op::Group
            | Op::AllReduce
            | Op::Fusion(_)) => unreachable!("{} is not computed in a body", op.name()),
        };
        self.push(e, n.ty.dtype)
    }

    /// A movement op seen through `v`: its operands through the view it implies. Returns the
    /// expression if it needs no operand's, or pushes the tasks that make it.
    fn movement(
        &mut self,
        id: NodeId,
        mv: Movement<'_>,
        v: &View,
        tasks: &mut Vec<Task>,
    ) -> Option<ExprId> {
        let g = self.g;
        let n = g.node(id);
        let out = fixed(&n.ty);
        let ins: Vec<Vec<usize>> = n.inputs.iter().map(|&i| fixed(&g.node(i).ty)).collect();
        let in_refs: Vec<&[usize]> = ins.iter().map(Vec::as_slice).collect();
        match v.through(mv, &in_refs, &out, &self.domain) {
            Through::Input(k, iv) => {
                let input = n.inputs[k];
                tasks.push(Task::Finish(id, v.clone(), Then::Input(input, iv.clone())));
                tasks.push(Task::Visit(input, iv));
                None
            }
            Through::Parts { axis, parts } => {
                let mut bounds: SmallVec<[usize; 4]> = SmallVec::new();
                let mut reads: Vec<(NodeId, View)> = vec![];
                for (k, lo, hi, pv) in parts {
                    if bounds.is_empty() {
                        bounds.push(lo);
                    }
                    reads.push((n.inputs[k], pv));
                    bounds.push(hi);
                }
                let visits: Vec<Task> = reads
                    .iter()
                    .rev()
                    .map(|(i, pv)| Task::Visit(*i, pv.clone()))
                    .collect();
                let then = Then::Select {
                    axis,
                    bounds,
                    parts: reads,
                };
                tasks.push(Task::Finish(id, v.clone(), then));
                tasks.extend(visits);
                None
            }
            Through::Linear(lv) => {
                let input = n.inputs[0];
                let materialized =
                    !self.members.contains(&input) || !is_elementwise(&g.node(input).op);
                if materialized && Movement::of(&g.node(input).op).is_none() {
                    // A general reshape of a buffer: same bytes, read linearly.
                    Some(self.load_as(input, &out, &lv, n.ty.dtype))
                } else {
                    // Unreachable by construction (membership stops at such reshapes):
                    // reading the reshape node as a parameter is still correct.
                    self.note(id, format!("{} is not an affine view here", n.op.name()));
                    Some(self.load(id, v))
                }
            }
        }
    }
}

/// A step of [`Group::expr`]'s walk.
enum Task {
    /// Make the expression of a node seen through a view, unless it is made already.
    Visit(NodeId, View),
    /// Make it from its operands' expressions, made by the tasks pushed above this one.
    Finish(NodeId, View, Then),
}

/// How a node's expression follows from its operands'.
enum Then {
    /// It is this operand's through the same view (`stop_gradient`).
    Same(NodeId),
    /// It is this operand's through this view (a view op).
    Input(NodeId, View),
    /// Its elementwise op over its operands' through the same view.
    Compute,
    /// A select among operands read through views, by ranges along an axis (a concat).
    Select {
        axis: usize,
        bounds: SmallVec<[usize; 4]>,
        parts: Vec<(NodeId, View)>,
    },
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
/// caller then retries without a core). `pos` is each live node's topological position.
#[allow(clippy::too_many_arguments)] // the fusion pass's state, read-only
pub(super) fn build(
    g: &GraphData,
    root: NodeId,
    users: &HashMap<NodeId, Vec<NodeId>>,
    outputs: &HashSet<NodeId>,
    assigned: &HashSet<NodeId>,
    needed: &HashSet<NodeId>,
    allow_core: bool,
    pos: &HashMap<NodeId, usize>,
) -> Option<Built> {
    let n = g.node(root);
    let mut notes = vec![];
    let (members, dups, core) = membership(
        g, root, users, outputs, assigned, needed, allow_core, pos, &mut notes,
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
