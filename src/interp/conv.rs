//! The convolution family's reference semantics: direct loops over NHWC images and HWIO
//! filters, each sum accumulated in `f64` in a fixed order and rounded once, as
//! [`super::eval`]'s matmul does (sums start from -0, the additive identity, so a sum of
//! negative zeros keeps its sign). A padding tap reads a zero that is multiplied like any
//! other input (`0 · inf` is NaN), as TensorFlow and PyTorch compute and as the JIT's im2col
//! and `gemm` must (fuzz finding F9): the input gradient has no padding pixels to write, so
//! it skips them.
//!
//! These loops are the oracle the JIT's im2col and `gemm` steps are checked against;
//! `tests/conv.rs` checks them in turn against a seven-loop convolution of its own.

use super::eval::round;
use super::{Precision, Value};
use crate::dtype::DType;
use crate::graph::op::{ConvGeom, ConvKind, Op};

/// The result of convolution `op` on operands `a`, `b`, with output shape `out`, or a
/// message if the shapes do not describe a convolution (the shape rule makes that a bug).
pub(super) fn conv(
    op: &Op,
    a: &Value,
    b: &Value,
    out: &[usize],
    dt: DType,
    prec: Precision,
) -> Result<Vec<f64>, String> {
    let (Op::Conv { kind, .. }, Some(geo)) = (op, ConvGeom::of(op, &a.shape, &b.shape, out)) else {
        return Err(format!(
            "{} is not a convolution of these shapes",
            op.name()
        ));
    };
    let numel: usize = out.iter().product();
    let mut acc = vec![-0.0f64; numel];
    match kind {
        ConvKind::Forward => forward(&geo, &a.data, &b.data, &mut acc),
        ConvKind::InputGrad { .. } => input_grad(&geo, &a.data, &b.data, &mut acc),
        ConvKind::FilterGrad => filter_grad(&geo, &a.data, &b.data, &mut acc),
    }
    Ok(acc.into_iter().map(|v| round(dt, prec, v)).collect())
}

/// Calls `f(tap, x_pixel, y_pixel)` for every tap, in the order batch, output row, output
/// column, tap row, tap column; `tap` is `kh·KW + kw`, and the pixels are flat indices of
/// `[n, h, w]` (`None` for a tap in the padding) and `[n, oh, ow]`.
fn taps(geo: &ConvGeom, mut f: impl FnMut(usize, Option<usize>, usize)) {
    let [kh_n, kw_n] = geo.window.kernel;
    for n in 0..geo.n {
        for oh in 0..geo.out_hw[0] {
            for ow in 0..geo.out_hw[1] {
                let yp = (n * geo.out_hw[0] + oh) * geo.out_hw[1] + ow;
                for kh in 0..kh_n {
                    let ih = geo.src(0, oh, kh);
                    for kw in 0..kw_n {
                        let xp = ih
                            .zip(geo.src(1, ow, kw))
                            .map(|(ih, iw)| (n * geo.in_hw[0] + ih) * geo.in_hw[1] + iw);
                        f(kh * kw_n + kw, xp, yp);
                    }
                }
            }
        }
    }
}

/// `y[yp, o] += x[xp, g·cg + ci] · w[tap, ci, o]` (x is +0 in the padding).
fn forward(geo: &ConvGeom, x: &[f64], w: &[f64], y: &mut [f64]) {
    let (c, o, cg, og) = (geo.c, geo.o, geo.cg(), geo.og());
    taps(geo, |tap, xp, yp| {
        for oc in 0..o {
            let g = oc / og;
            let mut s = y[yp * o + oc];
            for ci in 0..cg {
                let xv = xp.map_or(0.0, |xp| x[xp * c + g * cg + ci]);
                s += xv * w[(tap * cg + ci) * o + oc];
            }
            y[yp * o + oc] = s;
        }
    });
}

/// `dx[xp, g·cg + ci] += dy[yp, o] · w[tap, ci, o]`.
fn input_grad(geo: &ConvGeom, dy: &[f64], w: &[f64], dx: &mut [f64]) {
    let (c, o, cg, og) = (geo.c, geo.o, geo.cg(), geo.og());
    taps(geo, |tap, xp, yp| {
        // A padding pixel has no gradient to receive.
        let Some(xp) = xp else { return };
        for g in 0..geo.groups {
            for ci in 0..cg {
                let mut s = dx[xp * c + g * cg + ci];
                for oc in g * og..(g + 1) * og {
                    s += dy[yp * o + oc] * w[(tap * cg + ci) * o + oc];
                }
                dx[xp * c + g * cg + ci] = s;
            }
        }
    });
}

/// `dw[tap, ci, o] += x[xp, g·cg + ci] · dy[yp, o]` (x is +0 in the padding).
fn filter_grad(geo: &ConvGeom, x: &[f64], dy: &[f64], dw: &mut [f64]) {
    let (c, o, cg, og) = (geo.c, geo.o, geo.cg(), geo.og());
    taps(geo, |tap, xp, yp| {
        for ci in 0..cg {
            for oc in 0..o {
                let g = oc / og;
                let xv = xp.map_or(0.0, |xp| x[xp * c + g * cg + ci]);
                dw[(tap * cg + ci) * o + oc] += xv * dy[yp * o + oc];
            }
        }
    });
}
