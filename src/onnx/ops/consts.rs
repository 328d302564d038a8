//! Import-time values: Constant, ConstantOfShape, Shape, Size, and Cast (which converts a
//! static at import to any type, and a tensor to a dtype kiln has).

use super::shape::dims_of;
use super::{one, static_ints, Built};
use crate::onnx::import::{Ctx, Val};
use crate::onnx::tensor::{dtype_name, kiln_dtype, SData, Static, BATCH};

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

pub(super) fn size<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let d = dims_of(&c.val(0)?);
    let n: Option<usize> = d.iter().map(|x| x.fixed()).product();
    let n = n.ok_or("the size depends on the open batch size")?;
    Ok(vec![Val::S(Static {
        dims: vec![],
        ..Static::ints(vec![n as i64])
    })])
}

/// `Cast` to a dtype kiln has; a static (shape arithmetic) casts at import to any type.
pub(super) fn cast<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let to = c.int("to", 0) as i32;
    if let Val::S(s) = c.val(0)? {
        let f = s.as_f64();
        let data = match to {
            1 | 10 | 16 => SData::F32(f?.iter().map(|&v| v as f32).collect()),
            11 => SData::F64(f?),
            9 => SData::Int(f?.iter().map(|&v| (v != 0.0) as i64).collect()),
            2..=7 | 12 | 13 => match &s.data {
                SData::Int(v) => SData::Int(v.clone()),
                _ => SData::Int(f?.iter().map(|&v| v.trunc() as i64).collect()),
            },
            _ => return Err(format!("casting to {} is not supported", dtype_name(to))),
        };
        return Ok(vec![Val::S(Static {
            dtype: to,
            dims: s.dims,
            data,
        })]);
    }
    let x = c.t(0)?;
    let dt = kiln_dtype(to).ok_or_else(|| {
        // after dtypes land: casts to i64/i8/u8/f16/bf16 tensors.
        format!(
            "casting a tensor to {} is not supported: kiln has no {} values yet",
            dtype_name(to),
            dtype_name(to)
        )
    })?;
    one(x.cast(dt))
}
