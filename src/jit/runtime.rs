//! What JIT code calls and runs on: the `extern "C"` helpers registered as symbols, and
//! 64-byte-aligned buffers.

use crate::graph::op::UnaryOp;
use std::alloc::{alloc_zeroed, dealloc, Layout};

/// `C[m,n] = A[m,k] · B[k,n]` (or `C += A·B` with `accumulate`), every operand through
/// (row, column) strides in elements; `C` is row-major. `threads > 1` lets `gemm` split the
/// output into blocks on the current rayon pool (each element is still one dot product in
/// the same order, so the bits do not depend on the thread count).
///
/// # Safety
/// The pointers must cover every element the strides and extents reach (the kernel's
/// validated index maps guarantee it) and `c` must not overlap `a` or `b`.
pub(super) unsafe fn gemm<T: Copy + Default + 'static + num_one::One>(
    (m, n, k): (usize, usize, usize),
    c: *mut T,
    (a, a_rs, a_cs): (*const T, isize, isize),
    (b, b_rs, b_cs): (*const T, isize, isize),
    accumulate: bool,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            // An empty sum: gemm would leave C untouched.
            for i in 0..m * n {
                // SAFETY: C holds m*n elements (row-major result).
                unsafe { *c.add(i) = T::default() };
            }
        }
        return;
    }
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: extents and strides describe in-bounds matrices (the caller's contract); C is
    // row-major (column stride 1, row stride n) and distinct from A and B.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            n as isize,
            accumulate,
            a,
            a_cs,
            a_rs,
            b,
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

mod num_one {
    pub(crate) trait One {
        fn one() -> Self;
    }
    impl One for f32 {
        fn one() -> f32 {
            1.0
        }
    }
    impl One for f64 {
        fn one() -> f64 {
            1.0
        }
    }
}

/// `a^b` as the interpreter computes it (in f64, rounded once).
pub(super) extern "C" fn kiln_pow_f32(a: f32, b: f32) -> f32 {
    (a as f64).powf(b as f64) as f32
}

/// C's `fmod(a, b)` on f32 (exact, as the interpreter's f64 `%` rounded once is).
pub(super) extern "C" fn kiln_rem_f32(a: f32, b: f32) -> f32 {
    a % b
}

/// C's `fmod(a, b)` on f64.
pub(super) extern "C" fn kiln_rem_f64(a: f64, b: f64) -> f64 {
    a % b
}

/// `a^b` in f64.
pub(super) extern "C" fn kiln_pow_f64(a: f64, b: f64) -> f64 {
    a.powf(b)
}

/// Integer `a^b` as the interpreter computes it.
pub(super) extern "C" fn kiln_pow_i32(a: i32, b: i32) -> i32 {
    (a as f64).powf(b as f64) as i64 as i32
}

/// The code that names `u` to [`kiln_unary_f64`]: an explicit mapping, never the enum's
/// declaration order, so reordering or adding variants cannot make a compiled call compute
/// another op. Codes are never reused.
pub(super) fn unary_code(u: UnaryOp) -> i32 {
    match u {
        UnaryOp::Neg => 0,
        UnaryOp::Exp => 1,
        UnaryOp::Log => 2,
        UnaryOp::Sqrt => 3,
        UnaryOp::Recip => 4,
        UnaryOp::Tanh => 5,
        UnaryOp::Abs => 6,
        UnaryOp::Sigmoid => 7,
        UnaryOp::Erf => 8,
        UnaryOp::Softplus => 9,
    }
}

/// The op [`unary_code`] gave `code`, or `None` for a code it never gives.
pub(super) fn unary_from_code(code: i32) -> Option<UnaryOp> {
    Some(match code {
        0 => UnaryOp::Neg,
        1 => UnaryOp::Exp,
        2 => UnaryOp::Log,
        3 => UnaryOp::Sqrt,
        4 => UnaryOp::Recip,
        5 => UnaryOp::Tanh,
        6 => UnaryOp::Abs,
        7 => UnaryOp::Sigmoid,
        8 => UnaryOp::Erf,
        9 => UnaryOp::Softplus,
        _ => return None,
    })
}

/// A unary op on `f64` by its reference semantics ([`UnaryOp::props`]' `f64`, which the
/// interpreter also calls), named by [`unary_code`]: f64 kernels exist for gradient checks,
/// where libm's accuracy matters more than speed. An unknown code gives NaN, never another
/// op's result (codegen only emits codes from `unary_code`, so it cannot happen).
pub(super) extern "C" fn kiln_unary_f64(code: i32, x: f64) -> f64 {
    match unary_from_code(code) {
        Some(op) => (op.props().f64)(x),
        None => f64::NAN,
    }
}

/// A zeroed, 64-byte-aligned heap buffer.
pub(crate) struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is plain bytes owned uniquely by this value.
unsafe impl Send for AlignedBuf {}
// SAFETY: a shared reference cannot reach the bytes (the one accessor, `as_mut_ptr`, takes
// `&mut self`).
unsafe impl Sync for AlignedBuf {}

const ALIGN: usize = 64;

impl AlignedBuf {
    /// `len` zero bytes, or an error (instead of an aborting allocation) if `len` passes
    /// [`crate::shape::alloc_limit`] or the allocator refuses: a batch whose intermediates
    /// are too large fails its run, not the process.
    pub(crate) fn try_new(len: usize) -> Result<AlignedBuf, String> {
        let limit = crate::shape::alloc_limit();
        if len > limit {
            return Err(format!(
                "a JIT workspace buffer needs {len} bytes, more than the allocation limit of \
                 {limit} bytes (set KILN_MAX_ALLOC to a byte count to raise it)"
            ));
        }
        if len == 0 {
            return Ok(AlignedBuf::new(0));
        }
        let layout = Layout::from_size_align(len, ALIGN)
            .map_err(|_| format!("a JIT workspace buffer of {len} bytes overflows"))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(format!(
                "could not allocate a JIT workspace buffer of {len} bytes"
            ));
        }
        Ok(AlignedBuf { ptr, len })
    }

    /// `len` zero bytes.
    pub(crate) fn new(len: usize) -> AlignedBuf {
        if len == 0 {
            return AlignedBuf {
                ptr: std::ptr::null_mut(),
                len: 0,
            };
        }
        let layout = Layout::from_size_align(len, ALIGN).expect("buffer size overflows");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len }
    }

    /// The base pointer (dangling but never dereferenced when empty: kernels touch no
    /// element of an empty buffer).
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        if self.ptr.is_null() {
            std::ptr::NonNull::<u64>::dangling().as_ptr() as *mut u8
        } else {
            self.ptr
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            let layout = Layout::from_size_align(self.len, ALIGN).expect("valid at allocation");
            // SAFETY: allocated in `new` with this layout.
            unsafe { dealloc(self.ptr, layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unary_op_round_trips_its_code() {
        let mut seen = std::collections::HashSet::new();
        for &u in UnaryOp::ALL {
            let c = unary_code(u);
            assert!(seen.insert(c), "{u:?} shares code {c}");
            assert_eq!(unary_from_code(c), Some(u));
            for x in [-2.5, -0.5, 0.0, 0.75, 3.0] {
                let (want, got) = ((u.props().f64)(x), kiln_unary_f64(c, x));
                assert!(want.to_bits() == got.to_bits(), "{u:?}({x})");
            }
        }
    }

    #[test]
    fn an_unknown_code_is_nan() {
        for c in [-1, UnaryOp::ALL.len() as i32 + 100, i32::MAX] {
            assert_eq!(unary_from_code(c), None);
            assert!(kiln_unary_f64(c, 1.0).is_nan());
        }
    }

    #[test]
    fn a_workspace_buffer_past_the_limit_is_an_error() {
        let e = AlignedBuf::try_new(usize::MAX)
            .err()
            .expect("allocated usize::MAX bytes");
        assert!(e.contains("allocation limit"), "{e}");
        let mut b = AlignedBuf::try_new(64).expect("64 bytes");
        assert!(!b.as_mut_ptr().is_null());
        assert!(AlignedBuf::try_new(0).is_ok());
    }
}
