//! `exp`, `log`, `tanh` and `sigmoid` over slices of `f32`, compiled by rustc for AVX2+FMA
//! (and again for AVX-512F, taken where the CPU has it), for JIT kernels to call once per
//! tile (see `codegen/tiled.rs`).
//!
//! # Why a second code generator for four functions
//! Cranelift's x64 backend has 128-bit vectors only. For memory-bound kernels that costs
//! nothing, but a transcendental is compute-bound: ~25 vector instructions per `exp`, so a
//! kernel built from `math.rs` runs at half the speed of the same polynomials in 256-bit
//! AVX2 (measured: 0.45–0.49× a rustc loop on `sigmoid(a*b+c)*tanh(a)`). Interleaving two
//! 4-lane streams in the loop body did not help (0.49× → 0.48×): the core already overlaps
//! iterations, the limit is instruction throughput. So a kernel whose body has these functions
//! computes its cheap operations in Cranelift into tiles of a few hundred elements on the
//! stack, and calls the functions here once per tile, where LLVM vectorizes them 8 lanes wide.
//!
//! # Bitwise the same as `math.rs`
//! Each function in `vmath/scalar.rs` is a line-by-line transcription of its Cranelift twin
//! in `math.rs`:
//! the same constants and the same operations in the same order, `mul_add` exactly where
//! that file emits `fma`, compare-and-select where it selects. IEEE arithmetic then makes
//! every result bitwise equal to the Cranelift kernel's, scalar or vector, which the unit
//! tests check over a sweep of bit patterns. That is what keeps results independent of the
//! thread count (a row's last few elements still run the Cranelift scalar code) and of
//! whether this machine has AVX2. **Change one file, change the other.**
//!
//! Only used when the CPU has AVX2 and FMA ([`available`]); elsewhere kernels keep the
//! Cranelift polynomials, with the same results.

mod scalar;

use scalar::{exp, log, sigmoid, tanh};

/// True if this CPU runs the AVX2+FMA loops below.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The signature JIT code calls: `dst[i] = f(src[i])` for `i < n`.
pub(super) type TileFn = unsafe extern "C" fn(src: *const f32, dst: *mut f32, n: i64);

/// Whether this CPU has AVX-512F: the same loops are then compiled 16 lanes wide. Same bits:
/// every operation in `scalar.rs` is an IEEE operation on one lane (`mul_add` where `math.rs`
/// emits `fma`), whatever the vector width LLVM picks. (The standard macro caches the CPU's
/// answer: a load and a bit test per tile.)
#[cfg(target_arch = "x86_64")]
fn wide() -> bool {
    is_x86_feature_detected!("avx512f")
}

macro_rules! tile_fns {
    ($($f:ident => $avx2:ident, $avx512:ident, $entry:ident;)*) => {$(
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx2(src: &[f32], dst: &mut [f32]) {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = $f(s);
            }
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn $avx512(src: &[f32], dst: &mut [f32]) {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = $f(s);
            }
        }

        /// The tile entry point JIT kernels call.
        ///
        /// # Safety
        /// `src` and `dst` each cover `n >= 0` readable (writable) `f32`s and do not overlap,
        /// and the CPU has AVX2 and FMA ([`available`]). Kernels pass two distinct tiles of
        /// their stack slot, each of at least `n` elements (`codegen/tiled.rs`), and are only
        /// built this way when `available()` held.
        #[cfg(target_arch = "x86_64")]
        pub(super) unsafe extern "C" fn $entry(src: *const f32, dst: *mut f32, n: i64) {
            let n = n.max(0) as usize;
            // SAFETY: the caller's contract above: both cover n elements, no overlap.
            let (src, dst) = unsafe {
                (
                    std::slice::from_raw_parts(src, n),
                    std::slice::from_raw_parts_mut(dst, n),
                )
            };
            if wide() {
                // SAFETY: AVX2 and FMA are present (the caller's contract), and AVX-512F
                // (`wide`).
                unsafe { $avx512(src, dst) }
            } else {
                // SAFETY: AVX2 and FMA are present (the caller's contract).
                unsafe { $avx2(src, dst) }
            }
        }
    )*};
}

tile_fns! {
    exp => exp_avx2, exp_avx512, kiln_tile_exp;
    log => log_avx2, log_avx512, kiln_tile_log;
    tanh => tanh_avx2, tanh_avx512, kiln_tile_tanh;
    sigmoid => sigmoid_avx2, sigmoid_avx512, kiln_tile_sigmoid;
}

/// The symbol name and entry point of each function; an op's props name its symbol.
#[cfg(target_arch = "x86_64")]
pub(super) const ENTRIES: [(&str, TileFn); 4] = [
    ("kiln_tile_exp", kiln_tile_exp),
    ("kiln_tile_log", kiln_tile_log),
    ("kiln_tile_tanh", kiln_tile_tanh),
    ("kiln_tile_sigmoid", kiln_tile_sigmoid),
];
#[cfg(not(target_arch = "x86_64"))]
pub(super) const ENTRIES: [(&str, TileFn); 0] = [];

/// Which of [`ENTRIES`] computes `u`: the one named by its props' `tile`, if any.
pub(super) fn index(u: crate::graph::op::UnaryOp) -> Option<usize> {
    let name = u.props().tile?;
    ENTRIES.iter().position(|(n, _)| *n == name)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The 16-lane and 8-lane loops agree bit for bit on a spread of bit patterns (all
    /// exponents, both signs, NaNs, infinities, subnormals), tile lengths not multiples of 16.
    #[test]
    fn the_avx512_loops_give_the_avx2_bits() {
        if !(available() && wide()) {
            eprintln!("no AVX-512F here: only the AVX2 loops run");
            return;
        }
        let xs: Vec<f32> = (0..100_003u32)
            .map(|i| f32::from_bits(i.wrapping_mul(0x9E37_79B9)))
            .collect();
        type Pair = (
            &'static str,
            unsafe fn(&[f32], &mut [f32]),
            unsafe fn(&[f32], &mut [f32]),
        );
        let pairs: [Pair; 4] = [
            (
                "exp",
                |s, d| unsafe { exp_avx2(s, d) },
                |s, d| unsafe { exp_avx512(s, d) },
            ),
            (
                "log",
                |s, d| unsafe { log_avx2(s, d) },
                |s, d| unsafe { log_avx512(s, d) },
            ),
            (
                "tanh",
                |s, d| unsafe { tanh_avx2(s, d) },
                |s, d| unsafe { tanh_avx512(s, d) },
            ),
            (
                "sigmoid",
                |s, d| unsafe { sigmoid_avx2(s, d) },
                |s, d| unsafe { sigmoid_avx512(s, d) },
            ),
        ];
        for (name, narrow, wide) in pairs {
            let (mut a, mut b) = (vec![0f32; xs.len()], vec![0f32; xs.len()]);
            // SAFETY: the CPU has AVX2, FMA and AVX-512F (checked above).
            unsafe {
                narrow(&xs, &mut a);
                wide(&xs, &mut b);
            }
            let differ = a
                .iter()
                .zip(&b)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count();
            assert_eq!(differ, 0, "{name}: {differ} results differ");
        }
    }
}
