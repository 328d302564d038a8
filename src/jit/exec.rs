//! Running a compiled schedule: checking the caller's arrays, taking a workspace from the
//! pool, walking the steps (a kernel call, split over the thread pool when large; a random
//! fill; a copy) and handing the outputs back.
//!
//! Native code indexes every buffer without checks, so `run_into` refuses any array whose
//! type differs from the compiled one before the first step runs; each `unsafe` block below
//! says which other fact it relies on.

use super::buffers::{try_zeroed, Buffers, Loc, Workspace};
use super::codegen::Split;
use super::compile::Step;
use super::gemm::{run_gemm, Gemm};
use super::module::KernelFn;
use super::runtime::AlignedBuf;
use super::{concrete, Executable};
use crate::array::Array;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::op::{RandomDist, Ty};
use crate::graph::Node;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicI32, Ordering};

/// Below this many elementary operations a kernel runs on one thread: waking a worker costs
/// a few microseconds, about what 64K operations take.
const MIN_PARALLEL_WORK: usize = 1 << 16;

impl Executable {
    /// Runs the program. `feeds` and `vars` are in the order of [`Executable::placeholders`]
    /// and [`Executable::variables`], and must have exactly those types (anything else is an
    /// [`Error::Feed`] naming the placeholder or variable, before any native code runs);
    /// `run_index` makes random ops draw fresh numbers. Returns one array per program output.
    pub fn run(&self, feeds: &[&Array], vars: &[&Array], run_index: u64) -> Result<Vec<Array>> {
        let mut outs = vec![];
        self.run_into(feeds, vars, run_index, &mut outs)?;
        Ok(outs)
    }

    /// [`Executable::run`], reusing the arrays in `outs` (say, the previous run's results):
    /// an array at an output's position with that output's dtype and shape is overwritten
    /// instead of allocating a new one (any other array there is dropped, never written
    /// into). On success `outs` holds one array per program output; on error it is
    /// unspecified (but valid).
    pub fn run_into(
        &self,
        feeds: &[&Array],
        vars: &[&Array],
        run_index: u64,
        outs: &mut Vec<Array>,
    ) -> Result<()> {
        // Kernels index these buffers as the compiled types say, unchecked: every array
        // must have exactly its type.
        let want = |what: &str, label: &str, got: &Array, ty: &Ty| -> Result<()> {
            let shape = concrete(ty)?;
            if got.dtype() != ty.dtype || got.shape() != shape.as_slice() {
                return Err(Error::Feed(format!(
                    "{what} {label} expects {ty}, got {}{:?}",
                    got.dtype(),
                    got.shape()
                )));
            }
            Ok(())
        };
        if feeds.len() != self.placeholders.len() || vars.len() != self.variables.len() {
            return Err(Error::Feed(format!(
                "expected {} feed(s) and {} variable(s), got {} and {}",
                self.placeholders.len(),
                self.variables.len(),
                feeds.len(),
                vars.len()
            )));
        }
        for ((a, (_, t)), l) in feeds.iter().zip(&self.placeholders).zip(&self.labels.0) {
            want("placeholder", l, a, t)?;
        }
        for ((a, (_, t)), l) in vars.iter().zip(&self.variables).zip(&self.labels.1) {
            want("variable", l, a, t)?;
        }
        let pooled = self.pool.lock().map_or(None, |mut p| p.pop());
        let mut ws = match pooled {
            Some(ws) => ws,
            None => Workspace {
                slots: self
                    .slot_sizes
                    .iter()
                    .map(|&b| AlignedBuf::try_new(b))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(Error::invalid)?,
                scratch: AlignedBuf::try_new(self.scratch_bytes).map_err(Error::invalid)?,
            },
        };
        // Each computed output's buffer: recycled from its owning position, else
        // new (kernels write every element, but new arrays are zeroed anyway: `calloc`), or
        // an error if it cannot be allocated.
        let mut bufs: Vec<Array> = Vec::with_capacity(self.out_tys.len());
        for (d, t) in self.out_tys.iter().enumerate() {
            let shape = concrete(t)?;
            let reuse = outs
                .get_mut(self.owner[d])
                .filter(|a| a.dtype() == t.dtype && a.shape() == shape.as_slice());
            bufs.push(match reuse {
                Some(a) => std::mem::replace(a, Array::zeros(t.dtype, [0])),
                None => try_zeroed(t.dtype, &shape).map_err(Error::invalid)?,
            });
        }
        let threads = crate::threads::threads();
        let pool = if threads > 1 {
            crate::threads::pool(threads)
        } else {
            None
        };
        let result = match &pool {
            // Inside the pool, `gemm` and split kernels use its workers.
            Some(p) => {
                p.install(|| self.run_steps(feeds, vars, &mut ws, &mut bufs, run_index, threads))
            }
            None => self.run_steps(feeds, vars, &mut ws, &mut bufs, run_index, 1),
        };
        if let Ok(mut p) = self.pool.lock() {
            p.push(ws);
        }
        result?;
        // Computed outputs move to their owning positions; other fetches of them are copies,
        // made once the owners are filled; outputs that are not computed (a fetched source)
        // are copied from where they live.
        outs.truncate(self.outputs.len());
        outs.resize_with(self.outputs.len(), || Array::zeros(DType::F32, [0]));
        for (pos, (l, t)) in self.outputs.iter().enumerate() {
            outs[pos] = match l {
                Loc::Out(i) if self.owner[*i] == pos => {
                    std::mem::replace(&mut bufs[*i], Array::zeros(t.dtype, [0]))
                }
                Loc::Out(_) => continue,
                Loc::Feed(i) => feeds[*i].clone(),
                Loc::Var(i) => vars[*i].clone(),
                Loc::Const(i) => (*self.consts[*i]).clone(),
                Loc::Slot(_) => try_zeroed(t.dtype, &concrete(t)?).map_err(Error::invalid)?,
            };
        }
        for (pos, (l, _)) in self.outputs.iter().enumerate() {
            if let Loc::Out(i) = l {
                if self.owner[*i] != pos {
                    outs[pos] = outs[self.owner[*i]].clone();
                }
            }
        }
        Ok(())
    }

