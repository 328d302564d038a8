//! 3-D windows (Conv, ConvTranspose, MaxPool, AveragePool on `N, C, D, H, W` tensors) lowered exactly onto
//! kiln's 2-D window ops, so they get the 2-D ops' gradients, JIT kernels and export for
//! free, and no new primitive is needed:
//! - **pooling is separable**: a window's maximum is the maximum over depth of the maxima
//!   over height and width, and its mean the mean over depth of the means over height and
//!   width, because the taps that count (inside the input, or every tap under
//!   `count_include_pad`) form a box: their number is the product of the per-axis counts.
//!   So a 3-D pool is a 2-D pool over `(H, W)` with the depth folded into the channels,
//!   then a `(KD, 1)` pool over `(D, H·W)`; both keep the open batch axis where it is.
//! - **convolution is im2col over depth**: each output depth reads `KD` input depths, so
//!   the `KD` strided depth slices stacked beside the channels (`C·KD` of them, channel-major,
//!   which is the OIDHW filter's own order, so the filter only reshapes) make a 2-D
//!   convolution over `(H, W)` with the output depths folded into the batch. With an open
//!   batch axis, which kiln cannot multiply by the depth, each output depth is its own 2-D
//!   convolution and the results are concatenated.
//! - **a transposed convolution** is, per depth tap, the 2-D transposed convolution of every
//!   input depth, spread to its output depths and summed ([`conv_transpose3d`]).

use super::shape::gather_along;
use crate::array::Array;
use crate::graph::op::{ConvKind, DataFormat, Padding, Window2d};
use crate::graph::{Conv2dOptions, Tensor};
use crate::shape::{Dim, Shape};
use crate::Pool2dOptions;

/// Output depths at most this many are built one convolution each (open batch axis only).
const MAX_DEPTH_CONVS: usize = 256;

/// A 3-D window's geometry, per spatial axis `(D, H, W)`.
pub(super) struct Geom3 {
    pub(super) kernel: [usize; 3],
    pub(super) strides: [usize; 3],
    pub(super) dil: [usize; 3],
    /// Explicit `(before, after)` padding.
    pub(super) pads: [(usize, usize); 3],
}

fn to3<T: Copy>(v: &[T]) -> [T; 3] {
    [v[0], v[1], v[2]]
}

impl Geom3 {
    pub(super) fn new(
        kernel: &[usize],
        strides: &[usize],
        dil: &[usize],
        pads: &[(usize, usize)],
    ) -> Self {
        Geom3 {
            kernel: to3(kernel),
            strides: to3(strides),
            dil: to3(dil),
            pads: to3(pads),
        }
    }
}

fn fixed(d: Dim, what: &str) -> Result<usize, String> {
    d.fixed().ok_or_else(|| format!("the {what} must be known"))
}

fn dims(t: Tensor<'_>) -> Vec<Dim> {
    t.shape().0.to_vec()
}

/// A 3-D max or average pool as two 2-D pools (see the module docs).
pub(super) fn pool3d<'g>(
    x: Tensor<'g>,
    geo: &Geom3,
    max: bool,
    include_pad: bool,
) -> Result<Tensor<'g>, String> {
    let d = dims(x);
    let (n, ch, depth) = (d[0], fixed(d[1], "channels")?, fixed(d[2], "depth")?);
    let (h, w) = (d[3], d[4]);
    let pool = |t: Tensor<'g>, opts: &Pool2dOptions| {
        if max {
            t.max_pool2d(opts)
        } else {
            t.avg_pool2d(opts)
        }
    };
    let hw = Pool2dOptions::new([geo.kernel[1], geo.kernel[2]])
        .strides([geo.strides[1], geo.strides[2]])
        .dilations([geo.dil[1], geo.dil[2]])
        .padding(Padding::Explicit([geo.pads[1], geo.pads[2]]))
        .format(DataFormat::Nchw)
        .count_include_pad(include_pad);
    let folded = Dim::Fixed(
        ch.checked_mul(depth)
            .ok_or("the channels times the depth overflow")?,
    );
    let y1 = pool(x.reshape(Shape(vec![n, folded, h, w].into())), &hw);
    let e = dims(y1);
    if e.len() != 4 {
        return Ok(y1); // the 2-D pool failed; its error is reported after the op
    }
    let (oh, ow) = (fixed(e[2], "output height")?, fixed(e[3], "output width")?);
    let plane = Dim::Fixed(oh * ow);
    let depth_pool = Pool2dOptions::new([geo.kernel[0], 1])
        .strides([geo.strides[0], 1])
        .dilations([geo.dil[0], 1])
        .padding(Padding::Explicit([geo.pads[0], (0, 0)]))
        .format(DataFormat::Nchw)
        .count_include_pad(include_pad);
    let y2 = pool(
        y1.reshape(Shape(
            vec![n, Dim::Fixed(ch), Dim::Fixed(depth), plane].into(),
        )),
        &depth_pool,
    );
    let od = match dims(y2).get(2) {
        Some(&d) => d,
        None => return Ok(y2),
    };
    Ok(y2.reshape(Shape(
        vec![n, Dim::Fixed(ch), od, Dim::Fixed(oh), Dim::Fixed(ow)].into(),
    )))
}

