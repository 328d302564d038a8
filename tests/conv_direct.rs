//! The forward twin (`jit/conv_direct`): a small-K convolution with its bias, ReLU and max
//! pool as one direct kernel. Bitwise against the unfused JIT (`KILN_CONV_DIRECT=0`: im2col,
//! `gemm`, the elementwise kernel, the pooling kernel) at 1, 2 and 3 threads, and close to
//! the interpreter, on random small-K geometries (strides, padding, dilation, odd sizes,
//! batch 1, several input channels), in inference (only the pooled tensor written) and in
//! training (the activation too, read by the backward twin), with exact zeros of both signs,
//! infinities and NaN among the inputs; and the chains it must leave alone.

mod common;

use common::Rng;
use kiln::autodiff::grad;
use kiln::prelude::*;
use kiln::session::StepCounts;
use kiln::{Conv2dOptions, Padding, Pool2dOptions};

/// Does this CPU run the kernel (x86-64 with AVX2 and FMA)? Elsewhere nothing fuses.
fn cpu_fuses() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Values in [-1, 1) with exact zeros of both signs, and, if `specials`, some infinities and
/// NaN (one NaN bit pattern: several NaNs meeting in one sum may propagate either payload,
/// in `gemm` as in the kernel).
fn values(rng: &mut Rng, n: usize, specials: bool) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.below(if specials { 40 } else { 10 }) {
            0 => 0.0,
            1 => -0.0,
            2 if specials => f32::NAN,
            3 if specials => f32::INFINITY,
            4 if specials => f32::NEG_INFINITY,
            _ => rng.f32() * 0.5,
        })
        .collect()
}

/// One conv → (+ bias) → ReLU → max pool block.
#[derive(Clone, Debug)]
struct Case {
    x: [usize; 4],
    kernel: [usize; 2],
    cout: usize,
    conv: Conv2dOptions,
    pool: Pool2dOptions,
    bias: bool,
    /// Fetch the gradients too (the activation is then written for the backward).
    train: bool,
    /// NaN and infinities among the input's values.
    specials: bool,
}

fn build<'g>(g: &'g Graph, c: &Case, rng: &mut Rng) -> (Vec<Tensor<'g>>, Vec<(Tensor<'g>, Array)>) {
    let x = g.placeholder("x", DType::F32, c.x);
    let ws = [c.kernel[0], c.kernel[1], c.x[3], c.cout];
    let w = g.placeholder("w", DType::F32, ws);
    let b = g.placeholder("b", DType::F32, [c.cout]);
    let conv = x.conv2d(w, &c.conv);
    let y = if c.bias { conv + b } else { conv }.relu();
    let p = y.max_pool2d(&c.pool);
    let n = |s: &[usize]| s.iter().product::<usize>();
    let mut feeds = vec![
        (
            x,
            Array::new(c.x, values(rng, n(&c.x), c.specials)).unwrap(),
        ),
        (w, Array::new(ws, values(rng, n(&ws), false)).unwrap()),
    ];
    if c.bias {
        feeds.push((b, Array::new([c.cout], values(rng, c.cout, false)).unwrap()));
    }
    if !c.train {
        return (vec![p], feeds);
    }
    let ps = p.shape().to_fixed().unwrap();
    let r = g.placeholder("r", DType::F32, ps.as_slice());
    feeds.push((
        r,
        Array::new(ps.as_slice(), values(rng, n(&ps), false)).unwrap(),
    ));
    let loss = (p * r).sum_all();
    let wrt = if c.bias { vec![w, b] } else { vec![w] };
    let grads = grad(loss, &wrt).unwrap();
    let mut fetch = vec![p, loss];
    fetch.extend(grads);
    (fetch, feeds)
}

