//! The layer ops: Conv, ConvTranspose, BatchNormalization, pooling, Gemm, MatMul, Softmax,
//! LRN. ONNX images are NCHW with OIHW filters; the 2-D builders take that format directly,
//! and a 1-D op is lifted to 2-D with a height of 1 (a reshape, which costs nothing).

use super::nn3d::{conv3d, conv_transpose3d, pool3d, recount_ceil_windows, Geom3};
use super::pool_index::max_pool_with_indices;
use super::{axis, float_only, one, restore, widen, Built};
use crate::dtype::DType;
use crate::graph::op::{ConvKind, DataFormat, Padding, Window2d};
use crate::graph::{Conv2dOptions, Tensor};
use crate::onnx::import::{Ctx, Val};
use crate::shape::{broadcast_shapes, Dim, Shape};
use crate::Pool2dOptions;

/// The spatial sizes of an NC... tensor, all known; `three_d` allows 3-D windows.
fn spatial(x: Tensor<'_>, three_d: bool) -> Result<Vec<usize>, String> {
    let s = x.shape();
    let top = if three_d { 5 } else { 4 };
    if !(3..=top).contains(&s.rank()) {
        return Err(format!(
            "kiln imports {} windows (a rank-3 to rank-{top} NC.. input), got {}",
            if three_d {
                "1-D, 2-D and 3-D"
            } else {
                "1-D and 2-D"
            },
            s
        ));
    }
    s.dims()[2..]
        .iter()
        .map(|d| {
            d.fixed()
                .ok_or_else(|| format!("spatial sizes must be known, got {s}"))
        })
        .collect()
}

/// A per-axis attribute list of `n` values (default `dflt`), each at least 1.
fn per_axis(c: &Ctx<'_, '_>, name: &str, n: usize, dflt: usize) -> Result<Vec<usize>, String> {
    let v = c.ints(name).unwrap_or_else(|| vec![dflt as i64; n]);
    if v.len() != n || v.iter().any(|&x| x < 1) {
        return Err(format!("{name} = {v:?}: expected {n} values of at least 1"));
    }
    Ok(v.iter().map(|&x| x as usize).collect())
}

/// The explicit `(before, after)` padding per spatial axis, from `auto_pad` and `pads`.
fn window_pads(
    c: &Ctx<'_, '_>,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dil: &[usize],
) -> Result<Vec<(usize, usize)>, String> {
    let n = input.len();
    let auto = c.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    match auto.as_str() {
        "NOTSET" => {
            let p = c.ints("pads").unwrap_or_else(|| vec![0; 2 * n]);
            if p.len() != 2 * n || p.iter().any(|&x| x < 0) {
                return Err(format!(
                    "pads = {p:?}: expected {} values of at least 0",
                    2 * n
                ));
            }
            Ok((0..n).map(|a| (p[a] as usize, p[a + n] as usize)).collect())
        }
        "VALID" => Ok(vec![(0, 0); n]),
        "SAME_UPPER" | "SAME_LOWER" => Ok((0..n)
            .map(|a| {
                let out = input[a].div_ceil(strides[a]);
                let ext = dil[a] * (kernel[a] - 1) + 1;
                let total = ((out - 1) * strides[a] + ext).saturating_sub(input[a]);
                let small = total / 2;
                if auto == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            })
            .collect()),
        o => Err(format!("auto_pad = {o:?} is not an ONNX value")),
    }
}

/// Inserts a height of 1 at axis 2 (1-D → 2-D), or returns `x` for 2-D.
fn lift<'g>(x: Tensor<'g>, one_d: bool) -> Tensor<'g> {
    if !one_d {
        return x;
    }
    let mut d = x.shape().0.clone();
    d.insert(2, Dim::Fixed(1));
    x.reshape(Shape(d))
}

fn unlift<'g>(y: Tensor<'g>, one_d: bool) -> Tensor<'g> {
    // A builder that failed returns a placeholder of no particular rank (the error is
    // reported after the op): leave it alone.
    if !one_d || y.rank() < 3 {
        return y;
    }
    let mut d = y.shape().0.clone();
    d.remove(2);
    y.reshape(Shape(d))
}

