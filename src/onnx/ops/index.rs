//! Index-valued and index-shaped ops: ArgMax, ArgMin, Hardmax, Trilu, Range, EyeLike, Tile,
//! SpaceToDepth, DepthToSpace.
//!
//! ArgMax/ArgMin are built from kiln's primitives as its own `argmax` is: the positions that
//! equal the extreme, an `int64` iota where they do, and the smallest (or, with
//! `select_last_index`, the largest) of those, so the indices are `int64` as ONNX's are. A NaN
//! in a slice is its extreme, as numpy's `argmax` (which ONNX's reference calls) has it.

use super::{axis, float_only, one, static_ints, widen, Built};
use crate::array::Array;
use crate::dtype::DType;
use crate::graph::Tensor;
use crate::onnx::import::{Ctx, Val};
use crate::onnx::tensor::{kiln_dtype, onnx_code, SData, Static};
use crate::shape::{Dim, Shape};

/// The size of axis `a` of `x`, which must be known.
fn fixed(x: Tensor<'_>, a: usize) -> Result<usize, String> {
    x.shape().dims()[a]
        .fixed()
        .ok_or_else(|| format!("axis {a} of {} must have a known size", x.shape()))
}

/// An `int64` iota along axis `a` of a rank-`r` tensor: shape `[n, 1, ..., 1]` (`r − a` axes),
/// so that it broadcasts against it.
fn iota<'g>(x: Tensor<'g>, a: usize, n: usize) -> Result<Tensor<'g>, String> {
    let mut dims = vec![1usize; x.rank() - a];
    dims[0] = n;
    let v: Vec<i64> = (0..n as i64).collect();
    Ok(x.graph()
        .constant(Array::new(dims, v).map_err(|e| e.to_string())?))
}

/// The `int64` index of the first (or last) extreme along axis `a`, axis kept.
fn arg_index<'g>(x: Tensor<'g>, a: usize, max: bool, last: bool) -> Result<Tensor<'g>, String> {
    let n = fixed(x, a)?;
    if n == 0 {
        return Err("the reduced axis is empty".into());
    }
    let g = x.graph();
    let x = match x.dtype() {
        DType::Bool => x.cast(DType::I32),
        _ => widen(x),
    };
    let ax = [a as isize];
    let ext = if max {
        x.max(&ax, true)
    } else {
        x.min(&ax, true)
    };
    let mut hit = x.equal(ext);
    if x.dtype().is_float() {
        hit = g.where_(hit, hit, x.not_equal(x));
    }
    let idx = iota(x, a, n)?;
    Ok(if last {
        g.where_(hit, idx, g.scalar_of(DType::I64, -1.0))
            .max(&ax, true)
    } else {
        g.where_(hit, idx, g.scalar_of(DType::I64, n as f64))
            .min(&ax, true)
    })
}

/// `ArgMax`/`ArgMin` (`keepdims`, `select_last_index` from 12), `int64` indices.
pub(super) fn arg<'g>(c: &mut Ctx<'_, 'g>, max: bool) -> Built<'g> {
    let x = c.t(0)?;
    let a = axis(c.int("axis", 0), x.rank())?;
    let last = c.version >= 12 && c.int("select_last_index", 0) != 0;
    let y = arg_index(x, a, max, last)?;
    if c.int("keepdims", 1) != 0 {
        return one(y);
    }
    let mut d = y.shape().0.clone();
    d.remove(a);
    one(y.reshape(Shape(d)))
}

/// `Hardmax`: 1 at the first maximum along `axis` (one axis from 13; before it, the input
/// coerced to 2-D at `axis`, which is the same when `axis` is the last).
pub(super) fn hardmax<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = c.t(0)?;
    float_only(widen(x))?;
    let r = x.rank();
    let a = if c.version >= 13 {
        axis(c.int("axis", -1), r)?
    } else {
        let a = axis(c.int("axis", 1), r)?;
        if a + 1 != r {
            return Err(format!(
                "axis {a} of a rank-{r} input (coerced to 2-D before opset 13) is not supported; \
                 only the last axis"
            ));
        }
        a
    };
    let n = fixed(x, a)?;
    let first = arg_index(x, a, true, false)?;
    let hit = iota(x, a, n)?.equal(first);
    let g = c.g;
    let (one_, zero) = (g.scalar_of(x.dtype(), 1.0), g.scalar_of(x.dtype(), 0.0));
    one(g.where_(hit, one_, zero))
}

