//! The op table: each ONNX op kiln imports, the versions of it that exist (its
//! `since_version` history in onnx 1.23.2's `onnx.defs`), the first version kiln builds, and
//! the function that builds it from kiln's builder calls.
//!
//! The version in force for a node is the op's newest `since_version` at or below the
//! model's opset (as onnxruntime and burn dispatch), and each builder reads `Ctx::version`
//! where the forms differ (Squeeze's axes: an attribute before 13, an input from 13). Later
//! versions that only widened the type list (bfloat16 in 13, 19, 21...) build the same way.
//! The elementwise and reduction ops are here; `ops/nn.rs` has the layers (Conv, pooling,
//! BatchNormalization, Gemm, MatMul, Softmax, LRN), `ops/norm.rs` Layer/RMS normalization,
//! `ops/resize.rs` Resize, `ops/shape.rs` the movement ops (Reshape, Gather, Slice, ...),
//! `ops/consts.rs` the import-time values (Constant, Shape, Size, Cast), `ops/index.rs` the
//! index ops (ArgMax, Trilu, Range, Tile, ...) and `ops/logic.rs` the boolean ops, Mod and
//! small activations. Operands of a half or 8-bit type compute widened ([`widen`]).

mod consts;
mod fold;
mod index;
mod logic;
mod nn;
mod nn3d;
mod norm;
mod pad;
mod pool_index;
mod resize;
mod shape;

use super::import::{Ctx, Val};
use super::tensor::Static;
use crate::dtype::DType;
use crate::graph::Tensor;
use crate::shape::normalize_axes;
use fold::IntOp;

/// What an op's builder returns: its outputs in order, or what it cannot do.
pub(crate) type Built<'g> = Result<Vec<Val<'g>>, String>;
/// An op's builder.
pub(crate) type Build = for<'a, 'g> fn(&mut Ctx<'a, 'g>) -> Built<'g>;

/// One row of the table.
pub(crate) struct OpDef {
    /// The ONNX op type.
    pub(crate) name: &'static str,
    /// Every `since_version` of the op (onnx 1.23.2), ascending.
    pub(crate) history: &'static [u32],
    /// The first of those kiln builds (older ones are refused, naming this one).
    pub(crate) from: u32,
    /// The builder.
    pub(crate) build: Build,
}

macro_rules! table {
    ($($name:literal $hist:expr, from $from:literal => $f:expr;)*) => {
        &[$(OpDef { name: $name, history: &$hist, from: $from, build: $f },)*]
    };
}

