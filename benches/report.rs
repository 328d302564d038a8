//! The benchmark report: kiln's median time on each target workload next to a baseline, as
//! one markdown table.
//!
//! ```sh
//! cargo bench --bench report                  # every case, 11 samples each (about 30 s)
//! cargo bench --bench report -- --quick       # CI smoke run: 5 short samples (< 60 s)
//! cargo bench --bench report -- matmul mlp    # only cases whose name contains a filter
//! ```
//!
//! **What is measured.** Wall-clock time (`Instant`) of one `Session::run` on an already
//! compiled session (or, for the cold-compile case, the compile inside the first run:
//! passes, Cranelift IR, machine code and finalizing, from `Session::last_compile_times`), at
//! kiln thread counts 1 and 2 (`kiln::threads::set_threads`). Each figure is the median of
//! 11 samples (5 with `--quick`) taken after a warm-up; a sample runs the workload enough
//! times to last at least 20 ms (5 ms) and gives the time per run. Elementwise and matmul cases
//! run with `Session::run_into`, reusing the output array as the baselines reuse theirs; the
//! MLP cases use `run` (their outputs are a few scalars; variables are double-buffered). Nothing here asserts a time; before timing,
//! each Rust baseline's result is compared with kiln's and the agreement printed as a note.
//! (Timing and the table are in `harness/`, the baselines in `baseline/`.)
//!
//! **Why these baselines.** A ratio is only meaningful against something measured on the same
//! machine at the same moment, so where a baseline can run in Rust it runs here, and its samples
//! are interleaved with kiln's (kiln, baseline, kiln, baseline, ...) so that load from other
//! tenants of this 2-core machine hits both alike:
//! - elementwise: a single-threaded rustc/LLVM loop compiled for AVX2+FMA (at both kiln
//!   thread counts), which is what a hand-written Rust kernel gets; for the transcendental case it uses kiln's own polynomials (the file
//!   `src/jit/vmath/scalar.rs`, compiled into the baseline), so the ratio measures code
//!   generation and kiln's overhead around it, not a choice of algorithm;
//! - matmul: the `gemm` crate called directly, which kiln uses for its matrix products, so
//!   the ratio is kiln's overhead around it; in the `+ bias + ReLU` case the baseline still
//!   computes only the product, so the ratio is also what the fused epilogue costs.
//!
//! The MLP, compile and transcendental cases are also compared with peer frameworks, timed
//! in the same run: when `.peers-venv` (or `KILN_PYTHON`) has them, `benches/peers/mlp_peers.py`
//! runs JAX, numpy and PyTorch each as a long-lived process per thread count, and their
//! samples are interleaved with kiln's one at a time (`harness/peers.rs`; the peer pins itself
//! to as many cores as it has threads and sleeps 0.1 s after each sample, so that OpenBLAS's
//! and Eigen's spinning workers are asleep before kiln runs again). Without them (or with
//! `--no-peers`), those rows show the figures the peer scripts gave on 2026-11-24 on another
//! machine, marked "not measured here".

mod baseline;
mod cnn;
mod harness;
mod mlp;
mod resnet50;

use harness::peers::{peer_row, Fw, Peers};
use harness::{fmt_time, measure, measure_timed, median, timed, Config, Report, Target, Timed};
use kiln::prelude::*;
use std::hint::black_box;
use std::time::Instant;

const THREADS: [usize; 2] = [1, 2];
const N_ELEM: usize = 1 << 24;

// ---------------------------------------------------------------------------------------------
// Inputs and checks

/// `n` values repeating a ramp over `[-scale/2, scale/2)` every `period`; coprime periods for
/// the inputs of one case make the elementwise checks see many different combinations.
fn ramp(n: usize, scale: f32, period: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i % period) as f32 / period as f32 - 0.5) * scale)
        .collect()
}

fn f32s(a: &Array) -> &[f32] {
    a.as_slice::<f32>().expect("f32 array")
}

