//! The filter-gradient kernel: `dw[tap, c·m + j] += x[pixel at tap, c] · dy[pixel, c·m + j]`
//! over the call's images, every element summing its pixels in order (image, output row,
//! output column), as the scalar loops did.
//!
//! For each run of pixels of an output row and each chunk of channels, a group of taps'
//! accumulators is loaded from `dw` into registers, the run's pixels are added into them one
//! by one, and they are stored back: the same additions in the same order as updating
//! memory each time. A pixel is
//! interior (every tap inside: no test) or border (taps tested at run time; a tap in the
//! padding reads a zero that is multiplied, as im2col does).

use super::emit::Em;
use super::plan::{Axis, AxisPlan, Group, Seg};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{BlockArg, InstBuilder, Value};

/// Accumulators kept in registers at once (taps × items of a chunk).
const MAX_ACCS: usize = 12;
/// Pixels of a row per run: every chunk of channels walks the run before the next run, so
/// the run's input pixels (`RUN × KH` of them) stay in L1 across the chunks, and each
/// chunk's accumulators are loaded and stored once per run. Runs start at the interior's
/// first column, so only the border columns take the tested code.
const RUN: i64 = 8;

/// A planned filter-gradient kernel.
pub(super) struct Filter {
    pub rows: AxisPlan,
    pub cols: AxisPlan,
    pub axes: [Axis; 2],
    /// Bytes per pixel of `x` and of `dy`, and per tap of `dw`.
    pub x_pix: i64,
    pub dy_pix: i64,
    pub w_tap: i64,
    pub segs: Vec<Seg>,
}

/// One output row's per-tap-row source parts.
struct Row {
    /// `x`'s image base.
    ximg: Value,
    /// Interior pixels' row base: `ximg + (oh·s − pad)·W·pixel`.
    xrow: Value,
    /// Per kernel row: byte offset of its input row (border pixels) and whether it is inside.
    kh: Vec<(Value, Value)>,
    /// This row's `dy` base.
    dyrow: Value,
    /// Whether the row is interior.
    inner: Value,
}

