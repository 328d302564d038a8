//! How the graph target compares backends: which fetches must be bitwise equal, which only
//! close, and which cannot be compared by value at all (tests/jit.rs's rules, per node).

use super::graphs::{random_array, Plan};
use super::Rng;
use kiln::prelude::*;
use kiln::{BinaryOp, GraphData, NodeId, Op, ReduceOp, UnaryOp};
use std::collections::HashMap;
use std::sync::Mutex;

/// How far two backends' values of a node may be apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Only IEEE-exact ops on the way: bitwise equal (any NaN equals any NaN).
    Exact,
    /// A transcendental on the way (a bounded relative error): close.
    Inexact,
    /// A float sum, a matrix product, or an addition of inexact values on the way: close, but
    /// near zero its relative error is unbounded (cancellation).
    Summed,
    /// A comparison or integer cast of an inexact value on the way: one ulp may flip it, so
    /// only the dtype and shape are compared.
    Tainted,
}

/// Whether finding F2 (i32 overflow: the interpreter saturates, the JIT wraps) is fixed.
/// Until it is, integers cast from floats (where ±inf and NaN become `i32::MIN`/`MAX`, whose
/// arithmetic overflows) are not compared by value, so that a bounded run does not fail on it
/// in ways `KNOWN` cannot name. Set it to `true` when the fix lands.
pub const I32_OVERFLOW_AGREES: bool = true;
/// Whether finding F5 (the maximum of an empty i32 axis) is fixed; until then such maxima
/// (a reduced axis of size 0 or `?`) are not compared by value.
pub const EMPTY_I32_MAX_AGREES: bool = true;
/// Whether finding F8 (a division by a subnormal constant overflows on the JIT) is fixed;
/// until then float divisions by a constant are not compared by value.
pub const DIV_BY_CONSTANT_EXACT: bool = true;

/// Whether finding F9 (the JIT's im2col multiplied padding zeros, so `0·inf` was NaN where
/// the interpreter skipped the tap) is fixed: it is, both backends multiply a padding tap's
/// zero. While false, padded forward convolutions and filter gradients are not compared by
/// value.
pub const CONV_PADDING_AGREES: bool = true;

/// Whether `op` is a convolution that F9 affects: padded, forward or filter gradient, and
/// not depthwise (`groups == C > 1`, the `c` of `input`'s last axis).
fn f9_affects(op: &Op, input: &kiln::Ty) -> bool {
    let Op::Conv {
        kind,
        window,
        groups,
    } = op
    else {
        return false;
    };
    let padded = window.pad_lo != [0, 0] || window.pad_hi != [0, 0];
    let c = input.shape.dims().last().and_then(|d| d.fixed());
    let depthwise = *groups > 1 && c == Some(*groups);
    padded && !depthwise && !matches!(kind, kiln::ConvKind::InputGrad { .. })
}

/// Whether `id` is a constant, possibly broadcast.
fn is_constant(d: &GraphData, id: NodeId) -> bool {
    match &d.node(id).op {
        Op::Constant(_) => true,
        Op::BroadcastTo | Op::Reshape => is_constant(d, d.node(id).inputs[0]),
        _ => false,
    }
}

