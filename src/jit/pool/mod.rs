//! Pooling steps (`Op::Pool`): one Cranelift function per pooling node, its geometry baked
//! in (`codegen/pool.rs` emits it), called over ranges of images.
//!
//! The arithmetic is the interpreter's, operation for operation (the semantics are in the
//! docs of `graph::op::pool`): the same scan order, the same first-maximum and first-NaN
//! rule, the average summed from `-0.0` in scan order then divided by the count, gradients
//! added into `+0.0` window by window in row-major order. Each of those is one IEEE operation
//! in the dtype, which is what the interpreter's per-operation rounding computes, so the two
//! agree bit for bit. A step is split over the pool by whole images: an image's windows read
//! and write only that image, so the bits do not depend on the thread count (invariant 13).
//!
//! The function is `kernel_signature`'s: `(args, _, _, lo, hi)` runs images `[lo, hi)`,
//! `args` holding the operands' addresses then the output's. The native loops of
//! `native.rs` compute the same bits; they run a step whose kernel would be too large (see
//! `codegen::pool::lower`) and every step when `KILN_POOL_NATIVE=1` (for comparing the two).

mod native;

use super::buffers::{Buffers, Loc};
use super::codegen::pool::{lower, PoolGeom};
use super::codegen::Helpers;
use super::exec::on_pool;
use super::module::KernelFn;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::op::{PoolKind, Ty, Window2d};
use crate::graph::{GraphData, NodeId};
use cranelift_codegen::ir::Function;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::JITModule;
use cranelift_module::FuncId;

/// Below this many tap visits a pooling step runs on one thread.
const MIN_PARALLEL_WORK: usize = 1 << 16;

/// One pooling step, its geometry fixed at compile time.
pub(super) struct PoolStep {
    pub(super) kind: PoolKind,
    pub(super) args: Vec<Loc>,
    pub(super) out: Loc,
    pub(super) node: NodeId,
    dtype: DType,
    window: Window2d,
    /// Images in the batch.
    n: usize,
    /// The image's height, width and channels.
    hwc: [usize; 3],
    /// The pooled height and width.
    out_hw: [usize; 2],
    /// The input rows (columns) each output row (column) reads, in scan order.
    rows: Vec<Vec<usize>>,
    cols: Vec<Vec<usize>>,
    /// The divisor of each window of an average: its row count and column count, or the
    /// kernel's when the padding counts.
    whole: Option<usize>,
    /// No input pixel lies in two windows (stride at least the extent on both axes, as the
    /// 2×2/2 pooling of a convnet): `MaxGrad` then writes each tap once instead of adding.
    disjoint: bool,
    /// The Cranelift function, once the module is finalized; None runs the native loops.
    f: Option<KernelFn>,
    /// Whether `lower` built a function (`f` is set when the module is finalized).
    pub(super) lowered: bool,
}

fn dims(t: &Ty) -> Result<Vec<usize>> {
    t.shape
        .to_fixed()
        .filter(|d| d.len() == 4)
        .ok_or_else(|| Error::invalid(format!("jit: a pooling operand has type {t}")))
}

/// The taps `k` of output position `o` along axis `a` that lie inside an input of `size`
/// (`0 <= o·s + k·d - pad < size`): a range, since the input index grows with `k`.
pub(super) fn inside(w: &Window2d, a: usize, size: usize, o: usize) -> std::ops::Range<usize> {
    let (s, d, pad, k) = (
        w.strides[a],
        w.dilations[a].max(1),
        w.pad_lo[a],
        w.kernel[a],
    );
    let base = o.saturating_mul(s);
    let lo = pad.saturating_sub(base).div_ceil(d).min(k);
    let hi = match (size.saturating_add(pad)).checked_sub(base) {
        Some(room) => room.div_ceil(d).min(k),
        None => 0,
    };
    lo..hi.max(lo)
}

/// The inside taps of each output position along axis `a`, as input indices.
fn taps(w: &Window2d, a: usize, size: usize, out: usize) -> Vec<Vec<usize>> {
    (0..out)
        .map(|o| {
            inside(w, a, size, o)
                .map(|k| o * w.strides[a] + k * w.dilations[a] - w.pad_lo[a])
                .collect()
        })
        .collect()
}