fn two<T: Copy>(v: &[T], one_d: bool, fill: T) -> [T; 2] {
    if one_d {
        [fill, v[0]]
    } else {
        [v[0], v[1]]
    }
}

/// `y + b` with `b` of shape `[C]` along axis 1.
fn add_channel_bias<'g>(y: Tensor<'g>, b: Tensor<'g>) -> Tensor<'g> {
    let mut d = vec![Dim::Fixed(1); y.rank()];
    d[1] = y.shape().dims()[1];
    y + b.reshape(Shape(d.into()))
}

/// `Conv` (1-D, 2-D, and 3-D through `nn3d`; any groups, dilations, `auto_pad`), NCHW/OIHW.
pub(super) fn conv<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let (x0, w) = (c.t(0)?, c.filter(1)?);
    let (x, w) = (widen(x0), widen(w));
    float_only(x)?;
    let input = spatial(x, true)?;
    let n = input.len();
    let ws = w.shape();
    let kernel: Vec<usize> = match c.ints("kernel_shape") {
        Some(k) => k.iter().map(|&v| v.max(0) as usize).collect(),
        None => ws.dims().iter().skip(2).filter_map(|d| d.fixed()).collect(),
    };
    if kernel.len() != n || ws.rank() != n + 2 {
        return Err(format!("the filter {ws} does not fit a {n}-D convolution"));
    }
    let strides = per_axis(c, "strides", n, 1)?;
    let dil = per_axis(c, "dilations", n, 1)?;
    let pads = window_pads(c, &input, &kernel, &strides, &dil)?;
    let groups = usize::try_from(c.int("group", 1)).map_err(|_| "group must be positive")?;
    if n == 3 {
        let geo = Geom3::new(&kernel, &strides, &dil, &pads);
        let mut y = conv3d(x, w, &geo, groups)?;
        if c.has(2) {
            y = add_channel_bias(y, c.t(2)?);
        }
        return one(restore(y, x0.dtype()));
    }
    let one_d = n == 1;
    let opts = Conv2dOptions::new()
        .strides(two(&strides, one_d, 1)[0], two(&strides, one_d, 1)[1])
        .dilations(two(&dil, one_d, 1)[0], two(&dil, one_d, 1)[1])
        .groups(groups)
        .padding(Padding::Explicit(two(&pads, one_d, (0, 0))))
        .format(DataFormat::Nchw);
    let mut y = lift(x, one_d).conv2d(lift(w, one_d), &opts);
    if c.has(2) {
        y = add_channel_bias(y, c.t(2)?);
    }
    one(restore(unlift(y, one_d), x0.dtype()))
}

