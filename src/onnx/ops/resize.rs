//! `Resize` (11 and later) with constant scales or sizes: nearest, linear and cubic, every
//! coordinate transformation, antialias, `exclude_outside`, `axes` and
//! `keep_aspect_ratio_policy`.
//!
//! Resizing is separable, and with the output size known at import every output position's
//! source taps and weights are numbers: this file computes them as ONNX's reference
//! (`onnx/reference/ops/op_resize.py`, `_interpolate_1d_along_axis`) does, in `f64`, and the
//! graph is, per resized axis, a sum over taps of the input gathered at the tap's indices times
//! a constant weight column. A nearest resize is the gather of its one tap (the reference
//! multiplies the other tap by 0, which only differs where that neighbour is infinite).

use super::shape::gather_along;
use super::{float_only, one, restore, widen, Built};
use crate::array::Array;
use crate::graph::Tensor;
use crate::onnx::import::Ctx;
use crate::shape::Dim;

/// The per-position weights of a mode: `(ratio, scale) → coefficients`.
type Coeffs = Box<dyn Fn(f64, f64) -> Vec<f64>>;

fn coeffs_for(c: &Ctx<'_, '_>, mode: &str, antialias: bool) -> Result<Coeffs, String> {
    let a = c.float("cubic_coeff_a", -0.75) as f64;
    Ok(match mode {
        "nearest" => {
            if antialias {
                return Err("antialias with mode nearest is not an ONNX combination".into());
            }
            let nm = c
                .string("nearest_mode")
                .unwrap_or_else(|| "round_prefer_floor".into());
            if !["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"].contains(&nm.as_str())
            {
                return Err(format!("nearest_mode = {nm:?} is not an ONNX value"));
            }
            Box::new(move |r: f64, _: f64| {
                let b = |x: bool| x as i64 as f64;
                if r.fract() == 0.0 {
                    return vec![0.0, 1.0];
                }
                match nm.as_str() {
                    "round_prefer_floor" => vec![b(r <= 0.5), b(r > 0.5)],
                    "round_prefer_ceil" => vec![b(r < 0.5), b(r >= 0.5)],
                    "floor" => vec![1.0, 0.0],
                    _ => vec![0.0, 1.0],
                }
            })
        }
        "linear" if antialias => Box::new(|r: f64, s: f64| {
            let s = s.min(1.0);
            let start = ((-1.0 / s).floor() + 1.0) as i64;
            let foot = 2 - 2 * start;
            let v: Vec<f64> = (start..start + foot)
                .map(|i| (1.0 - ((i as f64 - r) * s).abs()).clamp(0.0, 1.0))
                .collect();
            let sum: f64 = v.iter().sum();
            v.iter().map(|x| x / sum).collect()
        }),
        "linear" => Box::new(|r: f64, _: f64| vec![1.0 - r, r]),
        "cubic" if antialias => Box::new(move |r: f64, s: f64| {
            let s = s.min(1.0);
            let k = |x: f64| {
                let x = x.abs();
                let (x2, x3) = (x * x, x * x * x);
                if x <= 1.0 {
                    (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
                } else if x < 2.0 {
                    a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
                } else {
                    0.0
                }
            };
            let start = ((-2.0 / s).floor() + 1.0) as i64;
            let v: Vec<f64> = (start..2 - start).map(|i| k(s * (i as f64 - r))).collect();
            let sum: f64 = v.iter().sum();
            v.iter().map(|x| x / sum).collect()
        }),
        "cubic" => Box::new(move |r: f64, _: f64| {
            let q = 1.0 - r;
            vec![
                ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
                ((a * (q + 1.0) - 5.0 * a) * (q + 1.0) + 8.0 * a) * (q + 1.0) - 4.0 * a,
            ]
        }),
        m => return Err(format!("mode = {m:?} is not an ONNX value")),
    })
}

/// One axis's resampling: for each output position, its taps (clamped input indices) and
/// weights, and whether it is extrapolated (`tf_crop_and_resize` outside the input).
struct AxisPlan {
    idx: Vec<Vec<usize>>,
    w: Vec<Vec<f64>>,
    outside: Vec<bool>,
}

/// The source coordinate of output position `y` (the reference's `_compute_x_ori`).
fn source_x(ctm: &str, y: f64, scale: f64, inw: usize, out_int: usize, roi: (f64, f64)) -> f64 {
    let inw_f = inw as f64;
    let outw = scale * inw_f;
    match ctm {
        "align_corners" if outw == 1.0 => 0.0,
        "align_corners" => y * (inw_f - 1.0) / (outw - 1.0),
        "asymmetric" => y / scale,
        "tf_crop_and_resize" => {
            let x = if outw == 1.0 {
                (roi.1 - roi.0) * (inw_f - 1.0) / 2.0
            } else {
                y * (roi.1 - roi.0) * (inw_f - 1.0) / (outw - 1.0)
            };
            x + roi.0 * (inw_f - 1.0)
        }
        "pytorch_half_pixel" if outw == 1.0 => -0.5,
        "half_pixel_symmetric" => {
            let adjustment = out_int as f64 / outw;
            let offset = inw_f / 2.0 * (1.0 - adjustment);
            offset + (y + 0.5) / scale - 0.5
        }
        _ => (y + 0.5) / scale - 0.5,
    }
}

fn plan_axis(
    ctm: &str,
    f: &Coeffs,
    scale: f64,
    inw: usize,
    out: usize,
    roi: (f64, f64),
    exclude_outside: bool,
) -> AxisPlan {
    let mut p = AxisPlan {
        idx: vec![],
        w: vec![],
        outside: vec![],
    };
    for o in 0..out {
        let x = source_x(ctm, o as f64, scale, inw, out, roi);
        p.outside
            .push(ctm == "tf_crop_and_resize" && (x < 0.0 || x > inw as f64 - 1.0));
        let ratio = if x == x.floor() { 1.0 } else { x - x.floor() };
        let mut w = f(ratio, scale);
        let n = w.len() as i64;
        let pad = (n + 1) / 2;
        let xp = x + pad as f64;
        let pp = xp.floor() as i64;
        let frac = xp - pp as f64;
        let off = if n % 2 == 0 {
            if frac == 0.0 {
                -(n / 2)
            } else {
                -(n / 2) + 1
            }
        } else if frac <= 0.5 {
            -((n - 1) / 2)
        } else {
            -((n - 1) / 2) + 1
        };
        let taps: Vec<i64> = (0..n).map(|k| pp + off + k - pad).collect();
        if exclude_outside {
            for (wk, &t) in w.iter_mut().zip(&taps) {
                if t < 0 || t >= inw as i64 {
                    *wk = 0.0;
                }
            }
            let s: f64 = w.iter().sum();
            let s = if s == 0.0 { 1.0 } else { s };
            w.iter_mut().for_each(|v| *v /= s);
        }
        p.idx.push(
            taps.iter()
                .map(|&t| t.clamp(0, inw as i64 - 1) as usize)
                .collect(),
        );
        p.w.push(w);
    }
    p
}

/// Applies a plan along axis `a` of `x` (a float tensor); extrapolated positions get `ext`.
fn apply<'g>(
    x: Tensor<'g>,
    a: usize,
    p: &AxisPlan,
    nearest: bool,
    ext: f64,
) -> Result<Tensor<'g>, String> {
    let g = x.graph();
    let out = p.idx.len();
    let col = |v: Vec<f64>| {
        let mut dims = vec![1usize; x.rank() - a];
        dims[0] = out;
        g.constant(Array::from_f64(x.dtype(), dims, v))
    };
    let y = if nearest {
        let pick: Vec<usize> = (0..out)
            .map(|o| {
                let k = p.w[o].iter().position(|&w| w == 1.0).unwrap_or(0);
                p.idx[o][k]
            })
            .collect();
        gather_along(x, a, &pick)?
    } else {
        let n = p.w[0].len();
        let mut acc: Option<Tensor<'g>> = None;
        for k in 0..n {
            let idx: Vec<usize> = p.idx.iter().map(|t| t[k]).collect();
            let term = gather_along(x, a, &idx)? * col(p.w.iter().map(|w| w[k]).collect());
            acc = Some(match acc {
                Some(s) => s + term,
                None => term,
            });
        }
        acc.ok_or("a resize without taps")?
    };
    if p.outside.iter().any(|&o| o) {
        let ev = p.outside.iter().map(|&o| o as i64 as f64).collect();
        let mask = col(ev).greater(0.5);
        return Ok(g.where_(mask, g.scalar_of(x.dtype(), ext), y));
    }
    Ok(y)
}

