//! The convolution step: im2col tiles and `gemm` calls, planned at compile time.
//!
//! Activations are NHWC and filters HWIO, so the filter of group `g` already is a row-major
//! `[K, Og]` matrix (`K = KH·KW·Cg`, row stride `O`) and an output tile is a block of rows of
//! `[N·OH·OW, O]`. Every kind is a sequence of `gemm`s over *tiles* of those `M = N·OH·OW`
//! rows, whose column matrices (`[rows, K]`, written by `im2col`) stay cache-sized:
//! - `Forward`: `Y[tile, g] = im2col(X)[tile] · W[g]`. A 1×1 window with unit strides and no
//!   padding reads `X` as it is (no copy), in one `gemm` over all rows.
//! - `InputGrad`: `col = dY[tile, g] · W[g]ᵀ`, then `col2im` adds each row's taps into `dX`.
//!   Its tiles are whole images, so two tiles never write one pixel.
//! - `FilterGrad`: `dW[g] += im2col(X)[tile]ᵀ · dY[tile, g]`, accumulated by `gemm` over the
//!   tiles of one of `partials` fixed ranges, then the partials added in order.
//!
//! **Determinism (invariant 13).** Tiles and partial ranges are fixed by the plan (the
//! shapes), never by the thread count: threads take whole tiles (forward, input gradient;
//! their outputs are disjoint) or whole partials (filter gradient), and `gemm` computes each
//! element as one dot product in a fixed order whatever its parallelism. So 1, 2 or 3
//! threads give the same bits.
//!
//! The step's buffers are `lanes` column tiles and `partials − 1` filter-sized accumulators
//! in the executable's scratch, which the compile sizes for the largest step.

mod cols;
mod epilogue;

use cols::{col2im, im2col};
pub(super) use cols::{mm, Elem};

pub(super) use epilogue::attach as attach_epilogues;

use crate::dtype::DType;
use crate::graph::op::{ConvGeom, ConvKind};

/// Column tiles are about this big (the measured sweet spot is a few hundred KB to a few
/// MB, measured for issue 17); `KILN_CONV_COL_KB` overrides it (for measuring).
const COL_BUDGET: usize = 1 << 20;

