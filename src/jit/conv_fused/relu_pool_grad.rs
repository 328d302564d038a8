//! The backward twin's arithmetic: a max pool's gradient, the ReLU mask and the bias
//! column sum in one pass over each image, operation for operation what the three steps
//! it replaces compute (see the module docs of `conv_fused`).

use super::ReluPoolGrad;
use crate::dtype::DType;

/// The float types the pass runs in.
pub(super) trait Float:
    Copy + PartialOrd + std::ops::Add<Output = Self> + Send + Sync
{
    const ZERO: Self;
    /// `a` if `w`, else `b`, as bit operations (so the channel loops vectorize).
    fn pick(w: bool, a: Self, b: Self) -> Self;
}

impl Float for f32 {
    const ZERO: f32 = 0.0;
    #[inline(always)]
    fn pick(w: bool, a: f32, b: f32) -> f32 {
        let m = u32::from(w).wrapping_neg();
        f32::from_bits((a.to_bits() & m) | (b.to_bits() & !m))
    }
}

impl Float for f64 {
    const ZERO: f64 = 0.0;
    #[inline(always)]
    fn pick(w: bool, a: f64, b: f64) -> f64 {
        let m = u64::from(w).wrapping_neg();
        f64::from_bits((a.to_bits() & m) | (b.to_bits() & !m))
    }
}

/// `v` replaces `best` if greater, or if `v` is a NaN and `best` is not: the pooling
/// steps' first-maximum, first-NaN rule.
#[inline(always)]
#[allow(clippy::eq_op)] // `x != x` is the NaN test
fn wins<T: Float>(v: T, best: T) -> bool {
    (v > best) | ((v != v) & (best == best))
}

/// The buffers of one run, as addresses (so closures on the pool can share them).
#[derive(Clone, Copy)]
pub(super) struct Ptrs {
    /// The ReLU's output `[N, H, W, C]` (the pool's operand).
    pub(super) y: usize,
    /// The pooled gradient `[N, OH, OW, C]`.
    pub(super) dy: usize,
    /// The pre-activation gradient `[N, H, W, C]` (written).
    pub(super) dpre: usize,
    /// Where the bias gradient `[C]` goes (the twin's region of scratch), 0 for none.
    pub(super) db: usize,
    /// The convolution's input, when the twin computes the filter gradient's blocks (else 0).
    pub(super) x: usize,
    /// Where the filter gradient's blocks go (the twin's region of scratch), 0 for none.
    pub(super) blocks: usize,
}

impl ReluPoolGrad {
    /// Runs the pass: images split over `threads` in contiguous ranges; the bias sum is
    /// one sequential sum over the pixels in order per channel (the reduction kernel's
    /// order), taken inline by the first range and continued over the others' images once
    /// they are done, channels split over the threads.
    ///
    /// # Safety
    /// The addresses hold the step's types (checked at compile time against the graph;
    /// buffers have their types); `dpre` overlaps neither `dy` nor `db` (`db` is the twin's
    /// own region of scratch, as are the filter's `blocks`, and `x`, when given, holds the
    /// convolution's input in f32). `dpre` may be `y`'s buffer: a window's `y` is read before
    /// its `dpre` is written, and no other window reads those pixels.
    pub(super) unsafe fn run(&self, p: Ptrs, threads: usize) {
        match self.dtype {
            // SAFETY: the caller's contract, in the step's dtype.
            DType::F64 => unsafe { self.run_typed::<f64>(p, threads) },
            // SAFETY: as above (the compile admits only f32 and f64).
            _ => unsafe { self.run_typed::<f32>(p, threads) },
        }
    }

