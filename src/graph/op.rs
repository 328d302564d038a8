//! The op set: small and grouped, as in tinygrad.
//!
//! Every op is one of a handful of groups: sources, unary, binary, ternary (`where`), reduce,
//! movement, contraction, and two bookkeeping ops (`cast`, `stop_gradient`, `size`). Everything
//! else (softmax, cross-entropies, `mean`, ...) is *composed* from these in
//! [`crate::graph::composite`], so each rule that the rest of kiln needs (shape, gradient,
//! interpretation, lowering) exists once per primitive.
//!
//! This file holds each primitive's *shape rule* ([`infer`]). Binary and ternary ops require
//! operands of identical shape: the builder inserts explicit `broadcast_to` nodes, so that
//! broadcasting has exactly one gradient rule (sum back to the operand's shape) and one lowering
//! (an index map).

use crate::array::{ConstValue, FloatAttr};
use crate::dtype::DType;
use crate::init::Init;
use crate::shape::{broadcasts_to, Dim, Shape};
use smallvec::SmallVec;
use std::fmt::Write as _;

/// A list of axes, sorted and unique (for reductions) or a permutation.
pub type Axes = SmallVec<[usize; 4]>;

/// Elementwise ops of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// natural log
    Log,
    /// square root
    Sqrt,
    /// `1/x`
    Recip,
    /// hyperbolic tangent
    Tanh,
    /// `|x|`
    Abs,
    /// `1/(1+e^-x)`: a primitive for a stable gradient and one fused kernel (see ARCHITECTURE.md).
    Sigmoid,
}

/// Elementwise ops of two operands of identical shape and dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// `a ^ b` (floats only)
    Pow,
    /// elementwise maximum (`NaN` if either is `NaN`)
    Max,
    /// elementwise minimum (`NaN` if either is `NaN`)
    Min,
    /// `a == b` (gives `bool`)
    Eq,
    /// `a != b`
    Ne,
    /// `a < b`
    Lt,
    /// `a <= b`
    Le,
    /// `a > b`
    Gt,
    /// `a >= b`
    Ge,
}

/// Reductions over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReduceOp {
    /// sum (0 over an empty axis)
    Sum,
    /// maximum (`-inf` over an empty axis)
    Max,
}

/// The distribution of a random source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RandomDist {
    /// Uniform on `[low, high)`.
    Uniform {
        /// lower bound
        low: FloatAttr,
        /// upper bound (exclusive)
        high: FloatAttr,
    },
    /// Normal.
    Normal {
        /// mean
        mean: FloatAttr,
        /// standard deviation
        std: FloatAttr,
    },
}

/// A typed op. The node that holds it also holds its inputs, output dtype and shape.
///
/// Where an op's output shape is an attribute (`reshape`, `broadcast_to`, `slice`, sources),
/// it is the node's shape, not stored twice.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    // ---- sources ----
    /// A value fed at run time.
    Placeholder,
    /// A persistent value, initialized once per session.
    Variable {
        /// How the first value is made.
        init: Init,
    },
    /// A literal.
    Constant(ConstValue),
    /// Seeded random numbers, fresh for every run (counter-based; see [`crate::rng`]).
    Random {
        /// The distribution.
        dist: RandomDist,
        /// The seed.
        seed: u64,
    },
    // ---- elementwise ----
    /// One-operand elementwise op.
    Unary(UnaryOp),
    /// Two-operand elementwise op.
    Binary(BinaryOp),
    /// `where(cond, a, b)`: `a` where `cond` is true, else `b`.
    Where,
    /// Elementwise conversion to another dtype (float→int truncates toward zero).
    Cast(DType),
    // ---- reduce ----
    /// Reduction over `axes`.
    Reduce {
        /// sum or max
        op: ReduceOp,
        /// sorted, unique axes of the input
        axes: Axes,
        /// keep reduced axes as size 1
        keepdims: bool,
    },
    // ---- movement ----
    /// Same elements, new shape (the node's shape).
    Reshape,
    /// Axis permutation: output axis `i` is input axis `perm[i]`.
    Permute(Axes),
    /// Numpy broadcast to the node's shape.
    BroadcastTo,
    /// The box `[begin, begin + shape)` of the input (the node's shape gives the sizes).
    Slice {
        /// start per axis
        begin: Axes,
    },
    /// Zero padding: `lo[i]` before and `hi[i]` after axis `i`.
    Pad {
        /// padding before, per axis
        lo: Axes,
        /// padding after, per axis
        hi: Axes,
    },
    /// Concatenation of all inputs along `axis`.
    Concat {
        /// the axis
        axis: usize,
    },
    // ---- contraction ----
    /// Matrix product over the last two axes, `[..,m,k] x [..,k,n] -> [..,m,n]`; leading axes
    /// are batch axes and must be equal.
    MatMul,
    // ---- bookkeeping ----
    /// Identity whose gradient is zero.
    StopGradient,
    /// The product of the input's sizes over `axes`, as a scalar (known once `?` is).
    Size {
        /// the axes
        axes: Axes,
    },
    // ---- effects ----
    /// `assign(variable, value)`: after the run, the variable holds `value`. Its output is
    /// `value`. Every read of the variable in the same run sees the old value (see
    /// [`crate::graph::effects`]).
    Assign,
    /// A target that groups other nodes (typically assigns) into one fetchable train op. Its
    /// output is the `bool` scalar `true`.
    Group,
    // ---- produced by the optimizer ----
    /// A fused kernel made by the fusion pass; its operands are the kernel's parameters.
    /// Never built by users, never differentiated.
    Fusion(std::sync::Arc<crate::kernel::Kernel>),
}

