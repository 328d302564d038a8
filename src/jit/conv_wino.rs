//! Winograd F(2×2, 3×3) for f32 3×3 stride-1 convolutions: the forward step and the input
//! gradient, with 16 `gemm`s per block of tiles instead of one over an im2col tile.
//!
//! # Why
//! A 3×3 convolution computes each 2×2 block of outputs from a 4×4 block of inputs. Direct
//! (im2col + `gemm`) that is 36 multiply-adds per (input, output) channel pair; Winograd's
//! F(2×2, 3×3) transforms the 4×4 input tile (`V = Bᵀ·d·B`) and the filter (`U = G·g·Gᵀ`)
//! so that 16 suffice, then transforms the 16 products back (`Y = Aᵀ·M·A`). Summed over the
//! input channels, the 16 elementwise products become 16 matrix products
//! `M[ξ] = V[ξ]·U[ξ]` (`[tiles, Cin]·[Cin, Cout]`), which run on `gemm` at its full rate:
//! 2.25× fewer FLOPs (about 1.9× on MNIST's 11×11 outputs, whose tiles cover 12×12).
//! `gemm` already runs the direct path near this CPU's peak, so doing fewer FLOPs is what is
//! left (oneDNN and cuDNN choose Winograd for these shapes too).
//!
//! # The plan
//! [`Plan::new`] takes a forward or input-gradient convolution with a 3×3 window, unit
//! strides and dilations, one group and f32 operands, if enough channels make the 16
//! products worth their transforms ([`MIN_CHANNELS`]) and the ragged edge wastes little
//! ([`MIN_GAIN`]). `KILN_WINOGRAD=0` turns it off (A/B comparisons, and tests that want the
//! direct path), `KILN_WINOGRAD=1` takes every convolution of that form whatever its
//! channels (tests). f64 keeps the direct path: finite-difference checks want its exact sums.
//!
//! Both kinds are one computation: a 3×3 correlation `out[r, c] = Σ in[r + i + off, c + j +
//! off] · f[i, j]` with zeros outside `in`. The forward step reads `x` with `off = −pad`; the
//! input gradient is the full correlation of `dY` with the filter rotated 180° and its
//! channels swapped (`off = pad − 2`, which can be negative or crop), as the transposed
//! convolution always is.
//!
//! # Running
//! The filter changes every training step, so `U` (`16·Cin·Cout` floats) is computed at the
//! start of every run, into scratch. Output tiles (2×2, numbered image by image, row by
//! row) are cut into blocks of `Plan::block` tiles, fixed by the shapes so that a block's
//! `V` and `M` (`16·block·(Cin + Cout)` floats) stay in L2. Per block: the input transform
//! writes `V`, 16 `gemm`s write `M`, the output transform writes the block's output pixels
//! (clipping the ragged edge). Blocks write disjoint pixels, and threads take whole blocks
//! with a buffer each, so every output element is computed by the same operations in the
//! same order at any thread count (invariant 13); one block at a time lets `gemm` split its
//! own products, which does not change its bits either.
//!
//! # Accuracy and non-finite inputs
//! Results are not bitwise the direct path's (the transforms reassociate), and the error
//! grows a little with the inputs' spread within a tile; `tests/conv_winograd.rs` measures
//! it against an f64 reference. The transforms subtract neighbouring pixels, so an infinite
//! input becomes NaN in outputs where the direct sum would give ±∞, as in cuDNN and oneDNN.

mod transform;

use crate::dtype::DType;
use crate::graph::op::{ConvGeom, ConvKind};