    /// Runs every step in order on `ws` and the output buffers `outs`.
    fn run_steps(
        &self,
        feeds: &[&Array],
        vars: &[&Array],
        ws: &mut Workspace,
        outs: &mut [Array],
        run_index: u64,
        threads: usize,
    ) -> Result<()> {
        let mut bufs = Buffers {
            feeds,
            vars,
            consts: &self.consts,
            ws,
            outs,
        };
        if !self.profile.on() {
            for step in &self.steps {
                run_step(&mut bufs, step, run_index, threads)?;
            }
            return Ok(());
        }
        // `KILN_PROFILE=1`: time each step (`profile.rs`).
        let mut times = vec![std::time::Duration::ZERO; self.steps.len()];
        for (step, t) in self.steps.iter().zip(&mut times) {
            let t0 = std::time::Instant::now();
            run_step(&mut bufs, step, run_index, threads)?;
            *t = t0.elapsed();
        }
        self.profile.add(&times);
        Ok(())
    }
}

/// Runs one step on `bufs`.
fn run_step(bufs: &mut Buffers<'_>, step: &Step, run_index: u64, threads: usize) -> Result<()> {
    match step {
        Step::Kernel {
            f,
            args,
            out,
            split,
            gemm,
            fails,
            ..
        } => run_kernel(
            bufs,
            *f,
            args,
            *out,
            fails.as_deref(),
            split.as_ref(),
            gemm.as_ref(),
            threads,
        )?,
        Step::Random {
            dist,
            seed,
            out,
            dtype,
            len,
            ..
        } => {
            let dst = bufs.ptr(*out);
            run_random(dst, *dist, *seed, *dtype, *len, run_index, threads);
        }
        Step::Conv {
            conv, a, b, out, ..
        } => {
            let (a, b, out) = (bufs.ptr(*a), bufs.ptr(*b), bufs.ptr(*out));
            let epi = conv.epi.as_ref().map(|e| e.pointers(bufs));
            let scratch = bufs.ws.scratch.as_mut_ptr();
            // SAFETY: `compile::conv_step` checked the geometry against the operand
            // and output types, which the buffers have (feeds and variables checked
            // by `run_into`, outputs allocated from their types, slots validated);
            // the output is a slot or output array of its own (the buffer assignment
            // shares a slot only with an elementwise kernel), and scratch holds
            // `scratch_bytes`, at least the step's; the epilogue's steps were checked
            // when attached (`conv/epilogue.rs`).
            unsafe { super::conv::run_conv(conv, a, b, out, scratch, epi.as_ref(), threads) };
        }
        Step::Pool(p) => p.run(bufs, threads),
        Step::ConvFused(f) => f.run(bufs, threads),
        Step::AllReduce(c) => c.run(bufs)?,
        Step::Copy {
            from, to, bytes, ..
        } => {
            let src = bufs.ptr(*from);
            let dst = bufs.ptr(*to);
            if *bytes > 0 && src != dst {
                // SAFETY: both locations hold at least `bytes`, the reshape's
                // size (slots are validated, feeds checked, outputs allocated from
                // their types), in distinct allocations (`src != dst`).
                unsafe { std::ptr::copy_nonoverlapping(src, dst, *bytes) };
            }
        }
    }
    Ok(())
}

