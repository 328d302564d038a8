//! The matrix product of a matmul kernel: `gemm` (the crate) called on the operands'
//! buffers, before the kernel's Cranelift epilogue runs on the product.
//!
//! Cranelift emits 128-bit vectors only, so a tuned `gemm` is far faster than a Cranelift
//! macro-kernel (the README has the figures). The kernel's `Core::MatMul` maps say where
//! `gemm` reads each operand; the epilogue reads the product back from the output (in place)
//! or from scratch.

use super::buffers::Loc;
use super::runtime;
use crate::dtype::DType;
use crate::kernel::MatOperand;

/// The matrix product of a matmul kernel, run by the executable before the kernel's epilogue
/// function: operands are the kernel's parameters `a` and `b` read through `Core::MatMul`'s
/// maps; the product goes to the output (when the epilogue can run in place) or to scratch.
pub(super) struct Gemm {
    pub(super) dtype: DType,
    pub(super) a: (Loc, MatOperand),
    pub(super) b: (Loc, MatOperand),
    pub(super) batch: Vec<usize>,
    pub(super) mkn: (usize, usize, usize),
    pub(super) into_output: bool,
}

/// Runs a `Gemm` step: one `gemm` call per batch index.
///
/// # Safety
/// `a`, `b` must be the operand buffers the validated kernel's maps were checked against and
/// `c` a distinct buffer of `batch · m · n` elements of the dtype.
pub(super) unsafe fn run_gemm(gm: &Gemm, a: *mut u8, b: *mut u8, c: *mut u8, threads: usize) {
    let (m, k, n) = gm.mkn;
    let nb = gm.batch.len();
    let count: usize = gm.batch.iter().product();
    let mut idx = vec![0usize; nb];
    for flat in 0..count {
        let mut rem = flat;
        for i in (0..nb).rev() {
            idx[i] = rem % gm.batch[i];
            rem /= gm.batch[i];
        }
        let off = |op: &MatOperand| -> usize {
            op.offset
                + idx
                    .iter()
                    .zip(&op.strides)
                    .map(|(i, s)| i * s)
                    .sum::<usize>()
        };
        let (ao, bo, co) = (off(&gm.a.1), off(&gm.b.1), flat * m * n);
        let st = |op: &MatOperand| (op.strides[nb] as isize, op.strides[nb + 1] as isize);
        let ((ars, acs), (brs, bcs)) = (st(&gm.a.1), st(&gm.b.1));
        match gm.dtype {
            // SAFETY: the offsets are the kernel's validated maps at this batch index, so
            // every element gemm reads is inside `a` and `b`; `c` holds the product.
            DType::F64 => unsafe {
                runtime::gemm(
                    (m, n, k),
                    (c as *mut f64).add(co),
                    ((a as *const f64).add(ao), ars, acs),
                    ((b as *const f64).add(bo), brs, bcs),
                    false,
                    threads,
                )
            },
            // SAFETY: as above (matmul operands are f32 or f64, checked by the shape rules).
            _ => unsafe {
                runtime::gemm(
                    (m, n, k),
                    (c as *mut f32).add(co),
                    ((a as *const f32).add(ao), ars, acs),
                    ((b as *const f32).add(bo), brs, bcs),
                    false,
                    threads,
                )
            },
        }
    }
}
