//! ONNX tensors as import-time values: a `TensorProto` (an initializer, a `Constant`'s value,
//! a test's `input_0.pb`) decoded into a [`Static`], with every size checked.
//!
//! A `Static` is what the importer knows at build time: shapes, axes, indices, pads and the
//! initializers' values. Any ONNX dtype decodes (integers as `i64`, `f16`/`bf16` widened to
//! `f32`, exactly), so shape arithmetic folds whatever its type; a `Static` that flows into
//! the graph as data ([`Static::to_array`]) becomes an array of its own dtype (`int64` as
//! `i64`, `float16` as `f16`, ...), and one of a dtype kiln has no values of (`uint16`,
//! float8, strings) is an error naming it.

use super::proto::{tensor_proto::DataType, TensorProto};
use crate::array::Array;
use crate::dtype::DType;

/// The sentinel for the open batch dimension inside a static shape value (the output of
/// `Shape` on a tensor whose first dimension is `?`): movement ops carry it, `Reshape` turns it
/// back into `?`, and arithmetic on it is refused.
pub(crate) const BATCH: i64 = i64::MIN;

/// The element values of a [`Static`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SData {
    /// `float`, `float16` and `bfloat16` (the halves widened exactly).
    F32(Vec<f32>),
    /// `double`.
    F64(Vec<f64>),
    /// Every integer type and `bool` (0 or 1).
    Int(Vec<i64>),
}

/// A tensor known at import time.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Static {
    /// The ONNX element type (`TensorProto.DataType`).
    pub(crate) dtype: i32,
    /// The shape.
    pub(crate) dims: Vec<usize>,
    /// The values, row-major.
    pub(crate) data: SData,
}

/// The ONNX name of an element type (`FLOAT`, `INT64`, ...).
pub(crate) fn dtype_name(code: i32) -> String {
    DataType::try_from(code)
        .map(|d| d.as_str_name().to_string())
        .unwrap_or_else(|_| format!("data type {code}"))
}

/// The kiln dtype of an ONNX element type, if kiln has it (not the 16- and 32-bit unsigned
/// integers, `int16`, `uint64`, strings, complex numbers, float8/float4 and int4).
pub(crate) fn kiln_dtype(code: i32) -> Option<DType> {
    match DataType::try_from(code).ok()? {
        DataType::Float => Some(DType::F32),
        DataType::Double => Some(DType::F64),
        DataType::Int32 => Some(DType::I32),
        DataType::Bool => Some(DType::Bool),
        DataType::Int64 => Some(DType::I64),
        DataType::Int8 => Some(DType::I8),
        DataType::Uint8 => Some(DType::U8),
        DataType::Float16 => Some(DType::F16),
        DataType::Bfloat16 => Some(DType::BF16),
        _ => None,
    }
}

/// The ONNX element type of a kiln dtype (every kiln dtype has one).
pub(crate) fn onnx_code(d: DType) -> i32 {
    (match d {
        DType::F32 => DataType::Float,
        DType::F64 => DataType::Double,
        DType::I32 => DataType::Int32,
        DType::Bool => DataType::Bool,
        DType::I64 => DataType::Int64,
        DType::I8 => DataType::Int8,
        DType::U8 => DataType::Uint8,
        DType::F16 => DataType::Float16,
        DType::BF16 => DataType::Bfloat16,
    }) as i32
}

fn le_chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|c| {
        let mut b = [0u8; N];
        b.copy_from_slice(c);
        b
    })
}

fn half_to_f32(bits: u16) -> f32 {
    let sign = ((bits >> 15) as u32) << 31;
    let exp = ((bits >> 10) & 0x1f) as u32;
    let man = (bits & 0x3ff) as u32;
    let v = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: m · 2^-24, exact in f32.
            let f = m as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -f } else { f };
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(v)
}

