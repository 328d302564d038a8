//! The filter gradient of a small-K convolution without `gemm`: `dW = Σ x̂ ⊗ dy` summed per
//! image in registers, then the images added in order.
//!
//! **Why.** With im2col and `gemm` the filter gradient of a small-K layer (the MNIST
//! convnet's first, `K = 3·3·1 = 9`, `O = 32`) is a product of shape `[9, M] · [M, 32]`
//! with `M = N·OH·OW = 86,528`: `gemm`'s micro-kernel is filled a quarter at best, and the
//! column matrix is written and read again only to be consumed once. 50 MFLOP took
//! 3.2 ms (issue 17's profile, 2026-12-02). Here each image's `[K, O]` block is held in
//! vector registers (3 taps × 32 channels at a time with AVX2; 9 × 32 with AVX-512, where there are
//! 32 vector registers) while its pixels stream past, so the `dY` image is read `⌈K/3⌉`
//! (`⌈K/9⌉`) times and nothing is written but the block. Inside the backward twin
//! (`conv_fused`) the image's `dY` is the one just written, still in cache.
//!
//! **The sum, and why the bits do not depend on the thread count (invariant 13).** Image
//! `b`'s block is `Σ_p fma(x̂[p, k], dy[p, o], acc)` over its output pixels `p` in order from
//! `+0.0` (a padding tap is `+0.0`, multiplied like any input, as im2col writes it); each
//! image's block goes to its own slot of scratch, whichever thread computes it; then
//! `dW = ((block 0 + block 1) + block 2) + …` element by element, in image order (the
//! elements split over the threads). This is a different order from `gemm`'s, so the
//! result is not `gemm`'s bits: it is this kernel's, on every machine with AVX2 and FMA
//! (the AVX-512 path computes the same chains, so the same bits).
//!
//! **When.** An f32 filter gradient with one group, `1 ≤ K ≤ MAX_K`, a multiple of 8 output
//! channels, an x86-64 CPU with AVX2 and FMA, a tap table of at most 1 MB and per-image
//! blocks of at most 16 MB in scratch. `KILN_CONV_FILTER=0` keeps every filter gradient on
//! `gemm` (for comparisons); it is apart from the forward twin's `KILN_CONV_DIRECT`, since
//! this is the step's algorithm, not a fusion.

use super::MAX_K;
use crate::graph::op::ConvGeom;

/// `KILN_CONV_FILTER=0` keeps filter gradients on `gemm` (for comparisons).
fn enabled() -> bool {
    std::env::var("KILN_CONV_FILTER").map_or(true, |v| v != "0")
}

/// The most scratch the per-image blocks may take, in bytes.
const MAX_BLOCKS: usize = 16 << 20;

/// A planned direct filter gradient.
pub(crate) struct Filter {
    geo: ConvGeom,
    /// Per output pixel, `K` offsets into its image of the input, −1 in the padding.
    taps: Vec<i32>,
    /// AVX-512F and a multiple of 16 output channels: 16-wide vectors, up to 9 taps at once.
    wide: bool,
}

impl Filter {
    /// The plan for `geo` in f32, or None when the step should stay on `gemm` (see the
    /// module docs).
    pub(crate) fn new(geo: &ConvGeom) -> Option<Filter> {
        let k = geo.k();
        let ok = enabled()
            && super::cpu_ok()
            && geo.groups == 1
            && (1..=MAX_K).contains(&k)
            && geo.o > 0
            && geo.o.is_multiple_of(8);
        let blocks = geo.n.checked_mul(k)?.checked_mul(geo.o)?.checked_mul(4)?;
        if !ok || blocks > MAX_BLOCKS {
            return None;
        }
        let taps = super::kernel::tap_table(geo)?;
        Some(Filter {
            geo: geo.clone(),
            taps,
            wide: geo.o.is_multiple_of(16) && super::avx512(),
        })
    }

    /// The scratch bytes of a run: one `[K, O]` block per image.
    pub(crate) fn scratch_bytes(&self) -> usize {
        self.geo.n * self.block_len() * 4
    }

    fn block_len(&self) -> usize {
        self.geo.k() * self.geo.o
    }

