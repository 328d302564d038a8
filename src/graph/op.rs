//! The op set: small and grouped, as in tinygrad.
//!
//! Every op is one of a handful of groups: sources, unary, binary, ternary (`where`), reduce,
//! movement, contraction, and two bookkeeping ops (`cast`, `stop_gradient`, `size`). Everything
//! else (softmax, cross-entropies, `mean`, ...) is *composed* from these in
//! `src/graph/composite.rs` (methods on [`Tensor`](crate::Tensor)), so each rule that the rest of kiln needs (shape, gradient,
//! interpretation, lowering) exists once per primitive.
//!
//! An op's facts live beside it, as data, each written once in one exhaustive `match`:
//! - this file: the enums, their groups and names;
//! - `props.rs`: what passes and backends need to know of each unary and binary op (cost,
//!   vectorizable, tile function, non-negativity, commutativity, linearity, and its `f64`
//!   reference semantics, which the interpreter and the JIT's `f64` helper both call);
//! - `schema.rs`: each op kind's name and attribute keys, from which the text printer and the
//!   parser both work;
//! - `infer.rs`: each primitive's *shape rule*. Binary and ternary ops require
//!   operands of identical shape: the builder inserts explicit `broadcast_to` nodes, so that
//!   broadcasting has exactly one gradient rule (sum back to the operand's shape) and one
//!   lowering (an index map).
//!
//! So adding a unary op is: a variant here (the `listed!` macro keeps `ALL` complete), its
//! row in `props.rs`, then whatever the compiler reports as a non-exhaustive match.

mod collective;
mod conv;
mod infer;
pub mod pool;
pub(crate) mod props;
pub(crate) mod schema;
mod special;
pub mod window;

pub(crate) use conv::{conv_attrs, conv_from_attrs};
pub use conv::{ConvGeom, ConvKind};
pub(crate) use infer::infer;
pub use pool::{Pool2dOptions, PoolKind};
pub use props::{BinaryProps, Cost, UnaryProps};
pub use schema::OpKind;
pub use window::{DataFormat, Padding, Window2d};

use crate::array::{ConstValue, FloatAttr};
use crate::dtype::DType;
use crate::init::Init;
use crate::shape::Shape;
use smallvec::SmallVec;