/// Fewer input or output channels than this leave the transforms' cost (about `16·(Cin +
/// Cout)` additions and stores per tile, against `16·Cin·Cout` multiply-adds) too large a
/// share. Measured (`benches/cnn/winograd.rs`, interleaved with `KILN_WINOGRAD=0` in one
/// run): on a loaded machine MNIST's conv2 forward (32→64; transforms 2.4 ms beside 3.1 ms
/// of products) looked 10–20% faster, but on a quiet one (2026-12-01, load ~1) the convnet's
/// inference was 0.89× at 1 thread and 0.93× at 2 with it, so 32 channels do not pay;
/// 64→64 at 56×56 gained 1.2–1.7× over im2col.
const MIN_CHANNELS: usize = 64;
/// The direct multiplies per Winograd multiply (`9·forward output pixels / (16·tiles)`)
/// must reach this. MNIST's conv2 input gradient (a 13×13 output: 49 tiles for 121 forward
/// pixels, 1.39) measured no faster than im2col (input transform 2.6 ms, products 4.0 ms,
/// output 0.8 ms); its forward (1.89) and `same`-padded even sizes (2.25) pay.
const MIN_GAIN: f64 = 1.5;
/// Bytes of `V` and `M` per block: half of a 1 MiB L2, so that `gemm`'s packed panels fit
/// beside them (a quarter of it, 16 tiles of 64→64, made the products 2.4× slower: `gemm`
/// is inefficient on so few rows; four times it changed nothing measurable).
const BLOCK_BUDGET: usize = 512 << 10;
/// At most this many blocks run at once (each needs its own `V` and `M`), as im2col's lanes.
const MAX_LANES: usize = 4;

/// A planned Winograd convolution, in terms of the correlation it computes (see the module
/// docs): `input` `[n, in_hw, cin]` into `out` `[n, out_hw, cout]`.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    n: usize,
    in_hw: [usize; 2],
    cin: usize,
    out_hw: [usize; 2],
    cout: usize,
    /// Input row (column) of tile row `ty`'s first tap: `2·ty + off`.
    off: [isize; 2],
    /// The input gradient: the filter is read rotated, its channels swapped.
    grad: bool,
    /// Tiles per image along each axis.
    tiles_hw: [usize; 2],
    /// Tiles per block.
    block: usize,
    /// Blocks that may run at once.
    lanes: usize,
}

/// What `KILN_WINOGRAD` asks for: `Some(false)` never, `Some(true)` whenever the form allows,
/// `None` by the plan's rule.
fn setting() -> Option<bool> {
    match std::env::var("KILN_WINOGRAD").as_deref() {
        Ok("0") => Some(false),
        Ok("1") => Some(true),
        _ => None,
    }
}

impl Plan {
    /// The Winograd plan of convolution `kind` over `geo` in `dtype`, or `None` when the
    /// direct path runs it (see the module docs for the rule).
    pub(super) fn new(kind: ConvKind, geo: &ConvGeom, dtype: DType) -> Option<Plan> {
        let w = &geo.window;
        let form = dtype == DType::F32
            && geo.groups == 1
            && w.kernel == [3, 3]
            && w.strides == [1, 1]
            && w.dilations == [1, 1]
            && geo.n > 0;
        let force = setting();
        if !form || force == Some(false) {
            return None;
        }
        let pad = w.pad_lo.map(|p| p as isize);
        let (in_hw, cin, out_hw, cout, off, grad) = match kind {
            ConvKind::Forward => (geo.in_hw, geo.c, geo.out_hw, geo.o, pad.map(|p| -p), false),
            ConvKind::InputGrad { .. } => (
                geo.out_hw,
                geo.o,
                geo.in_hw,
                geo.c,
                pad.map(|p| p - 2),
                true,
            ),
            ConvKind::FilterGrad => return None,
        };
        let tiles_hw = out_hw.map(|s| s.div_ceil(2));
        let tiles = tiles_hw[0] * tiles_hw[1];
        // The direct path multiplies 9 taps per forward output pixel, whichever kind.
        let gain = (9 * geo.out_pixels()) as f64 / (16 * tiles).max(1) as f64;
        let worth = cin >= MIN_CHANNELS && cout >= MIN_CHANNELS && gain >= MIN_GAIN;
        if force != Some(true) && !worth {
            return None;
        }
        let total = geo.n * tiles;
        let per_tile = 16 * (cin + cout) * 4;
        let block = (BLOCK_BUDGET / per_tile).clamp(8, 512);
        // Two blocks at least, so that two threads share the work.
        let block = block.min(total.div_ceil(2)).max(1);
        let lanes = total.div_ceil(block).clamp(1, MAX_LANES);
        Some(Plan {
            n: geo.n,
            in_hw,
            cin,
            out_hw,
            cout,
            off,
            grad,
            tiles_hw,
            block,
            lanes,
        })
    }

