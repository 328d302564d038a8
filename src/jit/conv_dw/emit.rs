//! Cranelift building blocks of the depthwise kernels: constant-bound loops, typed loads and
//! stores, and the accumulation of one block of pixels × one chunk of channels over a list
//! of taps ([`Em::block`]), shared by the forward and input-gradient kernels.
//!
//! Every address is a byte offset from a buffer's base that the plan derived from the
//! geometry (`compile::conv_step` checked the buffers' sizes against it): interior taps are
//! in bounds by construction of [`super::plan::AxisPlan`]; a border tap's address is
//! selected to the image's first pixel when the tap is outside, and its value or product
//! selected to zero.

use super::plan::{Group, Seg};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, F64, F64X2, I64};
use cranelift_codegen::ir::{BlockArg, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;

/// What a tap outside the source does (border pixels only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outside {
    /// Reads a zero that is multiplied like any input (`0 · inf` is NaN): the forward
    /// kernel and the filter gradient, as im2col and the interpreter define (fuzz F9).
    ZeroSrc,
    /// Adds nothing: the input gradient has no padding pixel to receive a gradient.
    Skip,
}

/// One tap's source for one pixel: `base + chunk offset + imm`, and whether it is inside
/// (`None`: known inside at compile time).
#[derive(Clone, Copy)]
pub(super) struct SrcRef {
    pub base: Value,
    pub imm: i64,
    pub valid: Option<Value>,
}

/// The function being built, in the step's element type.
pub(super) struct Em<'a, 'b> {
    pub b: &'b mut FunctionBuilder<'a>,
    pub elem: Type,
    pub vec: Type,
    pub size: i64,
}

fn flags() -> MemFlagsData {
    // Buffers are plain `Vec`s: not marked aligned, so a misaligned vector cannot fault.
    MemFlagsData::new().with_notrap()
}

impl<'a, 'b> Em<'a, 'b> {
    pub(super) fn new(b: &'b mut FunctionBuilder<'a>, f64: bool) -> Em<'a, 'b> {
        let (elem, vec, size) = if f64 {
            (F64, F64X2, 8)
        } else {
            (F32, F32X4, 4)
        };
        Em { b, elem, vec, size }
    }

    /// Elements per vector.
    pub(super) fn lanes(&self) -> usize {
        16 / self.size as usize
    }

    pub(super) fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    /// Bytes of one accumulator.
    pub(super) fn item_bytes(&self, vector: bool) -> i64 {
        if vector {
            16
        } else {
            self.size
        }
    }

    pub(super) fn zero(&mut self, vector: bool) -> Value {
        let s = if self.size == 8 {
            self.b.ins().f64const(0.0)
        } else {
            self.b.ins().f32const(0.0)
        };
        if vector {
            self.b.ins().splat(self.vec, s)
        } else {
            s
        }
    }

    /// A load of an operand (`src` or `w`), which the kernel never writes: marked read-only
    /// and movable, so Cranelift places it next to its use. Plain loads stay where they
    /// are emitted, the arithmetic sinks to the stores, and a block's loads all come first:
    /// its 8 accumulators' operands were then spilled (`notes/cranelift.md`, pitfall 5).
    pub(super) fn load(&mut self, vector: bool, addr: Value, imm: i64) -> Value {
        let ty = if vector { self.vec } else { self.elem };
        let f = flags().with_readonly().with_can_move();
        self.b.ins().load(ty, f, addr, imm as i32)
    }

    /// A load of memory the kernel also writes (the filter gradient's accumulators).
    pub(super) fn load_rw(&mut self, vector: bool, addr: Value, imm: i64) -> Value {
        let ty = if vector { self.vec } else { self.elem };
        self.b.ins().load(ty, flags(), addr, imm as i32)
    }

    pub(super) fn store(&mut self, v: Value, addr: Value, imm: i64) {
        self.b.ins().store(flags(), v, addr, imm as i32);
    }

    /// `base + i·scale`.
    pub(super) fn offset(&mut self, base: Value, i: Value, scale: i64) -> Value {
        if scale == 0 {
            return base;
        }
        let t = self.b.ins().imul_imm_s(i, scale);
        self.b.ins().iadd(base, t)
    }

    /// `a < b` as an `i8` mask, signed.
    pub(super) fn lt(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().icmp(IntCC::SignedLessThan, a, b)
    }

    /// `v` when `ok`, else zero of `v`'s type.
    pub(super) fn or_zero(&mut self, ok: Option<Value>, v: Value, vector: bool) -> Value {
        match ok {
            None => v,
            Some(ok) => {
                let z = self.zero(vector);
                self.b.ins().select(ok, v, z)
            }
        }
    }

