//! Target 1: random well-typed graphs, the JIT against the interpreter and 1 thread against 2.
//!
//! A graph is a list of *steps*, each an independent seed that picks one op and its operands
//! from the tensors made so far. A step whose op the graph refuses (a shape that does not
//! broadcast, say) is dropped and the graph rebuilt without it, so every graph checks. A
//! failing graph is minimized by deleting steps while the failure stays of the same kind.

use super::compare::{self, Class};
use super::Rng;
use kiln::prelude::*;
use kiln::{BinaryOp, NodeId};

/// One generated case: the steps, the batch size, the input seed, and whether to differentiate.
#[derive(Clone, Debug)]
pub struct Plan {
    /// One seed per op.
    pub steps: Vec<u64>,
    /// The size fed for `?` dimensions.
    pub batch: usize,
    /// Seeds the feeds and variable values.
    pub values: u64,
    /// Whether to add the gradients of a scalar loss to the fetches.
    pub grads: bool,
    /// Whether to leave the placeholder `x` unfed (both backends must then agree on Ok/Err).
    pub unfed: bool,
    /// The length of a long elementwise chain appended to the graph (0: none; rarely a few
    /// thousand, since fusion, autodiff and the passes are iterative: tests/deep.rs).
    pub deep: usize,
}

impl Plan {
    /// The plan for `seed`.
    pub fn new(seed: u64) -> Plan {
        let mut r = Rng::new(seed);
        let n = 1 + r.below(22);
        Plan {
            steps: (0..n).map(|_| r.next()).collect(),
            batch: if r.one_in(12) {
                300
            } else {
                r.pick(&[0, 1, 1, 2, 3, 5, 17])
            },
            values: r.next(),
            grads: r.one_in(3),
            unfed: r.one_in(10),
            deep: if r.one_in(150) {
                1000 + r.below(3000)
            } else {
                0
            },
        }
    }
}

/// A built graph and what to fetch.
pub struct Built {
    /// The graph.
    pub g: Graph,
    /// The fetches: the last few tensors made, then the gradients if any.
    pub outs: Vec<NodeId>,
    /// The steps that were kept (the refused ones dropped).
    pub kept: Vec<u64>,
}

const DTYPES: [DType; 5] = [DType::F32, DType::F32, DType::F64, DType::I32, DType::Bool];
const DIMS: [usize; 7] = [0, 1, 1, 2, 3, 4, 5];

fn random_fixed_shape(r: &mut Rng) -> Vec<usize> {
    (0..r.below(4)).map(|_| r.pick(&DIMS)).collect()
}

fn random_shape(r: &mut Rng) -> Shape {
    let dims = random_fixed_shape(r);
    let mut s: Vec<Dim> = dims.into_iter().map(Dim::Fixed).collect();
    if !s.is_empty() && r.one_in(2) {
        s[0] = Dim::Batch;
    }
    Shape(s.into_iter().collect())
}

/// A random array: small values with occasional specials (±0, ±inf, NaN, subnormals).
pub fn random_array(r: &mut Rng, shape: &[usize], dtype: DType) -> Array {
    let n: usize = shape.iter().product();
    let special = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        f64::INFINITY,
        -f64::INFINITY,
        f64::NAN,
        1e-45,
    ];
    let v: Vec<f64> = (0..n)
        .map(|_| match dtype {
            DType::I32 => r.below(7) as f64 - 3.0,
            DType::Bool => r.below(2) as f64,
            _ if r.one_in(16) => r.pick(&special),
            _ => r.f32() as f64,
        })
        .collect();
    Array::from_f64(dtype, shape.to_vec(), v)
}

/// A tensor of `pool` with `dtype` whose shape broadcasts with `a`'s, or a scalar of `dtype`.
fn partner<'g>(g: &'g Graph, r: &mut Rng, pool: &[NodeId], a: Tensor<'g>) -> Tensor<'g> {
    let ok: Vec<NodeId> = pool
        .iter()
        .copied()
        .filter(|&p| {
            let t = g.tensor(p);
            t.dtype() == a.dtype() && kiln::shape::broadcast_shapes(&t.shape(), &a.shape()).is_ok()
        })
        .collect();
    if !ok.is_empty() && !r.one_in(4) {
        return g.tensor(r.pick(&ok));
    }
    g.scalar_of(a.dtype(), r.below(5) as f64 - 2.0)
}

fn fixed_dims(t: Tensor<'_>) -> Option<Vec<usize>> {
    t.shape().to_fixed()
}