/// `ConvTranspose` as the input gradient of the convolution it transposes: `x` is that
/// convolution's output gradient, `W` (`[Cin, Cout/groups, k..]`) its OIHW filter.
pub(super) fn conv_transpose<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let (x0, w) = (c.t(0)?, c.t(1)?);
    let (x, w) = (widen(x0), widen(w));
    float_only(x)?;
    let input = spatial(x, true)?;
    let n = input.len();
    let ws = w.shape();
    let kernel: Vec<usize> = ws.dims().iter().skip(2).filter_map(|d| d.fixed()).collect();
    if kernel.len() != n || ws.rank() != n + 2 {
        return Err(format!(
            "the filter {ws} does not fit a {n}-D transposed convolution"
        ));
    }
    let strides = per_axis(c, "strides", n, 1)?;
    let dil = per_axis(c, "dilations", n, 1)?;
    let groups = usize::try_from(c.int("group", 1)).map_err(|_| "group must be positive")?;
    let out_pad = c.ints("output_padding").unwrap_or_else(|| vec![0; n]);
    if out_pad.len() != n
        || (0..n).any(|a| out_pad[a] < 0 || out_pad[a] as usize >= strides[a].max(dil[a]))
    {
        return Err(format!(
            "output_padding = {out_pad:?} must be {n} values below the strides"
        ));
    }
    let ext: Vec<usize> = (0..n).map(|a| dil[a] * (kernel[a] - 1) + 1).collect();
    let auto = c.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    let full = |a: usize| strides[a] * (input[a] - 1) + out_pad[a] as usize + ext[a];
    let (out, pads): (Vec<usize>, Vec<(usize, usize)>) =
        match (c.ints("output_shape"), auto.as_str()) {
            (Some(os), _) if os.len() == n => {
                // ONNX's rule, with Python's floor division: a negative end pad (an output
                // larger than the full one) is extra rows at the end that no tap reaches.
                let mut pads = vec![];
                for a in 0..n {
                    let total = full(a) as i64 - os[a];
                    let half = total.div_euclid(2);
                    let (lo, hi) = if auto == "SAME_UPPER" {
                        (half, total - half)
                    } else {
                        (total - half, half)
                    };
                    if lo < 0 || os[a] < 1 {
                        return Err(format!(
                            "output_shape {os:?} is not handled (padding {lo} before)"
                        ));
                    }
                    pads.push((lo as usize, hi.max(0) as usize));
                }
                (os.iter().map(|&v| v as usize).collect(), pads)
            }
            (None, "SAME_UPPER" | "SAME_LOWER") => {
                let mut pads = vec![];
                for a in 0..n {
                    let total = full(a).saturating_sub(input[a] * strides[a]);
                    pads.push(if auto == "SAME_UPPER" {
                        (total / 2, total - total / 2)
                    } else {
                        (total - total / 2, total / 2)
                    });
                }
                ((0..n).map(|a| input[a] * strides[a]).collect(), pads)
            }
            (None, "NOTSET" | "VALID") => {
                let pads = if auto == "VALID" {
                    vec![(0, 0); n]
                } else {
                    window_pads(c, &input, &kernel, &strides, &dil)?
                };
                let mut out = vec![];
                for (a, p) in pads.iter().enumerate() {
                    out.push(
                        full(a)
                            .checked_sub(p.0 + p.1)
                            .filter(|&v| v > 0)
                            .ok_or("the pads are larger than the output")?,
                    );
                }
                (out, pads)
            }
            (os, a) => {
                return Err(format!(
                    "output_shape {os:?} with auto_pad {a:?} is not handled"
                ))
            }
        };
    if n == 3 {
        let geo = Geom3::new(&kernel, &strides, &dil, &pads);
        let mut y = conv_transpose3d(x, w, &geo, &out, groups)?;
        if c.has(2) {
            y = add_channel_bias(y, c.t(2)?);
        }
        return one(restore(y, x0.dtype()));
    }
    let one_d = n == 1;
    let p = two(&pads, one_d, (0, 0));
    let window = Window2d {
        kernel: two(&kernel, one_d, 1),
        strides: two(&strides, one_d, 1),
        dilations: two(&dil, one_d, 1),
        pad_lo: [p[0].0, p[1].0],
        pad_hi: [p[0].1, p[1].1],
    };
    let input_hw = two(&out, one_d, 1);
    let dy = lift(x, one_d).permute(&[0, 2, 3, 1]);
    let f = lift(w, one_d).permute(&[2, 3, 1, 0]);
    let mut y = dy
        .conv(ConvKind::InputGrad { input_hw }, window, groups, f)
        .permute(&[0, 3, 1, 2]);
    if c.has(2) {
        y = add_channel_bias(y, c.t(2)?);
    }
    one(restore(unlift(y, one_d), x0.dtype()))
}

