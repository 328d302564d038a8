//! MaxPool's `Indices` output: each window's maximum and where it is, as ONNX's flattened
//! index into the input (`((n·C + c)·H + h)·W + w`, or `h + w·H` within the plane under
//! `storage_order = 1`).
//!
//! Built from kiln's primitives, window tap by window tap: each tap is a strided gather of
//! the input (padded with −∞, so a padding tap never wins), a strict `>` keeps the earlier
//! tap on ties (ONNX's reference scans the window in order and replaces on `>`), and a
//! `where` carries the winning tap's position, a constant per tap. The maximum itself is the
//! same value kiln's max pool gives.

use super::shape::gather_along;
use crate::array::Array;
use crate::dtype::DType;
use crate::graph::Tensor;

/// At most this many taps per window (each is a gather, a comparison and two `where`s).
const MAX_TAPS: usize = 1024;

/// `(maximum, index)` of every window of `x` (`N, C, spatial...`, known sizes) with the
/// given geometry, padding resolved.
pub(super) fn max_pool_with_indices<'g>(
    x: Tensor<'g>,
    kernel: &[usize],
    strides: &[usize],
    dil: &[usize],
    pads: &[(usize, usize)],
    column_major: bool,
) -> Result<(Tensor<'g>, Tensor<'g>), String> {
    let g = x.graph();
    let dims = x.shape().0.to_vec();
    let r = dims.len();
    let n = r - 2;
    let sizes: Vec<usize> = dims
        .iter()
        .map(|d| d.fixed())
        .collect::<Option<_>>()
        .ok_or("the Indices output needs every size known (the batch too)")?;
    let input = &sizes[2..];
    let taps: usize = kernel.iter().product();
    if taps > MAX_TAPS {
        return Err(format!(
            "a window of {taps} taps: kiln builds the Indices output for at most {MAX_TAPS}"
        ));
    }
    let mut out = vec![];
    for a in 0..n {
        let ext = dil[a] * (kernel[a] - 1) + 1;
        let span = (input[a] + pads[a].0 + pads[a].1)
            .checked_sub(ext)
            .ok_or("the window is larger than the padded input")?;
        out.push(span / strides[a] + 1);
    }
    // Each spatial axis' step in the flattened plane.
    let mut step = vec![1usize; n];
    for a in 0..n {
        step[a] = if column_major {
            input[..a].iter().product()
        } else {
            input[a + 1..].iter().product()
        };
    }
    let plane: usize = input.iter().product();
    let (mut lo, mut hi) = (vec![0; r], vec![0; r]);
    for a in 0..n {
        lo[a + 2] = pads[a].0;
        hi[a + 2] = pads[a].1;
    }
    let xp = if pads.iter().any(|&(b, e)| b + e > 0) {
        let inside = g
            .scalar_of(DType::Bool, 1.0)
            .broadcast_to(x.shape())
            .pad(&lo, &hi);
        inside.select(x.pad(&lo, &hi), f64::NEG_INFINITY)
    } else {
        x
    };
    let mut pos_shape = vec![1, 1];
    pos_shape.extend_from_slice(&out);
    let count: usize = out.iter().product();
    let mut best: Option<(Tensor<'g>, Tensor<'g>)> = None;
    for t in 0..taps {
        // The tap's offset along each axis (the last axis fastest: ONNX's scan order).
        let mut rest = t;
        let mut off = vec![0; n];
        for a in (0..n).rev() {
            off[a] = rest % kernel[a] * dil[a];
            rest /= kernel[a];
        }
        let mut v = xp;
        for a in 0..n {
            let idx: Vec<usize> = (0..out[a]).map(|o| o * strides[a] + off[a]).collect();
            v = gather_along(v, a + 2, &idx)?;
        }
        let mut pos = Vec::with_capacity(count);
        for k in 0..count {
            let (mut rest, mut p) = (k, 0i64);
            for a in (0..n).rev() {
                let o = rest % out[a];
                rest /= out[a];
                let at = (o * strides[a] + off[a]) as i64 - pads[a].0 as i64;
                p += at * step[a] as i64;
            }
            pos.push(p);
        }
        let pos = g.constant(Array::new(&pos_shape, pos).map_err(|e| e.to_string())?);
        best = Some(match best {
            None => (v, pos.broadcast_to(v.shape())),
            Some((b, i)) => {
                let better = v.greater(b);
                (g.where_(better, v, b), g.where_(better, pos, i))
            }
        });
    }
    let (y, idx) = best.ok_or("an empty window")?;
    let (nb, ch) = (sizes[0], sizes[1]);
    let mut base_shape = vec![nb, ch];
    base_shape.extend(std::iter::repeat_n(1, n));
    let base: Vec<i64> = (0..nb * ch).map(|k| (k * plane) as i64).collect();
    let base = g.constant(Array::new(&base_shape, base).map_err(|e| e.to_string())?);
    Ok((y, idx + base))
}
