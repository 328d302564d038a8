//! Fused steps around a convolution's activation: one pass where the program has a chain
//! of steps over the same large image tensor.
//!
//! **The backward twin** ([`ReluPoolGrad`]). Behind `conv → + bias → relu → max pool`, the
//! gradient reaches the convolution through three steps, each a full pass over the
//! activation (for the MNIST convnet's first layer, `[128, 26, 26, 32]`, 11 MB): the pool's
//! gradient `dx = MaxGrad(y, dy)` (a pooling step), the ReLU's mask `dpre = y == 0 ? 0 : dx`
//! (an elementwise kernel: `relu` is `max(0, x)`, whose gradient reads the output) and the
//! bias gradient `db = Σ dpre` over all but the channel axis (a reduction kernel). The step
//! here runs them as one pass per image: it reads `y` and `dy` once, writes `dpre` once (the
//! filter gradient's operand, so it stays a buffer) and never writes `dx`, and adds `db`
//! from the image while it is in cache. Per element it is the same IEEE operations as the
//! three steps (the first maximum in scan order, the first NaN winning; `+0.0 + dy` at the
//! argmax, `+0.0` elsewhere; the select; the sum from `+0.0` pixel after pixel), so the
//! results are bitwise those of the unfused steps. The sum keeps the reduction kernel's
//! order, one sequential sum per channel over the pixels: with several threads the first
//! range of images adds its images inline and the rest are added after the pass (read back
//! once, the channels split over the threads), so the bits do not depend on the thread
//! count (invariant 13).
//!
//! **The filter gradient too.** When `dpre` feeds a filter gradient that runs the direct
//! small-K kernel (`conv_direct/filter.rs`: for the MNIST convnet's first layer), the twin
//! computes each image's `[K, O]` block right after writing the image's `dpre`, while it is
//! in cache, into a region of scratch of its own; [`FilterStore`] adds the blocks in image
//! order at the filter gradient's place. The blocks and their sum are the kernel's own, so
//! the result is bitwise the unfused step's, and `dpre` (11 MB there) is not read again.
//! When nothing else reads `dpre` (the sum and the filter gradient are its only readers, as
//! for a first layer, whose input gradient nobody needs), the images whose bias sum the pass
//! takes inline — all of them at one thread, the first range at several — are written to an
//! image of the pass's own, in cache, and never to `dpre`: only the images the sum reads
//! back later are stored.
//! The convolution's input must be computed before the twin (it is read early).
//!
//! **When.** The pool gradient and the mask must be next to each other in the schedule,
//! `dx` read by nothing else, and the kernels exactly the shapes above (a structural match on
//! their bodies; anything else runs unfused); all of it is a function of the program, never
//! of run-time values. The sum may come later (the filter gradient usually runs between): it
//! reads only `dpre`, unchanged until then, so the twin adds it early into a region of
//! scratch of its own and [`SumStore`] copies it to the sum's buffer at the sum's place, where
//! the buffer plan expects that write. The plan gave each value its slot for the unfused
//! order, in which `dpre` may take `dy`'s slot (`dy` dies at the pool gradient); the twin
//! writes `dpre` while it reads `dy`, so such a plan runs unfused ([`locations_ok`]), as
//! does every chain under `KILN_CONV_FUSE=0` (for comparisons).

mod relu_pool_grad;

use super::buffers::{Buffers, Loc};
use super::compile::Layout;
use crate::dtype::DType;
use crate::graph::op::{BinaryOp, ConvKind, Op, PoolKind, ReduceOp};
use crate::graph::NodeId;
use crate::kernel::{Core, Expr, Kernel};
use crate::passes::Program;
use std::collections::{HashMap, HashSet};

/// `KILN_CONV_FUSE=0` runs every chain unfused (for comparisons).
fn enabled() -> bool {
    std::env::var("KILN_CONV_FUSE").map_or(true, |v| v != "0")
}

