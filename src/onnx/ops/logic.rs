//! Logic, remainders and small elementwise activations: Not, And, Or, Xor, Mod, IsNaN,
//! IsInf, Sign, Softsign, Celu, ThresholdedRelu, HardSwish, Mish, Swish, Shrink.
//!
//! Each is a few of kiln's primitives (`where`, comparisons, arithmetic), computed on the
//! [`widen`]ed operand and brought back with [`restore`] like the table's own elementwise ops;
//! the boolean ones fold at import on constants.

use super::fold::{self, IntOp};
use super::{binary, float_only, float_unary, one, restore, unary, widen, Built};
use crate::dtype::DType;
use crate::graph::Tensor;
use crate::onnx::import::{Ctx, Val};

fn bool_only(x: Tensor<'_>) -> Result<(), String> {
    if x.dtype() == DType::Bool {
        Ok(())
    } else {
        Err(format!("needs a bool tensor, got {}", x.dtype()))
    }
}

fn fals(t: Tensor<'_>) -> Tensor<'_> {
    t.graph().scalar_of(DType::Bool, 0.0)
}

fn tru(t: Tensor<'_>) -> Tensor<'_> {
    t.graph().scalar_of(DType::Bool, 1.0)
}

/// `Not` on bool.
pub(super) fn not<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    if let Some(s) = fold::int_statics(c, &[0]) {
        let r = fold::unary(&s[0], |v| Some((v == 0) as i64))?;
        return Ok(vec![Val::S(r)]);
    }
    let x = c.t(0)?;
    bool_only(x)?;
    one(x.equal(fals(x)))
}

fn and<'g>(a: Tensor<'g>, b: Tensor<'g>) -> Tensor<'g> {
    a.graph().where_(a, b, fals(a))
}

fn or<'g>(a: Tensor<'g>, b: Tensor<'g>) -> Tensor<'g> {
    a.graph().where_(a, tru(a), b)
}

fn xor<'g>(a: Tensor<'g>, b: Tensor<'g>) -> Tensor<'g> {
    a.not_equal(b)
}

/// `And`, `Or`, `Xor` (`op` is `&`, `|` or `^`) on bool (numpy broadcasting), folded on
/// constants.
pub(super) fn logic<'g>(c: &mut Ctx<'_, 'g>, op: u8) -> Built<'g> {
    for i in 0..2 {
        if let Ok(Val::T(t)) = c.val(i) {
            bool_only(t)?;
        }
    }
    match op {
        b'&' => binary(c, and, Some((|a, b| Some((a != 0 && b != 0) as i64), true))),
        b'|' => binary(c, or, Some((|a, b| Some((a != 0 || b != 0) as i64), true))),
        _ => binary(
            c,
            xor,
            Some((|a, b| Some(((a != 0) != (b != 0)) as i64), true)),
        ),
    }
}

/// Python's remainder (the divisor's sign) on integers.
fn py_mod(a: i64, b: i64) -> Option<i64> {
    let r = a.checked_rem(b)?;
    Some(if r != 0 && (r < 0) != (b < 0) {
        r + b
    } else {
        r
    })
}

/// `Mod`: `fmod = 1` is C's remainder (the dividend's sign), `fmod = 0` Python's (the
/// divisor's sign). On integers both come from kiln's truncating division, exact; on floats
/// from the `rem` primitive (C's `fmod`, exact), moved by one divisor as numpy's `divmod`
/// does (a zero result takes the divisor's sign).
pub(super) fn modulo<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let fmod = c.int("fmod", 0) != 0;
    let fold_op: IntOp = if fmod { i64::checked_rem } else { py_mod };
    if let Some(s) = fold::int_statics(c, &[0, 1]) {
        return Ok(vec![Val::S(fold::binary(&s[0], &s[1], fold_op, false)?)]);
    }
    let (a, b) = (c.t(0)?, c.t(1)?);
    if a.dtype() != b.dtype() {
        return Err(format!(
            "operands have different dtypes, {} and {}",
            a.dtype(),
            b.dtype()
        ));
    }
    let float = a.dtype().is_float() || a.dtype().is_half();
    let (wa, wb) = (widen(a), widen(b));
    // A half remainder computes in f32 and rounds once, as numpy's does (C's remainder is
    // exact in any width).
    let y = match (float, fmod) {
        (true, true) => wa % wb,
        (true, false) => float_py_rem(wa, wb),
        (false, true) => c_rem(wa, wb),
        (false, false) => py_rem(wa, wb),
    };
    one(restore(y, a.dtype()))
}

