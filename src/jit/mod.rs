//! The Cranelift backend: an optimized [`Program`] becomes an [`Executable`] of native
//! kernels.
//!
//! Compilation takes the program that the pass pipeline produced (concrete shapes, fused
//! kernels, a buffer assignment) and emits one Cranelift function per fused kernel into a
//! single JIT module (`codegen.rs` explains the lowering). Running walks the schedule: each
//! step is a kernel call (a matmul's `gemm` first, then its epilogue), a random fill, or a
//! copy (a `reshape` that could not alias its input). Nothing else: views, `pad` and `concat`
//! are kernels too, and an op without a native lowering is a compile error (`native.rs` checks
//! that every node is covered and counts the steps). Large kernels and random
//! fills are split over the thread pool (`crate::threads`; `codegen::Split` says why the bits
//! do not depend on the thread count).
//!
//! Buffers belong to the backend: feeds, variables and constants are read where they are;
//! intermediates live in the slots of the buffer assignment ([`memplan`]), a set of
//! 64-byte-aligned buffers kept in a per-executable pool so that concurrent runs each get
//! their own; outputs are written straight into the arrays handed back, which
//! [`Executable::run_into`] takes from the caller when their types match (so a loop of runs
//! allocates nothing). The assignment is the pipeline's `memplan` result, or, for a pipeline
//! without that pass, planned here; either way `memplan::validate` checks it before any code
//! is generated, and a wrong one is an internal error, never a silent re-plan.
//!
//! One file per job: `module.rs` (the Cranelift module, helper symbols, compiling kernels in
//! parallel), `compile.rs` (locations and steps from the program), `exec.rs` (running the
//! steps), `native.rs` (the proof that every node runs natively, and the step counts),
//! `buffers.rs` (locations to pointers), `gemm.rs` (the matmul step), `runtime.rs`
//! (what native code calls), `codegen.rs` and `math.rs`/`vmath.rs` (the kernels' code).
//!
//! # Safety
//! This is the only module of kiln with `unsafe` code. Generated code is memory-safe by
//! construction: every kernel passed [`Kernel::validate`](crate::kernel::Kernel::validate)
//! (each index map stays inside its parameter for every point of the loop domain), its
//! parameter and output types are its operands' and node's, every slot is at least the size of
//! each value it holds and never holds two live values but in the two validated in-place and
//! alias cases, and every array handed to a run has exactly its compiled type, which
//! [`Executable::run`] checks before any native code runs. What the executable records about
//! its buffers is private, so safe code cannot change it. Each `unsafe` block says which of
//! these facts it relies on.

mod buffers;
mod codegen;
mod collective;
mod compile;
mod conv;
mod conv_direct;
mod conv_dw;
mod conv_fused;
mod conv_wino;
mod exec;
mod gemm;
#[allow(missing_docs)]
mod math;
mod module;
mod native;
mod pool;
mod profile;
mod runtime;
#[cfg(test)]
mod tests;
mod vmath;

use crate::array::Array;
use crate::error::{Error, Result};
use crate::graph::op::Ty;
use crate::graph::NodeId;
use crate::passes::fusion::Fusion;
use crate::passes::verify::Verifier;
use crate::passes::{memplan, Pass, PassOptions, Program};
use buffers::{Loc, Workspace};
use compile::Step;
use module::Code;
pub use native::StepCounts;
pub use profile::StepTime;
use std::sync::{Arc, Mutex};

/// Where the time of one compile went (see [`crate::session::Session::last_compile_times`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CompileTimes {
    /// The pass pipeline (autodiff is not included: gradients are built when the user asks).
    pub passes: std::time::Duration,
    /// Building Cranelift IR from the kernels.
    pub lowering: std::time::Duration,
    /// Cranelift's compilation of every kernel to machine code.
    pub cranelift: std::time::Duration,
    /// Linking the module and making its code executable.
    pub finalize: std::time::Duration,
    /// The number of native kernels compiled.
    pub kernels: usize,
    /// How many of them run their `exp`/`log`/`tanh`/`sigmoid` in tiles through rustc-built
    /// AVX2 code (see `KILN_TILE_MATH` in the README).
    pub tiled: usize,
    /// The executable's steps, by kind.
    pub steps: StepCounts,
}

impl CompileTimes {
    /// The whole compile.
    pub fn total(&self) -> std::time::Duration {
        self.passes + self.lowering + self.cranelift + self.finalize
    }
}

/// A compiled program: native kernels plus the schedule that runs them.
///
/// Executables are `Send + Sync`: several threads may call [`Executable::run`] at once (each
/// run takes its own workspace from a pool).
///
/// Native code trusts what the executable records about its buffers (the types of its
/// placeholders and variables, its buffer slots), so none of it can be changed from outside:
/// [`Executable::placeholders`] and [`Executable::variables`] only read.
///
/// ```compile_fail,E0616
/// fn shrink(exe: &mut kiln::jit::Executable) {
///     exe.placeholders.clear(); // private: feeding a smaller array must stay impossible
/// }
/// ```
pub struct Executable {
    steps: Vec<Step>,
    /// Placeholders, in the order `run` expects their arrays, with concrete types.
    placeholders: Vec<(NodeId, Ty)>,
    /// Variables, in the order `run` expects their arrays, with types.
    variables: Vec<(NodeId, Ty)>,
    /// How errors name each placeholder, then each variable (`"x"`, `(placeholder)`).
    labels: (Vec<String>, Vec<String>),
    outputs: Vec<(Loc, Ty)>,
    /// The type of each distinct output, by its `Loc::Out` index.
    out_tys: Vec<Ty>,
    /// The position in `outputs` that owns each distinct output's buffer: its last fetch.
    /// (A session lists variable updates after the user's fetches; when the user also fetches
    /// the updated value, the update's position holds the recycled buffer.) Other positions
    /// fetching the same value get copies.
    owner: Vec<usize>,
    consts: Vec<Arc<Array>>,
    slot_sizes: Vec<usize>,
    scratch_bytes: usize,
    pool: Mutex<Vec<Workspace>>,
    kernels: usize,
    times: CompileTimes,
    /// Per-step timers (`KILN_PROFILE=1`).
    profile: profile::Profile,
    _code: Code,
}

