//! The forward twin's arithmetic: for each pooled pixel, the convolution at its window's
//! pixels (up to 4 at once, 8 output channels per AVX2 vector), the bias, the ReLU and the
//! window's maximum, operation for operation what `gemm`, the elementwise kernel and the
//! pooling kernel compute (see the module docs of `conv_direct`).

use super::{Bias, MAX_K};
use crate::graph::op::ConvGeom;

/// The buffers of one run, as addresses (so closures on the pool can share them).
#[derive(Clone, Copy)]
pub(super) struct Ptrs {
    /// The input `[N, H, W, C]`.
    pub(super) x: usize,
    /// The filter `[KH, KW, C, O]` (row-major `[K, O]`).
    pub(super) w: usize,
    /// The bias `[O]` (0 without one).
    pub(super) b: usize,
    /// The activation `[N, OH, OW, O]` (written; 0 when nothing reads it).
    pub(super) y: usize,
    /// The pooled tensor `[N, PH, PW, O]` (written).
    pub(super) p: usize,
}

/// The most entries of the per-pixel tap table (`OH·OW·K`, 4 bytes each): 1 MB.
const MAX_TABLE: usize = 1 << 18;

/// The step's geometry, fixed at compile time.
pub(crate) struct Geometry {
    geo: ConvGeom,
    bias: Bias,
    /// Per convolution output pixel, `K` offsets into its image of the input (im2col's
    /// column order `(kh, kw, c)`), −1 in the padding.
    taps: Vec<i32>,
    /// The convolution pixels (`oy·OW + ox`) of each pooled pixel's window in scan order:
    /// window `i` is `win[start[i] .. start[i + 1]]`.
    win: Vec<u32>,
    start: Vec<u32>,
    /// The convolution pixels in no window (the activation only).
    uncovered: Vec<u32>,
    /// Pooled height and width.
    pooled: [usize; 2],
    /// AVX-512F and a multiple of 16 output channels: the 16-lane kernel (`kernel/wide.rs`).
    wide: bool,
}

/// Per convolution output pixel, `K` offsets into its image of the input (im2col's column
/// order `(kh, kw, c)`), −1 in the padding; None when the table would pass `MAX_TABLE`
/// entries or an offset would not fit an `i32`.
pub(super) fn tap_table(geo: &ConvGeom) -> Option<Vec<i32>> {
    let [oh, ow] = geo.out_hw;
    let image = geo.in_pixels().checked_mul(geo.c)?;
    let entries = oh.checked_mul(ow)?.checked_mul(geo.k())?;
    if entries > MAX_TABLE || image > i32::MAX as usize {
        return None;
    }
    let mut taps = Vec::with_capacity(entries);
    for oy in 0..oh {
        for ox in 0..ow {
            for kh in 0..geo.window.kernel[0] {
                for kw in 0..geo.window.kernel[1] {
                    for ci in 0..geo.c {
                        let at = match (geo.src(0, oy, kh), geo.src(1, ox, kw)) {
                            (Some(ih), Some(iw)) => ((ih * geo.in_hw[1] + iw) * geo.c + ci) as i32,
                            _ => -1,
                        };
                        taps.push(at);
                    }
                }
            }
        }
    }
    Some(taps)
}

impl Geometry {
    /// The geometry, or None when its tables would be too large (then the chain runs
    /// unfused).
    pub(super) fn new(
        geo: ConvGeom,
        bias: Bias,
        rows: Vec<Vec<usize>>,
        cols: Vec<Vec<usize>>,
        pooled: [usize; 2],
    ) -> Option<Geometry> {
        let [oh, ow] = geo.out_hw;
        let taps = tap_table(&geo)?;
        let (mut win, mut start) = (vec![], vec![0u32]);
        let mut covered = vec![false; oh * ow];
        for r in &rows {
            for c in &cols {
                for &oy in r {
                    for &ox in c {
                        win.push((oy * ow + ox) as u32);
                        covered[oy * ow + ox] = true;
                    }
                }
                start.push(win.len() as u32);
            }
        }
        let uncovered = (0..oh * ow)
            .filter(|&i| !covered[i])
            .map(|i| i as u32)
            .collect();
        Some(Geometry {
            taps,
            win,
            start,
            uncovered,
            pooled,
            wide: geo.o.is_multiple_of(16) && super::avx512(),
            bias,
            geo,
        })
    }