/// Applies one step: the op it picks on operands from `pool`, or `None` if it picked nothing.
fn step<'g>(g: &'g Graph, r: &mut Rng, pool: &[NodeId], k: usize) -> Option<Tensor<'g>> {
    let a = g.tensor(r.pick(pool));
    let float = matches!(a.dtype(), DType::F32 | DType::F64);
    let rank = a.rank();
    let t = match r.below(25) {
        0 => g.placeholder(&format!("p{k}"), r.pick(&DTYPES), random_shape(r)),
        1 => {
            let dt = r.pick(&[DType::F32, DType::F64, DType::I32]);
            g.variable_of(&format!("v{k}"), dt, random_fixed_shape(r), init::zeros())
        }
        2 => {
            let s = random_fixed_shape(r);
            let dt = r.pick(&DTYPES);
            g.constant(random_array(r, &s, dt))
        }
        3 if r.one_in(3) => g.random_uniform(random_shape(r), -1.0, 1.0, r.next() % 9),
        3 if r.one_in(2) => g.random_uniform(random_fixed_shape(r), -1.0, 1.0, r.next() % 9),
        3 => g.random_normal(random_fixed_shape(r), 0.0, 1.0, r.next() % 9),
        4 | 5 if float => match r.below(10) {
            0 => -a,
            1 => a.exp(),
            2 => a.log(),
            3 => a.sqrt(),
            4 => a.recip(),
            5 => a.tanh(),
            6 => a.abs(),
            7 => a.erf(),
            8 => a.softplus(),
            _ => a.sigmoid(),
        },
        4 | 5 if a.dtype() == DType::I32 => {
            if r.one_in(2) {
                -a
            } else {
                a.abs()
            }
        }
        6..=8 if a.dtype() != DType::Bool => {
            use BinaryOp::*;
            // `rem` is float-only (C's fmod).
            let op = if a.dtype().is_float() && r.one_in(14) {
                Rem
            } else {
                r.pick(&[Add, Sub, Mul, Div, Pow, Max, Min, Eq, Ne, Lt, Le, Gt, Ge])
            };
            a.binary(op, partner(g, r, pool, a))
        }
        9 => {
            let c = match a.dtype() {
                DType::Bool => a,
                _ => a.greater(partner(g, r, pool, a)),
            };
            let x = g.tensor(r.pick(pool));
            let y = partner(g, r, pool, x);
            g.where_(c, x, y)
        }
        10 => a.cast(r.pick(&DTYPES[1..])),
        11 if rank > 0 && a.dtype() != DType::Bool => {
            let axes: Vec<isize> = (0..rank as isize).filter(|_| r.one_in(2)).collect();
            let keep = r.one_in(2);
            if r.one_in(2) {
                a.sum(&axes, keep)
            } else {
                a.max(&axes, keep)
            }
        }
        12 => reshape(r, a)?,
        13 if rank > 0 => {
            let mut p: Vec<usize> = (0..rank).collect();
            for i in (1..rank).rev() {
                p.swap(i, r.below(i + 1));
            }
            a.permute(&p)
        }
        14 => {
            let mut s: Vec<Dim> = a.shape().dims().to_vec();
            for d in s.iter_mut() {
                if *d == Dim::Fixed(1) && r.one_in(2) {
                    *d = Dim::Fixed(r.pick(&DIMS));
                }
            }
            if r.one_in(2) {
                s.insert(0, Dim::Fixed(r.pick(&DIMS)));
            }
            a.broadcast_to(Shape(s.into_iter().collect()))
        }
        15 if rank > 0 => {
            let mut begin = vec![];
            let mut size = vec![];
            for &d in a.shape().dims() {
                match d {
                    Dim::Batch => {
                        begin.push(0);
                        size.push(Dim::Batch);
                    }
                    Dim::Fixed(n) => {
                        let b = r.below(n + 1);
                        begin.push(b);
                        size.push(Dim::Fixed(r.below(n - b + 1)));
                    }
                }
            }
            a.slice(&begin, Shape(size.into_iter().collect()))
        }
        16 if rank > 0 => {
            let lo: Vec<usize> = (0..rank).map(|_| r.below(3)).collect();
            let hi: Vec<usize> = (0..rank).map(|_| r.below(3)).collect();
            a.pad(&lo, &hi)
        }
        17 if rank > 0 => {
            let b = partner(g, r, pool, a);
            let b = if b.shape() == a.shape() { b } else { a };
            g.concat(&[a, b], r.below(rank) as isize)
        }
        18 | 19 if rank > 0 && a.dtype() != DType::Bool => {
            let kdim = a.shape().dims()[rank - 1];
            let n = r.pick(&DIMS);
            let mut s: Vec<Dim> = vec![kdim, Dim::Fixed(n)];
            if rank == 3 && r.one_in(2) {
                s.insert(0, a.shape().dims()[0]);
            }
            let s = Shape(s.into_iter().collect());
            let b = if s.has_batch() {
                g.placeholder(&format!("m{k}"), a.dtype(), s)
            } else {
                g.variable_of(&format!("m{k}"), a.dtype(), s, init::zeros())
            };
            a.matmul(b)
        }
        20 if rank > 0 => {
            let axes: Vec<isize> = (0..rank as isize).filter(|_| r.one_in(2)).collect();
            a.size(&axes)
        }
        21 => pooling(g, r, a, k),
        22 | 23 => convolution(g, r, a, k),
        _ => a.stop_gradient(),
    };
    Some(t)
}

