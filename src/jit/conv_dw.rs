//! Depthwise convolutions (`groups == C`, one input channel per group, `multiplier` output
//! channels each): direct loops over NHWC pixels, vectorized by rustc along the channels.
//!
//! A depthwise filter's GEMM is `K = KH·KW` deep and `multiplier` wide (often 9 × 1), far too
//! thin for `gemm`: each output pixel is instead `KH·KW` multiply-adds of contiguous channel
//! vectors (`y[c·m + j] += x[c] · w[tap, c·m + j]`). A native Rust loop is the first step;
//! the goal is a Cranelift kernel.
//!
//! Work is split by whole images (forward, input gradient: each image's output is one
//! worker's) and the filter gradient sums fixed image ranges into partials added in order,
//! as in `conv.rs`, so the bits do not depend on the thread count.

use super::conv::{Elem, Ptrs};
use crate::graph::op::ConvGeom;

/// `&[T]` of `len` elements at `p + off`.
///
/// # Safety
/// The elements must be inside one live buffer, not written while the slice lives.
unsafe fn at<'a, T>(p: *const T, off: usize, len: usize) -> &'a [T] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(p.add(off), len) }
}

/// `&mut [T]` of `len` elements at `p + off`.
///
/// # Safety
/// As [`at`], and no other reference to those elements may live.
unsafe fn at_mut<'a, T>(p: *mut T, off: usize, len: usize) -> &'a mut [T] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts_mut(p.add(off), len) }
}

