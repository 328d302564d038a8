//! Pooling steps (`Op::Pool`): native loops over NHWC windows, one step per pooling node.
//!
//! This is a first step towards issue 17's Cranelift pooling kernels: rustc-compiled loops,
//! not a Cranelift function per op. They are written for the vectorizer all the same: in
//! NHWC a window tap is `C` contiguous channels, so every inner loop runs across channels
//! with no branch (the max's "greater, or a NaN over a number" test is a select), and the
//! taps inside the input are listed once per output row and column, so no tap is tested
//! against the padding in the inner loops.
//!
//! The arithmetic is the interpreter's, operation for operation (the semantics are in the
//! docs of `graph::op::pool`): the same scan order, the same first-maximum and first-NaN
//! rule, the average summed from `-0.0` in scan order then divided by the count, gradients
//! added into `+0.0` window by window in row-major order. Each of those is one IEEE operation
//! in the dtype, which is what the interpreter's per-operation rounding computes, so the two
//! agree bit for bit. A step is split over the pool by whole images: an image's windows read
//! and write only that image, so the bits do not depend on the thread count (invariant 13).

use super::buffers::{Buffers, Loc};
use super::exec::on_pool;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::op::{PoolKind, Ty, Window2d};
use crate::graph::{GraphData, NodeId};
use std::ops::{Add, Div};

/// Below this many tap visits a pooling step runs on one thread.
const MIN_PARALLEL_WORK: usize = 1 << 16;

/// One pooling step, its geometry fixed at compile time.
pub(super) struct PoolStep {
    pub(super) kind: PoolKind,
    pub(super) args: Vec<Loc>,
    pub(super) out: Loc,
    pub(super) node: NodeId,
    dtype: DType,
    /// Images in the batch.
    n: usize,
    /// The image's height, width and channels.
    hwc: [usize; 3],
    /// The pooled height and width.
    out_hw: [usize; 2],
    /// The input rows (columns) each output row (column) reads, in scan order.
    rows: Vec<Vec<usize>>,
    cols: Vec<Vec<usize>>,
    /// The divisor of each window of an average: its row count and column count, or the
    /// kernel's when the padding counts.
    whole: Option<usize>,
    /// No input pixel lies in two windows (stride at least the extent on both axes, as the
    /// 2×2/2 pooling of a convnet): `MaxGrad` then writes each tap once instead of adding.
    disjoint: bool,
}

fn dims(t: &Ty) -> Result<Vec<usize>> {
    t.shape
        .to_fixed()
        .filter(|d| d.len() == 4)
        .ok_or_else(|| Error::invalid(format!("jit: a pooling operand has type {t}")))
}

/// The inside taps of each output position along axis `a`.
fn taps(w: &Window2d, a: usize, size: usize, out: usize) -> Vec<Vec<usize>> {
    (0..out)
        .map(|o| {
            (0..w.kernel[a])
                .filter_map(|k| {
                    (o * w.strides[a] + k * w.dilations[a])
                        .checked_sub(w.pad_lo[a])
                        .filter(|&i| i < size)
                })
                .collect()
        })
        .collect()
}

/// The step of pooling node `id`, whose operands and output live at `args` and `out`.
pub(super) fn step(
    g: &GraphData,
    id: NodeId,
    kind: PoolKind,
    w: &Window2d,
    args: Vec<Loc>,
    out: Loc,
) -> Result<PoolStep> {
    let n = g.node(id);
    // The image the windows slide over, and the pooled tensor; checked against the shape
    // rule here, since the loops below index buffers sized from these types.
    let operand = |i: usize| g.node(n.inputs[i]).ty.clone();
    let (image, pooled) = match kind {
        PoolKind::Max | PoolKind::Avg { .. } | PoolKind::MaxGather => (operand(0), n.ty.clone()),
        PoolKind::MaxGrad => (operand(0), operand(1)),
        PoolKind::AvgGrad { .. } => (n.ty.clone(), operand(0)),
    };
    let (im, po) = (dims(&image)?, dims(&pooled)?);
    let float = matches!(image.dtype, DType::F32 | DType::F64);
    let same = |t: &Ty| t.dtype == image.dtype;
    let tys_ok = float
        && same(&pooled)
        && same(&n.ty)
        && n.inputs.iter().all(|&i| same(&g.node(i).ty))
        && im[0] == po[0]
        && im[3] == po[3]
        && w.out_hw([im[1], im[2]]).ok() == Some([po[1], po[2]])
        && match kind {
            PoolKind::MaxGather | PoolKind::MaxGrad => operand(1).shape.to_fixed().is_some(),
            _ => true,
        }
        && match kind {
            PoolKind::MaxGather => operand(1) == image,
            _ => true,
        };
    if !tys_ok || n.inputs.len() != kind.arity() {
        return Err(Error::invalid(format!(
            "jit: pooling node {} has inconsistent types",
            n.label()
        )));
    }
    let rows = taps(w, 0, im[1], po[1]);
    let cols = taps(w, 1, im[2], po[2]);
    if rows.iter().chain(&cols).any(Vec::is_empty) {
        return Err(Error::invalid(format!(
            "jit: pooling node {} has a window with no tap inside its input",
            n.label()
        )));
    }
    let whole = match kind {
        PoolKind::Avg { .. } | PoolKind::AvgGrad { .. } if kind.count(w, 0) != 0 => {
            Some(kind.count(w, 0))
        }
        _ => None,
    };
    Ok(PoolStep {
        kind,
        args,
        out,
        node: id,
        dtype: image.dtype,
        n: im[0],
        hwc: [im[1], im[2], im[3]],
        out_hw: [po[1], po[2]],
        rows,
        cols,
        whole,
        disjoint: (0..2).all(|a| w.extent(a).is_ok_and(|e| w.strides[a] >= e)),
    })
}