/// The op table, in the order (layers, elementwise, pooling, movement, import-time).
pub(crate) static OPS: &[OpDef] = table! {
    "Conv" [1, 11, 22], from 1 => nn::conv;
    "ConvTranspose" [1, 11, 22], from 1 => nn::conv_transpose;
    "BatchNormalization" [1, 6, 7, 9, 14, 15], from 7 => nn::batch_norm;
    "Relu" [1, 6, 13, 14], from 6 => |c| unary(c, |x| x.relu());
    "LeakyRelu" [1, 6, 16], from 6 => leaky_relu;
    "PRelu" [1, 6, 7, 9, 16], from 7 => prelu;
    "Elu" [1, 6, 22], from 6 => elu;
    "Selu" [1, 6, 22], from 6 => selu;
    "HardSigmoid" [1, 6, 22], from 6 => hard_sigmoid;
    "Sigmoid" [1, 6, 13], from 6 => |c| unary(c, |x| x.sigmoid());
    "Tanh" [1, 6, 13], from 6 => |c| unary(c, |x| x.tanh());
    "Softplus" [1, 22], from 1 => |c| unary(c, |x| x.softplus());
    "Softmax" [1, 11, 13], from 1 => |c| nn::softmax(c, false);
    "LogSoftmax" [1, 11, 13], from 1 => |c| nn::softmax(c, true);
    "Gemm" [1, 6, 7, 9, 11, 13], from 7 => nn::gemm;
    "MatMul" [1, 9, 13], from 1 => nn::matmul;
    "Add" [1, 6, 7, 13, 14], from 7 => |c| binary(c, |a, b| a + b, Some((i64::checked_add, false)));
    "Sub" [1, 6, 7, 13, 14], from 7 => |c| binary(c, |a, b| a - b, Some((i64::checked_sub, false)));
    "Mul" [1, 6, 7, 13, 14], from 7 => |c| binary(c, |a, b| a * b, Some((i64::checked_mul, false)));
    "Div" [1, 6, 7, 13, 14], from 7 => |c| binary(c, |a, b| a / b, Some((i64::checked_div, false)));
    "Pow" [1, 7, 12, 13, 15], from 7 => pow;
    "Sqrt" [1, 6, 13], from 6 => |c| unary(c, |x| x.sqrt());
    "Reciprocal" [1, 6, 13], from 6 => |c| unary(c, |x| x.recip());
    "Exp" [1, 6, 13], from 6 => |c| unary(c, |x| x.exp());
    "Log" [1, 6, 13], from 6 => |c| unary(c, |x| x.log());
    "Abs" [1, 6, 13], from 6 => |c| unary_int(c, |x| x.abs(), i64::checked_abs);
    "Neg" [1, 6, 13], from 6 => |c| unary_int(c, |x| -x, i64::checked_neg);
    "Erf" [9, 13], from 9 => |c| unary(c, |x| x.erf());
    "Gelu" [20], from 20 => gelu;
    "Clip" [1, 6, 11, 12, 13], from 6 => clip;
    "Max" [1, 6, 8, 12, 13], from 8 => |c| variadic(c, |a, b| a.maximum(b), Some(|a, b| Some(a.max(b))));
    "Min" [1, 6, 8, 12, 13], from 8 => |c| variadic(c, |a, b| a.minimum(b), Some(|a, b| Some(a.min(b))));
    "Sum" [1, 6, 8, 13], from 8 => |c| variadic(c, |a, b| a + b, Some(i64::checked_add));
    "Mean" [1, 6, 8, 13], from 8 => |c| mean(c);
    "Equal" [1, 7, 11, 13, 19], from 7 => |c| binary(c, |a, b| a.equal(b), Some((|a, b| Some((a == b) as i64), true)));
    "Less" [1, 7, 9, 13], from 7 => |c| binary(c, |a, b| a.less(b), Some((|a, b| Some((a < b) as i64), true)));
    "Greater" [1, 7, 9, 13], from 7 => |c| binary(c, |a, b| a.greater(b), Some((|a, b| Some((a > b) as i64), true)));
    "LessOrEqual" [12, 16], from 12 => |c| binary(c, |a, b| a.less_equal(b), Some((|a, b| Some((a <= b) as i64), true)));
    "GreaterOrEqual" [12, 16], from 12 => |c| binary(c, |a, b| a.greater_equal(b), Some((|a, b| Some((a >= b) as i64), true)));
    "Where" [9, 16], from 9 => where_;
    "MaxPool" [1, 8, 10, 11, 12, 22], from 1 => |c| nn::pool(c, true);
    "AveragePool" [1, 7, 10, 11, 19, 22], from 1 => |c| nn::pool(c, false);
    "GlobalAveragePool" [1, 22], from 1 => |c| nn::global_pool(c, false);
    "GlobalMaxPool" [1, 22], from 1 => |c| nn::global_pool(c, true);
    "LRN" [1, 13], from 1 => nn::lrn;
    "Dropout" [1, 6, 7, 10, 12, 13, 22], from 7 => shape::dropout;
    "Identity" [1, 13, 14, 16, 19, 21, 23, 24, 25], from 1 => shape::identity;
    "Flatten" [1, 9, 11, 13, 21, 23, 24, 25], from 1 => shape::flatten;
    "Reshape" [1, 5, 13, 14, 19, 21, 23, 24, 25], from 5 => shape::reshape;
    "Transpose" [1, 13, 21, 23, 24, 25], from 1 => shape::transpose;
    "Concat" [1, 4, 11, 13], from 4 => shape::concat;
    "Split" [1, 2, 11, 13, 18], from 2 => shape::split;
    "Slice" [1, 10, 11, 13], from 10 => shape::slice;
    "Squeeze" [1, 11, 13, 21, 23, 24, 25], from 1 => |c| shape::squeeze(c, false);
    "Unsqueeze" [1, 11, 13, 21, 23, 24, 25], from 1 => |c| shape::squeeze(c, true);
    "Pad" [1, 2, 11, 13, 18, 19, 21, 23, 24, 25], from 2 => pad::pad;
    "Expand" [8, 13], from 8 => shape::expand;
    "Constant" [1, 9, 11, 12, 13, 19, 21, 23, 24, 25], from 1 => consts::constant;
    "ConstantOfShape" [9, 20, 21, 23, 24, 25], from 9 => consts::constant_of_shape;
    "Shape" [1, 13, 15, 19, 21, 23, 24, 25], from 1 => consts::shape;
    "Size" [1, 13, 19, 21, 23, 24, 25], from 1 => consts::size;
    "Gather" [1, 11, 13], from 1 => shape::gather;
    "Cast" [1, 6, 9, 13, 19, 21, 23, 24, 25], from 6 => consts::cast;
    "CastLike" [15, 19, 21, 23, 24, 25], from 15 => consts::cast_like;
    "ReduceMean" [1, 11, 13, 18], from 1 => |c| reduce(c, Red::Mean, 18);
    "ReduceSum" [1, 11, 13], from 1 => |c| reduce(c, Red::Sum, 13);
    "ReduceMax" [1, 11, 12, 13, 18, 20], from 1 => |c| reduce(c, Red::Max, 18);
    "ReduceMin" [1, 11, 12, 13, 18, 20], from 1 => |c| reduce(c, Red::Min, 18);
    "ReduceSumSquare" [1, 11, 13, 18], from 1 => |c| reduce(c, Red::SumSquare, 18);
    "ReduceL1" [1, 11, 13, 18], from 1 => |c| reduce(c, Red::L1, 18);
    "ReduceL2" [1, 11, 13, 18], from 1 => |c| reduce(c, Red::L2, 18);
    "ReduceLogSum" [1, 11, 13, 18], from 1 => |c| reduce(c, Red::LogSum, 18);
    "ReduceLogSumExp" [1, 11, 13, 18], from 1 => |c| reduce(c, Red::LogSumExp, 18);
    "ReduceProd" [1, 11, 13, 18], from 1 => |c| reduce(c, Red::Prod, 18);
    "ArgMax" [1, 11, 12, 13], from 1 => |c| index::arg(c, true);
    "ArgMin" [1, 11, 12, 13], from 1 => |c| index::arg(c, false);
    "Hardmax" [1, 11, 13], from 1 => index::hardmax;
    "Trilu" [14], from 14 => index::trilu;
    "Range" [11, 27], from 11 => index::range;
    "EyeLike" [9, 22], from 9 => index::eye_like;
    "Tile" [1, 6, 13], from 6 => index::tile;
    "DepthToSpace" [1, 11, 13, 28], from 1 => |c| index::depth_space(c, true);
    "SpaceToDepth" [1, 13, 28], from 1 => |c| index::depth_space(c, false);
    "Not" [1], from 1 => logic::not;
    "And" [1, 7], from 7 => |c| logic::logic(c, b'&');
    "Or" [1, 7], from 7 => |c| logic::logic(c, b'|');
    "Xor" [1, 7], from 7 => |c| logic::logic(c, b'^');
    "Mod" [10, 13, 28], from 10 => logic::modulo;
    "IsNaN" [9, 13, 20], from 9 => logic::is_nan;
    "IsInf" [10, 20], from 10 => logic::is_inf;
    "Sign" [9, 13], from 9 => logic::sign;
    "Softsign" [1, 22], from 1 => logic::softsign;
    "Celu" [12, 28], from 12 => logic::celu;
    "ThresholdedRelu" [10, 22], from 10 => logic::thresholded_relu;
    "HardSwish" [14, 22], from 14 => logic::hard_swish;
    "Mish" [18, 22], from 18 => logic::mish;
    "Swish" [24], from 24 => logic::swish;
    "Shrink" [9], from 9 => logic::shrink;
    "Resize" [10, 11, 13, 18, 19], from 11 => resize::resize;
    "LayerNormalization" [17], from 17 => norm::layer_norm;
    "RMSNormalization" [23], from 23 => norm::rms_norm;
};