/// `Resize` from opset 11.
pub(super) fn resize<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x0 = c.t(0)?;
    let x = widen(x0);
    float_only(x)?;
    let r = x.rank();
    let dims: Vec<usize> = x
        .shape()
        .dims()
        .iter()
        .map(|d| d.fixed().ok_or("the input's sizes must be known"))
        .collect::<Result<_, _>>()?;
    let axes: Vec<usize> = match c.ints("axes").filter(|_| c.version >= 18) {
        Some(a) => a
            .iter()
            .map(|&v| super::axis(v, r))
            .collect::<Result<_, _>>()?,
        None => (0..r).collect(),
    };
    let given = |i: usize, what: &str| -> Result<Option<Vec<f64>>, String> {
        if !c.has(i) {
            return Ok(None);
        }
        let v = c.s(i, what)?.as_f64()?;
        Ok(if v.is_empty() { None } else { Some(v) })
    };
    let roi_in = given(1, "roi")?;
    let scales_in = given(2, "scales")?;
    let sizes_in = given(3, "sizes")?;
    let n = axes.len();
    let mut scale = vec![1.0f64; r];
    let mut out: Vec<usize> = dims.clone();
    match (scales_in, sizes_in) {
        (Some(s), None) if s.len() == n => {
            for (k, &a) in axes.iter().enumerate() {
                scale[a] = s[k];
                out[a] = (s[k] * dims[a] as f64) as usize;
            }
        }
        (None, Some(s)) if s.len() == n => {
            for (k, &a) in axes.iter().enumerate() {
                scale[a] = s[k] / dims[a] as f64;
                out[a] = s[k] as usize;
            }
            let policy = c
                .string("keep_aspect_ratio_policy")
                .unwrap_or_else(|| "stretch".into());
            if policy != "stretch" && c.version >= 18 {
                let pick = axes.iter().map(|&a| scale[a]);
                let s = match policy.as_str() {
                    "not_larger" => pick.fold(f64::INFINITY, f64::min),
                    "not_smaller" => pick.fold(f64::NEG_INFINITY, f64::max),
                    p => return Err(format!("keep_aspect_ratio_policy = {p:?}")),
                };
                for &a in &axes {
                    scale[a] = s;
                    out[a] = (s * dims[a] as f64 + 0.5) as usize;
                }
            }
        }
        _ => {
            return Err(format!(
                "needs exactly one of scales and sizes, with {n} values"
            ))
        }
    }
    if scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(format!("scales {scale:?} must be positive"));
    }
    let ctm = c
        .string("coordinate_transformation_mode")
        .unwrap_or_else(|| "half_pixel".into());
    let known = [
        "half_pixel",
        "half_pixel_symmetric",
        "pytorch_half_pixel",
        "align_corners",
        "asymmetric",
        "tf_crop_and_resize",
    ];
    if !known.contains(&ctm.as_str()) {
        return Err(format!("coordinate_transformation_mode = {ctm:?}"));
    }
    let mode = c.string("mode").unwrap_or_else(|| "nearest".into());
    let antialias = c.version >= 18 && c.int("antialias", 0) != 0;
    let f = coeffs_for(c, &mode, antialias)?;
    let exclude = c.int("exclude_outside", 0) != 0;
    let extrapolation = c.float("extrapolation_value", 0.0) as f64;
    let mut roi = vec![(0.0, 1.0); r];
    if ctm == "tf_crop_and_resize" {
        let v = roi_in.ok_or("tf_crop_and_resize needs roi")?;
        if v.len() != 2 * n {
            return Err(format!("roi has {} values, expected {}", v.len(), 2 * n));
        }
        for (k, &a) in axes.iter().enumerate() {
            roi[a] = (v[k], v[n + k]);
        }
    }
    let mut y = x;
    for &a in &axes {
        let identity = (scale[a] - 1.0).abs() < 1e-9
            && out[a] == dims[a]
            && (roi[a].0.abs() < 1e-9 && (roi[a].1 - 1.0).abs() < 1e-9);
        if identity {
            continue;
        }
        if out[a] == 0 || out[a] > 1 << 16 {
            return Err(format!("an output size of {} is not supported", out[a]));
        }
        let p = plan_axis(&ctm, &f, scale[a], dims[a], out[a], roi[a], exclude);
        y = apply(y, a, &p, mode == "nearest", extrapolation)?;
    }
    debug_assert!(y.shape().dims().iter().all(|d| *d != Dim::Batch));
    one(restore(y, x0.dtype()))
}
