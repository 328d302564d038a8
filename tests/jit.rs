//! The JIT against the interpreter: transcendental accuracy over the f32 range, every op at
//! sizes 0, 1, 3, 4, 5, 17 and 1023, random graphs (batch 0 included), empty dimensions, leaks
//! and concurrency.

mod common;

use common::*;
use kiln::internals::Executable;
use kiln::passes::{Pipeline, Program};
use kiln::prelude::*;

/// Distance in units in the last place between two f32s (0 for equal, NaN==NaN).
fn ulps(a: f32, b: f32) -> u64 {
    if a.is_nan() && b.is_nan() {
        return 0;
    }
    if a.is_nan() || b.is_nan() {
        return u64::MAX;
    }
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            -(i & 0x7fff_ffff) as i64
        } else {
            i as i64
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

fn compile(g: &Graph, outs: &[Tensor<'_>], batch: usize) -> Executable {
    let mut p = Program::new(g.snapshot(), outs.iter().map(|t| t.id()).collect());
    let mut pl = Pipeline::default();
    pl.options.batch = Some(batch);
    pl.run(&mut p).unwrap();
    Executable::compile(&p).unwrap()
}

/// Runs `f` on the JIT and the interpreter (f64 reference, rounded to f32) over `xs`.
fn unary_sweep(name: &str, xs: &[f32], f: impl for<'g> Fn(Tensor<'g>) -> Tensor<'g>) -> (u64, f32) {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None]);
    let y = f(x);
    let exe = compile(&g, &[y], xs.len());
    let xa = Array::new([xs.len()], xs.to_vec()).unwrap();
    let got = exe.run(&[&xa], &[], 0).unwrap()[0].to_vec::<f32>().unwrap();
    let mut interp = Interpreter::new(&g).unwrap();
    let want = interp.run(&[y], &[(x, xa)]).unwrap()[0]
        .to_vec::<f32>()
        .unwrap();
    let mut worst = (0u64, 0.0f32);
    for ((&a, &b), &x) in got.iter().zip(&want).zip(xs) {
        assert_eq!(a.is_nan(), b.is_nan(), "{name}({x:e}): {a} vs {b}");
        if b.is_infinite() || a.is_infinite() {
            assert_eq!(a, b, "{name}({x:e})");
            continue;
        }
        // Subnormal results: at most one subnormal step away.
        if b.abs() < f32::MIN_POSITIVE {
            assert!(
                (a - b).abs() <= 2.0 * f32::from_bits(1),
                "{name}({x:e}): {a:e} vs {b:e}"
            );
            continue;
        }
        let u = ulps(a, b);
        if u > worst.0 {
            worst = (u, x);
        }
    }
    worst
}

fn sweep_inputs(step: u32) -> Vec<f32> {
    let mut v: Vec<f32> = (0..u32::MAX / step)
        .map(|i| f32::from_bits(i * step))
        .collect();
    v.extend([
        0.0,
        -0.0,
        f32::from_bits(1),
        -f32::from_bits(1),
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        88.72,
        88.73,
        -87.33,
        -103.9,
        -104.0,
        1.0,
        0.625,
        -0.625,
        9.0,
    ]);
    v
}

/// The documented error bounds of `src/jit/math.rs`, checked over a sweep of every 251st
/// f32 bit pattern (17M values, all signs and exponents) plus the special values.
#[test]
fn transcendentals_match_f64() {
    let xs = sweep_inputs(251);
    type Op1 = fn(Tensor<'_>) -> Tensor<'_>;
    let cases: [(&str, u64, Op1); 4] = [
        ("exp", 2, |x| x.exp()),
        ("log", 2, |x| x.log()),
        ("tanh", 4, |x| x.tanh()),
        ("sigmoid", 4, |x| x.sigmoid()),
    ];
    for (name, bound, f) in cases {
        let (u, at) = unary_sweep(name, &xs, f);
        println!("{name}: max {u} ulp at {at:e}");
        assert!(u <= bound, "{name}: {u} ulp at x = {at:e} (bound {bound})");
    }
}

/// How far apart two results of one op may be, from the documented errors.
#[derive(Clone, Copy, Debug)]
enum Tol {
    /// IEEE-exact ops: bitwise equal.
    Exact,
    /// A transcendental: this many ulp.
    Ulp(u64),
    /// A sum of `n` products or terms accumulated in f32: `n · 2⁻²⁴ · Σ|terms|`, bounded
    /// here by `n · 2⁻²⁴ · n · max|term|` with inputs in [-2, 2].
    Sum(usize),
}

fn close(a: &Array, b: &Array, tol: Tol, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    if a.dtype() != DType::F32 {
        assert!(a.bits_eq(b), "{what}: {a:?} vs {b:?}");
        return;
    }
    let (x, y) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    for (i, (&p, &q)) in x.iter().zip(&y).enumerate() {
        let ok = match tol {
            Tol::Exact => p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()),
            Tol::Ulp(n) => ulps(p, q) <= n || (p - q).abs() <= 1e-30,
            Tol::Sum(n) => {
                let bound = (n * n) as f32 * 4.0 * f32::EPSILON / 2.0 + 1e-6;
                (p - q).abs() <= bound || (p.is_nan() && q.is_nan())
            }
        };
        assert!(ok, "{what}[{i}]: jit {p:e} vs interpreter {q:e} ({tol:?})");
    }
}

fn random_f32(rng: &mut Rng, shape: &[usize], positive: bool) -> Array {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let x = rng.f32();
            if positive {
                x.abs() + 0.1
            } else {
                x
            }
        })
        .collect();
    Array::new(shape, v).unwrap()
}