/// The table's row for `op`.
pub(crate) fn find(op: &str) -> Option<&'static OpDef> {
    OPS.iter().find(|d| d.name == op)
}

/// One tensor output.
pub(crate) fn one(t: Tensor<'_>) -> Built<'_> {
    Ok(vec![Val::T(t)])
}

/// `axis` (negative counts from the end) normalized against `rank`.
pub(crate) fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let a = isize::try_from(a).map_err(|_| format!("axis {a} is out of range"))?;
    normalize_axes(&[a], rank).map(|v| v[0])
}

fn float_only(x: Tensor<'_>) -> Result<(), String> {
    if x.dtype().is_float() {
        Ok(())
    } else {
        Err(format!("needs a float tensor, got {}", x.dtype()))
    }
}

/// `x` in the dtype kiln computes an ONNX op on it in: `f16`/`bf16` in `f32`, `i8`/`u8` in
/// `i32`, the rest (`i64` included, which kiln computes natively) as it is. The op's result
/// goes back with [`restore`]. That is what ONNX's reference computes: numpy's half ufuncs
/// compute in `f32` and round once (and for `+ - × ÷ √` an `f32` result rounded to `f16` is the
/// correctly rounded `f16` one, since `f32` has more than twice the bits), and 8-bit integer
/// arithmetic done in `i32` and wrapped back is numpy's wrapping arithmetic.
pub(crate) fn widen(x: Tensor<'_>) -> Tensor<'_> {
    match x.dtype() {
        DType::F16 | DType::BF16 | DType::I8 | DType::U8 => x.cast(x.dtype().compute_dtype()),
        _ => x,
    }
}

/// The result `y` of an op computed on [`widen`]ed operands of dtype `d`, back in `d` (a
/// comparison's `bool` stays `bool`).
pub(crate) fn restore(y: Tensor<'_>, d: DType) -> Tensor<'_> {
    if matches!(d, DType::F16 | DType::BF16 | DType::I8 | DType::U8) && y.dtype() == widen_dtype(d)
    {
        y.cast(d)
    } else {
        y
    }
}

fn widen_dtype(d: DType) -> DType {
    match d {
        DType::F16 | DType::BF16 | DType::I8 | DType::U8 => d.compute_dtype(),
        _ => d,
    }
}

fn unary<'g>(c: &mut Ctx<'_, 'g>, f: fn(Tensor<'g>) -> Tensor<'g>) -> Built<'g> {
    let x = c.t(0)?;
    one(restore(f(widen(x)), x.dtype()))
}

/// Two operands with numpy broadcasting (the builder inserts `broadcast_to`); their dtypes
/// must agree, as ONNX requires. Two integer constants fold at import with `fold` (the op
/// and whether it gives `bool`).
fn binary<'g>(
    c: &mut Ctx<'_, 'g>,
    f: fn(Tensor<'g>, Tensor<'g>) -> Tensor<'g>,
    fold: Option<(IntOp, bool)>,
) -> Built<'g> {
    if let (Some((op, to_bool)), Some(s)) = (fold, fold::int_statics(c, &[0, 1])) {
        return Ok(vec![Val::S(fold::binary(&s[0], &s[1], op, to_bool)?)]);
    }
    let (a, b) = (c.t(0)?, c.t(1)?);
    if a.dtype() != b.dtype() {
        return Err(format!(
            "operands have different dtypes, {} and {}",
            a.dtype(),
            b.dtype()
        ));
    }
    one(restore(f(widen(a), widen(b)), a.dtype()))
}