/// Image `n` of `y = conv(x, w)`.
///
/// # Safety
/// `p` holds `x [N,H,W,C]`, `w [KH,KW,1,O]`, `y [N,OH,OW,O]` (checked by `compile`), and
/// image `n` of `y` is this call's alone.
pub(super) unsafe fn forward<T: Elem>(geo: &ConvGeom, p: Ptrs, n: usize) {
    let (c, o) = (geo.c, geo.o);
    let m = o / c.max(1);
    let [kh_n, kw_n] = geo.window.kernel;
    for oh in 0..geo.out_hw[0] {
        for ow in 0..geo.out_hw[1] {
            let yp = ((n * geo.out_hw[0] + oh) * geo.out_hw[1] + ow) * o;
            // SAFETY: an output pixel of image `n` (this call's).
            let y = unsafe { at_mut(p.out as *mut T, yp, o) };
            y.fill(T::default());
            for kh in 0..kh_n {
                let ih = geo.src(0, oh, kh);
                for kw in 0..kw_n {
                    // SAFETY: the tap's filter row.
                    let w = unsafe { at(p.b as *const T, (kh * kw_n + kw) * o, o) };
                    let Some((ih, iw)) = ih.zip(geo.src(1, ow, kw)) else {
                        // A padding tap: its zero is multiplied like any input (`0 · inf`
                        // is NaN), as im2col and `gemm` do and the interpreter defines (F9).
                        for (y, &w) in y.iter_mut().zip(w) {
                            *y = *y + T::default() * w;
                        }
                        continue;
                    };
                    let xp = ((n * geo.in_hw[0] + ih) * geo.in_hw[1] + iw) * c;
                    // SAFETY: an in-bounds input pixel.
                    let x = unsafe { at(p.a as *const T, xp, c) };
                    if m == 1 {
                        for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                            *y = *y + x * w;
                        }
                    } else {
                        for (ci, &x) in x.iter().enumerate() {
                            for j in ci * m..(ci + 1) * m {
                                y[j] = y[j] + x * w[j];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Image `n` of `dx = InputGrad(dy, w)`.
///
/// # Safety
/// `p` holds `dy [N,OH,OW,O]`, `w [KH,KW,1,O]`, `dx [N,H,W,C]`, and image `n` of `dx` is
/// this call's alone.
pub(super) unsafe fn input_grad<T: Elem>(geo: &ConvGeom, p: Ptrs, n: usize) {
    let (c, o) = (geo.c, geo.o);
    let m = o / c.max(1);
    let [kh_n, kw_n] = geo.window.kernel;
    let px = geo.in_pixels() * c;
    // SAFETY: image `n` of `dx` (this call's).
    unsafe { at_mut(p.out as *mut T, n * px, px) }.fill(T::default());
    for oh in 0..geo.out_hw[0] {
        for ow in 0..geo.out_hw[1] {
            let yp = ((n * geo.out_hw[0] + oh) * geo.out_hw[1] + ow) * o;
            // SAFETY: an output-gradient pixel.
            let dy = unsafe { at(p.a as *const T, yp, o) };
            for kh in 0..kh_n {
                let Some(ih) = geo.src(0, oh, kh) else {
                    continue;
                };
                for kw in 0..kw_n {
                    let Some(iw) = geo.src(1, ow, kw) else {
                        continue;
                    };
                    let xp = ((n * geo.in_hw[0] + ih) * geo.in_hw[1] + iw) * c;
                    // SAFETY: an in-bounds pixel of image `n` of `dx`, and the tap's row.
                    let (dx, w) = unsafe {
                        (
                            at_mut(p.out as *mut T, xp, c),
                            at(p.b as *const T, (kh * kw_n + kw) * o, o),
                        )
                    };
                    for (ci, dx) in dx.iter_mut().enumerate() {
                        let mut s = *dx;
                        for j in ci * m..(ci + 1) * m {
                            s = s + dy[j] * w[j];
                        }
                        *dx = s;
                    }
                }
            }
        }
    }
}

/// Images `[n0, n1)`'s sum of `dw = FilterGrad(x, dy)` into `dst` (`[KH·KW, O]`).
///
/// # Safety
/// `p` holds `x [N,H,W,C]` and `dy [N,OH,OW,O]`; `dst` holds `KH·KW·O` elements that are
/// this call's alone.
pub(super) unsafe fn filter_grad<T: Elem>(
    geo: &ConvGeom,
    p: Ptrs,
    (n0, n1): (usize, usize),
    dst: *mut T,
) {
    let (c, o) = (geo.c, geo.o);
    let m = o / c.max(1);
    let [kh_n, kw_n] = geo.window.kernel;
    // SAFETY: the caller's `dst`.
    let dw = unsafe { at_mut(dst, 0, kh_n * kw_n * o) };
    dw.fill(T::default());
    for n in n0..n1 {
        for oh in 0..geo.out_hw[0] {
            for ow in 0..geo.out_hw[1] {
                let yp = ((n * geo.out_hw[0] + oh) * geo.out_hw[1] + ow) * o;
                // SAFETY: an output-gradient pixel.
                let dy = unsafe { at(p.b as *const T, yp, o) };
                for kh in 0..kh_n {
                    let ih = geo.src(0, oh, kh);
                    for kw in 0..kw_n {
                        let row = &mut dw[(kh * kw_n + kw) * o..(kh * kw_n + kw + 1) * o];
                        let Some((ih, iw)) = ih.zip(geo.src(1, ow, kw)) else {
                            // A padding tap: `0 · dy`, as im2col and `gemm` compute (F9).
                            for (r, &d) in row.iter_mut().zip(dy) {
                                *r = *r + T::default() * d;
                            }
                            continue;
                        };
                        let xp = ((n * geo.in_hw[0] + ih) * geo.in_hw[1] + iw) * c;
                        // SAFETY: an in-bounds input pixel.
                        let x = unsafe { at(p.a as *const T, xp, c) };
                        if m == 1 {
                            for ((r, &x), &d) in row.iter_mut().zip(x).zip(dy) {
                                *r = *r + x * d;
                            }
                        } else {
                            for (j, r) in row.iter_mut().enumerate() {
                                *r = *r + x[j / m] * dy[j];
                            }
                        }
                    }
                }
            }
        }
    }
}
