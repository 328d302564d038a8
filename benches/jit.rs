//! First view of speed: each workload on the JIT and on the interpreter in the same run.
//! Compare the two lines of a group (criterion prints both); the performance issue sets
//! targets against other frameworks.

use criterion::{criterion_group, criterion_main, Criterion};
use kiln::prelude::*;

fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i % 97) as f32 / 97.0 - 0.5) * scale)
        .collect()
}

fn elementwise(c: &mut Criterion) {
    let n = 1 << 16;
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, [n]);
    let b = g.placeholder("b", DType::F32, [n]);
    let cc = g.placeholder("c", DType::F32, [n]);
    let y = (a * b + cc).sigmoid() * a.tanh();
    let feeds = [
        (a, Array::new([n], ramp(n, 4.0)).unwrap()),
        (b, Array::new([n], ramp(n, 2.0)).unwrap()),
        (cc, Array::new([n], ramp(n, 1.0)).unwrap()),
    ];
    let mut group = c.benchmark_group("sigmoid(a*b+c)*tanh(a), 65536 elements");
    for backend in [Backend::Jit, Backend::Interpreter] {
        let mut s = Session::with_backend(&g, backend).unwrap();
        s.run(&[y], &feeds).unwrap();
        group.bench_function(format!("{backend:?}"), |bch| {
            bch.iter(|| s.run(&[y], &feeds).unwrap())
        });
    }
    group.finish();
}

fn matmul(c: &mut Criterion) {
    let n = 256;
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, [n, n]);
    let b = g.placeholder("b", DType::F32, [n, n]);
    let y = a.matmul(b);
    let feeds = [
        (a, Array::new([n, n], ramp(n * n, 1.0)).unwrap()),
        (b, Array::new([n, n], ramp(n * n, 1.0)).unwrap()),
    ];
    let mut group = c.benchmark_group("matmul 256x256x256");
    group.sample_size(10);
    for backend in [Backend::Jit, Backend::Interpreter] {
        let mut s = Session::with_backend(&g, backend).unwrap();
        s.run(&[y], &feeds).unwrap();
        group.bench_function(format!("{backend:?}"), |bch| {
            bch.iter(|| s.run(&[y], &feeds).unwrap())
        });
    }
    group.finish();
}

fn mlp_step(c: &mut Criterion) {
    let batch = 128;
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(784)]);
    let y = g.placeholder("y", DType::I32, [None]);
    let mut params = vec![];
    let mut h = x;
    for (i, (inp, out)) in [(784, 256), (256, 128), (128, 10)].into_iter().enumerate() {
        let w = g.variable(&format!("w{i}"), [inp, out], init::glorot_uniform(i as u64));
        let b = g.variable(&format!("b{i}"), [out], init::zeros());
        params.extend([w, b]);
        h = h.matmul(w) + b;
        if i < 2 {
            h = h.relu();
        }
    }
    let loss = h.sparse_softmax_cross_entropy_with_logits(y).mean_all();
    let grads = kiln::autodiff::grad(loss, &params).unwrap();
    let mut fetch = vec![loss];
    fetch.extend(params.iter().zip(&grads).map(|(&w, &d)| w - d * 0.1));
    let feeds = [
        (x, Array::new([batch, 784], ramp(batch * 784, 1.0)).unwrap()),
        (
            y,
            Array::new(
                [batch],
                (0..batch as i32).map(|i| i % 10).collect::<Vec<_>>(),
            )
            .unwrap(),
        ),
    ];
    let mut group = c.benchmark_group("MLP 784-256-128-10 training step, batch 128");
    group.sample_size(10);
    for backend in [Backend::Jit, Backend::Interpreter] {
        let mut s = Session::with_backend(&g, backend).unwrap();
        s.run(&fetch, &feeds).unwrap();
        group.bench_function(format!("{backend:?}"), |bch| {
            bch.iter(|| s.run(&fetch, &feeds).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, elementwise, matmul, mlp_step);
criterion_main!(benches);