/// The float types the loops run in.
trait Float: Copy + PartialOrd + Add<Output = Self> + Div<Output = Self> + Send + Sync {
    const ZERO: Self;
    const NEG_ZERO: Self;
    fn count(n: usize) -> Self;
    /// `a` if `w`, else `b`, as bit operations: written as an `if`, LLVM turns the update
    /// of a slice element into a conditional store per lane, which does not vectorize.
    fn pick(w: bool, a: Self, b: Self) -> Self;
}

/// `a` if `w`, else `b`, as bit operations (see [`Float::pick`]).
#[inline(always)]
fn pick_u32(w: bool, a: u32, b: u32) -> u32 {
    let m = u32::from(w).wrapping_neg();
    (a & m) | (b & !m)
}

impl Float for f32 {
    const ZERO: f32 = 0.0;
    const NEG_ZERO: f32 = -0.0;
    fn count(n: usize) -> f32 {
        n as f32
    }
    #[inline(always)]
    fn pick(w: bool, a: f32, b: f32) -> f32 {
        f32::from_bits(pick_u32(w, a.to_bits(), b.to_bits()))
    }
}

impl Float for f64 {
    const ZERO: f64 = 0.0;
    const NEG_ZERO: f64 = -0.0;
    fn count(n: usize) -> f64 {
        n as f64
    }
    #[inline(always)]
    fn pick(w: bool, a: f64, b: f64) -> f64 {
        let m = u64::from(w).wrapping_neg();
        f64::from_bits((a.to_bits() & m) | (b.to_bits() & !m))
    }
}

/// `v` replaces `best` if greater, or if `v` is a NaN and `best` is not (`v != v` is NaN).
#[inline(always)]
#[allow(clippy::eq_op)] // `x != x` is the NaN test
fn wins<T: Float>(v: T, best: T) -> bool {
    (v > best) | ((v != v) & (best == best))
}

impl PoolStep {
    fn image_len(&self) -> usize {
        self.hwc.iter().product()
    }

    fn pooled_len(&self) -> usize {
        self.out_hw[0] * self.out_hw[1] * self.hwc[2]
    }

    /// The flat offset, within an image, of the pixel `(iy, ix)`'s first channel.
    #[inline(always)]
    fn at(&self, iy: usize, ix: usize) -> usize {
        (iy * self.hwc[1] + ix) * self.hwc[2]
    }

    /// Runs the step: operands and output from `bufs`, split by images over the pool.
    pub(super) fn run(&self, bufs: &mut Buffers<'_>, threads: usize) {
        let kernel = self.rows.iter().map(Vec::len).max().unwrap_or(0)
            * self.cols.iter().map(Vec::len).max().unwrap_or(0);
        let work = self.n * self.pooled_len() * kernel.max(1);
        let chunks = if threads > 1 && work >= MIN_PARALLEL_WORK {
            threads.min(self.n).max(1)
        } else {
            1
        };
        let (ins, out) = self.pointers(bufs);
        let call = |c: usize| {
            let (lo, hi) = (self.n * c / chunks, self.n * (c + 1) / chunks);
            self.images_at(&ins, out, lo, hi);
        };
        // SAFETY: concurrent calls write disjoint images of the output (see `images_at`).
        unsafe { on_pool(chunks, &call) };
    }

