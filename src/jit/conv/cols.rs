//! The column matrices and the products over them: `im2col` writes a tile's taps as rows of
//! `[rows, K]`, `col2im` adds a column gradient back at the pixels it was read from (its
//! transpose, in a fixed order), and [`mm`] is the one strided `gemm` call every kind of
//! convolution step makes. The step's planning and scheduling are in `conv.rs`; these only
//! move and multiply what they are given.

use crate::graph::op::ConvGeom;

/// What the step computes in: f32 or f64.
pub(in crate::jit) trait Elem:
    Copy + Default + Send + Sync + 'static + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self>
{
    /// 1
    const ONE: Self;
}
impl Elem for f32 {
    const ONE: f32 = 1.0;
}
impl Elem for f64 {
    const ONE: f64 = 1.0;
}

/// `dst[m,n] (+)= a[m,k] · b[k,n]`, each matrix through (row, column) strides in elements.
///
/// # Safety
/// Every element the extents and strides reach must be inside its buffer, and `dst` must
/// not overlap `a` or `b`.
pub(in crate::jit) unsafe fn mm<T: Elem>(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs): (*mut T, isize),
    accumulate: bool,
    (a, a_rs, a_cs): (*const T, isize, isize),
    (b, b_rs, b_cs): (*const T, isize, isize),
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: `dst` covers `m` rows of stride `dst_rs` and `n` columns.
                    unsafe { *dst.offset(i as isize * dst_rs + j as isize) = T::default() };
                }
            }
        }
        return;
    }
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller's contract; gemm 0.19 computes `dst = alpha·dst + beta·a·b` (BLAS's
    // names reversed), with `dst` read only when `accumulate`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            accumulate,
            a,
            a_cs,
            a_rs,
            b,
            b_cs,
            b_rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}

/// Writes rows `[r0, r1)` of group `g`'s column matrix into `col` (`[r1 − r0, K]`, row
/// `r = (n·OH + oh)·OW + ow`, column `(kh·KW + kw)·Cg + ci`), zeros in the padding.
///
/// # Safety
/// `x` holds the input `[N, H, W, C]`, `col` at least `(r1 − r0)·K` elements.
pub(super) unsafe fn im2col<T: Elem>(
    geo: &ConvGeom,
    x: *const T,
    g: usize,
    (r0, r1): (usize, usize),
    col: *mut T,
) {
    let (cg, c, k) = (geo.cg(), geo.c, geo.k());
    let [kh_n, kw_n] = geo.window.kernel;
    let (oh_n, ow_n) = (geo.out_hw[0], geo.out_hw[1]);
    for r in r0..r1 {
        let (n, oh, ow) = (r / (oh_n * ow_n), r / ow_n % oh_n, r % ow_n);
        // SAFETY: row `r − r0` of `col` holds `k` elements.
        let row = unsafe { col.add((r - r0) * k) };
        // With one group and dense columns, a kernel row whose first and last taps are
        // inside the input reads `KW·C` contiguous floats: one copy instead of `KW`.
        let run = geo.groups == 1
            && geo.window.dilations[1] == 1
            && geo.src(1, ow, 0).is_some()
            && geo.src(1, ow, kw_n - 1).is_some();
        for kh in 0..kh_n {
            let ih = geo.src(0, oh, kh);
            if let (true, Some(ih), Some(iw)) = (run, ih, geo.src(1, ow, 0)) {
                let at = ((n * geo.in_hw[0] + ih) * geo.in_hw[1] + iw) * c;
                // SAFETY: the row's taps are the in-bounds pixels `iw .. iw + KW` of input
                // row `ih` (dilation 1, both ends checked), all `c = cg` channels each, and
                // the row of `col` holds them at `kh·KW·cg`.
                unsafe { copy_taps(x.add(at), row.add(kh * kw_n * cg), kw_n * cg) };
                continue;
            }
            for kw in 0..kw_n {
                // SAFETY: the tap's `cg` elements are inside the row.
                let dst = unsafe { row.add((kh * kw_n + kw) * cg) };
                match (ih, geo.src(1, ow, kw)) {
                    (Some(ih), Some(iw)) => {
                        let at = ((n * geo.in_hw[0] + ih) * geo.in_hw[1] + iw) * c + g * cg;
                        // SAFETY: `src` returned in-bounds pixels, and the group's channels
                        // `g·cg .. (g+1)·cg` are inside the pixel's `c`; `col` is distinct.
                        unsafe { copy_taps(x.add(at), dst, cg) };
                    }
                    // SAFETY: as above, inside the row.
                    _ => unsafe { std::ptr::write_bytes(dst, 0, cg) },
                }
            }
        }
    }
}

