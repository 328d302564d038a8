//! One expression body, at one point or four lanes: loads (plain, broadcast, or guarded by
//! a pad's bounds), selects among a concat's operands, binary ops and casts; and whether a
//! body can run four lanes at a time. Split from `codegen.rs`, whose docs describe the loops
//! around it.

use super::{cl_type, flags, le, CoreSrc, Gen, RowPrep};
use crate::dtype::DType;
use crate::graph::op::BinaryOp;
use crate::kernel::{row_major_strides, Body, Core, Expr, Kernel};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32X4, I16, I32, I32X4, I64, I8};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};

impl Gen<'_, '_> {
    // ---------------------------------------------------------------- bodies

    /// Per row: for each load, its element offset at the row's start, its splatted value if
    /// it is a broadcast in vector mode, and whether its bounds on the outer axes hold; for
    /// each select on an outer axis, the row's index on that axis.
    pub(super) fn prepare_loads(
        &mut self,
        _k: &Kernel,
        body: &Body,
        idx: &[Value],
        vec_ok: bool,
    ) -> Vec<Option<RowPrep>> {
        let rank = body.domain.len();
        body.exprs
            .iter()
            .map(|(e, dt)| match e {
                Expr::Load { param, map } => {
                    let base = self.base_offset(map.offset, &map.strides, idx);
                    let inner_stride = if rank > 0 { map.strides[rank - 1] } else { 0 };
                    let splat = if vec_ok && inner_stride == 0 && rank > 0 {
                        let p = self.params[*param as usize];
                        let a = self.addr(p, base, dt.size_bytes());
                        let s = self.b.ins().load(cl_type(*dt), flags(), a, 0);
                        Some(if *dt == DType::Bool {
                            // A lane mask, as `fcmp` makes: all ones where true.
                            let t = self.b.ins().icmp_imm_s(IntCC::NotEqual, s, 0);
                            let t = self.b.ins().uextend(I32, t);
                            let m = self.b.ins().ineg(t);
                            self.b.ins().splat(I32X4, m)
                        } else {
                            self.b.ins().splat(F32X4, s)
                        })
                    } else {
                        None
                    };
                    let mut row = None;
                    for bd in map.bounds.iter().filter(|bd| bd.axis + 1 < rank) {
                        let c = self.in_range(idx[bd.axis], bd.lo, bd.hi);
                        row = Some(match row {
                            Some(r) => self.b.ins().band(r, c),
                            None => c,
                        });
                    }
                    Some(RowPrep { base, splat, row })
                }
                Expr::Select { axis, .. } if axis + 1 < rank => Some(RowPrep {
                    base: idx[*axis],
                    splat: None,
                    row: Some(idx[*axis]),
                }),
                _ => None,
            })
            .collect()
    }

