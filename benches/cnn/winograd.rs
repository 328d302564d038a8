//! Winograd F(2×2, 3×3) against im2col + `gemm` (`src/jit/conv_wino.rs`): MNIST conv2's
//! forward (`[128,13,13,32]`, 3×3, 32→64, valid) and input gradient, and issue 17's 3×3
//! 64→64 `same` forward at 56×56 × 8. Each case times, samples interleaved in one
//! `measure`: the Winograd step (forced by `KILN_WINOGRAD=1`: the plan keeps conv2's input
//! gradient direct, and this is the measurement why), the same graph compiled with
//! `KILN_WINOGRAD=0` (im2col tiles and `gemm`, col2im for the gradient), and a bare `gemm`
//! of the direct path's im2col shape on ready matrices (`[M, 9·C]·[9·C, O]` forward,
//! `[M, O]·[O, 9·C]` for the input gradient, whose col2im it leaves out). Winograd does
//! fewer FLOPs, so its "GFLOP/s" are the direct FLOPs over its time (effective rate).
//! Last, the MNIST convnet's step and inference with and without Winograd, interleaved.

use crate::harness::{fmt_time, measure, Config, Report, Target};
use crate::{gemm_rect, ramp, THREADS};
use kiln::prelude::*;
use std::hint::black_box;

/// One case: input `[n, side, side, c]`, `o` output channels, padding 1 or 0 per side, the
/// forward step or the input gradient.
struct Case {
    n: usize,
    side: usize,
    c: usize,
    o: usize,
    same: bool,
    dx: bool,
}

/// The three cases, then the convnet A/B.
pub fn winograd(cfg: &Config, report: &mut Report) {
    let cases = [
        (128, 13, 32, 64, false, false),
        (128, 13, 32, 64, false, true),
        (8, 56, 64, 64, true, false),
    ];
    for (n, side, c, o, same, dx) in cases {
        one(
            cfg,
            report,
            &Case {
                n,
                side,
                c,
                o,
                same,
                dx,
            },
        );
    }
    convnet(cfg, report);
}

fn one(cfg: &Config, report: &mut Report, cs: &Case) {
    let dir = if cs.dx { "dx" } else { "fwd" };
    let case = format!(
        "winograd conv 3×3 {}→{} [{},{},{},{}] {dir}",
        cs.c, cs.o, cs.n, cs.side, cs.side, cs.c
    );
    if !cfg.wants(&case) {
        return;
    }
    eprintln!("{case}");
    let g = Graph::new();
    let xs = [cs.n, cs.side, cs.side, cs.c];
    let ws = [3, 3, cs.c, cs.o];
    let x = g.placeholder("x", DType::F32, xs);
    let w = g.placeholder("w", DType::F32, ws);
    let pad = if cs.same {
        kiln::Padding::Same
    } else {
        kiln::Padding::Valid
    };
    let y = x.conv2d(w, &kiln::Conv2dOptions::new().padding(pad));
    let ys = y.shape().to_fixed().unwrap();
    let dy = g.placeholder("dy", DType::F32, Shape::fixed(&ys));
    let fetch = if cs.dx {
        kiln::autodiff::vjp(y, &[x], dy).unwrap()[0]
    } else {
        y
    };
    let (nx, ny) = (xs.iter().product::<usize>(), ys.iter().product::<usize>());
    let feeds = [
        (x, Array::new(xs, ramp(nx, 2.0, 1009)).unwrap()),
        (w, Array::new(ws, ramp(9 * cs.c * cs.o, 0.5, 97)).unwrap()),
        (dy, Array::new(&ys[..], ramp(ny, 2.0, 997)).unwrap()),
    ];
    // The direct path's product: M output pixels, K = 9·C taps.
    let (m, k) = (ny / cs.o, 9 * cs.c);
    let shape = if cs.dx { (m, cs.o, k) } else { (m, k, cs.o) };
    let lhs = ramp(shape.0 * shape.1, 1.0, 89);
    let rhs = ramp(shape.1 * shape.2, 1.0, 83);
    let mut prod = vec![0f32; shape.0 * shape.2];
    let flop = 2.0 * (m * k * cs.o) as f64;
    for t in THREADS {
        kiln::threads::set_threads(t);
        // A session compiled now (its first run), with or without Winograd.
        // `=1` forces it: the plan leaves conv2's input gradient (13×13, ragged) direct.
        let session = |on: bool| {
            std::env::set_var("KILN_WINOGRAD", if on { "1" } else { "0" });
            let mut sess = Session::new(&g).unwrap();
            let mut out = vec![];
            sess.run_into(&[fetch], &feeds, &mut out).unwrap();
            std::env::remove_var("KILN_WINOGRAD");
            let wino = sess.last_compile_times().unwrap().steps.conv_winograd;
            assert_eq!(wino > 0, on, "{case}: Winograd steps {wino}");
            (sess, out)
        };
        let (mut wi, mut wi_out) = session(true);
        let (mut di, mut di_out) = session(false);
        let diff = wi_out[0]
            .to_f64_vec()
            .iter()
            .zip(di_out[0].to_f64_vec())
            .fold(0f64, |e, (a, b)| e.max((a - b).abs() / (1.0 + b.abs())));
        let [kw, kd, base] = measure(
            cfg,
            [
                &mut || {
                    wi.run_into(&[fetch], &feeds, &mut wi_out).unwrap();
                    black_box(&wi_out);
                },
                &mut || {
                    di.run_into(&[fetch], &feeds, &mut di_out).unwrap();
                    black_box(&di_out);
                },
                &mut || gemm_rect(shape, &lhs, &rhs, black_box(&mut prod), t),
            ],
        );
        report.row(
            &case,
            t,
            kw,
            "im2col + gemm (KILN_WINOGRAD=0)",
            kd,
            Target::None,
        );
        report.row(&case, t, kw, "gemm on the im2col shape", base, Target::None);
        report.note(format!(
            "{case} at {t} thread(s): Winograd {} ({:.0} GFLOP/s effective), im2col {} ({:.0}), \
             gemm alone {} ({:.0}); Winograd = {:.2}× im2col, {:.2}× gemm; max \
             |Δ|/(1+|direct|) {diff:.1e}",
            fmt_time(kw),
            flop / kw / 1e9,
            fmt_time(kd),
            flop / kd / 1e9,
            fmt_time(base),
            flop / base / 1e9,
            kd / kw,
            base / kw,
        ));
    }
    kiln::threads::set_threads(0);
}

