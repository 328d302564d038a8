//! The forward twin (`src/jit/conv_direct.rs`): the MNIST convnet's training step and
//! inference (`super::Cnn`, batch 128) with conv1, its bias, ReLU and max pool as one direct
//! kernel (the default) and with `KILN_CONV_DIRECT=0` (im2col + `gemm`, the elementwise
//! kernel, the pooling kernel), the four sessions' samples interleaved in one `measure`, at
//! 1 and 2 threads.

use crate::harness::{measure, Config, Report, Target};
use crate::THREADS;
use kiln::prelude::*;
use std::hint::black_box;

/// A session of `g` compiled now (its first run of `fetch`) with the kernel that `switch`
/// names on or off; `count` says how many steps run the kernel, which must be none when off.
fn compiled(
    g: &Graph,
    (switch, on): (&str, bool),
    fetch: &[Tensor<'_>],
    feeds: &[(Tensor<'_>, Array)],
    count: fn(&kiln::session::StepCounts) -> usize,
    case: &str,
) -> Session {
    std::env::set_var(switch, if on { "1" } else { "0" });
    let mut sess = Session::new(g).unwrap();
    sess.run(fetch, feeds).unwrap();
    std::env::remove_var(switch);
    let steps = count(&sess.last_compile_times().unwrap().steps);
    assert!(
        on || steps == 0,
        "{case}: {steps} kernel steps with {switch}=0"
    );
    if on && steps == 0 {
        eprintln!("{case}: the kernel did not run (it needs x86-64 with AVX2 and FMA)");
    }
    sess
}

/// The convnet A/B.
pub fn convnet(cfg: &Config, report: &mut Report) {
    let case = "conv1 direct convnet b128";
    if !cfg.wants(case) {
        return;
    }
    eprintln!("{case}");
    let g = Graph::new();
    let m = super::Cnn::new(&g);
    let train_feeds = m.feeds(true);
    let mut infer_feeds = m.feeds(false);
    infer_feeds.remove(1); // the labels
    let train = [m.loss, m.train];
    for t in THREADS {
        kiln::threads::set_threads(t);
        let session = |on: bool, fetch: &[Tensor<'_>], feeds: &[(Tensor<'_>, Array)]| {
            compiled(
                &g,
                ("KILN_CONV_DIRECT", on),
                fetch,
                feeds,
                |c| c.conv_direct,
                case,
            )
        };
        let mut td = session(true, &train, &train_feeds);
        let mut tu = session(false, &train, &train_feeds);
        let mut id = session(true, &[m.logits], &infer_feeds);
        let mut iu = session(false, &[m.logits], &infer_feeds);
        let [a, b, c, d] = measure(
            cfg,
            [
                &mut || {
                    black_box(td.run(&train, &train_feeds).unwrap());
                },
                &mut || {
                    black_box(tu.run(&train, &train_feeds).unwrap());
                },
                &mut || {
                    black_box(id.run(&[m.logits], &infer_feeds).unwrap());
                },
                &mut || {
                    black_box(iu.run(&[m.logits], &infer_feeds).unwrap());
                },
            ],
        );
        let base = "the same with KILN_CONV_DIRECT=0 (im2col + gemm, kernel, pool)";
        let row = |kind: &str| format!("{case} {kind}, conv1 direct (default)");
        report.row(&row("train step"), t, a, base, b, Target::None);
        report.row(&row("inference"), t, c, base, d, Target::None);
    }
    kiln::threads::set_threads(0);
}

/// The direct small-K filter gradient (`src/jit/conv_direct/filter.rs`) against `gemm`
/// (`KILN_CONV_FILTER=0`): conv1's filter gradient alone (`[128, 28, 28, 1]` input,
/// `[3, 3, 1, 32]` filter) and the whole training step, the four sessions' samples
/// interleaved in one `measure`, at 1 and 2 threads.
pub fn filter(cfg: &Config, report: &mut Report) {
    let case = "conv1 filter gradient b128";
    if !cfg.wants(case) {
        return;
    }
    eprintln!("{case}");
    let g = Graph::new();
    let x = g.placeholder("fx", DType::F32, [128, 28, 28, 1]);
    let w = g.placeholder("fw", DType::F32, [3, 3, 1, 32]);
    let dy = g.placeholder("fdy", DType::F32, [128, 26, 26, 32]);
    let dw = kiln::autodiff::vjp(x.conv2d(w, &kiln::Conv2dOptions::new()), &[w], dy).unwrap()[0];
    let value = |shape: &[usize], k: usize| {
        let n = shape.iter().product();
        Array::new(
            shape,
            (0..n).map(|i| ((i * k) % 97) as f32 / 97.0 - 0.5).collect(),
        )
        .unwrap()
    };
    let feeds = [
        (x, value(&[128, 28, 28, 1], 31)),
        (w, value(&[3, 3, 1, 32], 7)),
        (dy, value(&[128, 26, 26, 32], 13)),
    ];
    let m = super::Cnn::new(&g);
    let train_feeds = m.feeds(true);
    let train = [m.loss, m.train];
    for t in THREADS {
        kiln::threads::set_threads(t);
        let session = |on: bool, fetch: &[Tensor<'_>], feeds: &[(Tensor<'_>, Array)]| {
            compiled(
                &g,
                ("KILN_CONV_FILTER", on),
                fetch,
                feeds,
                |c| c.conv_filter_direct,
                case,
            )
        };
        let mut fd = session(true, &[dw], &feeds);
        let mut fg = session(false, &[dw], &feeds);
        let mut td = session(true, &train, &train_feeds);
        let mut tg = session(false, &train, &train_feeds);
        let [a, b, c, d] = measure(
            cfg,
            [
                &mut || {
                    black_box(fd.run(&[dw], &feeds).unwrap());
                },
                &mut || {
                    black_box(fg.run(&[dw], &feeds).unwrap());
                },
                &mut || {
                    black_box(td.run(&train, &train_feeds).unwrap());
                },
                &mut || {
                    black_box(tg.run(&train, &train_feeds).unwrap());
                },
            ],
        );
        let base = "the same with KILN_CONV_FILTER=0 (im2col + gemm)";
        report.row(
            &format!("{case}, direct (default)"),
            t,
            a,
            base,
            b,
            Target::None,
        );
        let step = "mnist convnet train step b128, conv1 filter gradient direct (default)";
        report.row(step, t, c, base, d, Target::None);
    }
    kiln::threads::set_threads(0);
}
