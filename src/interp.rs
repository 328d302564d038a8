//! The reference interpreter: the oracle that the JIT and every pass are tested against.
//!
//! It is written to be obviously right rather than fast. Every value is held as `f64`
//! elements with a dtype and a concrete shape, and every op is a few lines over those:
//!
//! - **Floats compute in `f64`.** In [`Precision::F32`] mode each `f32`-typed result is
//!   rounded to `f32` right after its op. For `+ - * /` and `sqrt` that equals native `f32`
//!   arithmetic exactly (an `f64` result rounded to `f32` is the correctly rounded `f32`
//!   result: double rounding is innocuous when the wide format has more than `2p+2` bits);
//!   `exp`, `log`, `tanh` and `sigmoid` come out correctly rounded, which is what an
//!   approximation in the JIT is measured against. Sums and matrix products accumulate in
//!   `f64` and round once at the end.
//! - In [`Precision::F64`] mode nothing is rounded and `f32` nodes come out as `f64` arrays:
//!   this is what finite-difference gradient checks use.
//! - Integers compute exactly in `i64` and wrap to `i32`; integer division truncates toward
//!   zero, and division by zero is an error naming the op and its source line.
//! - Random ops draw element `i` of stream `run_index` from [`crate::rng`], so results do not
//!   depend on evaluation order.
//!
//! Fused kernels (made by the optimizer) are evaluated expression by expression with the same
//! per-op rounding, so a graph evaluates to bitwise the same values before and after fusion.

use crate::array::Array;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::op::props::ieee_max;
use crate::graph::op::{BinaryOp, Op, RandomDist, ReduceOp, UnaryOp};
use crate::graph::{Graph, GraphData, Node, NodeId, Tensor};
use crate::kernel::{Body, Core, Expr, Kernel, Kernels};
use crate::rng;
use crate::shape::Dim;
use std::collections::{HashMap, HashSet};

/// The arithmetic the interpreter uses for `f32` nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// Round every `f32` result to `f32` (the semantics of the graph).
    #[default]
    F32,
    /// Keep `f32` nodes in `f64` (for precise gradient checks).
    F64,
}

/// A value during evaluation.
#[derive(Clone, Debug)]
struct Value {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<f64>,
}

/// Rounds `x` to what a value of `dtype` holds under `prec`.
#[inline]
pub(crate) fn round(dtype: DType, prec: Precision, x: f64) -> f64 {
    match (dtype, prec) {
        (DType::F32, Precision::F32) => x as f32 as f64,
        _ => x,
    }
}

/// One unary op on an `f64`: its reference semantics, [`UnaryOp::props`]' `f64`.
pub(crate) fn unary(op: UnaryOp, x: f64) -> f64 {
    (op.props().f64)(x)
}

/// One binary op on operands of dtype `dt`; `Err` only for integer division by zero.
pub(crate) fn binary(op: BinaryOp, dt: DType, a: f64, b: f64) -> std::result::Result<f64, String> {
    if dt == DType::I32 {
        let (x, y) = (a as i64, b as i64);
        let r = match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div if y == 0 => return Err("integer division by zero".into()),
            BinaryOp::Div => x / y,
            BinaryOp::Max => x.max(y),
            BinaryOp::Min => x.min(y),
            BinaryOp::Pow => (a.powf(b)) as i64,
            // i32 values are exact in f64, so the float comparison is the integer one.
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge => return Ok((op.props().f64)(a, b)),
        };
        return Ok(r as i32 as f64);
    }
    Ok((op.props().f64)(a, b))
}