fn col_budget() -> usize {
    std::env::var("KILN_CONV_COL_KB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&kb| kb > 0)
        .map_or(COL_BUDGET, |kb| kb.saturating_mul(1024))
}
/// At most this many tiles run at once (each needs its own column buffer).
const MAX_LANES: usize = 4;
/// A filter gradient sums its tiles in at most this many fixed partial accumulators.
const MAX_PARTIALS: usize = 4;

/// A planned convolution.
pub(super) struct ConvStep {
    pub(super) kind: ConvKind,
    pub(super) geo: ConvGeom,
    pub(super) dtype: DType,
    /// Rows of `M = N·OH·OW` per tile (a multiple of `OH·OW` for the input gradient).
    rows: usize,
    /// Column buffers (0 when no im2col is needed).
    lanes: usize,
    /// The filter gradient's partial sums (1 for the other kinds).
    partials: usize,
    /// One input channel per group and more than one group: direct loops (`conv_dw.rs`),
    /// one image per tile.
    depthwise: bool,
    /// The depthwise step's Cranelift kernel (`conv_dw::lower`), set once compiled.
    pub(super) dw: Option<super::module::KernelFn>,
    /// Winograd F(2×2, 3×3) instead of im2col (`conv_wino.rs` says when).
    pub(super) wino: Option<super::conv_wino::Plan>,
    /// The kernel and pooling run on each forward tile (`conv/epilogue.rs`), once attached.
    pub(super) epi: Option<Box<epilogue::Epilogue>>,
    /// A small-K f32 filter gradient without `gemm` (`conv_direct/filter.rs` says when).
    filter: Option<Box<super::conv_direct::Filter>>,
}

impl ConvStep {
    /// Plans `kind` over `geo` in `dtype` (f32 or f64).
    pub(super) fn plan(kind: ConvKind, geo: ConvGeom, dtype: DType) -> ConvStep {
        let size = dtype.size_bytes();
        let m = geo.n * geo.out_pixels();
        let k = geo.k().max(1);
        let budget = col_budget();
        let whole = |images: usize| {
            // Two tiles at least when there are two images, so two threads share work.
            images.min(geo.n.div_ceil(2)).max(1) * geo.out_pixels()
        };
        let rows = match kind {
            ConvKind::InputGrad { .. } => {
                let per_image = geo.out_pixels() * k * size;
                whole((budget / per_image.max(1)).clamp(1, 16))
            }
            // Forward tiles are whole images when one fits the budget, so a tile's
            // epilogue (`conv/epilogue.rs`) can pool its images.
            ConvKind::Forward if geo.out_pixels() * k * size <= budget => {
                whole(budget / (geo.out_pixels() * k * size).max(1))
            }
            _ => (budget / (k * size)).max(16).min(m.div_ceil(2)).max(1),
        };
        let depthwise = geo.groups > 1 && geo.groups == geo.c;
        let rows = if depthwise {
            geo.out_pixels()
        } else if direct(&geo) && !matches!(kind, ConvKind::FilterGrad) {
            // A 1×1 window copies nothing: one `gemm` over all rows, split by `gemm` itself.
            m
        } else {
            rows
        };
        let tiles = m.div_ceil(rows.max(1));
        let im2col = !direct(&geo) && !depthwise;
        let partials = match kind {
            ConvKind::FilterGrad => tiles.clamp(1, MAX_PARTIALS),
            _ => 1,
        };
        let lanes = match (im2col, kind) {
            (false, _) => 0,
            (true, ConvKind::FilterGrad) => partials,
            (true, _) => tiles.clamp(1, MAX_LANES),
        };
        let wino = super::conv_wino::Plan::new(kind, &geo, dtype);
        let filter = match (kind, dtype) {
            (ConvKind::FilterGrad, DType::F32) => super::conv_direct::Filter::new(&geo),
            _ => None,
        };
        ConvStep {
            kind,
            geo,
            dtype,
            rows: rows.max(1),
            lanes,
            partials,
            depthwise,
            dw: None,
            wino,
            epi: None,
            filter: filter.map(Box::new),
        }
    }

    /// The scratch bytes the step uses.
    pub(super) fn scratch_bytes(&self) -> usize {
        if let Some(w) = &self.wino {
            return w.scratch_bytes();
        }
        if let Some(f) = &self.filter {
            return f.scratch_bytes();
        }
        (self.lanes * self.col_len() + (self.partials - 1) * self.filter_len())
            * self.dtype.size_bytes()
    }

    fn col_len(&self) -> usize {
        self.rows * self.geo.k()
    }

    fn filter_len(&self) -> usize {
        self.geo.k() * self.geo.o
    }

    fn m(&self) -> usize {
        self.geo.n * self.geo.out_pixels()
    }

    fn tiles(&self) -> usize {
        self.m().div_ceil(self.rows)
    }

    /// The direct small-K filter gradient's plan, if the step has one.
    pub(super) fn into_filter(self) -> Option<Box<super::conv_direct::Filter>> {
        self.filter
    }

    /// Whether the step is a filter gradient on the direct small-K kernel.
    pub(super) fn direct_filter(&self) -> bool {
        self.filter.is_some()
    }

    /// The rows of the smallest tile (the last), which decides `gemm`'s path for it
    /// (`conv_direct.rs` matches the general path's sums).
    pub(super) fn smallest_tile(&self) -> usize {
        let (r0, r1) = tile_rows(self, self.tiles().saturating_sub(1));
        r1 - r0
    }
}

/// True when a 1×1 window with unit strides and no padding lets `gemm` read `X` in place.
fn direct(geo: &ConvGeom) -> bool {
    geo.window.is_pointwise()
}

/// Runs `step` on operands `a`, `b` into `out`, with `scratch` of `step.scratch_bytes()`.
///
/// # Safety
/// `a`, `b` and `out` hold the step's operand and output types (`compile` checked the
/// geometry against them), `out` overlaps neither operand, and `scratch` is the step's own
/// for the duration of the call.
pub(super) unsafe fn run_conv(
    step: &ConvStep,
    a: *const u8,
    b: *const u8,
    out: *mut u8,
    scratch: *mut u8,
    epi: Option<&epilogue::Ptrs>,
    threads: usize,
) {
    if let Some(w) = &step.wino {
        // SAFETY: the caller's contract (the plan exists only for f32 steps).
        return unsafe { super::conv_wino::run(w, a, b, out, scratch, threads) };
    }
    if let Some(f) = &step.filter {
        // SAFETY: the caller's contract (the plan exists only for f32 filter gradients:
        // `a` is the input, `b` the output gradient, `out` the filter's gradient).
        return unsafe { f.run(a.cast(), b.cast(), out.cast(), scratch.cast(), threads) };
    }
    let p = Ptrs {
        a: a as usize,
        b: b as usize,
        out: out as usize,
        scratch: scratch as usize,
    };
    match step.dtype {
        // SAFETY: the caller's contract, in the step's dtype.
        DType::F64 => unsafe { run_typed::<f64>(step, p, epi, threads) },
        // SAFETY: as above (the compile admits only f32 and f64).
        _ => unsafe { run_typed::<f32>(step, p, epi, threads) },
    }
}

/// The step's buffers as addresses (so closures on the pool can share them).
#[derive(Clone, Copy)]
pub(super) struct Ptrs {
    pub(super) a: usize,
    pub(super) b: usize,
    pub(super) out: usize,
    pub(super) scratch: usize,
}

unsafe fn run_typed<T: Elem>(st: &ConvStep, p: Ptrs, epi: Option<&epilogue::Ptrs>, threads: usize) {
    let tiles = st.tiles();
    let units = match st.kind {
        ConvKind::FilterGrad => st.partials,
        _ => tiles,
    };
    let workers = if st.lanes == 0 {
        // No column buffers: each unit only calls gemm.
        units.min(threads).min(MAX_LANES)
    } else {
        units.min(threads).min(st.lanes)
    }
    .max(1);
    // One unit alone lets gemm split its own blocks.
    let gemm_threads = if workers == 1 { threads } else { 1 };
    let work = |wk: usize| {
        let (u0, u1) = (units * wk / workers, units * (wk + 1) / workers);
        if st.depthwise {
            for u in u0..u1 {
                // SAFETY: worker `wk` alone writes image `u` (forward, input gradient) or
                // partial `u` (filter gradient: `dW` or its accumulator in scratch).
                unsafe { depthwise::<T>(st, p, u) };
            }
            return;
        }
        let col = (p.scratch as *mut T).wrapping_add(wk * st.col_len());
        for u in u0..u1 {
            // SAFETY: worker `wk` alone uses column buffer `wk` (lanes ≥ workers) and unit
            // `u`'s outputs (its tile's rows, or partial `u`).
            unsafe {
                match st.kind {
                    ConvKind::Forward => {
                        // A private tile (`conv/epilogue.rs`): lane `wk`'s region of
                        // scratch past everything else, `rows·O` elements.
                        let private = st.epi.as_ref().and_then(|e| e.private);
                        let tile = private.map_or(std::ptr::null_mut(), |pv| {
                            (p.scratch as *mut u8).wrapping_add(pv.offset + wk * pv.tile_bytes)
                        });
                        let (r0, r1) = tile_rows(st, u);
                        // The output rows `[r0, r1)` at the start of the tile.
                        let y = match private {
                            Some(_) => (tile as *mut T).wrapping_sub(r0 * st.geo.o),
                            None => p.out as *mut T,
                        };
                        forward::<T>(st, p, u, col, y, gemm_threads);
                        if let (Some(e), Some(ep)) = (&st.epi, epi) {
                            // Tiles of a step with an epilogue are whole images.
                            let px = st.geo.out_pixels();
                            // SAFETY: the tile's images of the output were just written
                            // (to the private tile, when there is one), and this worker
                            // alone owns them and its lane's tile (disjoint tiles, lanes ≥
                            // workers).
                            e.images(ep, r0 / px, r1 / px, tile);
                        }
                    }
                    ConvKind::InputGrad { .. } => input_grad::<T>(st, p, u, col, gemm_threads),
                    ConvKind::FilterGrad => filter_partial::<T>(st, p, u, col, gemm_threads),
                }
            }
        }
    };
    // SAFETY: workers write disjoint tiles, partials and column buffers.
    unsafe { super::exec::on_pool(workers, &work) };
    if let ConvKind::FilterGrad = st.kind {
        // SAFETY: partials 1.. follow the column buffers in scratch; the output is `dw`.
        unsafe { sum_partials::<T>(st, p) };
    }
}

/// Unit `u` of a depthwise step: image `u`, or partial `u` of the filter gradient.
unsafe fn depthwise<T: Elem>(st: &ConvStep, p: Ptrs, u: usize) {
    let geo = &st.geo;
    // SAFETY (whole block): `run_conv`'s contract, and unit `u`'s outputs are this call's.
    unsafe {
        match st.kind {
            ConvKind::Forward => super::conv_dw::forward::<T>(geo, st.dw, p, u),
            ConvKind::InputGrad { .. } => super::conv_dw::input_grad::<T>(geo, st.dw, p, u),
            ConvKind::FilterGrad => {
                let images = (geo.n * u / st.partials, geo.n * (u + 1) / st.partials);
                let dst = if u == 0 {
                    p.out as *mut T
                } else {
                    (p.scratch as *mut T).add((u - 1) * st.filter_len())
                };
                super::conv_dw::filter_grad::<T>(geo, st.dw, p, images, dst)
            }
        }
    }
}

fn tile_rows(st: &ConvStep, t: usize) -> (usize, usize) {
    (t * st.rows, ((t + 1) * st.rows).min(st.m()))
}

/// `Y[tile] = im2col(X)[tile] · W`, group by group.
///
/// `y` is where the output's row 0 is (the output, or a private tile's address less the
/// tile's first row: only rows `[r0, r1)` are written).
unsafe fn forward<T: Elem>(
    st: &ConvStep,
    p: Ptrs,
    t: usize,
    col: *mut T,
    y: *mut T,
    threads: usize,
) {
    let geo = &st.geo;
    let (r0, r1) = tile_rows(st, t);
    let (x, w) = (p.a as *const T, p.b as *const T);
    let (c, o, cg, og, k) = (geo.c, geo.o, geo.cg(), geo.og(), geo.k());
    for g in 0..geo.groups {
        // SAFETY (whole block): rows `[r0, r1)` of `Y` (`[M, O]`) at the group's columns,
        // `W`'s `[K, Og]` block at column `g·og` (row stride `O`), and either `X`'s rows
        // read in place (a 1×1 window: `M` equals `N·H·W`) or the column tile just written.
        unsafe {
            let (a, a_rs) = if direct(geo) {
                (x.add(r0 * c + g * cg), c)
            } else {
                im2col(geo, x, g, (r0, r1), col);
                (col as *const T, k)
            };
            mm(
                (r1 - r0, og, k),
                (y.wrapping_add(r0 * o + g * og), o as isize),
                false,
                (a, a_rs as isize, 1),
                (w.add(g * og), o as isize, 1),
                threads,
            );
        }
    }
}

/// `dX[tile's images] = col2im(dY[tile] · Wᵀ)`, group by group.
unsafe fn input_grad<T: Elem>(st: &ConvStep, p: Ptrs, t: usize, col: *mut T, threads: usize) {
    let geo = &st.geo;
    let (r0, r1) = tile_rows(st, t);
    let (dy, w, dx) = (p.a as *const T, p.b as *const T, p.out as *mut T);
    let (c, o, cg, og, k) = (geo.c, geo.o, geo.cg(), geo.og(), geo.k());
    let px = geo.in_pixels() * c;
    let (n0, n1) = (r0 / geo.out_pixels(), r1.div_ceil(geo.out_pixels()));
    if !direct(geo) {
        // SAFETY: the tile's images of `dX` (tiles are whole images: this worker's alone).
        unsafe { std::ptr::write_bytes(dx.add(n0 * px), 0, (n1 - n0) * px) };
    }
    for g in 0..geo.groups {
        let dy_g = (dy.wrapping_add(r0 * o + g * og), o as isize, 1);
        // `Wᵀ` of the group: `[Og, K]`, row stride 1, column stride `O`.
        let wt = (w.wrapping_add(g * og), 1, o as isize);
        // SAFETY: as in `forward`; a 1×1 window writes each input pixel once, in place
        // (rows of `dX` at the group's channels), else the column tile is scattered back.
        unsafe {
            if direct(geo) {
                mm(
                    (r1 - r0, cg, og),
                    (dx.add(r0 * c + g * cg), c as isize),
                    false,
                    dy_g,
                    wt,
                    threads,
                );
            } else {
                mm(
                    (r1 - r0, k, og),
                    (col, k as isize),
                    false,
                    dy_g,
                    wt,
                    threads,
                );
                col2im(geo, col, g, (r0, r1), dx);
            }
        }
    }
}

/// Partial `u` of the filter gradient: `Σ im2col(X)[tile]ᵀ · dY[tile]` over its tiles, in
/// order, into `dW` (partial 0) or its accumulator in scratch.
unsafe fn filter_partial<T: Elem>(st: &ConvStep, p: Ptrs, u: usize, col: *mut T, threads: usize) {
    let geo = &st.geo;
    let (x, dy) = (p.a as *const T, p.b as *const T);
    let (c, o, cg, og, k) = (geo.c, geo.o, geo.cg(), geo.og(), geo.k());
    let dst = if u == 0 {
        p.out as *mut T
    } else {
        (p.scratch as *mut T).wrapping_add(st.lanes * st.col_len() + (u - 1) * st.filter_len())
    };
    let tiles = st.tiles();
    let (t0, t1) = (tiles * u / st.partials, tiles * (u + 1) / st.partials);
    if t0 == t1 {
        // SAFETY: the partial's `K·O` elements (an empty range sums to zero).
        unsafe { std::ptr::write_bytes(dst, 0, st.filter_len()) };
    }
    for t in t0..t1 {
        let (r0, r1) = tile_rows(st, t);
        for g in 0..geo.groups {
            // SAFETY: as in `forward`; `Xᵀ` (or the column tile's transpose) is `[K, rows]`
            // with row stride 1, and the destination is the partial's group block.
            unsafe {
                let a = if direct(geo) {
                    (x.add(r0 * c + g * cg), 1, c as isize)
                } else {
                    im2col(geo, x, g, (r0, r1), col);
                    (col as *const T, 1, k as isize)
                };
                mm(
                    (k, og, r1 - r0),
                    (dst.add(g * og), o as isize),
                    t > t0,
                    a,
                    (dy.add(r0 * o + g * og), o as isize, 1),
                    threads,
                );
            }
        }
    }
}

/// `dW += partial 1, + partial 2, ...`, in that order.
unsafe fn sum_partials<T: Elem>(st: &ConvStep, p: Ptrs) {
    let dw = p.out as *mut T;
    let base = (p.scratch as *mut T).wrapping_add(st.lanes * st.col_len());
    for u in 1..st.partials {
        let part = base.wrapping_add((u - 1) * st.filter_len());
        for i in 0..st.filter_len() {
            // SAFETY: `dW` and each partial hold `K·O` elements.
            unsafe { *dw.add(i) = *dw.add(i) + *part.add(i) };
        }
    }
}