/// The error a kernel reports when one of its integer divisions divides by zero, naming the
/// user's op as the interpreter does (`Node::runtime_error`): `fallible` are the user's
/// nodes inside the kernel that can fail (`Program::fallible`), in creation order. The
/// kernel's status flag does not say which division failed, so with several the first is
/// named and the others listed. None if the kernel has none (it cannot fail).
pub(super) fn division_error(fallible: &[Node]) -> Option<Error> {
    const MSG: &str = "integer division by zero";
    let (first, others) = fallible.split_first()?;
    if others.is_empty() {
        return Some(first.runtime_error(MSG));
    }
    let list: Vec<String> = others.iter().map(Node::site).collect();
    Some(first.runtime_error(format!(
        "{MSG} (here, or in {}, computed in the same fused kernel)",
        list.join(" or ")
    )))
}

/// A kernel step: the matmul's `gemm` if any, then the kernel function, split into chunks of
/// its first axis over the pool when it is large enough. An integer division by zero in the
/// kernel is `fails`, the error naming the user's op.
#[allow(clippy::too_many_arguments)]
fn run_kernel(
    bufs: &mut Buffers<'_>,
    f: Option<KernelFn>,
    args: &[Loc],
    out: Loc,
    fails: Option<&Error>,
    split: Option<&Split>,
    gemm: Option<&Gemm>,
    threads: usize,
) -> Result<()> {
    let mut ptrs: SmallVec<[*mut u8; 8]> = args.iter().map(|&l| bufs.ptr(l)).collect();
    ptrs.push(bufs.ptr(out));
    let scratch = bufs.ws.scratch.as_mut_ptr();
    if let Some(gm) = gemm {
        let a = bufs.ptr(gm.a.0);
        let b = bufs.ptr(gm.b.0);
        let c = if gm.into_output {
            ptrs[args.len()]
        } else {
            scratch
        };
        // SAFETY: `a` and `b` are the kernel's operand buffers, at least their
        // parameter types' sizes (as for the kernel call below), and the validated
        // kernel's `MatMul` maps stay inside them; `c` is the output (a slot or an
        // output array, never an operand's buffer: the validated buffer assignment
        // lets only elementwise kernels write in place) or scratch, sized for the
        // product by `codegen::scratch_bytes`.
        unsafe { run_gemm(gm, a, b, c, threads) };
    }
    let Some(f) = f else { return Ok(()) };
    let chunks = match split {
        Some(sp) if threads > 1 && sp.extent * sp.cost >= MIN_PARALLEL_WORK => {
            threads.min(sp.extent.div_ceil(sp.align))
        }
        _ => 1,
    };
    let status = AtomicI32::new(0);
    let call = |c: usize| {
        let (lo, hi) = match split {
            Some(sp) => chunk(sp, c, chunks),
            None => (0, 1),
        };
        let mut st = 0i32;
        // SAFETY: `f` was compiled from a validated kernel whose index maps stay
        // inside buffers of the parameter types' sizes, and those types are the
        // operands' (`compile::check_param_types`); `ptrs` holds one buffer per
        // parameter plus the output, each at least that size (feeds and variables
        // have exactly their types, checked by `run_into`; outputs are allocated
        // from their types; slots are at least their values' sizes, checked by
        // `memplan::validate`), and `scratch` has `scratch_bytes` >= what any
        // kernel needs. The output shares a buffer with an operand only for an
        // elementwise kernel reading that operand at the element it writes
        // (validated too). Concurrent calls get disjoint `[lo, hi)` ranges of the
        // first axis and write only their own rows of the output and of scratch
        // (`Split`'s contract); they only read the operands.
        unsafe { f(ptrs.as_ptr(), scratch, &mut st, lo as i64, hi as i64) };
        status.fetch_or(st, Ordering::Relaxed);
    };
    // SAFETY: concurrent calls write disjoint rows (see `call`).
    unsafe { on_pool(chunks, &call) };
    if status.into_inner() != 0 {
        return Err(fails.cloned().unwrap_or_else(|| {
            Error::Internal(
                "jit: a kernel with no integer division reported a division by zero".into(),
            )
        }));
    }
    Ok(())
}