/// The step of pooling node `id`, whose operands and output live at `args` and `out`.
pub(super) fn step(
    g: &GraphData,
    id: NodeId,
    kind: PoolKind,
    w: &Window2d,
    args: Vec<Loc>,
    out: Loc,
) -> Result<PoolStep> {
    let n = g.node(id);
    // The image the windows slide over, and the pooled tensor; checked against the shape
    // rule here, since the loops below index buffers sized from these types.
    let operand = |i: usize| g.node(n.inputs[i]).ty.clone();
    let (image, pooled) = match kind {
        PoolKind::Max | PoolKind::Avg { .. } | PoolKind::MaxGather => (operand(0), n.ty.clone()),
        PoolKind::MaxGrad => (operand(0), operand(1)),
        PoolKind::AvgGrad { .. } => (n.ty.clone(), operand(0)),
    };
    let (im, po) = (dims(&image)?, dims(&pooled)?);
    let float = matches!(image.dtype, DType::F32 | DType::F64);
    let same = |t: &Ty| t.dtype == image.dtype;
    let tys_ok = float
        && same(&pooled)
        && same(&n.ty)
        && n.inputs.iter().all(|&i| same(&g.node(i).ty))
        && im[0] == po[0]
        && im[3] == po[3]
        && w.out_hw([im[1], im[2]]).ok() == Some([po[1], po[2]])
        && match kind {
            PoolKind::MaxGather | PoolKind::MaxGrad => operand(1).shape.to_fixed().is_some(),
            _ => true,
        }
        && match kind {
            PoolKind::MaxGather => operand(1) == image,
            _ => true,
        };
    if !tys_ok || n.inputs.len() != kind.arity() {
        return Err(Error::invalid(format!(
            "jit: pooling node {} has inconsistent types",
            n.label()
        )));
    }
    let rows = taps(w, 0, im[1], po[1]);
    let cols = taps(w, 1, im[2], po[2]);
    if rows.iter().chain(&cols).any(Vec::is_empty) {
        return Err(Error::invalid(format!(
            "jit: pooling node {} has a window with no tap inside its input",
            n.label()
        )));
    }
    let whole = match kind {
        PoolKind::Avg { .. } | PoolKind::AvgGrad { .. } if kind.count(w, 0) != 0 => {
            Some(kind.count(w, 0))
        }
        _ => None,
    };
    Ok(PoolStep {
        kind,
        args,
        out,
        node: id,
        dtype: image.dtype,
        window: w.clone(),
        n: im[0],
        hwc: [im[1], im[2], im[3]],
        out_hw: [po[1], po[2]],
        rows,
        cols,
        whole,
        disjoint: (0..2).all(|a| w.extent(a).is_ok_and(|e| w.strides[a] >= e)),
        f: None,
        lowered: false,
    })
}

/// `KILN_POOL_NATIVE=1` keeps every pooling step on the native loops (for comparisons).
fn native_only() -> bool {
    std::env::var("KILN_POOL_NATIVE").is_ok_and(|v| v == "1")
}

impl PoolStep {
    fn image_len(&self) -> usize {
        self.hwc.iter().product()
    }

    fn pooled_len(&self) -> usize {
        self.out_hw[0] * self.out_hw[1] * self.hwc[2]
    }

    /// Builds the step's Cranelift function into `lowered` (compiled with the kernels);
    /// None when the step runs the native loops.
    pub(super) fn lower(
        &mut self,
        module: &mut JITModule,
        fctx: &mut FunctionBuilderContext,
        helpers: &Helpers,
        lowered: &mut Vec<(FuncId, Function)>,
    ) -> Result<Option<FuncId>> {
        if native_only() || self.n == 0 || self.image_len() == 0 || self.pooled_len() == 0 {
            return Ok(None);
        }
        // Every input pixel is in some window: a disjoint gradient then writes all of `dx`.
        let covered =
            self.rows.concat().len() == self.hwc[0] && self.cols.concat().len() == self.hwc[1];
        let geo = PoolGeom {
            kind: self.kind,
            f64: self.dtype == DType::F64,
            hwc: self.hwc,
            out_hw: self.out_hw,
            window: self.window.clone(),
            whole: self.whole,
            disjoint: self.disjoint,
            covered: self.disjoint && covered,
        };
        let name = format!("pool_{}", self.node.index());
        let fid = lower(module, fctx, helpers, &geo, &name, self.args.len(), lowered)?;
        self.lowered = fid.is_some();
        Ok(fid)
    }