/// A unary op that folds on an integer constant with `fold`.
fn unary_int<'g>(
    c: &mut Ctx<'_, 'g>,
    f: fn(Tensor<'g>) -> Tensor<'g>,
    fold: fn(i64) -> Option<i64>,
) -> Built<'g> {
    if let Some(s) = fold::int_statics(c, &[0]) {
        return Ok(vec![Val::S(fold::unary(&s[0], fold)?)]);
    }
    unary(c, f)
}

fn variadic<'g>(
    c: &mut Ctx<'_, 'g>,
    f: fn(Tensor<'g>, Tensor<'g>) -> Tensor<'g>,
    fold: Option<IntOp>,
) -> Built<'g> {
    let n = c.n_inputs();
    let all: Vec<usize> = (0..n).collect();
    if let (Some(op), Some(s)) = (fold, fold::int_statics(c, &all)) {
        let mut acc = s[0].clone();
        for b in &s[1..] {
            acc = fold::binary(&acc, b, op, false)?;
        }
        return Ok(vec![Val::S(acc)]);
    }
    let (acc, d) = variadic_wide(c, f)?;
    one(restore(acc, d))
}

/// The inputs combined by `f`, computed [`widen`]ed, and their dtype.
fn variadic_wide<'g>(
    c: &mut Ctx<'_, 'g>,
    f: fn(Tensor<'g>, Tensor<'g>) -> Tensor<'g>,
) -> Result<(Tensor<'g>, DType), String> {
    let first = c.t(0)?;
    let mut acc = widen(first);
    for i in 1..c.n_inputs() {
        let t = c.t(i)?;
        if t.dtype() != first.dtype() {
            return Err(format!(
                "operands have different dtypes, {} and {}",
                first.dtype(),
                t.dtype()
            ));
        }
        // Each step rounds (or wraps) back to the operands' type, as the reference's
        // pairwise numpy ops do.
        acc = widen(restore(f(acc, widen(t)), first.dtype()));
    }
    Ok((acc, first.dtype()))
}

