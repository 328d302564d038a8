//! The forward convolution's tile epilogue: the elementwise kernel after it (bias + ReLU)
//! and the pooling after that, run on each tile's images right after the tile's `gemm`,
//! while they are in cache, instead of as two more passes over the whole activation.
//!
//! **What runs.** Exactly the steps the schedule had, moved into the convolution's step:
//! the kernel's Cranelift function over the tile's range of its first axis (the images),
//! which is how the executable splits it over threads anyway, and the pooling function over
//! the same images (`PoolStep::images_at`). Per element these are the same functions on the
//! same inputs, and the forward's tiles are whole images whether or not an epilogue is
//! attached (`ConvStep::plan`), so the results are bitwise those of the unfused steps, and
//! as thread-count independent (invariant 13).
//!
//! **When** ([`attach`]), all of it a function of the program: a forward im2col step (not
//! Winograd, depthwise or a 1×1 window) whose tiles are whole images; the next step is an
//! elementwise kernel with no division that can fail, no scratch, its loop split along the
//! batch (extent `N`, unit alignment, not reordered; at batch 1 it may split along its rows,
//! and the one image's call then covers them all) over exactly the convolution's
//! `N·OH·OW·O` elements, reading the convolution's output only at the element it writes;
//! its output is neither convolution operand. Optionally the step after that is a max or
//! average pooling of the kernel's output whose own output is none of the buffers the
//! tiles still read or write. `KILN_CONV_EPILOGUE=0` turns it off (for comparisons).

use super::super::buffers::{Buffers, Loc};
use super::super::compile::Step;
use super::super::module::KernelFn;
use super::super::pool::PoolStep;
use super::ConvStep;
use crate::graph::op::{ConvKind, Op, PoolKind};
use crate::kernel::{Core, Expr};
use crate::passes::Program;

/// `KILN_CONV_EPILOGUE=0` runs the kernel and pooling as their own steps.
fn enabled() -> bool {
    std::env::var("KILN_CONV_EPILOGUE").map_or(true, |v| v != "0")
}

/// The steps a forward convolution runs on each tile (see the module docs).
pub(in crate::jit) struct Epilogue {
    /// The elementwise kernel's function, operand and output locations.
    f: KernelFn,
    args: Vec<Loc>,
    out: Loc,
    /// Which of `args` then `out` are the tile's activation (the convolution's output, or
    /// the kernel's own output): redirected to the private tile when there is one.
    tile_locs: Vec<bool>,
    /// The kernel's range for images `[lo, hi)`: `[lo, hi)` when its split axis is the
    /// batch; at batch 1 it may split along a later axis (its rows, see `codegen::Split`),
    /// and the single image is then the whole range `[0, extent)`.
    whole: Option<usize>,
    /// The pooling step after it, if any.
    pool: Option<PoolStep>,
    /// The private tiles, when nothing but the epilogue reads the activation.
    pub(in crate::jit) private: Option<Private>,
}

/// Per-lane tile buffers in scratch that take the convolution's (and the kernel's) output
/// instead of the activation's buffers: in inference the activation then never leaves the
/// cache, and only the pooled tensor is written to memory.
#[derive(Clone, Copy)]
pub(in crate::jit) struct Private {
    /// Scratch byte offset of lane 0's tile.
    pub(in crate::jit) offset: usize,
    /// Bytes per lane (`rows·O` elements).
    pub(in crate::jit) tile_bytes: usize,
    /// Bytes of one image of the activation.
    image_bytes: usize,
}