/// How far kiln's result is from the baseline's: "bitwise equal", or the largest difference
/// in units in the last place and relative to the largest magnitude.
fn agreement(got: &[f32], want: &[f32]) -> String {
    assert_eq!(got.len(), want.len(), "result lengths differ");
    // Bits mapped to a monotonic integer line, so that ulps are a subtraction.
    let line = |v: f32| {
        let b = v.to_bits() as i32;
        i64::from(if b < 0 { i32::MIN - b } else { b })
    };
    let (mut ulps, mut diff, mut scale) = (0i64, 0f32, f32::MIN_POSITIVE);
    for (&g, &w) in got.iter().zip(want) {
        ulps = ulps.max((line(g) - line(w)).abs());
        diff = diff.max((g - w).abs());
        scale = scale.max(w.abs());
    }
    if ulps == 0 {
        "bitwise equal".to_string()
    } else {
        let rel = f64::from(diff) / f64::from(scale);
        format!("max {ulps} ulp, {rel:.1e} of the largest magnitude")
    }
}

// ---------------------------------------------------------------------------------------------
// Cases

/// Cases 1 and 2: elementwise over 16M f32 against an AVX2 rustc loop on one thread.
fn elementwise(cfg: &Config, report: &mut Report, peers: &Peers, transcendental: bool) {
    let case = if transcendental {
        "sigmoid(a*b+c)*tanh(a), 16M"
    } else {
        "a*b+c, 16M"
    };
    if !cfg.wants(case) {
        return;
    }
    eprintln!("{case}");
    let n = N_ELEM;
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, [n]);
    let b = g.placeholder("b", DType::F32, [n]);
    let c = g.placeholder("c", DType::F32, [n]);
    let y = if transcendental {
        (a * b + c).sigmoid() * a.tanh()
    } else {
        a * b + c
    };
    let feeds = [
        (a, Array::new([n], ramp(n, 8.0, 1009)).unwrap()),
        (b, Array::new([n], ramp(n, 2.0, 997)).unwrap()),
        (c, Array::new([n], ramp(n, 1.0, 991)).unwrap()),
    ];
    let (av, bv, cv) = (f32s(&feeds[0].1), f32s(&feeds[1].1), f32s(&feeds[2].1));
    let base_fn: baseline::Elementwise = if transcendental {
        baseline::sigmoid_tanh
    } else {
        baseline::mul_add
    };
    // Both write into an output allocated once: the baseline into this buffer, kiln into the
    // array `run_into` hands back (a fresh 64 MB output per run costs ~20 ms of page faults).
    let mut out = vec![0f32; n];
    for t in THREADS {
        kiln::threads::set_threads(t);
        let mut sess = Session::new(&g).unwrap();
        if t == 1 {
            let got = sess.run(&[y], &feeds).unwrap();
            base_fn(av, bv, cv, &mut out);
            report.note(format!(
                "{case}: kiln vs baseline: {}",
                agreement(f32s(&got[0]), &out)
            ));
        }
        let mut kout = vec![];
        let mut kiln_fn = || {
            sess.run_into(&[y], &feeds, &mut kout).unwrap();
            black_box(&kout);
        };
        let mut k = timed(&mut kiln_fn);
        let mut base_call = || base_fn(av, bv, cv, black_box(&mut out));
        let mut b = timed(&mut base_call);
        let mut jax = peers.timed(Fw::Jax, t, "elementwise");
        let mut all: Vec<Timed> = vec![&mut k, &mut b];
        if transcendental && peers.available() {
            all.push(&mut jax);
        }
        let m = measure_timed(cfg, &mut all);
        let (k, base) = (m[0], m[1]);
        let name = "rustc loop, AVX2+FMA (1 thread)";
        if transcendental {
            report.row(case, t, k, name, base, Target::Ratio(0.7));
            let jax = m.get(2).copied();
            peer_row(
                report,
                case,
                t,
                k,
                Fw::Jax,
                "elementwise",
                jax,
                Target::Faster,
            );
        } else {
            report.row(case, t, k, name, base, Target::Ratio(0.9));
        }
    }
}