    /// `for i in (lo..hi).step_by(step)` over run-time bounds, carrying `carry`.
    #[allow(clippy::type_complexity)] // a loop body: (builder, index, carried) -> carried
    pub(super) fn for_vals(
        &mut self,
        (lo, hi, step): (Value, Value, i64),
        carry: &[Value],
        body: &mut dyn FnMut(&mut Self, Value, &[Value]) -> Vec<Value>,
    ) -> Vec<Value> {
        let header = self.b.create_block();
        let body_blk = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, I64);
        for &v in carry {
            let t = self.b.func.dfg.value_type(v);
            self.b.append_block_param(header, t);
            self.b.append_block_param(exit, t);
        }
        let mut args = vec![BlockArg::Value(lo)];
        args.extend(carry.iter().map(|&v| BlockArg::Value(v)));
        self.b.ins().jump(header, &args);
        self.b.switch_to_block(header);
        let ps = self.b.block_params(header).to_vec();
        let c = self.lt(ps[0], hi);
        let exit_args: Vec<BlockArg> = ps[1..].iter().map(|&v| BlockArg::Value(v)).collect();
        self.b.ins().brif(c, body_blk, &[], exit, &exit_args);
        self.b.switch_to_block(body_blk);
        let next = body(self, ps[0], &ps[1..]);
        let i2 = self.b.ins().iadd_imm_s(ps[0], step);
        let mut args = vec![BlockArg::Value(i2)];
        args.extend(next.iter().map(|&v| BlockArg::Value(v)));
        self.b.ins().jump(header, &args);
        self.b.switch_to_block(exit);
        self.b.block_params(exit).to_vec()
    }

    /// `for i in lo..hi` over constant bounds: nothing for an empty range, the body inline
    /// for one iteration, else a loop.
    pub(super) fn for_const(&mut self, lo: i64, hi: i64, body: &mut dyn FnMut(&mut Self, Value)) {
        if lo >= hi {
            return;
        }
        if lo + 1 == hi {
            let i = self.iconst(lo);
            body(self, i);
            return;
        }
        let (l, h) = (self.iconst(lo), self.iconst(hi));
        self.for_vals((l, h, 1), &[], &mut |em, i, _| {
            body(em, i);
            vec![]
        });
    }

    /// One chunk's three channel offsets (bytes) for chunk index `k` of `seg`.
    pub(super) fn seg_offsets(&mut self, seg: &Seg, k: Value) -> [Value; 3] {
        [seg.dest, seg.src, seg.w].map(|(start, step)| {
            let s = self.iconst(start);
            self.offset(s, k, step)
        })
    }

    /// Pixels `dests` (base, imm) accumulate `Σ src · w` over the taps, chunk by chunk of
    /// every segment: `srcs[p][t]` is pixel `p`'s source at tap `t`, `w` the per-tap
    /// operand's base and each tap's imm. Each sum starts from `+0` and adds the taps in
    /// the list's order, one product at a time (so the bits are those of a scalar loop).
    pub(super) fn block(
        &mut self,
        segs: &[Seg],
        dests: &[(Value, i64)],
        srcs: &[Vec<SrcRef>],
        (w, w_imm): (Value, &[i64]),
        outside: Outside,
    ) {
        for seg in segs {
            let n = seg.count as i64;
            self.for_const(0, n, &mut |em, k| {
                let [d_off, s_off, w_off] = em.seg_offsets(seg, k);
                let wb = em.b.ins().iadd(w, w_off);
                let sb: Vec<Vec<SrcRef>> = srcs
                    .iter()
                    .map(|taps| {
                        taps.iter()
                            .map(|s| SrcRef {
                                base: em.b.ins().iadd(s.base, s_off),
                                ..*s
                            })
                            .collect()
                    })
                    .collect();
                let accs = em.chunk(seg.g, &sb, (wb, w_imm), outside);
                let ib = em.item_bytes(seg.g.vector());
                for (p, &(base, imm)) in dests.iter().enumerate() {
                    let a = em.b.ins().iadd(base, d_off);
                    for (i, &v) in accs[p].iter().enumerate() {
                        em.store(v, a, imm + i as i64 * ib);
                    }
                }
            });
        }
    }

    /// The accumulators of one chunk for each pixel (see [`Em::block`]).
    fn chunk(
        &mut self,
        g: Group,
        srcs: &[Vec<SrcRef>],
        (w, w_imm): (Value, &[i64]),
        outside: Outside,
    ) -> Vec<Vec<Value>> {
        let vector = g.vector();
        let ib = self.item_bytes(vector);
        let mut accs: Vec<Vec<Value>> = (0..srcs.len())
            .map(|_| (0..g.accs()).map(|_| self.zero(vector)).collect())
            .collect();
        let per_tap = match g {
            Group::Sum { m } => m,
            _ => g.accs(),
        };
        for (t, &wi) in w_imm.iter().enumerate() {
            let ws: Vec<Value> = (0..per_tap)
                .map(|i| self.load(vector, w, wi + i as i64 * ib))
                .collect();
            for (p, acc) in accs.iter_mut().enumerate() {
                let s = srcs[p][t];
                let zero_src = if outside == Outside::ZeroSrc {
                    s.valid
                } else {
                    None
                };
                let skip = if outside == Outside::Skip {
                    s.valid
                } else {
                    None
                };
                let add = |em: &mut Self, a: Value, x: Value, w: Value| {
                    let prod = em.b.ins().fmul(x, w);
                    let prod = em.or_zero(skip, prod, vector);
                    em.b.ins().fadd(a, prod)
                };
                match g {
                    Group::Plain { .. } => {
                        for (i, a) in acc.iter_mut().enumerate() {
                            let x = self.load(vector, s.base, s.imm + i as i64 * ib);
                            let x = self.or_zero(zero_src, x, vector);
                            *a = add(self, *a, x, ws[i]);
                        }
                    }
                    Group::Shared { .. } => {
                        let x = self.load(false, s.base, s.imm);
                        let x = self.or_zero(zero_src, x, false);
                        let x = if vector {
                            self.b.ins().splat(self.vec, x)
                        } else {
                            x
                        };
                        for (i, a) in acc.iter_mut().enumerate() {
                            *a = add(self, *a, x, ws[i]);
                        }
                    }
                    Group::Sum { m } => {
                        for (j, &wj) in ws.iter().enumerate().take(m) {
                            let x = self.load(false, s.base, s.imm + j as i64 * self.size);
                            let x = self.or_zero(zero_src, x, false);
                            acc[0] = add(self, acc[0], x, wj);
                        }
                    }
                }
            }
        }
        accs
    }
}