/// The MNIST convnet's training step and inference (`super::Cnn`, batch 128) compiled with
/// Winograd forced on every eligible convolution (`KILN_WINOGRAD=1`; the plan's own rule
/// leaves this model's 32-channel conv2 direct since a quiet run measured it slower) and with
/// `KILN_WINOGRAD=0`, the four sessions' samples interleaved in one `measure`, at 1 and 2
/// threads.
fn convnet(cfg: &Config, report: &mut Report) {
    let case = "winograd convnet b128";
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
        // A session compiled now (its first run), with or without Winograd.
        let session = |on: bool, fetch: &[Tensor<'_>], feeds: &[(Tensor<'_>, Array)]| {
            std::env::set_var("KILN_WINOGRAD", if on { "1" } else { "0" });
            let mut sess = Session::new(&g).unwrap();
            sess.run(fetch, feeds).unwrap();
            std::env::remove_var("KILN_WINOGRAD");
            let wino = sess.last_compile_times().unwrap().steps.conv_winograd;
            assert_eq!(wino > 0, on, "{case}: Winograd steps {wino}");
            sess
        };
        let mut tw = session(true, &train, &train_feeds);
        let mut td = session(false, &train, &train_feeds);
        let mut iw = session(true, &[m.logits], &infer_feeds);
        let mut id = session(false, &[m.logits], &infer_feeds);
        let [a, b, c, d] = measure(
            cfg,
            [
                &mut || {
                    black_box(tw.run(&train, &train_feeds).unwrap());
                },
                &mut || {
                    black_box(td.run(&train, &train_feeds).unwrap());
                },
                &mut || {
                    black_box(iw.run(&[m.logits], &infer_feeds).unwrap());
                },
                &mut || {
                    black_box(id.run(&[m.logits], &infer_feeds).unwrap());
                },
            ],
        );
        let base = "the same with KILN_WINOGRAD=0 (this model's default plan)";
        let forced = |kind: &str| format!("{case} {kind}, Winograd forced (KILN_WINOGRAD=1)");
        report.row(&forced("train step"), t, a, base, b, Target::None);
        report.row(&forced("inference"), t, c, base, d, Target::None);
    }
    kiln::threads::set_threads(0);
}
