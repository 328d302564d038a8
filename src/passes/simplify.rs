//! `simplify`: algebraic simplification that keeps IEEE semantics.
//!
//! Always on, each exact for every input including NaN, infinities and signed zeros:
//!
//! | pattern | becomes |
//! |---|---|
//! | `x + (-0)`, `(-0) + x`, `x - (+0)` | `x` |
//! | `x * 1`, `1 * x`, `x / 1` | `x` |
//! | `x / c`, `c` a power of two | `x * (1/c)` (exact: `1/c` is representable) |
//! | `-(-x)` | `x` |
//! | `x - (-y)` ; `x + (-y)` ; `(-x) + y` | `x + y` ; `x - y` ; `y - x` |
//! | `permute(permute(x))` | one `permute`, or `x` if the composition is the identity |
//! | `reshape(reshape(x))` ; `reshape(x)` to its own shape | one `reshape` ; `x` |
//! | `broadcast_to(broadcast_to(x))` ; to its own shape | one `broadcast_to` ; `x` |
//! | `cast(x)` to its own dtype ; `stop_gradient(x)` | `x` (gradients are already built) |
//! | `where(c, x, x)` | `x` |
//! | `where(true, x, y)` ; `where(false, x, y)` (a constant condition, all elements equal) | `x` ; `y` |
//! | a constant whose elements are all equal | `broadcast_to` of a scalar constant |
//!
//! A constant condition is how a graph is specialized on a switch it is fed
//! ([`super::PassOptions::fixed_feeds`], a model's `training`): the branch it does not
//! select is then dead code, and [`super::dce`] removes it. The result is bitwise the
//! selected branch's, so the rewrite is exact; but the dead branch is no longer computed,
//! and the one way computing it shows is a run-time error (an `i32` division by zero, see
//! `Node::can_fail_at_run`). Since the interpreter (the oracle) computes both branches, as
//! TF's `tf.where` does, and reports such an error, the rewrite is not made when the dropped
//! branch holds a node that can fail and that the kept branch does not compute as well:
//! both backends then report the same error for the same feeds.
//!
//! Never applied, because they are wrong for some inputs: `x * 0 -> 0` (NaN, inf, -0),
//! `x - x -> 0` (NaN, inf), `x + 0 -> x` with `+0` (`-0 + 0 = +0`).
//!
//! Only with [`super::PassOptions::relaxed`], because they change results in the last bits:
//! - `x + (+0) -> x` (turns a `+0` result into `-0` when `x` is `-0`);
//! - `exp(log(x)) -> x` where `x` is provably non-negative (the output of `exp`, `sigmoid`,
//!   `sqrt`, `abs` or `x*x`): exact in real arithmetic, not in floating point;
//! - `reduce_sum(reduce_sum(x, a), b) -> reduce_sum(x, a ∪ b)`: reassociates the sum.
//!
//! Effects are not simplify's business: `assign` and `group` are gone before any editable
//! pass runs ([`super::lower_effects`], mandatory).

use super::{Pass, PassOptions, Program};
use crate::array::{Array, ConstValue};
use crate::error::Result;
use crate::graph::op::{Axes, BinaryOp, Op, ReduceOp, Ty, UnaryOp};
use crate::graph::{GraphData, NodeId};
use crate::shape::Shape;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// See the module docs.
pub struct Simplify;

/// The single value of a constant (or broadcast constant) whose elements are all bitwise
/// equal, as `f64`.
fn splat(g: &GraphData, id: NodeId) -> Option<f64> {
    match &g.node(id).op {
        Op::Constant(c) => {
            let v = c.0.to_f64_vec();
            let first = *v.first()?;
            let same = match c.0.data() {
                crate::ArrayData::F32(d) => d.iter().all(|x| x.to_bits() == d[0].to_bits()),
                crate::ArrayData::F64(d) => d.iter().all(|x| x.to_bits() == d[0].to_bits()),
                crate::ArrayData::I32(_)
                | crate::ArrayData::Bool(_)
                | crate::ArrayData::I8(_)
                | crate::ArrayData::U8(_) => v.iter().all(|&x| x == first),
                // Storage dtypes arithmetic refuses, so no rewrite needs their splat: none is
                // made (past 2^53 distinct i64 values share an f64; a half splat would be
                // rebuilt through f64, which need not keep a NaN's payload).
                crate::ArrayData::I64(_) | crate::ArrayData::F16(_) | crate::ArrayData::BF16(_) => {
                    return None
                }
            };
            same.then_some(first)
        }
        Op::BroadcastTo => splat(g, g.node(id).inputs[0]),
        _ => None,
    }
}

fn is_bits(v: Option<f64>, want: f64) -> bool {
    v.is_some_and(|x| x.to_bits() == want.to_bits())
}

enum Rewrite {
    /// Use an existing node instead.
    Use(NodeId),
    /// Build a new node (the declared type is needed for shape-attribute ops).
    New(Op, Vec<NodeId>, Option<Ty>),
    /// `x * c` for a scalar `c`, broadcast to `x`'s type.
    MulSplat(NodeId, f64),
    /// This constant, which holds equal elements, as a broadcast scalar.
    SplatConstant(f64),
}

