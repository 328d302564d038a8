//! exp, log, tanh, sigmoid, erf and softplus in Cranelift ops, for `f32` and `f32x4` alike.
//!
//! Cranelift has no transcendental instructions, and a libm call per lane costs 3–4× a
//! polynomial (measured when the JIT was written). These are the Cephes single-precision
//! algorithms, written branch-free (special cases by `select`) so the same code runs per
//! lane. Errors below are against `f64` std results rounded to `f32`, measured by the sweep in
//! `tests/jit.rs` (`transcendentals_match_f64`), which also fixes the tolerances the
//! differential tests use:
//!
//! | function | method | max error (normal results) |
//! |---|---|---|
//! | `exp` | `x = n ln2 + r` (two-part ln2), degree-6 polynomial, `2^n` applied in two halves (exponent bits built with the `1.5·2²³` rounding trick) | 1 ulp measured, 2 asserted |
//! | `log` | mantissa in `[√½, √2)`, degree-9 polynomial (Cephes `logf`) | 1 ulp measured, 2 asserted |
//! | `tanh` | odd degree-11 polynomial for `|x| < 0.625`, else `1 - 2/(e^{2|x|}+1)` | 1 ulp measured, 4 asserted |
//! | `sigmoid` | `1/(1+t)` or `t/(1+t)` with `t = e^{-|x|}` | 2 ulp measured, 4 asserted |
//! | `erf` | `x·P(x²)/Q(x²)` on `x` clamped to `[-4, 4]`, degrees 13/8 (Eigen's and XLA's `f32` erf) | 6 ulp measured (near `|x| = 3.96`, where the result is within 2·10⁻⁷ of ±1), 8 asserted (`tests/new_ops.rs`) |
//! | `softplus` | `max(x, 0) + log1p(t)`, `t = e^{-|x|}`, `log1p(t) = log(u)·t/(u-1)` with `u = 1 + t` (Goldberg's rounding-error cancellation) | 3 ulp measured, 4 asserted (`tests/new_ops.rs`) |
//!
//! ("Measured": the largest error over every 251st f32 bit pattern; the asserted bounds leave
//! room for inputs the sweep skips, and are the tolerances the differential tests use.)
//!
//! Special values: `exp(-inf) = 0`, `exp(inf) = inf` (and overflow past 88.72), `exp(NaN) =
//! NaN`; results in the subnormal range are within one subnormal step (2⁻¹⁴⁹) of the truth.
//! `log(±0) = -inf`, `log(x<0) = NaN`, `log(inf) = inf`, subnormal inputs exact to 2 ulp.
//! `tanh(±0) = ±0`, `tanh(±inf) = ±1`; `sigmoid(-inf) = 0`, `sigmoid(inf) = 1`;
//! `erf(±0) = ±0`, `erf(±inf) = ±1`; `softplus(inf) = inf`, `softplus(-inf) = 0`, and
//! `softplus(x) = x` (no overflow) for large `x`. NaN in, NaN out, everywhere.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;

fn is_vec(b: &FunctionBuilder, x: Value) -> bool {
    b.func.dfg.value_type(x) == F32X4
}

fn bits_flags(vec: bool) -> MemFlagsData {
    if vec {
        MemFlagsData::new().with_endianness(Endianness::Little)
    } else {
        MemFlagsData::new()
    }
}

/// A float constant of `x`'s type.
fn fc(b: &mut FunctionBuilder, like: Value, v: f32) -> Value {
    let s = b.ins().f32const(v);
    if is_vec(b, like) {
        b.ins().splat(F32X4, s)
    } else {
        s
    }
}

/// An int constant of the integer type matching `x`'s float type.
fn ic(b: &mut FunctionBuilder, like: Value, v: i32) -> Value {
    let s = b.ins().iconst(I32, v as i64);
    if is_vec(b, like) {
        b.ins().splat(I32X4, s)
    } else {
        s
    }
}

fn int_ty(b: &FunctionBuilder, x: Value) -> Type {
    if is_vec(b, x) {
        I32X4
    } else {
        I32
    }
}

/// `mask ? a : c` for a mask made by `fcmp` on `a`'s type.
fn sel(b: &mut FunctionBuilder, mask: Value, a: Value, c: Value) -> Value {
    if is_vec(b, a) {
        let m = b.ins().bitcast(F32X4, bits_flags(true), mask);
        b.ins().bitselect(m, a, c)
    } else {
        b.ins().select(mask, a, c)
    }
}

