//! The Cranelift backend: an optimized [`Program`] becomes an [`Executable`] of native
//! kernels.
//!
//! Compilation takes the program that the pass pipeline produced (concrete shapes, fused
//! kernels, a memory plan) and emits one Cranelift function per fused kernel into a single
//! JIT module (`codegen.rs` explains the lowering). Running walks the schedule: each step is a
//! kernel call (a matmul's `gemm` first, then its epilogue), a random fill, a copy (a
//! `reshape` that could not alias its input), or, for `concat` and `pad`, a host step that
//! evaluates the op with the reference interpreter's semantics. Large kernels and random
//! fills are split over the thread pool (`crate::threads`; `codegen::Split` says why the bits
//! do not depend on the thread count).
//!
//! Buffers: feeds, variables and constants are read where they are; intermediates live in
//! the memory plan's slots, a set of 64-byte-aligned buffers kept in a per-executable pool so
//! that concurrent runs each get their own; outputs are written straight into the arrays
//! handed back, which [`Executable::run_into`] takes from the caller when their types match
//! (so a loop of runs allocates nothing).
//!
//! # Safety
//! This is the only module of kiln with `unsafe` code. Generated code is memory-safe by
//! construction: every kernel passed [`Kernel::validate`] (each index map stays inside its
//! parameter for every point of the loop domain) and every buffer handed to a kernel has
//! exactly its parameter type's size, which [`Executable::run`] checks before any native
//! code runs. Each `unsafe` block says which of these facts it relies on.

mod codegen;
#[allow(missing_docs)]
mod math;
mod runtime;
#[cfg(test)]
mod tests;
mod vmath;

use crate::array::{Array, ArrayData};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::op::{Op, RandomDist, Ty};
use crate::graph::{GraphData, NodeId};
use crate::kernel::{Core, Kernel, MatOperand};
use crate::passes::{memplan, Program};
use codegen::{kernel_signature, Gen, Helpers, Split};
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::types::{F32, F64, I32, I64};
use cranelift_codegen::ir::{AbiParam, Function, UserFuncName};
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module, ModuleReloc};
use runtime::AlignedBuf;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

type KernelFn = unsafe extern "C" fn(*const *mut u8, *mut u8, *mut i32, i64, i64);

/// Below this many elementary operations a kernel runs on one thread: waking a worker costs
/// a few microseconds, about what 64K operations take.
const MIN_PARALLEL_WORK: usize = 1 << 16;

/// Where a value lives during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    Feed(usize),
    Var(usize),
    Const(usize),
    Slot(usize),
    Out(usize),
}

#[allow(clippy::large_enum_variant)] // few steps per executable; boxing buys nothing
enum Step {
    Kernel {
        /// None for a matmul whose epilogue is just the product (`gemm` writes the output).
        f: Option<KernelFn>,
        args: Vec<Loc>,
        out: Loc,
        node: NodeId,
        split: Option<Split>,
        gemm: Option<Gemm>,
    },
    Copy {
        from: Loc,
        to: Loc,
        bytes: usize,
    },
    /// Random numbers written straight into the output, by the same function the
    /// interpreter uses (`rng`), split over the pool: element `i` depends only on
    /// (seed, run, i), so the bits never depend on the thread count.
    Random {
        dist: RandomDist,
        seed: u64,
        out: Loc,
        dtype: DType,
        len: usize,
    },
    Host {
        graph: GraphData,
        placeholders: Vec<NodeId>,
        out_node: NodeId,
        args: Vec<(Loc, Ty)>,
        out: Loc,
    },
}

/// The matrix product of a matmul kernel, run by the executable before the kernel's epilogue
/// function: operands are the kernel's parameters `a` and `b` read through `Core::MatMul`'s
/// maps; the product goes to the output (when the epilogue can run in place) or to scratch.
struct Gemm {
    dtype: DType,
    a: (Loc, MatOperand),
    b: (Loc, MatOperand),
    batch: Vec<usize>,
    mkn: (usize, usize, usize),
    into_output: bool,
}

