//! The MNIST convnet cases (issue 17): Keras' "simple MNIST convnet" built from the graph
//! API as the MLP cases are: Conv2D(32, 3×3, ReLU) → MaxPool 2 → Conv2D(64, 3×3, ReLU) →
//! MaxPool 2 → Flatten → Dropout(0.5) → Dense(10), softmax cross-entropy, Adam, batch 128.
//!
//! The training step is printed against two references: the GEMM bound (the step's 1.82
//! GFLOP at the throughput `gemm` reaches on a 1024³ product, measured in this run with
//! samples interleaved with the step's), and JAX jit on the same model timed in this run
//! (`jax.rs`: `benches/peers/bench_jax_cnn.py` before and after kiln's samples, when
//! `.peers-venv` or `KILN_PYTHON` has JAX). Without JAX the rows show the figures issue 17
//! quotes (2026-11-30), marked as not measured here: they are no ratio of this run.

pub mod conv2;
pub mod depthwise;
pub mod direct;
mod jax;
pub mod window;
pub mod winograd;

use crate::harness::{fmt_time, measure, median, Config, Report, Target};
use crate::{baseline, ramp};
use kiln::prelude::*;
use std::hint::black_box;
use std::time::Instant;

/// Where the JAX convnet figures come from when JAX cannot run here.
const PUBLISHED_CNN: &str = "issue 17's figure of 2026-11-30, not measured here";
/// Those figures: [train step, inference] at [1, 2] threads.
const PUBLISHED: [[f64; 2]; 2] = [[132e-3, 5.9e-3], [83e-3, 3.1e-3]];
/// The training step's FLOPs at batch 128 (2 per multiply-add; issue 17's count).
const STEP_FLOP: f64 = 1.82e9;
const BATCH: usize = 128;

/// The convnet's graph: feeds, fetches, and the graph's own parameter list.
struct Cnn<'g> {
    x: Tensor<'g>,
    y: Tensor<'g>,
    training: Tensor<'g>,
    logits: Tensor<'g>,
    loss: Tensor<'g>,
    train: Tensor<'g>,
}

