//! The forward twin's arithmetic with AVX-512: 16 output channels per vector, so the MNIST
//! convnet's 32 channels are two vectors and a window's 4 pixels eight accumulators, each
//! tap's 4 inputs broadcast once for all channels (the AVX2 kernel broadcasts them once per
//! 8 channels). Per lane it is the AVX2 kernel's arithmetic instruction for instruction — the
//! same `fma` chain over `k` from `+0.0`, the bias `add` in the same operand order, Cranelift's
//! `fmax.f32x4` sequence and the pool's first-maximum, first-NaN rule — so the bits are the
//! same (and so `gemm`'s, the elementwise kernel's and the pool's: see `conv_direct`).
//! Taken when the CPU has AVX-512F and the output channels are a multiple of 16.

use super::super::Bias;
use super::{Geometry, Ptrs, MAX_K};
use std::arch::x86_64::*;

/// `fmax_clif` of the AVX2 kernel, 16 lanes: both `maxps` orders, their xor blended in so
/// `±0` gives `+0` and a NaN stays a NaN, then the NaN's payload below the quiet bit cleared.
#[inline(always)]
unsafe fn fmax_clif(x: __m512, y: __m512) -> __m512 {
    // SAFETY: register arithmetic; the caller runs with AVX-512F.
    unsafe {
        let max1 = _mm512_max_ps(x, y);
        let max2 = _mm512_max_ps(y, x);
        let xor = _mm512_castsi512_ps(_mm512_xor_si512(
            _mm512_castps_si512(max1),
            _mm512_castps_si512(max2),
        ));
        let blended = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(max1),
            _mm512_castps_si512(xor),
        ));
        let positive = _mm512_sub_ps(blended, xor);
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(blended, blended);
        let ones = _mm512_maskz_mov_epi32(nan, _mm512_set1_epi32(-1));
        let fraction = _mm512_srli_epi32::<10>(ones);
        _mm512_castsi512_ps(_mm512_andnot_si512(fraction, _mm512_castps_si512(positive)))
    }
}

/// `v` replaces `best` where greater, or where `v` is a NaN and `best` is not.
#[inline(always)]
unsafe fn pool_max(v: __m512, best: __m512) -> __m512 {
    // SAFETY: register arithmetic; the caller runs with AVX-512F.
    unsafe {
        let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best);
        let v_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        let best_num = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(best, best);
        _mm512_mask_blend_ps(gt | (v_nan & best_num), best, v)
    }
}

/// The columns of a window's pixels `pix` (up to 4) into `xs`. Not inlined into the
/// AVX-512 function on purpose: there LLVM turns the taps' loads into `vgatherdps`, which
/// the gather-data-sampling mitigation makes slow on recent Intel CPUs (measured here).
///
/// # Safety
/// `x` is an image of the input; every `px` a convolution pixel.
#[inline(never)]
unsafe fn gather4(g: &Geometry, x: *const f32, pix: &[u32], xs: &mut [[f32; MAX_K]; 4]) {
    for (xs, &px) in xs.iter_mut().zip(pix) {
        // SAFETY: the caller's contract.
        unsafe { g.gather(x, px, xs) };
    }
}

