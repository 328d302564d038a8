//! Import-time values: Constant, ConstantOfShape, Shape, Size, and Cast (which converts a
//! static at import to any type, and a tensor to a dtype kiln has).

use super::shape::dims_of;
use super::{one, static_ints, Built};
use crate::dtype::DType;
use crate::onnx::import::{Ctx, Val};
use crate::onnx::tensor::{dtype_name, kiln_dtype, onnx_code, SData, Static, BATCH};

pub(super) fn constant<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let s = if let Some(t) = c.tensor_attr("value")? {
        t
    } else if let Some(f) = c.attr("value_float").and_then(|a| a.f) {
        Static {
            dtype: 1,
            dims: vec![],
            data: SData::F32(vec![f]),
        }
    } else if let Some(a) = c.attr("value_floats") {
        Static {
            dtype: 1,
            dims: vec![a.floats.len()],
            data: SData::F32(a.floats.clone()),
        }
    } else if let Some(i) = c.attr("value_int").and_then(|a| a.i) {
        Static {
            dtype: 7,
            dims: vec![],
            data: SData::Int(vec![i]),
        }
    } else if let Some(a) = c.attr("value_ints") {
        Static::ints(a.ints.clone())
    } else {
        return Err("only value, value_float(s) and value_int(s) are supported (not sparse or string values)".into());
    };
    Ok(vec![Val::S(s)])
}

pub(super) fn constant_of_shape<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let dims = static_ints(&c.s(0, "shape")?, "shape")?;
    if dims.iter().any(|&d| d < 0) {
        return Err(format!(
            "shape {dims:?} must be known and non-negative (not the open batch size)"
        ));
    }
    let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let n = crate::shape::checked_numel(&dims)
        .filter(|&n| n <= 1 << 26)
        .ok_or("the shape is too large for a constant")?;
    let value = c.tensor_attr("value")?.unwrap_or(Static {
        dtype: 1,
        dims: vec![1],
        data: SData::F32(vec![0.0]),
    });
    if value.len() != 1 {
        return Err("value must hold one element".into());
    }
    let data = match value.data {
        SData::F32(v) => SData::F32(vec![v[0]; n]),
        SData::F64(v) => SData::F64(vec![v[0]; n]),
        SData::Int(v) => SData::Int(vec![v[0]; n]),
    };
    Ok(vec![Val::S(Static {
        dtype: value.dtype,
        dims,
        data,
    })])
}

pub(super) fn shape<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let d = dims_of(&c.val(0)?);
    let r = d.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = if c.version >= 15 {
        (clamp(c.int("start", 0)), clamp(c.int("end", r)))
    } else {
        (0, r as usize)
    };
    let v: Vec<i64> = d[s..e.max(s)]
        .iter()
        .map(|x| x.fixed().map_or(BATCH, |n| n as i64))
        .collect();
    Ok(vec![Val::S(Static::ints(v))])
}

/// `Size`: a constant, or, on an input with the open batch axis, the batch size (read at run
/// time; `size` is an f32 count, exact below 2^24) times the known sizes, as `int64`.
pub(super) fn size<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let d = dims_of(&c.val(0)?);
    let known: usize = d.iter().filter_map(|x| x.fixed()).product();
    if d.iter().all(|x| x.fixed().is_some()) {
        return Ok(vec![Val::S(Static {
            dims: vec![],
            ..Static::ints(vec![known as i64])
        })]);
    }
    let x = c.t(0)?;
    let batch = x.size(&[0]).cast(DType::I64);
    one(batch * c.g.scalar_of(DType::I64, known as f64))
}

/// `Cast` to a dtype kiln has, by kiln's cast table (the graph's `cast`; a static is cast at
/// import by the same table, so folding changes no bit).
pub(super) fn cast<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let to = c.int("to", 0) as i32;
    cast_to(c, to)
}

/// `CastLike`: `Cast` to input 1's element type.
pub(super) fn cast_like<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let to = match c.val(1)? {
        Val::S(s) => s.dtype,
        Val::T(t) => onnx_code(t.dtype()),
    };
    cast_to(c, to)
}

fn cast_to<'g>(c: &mut Ctx<'_, 'g>, to: i32) -> Built<'g> {
    let dt = kiln_dtype(to).ok_or_else(|| {
        format!(
            "casting to {} is not supported: kiln has no {} values",
            dtype_name(to),
            dtype_name(to)
        )
    })?;
    if let Val::S(s) = c.val(0)? {
        let batch = matches!(&s.data, SData::Int(v) if v.contains(&BATCH));
        if !batch {
            let a = s.to_array_widened()?;
            return Ok(vec![Val::S(Static::from_array(&a.cast(dt)))]);
        }
        // Shape arithmetic carries the open batch size: an integer-to-integer cast keeps it;
        // any other cast is of the run-time value (the tensor below reads the batch size).
        if !dt.is_float() && !dt.is_half() && dt != DType::Bool {
            return Ok(vec![Val::S(Static { dtype: to, ..s })]);
        }
    }
    let x = c.t(0)?;
    one(x.cast(dt))
}