/// Case 3: an n×n by n×n product against `gemm` called directly at the same thread count.
/// Cases 3 and 4: an `n³` product against `gemm` called directly. With `epilogue`, kiln
/// computes `relu(a·b + bias)` and the baseline still only the product, so the ratio is what
/// the fused bias and activation cost on top of `gemm` (they run in place right after it,
/// on an output the product just wrote, so from cache rather than memory).
fn matmul(cfg: &Config, report: &mut Report, n: usize, epilogue: bool) {
    let case = if epilogue {
        format!("matmul {n}³ + bias + ReLU")
    } else {
        format!("matmul {n}³")
    };
    if !cfg.wants(&case) {
        return;
    }
    eprintln!("{case}");
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, [n, n]);
    let b = g.placeholder("b", DType::F32, [n, n]);
    let bias = g.placeholder("bias", DType::F32, [n]);
    let y = if epilogue {
        (a.matmul(b) + bias).relu()
    } else {
        a.matmul(b)
    };
    let mut feeds = vec![
        (a, Array::new([n, n], ramp(n * n, 1.0, 97)).unwrap()),
        (b, Array::new([n, n], ramp(n * n, 0.5, 89)).unwrap()),
    ];
    if epilogue {
        feeds.push((bias, Array::new([n], ramp(n, 4.0, 61)).unwrap()));
    }
    let (av, bv) = (f32s(&feeds[0].1), f32s(&feeds[1].1));
    let mut out = vec![0f32; n * n];
    for t in THREADS {
        kiln::threads::set_threads(t);
        let mut sess = Session::new(&g).unwrap();
        if t == 1 {
            let got = sess.run(&[y], &feeds).unwrap();
            baseline::matmul(n, av, bv, &mut out, 1);
            if epilogue {
                let bv = f32s(&feeds[2].1);
                for (i, o) in out.iter_mut().enumerate() {
                    *o = (*o + bv[i % n]).max(0.0);
                }
            }
            report.note(format!(
                "{case}: kiln vs baseline: {}",
                agreement(f32s(&got[0]), &out)
            ));
        }
        let mut kout = vec![];
        let [k, base] = measure(
            cfg,
            [
                &mut || {
                    sess.run_into(&[y], &feeds, &mut kout).unwrap();
                    black_box(&kout);
                },
                &mut || baseline::matmul(n, av, bv, black_box(&mut out), t),
            ],
        );
        let name = format!(
            "gemm 0.19 direct{} ({t} thread{})",
            if epilogue { ", product only" } else { "" },
            if t > 1 { "s" } else { "" }
        );
        report.row(&case, t, k, &name, base, Target::Ratio(0.95));
    }
}

/// The convolution case's sizes: batch, image side, channels in and out, kernel side.
const CONV: (usize, usize, usize, usize, usize) = (8, 56, 64, 64, 3);