impl Static {
    /// Decodes `t`. Errors (as text, the caller names the tensor and file) for external data,
    /// strings, a payload whose length does not match the shape, or an overflowing shape.
    pub(crate) fn from_proto(t: &TensorProto) -> Result<Static, String> {
        if t.data_location == Some(1) || !t.external_data.is_empty() {
            return Err("its data is external (another file), which kiln does not read yet".into());
        }
        let mut dims = Vec::with_capacity(t.dims.len());
        for &d in &t.dims {
            dims.push(usize::try_from(d).map_err(|_| format!("has a negative dimension {d}"))?);
        }
        let n = crate::shape::checked_numel(&dims)
            .filter(|n| n.checked_mul(8).is_some())
            .ok_or_else(|| format!("its shape {dims:?} overflows"))?;
        let dt = t.data_type.unwrap_or(0);
        let raw = t.raw_data.as_deref().unwrap_or(&[]);
        let use_raw = t.raw_data.is_some();
        let kind = DataType::try_from(dt).map_err(|_| format!("has unknown data type {dt}"))?;
        let size = match kind {
            DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
            DataType::Double | DataType::Int64 | DataType::Uint64 => 8,
            DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16 => 2,
            DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
            _ => {
                return Err(format!(
                    "has data type {}, which kiln cannot read",
                    dtype_name(dt)
                ))
            }
        };
        let count = |got: usize| {
            if got == n {
                Ok(())
            } else {
                Err(format!(
                    "holds {got} elements, but its shape {dims:?} needs {n}"
                ))
            }
        };
        if use_raw {
            count(raw.len() / size)?;
            if !raw.len().is_multiple_of(size) {
                return Err(format!(
                    "its raw data ({} bytes) is not whole elements",
                    raw.len()
                ));
            }
        }
        let data = match kind {
            DataType::Float if use_raw => {
                SData::F32(le_chunks::<4>(raw).map(f32::from_le_bytes).collect())
            }
            DataType::Float => {
                count(t.float_data.len())?;
                SData::F32(t.float_data.clone())
            }
            DataType::Double if use_raw => {
                SData::F64(le_chunks::<8>(raw).map(f64::from_le_bytes).collect())
            }
            DataType::Double => {
                count(t.double_data.len())?;
                SData::F64(t.double_data.clone())
            }
            DataType::Float16 | DataType::Bfloat16 => {
                let bits: Vec<u16> = if use_raw {
                    le_chunks::<2>(raw).map(u16::from_le_bytes).collect()
                } else {
                    count(t.int32_data.len())?;
                    t.int32_data.iter().map(|&v| v as u16).collect()
                };
                let f = |b: u16| match kind {
                    DataType::Float16 => half_to_f32(b),
                    _ => f32::from_bits((b as u32) << 16),
                };
                SData::F32(bits.into_iter().map(f).collect())
            }
            DataType::Int64 if use_raw => {
                SData::Int(le_chunks::<8>(raw).map(i64::from_le_bytes).collect())
            }
            DataType::Int64 => {
                count(t.int64_data.len())?;
                SData::Int(t.int64_data.clone())
            }
            DataType::Uint64 if use_raw => SData::Int(
                le_chunks::<8>(raw)
                    .map(|b| u64::from_le_bytes(b) as i64)
                    .collect(),
            ),
            DataType::Uint64 => {
                count(t.uint64_data.len())?;
                SData::Int(t.uint64_data.iter().map(|&v| v as i64).collect())
            }
            DataType::Uint32 if use_raw => SData::Int(
                le_chunks::<4>(raw)
                    .map(|b| u32::from_le_bytes(b) as i64)
                    .collect(),
            ),
            DataType::Uint32 => {
                count(t.uint64_data.len())?;
                SData::Int(t.uint64_data.iter().map(|&v| v as i64).collect())
            }
            _ if use_raw => SData::Int(match kind {
                DataType::Int32 => le_chunks::<4>(raw)
                    .map(|b| i32::from_le_bytes(b) as i64)
                    .collect(),
                DataType::Int16 => le_chunks::<2>(raw)
                    .map(|b| i16::from_le_bytes(b) as i64)
                    .collect(),
                DataType::Uint16 => le_chunks::<2>(raw)
                    .map(|b| u16::from_le_bytes(b) as i64)
                    .collect(),
                DataType::Int8 => raw.iter().map(|&b| b as i8 as i64).collect(),
                _ => raw.iter().map(|&b| b as i64).collect(), // uint8, bool
            }),
            _ => {
                count(t.int32_data.len())?;
                SData::Int(t.int32_data.iter().map(|&v| v as i64).collect())
            }
        };
        Ok(Static {
            dtype: dt,
            dims,
            data,
        })
    }

    /// A rank-1 `INT64` static.
    pub(crate) fn ints(v: Vec<i64>) -> Static {
        Static {
            dtype: DataType::Int64 as i32,
            dims: vec![v.len()],
            data: SData::Int(v),
        }
    }

    /// The element count.
    pub(crate) fn len(&self) -> usize {
        match &self.data {
            SData::F32(v) => v.len(),
            SData::F64(v) => v.len(),
            SData::Int(v) => v.len(),
        }
    }