    /// `lo <= i < hi`, as a Cranelift bool.
    fn in_range(&mut self, i: Value, lo: usize, hi: usize) -> Value {
        let a = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, i, lo as i64);
        let b = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, i, hi as i64);
        self.b.ins().band(a, b)
    }

    /// The zero of a dtype (`+0.0` for floats).
    pub(super) fn zero(&mut self, dt: DType) -> Value {
        match dt {
            DType::F32 => self.b.ins().f32const(0.0f32),
            DType::F64 => self.b.ins().f64const(0.0f64),
            DType::I32 => self.b.ins().iconst(I32, 0),
            DType::Bool | DType::I8 | DType::U8 => self.b.ins().iconst(I8, 0),
            DType::I64 => self.b.ins().iconst(I64, 0),
            DType::F16 | DType::BF16 => self.b.ins().iconst(I16, 0),
        }
    }

    /// A load with bounds, one element: where the bounds hold it reads `off`, elsewhere it
    /// reads the first element of its region (in bounds: [`Kernel::validate`] checked the
    /// region's corners) and yields zero instead. Branch-free; the value is selected, so its
    /// bits are copied exactly.
    #[allow(clippy::too_many_arguments)]
    fn guarded_load(
        &mut self,
        p: Value,
        map: &crate::kernel::IndexMap,
        domain: &[usize],
        row: Option<Value>,
        off: Value,
        i: Option<Value>,
        dt: DType,
    ) -> Value {
        let Some(region) = map.region(domain) else {
            return self.zero(dt);
        };
        let rank = domain.len();
        let mut ok = row;
        if let (Some(i), Some(bd)) = (i, map.bounds.iter().find(|bd| bd.axis + 1 == rank)) {
            let c = self.in_range(i, bd.lo, bd.hi);
            ok = Some(match ok {
                Some(r) => self.b.ins().band(r, c),
                None => c,
            });
        }
        let Some(ok) = ok else {
            return self.load(p, off, dt, 1, false);
        };
        let first: isize = map.offset
            + region
                .iter()
                .zip(&map.strides)
                .map(|(&(lo, _), &s)| (lo * s) as isize)
                .sum::<isize>();
        let first = self.b.ins().iconst(I64, first as i64);
        let safe = self.b.ins().select(ok, off, first);
        let v = self.load(p, safe, dt, 1, false);
        let z = self.zero(dt);
        self.b.ins().select(ok, v, z)
    }

    /// Evaluates `body` at inner index `i` (None for a rank-0 domain) with `lanes` lanes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn eval_body(
        &mut self,
        _k: &Kernel,
        body: &Body,
        loads: &[Option<RowPrep>],
        i: Option<Value>,
        lanes: u8,
        core: Option<CoreSrc>,
        obase: Value,
    ) -> Value {
        let mut vals: Vec<Value> = Vec::with_capacity(body.exprs.len());
        for j in 0..body.exprs.len() {
            let v = self.eval_expr(body, j, loads, i, lanes, core, obase, &vals);
            vals.push(v);
        }
        *vals.last().expect("non-empty body")
    }

    /// Expression `j` of `body` at inner index `i` with `lanes` lanes, its operands' values
    /// taken from `vals` (indexed by expression).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn eval_expr(
        &mut self,
        body: &Body,
        j: usize,
        loads: &[Option<RowPrep>],
        i: Option<Value>,
        lanes: u8,
        core: Option<CoreSrc>,
        obase: Value,
        vals: &[Value],
    ) -> Value {
        let rank = body.domain.len();
        let (e, dt) = &body.exprs[j];
        match e {
            Expr::Load { param, map } => {
                let prep = loads[j].expect("prepared");
                let base = prep.base;
                if let Some(s) = prep.splat {
                    if lanes == 4 {
                        return s;
                    }
                }
                let inner_stride = if rank > 0 { map.strides[rank - 1] } else { 0 };
                let off = match i {
                    Some(i) if inner_stride != 0 => {
                        let t = self.b.ins().imul_imm_s(i, inner_stride as i64);
                        self.b.ins().iadd(base, t)
                    }
                    _ => base,
                };
                let p = self.params[*param as usize];
                if map.bounds.is_empty() {
                    self.load(p, off, *dt, lanes, inner_stride == 0)
                } else {
                    // Guarded loads are scalar (`vectorizable`).
                    self.guarded_load(p, map, &body.domain, prep.row, off, i, *dt)
                }
            }
            Expr::Select {
                axis,
                bounds,
                parts,
            } => {
                // Scalar only (`vectorizable`): the inner index, or the row's.
                let pos = if axis + 1 == rank {
                    i.expect("an inner index")
                } else {
                    loads[j].and_then(|p| p.row).expect("prepared")
                };
                let mut v = self.zero(*dt);
                for (k, &part) in parts.iter().enumerate() {
                    let c = self.in_range(pos, bounds[k], bounds[k + 1]);
                    v = self.b.ins().select(c, vals[part as usize], v);
                }
                v
            }
            Expr::Core => {
                let src = core.expect("core source");
                let off = match i {
                    Some(i) => self.b.ins().iadd(obase, i),
                    None => obase,
                };
                let v = self.load(src.ptr, off, src.dtype, lanes, false);
                if src.dtype != *dt {
                    self.cast(v, src.dtype, *dt)
                } else {
                    v
                }
            }
            Expr::Const(bits) => {
                let x = f64::from_bits(*bits);
                let s = match dt {
                    DType::F32 => self.b.ins().f32const(x as f32),
                    DType::F64 => self.b.ins().f64const(x),
                    DType::I32 => self.b.ins().iconst(I32, x as i32 as i64),
                    DType::Bool => self.b.ins().iconst(I8, (x != 0.0) as i64),
                    DType::I8 | DType::U8 => self.b.ins().iconst(I8, x as i64),
                    // The interpreter's slot of an i64 holds its bits, a half's its bits as
                    // an integer (`src/cast.rs`), as `Expr::Const` does.
                    DType::I64 => self.b.ins().iconst(I64, crate::cast::slot_i64(x)),
                    DType::F16 | DType::BF16 => {
                        self.b.ins().iconst(I16, crate::cast::slot_half(x) as i64)
                    }
                };
                if lanes == 4 {
                    self.b.ins().splat(F32X4, s)
                } else {
                    s
                }
            }
            Expr::Unary(u, a) => self.unary(*u, *dt, vals[*a as usize]),
            Expr::Binary(op, a, c) => {
                let in_dt = body.exprs[*a as usize].1;
                self.binary(*op, in_dt, vals[*a as usize], vals[*c as usize], lanes)
            }
            Expr::Where(c, a, d) => {
                let (c, a, d) = (vals[*c as usize], vals[*a as usize], vals[*d as usize]);
                if lanes == 4 {
                    let m = self.b.ins().bitcast(F32X4, le(), c);
                    self.b.ins().bitselect(m, a, d)
                } else {
                    self.b.ins().select(c, a, d)
                }
            }
            Expr::Cast(a) => {
                let from = body.exprs[*a as usize].1;
                let x = vals[*a as usize];
                if lanes == 4 {
                    // Only bool masks to f32 reach here (see `vectorizable`).
                    let m = self.b.ins().bitcast(F32X4, le(), x);
                    let one = self.b.ins().f32const(1.0f32);
                    let one = self.b.ins().splat(F32X4, one);
                    self.b.ins().band(m, one)
                } else {
                    self.cast(x, from, *dt)
                }
            }
        }
    }

    pub(super) fn load(
        &mut self,
        base: Value,
        off: Value,
        dt: DType,
        lanes: u8,
        splat: bool,
    ) -> Value {
        let a = self.addr(base, off, dt.size_bytes());
        if lanes == 4 {
            if splat {
                let s = self.b.ins().load(cl_type(dt), flags(), a, 0);
                return self.b.ins().splat(F32X4, s);
            }
            return self.b.ins().load(F32X4, flags(), a, 0);
        }
        self.b.ins().load(cl_type(dt), flags(), a, 0)
    }

    pub(super) fn binary(
        &mut self,
        op: BinaryOp,
        dt: DType,
        a: Value,
        c: Value,
        lanes: u8,
    ) -> Value {
        use BinaryOp as B;
        if dt.is_float() {
            let fcc = |op: B| match op {
                B::Eq => FloatCC::Equal,
                B::Ne => FloatCC::NotEqual,
                B::Lt => FloatCC::LessThan,
                B::Le => FloatCC::LessThanOrEqual,
                B::Gt => FloatCC::GreaterThan,
                B::Ge => FloatCC::GreaterThanOrEqual,
                // Only called for the comparisons (the arm below).
                B::Add | B::Sub | B::Mul | B::Div | B::Pow | B::Rem | B::Max | B::Min => {
                    unreachable!("{} is not a comparison", op.name())
                }
            };
            return match op {
                B::Add => self.b.ins().fadd(a, c),
                B::Sub => self.b.ins().fsub(a, c),
                B::Mul => self.b.ins().fmul(a, c),
                B::Div => self.b.ins().fdiv(a, c),
                B::Max => self.b.ins().fmax(a, c),
                B::Min => self.b.ins().fmin(a, c),
                B::Pow => {
                    let f = if dt == DType::F64 {
                        self.helpers.pow_f64
                    } else {
                        self.helpers.pow_f32
                    };
                    self.call_helper(f, &[a, c])
                }
                B::Rem => {
                    let f = if dt == DType::F64 {
                        self.helpers.rem_f64
                    } else {
                        self.helpers.rem_f32
                    };
                    self.call_helper(f, &[a, c])
                }
                B::Eq | B::Ne | B::Lt | B::Le | B::Gt | B::Ge => {
                    // A bool scalar, or an i32x4 lane mask when lanes == 4.
                    let _ = lanes;
                    self.b.ins().fcmp(fcc(op), a, c)
                }
            };
        }
        let icc = |op: B| match op {
            B::Eq => IntCC::Equal,
            B::Ne => IntCC::NotEqual,
            B::Lt => IntCC::SignedLessThan,
            B::Le => IntCC::SignedLessThanOrEqual,
            B::Gt => IntCC::SignedGreaterThan,
            B::Ge => IntCC::SignedGreaterThanOrEqual,
            // Only called for the comparisons (the last arm below).
            B::Add | B::Sub | B::Mul | B::Div | B::Pow | B::Rem | B::Max | B::Min => {
                unreachable!("{} is not a comparison", op.name())
            }
        };
        match op {
            B::Add => self.b.ins().iadd(a, c),
            B::Sub => self.b.ins().isub(a, c),
            B::Mul => self.b.ins().imul(a, c),
            B::Max => self.b.ins().smax(a, c),
            B::Min => self.b.ins().smin(a, c),
            B::Pow => {
                let f = self.helpers.pow_i32;
                self.call_helper(f, &[a, c])
            }
            B::Div => self.int_div(a, c),
            // Float-only: the shape rule refuses integer operands.
            B::Rem => unreachable!("rem on integers is refused by its shape rule"),
            B::Eq | B::Ne | B::Lt | B::Le | B::Gt | B::Ge => self.b.ins().icmp(icc(op), a, c),
        }
    }

    /// Truncating i32 or i64 division that wraps `MIN / -1` and flags division by zero in
    /// `status` instead of trapping (the interpreter reports it as an error, so must we).
    fn int_div(&mut self, a: Value, c: Value) -> Value {
        let zero = self.b.ins().icmp_imm_s(IntCC::Equal, c, 0);
        let minus1 = self.b.ins().icmp_imm_s(IntCC::Equal, c, -1);
        let bad = self.b.ins().bor(zero, minus1);
        let ty = self.b.func.dfg.value_type(c);
        let one = self.b.ins().iconst(ty, 1);
        let safe = self.b.ins().select(bad, one, c);
        let q = self.b.ins().sdiv(a, safe);
        let neg = self.b.ins().ineg(a);
        let q = self.b.ins().select(minus1, neg, q);
        // status |= (c == 0)
        let z32 = self.b.ins().uextend(I32, zero);
        let old = self
            .b
            .ins()
            .load(I32, MemFlagsData::trusted(), self.status, 0);
        let new = self.b.ins().bor(old, z32);
        self.b
            .ins()
            .store(MemFlagsData::trusted(), new, self.status, 0);
        q
    }

    /// `x` of dtype `from` as `to`: `convert.rs`.
    pub(super) fn cast(&mut self, x: Value, from: DType, to: DType) -> Value {
        self.convert(x, from, to)
    }
}