fn concrete(ty: &Ty) -> Result<Vec<usize>> {
    ty.shape
        .to_fixed()
        .ok_or_else(|| Error::invalid(format!("jit: shape {} is not concrete", ty.shape)))
}

fn bytes_of(ty: &Ty) -> usize {
    ty.shape.numel().unwrap_or(0) * ty.dtype.size_bytes()
}

impl Executable {
    /// Compiles `p`, which must have concrete shapes (run the pass pipeline with a batch
    /// size first). Its buffer assignment ([`Program::memory`]) is used if the pipeline made
    /// one, else planned here; either way it is validated first, and a plan that does not
    /// fit the program (say, the graph was changed after `memplan`) is an
    /// [`Error::Internal`]. Types native code relies on are checked too (kernels', constants',
    /// reshapes'), as [`Error::Invalid`].
    pub fn compile(p: &Program) -> Result<Executable> {
        Executable::compile_with(p, module::tile_math_default())
    }

    /// [`Executable::compile`], choosing whether `f32` transcendentals run through
    /// `vmath`'s AVX2 tile functions (`tile_math`, honoured only where the CPU has AVX2 and
    /// FMA) or stay in Cranelift. Both give bitwise the same results.
    pub(crate) fn compile_with(p: &Program, tile_math: bool) -> Result<Executable> {
        let tile_math = tile_math && vmath::available();
        p.graph.check()?;
        // Fusion is the backend's lowering: every compute op runs as a kernel. A program from
        // a pipeline without the fusion pass is lowered here (and then planned here), so a
        // custom pipeline changes speed, never what runs natively.
        let fused;
        let p = if needs_fusion(p) {
            // Fusion trusts the graph's types: check them first (a `Program`'s graph is
            // public, so it may have been changed after its pipeline ran).
            Verifier::new().check(p, "(input to the JIT's fusion)", None)?;
            let mut q = p.clone();
            q.memory = None;
            Fusion.run(&mut q, &PassOptions::default())?;
            fused = q;
            &fused
        } else {
            p
        };
        let order = p.live_order();
        for &id in &order {
            concrete(&p.graph.node(id).ty)?;
        }
        // The buffer assignment: the pipeline's, or (a pipeline without `memplan`) planned
        // here; validated either way, since kernels write into these slots unchecked.
        let own_plan;
        let plan = match p.memory() {
            Some(plan) => plan,
            None => {
                own_plan = memplan::plan(p);
                &own_plan
            }
        };
        memplan::validate(p, plan)?;
        let (mut module, helpers) = module::new_module(tile_math)?;
        let lay = compile::layout(p, &order, plan)?;
        let mut times = CompileTimes::default();
        let mut sched = compile::schedule(p, &order, &lay, &mut module, &helpers, &mut times)?;
        module::define_all(&mut module, std::mem::take(&mut sched.lowered), &mut times)?;
        let t_fin = std::time::Instant::now();
        for (si, ptr) in module::finalize(&mut module, std::mem::take(&mut sched.pending))? {
            match &mut sched.steps[si] {
                Step::Kernel { f, .. } => *f = Some(ptr),
                Step::Pool(p) => p.set_fn(ptr),
                Step::Conv { conv, .. } => conv.dw = Some(ptr),
                _ => {}
            }
        }
        times.steps.conv_epilogues =
            conv::attach_epilogues(p, &mut sched.steps, &mut sched.scratch_bytes);
        times.finalize = t_fin.elapsed();
        times.kernels = sched.kernels;
        let outs = compile::outputs(p, &lay);
        let label =
            |v: &[(NodeId, Ty)]| v.iter().map(|(id, _)| p.graph.node(*id).label()).collect();
        let profile = profile::Profile::new(p, &sched.steps);
        Ok(Executable {
            steps: sched.steps,
            labels: (label(&lay.placeholders), label(&lay.variables)),
            placeholders: lay.placeholders,
            variables: lay.variables,
            outputs: outs.outputs,
            out_tys: outs.out_tys,
            owner: outs.owner,
            consts: lay.consts,
            slot_sizes: plan.slots().to_vec(),
            scratch_bytes: sched.scratch_bytes,
            pool: Mutex::new(vec![]),
            kernels: sched.kernels,
            times,
            profile,
            _code: Code(Some(module)),
        })
    }

    /// The placeholders, in the order [`Executable::run`] expects their arrays, with the
    /// concrete types those arrays must have.
    pub fn placeholders(&self) -> &[(NodeId, Ty)] {
        &self.placeholders
    }

    /// The variables, in the order [`Executable::run`] expects their arrays, with the types
    /// those arrays must have.
    pub fn variables(&self) -> &[(NodeId, Ty)] {
        &self.variables
    }

    /// The number of native kernels.
    pub fn kernel_count(&self) -> usize {
        self.kernels
    }

    /// Where the compile's time went (`passes` is zero here: the session adds it).
    pub fn compile_times(&self) -> CompileTimes {
        self.times
    }
}

/// True if a live node of `p` is a compute op that only a kernel runs: the program has not
/// been through the fusion pass (or a pass after it added one).
fn needs_fusion(p: &Program) -> bool {
    p.live_order()
        .into_iter()
        .any(|id| compile::needs_kernel(&p.graph.node(id).op))
}