fn mean<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let n = c.n_inputs();
    let (sum, d) = variadic_wide(c, |a, b| a + b)?;
    float_only(sum)?;
    one(restore(sum / n as f64, d))
}

fn pow<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let (a, b) = (c.t(0)?, c.t(1)?);
    let w = widen(a);
    if !w.dtype().is_float() {
        let top = fold::int_statics(c, &[1]).and_then(|s| s[0].as_ints().ok());
        return one(restore(int_pow(w, widen(b), top)?, a.dtype()));
    }
    // Pow-12 allows an exponent of another type: it is converted to the base's.
    one(restore(w.pow(b.cast(w.dtype())), a.dtype()))
}

/// An integer base to a power, as numpy's `power` (ONNX's reference) computes it: an
/// integer exponent by square-and-multiply on the exponent's bits, wrapping as numpy's
/// integer products do (exact, where a float `pow` is not past 2^53); a float exponent in
/// `f64`, truncated back. A negative integer exponent (an error in numpy) gives the
/// truncated real power, as the float path would. `exps` are the exponent's values when
/// known at import, which bounds the bits looked at.
fn int_pow<'g>(x: Tensor<'g>, e: Tensor<'g>, exps: Option<Vec<i64>>) -> Result<Tensor<'g>, String> {
    let g = x.graph();
    let real = |e: Tensor<'g>| x.cast(DType::F64).pow(e.cast(DType::F64)).cast(x.dtype());
    if e.dtype().is_float() || e.dtype().is_half() {
        return Ok(real(e));
    }
    if !matches!(e.dtype(), DType::I32 | DType::I64) {
        return Err(format!(
            "an exponent of dtype {} is not supported",
            e.dtype()
        ));
    }
    let width = if e.dtype() == DType::I32 { 31 } else { 63 };
    let bits = match &exps {
        Some(v) => v
            .iter()
            .map(|&k| 64 - k.max(0).leading_zeros())
            .max()
            .unwrap_or(0),
        None => width,
    };
    let shape = crate::shape::broadcast_shapes(&x.shape(), &e.shape())?;
    let mut acc = g.scalar_of(x.dtype(), 1.0).broadcast_to(shape);
    let (mut p, mut rest) = (x, e);
    for j in 0..bits {
        let half = rest / 2.0;
        let odd = (rest - half * 2.0).equal(1.0);
        acc = g.where_(odd, acc * p, acc);
        if j + 1 < bits {
            p = p * p;
            rest = half;
        }
    }
    if exps.is_some_and(|v| v.iter().all(|&k| k >= 0)) {
        return Ok(acc);
    }
    Ok(g.where_(e.less(0.0), real(e), acc))
}