    /// Images in the batch.
    pub(super) fn images(&self) -> usize {
        self.n
    }

    /// The function `lower` built, once the module is finalized.
    pub(super) fn set_fn(&mut self, f: KernelFn) {
        self.f = Some(f);
    }

    /// Runs the step: operands and output from `bufs`, split by images over the pool.
    pub(super) fn run(&self, bufs: &mut Buffers<'_>, threads: usize) {
        let kernel = self.rows.iter().map(Vec::len).max().unwrap_or(0)
            * self.cols.iter().map(Vec::len).max().unwrap_or(0);
        let work = self.n * self.pooled_len() * kernel.max(1);
        let chunks = if threads > 1 && work >= MIN_PARALLEL_WORK {
            threads.min(self.n).max(1)
        } else {
            1
        };
        let ptrs = self.pointers(bufs);
        let call = |c: usize| {
            let (lo, hi) = (self.n * c / chunks, self.n * (c + 1) / chunks);
            self.images_at(&ptrs, lo, hi);
        };
        // SAFETY: concurrent calls write disjoint images of the output (see `images_at`).
        unsafe { on_pool(chunks, &call) };
    }

    /// Runs images `[lo, hi)` of the step on the calling thread (`hi <= n`): what a caller
    /// that produces the operand image by image (a convolution's tiles) runs while those
    /// images are in cache. Images outside the range are neither read nor written.
    #[allow(dead_code)]
    pub(super) fn run_images(&self, bufs: &mut Buffers<'_>, lo: usize, hi: usize) {
        let ptrs = self.pointers(bufs);
        self.images_at(&ptrs, lo, hi.min(self.n));
    }

    /// The operands' addresses, then the output's.
    pub(super) fn pointers(&self, bufs: &mut Buffers<'_>) -> Vec<*mut u8> {
        let mut v: Vec<*mut u8> = self.args.iter().map(|&l| bufs.ptr(l)).collect();
        v.push(bufs.ptr(self.out));
        v
    }

    /// Images `[lo, hi)` (clamped to the batch) with the step's function or native loops.
    ///
    /// Every operand buffer holds `n` images of its per-image length (its type, checked
    /// against the shape rule by `step`; feeds and variables have exactly their types, slots
    /// are validated to be at least their values' sizes, outputs are allocated from their
    /// types). The output is a slot or an output array of its own (the validated buffer
    /// assignment lets only elementwise kernels write over an operand), and concurrent calls
    /// take disjoint ranges of images, so a call writes nothing another call or an operand
    /// read touches.
    pub(super) fn images_at(&self, ptrs: &[*mut u8], lo: usize, hi: usize) {
        let hi = hi.min(self.n);
        if lo >= hi {
            return;
        }
        match self.f {
            Some(f) => {
                let mut status = 0i32;
                // SAFETY: `f` was built by `codegen::pool::lower` for this step's geometry
                // and dtype, reading and writing only images `[lo, hi)` of the buffers at
                // `ptrs` (one address per operand, then the output's, as it expects), which
                // hold `n >= hi` images each (see above). It neither reads the scratch
                // pointer nor writes the status.
                unsafe {
                    f(
                        ptrs.as_ptr(),
                        std::ptr::null_mut(),
                        &mut status,
                        lo as i64,
                        hi as i64,
                    )
                };
            }
            None => {
                let ins: Vec<*const u8> = ptrs[..self.args.len()]
                    .iter()
                    .map(|&p| p as *const u8)
                    .collect();
                self.images_native(&ins, ptrs[self.args.len()], lo, hi);
            }
        }
    }
}