/// Max or average pooling with a random window, of `a` if it is a float NHWC image batch,
/// else of a new one (`q{k}`, batch open, times the sum of `|a|`); a window the shape rule
/// refuses drops the step.
fn pooling<'g>(g: &'g Graph, r: &mut Rng, a: Tensor<'g>, k: usize) -> Tensor<'g> {
    use kiln::{Padding, Pool2dOptions};
    let s = a.shape();
    let image = a.rank() == 4
        && matches!(a.dtype(), DType::F32 | DType::F64)
        && s.dims()[1..]
            .iter()
            .all(|d| d.fixed().is_some_and(|n| n > 0));
    let x = if image {
        a
    } else {
        let dims = [
            None,
            Some(1 + r.below(5)),
            Some(1 + r.below(5)),
            Some(1 + r.below(3)),
        ];
        // Scaled by the sum of `|a|`, so gradients reach `a`'s sources through the pooling
        // (of magnitudes: a sum that cancels, of `i32::MAX` and `MIN` cast from infinities,
        // has no relative accuracy, and the backends' sums would differ by more than the
        // comparison allows).
        g.placeholder(&format!("q{k}"), DType::F32, dims) * a.cast(DType::F32).abs().sum_all()
    };
    let mut o = Pool2dOptions::new([1 + r.below(3), 1 + r.below(3)])
        .strides([1 + r.below(2), 1 + r.below(2)])
        .count_include_pad(r.one_in(2));
    o.padding = match r.below(3) {
        0 => Padding::Valid,
        1 => Padding::Same,
        _ => Padding::Explicit([(r.below(2), r.below(2)), (r.below(2), r.below(2))]),
    };
    if r.one_in(2) {
        x.max_pool2d(&o)
    } else {
        x.avg_pool2d(&o)
    }
}

/// A 2-D convolution with a random window, groups and layout, of `a` if it is a float NHWC
/// image batch, else of a new one (`c{k}`, batch open, times the mean of `|a|`, as
/// [`pooling`] scales by the sum). The filter is a new variable (`w{k}`) times it too, so that
/// the gradients of `a`'s sources pass through both operands: the input gradient and the
/// filter gradient kinds. Small sizes, with the special cases the backends treat apart:
/// depthwise (`groups == C`), 1x1 stride 1 unpadded (one gemm), and NCHW (permutes around).
/// A window the shape rule refuses drops the step.
fn convolution<'g>(g: &'g Graph, r: &mut Rng, a: Tensor<'g>, k: usize) -> Tensor<'g> {
    use kiln::{Conv2dOptions, DataFormat, Padding};
    let s = a.shape();
    let nhwc_image = a.rank() == 4
        && matches!(a.dtype(), DType::F32 | DType::F64)
        && s.dims()[1..]
            .iter()
            .all(|d| d.fixed().is_some_and(|n| n > 0));
    let dtype = if nhwc_image { a.dtype() } else { DType::F32 };
    // The mean of `|a|` (about 1), not the sum: both operands are scaled, and with a sum
    // in the thousands the products reach millions, whose f32 rounding in the JIT's gemm
    // (the interpreter sums in f64) is more than the comparison allows of a result that
    // cancels to tens (a false alarm at graphs seed 11035031).
    let all: Vec<isize> = (0..a.rank() as isize).collect();
    let count = a.size(&all).cast(dtype) + 1.0;
    // (times the reciprocal: a division of a sum is not compared by value, see compare.rs)
    let scale = a.cast(dtype).abs().sum_all() * count.recip();
    let (x, c) = if nhwc_image && r.one_in(2) {
        (a, s.dims()[3].fixed().unwrap_or(1))
    } else {
        let c = 1 + r.below(4);
        let dims = [None, Some(1 + r.below(6)), Some(1 + r.below(6)), Some(c)];
        (g.placeholder(&format!("c{k}"), dtype, dims) * scale, c)
    };
    let groups = match r.below(3) {
        0 => c,
        1 => r.pick(&[1, 2, 3]),
        _ => 1,
    };
    let out = groups * (1 + r.below(3));
    let one_by_one = r.one_in(5);
    let kernel = if one_by_one {
        [1, 1]
    } else {
        [1 + r.below(3), 1 + r.below(3)]
    };
    let mut o = Conv2dOptions::new().groups(groups);
    if !one_by_one {
        o = o
            .strides(1 + r.below(3), 1 + r.below(2))
            .dilations(1 + r.below(2), 1 + r.below(2));
        o.padding = match r.below(3) {
            0 => Padding::Valid,
            1 => Padding::Same,
            _ => Padding::Explicit([(r.below(3), r.below(2)), (r.below(2), r.below(3))]),
        };
    }
    let w = g.variable_of(
        &format!("w{k}"),
        dtype,
        [kernel[0], kernel[1], c / groups.max(1), out],
        init::zeros(),
    ) * scale;
    if r.one_in(4) {
        o = o.format(DataFormat::Nchw);
        x.permute(&[0, 3, 1, 2])
            .conv2d(w.permute(&[3, 2, 0, 1]), &o)
            .permute(&[0, 2, 3, 1])
    } else {
        x.conv2d(w, &o)
    }
}