/// Converts a value to `to` (floats to integers truncate toward zero and saturate, NaN → 0).
pub(crate) fn cast(to: DType, prec: Precision, x: f64) -> f64 {
    match to {
        DType::F32 | DType::F64 => round(to, prec, x),
        DType::I32 => {
            if x.is_nan() {
                0.0
            } else {
                // `+ 0.0` turns a truncated -0.0 into the integer 0.
                x.trunc().clamp(i32::MIN as f64, i32::MAX as f64) + 0.0
            }
        }
        DType::Bool => {
            if x != 0.0 {
                1.0
            } else {
                0.0
            }
        }
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    crate::kernel::row_major_strides(shape)
}

/// Calls `f` with every multi-index of `shape` in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    loop {
        f(&idx);
        let mut k = shape.len();
        loop {
            if k == 0 {
                return;
            }
            k -= 1;
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// Evaluates `fetches` of `d`. `vars` holds variable values (missing ones are an error);
/// `run_index` selects the random stream. A fused node is an error here: its kernel is in its
/// program's table, see [`evaluate_lowered`].
pub fn evaluate(
    d: &GraphData,
    fetches: &[NodeId],
    feeds: &[(NodeId, Array)],
    vars: &HashMap<NodeId, Array>,
    precision: Precision,
    run_index: u64,
) -> Result<Vec<Array>> {
    let none = Kernels::new();
    evaluate_lowered(d, &none, fetches, feeds, vars, precision, run_index)
}

/// [`evaluate`] of a lowered program: `kernels` is its kernel table (`Program::kernels`),
/// which its fused nodes name.
pub fn evaluate_lowered(
    d: &GraphData,
    kernels: &Kernels,
    fetches: &[NodeId],
    feeds: &[(NodeId, Array)],
    vars: &HashMap<NodeId, Array>,
    precision: Precision,
    run_index: u64,
) -> Result<Vec<Array>> {
    d.check()?;
    for &f in fetches {
        if d.get(f).is_none() {
            return Err(Error::Feed("a fetched tensor is not in this graph".into()));
        }
    }
    let fed: HashMap<NodeId, &Array> = feeds.iter().map(|(i, a)| (*i, a)).collect();
    // Roots of evaluation stop at fed nodes: they are not computed.
    let order = order_with_feeds(d, fetches, &fed);
    let batch = check_feeds(d, &order, &fed, precision)?;
    let mut vals: HashMap<NodeId, Value> = HashMap::with_capacity(order.len());
    for &id in &order {
        let n = d.node(id);
        let shape: Vec<usize> = match batch {
            Some(b) => n.ty.shape.resolve(b),
            None => match n.ty.shape.to_fixed() {
                Some(s) => s,
                None => {
                    return Err(Error::Feed(format!(
                        "cannot tell the batch size for {} {}: no fed placeholder has an open dimension",
                        n.ty,
                        n.label()
                    )))
                }
            },
        };
        let v = if let Some(a) = fed.get(&id) {
            Value {
                dtype: n.ty.dtype,
                shape,
                data: a.to_f64_vec(),
            }
        } else {
            let ins: Vec<&Value> = n.inputs.iter().map(|i| &vals[i]).collect();
            eval_node(n, id, &ins, shape, vars, kernels, precision, run_index)?
        };
        vals.insert(id, v);
    }
    Ok(fetches
        .iter()
        .map(|f| {
            let v = &vals[f];
            let dt = match (v.dtype, precision) {
                (DType::F32, Precision::F64) => DType::F64,
                (d, _) => d,
            };
            Array::from_f64(dt, v.shape.clone(), v.data.clone())
        })
        .collect())
}

pub(crate) fn order_with_feeds(
    d: &GraphData,
    fetches: &[NodeId],
    fed: &HashMap<NodeId, &Array>,
) -> Vec<NodeId> {
    let mut seen = HashSet::new();
    let mut out = vec![];
    let mut stack: Vec<(NodeId, usize)> = vec![];
    for &r in fetches {
        if !seen.insert(r) {
            continue;
        }
        stack.push((r, 0));
        while let Some((id, i)) = stack.pop() {
            let inputs = if fed.contains_key(&id) {
                &[][..]
            } else {
                &d.node(id).inputs[..]
            };
            if i < inputs.len() {
                stack.push((id, i + 1));
                let c = inputs[i];
                if seen.insert(c) {
                    stack.push((c, 0));
                }
            } else {
                out.push(id);
            }
        }
    }
    out
}

pub(crate) fn check_feeds(
    d: &GraphData,
    order: &[NodeId],
    fed: &HashMap<NodeId, &Array>,
    precision: Precision,
) -> Result<Option<usize>> {
    let missing: Vec<String> = order
        .iter()
        .filter(|&&id| matches!(d.node(id).op, Op::Placeholder) && !fed.contains_key(&id))
        .map(|&id| format!("{} ({})", d.node(id).label(), d.node(id).ty))
        .collect();
    if !missing.is_empty() {
        let s = if missing.len() == 1 { " was" } else { "s were" };
        return Err(Error::Feed(format!(
            "{} placeholder{s} not fed: {}",
            missing.len(),
            missing.join(", ")
        )));
    }
    let mut batch: Option<(usize, String)> = None;
    for (&id, a) in fed {
        let Some(n) = d.get(id) else {
            return Err(Error::Feed("a fed tensor is not in this graph".into()));
        };
        let dtype_ok = a.dtype() == n.ty.dtype
            || (precision == Precision::F64 && n.ty.dtype == DType::F32 && a.dtype() == DType::F64);
        if !dtype_ok {
            return Err(Error::Feed(format!(
                "{} expects {}, but the fed array holds {}",
                n.label(),
                n.ty,
                a.dtype()
            )));
        }
        let dims = n.ty.shape.dims();
        let ok = dims.len() == a.shape().len()
            && dims.iter().zip(a.shape()).all(|(d, &s)| match d {
                Dim::Fixed(k) => *k == s,
                Dim::Batch => true,
            });
        if !ok {
            return Err(Error::Feed(format!(
                "{} expects {}, but the fed array has shape {:?}",
                n.label(),
                n.ty,
                a.shape()
            )));
        }
        if dims.first() == Some(&Dim::Batch) {
            let b = a.shape()[0];
            match &batch {
                Some((b0, who)) if *b0 != b => {
                    return Err(Error::Feed(format!(
                        "feeds disagree on the batch size: {who} has {b0} rows, {} has {b}",
                        n.label()
                    )))
                }
                Some(_) => {}
                None => batch = Some((b, n.label())),
            }
        }
    }
    Ok(batch.map(|(b, _)| b))
}

fn rt(n: &Node, msg: String) -> Error {
    Error::Runtime {
        op: n.op.name().to_string(),
        loc: n.loc.clone(),
        msg,
    }
}

#[allow(clippy::too_many_arguments)] // the run's context, passed down one level
fn eval_node(
    n: &Node,
    id: NodeId,
    ins: &[&Value],
    shape: Vec<usize>,
    vars: &HashMap<NodeId, Array>,
    kernels: &Kernels,
    prec: Precision,
    run_index: u64,
) -> Result<Value> {
    let dt = n.ty.dtype;
    let numel: usize = shape.iter().product();
    let r = |x: f64| round(dt, prec, x);
    let data: Vec<f64> = match &n.op {
        Op::Placeholder => return Err(Error::Feed(format!("{} was not fed", n.label()))),
        Op::Variable { .. } => match vars.get(&id) {
            Some(a) => a.to_f64_vec(),
            None => return Err(Error::Feed(format!("variable {} has no value", n.label()))),
        },
        Op::Constant(c) => c.0.to_f64_vec(),
        Op::Random { dist, seed } => (0..numel as u64)
            .map(|i| match dist {
                RandomDist::Uniform { low, high } => {
                    rng::uniform(*seed, run_index, i, low.0 as f32, high.0 as f32) as f64
                }
                RandomDist::Normal { mean, std } => {
                    let z = rng::standard_normal(*seed, run_index, i);
                    (mean.0 as f32 + std.0 as f32 * z) as f64
                }
            })
            .collect(),
        Op::Unary(u) => ins[0].data.iter().map(|&x| r(unary(*u, x))).collect(),
        Op::Binary(b) => {
            let in_dt = ins[0].dtype;
            let mut out = Vec::with_capacity(numel);
            for (&x, &y) in ins[0].data.iter().zip(&ins[1].data) {
                out.push(r(binary(*b, in_dt, x, y).map_err(|m| rt(n, m))?));
            }
            out
        }
        Op::Where => {
            let (c, a, b) = (&ins[0].data, &ins[1].data, &ins[2].data);
            (0..numel)
                .map(|i| if c[i] != 0.0 { a[i] } else { b[i] })
                .collect()
        }
        Op::Cast(to) => ins[0].data.iter().map(|&x| cast(*to, prec, x)).collect(),
        Op::StopGradient | Op::Reshape => ins[0].data.clone(),
        // The effect itself is applied by the caller after the run (see graph::effects).
        Op::Assign => ins[1].data.clone(),
        Op::Group => vec![1.0],
        Op::Size { axes } => vec![r(
            axes.iter().map(|&a| ins[0].shape[a]).product::<usize>() as f64
        )],
        Op::Reduce { op, axes, .. } => reduce(ins[0], *op, axes, dt, prec),
        Op::Permute(perm) => {
            let x = ins[0];
            let st = strides(&x.shape);
            let mut out = Vec::with_capacity(numel);
            for_each_index(&shape, |idx| {
                let o: usize = idx.iter().zip(perm.iter()).map(|(i, &p)| i * st[p]).sum();
                out.push(x.data[o]);
            });
            out
        }
        Op::BroadcastTo => {
            let x = ins[0];
            let st = strides(&x.shape);
            let shift = shape.len() - x.shape.len();
            let mut out = Vec::with_capacity(numel);
            for_each_index(&shape, |idx| {
                let o: usize = (0..x.shape.len())
                    .map(|j| {
                        if x.shape[j] == 1 {
                            0
                        } else {
                            idx[j + shift] * st[j]
                        }
                    })
                    .sum();
                out.push(x.data[o]);
            });
            out
        }
        Op::Slice { begin } => {
            let x = ins[0];
            let st = strides(&x.shape);
            let mut out = Vec::with_capacity(numel);
            for_each_index(&shape, |idx| {
                let o: usize = idx
                    .iter()
                    .zip(begin)
                    .zip(&st)
                    .map(|((i, b), s)| (i + b) * s)
                    .sum();
                out.push(x.data[o]);
            });
            out
        }
        Op::Pad { lo, .. } => {
            let x = ins[0];
            let st = strides(&x.shape);
            let mut out = Vec::with_capacity(numel);
            for_each_index(&shape, |idx| {
                let mut o = 0;
                let mut inside = true;
                for j in 0..idx.len() {
                    if idx[j] < lo[j] || idx[j] - lo[j] >= x.shape[j] {
                        inside = false;
                        break;
                    }
                    o += (idx[j] - lo[j]) * st[j];
                }
                out.push(if inside { x.data[o] } else { 0.0 });
            });
            out
        }
        Op::Concat { axis } => {
            let mut out = Vec::with_capacity(numel);
            let outer: usize = shape[..*axis].iter().product();
            for o in 0..outer {
                for x in ins {
                    let chunk: usize = x.shape[*axis..].iter().product();
                    out.extend_from_slice(&x.data[o * chunk..(o + 1) * chunk]);
                }
            }
            out
        }
        Op::MatMul => matmul(ins[0], ins[1], &shape, dt, prec),
        Op::Fusion(k) => kernels
            .lookup(*k)
            .and_then(|k| eval_kernel(k, ins, dt, prec))
            .map_err(|m| rt(n, m))?,
    };
    debug_assert_eq!(
        data.len(),
        numel,
        "{} produced the wrong element count",
        n.op.name()
    );
    Ok(Value {
        dtype: dt,
        shape,
        data,
    })
}

/// Sum or max over `axes`, each output element folding its inputs in row-major order.
fn reduce(x: &Value, op: ReduceOp, axes: &[usize], dt: DType, prec: Precision) -> Vec<f64> {
    let kept: Vec<usize> = (0..x.shape.len()).filter(|a| !axes.contains(a)).collect();
    let kept_shape: Vec<usize> = kept.iter().map(|&a| x.shape[a]).collect();
    let red_shape: Vec<usize> = axes.iter().map(|&a| x.shape[a]).collect();
    let st = strides(&x.shape);
    let mut out = vec![];
    for_each_index(&kept_shape, |k| {
        let base: usize = k.iter().zip(&kept).map(|(i, &a)| i * st[a]).sum();
        let mut acc = match op {
            ReduceOp::Sum => 0.0,
            ReduceOp::Max => f64::NEG_INFINITY,
        };
        let mut fold = |v: f64| {
            acc = match op {
                ReduceOp::Sum => acc + v,
                ReduceOp::Max => ieee_max(acc, v),
            }
        };
        if red_shape.is_empty() {
            fold(x.data[base]);
        } else {
            for_each_index(&red_shape, |r| {
                let o: usize = base + r.iter().zip(axes).map(|(i, &a)| i * st[a]).sum::<usize>();
                fold(x.data[o]);
            });
        }
        out.push(round(dt, prec, acc));
    });
    out
}

fn matmul(a: &Value, b: &Value, out_shape: &[usize], dt: DType, prec: Precision) -> Vec<f64> {
    let r = out_shape.len();
    let (m, n) = (out_shape[r - 2], out_shape[r - 1]);
    let k = a.shape[r - 1];
    let batch: usize = out_shape[..r - 2].iter().product();
    let mut out = vec![0.0; batch * m * n];
    let mut acc = vec![0.0f64; n];
    for bi in 0..batch {
        let (ao, bo, co) = (bi * m * k, bi * k * n, bi * m * n);
        for i in 0..m {
            acc.iter_mut().for_each(|x| *x = 0.0);
            for kk in 0..k {
                let av = a.data[ao + i * k + kk];
                let row = &b.data[bo + kk * n..bo + (kk + 1) * n];
                for (c, &bv) in acc.iter_mut().zip(row) {
                    *c += av * bv;
                }
            }
            for j in 0..n {
                out[co + i * n + j] = round(dt, prec, acc[j]);
            }
        }
    }
    out
}

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
            Expr::Load { param, map } => params[*param as usize].data[map.at(point)],
            Expr::Core => core,
            Expr::Const(bits) => f64::from_bits(*bits),
            Expr::Unary(u, a) => round(*dt, prec, unary(*u, v(a))),
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
            Expr::Cast(a) => cast(*dt, prec, v(a)),
        };
        scratch.push(x);
    }
    Ok(*scratch.last().unwrap_or(&0.0))
}