    /// `dw = FilterGrad(x, dy)`: images split over `threads` into their blocks, then the
    /// blocks added in image order.
    ///
    /// # Safety
    /// `x` holds the step's input `[N, H, W, C]`, `dy` its output gradient `[N, OH, OW, O]`
    /// and `dw` `[KH, KW, C, O]`, all f32; `dw` overlaps neither operand; `scratch` holds
    /// `scratch_bytes()` bytes, this step's alone for the call. `new` checked the CPU.
    pub(crate) unsafe fn run(
        &self,
        x: *const f32,
        dy: *const f32,
        dw: *mut f32,
        scratch: *mut f32,
        threads: usize,
    ) {
        let n = self.geo.n;
        let (x, dy, blocks) = (x as usize, dy as usize, scratch as usize);
        let chunks = threads.min(n).max(1);
        let call = |t: usize| {
            let mut col = vec![];
            for b in n * t / chunks..n * (t + 1) / chunks {
                // SAFETY: image `b < n` of each operand and block `b`, this call's alone.
                unsafe {
                    self.block_of(
                        x as *const f32,
                        (dy as *const f32).add(b * self.geo.out_pixels() * self.geo.o),
                        blocks as *mut f32,
                        b,
                        &mut col,
                    )
                };
            }
        };
        // SAFETY: concurrent calls write disjoint blocks and read only the operands.
        unsafe { crate::jit::exec::on_pool(chunks, &call) };
        // SAFETY: every block is written; the caller's contract for `dw`.
        unsafe { sum_blocks(self.blocks(), scratch, dw, threads) };
    }

    /// Image `b`'s block: `x` is the whole input, `dy` image `b`'s output gradient (its
    /// `OH·OW·O` values), `blocks` the step's blocks; `col` is the caller's buffer for the
    /// image's column rows (grown to `OH·OW·K` values on first use).
    ///
    /// # Safety
    /// `b < N`; `x` holds the input and `dy` image `b`'s gradient; block `b` of `blocks`
    /// is the caller's alone; `new` checked the CPU.
    pub(crate) unsafe fn block_of(
        &self,
        x: *const f32,
        dy: *const f32,
        blocks: *mut f32,
        b: usize,
        col: &mut Vec<f32>,
    ) {
        col.resize(self.taps.len(), 0.0);
        // SAFETY: image `b` of the input (the caller's contract).
        unsafe { self.columns(x.add(b * self.geo.in_pixels() * self.geo.c), col) };
        // SAFETY: the image's columns, gradient and block (the caller's contract); the CPU
        // has AVX2 and FMA (`new`).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            self.image(col, dy, blocks.add(b * self.block_len()))
        };
    }

    /// The image's column rows (im2col's values, `+0.0` in the padding) into `col`, one
    /// load per tap. Compiled for the baseline target on purpose: inside the AVX-512
    /// kernels LLVM turns this loop into `vgatherdps`, which microcode mitigations of
    /// gather data sampling make slow on recent Intel CPUs (measured here).
    ///
    /// # Safety
    /// `x` is an image of the input; `col` has the table's length.
    #[inline(never)]
    unsafe fn columns(&self, x: *const f32, col: &mut [f32]) {
        for (c, &at) in col.iter_mut().zip(&self.taps) {
            // SAFETY: `at` is an offset inside the image (the table), or −1, for which
            // element 0 is read and dropped (branch-free).
            let read = unsafe { *x.add(at.max(0) as usize) };
            *c = if at >= 0 { read } else { 0.0 };
        }
    }

    /// The blocks' count (images) and length (`K·O`).
    pub(crate) fn blocks(&self) -> (usize, usize) {
        (self.geo.n, self.block_len())
    }
}