fn nonneg(g: &GraphData, id: NodeId) -> bool {
    let n = g.node(id);
    match &n.op {
        Op::Unary(u) => u.props().nonneg,
        Op::Binary(BinaryOp::Mul) => n.inputs[0] == n.inputs[1],
        // Not known to be non-negative: the rewrite that asks is then not made.
        _ => false,
    }
}

fn rule(g: &GraphData, fallible: &Fallible, id: NodeId, opts: &PassOptions) -> Option<Rewrite> {
    let n = g.node(id);
    let ins = &n.inputs;
    let input_op = |k: usize| &g.node(ins[k]).op;
    let float = n.ty.dtype.is_float();
    match &n.op {
        Op::Binary(b) if float => {
            let (x, y) = (ins[0], ins[1]);
            let (sx, sy) = (splat(g, x), splat(g, y));
            let neg_of = |k: NodeId| match g.node(k).op {
                Op::Unary(UnaryOp::Neg) => Some(g.node(k).inputs[0]),
                _ => None,
            };
            match b {
                BinaryOp::Add if is_bits(sy, -0.0) || (opts.relaxed && is_bits(sy, 0.0)) => {
                    Some(Rewrite::Use(x))
                }
                BinaryOp::Add if is_bits(sx, -0.0) || (opts.relaxed && is_bits(sx, 0.0)) => {
                    Some(Rewrite::Use(y))
                }
                BinaryOp::Add => match (neg_of(x), neg_of(y)) {
                    (_, Some(yy)) => {
                        Some(Rewrite::New(Op::Binary(BinaryOp::Sub), vec![x, yy], None))
                    }
                    (Some(xx), None) => {
                        Some(Rewrite::New(Op::Binary(BinaryOp::Sub), vec![y, xx], None))
                    }
                    _ => None,
                },
                BinaryOp::Sub if is_bits(sy, 0.0) => Some(Rewrite::Use(x)),
                BinaryOp::Sub => {
                    neg_of(y).map(|yy| Rewrite::New(Op::Binary(BinaryOp::Add), vec![x, yy], None))
                }
                BinaryOp::Mul if sy == Some(1.0) => Some(Rewrite::Use(x)),
                BinaryOp::Mul if sx == Some(1.0) => Some(Rewrite::Use(y)),
                BinaryOp::Div if sy == Some(1.0) => Some(Rewrite::Use(x)),
                BinaryOp::Div => {
                    let c = sy?;
                    let r = 1.0 / c;
                    // The reciprocal must be finite in the node's dtype: 1 / 2^-149 (the least
                    // f32 subnormal) is finite in f64 but overflows f32 (fuzz F8).
                    let fits = n.ty.dtype != crate::DType::F32 || (r as f32).is_finite();
                    let exact = c.is_finite() && c != 0.0 && r.is_finite() && fits && {
                        let (m, _) = frexp(c);
                        m.abs() == 0.5
                    };
                    if !exact || !matches!(n.ty.dtype, crate::DType::F32 | crate::DType::F64) {
                        return None;
                    }
                    Some(Rewrite::MulSplat(x, r))
                }
                _ => None,
            }
        }
        Op::Unary(UnaryOp::Neg) => match input_op(0) {
            Op::Unary(UnaryOp::Neg) => Some(Rewrite::Use(g.node(ins[0]).inputs[0])),
            _ => None,
        },
        Op::Unary(UnaryOp::Exp) if opts.relaxed => match input_op(0) {
            Op::Unary(UnaryOp::Log) if nonneg(g, g.node(ins[0]).inputs[0]) => {
                Some(Rewrite::Use(g.node(ins[0]).inputs[0]))
            }
            _ => None,
        },
        Op::Permute(p2) => {
            if p2.iter().enumerate().all(|(i, &p)| i == p) {
                return Some(Rewrite::Use(ins[0]));
            }
            match input_op(0) {
                Op::Permute(p1) => {
                    let inner = g.node(ins[0]).inputs[0];
                    let p: Axes = p2.iter().map(|&i| p1[i]).collect();
                    if p.iter().enumerate().all(|(i, &q)| i == q) {
                        Some(Rewrite::Use(inner))
                    } else {
                        Some(Rewrite::New(Op::Permute(p), vec![inner], None))
                    }
                }
                _ => None,
            }
        }
        Op::Reshape | Op::BroadcastTo => {
            let inner = g.node(ins[0]);
            if inner.ty == n.ty {
                return Some(Rewrite::Use(ins[0]));
            }
            if inner.op == n.op {
                return Some(Rewrite::New(
                    n.op.clone(),
                    vec![inner.inputs[0]],
                    Some(n.ty.clone()),
                ));
            }
            None
        }
        Op::Cast(d) if *d == g.node(ins[0]).ty.dtype => Some(Rewrite::Use(ins[0])),
        Op::StopGradient => Some(Rewrite::Use(ins[0])),
        Op::Where if ins[1] == ins[2] => Some(Rewrite::Use(ins[1])),
        Op::Where => {
            // A condition whose elements are all equal selects one branch everywhere.
            let (keep, drop) = match splat(g, ins[0])? {
                c if c != 0.0 => (ins[1], ins[2]),
                _ => (ins[2], ins[1]),
            };
            (!drops_a_failure(g, fallible, keep, drop)).then_some(Rewrite::Use(keep))
        }
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: outer,
            keepdims: false,
        } if opts.relaxed => {
            match input_op(0) {
                Op::Reduce {
                    op: ReduceOp::Sum,
                    axes: inner_axes,
                    keepdims: false,
                } => {
                    // Map the outer axes (of the reduced shape) back to the original axes.
                    let x = g.node(ins[0]).inputs[0];
                    let rank = g.node(x).ty.shape.rank();
                    let kept: Vec<usize> = (0..rank).filter(|a| !inner_axes.contains(a)).collect();
                    let mut all: Axes = inner_axes.clone();
                    all.extend(outer.iter().map(|&a| kept[a]));
                    all.sort_unstable();
                    Some(Rewrite::New(
                        Op::Reduce {
                            op: ReduceOp::Sum,
                            axes: all,
                            keepdims: false,
                        },
                        vec![x],
                        None,
                    ))
                }
                _ => None,
            }
        }
        Op::Constant(c) if c.0.len() > 1 => splat(g, id).map(Rewrite::SplatConstant),
        _ => None,
    }
}

