//! Building the schedule from the program: where every value lives (its [`Loc`]), and one
//! [`Step`] per computed value in the program's deterministic order, with each fused kernel
//! lowered to Cranelift IR for `module.rs` to compile.
//!
//! Locations follow the buffer assignment, which `Executable::compile_with` has validated:
//! a computed value is an output's array or its slot, and a `reshape` that shares its input's
//! slot is no step at all. What native code assumes about types is checked here too (a
//! kernel's index maps are valid and its parameter and output types are its operands' and
//! node's; a constant's array has its node's type; a reshape keeps its input's dtype and
//! element count), since buffers are sized from the graph's types, which a pass (or a user
//! holding the `Program`) could have changed.

use super::buffers::Loc;
use super::codegen::{self, Helpers, Split};
use super::conv::ConvStep;
use super::gemm::Gemm;
use super::module::{lower_kernel, noop_kernel, KernelFn};
use super::{bytes_of, CompileTimes};
use crate::array::Array;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::op::{Op, RandomDist, Ty};
use crate::graph::{GraphData, NodeId};
use crate::kernel::{Core, Kernel};
use crate::passes::memplan::MemoryPlan;
use crate::passes::Program;
use cranelift_codegen::ir::Function;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::JITModule;
use cranelift_module::FuncId;
use std::collections::HashMap;
use std::sync::Arc;

/// One step of a run.
#[allow(clippy::large_enum_variant)] // few steps per executable; boxing buys nothing
pub(super) enum Step {
    /// A fused kernel: its `gemm` (matmul kernels), then its function.
    Kernel {
        /// None for a matmul whose epilogue is just the product (`gemm` writes the output).
        f: Option<KernelFn>,
        args: Vec<Loc>,
        out: Loc,
        node: NodeId,
        split: Option<Split>,
        gemm: Option<Gemm>,
        /// The error when the function reports an integer division by zero, naming the
        /// user's op (`exec::division_error`); None if the kernel has no such division.
        fails: Option<Box<Error>>,
    },
    /// A convolution: im2col tiles and `gemm` calls (`conv.rs`).
    Conv {
        conv: Box<ConvStep>,
        a: Loc,
        b: Loc,
        out: Loc,
        node: NodeId,
    },
    /// A `reshape` that could not alias its input: a byte copy.
    Copy {
        from: Loc,
        to: Loc,
        bytes: usize,
        node: NodeId,
    },
    /// A pooling node: its Cranelift function over ranges of images (`jit/pool/`).
    Pool(super::pool::PoolStep),
    /// An `all_reduce`: a host step that communicates (`jit/collective.rs`).
    AllReduce(super::collective::CollectiveStep),
    /// Several nodes around a convolution's activation in one pass (`jit/conv_fused.rs`).
    ConvFused(Box<super::conv_fused::Fused>),
    /// Random numbers written straight into the output, by the same function the
    /// interpreter uses (`rng`), split over the pool: element `i` depends only on
    /// (seed, run, i), so the bits never depend on the thread count.
    Random {
        dist: RandomDist,
        seed: u64,
        out: Loc,
        dtype: DType,
        len: usize,
        node: NodeId,
    },
}

/// Where each live value lives, and the arrays `run` takes, in order.
pub(super) struct Layout {
    pub(super) loc: HashMap<NodeId, Loc>,
    pub(super) placeholders: Vec<(NodeId, Ty)>,
    pub(super) variables: Vec<(NodeId, Ty)>,
    pub(super) consts: Vec<Arc<Array>>,
    /// Each distinct output's index (`Loc::Out`), in order of first fetch.
    pub(super) out_index: HashMap<NodeId, usize>,
}

