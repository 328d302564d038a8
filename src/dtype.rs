//! Element types.
//!
//! kiln keeps the set small: one float type that the JIT computes in (`f32`), one wider float
//! (`f64`) that the reference interpreter uses for precise gradient checks, one integer type for
//! labels and indices (`i32`) and `bool` for masks.

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
}

impl DType {
    /// All dtypes, in canonical order.
    pub const ALL: [DType; 4] = [DType::F32, DType::F64, DType::I32, DType::Bool];

    /// The short name used in dumps and error messages (`f32`, `i32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I32 => "i32",
            DType::Bool => "bool",
        }
    }

    /// Parses a short name produced by [`DType::name`].
    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// True for `f32` and `f64`.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// Size of one element in bytes.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 => 8,
            DType::Bool => 1,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