/// `n` elementwise ops on `y` (f32): exact ones with scalars (`+ - *`, `neg`, `abs`,
/// `maximum`, as tests/deep.rs chains them, so long stretches fuse into kernels cut at
/// fusion's size cap), and every 97th op a binary op with a tensor of `pool` that
/// broadcasts with `y`, so the chain joins the rest of the graph. Rounding is the same on
/// both backends, so the chain keeps its operands' class.
fn chain<'g>(
    g: &'g Graph,
    r: &mut Rng,
    pool: &[NodeId],
    mut y: Tensor<'g>,
    n: usize,
) -> Tensor<'g> {
    for i in 0..n {
        y = match r.below(8) {
            _ if i % 97 == 96 => {
                let p = partner(g, r, pool, y);
                let p = if p.shape() == y.shape() || p.rank() == 0 {
                    p
                } else {
                    y
                };
                y * 0.5f32 + p
            }
            0 => y * 0.75f32,
            1 => y + 0.5f32,
            2 => y - 0.25f32,
            3 => -y,
            4 => y.maximum(-3.0f32),
            5 => y.abs(),
            6 => y * 1.5f32,
            _ => y * 0.666_666_7f32 + 0.125f32,
        };
    }
    y
}

/// A reshape to a random factorization of the element count (the `?` dimension kept).
fn reshape<'g>(r: &mut Rng, a: Tensor<'g>) -> Option<Tensor<'g>> {
    let dims = a.shape().dims().to_vec();
    let batch = dims.first() == Some(&Dim::Batch);
    let rest: usize = dims
        .iter()
        .skip(batch as usize)
        .map(|d| d.fixed().unwrap_or(1))
        .product();
    let mut out = vec![];
    if rest > 1 && !r.one_in(3) {
        let mut left = rest;
        while left > 1 {
            let f = (2..=left).find(|f| left.is_multiple_of(*f))?;
            let f = if r.one_in(2) { f } else { left };
            out.push(Dim::Fixed(f));
            left /= f;
        }
    } else if rest != 1 || r.one_in(2) {
        out.push(Dim::Fixed(rest));
    }
    if r.one_in(4) {
        out.insert(r.below(out.len() + 1), Dim::Fixed(1));
    }
    if batch {
        out.insert(0, Dim::Batch);
    }
    Some(a.reshape(Shape(out.into_iter().collect())))
}