/// The groups of [`Op`], as in tinygrad's `GroupOp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpGroup {
    /// placeholder, variable, constant, random
    Source,
    /// unary, binary, where, cast, stop_gradient: one output element from the same element of
    /// each input
    Elementwise,
    /// sum, max
    Reduce,
    /// reshape, permute, broadcast_to, slice, pad, concat, size
    Movement,
    /// matmul
    Contraction,
    /// assign, group: nodes that matter for their effect on variables
    Effect,
    /// a fused kernel
    Fused,
}

impl UnaryOp {
    /// All unary ops.
    pub const ALL: [UnaryOp; 8] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Recip,
        UnaryOp::Tanh,
        UnaryOp::Abs,
        UnaryOp::Sigmoid,
    ];
    /// Name in dumps.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Abs => "abs",
            UnaryOp::Sigmoid => "sigmoid",
        }
    }
}

impl BinaryOp {
    /// All binary ops.
    pub const ALL: [BinaryOp; 13] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
    ];
    /// Name in dumps.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Max => "maximum",
            BinaryOp::Min => "minimum",
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
        }
    }
    /// True for the comparisons, whose result is `bool`.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        )
    }
    /// True if `a op b == b op a` for all inputs (bitwise, NaNs included).
    pub fn is_commutative(self) -> bool {
        matches!(
            self,
            BinaryOp::Add
                | BinaryOp::Mul
                | BinaryOp::Max
                | BinaryOp::Min
                | BinaryOp::Eq
                | BinaryOp::Ne
        )
    }
}

impl ReduceOp {
    /// Name in dumps.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Max => "reduce_max",
        }
    }
}

impl Op {
    /// The op's name as dumps and error messages show it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Placeholder => "placeholder",
            Op::Variable { .. } => "variable",
            Op::Constant(_) => "constant",
            Op::Random {
                dist: RandomDist::Uniform { .. },
                ..
            } => "random_uniform",
            Op::Random {
                dist: RandomDist::Normal { .. },
                ..
            } => "random_normal",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Where => "where",
            Op::Cast(_) => "cast",
            Op::Reduce { op, .. } => op.name(),
            Op::Reshape => "reshape",
            Op::Permute(_) => "permute",
            Op::BroadcastTo => "broadcast_to",
            Op::Slice { .. } => "slice",
            Op::Pad { .. } => "pad",
            Op::Concat { .. } => "concat",
            Op::MatMul => "matmul",
            Op::StopGradient => "stop_gradient",
            Op::Size { .. } => "size",
            Op::Assign => "assign",
            Op::Group => "group",
            Op::Fusion(_) => "fusion",
        }
    }

    /// The op's group.
    pub fn group(&self) -> OpGroup {
        match self {
            Op::Placeholder | Op::Variable { .. } | Op::Constant(_) | Op::Random { .. } => {
                OpGroup::Source
            }
            Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast(_) | Op::StopGradient => {
                OpGroup::Elementwise
            }
            Op::Reduce { .. } => OpGroup::Reduce,
            Op::Reshape
            | Op::Permute(_)
            | Op::BroadcastTo
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Concat { .. }
            | Op::Size { .. } => OpGroup::Movement,
            Op::MatMul => OpGroup::Contraction,
            Op::Assign | Op::Group => OpGroup::Effect,
            Op::Fusion(_) => OpGroup::Fused,
        }
    }

    /// The attributes as `key=value` pairs, in the canonical order of the text format.
    pub fn attrs(&self) -> Vec<(&'static str, String)> {
        fn list(v: &[usize]) -> String {
            let mut s = String::from("[");
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(s, "{x}");
            }
            s.push(']');
            s
        }
        match self {
            Op::Placeholder
            | Op::Constant(_)
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::Reshape
            | Op::BroadcastTo
            | Op::MatMul
            | Op::StopGradient
            | Op::Assign
            | Op::Group => vec![],
            Op::Variable { init } => vec![("init", init.describe())],
            Op::Random { dist, seed } => match dist {
                RandomDist::Uniform { low, high } => vec![
                    ("low", low.to_string()),
                    ("high", high.to_string()),
                    ("seed", seed.to_string()),
                ],
                RandomDist::Normal { mean, std } => vec![
                    ("mean", mean.to_string()),
                    ("std", std.to_string()),
                    ("seed", seed.to_string()),
                ],
            },
            Op::Cast(d) => vec![("to", d.name().to_string())],
            Op::Reduce { axes, keepdims, .. } => {
                vec![("axes", list(axes)), ("keepdims", keepdims.to_string())]
            }
            Op::Permute(p) => vec![("perm", list(p))],
            Op::Slice { begin } => vec![("begin", list(begin))],
            Op::Pad { lo, hi } => vec![("lo", list(lo)), ("hi", list(hi))],
            Op::Concat { axis } => vec![("axis", axis.to_string())],
            Op::Size { axes } => vec![("axes", list(axes))],
            Op::Fusion(k) => vec![("kind", k.kind().to_string())],
        }
    }
}

