//! One reverse-mode rule per primitive: given the op, its operands `x`, its output `y` and
//! the gradient `g` flowing into `y`, the gradient flowing into each operand (`None` where no
//! gradient flows: integer and boolean operands, comparisons, `stop_gradient`).
//!
//! Rules are written with the ordinary builder, so gradient nodes are ordinary nodes and
//! every rule is itself differentiable (that is all higher order needs). The match is
//! exhaustive over [`Op`]: a new primitive does not compile until it has a rule here.
//!
//! Composites (softmax, the cross-entropies, `mean`, `relu`) have no rules: their gradients
//! come from their primitives. The stable forms stay stable under differentiation because
//! the max they subtract goes through `stop_gradient` (its true gradient contribution is
//! exactly zero, since `log_softmax` is invariant to the shift), so no `exp` of a large
//! logit is ever formed in the backward pass.

use crate::graph::op::{BinaryOp, ConvKind, Op, PoolKind, ReduceOp, UnaryOp, Window2d};
use crate::graph::Tensor;
use crate::shape::{Dim, Shape};

/// A contribution, built only if the operand needs a gradient (so that, for example, the
/// gradient of `x @ w` with respect to a placeholder `x` is never added to the graph).
pub(super) type Lazy<'g> = Option<Box<dyn FnOnce() -> Tensor<'g> + 'g>>;

fn d<'g>(f: impl FnOnce() -> Tensor<'g> + 'g) -> Lazy<'g> {
    Some(Box::new(f))
}

/// The gradient contribution of `y = op(x...)` to each operand, given `g = dL/dy`.
pub(super) fn vjp<'g>(
    op: &Op,
    x: &[Tensor<'g>],
    y: Tensor<'g>,
    g: Tensor<'g>,
) -> Result<Vec<Lazy<'g>>, String> {
    let one = |t: Lazy<'g>| Ok(vec![t]);
    match op {
        Op::Placeholder | Op::Variable { .. } | Op::Constant(_) | Op::Random { .. } => Ok(vec![]),
        Op::Unary(u) => Ok(vec![unary(*u, x[0], y, g)]),
        Op::Binary(b) => Ok(binary(*b, x[0], x[1], y, g)),
        Op::Where => {
            let c = x[0];
            if !x[1].dtype().is_float() {
                return Ok(vec![None, None, None]);
            }
            Ok(vec![
                None,
                d(move || c.select(g, 0.0)),
                d(move || c.select(0.0, g)),
            ])
        }
        Op::Cast(_) => {
            let a = x[0];
            Ok(vec![if a.dtype().is_float() && y.dtype().is_float() {
                d(move || g.cast(a.dtype()))
            } else {
                None
            }])
        }
        Op::StopGradient | Op::Size { .. } => Ok(vec![None]),
        // An assign's output is its value; the variable operand is only a destination.
        Op::Assign => Ok(vec![None, d(move || g)]),
        Op::Group => Ok(x.iter().map(|_| None).collect()),
        Op::Reduce { op, axes, keepdims } => {
            let (a, op, axes, keepdims) = (x[0], *op, axes.clone(), *keepdims);
            one(d(move || {
                let shape = a.shape();
                let kept = keep_dims(g, &axes, keepdims);
                match op {
                    ReduceOp::Sum => kept.broadcast_to(shape),
                    ReduceOp::Max => {
                        // The gradient is shared equally among the maxima (as TF does on ties).
                        let yk = keep_dims(y, &axes, keepdims).broadcast_to(shape.clone());
                        let mask = a.equal(yk).cast(a.dtype());
                        let ax: Vec<isize> = axes.iter().map(|&i| i as isize).collect();
                        let count = mask.sum(&ax, true);
                        mask * (kept / count).broadcast_to(shape)
                    }
                }
            }))
        }
        Op::Reshape => {
            let a = x[0];
            one(d(move || g.reshape(a.shape())))
        }
        Op::Permute(p) => {
            let mut inv = vec![0; p.len()];
            for (i, &pi) in p.iter().enumerate() {
                inv[pi] = i;
            }
            one(d(move || g.permute(&inv)))
        }
        Op::BroadcastTo => {
            let a = x[0];
            one(d(move || sum_to(g, &a.shape())))
        }
        Op::Slice { begin } => one(slice(begin, x[0], y, g)),
        Op::Pad { lo, .. } => {
            let (a, lo) = (x[0], lo.clone());
            one(d(move || g.slice(&lo, a.shape())))
        }
        Op::Concat { axis } => Ok(concat(*axis, x, g)),
        Op::MatMul => {
            let (a, b) = (x[0], x[1]);
            Ok(vec![
                d(move || g.matmul(b.transpose())),
                d(move || a.transpose().matmul(g)),
            ])
        }
        Op::Conv {
            kind,
            window,
            groups,
        } => Ok(conv(*kind, window, *groups, x, g)),
        Op::Pool { kind, window } => Ok(pool(*kind, window, x, g)),
        // y = Σ over ranks and parts; each rank's loss reads y, so a part's gradient is the
        // sum over ranks of the output's gradient: all_reduce again (JAX's psum rule).
        Op::AllReduce => Ok(x.iter().map(|_| d(move || g.all_reduce())).collect()),
        Op::Fusion(_) => {
            Err("fused kernels have no gradient: differentiate before the fusion pass".into())
        }
    }
}