/// A fused step (see the module docs).
pub(super) enum Fused {
    /// The forward twin: a small-K convolution with its bias, ReLU and max pool
    /// (`jit/conv_direct.rs`).
    Direct(Box<super::conv_direct::Direct>),
    /// Max-pool gradient and ReLU mask, and the bias sum into scratch when `sum` is set.
    ReluPoolGrad(Box<ReluPoolGrad>),
    /// The bias sum the backward twin computed, stored where the sum node's step was.
    SumStore(SumStore),
    /// The filter gradient's blocks the backward twin computed, added where the filter
    /// gradient's step was.
    FilterStore(FilterStore),
}

/// Adds the per-image filter blocks the backward twin left in scratch into the filter
/// gradient's buffer, at the filter gradient's place in the schedule.
pub(super) struct FilterStore {
    node: NodeId,
    dw: Loc,
    /// The blocks' count and length (`conv_direct::Filter::blocks`).
    blocks: (usize, usize),
    /// Where in scratch the twin left them (`reserve` sets it).
    offset: usize,
}

/// The filter gradient the backward twin computes blocks of (the module docs).
pub(super) struct TwinFilter {
    node: NodeId,
    /// The convolution's input.
    x: Loc,
    plan: Box<super::conv_direct::Filter>,
    /// The blocks' region of scratch (`reserve` sets it).
    offset: usize,
}

/// Copies a bias sum the backward twin left in scratch to the sum node's buffer, at the sum
/// node's place in the schedule (steps between the two may use that buffer for values of
/// their own, as the buffer plan allows).
pub(super) struct SumStore {
    sum: NodeId,
    db: Loc,
    /// Bytes of the sum.
    bytes: usize,
    /// Where in scratch the twin left it (`reserve` sets it).
    offset: usize,
}

impl Fused {
    /// Whether it is the forward twin (counted apart).
    pub(super) fn is_direct(&self) -> bool {
        matches!(self, Fused::Direct(_))
    }

    /// Whether it completes a filter gradient on the direct small-K kernel (counted as one).
    pub(super) fn is_filter(&self) -> bool {
        matches!(self, Fused::FilterStore(_))
    }

    /// The node the step is named after.
    pub(super) fn node(&self) -> NodeId {
        match self {
            Fused::Direct(s) => s.conv,
            Fused::ReluPoolGrad(s) => s.mask,
            Fused::SumStore(s) => s.sum,
            Fused::FilterStore(s) => s.node,
        }
    }