/// `dw = ((block 0 + block 1) + block 2) + …`, element by element, the elements split
/// over `threads` in runs of 16 (whole cache lines).
///
/// # Safety
/// `blocks` holds the `n` blocks of `len` elements, all written; `dw` holds `len` elements and
/// overlaps no block.
pub(crate) unsafe fn sum_blocks(
    (n, len): (usize, usize),
    blocks: *const f32,
    dw: *mut f32,
    threads: usize,
) {
    let (blocks, dw) = (blocks as usize, dw as usize);
    let runs = len.div_ceil(16);
    let parts = threads.min(runs).max(1);
    let sum = |t: usize| {
        let at = |t: usize| (runs * t / parts * 16).min(len);
        for e in at(t)..at(t + 1) {
            let blocks = blocks as *const f32;
            // SAFETY: element `e < K·O` of every block and of `dw`, which this call
            // alone writes.
            unsafe {
                let mut acc = *blocks.add(e);
                for b in 1..n {
                    acc += *blocks.add(b * len + e);
                }
                *(dw as *mut f32).add(e) = acc;
            }
        }
    };
    // SAFETY: concurrent calls write disjoint elements of `dw`; the blocks are read only.
    unsafe { crate::jit::exec::on_pool(parts, &sum) };
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::Filter;
    use std::arch::x86_64::*;

    /// One block kernel per vector width (`$lanes` f32 lanes, the intrinsics given): taps
    /// `k0 .. k0 + KB` by channels `o0 .. o0 + $lanes·OV`, one chain
    /// `acc = fma(x̂[p, k], dy[p, o], acc)` per element over the pixels in order, so every
    /// width computes the same bits.
    macro_rules! block_fn {
        ($name:ident, $features:literal, $lanes:literal, $zero:ident, $load:ident,
         $store:ident, $splat:ident, $fma:ident) => {
            /// Taps `k0 .. k0 + KB` by `OV` vectors of channels from `o0` (see `block_fn`).
            ///
            /// # Safety
            /// As `image`, with `k0 + KB <= K`, `o0 + lanes·OV <= O` and the CPU features
            /// the function enables.
            #[target_feature(enable = $features)]
            unsafe fn $name<const KB: usize, const OV: usize>(
                &self,
                col: &[f32],
                dy: *const f32,
                dst: *mut f32,
                k0: usize,
                o0: usize,
            ) {
                let (k, o) = (self.geo.k(), self.geo.o);
                let mut acc = [[$zero(); OV]; KB];
                for p in 0..self.geo.out_pixels() {
                    let xs = &col[p * k + k0..p * k + k0 + KB];
                    let row = dy.wrapping_add(p * o + o0);
                    let mut d = [$zero(); OV];
                    for (j, v) in d.iter_mut().enumerate() {
                        // SAFETY: pixel `p`'s channels `o0 + lanes·j ..+lanes`, inside `O`.
                        *v = unsafe { $load(row.add($lanes * j)) };
                    }
                    for (a, &xv) in acc.iter_mut().zip(xs) {
                        let xv = $splat(xv);
                        for (a, &dv) in a.iter_mut().zip(&d) {
                            *a = $fma(xv, dv, *a);
                        }
                    }
                }
                for (kk, a) in acc.iter().enumerate() {
                    for (j, &v) in a.iter().enumerate() {
                        // SAFETY: elements `(k0 + kk, o0 + lanes·j ..+lanes)` of the block.
                        unsafe { $store(dst.add((k0 + kk) * o + o0 + $lanes * j), v) };
                    }
                }
            }
        };
    }

    impl Filter {
        /// One image's `[K, O]` block into `dst`, from its column rows `col` (`OH·OW·K`).
        ///
        /// # Safety
        /// `col` holds `OH·OW·K` values, `dy` is the image's output gradient, `dst` `K·O` elements of its
        /// own; the CPU has AVX2 and FMA, and AVX-512F when `wide` (`new` checked both).
        pub(super) unsafe fn image(&self, col: &[f32], dy: *const f32, dst: *mut f32) {
            if self.wide {
                // SAFETY: the caller's contract; `wide` only with AVX-512F.
                unsafe { self.image512(col, dy, dst) }
            } else {
                // SAFETY: the caller's contract.
                unsafe { self.image256(col, dy, dst) }
            }
        }

        /// The block 3 taps by 32 channels at a time, 8 channels per AVX2 vector.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn image256(&self, col: &[f32], dy: *const f32, dst: *mut f32) {
            let (k, o) = (self.geo.k(), self.geo.o);
            let mut k0 = 0;
            while k0 < k {
                let mut o0 = 0;
                while o0 < o {
                    // SAFETY (whole block): `k0 + KB <= K` and `o0 + 8·OV <= O` by the
                    // choice below; the rest is the caller's contract.
                    unsafe {
                        match (k - k0, (o - o0) / 8) {
                            (1, 1) => self.block256::<1, 1>(col, dy, dst, k0, o0),
                            (1, 2) => self.block256::<1, 2>(col, dy, dst, k0, o0),
                            (1, 3) => self.block256::<1, 3>(col, dy, dst, k0, o0),
                            (1, _) => self.block256::<1, 4>(col, dy, dst, k0, o0),
                            (2, 1) => self.block256::<2, 1>(col, dy, dst, k0, o0),
                            (2, 2) => self.block256::<2, 2>(col, dy, dst, k0, o0),
                            (2, 3) => self.block256::<2, 3>(col, dy, dst, k0, o0),
                            (2, _) => self.block256::<2, 4>(col, dy, dst, k0, o0),
                            (_, 1) => self.block256::<3, 1>(col, dy, dst, k0, o0),
                            (_, 2) => self.block256::<3, 2>(col, dy, dst, k0, o0),
                            (_, 3) => self.block256::<3, 3>(col, dy, dst, k0, o0),
                            (_, _) => self.block256::<3, 4>(col, dy, dst, k0, o0),
                        }
                    }
                    o0 += 32;
                }
                k0 += 3;
            }
        }

        /// The block 9 taps by 32 channels at a time, 16 channels per AVX-512 vector (up to
        /// 18 accumulators of the 32 registers): the MNIST convnet's first layer in one pass
        /// over the image's `dy`. The same chains as `image256`, so the same bits.
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn image512(&self, col: &[f32], dy: *const f32, dst: *mut f32) {
            let (k, o) = (self.geo.k(), self.geo.o);
            let mut k0 = 0;
            while k0 < k {
                let mut o0 = 0;
                while o0 < o {
                    // SAFETY (whole block): `k0 + KB <= K` and `o0 + 16·OV <= O` by the
                    // choice below (`O` is a multiple of 16 when `wide`); the rest is the
                    // caller's contract.
                    unsafe {
                        match (k - k0, (o - o0) / 16) {
                            (1, 1) => self.block512::<1, 1>(col, dy, dst, k0, o0),
                            (1, _) => self.block512::<1, 2>(col, dy, dst, k0, o0),
                            (2, 1) => self.block512::<2, 1>(col, dy, dst, k0, o0),
                            (2, _) => self.block512::<2, 2>(col, dy, dst, k0, o0),
                            (3, 1) => self.block512::<3, 1>(col, dy, dst, k0, o0),
                            (3, _) => self.block512::<3, 2>(col, dy, dst, k0, o0),
                            (4, 1) => self.block512::<4, 1>(col, dy, dst, k0, o0),
                            (4, _) => self.block512::<4, 2>(col, dy, dst, k0, o0),
                            (5, 1) => self.block512::<5, 1>(col, dy, dst, k0, o0),
                            (5, _) => self.block512::<5, 2>(col, dy, dst, k0, o0),
                            (6, 1) => self.block512::<6, 1>(col, dy, dst, k0, o0),
                            (6, _) => self.block512::<6, 2>(col, dy, dst, k0, o0),
                            (7, 1) => self.block512::<7, 1>(col, dy, dst, k0, o0),
                            (7, _) => self.block512::<7, 2>(col, dy, dst, k0, o0),
                            (8, 1) => self.block512::<8, 1>(col, dy, dst, k0, o0),
                            (8, _) => self.block512::<8, 2>(col, dy, dst, k0, o0),
                            (_, 1) => self.block512::<9, 1>(col, dy, dst, k0, o0),
                            (_, _) => self.block512::<9, 2>(col, dy, dst, k0, o0),
                        }
                    }
                    o0 += 32;
                }
                k0 += 9;
            }
        }

        block_fn!(
            block256,
            "avx2,fma",
            8,
            _mm256_setzero_ps,
            _mm256_loadu_ps,
            _mm256_storeu_ps,
            _mm256_set1_ps,
            _mm256_fmadd_ps
        );
        block_fn!(
            block512,
            "avx512f,avx2,fma",
            16,
            _mm512_setzero_ps,
            _mm512_loadu_ps,
            _mm512_storeu_ps,
            _mm512_set1_ps,
            _mm512_fmadd_ps
        );
    }
}