    unsafe fn run_typed<T: Float>(&self, p: Ptrs, threads: usize) {
        let c = self.hwc[2];
        let n = self.n;
        let chunks = if threads > 1 && n * self.image_len() >= 1 << 16 {
            threads.min(n).max(1)
        } else {
            1
        };
        let first_end = n / chunks;
        let sums = p.db != 0;
        let len = self.image_len();
        let acc = std::sync::Mutex::new(vec![T::ZERO; c]);
        let call = |k: usize| {
            let (lo, hi) = (n * k / chunks, n * (k + 1) / chunks);
            let mut local = if k == 0 && sums {
                Some(vec![T::ZERO; c])
            } else {
                None
            };
            let mut scratch = vec![T::ZERO; 2 * c];
            let (best, val) = scratch.split_at_mut(c);
            let mut arg = vec![0u32; c];
            let mut col = vec![];
            // `dpre` read by nothing but the fused sum and filter: this call's images go to
            // one image of its own (in cache) unless the sum reads them back later.
            let mut own = if self.private && (k == 0 || !sums) {
                vec![T::ZERO; len]
            } else {
                vec![]
            };
            for b in lo..hi {
                let d = if own.is_empty() {
                    (p.dpre as *mut T).wrapping_add(b * len)
                } else {
                    own.as_mut_ptr()
                };
                // SAFETY: image `b < n` of each buffer, and `d` image `b` of `dpre` or this
                // call's own image; this call alone writes it.
                unsafe { self.image::<T>(p, b, d, best, val, &mut arg) };
                if let (Some(f), true) = (&self.filter, p.blocks != 0) {
                    // SAFETY: the filter is planned only for f32 steps; `d` was just
                    // written; `x` is the convolution's input (computed before the twin)
                    // and block `b` of the region is this call's alone.
                    unsafe {
                        f.plan.block_of(
                            p.x as *const f32,
                            d as *const f32,
                            p.blocks as *mut f32,
                            b,
                            &mut col,
                        )
                    };
                }
                if let Some(acc) = local.as_mut() {
                    // SAFETY: image `b`'s `dpre`, just written by this call.
                    unsafe { self.sum_image::<T>(d, 0, acc) };
                }
            }
            if let (Some(l), Ok(mut a)) = (local, acc.lock()) {
                *a = l;
            }
        };
        // SAFETY: concurrent calls write disjoint images of `dpre` and read only.
        unsafe { crate::jit::exec::on_pool(chunks, &call) };
        if !sums {
            return;
        }
        let Ok(mut acc) = acc.into_inner() else {
            return;
        };
        // The other ranges' images, continuing each channel's sum in order; the channels are
        // split over the threads in runs of 16 elements (whole cache lines of `f32`).
        let runs = c.div_ceil(16);
        let groups = chunks.min(runs).max(1);
        let bound = |k: usize| (runs * k / groups * 16).min(c);
        let mut parts = vec![];
        let mut tail: &mut [T] = &mut acc;
        for k in 0..groups {
            let (part, rest) = std::mem::take(&mut tail).split_at_mut(bound(k + 1) - bound(k));
            parts.push(std::sync::Mutex::new((bound(k), part)));
            tail = rest;
        }
        let rest = |k: usize| {
            if let Ok(mut g) = parts[k].lock() {
                let (c0, part) = &mut *g;
                for b in first_end..n {
                    let d = (p.dpre as *const T).wrapping_add(b * len);
                    // SAFETY: every image of `dpre` past the first range is written (the
                    // pass has returned; only the first range may have used its own).
                    unsafe { self.sum_image::<T>(d, *c0, part) };
                }
            }
        };
        // SAFETY: each call adds into its own channels of the sum; all only read `dpre`.
        unsafe { crate::jit::exec::on_pool(groups, &rest) };
        drop(parts);
        let db = p.db as *mut T;
        for (i, &v) in acc.iter().enumerate() {
            // SAFETY: `db` is a region of `C` elements of scratch that only this step writes.
            unsafe { *db.add(i) = v };
        }
    }

    /// `acc[i] = acc[i] + d[pixel, c0 + i]` over an image's pixels in order.
    ///
    /// # Safety
    /// `d` holds an image of `dpre`, written; `c0 + acc.len() <= C`.
    unsafe fn sum_image<T: Float>(&self, d: *const T, c0: usize, acc: &mut [T]) {
        let (len, c) = (self.image_len(), self.hwc[2]);
        // SAFETY: the caller's contract.
        let d = unsafe { std::slice::from_raw_parts(d, len) };
        for px in d.chunks_exact(c) {
            for (a, &v) in acc.iter_mut().zip(&px[c0..]) {
                *a = *a + v;
            }
        }
    }

