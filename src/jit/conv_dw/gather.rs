//! The forward and input-gradient kernels: each destination pixel gathers its taps, so an
//! image's pixels are independent and a block of them accumulates in registers.
//!
//! - Forward: `y[oh, ow]` sums `x[oh·s − pad + kh·d, ow·s − pad + kw·d] · w[kh, kw]` over the
//!   taps in increasing order, a tap in the padding reading a zero.
//! - Input gradient: `dx[ih, iw]` sums `dy[oh, ow] · w[kh, kw]` over the taps that reach it
//!   (`ih = oh·s − pad + kh·d`), taps in *decreasing* order: the order in which the forward
//!   loops (output pixels in order, taps in order within each) meet `ih`, so every sum adds
//!   the same products in the same order as the scatter loops did.
//!
//! An image is walked in two phases: every border pixel (some tap may be outside; tested
//! at run time, as `emit.rs` describes), then the interior, class by class
//! ([`super::plan::Class`]: for the input gradient with a stride, the positions with one
//! residue share their taps), `P` pixels of a row at a time.

use super::emit::{Em, Outside, SrcRef};
use super::plan::{Axis, AxisPlan, Seg};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value};

/// A planned forward or input-gradient kernel.
pub(super) struct Gather {
    pub rows: AxisPlan,
    pub cols: AxisPlan,
    pub axes: [Axis; 2],
    /// Forward (else input gradient).
    pub fwd: bool,
    pub dest_hw: [usize; 2],
    pub src_hw: [usize; 2],
    /// Bytes per pixel of the destination and the source.
    pub dest_pix: i64,
    pub src_pix: i64,
    /// Bytes per filter tap (`O` elements).
    pub w_tap: i64,
    pub segs: Vec<Seg>,
    /// Pixels per interior block.
    pub p: usize,
}

/// The buffers and the image range of one call.
#[derive(Clone, Copy)]
pub(super) struct Args {
    pub src: Value,
    pub w: Value,
    pub dest: Value,
    pub lo: Value,
    pub hi: Value,
}

impl Gather {
    fn taps(&self) -> Vec<(usize, usize)> {
        let [kh, kw] = [self.axes[0].k, self.axes[1].k];
        let mut v: Vec<(usize, usize)> =
            (0..kh).flat_map(|h| (0..kw).map(move |w| (h, w))).collect();
        if !self.fwd {
            v.reverse();
        }
        v
    }

    /// Images `[lo, hi)`.
    pub(super) fn emit(&self, em: &mut Em, a: Args) {
        let src_img = (self.src_hw[0] * self.src_hw[1]) as i64 * self.src_pix;
        let dest_img = (self.dest_hw[0] * self.dest_hw[1]) as i64 * self.dest_pix;
        em.for_vals((a.lo, a.hi, 1), &[], &mut |em, n, _| {
            let simg = em.offset(a.src, n, src_img);
            let dimg = em.offset(a.dest, n, dest_img);
            self.border(em, simg, dimg, a.w);
            self.interior(em, simg, dimg, a.w);
            vec![]
        });
    }