/// `Trilu`: the upper (`j − i ≥ k`) or lower (`j − i ≤ k`) triangle of the last two axes, the
/// rest zero; `k` a constant.
pub(super) fn trilu<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = c.t(0)?;
    let r = x.rank();
    if r < 2 {
        return Err(format!("needs rank 2 or more, got {}", x.shape()));
    }
    let k = if c.has(1) {
        c.s(1, "k")?.scalar_f64()? as i64
    } else {
        0
    };
    let upper = c.int("upper", 1) != 0;
    let (n, m) = (fixed(x, r - 2)?, fixed(x, r - 1)?);
    let mask: Vec<bool> = (0..n as i64)
        .flat_map(|i| (0..m as i64).map(move |j| if upper { j - i >= k } else { j - i <= k }))
        .collect();
    let g = c.g;
    let mask = g.constant(Array::new([n, m], mask).map_err(|e| e.to_string())?);
    one(g.where_(mask, x, g.scalar_of(x.dtype(), 0.0)))
}

/// `Range(start, limit, delta)` on constants: `start + i·delta` for
/// `i < max(⌈(limit − start)/delta⌉, 0)`, in the inputs' type.
pub(super) fn range<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let (s, l, d) = (c.s(0, "start")?, c.s(1, "limit")?, c.s(2, "delta")?);
    let dtype = s.dtype;
    let data = match (&s.data, &l.data, &d.data) {
        (SData::Int(_), SData::Int(_), SData::Int(_)) => {
            let (s, l, d) = (
                static_ints(&s, "start")?[0],
                static_ints(&l, "limit")?[0],
                static_ints(&d, "delta")?[0],
            );
            if d == 0 {
                return Err("delta must not be 0".into());
            }
            // Exact in i128 (`l - s` overflows i64 at the extremes, and f64 rounds past
            // 2^53): n = ceil((l - s) / d), at least 0.
            let (span, step) = (i128::from(l) - i128::from(s), i128::from(d));
            let n = (span / step + i128::from(span % step != 0 && (span < 0) == (step < 0))).max(0);
            if n > 1 << 24 {
                return Err(format!("{n} elements are too many for a constant"));
            }
            // Each value lies in [s, l) or (l, s], so it fits the i64 it is stored as.
            SData::Int((0..n).map(|i| (i128::from(s) + i * step) as i64).collect())
        }
        _ => {
            let (s, l, d) = (s.scalar_f64()?, l.scalar_f64()?, d.scalar_f64()?);
            if d == 0.0 || !d.is_finite() {
                return Err("delta must be finite and not 0".into());
            }
            let n = ((l - s) / d).ceil().max(0.0);
            if n > (1 << 24) as f64 {
                return Err(format!("{n} elements are too many for a constant"));
            }
            let v: Vec<f64> = (0..n as usize).map(|i| s + i as f64 * d).collect();
            let a = Array::from_f64(
                kiln_dtype(dtype).ok_or("the inputs' type is not one kiln has")?,
                vec![v.len()],
                v,
            );
            Static::from_array(&a).data
        }
    };
    let len = match &data {
        SData::Int(v) => v.len(),
        SData::F32(v) => v.len(),
        SData::F64(v) => v.len(),
    };
    Ok(vec![Val::S(Static {
        dtype,
        dims: vec![len],
        data,
    })])
}

