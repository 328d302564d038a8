//! The builder: [`Tensor`] handles and the methods that add primitive ops.
//!
//! Every method here is `#[track_caller]`, so the node it adds remembers the user's file and
//! line, and a shape error names them. Methods never fail: a mistake is recorded in the graph
//! and reported as an `Err` by [`Graph::check`] and by the first compile or run, because
//! operator overloading (`a + b`) cannot return a `Result`.
//!
//! Binary ops broadcast like numpy by inserting explicit `broadcast_to` nodes, so the
//! primitives themselves only ever see operands of identical shape.

use super::op::{BinaryOp, Op, RandomDist, Ty, UnaryOp};
use super::{Graph, NodeId};
use crate::array::{Array, ConstValue, FloatAttr};
use crate::dtype::DType;
use crate::error::SrcLoc;
use crate::init::Init;
use crate::shape::{broadcast_shapes, normalize_axes, Shape};
use std::sync::Arc;

mod collective;
mod conv;
mod movement;
mod pool;

pub use conv::Conv2dOptions;

/// A symbolic tensor: a `Copy` handle to one node of a [`Graph`].
///
/// Operators build ops: `a + b`, `a * 2.0`, `-a`, `a.matmul(b)`.
///
/// ```
/// use kiln::prelude::*;
/// let g = Graph::new();
/// let a = g.placeholder("a", DType::F32, [None, Some(2)]); // [batch, 2]
/// let b = (a * 2.0 + 1.0).relu().sum(&[1], false); // built, checked, not run
/// assert_eq!(b.shape().to_string(), "[?]");
/// let out = Session::new(&g)?.run(&[b], &[(a, Array::new([1, 2], vec![1f32, -3.])?)])?;
/// assert_eq!(out[0].to_vec::<f32>()?, [3.0]); // relu(3) + relu(-5)
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Tensor<'g> {
    graph: &'g Graph,
    id: NodeId,
}

impl std::fmt::Debug for Tensor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.graph.data();
        let n = d.node(self.id);
        write!(f, "Tensor({} {} {})", n.op.name(), n.ty, n.label())
    }
}

/// A right-hand operand: a tensor or a Rust scalar (which becomes a constant of the other
/// operand's dtype).
pub trait IntoOperand<'g> {
    /// Converts to a tensor in `like`'s graph, with `like`'s dtype if it is a scalar.
    #[track_caller]
    fn into_operand(self, like: Tensor<'g>) -> Tensor<'g>;
    /// The tensor, if this operand is one (so a scalar beside it can take its dtype).
    fn as_tensor(&self) -> Option<Tensor<'g>> {
        None
    }
}

impl<'g> IntoOperand<'g> for Tensor<'g> {
    fn into_operand(self, _like: Tensor<'g>) -> Tensor<'g> {
        self
    }
    fn as_tensor(&self) -> Option<Tensor<'g>> {
        Some(*self)
    }
}

