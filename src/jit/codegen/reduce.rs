//! Reductions: accumulators in scratch, the prologue's domain walked in memory order, then
//! the epilogue over the accumulators (see "Reductions" in the docs of `codegen.rs`).

use super::body::vectorizable;
use super::{cl_type, flags, CoreSrc, Gen};
use crate::dtype::DType;
use crate::graph::op::ReduceOp;
use crate::kernel::Kernel;
use cranelift_codegen::ir::types::{F32X4, I64};
use cranelift_codegen::ir::{InstBuilder, Value};

impl Gen<'_, '_> {
    pub(super) fn reduce(&mut self, k: &Kernel, op: ReduceOp, axes: &[usize], split: bool) {
        let pro = &k.prologue;
        let dom = pro.domain.clone();
        let acc_dt = pro.exprs.last().map_or(DType::F32, |e| e.1);
        let size = acc_dt.size_bytes();
        let n_out: usize = k.epilogue.domain.iter().product();
        let acc_ptr = self.scratch;
        // Slot strides: row-major over the kept axes, 0 on the reduced ones.
        let kept: Vec<usize> = (0..dom.len()).filter(|a| !axes.contains(a)).collect();
        let kept_ext: Vec<usize> = kept.iter().map(|&a| dom[a]).collect();
        let kept_rm = crate::kernel::row_major_strides(&kept_ext);
        let mut slot_strides = vec![0usize; dom.len()];
        for (j, &a) in kept.iter().enumerate() {
            slot_strides[a] = kept_rm[j];
        }
        // 1. identity into every slot this call owns (all of them, unless split: then the
        //    slots of its rows, since the first axis is kept).
        let ident = self.identity(op, acc_dt, 1);
        let (s_lo, s_hi) = if split {
            let s0 = slot_strides[0] as i64;
            (
                self.b.ins().imul_imm_s(self.lo, s0),
                self.b.ins().imul_imm_s(self.hi, s0),
            )
        } else {
            (
                self.b.ins().iconst(I64, 0),
                self.b.ins().iconst(I64, n_out as i64),
            )
        };
        self.for_each_v(s_lo, s_hi, 1, &mut |g, i| {
            let a = g.addr(acc_ptr, i, size);
            g.b.ins().store(flags(), ident, a, 0);
        });
        // 2. the prologue's domain, row-major, into the slots.
        let rank = dom.len();
        let inner_reduced = rank > 0 && axes.contains(&(rank - 1));
        let vec_ok = vectorizable(k, pro, None);
        self.rows(&dom, split, &mut |g, idx, lo, hi| {
            let sbase = g.base_offset(0, &slot_strides, idx);
            let loads = g.prepare_loads(k, pro, idx, vec_ok);
            if rank == 0 {
                let v = g.eval_body(k, pro, &loads, None, 1, None, sbase);
                g.accumulate(op, acc_dt, acc_ptr, sbase, v, 1);
                return;
            }
            let vec_end = if vec_ok { g.vec_end(lo, hi) } else { lo };
            if inner_reduced {
                // Carry partial results through the row, then add them into the one slot.
                let mut total = g.identity(op, acc_dt, 1);
                if vec_ok {
                    let init = g.identity(op, acc_dt, 4);
                    let part = g.for_carry(lo, vec_end, 4, &[init], &mut |g, i, cur| {
                        let v = g.eval_body(k, pro, &loads, Some(i), 4, None, sbase);
                        vec![g.combine(op, acc_dt, cur[0], v)]
                    })[0];
                    let lanes: Vec<Value> =
                        (0..4u8).map(|l| g.b.ins().extractlane(part, l)).collect();
                    let x = g.combine(op, acc_dt, lanes[0], lanes[1]);
                    let y = g.combine(op, acc_dt, lanes[2], lanes[3]);
                    total = g.combine(op, acc_dt, x, y);
                }
                let tail = g.for_carry(vec_end, hi, 1, &[total], &mut |g, i, cur| {
                    let v = g.eval_body(k, pro, &loads, Some(i), 1, None, sbase);
                    vec![g.combine(op, acc_dt, cur[0], v)]
                })[0];
                g.accumulate(op, acc_dt, acc_ptr, sbase, tail, 1);
            } else {
                let step = |g: &mut Self, i: Value, lanes: u8| {
                    let v = g.eval_body(k, pro, &loads, Some(i), lanes, None, sbase);
                    let s = g.b.ins().iadd(sbase, i);
                    g.accumulate(op, acc_dt, acc_ptr, s, v, lanes);
                };
                if vec_ok {
                    g.for_each_v(lo, vec_end, 4, &mut |g, i| step(g, i, 4));
                }
                g.for_each_v(vec_end, hi, 1, &mut |g, i| step(g, i, 1));
            }
        });
        // 3. the epilogue over the slots.
        let src = CoreSrc {
            ptr: acc_ptr,
            dtype: acc_dt,
        };
        let out = self.out;
        self.elementwise(k, &k.epilogue, out, Some(src), split);
    }

    fn identity(&mut self, op: ReduceOp, dt: DType, lanes: u8) -> Value {
        let v = match (op, dt) {
            (ReduceOp::Sum, DType::F32) => self.b.ins().f32const(0.0f32),
            (ReduceOp::Max, DType::F32) => self.b.ins().f32const(f32::NEG_INFINITY),
            (ReduceOp::Sum, DType::F64) => self.b.ins().f64const(0.0f64),
            (ReduceOp::Max, DType::F64) => self.b.ins().f64const(f64::NEG_INFINITY),
            (ReduceOp::Sum, _) => self.b.ins().iconst(cl_type(dt), 0),
            (ReduceOp::Max, DType::I64) => self.b.ins().iconst(cl_type(dt), i64::MIN),
            (ReduceOp::Max, _) => self.b.ins().iconst(cl_type(dt), i32::MIN as i64),
        };
        if lanes == 4 {
            self.b.ins().splat(F32X4, v)
        } else {
            v
        }
    }

    fn combine(&mut self, op: ReduceOp, dt: DType, a: Value, v: Value) -> Value {
        match (op, dt.is_float()) {
            (ReduceOp::Sum, true) => self.b.ins().fadd(a, v),
            (ReduceOp::Max, true) => self.b.ins().fmax(a, v),
            (ReduceOp::Sum, false) => self.b.ins().iadd(a, v),
            (ReduceOp::Max, false) => self.b.ins().smax(a, v),
        }
    }

    fn accumulate(
        &mut self,
        op: ReduceOp,
        dt: DType,
        acc: Value,
        slot: Value,
        v: Value,
        lanes: u8,
    ) {
        let a = self.addr(acc, slot, dt.size_bytes());
        let ty = if lanes == 4 { F32X4 } else { cl_type(dt) };
        let cur = self.b.ins().load(ty, flags(), a, 0);
        let new = self.combine(op, dt, cur, v);
        self.b.ins().store(flags(), new, a, 0);
    }
}