/// `EyeLike`: ones on diagonal `k` of a 2-D shape, a constant of the input's type (or `dtype`).
pub(super) fn eye_like<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let (dims, from) = match c.val(0)? {
        Val::T(t) => (t.shape(), onnx_code(t.dtype())),
        Val::S(s) => (Shape::fixed(&s.dims), s.dtype),
    };
    let to = c.attr("dtype").and_then(|a| a.i).map_or(from, |v| v as i32);
    let dt = kiln_dtype(to).ok_or("the output type is not one kiln has")?;
    let (Some(n), Some(m), 2) = (
        dims.dims().first().and_then(|d| d.fixed()),
        dims.dims().get(1).and_then(|d| d.fixed()),
        dims.rank(),
    ) else {
        return Err(format!("needs a 2-D input of known sizes, got {dims}"));
    };
    crate::shape::checked_numel(&[n, m])
        .filter(|&e| e <= 1 << 26)
        .ok_or_else(|| format!("{dims} is too large for a constant"))?;
    let k = c.int("k", 0);
    let v: Vec<f64> = (0..n as i64)
        .flat_map(|i| (0..m as i64).map(move |j| (j - i == k) as i64 as f64))
        .collect();
    Ok(vec![Val::S(Static::from_array(&Array::from_f64(
        dt,
        vec![n, m],
        v,
    )))])
}

/// `Tile` with constant repeats: copies concatenated along each axis.
pub(super) fn tile<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let mut x = c.t(0)?;
    let reps = static_ints(&c.s(1, "repeats")?, "repeats")?;
    if reps.len() != x.rank() || reps.iter().any(|&r| !(1..=4096).contains(&r)) {
        return Err(format!(
            "repeats {reps:?} must hold one value from 1 to 4096 per axis"
        ));
    }
    for (a, &r) in reps.iter().enumerate() {
        if r > 1 {
            if x.shape().dims()[a] == Dim::Batch {
                return Err("cannot tile the open batch axis".into());
            }
            x = c.g.concat(&vec![x; r as usize], a as isize);
        }
    }
    one(x)
}

/// `DepthToSpace` (`DCR` or `CRD`) and `SpaceToDepth` on NCHW: a reshape, a permute and a
/// reshape.
pub(super) fn depth_space<'g>(c: &mut Ctx<'_, 'g>, to_space: bool) -> Built<'g> {
    let x = c.t(0)?;
    let b = usize::try_from(c.int("blocksize", 0))
        .ok()
        .filter(|&b| b > 0)
        .ok_or("blocksize must be positive")?;
    if x.rank() != 4 {
        return Err(format!("needs an NCHW input, got {}", x.shape()));
    }
    let n = x.shape().dims()[0];
    let (ch, h, w) = (fixed(x, 1)?, fixed(x, 2)?, fixed(x, 3)?);
    let f = |v: &[usize]| -> Shape {
        let mut d = vec![n];
        d.extend(v.iter().map(|&s| Dim::Fixed(s)));
        Shape(d.into())
    };
    if to_space {
        if ch % (b * b) != 0 {
            return Err(format!("{ch} channels do not split into {b}×{b} blocks"));
        }
        let co = ch / (b * b);
        let crd = c.string("mode").as_deref() == Some("CRD");
        let (dims, perm) = if crd {
            ([co, b, b, h, w], [0, 1, 4, 2, 5, 3])
        } else {
            ([b, b, co, h, w], [0, 3, 4, 1, 5, 2])
        };
        let y = x.reshape(f(&dims)).permute(&perm);
        one(y.reshape(f(&[co, h * b, w * b])))
    } else {
        if h % b != 0 || w % b != 0 {
            return Err(format!("{h}×{w} does not split into {b}×{b} blocks"));
        }
        // SpaceToDepth-28 adds `mode`; DCR (the default) puts the block offsets first.
        let perm = if c.string("mode").as_deref() == Some("CRD") {
            [0, 1, 3, 5, 2, 4]
        } else {
            [0, 3, 5, 1, 2, 4]
        };
        let y = x.reshape(f(&[ch, h / b, b, w / b, b])).permute(&perm);
        one(y.reshape(f(&[ch * b * b, h / b, w / b])))
    }
}
