//! `layout`: sinks permutes through elementwise ops until they meet their inverse and vanish.
//!
//! kiln has one internal layout, NHWC (ARCHITECTURE.md, "Images"). An NCHW caller (PyTorch
//! code, an imported ONNX model) gets `permute(NCHW→NHWC) → conv2d → permute(NHWC→NCHW)`
//! for every convolution, and its batch normalization, activation and residual add run in
//! NCHW between two convolutions. Each of those permutes is a pass over the tensor. This
//! pass moves a permute *down*, past the elementwise ops that read it, so that the
//! `NHWC→NCHW` after one convolution reaches the `NCHW→NHWC` before the next one, where the
//! two compose to the identity and both go: the whole block then runs in NHWC, and only the
//! model's input (and an output that is really NCHW) keeps a transpose.
//!
//! The rewrite table (tinygrad style: one table for this one concern), every rule exact
//! since a permute moves elements and never changes one:
//!
//! | pattern | becomes |
//! |---|---|
//! | `permute(x, identity)` | `x` |
//! | `permute(permute(x, p), q)` | `permute(x, p∘q)`, or `x` if that is the identity |
//! | `permute(x, p)` moving only size-1 axes | `reshape(x)` (same element order, no copy) |
//! | `reshape(permute(x, p))`, the reshape only adding or dropping size-1 axes | `permute(reshape(x), p')` |
//! | `f(permute(x, p), o…)`, `f` elementwise (unary, binary, `where`, `cast`) | `permute(f(x, o'…), p)` |
//!
//! In the last rule every other operand `o` must have an `o'` with `permute(o', p) = o`
//! that costs no data movement: `permute(o', p)` itself; a tensor whose permutation moves only
//! size-1 axes (a per-channel `[1, C, 1, 1]` vector becomes `[1, 1, 1, C]` by a reshape);
//! `broadcast_to(y)` of such an operand (`broadcast_to(y')` to the permuted shape). So
//! batch normalization's `broadcast_to(reshape(mean, [1, C, 1, 1]))` operands follow the
//! data into NHWC for free.
//!
//! **When sinking pays.** Sinking a permute that other nodes also read keeps it for them
//! and adds one after the op: more data movement, unless the new permute cancels further
//! down. Whether it does is known only at the end of the chain, so the pass rewrites a copy
//! of the program to a fixpoint and keeps it only if the total size of the permutes the
//! outputs need (those that move data: not the size-1-axis ones) did not grow. A permute of
//! a variable (an OIHW filter to HWIO) is read by a convolution, which no rule crosses, and
//! stays; it is the next thing to remove (ARCHITECTURE.md, "Images").

use super::{Pass, PassOptions, Program};
use crate::error::Result;
use crate::graph::op::{Axes, Op, Ty};
use crate::graph::{GraphData, NodeId};
use crate::shape::{Dim, Shape};

/// See the module docs.
pub struct Layout;

/// Rounds of the rewrite over the program before giving up on a fixpoint (each round sinks
/// every permute past at least one op, so a chain of depth `d` needs about `d` rounds; the
/// rounds are cheap, one walk each).
const MAX_ROUNDS: usize = 4096;

impl Pass for Layout {
    fn name(&self) -> &str {
        "layout"
    }
    fn run(&self, p: &mut Program, opts: &PassOptions) -> Result<bool> {
        let order = p.live_order();
        if !order
            .iter()
            .any(|&id| matches!(p.graph.node(id).op, Op::Permute(_)))
        {
            return Ok(false);
        }
        let batch = opts.batch.unwrap_or(8);
        let before = permute_cost(p, batch);
        let mut trial = p.clone();
        let mut changed = false;
        for _ in 0..MAX_ROUNDS {
            if !round(&mut trial) {
                break;
            }
            changed = true;
        }
        if !changed || permute_cost(&trial, batch) > before {
            return Ok(false);
        }
        super::dce::remove_dead(&mut trial.graph, &trial.outputs);
        *p = trial;
        Ok(true)
    }
}

/// Elements moved by the permutes the outputs need (a permute of size-1 axes moves none).
fn permute_cost(p: &Program, batch: usize) -> u128 {
    p.live_order()
        .into_iter()
        .filter_map(|id| {
            let n = p.graph.node(id);
            match &n.op {
                Op::Permute(perm) if !unit_only(&p.graph.node(n.inputs[0]).ty.shape, perm) => Some(
                    n.ty.shape
                        .resolve(batch)
                        .iter()
                        .map(|&d| d as u128)
                        .product::<u128>(),
                ),
                _ => None,
            }
        })
        .sum()
}