/// Every op, alone, at every size, with broadcasting in both directions.
#[test]
fn every_op_matches_the_interpreter() {
    type Build = for<'g> fn(&'g Graph, Tensor<'g>, Tensor<'g>) -> Tensor<'g>;
    let cases: Vec<(&str, Build, Tol, bool)> = vec![
        ("neg", |_, a, _| -a, Tol::Exact, false),
        ("abs", |_, a, _| a.abs(), Tol::Exact, false),
        ("sqrt", |_, a, _| a.sqrt(), Tol::Exact, true),
        ("recip", |_, a, _| a.recip(), Tol::Exact, true),
        ("exp", |_, a, _| a.exp(), Tol::Ulp(2), false),
        ("log", |_, a, _| a.log(), Tol::Ulp(2), true),
        ("tanh", |_, a, _| a.tanh(), Tol::Ulp(4), false),
        ("sigmoid", |_, a, _| a.sigmoid(), Tol::Ulp(4), false),
        ("add", |_, a, b| a + b, Tol::Exact, false),
        ("sub", |_, a, b| a - b, Tol::Exact, false),
        ("mul", |_, a, b| a * b, Tol::Exact, false),
        ("div", |_, a, b| a / b, Tol::Exact, true),
        ("pow", |_, a, b| a.pow(b), Tol::Exact, true),
        ("maximum", |_, a, b| a.maximum(b), Tol::Exact, false),
        ("minimum", |_, a, b| a.minimum(b), Tol::Exact, false),
        (
            "lt_select",
            |_, a, b| a.less(b).select(a, b * 2.0),
            Tol::Exact,
            false,
        ),
        (
            "ge_cast",
            |_, a, b| a.greater_equal(b).cast(DType::F32),
            Tol::Exact,
            false,
        ),
        (
            "eq_ne",
            |_, a, b| a.equal(a).cast(DType::F32) + a.not_equal(b).cast(DType::F32),
            Tol::Exact,
            false,
        ),
        (
            "cast_i32",
            |_, a, _| (a * 10.0).cast(DType::I32).cast(DType::F32),
            Tol::Exact,
            false,
        ),
        (
            "int_ops",
            |_, a, b| {
                let (i, j) = ((a * 10.0).cast(DType::I32), (b * 10.0).cast(DType::I32));
                ((i + j) * j - i.maximum(j) + i.minimum(j).abs()).cast(DType::F32)
            },
            Tol::Exact,
            false,
        ),
        (
            "int_div",
            |_, a, b| {
                ((a * 10.0).cast(DType::I32) / ((b * 3.0).cast(DType::I32) + 7)).cast(DType::F32)
            },
            Tol::Exact,
            true,
        ),
        (
            "sum_last",
            |_, a, _| a.sum(&[-1], false),
            Tol::Sum(1023),
            false,
        ),
        (
            "sum_first",
            |_, a, _| a.sum(&[0], true),
            Tol::Sum(17),
            false,
        ),
        ("max_last", |_, a, _| a.max(&[-1], true), Tol::Exact, false),
        ("max_first", |_, a, _| a.max(&[0], false), Tol::Exact, false),
        ("softmax", |_, a, _| a.softmax(-1), Tol::Sum(1023), false),
        (
            "transpose",
            |_, a, _| a.transpose().exp(),
            Tol::Ulp(2),
            false,
        ),
        (
            "slice",
            |_, a, _| a.narrow(0, 0, 1) * 2.0,
            Tol::Exact,
            false,
        ),
        ("pad", |_, a, _| a.pad(&[0, 1], &[0, 2]), Tol::Exact, false),
        ("concat", |g, a, b| g.concat(&[a, b], 1), Tol::Exact, false),
        (
            "reshape",
            |_, a, _| a.reshape([None, Some(1)]).reshape(a.shape()) + 1.0,
            Tol::Exact,
            false,
        ),
        (
            "matmul",
            |_, a, b| a.matmul(b.transpose()),
            Tol::Sum(1023),
            false,
        ),
        (
            "matmul_t",
            |_, a, b| a.transpose().matmul(b),
            Tol::Sum(17),
            false,
        ),
        (
            "random",
            |g, a, _| a * g.random_uniform(a.shape(), 0.0, 1.0, 3),
            Tol::Exact,
            false,
        ),
    ];
    let mut rng = Rng(99);
    for n in [0usize, 1, 3, 4, 5, 17, 1023] {
        for &(name, build, tol, positive) in &cases {
            for (rows, bshape) in [(3usize, vec![None, Some(n)]), (2, vec![Some(n)])] {
                let g = Graph::new();
                let a = g.placeholder("a", DType::F32, [None, Some(n)]);
                let b = g.placeholder(
                    "b",
                    DType::F32,
                    kiln::Shape(bshape.iter().map(|&d| Dim::from(d)).collect()),
                );
                let y = build(&g, a, b);
                if g.check().is_err() {
                    continue; // a shape this op does not take (matmul of a broadcast operand)
                }
                let av = random_f32(&mut rng, &[rows, n], positive);
                let bshape_c: Vec<usize> = bshape.iter().map(|d| d.unwrap_or(rows)).collect();
                let bv = random_f32(&mut rng, &bshape_c, positive);
                let mut jit = Session::new(&g).unwrap();
                let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
                let feeds = [(a, av), (b, bv)];
                let (j, i) = match (jit.run(&[y], &feeds), interp.run(&[y], &feeds)) {
                    (Ok(j), Ok(i)) => {
                        assert_native(&jit, name);
                        (j, i)
                    }
                    (Err(e), Err(f)) => {
                        assert_eq!(e.to_string(), f.to_string());
                        continue;
                    }
                    (j, i) => panic!("{name} n={n}: jit {j:?} vs interpreter {i:?}"),
                };
                close(&j[0], &i[0], tol, &format!("{name} n={n} b={bshape:?}"));
            }
        }
    }
}

