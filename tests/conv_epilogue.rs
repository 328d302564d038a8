//! The forward convolution's tile epilogue (`jit/conv/epilogue.rs`): the elementwise kernel
//! after a convolution (bias + activation) and the pooling after it, run on each tile's
//! images. Against the same graph compiled with `KILN_CONV_EPILOGUE=0` (the kernel and the
//! pooling as their own steps) bitwise, at 1, 2 and 3 threads, and against the interpreter
//! within the convolution tests' tolerance; inference and training graphs, random
//! geometries (strides, padding, dilation, groups, odd sizes, batch 1, max and average
//! pooling, no pooling), and the shapes that must not take an epilogue.

mod common;

use common::Rng;
use kiln::autodiff::grad;
use kiln::prelude::*;
use kiln::session::StepCounts;
use kiln::{Conv2dOptions, Padding, Pool2dOptions};

/// Values in [-1, 1) with some exact zeros of both signs (ReLU and pooling ties).
fn values(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.below(10) {
            0 => 0.0,
            1 => -0.0,
            _ => rng.f32() * 0.5,
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Pool {
    Max,
    Avg,
    None,
}

#[derive(Clone, Debug)]
struct Case {
    x: [usize; 4],
    kernel: [usize; 2],
    cout: usize,
    conv: Conv2dOptions,
    groups: usize,
    pool: Pool,
    /// `tanh` instead of `relu` after the bias.
    tanh: bool,
    /// Fetch the gradients too (a training graph).
    train: bool,
}

fn build<'g>(g: &'g Graph, c: &Case, rng: &mut Rng) -> (Vec<Tensor<'g>>, Vec<(Tensor<'g>, Array)>) {
    let x = g.placeholder("x", DType::F32, c.x);
    let cg = c.x[3] / c.groups;
    let ws = [c.kernel[0], c.kernel[1], cg, c.cout];
    let w = g.placeholder("w", DType::F32, ws);
    let b = g.placeholder("b", DType::F32, [c.cout]);
    let conv = c.conv.clone().groups(c.groups);
    let h = x.conv2d(w, &conv) + b;
    let h = if c.tanh { h.tanh() } else { h.relu() };
    let y = match c.pool {
        Pool::Max => h.max_pool2d(&Pool2dOptions::new([2, 2])),
        Pool::Avg => h.avg_pool2d(&Pool2dOptions::new([2, 2])),
        Pool::None => h,
    };
    let n = |s: &[usize]| s.iter().product::<usize>();
    let mut feeds = vec![
        (x, Array::new(c.x, values(rng, n(&c.x))).unwrap()),
        (w, Array::new(ws, values(rng, n(&ws))).unwrap()),
        (b, Array::new([c.cout], values(rng, c.cout)).unwrap()),
    ];
    let mut fetch = vec![y];
    if c.train {
        let ys = y.shape().to_fixed().unwrap();
        let r = g.placeholder("r", DType::F32, ys.as_slice());
        let loss = (y * r).sum_all();
        feeds.push((r, Array::new(ys.as_slice(), values(rng, n(&ys))).unwrap()));
        fetch.extend(grad(loss, &[x, w, b]).unwrap());
    }
    (fetch, feeds)
}