fn to_bits(b: &mut FunctionBuilder, x: Value) -> Value {
    let vec = is_vec(b, x);
    let t = int_ty(b, x);
    b.ins().bitcast(t, bits_flags(vec), x)
}

fn from_bits(b: &mut FunctionBuilder, i: Value) -> Value {
    let vec = b.func.dfg.value_type(i) == I32X4;
    let t = if vec { F32X4 } else { F32 };
    b.ins().bitcast(t, bits_flags(vec), i)
}

/// `2^k` for an integral float `k` in `[-126, 127]`.
///
/// Adding `1.5·2²³` puts `k` in the low mantissa bits, so `bits(k + M) - bits(M)` is `k` as
/// an integer: four cheap ops, where `fcvt_to_sint_sat` lowers to a seven-instruction
/// saturation sequence per vector on x64. (A NaN `k` gives garbage bits here, but the value
/// it scales is NaN too, and NaN times anything is NaN.)
fn pow2(b: &mut FunctionBuilder, k: Value) -> Value {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    let m = fc(b, k, MAGIC);
    let km = b.ins().fadd(k, m);
    let kb = to_bits(b, km);
    let off = ic(b, k, MAGIC.to_bits() as i32 - 127);
    let e = b.ins().isub(kb, off);
    let e = b.ins().ishl_imm_u(e, 23);
    from_bits(b, e)
}

/// Horner's rule, one fused multiply-add per coefficient: a Horner step is a dependency
/// chain, and `fma` has the latency of a multiply alone (4 cycles on Zen 3, against 3 + 3 for
/// a multiply then an add), besides rounding once.
fn poly(b: &mut FunctionBuilder, x: Value, coeffs: &[f32]) -> Value {
    let mut acc = fc(b, x, coeffs[0]);
    for &c in &coeffs[1..] {
        let k = fc(b, x, c);
        acc = b.ins().fma(acc, x, k);
    }
    acc
}

/// `e^x`; see the module docs for its error.
pub(crate) fn exp(b: &mut FunctionBuilder, x: Value) -> Value {
    // Clamp so that n stays in range. Compare-and-select rather than fmin/fmax: x64 lowers
    // IEEE fmin/fmax to about seven instructions per vector, and the comparisons are false
    // for NaN, which therefore passes through unchanged.
    let hi = fc(b, x, 89.0);
    let lo = fc(b, x, -105.0);
    let above = b.ins().fcmp(FloatCC::GreaterThan, x, hi);
    let x = sel(b, above, hi, x);
    let below = b.ins().fcmp(FloatCC::LessThan, x, lo);
    let x = sel(b, below, lo, x);
    let log2e = fc(b, x, std::f32::consts::LOG2_E);
    let t = b.ins().fmul(x, log2e);
    let n = b.ins().nearest(t);
    // r = x - n·ln2 with ln2 in two parts, each product subtracted exactly by an fma.
    let c1 = fc(b, x, -0.693_359_4);
    let c2 = fc(b, x, 2.121_944_4e-4);
    let r = b.ins().fma(n, c1, x);
    let r = b.ins().fma(n, c2, r);
    let p = poly(
        b,
        r,
        &[
            1.987_569_1e-4,
            1.398_2e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            5.000_000_1e-1_f64 as f32,
        ],
    );
    let rr = b.ins().fmul(r, r);
    let p = b.ins().fma(p, rr, r);
    let one = fc(b, x, 1.0);
    let y = b.ins().fadd(p, one);
    // 2^n in two halves, so that n up to 128 and down to -152 stay representable.
    let half = fc(b, x, 0.5);
    let n1 = b.ins().fmul(n, half);
    let n1 = b.ins().floor(n1);
    let n2 = b.ins().fsub(n, n1);
    let s1 = pow2(b, n1);
    let s2 = pow2(b, n2);
    let y = b.ins().fmul(y, s1);
    b.ins().fmul(y, s2)
}