impl Filter {
    /// Images `[lo, hi)` of `x` and `dy` summed into `dw`.
    pub(super) fn emit(
        &self,
        em: &mut Em,
        (x, dy, dw, lo, hi): (Value, Value, Value, Value, Value),
    ) {
        let [ax_h, ax_w] = self.axes;
        let x_img = (ax_h.inp * ax_w.inp) as i64 * self.x_pix;
        let dy_img = (ax_h.out * ax_w.out) as i64 * self.dy_pix;
        let x_row = ax_w.inp as i64 * self.x_pix;
        em.for_vals((lo, hi, 1), &[], &mut |em, n, _| {
            let ximg = em.offset(x, n, x_img);
            let dyimg = em.offset(dy, n, dy_img);
            em.for_const(0, ax_h.out as i64, &mut |em, oh| {
                let top = em.b.ins().imul_imm_s(oh, ax_h.s as i64);
                let top = em.b.ins().iadd_imm_s(top, -(ax_h.pad as i64));
                let xrow = em.offset(ximg, top, x_row);
                let n_h = em.iconst(ax_h.inp as i64);
                let kh = (0..ax_h.k)
                    .map(|t| {
                        let r = em.b.ins().iadd_imm_s(top, (t * ax_h.d) as i64);
                        let ok = em.b.ins().icmp(IntCC::UnsignedLessThan, r, n_h);
                        (em.b.ins().imul_imm_s(r, x_row), ok)
                    })
                    .collect();
                let (rlo, rhi) = (
                    em.iconst(self.rows.lo as i64),
                    em.iconst(self.rows.hi as i64),
                );
                let ge = em.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, oh, rlo);
                let lt = em.lt(oh, rhi);
                let row = Row {
                    ximg,
                    xrow,
                    kh,
                    dyrow: em.offset(dyimg, oh, ax_w.out as i64 * self.dy_pix),
                    inner: em.b.ins().band(ge, lt),
                };
                // Runs: the left border columns, the interior in runs of `RUN`, the right
                // border columns (the same for every row: only the row's own test varies).
                let (clo, chi, ow_n) = (self.cols.lo as i64, self.cols.hi as i64, ax_w.out as i64);
                let run = |em: &mut Em, ow0: Value, len: i64, inner: bool| {
                    let ow1 = em.b.ins().iadd_imm_s(ow0, len);
                    for seg in &self.segs {
                        em.for_const(0, seg.count as i64, &mut |em, k| {
                            let offs = em.seg_offsets(seg, k);
                            self.chunk(em, &row, seg.g, offs, dw, (ow0, ow1, inner));
                        });
                    }
                };
                if clo > 0 {
                    let at = em.iconst(0);
                    run(em, at, clo, false);
                }
                let full = (chi - clo) / RUN;
                em.for_const(0, full, &mut |em, k| {
                    let at = em.b.ins().imul_imm_s(k, RUN);
                    let at = em.b.ins().iadd_imm_s(at, clo);
                    run(em, at, RUN, true);
                });
                if (chi - clo) % RUN > 0 {
                    let at = em.iconst(clo + full * RUN);
                    run(em, at, (chi - clo) % RUN, true);
                }
                if chi < ow_n {
                    let at = em.iconst(chi);
                    run(em, at, ow_n - chi, false);
                }
            });
            vec![]
        });
    }

    /// One chunk of channels over the pixels `[ow0, ow1)` of one row, its taps in groups
    /// that fit the registers.
    fn chunk(
        &self,
        em: &mut Em,
        row: &Row,
        g: Group,
        [d_off, x_off, dy_off]: [Value; 3],
        dw: Value,
        (ow0, ow1, cols_inner): (Value, Value, bool),
    ) {
        let taps = self.axes[0].k * self.axes[1].k;
        let per = (MAX_ACCS / g.accs().max(1)).max(1);
        let vector = g.vector();
        let ib = em.item_bytes(vector);
        let dwc = em.b.ins().iadd(dw, d_off);
        for t0 in (0..taps).step_by(per) {
            let group: Vec<usize> = (t0..(t0 + per).min(taps)).collect();
            let mut accs = vec![];
            for &t in &group {
                for i in 0..g.accs() {
                    accs.push(em.load_rw(vector, dwc, t as i64 * self.w_tap + i as i64 * ib));
                }
            }
            // A run of interior columns in an interior row takes the untested code; any
            // other the tested code.
            let walk = |em: &mut Em, interior: bool, accs: &[Value]| {
                em.for_vals((ow0, ow1, 1), accs, &mut |em, ow, accs| {
                    self.pixel(em, row, g, (x_off, dy_off), &group, (ow, interior), accs)
                })
            };
            let accs = if cols_inner {
                let (fast, slow, join) = (
                    em.b.create_block(),
                    em.b.create_block(),
                    em.b.create_block(),
                );
                for &v in &accs {
                    let t = em.b.func.dfg.value_type(v);
                    em.b.append_block_param(join, t);
                }
                em.b.ins().brif(row.inner, fast, &[], slow, &[]);
                for (blk, interior) in [(fast, true), (slow, false)] {
                    em.b.switch_to_block(blk);
                    let out = walk(em, interior, &accs);
                    let args: Vec<BlockArg> = out.into_iter().map(BlockArg::Value).collect();
                    em.b.ins().jump(join, &args);
                }
                em.b.switch_to_block(join);
                em.b.block_params(join).to_vec()
            } else {
                walk(em, false, &accs)
            };
            let mut it = accs.into_iter();
            for &t in &group {
                for i in 0..g.accs() {
                    let v = it.next().expect("one accumulator per tap and item");
                    em.store(v, dwc, t as i64 * self.w_tap + i as i64 * ib);
                }
            }
        }
    }

    /// Adds pixel `ow` of the row into the accumulators of `group`'s taps: by the interior
    /// code (no tests) or the border code.
    #[allow(clippy::too_many_arguments)]
    fn pixel(
        &self,
        em: &mut Em,
        row: &Row,
        g: Group,
        (x_off, dy_off): (Value, Value),
        group: &[usize],
        (ow, interior): (Value, bool),
        accs: &[Value],
    ) -> Vec<Value> {
        let ax_w = self.axes[1];
        let kw_n = ax_w.k;
        let dy = em.offset(row.dyrow, ow, self.dy_pix);
        let dy = em.b.ins().iadd(dy, dy_off);
        {
            // (address, imm, inside) of each tap's `x` (None: known inside).
            let srcs: Vec<(Value, i64, Option<Value>)> = if interior {
                let col = em.b.ins().imul_imm_s(ow, (ax_w.s as i64) * self.x_pix);
                let col = em.b.ins().iadd_imm_s(col, -(ax_w.pad as i64) * self.x_pix);
                let at = em.b.ins().iadd(row.xrow, col);
                let at = em.b.ins().iadd(at, x_off);
                let row_b = ax_w.inp as i64 * self.x_pix;
                group
                    .iter()
                    .map(|&t| {
                        let (h, w) = ((t / kw_n) as i64, (t % kw_n) as i64);
                        let imm =
                            h * self.axes[0].d as i64 * row_b + w * ax_w.d as i64 * self.x_pix;
                        (at, imm, None)
                    })
                    .collect()
            } else {
                let n_w = em.iconst(ax_w.inp as i64);
                let left = em.b.ins().imul_imm_s(ow, ax_w.s as i64);
                group
                    .iter()
                    .map(|&t| {
                        let (h, w) = (t / kw_n, t % kw_n);
                        let iw =
                            em.b.ins()
                                .iadd_imm_s(left, (w * ax_w.d) as i64 - ax_w.pad as i64);
                        let okw = em.b.ins().icmp(IntCC::UnsignedLessThan, iw, n_w);
                        let ok = em.b.ins().band(okw, row.kh[h].1);
                        let off = em.b.ins().imul_imm_s(iw, self.x_pix);
                        let off = em.b.ins().iadd(off, row.kh[h].0);
                        let at = em.b.ins().iadd(row.ximg, off);
                        let at = em.b.ins().select(ok, at, row.ximg);
                        (em.b.ins().iadd(at, x_off), 0, Some(ok))
                    })
                    .collect()
            };
            self.add_taps(em, g, dy, &srcs, accs)
        }
    }

    /// `acc[t][i] += x(t, i) · dy(i)` for one pixel, taps in order.
    fn add_taps(
        &self,
        em: &mut Em,
        g: Group,
        dy: Value,
        srcs: &[(Value, i64, Option<Value>)],
        accs: &[Value],
    ) -> Vec<Value> {
        let vector = g.vector();
        let ib = em.item_bytes(vector);
        let items = g.accs();
        let ds: Vec<Value> = (0..items)
            .map(|i| em.load(vector, dy, i as i64 * ib))
            .collect();
        let mut out = Vec::with_capacity(accs.len());
        for (ti, &(at, imm, ok)) in srcs.iter().enumerate() {
            let shared = match g {
                Group::Shared { .. } => {
                    let x = em.load(false, at, imm);
                    let x = em.or_zero(ok, x, false);
                    Some(if vector {
                        em.b.ins().splat(em.vec, x)
                    } else {
                        x
                    })
                }
                _ => None,
            };
            for (i, &d) in ds.iter().enumerate() {
                let x = match shared {
                    Some(x) => x,
                    None => {
                        let x = em.load(vector, at, imm + i as i64 * ib);
                        em.or_zero(ok, x, vector)
                    }
                };
                let prod = em.b.ins().fmul(x, d);
                out.push(em.b.ins().fadd(accs[ti * items + i], prod));
            }
        }
        out
    }
}