/// True if `body` can run 4 lanes at a time (see the module docs).
pub(super) fn vectorizable(k: &Kernel, body: &Body, core: Option<CoreSrc>) -> bool {
    let rank = body.domain.len();
    if rank == 0 || body.exprs.is_empty() {
        return false;
    }
    if body.exprs.last().map(|e| e.1) != Some(DType::F32) {
        return false;
    }
    body.exprs.iter().all(|(e, dt)| match e {
        Expr::Load { map, .. } if !map.bounds.is_empty() => false,
        Expr::Select { .. } => false,
        Expr::Load { param, map } => {
            let stride = map.strides[rank - 1];
            match (*dt, k.params[*param as usize].dtype) {
                (DType::F32, DType::F32) => matches!(stride, 0 | 1),
                // A row-invariant flag (dropout's `training`): one mask per row. Bools only
                // reach `where` and casts, which take masks (a comparison of bools is not
                // vectorized: its operands are not f32).
                (DType::Bool, DType::Bool) => stride == 0,
                _ => false,
            }
        }
        Expr::Core => *dt == DType::F32 && core.is_some_and(|c| c.dtype == DType::F32),
        Expr::Const(_) => *dt == DType::F32,
        Expr::Unary(u, _) => *dt == DType::F32 && u.props().vectorizable,
        Expr::Binary(op, a, _) => {
            body.exprs[*a as usize].1 == DType::F32 && op.props().vectorizable
        }
        Expr::Where(_, a, _) => body.exprs[*a as usize].1 == DType::F32,
        Expr::Cast(a) => *dt == DType::F32 && body.exprs[*a as usize].1 == DType::Bool,
    })
}