    /// Runs images `[lo, hi)` of the step on the calling thread (`hi <= n`): what a caller
    /// that produces the operand image by image (a convolution's tiles) runs while those
    /// images are in cache. Images outside the range are neither read nor written.
    pub(super) fn run_images(&self, bufs: &mut Buffers<'_>, lo: usize, hi: usize) {
        let (ins, out) = self.pointers(bufs);
        self.images_at(&ins, out, lo, hi.min(self.n));
    }

    fn pointers(&self, bufs: &mut Buffers<'_>) -> (Vec<*const u8>, *mut u8) {
        let ins = self
            .args
            .iter()
            .map(|&l| bufs.ptr(l) as *const u8)
            .collect();
        (ins, bufs.ptr(self.out))
    }

    fn images_at(&self, ins: &[*const u8], out: *mut u8, lo: usize, hi: usize) {
        match self.dtype {
            DType::F64 => self.images_typed::<f64>(ins, out, lo, hi),
            _ => self.images_typed::<f32>(ins, out, lo, hi),
        }
    }

    fn images_typed<T: Float>(&self, ins: &[*const u8], out: *mut u8, lo: usize, hi: usize) {
        let (img, pooled) = (self.image_len(), self.pooled_len());
        if img == 0 || pooled == 0 {
            return;
        }
        // (operand lengths per image, output length per image)
        let (in_lens, out_len): (Vec<usize>, usize) = match self.kind {
            PoolKind::Max | PoolKind::Avg { .. } => (vec![img], pooled),
            PoolKind::MaxGather => (vec![img, img], pooled),
            PoolKind::MaxGrad => (vec![img, pooled], img),
            PoolKind::AvgGrad { .. } => (vec![pooled], img),
        };
        for b in lo..hi.min(self.n) {
            // SAFETY: every operand buffer holds `n` images of its per-image length
            // (its type, checked against the shape rule by `step`; feeds and variables
            // have exactly their types, slots are validated to be at least their
            // values' sizes, outputs are allocated from their types), and `b < n`.
            // The output is a slot or an output array of its own (the validated
            // buffer assignment lets only elementwise kernels write over an operand),
            // and concurrent calls take disjoint ranges of images, so the one mutable
            // slice aliases nothing another thread or an operand slice touches.
            let (src, dst) = unsafe {
                let src: Vec<&[T]> = ins
                    .iter()
                    .zip(&in_lens)
                    .map(|(&p, &len)| std::slice::from_raw_parts((p as *const T).add(b * len), len))
                    .collect();
                let dst = std::slice::from_raw_parts_mut((out as *mut T).add(b * out_len), out_len);
                (src, dst)
            };
            self.image(&src, dst);
        }
    }