/// Natural logarithm; see the module docs for its error.
pub(crate) fn log(b: &mut FunctionBuilder, x0: Value) -> Value {
    // Subnormals: scale into the normal range first.
    let tiny = fc(b, x0, f32::MIN_POSITIVE);
    let is_tiny = b.ins().fcmp(FloatCC::LessThan, x0, tiny);
    let scale = fc(b, x0, 8_388_608.0); // 2^23
    let scaled = b.ins().fmul(x0, scale);
    let x = sel(b, is_tiny, scaled, x0);
    let zero = fc(b, x0, 0.0);
    let e_adj = fc(b, x0, -23.0);
    let e_adj = sel(b, is_tiny, e_adj, zero);

    let bits = to_bits(b, x);
    let e_int = b.ins().ushr_imm_u(bits, 23);
    let c126 = ic(b, x, 126);
    let e_int = b.ins().isub(e_int, c126);
    let ft = if is_vec(b, x) { F32X4 } else { F32 };
    let e = b.ins().fcvt_from_sint(ft, e_int);
    let e = b.ins().fadd(e, e_adj);
    let mant_mask = ic(b, x, 0x007f_ffff);
    let half_bits = ic(b, x, 0x3f00_0000);
    let mb = b.ins().band(bits, mant_mask);
    let mb = b.ins().bor(mb, half_bits);
    let m = from_bits(b, mb); // in [0.5, 1)

    let sqrthf = fc(b, x, std::f32::consts::FRAC_1_SQRT_2);
    let small = b.ins().fcmp(FloatCC::LessThan, m, sqrthf);
    let one = fc(b, x, 1.0);
    let e_minus = b.ins().fsub(e, one);
    let e = sel(b, small, e_minus, e);
    let m2 = b.ins().fadd(m, m);
    let m2 = b.ins().fsub(m2, one);
    let m1 = b.ins().fsub(m, one);
    let m = sel(b, small, m2, m1);

    let z = b.ins().fmul(m, m);
    let p = poly(
        b,
        m,
        &[
            7.037_683_6e-2,
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333e-1,
        ],
    );
    let y = b.ins().fmul(p, m);
    let y = b.ins().fmul(y, z);
    let q1 = fc(b, x, -2.121_944_4e-4);
    let t = b.ins().fmul(e, q1);
    let y = b.ins().fadd(y, t);
    let halfc = fc(b, x, -0.5);
    let t = b.ins().fmul(z, halfc);
    let y = b.ins().fadd(y, t);
    let r = b.ins().fadd(m, y);
    let q2 = fc(b, x, 0.693_359_4);
    let t = b.ins().fmul(e, q2);
    let r = b.ins().fadd(r, t);

    // Special values.
    let inf = fc(b, x0, f32::INFINITY);
    let is_inf = b.ins().fcmp(FloatCC::Equal, x0, inf);
    let r = sel(b, is_inf, inf, r);
    let ninf = fc(b, x0, f32::NEG_INFINITY);
    let is_zero = b.ins().fcmp(FloatCC::Equal, x0, zero);
    let r = sel(b, is_zero, ninf, r);
    let nan = fc(b, x0, f32::NAN);
    let is_neg = b.ins().fcmp(FloatCC::LessThan, x0, zero);
    let r = sel(b, is_neg, nan, r);
    let is_nan = b.ins().fcmp(FloatCC::Unordered, x0, x0);
    sel(b, is_nan, x0, r)
}

/// Hyperbolic tangent; see the module docs for its error.
pub(crate) fn tanh(b: &mut FunctionBuilder, x: Value) -> Value {
    let ax = b.ins().fabs(x);
    // Small |x|: odd polynomial.
    let z = b.ins().fmul(x, x);
    let p = poly(
        b,
        z,
        &[
            -5.704_988_7e-3,
            2.063_908_9e-2_f64 as f32,
            -5.373_971_6e-2,
            1.333_144_2e-1,
            -3.333_328_2e-1_f64 as f32,
        ],
    );
    let p = b.ins().fmul(p, z);
    let small = b.ins().fma(p, x, x);
    // Large |x|: 1 - 2 / (e^{2|x|} + 1), sign restored.
    let two = fc(b, x, 2.0);
    let t = b.ins().fmul(ax, two);
    let e = exp(b, t);
    let one = fc(b, x, 1.0);
    let d = b.ins().fadd(e, one);
    let q = b.ins().fdiv(two, d);
    let big = b.ins().fsub(one, q);
    let lim = fc(b, x, 0.625);
    let is_small = b.ins().fcmp(FloatCC::LessThan, ax, lim);
    let r = sel(b, is_small, small, big);
    // x's sign bit ORed into the result (Cranelift's x64 backend has no vector fcopysign).
    // `big >= 0` gets its sign here; `small` already has x's sign, except for `x = -0`,
    // where `fma(+0, -0, -0)` is `+0`: the OR makes `tanh(-0) = -0`, as IEEE says.
    let rb = to_bits(b, r);
    let xb = to_bits(b, x);
    let sign = ic(b, x, i32::MIN);
    let xs = b.ins().band(xb, sign);
    let rb = b.ins().bor(rb, xs);
    from_bits(b, rb)
}

