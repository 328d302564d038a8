//! Movement ops: Identity, Dropout, Flatten, Reshape, Transpose, Concat, Split, Slice,
//! Squeeze/Unsqueeze, Expand, Gather (Pad is in `pad.rs`) (the import-time values are in `consts.rs`).
//!
//! Where every operand is known at import (a shape computation such as PyTorch's
//! `Shape → Gather → Unsqueeze → Concat` before a `Reshape`), the op folds into a new
//! [`Static`] instead of adding nodes; the open batch dimension travels through those folds
//! as [`BATCH`] and becomes `?` again in `Reshape`.

use super::{axis, one, static_ints, Built};
use crate::array::Array;
use crate::dtype::DType;
use crate::graph::Tensor;
use crate::onnx::import::{Ctx, Val};
use crate::onnx::tensor::{SData, Static, BATCH};
use crate::shape::{broadcast_shapes, Dim, Shape};

/// Gathers above this many indices are refused (each index is a slice node).
pub(super) const MAX_GATHER: usize = 4096;

/// The dims of a value (a static's are all known).
pub(super) fn dims_of(v: &Val<'_>) -> Vec<Dim> {
    match v {
        Val::T(t) => t.shape().0.to_vec(),
        Val::S(s) => s.dims.iter().map(|&d| Dim::Fixed(d)).collect(),
    }
}

fn tensor_of<'g>(c: &mut Ctx<'_, 'g>, i: usize) -> Result<Tensor<'g>, String> {
    c.t(i)
}

/// A static with new dims and the same values.
fn restatic(s: Static, dims: Vec<Dim>) -> Result<Static, String> {
    let dims = dims
        .iter()
        .map(|d| {
            d.fixed()
                .ok_or("a constant cannot have the open batch size")
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Static { dims, ..s })
}

pub(super) fn identity<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    Ok(vec![c.val(0)?])
}

/// `Dropout`: at inference the identity, and an all-true mask if asked for; in training
/// mode [`training_dropout`].
pub(super) fn dropout<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = c.t(0)?;
    // `training_mode` (from version 12): absent or a constant false is the inference form;
    // a constant true or a run-time switch builds the training form.
    let on = if c.version >= 12 && c.has(2) {
        match c.val(2)? {
            Val::S(s) if s.as_ints()?.iter().all(|&v| v == 0) => None,
            Val::S(_) => Some(c.g.constant(Array::scalar(true))),
            Val::T(t) if t.dtype() == DType::Bool && t.rank() == 0 => Some(t),
            Val::T(t) => {
                return Err(format!(
                    "training_mode must be a bool scalar, got {}",
                    t.ty()
                ))
            }
        }
    } else {
        None
    };
    let Some(on) = on else {
        let mut out = vec![Val::T(x)];
        if c.wants_output(1) {
            out.push(Val::T(true_like(c, x)));
        }
        return Ok(out);
    };
    training_dropout(c, x, on)
}

/// Dropout's training form, as ONNX's reference: `keep = u ≥ ratio` for `u` uniform on
/// `[0, 1)`, `y = keep · x · 1/(1 − ratio)`, the mask `keep`; `on` switches between it and
/// the identity (mask all true). The numbers are kiln's Philox stream under the node's
/// `seed` (0 when absent), not numpy's, so only their distribution matches the reference.
fn training_dropout<'g>(c: &mut Ctx<'_, 'g>, x0: Tensor<'g>, on: Tensor<'g>) -> Built<'g> {
    let x = super::widen(x0);
    super::float_only(x)?;
    let ratio = if c.has(1) {
        match c.val(1)? {
            Val::S(s) => {
                let r = s.scalar_f64()?;
                if !(0.0..1.0).contains(&r) {
                    return Err(format!("ratio = {r} is outside [0, 1)"));
                }
                c.g.scalar_of(DType::F32, r)
            }
            Val::T(t) if t.rank() == 0 && (t.dtype().is_float() || t.dtype().is_half()) => {
                t.cast(DType::F32)
            }
            Val::T(t) => return Err(format!("ratio must be a float scalar, got {}", t.ty())),
        }
    } else {
        c.g.scalar_of(DType::F32, 0.5)
    };
    let seed = c.int("seed", 0) as u64;
    let u = c.g.random_uniform(x.shape(), 0.0, 1.0, seed);
    let keep = u.greater_equal(ratio);
    let scale = (c.g.scalar_of(x.dtype(), 1.0) - ratio.cast(x.dtype())).recip();
    let kept = keep.select(x * scale, 0.0);
    let mut out = vec![Val::T(super::restore(on.select(kept, x), x0.dtype()))];
    if c.wants_output(1) {
        out.push(Val::T(on.select(keep, true_like(c, x))));
    }
    Ok(out)
}