/// `dst[m,n] = a[m,k] · b[k,n]`, row-major, by `gemm` (the convolution case's baseline).
fn gemm_rect((m, k, n): (usize, usize, usize), a: &[f32], b: &[f32], dst: &mut [f32], t: usize) {
    assert!(a.len() >= m * k && b.len() >= k * n && dst.len() >= m * n);
    let par = if t > 1 {
        gemm::Parallelism::Rayon(t)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the buffers hold the row-major extents asserted above, and `dst` is a distinct
    // `&mut` borrow, so nothing aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Case 7: the cost of depth. `grad` and the cold compile (passes, Cranelift IR, machine code)
/// of a chain of `n` elementwise ops (`tanh`, `* c`, `+ c`, `sigmoid`: the gradient reads the
/// forward values, so the chain is cut into many kernels) and of its gradient, per op, at
/// 1k and 8k ops, measured in the same run. A ratio near 1 is a linear cost; the audit of
/// issue 16 measured 4× per doubling before (`grad` 0.41/1.56/6.4 s at 1k/2k/4k ops).
fn deep_chain(cfg: &Config, report: &mut Report) {
    let case = "deep chain grad + compile";
    if !cfg.wants(case) {
        return;
    }
    eprintln!("{case}");
    kiln::threads::set_threads(1);
    // Seconds per op of [grad, compile] for a chain of `n` ops.
    let once = |n: usize| -> [f64; 2] {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [None, Some(4)]);
        let mut y = x;
        for i in 0..n {
            y = match i % 4 {
                0 => y.tanh(),
                1 => y * 1.5f32,
                2 => y + 0.25f32,
                _ => y.sigmoid(),
            };
        }
        let loss = y.sum_all();
        let t0 = Instant::now();
        let dx = kiln::autodiff::grad(loss, &[x]).unwrap()[0];
        let grad = t0.elapsed().as_secs_f64();
        let mut sess = Session::new(&g).unwrap();
        let xv = Array::new([2, 4], ramp(8, 2.0, 7)).unwrap();
        black_box(sess.run(&[loss, dx], &[(x, xv)]).unwrap());
        let compile = sess.last_compile_times().expect("a JIT compile").total();
        [grad / n as f64, compile.as_secs_f64() / n as f64]
    };
    let samples = if cfg.quick { 1 } else { 3 };
    let per_op = |n: usize| -> [f64; 2] {
        let runs: Vec<[f64; 2]> = (0..samples).map(|_| once(n)).collect();
        std::array::from_fn(|i| median(&mut runs.iter().map(|r| r[i]).collect::<Vec<_>>()))
    };
    let (small, large) = (per_op(1000), per_op(8000));
    let [gs, cs] = small.map(fmt_time);
    let [gl, cl] = large.map(fmt_time);
    report.note(format!(
        "{case} (1 thread, medians of {samples}), per op: grad {gs} at 1k ops, {gl} at 8k \
         (ratio {:.2}); compile {cs} at 1k, {cl} at 8k (ratio {:.2}); 1.0 is linear",
        large[0] / small[0],
        large[1] / small[1],
    ));
}

fn main() {
    let cfg = Config::from_args();
    let mut report = Report::default();
    let peers = Peers::new(!cfg.no_peers);
    report.note(format!(
        "load average (1, 5, 15 min) at the start: {}",
        harness::load_average()
    ));
    let t0 = Instant::now();
    elementwise(&cfg, &mut report, &peers, false);
    elementwise(&cfg, &mut report, &peers, true);
    for n in [512, 1024] {
        matmul(&cfg, &mut report, n, false);
    }
    matmul(&cfg, &mut report, 1024, true);
    cnn::window::conv(&cfg, &mut report);
    for batch in [128, 32] {
        mlp::mlp_train(&cfg, &mut report, &peers, batch);
    }
    mlp::mlp_infer(&cfg, &mut report, &peers);
    mlp::cold_compile(&cfg, &mut report, &peers);
    deep_chain(&cfg, &mut report);
    for max in [true, false] {
        cnn::window::pool(&cfg, &mut report, [26, 26, 32], max);
        cnn::window::pool(&cfg, &mut report, [11, 11, 64], max);
    }
    cnn::conv2::conv2(&cfg, &mut report);
    cnn::depthwise::depthwise(&cfg, &mut report);
    cnn::winograd::winograd(&cfg, &mut report);
    cnn::mnist_cnn(&cfg, &mut report);
    cnn::direct::convnet(&cfg, &mut report);
    cnn::direct::filter(&cfg, &mut report);
    cnn::mnist_cnn_compile(&cfg, &mut report);
    resnet50::resnet50(&cfg, &mut report);
    kiln::threads::set_threads(0);
    for f in peers.take_failures() {
        report.note(f);
    }
    drop(peers);

    report.print(&cfg);
    println!("\n(report took {:.1} s)", t0.elapsed().as_secs_f64());
}