    /// What the profile calls it.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Fused::Direct(s) => s.kind(),
            Fused::ReluPoolGrad(s) => match (s.sum.is_some(), s.filter.is_some()) {
                (true, true) => "fused maxgrad+relu+bias+filter",
                (true, false) => "fused maxgrad+relu+bias",
                (false, true) => "fused maxgrad+relu+filter",
                (false, false) => "fused maxgrad+relu",
            },
            Fused::SumStore(_) => "fused bias store",
            Fused::FilterStore(_) => "fused filter store",
        }
    }

    /// The program nodes the step computes.
    pub(super) fn members(&self) -> Vec<NodeId> {
        match self {
            Fused::Direct(s) => s.members(),
            Fused::ReluPoolGrad(s) => vec![s.pool_grad, s.mask],
            Fused::SumStore(s) => vec![s.sum],
            Fused::FilterStore(s) => vec![s.node],
        }
    }

    /// Runs the step on the run's buffers (`scratch` holds the executable's scratch bytes,
    /// which `reserve` sized to include the sums' regions).
    pub(super) fn run(&self, bufs: &mut Buffers<'_>, threads: usize) {
        let scratch = bufs.ws.scratch.as_mut_ptr();
        match self {
            Fused::Direct(s) => s.run(bufs, threads),
            Fused::ReluPoolGrad(s) => {
                let p = relu_pool_grad::Ptrs {
                    y: bufs.ptr(s.y) as usize,
                    dy: bufs.ptr(s.dy) as usize,
                    dpre: bufs.ptr(s.dpre) as usize,
                    db: s
                        .sum
                        .map_or(0, |(_, off)| scratch.wrapping_add(off) as usize),
                    x: s.filter.as_ref().map_or(0, |f| bufs.ptr(f.x) as usize),
                    blocks: s
                        .filter
                        .as_ref()
                        .map_or(0, |f| scratch.wrapping_add(f.offset) as usize),
                };
                // SAFETY: `plan` checked the operand and output types against the step's
                // geometry (buffers have their types: feeds and variables checked by
                // `run_into`, slots validated, outputs allocated from their types) and the
                // locations against the aliasing the pass allows (`dpre` apart from `dy`);
                // the sum and the filter blocks go to regions of scratch no other step uses
                // (`reserve`); the convolution's input is computed before the twin (`plan`).
                unsafe { s.run(p, threads) };
            }
            Fused::SumStore(s) => {
                let db = bufs.ptr(s.db);
                // SAFETY: the region `reserve` gave this sum holds `bytes`, written by the
                // twin earlier in the run; `db` is the sum node's buffer, of `bytes` (its
                // type), and a slot or output array, never scratch.
                unsafe { std::ptr::copy_nonoverlapping(scratch.add(s.offset), db, s.bytes) };
            }
            Fused::FilterStore(s) => {
                let dw = bufs.ptr(s.dw);
                // SAFETY: the region `reserve` gave these blocks holds them all, written by
                // the twin earlier in the run; `dw` is the filter gradient's buffer of
                // `K·O` f32 (its type), a slot or output array, never scratch.
                unsafe {
                    super::conv_direct::sum_blocks(
                        s.blocks,
                        scratch.add(s.offset).cast(),
                        dw.cast(),
                        threads,
                    )
                };
            }
        }
    }
}

/// Gives each bias sum and each set of filter blocks its own region of scratch past
/// `scratch_bytes` (what the other steps use) and returns the new scratch size.
pub(super) fn reserve(steps: &mut [super::compile::Step], scratch_bytes: usize) -> usize {
    let mut end = scratch_bytes.next_multiple_of(64);
    let mut offsets: HashMap<NodeId, usize> = HashMap::new();
    for st in steps.iter_mut() {
        if let super::compile::Step::ConvFused(f) = st {
            if let Fused::ReluPoolGrad(t) = &mut **f {
                if let Some((sum, off)) = &mut t.sum {
                    *off = end;
                    offsets.insert(*sum, end);
                    end = (end + t.hwc[2] * t.dtype.size_bytes()).next_multiple_of(64);
                }
                if let Some(fl) = &mut t.filter {
                    fl.offset = end;
                    offsets.insert(fl.node, end);
                    end = (end + fl.plan.scratch_bytes()).next_multiple_of(64);
                }
            }
        }
    }
    for st in steps.iter_mut() {
        if let super::compile::Step::ConvFused(f) = st {
            match &mut **f {
                Fused::SumStore(s) => s.offset = offsets.get(&s.sum).copied().unwrap_or(0),
                Fused::FilterStore(s) => s.offset = offsets.get(&s.node).copied().unwrap_or(0),
                _ => {}
            }
        }
    }
    end
}

/// The backward twin's plan: geometry fixed at compile time, operand and output locations.
pub(super) struct ReluPoolGrad {
    pool_grad: NodeId,
    mask: NodeId,
    /// The bias sum's node and its region of scratch (`reserve`).
    sum: Option<(NodeId, usize)>,
    /// The filter gradient computed image by image (the module docs).
    filter: Option<TwinFilter>,
    /// `dpre` is read by nothing but the fused sum and filter: images whose sum is taken
    /// inline go to an image of the pass's own instead of `dpre` (the module docs).
    private: bool,
    y: Loc,
    dy: Loc,
    dpre: Loc,
    dtype: DType,
    n: usize,
    hwc: [usize; 3],
    out_hw: [usize; 2],
    /// The input rows (columns) each output row (column) reads, in scan order.
    rows: Vec<Vec<usize>>,
    cols: Vec<Vec<usize>>,
    /// Every pixel lies in a window (else the others' `dpre` is set to zero).
    covered: bool,
    /// Whether each input row (column) lies in some window.
    in_window: [Vec<bool>; 2],
}