/// A fused kernel, op by op with the same rounding as the unfused graph.
fn eval_kernel(
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
                let mut acc = match op {
                    ReduceOp::Sum => 0.0,
                    ReduceOp::Max => f64::NEG_INFINITY,
                };
                let mut step = |pt: &[usize]| match eval_body(
                    &k.prologue,
                    pt,
                    params,
                    0.0,
                    prec,
                    &mut scratch,
                ) {
                    Ok(v) => {
                        acc = match op {
                            ReduceOp::Sum => acc + v,
                            ReduceOp::Max => ieee_max(acc, v),
                        }
                    }
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
                        let mut acc = 0.0;
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

/// Evaluates graphs: the reference backend. Holds the values of the graph's variables.
///
/// ```
/// use kiln::prelude::*;
/// let g = Graph::new();
/// let x = g.placeholder("x", DType::F32, [None, Some(2)]);
/// let y = (x * 3.0).sum(&[1], false);
/// let mut interp = Interpreter::new(&g).unwrap();
/// let out = interp.run(&[y], &[(x, Array::new([2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap())]).unwrap();
/// assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![9.0, 21.0]);
/// ```
pub struct Interpreter {
    graph: Graph,
    vars: HashMap<NodeId, Array>,
    precision: Precision,
    runs: u64,
}

impl Interpreter {
    /// An interpreter over `g` in `f32` precision, variables initialized from their
    /// initializers.
    pub fn new(g: &Graph) -> Result<Interpreter> {
        Interpreter::with_precision(g, Precision::F32)
    }

    /// An interpreter with the given precision.
    pub fn with_precision(g: &Graph, precision: Precision) -> Result<Interpreter> {
        g.check()?;
        let mut it = Interpreter {
            graph: g.clone(),
            vars: HashMap::new(),
            precision,
            runs: 0,
        };
        it.init_missing();
        Ok(it)
    }

    /// The precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    fn init_missing(&mut self) {
        let d = self.graph.data();
        for id in d.variables() {
            let n = d.node(id);
            if let (Op::Variable { init }, Some(shape)) = (&n.op, n.ty.shape.to_fixed()) {
                self.vars
                    .entry(id)
                    .or_insert_with(|| init.fill(n.ty.dtype, &shape));
            }
        }
    }

    /// Evaluates `fetches` with `feeds`; each call draws fresh random numbers.
    pub fn run(
        &mut self,
        fetches: &[Tensor<'_>],
        feeds: &[(Tensor<'_>, Array)],
    ) -> Result<Vec<Array>> {
        for t in fetches.iter().chain(feeds.iter().map(|(t, _)| t)) {
            if !t.graph().same_as(&self.graph) {
                return Err(Error::Feed(format!("{t:?} belongs to a different graph")));
            }
        }
        let f: Vec<NodeId> = fetches.iter().map(|t| t.id()).collect();
        let fd: Vec<(NodeId, Array)> = feeds.iter().map(|(t, a)| (t.id(), a.clone())).collect();
        self.run_ids(&f, &fd)
    }

    /// [`Interpreter::run`] by node ids.
    pub fn run_ids(&mut self, fetches: &[NodeId], feeds: &[(NodeId, Array)]) -> Result<Vec<Array>> {
        self.graph.check()?;
        self.init_missing();
        let (updates, mut out) = {
            let d = self.graph.data();
            let updates = crate::graph::effects::collect(&d, fetches)?;
            let all = crate::graph::effects::with_updates(fetches, &updates);
            let out = evaluate(&d, &all, feeds, &self.vars, self.precision, self.runs)?;
            (updates, out)
        };
        self.runs += 1;
        let d = self.graph.data();
        for (u, value) in updates.iter().zip(out.drain(fetches.len()..)) {
            // F64 precision hands out f64 arrays; a variable keeps its own dtype.
            let value = value.cast(d.node(u.variable).ty.dtype);
            self.vars.insert(u.variable, value);
        }
        Ok(out)
    }

    /// The current value of a variable.
    pub fn variable(&self, id: NodeId) -> Option<&Array> {
        self.vars.get(&id)
    }

    /// Sets a variable, checking its dtype and shape.
    pub fn set_variable(&mut self, id: NodeId, value: Array) -> Result<()> {
        let d = self.graph.data();
        let n = d
            .get(id)
            .ok_or_else(|| Error::invalid("set_variable: no such node"))?;
        if !matches!(n.op, Op::Variable { .. }) {
            return Err(Error::invalid(format!(
                "set_variable: {} is not a variable",
                n.label()
            )));
        }
        let dtype_ok = value.dtype() == n.ty.dtype
            || (self.precision == Precision::F64
                && n.ty.dtype == DType::F32
                && value.dtype() == DType::F64);
        if !dtype_ok || n.ty.shape.to_fixed().as_deref() != Some(value.shape()) {
            return Err(Error::invalid(format!(
                "set_variable: {} is {}, the value is {}{:?}",
                n.label(),
                n.ty,
                value.dtype(),
                value.shape()
            )));
        }
        drop(d);
        self.vars.insert(id, value);
        Ok(())
    }
}