impl Geometry {
    /// The activations of up to 4 pixels whose columns are `xs`, at channels
    /// `32j .. 32j + 32` (two vectors; `halves` is 1 when only 16 remain).
    ///
    /// # Safety
    /// `w` holds `[K, O]`, `b` `[O]` (unless there is no bias); `32j + 16·halves <= O`.
    #[inline(always)]
    unsafe fn activations512(
        &self,
        xs: &[[f32; MAX_K]; 4],
        w: *const f32,
        b: *const f32,
        j: usize,
        halves: usize,
    ) -> [[__m512; 2]; 4] {
        let (k, o) = (self.geo.k(), self.geo.o);
        // SAFETY (whole block): row `kk < K` of `w` has `O ≥ 32j + 16·halves` elements; the
        // bias has `O`; the second half is loaded only when it exists.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; 4];
            for kk in 0..k {
                let row = w.add(kk * o + 32 * j);
                let w0 = _mm512_loadu_ps(row);
                let w1 = if halves == 2 {
                    _mm512_loadu_ps(row.add(16))
                } else {
                    _mm512_setzero_ps()
                };
                for (a, x) in acc.iter_mut().zip(xs) {
                    let xv = _mm512_set1_ps(x[kk]);
                    a[0] = _mm512_fmadd_ps(xv, w0, a[0]);
                    a[1] = _mm512_fmadd_ps(xv, w1, a[1]);
                }
            }
            let zero = _mm512_setzero_ps();
            for a in &mut acc {
                for (h, v) in a.iter_mut().enumerate().take(halves) {
                    let bv = || _mm512_loadu_ps(b.add(32 * j + 16 * h));
                    let t = match self.bias {
                        Bias::None => *v,
                        Bias::After => _mm512_add_ps(*v, bv()),
                        Bias::Before => _mm512_add_ps(bv(), *v),
                    };
                    *v = fmax_clif(zero, t);
                }
            }
            acc
        }
    }

    /// Image `b` with 16-lane vectors (see the module docs); as the AVX2 `image`.
    ///
    /// # Safety
    /// Image `b < n` of each buffer; no other call writes image `b` of `y` or `p`; the
    /// CPU has AVX-512F, AVX2 and FMA; `O` is a multiple of 16.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn image512(&self, p: Ptrs, b: usize) {
        let geo = &self.geo;
        let (o, [oh, ow], [ph, pw]) = (geo.o, geo.out_hw, self.pooled);
        let x = (p.x as *const f32).wrapping_add(b * geo.in_pixels() * geo.c);
        let (w, bias) = (p.w as *const f32, p.b as *const f32);
        let y = (p.y as *mut f32).wrapping_add(b * oh * ow * o);
        let pooled = (p.p as *mut f32).wrapping_add(b * ph * pw * o);
        let mut xs = [[0f32; MAX_K]; 4];
        let groups = o.div_ceil(32);
        let halves = |j: usize| if 32 * j + 32 <= o { 2 } else { 1 };
        for (i, se) in self.start.windows(2).enumerate() {
            let out = pooled.wrapping_add(i * o);
            let window = &self.win[se[0] as usize..se[1] as usize];
            for (g, pix) in window.chunks(4).enumerate() {
                // SAFETY: convolution pixels; `x` is image `b`'s.
                unsafe { gather4(self, x, pix, &mut xs) };
                for j in 0..groups {
                    let hv = halves(j);
                    // SAFETY (whole block): `32j + 16·hv <= O`; `out` is pooled pixel `i`'s
                    // `O` channels and `y`'s pixel `px` has `O` (when `y` is written), both
                    // image `b`'s, this call's alone.
                    unsafe {
                        let v = self.activations512(&xs, w, bias, j, hv);
                        for h in 0..hv {
                            let at = out.add(32 * j + 16 * h);
                            let mut best = if g == 0 {
                                v[0][h]
                            } else {
                                pool_max(v[0][h], _mm512_loadu_ps(at))
                            };
                            for vi in &v[1..pix.len()] {
                                best = pool_max(vi[h], best);
                            }
                            _mm512_storeu_ps(at, best);
                            if p.y != 0 {
                                for (vi, &px) in v.iter().zip(pix) {
                                    let to = y.add(px as usize * o + 32 * j + 16 * h);
                                    _mm512_storeu_ps(to, vi[h]);
                                }
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
            unsafe { gather4(self, x, &[px], &mut xs) };
            for j in 0..groups {
                let hv = halves(j);
                // SAFETY: as above: `y`'s pixel `px` of image `b`.
                unsafe {
                    let v = self.activations512(&xs, w, bias, j, hv);
                    for (h, &vh) in v[0].iter().enumerate().take(hv) {
                        _mm512_storeu_ps(y.add(px as usize * o + 32 * j + 16 * h), vh);
                    }
                }
            }
        }
    }
}