/// One walk over the live nodes in topological order, applying the first rule that fits
/// each; returns whether anything changed.
fn round(p: &mut Program) -> bool {
    let mut changed = false;
    for id in p.live_order() {
        if p.graph.get(id).is_none() {
            continue;
        }
        if let Some(new) = rewrite(&mut p.graph, id) {
            p.replace(id, new);
            changed = true;
        }
    }
    changed
}

/// Which rule of the table an op is subject to.
enum Kind {
    /// A permute: identity, composition, size-1 axes.
    Permute,
    /// A reshape: a permute operand may sink through it.
    Reshape,
    /// Elementwise: a permute operand sinks through it.
    Elementwise,
    /// No rule.
    None,
}

/// The rule kind of each op: an exhaustive match, so a new op is placed here on purpose.
fn kind(op: &Op) -> Kind {
    match op {
        Op::Permute(_) => Kind::Permute,
        Op::Reshape => Kind::Reshape,
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast(_) | Op::StopGradient => {
            Kind::Elementwise
        }
        // Sources have no operand; the other movement ops, reductions, contractions and
        // windows look at axes, so a permute does not cross them unchanged; effects are
        // lowered before any editable pass; a fused kernel is opaque; a collective sums
        // across processes and keeps the layout its operands were reduced in.
        Op::Placeholder
        | Op::Variable { .. }
        | Op::Constant(_)
        | Op::Random { .. }
        | Op::Reduce { .. }
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
        | Op::Fusion(_) => Kind::None,
    }
}

fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| i == p)
}

/// True if permuting a tensor of `shape` by `perm` keeps the order of its axes that are not
/// known to have size 1: then the permute moves no element, and is a reshape.
fn unit_only(shape: &Shape, perm: &[usize]) -> bool {
    let d = shape.dims();
    let mut last = None;
    perm.iter()
        .filter(|&&a| d[a] != Dim::Fixed(1))
        .all(|&a| last.replace(a).is_none_or(|l| l < a))
}

/// `perm`'s inverse: `inverse(p)[p[i]] = i`.
fn inverse(perm: &[usize]) -> Axes {
    let mut q: Axes = perm.iter().map(|_| 0).collect();
    for (i, &p) in perm.iter().enumerate() {
        q[p] = i;
    }
    q
}

/// `shape` permuted by `perm` (`out[i] = shape[perm[i]]`).
fn permuted(shape: &Shape, perm: &[usize]) -> Shape {
    Shape(perm.iter().map(|&a| shape.dims()[a]).collect())
}

/// The replacement of node `id`, if a rule of the table applies.
fn rewrite(g: &mut GraphData, id: NodeId) -> Option<NodeId> {
    let n = g.node(id).clone();
    match kind(&n.op) {
        Kind::Permute => {
            let Op::Permute(perm) = &n.op else {
                return None;
            };
            let x = n.inputs[0];
            if is_identity(perm) {
                return Some(x);
            }
            if let Op::Permute(inner) = &g.node(x).op {
                let composed: Axes = perm.iter().map(|&i| inner[i]).collect();
                let xx = g.node(x).inputs[0];
                if is_identity(&composed) {
                    return Some(xx);
                }
                return Some(add(g, Op::Permute(composed), &[xx], None, &n));
            }
            if unit_only(&g.node(x).ty.shape, perm) {
                return Some(add(g, Op::Reshape, &[x], Some(n.ty.clone()), &n));
            }
            None
        }
        Kind::Reshape => sink_through_reshape(g, &n),
        Kind::Elementwise => sink_through_elementwise(g, &n),
        Kind::None => None,
    }
}

/// Adds a node with `like`'s source location.
fn add(
    g: &mut GraphData,
    op: Op,
    inputs: &[NodeId],
    ty: Option<Ty>,
    like: &crate::graph::Node,
) -> NodeId {
    g.add_node(op, inputs, ty, None, like.loc.clone())
}

/// `f(permute(x, p), o…) → permute(f(x, o'…), p)` when every other operand has a free `o'`.
fn sink_through_elementwise(g: &mut GraphData, n: &crate::graph::Node) -> Option<NodeId> {
    let candidates: Vec<Axes> = n
        .inputs
        .iter()
        .filter_map(|&i| match &g.node(i).op {
            Op::Permute(p) if !unit_only(&g.node(g.node(i).inputs[0]).ty.shape, p) => {
                Some(p.clone())
            }
            _ => None,
        })
        .collect();
    for perm in candidates {
        let plans: Option<Vec<Plan>> = n.inputs.iter().map(|&o| plan(g, o, &perm)).collect();
        let Some(plans) = plans else {
            continue;
        };
        let operands: Vec<NodeId> = plans.into_iter().map(|pl| build(g, pl, n)).collect();
        let inner = add(g, n.op.clone(), &operands, None, n);
        return Some(add(g, Op::Permute(perm), &[inner], None, n));
    }
    None
}

