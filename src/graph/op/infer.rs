//! Each primitive's shape rule ([`infer`]): the arity check and one exhaustive `match` that
//! hands each op to the rule of its group (sources, elementwise, reduce, movement,
//! contraction, effects), each a small function below.

use super::{Arg, Axes, BinaryOp, Op, ReduceOp, Ty, UnaryOp};
use crate::dtype::DType;
use crate::shape::{broadcasts_to, Dim, Shape};
use smallvec::SmallVec;

fn need_float(what: &str, d: DType) -> Result<(), String> {
    compute(what, d)?;
    if d.is_float() {
        Ok(())
    } else {
        Err(format!("{what} needs a float operand, got {d}"))
    }
}

/// Refuses a storage dtype (`i64`, `i8`, `u8`, `f16`, `bf16`) as an operand of arithmetic
/// or a comparison, saying what to cast to (see [`crate::dtype`] for why kiln does not
/// promote silently). Movement ops, `where`, `cast` and `assign` take every dtype.
pub(crate) fn compute(what: &str, d: DType) -> Result<(), String> {
    if d.is_compute() {
        return Ok(());
    }
    let to = d.compute_dtype();
    let has = if d == DType::I64 {
        "i64 has elementwise arithmetic, comparisons and reductions only (no pow or \
         contractions)"
            .to_string()
    } else {
        format!("{d} is a storage dtype (it can be fed, fetched, stored, moved and cast)")
    };
    Err(format!(
        "{what} does not compute in {d}: {has}; cast to {to} first, e.g. `x.cast(DType::{})`",
        to.name().to_uppercase()
    ))
}