/// Copies one tap's `cg` channels. A few channels (conv1's one) are copied by a loop:
/// `copy_nonoverlapping` of a run-time length is a `memcpy` call, which cost more than the
/// product itself for MNIST's first layer (9 one-float calls per row).
///
/// # Safety
/// `src` and `dst` hold `cg` elements each and do not overlap.
#[inline(always)]
unsafe fn copy_taps<T: Elem>(src: *const T, dst: *mut T, cg: usize) {
    if cg <= 8 {
        for i in 0..cg {
            // SAFETY: `i < cg`, inside both runs.
            unsafe { *dst.add(i) = *src.add(i) };
        }
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, cg) };
    }
}

/// Adds rows `[r0, r1)` of group `g`'s column gradient `col` into `dx` at the pixels they
/// were read from, in row then tap order (the transpose of [`im2col`]).
///
/// # Safety
/// `dx` holds `[N, H, W, C]`, `col` `(r1 − r0)·K` elements, and no other thread writes the
/// images of rows `[r0, r1)`.
pub(super) unsafe fn col2im<T: Elem>(
    geo: &ConvGeom,
    col: *const T,
    g: usize,
    (r0, r1): (usize, usize),
    dx: *mut T,
) {
    let (cg, c, k) = (geo.cg(), geo.c, geo.k());
    let [kh_n, kw_n] = geo.window.kernel;
    let (oh_n, ow_n) = (geo.out_hw[0], geo.out_hw[1]);
    for r in r0..r1 {
        let (n, oh, ow) = (r / (oh_n * ow_n), r / ow_n % oh_n, r % ow_n);
        // As in `im2col`: a kernel row whose taps are all inside is one run of `KW·C`
        // elements. No element gets two adds from one row, so the order of the adds into
        // each `dx` element (row, then tap) is the tap-by-tap loop's.
        let run = geo.groups == 1
            && geo.window.dilations[1] == 1
            && geo.src(1, ow, 0).is_some()
            && geo.src(1, ow, kw_n - 1).is_some();
        for kh in 0..kh_n {
            let Some(ih) = geo.src(0, oh, kh) else {
                continue;
            };
            let pixel = |iw: usize| ((n * geo.in_hw[0] + ih) * geo.in_hw[1] + iw) * c + g * cg;
            let from = (r - r0) * k + kh * kw_n * cg;
            if let (true, Some(iw)) = (run, geo.src(1, ow, 0)) {
                // SAFETY: the in-bounds pixels `iw .. iw + KW` of input row `ih` with all
                // `c = cg` channels each, and the row's taps of `col`.
                unsafe { add_run(dx.add(pixel(iw)), col.add(from), kw_n * cg) };
                continue;
            }
            for kw in 0..kw_n {
                let Some(iw) = geo.src(1, ow, kw) else {
                    continue;
                };
                // SAFETY: an in-bounds pixel and the group's channels (as in `im2col`), and
                // a tap of row `r − r0` of `col`.
                unsafe { add_run(dx.add(pixel(iw)), col.add(from + kw * cg), cg) };
            }
        }
    }
}

/// `dst[i] = dst[i] + src[i]` for `i < len` (a loop the compiler vectorizes).
///
/// # Safety
/// `dst` and `src` hold `len` elements each and do not overlap.
#[inline(always)]
unsafe fn add_run<T: Elem>(dst: *mut T, src: *const T, len: usize) {
    // SAFETY: the caller's contract.
    let (d, s) = unsafe {
        (
            std::slice::from_raw_parts_mut(dst, len),
            std::slice::from_raw_parts(src, len),
        )
    };
    for (d, s) in d.iter_mut().zip(s) {
        *d = *d + *s;
    }
}