    /// Every pixel outside the interior rectangle: all of a border row, the border columns
    /// of an interior row.
    fn border(&self, em: &mut Em, simg: Value, dimg: Value, w: Value) {
        let [hd, wd] = self.dest_hw.map(|v| v as i64);
        let (rlo, rhi) = (self.rows.lo as i64, self.rows.hi as i64);
        let (clo, chi) = (self.cols.lo as i64, self.cols.hi as i64);
        let edge = clo + wd - chi;
        em.for_const(0, hd, &mut |em, r| {
            let lo = em.iconst(rlo);
            let hi = em.iconst(rhi);
            let ge = em.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, r, lo);
            let lt = em.lt(r, hi);
            let inner = em.b.ins().band(ge, lt);
            let (e, all) = (em.iconst(edge), em.iconst(wd));
            let ncols = em.b.ins().select(inner, e, all);
            let zero = em.iconst(0);
            em.for_vals((zero, ncols, 1), &[], &mut |em, c, _| {
                let cl = em.iconst(clo);
                let right = em.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, c, cl);
                let skip = em.b.ins().band(inner, right);
                let shifted = em.b.ins().iadd_imm_s(c, chi - clo);
                let c = em.b.ins().select(skip, shifted, c);
                self.border_pixel(em, (simg, dimg, w), r, c);
                vec![]
            });
        });
    }

    /// Source position and inside-ness of destination `v` along axis `a` at tap `t`.
    fn map(&self, em: &mut Em, a: usize, v: Value, t: usize) -> (Value, Value) {
        let ax = self.axes[a];
        let n_src = em.iconst(self.src_hw[a] as i64);
        let (s, d, pad) = (ax.s as i64, ax.d as i64, ax.pad as i64);
        if self.fwd {
            let sv = em.b.ins().imul_imm_s(v, s);
            let sv = em.b.ins().iadd_imm_s(sv, t as i64 * d - pad);
            let ok = em.b.ins().icmp(IntCC::UnsignedLessThan, sv, n_src);
            return (sv, ok);
        }
        // `v + pad − t·d` below zero wraps to a huge unsigned value: out of range either way.
        let tt = em.b.ins().iadd_imm_s(v, pad - t as i64 * d);
        if s == 1 {
            let ok = em.b.ins().icmp(IntCC::UnsignedLessThan, tt, n_src);
            return (tt, ok);
        }
        let sc = em.iconst(s);
        let sv = em.b.ins().udiv(tt, sc);
        let back = em.b.ins().imul_imm_s(sv, s);
        let exact = em.b.ins().icmp(IntCC::Equal, back, tt);
        let inside = em.b.ins().icmp(IntCC::UnsignedLessThan, sv, n_src);
        (sv, em.b.ins().band(exact, inside))
    }

    /// One border pixel `(r, c)`: every tap, tested at run time.
    fn border_pixel(
        &self,
        em: &mut Em,
        (simg, dimg, w): (Value, Value, Value),
        r: Value,
        c: Value,
    ) {
        let row_bytes = self.src_hw[1] as i64 * self.src_pix;
        let rows: Vec<(Value, Value)> = (0..self.axes[0].k)
            .map(|t| {
                let (sv, ok) = self.map(em, 0, r, t);
                (em.b.ins().imul_imm_s(sv, row_bytes), ok)
            })
            .collect();
        let cols: Vec<(Value, Value)> = (0..self.axes[1].k)
            .map(|t| {
                let (sv, ok) = self.map(em, 1, c, t);
                (em.b.ins().imul_imm_s(sv, self.src_pix), ok)
            })
            .collect();
        let taps = self.taps();
        let srcs: Vec<SrcRef> = taps
            .iter()
            .map(|&(h, wi)| {
                let ok = em.b.ins().band(rows[h].1, cols[wi].1);
                let off = em.b.ins().iadd(rows[h].0, cols[wi].0);
                let at = em.b.ins().iadd(simg, off);
                SrcRef {
                    base: em.b.ins().select(ok, at, simg),
                    imm: 0,
                    valid: Some(ok),
                }
            })
            .collect();
        let w_imm: Vec<i64> = taps
            .iter()
            .map(|&(h, wi)| (h * self.axes[1].k + wi) as i64 * self.w_tap)
            .collect();
        let wd = self.dest_hw[1] as i64;
        let rr = em.b.ins().imul_imm_s(r, wd);
        let px = em.b.ins().iadd(rr, c);
        let dest = em.offset(dimg, px, self.dest_pix);
        let outside = if self.fwd {
            Outside::ZeroSrc
        } else {
            Outside::Skip
        };
        em.block(&self.segs, &[(dest, 0)], &[srcs], (w, &w_imm), outside);
    }

    /// The interior: for each pair of row and column classes, its rows, `P` pixels at a
    /// time, then the row's remaining pixels one by one.
    fn interior(&self, em: &mut Em, simg: Value, dimg: Value, w: Value) {
        let (ws, wd) = (self.src_hw[1] as i64, self.dest_hw[1] as i64);
        let (sp, dp) = (self.src_pix, self.dest_pix);
        for rc in &self.rows.classes {
            for cc in &self.cols.classes {
                if rc.count == 0 || cc.count == 0 {
                    continue;
                }
                let mut taps = vec![];
                for &(h, ar) in &rc.taps {
                    for &(wi, ac) in &cc.taps {
                        let tap = (h * self.axes[1].k + wi) as i64;
                        taps.push(((ar * ws + ac) * sp, tap * self.w_tap));
                    }
                }
                let w_imm: Vec<i64> = taps.iter().map(|t| t.1).collect();
                let d0 = ((rc.start as i64) * wd + cc.start as i64) * dp;
                let p = self.p.min(cc.count);
                let (blocks, rest) = ((cc.count / p) as i64, cc.count % p);
                let (dstep, sstep) = (cc.step as i64 * dp, cc.src_step as i64 * sp);
                em.for_const(0, rc.count as i64, &mut |em, k| {
                    let drow = em.b.ins().iadd_imm_s(dimg, d0);
                    let drow = em.offset(drow, k, rc.step as i64 * wd * dp);
                    let srow = em.offset(simg, k, rc.src_step as i64 * ws * sp);
                    let run = |em: &mut Em, d: Value, s: Value, np: usize| {
                        let dests: Vec<(Value, i64)> =
                            (0..np).map(|q| (d, q as i64 * dstep)).collect();
                        let srcs: Vec<Vec<SrcRef>> = (0..np)
                            .map(|q| {
                                taps.iter()
                                    .map(|&(imm, _)| SrcRef {
                                        base: s,
                                        imm: imm + q as i64 * sstep,
                                        valid: None,
                                    })
                                    .collect()
                            })
                            .collect();
                        em.block(&self.segs, &dests, &srcs, (w, &w_imm), Outside::Skip);
                    };
                    em.for_const(0, blocks, &mut |em, b| {
                        let d = em.offset(drow, b, p as i64 * dstep);
                        let s = em.offset(srow, b, p as i64 * sstep);
                        run(em, d, s, p);
                    });
                    for q in 0..rest {
                        let at = blocks * p as i64 + q as i64;
                        let d = em.b.ins().iadd_imm_s(drow, at * dstep);
                        let s = em.b.ins().iadd_imm_s(srow, at * sstep);
                        run(em, d, s, 1);
                    }
                });
            }
        }
    }
}