/// The rule of a unary op (`None` for integer operands).
fn unary<'g>(u: UnaryOp, a: Tensor<'g>, y: Tensor<'g>, g: Tensor<'g>) -> Lazy<'g> {
    if !a.dtype().is_float() {
        return None;
    }
    match u {
        UnaryOp::Neg => d(move || -g),
        UnaryOp::Exp => d(move || g * y),
        UnaryOp::Log => d(move || g / a),
        UnaryOp::Sqrt => d(move || g * 0.5 / y),
        UnaryOp::Recip => d(move || -(g * y * y)),
        UnaryOp::Tanh => d(move || g * (1.0 - y * y)),
        // sign(x) * g, with 0 at 0 (the subgradient TF and JAX choose).
        UnaryOp::Abs => d(move || a.greater(0.0).select(g, a.less(0.0).select(-g, 0.0))),
        UnaryOp::Sigmoid => d(move || g * y * (1.0 - y)),
        // 2/√π e^{-x²}
        UnaryOp::Erf => d(move || g * (-(a * a)).exp() * std::f64::consts::FRAC_2_SQRT_PI),
        UnaryOp::Softplus => d(move || g * a.sigmoid()),
    }
}

/// The rule of a binary op (`None` for comparisons and integer operands).
fn binary<'g>(
    b: BinaryOp,
    a: Tensor<'g>,
    c: Tensor<'g>,
    y: Tensor<'g>,
    g: Tensor<'g>,
) -> Vec<Lazy<'g>> {
    if !a.dtype().is_float() {
        return vec![None, None];
    }
    match b {
        BinaryOp::Add => vec![d(move || g), d(move || g)],
        BinaryOp::Sub => vec![d(move || g), d(move || -g)],
        BinaryOp::Mul => vec![d(move || g * c), d(move || g * a)],
        BinaryOp::Div => vec![d(move || g / c), d(move || -(g * y) / c)],
        // d/da = b a^(b-1); d/db = a^b log a, taken as 0 where a <= 0 (as TF does).
        BinaryOp::Pow => vec![
            d(move || g * c * a.pow(c - 1.0)),
            d(move || g * y * a.greater(0.0).select(a.log(), 0.0)),
        ],
        // a = trunc(a/b)·b + rem: d/da = 1; d/db = −trunc(a/b) = −(a − y)/b, taken piecewise
        // (the quotient's jumps have no derivative), as PyTorch's fmod.
        BinaryOp::Rem => vec![d(move || g), d(move || -(g * (a - y)) / c)],
        // Ties go to the first operand. The mask `y == a` is `a >= c` (for `max`;
        // `a <= c` for `min`), NaNs included, but reads the output: with a constant
        // first operand (`relu` is `max(0, x)`) the backward pass needs only `y`.
        BinaryOp::Max | BinaryOp::Min => vec![
            d(move || y.equal(a).select(g, 0.0)),
            d(move || y.equal(a).select(0.0, g)),
        ],
        // A comparison's output is piecewise constant: no gradient.
        BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
            vec![None, None]
        }
    }
}

/// The pooling family's rules (see the docs of `graph::op::pool`): max and gather route
/// through each window's argmax, average spreads evenly; each kind's gradient is another
/// kind, so every order stays in the family. The argmax is piecewise constant in `x`, so
/// `MaxGrad` and `MaxGather` have a zero derivative with respect to `x` almost everywhere
/// (`None`: nothing flows), as in PyTorch and JAX.
fn pool<'g>(kind: PoolKind, w: &Window2d, x: &[Tensor<'g>], g: Tensor<'g>) -> Vec<Lazy<'g>> {
    let w = w.clone();
    let a = x[0];
    if !a.dtype().is_float() {
        return x.iter().map(|_| None).collect();
    }
    match kind {
        PoolKind::Max => vec![d(move || a.pool_op(PoolKind::MaxGrad, &w, Some(g)))],
        PoolKind::MaxGrad => vec![None, d(move || a.pool_op(PoolKind::MaxGather, &w, Some(g)))],
        PoolKind::MaxGather => vec![None, d(move || a.pool_op(PoolKind::MaxGrad, &w, Some(g)))],
        PoolKind::Avg { count_include_pad } => {
            // The shape rule made `a` NHWC with known height and width.
            let s = a.shape();
            let at = |i: usize| s.dims().get(i).and_then(|d| d.fixed()).unwrap_or(0);
            let hw = [at(1), at(2)];
            let k = PoolKind::AvgGrad {
                count_include_pad,
                input_hw: hw,
            };
            vec![d(move || g.pool_op(k, &w, None))]
        }
        PoolKind::AvgGrad {
            count_include_pad, ..
        } => {
            let k = PoolKind::Avg { count_include_pad };
            vec![d(move || g.pool_op(k, &w, None))]
        }
    }
}