/// `1 / (1 + e^-x)`; see the module docs for its error.
///
/// Computed from `t = e^{-|x|}` (which never overflows) as `1/(1+t)` for `x >= 0` and
/// `t/(1+t)` for `x < 0`, so tiny results near -88 stay correct instead of flushing to 0.
pub(crate) fn sigmoid(b: &mut FunctionBuilder, x: Value) -> Value {
    let ax = b.ins().fabs(x);
    let nax = b.ins().fneg(ax);
    let t = exp(b, nax);
    let one = fc(b, x, 1.0);
    let d = b.ins().fadd(one, t);
    // One division: choose the numerator first.
    let zero = fc(b, x, 0.0);
    let is_neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
    let num = sel(b, is_neg, t, one);
    b.ins().fdiv(num, d)
}

/// The error function; see the module docs for its error.
///
/// The rational approximation Eigen and XLA use for `f32`: on `x` clamped to `[-4, 4]`
/// (beyond which `erf` is `±1` in `f32`), `x·P(x²)/Q(x²)` with `P` of degree 6 and `Q` of
/// degree 4 in `x²`, evaluated as `x·(P/Q)`, then clamped to `[-1, 1]`. Compare-and-select clamps keep NaN.
pub(crate) fn erf(b: &mut FunctionBuilder, x0: Value) -> Value {
    let hi = fc(b, x0, 4.0);
    let lo = fc(b, x0, -4.0);
    let above = b.ins().fcmp(FloatCC::GreaterThan, x0, hi);
    let x = sel(b, above, hi, x0);
    let below = b.ins().fcmp(FloatCC::LessThan, x, lo);
    let x = sel(b, below, lo, x);
    let z = b.ins().fmul(x, x);
    let p = poly(
        b,
        z,
        &[
            -2.726_142_258_013_06e-10_f64 as f32,
            2.770_681_424_959_02e-8_f64 as f32,
            -2.101_024_020_825_08e-6_f64 as f32,
            -5.692_506_394_623_46e-5_f64 as f32,
            -7.349_906_303_268_55e-4_f64 as f32,
            -2.954_599_808_540_25e-3_f64 as f32,
            -1.609_603_332_624_15e-2_f64 as f32,
        ],
    );
    let q = poly(
        b,
        z,
        &[
            -1.456_607_184_649_96e-5_f64 as f32,
            -2.133_740_552_789_05e-4_f64 as f32,
            -1.682_826_974_382_03e-3_f64 as f32,
            -7.373_329_167_204_68e-3_f64 as f32,
            -1.426_473_905_141_89e-2_f64 as f32,
        ],
    );
    // x·(P/Q), not (x·P)/Q: P/Q is about 2/√π, so a subnormal x is rounded once.
    let pq = b.ins().fdiv(p, q);
    let r = b.ins().fmul(x, pq);
    let one = fc(b, x0, 1.0);
    let big = b.ins().fcmp(FloatCC::GreaterThan, r, one);
    let r = sel(b, big, one, r);
    let mone = fc(b, x0, -1.0);
    let small = b.ins().fcmp(FloatCC::LessThan, r, mone);
    sel(b, small, mone, r)
}

/// `log(1 + e^x)`; see the module docs for its error.
///
/// `max(x, 0) + log1p(e^{-|x|})`: `e^{-|x|}` never overflows, and `log1p` keeps the tail of
/// very negative `x` (where `1 + t` rounds to 1). `log1p(t)` is `log(u)·(t/(u-1))` with
/// `u = 1 + t`: the rounding error of `u` cancels between the two factors; `t` itself where
/// `u` rounds to exactly 1.
pub(crate) fn softplus(b: &mut FunctionBuilder, x: Value) -> Value {
    let ax = b.ins().fabs(x);
    let nax = b.ins().fneg(ax);
    let t = exp(b, nax);
    let one = fc(b, x, 1.0);
    let u = b.ins().fadd(one, t);
    let lu = log(b, u);
    let um1 = b.ins().fsub(u, one);
    let ratio = b.ins().fdiv(t, um1);
    let l = b.ins().fmul(lu, ratio);
    let exact = b.ins().fcmp(FloatCC::Equal, u, one);
    let l = sel(b, exact, t, l);
    let zero = fc(b, x, 0.0);
    let pos = b.ins().fcmp(FloatCC::GreaterThan, x, zero);
    let m = sel(b, pos, x, zero);
    b.ins().fadd(m, l)
}