/// A 3-D convolution (NCDHW input, OIDHW filter `[O, C/groups, KD, KH, KW]`) as one 2-D
/// convolution over the depth-stacked input (see the module docs).
pub(super) fn conv3d<'g>(
    x: Tensor<'g>,
    w: Tensor<'g>,
    geo: &Geom3,
    groups: usize,
) -> Result<Tensor<'g>, String> {
    let d = dims(x);
    let wd = dims(w);
    let (n, ch, depth) = (d[0], fixed(d[1], "channels")?, fixed(d[2], "depth")?);
    let (h, wid) = (d[3], d[4]);
    let o = fixed(wd[0], "filter's output channels")?;
    let cg = fixed(wd[1], "filter's input channels")?;
    let [kd, kh, kw] = geo.kernel;
    let (sd, dd) = (geo.strides[0], geo.dil[0]);
    let (p0, p1) = geo.pads[0];
    let padded = depth + p0 + p1;
    let ext = dd * (kd - 1) + 1;
    if padded < ext {
        return Err(format!(
            "the depth window ({ext}) is larger than the padded depth ({padded})"
        ));
    }
    let od = (padded - ext) / sd + 1;
    let mut lo = vec![0; 5];
    let mut hi = vec![0; 5];
    lo[2] = p0;
    hi[2] = p1;
    let xp = if p0 + p1 > 0 { x.pad(&lo, &hi) } else { x };
    // Tap `k`'s input depths for every output depth, stacked beside the channels.
    let mut taps = vec![];
    for k in 0..kd {
        let idx: Vec<usize> = (0..od).map(|i| i * sd + k * dd).collect();
        let t = gather_along(xp, 2, &idx)?;
        taps.push(t.reshape(Shape(
            vec![n, Dim::Fixed(ch), Dim::Fixed(1), Dim::Fixed(od), h, wid].into(),
        )));
    }
    let stacked = if kd == 1 {
        taps[0]
    } else {
        x.graph().concat(&taps, 2)
    };
    let cols = Dim::Fixed(ch * kd);
    let w2 = w.reshape(Shape(
        vec![
            Dim::Fixed(o),
            Dim::Fixed(cg * kd),
            Dim::Fixed(kh),
            Dim::Fixed(kw),
        ]
        .into(),
    ));
    let opts = Conv2dOptions::new()
        .strides(geo.strides[1], geo.strides[2])
        .dilations(geo.dil[1], geo.dil[2])
        .groups(groups)
        .padding(Padding::Explicit([geo.pads[1], geo.pads[2]]))
        .format(DataFormat::Nchw);
    // [N, C, KD, OD, H, W] → [N, OD, C, KD, H, W]: one image per (batch, output depth).
    let by_depth = stacked.permute(&[0, 3, 1, 2, 4, 5]);
    let unfold = |y: Tensor<'g>| -> Result<(Dim, Dim), String> {
        let e = dims(y);
        if e.len() != 4 {
            return Err("the 2-D convolution failed".into());
        }
        Ok((e[2], e[3]))
    };
    match n {
        Dim::Fixed(nb) => {
            let images = Dim::Fixed(
                nb.checked_mul(od)
                    .ok_or("the batch times the depth overflow")?,
            );
            let y = by_depth
                .reshape(Shape(vec![images, cols, h, wid].into()))
                .conv2d(w2, &opts);
            let Ok((oh, ow)) = unfold(y) else {
                return Ok(y);
            };
            Ok(
                y.reshape(Shape(vec![n, Dim::Fixed(od), Dim::Fixed(o), oh, ow].into()))
                    .permute(&[0, 2, 1, 3, 4]),
            )
        }
        Dim::Batch => {
            if od > MAX_DEPTH_CONVS {
                return Err(format!(
                    "{od} output depths with an open batch axis: kiln builds at most \
                     {MAX_DEPTH_CONVS} (one 2-D convolution each); fix the batch size"
                ));
            }
            let mut outs = vec![];
            for i in 0..od {
                let y = by_depth
                    .narrow(1, i, 1)
                    .reshape(Shape(vec![n, cols, h, wid].into()))
                    .conv2d(w2, &opts);
                let Ok((oh, ow)) = unfold(y) else {
                    return Ok(y);
                };
                outs.push(y.reshape(Shape(vec![n, Dim::Fixed(o), Dim::Fixed(1), oh, ow].into())));
            }
            Ok(x.graph().concat(&outs, 2))
        }
    }
}

