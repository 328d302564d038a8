//! The MNIST convnet's second convolution (`[128,13,13,32]` → 3×3 → 64, the step's
//! GEMM-bound layer) against bare `gemm` calls of the same shapes, in the same run:
//! - its three products, each a session of the one node (forward, input gradient from `dy`,
//!   filter gradient from `dy`), against `gemm` on the im2col shape (`[M, K]·[K, O]`,
//!   `[M, O]·[O, K]`, `[K, M]·[M, O]` with `M = 128·11·11`, `K = 9·32`, `O = 64`) with its
//!   operands built beforehand: the ratio is what im2col/col2im, the tiles and the partials
//!   cost on top of the product;
//! - the forward block with its epilogue (conv + bias + ReLU + 2×2 max pool, inference)
//!   against the same graph compiled with `KILN_CONV_EPILOGUE=0` (the kernel and the pooling
//!   as their own passes over the activation).

use crate::harness::{measure, Config, Report, Target};
use crate::{gemm_rect, ramp, THREADS};
use kiln::prelude::*;
use std::hint::black_box;

const N: usize = 128;
const SIDE: usize = 13;
const C: usize = 32;
const O: usize = 64;

/// The products against `gemm`, and the epilogue's A/B.
pub fn conv2(cfg: &Config, report: &mut Report) {
    let case = "mnist conv2 [128,13,13,32]→64";
    if !cfg.wants(case) {
        return;
    }
    eprintln!("{case}");
    let out = SIDE - 2;
    let (m, k) = (N * out * out, 9 * C);
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [N, SIDE, SIDE, C]);
    let w = g.placeholder("w", DType::F32, [3, 3, C, O]);
    let b = g.placeholder("b", DType::F32, [O]);
    let y = x.conv2d(w, &kiln::Conv2dOptions::new());
    let dy = g.placeholder("dy", DType::F32, [N, out, out, O]);
    let grads = kiln::autodiff::vjp(y, &[x, w], dy).unwrap();
    let block = (y + b).relu().max_pool2d(&kiln::Pool2dOptions::new([2, 2]));
    let feeds = [
        (
            x,
            Array::new([N, SIDE, SIDE, C], ramp(N * SIDE * SIDE * C, 1.0, 97)).unwrap(),
        ),
        (w, Array::new([3, 3, C, O], ramp(k * O, 0.5, 89)).unwrap()),
        (b, Array::new([O], ramp(O, 0.1, 7)).unwrap()),
        (
            dy,
            Array::new([N, out, out, O], ramp(m * O, 1.0, 83)).unwrap(),
        ),
    ];
    let (col, colt) = (ramp(m * k, 1.0, 97), ramp(k * m, 1.0, 97));
    let (wk, wt, dyv) = (
        ramp(k * O, 0.5, 89),
        ramp(O * k, 0.5, 89),
        ramp(m * O, 1.0, 83),
    );
    let (mut out_mo, mut out_mk, mut out_ko) =
        (vec![0f32; m * O], vec![0f32; m * k], vec![0f32; k * O]);
    for t in THREADS {
        kiln::threads::set_threads(t);
        let s = if t > 1 { "s" } else { "" };
        let products = [
            ("forward", y, (m, k, O)),
            ("input gradient", grads[0], (m, O, k)),
            ("filter gradient", grads[1], (k, m, O)),
        ];
        for (what, fetch, shape) in products {
            let mut sess = Session::new(&g).unwrap();
            let mut kout = vec![];
            let [kt, base] = measure(
                cfg,
                [
                    &mut || {
                        sess.run_into(&[fetch], &feeds, &mut kout).unwrap();
                        black_box(&kout);
                    },
                    &mut || match what {
                        "forward" => gemm_rect(shape, &col, &wk, black_box(&mut out_mo), t),
                        "input gradient" => gemm_rect(shape, &dyv, &wt, black_box(&mut out_mk), t),
                        _ => gemm_rect(shape, &colt, &dyv, black_box(&mut out_ko), t),
                    },
                ],
            );
            let (mm, kk, nn) = shape;
            let name = format!("gemm 0.19 [{mm}×{kk}]·[{kk}×{nn}] ({t} thread{s})");
            report.row(&format!("{case} {what}"), t, kt, &name, base, Target::None);
            report.note(format!(
                "{case} {what} at {t} thread{s}: {:.1} GFLOP/s vs gemm's {:.1}",
                2.0 * (m * k * O) as f64 / kt / 1e9,
                2.0 * (m * k * O) as f64 / base / 1e9,
            ));
        }
        // The block with and without the epilogue (the variable is read at compile time).
        let session = |epilogue: bool| {
            std::env::set_var("KILN_CONV_EPILOGUE", if epilogue { "1" } else { "0" });
            let mut sess = Session::new(&g).unwrap();
            let mut out = vec![];
            sess.run_into(&[block], &feeds, &mut out).unwrap();
            std::env::remove_var("KILN_CONV_EPILOGUE");
            let fused = sess.last_compile_times().unwrap().steps.conv_epilogues;
            assert_eq!(fused, usize::from(epilogue), "{case}: epilogue count");
            (sess, out)
        };
        let (mut on, mut on_out) = session(true);
        let (mut off, mut off_out) = session(false);
        assert!(
            on_out[0].bits_eq(&off_out[0]),
            "{case}: the epilogue changed bits"
        );
        let [kon, koff] = measure(
            cfg,
            [
                &mut || {
                    on.run_into(&[block], &feeds, &mut on_out).unwrap();
                    black_box(&on_out);
                },
                &mut || {
                    off.run_into(&[block], &feeds, &mut off_out).unwrap();
                    black_box(&off_out);
                },
            ],
        );
        let name = format!("KILN_CONV_EPILOGUE=0 ({t} thread{s})");
        let row = format!("{case} +bias+relu+pool, tile epilogue");
        report.row(&row, t, kon, &name, koff, Target::None);
    }
}