    /// Runs the step: images split over `threads` in contiguous ranges.
    ///
    /// # Safety
    /// The addresses hold the step's types (checked at compile time against the graph);
    /// `y` and `p` overlap no operand and each other; the CPU has AVX2 and FMA.
    pub(super) unsafe fn run(&self, p: Ptrs, threads: usize) {
        let n = self.geo.n;
        let work = n * self.geo.out_pixels() * self.geo.o;
        let chunks = if threads > 1 && work >= 1 << 15 {
            threads.min(n).max(1)
        } else {
            1
        };
        let call = |k: usize| {
            for b in n * k / chunks..n * (k + 1) / chunks {
                // SAFETY: image `b < n` of each buffer; this call alone writes it; the
                // caller checked the CPU (AVX2, FMA; AVX-512F and `O % 16 == 0` when `wide`).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    if self.wide {
                        self.image512(p, b)
                    } else {
                        self.image(p, b)
                    }
                };
            }
        };
        // SAFETY: concurrent calls write disjoint images of `y` and `p` and read only.
        unsafe { crate::jit::exec::on_pool(chunks, &call) };
    }
}

#[cfg(target_arch = "x86_64")]
mod wide;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::Bias;
    use super::{Geometry, Ptrs, MAX_K};
    use std::arch::x86_64::*;

    /// Cranelift's `fmax.f32x4` on x86-64, lane for lane (`lower.isle`): both `maxps`
    /// orders, their xor blended in so `±0` gives `+0` and a NaN stays a NaN, then the
    /// NaN's payload below the quiet bit cleared.
    #[inline(always)]
    unsafe fn fmax_clif(x: __m256, y: __m256) -> __m256 {
        // SAFETY: register arithmetic; the caller runs with AVX2.
        unsafe {
            let max1 = _mm256_max_ps(x, y);
            let max2 = _mm256_max_ps(y, x);
            let xor = _mm256_xor_ps(max1, max2);
            let blended = _mm256_or_ps(max1, xor);
            let positive = _mm256_sub_ps(blended, xor);
            let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(blended, blended);
            let fraction = _mm256_srli_epi32::<10>(_mm256_castps_si256(nan));
            _mm256_andnot_ps(_mm256_castsi256_ps(fraction), positive)
        }
    }

    /// `v` replaces `best` where greater, or where `v` is a NaN and `best` is not (the
    /// pooling kernels' first-maximum, first-NaN rule).
    #[inline(always)]
    unsafe fn pool_max(v: __m256, best: __m256) -> __m256 {
        // SAFETY: register arithmetic; the caller runs with AVX2.
        unsafe {
            let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(v, best);
            let v_nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v);
            let best_num = _mm256_cmp_ps::<_CMP_ORD_Q>(best, best);
            let wins = _mm256_or_ps(gt, _mm256_and_ps(v_nan, best_num));
            _mm256_blendv_ps(best, v, wins)
        }
    }

    impl Geometry {
        /// Gathers convolution pixel `px` of image `b`'s column row into `xs` (`K` values
        /// in im2col's order, `+0.0` in the padding).
        ///
        /// # Safety
        /// `x` is image `b`'s first element; `px` is a convolution output pixel.
        #[inline(always)]
        pub(super) unsafe fn gather(&self, x: *const f32, px: u32, xs: &mut [f32; MAX_K]) {
            let k = self.geo.k();
            let taps = &self.taps[px as usize * k..(px as usize + 1) * k];
            for (v, &at) in xs.iter_mut().zip(taps) {
                // SAFETY: `at` is an offset inside the image (the table), or −1, for which
                // element 0 is read and dropped (branch-free).
                let read = unsafe { *x.add(at.max(0) as usize) };
                *v = if at >= 0 { read } else { 0.0 };
            }
        }

        /// Channels `8j .. 8j + 8` of the activation at 4 pixels whose columns are `xs`:
        /// `gemm`'s chain `acc = fma(x̂[k], w[k], acc)` from `+0.0`, then the epilogue.
        ///
        /// # Safety
        /// `w` holds `[K, O]`, `b` `[O]` (unless there is no bias); `8j + 8 <= O`.
        #[inline(always)]
        unsafe fn activations(
            &self,
            xs: &[[f32; MAX_K]; 4],
            w: *const f32,
            b: *const f32,
            j: usize,
        ) -> [__m256; 4] {
            let (k, o) = (self.geo.k(), self.geo.o);
            // SAFETY (whole block): row `kk < K` of `w` has `O ≥ 8j + 8` elements; the
            // bias has `O`.
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 4];
                for kk in 0..k {
                    let wv = _mm256_loadu_ps(w.add(kk * o + 8 * j));
                    for (a, x) in acc.iter_mut().zip(xs) {
                        *a = _mm256_fmadd_ps(_mm256_set1_ps(x[kk]), wv, *a);
                    }
                }
                let zero = _mm256_setzero_ps();
                for a in &mut acc {
                    let t = match self.bias {
                        Bias::None => *a,
                        Bias::After => _mm256_add_ps(*a, _mm256_loadu_ps(b.add(8 * j))),
                        Bias::Before => _mm256_add_ps(_mm256_loadu_ps(b.add(8 * j)), *a),
                    };
                    *a = fmax_clif(zero, t);
                }
                acc
            }
        }

        /// Image `b`: every pooled pixel's window, and the activation where it is read.
        ///
        /// # Safety
        /// Image `b < n` of each buffer; no other call writes image `b` of `y` or `p`; the
        /// CPU has AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        pub(super) unsafe fn image(&self, p: Ptrs, b: usize) {
            let geo = &self.geo;
            let (o, [oh, ow], [ph, pw]) = (geo.o, geo.out_hw, self.pooled);
            let x = (p.x as *const f32).wrapping_add(b * geo.in_pixels() * geo.c);
            let (w, bias) = (p.w as *const f32, p.b as *const f32);
            let y = (p.y as *mut f32).wrapping_add(b * oh * ow * o);
            let pooled = (p.p as *mut f32).wrapping_add(b * ph * pw * o);
            let mut xs = [[0f32; MAX_K]; 4];
            for (i, se) in self.start.windows(2).enumerate() {
                let out = pooled.wrapping_add(i * o);
                let window = &self.win[se[0] as usize..se[1] as usize];
                for (g, pix) in window.chunks(4).enumerate() {
                    for (xs, &px) in xs.iter_mut().zip(pix) {
                        // SAFETY: a convolution pixel; `x` is image `b`'s.
                        unsafe { self.gather(x, px, xs) };
                    }
                    for j in 0..o / 8 {
                        // SAFETY (whole block): `8j + 8 <= O`; `out` is pooled pixel `i`'s
                        // `O` channels and `y`'s pixel `px` has `O` (when `y` is written),
                        // both image `b`'s, this call's alone.
                        unsafe {
                            let v = self.activations(&xs, w, bias, j);
                            let at = out.add(8 * j);
                            let mut best = if g == 0 {
                                v[0]
                            } else {
                                pool_max(v[0], _mm256_loadu_ps(at))
                            };
                            for &vi in &v[1..pix.len()] {
                                best = pool_max(vi, best);
                            }
                            _mm256_storeu_ps(at, best);
                            if p.y != 0 {
                                for (&vi, &px) in v.iter().zip(pix) {
                                    _mm256_storeu_ps(y.add(px as usize * o + 8 * j), vi);
                                }
                            }
                        }
                    }
                }
            }
            if p.y == 0 {
                return;
            }
            // Pixels in no window: only the activation.
            for &px in &self.uncovered {
                // SAFETY: a convolution pixel of image `b`.
                unsafe { self.gather(x, px, &mut xs[0]) };
                for j in 0..o / 8 {
                    // SAFETY: as above: `y`'s pixel `px` of image `b`.
                    unsafe {
                        let v = self.activations(&xs, w, bias, j);
                        _mm256_storeu_ps(y.add(px as usize * o + 8 * j), v[0]);
                    }
                }
            }
        }
    }
}