macro_rules! scalar_operand {
    ($($t:ty),*) => {$(
        impl<'g> IntoOperand<'g> for $t {
            #[track_caller]
            fn into_operand(self, like: Tensor<'g>) -> Tensor<'g> {
                like.graph.scalar_of(like.dtype(), self as f64)
            }
        }
    )*};
}
scalar_operand!(f32, f64, i32);

impl Graph {
    #[track_caller]
    pub(crate) fn push(
        &self,
        op: Op,
        inputs: &[Tensor<'_>],
        declared: Option<Ty>,
        name: Option<String>,
    ) -> Tensor<'_> {
        let mut d = self.data_mut();
        let loc = match &d.loc_override {
            Some(l) => l.clone(),
            None => SrcLoc::caller(),
        };
        for (i, t) in inputs.iter().enumerate() {
            if !t.graph.same_as(self) {
                let msg = format!(
                    "operand {} belongs to a different graph (tensors cannot cross graphs)",
                    i + 1
                );
                let id = d.add_error(op.name(), msg, Some(loc));
                return Tensor { graph: self, id };
            }
        }
        let ids: Vec<NodeId> = inputs.iter().map(|t| t.id).collect();
        let id = d.add_node(op, &ids, declared, name, Some(loc));
        Tensor { graph: self, id }
    }

    #[track_caller]
    fn source(&self, op: Op, name: Option<&str>, dtype: DType, shape: Shape) -> Tensor<'_> {
        let name = name.map(|n| self.scoped_name(n));
        self.push(op, &[], Some(Ty { dtype, shape }), name)
    }

    /// A value fed at run time. Only the leading dimension may be open:
    /// `g.placeholder("x", DType::F32, [None, Some(784)])` is TF1's `[None, 784]`.
    #[track_caller]
    pub fn placeholder(&self, name: &str, dtype: DType, shape: impl Into<Shape>) -> Tensor<'_> {
        self.source(Op::Placeholder, Some(name), dtype, shape.into())
    }

    /// An `f32` variable, initialized by `init` when a session starts.
    #[track_caller]
    pub fn variable(&self, name: &str, shape: impl Into<Shape>, init: Init) -> Tensor<'_> {
        self.source(Op::Variable { init }, Some(name), DType::F32, shape.into())
    }

    /// A variable of any dtype.
    #[track_caller]
    pub fn variable_of(
        &self,
        name: &str,
        dtype: DType,
        shape: impl Into<Shape>,
        init: Init,
    ) -> Tensor<'_> {
        self.source(Op::Variable { init }, Some(name), dtype, shape.into())
    }

    /// A constant holding `value`.
    #[track_caller]
    pub fn constant(&self, value: Array) -> Tensor<'_> {
        self.push(Op::Constant(ConstValue(Arc::new(value))), &[], None, None)
    }

    /// An `f32` scalar constant.
    #[track_caller]
    pub fn scalar(&self, v: f32) -> Tensor<'_> {
        self.constant(Array::scalar(v))
    }

    /// A scalar constant of `dtype`.
    #[track_caller]
    pub fn scalar_of(&self, dtype: DType, v: f64) -> Tensor<'_> {
        self.constant(Array::from_f64(dtype, vec![], vec![v]))
    }

    /// Uniform random numbers on `[low, high)`, fresh on every run, reproducible by `seed`.
    #[track_caller]
    pub fn random_uniform(
        &self,
        shape: impl Into<Shape>,
        low: f64,
        high: f64,
        seed: u64,
    ) -> Tensor<'_> {
        let dist = RandomDist::Uniform {
            low: FloatAttr(low),
            high: FloatAttr(high),
        };
        self.source(Op::Random { dist, seed }, None, DType::F32, shape.into())
    }

    /// Normal random numbers, fresh on every run, reproducible by `seed`.
    #[track_caller]
    pub fn random_normal(
        &self,
        shape: impl Into<Shape>,
        mean: f64,
        std: f64,
        seed: u64,
    ) -> Tensor<'_> {
        let dist = RandomDist::Normal {
            mean: FloatAttr(mean),
            std: FloatAttr(std),
        };
        self.source(Op::Random { dist, seed }, None, DType::F32, shape.into())
    }

    /// Concatenates tensors along `axis` (negative counts from the end).
    #[track_caller]
    pub fn concat<'g>(&'g self, parts: &[Tensor<'g>], axis: isize) -> Tensor<'g> {
        let rank = parts.first().map_or(0, |t| t.rank());
        match normalize_axes(&[axis], rank.max(1)) {
            Ok(a) => self.push(Op::Concat { axis: a[0] }, parts, None, None),
            Err(m) => self.fail("concat", m),
        }
    }

    /// One target that runs all of `deps` for their effects (TF1's `tf.group`): fetching it
    /// applies every assign it reaches. Its value is the `bool` scalar `true`.
    #[track_caller]
    pub fn group<'g>(&'g self, deps: &[Tensor<'g>]) -> Tensor<'g> {
        if deps.is_empty() {
            return self.fail("group", "needs at least one operand".into());
        }
        self.push(Op::Group, deps, None, None)
    }

    /// `where(cond, a, b)`, broadcasting all three.
    #[track_caller]
    pub fn where_<'g>(&'g self, cond: Tensor<'g>, a: Tensor<'g>, b: Tensor<'g>) -> Tensor<'g> {
        let shape = broadcast_shapes(&cond.shape(), &a.shape())
            .and_then(|s| broadcast_shapes(&s, &b.shape()));
        match shape {
            Ok(s) => {
                let (c, a, b) = (
                    cond.broadcast_to(&s),
                    a.broadcast_to(&s),
                    b.broadcast_to(&s),
                );
                self.push(Op::Where, &[c, a, b], None, None)
            }
            Err(m) => self.fail(
                "where",
                format!("{m} ({}, {}, {})", cond.desc(), a.desc(), b.desc()),
            ),
        }
    }

    /// Records a builder error and returns an invalid tensor standing for the failed op.
    #[track_caller]
    pub(crate) fn fail(&self, op: &str, msg: String) -> Tensor<'_> {
        let mut d = self.data_mut();
        let loc = match &d.loc_override {
            Some(l) => l.clone(),
            None => SrcLoc::caller(),
        };
        let id = d.add_error(op, msg, Some(loc));
        Tensor { graph: self, id }
    }
}