/// The fused steps of `order`, keyed by the first member each replaces, and every member.
pub(super) struct Plan {
    pub(super) at: HashMap<NodeId, Fused>,
    pub(super) members: HashSet<NodeId>,
}

/// Finds the fusible chains of `order` (see the module docs).
pub(super) fn plan(p: &Program, order: &[NodeId], lay: &Layout) -> Plan {
    let mut plan = Plan {
        at: HashMap::new(),
        members: HashSet::new(),
    };
    // The nodes that become steps, in order (sources and aliases are no steps).
    let steps: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|&id| {
            let n = p.graph.node(id);
            match n.op {
                Op::Placeholder | Op::Variable { .. } | Op::Constant(_) => false,
                Op::Reshape => lay.loc.get(&n.inputs[0]) != lay.loc.get(&id),
                _ => true,
            }
        })
        .collect();
    let live: HashSet<NodeId> = order.iter().copied().collect();
    let twins = enabled();
    for (i, &id) in steps.iter().enumerate() {
        if plan.members.contains(&id) {
            continue;
        }
        if let Some(d) = super::conv_direct::plan(p, lay, &live, &steps[i..]) {
            let f = Fused::Direct(Box::new(d));
            plan.members.extend(f.members());
            plan.at.insert(id, f);
            continue;
        }
        if !twins {
            continue;
        }
        if let Some(s) = relu_pool_grad(p, lay, &live, &steps[i..]) {
            if let Some((sum, _)) = s.sum {
                let store = Fused::SumStore(SumStore {
                    sum,
                    db: lay.loc[&sum],
                    bytes: s.hwc[2] * s.dtype.size_bytes(),
                    offset: 0,
                });
                plan.members.extend(store.members());
                plan.at.insert(sum, store);
            }
            if let Some(fl) = &s.filter {
                let store = Fused::FilterStore(FilterStore {
                    node: fl.node,
                    dw: lay.loc[&fl.node],
                    blocks: fl.plan.blocks(),
                    offset: 0,
                });
                plan.members.extend(store.members());
                plan.at.insert(fl.node, store);
            }
            let f = Fused::ReluPoolGrad(Box::new(s));
            plan.members.extend(f.members());
            plan.at.insert(id, f);
        }
    }
    plan
}

/// The kernel of fusion node `id`, if it is one.
fn kernel_of(p: &Program, id: NodeId) -> Option<&Kernel> {
    match &p.graph.node(id).op {
        Op::Fusion(k) => p.kernels().lookup(*k).ok(),
        _ => None,
    }
}

/// `e` is a load of parameter `param` reading element `i` at point `i` of `domain`.
fn identity_load(e: &Expr, domain: &[usize]) -> Option<u32> {
    match e {
        Expr::Load { param, map } if map.is_identity(domain) => Some(*param),
        _ => None,
    }
}

/// A body `where(y == 0, 0, dx)` over its domain: the parameters of `y` and `dx`.
fn mask_body(body: &crate::kernel::Body) -> Option<(u32, u32)> {
    let e = |i: u32| body.exprs.get(i as usize).map(|e| &e.0);
    let zero = |i: u32| matches!(e(i), Some(Expr::Const(bits)) if *bits == 0);
    let Expr::Where(c, a, b) = e(body.root())? else {
        return None;
    };
    let Expr::Binary(BinaryOp::Eq, l, r) = e(*c)? else {
        return None;
    };
    let y = identity_load(e(*l)?, &body.domain)?;
    let dx = identity_load(e(*b)?, &body.domain)?;
    (zero(*r) && zero(*a)).then_some((y, dx))
}

