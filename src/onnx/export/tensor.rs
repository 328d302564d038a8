//! Kiln values as ONNX messages: element types, `TensorProto`s (raw little-endian data, as
//! `numpy_helper.from_array` writes them) and the typed `ValueInfoProto`s of graph inputs
//! and outputs, whose open batch dimension is the `dim_param` [`BATCH_PARAM`].

use crate::array::{Array, ArrayData};
use crate::dtype::DType;
use crate::onnx::proto::{
    tensor_proto::DataType, tensor_shape_proto::dimension::Value as DimValue,
    tensor_shape_proto::Dimension, type_proto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use crate::shape::{Dim, Shape};

/// The `dim_param` the open batch dimension `?` becomes.
pub const BATCH_PARAM: &str = "batch";

/// The ONNX element type of a kiln dtype: one table for import and export (`onnx::tensor`).
pub(crate) use crate::onnx::tensor::onnx_code as onnx_dtype;

/// The array's elements as little-endian bytes (booleans one byte each, halves as their
/// bit patterns), the form of `TensorProto.raw_data`.
fn raw_bytes(a: &Array) -> Vec<u8> {
    fn le<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
        v.iter().flat_map(|&x| f(x)).collect()
    }
    match a.data() {
        ArrayData::F32(v) => le(v, f32::to_le_bytes),
        ArrayData::F64(v) => le(v, f64::to_le_bytes),
        ArrayData::I32(v) => le(v, i32::to_le_bytes),
        ArrayData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        ArrayData::I64(v) => le(v, i64::to_le_bytes),
        ArrayData::I8(v) => le(v, i8::to_le_bytes),
        ArrayData::U8(v) => v.clone(),
        ArrayData::F16(v) => le(v, |x: half::f16| x.to_bits().to_le_bytes()),
        ArrayData::BF16(v) => le(v, |x: half::bf16| x.to_bits().to_le_bytes()),
    }
}

/// A named `TensorProto` holding `a`.
pub(crate) fn tensor_proto(name: &str, a: &Array) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: a.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(onnx_dtype(a.dtype())),
        raw_data: Some(raw_bytes(a)),
        ..Default::default()
    }
}

/// A 1-D `int64` tensor (shapes, axes, pads: what ONNX ops take as such inputs).
pub(crate) fn int64s(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: vec![v.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(le_i64(v)),
        ..Default::default()
    }
}

fn le_i64(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The typed `ValueInfoProto` of a graph input or output.
pub(crate) fn value_info(name: &str, dtype: DType, shape: &Shape) -> ValueInfoProto {
    let dim = shape
        .dims()
        .iter()
        .map(|d| Dimension {
            denotation: None,
            value: Some(match d {
                Dim::Fixed(n) => DimValue::DimValue(*n as i64),
                Dim::Batch => DimValue::DimParam(BATCH_PARAM.to_string()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            denotation: None,
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(onnx_dtype(dtype)),
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

/// An HWIO filter's data reordered to OIHW (`[kh, kw, i, o]` → `[o, i, kh, kw]`), the layout
/// of ONNX's `Conv` and PyTorch's weights.
pub(crate) fn hwio_to_oihw(a: &Array) -> Result<Array, String> {
    if a.shape().len() != 4 {
        return Err(format!("a filter must be 4-D, got {:?}", a.shape()));
    }
    Ok(a.permuted(&[3, 2, 0, 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oihw_reorders_every_element() {
        let v: Vec<f32> = (0..2 * 3 * 4 * 5).map(|i| i as f32).collect();
        let a = Array::new([2, 3, 4, 5], v.clone()).unwrap();
        let b = hwio_to_oihw(&a).unwrap();
        assert_eq!(b.shape(), &[5, 4, 2, 3]);
        let b = b.to_vec::<f32>().unwrap();
        // oihw[o=3, i=2, h=1, w=2] is hwio[h=1, w=2, i=2, o=3].
        let (o, i, h, w) = (3, 2, 1, 2);
        assert_eq!(
            b[((o * 4 + i) * 2 + h) * 3 + w],
            v[((h * 3 + w) * 4 + i) * 5 + o]
        );
    }

    #[test]
    fn raw_data_is_little_endian() {
        let a = Array::new([2], vec![1.0f32, -2.0]).unwrap();
        let t = tensor_proto("w", &a);
        assert_eq!(
            t.raw_data.unwrap(),
            [1.0f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat()
        );
        assert_eq!(t.data_type, Some(1));
        let b = tensor_proto("m", &Array::new([3], vec![true, false, true]).unwrap());
        assert_eq!(b.raw_data.unwrap(), [1, 0, 1]);
    }
}