/// An average under `count_include_pad` whose last windows (ceil mode) reach past the padded
/// extent: ONNX counts the taps inside `input + pads` only, kiln's pool (the extra end
/// padding counted like the rest) divides by the whole kernel, so each output is scaled by
/// `kernel taps / counted taps`, a constant per position (the counts are per axis, so the
/// product of per-axis counts).
pub(super) fn recount_ceil_windows<'g>(
    y: Tensor<'g>,
    kernel: &[usize],
    strides: &[usize],
    dil: &[usize],
    extent: &[usize],
) -> Result<Tensor<'g>, String> {
    let n = kernel.len();
    let d = dims(y);
    if d.len() != n + 2 {
        return Ok(y); // the pool failed; its error is reported after the op
    }
    let out: Vec<usize> = d[2..]
        .iter()
        .map(|&v| fixed(v, "output size"))
        .collect::<Result<_, _>>()?;
    let counts: Vec<Vec<f64>> = (0..n)
        .map(|a| {
            (0..out[a])
                .map(|o| {
                    (0..kernel[a])
                        .filter(|t| o * strides[a] + t * dil[a] < extent[a])
                        .count() as f64
                })
                .collect()
        })
        .collect();
    let taps: f64 = kernel.iter().map(|&k| k as f64).product();
    let total: usize = out.iter().product();
    let mut factor = Vec::with_capacity(total);
    for k in 0..total {
        let (mut rest, mut counted) = (k, 1.0);
        for a in (0..n).rev() {
            counted *= counts[a][rest % out[a]];
            rest /= out[a];
        }
        factor.push(taps / counted.max(1.0));
    }
    let mut shape = vec![1, 1];
    shape.extend_from_slice(&out);
    Ok(y * y
        .graph()
        .constant(Array::from_f64(y.dtype(), shape, factor)))
}