/// The backward twin starting at `steps[0]`, if it is one (see the module docs).
fn relu_pool_grad(
    p: &Program,
    lay: &Layout,
    live: &HashSet<NodeId>,
    steps: &[NodeId],
) -> Option<ReluPoolGrad> {
    let (&m, rest) = steps.split_first()?;
    let g = &p.graph;
    let mn = g.node(m);
    let Op::Pool {
        kind: PoolKind::MaxGrad,
        window,
    } = &mn.op
    else {
        return None;
    };
    let (y, dy) = (mn.inputs[0], mn.inputs[1]);
    let dtype = mn.ty.dtype;
    let float = matches!(dtype, DType::F32 | DType::F64);
    let disjoint = (0..2).all(|a| window.extent(a).is_ok_and(|e| window.strides[a] >= e));
    let (ys, ps) = (
        g.node(y).ty.shape.to_fixed()?,
        g.node(dy).ty.shape.to_fixed()?,
    );
    if !float || !disjoint || ys.len() != 4 || ps.len() != 4 || p.outputs.contains(&m) {
        return None;
    }
    // The mask: the next step, reading `y` and `dx` as `where(y == 0, 0, dx)`.
    let &mask = rest.first()?;
    let k1 = kernel_of(p, mask)?;
    let ins = &g.node(mask).inputs;
    let (py, pdx) = mask_body(&k1.epilogue)?;
    let elementwise = matches!(k1.core, Core::None) && k1.out.dtype == dtype;
    if !elementwise || ins.get(py as usize) != Some(&y) || ins.get(pdx as usize) != Some(&m) {
        return None;
    }
    let readers = |id: NodeId| -> Vec<NodeId> {
        g.users(id)
            .into_iter()
            .filter(|u| live.contains(u))
            .collect()
    };
    if readers(m) != [mask] {
        return None;
    }
    // The sum: a later step summing `dpre` over all axes but the channels (it reads `dpre`
    // only, which stays unchanged until then: its value does not depend on when it runs).
    let sum = readers(mask)
        .into_iter()
        .find(|&s| s != mask && bias_sum(p, s, mask, ys[3], dtype) && steps.contains(&s))
        .map(|s| (s, 0));
    let filter = readers(mask)
        .into_iter()
        .find_map(|f| twin_filter(p, lay, steps, f, mask));
    let fused =
        |u: &NodeId| Some(*u) == sum.map(|s| s.0) || Some(*u) == filter.as_ref().map(|f| f.node);
    let private = filter.is_some() && !p.outputs.contains(&mask) && readers(mask).iter().all(fused);
    let dpre = lay.loc[&mask];
    if !locations_ok(lay.loc[&y], lay.loc[&dy], dpre) {
        return None;
    }
    let inside = |a: usize, size: usize, out: usize| -> Vec<Vec<usize>> {
        (0..out)
            .map(|o| {
                super::pool::inside(window, a, size, o)
                    .map(|k| o * window.strides[a] + k * window.dilations[a] - window.pad_lo[a])
                    .collect()
            })
            .collect()
    };
    let rows = inside(0, ys[1], ps[1]);
    let cols = inside(1, ys[2], ps[2]);
    let shapes_ok = ys[0] == ps[0]
        && ys[3] == ps[3]
        && window.out_hw([ys[1], ys[2]]).ok() == Some([ps[1], ps[2]])
        && mn.ty.shape.to_fixed().as_deref() == Some(&ys[..])
        && k1.out.shape.numel() == Some(ys.iter().product())
        && g.node(y).ty.dtype == dtype
        && g.node(dy).ty.dtype == dtype
        && !rows.iter().chain(&cols).any(Vec::is_empty);
    if !shapes_ok {
        return None;
    }
    let mark = |lists: &[Vec<usize>], size: usize| {
        let mut v = vec![false; size];
        lists.iter().flatten().for_each(|&i| v[i] = true);
        v
    };
    let in_window = [mark(&rows, ys[1]), mark(&cols, ys[2])];
    let covered = in_window.iter().flatten().all(|&b| b);
    Some(ReluPoolGrad {
        pool_grad: m,
        mask,
        sum,
        filter,
        private,
        y: lay.loc[&y],
        dy: lay.loc[&dy],
        dpre,
        dtype,
        n: ys[0],
        hwc: [ys[1], ys[2], ys[3]],
        out_hw: [ps[1], ps[2]],
        rows,
        cols,
        covered,
        in_window,
    })
}

