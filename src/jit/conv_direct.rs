//! The forward twin: a small-K convolution, its bias and ReLU and the max pool after them
//! as one direct kernel (`conv_direct/kernel.rs`), writing only the pooled tensor when
//! nothing else reads the activation (inference), or the activation and the pooled tensor
//! in one pass when the backward needs it (training).
//!
//! **What it replaces.** `conv → kernel max(0, conv + b) → max pool` run as three steps:
//! im2col tiles and `gemm` (for conv1 of the MNIST convnet, `K = 3·3·1 = 9`: the column
//! matrix is 9× the input and the product is memory-bound), the elementwise kernel over the
//! 11 MB output and the pool over it again. Here each pooled pixel's window of convolution
//! pixels is computed in registers (8 output channels per AVX2 vector, up to 4 pixels at
//! once), bias and ReLU applied, the window's maximum taken and stored.
//!
//! **Bitwise equal to the three steps.** Per output element `gemm` (the FMA kernel it picks
//! on any CPU with FMA) computes `acc = fma(x̂[k], w[k], acc)` for `k = 0..K` from `+0.0`
//! and stores `1·acc`, as long as it takes its general path: `K ≥ 3` (else `gevv`), at
//! least two output channels and two rows per tile (else `gemv` or the horizontal kernels),
//! and `K` within one depth block (`K ≤ 32` here). The kernel does the same chain, padding
//! taps included as `+0.0` multiplied like any input (im2col writes them). The epilogue is
//! the elementwise kernel's `fadd` in its operand order and Cranelift's `fmax.f32x4`
//! lowering instruction for instruction (`maxps` both ways, the xor/or/sub blend and the NaN
//! canonicalization), and the pool keeps the first maximum in scan order, a NaN winning over
//! a number, as the pooling kernels do. Images are split over threads and write disjoint
//! outputs, so the bits do not depend on the thread count (invariant 13).
//!
//! **When.** Found at lowering by a structural match (`plan`): the three nodes consecutive
//! in the schedule; an f32 forward convolution with one group, `3 ≤ K ≤ 32`, a multiple of
//! 8 output channels, no Winograd plan and tiles of at least two rows; the convolution's
//! output read only by the kernel; the kernel exactly `max(0, conv + bias)` (either operand
//! order, or without the bias) with the bias broadcast along the channels; a max pool with
//! disjoint windows; an x86-64 CPU with AVX2 and FMA. Where the plan put the activation or
//! the pooled tensor in the slot of an operand, it runs unfused. `KILN_CONV_DIRECT=0` runs
//! every chain unfused (for comparisons); `StepCounts::conv_direct` counts the steps.

mod filter;
mod kernel;

pub(super) use filter::{sum_blocks, Filter};

use super::buffers::{Buffers, Loc};
use super::compile::Layout;
use crate::dtype::DType;
use crate::graph::op::{BinaryOp, ConvGeom, ConvKind, Op, PoolKind};
use crate::graph::NodeId;
use crate::kernel::{Core, Expr, Kernel};
use crate::passes::Program;
use std::collections::HashSet;

/// The largest `K = KH·KW·C` the kernel takes (one `gemm` depth block, a few registers).
pub(super) const MAX_K: usize = 32;

/// `KILN_CONV_DIRECT=0` runs every chain unfused (for comparisons).
fn enabled() -> bool {
    std::env::var("KILN_CONV_DIRECT").map_or(true, |v| v != "0")
}

/// Whether this CPU runs the kernel (and `gemm` its FMA kernels, whose sums it matches).
fn cpu_ok() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU has AVX-512F: the forward twin and the filter gradient then take their
/// 16-lane forms (the same bits).
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The epilogue the elementwise kernel computes on the convolution's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bias {
    /// `max(0, conv)`
    None,
    /// `max(0, conv + b)`
    After,
    /// `max(0, b + conv)`
    Before,
}

/// A planned forward twin (see the module docs).
pub(super) struct Direct {
    pub(super) conv: NodeId,
    act: NodeId,
    pool: NodeId,
    x: Loc,
    w: Loc,
    b: Option<Loc>,
    /// The activation's buffer, when something besides the pool reads it.
    y: Option<Loc>,
    p: Loc,
    geo: kernel::Geometry,
}

