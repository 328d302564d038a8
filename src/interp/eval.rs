//! The interpreter's arithmetic: one op on `f64` elements, with the rounding the module docs
//! of [`crate::interp`] describe. Constant folding and the JIT's `f64` helpers call the same
//! functions, so every backend agrees with the oracle by construction.

use super::kernel::eval_kernel;
use super::{Precision, Value};
use crate::array::Array;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::op::props::ieee_max;
use crate::graph::op::{BinaryOp, Op, RandomDist, ReduceOp, UnaryOp};
use crate::graph::{Node, NodeId};
use crate::kernel::Kernels;
use crate::rng;
use crate::view::{self, for_each_index, row_major_strides as strides, Movement, Source};
use std::collections::HashMap;

/// Rounds `x` to what a value of `dtype` holds under `prec`: `f32` results round to `f32`,
/// and `i32` results wrap modulo 2^32 (two's complement, as the JIT's native `i32` arithmetic,
/// TF and XLA do: `neg(i32::MIN)` and `abs(i32::MIN)` are `i32::MIN`, an overflowing sum
/// wraps). An `i32` value reaches here exact in `f64` (sums accumulate exactly up to 2^53),
/// so wrapping the exact result equals wrapping every step.
#[inline]
pub(crate) fn round(dtype: DType, prec: Precision, x: f64) -> f64 {
    match (dtype, prec) {
        (DType::F32, Precision::F32) => x as f32 as f64,
        (DType::I32, _) => x as i64 as i32 as f64,
        _ => x,
    }
}

/// The starting value of a reduction: 0 for a sum; for a maximum the least value of the
/// dtype, so the maximum over an empty axis is `-inf` for floats and `i32::MIN` for `i32`
/// (the JIT's identity too).
pub(crate) fn reduce_identity(op: ReduceOp, dt: DType) -> f64 {
    match (op, dt) {
        (ReduceOp::Sum, _) => 0.0,
        (ReduceOp::Max, DType::I32) => i32::MIN as f64,
        (ReduceOp::Max, DType::I64) => crate::cast::i64_slot(i64::MIN),
        (ReduceOp::Max, DType::F32 | DType::F64 | DType::Bool) => f64::NEG_INFINITY,
        // Storage dtypes: the shape rules refuse a reduction of them, so no run reaches here.
        (ReduceOp::Max, DType::I8 | DType::U8 | DType::F16 | DType::BF16) => f64::NEG_INFINITY,
    }
}

/// One step of a reduction of dtype `dt`: `acc` combined with `v`. `i64` slots hold bits
/// (`src/cast.rs`), so their sum wraps on the integer; every other dtype folds in `f64`
/// (`i32` sums are exact there and wrap when rounded).
#[inline]
pub(crate) fn reduce_step(op: ReduceOp, dt: DType, acc: f64, v: f64) -> f64 {
    use crate::cast::{i64_slot, slot_i64};
    match (op, dt) {
        (ReduceOp::Sum, DType::I64) => i64_slot(slot_i64(acc).wrapping_add(slot_i64(v))),
        (ReduceOp::Max, DType::I64) => i64_slot(slot_i64(acc).max(slot_i64(v))),
        (ReduceOp::Sum, _) => acc + v,
        (ReduceOp::Max, _) => ieee_max(acc, v),
    }
}

/// One unary op on an `f64`: its reference semantics, [`UnaryOp::props`]' `f64`.
pub(crate) fn unary(op: UnaryOp, x: f64) -> f64 {
    (op.props().f64)(x)
}

/// One binary op on operands of dtype `dt`; `Err` only for integer division by zero.
pub(crate) fn binary(op: BinaryOp, dt: DType, a: f64, b: f64) -> std::result::Result<f64, String> {
    if dt == DType::I64 {
        return binary_i64(op, a, b);
    }
    if dt == DType::I32 {
        let (x, y) = (a as i64, b as i64);
        let r = match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div if y == 0 => return Err("integer division by zero".into()),
            BinaryOp::Div => x / y,
            BinaryOp::Max => x.max(y),
            BinaryOp::Min => x.min(y),
            BinaryOp::Pow => (a.powf(b)) as i64,
            // Refused on integers by the shape rule.
            BinaryOp::Rem => return Err("rem is not defined on i32".into()),
            // i32 values are exact in f64, so the float comparison is the integer one.
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge => return Ok((op.props().f64)(a, b)),
        };
        return Ok(r as i32 as f64);
    }
    Ok((op.props().f64)(a, b))
}