/// How to make `o'` with `permute(o', p) = o` without moving data.
enum Plan {
    /// `o'` exists: `o` is `permute(o', p)`.
    Use(NodeId),
    /// `o'` is `reshape(o)` to this shape (the permute moves only size-1 axes).
    Reshape(NodeId, Ty),
    /// `o'` is `broadcast_to(y')` to this type, `y'` from the plan for `o`'s operand.
    Broadcast(Box<Plan>, Ty),
}

fn plan(g: &GraphData, o: NodeId, perm: &[usize]) -> Option<Plan> {
    let n = g.node(o);
    if let Op::Permute(p) = &n.op {
        if p.as_slice() == perm {
            return Some(Plan::Use(n.inputs[0]));
        }
    }
    let inv = inverse(perm);
    let ty = Ty {
        dtype: n.ty.dtype,
        shape: permuted(&n.ty.shape, &inv),
    };
    if unit_only(&n.ty.shape, &inv) {
        return Some(Plan::Reshape(o, ty));
    }
    if let Op::BroadcastTo = n.op {
        let y = n.inputs[0];
        let ys = &g.node(y).ty.shape;
        let (r, ry) = (n.ty.shape.rank(), ys.rank());
        if ry == 0 {
            return Some(Plan::Broadcast(Box::new(Plan::Use(y)), ty));
        }
        if ry == r {
            return Some(Plan::Broadcast(Box::new(plan(g, y, perm)?), ty));
        }
        // A lower rank broadcasts as if padded with leading 1s: reshape to that, permuted.
        let padded = Shape(
            std::iter::repeat_n(Dim::Fixed(1), r.checked_sub(ry)?)
                .chain(ys.dims().iter().copied())
                .collect(),
        );
        if unit_only(&padded, &inv) {
            let yt = Ty {
                dtype: n.ty.dtype,
                shape: permuted(&padded, &inv),
            };
            return Some(Plan::Broadcast(Box::new(Plan::Reshape(y, yt)), ty));
        }
    }
    None
}

fn build(g: &mut GraphData, pl: Plan, like: &crate::graph::Node) -> NodeId {
    match pl {
        Plan::Use(id) => id,
        Plan::Reshape(id, ty) => add(g, Op::Reshape, &[id], Some(ty), like),
        Plan::Broadcast(inner, ty) => {
            let y = build(g, *inner, like);
            add(g, Op::BroadcastTo, &[y], Some(ty), like)
        }
    }
}

/// `reshape(permute(x, p))`, where the reshape only adds or drops size-1 axes, becomes
/// `permute(reshape(x), p')`: the permute moves on past the reshape.
fn sink_through_reshape(g: &mut GraphData, n: &crate::graph::Node) -> Option<NodeId> {
    let pn = g.node(n.inputs[0]).clone();
    let Op::Permute(perm) = &pn.op else {
        return None;
    };
    let x = pn.inputs[0];
    let xs = g.node(x).ty.shape.clone();
    if unit_only(&xs, perm) {
        return None; // the permute becomes a reshape first
    }
    let non_unit = |s: &Shape| -> Vec<usize> {
        (0..s.rank())
            .filter(|&a| s.dims()[a] != Dim::Fixed(1))
            .collect()
    };
    let (s, t) = (&pn.ty.shape, &n.ty.shape);
    let (a, b) = (non_unit(s), non_unit(t));
    if a.len() != b.len() || a.iter().zip(&b).any(|(&i, &j)| s.dims()[i] != t.dims()[j]) {
        return None;
    }
    // x's non-unit axes in x's order; the k-th goes to position b[k] of the new reshape.
    let mut xa: Vec<usize> = a.iter().map(|&i| perm[i]).collect();
    xa.sort_unstable();
    let mut u: Vec<Dim> = vec![Dim::Fixed(1); t.rank()];
    for (k, &ax) in xa.iter().enumerate() {
        u[b[k]] = xs.dims()[ax];
    }
    let mut p2: Axes = (0..t.rank()).collect();
    for (i, &ai) in a.iter().enumerate() {
        let rank_in_x = xa.binary_search(&perm[ai]).ok()?;
        p2[b[i]] = b[rank_in_x];
    }
    let reshaped_ty = Ty {
        dtype: n.ty.dtype,
        shape: Shape(u.into()),
    };
    let r = add(g, Op::Reshape, &[x], Some(reshaped_ty), n);
    Some(add(g, Op::Permute(p2), &[r], None, n))
}