/// `BatchNormalization`: `(x − mean) / √(var + ε) · scale + bias`. In inference form the
/// statistics are the running ones, non-trainable variables. In training mode (from version
/// 14, `training_mode = 1`) they are the batch's, over every axis but the channels (the
/// population variance), and the optional outputs are the updated running statistics,
/// `running · momentum + batch · (1 − momentum)`, as ONNX's reference computes them.
pub(super) fn batch_norm<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    if c.version < 9 && c.int("spatial", 1) == 0 {
        return Err("spatial = 0 (per-activation statistics) is not supported".into());
    }
    let training = c.version >= 14 && c.int("training_mode", 0) != 0;
    if !training && (1..c.n_outputs()).any(|i| c.wants_output(i)) {
        return Err(
            "the running-statistics outputs are only supported with training_mode = 1 \
             (version 14 and later)"
                .into(),
        );
    }
    let x = c.t(0)?;
    float_only(x)?;
    let (scale, bias) = (c.t(1)?, c.t(2)?);
    let (mean, var) = (c.t_state(3)?, c.t_state(4)?);
    let eps = c.float("epsilon", 1e-5) as f64;
    if x.rank() < 2 {
        return Err(format!(
            "needs an input of rank 2 or more, got {}",
            x.shape()
        ));
    }
    let mut d = vec![Dim::Fixed(1); x.rank()];
    d[1] = x.shape().dims()[1];
    let r = |t: Tensor<'g>| t.reshape(Shape(d.clone().into()));
    let norm = |m: Tensor<'g>, v: Tensor<'g>| (x - m) / (v + eps).sqrt() * r(scale) + r(bias);
    if !training {
        return one(norm(r(mean), r(var)));
    }
    let axes: Vec<isize> = (0..x.rank() as isize).filter(|&a| a != 1).collect();
    let bm = x.mean(&axes, true);
    let bv = (x - bm).square().mean(&axes, true);
    let momentum = c.float("momentum", 0.9) as f64;
    let flat = |t: Tensor<'g>| t.reshape(mean.shape());
    let mut out = vec![Val::T(norm(bm, bv))];
    // Outputs are positional: the running mean is built when the variance is wanted.
    if c.wants_output(1) || c.wants_output(2) {
        out.push(Val::T(mean * momentum + flat(bm) * (1.0 - momentum)));
    }
    if c.wants_output(2) {
        out.push(Val::T(var * momentum + flat(bv) * (1.0 - momentum)));
    }
    Ok(out)
}

/// `MaxPool` and `AveragePool` (1-D, 2-D, and 3-D through `nn3d`), with `ceil_mode` done as
/// extra end padding (padding taps never count for kiln's pools, as for ONNX's, except under
/// `count_include_pad`, where the extra taps are taken out again by
/// [`recount_ceil_windows`]); MaxPool's `Indices` output is `pool_index`'s.
pub(super) fn pool<'g>(c: &mut Ctx<'_, 'g>, max: bool) -> Built<'g> {
    let x0 = c.t(0)?;
    // An 8-bit max pool is exact in f32 (which holds every 8-bit value; only comparisons).
    let x = match x0.dtype() {
        DType::I8 | DType::U8 if max => x0.cast(DType::F32),
        _ => widen(x0),
    };
    float_only(x)?;
    let input = spatial(x, true)?;
    let n = input.len();
    let kernel = per_axis(c, "kernel_shape", n, 0)?;
    let strides = per_axis(c, "strides", n, 1)?;
    let dil = per_axis(c, "dilations", n, 1)?;
    let column_major = match c.int("storage_order", 0) {
        0 => false,
        1 => true,
        o => return Err(format!("storage_order = {o} is not 0 or 1")),
    };
    let mut pads = window_pads(c, &input, &kernel, &strides, &dil)?;
    let include_pad = !max && c.int("count_include_pad", 0) != 0;
    // The padded extent; ceil mode's extra end padding is beyond it.
    let extent: Vec<usize> = (0..n).map(|a| input[a] + pads[a].0 + pads[a].1).collect();
    let mut past_extent = false;
    if c.int("ceil_mode", 0) != 0 {
        for a in 0..n {
            let ext = dil[a] * (kernel[a] - 1) + 1;
            let span = (input[a] + pads[a].0 + pads[a].1)
                .checked_sub(ext)
                .ok_or("the window is larger than the padded input")?;
            let mut out = span.div_ceil(strides[a]) + 1;
            // A last window that would start in the end padding is dropped.
            if (out - 1) * strides[a] >= input[a] + pads[a].0 {
                out -= 1;
            }
            let need = (out - 1) * strides[a] + ext;
            let extra = need.saturating_sub(input[a] + pads[a].0 + pads[a].1);
            past_extent |= extra > 0 && include_pad;
            pads[a].1 += extra;
        }
    }
    if max && c.wants_output(1) {
        let (y, idx) = max_pool_with_indices(x, &kernel, &strides, &dil, &pads, column_major)?;
        return Ok(vec![Val::T(y.cast(x0.dtype())), Val::T(idx)]);
    }
    if n == 3 {
        let geo = Geom3::new(&kernel, &strides, &dil, &pads);
        let mut y = pool3d(x, &geo, max, include_pad)?;
        if past_extent {
            y = recount_ceil_windows(y, &kernel, &strides, &dil, &extent)?;
        }
        return one(y.cast(x0.dtype()));
    }
    let one_d = n == 1;
    let opts = Pool2dOptions::new(two(&kernel, one_d, 1))
        .strides(two(&strides, one_d, 1))
        .dilations(two(&dil, one_d, 1))
        .padding(Padding::Explicit(two(&pads, one_d, (0, 0))))
        .format(DataFormat::Nchw)
        .count_include_pad(include_pad);
    let x = lift(x, one_d);
    let y = if max {
        x.max_pool2d(&opts)
    } else {
        x.avg_pool2d(&opts)
    };
    let mut y = unlift(y, one_d);
    if past_extent {
        y = recount_ceil_windows(y, &kernel, &strides, &dil, &extent)?;
    }
    // Back to the input's dtype (8-bit max pools ran in f32, halves in f32).
    one(y.cast(x0.dtype()))
}