/// One binary op on `i64` slots (the integers' bits, `src/cast.rs`): wrapping, as `i32`;
/// division truncates, `MIN / -1` wraps, by zero is an error. `pow` is refused by the shape
/// rules.
fn binary_i64(op: BinaryOp, a: f64, b: f64) -> std::result::Result<f64, String> {
    use crate::cast::{i64_slot, slot_i64};
    let (x, y) = (slot_i64(a), slot_i64(b));
    let flag = |c: bool| Ok(if c { 1.0 } else { 0.0 });
    let r = match op {
        BinaryOp::Add => x.wrapping_add(y),
        BinaryOp::Sub => x.wrapping_sub(y),
        BinaryOp::Mul => x.wrapping_mul(y),
        BinaryOp::Div if y == 0 => return Err("integer division by zero".into()),
        BinaryOp::Div => x.wrapping_div(y),
        BinaryOp::Max => x.max(y),
        BinaryOp::Min => x.min(y),
        BinaryOp::Pow => return Err("pow is not defined on i64".into()),
        BinaryOp::Rem => return Err("rem is not defined on i64".into()),
        BinaryOp::Eq => return flag(x == y),
        BinaryOp::Ne => return flag(x != y),
        BinaryOp::Lt => return flag(x < y),
        BinaryOp::Le => return flag(x <= y),
        BinaryOp::Gt => return flag(x > y),
        BinaryOp::Ge => return flag(x >= y),
    };
    Ok(i64_slot(r))
}

/// One unary op on a slot of dtype `dt`: an `i64` slot holds bits, so its ops (`neg`,
/// `abs`: the shape rules allow no other) wrap on the integer.
pub(crate) fn unary_of(op: UnaryOp, dt: DType, x: f64) -> f64 {
    use crate::cast::{i64_slot, slot_i64};
    match (dt, op) {
        (DType::I64, UnaryOp::Neg) => i64_slot(slot_i64(x).wrapping_neg()),
        (DType::I64, _) => i64_slot(slot_i64(x).wrapping_abs()),
        _ => unary(op, x),
    }
}

/// Converts a slot of dtype `from` to `to` by the rules of [`crate::dtype`] (floats to
/// integers truncate toward zero and saturate, NaN → 0; integers wrap; half types go through
/// `f32`): [`crate::cast::cast_slot`], shared with [`Array::cast`].
pub(crate) fn cast(from: DType, to: DType, prec: Precision, x: f64) -> f64 {
    crate::cast::cast_slot(from, to, x, prec == Precision::F64)
}

/// The node's runtime error: its op, name and the user's line, as the JIT names it.
pub(super) fn rt(n: &Node, msg: String) -> Error {
    n.runtime_error(msg)
}

#[allow(clippy::too_many_arguments)] // the run's context, passed down one level
pub(super) fn eval_node(
    n: &Node,
    id: NodeId,
    ins: &[&Value],
    shape: Vec<usize>,
    vars: &HashMap<NodeId, Array>,
    kernels: &Kernels,
    prec: Precision,
    run_index: u64,
) -> Result<Value> {
    let dt = n.ty.dtype;
    let numel: usize = shape.iter().product();
    let r = |x: f64| round(dt, prec, x);
    let data: Vec<f64> = match &n.op {
        Op::Placeholder => return Err(Error::Feed(format!("{} was not fed", n.label()))),
        Op::Variable { .. } => match vars.get(&id) {
            Some(a) => a.to_slots(),
            None => return Err(Error::Feed(format!("variable {} has no value", n.label()))),
        },
        Op::Constant(c) => c.0.to_slots(),
        Op::Random { dist, seed } => (0..numel as u64)
            .map(|i| match dist {
                RandomDist::Uniform { low, high } => {
                    rng::uniform(*seed, run_index, i, low.0 as f32, high.0 as f32) as f64
                }
                RandomDist::Normal { mean, std } => {
                    let z = rng::standard_normal(*seed, run_index, i);
                    (mean.0 as f32 + std.0 as f32 * z) as f64
                }
            })
            .collect(),
        Op::Unary(u) => ins[0]
            .data
            .iter()
            .map(|&x| r(unary_of(*u, dt, x)))
            .collect(),
        Op::Binary(b) => {
            let in_dt = ins[0].dtype;
            let mut out = Vec::with_capacity(numel);
            for (&x, &y) in ins[0].data.iter().zip(&ins[1].data) {
                out.push(r(binary(*b, in_dt, x, y).map_err(|m| rt(n, m))?));
            }
            out
        }
        Op::Where => {
            let (c, a, b) = (&ins[0].data, &ins[1].data, &ins[2].data);
            (0..numel)
                .map(|i| if c[i] != 0.0 { a[i] } else { b[i] })
                .collect()
        }
        Op::Cast(to) => {
            let from = ins[0].dtype;
            ins[0]
                .data
                .iter()
                .map(|&x| cast(from, *to, prec, x))
                .collect()
        }
        Op::StopGradient => ins[0].data.clone(),
        Op::Reshape => movement(n, ins, &shape)?,
        // The effect itself is applied by the caller after the run (see graph::effects).
        Op::Assign => ins[1].data.clone(),
        Op::Group => vec![1.0],
        Op::Size { axes } => vec![r(
            axes.iter().map(|&a| ins[0].shape[a]).product::<usize>() as f64
        )],
        Op::Reduce { op, axes, .. } => reduce(ins[0], *op, axes, dt, prec),
        Op::Permute(_)
        | Op::BroadcastTo
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Concat { .. } => movement(n, ins, &shape)?,
        Op::MatMul => matmul(ins[0], ins[1], &shape, dt, prec),
        Op::Conv { .. } => super::conv::conv(&n.op, ins[0], ins[1], &shape, dt, prec)
            .map_err(|m| Error::Internal(format!("{}: {m}", n.label())))?,
        Op::Pool { kind, window } => super::pool::pool(*kind, window, ins, &shape, dt, prec),
        Op::AllReduce => all_reduce(ins, dt, prec).map_err(|e| rt(n, e.to_string()))?,
        Op::Fusion(k) => kernels
            .lookup(*k)
            .and_then(|k| eval_kernel(k, ins, dt, prec))
            .map_err(|m| rt(n, m))?,
    };
    debug_assert_eq!(
        data.len(),
        numel,
        "{} produced the wrong element count",
        n.op.name()
    );
    Ok(Value {
        dtype: dt,
        shape,
        data,
    })
}