/// A random step: `len` numbers of `dtype` into `dst`, split over the pool above 4K numbers
/// (element `i` depends only on (seed, run, i), so the bits do not depend on the split).
fn run_random(
    dst: *mut u8,
    dist: RandomDist,
    seed: u64,
    dtype: DType,
    len: usize,
    run_index: u64,
    threads: usize,
) {
    // Philox costs ~20 ns a block: split above 4K numbers.
    let chunks = if threads > 1 && len >= 4096 {
        threads
    } else {
        1
    };
    let fill = |c: usize| {
        let (lo, hi) = (len * c / chunks, len * (c + 1) / chunks);
        let put = |i: u64, v: f32| {
            let i = i as usize;
            // SAFETY: the output holds `len` elements of `dtype` (an output array
            // of the op's type, or a slot at least its size: `memplan::validate`)
            // and `i < len`; concurrent calls get disjoint ranges.
            unsafe {
                match dtype {
                    DType::F64 => *(dst as *mut f64).add(i) = v as f64,
                    _ => *(dst as *mut f32).add(i) = v,
                }
            }
        };
        let range = lo as u64..hi as u64;
        match dist {
            RandomDist::Uniform { low, high } => {
                crate::rng::fill_uniform(seed, run_index, range, low.0 as f32, high.0 as f32, put)
            }
            RandomDist::Normal { mean, std } => {
                for i in range {
                    let z = crate::rng::standard_normal(seed, run_index, i);
                    put(i, mean.0 as f32 + std.0 as f32 * z);
                }
            }
        }
    };
    // SAFETY: concurrent calls write disjoint ranges of the output.
    unsafe { on_pool(chunks, &fill) };
}

/// The `c`-th of `chunks` ranges of a split's axis, with boundaries on multiples of
/// `align`.
fn chunk(sp: &Split, c: usize, chunks: usize) -> (usize, usize) {
    let units = sp.extent.div_ceil(sp.align);
    let lo = units * c / chunks * sp.align;
    let hi = (units * (c + 1) / chunks * sp.align).min(sp.extent);
    (lo.min(sp.extent), hi)
}

/// Runs `call(0..chunks)`: chunk 0 on this thread, the others on the current rayon pool (the
/// one `run_into` installed), and returns when all are done.
///
/// # Safety
/// `call` captures raw buffer pointers, which are not `Sync`; calls with different chunk
/// numbers must be safe to run at the same time (each writes only its own part of a buffer).
pub(super) unsafe fn on_pool(chunks: usize, call: &dyn Fn(usize)) {
    struct Shared<'a>(&'a dyn Fn(usize));
    // SAFETY: the caller's contract: concurrent calls touch disjoint memory.
    unsafe impl Sync for Shared<'_> {}
    if chunks <= 1 {
        call(0);
        return;
    }
    let shared = Shared(call);
    rayon::scope(|sc| {
        for c in 1..chunks {
            let p = &shared;
            sc.spawn(move |_| (p.0)(c));
        }
        (shared.0)(0);
    });
}