/// The class of every node, from its op and its operands' classes.
pub fn classify(d: &GraphData) -> HashMap<NodeId, Class> {
    let mut ids = d.ids();
    ids.sort_by_key(|i| i.index());
    let mut c: HashMap<NodeId, Class> = HashMap::new();
    for id in ids {
        let n = d.node(id);
        let m = n.inputs.iter().map(|i| c[i]).max().unwrap_or(Class::Exact);
        let float = matches!(n.ty.dtype, DType::F32 | DType::F64);
        let approx = if float { m.max(Class::Inexact) } else { m };
        let class = match &n.op {
            Op::Placeholder | Op::Variable { .. } | Op::Constant(_) => Class::Exact,
            Op::Random { dist, .. } => match dist {
                kiln::graph::op::RandomDist::Uniform { .. } => Class::Exact,
                kiln::graph::op::RandomDist::Normal { .. } => Class::Inexact,
            },
            // Near zero an approximate value has no relative accuracy (a sum that cancels), and
            // these ops turn its absolute error into an unbounded one.
            Op::Unary(UnaryOp::Log | UnaryOp::Recip)
            | Op::Binary(BinaryOp::Div | BinaryOp::Pow)
                if m == Class::Summed =>
            {
                Class::Tainted
            }
            Op::Unary(u) => match u {
                UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sqrt | UnaryOp::Recip => m,
                UnaryOp::Exp | UnaryOp::Log | UnaryOp::Tanh | UnaryOp::Sigmoid => approx,
                // An op added later: compare it loosely until it is classified here.
                _ => approx,
            },
            Op::Binary(b) if b.is_comparison() && m >= Class::Inexact => Class::Tainted,
            Op::Binary(BinaryOp::Div)
                if !DIV_BY_CONSTANT_EXACT && float && is_constant(d, n.inputs[1]) =>
            {
                Class::Tainted
            }
            Op::Binary(BinaryOp::Add | BinaryOp::Sub) if m >= Class::Inexact => {
                m.max(Class::Summed)
            }
            Op::Binary(BinaryOp::Pow) => approx,
            // Exact on exact operands; an approximate operand moves it across its jumps.
            Op::Binary(BinaryOp::Rem) if m >= Class::Inexact => Class::Tainted,
            Op::Binary(_) => m,
            Op::Where => m,
            Op::Cast(_) if m >= Class::Inexact && !float => Class::Tainted,
            Op::Cast(DType::I32)
                if !I32_OVERFLOW_AGREES
                    && matches!(d.node(n.inputs[0]).ty.dtype, DType::F32 | DType::F64) =>
            {
                Class::Tainted
            }
            Op::Cast(_) => m,
            Op::Reduce {
                op: ReduceOp::Sum, ..
            } if float => m.max(Class::Summed),
            Op::Reduce {
                op: ReduceOp::Max,
                axes,
                ..
            } if !EMPTY_I32_MAX_AGREES
                && n.ty.dtype == DType::I32
                && axes.iter().any(|&a| {
                    let dim = d.node(n.inputs[0]).ty.shape.dims()[a];
                    dim == Dim::Fixed(0) || dim == Dim::Batch
                }) =>
            {
                Class::Tainted
            }
            Op::Reduce { .. } => m,
            Op::MatMul if float => m.max(Class::Summed),
            Op::MatMul => m,
            Op::Reshape
            | Op::Permute(_)
            | Op::BroadcastTo
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Concat { .. }
            | Op::StopGradient => m,
            Op::Size { .. } => Class::Exact,
            // Pooling is bitwise defined on both backends (max and gathers copy, sums run in
            // a fixed order).
            Op::Pool { .. } => m,
            // A convolution is a sum of products (gemm on the JIT, which reassociates):
            // close, as a matrix product is.
            Op::Conv { .. }
                if !CONV_PADDING_AGREES && f9_affects(&n.op, &d.node(n.inputs[0]).ty) =>
            {
                Class::Tainted
            }
            Op::Conv { .. } => m.max(Class::Summed),
            // Effects and fused kernels are never generated; an op added later is not compared
            // by value until it is classified here.
            _ => Class::Tainted,
        };
        c.insert(id, class);
    }
    c
}

/// Random feeds for every placeholder and values for every variable.
fn inputs(g: &Graph, batch: usize, seed: u64, unfed: bool) -> Vec<(NodeId, Array, bool)> {
    let mut r = Rng::new(seed);
    let d = g.data();
    let mut v = vec![];
    for (ids, fed) in [(d.placeholders(), true), (d.variables(), false)] {
        for id in ids {
            if unfed && fed && d.node(id).name.as_deref() == Some("x") {
                continue;
            }
            let t = &d.node(id).ty;
            v.push((
                id,
                random_array(&mut r, &t.shape.resolve(batch), t.dtype),
                fed,
            ));
        }
    }
    v
}

type Outcome = Result<Vec<Array>, String>;

