//! Chained runs against unchained ones: a chain changes only when a member computes its
//! rows, so the results must be the same bits as with every step on its own
//! (`memplan::chains::without_chains`), at 1, 2 and 3 threads, with odd batches whose
//! tiles end at uneven image counts. (`tests/conv_chain.rs` checks both against the
//! interpreter and the chains the convnet gets.)

use crate::array::Array;
use crate::dtype::DType;
use crate::graph::{Graph, Tensor};
use crate::jit::Executable;
use crate::passes::memplan::chains::without_chains;
use crate::passes::{Pipeline, Program};
use crate::{Conv2dOptions, Pool2dOptions};

/// Deterministic values in about [-1, 1], some exactly zero (ReLU ties and max-pool ties).
fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u64 ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
            if h.is_multiple_of(7) {
                0.0
            } else {
                (h % 2001) as f32 / 1000.0 - 1.0
            }
        })
        .collect()
}

/// Two conv → bias → ReLU → 2×2 max pool blocks on `[n, hw, hw, 3]`, a loss, and its
/// gradients with respect to the input and every weight: fetches and feeds.
fn convnet(g: &Graph, n: usize, hw: usize) -> (Vec<Tensor<'_>>, Vec<(Tensor<'_>, Array)>) {
    let x = g.placeholder("x", DType::F32, [n, hw, hw, 3]);
    let mut feeds = vec![(
        x,
        Array::new([n, hw, hw, 3], values(n * hw * hw * 3, 1)).unwrap(),
    )];
    let mut h = x;
    let mut params = vec![];
    for (i, (cin, cout)) in [(3usize, 8usize), (8, 16)].into_iter().enumerate() {
        let w = g.placeholder(&format!("w{i}"), DType::F32, [3, 3, cin, cout]);
        let b = g.placeholder(&format!("b{i}"), DType::F32, [cout]);
        let wv = values(9 * cin * cout, 10 + i as u64);
        feeds.push((w, Array::new([3, 3, cin, cout], wv).unwrap()));
        feeds.push((b, Array::new([cout], values(cout, 20 + i as u64)).unwrap()));
        params.extend([w, b]);
        h = (h.conv2d(w, &Conv2dOptions::new()) + b).relu();
        h = h.max_pool2d(&Pool2dOptions::new([2, 2]));
    }
    let r = g.placeholder("r", DType::F32, h.shape());
    let rs = h.shape().to_fixed().unwrap();
    let rn = rs.iter().product();
    feeds.push((r, Array::new(rs.as_slice(), values(rn, 3)).unwrap()));
    let loss = (h * r).sum_all();
    let mut fetch = vec![h, loss];
    params.push(x);
    fetch.extend(crate::autodiff::grad(loss, &params).unwrap());
    (fetch, feeds)
}

/// Runs `fetch` through the default pipeline and the JIT; the executable's chained steps.
fn run(g: &Graph, fetch: &[Tensor<'_>], feeds: &[(Tensor<'_>, Array)]) -> (Vec<Array>, usize) {
    let mut p = Program::new(g.snapshot(), fetch.iter().map(|t| t.id()).collect());
    Pipeline::default().run(&mut p).unwrap();
    let exe = Executable::compile(&p).unwrap();
    let args: Vec<&Array> = exe
        .placeholders()
        .iter()
        .map(|(id, _)| &feeds.iter().find(|(t, _)| t.id() == *id).expect("fed").1)
        .collect();
    let out = exe.run(&args, &[], 0).unwrap();
    (out, exe.compile_times().steps.chained)
}

#[test]
fn chained_runs_are_bitwise_the_unchained_ones_at_1_2_and_3_threads() {
    for (n, hw) in [(1, 10), (3, 12), (5, 11), (7, 14), (17, 13)] {
        let g = Graph::new();
        let (fetch, feeds) = convnet(&g, n, hw);
        let (plain, none) = without_chains(|| run(&g, &fetch, &feeds));
        assert_eq!(none, 0, "chains were formed under without_chains");
        for t in [1, 2, 3] {
            crate::threads::set_threads(t);
            let (chained, count) = run(&g, &fetch, &feeds);
            crate::threads::set_threads(0);
            // Both forward chains (kernel, pool) and both backward ones (the mask).
            assert!(count >= 5, "n={n}: {count} chained steps");
            for (k, (a, b)) in chained.iter().zip(&plain).enumerate() {
                assert!(
                    a.bits_eq(b),
                    "n={n} hw={hw} threads={t}: fetch {k} differs from the unchained run"
                );
            }
        }
    }
}

#[test]
fn pointwise_and_depthwise_chains_are_bitwise_the_unchained_ones() {
    // (kernel, input channels, filter input channels, output channels, groups)
    for (k, c, cg, o, groups) in [(1, 3, 3, 8, 1), (3, 6, 1, 6, 6)] {
        let (n, hw) = (5, 10);
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [n, hw, hw, c]);
        let w = g.placeholder("w", DType::F32, [k, k, cg, o]);
        let b = g.placeholder("b", DType::F32, [o]);
        let y = (x.conv2d(w, &Conv2dOptions::new().groups(groups)) + b).relu();
        let pooled = y.max_pool2d(&Pool2dOptions::new([2, 2]));
        let loss = pooled.sum_all();
        let mut fetch = vec![pooled, loss];
        fetch.extend(crate::autodiff::grad(loss, &[x, w, b]).unwrap());
        let feeds = vec![
            (
                x,
                Array::new([n, hw, hw, c], values(n * hw * hw * c, 4)).unwrap(),
            ),
            (
                w,
                Array::new([k, k, cg, o], values(k * k * cg * o, 5)).unwrap(),
            ),
            (b, Array::new([o], values(o, 6)).unwrap()),
        ];
        let (plain, _) = without_chains(|| run(&g, &fetch, &feeds));
        for t in [1, 2, 3] {
            crate::threads::set_threads(t);
            let (chained, count) = run(&g, &fetch, &feeds);
            crate::threads::set_threads(0);
            assert_eq!(count, 3, "k={k} groups={groups}");
            for (i, (a, b)) in chained.iter().zip(&plain).enumerate() {
                assert!(a.bits_eq(b), "k={k} groups={groups} threads={t}: fetch {i}");
            }
        }
    }
}
