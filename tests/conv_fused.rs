//! The fused steps around a convolution's activation (`jit/conv_fused`): a max pool's
//! gradient, the ReLU mask and the bias column sum in one pass. Against the unfused JIT
//! (`KILN_CONV_FUSE=0`'s path) bitwise and against the interpreter (the bias sum and the
//! filter gradient within the reduction tolerance the convolution tests use; everything
//! else bitwise), at 1, 2 and 3 threads, on random geometries (odd sizes, padding, strides,
//! batch 1, several input channels), with ties, zeros and NaN-free random values; a ReLU
//! output with another reader; inference graphs (no gradient: nothing to fuse).

mod common;

use common::Rng;
use kiln::autodiff::grad;
use kiln::prelude::*;
use kiln::session::StepCounts;
use kiln::{Conv2dOptions, Padding, Pool2dOptions};

/// Values in [-1, 1) with many exact zeros of both signs (ReLU ties and masked taps).
fn values(rng: &mut Rng, n: usize, zeros: bool) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.below(if zeros { 8 } else { 1000 }) {
            0 => 0.0,
            1 => -0.0,
            _ => rng.f32() * 2.0 - 1.0,
        })
        .collect()
}

/// One geometry of a conv → bias → ReLU → max pool block.
#[derive(Clone, Debug)]
struct Case {
    x: [usize; 4],
    cout: usize,
    conv: Conv2dOptions,
    pool: Pool2dOptions,
    /// The ReLU's output also feeds the loss directly (a second reader).
    extra_reader: bool,
    /// Fetch the bias gradient (else only the filter gradient: no sum to fuse).
    bias_grad: bool,
    /// Fetch the input's gradient too (then `dpre` has a reader besides the fused sum and
    /// filter, and the twin must store all of it).
    input_grad: bool,
}

/// The block's fetches (loss, filter gradient, bias gradient) and feeds.
fn build<'g>(g: &'g Graph, c: &Case, rng: &mut Rng) -> (Vec<Tensor<'g>>, Vec<(Tensor<'g>, Array)>) {
    let x = g.placeholder("x", DType::F32, c.x);
    let cin = c.x[3];
    let w = g.placeholder("w", DType::F32, [3, 3, cin, c.cout]);
    let b = g.placeholder("b", DType::F32, [c.cout]);
    let y = (x.conv2d(w, &c.conv) + b).relu();
    let p = y.max_pool2d(&c.pool);
    let ps = p.shape().to_fixed().unwrap();
    let r = g.placeholder("r", DType::F32, ps.as_slice());
    let mut loss = (p * r).sum_all();
    if c.extra_reader {
        loss = loss + (y * y).sum_all();
    }
    let grads = grad(loss, &[w, b, x]).unwrap();
    let n = |s: &[usize]| s.iter().product::<usize>();
    let feeds = vec![
        (x, Array::new(c.x, values(rng, n(&c.x), false)).unwrap()),
        (
            w,
            Array::new([3, 3, cin, c.cout], values(rng, 9 * cin * c.cout, false)).unwrap(),
        ),
        (b, Array::new([c.cout], values(rng, c.cout, true)).unwrap()),
        (
            r,
            Array::new(ps.as_slice(), values(rng, n(&ps), true)).unwrap(),
        ),
    ];
    let mut fetch = vec![loss, grads[0]];
    if c.bias_grad {
        fetch.push(grads[1]);
    }
    if c.input_grad {
        fetch.push(grads[2]);
    }
    (fetch, feeds)
}