/// `GlobalAveragePool`/`GlobalMaxPool`: over every axis after the channels, kept as 1s.
pub(super) fn global_pool<'g>(c: &mut Ctx<'_, 'g>, max: bool) -> Built<'g> {
    let x = c.t(0)?;
    float_only(x)?;
    if x.rank() < 3 {
        return Err(format!(
            "needs an N, C, spatial... input, got {}",
            x.shape()
        ));
    }
    let axes: Vec<isize> = (2..x.rank() as isize).collect();
    one(if max {
        x.max(&axes, true)
    } else {
        x.mean(&axes, true)
    })
}

/// `Gemm`: `alpha · A' · B' + beta · C` (C broadcast one way, optional from opset 11).
pub(super) fn gemm<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let (a0, b0) = (c.t(0)?, c.t(1)?);
    let (mut a, mut b) = (widen(a0), widen(b0));
    float_only(a)?;
    if a.rank() != 2 || b.rank() != 2 {
        return Err(format!(
            "needs 2-D operands, got {} and {}",
            a.shape(),
            b.shape()
        ));
    }
    if c.int("transA", 0) != 0 {
        a = a.transpose();
    }
    if c.int("transB", 0) != 0 {
        b = b.transpose();
    }
    let (alpha, beta) = (c.float("alpha", 1.0) as f64, c.float("beta", 1.0) as f64);
    let mut y = a.matmul(b);
    if alpha != 1.0 {
        y = y * alpha;
    }
    if c.has(2) {
        let mut cc = c.t(2)?;
        if beta != 1.0 {
            cc = cc * beta;
        }
        y = y + cc;
    }
    one(restore(y, a0.dtype()))
}

/// `MatMul` with numpy's rules: 1-D operands get a unit axis (removed after), batch axes
/// broadcast.
pub(super) fn matmul<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let (a0, b0) = (c.t(0)?, c.t(1)?);
    let (a, b) = (widen(a0), widen(b0));
    let (ra, rb) = (a.rank(), b.rank());
    if ra == 0 || rb == 0 {
        return Err("operands must have rank 1 or more".into());
    }
    let unit = |t: Tensor<'g>, at: usize| {
        let mut d = t.shape().0.clone();
        d.insert(at, Dim::Fixed(1));
        t.reshape(Shape(d))
    };
    let a2 = if ra == 1 { unit(a, 0) } else { a };
    let b2 = if rb == 1 { unit(b, 1) } else { b };
    let (sa, sb) = (a2.shape(), b2.shape());
    let (ba, bb) = (&sa.dims()[..sa.rank() - 2], &sb.dims()[..sb.rank() - 2]);
    let batch = broadcast_shapes(&Shape(ba.into()), &Shape(bb.into()))?;
    let full = |s: &Shape| {
        let mut d = batch.0.clone();
        d.extend_from_slice(&s.dims()[s.rank() - 2..]);
        Shape(d)
    };
    let mut y = a2
        .broadcast_to(full(&sa))
        .matmul(b2.broadcast_to(full(&sb)));
    let r = y.rank();
    let mut d = y.shape().0.clone();
    if rb == 1 {
        d.remove(r - 1);
    }
    if ra == 1 {
        d.remove(r - 2);
    }
    if d.len() != r {
        y = y.reshape(Shape(d));
    }
    one(restore(y, a0.dtype()))
}

