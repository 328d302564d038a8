//! The op table: each ONNX op kiln imports, the versions of it that exist (its
//! `since_version` history in onnx 1.23.2's `onnx.defs`), the first version kiln builds, and
//! the function that builds it from kiln's builder calls.
//!
//! The version in force for a node is the op's newest `since_version` at or below the
//! model's opset (as onnxruntime and burn dispatch), and each builder reads `Ctx::version`
//! where the forms differ (Squeeze's axes: an attribute before 13, an input from 13). Later
//! versions that only widened the type list (bfloat16 in 13, 19, 21...) build the same way.
//! The elementwise and reduction ops are here; `ops/nn.rs` has the layers (Conv, pooling,
//! BatchNormalization, Gemm, MatMul, Softmax, LRN) and `ops/shape.rs` the movement and
//! import-time ops (Reshape, Gather, Slice, Shape, Constant, ...).

mod consts;
mod fold;
mod nn;
mod shape;

use super::import::{Ctx, Val};
use super::tensor::Static;
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
    "Pad" [1, 2, 11, 13, 18, 19, 21, 23, 24, 25], from 2 => shape::pad;
    "Expand" [8, 13], from 8 => shape::expand;
    "Constant" [1, 9, 11, 12, 13, 19, 21, 23, 24, 25], from 1 => consts::constant;
    "ConstantOfShape" [9, 20, 21, 23, 24, 25], from 9 => consts::constant_of_shape;
    "Shape" [1, 13, 15, 19, 21, 23, 24, 25], from 1 => consts::shape;
    "Size" [1, 13, 19, 21, 23, 24, 25], from 1 => consts::size;
    "Gather" [1, 11, 13], from 1 => shape::gather;
    "Cast" [1, 6, 9, 13, 19, 21, 23, 24, 25], from 6 => consts::cast;
    "ReduceMean" [1, 11, 13, 18], from 1 => |c| reduce(c, Red::Mean, 18);
    "ReduceSum" [1, 11, 13], from 1 => |c| reduce(c, Red::Sum, 13);
    "ReduceMax" [1, 11, 12, 13, 18, 20], from 1 => |c| reduce(c, Red::Max, 18);
    "ReduceMin" [1, 11, 12, 13, 18, 20], from 1 => |c| reduce(c, Red::Min, 18);
    "ReduceSumSquare" [1, 11, 13, 18], from 1 => |c| reduce(c, Red::SumSquare, 18);
    "ReduceL1" [1, 11, 13, 18], from 1 => |c| reduce(c, Red::L1, 18);
    "ReduceL2" [1, 11, 13, 18], from 1 => |c| reduce(c, Red::L2, 18);
    "ReduceLogSum" [1, 11, 13, 18], from 1 => |c| reduce(c, Red::LogSum, 18);
    "ReduceLogSumExp" [1, 11, 13, 18], from 1 => |c| reduce(c, Red::LogSumExp, 18);
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

fn unary<'g>(c: &mut Ctx<'_, 'g>, f: fn(Tensor<'g>) -> Tensor<'g>) -> Built<'g> {
    let x = c.t(0)?;
    one(f(x))
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
    one(f(a, b))
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
    let mut acc = c.t(0)?;
    for i in 1..n {
        acc = f(acc, c.t(i)?);
    }
    one(acc)
}

fn mean<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let n = c.n_inputs();
    let Val::T(sum) = variadic(c, |a, b| a + b, None)?.remove(0) else {
        return Err("Mean of constants is not supported".into());
    };
    float_only(sum)?;
    one(sum / n as f64)
}

fn pow<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let (a, b) = (c.t(0)?, c.t(1)?);
    float_only(a)?;
    // Pow-12 allows an exponent of another type: it is converted to the base's.
    one(a.pow(b.cast(a.dtype())))
}

fn leaky_relu<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = c.t(0)?;
    let alpha = c.float("alpha", 0.01) as f64;
    one(x.less(0.0).select(x * alpha, x))
}

fn prelu<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let (x, slope) = (c.t(0)?, c.t(1)?);
    one(x.less(0.0).select(x * slope, x))
}

fn elu<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = c.t(0)?;
    float_only(x)?;
    let alpha = c.float("alpha", 1.0) as f64;
    one(x.less(0.0).select((x.exp() - 1.0) * alpha, x))
}

fn selu<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = c.t(0)?;
    float_only(x)?;
    let alpha = c.float("alpha", 1.673_263_2) as f64;
    let gamma = c.float("gamma", 1.050_701) as f64;
    one(x
        .less_equal(0.0)
        .select((x.exp() * alpha - alpha) * gamma, x * gamma))
}

fn hard_sigmoid<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = c.t(0)?;
    float_only(x)?;
    let alpha = c.float("alpha", 0.2) as f64;
    let beta = c.float("beta", 0.5) as f64;
    let zero = c.g.scalar_of(x.dtype(), 0.0);
    one(zero.maximum((x * alpha + beta).minimum(1.0)))
}

fn gelu<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = c.t(0)?;
    float_only(x)?;
    let approximate = match c.string("approximate").as_deref() {
        None | Some("none") => false,
        Some("tanh") => true,
        Some(o) => return Err(format!("approximate={o:?} is not an ONNX value")),
    };
    one(x.gelu(approximate))
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
    let mut x = c.t(0)?;
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
    one(x)
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
    if !matches!(r, Red::Max | Red::Min | Red::Sum) {
        float_only(x)?;
    }
    let y = match r {
        Red::Mean => x.mean(&axes, keep),
        Red::Sum => x.sum(&axes, keep),
        Red::Max => x.max(&axes, keep),
        Red::Min => x.min(&axes, keep),
        Red::SumSquare => (x * x).sum(&axes, keep),
        Red::L1 => x.abs().sum(&axes, keep),
        Red::L2 => (x * x).sum(&axes, keep).sqrt(),
        Red::LogSum => x.sum(&axes, keep).log(),
        Red::LogSumExp => x.exp().sum(&axes, keep).log(),
    };
    one(y)
}

/// A static's values as integers, named for errors.
pub(crate) fn static_ints(s: &Static, what: &str) -> Result<Vec<i64>, String> {
    s.as_ints().map_err(|e| format!("{what}: {e}"))
}