    /// Image `b`: every window's argmax, the pooled gradient at it (`+0.0 + dy`, `+0.0`
    /// elsewhere, as the disjoint pooling gradient stores), then the ReLU mask
    /// (`y == 0 ? +0.0 : dx`), into `d` (image `b` of `dpre`, or an image of the caller's
    /// own); pixels in no window get `+0.0`.
    ///
    /// The mask needs `y` only at the argmax, where it is the window's maximum: elsewhere
    /// `dx` is `+0.0` and either side of the select is `+0.0`. So a window's taps are read
    /// once (the argmax), its value `best == 0 ? +0.0 : +0.0 + dy` computed once, and each
    /// tap stored as that value or `+0.0`: the bits the three steps give.
    ///
    /// # Safety
    /// Image `b < n` of each buffer; `d` holds an image (`H·W·C`), image `b` of `dpre` or
    /// the caller's own, which no other call touches.
    unsafe fn image<T: Float>(
        &self,
        p: Ptrs,
        b: usize,
        d: *mut T,
        best: &mut [T],
        val: &mut [T],
        arg: &mut [u32],
    ) {
        let [_, w, c] = self.hwc;
        let [oh, ow] = self.out_hw;
        let (len, plen) = (self.image_len(), oh * ow * c);
        let y = (p.y as *const T).wrapping_add(b * len);
        let dy = (p.dy as *const T).wrapping_add(b * plen);
        let at = |iy: usize, ix: usize| (iy * w + ix) * c;
        if !self.covered {
            // Pixels in no window get `+0.0` (never read by a window: `dpre` may be `y`).
            let [in_rows, in_cols] = &self.in_window;
            for (iy, &row_in) in in_rows.iter().enumerate() {
                for (ix, &col_in) in in_cols.iter().enumerate() {
                    if !(row_in && col_in) {
                        // SAFETY: a pixel of image `b` of `dpre`, this call's own.
                        unsafe { std::ptr::write_bytes(d.add(at(iy, ix)), 0, c) };
                    }
                }
            }
        }
        for oy in 0..oh {
            for ox in 0..ow {
                let (rows, cols) = (&self.rows[oy], &self.cols[ox]);
                // SAFETY (whole block): every tap listed is inside the image (`inside`),
                // each window's `c` channels inside the pooled image. Every slice of `y`
                // is dropped before `dpre` (maybe the same buffer) is written, and the
                // windows are disjoint, so no later window reads what is written here.
                unsafe {
                    let o = (oy * ow + ox) * c;
                    best.copy_from_slice(std::slice::from_raw_parts(
                        y.add(at(rows[0], cols[0])),
                        c,
                    ));
                    arg.fill(0);
                    let mut t = 0u32;
                    for &iy in rows {
                        for &ix in cols {
                            if t > 0 {
                                let v = std::slice::from_raw_parts(y.add(at(iy, ix)), c);
                                for ((bst, a), &v) in best.iter_mut().zip(arg.iter_mut()).zip(v) {
                                    let win = wins(v, *bst);
                                    *bst = T::pick(win, v, *bst);
                                    let m = u32::from(win).wrapping_neg();
                                    *a = (t & m) | (*a & !m);
                                }
                            }
                            t += 1;
                        }
                    }
                    let g = std::slice::from_raw_parts(dy.add(o), c);
                    for ((v, &bst), &g) in val.iter_mut().zip(best.iter()).zip(g) {
                        *v = T::pick(bst == T::ZERO, T::ZERO, T::ZERO + g);
                    }
                    let mut t = 0u32;
                    for &iy in rows {
                        for &ix in cols {
                            let out = std::slice::from_raw_parts_mut(d.add(at(iy, ix)), c);
                            for ((o, &v), &a) in out.iter_mut().zip(val.iter()).zip(arg.iter()) {
                                *o = T::pick(a == t, v, T::ZERO);
                            }
                            t += 1;
                        }
                    }
                }
            }
        }
    }

    fn image_len(&self) -> usize {
        self.hwc.iter().product()
    }
}