/// Random graphs: chains of up to 15 ops, each within a few ulp; cancellation in `a - b`
/// can magnify a relative error by the ratio of operand to result, so the bound is absolute
/// on values of order 1: 15 ops × 4 ulp × 2⁻²⁴ × (condition ≤ 16) ≈ 6e-5.
#[test]
fn random_graphs_match_the_interpreter() {
    for seed in 0..80 {
        // Half of them with pads, concats and views at random places.
        let (g, outs) = if seed < 40 {
            random_graph(seed)
        } else {
            random_view_graph(seed)
        };
        for batch in [0usize, 1, 3, 4, 5, 17] {
            let (feeds, vars) = inputs(&g, batch, seed);
            let fetch: Vec<Tensor<'_>> = outs.iter().map(|&o| g.tensor(o)).collect();
            let mut jit = Session::new(&g).unwrap();
            let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
            for (id, v) in &vars {
                jit.set_variable(g.tensor(*id), v.clone()).unwrap();
                interp.set_variable(g.tensor(*id), v.clone()).unwrap();
            }
            let fd: Vec<(Tensor<'_>, Array)> = feeds
                .iter()
                .map(|(id, a)| (g.tensor(*id), a.clone()))
                .collect();
            let j = jit.run(&fetch, &fd).unwrap();
            assert_native(&jit, &format!("seed {seed}"));
            let i = interp.run(&fetch, &fd).unwrap();
            for (k, (a, b)) in j.iter().zip(&i).enumerate() {
                let (x, y) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
                for (p, q) in x.iter().zip(&y) {
                    let ok = (p - q).abs() <= 6e-5 * (1.0 + q.abs()) || (p.is_nan() && q.is_nan());
                    assert!(
                        ok,
                        "seed {seed} batch {batch} output {k}: {p} vs {q}\n{}",
                        g.dump()
                    );
                }
            }
        }
    }
}

/// The MLP training step (forward, gradients, SGD) on the JIT equals the interpreter.
#[test]
fn training_step_matches_the_interpreter() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(20)]);
    let y = g.placeholder("y", DType::I32, [None]);
    let w1 = g.variable("w1", [20, 16], init::glorot_uniform(1));
    let b1 = g.variable("b1", [16], init::zeros());
    let w2 = g.variable("w2", [16, 5], init::glorot_uniform(2));
    let b2 = g.variable("b2", [5], init::zeros());
    let logits = (x.matmul(w1) + b1).relu().matmul(w2) + b2;
    let loss = logits
        .sparse_softmax_cross_entropy_with_logits(y)
        .mean_all();
    let params = [w1, b1, w2, b2];
    let grads = kiln::autodiff::grad(loss, &params).unwrap();
    let mut fetch = vec![loss];
    fetch.extend(params.iter().zip(&grads).map(|(&w, &d)| w - d * 0.1));
    let mut rng = Rng(5);
    let xv = random_f32(&mut rng, &[33, 20], false);
    let yv = Array::new([33], (0..33).map(|i: i32| i % 5).collect::<Vec<_>>()).unwrap();
    let mut jit = Session::new(&g).unwrap();
    let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
    let feeds = [(x, xv), (y, yv)];
    let j = jit.run(&fetch, &feeds).unwrap();
    let i = interp.run(&fetch, &feeds).unwrap();
    for (a, b) in j.iter().zip(&i) {
        close(a, b, Tol::Sum(33), "training step");
    }
}