/// Python's remainder on floats, as numpy's `divmod`: C's `fmod`, plus the divisor where
/// it is nonzero and its sign differs from the divisor's; a zero takes the divisor's sign.
fn float_py_rem<'g>(a: Tensor<'g>, b: Tensor<'g>) -> Tensor<'g> {
    let g = a.graph();
    let r = a % b;
    let dt = r.dtype();
    let zero = g.scalar_of(dt, 0.0);
    let b_neg = b.less(zero);
    let signs_differ = r.less(zero).not_equal(b_neg);
    let fix = g.where_(r.not_equal(zero), signs_differ, fals(r));
    let moved = g.where_(fix, r + b, r);
    let signed_zero = g.where_(b_neg, g.scalar_of(dt, -0.0), zero);
    g.where_(r.equal(zero), signed_zero, moved)
}

/// C's remainder: `a − (a / b)·b` with truncating division.
fn c_rem<'g>(a: Tensor<'g>, b: Tensor<'g>) -> Tensor<'g> {
    a - (a / b) * b
}

/// Python's remainder: C's, moved by one divisor where it is nonzero and its sign differs
/// from the divisor's.
fn py_rem<'g>(a: Tensor<'g>, b: Tensor<'g>) -> Tensor<'g> {
    let g = a.graph();
    let r = c_rem(a, b);
    let zero = g.scalar_of(r.dtype(), 0.0);
    let signs_differ = r.less(zero).not_equal(b.less(zero));
    let fix = g.where_(r.not_equal(zero), signs_differ, fals(r));
    g.where_(fix, r + b, r)
}

/// `IsNaN`.
pub(super) fn is_nan<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = widen(c.t(0)?);
    float_only(x)?;
    one(x.not_equal(x))
}

/// `IsInf` (`detect_negative`, `detect_positive`, both on by default).
pub(super) fn is_inf<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = widen(c.t(0)?);
    float_only(x)?;
    let (neg, pos) = (
        c.int("detect_negative", 1) != 0,
        c.int("detect_positive", 1) != 0,
    );
    let p = x.equal(f64::INFINITY);
    let n = x.equal(f64::NEG_INFINITY);
    one(match (neg, pos) {
        (true, true) => c.g.where_(p, p, n),
        (false, true) => p,
        (true, false) => n,
        (false, false) => fals(x).broadcast_to(x.shape()),
    })
}

/// `Sign`: −1, 0 or 1 (NaN stays NaN).
pub(super) fn sign<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    unary(c, |x| {
        let g = x.graph();
        let (pos, zero) = (g.scalar_of(x.dtype(), 1.0), g.scalar_of(x.dtype(), 0.0));
        let neg = g.scalar_of(x.dtype(), -1.0);
        let s = g.where_(x.greater(zero), pos, g.where_(x.less(zero), neg, zero));
        g.where_(x.not_equal(x), x, s)
    })
}

/// `Softsign`: `x / (1 + |x|)`.
pub(super) fn softsign<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    float_unary(c, |x| x / (x.abs() + 1.0))
}

/// `Celu`: `max(0, x) + min(0, α·(exp(x/α) − 1))`.
pub(super) fn celu<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let alpha = c.float("alpha", 1.0) as f64;
    float_unary(c, |x| {
        x.maximum(0.0) + (((x / alpha).exp() - 1.0) * alpha).minimum(0.0)
    })
}

/// `ThresholdedRelu`: `x` where `x > α`, else 0.
pub(super) fn thresholded_relu<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let alpha = c.float("alpha", 1.0) as f64;
    float_unary(c, |x| x.greater(alpha).select(x, 0.0))
}

/// `HardSwish`: `x · max(0, min(1, x/6 + 1/2))`.
pub(super) fn hard_swish<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    float_unary(c, |x| {
        let zero = x.graph().scalar_of(x.dtype(), 0.0);
        x * zero.maximum((x * (1.0 / 6.0) + 0.5).minimum(1.0))
    })
}

/// `Mish`: `x · tanh(softplus(x))`.
pub(super) fn mish<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    float_unary(c, |x| x * x.softplus().tanh())
}

/// `Swish`: `x · sigmoid(α·x)`.
pub(super) fn swish<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let alpha = c.float("alpha", 1.0) as f64;
    float_unary(c, |x| x * (x * alpha).sigmoid())
}

/// `Shrink`: `x + bias` below `−λ`, `x − bias` above `λ`, 0 between.
pub(super) fn shrink<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let bias = c.float("bias", 0.0) as f64;
    let lambd = c.float("lambd", 0.5) as f64;
    float_unary(c, |x| {
        let g = x.graph();
        let zero = g.scalar_of(x.dtype(), 0.0);
        g.where_(
            x.less(-lambd),
            x + bias,
            g.where_(x.greater(lambd), x - bias, zero),
        )
    })
}
