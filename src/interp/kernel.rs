//! Fused kernels, expression by expression with the same per-op rounding as the unfused
//! graph, so a program evaluates to the same bits before and after fusion (the oracle for
//! the JIT's kernels and for the fusion pass).

use super::eval::{binary, cast, reduce_identity, reduce_step, round, unary_of};
use super::{Precision, Value};
use crate::dtype::DType;
use crate::kernel::{Body, Core, Expr, Kernel};
use crate::view::for_each_index;

/// Evaluates one body at `point`, with `core` the core's value there.
fn eval_body(
    body: &Body,
    point: &[usize],
    params: &[&Value],
    core: f64,
    prec: Precision,
    scratch: &mut Vec<f64>,
) -> std::result::Result<f64, String> {
    scratch.clear();
    for (e, dt) in &body.exprs {
        let v = |i: &u32| scratch[*i as usize];
        let x = match e {
            Expr::Load { param, map } => map
                .at(point)
                .map_or(0.0, |e| params[*param as usize].data[e]),
            Expr::Select {
                axis,
                bounds,
                parts,
            } => {
                let i = point[*axis];
                (0..parts.len())
                    .find(|&k| bounds[k] <= i && i < bounds[k + 1])
                    .map_or(0.0, |k| scratch[parts[k] as usize])
            }
            Expr::Core => core,
            Expr::Const(bits) => f64::from_bits(*bits),
            Expr::Unary(u, a) => round(*dt, prec, unary_of(*u, *dt, v(a))),
            Expr::Binary(b, a, c) => {
                let in_dt = body.exprs[*a as usize].1;
                round(*dt, prec, binary(*b, in_dt, v(a), v(c))?)
            }
            Expr::Where(c, a, b) => {
                if v(c) != 0.0 {
                    v(a)
                } else {
                    v(b)
                }
            }
            Expr::Cast(a) => cast(body.exprs[*a as usize].1, *dt, prec, v(a)),
        };
        scratch.push(x);
    }
    Ok(*scratch.last().unwrap_or(&0.0))
}

/// A fused kernel, op by op with the same rounding as the unfused graph.
pub(super) fn eval_kernel(
    k: &Kernel,
    params: &[&Value],
    dt: DType,
    prec: Precision,
) -> std::result::Result<Vec<f64>, String> {
    let mut scratch = vec![];
    let mut out = vec![];
    match &k.core {
        Core::None => {
            let mut err = None;
            for_each_index(&k.epilogue.domain, |p| {
                match eval_body(&k.epilogue, p, params, 0.0, prec, &mut scratch) {
                    Ok(v) => out.push(v),
                    Err(e) => err = Some(e),
                }
            });
            err.map_or(Ok(()), Err)?;
        }
        Core::Reduce { op, axes } => {
            let dom = &k.prologue.domain;
            let keep = k.epilogue.domain.len() == dom.len();
            let red_shape: Vec<usize> = axes.iter().map(|&a| dom[a]).collect();
            let kept: Vec<usize> = (0..dom.len()).filter(|a| !axes.contains(a)).collect();
            let acc_dt = k.prologue.exprs.last().map_or(dt, |e| e.1);
            let mut err = None;
            let mut scratch2 = vec![];
            for_each_index(&k.epilogue.domain, |op_pt| {
                let mut pt = vec![0usize; dom.len()];
                for (j, &a) in kept.iter().enumerate() {
                    pt[a] = if keep { op_pt[a] } else { op_pt[j] };
                }
                let mut acc = reduce_identity(*op, acc_dt);
                let mut step = |pt: &[usize]| match eval_body(
                    &k.prologue,
                    pt,
                    params,
                    0.0,
                    prec,
                    &mut scratch,
                ) {
                    Ok(v) => acc = reduce_step(*op, acc_dt, acc, v),
                    Err(e) => err = Some(e),
                };
                if red_shape.is_empty() {
                    step(&pt);
                } else {
                    for_each_index(&red_shape, |r| {
                        for (i, &a) in axes.iter().enumerate() {
                            pt[a] = r[i];
                        }
                        step(&pt);
                    });
                }
                let core = round(acc_dt, prec, acc);
                match eval_body(&k.epilogue, op_pt, params, core, prec, &mut scratch2) {
                    Ok(v) => out.push(v),
                    Err(e) => err = Some(e),
                }
            });
            err.map_or(Ok(()), Err)?;
        }
        Core::MatMul {
            a,
            b,
            batch,
            m,
            k: kk,
            n,
        } => {
            let read = |op: &crate::kernel::MatOperand, bi: &[usize], r: usize, c: usize| {
                let mut o = op.offset;
                for (i, &x) in bi.iter().enumerate() {
                    o += x * op.strides[i];
                }
                let nb = bi.len();
                o += r * op.strides[nb] + c * op.strides[nb + 1];
                params[op.param as usize].data[o]
            };
            let mut c = vec![];
            for_each_index(batch, |bi| {
                for i in 0..*m {
                    for j in 0..*n {
                        // -0.0, the identity of IEEE sums: a product of zeros keeps its
                        // sign. An empty sum (k = 0) is +0, as gemm's.
                        let mut acc = if *kk == 0 { 0.0 } else { -0.0 };
                        for x in 0..*kk {
                            acc += read(a, bi, i, x) * read(b, bi, x, j);
                        }
                        c.push(round(dt, prec, acc));
                    }
                }
            });
            let mut err = None;
            let mut idx = 0;
            for_each_index(&k.epilogue.domain, |p| {
                match eval_body(&k.epilogue, p, params, c[idx], prec, &mut scratch) {
                    Ok(v) => out.push(v),
                    Err(e) => err = Some(e),
                }
                idx += 1;
            });
            err.map_or(Ok(()), Err)?;
        }
    }
    Ok(out)
}