/// A 3-D transposed convolution (`x` `[N, Cin, D, H, W]`, filter `[Cin, Cout/groups, KD, KH,
/// KW]`) with the output's sizes `out` and the padding `pads` already resolved: for each
/// depth tap `kd`, the 2-D transposed convolution of every input depth by the filter's slice
/// `kd` (the input depths folded into the batch, or one each with an open batch axis),
/// spread to output depths `d·stride + kd·dilation` (zeros between, by a pad and a reshape),
/// summed over the taps and cropped to the depth padding.
pub(super) fn conv_transpose3d<'g>(
    x: Tensor<'g>,
    w: Tensor<'g>,
    geo: &Geom3,
    out: &[usize],
    groups: usize,
) -> Result<Tensor<'g>, String> {
    let d = dims(x);
    let wd = dims(w);
    let (n, cin, depth) = (d[0], fixed(d[1], "channels")?, fixed(d[2], "depth")?);
    let (h, wid) = (d[3], d[4]);
    let cog = fixed(wd[1], "filter's output channels")?;
    let cout = cog * groups;
    let [kd, kh, kw] = geo.kernel;
    let (sd, dd) = (geo.strides[0], geo.dil[0]);
    let window = Window2d {
        kernel: [kh, kw],
        strides: [geo.strides[1], geo.strides[2]],
        dilations: [geo.dil[1], geo.dil[2]],
        pad_lo: [geo.pads[1].0, geo.pads[2].0],
        pad_hi: [geo.pads[1].1, geo.pads[2].1],
    };
    let kind = ConvKind::InputGrad {
        input_hw: [out[1], out[2]],
    };
    let (oh, ow) = (Dim::Fixed(out[1]), Dim::Fixed(out[2]));
    // [N, D, Cin, H, W] → NHWC images, one per (batch, depth).
    let by_depth = x.permute(&[0, 2, 1, 3, 4]);
    let tconv = |img: Tensor<'g>, k: usize| {
        let f = w
            .narrow(2, k, 1)
            .reshape(Shape(
                vec![
                    Dim::Fixed(cin),
                    Dim::Fixed(cog),
                    Dim::Fixed(kh),
                    Dim::Fixed(kw),
                ]
                .into(),
            ))
            .permute(&[2, 3, 1, 0]);
        img.permute(&[0, 2, 3, 1])
            .conv(kind, window.clone(), groups, f)
            .permute(&[0, 3, 1, 2])
    };
    // Every tap's 2-D result, [N, Cout, D, OH, OW].
    let mut per_tap = vec![];
    for k in 0..kd {
        let y = match n {
            Dim::Fixed(nb) => {
                let images = nb
                    .checked_mul(depth)
                    .ok_or("the batch times the depth overflow")?;
                tconv(
                    by_depth.reshape(Shape(
                        vec![Dim::Fixed(images), Dim::Fixed(cin), h, wid].into(),
                    )),
                    k,
                )
                .reshape(Shape(
                    vec![n, Dim::Fixed(depth), Dim::Fixed(cout), oh, ow].into(),
                ))
                .permute(&[0, 2, 1, 3, 4])
            }
            Dim::Batch => {
                if depth > MAX_DEPTH_CONVS {
                    return Err(format!(
                        "{depth} input depths with an open batch axis: kiln builds at most \
                         {MAX_DEPTH_CONVS} (one 2-D convolution each); fix the batch size"
                    ));
                }
                let slices: Vec<Tensor<'g>> = (0..depth)
                    .map(|i| {
                        tconv(
                            by_depth
                                .narrow(1, i, 1)
                                .reshape(Shape(vec![n, Dim::Fixed(cin), h, wid].into())),
                            k,
                        )
                        .reshape(Shape(
                            vec![n, Dim::Fixed(cout), Dim::Fixed(1), oh, ow].into(),
                        ))
                    })
                    .collect();
                x.graph().concat(&slices, 2)
            }
        };
        per_tap.push(y);
    }
    // Spread input depth i to i·sd (zeros between), then shift tap k by k·dd.
    let full = (depth - 1) * sd + dd * (kd - 1) + 1;
    let plane = Dim::Fixed(out[1] * out[2]);
    let mut sum: Option<Tensor<'g>> = None;
    for (k, y) in per_tap.into_iter().enumerate() {
        let spread = if sd > 1 {
            y.reshape(Shape(
                vec![n, Dim::Fixed(cout), Dim::Fixed(depth), Dim::Fixed(1), plane].into(),
            ))
            .pad(&[0, 0, 0, 0, 0], &[0, 0, 0, sd - 1, 0])
            .reshape(Shape(
                vec![n, Dim::Fixed(cout), Dim::Fixed(depth * sd), oh, ow].into(),
            ))
            .narrow(2, 0, (depth - 1) * sd + 1)
        } else {
            y
        };
        let before = k * dd;
        let after = full - before - ((depth - 1) * sd + 1);
        let placed = spread.pad(&[0, 0, before, 0, 0], &[0, 0, after, 0, 0]);
        sum = Some(match sum {
            None => placed,
            Some(s) => s + placed,
        });
    }
    let sum = sum.ok_or("an empty kernel")?;
    // Crop the depth padding; an output longer than the full one gets zeros at the end.
    let (p0, _) = geo.pads[0];
    let keep = full.saturating_sub(p0).min(out[0]);
    let y = sum.narrow(2, p0.min(full), keep);
    Ok(if keep < out[0] {
        y.pad(&[0, 0, 0, 0, 0], &[0, 0, out[0] - keep, 0, 0])
    } else {
        y
    })
}