/// The shape rule of every primitive: the output type of `op` applied to inputs of types
/// `ins`, where `declared` is the requested output type for ops whose shape is an attribute
/// (sources, `reshape`, `broadcast_to`, `slice`, and `fusion`, whose kernel the graph does not
/// see: the pass verifier checks its type against the kernel). A declared type given to any other op must
/// equal the inferred one (the parser relies on that to check dumps).
///
/// The error string describes the mismatch; the caller adds op, operand names and location.
pub(crate) fn infer(op: &Op, ins: &[Arg<'_>], declared: Option<&Ty>) -> Result<Ty, String> {
    let arity_ok = match op {
        Op::Placeholder | Op::Variable { .. } | Op::Constant(_) | Op::Random { .. } => {
            ins.is_empty()
        }
        Op::Unary(_)
        | Op::Cast(_)
        | Op::Reduce { .. }
        | Op::Reshape
        | Op::Permute(_)
        | Op::BroadcastTo
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::StopGradient
        | Op::Size { .. } => ins.len() == 1,
        Op::Binary(_) | Op::MatMul | Op::Conv { .. } | Op::Assign => ins.len() == 2,
        Op::Where => ins.len() == 3,
        Op::Concat { .. } | Op::Group | Op::AllReduce => !ins.is_empty(),
        Op::Pool { kind, .. } => ins.len() == kind.arity(),
        // A kernel's parameters are checked against its operands by the pass verifier.
        Op::Fusion(_) => true,
    };
    if !arity_ok {
        return Err(format!(
            "takes a different number of operands, got {}",
            ins.len()
        ));
    }
    let need_decl = || {
        declared
            .cloned()
            .ok_or_else(|| "needs a declared output type".to_string())
    };
    let out = match op {
        Op::Placeholder => placeholder(need_decl()?)?,
        Op::Variable { .. } => variable(need_decl()?)?,
        Op::Constant(v) => Ty {
            dtype: v.0.dtype(),
            shape: Shape::fixed(v.0.shape()),
        },
        Op::Random { .. } => random(need_decl()?)?,
        Op::Unary(u) => unary(u, ins)?,
        Op::Binary(b) => binary(b, ins)?,
        Op::Where => where_(ins)?,
        Op::Cast(d) => Ty {
            dtype: *d,
            shape: ins[0].shape.clone(),
        },
        Op::StopGradient => ins[0].ty.clone(),
        Op::Assign => assign(ins)?,
        Op::Group => Ty {
            dtype: DType::Bool,
            shape: Shape::scalar(),
        },
        Op::Reduce {
            op: r,
            axes,
            keepdims,
        } => reduce(r, axes, keepdims, ins)?,
        Op::Size { axes } => size(axes, ins)?,
        Op::Reshape => reshape(ins, need_decl()?)?,
        Op::Permute(perm) => permute(perm, ins)?,
        Op::BroadcastTo => broadcast_to(ins, need_decl()?)?,
        Op::Slice { begin } => slice(begin, ins, need_decl()?)?,
        Op::Pad { lo, hi } => pad(lo, hi, ins)?,
        Op::Concat { axis } => concat(axis, ins)?,
        Op::Fusion(_) => need_decl()?,
        Op::MatMul => matmul(ins)?,
        Op::Conv {
            kind,
            window,
            groups,
        } => super::conv::conv_shape(kind, window, *groups, ins)?,
        Op::Pool { kind, window } => super::pool::infer(kind, window, ins)?,
        Op::AllReduce => super::collective::infer(ins)?,
    };
    if let Some(d) = declared {
        if *d != out {
            return Err(format!("declared type {d} differs from the inferred {out}"));
        }
    }
    out.shape.check_size(out.dtype)?;
    Ok(out)
}

fn check_axes(axes: &[usize], rank: usize) -> Result<(), String> {
    if axes.windows(2).any(|w| w[0] >= w[1]) || axes.iter().any(|&a| a >= rank) {
        return Err(format!(
            "axes {axes:?} must be sorted, unique and below the rank {rank}"
        ));
    }
    Ok(())
}

fn placeholder(t: Ty) -> Result<Ty, String> {
    if t.shape.dims().iter().skip(1).any(|d| *d == Dim::Batch) {
        return Err(format!(
            "only the leading dimension may be open (?), got {}",
            t.shape
        ));
    }
    Ok(t)
}

fn variable(t: Ty) -> Result<Ty, String> {
    if !t.shape.is_fixed() {
        return Err(format!(
            "a variable's shape must be fully known, got {}",
            t.shape
        ));
    }
    Ok(t)
}

fn random(t: Ty) -> Result<Ty, String> {
    need_float("random", t.dtype)?;
    Ok(t)
}

fn unary(u: &UnaryOp, ins: &[Arg<'_>]) -> Result<Ty, String> {
    let t = ins[0].ty.clone();
    let int = matches!(t.dtype, DType::I32 | DType::I64);
    if !(u.props().on_i32 && int) {
        compute(u.name(), t.dtype)?;
        need_float(u.name(), t.dtype)?;
    }
    Ok(t)
}

fn binary(b: &BinaryOp, ins: &[Arg<'_>]) -> Result<Ty, String> {
    let (x, y) = (ins[0], ins[1]);
    if x.dtype != y.dtype {
        return Err(format!("operand dtypes differ: {x} vs {y}"));
    }
    if x.shape != y.shape {
        return Err(format!("operand shapes differ: {x} vs {y}"));
    }
    // i64 has the i32 ops but `pow` (see the module docs of `crate::dtype`).
    if x.dtype != DType::I64 || matches!(b, BinaryOp::Pow | BinaryOp::Rem) {
        compute(b.name(), x.dtype)?;
    }
    match b {
        BinaryOp::Eq | BinaryOp::Ne => {}
        BinaryOp::Pow | BinaryOp::Rem => need_float(b.name(), x.dtype)?,
        BinaryOp::Add
        | BinaryOp::Sub
        | BinaryOp::Mul
        | BinaryOp::Div
        | BinaryOp::Max
        | BinaryOp::Min
        | BinaryOp::Lt
        | BinaryOp::Le
        | BinaryOp::Gt
        | BinaryOp::Ge => {
            if x.dtype == DType::Bool {
                return Err(format!("{} is not defined on bool", b.name()));
            }
        }
    }
    Ok(if b.is_comparison() {
        Ty {
            dtype: DType::Bool,
            shape: x.shape.clone(),
        }
    } else {
        x.ty.clone()
    })
}

fn where_(ins: &[Arg<'_>]) -> Result<Ty, String> {
    let (c, a, b) = (ins[0], ins[1], ins[2]);
    if c.dtype != DType::Bool {
        return Err(format!("condition must be bool, got {c}"));
    }
    if a.dtype != b.dtype {
        return Err(format!("branch dtypes differ: {a} vs {b}"));
    }
    if c.shape != a.shape || a.shape != b.shape {
        return Err(format!("operand shapes differ: {c}, {a}, {b}"));
    }
    Ok(a.ty.clone())
}

fn assign(ins: &[Arg<'_>]) -> Result<Ty, String> {
    let (var, value) = (ins[0], ins[1]);
    if var.ty != value.ty {
        return Err(format!("cannot assign {value} to {var}: types differ"));
    }
    Ok(value.ty.clone())
}

fn reduce(r: &ReduceOp, axes: &[usize], keepdims: &bool, ins: &[Arg<'_>]) -> Result<Ty, String> {
    let t = ins[0];
    if t.dtype != DType::I64 {
        compute(r.name(), t.dtype)?;
    }
    if t.dtype == DType::Bool {
        return Err(format!("{} is not defined on bool", r.name()));
    }
    check_axes(axes, t.shape.rank())?;
    let mut dims: SmallVec<[Dim; 4]> = SmallVec::new();
    for (i, d) in t.shape.dims().iter().enumerate() {
        if axes.contains(&i) {
            if *keepdims {
                dims.push(Dim::Fixed(1));
            }
        } else {
            dims.push(*d);
        }
    }
    Ok(Ty {
        dtype: t.dtype,
        shape: Shape(dims),
    })
}

fn size(axes: &[usize], ins: &[Arg<'_>]) -> Result<Ty, String> {
    let t = ins[0];
    check_axes(axes, t.shape.rank())?;
    let dtype = if t.dtype.is_float() {
        t.dtype
    } else {
        DType::F32
    };
    Ok(Ty {
        dtype,
        shape: Shape::scalar(),
    })
}

fn reshape(ins: &[Arg<'_>], t: Ty) -> Result<Ty, String> {
    if t.dtype != ins[0].dtype {
        return Err("reshape cannot change the dtype".into());
    }
    if t.shape.symbolic_numel() != ins[0].shape.symbolic_numel() {
        return Err(format!(
            "cannot reshape {} to {}: element counts differ",
            ins[0], t.shape
        ));
    }
    Ok(t)
}

fn permute(perm: &Axes, ins: &[Arg<'_>]) -> Result<Ty, String> {
    let t = ins[0];
    let r = t.shape.rank();
    let mut seen = vec![false; r];
    if perm.len() != r
        || perm
            .iter()
            .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
    {
        return Err(format!(
            "{perm:?} is not a permutation of the axes of {}",
            t.shape
        ));
    }
    Ok(Ty {
        dtype: t.dtype,
        shape: Shape(perm.iter().map(|&p| t.shape.dims()[p]).collect()),
    })
}

fn broadcast_to(ins: &[Arg<'_>], t: Ty) -> Result<Ty, String> {
    if t.dtype != ins[0].dtype {
        return Err("broadcast_to cannot change the dtype".into());
    }
    if !broadcasts_to(&ins[0].shape, &t.shape) {
        return Err(format!("cannot broadcast {} to {}", ins[0], t.shape));
    }
    Ok(t)
}

fn slice(begin: &Axes, ins: &[Arg<'_>], t: Ty) -> Result<Ty, String> {
    let x = ins[0];
    if t.dtype != x.dtype || t.shape.rank() != x.shape.rank() || begin.len() != x.shape.rank() {
        return Err(format!(
            "slice of {x} with begin {begin:?} and sizes {} does not match its rank",
            t.shape
        ));
    }
    for (i, (&b, (&din, &dout))) in begin
        .iter()
        .zip(x.shape.dims().iter().zip(t.shape.dims()))
        .enumerate()
    {
        let ok = match (din, dout) {
            (Dim::Fixed(n), Dim::Fixed(s)) => b.checked_add(s).is_some_and(|e| e <= n),
            (Dim::Batch, Dim::Batch) => b == 0,
            _ => false,
        };
        if !ok {
            return Err(format!(
                "slice [{b}, {b}+{dout}) is out of bounds for axis {i} of {x}"
            ));
        }
    }
    Ok(t)
}

fn pad(lo: &Axes, hi: &Axes, ins: &[Arg<'_>]) -> Result<Ty, String> {
    let x = ins[0];
    if lo.len() != x.shape.rank() || hi.len() != x.shape.rank() {
        return Err(format!(
            "pad widths {lo:?}/{hi:?} do not match the rank of {x}"
        ));
    }
    let mut dims: SmallVec<[Dim; 4]> = SmallVec::new();
    for (i, d) in x.shape.dims().iter().enumerate() {
        dims.push(match d {
            Dim::Fixed(n) => Dim::Fixed(
                n.checked_add(lo[i])
                    .and_then(|m| m.checked_add(hi[i]))
                    .ok_or_else(|| {
                        format!(
                            "padding axis {i} of {x} by {}+{} overflows its size",
                            lo[i], hi[i]
                        )
                    })?,
            ),
            Dim::Batch if lo[i] == 0 && hi[i] == 0 => Dim::Batch,
            Dim::Batch => return Err(format!("cannot pad the open axis {i} of {x}")),
        });
    }
    Ok(Ty {
        dtype: x.dtype,
        shape: Shape(dims),
    })
}

fn concat(axis: &usize, ins: &[Arg<'_>]) -> Result<Ty, String> {
    let first = ins[0];
    let r = first.shape.rank();
    if *axis >= r {
        return Err(format!("axis {axis} is out of range for {first}"));
    }
    let mut total = 0usize;
    for t in ins {
        if t.dtype != first.dtype || t.shape.rank() != r {
            return Err(format!("operands {first} and {t} do not match"));
        }
        for i in 0..r {
            if i != *axis && t.shape.dims()[i] != first.shape.dims()[i] {
                return Err(format!(
                    "operands {first} and {t} differ outside axis {axis}"
                ));
            }
        }
        match t.shape.dims()[*axis] {
            Dim::Fixed(n) => {
                total = total.checked_add(n).ok_or_else(|| {
                    format!("the sizes along axis {axis} overflow when concatenated")
                })?
            }
            Dim::Batch => return Err(format!("cannot concatenate along the open axis of {t}")),
        }
    }
    let mut dims = first.shape.0.clone();
    dims[*axis] = Dim::Fixed(total);
    Ok(Ty {
        dtype: first.dtype,
        shape: Shape(dims),
    })
}

fn matmul(ins: &[Arg<'_>]) -> Result<Ty, String> {
    let (a, b) = (ins[0], ins[1]);
    if a.dtype != b.dtype {
        return Err(format!("operand dtypes differ: {a} vs {b}"));
    }
    need_float("matmul", a.dtype)?;
    let r = a.shape.rank();
    if r < 2 || b.shape.rank() != r {
        return Err(format!(
            "cannot contract {a} with {b}: need equal ranks of at least 2"
        ));
    }
    let (ad, bd) = (a.shape.dims(), b.shape.dims());
    if ad[..r - 2] != bd[..r - 2] {
        return Err(format!("cannot contract {a} with {b}: batch axes differ"));
    }
    if ad[r - 1] != bd[r - 2] {
        return Err(format!(
            "cannot contract {a} with {b} ({} != {})",
            ad[r - 1],
            bd[r - 2]
        ));
    }
    let mut dims: SmallVec<[Dim; 4]> = ad[..r - 1].iter().copied().collect();
    dims.push(bd[r - 1]);
    Ok(Ty {
        dtype: a.dtype,
        shape: Shape(dims),
    })
}