/// Softmax of an `f32` tensor widened from the half type `h`, each step rounded to `h` as
/// ONNX's reference computes it in numpy (`x − max`, `exp`, the sum, the quotient; for
/// LogSoftmax `x − max − log(sum)`): computed in `f32` and rounded once, a half softmax can
/// be several half ulps from the reference's.
fn half_softmax<'g>(x: Tensor<'g>, a: isize, h: DType, log: bool) -> Tensor<'g> {
    let r = |t: Tensor<'g>| t.cast(h).cast(DType::F32);
    let t = r(x - x.max(&[a], true));
    let e = r(t.exp());
    let s = r(e.sum(&[a], true));
    if log {
        r(t - r(s.log()))
    } else {
        r(e / s)
    }
}

/// `Softmax`/`LogSoftmax`: over one axis from opset 13 (default −1); before it, over the
/// input coerced to 2-D at `axis` (default 1), as those versions define.
pub(super) fn softmax<'g>(c: &mut Ctx<'_, 'g>, log: bool) -> Built<'g> {
    let x0 = c.t(0)?;
    let x = widen(x0);
    float_only(x)?;
    let rank = x.rank();
    let half = x0.dtype().is_half();
    let f = |t: Tensor<'g>, a: isize| match (half, log) {
        (true, _) => half_softmax(t, a, x0.dtype(), log),
        (false, true) => t.log_softmax(a),
        (false, false) => t.softmax(a),
    };
    if c.version >= 13 {
        let a = axis(c.int("axis", -1), rank)?;
        return one(restore(f(x, a as isize), x0.dtype()));
    }
    let a = axis(c.int("axis", 1), rank.max(1))?;
    if a + 1 == rank {
        return one(restore(f(x, -1), x0.dtype()));
    }
    let s = x.shape();
    let right: Option<usize> = s.dims()[a..].iter().map(|d| d.fixed()).product();
    let right = right.ok_or("the coerced axes must have known sizes")?;
    let left: Vec<Dim> = s.dims()[..a].to_vec();
    let lead = match (
        left.first(),
        left.iter()
            .skip(1)
            .map(|d| d.fixed())
            .product::<Option<usize>>(),
    ) {
        (None, _) => Dim::Fixed(1),
        (Some(Dim::Batch), Some(1)) => Dim::Batch,
        (Some(Dim::Fixed(n)), Some(m)) => Dim::Fixed(n * m),
        _ => {
            return Err(format!(
                "cannot coerce {s} to 2-D at axis {a} with an open batch"
            ))
        }
    };
    let y = f(x.reshape(Shape(vec![lead, Dim::Fixed(right)].into())), -1);
    one(restore(y.reshape(s), x0.dtype()))
}

/// `LRN` across channels: `x / (bias + alpha/size · Σ x²)^beta`, the sum over a window of
/// `size` channels (⌊(size−1)/2⌋ before, ⌈(size−1)/2⌉ after), as shifted slices of the
/// zero-padded squares.
pub(super) fn lrn<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x = c.t(0)?;
    float_only(x)?;
    let size = c.int("size", 0);
    if size < 1 {
        return Err("size must be at least 1".into());
    }
    let size = size as usize;
    let ch = match x.shape().dims().get(1) {
        Some(Dim::Fixed(n)) if x.rank() >= 3 => *n,
        _ => {
            return Err(format!(
                "needs an N, C, ... input with known channels, got {}",
                x.shape()
            ))
        }
    };
    let (alpha, beta, bias) = (
        c.float("alpha", 1e-4) as f64,
        c.float("beta", 0.75) as f64,
        c.float("bias", 1.0) as f64,
    );
    let before = (size - 1) / 2;
    let mut lo = vec![0; x.rank()];
    let mut hi = vec![0; x.rank()];
    lo[1] = before;
    hi[1] = size - 1 - before;
    let padded = (x * x).pad(&lo, &hi);
    let mut sum = padded.narrow(1, 0, ch);
    for j in 1..size {
        sum = sum + padded.narrow(1, j, ch);
    }
    one(x / (sum * (alpha / size as f64) + bias).pow(beta))
}
