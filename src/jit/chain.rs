//! Running a chain: a head step (a forward convolution, or a max pooling's gradient) and
//! the steps that read its output image by image (an elementwise kernel, then a pooling
//! step), run on each image range as soon as the head has written it, on the same thread,
//! while those images are in cache (`memplan::chains` decides the chains and plans their
//! buffers as one step).
//!
//! Only *when* a member computes its rows changes, never how: a kernel's function computes
//! rows `[lo, hi)` of its first axis with the same instructions whatever the range
//! (`codegen::Split`), and a pooling step's images are independent (`PoolStep::run_images`),
//! so the bits are those of the steps run one after the other, at any thread count
//! (invariant 13).
//!
//! A convolution's tiles run on several threads; each runs the kernel members on its own
//! images (through raw pointers taken before). A pooling step takes its buffers from the
//! run's `Buffers`, which only the calling thread may touch: with one thread pooling
//! members run in the tiles too, with more they run after the convolution as steps of their
//! own, split over the pool. Likewise a pooling head runs image blocks with one thread and
//! its steps one after the other with more. Every one of these orders is one the chain's
//! buffer assignment allows.

use super::buffers::Buffers;
use super::compile::Step;
use super::exec::run_step;
use super::module::KernelFn;
use crate::error::{Error, Result};
use smallvec::SmallVec;
use std::cell::RefCell;
use std::sync::atomic::{AtomicI32, Ordering};

/// A member, ready to run on image ranges.
enum Member<'s> {
    Kernel {
        f: KernelFn,
        ptrs: SmallVec<[*mut u8; 8]>,
        fails: Option<&'s Error>,
    },
    Pool(&'s super::pool::PoolStep),
}

/// Runs `head` and its `members` over `images` images (see the module docs).
pub(super) fn run(
    bufs: &mut Buffers<'_>,
    head: &Step,
    members: &[Step],
    (images, block): (usize, usize),
    run_index: u64,
    threads: usize,
) -> Result<()> {
    let mut ready: Vec<Member<'_>> = vec![];
    for m in members {
        ready.push(match m {
            Step::Kernel {
                f: Some(f),
                args,
                out,
                fails,
                gemm: None,
                ..
            } => {
                let mut ptrs: SmallVec<[*mut u8; 8]> = args.iter().map(|&l| bufs.ptr(l)).collect();
                ptrs.push(bufs.ptr(*out));
                Member::Kernel {
                    f: *f,
                    ptrs,
                    fails: fails.as_deref(),
                }
            }
            Step::Pool(p) => Member::Pool(p),
            _ => {
                return Err(Error::Internal(
                    "jit: a chain member is neither an elementwise kernel nor a pooling step"
                        .into(),
                ))
            }
        });
    }
    let status = AtomicI32::new(0);
    match head {
        Step::Conv {
            conv, a, b, out, ..
        } => {
            let (a, b, out) = (bufs.ptr(*a), bufs.ptr(*b), bufs.ptr(*out));
            let scratch = bufs.ws.scratch.as_mut_ptr();
            // Pooling members read their buffers through `bufs`, which only this thread may
            // touch: on one thread (the convolution's only worker is this one) they run in
            // the tiles, on more after the convolution, split as steps of their own.
            let inline = threads == 1;
            let shared = RefCell::new(&mut *bufs);
            let after = |lo: usize, hi: usize| {
                for m in &ready {
                    // SAFETY: see `run_member`; each tile's images are its thread's alone,
                    // and a pooling member runs only here, on this thread (`inline`).
                    unsafe { run_member(m, &shared, lo, hi, &status, inline) };
                }
            };
            // SAFETY: as for a convolution step of its own (`exec::run_step`): the geometry
            // was checked against the buffers' types, the output is its own buffer, and
            // scratch holds at least the step's bytes. `after` runs the kernel members on
            // the images each tile has just written, each writing its own output rows of
            // those images (their buffers are planned apart from every value the
            // convolution reads, `memplan::chains`), so calls for different tiles touch
            // disjoint memory.
            unsafe { super::conv::run_conv(conv, (a, b, out), scratch, threads, Some(&after)) };
            if !inline {
                for (m, r) in members.iter().zip(&ready) {
                    if let Member::Pool(_) = r {
                        run_step(bufs, m, run_index, threads)?;
                    }
                }
            }
        }
        Step::Pool(p) if threads == 1 => {
            let shared = RefCell::new(&mut *bufs);
            for lo in (0..images).step_by(block.max(1)) {
                let hi = (lo + block.max(1)).min(images);
                p.run_images(&mut shared.borrow_mut(), lo, hi);
                for m in &ready {
                    // SAFETY: one thread; the pooling head has written images `[lo, hi)`.
                    unsafe { run_member(m, &shared, lo, hi, &status, true) };
                }
            }
        }
        _ => {
            // One after the other, each split as a step of its own.
            run_step(bufs, head, run_index, threads)?;
            for m in members {
                run_step(bufs, m, run_index, threads)?;
            }
            return Ok(());
        }
    }
    if status.into_inner() != 0 {
        let fails = ready.iter().find_map(|m| match m {
            Member::Kernel { fails, .. } => *fails,
            Member::Pool(_) => None,
        });
        return Err(fails.cloned().unwrap_or_else(|| {
            Error::Internal(
                "jit: a kernel with no integer division reported a division by zero".into(),
            )
        }));
    }
    Ok(())
}

/// Runs member `m` on images `[lo, hi)`, recording a kernel's division status in
/// `status`; a pooling member only if `pools`.
///
/// # Safety
/// The head has written images `[lo, hi)` of its output (and the earlier members theirs),
/// and no other thread runs these images; a kernel member's rows are images (its split's
/// extent is the image count, checked by `compile::runnable_chain`) and it needs no scratch;
/// with `pools`, no other thread uses `bufs` meanwhile.
unsafe fn run_member(
    m: &Member<'_>,
    bufs: &RefCell<&mut Buffers<'_>>,
    lo: usize,
    hi: usize,
    status: &AtomicI32,
    pools: bool,
) {
    match m {
        Member::Kernel { f, ptrs, .. } => {
            let mut st = 0i32;
            // SAFETY: as for a kernel step of its own (`exec::run_kernel`): a validated
            // kernel over buffers of its parameter types' sizes, called on rows `[lo, hi)`
            // of its first axis, which only this call writes; it uses no scratch.
            unsafe {
                f(
                    ptrs.as_ptr(),
                    std::ptr::null_mut(),
                    &mut st,
                    lo as i64,
                    hi as i64,
                )
            };
            status.fetch_or(st, Ordering::Relaxed);
        }
        Member::Pool(p) if pools => p.run_images(&mut bufs.borrow_mut(), lo, hi),
        Member::Pool(_) => {}
    }
}

#[cfg(test)]
mod tests;