fn run_on(g: &Graph, outs: &[NodeId], ins: &[(NodeId, Array, bool)], b: Backend) -> Outcome {
    let mut s = Session::with_backend(g, b).map_err(|e| format!("session: {e}"))?;
    let mut feeds = vec![];
    for (id, a, fed) in ins {
        if *fed {
            feeds.push((g.tensor(*id), a.clone()));
        } else {
            s.set_variable(g.tensor(*id), a.clone())
                .map_err(|e| format!("set_variable: {e}"))?;
        }
    }
    let fetch: Vec<Tensor<'_>> = outs.iter().map(|&o| g.tensor(o)).collect();
    s.run(&fetch, &feeds).map_err(|e| format!("run: {e}"))
}

/// `set_threads` is global: one graph case at a time sets it.
static THREADS: Mutex<()> = Mutex::new(());

/// Whether `p` (JIT) and `q` (interpreter) are close enough for an inexact value.
fn close(p: f64, q: f64) -> bool {
    p == q
        || (p.is_nan() && q.is_nan())
        || (p.is_finite() && q.is_finite() && (p - q).abs() <= 1e-3 * (1.0 + p.abs().max(q.abs())))
        // At the overflow boundary one side may round to infinity.
        || (p.is_infinite() && q.abs() > 1e30 && p.signum() == q.signum())
        || (q.is_infinite() && p.abs() > 1e30 && p.signum() == q.signum())
}

fn agree(j: &Array, i: &Array, class: Class) -> Result<(), String> {
    if j.dtype() != i.dtype() || j.shape() != i.shape() {
        return Err(format!(
            "jit {}{:?} vs interpreter {}{:?}",
            j.dtype(),
            j.shape(),
            i.dtype(),
            i.shape()
        ));
    }
    let (a, b) = (j.to_f64_vec(), i.to_f64_vec());
    for (k, (&p, &q)) in a.iter().zip(&b).enumerate() {
        let ok = match class {
            Class::Exact => p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()),
            Class::Inexact | Class::Summed => close(p, q),
            Class::Tainted => true,
        };
        if !ok {
            return Err(format!("[{k}]: jit {p:e} vs interpreter {q:e} ({class:?})"));
        }
    }
    Ok(())
}

/// Runs the graph on the interpreter and on the JIT at 1 and 2 threads and compares; `Ok`
/// says whether the runs succeeded (and values were compared) or both backends refused.
pub fn run_all(g: &Graph, outs: &[NodeId], classes: &[Class], plan: &Plan) -> Result<bool, String> {
    let ins = inputs(g, plan.batch, plan.values, plan.unfed);
    let interp = run_on(g, outs, &ins, Backend::Interpreter);
    let (j1, j2) = {
        let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
        kiln::threads::set_threads(1);
        let j1 = super::no_panic("jit", || run_on(g, outs, &ins, Backend::Jit));
        kiln::threads::set_threads(2);
        let j2 = super::no_panic("jit", || run_on(g, outs, &ins, Backend::Jit));
        kiln::threads::set_threads(0);
        (j1?, j2?)
    };
    match (&j1, &j2) {
        (Ok(a), Ok(b)) => {
            for (k, (x, y)) in a.iter().zip(b).enumerate() {
                if !x.bits_eq(y) {
                    return Err(format!("threads: output {k} differs at 1 and 2 threads"));
                }
            }
        }
        (Err(_), Err(_)) => {}
        _ => return Err(format!("threads: 1 thread {j1:?} vs 2 threads {j2:?}")),
    }
    match (j1, interp) {
        (Ok(j), Ok(i)) => {
            for (k, ((a, b), &c)) in j.iter().zip(&i).zip(classes).enumerate() {
                agree(a, b, c).map_err(|m| format!("values: output {k}{m}"))?;
            }
            Ok(true)
        }
        (Err(_), Err(_)) => Ok(false),
        (j, i) => Err(format!(
            "ok/err: jit {} vs interpreter {}",
            brief(&j),
            brief(&i)
        )),
    }
}

fn brief(o: &Outcome) -> String {
    match o {
        Ok(v) => format!("Ok({} arrays)", v.len()),
        Err(e) => format!("Err({e})"),
    }
}