/// An operand as shape rules see it: its type, and a label for error messages.
#[derive(Clone, Copy, Debug)]
pub struct Arg<'a> {
    /// the operand's type
    pub ty: &'a Ty,
    /// `"x"` for a named node, `(exp)` for an unnamed one
    pub label: &'a str,
}

impl std::ops::Deref for Arg<'_> {
    type Target = Ty;
    fn deref(&self) -> &Ty {
        self.ty
    }
}

impl std::fmt::Display for Arg<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.ty, self.label)
    }
}

/// The type of a value: dtype and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ty {
    /// element type
    pub dtype: DType,
    /// shape
    pub shape: Shape,
}

impl std::fmt::Display for Ty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

fn need_float(what: &str, d: DType) -> Result<(), String> {
    if d.is_float() {
        Ok(())
    } else {
        Err(format!("{what} needs a float operand, got {d}"))
    }
}

/// The shape rule of every primitive: the output type of `op` applied to inputs of types
/// `ins`, where `declared` is the requested output type for ops whose shape is an attribute
/// (sources, `reshape`, `broadcast_to`, `slice`). A declared type given to any other op must
/// equal the inferred one (the parser relies on that to check dumps).
///
/// The error string describes the mismatch; the caller adds op, operand names and location.
pub fn infer(op: &Op, ins: &[Arg<'_>], declared: Option<&Ty>) -> Result<Ty, String> {
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
        Op::Binary(_) | Op::MatMul | Op::Assign => ins.len() == 2,
        Op::Where => ins.len() == 3,
        Op::Concat { .. } | Op::Group => !ins.is_empty(),
        Op::Fusion(k) => ins.len() == k.params.len(),
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
        Op::Placeholder => {
            let t = need_decl()?;
            if t.shape.dims().iter().skip(1).any(|d| *d == Dim::Batch) {
                return Err(format!(
                    "only the leading dimension may be open (?), got {}",
                    t.shape
                ));
            }
            t
        }
        Op::Variable { .. } => {
            let t = need_decl()?;
            if !t.shape.is_fixed() {
                return Err(format!(
                    "a variable's shape must be fully known, got {}",
                    t.shape
                ));
            }
            t
        }
        Op::Constant(v) => Ty {
            dtype: v.0.dtype(),
            shape: Shape::fixed(v.0.shape()),
        },
        Op::Random { .. } => {
            let t = need_decl()?;
            need_float("random", t.dtype)?;
            t
        }
        Op::Unary(u) => {
            let t = ins[0].ty.clone();
            match u {
                UnaryOp::Neg | UnaryOp::Abs if t.dtype == DType::I32 => {}
                _ => need_float(u.name(), t.dtype)?,
            }
            t
        }
        Op::Binary(b) => {
            let (x, y) = (ins[0], ins[1]);
            if x.dtype != y.dtype {
                return Err(format!("operand dtypes differ: {x} vs {y}"));
            }
            if x.shape != y.shape {
                return Err(format!("operand shapes differ: {x} vs {y}"));
            }
            match b {
                BinaryOp::Eq | BinaryOp::Ne => {}
                BinaryOp::Pow => need_float("pow", x.dtype)?,
                _ if x.dtype == DType::Bool => {
                    return Err(format!("{} is not defined on bool", b.name()))
                }
                _ => {}
            }
            if b.is_comparison() {
                Ty {
                    dtype: DType::Bool,
                    shape: x.shape.clone(),
                }
            } else {
                x.ty.clone()
            }
        }
        Op::Where => {
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
            a.ty.clone()
        }
        Op::Cast(d) => Ty {
            dtype: *d,
            shape: ins[0].shape.clone(),
        },
        Op::StopGradient => ins[0].ty.clone(),
        Op::Assign => {
            let (var, value) = (ins[0], ins[1]);
            if var.ty != value.ty {
                return Err(format!("cannot assign {value} to {var}: types differ"));
            }
            value.ty.clone()
        }
        Op::Group => Ty {
            dtype: DType::Bool,
            shape: Shape::scalar(),
        },
        Op::Reduce {
            op: r,
            axes,
            keepdims,
        } => {
            let t = ins[0];
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
            Ty {
                dtype: t.dtype,
                shape: Shape(dims),
            }
        }
        Op::Size { axes } => {
            let t = ins[0];
            check_axes(axes, t.shape.rank())?;
            let dtype = if t.dtype.is_float() {
                t.dtype
            } else {
                DType::F32
            };
            Ty {
                dtype,
                shape: Shape::scalar(),
            }
        }
        Op::Reshape => {
            let t = need_decl()?;
            if t.dtype != ins[0].dtype {
                return Err("reshape cannot change the dtype".into());
            }
            if t.shape.symbolic_numel() != ins[0].shape.symbolic_numel() {
                return Err(format!(
                    "cannot reshape {} to {}: element counts differ",
                    ins[0], t.shape
                ));
            }
            t
        }
        Op::Permute(perm) => {
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
            Ty {
                dtype: t.dtype,
                shape: Shape(perm.iter().map(|&p| t.shape.dims()[p]).collect()),
            }
        }
        Op::BroadcastTo => {
            let t = need_decl()?;
            if t.dtype != ins[0].dtype {
                return Err("broadcast_to cannot change the dtype".into());
            }
            if !broadcasts_to(&ins[0].shape, &t.shape) {
                return Err(format!("cannot broadcast {} to {}", ins[0], t.shape));
            }
            t
        }
        Op::Slice { begin } => {
            let t = need_decl()?;
            let x = ins[0];
            if t.dtype != x.dtype
                || t.shape.rank() != x.shape.rank()
                || begin.len() != x.shape.rank()
            {
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
            t
        }
        Op::Pad { lo, hi } => {
            let x = ins[0];
            if lo.len() != x.shape.rank() || hi.len() != x.shape.rank() {
                return Err(format!(
                    "pad widths {lo:?}/{hi:?} do not match the rank of {x}"
                ));
            }
            let mut dims: SmallVec<[Dim; 4]> = SmallVec::new();
            for (i, d) in x.shape.dims().iter().enumerate() {
                dims.push(match d {
                    Dim::Fixed(n) => Dim::Fixed(n + lo[i] + hi[i]),
                    Dim::Batch if lo[i] == 0 && hi[i] == 0 => Dim::Batch,
                    Dim::Batch => return Err(format!("cannot pad the open axis {i} of {x}")),
                });
            }
            Ty {
                dtype: x.dtype,
                shape: Shape(dims),
            }
        }
        Op::Concat { axis } => {
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
                    Dim::Fixed(n) => total += n,
                    Dim::Batch => {
                        return Err(format!("cannot concatenate along the open axis of {t}"))
                    }
                }
            }
            let mut dims = first.shape.0.clone();
            dims[*axis] = Dim::Fixed(total);
            Ty {
                dtype: first.dtype,
                shape: Shape(dims),
            }
        }
        Op::Fusion(k) => {
            for (i, (a, t)) in ins.iter().zip(&k.params).enumerate() {
                if a.ty != t {
                    return Err(format!("operand {i} is {a}, the kernel expects {t}"));
                }
            }
            k.out.clone()
        }
        Op::MatMul => {
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
            Ty {
                dtype: a.dtype,
                shape: Shape(dims),
            }
        }
    };
    if let Some(d) = declared {
        if *d != out {
            return Err(format!("declared type {d} differs from the inferred {out}"));
        }
    }
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