impl Direct {
    /// The program nodes the step computes.
    pub(super) fn members(&self) -> Vec<NodeId> {
        vec![self.conv, self.act, self.pool]
    }

    /// What the profile calls it.
    pub(super) fn kind(&self) -> &'static str {
        if self.y.is_some() {
            "fused conv+bias+relu+maxpool (both)"
        } else {
            "fused conv+bias+relu+maxpool"
        }
    }

    /// Runs the step on the run's buffers.
    pub(super) fn run(&self, bufs: &mut Buffers<'_>, threads: usize) {
        let p = kernel::Ptrs {
            x: bufs.ptr(self.x) as usize,
            w: bufs.ptr(self.w) as usize,
            b: self.b.map_or(0, |b| bufs.ptr(b) as usize),
            y: self.y.map_or(0, |y| bufs.ptr(y) as usize),
            p: bufs.ptr(self.p) as usize,
        };
        // SAFETY: `plan` checked every operand's and output's type against the geometry
        // (buffers have their types), the outputs apart from the operands and each other,
        // and the CPU's AVX2 and FMA.
        unsafe { self.geo.run(p, threads) };
    }
}

/// The forward twin starting at `steps[0]`, if it is one (see the module docs).
pub(super) fn plan(
    p: &Program,
    lay: &Layout,
    live: &HashSet<NodeId>,
    steps: &[NodeId],
) -> Option<Direct> {
    if !enabled() || !cpu_ok() {
        return None;
    }
    let g = &p.graph;
    let (&conv, rest) = steps.split_first()?;
    let (&act, &pool) = (rest.first()?, rest.get(1)?);
    let cn = g.node(conv);
    if !matches!(
        cn.op,
        Op::Conv {
            kind: ConvKind::Forward,
            ..
        }
    ) || cn.ty.dtype != DType::F32
    {
        return None;
    }
    let step = super::compile::conv_step(p, conv, ConvKind::Forward).ok()?;
    let geo: ConvGeom = step.geo.clone();
    let k = geo.k();
    let gemm_chain = (3..=MAX_K).contains(&k) && step.smallest_tile() >= 2;
    if geo.groups != 1 || !geo.o.is_multiple_of(8) || step.wino.is_some() || !gemm_chain {
        return None;
    }
    let readers = |id: NodeId| -> Vec<NodeId> {
        g.users(id)
            .into_iter()
            .filter(|u| live.contains(u))
            .collect()
    };
    if readers(conv) != [act] || p.outputs.contains(&conv) {
        return None;
    }
    // The activation: `max(0, conv [+ b])` over the convolution's output.
    let kern = match &g.node(act).op {
        Op::Fusion(k) => p.kernels().lookup(*k).ok()?,
        _ => return None,
    };
    let ins = &g.node(act).inputs;
    let (conv_param, bias) = relu_body(kern, geo.o)?;
    if kern.epilogue.exprs.iter().any(|e| e.1 != DType::F32) {
        return None;
    }
    if ins.get(conv_param as usize) != Some(&conv) {
        return None;
    }
    let y_len = geo.n * geo.out_pixels() * geo.o;
    let elementwise = matches!(kern.core, Core::None)
        && kern.out.dtype == DType::F32
        && kern.out.shape.numel() == Some(y_len)
        && g.node(act).ty.shape.numel() == Some(y_len)
        && g.node(act).ty.dtype == DType::F32;
    if !elementwise {
        return None;
    }
    let b = match bias {
        (Bias::None, _) => None,
        (_, param) => {
            let b = *ins.get(param as usize)?;
            let bt = &g.node(b).ty;
            if bt.dtype != DType::F32 || bt.shape.numel() != Some(geo.o) {
                return None;
            }
            Some(lay.loc[&b])
        }
    };
    // The max pool over the activation, with disjoint windows.
    let pn = g.node(pool);
    let Op::Pool {
        kind: PoolKind::Max,
        window,
    } = &pn.op
    else {
        return None;
    };
    let disjoint = (0..2).all(|a| window.extent(a).is_ok_and(|e| window.strides[a] >= e));
    let ps = pn.ty.shape.to_fixed()?;
    let pooled_ok = pn.inputs.as_slice() == [act]
        && pn.ty.dtype == DType::F32
        && ps.len() == 4
        && ps[0] == geo.n
        && ps[3] == geo.o
        && window.out_hw(geo.out_hw).ok() == Some([ps[1], ps[2]]);
    if !disjoint || !pooled_ok {
        return None;
    }
    let inside = |a: usize, out: usize| -> Vec<Vec<usize>> {
        (0..out)
            .map(|o| {
                super::pool::inside(window, a, geo.out_hw[a], o)
                    .map(|k| o * window.strides[a] + k * window.dilations[a] - window.pad_lo[a])
                    .collect()
            })
            .collect()
    };
    let (rows, cols) = (inside(0, ps[1]), inside(1, ps[2]));
    if rows.iter().chain(&cols).any(Vec::is_empty) {
        return None;
    }
    // Outputs: the pooled tensor always; the activation when another step or the caller
    // reads it. Neither may share a buffer with an operand or the other.
    let act_read = readers(act) != [pool] || p.outputs.contains(&act);
    let (x, w, pl) = (
        lay.loc[&cn.inputs[0]],
        lay.loc[&cn.inputs[1]],
        lay.loc[&pool],
    );
    let y = act_read.then(|| lay.loc[&act]);
    let operands = [Some(x), Some(w), b];
    let clash = |o: Loc| operands.contains(&Some(o));
    if clash(pl) || y.is_some_and(|y| clash(y) || y == pl) {
        return None;
    }
    let geo = kernel::Geometry::new(geo, bias.0, rows, cols, [ps[1], ps[2]])?;
    Some(Direct {
        conv,
        act,
        pool,
        x,
        w,
        b,
        y,
        p: pl,
        geo,
    })
}