/// A float-only op on input 0, computed [`widen`]ed and brought back.
fn float_unary<'g>(c: &mut Ctx<'_, 'g>, f: impl FnOnce(Tensor<'g>) -> Tensor<'g>) -> Built<'g> {
    let x0 = c.t(0)?;
    let x = widen(x0);
    float_only(x)?;
    one(restore(f(x), x0.dtype()))
}

fn leaky_relu<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let alpha = c.float("alpha", 0.01) as f64;
    float_unary(c, |x| x.less(0.0).select(x * alpha, x))
}

fn prelu<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let (x0, slope) = (c.t(0)?, c.t(1)?);
    let (x, slope) = (widen(x0), widen(slope));
    one(restore(x.less(0.0).select(x * slope, x), x0.dtype()))
}

fn elu<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let alpha = c.float("alpha", 1.0) as f64;
    float_unary(c, |x| x.less(0.0).select((x.exp() - 1.0) * alpha, x))
}

fn selu<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let alpha = c.float("alpha", 1.673_263_2) as f64;
    let gamma = c.float("gamma", 1.050_701) as f64;
    float_unary(c, |x| {
        x.less_equal(0.0)
            .select((x.exp() * alpha - alpha) * gamma, x * gamma)
    })
}

fn hard_sigmoid<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let alpha = c.float("alpha", 0.2) as f64;
    let beta = c.float("beta", 0.5) as f64;
    float_unary(c, |x| {
        let zero = x.graph().scalar_of(x.dtype(), 0.0);
        zero.maximum((x * alpha + beta).minimum(1.0))
    })
}

fn gelu<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let approximate = match c.string("approximate").as_deref() {
        None | Some("none") => false,
        Some("tanh") => true,
        Some(o) => return Err(format!("approximate={o:?} is not an ONNX value")),
    };
    float_unary(c, |x| x.gelu(approximate))
}

fn where_<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    if let Some(s) = fold::int_statics(c, &[0, 1, 2]) {
        return Ok(vec![Val::S(fold::select(&s[0], &s[1], &s[2])?)]);
    }
    let (cond, a, b) = (c.t(0)?, c.t(1)?, c.t(2)?);
    one(c.g.where_(cond, a, b))
}

/// `Clip`: `min(max(x, lo), hi)`; the bounds are attributes before opset 11 and optional
/// inputs (static or not) from 11.
fn clip<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x0 = c.t(0)?;
    let mut x = widen(x0);
    if c.version < 11 {
        let lo = c.attr("min").and_then(|a| a.f);
        let hi = c.attr("max").and_then(|a| a.f);
        if let Some(lo) = lo {
            x = x.maximum(lo as f64);
        }
        if let Some(hi) = hi {
            x = x.minimum(hi as f64);
        }
        return one(x);
    }
    for (i, is_min) in [(1, true), (2, false)] {
        if c.has(i) {
            let b = c.t(i)?;
            if b.rank() != 0 && b.shape().numel() != Some(1) {
                return Err(format!(
                    "the {} bound must be a scalar, got {}",
                    ["max", "min"][is_min as usize],
                    b.shape()
                ));
            }
            let b = b.cast(x.dtype()).reshape(crate::shape::Shape::scalar());
            x = if is_min { x.maximum(b) } else { x.minimum(b) };
        }
    }
    one(restore(x, x0.dtype()))
}

/// The reductions.
#[derive(Clone, Copy)]
pub(crate) enum Red {
    Mean,
    Sum,
    Max,
    Min,
    SumSquare,
    L1,
    L2,
    LogSum,
    LogSumExp,
    Prod,
}

