//! safetensors element types ↔ kiln arrays.
//!
//! Every safetensors dtype loads, so that a file is never refused for a tensor the model does
//! not need (PyTorch's `num_batches_tracked` is `i64`):
//! - `BOOL`, `U8`, `I8`, `I32`, `I64`, `F16`, `BF16`, `F32`, `F64` load as themselves;
//! - the others widen exactly into a dtype kiln holds: `I16`, `U16` → `i32`; `U32` → `i64`;
//!   `U64` → `i64` when every value fits (else an error naming the tensor); the 8-bit floats
//!   `F8_E5M2` and `F8_E4M3` → `f16`, which holds each of their values exactly.
//!
//! Decoding allocates what the header's shape says, so it is checked against
//! `KILN_MAX_ALLOC` ([`crate::shape::check_alloc`]) and allocated fallibly first; the
//! safetensors crate has already checked that the offsets and sizes agree with the buffer.

use crate::array::{Array, ArrayData, Element};
use crate::dtype::DType;
use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorView};

/// The little-endian bytes of `a`'s elements, as safetensors stores them.
pub(super) fn to_bytes(a: &Array) -> Vec<u8> {
    match a.data() {
        ArrayData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ArrayData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ArrayData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ArrayData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        ArrayData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ArrayData::I8(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ArrayData::U8(v) => v.clone(),
        ArrayData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ArrayData::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// The safetensors dtype that stores `d`.
pub(super) fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::I32 => Dtype::I32,
        DType::Bool => Dtype::BOOL,
        DType::I64 => Dtype::I64,
        DType::I8 => Dtype::I8,
        DType::U8 => Dtype::U8,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
    }
}

/// Decodes `b` as `N`-byte elements into a `T` array of `shape`, after checking the
/// allocation against the limit and reserving it fallibly.
fn decode<T: Element, const N: usize>(
    name: &str,
    shape: &[usize],
    b: &[u8],
    f: impl Fn([u8; N]) -> std::result::Result<T, String>,
) -> std::result::Result<Array, String> {
    crate::shape::check_alloc(&format!("tensor {name:?}"), T::DTYPE, shape)?;
    let n = b.len() / N;
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        format!(
            "tensor {name:?}: cannot allocate {n} {} elements: out of memory",
            T::DTYPE
        )
    })?;
    for c in b.chunks_exact(N) {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        v.push(f(a)?);
    }
    Array::new(shape, v).map_err(|e| format!("tensor {name:?}: {e}"))
}

/// An `F8_E4M3` (the "fn" variant: no infinities, NaN is `S.1111.111`) byte as `f16`, which
/// holds it exactly (its least subnormal is 2^-9, its largest value 448).
fn e4m3(b: u8) -> f16 {
    let (e, m) = ((b >> 3) & 0xF, b & 7);
    let mag = if e == 0xF && m == 7 {
        f32::NAN
    } else if e == 0 {
        m as f32 * (-9f32).exp2()
    } else {
        (8 + m) as f32 * (e as f32 - 10.0).exp2()
    };
    f16::from_f32(if b & 0x80 != 0 { -mag } else { mag })
}

/// The array a safetensors view holds (see the module docs for the dtypes that widen).
pub(super) fn from_view(name: &str, v: &TensorView<'_>) -> std::result::Result<Array, String> {
    let s = v.shape();
    let b = v.data();
    match v.dtype() {
        Dtype::F32 => decode(name, s, b, |c| Ok(f32::from_le_bytes(c))),
        Dtype::F64 => decode(name, s, b, |c| Ok(f64::from_le_bytes(c))),
        Dtype::I32 => decode(name, s, b, |c| Ok(i32::from_le_bytes(c))),
        Dtype::I64 => decode(name, s, b, |c| Ok(i64::from_le_bytes(c))),
        Dtype::I8 => decode(name, s, b, |c| Ok(i8::from_le_bytes(c))),
        Dtype::U8 => decode(name, s, b, |c: [u8; 1]| Ok(c[0])),
        Dtype::F16 => decode(name, s, b, |c| Ok(f16::from_le_bytes(c))),
        Dtype::BF16 => decode(name, s, b, |c| Ok(bf16::from_le_bytes(c))),
        Dtype::BOOL => decode(name, s, b, |c: [u8; 1]| match c[0] {
            0 | 1 => Ok(c[0] == 1),
            x => Err(format!("tensor {name:?}: bool byte {x} is neither 0 nor 1")),
        }),
        Dtype::I16 => decode(name, s, b, |c| Ok(i16::from_le_bytes(c) as i32)),
        Dtype::U16 => decode(name, s, b, |c| Ok(u16::from_le_bytes(c) as i32)),
        Dtype::U32 => decode(name, s, b, |c| Ok(u32::from_le_bytes(c) as i64)),
        Dtype::U64 => decode(name, s, b, |c| {
            let x = u64::from_le_bytes(c);
            i64::try_from(x)
                .map_err(|_| format!("tensor {name:?}: u64 value {x} does not fit in i64"))
        }),
        Dtype::F8_E5M2 => decode(name, s, b, |c: [u8; 1]| {
            Ok(f16::from_bits((c[0] as u16) << 8))
        }),
        Dtype::F8_E4M3 => decode(name, s, b, |c: [u8; 1]| Ok(e4m3(c[0]))),
        other => Err(format!(
            "tensor {name:?} has dtype {other:?}, which kiln cannot read"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_decodes_every_byte_exactly() {
        let mut seen = 0;
        for b in 0..=255u8 {
            let h = e4m3(b);
            if b & 0x7F == 0x7F {
                assert!(h.is_nan());
                continue;
            }
            let (s, e, m) = (b >> 7, (b >> 3) & 0xF, (b & 7) as f64);
            let want = if e == 0 {
                m / 8.0 * 2f64.powi(-6)
            } else {
                (1.0 + m / 8.0) * 2f64.powi(e as i32 - 7)
            };
            let want = if s == 1 { -want } else { want };
            assert_eq!(h.to_f64().to_bits(), want.to_bits(), "byte {b:#04x}");
            seen += 1;
        }
        assert_eq!(seen, 254);
        assert_eq!(e4m3(0x7E).to_f64(), 448.0);
    }
}