    fn u_len(&self) -> usize {
        16 * self.cin * self.cout
    }

    /// The zero row read in the padding: `cin` floats, rounded up to 64 bytes.
    fn zero_len(&self) -> usize {
        self.cin.next_multiple_of(16)
    }

    fn v_len(&self) -> usize {
        16 * self.block * self.cin
    }

    fn m_len(&self) -> usize {
        16 * self.block * self.cout
    }

    fn lane_len(&self) -> usize {
        (self.v_len() + self.m_len()).next_multiple_of(16)
    }

    /// The scratch bytes the step uses: `U`, the zero row, and each lane's `V` and `M`.
    pub(super) fn scratch_bytes(&self) -> usize {
        (self.u_len().next_multiple_of(16) + self.zero_len() + self.lanes * self.lane_len()) * 4
    }

    fn tiles(&self) -> usize {
        self.n * self.tiles_hw[0] * self.tiles_hw[1]
    }

    fn blocks(&self) -> usize {
        self.tiles().div_ceil(self.block)
    }
}

/// Runs `plan`: `a` is the correlation's input (`x`, or `dY` for the input gradient), `w`
/// the forward filter `[3, 3, C, O]`, `out` the output (`y`, or `dX`).
///
/// # Safety
/// `a`, `w` and `out` hold the plan's f32 operands and output (`compile` checked the
/// geometry against their types), `out` overlaps neither operand, and `scratch` holds
/// [`Plan::scratch_bytes`], 64-byte aligned, this step's own for the call.
pub(super) unsafe fn run(
    plan: &Plan,
    a: *const u8,
    w: *const u8,
    out: *mut u8,
    scratch: *mut u8,
    threads: usize,
) {
    let s = scratch as *mut f32;
    let (ul, zl) = (plan.u_len().next_multiple_of(16), plan.zero_len());
    // SAFETY: scratch holds `U`, the zero row and the lanes, in that order, disjoint.
    let (u, zero) = unsafe {
        (
            std::slice::from_raw_parts_mut(s, plan.u_len()),
            std::slice::from_raw_parts_mut(s.add(ul), zl),
        )
    };
    zero.fill(0.0);
    let (cin, cout) = (plan.cin, plan.cout);
    // SAFETY: the filter `[3, 3, C, O]` holds `9·cin·cout` floats (C·O is cin·cout either way).
    let wv = unsafe { std::slice::from_raw_parts(w as *const f32, 9 * cin * cout) };
    if plan.grad {
        // `f[i, j][o → c] = w[2 − i, 2 − j, c, o]`: this correlation's input channels are
        // the forward's outputs (`cin = O`), its outputs the forward's inputs (`cout = C`).
        transform::filter(
            wv,
            (cin, cout),
            |t, i, j| (8 - t) * cout * cin + j * cin + i,
            u,
        );
    } else {
        transform::filter(wv, (cin, cout), |t, i, j| t * cin * cout + i * cout + j, u);
    }
    let ctx = Ctx {
        plan,
        a: a as usize,
        out: out as usize,
        u: u.as_ptr() as usize,
        zero: zero.as_ptr() as usize,
        lanes: s.wrapping_add(ul + zl) as usize,
        fast: transform::avx2(),
    };
    let blocks = plan.blocks();
    let workers = blocks.min(threads).min(plan.lanes).max(1);
    let gemm_threads = if workers == 1 { threads } else { 1 };
    // Whole blocks are taken in turn; which worker takes a block changes no bit of it.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = |wk: usize| loop {
        let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if b >= blocks {
            break;
        }
        // SAFETY: worker `wk < lanes` alone uses lane `wk`, and block `b`'s output pixels
        // are this call's alone (tiles partition the output).
        unsafe { ctx.block(b, wk, gemm_threads) };
    };
    // SAFETY: workers write disjoint lanes and disjoint output tiles.
    unsafe { super::exec::on_pool(workers, &work) };
}