impl<'g> Cnn<'g> {
    fn new(g: &'g Graph) -> Cnn<'g> {
        let x = g.placeholder("x", DType::F32, [None, Some(28), Some(28), Some(1)]);
        let y = g.placeholder("y", DType::I32, [None]);
        let training = g.placeholder("training", DType::Bool, Shape::scalar());
        let mut params = vec![];
        let mut h = x;
        for (i, (cin, cout)) in [(1usize, 32usize), (32, 64)].into_iter().enumerate() {
            let w = g.variable(
                &format!("conv{i}_w"),
                [3, 3, cin, cout],
                init::he_normal(i as u64 + 1),
            );
            let b = g.variable(&format!("conv{i}_b"), [cout], init::zeros());
            params.extend([w, b]);
            h = (h.conv2d(w, &kiln::Conv2dOptions::new()) + b).relu();
            h = h.max_pool2d(&kiln::Pool2dOptions::new([2, 2]));
        }
        let h = h.reshape([None, Some(1600)]).dropout(0.5, training, 7);
        let w = g.variable("dense_w", [1600, 10], init::he_normal(3));
        let b = g.variable("dense_b", [10], init::zeros());
        params.extend([w, b]);
        let logits = h.matmul(w) + b;
        let loss = logits
            .sparse_softmax_cross_entropy_with_logits(y)
            .mean_all();
        let train = Adam::new(1e-3).minimize(loss, &params).unwrap();
        Cnn {
            x,
            y,
            training,
            logits,
            loss,
            train,
        }
    }

    fn feeds(&self, training: bool) -> Vec<(Tensor<'g>, Array)> {
        let n = BATCH * 28 * 28;
        let labels: Vec<i32> = (0..BATCH as i32).map(|i| i % 10).collect();
        vec![
            (
                self.x,
                Array::new([BATCH, 28, 28, 1], ramp(n, 1.0, 97)).unwrap(),
            ),
            (self.y, Array::new([BATCH], labels).unwrap()),
            (self.training, Array::scalar(training)),
        ]
    }
}

/// Seconds of a `gemm` 1024³ product's worth of FLOPs → the step's GEMM bound in seconds.
fn gemm_bound(gemm_1024: f64) -> f64 {
    let rate = 2.0 * 1024f64.powi(3) / gemm_1024;
    STEP_FLOP / rate
}

/// The training step (forward, backward, Adam) and inference at batch 128, each at 1 and 2
/// threads, with a 1024³ `gemm` interleaved in the same `measure` for the bound.
pub fn mnist_cnn(cfg: &Config, report: &mut Report) {
    let case = "mnist convnet train step b128";
    let infer = "mnist convnet inference b128";
    if !cfg.wants(case) && !cfg.wants(infer) {
        return;
    }
    eprintln!("{case}");
    let g = Graph::new();
    let m = Cnn::new(&g);
    let n = 1024;
    let (ga, gb) = (ramp(n * n, 1.0, 97), ramp(n * n, 0.5, 89));
    let mut gout = vec![0f32; n * n];
    let train_feeds = m.feeds(true);
    let mut infer_feeds = m.feeds(false);
    infer_feeds.remove(1); // the labels
    let fetch = [m.loss, m.train];
    for t in [1, 2] {
        let jax_before = jax::times(t);
        kiln::threads::set_threads(t);
        let mut sess = Session::new(&g).unwrap();
        let mut sess_inf = Session::new(&g).unwrap();
        let [k, kinf, gm] = measure(
            cfg,
            [
                &mut || {
                    black_box(sess.run(&fetch, &train_feeds).unwrap());
                },
                &mut || {
                    black_box(sess_inf.run(&[m.logits], &infer_feeds).unwrap());
                },
                &mut || baseline::matmul(n, &ga, &gb, black_box(&mut gout), t),
            ],
        );
        let bound = gemm_bound(gm);
        let s = if t > 1 { "s" } else { "" };
        report.row(
            case,
            t,
            k,
            &format!("GEMM bound: 1.82 GFLOP at gemm 1024³'s rate ({t} thread{s}, this run)"),
            bound,
            Target::Under([25e-3, 14e-3][t - 1], 20e-3),
        );
        let jax_after = jax_before.and_then(|_| jax::times(t));
        for (i, (name, kt)) in [(case, k), (infer, kinf)].into_iter().enumerate() {
            let (label, base) = match (jax_before, jax_after) {
                (Some(b), Some(a)) => (
                    format!(
                        "JAX jit, this run (before {} / after {})",
                        fmt_time(b[i]),
                        fmt_time(a[i])
                    ),
                    (b[i] + a[i]) / 2.0,
                ),
                _ => (format!("JAX jit ({PUBLISHED_CNN})"), PUBLISHED[t - 1][i]),
            };
            report.row(name, t, kt, &label, base, Target::Faster);
        }
        report.note(format!(
            "{case} at {t} thread{s}: {} = {:.2}× the GEMM bound {} (gemm 1024³ {} = {:.0} \
             GFLOP/s), {:.0} GFLOP/s effective",
            fmt_time(k),
            k / bound,
            fmt_time(bound),
            fmt_time(gm),
            2.0 * 1024f64.powi(3) / gm / 1e9,
            STEP_FLOP / k / 1e9,
        ));
    }
}

/// A cold compile of the convnet's training graph in a new session (graph and gradients
/// built once, outside the timing): passes, Cranelift IR, machine code and finalizing.
pub fn mnist_cnn_compile(cfg: &Config, report: &mut Report) {
    let case = "mnist convnet train graph cold compile b128";
    if !cfg.wants(case) {
        return;
    }
    eprintln!("{case}");
    let g = Graph::new();
    let m = Cnn::new(&g);
    let feeds = m.feeds(true);
    let fetch = [m.loss, m.train];
    let samples = if cfg.quick { cfg.samples } else { 9 };
    for t in [1, 2] {
        kiln::threads::set_threads(t);
        let once = || {
            let t0 = Instant::now();
            let mut sess = Session::new(&g).unwrap();
            black_box(sess.run(&fetch, &feeds).unwrap());
            let wall = t0.elapsed().as_secs_f64();
            let c = sess.last_compile_times().expect("a JIT compile");
            (
                [wall, c.total().as_secs_f64(), c.cranelift.as_secs_f64()],
                c.kernels,
            )
        };
        once();
        let runs: Vec<_> = (0..samples).map(|_| once()).collect();
        let med: [f64; 3] =
            std::array::from_fn(|i| median(&mut runs.iter().map(|r| r.0[i]).collect::<Vec<_>>()));
        let name = "target (no published peer figure)";
        report.row(case, t, med[1], name, 20e-3, Target::Under(20e-3, 10e-3));
        report.note(format!(
            "{case} at {t} thread{}: compile {} (Cranelift {}, {} kernels); cold start with \
             the first step {}",
            if t > 1 { "s" } else { "" },
            fmt_time(med[1]),
            fmt_time(med[2]),
            runs[0].1,
            fmt_time(med[0]),
        ));
    }
}