/// `e` is a load of parameter `param` reading element `i` at point `i` of `domain`.
fn identity_load(e: &Expr, domain: &[usize]) -> Option<u32> {
    match e {
        Expr::Load { param, map } if map.is_identity(domain) => Some(*param),
        _ => None,
    }
}

/// `e` loads a vector of `c` elements broadcast along every axis but the last (extent `c`).
fn channel_load(e: &Expr, domain: &[usize], c: usize) -> Option<u32> {
    let Expr::Load { param, map } = e else {
        return None;
    };
    let (last, rest) = map.strides.split_last()?;
    let ok = map.offset == 0
        && map.bounds.is_empty()
        && *last == 1
        && rest.iter().all(|&s| s == 0)
        && domain.last() == Some(&c);
    ok.then_some(*param)
}

/// A body `max(0, conv [+ b])` (the zero on either side): the parameter of the convolution's
/// output, and the bias' form with its parameter.
fn relu_body(k: &Kernel, c: usize) -> Option<(u32, (Bias, u32))> {
    let body = &k.epilogue;
    let dom = &body.domain;
    let e = |i: u32| body.exprs.get(i as usize).map(|e| &e.0);
    let zero = |i: u32| matches!(e(i), Some(Expr::Const(bits)) if *bits == 0);
    let Expr::Binary(BinaryOp::Max, l, r) = e(body.root())? else {
        return None;
    };
    let t = match (zero(*l), zero(*r)) {
        (true, false) => *r,
        (false, true) => *l,
        _ => return None,
    };
    if let Some(conv) = identity_load(e(t)?, dom) {
        return Some((conv, (Bias::None, 0)));
    }
    let Expr::Binary(BinaryOp::Add, a, b) = e(t)? else {
        return None;
    };
    let (ea, eb) = (e(*a)?, e(*b)?);
    if let (Some(conv), Some(bias)) = (identity_load(ea, dom), channel_load(eb, dom, c)) {
        return Some((conv, (Bias::After, bias)));
    }
    if let (Some(bias), Some(conv)) = (channel_load(ea, dom, c), identity_load(eb, dom)) {
        return Some((conv, (Bias::Before, bias)));
    }
    None
}