/// Builds the graph of `plan`, dropping each step the graph refuses.
pub fn build(plan: &Plan) -> Built {
    let mut steps = plan.steps.clone();
    'retry: loop {
        let g = Graph::new();
        let mut pool = vec![g.placeholder("x", DType::F32, [None, Some(3)]).id()];
        for (k, &s) in steps.iter().enumerate() {
            let before = g.data().errors().len();
            let t = step(&g, &mut Rng::new(s), &pool, k);
            if g.data().errors().len() != before {
                steps.remove(k);
                continue 'retry;
            }
            pool.extend(t.map(|t| t.id()));
        }
        if plan.deep > 0 {
            let mut r = Rng::new(plan.values ^ 0xdee9);
            let f32s: Vec<NodeId> = pool
                .iter()
                .copied()
                .filter(|&p| g.tensor(p).dtype() == DType::F32)
                .collect();
            let start = g.tensor(r.pick(&f32s));
            let end = chain(&g, &mut r, &pool, start, plan.deep);
            pool.push(end.id());
        }
        let mut outs: Vec<NodeId> = pool.iter().rev().take(3).copied().collect();
        if plan.grads {
            add_grads(&g, &pool, &mut outs);
        }
        return Built {
            g,
            outs,
            kept: steps,
        };
    }
}

/// Adds the gradients of the sum of the f32 fetches with respect to every f32 source, if the
/// graph can differentiate them (a refused gradient is left out).
fn add_grads(g: &Graph, pool: &[NodeId], outs: &mut Vec<NodeId>) {
    let f32s: Vec<Tensor<'_>> = outs
        .iter()
        .map(|&o| g.tensor(o))
        .filter(|t| t.dtype() == DType::F32)
        .collect();
    let params: Vec<Tensor<'_>> = pool
        .iter()
        .map(|&p| g.tensor(p))
        .filter(|t| {
            t.dtype() == DType::F32
                && matches!(
                    g.data().node(t.id()).op,
                    Op::Placeholder | Op::Variable { .. }
                )
        })
        .collect();
    let Some(first) = f32s.first() else { return };
    let loss = f32s[1..]
        .iter()
        .fold(first.sum_all(), |l, t| l + t.sum_all());
    if g.check().is_err() {
        return;
    }
    if let Ok(gs) = grad(loss, &params) {
        if g.check().is_ok() {
            outs.extend(gs.iter().map(|t| t.id()));
        }
    }
}

use kiln::Op;

/// Runs `plan` and checks the backends against each other; `Ok(true)` if both ran it.
pub fn check(plan: &Plan) -> Result<bool, String> {
    let b = build(plan);
    let classes = compare::classify(&b.g.snapshot());
    let out_classes: Vec<Class> = b.outs.iter().map(|o| classes[o]).collect();
    compare::run_all(&b.g, &b.outs, &out_classes, plan)
}

/// The kind of a failure message (its first line up to ':'), so shrinking keeps the same bug.
fn kind(msg: &str) -> &str {
    msg.split(':').next().unwrap_or(msg)
}

/// Deletes steps of a failing `plan` while it keeps failing the same way.
pub fn shrink(plan: &Plan, failure: &str) -> (Plan, String) {
    let mut best = Plan {
        steps: build(plan).kept,
        ..plan.clone()
    };
    let mut msg = failure.to_string();
    let mut changed = true;
    while changed {
        changed = false;
        for i in (0..best.steps.len()).rev() {
            let mut p = best.clone();
            p.steps.remove(i);
            if let Err(m) = super::no_panic("shrink", || check(&p)).and_then(|r| r) {
                if kind(&m) == kind(failure) {
                    best = p;
                    msg = m;
                    changed = true;
                }
            }
        }
        if best.deep > 0 {
            let p = Plan {
                deep: 0,
                ..best.clone()
            };
            if let Err(m) = super::no_panic("shrink", || check(&p)).and_then(|r| r) {
                if kind(&m) == kind(failure) {
                    best = p;
                    msg = m;
                    changed = true;
                }
            }
        }
        if best.grads {
            let p = Plan {
                grads: false,
                ..best.clone()
            };
            if let Err(m) = super::no_panic("shrink", || check(&p)).and_then(|r| r) {
                if kind(&m) == kind(failure) {
                    best = p;
                    msg = m;
                    changed = true;
                }
            }
        }
    }
    (best, msg)
}

/// The target: one random graph.
pub fn case(seed: u64) -> Result<(), String> {
    let plan = Plan::new(seed);
    let r = super::no_panic("graph", || check(&plan)).and_then(|r| r);
    let Err(e) = r else { return Ok(()) };
    let (small, msg) = shrink(&plan, &e);
    let b = build(&small);
    Err(format!(
        "{e}\nminimized: {msg}\nbatch {}, x unfed: {}, chain {}, values seed {}, fetches {:?}\n{}",
        small.batch,
        small.unfed,
        small.deep,
        small.values,
        b.outs,
        b.g.dump()
    ))
}