/// Gives every live value its location: sources where they are, outputs their arrays, other
/// values their slot in the (validated) `plan`.
pub(super) fn layout(p: &Program, order: &[NodeId], plan: &MemoryPlan) -> Result<Layout> {
    let mut lay = Layout {
        loc: HashMap::new(),
        placeholders: vec![],
        variables: vec![],
        consts: vec![],
        out_index: HashMap::new(),
    };
    for &o in &p.outputs {
        if !lay.out_index.contains_key(&o) {
            lay.out_index.insert(o, lay.out_index.len());
        }
    }
    for &id in order {
        let n = p.graph.node(id);
        let l = match &n.op {
            Op::Placeholder => {
                lay.placeholders.push((id, n.ty.clone()));
                Loc::Feed(lay.placeholders.len() - 1)
            }
            Op::Variable { .. } => {
                lay.variables.push((id, n.ty.clone()));
                Loc::Var(lay.variables.len() - 1)
            }
            Op::Constant(c) => {
                // Kernels read the array as the node's type says.
                if c.0.dtype() != n.ty.dtype
                    || Some(c.0.shape()) != n.ty.shape.to_fixed().as_deref()
                {
                    return Err(Error::invalid(format!(
                        "jit: constant {} holds {}{:?}, not its type {}",
                        n.label(),
                        c.0.dtype(),
                        c.0.shape(),
                        n.ty
                    )));
                }
                lay.consts.push(c.0.clone());
                Loc::Const(lay.consts.len() - 1)
            }
            // Computed (`memplan::computed`): an output's array, else its slot.
            _ => match (lay.out_index.get(&id), plan.slot_of().get(&id)) {
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
        lay.loc.insert(id, l);
    }
    Ok(lay)
}

/// The steps, and the kernels whose functions they still need.
pub(super) struct Schedule {
    pub(super) steps: Vec<Step>,
    /// Lowered kernels, in order, for `module::define_all`.
    pub(super) lowered: Vec<(FuncId, Function)>,
    /// `(step, function)` for each step whose function pointer is known after finalizing.
    pub(super) pending: Vec<(usize, FuncId)>,
    /// The scratch the largest kernel needs.
    pub(super) scratch_bytes: usize,
    /// The number of kernel functions.
    pub(super) kernels: usize,
}

/// One step per computed value of `order`, lowering each kernel into `module`.
pub(super) fn schedule(
    p: &Program,
    order: &[NodeId],
    lay: &Layout,
    module: &mut JITModule,
    helpers: &Helpers,
    times: &mut CompileTimes,
) -> Result<Schedule> {
    let mut s = Schedule {
        steps: vec![],
        lowered: vec![],
        pending: vec![],
        scratch_bytes: 0,
        kernels: 0,
    };
    let mut fctx = FunctionBuilderContext::new();
    let loc = &lay.loc;
    let mut fused = super::conv_fused::plan(p, order, lay);
    for &id in order {
        if let Some(f) = fused.at.remove(&id) {
            s.steps.push(Step::ConvFused(Box::new(f)));
            continue;
        }
        if fused.members.contains(&id) {
            continue;
        }
        let n = p.graph.node(id);
        let out = loc[&id];
        match &n.op {
            Op::Placeholder | Op::Variable { .. } | Op::Constant(_) => {}
            Op::Fusion(k) => {
                let k = p
                    .kernels()
                    .lookup(*k)
                    .map_err(|e| Error::Internal(format!("jit: {e}")))?;
                let step = kernel_step(p, id, k, lay, &mut s, |s, k| {
                    let index = s.kernels;
                    let fid =
                        lower_kernel(module, &mut fctx, helpers, k, index, times, &mut s.lowered)?;
                    s.kernels += 1;
                    s.pending.push((s.steps.len(), fid));
                    Ok(noop_kernel as KernelFn)
                })?;
                s.steps.push(step);
            }
            Op::Random { dist, seed } if matches!(n.ty.dtype, DType::F32 | DType::F64) => {
                s.steps.push(Step::Random {
                    dist: *dist,
                    seed: *seed,
                    out,
                    dtype: n.ty.dtype,
                    len: n.ty.shape.numel().unwrap_or(0),
                    node: id,
                })
            }
            Op::Conv { kind, .. } => {
                let conv = conv_step(p, id, *kind)?;
                let t0 = std::time::Instant::now();
                let geo = (conv.kind, &conv.geo, conv.dtype);
                let index = s.steps.len();
                if let Some(fid) =
                    super::conv_dw::lower(module, &mut fctx, geo, index, &mut s.lowered)?
                {
                    s.pending.push((index, fid));
                }
                times.lowering += t0.elapsed();
                s.scratch_bytes = s.scratch_bytes.max(conv.scratch_bytes());
                s.steps.push(Step::Conv {
                    conv: Box::new(conv),
                    a: loc[&n.inputs[0]],
                    b: loc[&n.inputs[1]],
                    out,
                    node: id,
                });
            }
            Op::Pool { kind, window } => {
                let args = n.inputs.iter().map(|i| loc[i]).collect();
                let mut step = super::pool::step(&p.graph, id, *kind, window, args, out)?;
                if let Some(fid) = step.lower(module, &mut fctx, helpers, &mut s.lowered)? {
                    s.pending.push((s.steps.len(), fid));
                }
                s.steps.push(Step::Pool(step));
            }
            Op::AllReduce => s
                .steps
                .push(Step::AllReduce(super::collective::step(p, id, loc)?)),
            Op::Reshape if !same_bytes(&p.graph.node(n.inputs[0]).ty, &n.ty) => {
                return Err(Error::invalid(format!(
                    "jit: reshape {} to {} of {}",
                    n.label(),
                    n.ty,
                    p.graph.node(n.inputs[0]).ty
                )))
            }
            Op::Reshape if loc[&n.inputs[0]] == out => {}
            Op::Reshape => s.steps.push(Step::Copy {
                from: loc[&n.inputs[0]],
                to: out,
                bytes: bytes_of(&n.ty),
                node: id,
            }),
            // Every other op runs only inside a kernel ([`needs_kernel`] lists them all, and
            // `compile_with` fuses any program that still has one): a compile error, never
            // a slow path.
            op => return Err(super::native::unsupported(op, &n.label())),
        }
    }
    s.scratch_bytes = super::conv_fused::reserve(&mut s.steps, s.scratch_bytes);
    times.steps = super::native::covers(p, order, &s.steps, loc)?;
    Ok(s)
}

/// The plan of convolution `id`, after checking what its native code assumes: f32 or f64
/// operands of its dtype, and operand and output element counts that are exactly the
/// geometry's (so every index the step computes is inside its buffers).
pub(super) fn conv_step(
    p: &Program,
    id: NodeId,
    kind: crate::graph::op::ConvKind,
) -> Result<ConvStep> {
    let n = p.graph.node(id);
    let ty = |i: usize| &p.graph.node(n.inputs[i]).ty;
    let bad = |why: &str| Error::invalid(format!("jit: convolution {}: {why}", n.label()));
    let (Some(a), Some(b), Some(y)) = (
        ty(0).shape.to_fixed(),
        ty(1).shape.to_fixed(),
        n.ty.shape.to_fixed(),
    ) else {
        return Err(bad("shapes are not concrete"));
    };
    let dt = n.ty.dtype;
    if !matches!(dt, DType::F32 | DType::F64) || ty(0).dtype != dt || ty(1).dtype != dt {
        return Err(bad("operands are not both f32 or f64"));
    }
    let geo = crate::graph::op::ConvGeom::of(&n.op, &a, &b, &y).ok_or_else(|| bad("not 4-D"))?;
    let ok = geo.groups > 0
        && geo.c % geo.groups == 0
        && geo.o % geo.groups == 0
        && geo.window.out_hw(geo.in_hw).ok() == Some(geo.out_hw);
    let x_len = geo.n * geo.in_pixels() * geo.c;
    let y_len = geo.n * geo.out_pixels() * geo.o;
    let w_len = geo.k() * geo.o;
    let w_shape = [geo.window.kernel[0], geo.window.kernel[1], geo.cg(), geo.o];
    let lens = match kind {
        crate::graph::op::ConvKind::Forward => b == w_shape && y.iter().product::<usize>() == y_len,
        crate::graph::op::ConvKind::InputGrad { .. } => b == w_shape,
        crate::graph::op::ConvKind::FilterGrad => y == w_shape,
    };
    let counts = [&a, &b, &y]
        .iter()
        .map(|s| s.iter().product::<usize>())
        .sum::<usize>()
        == x_len + y_len + w_len;
    if !ok || !lens || !counts {
        return Err(bad("operand shapes do not match its window and groups"));
    }
    Ok(ConvStep::plan(kind, geo, dt))
}

/// Whether a value of type `b` can be the bytes of one of type `a` (a reshape reads or
/// aliases its input's buffer with its own type).
fn same_bytes(a: &Ty, b: &Ty) -> bool {
    a.dtype == b.dtype && a.shape.numel().is_some() && a.shape.numel() == b.shape.numel()
}

/// The step of kernel `k` (node `id`); `lower` lowers its function when it needs one (all
/// but a matmul whose epilogue is the bare product) and returns a stand-in pointer.
fn kernel_step(
    p: &Program,
    id: NodeId,
    k: &Kernel,
    lay: &Layout,
    s: &mut Schedule,
    lower: impl FnOnce(&mut Schedule, &Kernel) -> Result<KernelFn>,
) -> Result<Step> {
    let n = p.graph.node(id);
    k.validate()
        .map_err(|e| Error::invalid(format!("jit: invalid kernel: {e}")))?;
    check_param_types(k, &p.graph, &n.inputs, &n.ty)?;
    check_matmul(k)?;
    let args: Vec<Loc> = n.inputs.iter().map(|i| lay.loc[i]).collect();
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
        Some(lower(s, k)?)
    };
    s.scratch_bytes = s.scratch_bytes.max(codegen::scratch_bytes(k));
    Ok(Step::Kernel {
        f,
        args,
        out: lay.loc[&id],
        node: id,
        split: codegen::split_of(k),
        gemm,
        fails: super::exec::division_error(p.fallible.get(&id).map_or(&[], |v| v)).map(Box::new),
    })
}

/// What `run_into` hands back: each fetch's location and type (duplicates included), each
/// distinct output's type, and the fetch position owning each distinct output's buffer.
pub(super) struct Outputs {
    pub(super) outputs: Vec<(Loc, Ty)>,
    pub(super) out_tys: Vec<Ty>,
    pub(super) owner: Vec<usize>,
}

/// The program's fetches, for `Executable`.
pub(super) fn outputs(p: &Program, lay: &Layout) -> Outputs {
    let out_index = &lay.out_index;
    let mut outs_sorted: Vec<(NodeId, usize)> = out_index.iter().map(|(&k, &v)| (k, v)).collect();
    outs_sorted.sort_by_key(|x| x.1);
    // An output that is a source is copied out of its location at the end.
    let distinct: Vec<(Loc, Ty)> = outs_sorted
        .iter()
        .map(|(id, _)| (lay.loc[id], p.graph.node(*id).ty.clone()))
        .collect();
    let out_tys: Vec<Ty> = distinct.iter().map(|(_, t)| t.clone()).collect();
    // Fetches are listed per request, duplicates included.
    let outputs: Vec<(Loc, Ty)> = p
        .outputs
        .iter()
        .map(|o| distinct[out_index[o]].clone())
        .collect();
    // Every distinct output is fetched somewhere (it came from `p.outputs`).
    let owner: Vec<usize> = outs_sorted
        .iter()
        .map(|(id, _)| p.outputs.iter().rposition(|o| o == id).unwrap_or(0))
        .collect();
    Outputs {
        outputs,
        out_tys,
        owner,
    }
}

/// What the `gemm` step assumes beyond `Kernel::validate`: both operands have the dtype it
/// runs in (the first parameter's, f32 or f64), and the product has exactly as many elements
/// as the output (it is written into the output, or into scratch of the output's size).
fn check_matmul(k: &Kernel) -> Result<()> {
    let Core::MatMul {
        a, b, batch, m, n, ..
    } = &k.core
    else {
        return Ok(());
    };
    let dtype = |i: u32| k.params.get(i as usize).map(|t| t.dtype);
    let d = dtype(0);
    let float = matches!(d, Some(DType::F32 | DType::F64));
    let product: usize = batch.iter().product::<usize>() * m * n;
    if !float || dtype(a.param) != d || dtype(b.param) != d {
        return Err(Error::invalid(
            "jit: a matmul kernel's operands are not both f32 or f64",
        ));
    }
    if product != k.epilogue.domain.iter().product::<usize>() {
        return Err(Error::invalid(
            "jit: a matmul kernel's product is not its output's size",
        ));
    }
    Ok(())
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

/// True for the ops that run only inside a fused kernel; the others are sources (read where
/// they are), random fills, reshapes (aliases or copies), pooling steps and fused kernels
/// themselves.
pub(super) fn needs_kernel(op: &Op) -> bool {
    match op {
        Op::Placeholder
        | Op::Variable { .. }
        | Op::Constant(_)
        | Op::Random { .. }
        | Op::Reshape
        | Op::Conv { .. }
        | Op::Pool { .. }
        | Op::AllReduce
        | Op::Fusion(_) => false,
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Where
        | Op::Cast(_)
        | Op::Reduce { .. }
        | Op::Permute(_)
        | Op::BroadcastTo
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Concat { .. }
        | Op::MatMul
        | Op::StopGradient
        | Op::Size { .. }
        | Op::Assign
        | Op::Group => true,
    }
}