/// A reduction: `axes` an attribute before `input_from`, the optional input 1 from it;
/// `keepdims` (default 1) and, from that version, `noop_with_empty_axes`.
fn reduce<'g>(c: &mut Ctx<'_, 'g>, r: Red, input_from: u32) -> Built<'g> {
    let x = c.t(0)?;
    let rank = x.rank();
    let axes: Option<Vec<i64>> = if c.version >= input_from {
        if c.has(1) {
            Some(c.s(1, "axes")?.as_ints()?)
        } else {
            None
        }
    } else {
        c.ints("axes")
    };
    let keep = c.int("keepdims", 1) != 0;
    let axes = match axes {
        Some(a) if !a.is_empty() => a,
        _ if c.version >= input_from && c.int("noop_with_empty_axes", 0) != 0 => return one(x),
        _ => (0..rank as i64).collect(),
    };
    let axes: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
    normalize_axes(&axes, rank)?;
    let d = x.dtype();
    if d == DType::Bool && matches!(r, Red::Max | Red::Min) {
        // A bool max/min (ReduceMax-20) is an any/all: the max of 0/1 integers (of 1 − x for
        // all), so an empty reduction gives the integer minimum, false for any, true for all.
        let i = x.cast(DType::I32);
        return one(match r {
            Red::Max => i.max(&axes, keep).greater(0.0),
            _ => (-i + 1.0).max(&axes, keep).less_equal(0.0),
        });
    }
    let x = widen(x);
    if !matches!(r, Red::Max | Red::Min | Red::Sum | Red::Prod) {
        float_only(x)?;
    }
    // The composite reductions round to a half type between their steps, as the
    // reference's numpy steps do (`sqrt(sum(square(x)))` is three roundings in float16).
    let q = |t: Tensor<'g>| widen(restore(t, d));
    let y = match r {
        Red::Mean => x.mean(&axes, keep),
        Red::Sum => x.sum(&axes, keep),
        Red::Max => x.max(&axes, keep),
        Red::Min => x.min(&axes, keep),
        Red::SumSquare => q(x * x).sum(&axes, keep),
        Red::L1 => x.abs().sum(&axes, keep),
        Red::L2 => q(q(x * x).sum(&axes, keep)).sqrt(),
        Red::LogSum => q(x.sum(&axes, keep)).log(),
        Red::LogSumExp => q(q(x.exp()).sum(&axes, keep)).log(),
        Red::Prod => prod(x, &axes, keep)?,
    };
    one(restore(y, d))
}

/// The product over `axes`: kiln has no product reduction, so the slices along each axis are
/// multiplied in order (numpy's `multiply.reduce` order), for axes of up to 1,024.
fn prod<'g>(x: Tensor<'g>, axes: &[isize], keep: bool) -> Result<Tensor<'g>, String> {
    let norm = normalize_axes(axes, x.rank())?;
    let mut y = x;
    for &a in &norm {
        let n = y.shape().dims()[a]
            .fixed()
            .ok_or("cannot multiply along the open batch axis")?;
        if n > 1024 {
            return Err(format!("a product over {n} elements is not supported"));
        }
        y = if n == 0 {
            let mut d = y.shape().0.clone();
            d[a] = crate::shape::Dim::Fixed(1);
            x.graph()
                .scalar_of(x.dtype(), 1.0)
                .broadcast_to(crate::shape::Shape(d))
        } else {
            let mut acc = y.narrow(a as isize, 0, 1);
            for i in 1..n {
                acc = acc * y.narrow(a as isize, i, 1);
            }
            acc
        };
    }
    if keep {
        return Ok(y);
    }
    let d: Vec<_> = (0..y.rank())
        .filter(|i| !norm.contains(i))
        .map(|i| y.shape().dims()[i])
        .collect();
    Ok(y.reshape(crate::shape::Shape(d.into())))
}

/// A static's values as integers, named for errors.
pub(crate) fn static_ints(s: &Static, what: &str) -> Result<Vec<i64>, String> {
    s.as_ints().map_err(|e| format!("{what}: {e}"))
}