impl<'g> Tensor<'g> {
    pub(crate) fn from_parts(graph: &'g Graph, id: NodeId) -> Tensor<'g> {
        Tensor { graph, id }
    }

    /// The node id.
    pub fn id(self) -> NodeId {
        self.id
    }

    /// The graph this tensor belongs to.
    pub fn graph(self) -> &'g Graph {
        self.graph
    }

    /// The dtype and shape.
    pub fn ty(self) -> Ty {
        self.graph.data().node(self.id).ty.clone()
    }

    /// The shape (`?` for the open batch dimension).
    pub fn shape(self) -> Shape {
        self.ty().shape
    }

    /// The dtype.
    pub fn dtype(self) -> DType {
        self.ty().dtype
    }

    /// Number of dimensions.
    pub fn rank(self) -> usize {
        self.graph.data().node(self.id).ty.shape.rank()
    }

    /// The node's name, if any.
    pub fn name(self) -> Option<String> {
        self.graph
            .data()
            .node(self.id)
            .name
            .as_deref()
            .map(str::to_string)
    }

    /// Names the node (within the current name scope), as TF1's `name=` does.
    pub fn named(self, name: &str) -> Tensor<'g> {
        let full = self.graph.scoped_name(name);
        // A taken placeholder/variable name is left as it was; other names get a suffix.
        let _ = self.graph.data_mut().rename(self.id, &full);
        self
    }

    /// `f32[?,784] "x"`: how error messages show this tensor.
    pub(crate) fn desc(self) -> String {
        let d = self.graph.data();
        let n = d.node(self.id);
        format!("{} {}", n.ty, n.label())
    }

    #[track_caller]
    fn unary(self, u: UnaryOp) -> Tensor<'g> {
        self.graph.push(Op::Unary(u), &[self], None, None)
    }

    /// `e^x`
    #[track_caller]
    pub fn exp(self) -> Tensor<'g> {
        self.unary(UnaryOp::Exp)
    }
    /// Natural logarithm.
    #[track_caller]
    pub fn log(self) -> Tensor<'g> {
        self.unary(UnaryOp::Log)
    }
    /// Square root.
    #[track_caller]
    pub fn sqrt(self) -> Tensor<'g> {
        self.unary(UnaryOp::Sqrt)
    }
    /// `1/x`
    #[track_caller]
    pub fn recip(self) -> Tensor<'g> {
        self.unary(UnaryOp::Recip)
    }
    /// Hyperbolic tangent.
    #[track_caller]
    pub fn tanh(self) -> Tensor<'g> {
        self.unary(UnaryOp::Tanh)
    }
    /// `|x|`
    #[track_caller]
    pub fn abs(self) -> Tensor<'g> {
        self.unary(UnaryOp::Abs)
    }
    /// The logistic function `1/(1+e^-x)`.
    #[track_caller]
    pub fn sigmoid(self) -> Tensor<'g> {
        self.unary(UnaryOp::Sigmoid)
    }
    /// The error function `erf(x) = 2/√π ∫₀ˣ e^{-t²} dt`, on floats. Its gradient is
    /// `2/√π e^{-x²}`. The interpreter and `f64` kernels compute it to within one ulp
    /// (fdlibm's algorithm); `f32` kernels use a rational approximation (see `jit/math.rs`).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// let g = Graph::new();
    /// let x = g.placeholder("x", DType::F64, [3]);
    /// let y = x.erf();
    /// let mut sess = Session::new(&g)?;
    /// let out = sess.run(&[y], &[(x, Array::new([3], vec![0.0f64, 0.5, -3.0])?)])?;
    /// let v = out[0].to_vec::<f64>()?;
    /// assert_eq!(v[0], 0.0);
    /// assert!((v[1] - 0.5204998778130465).abs() < 1e-15);
    /// assert!((v[2] + 0.9999779095030014).abs() < 1e-15);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    #[track_caller]
    pub fn erf(self) -> Tensor<'g> {
        self.unary(UnaryOp::Erf)
    }
    /// `softplus(x) = log(1 + e^x)`, on floats, computed stably as
    /// `max(x, 0) + log1p(e^{-|x|})`: `softplus(x) = x` for large `x` (no overflow to `inf`
    /// in `f32` at `x > 88.7`), `≈ e^x` for very negative `x`. Its gradient is `sigmoid(x)`.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// let g = Graph::new();
    /// let x = g.placeholder("x", DType::F32, [3]);
    /// let y = x.softplus();
    /// let mut sess = Session::new(&g)?;
    /// let out = sess.run(&[y], &[(x, Array::new([3], vec![0.0f32, 100.0, -100.0])?)])?;
    /// let v = out[0].to_vec::<f32>()?;
    /// assert!((v[0] - std::f32::consts::LN_2).abs() < 1e-6);
    /// assert_eq!(v[1], 100.0);
    /// assert!(v[2] > 0.0 && v[2] < 1e-43);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    #[track_caller]
    pub fn softplus(self) -> Tensor<'g> {
        self.unary(UnaryOp::Softplus)
    }

    /// An elementwise binary op with numpy broadcasting.
    #[track_caller]
    pub fn binary(self, op: BinaryOp, rhs: impl IntoOperand<'g>) -> Tensor<'g> {
        let rhs = rhs.into_operand(self);
        if !self.graph.same_as(rhs.graph) {
            return self.graph.push(Op::Binary(op), &[self, rhs], None, None);
        }
        let (sa, sb) = (self.shape(), rhs.shape());
        match broadcast_shapes(&sa, &sb) {
            Ok(s) => {
                let a = self.broadcast_to(&s);
                let b = rhs.broadcast_to(&s);
                self.graph.push(Op::Binary(op), &[a, b], None, None)
            }
            Err(m) => self.graph.fail(
                op.name(),
                format!("{m}: {} and {}", self.desc(), rhs.desc()),
            ),
        }
    }

    /// `a ^ b`
    #[track_caller]
    pub fn pow(self, rhs: impl IntoOperand<'g>) -> Tensor<'g> {
        self.binary(BinaryOp::Pow, rhs)
    }
    /// Elementwise maximum.
    #[track_caller]
    pub fn maximum(self, rhs: impl IntoOperand<'g>) -> Tensor<'g> {
        self.binary(BinaryOp::Max, rhs)
    }
    /// Elementwise minimum.
    #[track_caller]
    pub fn minimum(self, rhs: impl IntoOperand<'g>) -> Tensor<'g> {
        self.binary(BinaryOp::Min, rhs)
    }
    /// `a == b`, as `bool`.
    #[track_caller]
    pub fn equal(self, rhs: impl IntoOperand<'g>) -> Tensor<'g> {
        self.binary(BinaryOp::Eq, rhs)
    }
    /// `a != b`, as `bool`.
    #[track_caller]
    pub fn not_equal(self, rhs: impl IntoOperand<'g>) -> Tensor<'g> {
        self.binary(BinaryOp::Ne, rhs)
    }
    /// `a < b`, as `bool`.
    #[track_caller]
    pub fn less(self, rhs: impl IntoOperand<'g>) -> Tensor<'g> {
        self.binary(BinaryOp::Lt, rhs)
    }
    /// `a <= b`, as `bool`.
    #[track_caller]
    pub fn less_equal(self, rhs: impl IntoOperand<'g>) -> Tensor<'g> {
        self.binary(BinaryOp::Le, rhs)
    }
    /// `a > b`, as `bool`.
    #[track_caller]
    pub fn greater(self, rhs: impl IntoOperand<'g>) -> Tensor<'g> {
        self.binary(BinaryOp::Gt, rhs)
    }
    /// `a >= b`, as `bool`.
    #[track_caller]
    pub fn greater_equal(self, rhs: impl IntoOperand<'g>) -> Tensor<'g> {
        self.binary(BinaryOp::Ge, rhs)
    }

    /// `where(self, a, b)` for a `bool` condition. A Rust scalar branch takes the dtype of
    /// the other branch (`f32` if both are scalars).
    #[track_caller]
    pub fn select(self, a: impl IntoOperand<'g>, b: impl IntoOperand<'g>) -> Tensor<'g> {
        let like = match (a.as_tensor(), b.as_tensor()) {
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) => self.graph.scalar(0.0),
        };
        let a = a.into_operand(like);
        let b = b.into_operand(like);
        self.graph.where_(self, a, b)
    }

    /// Converts to another dtype (the tensor itself if it already has `dtype`).
    #[track_caller]
    pub fn cast(self, dtype: DType) -> Tensor<'g> {
        if self.dtype() == dtype {
            return self;
        }
        self.graph.push(Op::Cast(dtype), &[self], None, None)
    }

    /// `assign(self, value)`: after a run that fetches this node (or a [`Graph::group`] that
    /// holds it), the variable `self` holds `value`. The node's output is `value`.
    ///
    /// Reads of the variable in the same run see its old value, and a run may assign each
    /// variable once: updates are applied together when the run ends (see
    /// [`crate::graph::effects`]).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// let g = Graph::new();
    /// let step = g.variable("step", Shape::scalar(), init::zeros());
    /// let inc = step.assign_add(1.0f32);
    /// let mut sess = Session::new(&g)?;
    /// sess.run(&[inc], &[])?;
    /// sess.run(&[inc], &[])?;
    /// assert_eq!(sess.variable(step).unwrap().scalar_value::<f32>()?, 2.0);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    #[track_caller]
    pub fn assign(self, value: impl IntoOperand<'g>) -> Tensor<'g> {
        let v = value.into_operand(self);
        self.graph.push(Op::Assign, &[self, v], None, None)
    }

    /// `assign(self, self + delta)`.
    #[track_caller]
    pub fn assign_add(self, delta: impl IntoOperand<'g>) -> Tensor<'g> {
        let v = self + delta.into_operand(self);
        self.assign(v)
    }

    /// `assign(self, self - delta)`.
    #[track_caller]
    pub fn assign_sub(self, delta: impl IntoOperand<'g>) -> Tensor<'g> {
        let v = self - delta.into_operand(self);
        self.assign(v)
    }

    /// Identity whose gradient is zero.
    #[track_caller]
    pub fn stop_gradient(self) -> Tensor<'g> {
        self.graph.push(Op::StopGradient, &[self], None, None)
    }
}

macro_rules! binop {
    ($tr:ident, $m:ident, $op:ident) => {
        impl<'g, R: IntoOperand<'g>> std::ops::$tr<R> for Tensor<'g> {
            type Output = Tensor<'g>;
            #[track_caller]
            fn $m(self, rhs: R) -> Tensor<'g> {
                self.binary(BinaryOp::$op, rhs)
            }
        }
        impl<'g> std::ops::$tr<Tensor<'g>> for f32 {
            type Output = Tensor<'g>;
            #[track_caller]
            fn $m(self, rhs: Tensor<'g>) -> Tensor<'g> {
                let lhs = self.into_operand(rhs);
                lhs.binary(BinaryOp::$op, rhs)
            }
        }
        impl<'g> std::ops::$tr<Tensor<'g>> for f64 {
            type Output = Tensor<'g>;
            #[track_caller]
            fn $m(self, rhs: Tensor<'g>) -> Tensor<'g> {
                let lhs = self.into_operand(rhs);
                lhs.binary(BinaryOp::$op, rhs)
            }
        }
    };
}
binop!(Add, add, Add);
binop!(Sub, sub, Sub);
binop!(Mul, mul, Mul);
binop!(Div, div, Div);
// `a % b` is C's `fmod`, as Rust's `%` on floats (`BinaryOp::Rem`).
binop!(Rem, rem, Rem);

impl<'g> std::ops::Neg for Tensor<'g> {
    type Output = Tensor<'g>;
    #[track_caller]
    fn neg(self) -> Tensor<'g> {
        self.unary(UnaryOp::Neg)
    }
}
