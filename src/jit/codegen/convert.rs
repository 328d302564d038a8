//! `cast` lowered to Cranelift: every pair of dtypes, by the rules of [`crate::dtype`] and
//! exactly as the interpreter's `src/cast.rs` computes them (the tests compare the two
//! bitwise over every pair, and every `f16`/`bf16` bit pattern).
//!
//! - Floats ↔ integers use Cranelift's saturating conversions (`fcvt_to_sint_sat`: truncate,
//!   saturate, NaN → 0); `i8`/`u8` saturate through `i32` and a clamp, which is the same.
//! - Integers ↔ integers sign- or zero-extend, or reduce (wrap).
//! - `f16`/`bf16` (held as `i16` bit patterns) go through `f32` by calling the runtime's
//!   helpers, which are the `half` crate's conversions: the interpreter calls the same
//!   functions, so the two agree on every subnormal and NaN payload by construction, not by a
//!   reimplementation of IEEE rounding in IR. A call per element is slow next to a native
//!   conversion, but a cast of stored weights runs once per load, not per step.

use super::Gen;
use crate::dtype::DType;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F64, I16, I32, I64, I8};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// The Cranelift type a value of `d` is held in (half types as their bits).
pub(super) fn cl_type(d: DType) -> Type {
    match d {
        DType::F32 => F32,
        DType::F64 => F64,
        DType::I32 => I32,
        DType::I64 => I64,
        DType::Bool | DType::I8 | DType::U8 => I8,
        DType::F16 | DType::BF16 => I16,
    }
}

/// How an integer-like dtype widens: `Some(true)` signed, `Some(false)` unsigned, `None`
/// for a float.
fn signed(d: DType) -> Option<bool> {
    match d {
        DType::I32 | DType::I64 | DType::I8 => Some(true),
        DType::U8 | DType::Bool => Some(false),
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => None,
    }
}

// The runtime's conversion helpers (declared in `module.rs`): the `half` crate's rules.

/// `f16` bits (low 16 bits of the argument) → `f32`.
pub(in crate::jit) extern "C" fn kiln_f16_to_f32(bits: i32) -> f32 {
    half::f16::from_bits(bits as u16).to_f32()
}
/// `f32` → `f16` bits, rounded to nearest even.
pub(in crate::jit) extern "C" fn kiln_f32_to_f16(x: f32) -> i32 {
    half::f16::from_f32(x).to_bits() as i32
}
/// `bf16` bits → `f32`.
pub(in crate::jit) extern "C" fn kiln_bf16_to_f32(bits: i32) -> f32 {
    half::bf16::from_bits(bits as u16).to_f32()
}
/// `f32` → `bf16` bits, rounded to nearest even.
pub(in crate::jit) extern "C" fn kiln_f32_to_bf16(x: f32) -> i32 {
    half::bf16::from_f32(x).to_bits() as i32
}

impl Gen<'_, '_> {
    /// `x` of dtype `from` converted to `to` (see the module docs).
    pub(super) fn convert(&mut self, x: Value, from: DType, to: DType) -> Value {
        use DType as D;
        if from == to {
            return x;
        }
        if from.is_half() {
            let bits = self.b.ins().uextend(I32, x);
            let f = if from == D::F16 {
                self.helpers.f16_to_f32
            } else {
                self.helpers.bf16_to_f32
            };
            let v = self.call_helper(f, &[bits]);
            return self.convert(v, D::F32, to);
        }
        if to.is_half() {
            let v = self.convert(x, from, D::F32);
            let f = if to == D::F16 {
                self.helpers.f32_to_f16
            } else {
                self.helpers.f32_to_bf16
            };
            let bits = self.call_helper(f, &[v]);
            return self.b.ins().ireduce(I16, bits);
        }
        match (signed(from), to) {
            (None, D::F32 | D::F64) => {
                if to == D::F64 {
                    self.b.ins().fpromote(F64, x)
                } else {
                    self.b.ins().fdemote(F32, x)
                }
            }
            (Some(s), D::F32 | D::F64) => {
                let wide = if from == D::I64 {
                    x
                } else {
                    self.int_resize(x, from, s, I32)
                };
                self.b.ins().fcvt_from_sint(cl_type(to), wide)
            }
            (None, D::I32 | D::I64) => self.b.ins().fcvt_to_sint_sat(cl_type(to), x),
            (None, D::I8 | D::U8) => {
                let (lo, hi) = if to == D::I8 { (-128, 127) } else { (0, 255) };
                let v = self.b.ins().fcvt_to_sint_sat(I32, x);
                let lo = self.b.ins().iconst(I32, lo);
                let hi = self.b.ins().iconst(I32, hi);
                let v = self.b.ins().smax(v, lo);
                let v = self.b.ins().smin(v, hi);
                self.b.ins().ireduce(I8, v)
            }
            (Some(s), D::I32 | D::I64 | D::I8 | D::U8) => self.int_resize(x, from, s, cl_type(to)),
            (None, D::Bool) => {
                let z = if from == D::F64 {
                    self.b.ins().f64const(0.0f64)
                } else {
                    self.b.ins().f32const(0.0f32)
                };
                self.b.ins().fcmp(FloatCC::NotEqual, x, z)
            }
            (Some(_), D::Bool) => self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0),
            // Handled above (a half source or target returns early).
            (_, D::F16 | D::BF16) => x,
        }
    }

    /// An integer of dtype `from` (signed or not) as Cranelift integer type `to`: extended
    /// by its sign, or reduced (wrapping).
    fn int_resize(&mut self, x: Value, from: DType, signed: bool, to: Type) -> Value {
        let have = cl_type(from);
        if have.bits() == to.bits() {
            x
        } else if have.bits() > to.bits() {
            self.b.ins().ireduce(to, x)
        } else if signed {
            self.b.ins().sextend(to, x)
        } else {
            self.b.ins().uextend(to, x)
        }
    }
}