/// Node `f`, if it is a later step computing the filter gradient from `dpre` (node
/// `mask`) on the direct small-K kernel, with its input computed before the twin (not a
/// later step, nor an alias of one).
fn twin_filter(
    p: &Program,
    lay: &Layout,
    steps: &[NodeId],
    f: NodeId,
    mask: NodeId,
) -> Option<TwinFilter> {
    let g = &p.graph;
    let n = g.node(f);
    let is_filter = matches!(
        n.op,
        Op::Conv {
            kind: ConvKind::FilterGrad,
            ..
        }
    );
    if !is_filter || n.inputs.get(1) != Some(&mask) || !steps.contains(&f) {
        return None;
    }
    let x = n.inputs[0];
    let mut src = x;
    loop {
        if steps.contains(&src) {
            return None;
        }
        match g.node(src).op {
            Op::Reshape => src = g.node(src).inputs[0],
            _ => break,
        }
    }
    let plan = super::compile::conv_step(p, f, ConvKind::FilterGrad)
        .ok()?
        .into_filter()?;
    Some(TwinFilter {
        node: f,
        x: *lay.loc.get(&x)?,
        plan,
        offset: 0,
    })
}

/// Node `s` is a kernel summing `dpre` (node `mask`) over every axis but its last, of
/// extent `c`, read in order, in `dtype`, with nothing after the sum.
fn bias_sum(p: &Program, s: NodeId, mask: NodeId, c: usize, dtype: DType) -> bool {
    let Some(k) = kernel_of(p, s) else {
        return false;
    };
    let Core::Reduce {
        op: ReduceOp::Sum,
        axes,
    } = &k.core
    else {
        return false;
    };
    let dom = &k.prologue.domain;
    let rank = dom.len();
    let all_but_last = rank >= 1 && axes.iter().copied().eq(0..rank - 1);
    let loads_dpre = k.prologue.exprs.len() == 1
        && identity_load(&k.prologue.exprs[0].0, dom) == Some(0)
        && p.graph.node(s).inputs.as_slice() == [mask];
    let plain = k.epilogue.exprs.len() == 1
        && matches!(k.epilogue.exprs[0].0, Expr::Core)
        && k.out.shape.numel() == Some(c)
        && k.out.dtype == dtype
        && k.prologue.exprs[0].1 == dtype;
    all_but_last && dom.last() == Some(&c) && loads_dpre && plain
}

/// Whether the twin may run on these buffers: `dpre` may share `y`'s (each window's `y` is
/// read before its `dpre` is written, and windows are disjoint), never `dy`'s (the pass
/// writes `dpre` ahead of the `dy` it still reads). The buffer plan, made for the unfused
/// order, puts `dpre` in `dy`'s slot when that slot is large enough: `dy` dies at the pool
/// gradient, before the mask writes.
fn locations_ok(y: Loc, dy: Loc, dpre: Loc) -> bool {
    dpre != dy && y != dy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpre_may_share_y_but_never_dy() {
        let (y, dy, other) = (Loc::Slot(0), Loc::Slot(1), Loc::Slot(2));
        assert!(locations_ok(y, dy, other));
        assert!(locations_ok(y, dy, y));
        assert!(!locations_ok(y, dy, dy));
        assert!(locations_ok(y, Loc::Feed(0), Loc::Out(0)));
        assert!(!locations_ok(y, y, other));
    }
}
