//! The one definition of `cast` between dtypes, on the interpreter's `f64` slots.
//!
//! The interpreter holds every element as an `f64` (see [`crate::interp`]). That is exact for
//! the compute dtypes, but not for all storage dtypes: `i64` values past 2^53 would round, and
//! converting a signalling-NaN `f16` to `f64` quiets it (the JIT copies its bits unchanged).
//! So an `i64` slot holds the integer's *bits* ([`i64_slot`]) and an `f16`/`bf16` slot its
//! 16 bits as an integer ([`half_slot`]); movement ops copy slots unchanged, so a value is
//! moved bit for bit as on the JIT. Only casts read these slots (arithmetic refuses the
//! storage dtypes), so this file is the only place that decodes them.
//!
//! [`cast_slot`] is what the interpreter's `cast`, constant folding and [`crate::Array::cast`]
//! call; the JIT lowers the same rules (`jit/codegen/convert.rs`), and the tests compare the
//! two bitwise over every pair of dtypes. The rules are in [`crate::dtype`]'s module docs.

use crate::dtype::DType;
use half::{bf16, f16};

/// The slot that holds `v` (its bits, see the module docs).
#[inline]
pub(crate) fn i64_slot(v: i64) -> f64 {
    f64::from_bits(v as u64)
}

/// The `i64` held in a slot made by [`i64_slot`].
#[inline]
pub(crate) fn slot_i64(x: f64) -> i64 {
    x.to_bits() as i64
}

/// The slot of a half value of bits `bits` (see the module docs).
#[inline]
pub(crate) fn half_slot(bits: u16) -> f64 {
    bits as f64
}

/// The bits held in a slot made by [`half_slot`].
#[inline]
pub(crate) fn slot_half(x: f64) -> u16 {
    x as u16
}

/// A source value, as exact as its dtype holds it.
enum Num {
    Int(i64),
    Float(f64),
}

/// Converts slot `x` of dtype `from` to a slot of dtype `to`. With `keep_f64` (the
/// interpreter's `Precision::F64`), a cast to `f32` is not rounded, as every other `f32`
/// result in that mode.
pub(crate) fn cast_slot(from: DType, to: DType, x: f64, keep_f64: bool) -> f64 {
    if from == to {
        return x;
    }
    let src = match from {
        DType::I64 => Num::Int(slot_i64(x)),
        DType::I32 | DType::I8 | DType::U8 | DType::Bool => Num::Int(x as i64),
        DType::F32 | DType::F64 => Num::Float(x),
        DType::F16 => Num::Float(f16::from_bits(slot_half(x)).to_f64()),
        DType::BF16 => Num::Float(bf16::from_bits(slot_half(x)).to_f64()),
    };
    // The value as `f32`, for the conversions that go through it.
    let as_f32 = |n: &Num| match *n {
        Num::Int(i) => i as f32,
        Num::Float(f) => f as f32,
    };
    match to {
        DType::F64 => match src {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        },
        DType::F32 => match src {
            Num::Int(i) if keep_f64 => i as f64,
            Num::Float(f) if keep_f64 => f,
            _ => as_f32(&src) as f64,
        },
        DType::F16 => half_slot(f16::from_f32(as_f32(&src)).to_bits()),
        DType::BF16 => half_slot(bf16::from_f32(as_f32(&src)).to_bits()),
        // Rust's `as` from a float truncates toward zero and saturates, NaN → 0; from an
        // integer it wraps: the rules of the module docs.
        DType::I32 => match src {
            Num::Int(i) => (i as i32) as f64,
            Num::Float(f) => (f as i32) as f64,
        },
        DType::I8 => match src {
            Num::Int(i) => (i as i8) as f64,
            Num::Float(f) => (f as i8) as f64,
        },
        DType::U8 => match src {
            Num::Int(i) => (i as u8) as f64,
            Num::Float(f) => (f as u8) as f64,
        },
        DType::I64 => i64_slot(match src {
            Num::Int(i) => i,
            Num::Float(f) => f as i64,
        }),
        DType::Bool => {
            let nonzero = match src {
                Num::Int(i) => i != 0,
                Num::Float(f) => f != 0.0,
            };
            if nonzero {
                1.0
            } else {
                0.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i64_slots_are_exact_past_2_53() {
        for v in [i64::MIN, -1, 0, (1 << 53) + 1, i64::MAX] {
            assert_eq!(slot_i64(i64_slot(v)), v);
            let back = cast_slot(
                DType::I32,
                DType::I64,
                cast_slot(DType::I64, DType::I32, i64_slot(v), false),
                false,
            );
            assert_eq!(slot_i64(back), v as i32 as i64);
        }
    }

    #[test]
    fn casts_follow_the_documented_rules() {
        let c = |from, to, x| cast_slot(from, to, x, false);
        assert_eq!(c(DType::F32, DType::I8, 300.7), 127.0);
        assert_eq!(c(DType::F32, DType::U8, -3.0), 0.0);
        assert_eq!(c(DType::F64, DType::I32, f64::NAN), 0.0);
        assert_eq!(c(DType::I32, DType::U8, 300.0), 44.0);
        assert_eq!(c(DType::I32, DType::I8, 255.0), -1.0);
        assert_eq!(slot_i64(c(DType::F64, DType::I64, 1e30)), i64::MAX);
        let inf = half_slot(f16::INFINITY.to_bits());
        assert_eq!(c(DType::F32, DType::F16, 65520.0), inf);
        assert_eq!(c(DType::F16, DType::Bool, half_slot(0x7E01)), 1.0);
        assert_eq!(c(DType::F16, DType::Bool, half_slot(0x8000)), 0.0);
        // 2^24 + 1 is not an f32: through f32 it rounds to 2^24, then is exact in bf16.
        let b = c(DType::I32, DType::BF16, 16_777_217.0);
        assert_eq!(bf16::from_bits(slot_half(b)).to_f64(), 16_777_216.0);
    }
}