fn true_like<'g>(c: &Ctx<'_, 'g>, x: Tensor<'g>) -> Tensor<'g> {
    c.g.constant(Array::scalar(true)).broadcast_to(x.shape())
}

/// The product of `dims` as one dim: `?` only if every other is 1.
fn product(dims: &[Dim]) -> Result<Dim, String> {
    let fixed: usize = dims.iter().filter_map(|d| d.fixed()).product();
    match dims.iter().filter(|d| d.fixed().is_none()).count() {
        0 => Ok(Dim::Fixed(fixed)),
        1 if fixed == 1 => Ok(Dim::Batch),
        _ => Err(format!(
            "merging {:?} with the open batch size gives a multiple of it, which kiln's shapes cannot hold",
            dims
        )),
    }
}

pub(super) fn flatten<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = c.val(0)?;
    let d = dims_of(&x);
    let a = c.int("axis", 1);
    let a = if a == d.len() as i64 {
        d.len()
    } else {
        axis(a, d.len())?
    };
    let shape = vec![product(&d[..a])?, product(&d[a..])?];
    reshape_to(x, shape)
}

fn reshape_to(x: Val<'_>, shape: Vec<Dim>) -> Built<'_> {
    match x {
        Val::S(s) => Ok(vec![Val::S(restatic(s, shape)?)]),
        Val::T(t) => one(t.reshape(Shape(shape.into()))),
    }
}

/// `Reshape`: `0` copies the input's size (unless `allowzero`), one `-1` is inferred, and a
/// `?` from a folded `Shape` stays `?`.
pub(super) fn reshape<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = c.val(0)?;
    let target = static_ints(&c.s(1, "shape")?, "shape")?;
    let allowzero = c.version >= 14 && c.int("allowzero", 0) != 0;
    let d = dims_of(&x);
    let mut out = vec![];
    let mut infer = None;
    for (i, &v) in target.iter().enumerate() {
        out.push(match v {
            BATCH => Dim::Batch,
            0 if !allowzero => *d
                .get(i)
                .ok_or_else(|| format!("shape {target:?}: 0 at axis {i}, past the input's rank"))?,
            -1 if infer.is_none() => {
                infer = Some(i);
                Dim::Fixed(1)
            }
            v if v >= 0 => Dim::Fixed(v as usize),
            _ => return Err(format!("shape {target:?} is not a valid target")),
        });
    }
    if let Some(i) = infer {
        let count = |ds: &[Dim]| -> (usize, usize) {
            (
                ds.iter().filter_map(|d| d.fixed()).product(),
                ds.iter().filter(|d| d.fixed().is_none()).count(),
            )
        };
        let ((p, pb), (q, qb)) = (count(&d), count(&out));
        out[i] = match (pb, qb) {
            (1, 0) if q != 0 && p == q => Dim::Batch,
            (a, b) if a == b && q != 0 && p % q == 0 => Dim::Fixed(p / q),
            _ => {
                return Err(format!(
                    "shape {target:?} does not fit an input of shape {:?}",
                    d
                ))
            }
        };
    }
    reshape_to(x, out)
}

pub(super) fn transpose<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = tensor_of(c, 0)?;
    let r = x.rank();
    let perm: Vec<usize> = match c.ints("perm") {
        Some(p) => p.iter().map(|&a| axis(a, r)).collect::<Result<_, _>>()?,
        None => (0..r).rev().collect(),
    };
    one(x.permute(&perm))
}

pub(super) fn concat<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let n = c.n_inputs();
    let vals = (0..n)
        .filter(|&i| c.has(i))
        .map(|i| c.val(i))
        .collect::<Result<Vec<_>, _>>()?;
    let statics: Vec<&Static> = vals
        .iter()
        .filter_map(|v| match v {
            Val::S(s) => Some(s),
            Val::T(_) => None,
        })
        .collect();
    if statics.len() == vals.len() && statics.iter().all(|s| s.dims.len() == 1) {
        let mut all = vec![];
        for s in &statics {
            all.extend(s.as_ints()?);
        }
        let mut s = Static::ints(all);
        s.dtype = statics[0].dtype;
        if matches!(statics[0].data, SData::Int(_)) {
            return Ok(vec![Val::S(s)]);
        }
    }
    let mut ts = vec![];
    for i in 0..n {
        if c.has(i) {
            ts.push(c.t(i)?);
        }
    }
    let r = ts.first().map_or(1, |t| t.rank());
    let a = axis(c.int("axis", 0), r)?;
    one(c.g.concat(&ts, a as isize))
}

