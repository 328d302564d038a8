//! The scalar functions `vmath` vectorizes: math.rs's `exp`, `log`, `tanh` and `sigmoid`
//! transcribed line by line (same constants, same operations in the same order, `mul_add`
//! where math.rs emits `fma`, compare-and-select where it selects), so that every result is
//! bitwise the Cranelift kernel's (invariant 15). Plain `std` Rust with no crate paths: the
//! benchmark report compiles this same file as its "rustc loop, same polynomials" baseline.

#![allow(clippy::excessive_precision)] // the constants are math.rs's, digit for digit

use std::f32::consts::{FRAC_1_SQRT_2, LOG2_E};

#[inline(always)]
fn poly(x: f32, coeffs: &[f32]) -> f32 {
    let mut acc = coeffs[0];
    for &c in &coeffs[1..] {
        acc = acc.mul_add(x, c);
    }
    acc
}

/// `2^k` for an integral `k` in `[-126, 127]` (math.rs `pow2`).
#[inline(always)]
fn pow2(k: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    let kb = (k + MAGIC).to_bits() as i32;
    let e = kb.wrapping_sub(MAGIC.to_bits() as i32 - 127);
    f32::from_bits(e.wrapping_shl(23) as u32)
}

/// `e^x` (math.rs `exp`).
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    let x = if x > 89.0 { 89.0 } else { x };
    let x = if x < -105.0 { -105.0 } else { x };
    let n = (x * LOG2_E).round_ties_even();
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let p = poly(
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
    let p = p.mul_add(r * r, r);
    let y = p + 1.0;
    let n1 = (n * 0.5).floor();
    let n2 = n - n1;
    y * pow2(n1) * pow2(n2)
}

/// Natural logarithm (math.rs `log`).
#[inline(always)]
pub(super) fn log(x0: f32) -> f32 {
    let is_tiny = x0 < f32::MIN_POSITIVE;
    let x = if is_tiny { x0 * 8_388_608.0 } else { x0 };
    let e_adj = if is_tiny { -23.0 } else { 0.0 };
    let bits = x.to_bits();
    let e = ((bits >> 23) as i32).wrapping_sub(126) as f32 + e_adj;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000); // in [0.5, 1)
    let small = m < FRAC_1_SQRT_2;
    let e = if small { e - 1.0 } else { e };
    let m = if small { (m + m) - 1.0 } else { m - 1.0 };
    let z = m * m;
    let p = poly(
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
    let y = (p * m) * z;
    let y = y + e * -2.121_944_4e-4;
    let y = y + z * -0.5;
    let r = (m + y) + e * 0.693_359_4;
    let r = if x0 == f32::INFINITY {
        f32::INFINITY
    } else {
        r
    };
    let r = if x0 == 0.0 { f32::NEG_INFINITY } else { r };
    let r = if x0 < 0.0 { f32::NAN } else { r };
    if x0.is_nan() {
        x0
    } else {
        r
    }
}

/// Hyperbolic tangent (math.rs `tanh`).
#[inline(always)]
pub(super) fn tanh(x: f32) -> f32 {
    let ax = x.abs();
    let z = x * x;
    let p = poly(
        z,
        &[
            -5.704_988_7e-3,
            2.063_908_9e-2_f64 as f32,
            -5.373_971_6e-2,
            1.333_144_2e-1,
            -3.333_328_2e-1_f64 as f32,
        ],
    );
    let small = (p * z).mul_add(x, x);
    let big = 1.0 - 2.0 / (exp(ax * 2.0) + 1.0);
    let r = if ax < 0.625 { small } else { big };
    // x's sign, also for x = -0 (where `small` is +0).
    f32::from_bits(r.to_bits() | (x.to_bits() & 0x8000_0000))
}

/// `1 / (1 + e^-x)` (math.rs `sigmoid`).
#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    let t = exp(-x.abs());
    let d = 1.0 + t;
    let num = if x < 0.0 { t } else { 1.0 };
    num / d
}