    /// One image: `src` its operands' slices, `dst` its output's.
    fn image<T: Float>(&self, src: &[&[T]], dst: &mut [T]) {
        let c = self.hwc[2];
        let [oh, ow] = self.out_hw;
        let mut best = vec![T::ZERO; c];
        let mut arg = vec![0u32; c];
        if matches!(self.kind, PoolKind::MaxGrad | PoolKind::AvgGrad { .. }) {
            dst.fill(T::ZERO);
        }
        for oy in 0..oh {
            for ox in 0..ow {
                let o = (oy * ow + ox) * c;
                let (rows, cols) = (&self.rows[oy], &self.cols[ox]);
                match self.kind {
                    PoolKind::Max => self.max_window(src[0], rows, cols, &mut dst[o..o + c]),
                    PoolKind::MaxGather => {
                        let (x, g) = (src[0], src[1]);
                        self.gather_window(x, g, rows, cols, &mut best, &mut dst[o..o + c])
                    }
                    PoolKind::MaxGrad => {
                        self.argmax_window(src[0], rows, cols, &mut best, &mut arg);
                        // Each tap adds `dy` where it is the argmax and `+0.0` elsewhere: a
                        // select per channel rather than a scatter, so the loop vectorizes.
                        // Adding `+0.0` keeps every bit: `dx` starts at `+0.0` and a sum is
                        // `-0.0` only if both terms are, so `dx` is never `-0.0` (and a NaN
                        // stays the NaN it is).
                        let dy = &src[1][o..o + c];
                        let mut t = 0u32;
                        for &iy in rows {
                            for &ix in cols {
                                let at = self.at(iy, ix);
                                let d = &mut dst[at..at + c];
                                if self.disjoint {
                                    // `+0.0 + x` is what adding into the fill gives; no
                                    // other window reads or writes this tap.
                                    for ((d, &a), &g) in d.iter_mut().zip(&arg).zip(dy) {
                                        *d = T::ZERO + T::pick(a == t, g, T::ZERO);
                                    }
                                } else {
                                    for ((d, &a), &g) in d.iter_mut().zip(&arg).zip(dy) {
                                        *d = *d + T::pick(a == t, g, T::ZERO);
                                    }
                                }
                                t += 1;
                            }
                        }
                    }
                    PoolKind::Avg { .. } => {
                        let count = T::count(self.whole.unwrap_or(rows.len() * cols.len()));
                        let y = &mut dst[o..o + c];
                        y.fill(T::NEG_ZERO);
                        for &iy in rows {
                            for &ix in cols {
                                let at = self.at(iy, ix);
                                for (a, &v) in y.iter_mut().zip(&src[0][at..at + c]) {
                                    *a = *a + v;
                                }
                            }
                        }
                        y.iter_mut().for_each(|a| *a = *a / count);
                    }
                    PoolKind::AvgGrad { .. } => {
                        let count = T::count(self.whole.unwrap_or(rows.len() * cols.len()));
                        for (q, &g) in best.iter_mut().zip(&src[0][o..o + c]) {
                            *q = g / count;
                        }
                        for &iy in rows {
                            for &ix in cols {
                                let at = self.at(iy, ix);
                                for (d, &q) in dst[at..at + c].iter_mut().zip(&best) {
                                    *d = *d + q;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The window's maximum per channel into `y` (first tap, then a select per later tap).
    #[inline(always)]
    fn max_window<T: Float>(&self, x: &[T], rows: &[usize], cols: &[usize], y: &mut [T]) {
        let c = y.len();
        let first = self.at(rows[0], cols[0]);
        y.copy_from_slice(&x[first..first + c]);
        for (r, &iy) in rows.iter().enumerate() {
            for (k, &ix) in cols.iter().enumerate() {
                if r == 0 && k == 0 {
                    continue;
                }
                let at = self.at(iy, ix);
                for (b, &v) in y.iter_mut().zip(&x[at..at + c]) {
                    *b = T::pick(wins(v, *b), v, *b);
                }
            }
        }
    }

    /// The window's maximum per channel into `best`, and into `arg` the number of its tap
    /// (in scan order over the inside taps; 32 bits, as wide as an `f32` lane).
    #[inline(always)]
    fn argmax_window<T: Float>(
        &self,
        x: &[T],
        rows: &[usize],
        cols: &[usize],
        best: &mut [T],
        arg: &mut [u32],
    ) {
        let c = best.len();
        let first = self.at(rows[0], cols[0]);
        best.copy_from_slice(&x[first..first + c]);
        arg.fill(0);
        let mut t = 0u32;
        for &iy in rows {
            for &ix in cols {
                if t > 0 {
                    let at = self.at(iy, ix);
                    for ((b, a), &v) in best.iter_mut().zip(arg.iter_mut()).zip(&x[at..at + c]) {
                        let w = wins(v, *b);
                        *b = T::pick(w, v, *b);
                        *a = pick_u32(w, t, *a);
                    }
                }
                t += 1;
            }
        }
    }

    /// `g` at the window's argmax per channel into `y`, the maximum of `x` tracked in `best`.
    #[inline(always)]
    fn gather_window<T: Float>(
        &self,
        x: &[T],
        g: &[T],
        rows: &[usize],
        cols: &[usize],
        best: &mut [T],
        y: &mut [T],
    ) {
        let c = best.len();
        let first = self.at(rows[0], cols[0]);
        best.copy_from_slice(&x[first..first + c]);
        y.copy_from_slice(&g[first..first + c]);
        for (r, &iy) in rows.iter().enumerate() {
            for (k, &ix) in cols.iter().enumerate() {
                if r == 0 && k == 0 {
                    continue;
                }
                let at = self.at(iy, ix);
                let taps = x[at..at + c].iter().zip(&g[at..at + c]);
                for ((b, out), (&v, &gv)) in best.iter_mut().zip(y.iter_mut()).zip(taps) {
                    let w = wins(v, *b);
                    *b = T::pick(w, v, *b);
                    *out = T::pick(w, gv, *out);
                }
            }
        }
    }
}