/// One executable run from 8 threads at once gives what sequential runs give.
#[test]
fn one_executable_runs_concurrently() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(32)]);
    let w = g.variable("w", [32, 8], init::glorot_uniform(4));
    let y = x.matmul(w).tanh().sum(&[1], false);
    let exe = compile(&g, &[y], 16);
    let wv = init::glorot_uniform(4).fill(DType::F32, &[32, 8]);
    let inputs: Vec<Array> = (0..8)
        .map(|t| random_f32(&mut Rng(t + 1), &[16, 32], false))
        .collect();
    let sequential: Vec<Array> = inputs
        .iter()
        .map(|xv| exe.run(&[xv], &[&wv], 0).unwrap().remove(0))
        .collect();
    let concurrent: Vec<Array> = std::thread::scope(|s| {
        let hs: Vec<_> = inputs
            .iter()
            .map(|xv| {
                let (exe, wv) = (&exe, &wv);
                s.spawn(move || {
                    let mut last = None;
                    for _ in 0..50 {
                        last = Some(exe.run(&[xv], &[wv], 0).unwrap().remove(0));
                    }
                    last.unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (a, b) in sequential.iter().zip(&concurrent) {
        assert!(a.bits_eq(b));
    }
}

#[test]
fn feeds_are_checked_before_native_code_runs() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let y = g.placeholder("y", DType::I32, [None]);
    let z = g.placeholder("training", DType::Bool, Shape::scalar());
    let out = x.sum(&[1], false) + y.cast(DType::F32) + z.cast(DType::F32);
    let mut s = Session::new(&g).unwrap();
    let e = s.run(&[out], &[]).unwrap_err().to_string();
    assert_eq!(
        e,
        r#"run: 3 placeholders were not fed: "x" (f32[?,3]), "y" (i32[?]), "training" (bool[])"#
    );
    let xv = Array::new([2, 4], vec![0.0f32; 8]).unwrap();
    let e = s.run(&[out], &[(x, xv)]).unwrap_err().to_string();
    assert!(
        e.contains("placeholder") || e.contains("expects f32[?,3]"),
        "{e}"
    );
}

/// Empty dimensions, where a shape allows them: a batch of 0 rows through elementwise ops,
/// broadcasts, reductions over and across the empty axis, matmuls and a softmax; and a
/// reduction whose reduced axis is empty (sum 0, max -inf).
#[test]
fn empty_dimensions_match_the_interpreter() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(5)]);
    let e = g.placeholder("e", DType::F32, [Some(3), Some(0)]);
    let w = g.variable("w", [5, 4], init::glorot_uniform(9));
    let h = (x.matmul(w) + 1.0f32).tanh();
    let outs = [
        h,
        h.sum(&[0], false),            // over the empty axis: zeros
        h.max(&[0], false),            // over the empty axis: -inf
        h.sum(&[1], false),            // across it: an empty result
        h.softmax(-1),                 // a composite
        x.transpose_if_2d().matmul(x), // k = 0: a zero matrix
        e.sum(&[1], false),            // a fixed empty axis
        e.max(&[1], true),
        e.exp(),
    ];
    let ids: Vec<_> = outs.to_vec();
    let xv = Array::new([0, 5], Vec::<f32>::new()).unwrap();
    let ev = Array::new([3, 0], Vec::<f32>::new()).unwrap();
    let mut jit = Session::new(&g).unwrap();
    let mut it = Session::with_backend(&g, Backend::Interpreter).unwrap();
    let feeds = [(x, xv), (e, ev)];
    let j = jit.run(&ids, &feeds).unwrap();
    let i = it.run(&ids, &feeds).unwrap();
    for (k, (a, b)) in j.iter().zip(&i).enumerate() {
        close(a, b, Tol::Exact, &format!("output {k}"));
    }
    assert_eq!(j[1].to_vec::<f32>().unwrap(), vec![0.0; 4]);
    assert_eq!(j[2].to_vec::<f32>().unwrap(), vec![f32::NEG_INFINITY; 4]);
    assert_eq!(j[5].to_vec::<f32>().unwrap(), vec![0.0; 25]);
    assert_eq!(j[7].shape(), &[3, 1]);
}

/// `run_into` overwrites the arrays it is given (no new output buffers after the first run),
/// a repeated fetch is a copy (the last position keeps the buffer), fetched sources come
/// back as they are, and an update writes each variable into its previous buffer (double
/// buffering), also when the assign itself is fetched.
#[test]
fn run_into_reuses_outputs_and_variables_alternate_buffers() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4]);
    let w = g.variable("w", [4], init::ones());
    let y = (x * w).exp();
    let train = w.assign(w - x * 0.5);
    let mut s = Session::new(&g).unwrap();
    let ptr = |a: &Array| a.as_slice::<f32>().unwrap().as_ptr();
    let mut out = vec![];
    let mut seen = vec![];
    for step in 0..3 {
        let xv = Array::new([4], vec![step as f32, 1.0, -1.0, 0.5]).unwrap();
        let want = s.run(&[y], &[(x, xv.clone())]).unwrap();
        s.run_into(&[y, x, y, w], &[(x, xv.clone())], &mut out)
            .unwrap();
        assert!(out[0].bits_eq(&want[0]) && out[2].bits_eq(&want[0]));
        assert!(out[1].bits_eq(&xv));
        assert!(out[3].bits_eq(s.variable(w).unwrap()));
        seen.push(ptr(&out[2]));
        s.run(&[train], &[(x, xv)]).unwrap();
    }
    assert!(seen.windows(2).all(|p| p[0] == p[1]), "output reallocated");
    let mut var_ptrs = vec![];
    for _ in 0..3 {
        let xv = Array::new([4], vec![1.0f32; 4]).unwrap();
        s.run(&[train], &[(x, xv)]).unwrap();
        var_ptrs.push(ptr(s.variable(w).unwrap()));
    }
    assert_eq!(var_ptrs[0], var_ptrs[2], "not double-buffered");
    assert_ne!(var_ptrs[0], var_ptrs[1]);
}

/// A `bool` scalar feed (like dropout's `training` flag) selecting between two f32 branches:
/// the kernel takes it as one lane mask per row and stays vectorized; both flag values
/// against the interpreter, on rows that end in a scalar tail.
#[test]
fn bool_flag_broadcast_matches_the_interpreter() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [5, 37]);
    let flag = g.placeholder("flag", DType::Bool, [0usize; 0]);
    let y = flag.select(x * 2.0, x.exp()) + flag.cast(DType::F32) * x;
    let mut rng = Rng(7);
    let xv = random_f32(&mut rng, &[5, 37], false);
    let mut jit = Session::new(&g).unwrap();
    let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
    for on in [true, false] {
        let feeds = [(x, xv.clone()), (flag, Array::scalar(on))];
        let j = jit.run(&[y], &feeds).unwrap();
        let i = interp.run(&[y], &feeds).unwrap();
        close(&j[0], &i[0], Tol::Ulp(2), &format!("flag={on}"));
    }
}