/// `x`'s slices at `idx` along `axis`, in order (runs of consecutive indices are one slice).
pub(super) fn gather_along<'g>(
    x: Tensor<'g>,
    a: usize,
    idx: &[usize],
) -> Result<Tensor<'g>, String> {
    if idx.len() > MAX_GATHER {
        return Err(format!(
            "{} indices: kiln gathers at most {MAX_GATHER}",
            idx.len()
        ));
    }
    let mut parts = vec![];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        while j < idx.len() && idx[j] == idx[j - 1] + 1 {
            j += 1;
        }
        parts.push(x.narrow(a as isize, idx[i], j - i));
        i = j;
    }
    match parts.len() {
        0 => Err("an empty selection is not supported".into()),
        1 => Ok(parts[0]),
        _ => Ok(x.graph().concat(&parts, a as isize)),
    }
}

/// `Split` into equal parts, or the sizes given (attribute before 13, input from 13;
/// `num_outputs` from 18, the last part smaller).
pub(super) fn split<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = c.t(0)?;
    let a = axis(c.int("axis", 0), x.rank())?;
    let len = x.shape().dims()[a]
        .fixed()
        .ok_or("cannot split the open batch axis")?;
    let parts = c.n_outputs();
    let sizes: Vec<usize> = if c.version >= 13 && c.has(1) {
        static_ints(&c.s(1, "split")?, "split")?
            .iter()
            .map(|&v| v.max(0) as usize)
            .collect()
    } else if let Some(s) = c.ints("split").filter(|_| c.version < 13) {
        s.iter().map(|&v| v.max(0) as usize).collect()
    } else if c.version >= 18 && c.attr("num_outputs").is_some() {
        let chunk = len.div_ceil(parts.max(1));
        (0..parts)
            .map(|i| chunk.min(len.saturating_sub(i * chunk)))
            .collect()
    } else if parts > 0 && len % parts == 0 {
        vec![len / parts; parts]
    } else {
        return Err(format!("cannot split {len} into {parts} equal parts"));
    };
    if sizes.iter().sum::<usize>() != len || sizes.len() != parts {
        return Err(format!(
            "split sizes {sizes:?} do not cover {len} in {parts} parts"
        ));
    }
    let mut start = 0;
    let mut out = vec![];
    for s in sizes {
        out.push(Val::T(x.narrow(a as isize, start, s)));
        start += s;
    }
    Ok(out)
}

/// The indices a Slice selects along an axis of `dim` (ONNX's clamping rules, any step).
fn slice_indices(dim: usize, start: i64, end: i64, step: i64) -> Vec<usize> {
    let d = dim as i64;
    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = (norm(start), norm(end));
    let mut out = vec![];
    if step > 0 {
        let (s, e) = (s.clamp(0, d), e.clamp(0, d));
        let mut i = s;
        while i < e {
            out.push(i as usize);
            i += step;
        }
    } else {
        let (s, e) = (s.clamp(0, d - 1), e.clamp(-1, d - 1));
        let mut i = s;
        while i > e {
            out.push(i as usize);
            i += step;
        }
    }
    out
}

pub(super) fn slice<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = c.val(0)?;
    let d = dims_of(&x);
    let starts = static_ints(&c.s(1, "starts")?, "starts")?;
    let ends = static_ints(&c.s(2, "ends")?, "ends")?;
    let axes: Vec<usize> = if c.has(3) {
        let a = static_ints(&c.s(3, "axes")?, "axes")?;
        a.iter()
            .map(|&v| axis(v, d.len()))
            .collect::<Result<_, _>>()?
    } else {
        (0..starts.len()).collect()
    };
    let steps = if c.has(4) {
        static_ints(&c.s(4, "steps")?, "steps")?
    } else {
        vec![1; starts.len()]
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps must have one value per sliced axis".into());
    }
    if let Val::S(s) = &x {
        if s.dims.len() == 1 && axes == [0] && steps[0] != 0 {
            let v = s.as_ints()?;
            let idx = slice_indices(v.len(), starts[0], ends[0], steps[0]);
            let mut out = Static::ints(idx.iter().map(|&i| v[i]).collect());
            out.dtype = s.dtype;
            if matches!(s.data, SData::Int(_)) {
                return Ok(vec![Val::S(out)]);
            }
        }
    }
    let mut t = match x {
        Val::T(t) => t,
        Val::S(_) => c.t(0)?,
    };
    for k in 0..axes.len() {
        let a = axes[k];
        if steps[k] == 0 {
            return Err("a step of 0 is not allowed".into());
        }
        let Some(dim) = d[a].fixed() else {
            if starts[k] == 0 && ends[k] >= i32::MAX as i64 && steps[k] == 1 {
                continue; // the whole open axis
            }
            return Err(format!(
                "axis {a} is the open batch axis, which can only be taken whole"
            ));
        };
        let idx = slice_indices(dim, starts[k], ends[k], steps[k]);
        let contiguous = idx.windows(2).all(|w| w[1] == w[0] + 1);
        t = if idx.is_empty() {
            t.narrow(a as isize, 0, 0)
        } else if contiguous {
            t.narrow(a as isize, idx[0], idx.len())
        } else {
            gather_along(t, a, &idx)?
        };
    }
    one(t)
}