/// Runs `fetch` on a new session at `threads`, fused or not; returns outputs and counts.
fn run_jit(
    g: &Graph,
    fetch: &[Tensor<'_>],
    feeds: &[(Tensor<'_>, Array)],
    threads: usize,
    fused: bool,
) -> (Vec<Array>, StepCounts) {
    // The opt-out is an environment variable read when a step is planned: tests that set
    // it run their compiles one at a time.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    kiln::threads::set_threads(threads);
    if !fused {
        std::env::set_var("KILN_CONV_FUSE", "0");
    }
    let mut s = Session::new(g).unwrap();
    let out = s.run(fetch, feeds).unwrap();
    std::env::remove_var("KILN_CONV_FUSE");
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

/// Fused at 1, 2, 3 threads bitwise equal to unfused at 1 thread, and close to the
/// interpreter. Returns the fused run's step counts.
fn check(c: &Case, seed: u64) -> StepCounts {
    let mut rng = Rng(seed);
    let g = Graph::new();
    let (fetch, feeds) = build(&g, c, &mut rng);
    let reference = Interpreter::new(&g).unwrap().run(&fetch, &feeds).unwrap();
    let (unfused, plain) = run_jit(&g, &fetch, &feeds, 1, false);
    assert_eq!(plain.conv_fused, 0, "{c:?}");
    let mut counts = None;
    for threads in [1, 2, 3] {
        let (out, k) = run_jit(&g, &fetch, &feeds, threads, true);
        for (i, (u, f)) in unfused.iter().zip(&out).enumerate() {
            assert!(
                u.bits_eq(f),
                "{c:?}: output {i} at {threads} threads differs from the unfused JIT"
            );
        }
        counts = Some(k);
    }
    for (i, (r, u)) in reference.iter().zip(&unfused).enumerate() {
        assert!(
            close(r, u),
            "{c:?}: output {i} differs from the interpreter"
        );
    }
    counts.unwrap()
}

fn case(x: [usize; 4], cout: usize) -> Case {
    Case {
        x,
        cout,
        conv: Conv2dOptions::new(),
        pool: Pool2dOptions::new([2, 2]),
        extra_reader: false,
        bias_grad: true,
        input_grad: false,
    }
}

#[test]
fn the_convnet_block_fuses_and_matches() {
    // The MNIST convnet's first layer at a small batch: 26×26 pooled 2×2, all covered.
    let counts = check(&case([5, 28, 28, 1], 32), 1);
    // The twin and its bias store, and (32 output channels, `K = 9`, on a CPU with AVX2
    // and FMA) the filter gradient's store.
    let filter = usize::from(cpu_has_filter_kernel());
    assert_eq!(counts.conv_fused, 2 + filter, "{counts:?}");
    assert_eq!(counts.conv_filter_direct, filter, "{counts:?}");
    assert!(counts.covers_every_node());
}

/// Does this CPU run the direct filter gradient (`jit/conv_direct/filter.rs`: x86-64 with
/// AVX2 and FMA)?
fn cpu_has_filter_kernel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[test]
fn the_filter_gradient_runs_inside_the_twin_and_matches() {
    // Output channels a multiple of 8 and `K ≤ 32`: the twin computes the filter gradient
    // image by image, bitwise the direct kernel's standalone step (the unfused run's),
    // at 1, 2 and 3 threads: batch 1, odd sizes, padding, strides, 3 input channels.
    let cases = [
        case([1, 9, 9, 2], 8),
        Case {
            conv: Conv2dOptions::new().padding(Padding::Same).strides(2, 1),
            ..case([3, 11, 10, 3], 16)
        },
        Case {
            bias_grad: false,
            pool: Pool2dOptions::new([3, 2]),
            ..case([2, 13, 12, 1], 24)
        },
        // The input's gradient reads `dpre` too: the twin stores every image of it.
        Case {
            input_grad: true,
            ..case([3, 10, 9, 2], 16)
        },
    ];
    let filter = usize::from(cpu_has_filter_kernel());
    for (i, c) in cases.iter().enumerate() {
        let counts = check(c, 40 + i as u64);
        let stores = usize::from(c.bias_grad) + filter;
        assert_eq!(counts.conv_fused, 1 + stores, "{c:?}: {counts:?}");
        assert_eq!(counts.conv_filter_direct, filter, "{c:?}: {counts:?}");
    }
}

#[test]
fn batch_one_and_odd_sizes() {
    // Batch 1; an odd activation (the last row and column lie in no window: zero fill).
    for (i, x) in [[1, 9, 9, 1], [2, 10, 12, 1], [3, 8, 11, 2]]
        .into_iter()
        .enumerate()
    {
        let counts = check(&case(x, 5 + i), 10 + i as u64);
        assert_eq!(counts.conv_fused, 2, "{x:?}: {counts:?}");
    }
}

#[test]
fn without_the_bias_gradient_the_pool_and_mask_still_fuse() {
    let mut c = case([2, 9, 9, 1], 4);
    c.bias_grad = false;
    let counts = check(&c, 3);
    assert_eq!(counts.conv_fused, 1, "{counts:?}");
}

#[test]
fn a_relu_output_with_another_reader_runs_unfused_and_matches() {
    let mut c = case([2, 10, 10, 1], 6);
    c.extra_reader = true;
    let counts = check(&c, 4);
    // The ReLU's gradient is then the pool's plus the other reader's, not the pool
    // gradient alone: the mask kernel has another body, and nothing fuses.
    assert_eq!(counts.conv_fused, 0, "{counts:?}");
}

#[test]
fn random_geometries_match() {
    let mut rng = Rng(0x5eed);
    let mut fused = 0;
    for i in 0..24 {
        let pad = match rng.below(3) {
            0 => Padding::Valid,
            1 => Padding::Same,
            _ => Padding::Explicit([(rng.below(3), rng.below(2)), (rng.below(2), rng.below(3))]),
        };
        let conv = Conv2dOptions::new()
            .padding(pad)
            .strides(1 + rng.below(2), 1 + rng.below(2));
        // Disjoint windows (stride ≥ kernel) fuse; overlapping ones must run unfused.
        let k = [1 + rng.below(3), 1 + rng.below(3)];
        let s = [k[0] + rng.below(2), k[1] + rng.below(2)];
        let overlap = rng.below(5) == 0;
        let pool = Pool2dOptions::new(k).strides(if overlap { [1, 1] } else { s });
        let c = Case {
            x: [
                1 + rng.below(3),
                6 + rng.below(9),
                6 + rng.below(9),
                1 + rng.below(3),
            ],
            cout: 1 + rng.below(9),
            conv,
            pool,
            extra_reader: rng.below(4) == 0,
            bias_grad: rng.below(5) != 0,
            input_grad: rng.below(4) == 0,
        };
        let g = Graph::new();
        {
            let x = g.placeholder("x", DType::F32, c.x);
            let w = g.placeholder("w", DType::F32, [3, 3, c.x[3], c.cout]);
            let _ = x.conv2d(w, &c.conv).max_pool2d(&c.pool);
        }
        if g.check().is_err() {
            continue;
        }
        let counts = check(&c, 100 + i);
        let disjoint = !overlap || k == [1, 1];
        if !disjoint {
            assert_eq!(counts.conv_fused, 0, "{c:?}");
        }
        fused += usize::from(counts.conv_fused > 0);
    }
    assert!(fused >= 8, "only {fused} geometries fused");
}

#[test]
fn inference_runs_the_same() {
    // Only the forward value is fetched: nothing of the backward twin exists.
    let mut rng = Rng(9);
    let g = Graph::new();
    let c = case([3, 12, 12, 1], 8);
    let (fetch, feeds) = build(&g, &c, &mut rng);
    let (out, counts) = run_jit(&g, &fetch[..1], &feeds, 2, true);
    let (plain, _) = run_jit(&g, &fetch[..1], &feeds, 1, false);
    assert_eq!(counts.conv_fused, 0);
    assert!(out[0].bits_eq(&plain[0]));
}
