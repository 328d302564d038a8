//! The baselines kiln is measured against in the same run: loops compiled by rustc/LLVM with
//! AVX2 and FMA enabled, and the `gemm` crate called directly.

/// kiln's own scalar polynomials, the very file `src/jit/vmath.rs` vectorizes for its tile
/// calls, so the transcendental baseline computes exactly what kiln computes, bit for bit.
#[allow(dead_code)] // `log` is not benchmarked
#[path = "../../src/jit/vmath/scalar.rs"]
mod math;

/// An elementwise baseline: `out[i] = f(a[i], b[i], c[i])`.
pub type Elementwise = fn(&[f32], &[f32], &[f32], &mut [f32]);

/// Calls the AVX2+FMA build of a loop if this CPU has both, else the portable build (the
/// same source compiled for the baseline target; much slower for `sigmoid_tanh`, whose
/// `mul_add` and rounding become library calls there).
macro_rules! dispatch {
    ($avx2:ident, $portable:ident, $($arg:expr),*) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                // SAFETY: the function only needs AVX2 and FMA, which were just detected.
                unsafe { $avx2($($arg),*) };
                return;
            }
        }
        $portable($($arg),*)
    }};
}

#[inline(always)]
fn fma_portable(a: &[f32], b: &[f32], c: &[f32], out: &mut [f32]) {
    for (((o, &a), &b), &c) in out.iter_mut().zip(a).zip(b).zip(c) {
        *o = a * b + c;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_avx2(a: &[f32], b: &[f32], c: &[f32], out: &mut [f32]) {
    fma_portable(a, b, c, out)
}

/// `out[i] = a[i] * b[i] + c[i]` (a multiply and an add, as kiln computes it).
pub fn mul_add(a: &[f32], b: &[f32], c: &[f32], out: &mut [f32]) {
    dispatch!(fma_avx2, fma_portable, a, b, c, out)
}

#[inline(always)]
fn sig_tanh_portable(a: &[f32], b: &[f32], c: &[f32], out: &mut [f32]) {
    for (((o, &a), &b), &c) in out.iter_mut().zip(a).zip(b).zip(c) {
        *o = math::sigmoid(a * b + c) * math::tanh(a);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sig_tanh_avx2(a: &[f32], b: &[f32], c: &[f32], out: &mut [f32]) {
    sig_tanh_portable(a, b, c, out)
}

/// `out[i] = sigmoid(a[i] * b[i] + c[i]) * tanh(a[i])` with kiln's polynomials.
pub fn sigmoid_tanh(a: &[f32], b: &[f32], c: &[f32], out: &mut [f32]) {
    dispatch!(sig_tanh_avx2, sig_tanh_portable, a, b, c, out)
}

/// `dst = lhs · rhs` for row-major `n × n` matrices, by `gemm` on `threads` threads (rayon's
/// global pool when more than one).
pub fn matmul(n: usize, lhs: &[f32], rhs: &[f32], dst: &mut [f32], threads: usize) {
    assert!(lhs.len() >= n * n && rhs.len() >= n * n && dst.len() >= n * n);
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let n_s = n as isize;
    // SAFETY: the three buffers hold n*n elements (asserted above), are row-major (column
    // stride 1, row stride n), and dst is a distinct &mut borrow, so nothing aliases it.
    unsafe {
        gemm::gemm(
            n,
            n,
            n,
            dst.as_mut_ptr(),
            1,
            n_s,
            false,
            lhs.as_ptr(),
            1,
            n_s,
            rhs.as_ptr(),
            1,
            n_s,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}