impl Epilogue {
    /// What the profile calls the step.
    pub(in crate::jit) fn kind(&self) -> &'static str {
        if self.private.is_some() {
            "conv fwd+kernel+pool, tiles"
        } else if self.pool.is_some() {
            "conv fwd+kernel+pool"
        } else {
            "conv fwd+kernel"
        }
    }

    /// The addresses the functions read and write in this run.
    pub(in crate::jit) fn pointers(&self, bufs: &mut Buffers<'_>) -> Ptrs {
        let mut kernel: Vec<*mut u8> = self.args.iter().map(|&l| bufs.ptr(l)).collect();
        kernel.push(bufs.ptr(self.out));
        Ptrs {
            kernel,
            pool: self.pool.as_ref().map_or(vec![], |p| p.pointers(bufs)),
        }
    }

    /// Images `[lo, hi)`: the kernel over them, then the pooling. With private tiles,
    /// `tile` is the tile buffer holding those images' activation (image `lo` first).
    ///
    /// # Safety
    /// `ptrs` are this run's (`pointers`), the convolution has written the images' outputs
    /// (to `tile` when private), and no other thread runs an overlapping range or uses
    /// `tile` at the same time.
    pub(in crate::jit) unsafe fn images(&self, ptrs: &Ptrs, lo: usize, hi: usize, tile: *mut u8) {
        let mut status = 0i32;
        let mut kernel = ptrs.kernel.clone();
        let mut pool = ptrs.pool.clone();
        if let Some(pv) = &self.private {
            // The functions address image `i` at `base + i·image_bytes`: a base `lo` images
            // before the tile puts images `[lo, hi)` inside it (wrapping arithmetic; only
            // the addresses inside the tile are dereferenced).
            let base = tile.wrapping_sub(lo * pv.image_bytes);
            for (p, &t) in kernel.iter_mut().zip(&self.tile_locs) {
                if t {
                    *p = base;
                }
            }
            if let Some(p0) = pool.first_mut() {
                *p0 = base;
            }
        }
        let (klo, khi) = self.whole.map_or((lo, hi), |extent| (0, extent));
        // SAFETY: `f` was compiled from a validated elementwise kernel whose index maps stay
        // inside buffers of its parameter types' sizes, and `ptrs.kernel` holds those
        // buffers then the output (as `exec::run_kernel` passes them); `[klo, khi)` is a
        // range of its split axis (`attach` checked the split: the batch, alignment 1, or at
        // batch 1 the whole range, whose single image the caller's `[0, 1)` is), so the
        // call writes only those images of the output, which the caller owns; it uses no
        // scratch (checked) and has no division that can fail (so the status stays 0).
        unsafe {
            (self.f)(
                kernel.as_ptr(),
                std::ptr::null_mut(),
                &mut status,
                klo as i64,
                khi as i64,
            )
        };
        if let Some(p) = &self.pool {
            p.images_at(&pool, lo, hi);
        }
    }
}

/// A run's addresses for the epilogue's functions.
pub(in crate::jit) struct Ptrs {
    kernel: Vec<*mut u8>,
    pool: Vec<*mut u8>,
}

/// Moves each fusible kernel (and pooling) after a forward convolution into the
/// convolution's step (see the module docs). Run once the functions are finalized (the
/// steps keep their pointers). Returns how many convolutions took an epilogue.
pub(in crate::jit) fn attach(p: &Program, steps: &mut Vec<Step>, scratch: &mut usize) -> usize {
    if !enabled() {
        return 0;
    }
    // Private tiles go past every other use of scratch (the backward twin's reserved sums
    // included), one region shared by the steps (they run one after another).
    let base = scratch.next_multiple_of(64);
    let live: std::collections::HashSet<_> = p.live_order().into_iter().collect();
    let only_reader = |id, reader| {
        let users: Vec<_> = p
            .graph
            .users(id)
            .into_iter()
            .filter(|u| live.contains(u))
            .collect();
        users == [reader] && !p.outputs.contains(&id)
    };
    let mut count = 0;
    let mut i = 0;
    while i + 1 < steps.len() {
        let Some(with_pool) = fusible(p, &steps[i..]) else {
            i += 1;
            continue;
        };
        // `fusible` checked the steps' kinds: these matches always take the first arm.
        let pool = match with_pool.then(|| steps.remove(i + 2)) {
            Some(Step::Pool(ps)) => Some(ps),
            Some(other) => {
                steps.insert(i + 2, other);
                None
            }
            None => None,
        };
        let kernel = steps.remove(i + 1);
        if let Step::Kernel {
            f: Some(f),
            args,
            out,
            node: knode,
            split: Some(split),
            ..
        } = kernel
        {
            if let Step::Conv {
                conv,
                out: cout,
                node: cnode,
                ..
            } = &mut steps[i]
            {
                // Private tiles when the activation has no reader but the epilogue: the
                // convolution's output only the kernel, the kernel's only the pooling.
                let private = match &pool {
                    Some(ps) if only_reader(*cnode, knode) && only_reader(knode, ps.node) => {
                        let bytes = conv.geo.out_pixels() * conv.geo.o * conv.dtype.size_bytes();
                        let pv = Private {
                            offset: base,
                            tile_bytes: (conv.rows / conv.geo.out_pixels().max(1)) * bytes,
                            image_bytes: bytes,
                        };
                        *scratch = (*scratch).max(base + conv.lanes * pv.tile_bytes);
                        Some(pv)
                    }
                    _ => None,
                };
                // The kernel's output (last) is the pooling's input.
                let tile_locs: Vec<bool> = args.iter().map(|l| l == cout).chain([true]).collect();
                let whole = (split.axis != 0).then_some(split.extent);
                conv.epi = Some(Box::new(Epilogue {
                    f,
                    args,
                    out,
                    tile_locs,
                    whole,
                    pool,
                    private,
                }));
                count += 1;
            }
        } else {
            steps.insert(i + 1, kernel);
        }
        i += 1;
    }
    count
}