/// Runs `fetch` on a new session at `threads`, with or without the epilogue.
fn run_jit(
    g: &Graph,
    fetch: &[Tensor<'_>],
    feeds: &[(Tensor<'_>, Array)],
    threads: usize,
    epilogue: bool,
) -> (Vec<Array>, StepCounts) {
    // The opt-out is read at compile time: compiles that set it run one at a time.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    kiln::threads::set_threads(threads);
    if !epilogue {
        std::env::set_var("KILN_CONV_EPILOGUE", "0");
    }
    let mut s = Session::new(g).unwrap();
    let out = s.run(fetch, feeds).unwrap();
    std::env::remove_var("KILN_CONV_EPILOGUE");
    let counts = s.last_compile_times().unwrap().steps;
    kiln::threads::set_threads(0);
    (out, counts)
}

fn close(a: &Array, b: &Array) -> bool {
    let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            let scale = x.abs().max(y.abs()).max(1.0);
            (x - y).abs() <= 1e-4 * scale
        })
}

/// With the epilogue at 1, 2, 3 threads bitwise equal to without it at 1 thread, and close
/// to the interpreter. Returns the epilogue run's step counts.
fn check(c: &Case, seed: u64) -> StepCounts {
    let mut rng = Rng(seed);
    let g = Graph::new();
    let (fetch, feeds) = build(&g, c, &mut rng);
    let reference = Interpreter::new(&g).unwrap().run(&fetch, &feeds).unwrap();
    let (plain, counts) = run_jit(&g, &fetch, &feeds, 1, false);
    assert_eq!(counts.conv_epilogues, 0, "{c:?}");
    let mut with = None;
    for threads in [1, 2, 3] {
        let (out, k) = run_jit(&g, &fetch, &feeds, threads, true);
        for (i, (u, f)) in plain.iter().zip(&out).enumerate() {
            assert!(
                u.bits_eq(f),
                "{c:?}: output {i} at {threads} threads differs without the epilogue"
            );
        }
        with = Some(k);
    }
    for (i, (r, u)) in reference.iter().zip(&plain).enumerate() {
        assert!(
            close(r, u),
            "{c:?}: output {i} differs from the interpreter"
        );
    }
    with.unwrap()
}

fn case(x: [usize; 4], cout: usize, pool: Pool, train: bool) -> Case {
    Case {
        x,
        kernel: [3, 3],
        cout,
        conv: Conv2dOptions::new(),
        groups: 1,
        pool,
        tanh: false,
        train,
    }
}

#[test]
fn the_convnet_second_block_takes_the_epilogue() {
    // MNIST's conv2 at a small batch: [13,13,32] → 3×3 → 64, bias, ReLU, 2×2 max pool.
    for train in [false, true] {
        let counts = check(&case([5, 13, 13, 32], 64, Pool::Max, train), 1);
        assert_eq!(counts.conv_epilogues, 1, "train {train}: {counts:?}");
        assert!(counts.covers_every_node());
    }
}

#[test]
fn batch_one_average_pooling_and_no_pooling() {
    for (i, (x, pool)) in [
        ([1, 9, 9, 3], Pool::Max),
        ([2, 10, 12, 4], Pool::Avg),
        ([3, 8, 11, 2], Pool::None),
    ]
    .into_iter()
    .enumerate()
    {
        let counts = check(&case(x, 5 + i, pool, i == 1), 10 + i as u64);
        assert_eq!(counts.conv_epilogues, 1, "{x:?} {pool:?}: {counts:?}");
    }
}

#[test]
fn pointwise_and_depthwise_convolutions_keep_their_steps() {
    // A 1×1 window reads its input in place (one `gemm`, no tiles); a depthwise one runs
    // its own kernels: neither takes an epilogue, and both still match.
    let mut c = case([2, 6, 6, 4], 4, Pool::Max, false);
    c.kernel = [1, 1];
    assert_eq!(check(&c, 5).conv_epilogues, 0);
    let mut c = case([2, 6, 6, 4], 4, Pool::Max, true);
    c.groups = 4;
    assert_eq!(check(&c, 6).conv_epilogues, 0);
}

#[test]
fn random_geometries_match() {
    let mut rng = Rng(0xe91);
    let mut fused = 0;
    for i in 0..30 {
        let pad = match rng.below(3) {
            0 => Padding::Valid,
            1 => Padding::Same,
            _ => Padding::Explicit([(rng.below(3), rng.below(2)), (rng.below(2), rng.below(3))]),
        };
        let conv = Conv2dOptions::new()
            .padding(pad)
            .strides(1 + rng.below(2), 1 + rng.below(2))
            .dilations(1 + rng.below(2), 1);
        let groups = [1, 1, 2][rng.below(3)];
        let c = Case {
            x: [
                1 + rng.below(4),
                5 + rng.below(10),
                5 + rng.below(10),
                groups * (1 + rng.below(5)),
            ],
            kernel: [1 + rng.below(3), 2 + rng.below(2)],
            cout: groups * (1 + rng.below(6)),
            conv,
            groups,
            pool: [Pool::Max, Pool::Avg, Pool::None][rng.below(3)],
            tanh: rng.below(3) == 0,
            train: rng.below(2) == 0,
        };
        let g = Graph::new();
        {
            let x = g.placeholder("x", DType::F32, c.x);
            let ws = [c.kernel[0], c.kernel[1], c.x[3] / groups, c.cout];
            let w = g.placeholder("w", DType::F32, ws);
            let y = x.conv2d(w, &c.conv.clone().groups(groups));
            if c.pool != Pool::None {
                let _ = y.max_pool2d(&Pool2dOptions::new([2, 2]));
            }
        }
        if g.check().is_err() {
            continue;
        }
        let counts = check(&c, 100 + i);
        fused += counts.conv_epilogues;
    }
    assert!(fused >= 10, "only {fused} geometries took the epilogue");
}
