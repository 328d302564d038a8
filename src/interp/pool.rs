//! The interpreter's pooling: each kind of `Op::Pool` as the plainest loops over NHWC
//! windows, following the semantics in the docs of [`crate::graph::op::pool`] (scan order,
//! first maximum and first NaN win, padding skipped, fixed summation orders) with every
//! arithmetic result rounded to the node's dtype, so the JIT's native `f32` loops give the
//! same bits.

use super::eval::round;
use super::{Precision, Value};
use crate::dtype::DType;
use crate::graph::op::{PoolKind, Window2d};

/// The sizes of one pooling: input `[n, h, w, c]`, output `[oh, ow]`.
struct Geom<'w> {
    w: &'w Window2d,
    n: usize,
    hw: [usize; 2],
    c: usize,
    out: [usize; 2],
}

impl Geom<'_> {
    /// The flat input offsets of the window at `(b, oy, ox)`'s taps inside the input, for
    /// channel 0, in scan order (`kh` outer, `kw` inner).
    fn taps(&self, b: usize, oy: usize, ox: usize) -> Vec<usize> {
        let mut t = vec![];
        for kh in 0..self.w.kernel[0] {
            let Some(iy) = tap(self.w, 0, oy, kh, self.hw[0]) else {
                continue;
            };
            for kw in 0..self.w.kernel[1] {
                if let Some(ix) = tap(self.w, 1, ox, kw, self.hw[1]) {
                    t.push(((b * self.hw[0] + iy) * self.hw[1] + ix) * self.c);
                }
            }
        }
        t
    }

    /// Every output position `(b, oy, ox)` in row-major order, with its flat offset for
    /// channel 0.
    fn windows(&self) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
        let [oh, ow] = self.out;
        (0..self.n).flat_map(move |b| {
            (0..oh).flat_map(move |oy| {
                (0..ow).map(move |ox| (b, oy, ox, ((b * oh + oy) * ow + ox) * self.c))
            })
        })
    }
}

/// The input row (or column) of tap `k` of output position `o` along axis `a`, if inside.
fn tap(w: &Window2d, a: usize, o: usize, k: usize, size: usize) -> Option<usize> {
    let p = o * w.strides[a] + k * w.dilations[a];
    p.checked_sub(w.pad_lo[a]).filter(|&i| i < size)
}

/// The first maximum of `x` at `taps + ch` in scan order; the first NaN wins.
fn argmax(x: &[f64], taps: &[usize], ch: usize) -> usize {
    let mut best = taps[0] + ch;
    for &t in &taps[1..] {
        let (v, b) = (x[t + ch], x[best]);
        if v > b || (v.is_nan() && !b.is_nan()) {
            best = t + ch;
        }
    }
    best
}

/// Evaluates a pooling op of `kind` over `w` with operands `ins` into a value of shape `out`.
pub(super) fn pool(
    kind: PoolKind,
    w: &Window2d,
    ins: &[&Value],
    out: &[usize],
    dt: DType,
    prec: Precision,
) -> Vec<f64> {
    let r = |v: f64| round(dt, prec, v);
    // The NHWC tensor the windows slide over: the input, or for `AvgGrad` the result.
    let image = match kind {
        PoolKind::AvgGrad { .. } => out,
        _ => ins[0].shape.as_slice(),
    };
    let pooled = match kind {
        PoolKind::AvgGrad { .. } => ins[0].shape.as_slice(),
        PoolKind::MaxGrad => ins[1].shape.as_slice(),
        _ => out,
    };
    let g = Geom {
        w,
        n: image[0],
        hw: [image[1], image[2]],
        c: image[3],
        out: [pooled[1], pooled[2]],
    };
    let c = g.c;
    match kind {
        PoolKind::Max => {
            let x = &ins[0].data;
            let mut y = Vec::with_capacity(out.iter().product());
            for (b, oy, ox, _) in g.windows() {
                let taps = g.taps(b, oy, ox);
                y.extend((0..c).map(|ch| x[argmax(x, &taps, ch)]));
            }
            y
        }
        PoolKind::MaxGather => {
            let (x, src) = (&ins[0].data, &ins[1].data);
            let mut y = Vec::with_capacity(out.iter().product());
            for (b, oy, ox, _) in g.windows() {
                let taps = g.taps(b, oy, ox);
                y.extend((0..c).map(|ch| src[argmax(x, &taps, ch)]));
            }
            y
        }
        PoolKind::MaxGrad => {
            let (x, dy) = (&ins[0].data, &ins[1].data);
            let mut dx = vec![0.0; x.len()];
            for (b, oy, ox, o) in g.windows() {
                let taps = g.taps(b, oy, ox);
                for ch in 0..c {
                    let i = argmax(x, &taps, ch);
                    dx[i] = r(dx[i] + dy[o + ch]);
                }
            }
            dx
        }
        PoolKind::Avg { .. } => {
            let x = &ins[0].data;
            let mut y = Vec::with_capacity(out.iter().product());
            for (b, oy, ox, _) in g.windows() {
                let taps = g.taps(b, oy, ox);
                let count = kind.count(w, taps.len()) as f64;
                for ch in 0..c {
                    let mut acc = -0.0;
                    for &t in &taps {
                        acc = r(acc + x[t + ch]);
                    }
                    y.push(r(acc / count));
                }
            }
            y
        }
        PoolKind::AvgGrad { .. } => {
            let dy = &ins[0].data;
            let mut dx = vec![0.0; out.iter().product()];
            for (b, oy, ox, o) in g.windows() {
                let taps = g.taps(b, oy, ox);
                let count = kind.count(w, taps.len()) as f64;
                for ch in 0..c {
                    let q = r(dy[o + ch] / count);
                    for &t in &taps {
                        dx[t + ch] = r(dx[t + ch] + q);
                    }
                }
            }
            dx
        }
    }
}
