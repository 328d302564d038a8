//! Element types.
//!
//! kiln computes in a small set: one float type that the JIT computes in (`f32`), one wider
//! float (`f64`) that the reference interpreter uses for precise gradient checks, one integer
//! type for labels and indices (`i32`) and `bool` for masks.
//!
//! Real checkpoints hold more: PyTorch counts batches in `i64`, hub weights come in `f16` and
//! `bf16`, quantized tensors in `i8`/`u8`. Those are **storage dtypes**: a value of one may be
//! fed, fetched, held in a variable or constant, saved and loaded, cast, and moved (reshape,
//! permute, slice, pad, concat, broadcast, `where`, `stop_gradient`); every arithmetic op refuses
//! it with an error naming the op and the dtype and saying what to cast to
//! ([`DType::is_compute`]). `i64` has a little more: the integer ops of `i32` (`add sub mul
//! div max min`, comparisons, `neg abs`, `reduce_sum`, `reduce_max`), wrapping as `i32` does,
//! which Cranelift runs natively at the same cost; not `pow` or contractions. Why refuse instead of promoting silently: a graph's dtypes are what
//! it computes in, TF refuses mixed-dtype arithmetic the same way, and an implicit `f16 → f32`
//! promotion would hide a copy of every operand (JAX computes `f16` natively, which kiln's JIT
//! does not). `i64 → i32`, `f16 → f32` are one `cast` away, and the error says so.
//!
//! Conversions (`cast`, the same in both backends and in [`crate::Array::cast`]):
//! - float → integer truncates toward zero and saturates at the target's range, NaN → 0;
//! - integer → integer wraps (two's complement, as numpy, PyTorch and JAX do);
//! - anything → `f16`/`bf16` goes through `f32` (the value as `f32`, then rounded to nearest
//!   even by the `half` crate's rules; NaN stays NaN with its payload's top bits);
//!   `f16`/`bf16` → anything goes through `f32`, which holds every half value exactly;
//! - anything → `bool` is `!= 0` (NaN is `true`).

use std::fmt;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// 32-bit IEEE float: the type models are built and compiled in.
    F32,
    /// 64-bit IEEE float: used by the interpreter's precise mode and available to graphs.
    F64,
    /// 32-bit signed integer, for labels and indices.
    I32,
    /// Boolean, for masks and comparison results.
    Bool,
    /// 64-bit signed integer (PyTorch's default integer): a storage dtype.
    I64,
    /// 8-bit signed integer: a storage dtype.
    I8,
    /// 8-bit unsigned integer: a storage dtype.
    U8,
    /// IEEE half precision (`half::f16`): a storage dtype, computed in `f32` after a cast.
    F16,
    /// bfloat16 (`half::bf16`, the top half of an `f32`): a storage dtype.
    BF16,
}

impl DType {
    /// All dtypes, in canonical order.
    pub const ALL: [DType; 9] = [
        DType::F32,
        DType::F64,
        DType::I32,
        DType::Bool,
        DType::I64,
        DType::I8,
        DType::U8,
        DType::F16,
        DType::BF16,
    ];

    /// The short name used in dumps and error messages (`f32`, `i32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I32 => "i32",
            DType::Bool => "bool",
            DType::I64 => "i64",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// Parses a short name produced by [`DType::name`].
    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// True for the float dtypes arithmetic runs in, `f32` and `f64` (not the half types:
    /// see [`DType::is_half`]).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// True for `f16` and `bf16`.
    pub fn is_half(self) -> bool {
        matches!(self, DType::F16 | DType::BF16)
    }

    /// True for the dtypes ops compute in (`f32`, `f64`, `i32`, `bool`); the others are
    /// storage dtypes (see the module docs).
    pub fn is_compute(self) -> bool {
        match self {
            DType::F32 | DType::F64 | DType::I32 | DType::Bool => true,
            DType::I64 | DType::I8 | DType::U8 | DType::F16 | DType::BF16 => false,
        }
    }

    /// The dtype to cast a storage dtype to before arithmetic (`f32` for floats, `i32` for
    /// integers); a compute dtype is its own.
    pub fn compute_dtype(self) -> DType {
        match self {
            DType::F16 | DType::BF16 => DType::F32,
            DType::I64 | DType::I8 | DType::U8 => DType::I32,
            DType::F32 | DType::F64 | DType::I32 | DType::Bool => self,
        }
    }

    /// Size of one element in bytes.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::F16 | DType::BF16 => 2,
            DType::Bool | DType::I8 | DType::U8 => 1,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