/// One run's buffers as addresses (shared by the pool's workers).
struct Ctx<'a> {
    plan: &'a Plan,
    a: usize,
    out: usize,
    u: usize,
    zero: usize,
    lanes: usize,
    fast: bool,
}

impl Ctx<'_> {
    /// Block `b` on lane `lane`: input transform, 16 products, output transform.
    ///
    /// # Safety
    /// `run`'s contract; no other call uses lane `lane` or block `b` at the same time.
    unsafe fn block(&self, b: usize, lane: usize, threads: usize) {
        let pl = self.plan;
        let (cin, cout) = (pl.cin, pl.cout);
        let (t0, t1) = (b * pl.block, ((b + 1) * pl.block).min(pl.tiles()));
        let v = (self.lanes as *mut f32).wrapping_add(lane * pl.lane_len());
        let m = v.wrapping_add(pl.v_len());
        let (vp, mp) = (pl.block * cin, pl.block * cout);
        for t in t0..t1 {
            let src = self.sources(t);
            // SAFETY: row `t − t0` of each of `V`'s 16 planes (`block·cin` floats apart).
            unsafe { transform::input_tile(self.fast, &src, cin, v.add((t - t0) * cin), vp) };
        }
        let u = self.u as *const f32;
        for x in 0..16 {
            // SAFETY: `M[x] = V[x]·U[x]`: `[t1 − t0, cin]·[cin, cout]`, all inside their
            // planes of this lane and of `U`; `M` is disjoint from both.
            unsafe {
                super::conv::mm(
                    (t1 - t0, cout, cin),
                    (m.add(x * mp), cout as isize),
                    false,
                    (v.add(x * vp), cin as isize, 1),
                    (u.add(x * cin * cout), cout as isize, 1),
                    threads,
                )
            };
        }
        for t in t0..t1 {
            let dst = self.targets(t);
            // SAFETY: row `t − t0` of `M`'s planes; the tile's own output pixels.
            unsafe { transform::output_tile(self.fast, m.add((t - t0) * cout), mp, cout, &dst) };
        }
    }

    /// Tile `t`'s 4×4 input pixels (the zero row in the padding).
    fn sources(&self, t: usize) -> [*const f32; 16] {
        let pl = self.plan;
        let (n, ty, tx) = self.tile(t);
        let [h, w] = pl.in_hw.map(|s| s as isize);
        let (r0, c0) = (2 * ty as isize + pl.off[0], 2 * tx as isize + pl.off[1]);
        let image = (self.a as *const f32).wrapping_add(n * pl.in_hw[0] * pl.in_hw[1] * pl.cin);
        std::array::from_fn(|k| {
            let (r, c) = (r0 + (k / 4) as isize, c0 + (k % 4) as isize);
            if (0..h).contains(&r) && (0..w).contains(&c) {
                image.wrapping_add((r * w + c) as usize * pl.cin)
            } else {
                self.zero as *const f32
            }
        })
    }

    /// Tile `t`'s 2×2 output pixels (`None` past the ragged edge).
    fn targets(&self, t: usize) -> [Option<*mut f32>; 4] {
        let pl = self.plan;
        let (n, ty, tx) = self.tile(t);
        let [h, w] = pl.out_hw;
        let image = (self.out as *mut f32).wrapping_add(n * h * w * pl.cout);
        std::array::from_fn(|k| {
            let (r, c) = (2 * ty + k / 2, 2 * tx + k % 2);
            (r < h && c < w).then(|| image.wrapping_add((r * w + c) * pl.cout))
        })
    }

    /// Tile `t` as (image, tile row, tile column).
    fn tile(&self, t: usize) -> (usize, usize, usize) {
        let [th, tw] = self.plan.tiles_hw;
        (t / (th * tw), t / tw % th, t % tw)
    }
}