/// Sum or max over `axes`, each output element folding its inputs in row-major order.
fn reduce(x: &Value, op: ReduceOp, axes: &[usize], dt: DType, prec: Precision) -> Vec<f64> {
    let kept: Vec<usize> = (0..x.shape.len()).filter(|a| !axes.contains(a)).collect();
    let kept_shape: Vec<usize> = kept.iter().map(|&a| x.shape[a]).collect();
    let red_shape: Vec<usize> = axes.iter().map(|&a| x.shape[a]).collect();
    let st = strides(&x.shape);
    let mut out = vec![];
    for_each_index(&kept_shape, |k| {
        let base: usize = k.iter().zip(&kept).map(|(i, &a)| i * st[a]).sum();
        let mut acc = reduce_identity(op, x.dtype);
        let mut fold = |v: f64| acc = reduce_step(op, x.dtype, acc, v);
        if red_shape.is_empty() {
            fold(x.data[base]);
        } else {
            for_each_index(&red_shape, |r| {
                let o: usize = base + r.iter().zip(axes).map(|(i, &a)| i * st[a]).sum::<usize>();
                fold(x.data[o]);
            });
        }
        out.push(round(dt, prec, acc));
    });
    out
}

fn matmul(a: &Value, b: &Value, out_shape: &[usize], dt: DType, prec: Precision) -> Vec<f64> {
    let r = out_shape.len();
    let (m, n) = (out_shape[r - 2], out_shape[r - 1]);
    let k = a.shape[r - 1];
    let batch: usize = out_shape[..r - 2].iter().product();
    let mut out = vec![0.0; batch * m * n];
    let mut acc = vec![0.0f64; n];
    for bi in 0..batch {
        let (ao, bo, co) = (bi * m * k, bi * k * n, bi * m * n);
        for i in 0..m {
            // -0.0 is the additive identity of IEEE sums (+0.0 is not: -0 + +0 = +0), so a
            // product of zeros keeps its sign, as gemm's does; an empty sum (k = 0) is +0.
            let zero = if k == 0 { 0.0 } else { -0.0 };
            acc.iter_mut().for_each(|x| *x = zero);
            for kk in 0..k {
                let av = a.data[ao + i * k + kk];
                let row = &b.data[bo + kk * n..bo + (kk + 1) * n];
                for (c, &bv) in acc.iter_mut().zip(row) {
                    *c += av * bv;
                }
            }
            for j in 0..n {
                out[co + i * n + j] = round(dt, prec, acc[j]);
            }
        }
    }
    out
}

/// A movement op: every output element is a copy of an operand's element, or zero, as
/// [`crate::view`] says.
fn movement(n: &Node, ins: &[&Value], out: &[usize]) -> Result<Vec<f64>> {
    let mv = Movement::of(&n.op)
        .ok_or_else(|| Error::Internal(format!("{} is not a movement op", n.op.name())))?;
    let shapes: Vec<&[usize]> = ins.iter().map(|v| v.shape.as_slice()).collect();
    let mut data = Vec::with_capacity(out.iter().product());
    view::for_each_source(mv, &shapes, out, |s| {
        data.push(match s {
            Source::Input(k, e) => ins[k].data[e],
            Source::Zero => 0.0,
        })
    });
    Ok(data)
}

/// `all_reduce` through [`crate::dist`]: `f32` slots summed in `f32` (in the precise mode,
/// and for `f64`, in `f64`), in the one order every backend and process count shares.
fn all_reduce(ins: &[&Value], dt: DType, prec: Precision) -> Result<Vec<f64>> {
    let n = ins[0].data.len();
    if dt == DType::F32 && prec == Precision::F32 {
        let parts: Vec<Vec<f32>> = ins
            .iter()
            .map(|v| v.data.iter().map(|&x| x as f32).collect())
            .collect();
        let refs: Vec<&[f32]> = parts.iter().map(Vec::as_slice).collect();
        let mut out = vec![0f32; n];
        crate::dist::all_reduce_f32(&refs, &mut out)?;
        Ok(out.into_iter().map(f64::from).collect())
    } else {
        let refs: Vec<&[f64]> = ins.iter().map(|v| v.data.as_slice()).collect();
        let mut out = vec![0f64; n];
        crate::dist::all_reduce_f64(&refs, &mut out)?;
        Ok(out)
    }
}