/// The loop order of an elementwise kernel, when it is not the domain's: a body that cannot
/// run four lanes at a time in row-major order but can with an outer axis `a` innermost (a
/// transpose: its loads walk their parameters contiguously along `a`) loops with `a` moved
/// last. Returns that body (domain, strides and bound axes permuted) and the output's
/// strides in its order; the points, and what is computed at each, are the same.
pub(super) fn loop_order(k: &Kernel) -> Option<(Body, Vec<usize>)> {
    let body = &k.epilogue;
    let rank = body.domain.len();
    if !matches!(k.core, Core::None) || rank < 2 || vectorizable(k, body, None) {
        return None;
    }
    let out = row_major_strides(&body.domain);
    (0..rank - 1).rev().find_map(|a| {
        let order: Vec<usize> = (0..rank).filter(|&d| d != a).chain([a]).collect();
        let b = permuted(body, &order);
        vectorizable(k, &b, None).then(|| (b, order.iter().map(|&d| out[d]).collect()))
    })
}

/// `body` with its loop axes in `order` (new axis `i` is old axis `order[i]`).
fn permuted(body: &Body, order: &[usize]) -> Body {
    let mut pos = vec![0; order.len()];
    for (i, &d) in order.iter().enumerate() {
        pos[d] = i;
    }
    let exprs = body
        .exprs
        .iter()
        .map(|(e, dt)| {
            let e = match e {
                Expr::Load { param, map } => {
                    let mut map = map.clone();
                    map.strides = order.iter().map(|&d| map.strides[d]).collect();
                    for b in &mut map.bounds {
                        b.axis = pos[b.axis];
                    }
                    Expr::Load { param: *param, map }
                }
                Expr::Select {
                    axis,
                    bounds,
                    parts,
                } => Expr::Select {
                    axis: pos[*axis],
                    bounds: bounds.clone(),
                    parts: parts.clone(),
                },
                other => other.clone(),
            };
            (e, *dt)
        })
        .collect();
    Body {
        domain: order.iter().map(|&d| body.domain[d]).collect(),
        exprs,
    }
}