/// `Squeeze` (or `Unsqueeze` with `insert`): axes an attribute before 13, an input from 13.
pub(super) fn squeeze<'g>(c: &mut Ctx<'_, 'g>, insert: bool) -> Built<'g> {
    let x = c.val(0)?;
    let axes = if c.version >= 13 {
        if c.has(1) {
            Some(static_ints(&c.s(1, "axes")?, "axes")?)
        } else {
            None
        }
    } else {
        c.ints("axes")
    };
    let mut d = dims_of(&x);
    if insert {
        let axes = axes.ok_or("axes are required")?;
        let r = d.len() + axes.len();
        let mut norm = axes
            .iter()
            .map(|&a| axis(a, r))
            .collect::<Result<Vec<_>, _>>()?;
        norm.sort_unstable();
        for a in norm {
            d.insert(a, Dim::Fixed(1));
        }
    } else {
        let r = d.len();
        let drop: Vec<usize> = match axes {
            Some(a) => a.iter().map(|&v| axis(v, r)).collect::<Result<_, _>>()?,
            None => (0..r).filter(|&i| d[i] == Dim::Fixed(1)).collect(),
        };
        if let Some(&a) = drop.iter().find(|&&a| d[a] != Dim::Fixed(1)) {
            return Err(format!("axis {a} has size {}, not 1", d[a]));
        }
        d = (0..r).filter(|i| !drop.contains(i)).map(|i| d[i]).collect();
    }
    reshape_to(x, d)
}

pub(super) fn expand<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = c.t(0)?;
    let s = static_ints(&c.s(1, "shape")?, "shape")?;
    let target: Vec<Dim> = s
        .iter()
        .map(|&v| {
            if v == BATCH {
                Ok(Dim::Batch)
            } else {
                usize::try_from(v)
                    .map(Dim::Fixed)
                    .map_err(|_| format!("shape {s:?}"))
            }
        })
        .collect::<Result<_, _>>()?;
    let shape = broadcast_shapes(&x.shape(), &Shape(target.into()))?;
    one(x.broadcast_to(shape))
}

/// `Gather` with indices known at import: a fold on a static, slices and a concat on a
/// tensor.
pub(super) fn gather<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = c.val(0)?;
    let d = dims_of(&x);
    let a = axis(c.int("axis", 0), d.len())?;
    let ind = c.s(1, "indices")?;
    let len = d[a]
        .fixed()
        .ok_or("cannot gather along the open batch axis")?;
    let idx = static_ints(&ind, "indices")?
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + len as i64 } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| j < len)
                .ok_or_else(|| format!("index {i} is out of range for size {len}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out: Vec<Dim> = d[..a].to_vec();
    out.extend(ind.dims.iter().map(|&n| Dim::Fixed(n)));
    out.extend_from_slice(&d[a + 1..]);
    if let Val::S(s) = &x {
        if s.dims.len() == 1 {
            let v = match &s.data {
                SData::Int(v) => SData::Int(idx.iter().map(|&i| v[i]).collect()),
                SData::F32(v) => SData::F32(idx.iter().map(|&i| v[i]).collect()),
                SData::F64(v) => SData::F64(idx.iter().map(|&i| v[i]).collect()),
            };
            return Ok(vec![Val::S(Static {
                dtype: s.dtype,
                dims: ind.dims.clone(),
                data: v,
            })]);
        }
    }
    let t = match x {
        Val::T(t) => t,
        Val::S(_) => c.t(0)?,
    };
    let g = gather_along(t, a, &idx)?;
    one(g.reshape(Shape(out.into())))
}