/// Declares a fieldless enum and its `ALL` list from one variant list, so that `ALL` can
/// never miss a variant (the parser finds ops by name through it).
macro_rules! listed {
    ($(#[$m:meta])* pub enum $E:ident { $($(#[$vm:meta])* $V:ident,)* }) => {
        $(#[$m])*
        pub enum $E { $($(#[$vm])* $V,)* }
        impl $E {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$E] = &[$($E::$V,)*];
        }
    };
}

/// A list of axes, sorted and unique (for reductions) or a permutation.
pub type Axes = SmallVec<[usize; 4]>;

listed! {
/// Elementwise ops of one operand. Each one's facts are [`UnaryOp::props`]. On `i32`, results
/// wrap modulo 2^32 on every backend (`neg` and `abs` of `i32::MIN` are `i32::MIN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
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
    /// The error function `2/√π ∫₀ˣ e^{-t²} dt` (a primitive: it has no closed form in the
    /// others, and GELU needs it).
    Erf,
    /// `log(1 + e^x)`, computed as `max(x, 0) + log1p(e^{-|x|})` (a primitive: composed, it
    /// overflows for large `x` and loses the tail for very negative `x`).
    Softplus,
}
}

listed! {
/// Elementwise ops of two operands of identical shape and dtype. Each one's facts are
/// [`BinaryOp::props`]. On `i32`, `+ - *` wrap modulo 2^32 on every backend (as TF and XLA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
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
    /// `a % b`, C's `fmod(a, b)` (as Rust's `%` on floats): the remainder of the truncated
    /// quotient, exact, with the dividend's sign; NaN for a zero divisor or an infinite
    /// dividend, `a` for an infinite divisor (floats only; ONNX `Mod` with `fmod = 1`)
    Rem,
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
}

listed! {
/// Reductions over a set of axes. An `i32` sum wraps modulo 2^32 on every backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ReduceOp {
    /// sum (0 over an empty axis)
    Sum,
    /// maximum (`-inf` over an empty axis; `i32::MIN` for `i32`)
    Max,
}
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
#[non_exhaustive]
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
    /// Seeded random numbers, fresh for every run (counter-based; see `src/rng.rs`).
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
    /// A 2-D convolution over NHWC images with an HWIO filter, or one of its two gradients
    /// (see [`ConvKind`] and `op/conv.rs`).
    Conv {
        /// forward, input gradient or filter gradient
        kind: ConvKind,
        /// the resolved window (explicit padding), boxed to keep `Op` small
        window: Box<Window2d>,
        /// channel groups (the channel count for a depthwise convolution)
        groups: usize,
    },
    // ---- windows ----
    /// 2-D pooling over an NHWC tensor, and its gradients ([`PoolKind`]; the semantics are
    /// in the docs of [`pool`]).
    Pool {
        /// which member of the family
        kind: PoolKind,
        /// the resolved window
        window: Window2d,
    },
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
    // ---- communication ----
    /// The sum of every operand on every process of the distributed world, in one fixed
    /// order: rank 0's operands first to last, then rank 1's, and so on, folded left to right
    /// (see `crate::dist`). Every operand has the output's type (`f32` or `f64`). In a
    /// one-process world it is the ordered sum of the operands. It runs as a host step that
    /// communicates, so it is never folded, fused or evaluated at compile time.
    AllReduce,
    // ---- produced by the optimizer ----
    /// A fused kernel made by the fusion pass; its operands are the kernel's parameters.
    /// Never built by users, never differentiated. The graph holds only the kernel's id: the
    /// kernel itself is backend IR, in the lowered program's table (`Program::kernels`).
    Fusion(KernelId),
}

/// The opaque id of a fused kernel in the kernel table of the program that holds the fused
/// node (the graph IR knows nothing of kernels: see ARCHITECTURE.md, "Dependency rules").
///
/// An id means something only with its table; a fused node's output type is its declared
/// type, checked against the kernel by the pass verifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelId(u32);

impl KernelId {
    /// The id of the `index`-th kernel of a table.
    pub fn from_index(index: usize) -> KernelId {
        KernelId(u32::try_from(index).expect("fewer than 2^32 kernels"))
    }

    /// The position in its table.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The groups of [`Op`], as in tinygrad's `GroupOp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// matmul, conv
    Contraction,
    /// pooling: a window over the spatial axes of an image
    Window,
    /// assign, group: nodes that matter for their effect on variables
    Effect,
    /// a fused kernel
    Fused,
    /// all_reduce: a value exchanged with the other processes
    Collective,
}

impl UnaryOp {
    /// Name in dumps.
    pub fn name(self) -> &'static str {
        self.props().name
    }
}

impl BinaryOp {
    /// Name in dumps.
    pub fn name(self) -> &'static str {
        self.props().name
    }
    /// True for the comparisons, whose result is `bool`.
    pub fn is_comparison(self) -> bool {
        self.props().comparison
    }
    /// True if `a op b == b op a` for all inputs (bitwise, NaNs included).
    pub fn is_commutative(self) -> bool {
        self.props().commutative
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
        self.kind().name()
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
            Op::MatMul | Op::Conv { .. } => OpGroup::Contraction,
            Op::Pool { .. } => OpGroup::Window,
            Op::Assign | Op::Group => OpGroup::Effect,
            Op::Fusion(_) => OpGroup::Fused,
            Op::AllReduce => OpGroup::Collective,
        }
    }
}

/// An operand as shape rules see it: its type, and a label for error messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arg<'a> {
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