/// The nodes computed to compute `root`, back to the sources; the operand of a `size`,
/// which reads only a shape, is not walked (it is not computed for it).
fn computed(g: &GraphData, root: NodeId) -> HashSet<NodeId> {
    let mut seen = HashSet::from([root]);
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        let n = g.node(id);
        if matches!(n.op, Op::Size { .. }) {
            continue;
        }
        for &i in &n.inputs {
            if seen.insert(i) {
                stack.push(i);
            }
        }
    }
    seen
}

/// True if not computing `drop` could hide a run-time error: a node under it can fail (or
/// is a fused node whose kernel holds one) and `keep` does not compute it too. (A node that
/// another user still computes would report its error anyway; this looks only at `keep`,
/// so it errs on the side of keeping the select.)
fn drops_a_failure(g: &GraphData, fallible: &Fallible, keep: NodeId, drop: NodeId) -> bool {
    let fails = |id: &NodeId| {
        g.node(*id).can_fail_at_run() || fallible.get(id).is_some_and(|f| !f.is_empty())
    };
    let dropped: Vec<NodeId> = computed(g, drop).into_iter().filter(fails).collect();
    if dropped.is_empty() {
        return false;
    }
    let live = computed(g, keep);
    dropped.iter().any(|id| !live.contains(id))
}

/// What fusion recorded of the nodes inside each fused node that can fail at run time.
type Fallible = BTreeMap<NodeId, Vec<crate::graph::Node>>;

/// `frexp` for f64: `x = m * 2^e` with `0.5 <= |m| < 1`.
fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let e = x.abs().log2().floor() as i32 + 1;
    (x / 2f64.powi(e), e)
}

impl Pass for Simplify {
    fn name(&self) -> &str {
        "simplify"
    }
    fn run(&self, p: &mut Program, opts: &PassOptions) -> Result<bool> {
        let mut changed = false;
        for id in p.live_order() {
            if p.graph.get(id).is_none() {
                continue;
            }
            let Some(rw) = rule(&p.graph, &p.fallible, id, opts) else {
                continue;
            };
            let loc = p.graph.node(id).loc.clone();
            let new = match rw {
                Rewrite::Use(other) => other,
                Rewrite::SplatConstant(v) => {
                    let ty = p.graph.node(id).ty.clone();
                    splat_node(&mut p.graph, &ty, v, loc)
                }
                Rewrite::MulSplat(x, v) => {
                    let ty = p.graph.node(x).ty.clone();
                    let c = splat_node(&mut p.graph, &ty, v, loc.clone());
                    p.graph
                        .add_node(Op::Binary(BinaryOp::Mul), &[x, c], None, None, loc)
                }
                Rewrite::New(op, inputs, ty) => p.graph.add_node(op, &inputs, ty, None, loc),
            };
            p.replace(id, new);
            changed = true;
        }
        Ok(changed)
    }
}

/// `broadcast_to(constant v)` of type `ty`.
fn splat_node(g: &mut GraphData, ty: &Ty, v: f64, loc: Option<crate::SrcLoc>) -> NodeId {
    let scalar = Array::from_f64(ty.dtype, vec![], vec![v]);
    let c = g.add_node(
        Op::Constant(ConstValue(Arc::new(scalar))),
        &[],
        None,
        None,
        loc.clone(),
    );
    if ty.shape == Shape::scalar() {
        return c;
    }
    g.add_node(Op::BroadcastTo, &[c], Some(ty.clone()), None, loc)
}
