//! Results do not depend on the thread count: every workload here is large enough that the
//! JIT splits its kernels (and `gemm` its products) across threads, and the outputs at 1, 2
//! and 3 threads must be bitwise equal, and match the interpreter.
//!
//! The thread count is process-wide, so every test of this binary compares bits across
//! counts: a test changing it under another cannot change what that other one sees.

mod common;

use common::{assert_native, inputs, random_array, random_graph, random_view_graph, Rng};
use kiln::graph::NodeId;
use kiln::prelude::*;
use kiln::train::Optimizer;

/// Runs `fetch` at 1, 2 and 3 threads (fresh sessions, same variables) and checks the
/// outputs are bitwise equal, then that they match the interpreter within `tol` (relative).
fn same_bits_at_every_thread_count(
    g: &Graph,
    fetch: &[Tensor<'_>],
    feeds: &[(Tensor<'_>, Array)],
    vars: &[(NodeId, Array)],
    tol: f32,
    what: &str,
) {
    let run = |backend: Backend| {
        let mut s = Session::with_backend(g, backend).unwrap();
        for (id, v) in vars {
            s.set_variable(g.tensor(*id), v.clone()).unwrap();
        }
        let out = s.run(fetch, feeds).unwrap();
        if backend == Backend::Jit {
            assert_native(&s, what);
        }
        out
    };
    kiln::threads::set_threads(1);
    let one = run(Backend::Jit);
    for t in [2, 3] {
        kiln::threads::set_threads(t);
        let many = run(Backend::Jit);
        for (k, (a, b)) in one.iter().zip(&many).enumerate() {
            assert!(a.bits_eq(b), "{what}: output {k} differs at {t} threads");
        }
    }
    kiln::threads::set_threads(0);
    let reference = run(Backend::Interpreter);
    for (k, (a, b)) in one.iter().zip(&reference).enumerate() {
        let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
        let worst = x
            .iter()
            .zip(&y)
            .map(|(p, q)| (p - q).abs() / (1.0 + q.abs()))
            .fold(0.0, f64::max);
        assert!(
            worst <= tol as f64,
            "{what}: output {k} is {worst} from the interpreter"
        );
    }
}

#[test]
fn random_graphs_at_a_large_batch() {
    for seed in 0..24 {
        let (g, outs) = if seed < 12 {
            random_graph(seed)
        } else {
            random_view_graph(seed)
        };
        let (feeds, vars) = inputs(&g, 5003, seed);
        let fetch: Vec<Tensor<'_>> = outs.iter().map(|&o| g.tensor(o)).collect();
        let fd: Vec<(Tensor<'_>, Array)> = feeds
            .iter()
            .map(|(id, a)| (g.tensor(*id), a.clone()))
            .collect();
        let vars: Vec<(NodeId, Array)> = vars.into_iter().collect();
        same_bits_at_every_thread_count(&g, &fetch, &fd, &vars, 1e-4, &format!("seed {seed}"));
    }
}

#[test]
fn elementwise_reductions_and_products() {
    let mut rng = Rng(7);
    let g = Graph::new();
    // Rank 1 with an odd length: split on multiples of 4, with a scalar tail.
    let v = g.placeholder("v", DType::F32, [100_003]);
    let m = g.placeholder("m", DType::F32, [1501, 67]);
    let a = g.placeholder("a", DType::F32, [500, 300]);
    let w = g.placeholder("w", DType::F32, [300, 200]);
    let bias = g.placeholder("bias", DType::F32, [200]);
    let ba = g.placeholder("ba", DType::F32, [3, 200, 100]);
    let bb = g.placeholder("bb", DType::F32, [3, 100, 150]);
    let fetch = [
        (v * v + 1.0).sigmoid() * v.tanh(),
        m.sum(&[1], false),
        m.sum(&[1], true).exp(),
        m.sum(&[0], false),
        m.max(&[1], false),
        m.softmax(-1),
        (a.matmul(w) + bias).relu(),
        a.matmul(w),
        a.matmul(w).greater(0.5f32).cast(DType::F32),
        ba.matmul(bb) * 2.0,
        m.sum_all(),
        // Random numbers are filled in parallel ranges on the JIT.
        g.random_uniform([100_003], -1.0, 1.0, 5) * v,
        g.random_normal([1501, 67], 0.0, 1.0, 9) + m,
    ];
    let feeds = [
        (v, random_array(&mut rng, &[100_003], DType::F32)),
        (m, random_array(&mut rng, &[1501, 67], DType::F32)),
        (a, random_array(&mut rng, &[500, 300], DType::F32)),
        (w, random_array(&mut rng, &[300, 200], DType::F32)),
        (bias, random_array(&mut rng, &[200], DType::F32)),
        (ba, random_array(&mut rng, &[3, 200, 100], DType::F32)),
        (bb, random_array(&mut rng, &[3, 100, 150], DType::F32)),
    ];
    // Sums of up to 1501 terms of size ~2 in f32 vs the interpreter's f64.
    same_bits_at_every_thread_count(&g, &fetch, &feeds, &[], 2e-3, "kernels");
}

#[test]
fn mlp_training_steps() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(784)]);
    let y = g.placeholder("y", DType::I32, [None]);
    let w1 = g.variable("w1", [784, 256], init::glorot_uniform(1));
    let b1 = g.variable("b1", [256], init::zeros());
    let w2 = g.variable("w2", [256, 10], init::glorot_uniform(2));
    let b2 = g.variable("b2", [10], init::zeros());
    let logits = (x.matmul(w1) + b1).relu().matmul(w2) + b2;
    let loss = logits
        .sparse_softmax_cross_entropy_with_logits(y)
        .mean_all();
    let params = [w1, b1, w2, b2];
    let train = kiln::train::Sgd::new(0.1).minimize(loss, &params).unwrap();
    let mut rng = Rng(3);
    let xv = random_array(&mut rng, &[256, 784], DType::F32);
    let yv = Array::new([256], (0..256).map(|i: i32| i % 10).collect::<Vec<_>>()).unwrap();
    let feeds = [(x, xv), (y, yv)];
    let mut results = vec![];
    for t in [1, 2, 3] {
        kiln::threads::set_threads(t);
        let mut s = Session::new(&g).unwrap();
        for _ in 0..3 {
            s.run(&[loss, train], &feeds).unwrap();
        }
        let weights: Vec<Array> = params
            .iter()
            .map(|&p| s.variable(p).unwrap().clone())
            .collect();
        results.push(weights);
    }
    kiln::threads::set_threads(0);
    for (t, r) in results.iter().enumerate().skip(1) {
        for (k, (a, b)) in results[0].iter().zip(r).enumerate() {
            assert!(a.bits_eq(b), "weight {k} differs at {} threads", t + 1);
        }
    }
}