/// `slice`'s rule: pad the gradient back to the operand's shape.
fn slice<'g>(begin: &[usize], x: Tensor<'g>, y: Tensor<'g>, g: Tensor<'g>) -> Lazy<'g> {
    let xs = x.shape();
    let ys = y.shape();
    let hi: Vec<usize> = xs
        .dims()
        .iter()
        .zip(ys.dims())
        .zip(begin)
        .map(|((dx, dy), &b)| match (dx, dy) {
            (Dim::Fixed(n), Dim::Fixed(s)) => n - s - b,
            _ => 0,
        })
        .collect();
    let begin = begin.to_vec();
    d(move || g.pad(&begin, &hi))
}

/// `concat`'s rule: each part's slice of the gradient.
fn concat<'g>(axis: usize, x: &[Tensor<'g>], g: Tensor<'g>) -> Vec<Lazy<'g>> {
    let mut at = 0;
    let mut out = vec![];
    for part in x {
        let s = part.shape();
        let mut begin = vec![0; s.rank()];
        begin[axis] = at;
        at += s.dims()[axis].fixed().unwrap_or(0);
        out.push(d(move || g.slice(&begin, s)));
    }
    out
}

/// `g` with the reduced `axes` reinserted as size-1 axes (a no-op if they were kept).
fn keep_dims<'g>(g: Tensor<'g>, axes: &[usize], keepdims: bool) -> Tensor<'g> {
    if keepdims {
        return g;
    }
    let gs = g.shape();
    let mut dims = gs.dims().iter().copied();
    let rank = gs.rank() + axes.len();
    let shape: Shape = Shape(
        (0..rank)
            .map(|i| {
                if axes.contains(&i) {
                    Dim::Fixed(1)
                } else {
                    dims.next().unwrap_or(Dim::Fixed(1))
                }
            })
            .collect(),
    );
    g.reshape(shape)
}

/// Sums `g` down to `shape`, undoing a numpy broadcast: leading axes are summed away, axes
/// that were 1 are summed with keepdims.
pub(super) fn sum_to<'g>(g: Tensor<'g>, shape: &Shape) -> Tensor<'g> {
    let gs = g.shape();
    if &gs == shape {
        return g;
    }
    let lead = gs.rank() - shape.rank();
    let mut t = g;
    if lead > 0 {
        let axes: Vec<isize> = (0..lead as isize).collect();
        t = t.sum(&axes, false);
    }
    let ts = t.shape();
    let ones: Vec<isize> = shape
        .dims()
        .iter()
        .zip(ts.dims())
        .enumerate()
        .filter(|(_, (want, have))| **want == Dim::Fixed(1) && **have != Dim::Fixed(1))
        .map(|(i, _)| i as isize)
        .collect();
    if !ones.is_empty() {
        t = t.sum(&ones, true);
    }
    t
}

/// The rule of the convolution family, which is closed under it: with `y = Forward(x, w)`,
/// `dx = InputGrad(g, w)` and `dw = FilterGrad(x, g)`; `InputGrad(dy, w)` is linear in both
/// operands, with gradients `Forward(g, w)` and `FilterGrad(g, dy)`; `FilterGrad(x, dy)` has
/// `InputGrad(dy, g)` and `Forward(x, g)`. Every contribution keeps the forward window.
fn conv<'g>(
    kind: ConvKind,
    window: &Window2d,
    groups: usize,
    x: &[Tensor<'g>],
    g: Tensor<'g>,
) -> Vec<Lazy<'g>> {
    let (a, b) = (x[0], x[1]);
    // The spatial size of an NHWC operand (fixed: the shape rule required it).
    let hw = |t: Tensor<'g>| {
        let s = t.shape();
        let at = |i: usize| s.dims().get(i).and_then(|d| d.fixed()).unwrap_or(0);
        [at(1), at(2)]
    };
    let (w1, w2) = (window.clone(), window.clone());
    match kind {
        ConvKind::Forward => vec![
            d(move || g.conv(ConvKind::InputGrad { input_hw: hw(a) }, w1, groups, b)),
            d(move || a.conv(ConvKind::FilterGrad, w2, groups, g)),
        ],
        ConvKind::InputGrad { .. } => vec![
            d(move || g.conv(ConvKind::Forward, w1, groups, b)),
            d(move || g.conv(ConvKind::FilterGrad, w2, groups, a)),
        ],
        ConvKind::FilterGrad => vec![
            d(move || b.conv(ConvKind::InputGrad { input_hw: hw(a) }, w1, groups, g)),
            d(move || a.conv(ConvKind::Forward, w2, groups, g)),
        ],
    }
}
