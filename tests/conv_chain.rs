//! Tile chains (issue 17): a convolution's bias + ReLU kernel and its max pool run on each
//! of its image tiles as the tile is computed, and a max pool's gradient's images feed the
//! ReLU mask the same way. Here: the JIT against the interpreter on conv → bias → ReLU →
//! max pool graphs (values and gradients) at 1, 2 and 3 threads, bitwise equal across
//! thread counts; the chains the MNIST convnet's training and inference graphs get; and
//! consumers that must not be chained (reading other images, or a value computed after the
//! convolution), which still compute the same values. (`src/jit/chain/tests.rs` checks
//! chained runs bitwise against unchained ones; `src/passes/memplan/tests.rs` the buffer
//! assignment's chain rule.)

mod common;

use common::assert_native;
use kiln::passes::{program_dump, Pipeline, Program};
use kiln::prelude::*;
use kiln::session::StepCounts;
use kiln::{Conv2dOptions, Pool2dOptions};

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = common::Rng(seed | 1);
    // Some exact zeros, so ReLU and max-pool ties occur.
    (0..n)
        .map(|_| if rng.below(6) == 0 { 0.0 } else { rng.f32() })
        .collect()
}

fn feed<'g>(t: Tensor<'g>, seed: u64) -> (Tensor<'g>, Array) {
    let s = t.shape().to_fixed().unwrap();
    let n = s.iter().product();
    (t, Array::new(s.as_slice(), values(n, seed)).unwrap())
}

/// `|a − b| / (1 + |b|)`, the largest over the elements.
fn worst(a: &Array, b: &Array) -> f64 {
    a.to_f64_vec()
        .iter()
        .zip(&b.to_f64_vec())
        .map(|(p, q)| (p - q).abs() / (1.0 + q.abs()))
        .fold(0.0, f64::max)
}

/// Runs `fetch` on the JIT at 1, 2 and 3 threads and on the interpreter: the JIT agrees
/// with the interpreter to `gemm`'s rounding and with itself bitwise; returns the step
/// counts and the optimized program's dump.
fn check(
    g: &Graph,
    fetch: &[Tensor<'_>],
    feeds: &[(Tensor<'_>, Array)],
    what: &str,
) -> (StepCounts, String) {
    let reference = Interpreter::new(g).unwrap().run(fetch, feeds).unwrap();
    let mut first: Option<Vec<Array>> = None;
    let mut steps = None;
    for t in [1, 2, 3] {
        kiln::threads::set_threads(t);
        let mut s = Session::new(g).unwrap();
        let out = s.run(fetch, feeds).unwrap();
        kiln::threads::set_threads(0);
        assert_native(&s, what);
        steps = s.last_compile_times().map(|c| c.steps);
        for (k, (a, r)) in out.iter().zip(&reference).enumerate() {
            let e = worst(a, r);
            assert!(e <= 2e-4, "{what}: fetch {k} is {e} from the interpreter");
        }
        match &first {
            None => first = Some(out),
            Some(one) => {
                for (k, (a, b)) in out.iter().zip(one).enumerate() {
                    assert!(
                        a.bits_eq(b),
                        "{what}: fetch {k} at {t} threads differs from 1"
                    );
                }
            }
        }
    }
    let mut p = Program::new(g.snapshot(), fetch.iter().map(|t| t.id()).collect());
    Pipeline::default().run(&mut p).unwrap();
    (steps.unwrap(), program_dump(&p))
}

/// The input, filter and bias of a 3×3 convolution of `[n, hw, hw, c]` into `o` channels.
fn block<'g>(g: &'g Graph, n: usize, hw: usize, c: usize, o: usize) -> Vec<Tensor<'g>> {
    block_k(g, n, hw, [3, c, c, o])
}

/// `block` with a `k`×`k` filter of `cg` of the `c` input channels per group.
fn block_k<'g>(g: &'g Graph, n: usize, hw: usize, [k, c, cg, o]: [usize; 4]) -> Vec<Tensor<'g>> {
    let x = g.placeholder("x", DType::F32, [n, hw, hw, c]);
    let w = g.placeholder("w", DType::F32, [k, k, cg, o]);
    let b = g.placeholder("b", DType::F32, [o]);
    vec![x, w, b]
}

#[test]
fn conv_bias_relu_pool_and_gradients_match_the_interpreter_when_chained() {
    for (n, hw, c, o) in [(1, 6, 1, 4), (3, 9, 2, 8), (5, 12, 3, 16), (9, 30, 1, 32)] {
        let g = Graph::new();
        let v = block(&g, n, hw, c, o);
        let (x, w, b) = (v[0], v[1], v[2]);
        let y = (x.conv2d(w, &Conv2dOptions::new()) + b).relu();
        let pooled = y.max_pool2d(&Pool2dOptions::new([2, 2]));
        let r = g.placeholder("r", DType::F32, pooled.shape());
        let loss = (pooled * r).sum_all();
        let mut fetch = vec![pooled, loss];
        fetch.extend(kiln::autodiff::grad(loss, &[x, w, b]).unwrap());
        let feeds: Vec<_> = [x, w, b, r]
            .into_iter()
            .enumerate()
            .map(|(i, t)| feed(t, 7 + i as u64 * 31 + n as u64))
            .collect();
        let what = format!("n={n} hw={hw} c={c} o={o}");
        let (steps, dump) = check(&g, &fetch, &feeds, &what);
        // Forward: the kernel and the pool; backward: the mask after the pool's gradient.
        assert_eq!(steps.chained, 3, "{what}: {steps:?}\n{dump}");
        assert!(dump.contains("chained into"), "{dump}");
    }
}