/// Runs `fetch` on a new session at `threads`, with the direct kernel or without.
fn run_jit(
    g: &Graph,
    fetch: &[Tensor<'_>],
    feeds: &[(Tensor<'_>, Array)],
    threads: usize,
    direct: bool,
) -> (Vec<Array>, StepCounts) {
    // The opt-out is read when a step is planned: compiles run one at a time here.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    kiln::threads::set_threads(threads);
    if !direct {
        std::env::set_var("KILN_CONV_DIRECT", "0");
    }
    let mut s = Session::new(g).unwrap();
    let out = s.run(fetch, feeds).unwrap();
    std::env::remove_var("KILN_CONV_DIRECT");
    let counts = s.last_compile_times().unwrap().steps;
    kiln::threads::set_threads(0);
    (out, counts)
}

/// Equal within the tolerance of a sum in another order, NaN where NaN, infinities equal.
fn close(a: &Array, b: &Array) -> bool {
    let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            if x.is_nan() || y.is_nan() || x.is_infinite() || y.is_infinite() {
                return x.is_nan() == y.is_nan() && (x.is_nan() || x == y);
            }
            (x - y).abs() <= 1e-4 * x.abs().max(y.abs()).max(1.0)
        })
}

/// Direct at 1, 2, 3 threads bitwise equal to unfused at 1 thread (outputs and, with
/// `train`, the gradients the activation feeds), and the forward close to the interpreter.
/// Returns the direct run's step counts.
fn check(c: &Case, seed: u64) -> StepCounts {
    let mut rng = Rng(seed);
    let g = Graph::new();
    let (fetch, feeds) = build(&g, c, &mut rng);
    let (unfused, plain) = run_jit(&g, &fetch, &feeds, 1, false);
    assert_eq!(plain.conv_direct, 0, "{c:?}");
    let mut counts = None;
    for threads in [1, 2, 3] {
        let (out, k) = run_jit(&g, &fetch, &feeds, threads, true);
        for (i, (u, f)) in unfused.iter().zip(&out).enumerate() {
            assert!(
                u.bits_eq(f),
                "{c:?}: output {i} at {threads} threads differs from the unfused JIT"
            );
        }
        assert!(k.covers_every_node());
        counts = Some(k);
    }
    let reference = Interpreter::new(&g)
        .unwrap()
        .run(&fetch[..1], &feeds)
        .unwrap();
    assert!(
        close(&reference[0], &unfused[0]),
        "{c:?}: the pooled tensor differs from the interpreter"
    );
    counts.unwrap()
}

fn case(x: [usize; 4], cout: usize) -> Case {
    Case {
        x,
        kernel: [3, 3],
        cout,
        conv: Conv2dOptions::new(),
        pool: Pool2dOptions::new([2, 2]),
        bias: true,
        train: false,
        specials: false,
    }
}

#[test]
fn the_convnet_first_layer_fuses_in_inference_and_training() {
    // The MNIST convnet's conv1 at a small batch: 28×28×1 → 26×26×32 → 13×13×32.
    for train in [false, true] {
        let mut c = case([5, 28, 28, 1], 32);
        c.train = train;
        let counts = check(&c, 1);
        assert_eq!(
            counts.conv_direct,
            usize::from(cpu_fuses()),
            "{c:?}: {counts:?}"
        );
        if train && cpu_fuses() {
            // The backward twin still reads the activation the direct kernel wrote (the
            // twin, its bias store and its filter gradient store).
            assert_eq!(counts.conv_fused, 3, "{counts:?}");
            assert_eq!(counts.conv_filter_direct, 1, "{counts:?}");
        }
    }
}

#[test]
fn zeros_of_both_signs_infinities_and_nan() {
    for (i, train) in [false, true].into_iter().enumerate() {
        let mut c = case([2, 11, 9, 2], 16);
        c.specials = true;
        c.train = train;
        let counts = check(&c, 20 + i as u64);
        assert_eq!(counts.conv_direct, usize::from(cpu_fuses()), "{counts:?}");
    }
}

#[test]
fn batch_one_odd_sizes_and_no_bias() {
    // Odd activations: the last row or column lies in no window (training writes it anyway).
    for (i, (x, bias, train)) in [
        ([1, 9, 9, 1], true, true),
        ([1, 10, 7, 3], false, false),
        ([2, 8, 11, 1], false, true),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = case(x, 8 * (i + 1));
        c.bias = bias;
        c.train = train;
        let counts = check(&c, 30 + i as u64);
        assert_eq!(
            counts.conv_direct,
            usize::from(cpu_fuses()),
            "{c:?}: {counts:?}"
        );
    }
}

#[test]
fn chains_it_must_leave_alone() {
    // Output channels not a multiple of 8; K = 3·3·4 = 36 past the kernel's 32; a pool with
    // overlapping windows; K = 2 (where `gemm` sums another way).
    let mut cases = vec![case([2, 8, 8, 1], 12), case([2, 8, 8, 4], 8)];
    let mut overlap = case([2, 9, 9, 1], 8);
    overlap.pool = Pool2dOptions::new([2, 2]).strides([1, 1]);
    cases.push(overlap);
    let mut thin = case([2, 8, 8, 1], 8);
    thin.kernel = [1, 2];
    cases.push(thin);
    for (i, c) in cases.iter().enumerate() {
        let counts = check(c, 40 + i as u64);
        assert_eq!(counts.conv_direct, 0, "{c:?}: {counts:?}");
    }
}

#[test]
fn random_small_k_geometries_match() {
    let mut rng = Rng(0xd1ec7);
    let mut fused = 0;
    let mut tried = 0;
    for i in 0..40 {
        let cin = 1 + rng.below(3);
        let kernel = [1 + rng.below(3), 1 + rng.below(3)];
        let pad = match rng.below(3) {
            0 => Padding::Valid,
            1 => Padding::Same,
            _ => Padding::Explicit([(rng.below(3), rng.below(2)), (rng.below(2), rng.below(3))]),
        };
        let conv = Conv2dOptions::new()
            .padding(pad)
            .strides(1 + rng.below(2), 1 + rng.below(2))
            .dilations(1 + rng.below(2), 1 + rng.below(2));
        let k = [1 + rng.below(3), 1 + rng.below(3)];
        let s = [k[0] + rng.below(2), k[1] + rng.below(2)];
        let pool = Pool2dOptions::new(k)
            .strides(s)
            .padding(if rng.below(3) == 0 {
                Padding::Same
            } else {
                Padding::Valid
            });
        let c = Case {
            x: [1 + rng.below(3), 5 + rng.below(10), 5 + rng.below(10), cin],
            kernel,
            cout: 8 * (1 + rng.below(3)),
            conv,
            pool,
            bias: rng.below(4) != 0,
            train: rng.below(2) == 0,
            specials: rng.below(4) == 0,
        };
        let g = Graph::new();
        {
            let x = g.placeholder("x", DType::F32, c.x);
            let w = g.placeholder("w", DType::F32, [kernel[0], kernel[1], cin, c.cout]);
            let _ = x.conv2d(w, &c.conv).max_pool2d(&c.pool);
        }
        if g.check().is_err() {
            continue;
        }
        tried += 1;
        let counts = check(&c, 100 + i);
        let k_ok = (3..=32).contains(&(kernel[0] * kernel[1] * cin));
        if !k_ok {
            assert_eq!(counts.conv_direct, 0, "{c:?}");
        }
        fused += counts.conv_direct;
    }
    assert!(tried >= 20, "only {tried} geometries were valid");
    if cpu_fuses() {
        assert!(fused >= 10, "only {fused} of {tried} geometries fused");
    }
}