    /// The values as integers (floats must be whole), for shapes, axes and indices.
    pub(crate) fn as_ints(&self) -> Result<Vec<i64>, String> {
        let whole = |f: f64| {
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                Ok(f as i64)
            } else {
                Err(format!("expected integers, found {f}"))
            }
        };
        match &self.data {
            SData::Int(v) => Ok(v.clone()),
            SData::F32(v) => v.iter().map(|&f| whole(f as f64)).collect(),
            SData::F64(v) => v.iter().map(|&f| whole(f)).collect(),
        }
    }

    /// The values as `f64` (the batch sentinel refused).
    pub(crate) fn as_f64(&self) -> Result<Vec<f64>, String> {
        match &self.data {
            SData::F32(v) => Ok(v.iter().map(|&x| x as f64).collect()),
            SData::F64(v) => Ok(v.clone()),
            SData::Int(v) if v.contains(&BATCH) => {
                Err("it holds the open batch size `?`, which is not known at import".into())
            }
            SData::Int(v) => Ok(v.iter().map(|&x| x as f64).collect()),
        }
    }

    /// The one value of a one-element static.
    pub(crate) fn scalar_f64(&self) -> Result<f64, String> {
        let v = self.as_f64()?;
        match v.as_slice() {
            [x] => Ok(*x),
            _ => Err(format!(
                "expected one value, found {} (shape {:?})",
                v.len(),
                self.dims
            )),
        }
    }

    /// A kiln array as a static of the matching ONNX type (halves widened to `f32`, exactly).
    pub(crate) fn from_array(a: &Array) -> Static {
        let data = match a.dtype() {
            DType::F32 | DType::F16 | DType::BF16 => {
                SData::F32(a.cast(DType::F32).to_vec::<f32>().unwrap_or_default())
            }
            DType::F64 => SData::F64(a.to_vec::<f64>().unwrap_or_default()),
            DType::I32 | DType::I64 | DType::I8 | DType::U8 | DType::Bool => {
                SData::Int(a.cast(DType::I64).to_vec::<i64>().unwrap_or_default())
            }
        };
        Static {
            dtype: onnx_code(a.dtype()),
            dims: a.shape().to_vec(),
            data,
        }
    }

    /// The value as a kiln array of its own dtype, or, for an ONNX integer type kiln has no
    /// values of (`uint16`, `int16`, `uint32`, `uint64`), of `i64` (which holds them all,
    /// `uint64` up to 2^63): what casting a static starts from.
    pub(crate) fn to_array_widened(&self) -> Result<Array, String> {
        match (&self.data, kiln_dtype(self.dtype)) {
            (SData::Int(v), None) if !v.contains(&BATCH) => {
                if self.dtype == DataType::Uint64 as i32 && v.iter().any(|&x| x < 0) {
                    return Err("a uint64 value past 2^63 does not fit kiln's i64".into());
                }
                Array::new(&self.dims, v.clone()).map_err(|e| e.to_string())
            }
            _ => self.to_array(),
        }
    }

    /// The value as a kiln array, if kiln has its dtype (exact: `f32` stays `f32` bits).
    pub(crate) fn to_array(&self) -> Result<Array, String> {
        let Some(dt) = kiln_dtype(self.dtype) else {
            return Err(format!(
                "it is a {} tensor used as data, and kiln has no {} values",
                dtype_name(self.dtype),
                dtype_name(self.dtype)
            ));
        };
        if matches!(&self.data, SData::Int(v) if v.contains(&BATCH)) {
            return Err("it holds the open batch size `?`, which is not known at import".into());
        }
        let dims = self.dims.clone();
        // Every value was decoded from this dtype, so each conversion back is exact (a half
        // widened to f32 narrows to the same half).
        let r = match (&self.data, dt) {
            (SData::F32(v), DType::F32) => Array::new(dims, v.clone()),
            (SData::F64(v), DType::F64) => Array::new(dims, v.clone()),
            (SData::F32(v), DType::F16) => Array::new(
                dims,
                v.iter()
                    .map(|&x| half::f16::from_f32(x))
                    .collect::<Vec<_>>(),
            ),
            (SData::F32(v), DType::BF16) => Array::new(
                dims,
                v.iter()
                    .map(|&x| half::bf16::from_f32(x))
                    .collect::<Vec<_>>(),
            ),
            (SData::Int(v), DType::I64) => Array::new(dims, v.clone()),
            (SData::Int(v), DType::I32) => {
                Array::new(dims, v.iter().map(|&x| x as i32).collect::<Vec<_>>())
            }
            (SData::Int(v), DType::I8) => {
                Array::new(dims, v.iter().map(|&x| x as i8).collect::<Vec<_>>())
            }
            (SData::Int(v), DType::U8) => {
                Array::new(dims, v.iter().map(|&x| x as u8).collect::<Vec<_>>())
            }
            (SData::Int(v), DType::Bool) => {
                Array::new(dims, v.iter().map(|&x| x != 0).collect::<Vec<_>>())
            }
            _ => {
                return Err(format!(
                    "{} data does not match its type",
                    dtype_name(self.dtype)
                ))
            }
        };
        r.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_widen_exactly() {
        assert_eq!(half_to_f32(15360), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(1), 2f32.powi(-24));
        assert!(half_to_f32(0x7c00).is_infinite());
        assert!(half_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn payload_length_is_checked() {
        let t = TensorProto {
            dims: vec![2, 3],
            data_type: Some(DataType::Float as i32),
            raw_data: Some(vec![0; 20]),
            ..Default::default()
        };
        let e = Static::from_proto(&t).unwrap_err();
        assert!(e.contains("holds 5 elements"), "{e}");
        let t = TensorProto {
            dims: vec![i64::MAX, i64::MAX],
            data_type: Some(DataType::Float as i32),
            ..Default::default()
        };
        assert!(Static::from_proto(&t).unwrap_err().contains("overflows"));
    }
}