/// A 1×1 convolution (`gemm` on the input in place, here in whole-image tiles) and a
/// depthwise one (direct loops, one image per tile) chain like the others.
#[test]
fn pointwise_and_depthwise_convolutions_chain_too() {
    for (what, k, c, cg, o, groups) in [("1x1", 1, 3, 3, 8, 1), ("depthwise", 3, 6, 1, 6, 6)] {
        let g = Graph::new();
        let v = block_k(&g, 5, 10, [k, c, cg, o]);
        let (x, w, b) = (v[0], v[1], v[2]);
        let y = (x.conv2d(w, &Conv2dOptions::new().groups(groups)) + b).relu();
        let pooled = y.max_pool2d(&Pool2dOptions::new([2, 2]));
        let r = g.placeholder("r", DType::F32, pooled.shape());
        let loss = (pooled * r).sum_all();
        let mut fetch = vec![pooled, loss];
        fetch.extend(kiln::autodiff::grad(loss, &[x, w, b]).unwrap());
        let feeds: Vec<_> = [x, w, b, r]
            .into_iter()
            .enumerate()
            .map(|(i, t)| feed(t, 40 + i as u64))
            .collect();
        let (steps, dump) = check(&g, &fetch, &feeds, what);
        assert_eq!(steps.chained, 3, "{what}: {steps:?}\n{dump}");
    }
}

/// Consumers that read other images' rows, or a value computed after the convolution, are
/// not chained (the dump says why), and the results are still right.
#[test]
fn consumers_reading_other_images_or_later_values_are_not_chained() {
    let (n, hw, c, o) = (6, 8, 2, 4);
    type Make = for<'g> fn(Tensor<'g>, Tensor<'g>) -> Tensor<'g>;
    let cases: [(&str, Make, &str); 3] = [
        (
            // Images and rows swapped (n equals the output's height).
            "transpose",
            |y, b| (y.permute(&[1, 0, 2, 3]) + b).relu(),
            "reads other images",
        ),
        (
            // Image i reads image i + 1 (the last one a zero pad).
            "shifted",
            |y, b| {
                let s = y.shape().to_fixed().unwrap();
                let next = y
                    .slice(&[1, 0, 0, 0], [s[0] - 1, s[1], s[2], s[3]])
                    .pad(&[0, 0, 0, 0], &[1, 0, 0, 0]);
                (y + next + b).relu()
            },
            "reads other images",
        ),
        (
            // The maximum over the whole batch: computed after the convolution.
            "later value",
            |y, b| (y - y.max(&[0, 1, 2, 3], true) + b).relu(),
            "computed after the chain's head",
        ),
    ];
    for (what, make, why) in cases {
        let g = Graph::new();
        let v = block(&g, n, hw, c, o);
        let (x, w, b) = (v[0], v[1], v[2]);
        let y = make(x.conv2d(w, &Conv2dOptions::new()), b);
        let pooled = y.max_pool2d(&Pool2dOptions::new([2, 2]));
        let feeds: Vec<_> = [x, w, b]
            .into_iter()
            .enumerate()
            .map(|(i, t)| feed(t, 3 + i as u64))
            .collect();
        let (steps, dump) = check(&g, &[pooled], &feeds, what);
        assert_eq!(steps.chained, 0, "{what}: {steps:?}\n{dump}");
        assert!(
            dump.contains("not chained after") && dump.contains(why),
            "{what}:\n{dump}"
        );
    }
}

/// The MNIST convnet (Keras' simple example, as `benches/cnn` builds it): both
/// convolutions' bias + ReLU and pooling run on their tiles in inference and training, and
/// training's two ReLU masks on their pooling gradients' image blocks.
#[test]
fn the_mnist_convnet_is_chained_in_training_and_inference() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(28), Some(28), Some(1)]);
    let labels = g.placeholder("y", DType::I32, [None]);
    let training = g.placeholder("training", DType::Bool, Shape::scalar());
    let mut params = vec![];
    let mut h = x;
    for (i, (cin, cout)) in [(1usize, 32usize), (32, 64)].into_iter().enumerate() {
        let w = g.variable(&format!("conv{i}_w"), [3, 3, cin, cout], init::he_normal(1));
        let b = g.variable(&format!("conv{i}_b"), [cout], init::zeros());
        params.extend([w, b]);
        h = (h.conv2d(w, &Conv2dOptions::new()) + b).relu();
        h = h.max_pool2d(&Pool2dOptions::new([2, 2]));
    }
    let h = h.reshape([None, Some(1600)]).dropout(0.5, training, 7);
    let w = g.variable("dense_w", [1600, 10], init::he_normal(3));
    let b = g.variable("dense_b", [10], init::zeros());
    params.extend([w, b]);
    let logits = h.matmul(w) + b;
    let loss = logits
        .sparse_softmax_cross_entropy_with_logits(labels)
        .mean_all();
    let train = Adam::new(1e-3).minimize(loss, &params).unwrap();
    let batch = 5;
    let xs = Array::new([batch, 28, 28, 1], values(batch * 784, 5)).unwrap();
    let ys = Array::new([batch], vec![1i32, 7, 3, 0, 9]).unwrap();
    let mut s = Session::new(&g).unwrap();
    s.run(
        &[logits],
        &[(x, xs.clone()), (training, Array::scalar(false))],
    )
    .unwrap();
    let inference = s.last_compile_times().unwrap().steps;
    assert_eq!(inference.chained, 4, "{inference:?}");
    s.run(
        &[loss, train],
        &[(x, xs), (labels, ys), (training, Array::scalar(true))],
    )
    .unwrap();
    let step = s.last_compile_times().unwrap().steps;
    assert_eq!(step.chained, 6, "{step:?}");
}
