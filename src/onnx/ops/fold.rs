//! Integer arithmetic at import time: the elementwise ops on [`Static`] integer operands
//! (shape computations such as `H / 2`, `-axis`, `max(shape, 0)`), with numpy broadcasting.
//!
//! Exporters compute reshape targets, pads and slice bounds with ordinary ONNX arithmetic on
//! `int64` tensors; kiln has no `int64` graph values, and these are constants anyway, so they
//! fold here. An overflow, a division by zero, or the open batch size `?` inside the
//! arithmetic is an error, never a wrapped or guessed number.

use crate::onnx::import::{Ctx, Val};
use crate::onnx::tensor::{SData, Static, BATCH};

/// The `BOOL` element type.
const BOOL: i32 = 9;

/// An integer binary op for folding: `None` is an overflow or a division by zero.
pub(crate) type IntOp = fn(i64, i64) -> Option<i64>;

/// Inputs `idx` as integer statics, if every one is.
pub(super) fn int_statics(c: &Ctx<'_, '_>, idx: &[usize]) -> Option<Vec<Static>> {
    let mut out = vec![];
    for &i in idx {
        match c.val(i) {
            Ok(Val::S(s)) if matches!(s.data, SData::Int(_)) => out.push(s),
            _ => return None,
        }
    }
    Some(out)
}

fn values(s: &Static) -> Result<&[i64], String> {
    match &s.data {
        SData::Int(v) if v.contains(&BATCH) => Err(
            "the open batch size `?` is used in import-time arithmetic, which kiln cannot fold"
                .into(),
        ),
        SData::Int(v) => Ok(v),
        _ => Err("expected an integer constant".into()),
    }
}

/// The numpy broadcast of `a` and `b`'s dims.
fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let r = a.len().max(b.len());
    let get = |d: &[usize], i: usize| {
        if i + d.len() >= r {
            d[i + d.len() - r]
        } else {
            1
        }
    };
    (0..r)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("cannot broadcast {a:?} with {b:?}")),
        })
        .collect()
}

/// For each element of `out` (row-major), the index of the element of `dims` it reads.
fn source_index(out: &[usize], dims: &[usize]) -> Vec<usize> {
    let n: usize = out.iter().product();
    let r = out.len();
    let mut idx = vec![0; n];
    for (flat, slot) in idx.iter_mut().enumerate() {
        let (mut rem, mut src, mut stride) = (flat, 0, 1);
        for i in (0..r).rev() {
            let coord = rem % out[i];
            rem /= out[i];
            if i + dims.len() >= r {
                let d = dims[i + dims.len() - r];
                if d != 1 {
                    src += coord * stride;
                }
                stride *= d;
            }
        }
        *slot = src;
    }
    idx
}

/// `f` over `a` and `b` broadcast; `to_bool` makes a `BOOL` result (comparisons).
pub(super) fn binary(a: &Static, b: &Static, f: IntOp, to_bool: bool) -> Result<Static, String> {
    let (va, vb) = (values(a)?, values(b)?);
    let dims = broadcast(&a.dims, &b.dims)?;
    let (ia, ib) = (source_index(&dims, &a.dims), source_index(&dims, &b.dims));
    let v = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| f(va[i], vb[j]).ok_or("an overflow or a division by zero"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Static {
        dtype: if to_bool { BOOL } else { a.dtype },
        dims,
        data: SData::Int(v),
    })
}

/// `f` over each element.
pub(super) fn unary(a: &Static, f: fn(i64) -> Option<i64>) -> Result<Static, String> {
    let v = values(a)?
        .iter()
        .map(|&x| f(x).ok_or("an overflow"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Static {
        data: SData::Int(v),
        ..a.clone()
    })
}

/// `where(cond, a, b)` on integer statics.
pub(super) fn select(cond: &Static, a: &Static, b: &Static) -> Result<Static, String> {
    let dims = broadcast(&broadcast(&cond.dims, &a.dims)?, &b.dims)?;
    let (vc, va, vb) = (values(cond)?, values(a)?, values(b)?);
    let (ic, ia, ib) = (
        source_index(&dims, &cond.dims),
        source_index(&dims, &a.dims),
        source_index(&dims, &b.dims),
    );
    let v = (0..ic.len())
        .map(|k| if vc[ic[k]] != 0 { va[ia[k]] } else { vb[ib[k]] })
        .collect();
    Ok(Static {
        dtype: a.dtype,
        dims,
        data: SData::Int(v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_folds() {
        let a = Static {
            dtype: 7,
            dims: vec![2, 1],
            data: SData::Int(vec![1, 2]),
        };
        let b = Static::ints(vec![10, 20, 30]);
        let s = binary(&a, &b, |x, y| x.checked_add(y), false).unwrap();
        assert_eq!(s.dims, [2, 3]);
        assert_eq!(s.data, SData::Int(vec![11, 21, 31, 12, 22, 32]));
        let e = binary(&a, &Static::ints(vec![0]), |x, y| x.checked_div(y), false);
        assert!(e.unwrap_err().contains("division by zero"));
        let q = Static::ints(vec![BATCH, 4]);
        assert!(unary(&q, |x| x.checked_neg())
            .unwrap_err()
            .contains("batch"));
    }
}