/// The JIT module, freed when the executable is dropped.
struct Code(Option<JITModule>);

// SAFETY: after `finalize_definitions` the module is only read (function addresses were
// taken at compile time) and is touched again only by `Drop`, which has `&mut self`.
unsafe impl Send for Code {}
// SAFETY: as above; no method takes `&self`.
unsafe impl Sync for Code {}

impl Drop for Code {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            // SAFETY: the executable owning this code is being dropped, so no function
            // pointer into it can be called again (steps are dropped with it).
            unsafe { m.free_memory() };
        }
    }
}

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
}

impl CompileTimes {
    /// The whole compile.
    pub fn total(&self) -> std::time::Duration {
        self.passes + self.lowering + self.cranelift + self.finalize
    }
}

struct Workspace {
    slots: Vec<AlignedBuf>,
    scratch: AlignedBuf,
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
    /// size first); `p.memory` is used if present.
    pub fn compile(p: &Program) -> Result<Executable> {
        Executable::compile_with(p, tile_math_default())
    }

    /// [`Executable::compile`], choosing whether `f32` transcendentals run through
    /// `vmath`'s AVX2 tile functions (`tile_math`, honoured only where the CPU has AVX2 and
    /// FMA) or stay in Cranelift. Both give bitwise the same results.
    pub(crate) fn compile_with(p: &Program, tile_math: bool) -> Result<Executable> {
        let tile_math = tile_math && vmath::available();
        p.graph.check()?;
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
        let mut flag_builder = settings::builder();
        let set = |fb: &mut settings::Builder, k: &str, v: &str| {
            fb.set(k, v)
                .map_err(|e| Error::invalid(format!("jit: setting {k}: {e}")))
        };
        set(&mut flag_builder, "opt_level", "speed")?;
        set(&mut flag_builder, "use_colocated_libcalls", "false")?;
        set(&mut flag_builder, "is_pic", "false")?;
        let isa = cranelift_native::builder()
            .map_err(|e| Error::invalid(format!("jit: this machine is not supported: {e}")))?
            .finish(settings::Flags::new(flag_builder))
            .map_err(|e| Error::invalid(format!("jit: {e}")))?;
        let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
        jb.symbol("kiln_pow_f32", runtime::kiln_pow_f32 as *const u8);
        jb.symbol("kiln_pow_f64", runtime::kiln_pow_f64 as *const u8);
        jb.symbol("kiln_pow_i32", runtime::kiln_pow_i32 as *const u8);
        jb.symbol("kiln_unary_f64", runtime::kiln_unary_f64 as *const u8);
        for (name, f) in vmath::ENTRIES {
            jb.symbol(name, f as *const u8);
        }
        let mut module = JITModule::new(jb);
        let helpers = declare_helpers(&mut module, tile_math)?;

        // Locations of every live value.
        let mut loc: HashMap<NodeId, Loc> = HashMap::new();
        let mut placeholders = vec![];
        let mut variables = vec![];
        let mut consts = vec![];
        let slot_sizes = plan.slots().to_vec();
        let mut outputs = vec![];
        let mut out_index: HashMap<NodeId, usize> = HashMap::new();
        for &o in &p.outputs {
            if !out_index.contains_key(&o) {
                out_index.insert(o, out_index.len());
            }
        }
        for &id in &order {
            let n = p.graph.node(id);
            let l = match &n.op {
                Op::Placeholder => {
                    placeholders.push((id, n.ty.clone()));
                    Loc::Feed(placeholders.len() - 1)
                }
                Op::Variable { .. } => {
                    variables.push((id, n.ty.clone()));
                    Loc::Var(variables.len() - 1)
                }
                Op::Constant(c) => {
                    consts.push(c.0.clone());
                    Loc::Const(consts.len() - 1)
                }
                _ => match (out_index.get(&id), plan.slot_of().get(&id)) {
                    (Some(&i), _) => Loc::Out(i),
                    (None, Some(&s)) => Loc::Slot(s),
                    (None, None) => {
                        return Err(Error::Internal(format!(
                            "jit: {} has no buffer (the validated plan covers every value)",
                            n.label()
                        )))
                    }
                },
            };
            loc.insert(id, l);
        }

        // The schedule.
        let mut fctx = FunctionBuilderContext::new();
        let mut lowered: Vec<(cranelift_module::FuncId, Function)> = vec![];
        let mut steps = vec![];
        let mut pending: Vec<(usize, cranelift_module::FuncId)> = vec![];
        let mut scratch_bytes = 0;
        let mut kernels = 0;
        let mut times = CompileTimes::default();
        for &id in &order {
            let n = p.graph.node(id);
            let out = loc[&id];
            match &n.op {
                Op::Placeholder | Op::Variable { .. } | Op::Constant(_) => {}
                Op::Fusion(k) => {
                    let k = p
                        .kernels
                        .lookup(*k)
                        .map_err(|e| Error::invalid(format!("jit: {e}")))?;
                    k.validate()
                        .map_err(|e| Error::invalid(format!("jit: invalid kernel: {e}")))?;
                    check_param_types(k, &p.graph, &n.inputs, &n.ty)?;
                    let args: Vec<Loc> = n.inputs.iter().map(|i| loc[i]).collect();
                    let gemm = match &k.core {
                        Core::MatMul {
                            a,
                            b,
                            batch,
                            m,
                            k: kk,
                            n,
                        } => Some(Gemm {
                            dtype: k.params[0].dtype,
                            a: (args[a.param as usize], a.clone()),
                            b: (args[b.param as usize], b.clone()),
                            batch: batch.to_vec(),
                            mkn: (*m, *kk, *n),
                            into_output: codegen::matmul_in_output(k),
                        }),
                        _ => None,
                    };
                    let f = if gemm.is_some() && codegen::direct_matmul(k) {
                        None
                    } else {
                        let fid = lower_kernel(
                            &mut module,
                            &mut fctx,
                            &helpers,
                            k,
                            kernels,
                            &mut times,
                            &mut lowered,
                        )?;
                        kernels += 1;
                        pending.push((steps.len(), fid));
                        Some(noop_kernel as KernelFn)
                    };
                    scratch_bytes = scratch_bytes.max(codegen::scratch_bytes(k));
                    steps.push(Step::Kernel {
                        f,
                        args,
                        out,
                        node: id,
                        split: codegen::split_of(k),
                        gemm,
                    });
                }
                Op::Random { dist, seed } if matches!(n.ty.dtype, DType::F32 | DType::F64) => steps
                    .push(Step::Random {
                        dist: *dist,
                        seed: *seed,
                        out,
                        dtype: n.ty.dtype,
                        len: n.ty.shape.numel().unwrap_or(0),
                    }),
                Op::Reshape if loc[&n.inputs[0]] == out => {}
                Op::Reshape => steps.push(Step::Copy {
                    from: loc[&n.inputs[0]],
                    to: out,
                    bytes: bytes_of(&n.ty),
                }),
                _ => {
                    // A host step: the op alone in a small graph, run by the interpreter.
                    let mut g = GraphData::new();
                    let mut phs = vec![];
                    let mut args = vec![];
                    for (k, &i) in n.inputs.iter().enumerate() {
                        let t = p.graph.node(i).ty.clone();
                        let ph = g.add_node(
                            Op::Placeholder,
                            &[],
                            Some(t.clone()),
                            Some(format!("in{k}")),
                            None,
                        );
                        phs.push(ph);
                        args.push((loc[&i], t));
                    }
                    let out_node =
                        g.add_node(n.op.clone(), &phs, Some(n.ty.clone()), None, n.loc.clone());
                    g.check()?;
                    steps.push(Step::Host {
                        graph: g,
                        placeholders: phs,
                        out_node,
                        args,
                        out,
                    });
                }
            }
        }
        let mut outs_sorted: Vec<(NodeId, usize)> =
            out_index.iter().map(|(&k, &v)| (k, v)).collect();
        outs_sorted.sort_by_key(|x| x.1);
        for (id, _) in &outs_sorted {
            let n = p.graph.node(*id);
            // An output that is a source is copied out of its location at the end.
            outputs.push((loc[id], n.ty.clone()));
        }
        define_all(&mut module, lowered, &mut times)?;
        let t_fin = std::time::Instant::now();
        module
            .finalize_definitions()
            .map_err(|e| Error::invalid(format!("jit: {e}")))?;
        for (si, fid) in pending {
            let ptr = module.get_finalized_function(fid);
            if let Step::Kernel { f, .. } = &mut steps[si] {
                // SAFETY: the function was defined with `kernel_signature`, which is this
                // type's C ABI: five pointer-sized arguments, no result.
                *f = Some(unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) });
            }
        }
        times.finalize = t_fin.elapsed();
        times.kernels = kernels;
        let out_tys: Vec<Ty> = outs_sorted
            .iter()
            .map(|(id, _)| p.graph.node(*id).ty.clone())
            .collect();
        // Fetches are listed per request, duplicates included.
        let outputs: Vec<(Loc, Ty)> = p
            .outputs
            .iter()
            .map(|o| outputs[out_index[o]].clone())
            .collect();
        // Every distinct output is fetched somewhere (it came from `p.outputs`).
        let owner: Vec<usize> = outs_sorted
            .iter()
            .map(|(id, _)| p.outputs.iter().rposition(|o| o == id).unwrap_or(0))
            .collect();
        let label =
            |v: &[(NodeId, Ty)]| v.iter().map(|(id, _)| p.graph.node(*id).label()).collect();
        Ok(Executable {
            steps,
            labels: (label(&placeholders), label(&variables)),
            placeholders,
            variables,
            outputs,
            out_tys,
            owner,
            consts,
            slot_sizes,
            scratch_bytes,
            pool: Mutex::new(vec![]),
            kernels,
            times,
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
        let mut ws = self
            .pool
            .lock()
            .map_or(None, |mut p| p.pop())
            .unwrap_or_else(|| Workspace {
                slots: self
                    .slot_sizes
                    .iter()
                    .map(|&b| AlignedBuf::new(b))
                    .collect(),
                scratch: AlignedBuf::new(self.scratch_bytes),
            });
        // Each computed output's buffer: recycled from its owning position, else
        // new (kernels write every element, but new arrays are zeroed anyway: `calloc`).
        let mut bufs: Vec<Array> = Vec::with_capacity(self.out_tys.len());
        for (d, t) in self.out_tys.iter().enumerate() {
            let shape = concrete(t)?;
            let reuse = outs
                .get_mut(self.owner[d])
                .filter(|a| a.dtype() == t.dtype && a.shape() == shape.as_slice());
            bufs.push(match reuse {
                Some(a) => std::mem::replace(a, Array::zeros(t.dtype, [0])),
                None => Array::zeros(t.dtype, shape),
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
                Loc::Slot(_) => Array::zeros(t.dtype, concrete(t)?),
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

    fn run_steps(
        &self,
        feeds: &[&Array],
        vars: &[&Array],
        ws: &mut Workspace,
        outs: &mut [Array],
        run_index: u64,
        threads: usize,
    ) -> Result<()> {
        for step in &self.steps {
            match step {
                Step::Kernel {
                    f,
                    args,
                    out,
                    node,
                    split,
                    gemm,
                } => {
                    let mut ptrs: SmallVec<[*mut u8; 8]> = args
                        .iter()
                        .map(|&l| ptr_of(l, feeds, vars, &self.consts, ws, outs))
                        .collect();
                    ptrs.push(ptr_of(*out, feeds, vars, &self.consts, ws, outs));
                    let scratch = ws.scratch.as_mut_ptr();
                    if let Some(gm) = gemm {
                        let a = ptr_of(gm.a.0, feeds, vars, &self.consts, ws, outs);
                        let b = ptr_of(gm.b.0, feeds, vars, &self.consts, ws, outs);
                        let c = if gm.into_output {
                            ptrs[args.len()]
                        } else {
                            scratch
                        };
                        // SAFETY: `a` and `b` are the kernel's operand buffers, of their
                        // parameter types' sizes (checked as for kernels below), and the
                        // validated kernel's `MatMul` maps stay inside them; `c` is the output
                        // (a slot or output array, never an operand: the memory plan does not
                        // run matmuls in place) or scratch, sized for the product by
                        // `codegen::scratch_bytes`.
                        unsafe { run_gemm(gm, a, b, c, threads) };
                    }
                    let Some(f) = f else { continue };
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
                        // SAFETY: `f` was compiled from a validated kernel whose index maps
                        // stay inside buffers of the parameter types' sizes; `ptrs` holds one
                        // buffer per parameter plus the output, each of exactly that size
                        // (feeds and variables were checked above, slots and outputs are
                        // allocated from the same types), and `scratch` has `scratch_bytes`
                        // >= what any kernel needs. Concurrent calls get disjoint `[lo, hi)`
                        // ranges of the first axis and write only their own rows of the output
                        // and of scratch (`Split`'s contract); they only read the operands.
                        unsafe { f(ptrs.as_ptr(), scratch, &mut st, lo as i64, hi as i64) };
                        status.fetch_or(st, Ordering::Relaxed);
                    };
                    // SAFETY: concurrent calls write disjoint rows (see `call`).
                    unsafe { on_pool(chunks, &call) };
                    if status.into_inner() != 0 {
                        return Err(Error::Runtime {
                            op: "div".into(),
                            loc: None,
                            msg: format!("integer division by zero (in kernel {node:?})"),
                        });
                    }
                }
                Step::Random {
                    dist,
                    seed,
                    out,
                    dtype,
                    len,
                } => {
                    let dst = ptr_of(*out, feeds, vars, &self.consts, ws, outs);
                    // Philox costs ~20 ns a block: split above 4K numbers.
                    let chunks = if threads > 1 && *len >= 4096 {
                        threads
                    } else {
                        1
                    };
                    let fill = |c: usize| {
                        let (lo, hi) = (len * c / chunks, len * (c + 1) / chunks);
                        let put = |i: u64, v: f32| {
                            let i = i as usize;
                            // SAFETY: the output holds `len` elements of `dtype` (a slot or
                            // output array of the op's type) and `i < len`; concurrent calls
                            // get disjoint ranges.
                            unsafe {
                                match dtype {
                                    DType::F64 => *(dst as *mut f64).add(i) = v as f64,
                                    _ => *(dst as *mut f32).add(i) = v,
                                }
                            }
                        };
                        let range = lo as u64..hi as u64;
                        match *dist {
                            RandomDist::Uniform { low, high } => crate::rng::fill_uniform(
                                *seed,
                                run_index,
                                range,
                                low.0 as f32,
                                high.0 as f32,
                                put,
                            ),
                            RandomDist::Normal { mean, std } => {
                                for i in range {
                                    let z = crate::rng::standard_normal(*seed, run_index, i);
                                    put(i, mean.0 as f32 + std.0 as f32 * z);
                                }
                            }
                        }
                    };
                    // SAFETY: concurrent calls write disjoint ranges of the output.
                    unsafe { on_pool(chunks, &fill) };
                }
                Step::Copy { from, to, bytes } => {
                    let src = ptr_of(*from, feeds, vars, &self.consts, ws, outs);
                    let dst = ptr_of(*to, feeds, vars, &self.consts, ws, outs);
                    if *bytes > 0 && src != dst {
                        // SAFETY: both locations hold a value of the reshape's type, `bytes`
                        // long, in distinct buffers.
                        unsafe { std::ptr::copy_nonoverlapping(src, dst, *bytes) };
                    }
                }
                Step::Host {
                    graph,
                    placeholders,
                    out_node,
                    args,
                    out,
                } => {
                    let mut feed_arrays = vec![];
                    for ((l, t), &ph) in args.iter().zip(placeholders) {
                        let shape = concrete(t)?;
                        let src = ptr_of(*l, feeds, vars, &self.consts, ws, outs);
                        feed_arrays.push((ph, read_array(src, t.dtype, shape)));
                    }
                    let v = crate::interp::evaluate(
                        graph,
                        &[*out_node],
                        &feed_arrays,
                        &HashMap::new(),
                        crate::interp::Precision::F32,
                        run_index,
                    )?;
                    let t = &graph.node(*out_node).ty;
                    if v[0].dtype() != t.dtype || v[0].shape() != concrete(t)?.as_slice() {
                        return Err(Error::Internal(format!(
                            "jit: a host step computed {}{:?} for {t}",
                            v[0].dtype(),
                            v[0].shape()
                        )));
                    }
                    let dst = ptr_of(*out, feeds, vars, &self.consts, ws, outs);
                    write_array(&v[0], dst);
                }
            }
        }
        Ok(())
    }
}

/// The `c`-th of `chunks` ranges of a split's first axis, with boundaries on multiples of
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
unsafe fn on_pool(chunks: usize, call: &dyn Fn(usize)) {
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

/// Runs a `Gemm` step: one `gemm` call per batch index.
///
/// # Safety
/// `a`, `b` must be the operand buffers the validated kernel's maps were checked against and
/// `c` a distinct buffer of `batch · m · n` elements of the dtype.
unsafe fn run_gemm(gm: &Gemm, a: *mut u8, b: *mut u8, c: *mut u8, threads: usize) {
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

// Placeholder until the real pointer is known after finalization.
unsafe extern "C" fn noop_kernel(_: *const *mut u8, _: *mut u8, _: *mut i32, _: i64, _: i64) {}

fn array_ptr(a: &Array) -> *mut u8 {
    match a.data() {
        ArrayData::F32(v) => v.as_ptr() as *mut u8,
        ArrayData::F64(v) => v.as_ptr() as *mut u8,
        ArrayData::I32(v) => v.as_ptr() as *mut u8,
        ArrayData::Bool(v) => v.as_ptr() as *mut u8,
    }
}

fn array_mut_ptr(a: &mut Array) -> *mut u8 {
    match a.dtype() {
        DType::F32 => a
            .as_mut_slice::<f32>()
            .map_or(std::ptr::null_mut(), |s| s.as_mut_ptr() as *mut u8),
        DType::F64 => a
            .as_mut_slice::<f64>()
            .map_or(std::ptr::null_mut(), |s| s.as_mut_ptr() as *mut u8),
        DType::I32 => a
            .as_mut_slice::<i32>()
            .map_or(std::ptr::null_mut(), |s| s.as_mut_ptr() as *mut u8),
        DType::Bool => a
            .as_mut_slice::<bool>()
            .map_or(std::ptr::null_mut(), |s| s.as_mut_ptr() as *mut u8),
    }
}

/// The buffer of a location. Feeds, variables and constants are only ever read through it
/// (kernels write only their output, which is a slot or an output array).
fn ptr_of(
    l: Loc,
    feeds: &[&Array],
    vars: &[&Array],
    consts: &[Arc<Array>],
    ws: &mut Workspace,
    outs: &mut [Array],
) -> *mut u8 {
    match l {
        Loc::Feed(i) => array_ptr(feeds[i]),
        Loc::Var(i) => array_ptr(vars[i]),
        Loc::Const(i) => array_ptr(&consts[i]),
        Loc::Slot(s) => ws.slots[s].as_mut_ptr(),
        Loc::Out(i) => array_mut_ptr(&mut outs[i]),
    }
}

fn read_array(src: *const u8, dtype: DType, shape: Vec<usize>) -> Array {
    let n: usize = shape.iter().product();
    let bytes = n * dtype.size_bytes();
    let mut raw = vec![0u8; bytes];
    if bytes > 0 {
        // SAFETY: `src` is a buffer holding a value of this type (`bytes` long).
        unsafe { std::ptr::copy_nonoverlapping(src, raw.as_mut_ptr(), bytes) };
    }
    let data: Vec<f64> = match dtype {
        DType::F32 => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        DType::F64 => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        DType::I32 => raw
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        DType::Bool => raw.iter().map(|&b| (b != 0) as u8 as f64).collect(),
    };
    Array::from_f64(dtype, shape, data)
}

fn write_array(a: &Array, dst: *mut u8) {
    let src = array_ptr(a);
    let bytes = a.len() * a.dtype().size_bytes();
    if bytes > 0 {
        // SAFETY: `dst` is the host step's output buffer, of the op's type, which `a` has
        // (checked by the caller).
        unsafe { std::ptr::copy_nonoverlapping(src, dst, bytes) };
    }
}

/// Kernels read and write buffers sized from the graph's types: a kernel's parameter and
/// output types must be exactly those.
fn check_param_types(k: &Kernel, g: &GraphData, inputs: &[NodeId], out: &Ty) -> Result<()> {
    if k.params.len() != inputs.len() {
        return Err(Error::invalid(
            "jit: a kernel's parameter count differs from its operands'",
        ));
    }
    for (t, &i) in k.params.iter().zip(inputs) {
        if &g.node(i).ty != t {
            return Err(Error::invalid(
                "jit: a kernel parameter's type differs from its operand",
            ));
        }
    }
    if &k.out != out {
        return Err(Error::invalid(
            "jit: a kernel's output type differs from its node's",
        ));
    }
    Ok(())
}

/// Tile math is on unless `KILN_TILE_MATH=0` (for comparing the two code paths).
fn tile_math_default() -> bool {
    std::env::var("KILN_TILE_MATH").map_or(true, |v| v != "0")
}

fn declare_helpers(module: &mut JITModule, tile_math: bool) -> Result<Helpers> {
    let cc = module.target_config().default_call_conv;
    let mut declare = |name: &str,
                       params: &[cranelift_codegen::ir::Type],
                       ret: Option<cranelift_codegen::ir::Type>| {
        let mut s = cranelift_codegen::ir::Signature::new(cc);
        for &p in params {
            s.params.push(AbiParam::new(p));
        }
        if let Some(r) = ret {
            s.returns.push(AbiParam::new(r));
        }
        module
            .declare_function(name, Linkage::Import, &s)
            .map_err(|e| Error::invalid(format!("jit: {e}")))
    };
    let tile_fns = if tile_math {
        let names = vmath::ENTRIES.map(|(name, _)| name);
        let fns: Result<Vec<cranelift_module::FuncId>> = names
            .iter()
            .map(|name| declare(name, &[I64; 3], None))
            .collect();
        Some(fns?)
    } else {
        None
    };
    Ok(Helpers {
        tile_fns,
        pow_f32: declare("kiln_pow_f32", &[F32, F32], Some(F32))?,
        pow_f64: declare("kiln_pow_f64", &[F64, F64], Some(F64))?,
        pow_i32: declare("kiln_pow_i32", &[I32, I32], Some(I32))?,
        unary_f64: declare("kiln_unary_f64", &[I32, F64], Some(F64))?,
    })
}

/// Declares kernel `index` and builds its Cranelift IR, appending it to `lowered` for
/// [`define_all`]; returns its function id.
#[allow(clippy::too_many_arguments)]
fn lower_kernel(
    module: &mut JITModule,
    fctx: &mut FunctionBuilderContext,
    helpers: &Helpers,
    k: &Kernel,
    index: usize,
    times: &mut CompileTimes,
    lowered: &mut Vec<(cranelift_module::FuncId, Function)>,
) -> Result<cranelift_module::FuncId> {
    let t0 = std::time::Instant::now();
    let sig = kernel_signature(module.target_config().default_call_conv);
    let name = format!("kernel_{index}");
    let fid = module
        .declare_function(&name, Linkage::Local, &sig)
        .map_err(|e| Error::invalid(format!("jit: {e}")))?;
    let mut func = Function::with_name_signature(UserFuncName::user(0, fid.as_u32()), sig);
    {
        let mut b = FunctionBuilder::new(&mut func, fctx);
        let mut g = Gen::new(&mut b, module, helpers, k.params.len());
        g.kernel(k);
        times.tiled += usize::from(g.tiled);
        g.finish();
        b.finalize(module.target_config());
    }
    lowered.push((fid, func));
    times.lowering += t0.elapsed();
    Ok(fid)
}

/// One kernel's machine code, ready to be placed in the module.
struct Compiled {
    bytes: Vec<u8>,
    align: u64,
    relocs: Vec<ModuleReloc>,
    asm: Option<String>,
}

/// Compiles one lowered kernel to machine code. Pure: it reads only the ISA and the
/// function, so kernels compile in parallel.
fn compile_one(
    isa: &dyn TargetIsa,
    (index, (fid, func)): (usize, (cranelift_module::FuncId, Function)),
    asm: bool,
) -> Result<Compiled> {
    let mut ctx = cranelift_codegen::Context::for_function(func);
    ctx.set_disasm(asm);
    let align = ctx
        .compile(isa, &mut ControlPlane::default())
        .map_err(|e| Error::invalid(format!("jit: compiling kernel {index}: {:?}", e.inner)))?
        .buffer
        .alignment as u64;
    let code = ctx.compiled_code().expect("just compiled");
    let relocs = code
        .buffer
        .relocs()
        .iter()
        .map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, fid))
        .collect();
    Ok(Compiled {
        bytes: code.code_buffer().to_vec(),
        align,
        relocs,
        asm: if asm { code.vcode.clone() } else { None },
    })
}

/// Compiles every lowered kernel, on the thread pool when there is more than one thread
/// (Cranelift is most of a cold compile, and kernels are independent), then defines them in
/// the module in order. The code does not depend on the thread count.
fn define_all(
    module: &mut JITModule,
    lowered: Vec<(cranelift_module::FuncId, Function)>,
    times: &mut CompileTimes,
) -> Result<()> {
    use rayon::prelude::*;
    let t0 = std::time::Instant::now();
    // KILN_DUMP_ASM=1 prints each kernel's machine code (for performance work).
    let asm = std::env::var("KILN_DUMP_ASM").is_ok_and(|v| v == "1");
    let isa = module.isa();
    let threads = crate::threads::threads();
    let pool = if threads > 1 && lowered.len() > 1 {
        crate::threads::pool(threads)
    } else {
        None
    };
    let compile = |(index, (fid, f))| (fid, compile_one(isa, (index, (fid, f)), asm));
    // Both keep kernel order (rayon's indexed collect does), so `index` is the kernel's.
    let compiled: Vec<(cranelift_module::FuncId, Result<Compiled>)> = match pool {
        Some(p) => p.install(|| lowered.into_par_iter().enumerate().map(compile).collect()),
        None => lowered.into_iter().enumerate().map(compile).collect(),
    };
    for (index, (fid, c)) in compiled.into_iter().enumerate() {
        let c = c?;
        if let Some(code) = &c.asm {
            eprintln!("kernel_{index}:\n{code}");
        }
        module
            .define_function_bytes(fid, c.align, &c.bytes, &c.relocs)
            .map_err(|e| Error::invalid(format!("jit: {e}")))?;
    }
    times.cranelift += t0.elapsed();
    Ok(())
}