/// Whether `steps[0]` is a forward convolution that can take `steps[1]` as its epilogue,
/// and then whether `steps[2]` (a pooling) joins it too.
fn fusible(p: &Program, steps: &[Step]) -> Option<bool> {
    let Step::Conv {
        conv,
        a: ca,
        b: cb,
        out: cout,
        ..
    } = steps.first()?
    else {
        return None;
    };
    if !whole_image_tiles(conv) {
        return None;
    }
    let Step::Kernel {
        f: Some(_),
        args,
        out: kout,
        node,
        split: Some(split),
        gemm: None,
        fails: None,
    } = steps.get(1)?
    else {
        return None;
    };
    let Op::Fusion(kid) = &p.graph.node(*node).op else {
        return None;
    };
    let k = p.kernels().lookup(*kid).ok()?;
    let geo = &conv.geo;
    let n = geo.n;
    let numel = n * geo.out_pixels() * geo.o;
    let dom = &k.epilogue.domain;
    let shape_ok = matches!(k.core, Core::None)
        && super::super::codegen::scratch_bytes(k) == 0
        && !super::super::codegen::reordered(k)
        && dom.first() == Some(&n)
        // Split by images, or at batch 1 along a later axis (then one call covers it all).
        && ((split.axis == 0 && split.extent == n) || n == 1)
        && split.align == 1
        && dom.iter().product::<usize>() == numel
        && k.out.shape.numel() == Some(numel);
    // The convolution's output read only at the element written (a tile's kernel call sees
    // only its own images of it); the kernel writes over neither convolution operand.
    let reads_ok = k.epilogue.exprs.iter().all(|(e, _)| match e {
        Expr::Load { param, map } => {
            args.get(*param as usize) != Some(cout) || map.is_identity(dom)
        }
        _ => true,
    });
    if !shape_ok || !reads_ok || kout == ca || kout == cb {
        return None;
    }
    // The pooling: of the kernel's output, writing none of the buffers the tiles use.
    let pool_ok = match steps.get(2) {
        Some(Step::Pool(ps)) => {
            let used = [ca, cb, cout, kout];
            matches!(ps.kind, PoolKind::Max | PoolKind::Avg { .. })
                && ps.args.as_slice() == [*kout]
                && ps.images() == n
                && !used.contains(&&ps.out)
                && !args.contains(&ps.out)
        }
        _ => false,
    };
    Some(pool_ok)
}

/// A forward im2col convolution whose tiles are whole images.
fn whole_image_tiles(conv: &ConvStep) -> bool {
    matches!(conv.kind, ConvKind::Forward)
        && conv.wino.is_none()
        && conv.lanes > 0
        && !conv.depthwise
        && conv.rows.is_multiple_of(conv.geo.out_pixels().max(1))
}
