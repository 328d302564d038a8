//! The sliding-window cases of the report: a convolution forward against `gemm` on its
//! im2col shape, and pooling (max and average, forward and gradient) against a copy of the
//! same bytes, each measured in the same run as its baseline.

use crate::harness::{measure, Config, Report, Target};
use crate::{agreement, f32s, gemm_rect, ramp, CONV, THREADS};
use kiln::prelude::*;
use std::hint::black_box;

/// The convolution case: a 3×3, 64→64, `same`-padded convolution of a batch of 8 56×56
/// images against `gemm` on the same im2col shape (`M = 8·56·56`, `K = 9·64`, `N = 64`)
/// with the column matrix built beforehand, so the ratio is what kiln's im2col tiles and
/// step cost on top of the bare product.
pub fn conv(cfg: &Config, report: &mut Report) {
    let case = "conv2d 3×3 64→64 56×56 ×8";
    if !cfg.wants(case) {
        return;
    }
    eprintln!("{case}");
    let (nb, side, c, o, ks) = CONV;
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [nb, side, side, c]);
    let w = g.placeholder("w", DType::F32, [ks, ks, c, o]);
    let opts = kiln::Conv2dOptions::new().padding(kiln::Padding::Same);
    let y = x.conv2d(w, &opts);
    let feeds = [
        (
            x,
            Array::new([nb, side, side, c], ramp(nb * side * side * c, 1.0, 97)).unwrap(),
        ),
        (
            w,
            Array::new([ks, ks, c, o], ramp(ks * ks * c * o, 0.5, 89)).unwrap(),
        ),
    ];
    let (xv, wv) = (f32s(&feeds[0].1), f32s(&feeds[1].1));
    // The column matrix: row (n, oh, ow), column (kh, kw, ci), zeros in the padding.
    let (m, k) = (nb * side * side, ks * ks * c);
    let mut col = vec![0f32; m * k];
    for r in 0..m {
        let (n, oh, ow) = (r / (side * side), r / side % side, r % side);
        for kh in 0..ks {
            for kw in 0..ks {
                let (ih, iw) = ((oh + kh) as isize - 1, (ow + kw) as isize - 1);
                if ih < 0 || iw < 0 || ih >= side as isize || iw >= side as isize {
                    continue;
                }
                let src = ((n * side + ih as usize) * side + iw as usize) * c;
                let dst = r * k + (kh * ks + kw) * c;
                col[dst..dst + c].copy_from_slice(&xv[src..src + c]);
            }
        }
    }
    let mut out = vec![0f32; m * o];
    for t in THREADS {
        kiln::threads::set_threads(t);
        let mut sess = Session::new(&g).unwrap();
        if t == 1 {
            let got = sess.run(&[y], &feeds).unwrap();
            gemm_rect((m, k, o), &col, wv, &mut out, 1);
            report.note(format!(
                "{case}: kiln vs baseline: {}",
                agreement(f32s(&got[0]), &out)
            ));
        }
        let mut kout = vec![];
        let [kt, base] = measure(
            cfg,
            [
                &mut || {
                    sess.run_into(&[y], &feeds, &mut kout).unwrap();
                    black_box(&kout);
                },
                &mut || gemm_rect((m, k, o), &col, wv, black_box(&mut out), t),
            ],
        );
        let name = format!(
            "gemm 0.19 on the im2col matrix ({t} thread{})",
            if t > 1 { "s" } else { "" }
        );
        report.row(case, t, kt, &name, base, Target::Ratio(0.8));
    }
}

/// The MNIST convnet's poolings: 2×2/2 max (or average) pooling forward (`y`) and backward
/// (`dx` from `dy`, for the max also from `x`, the argmax recomputed) on `[128, h, w, c]`,
/// against a plain copy of the input's bytes (`copy_from_slice`, what any pass over the
/// tensor costs at least), and the Cranelift kernels against the native loops they replaced
/// (`KILN_POOL_NATIVE=1` at compile time), all in the same run. No target: the ratios say
/// how far the pooling step is from memory speed and what the kernels gained.
pub fn pool(cfg: &Config, report: &mut Report, hwc: [usize; 3], max: bool) {
    let [h, w, c] = hwc;
    let case = format!(
        "{} pool 2×2/2, [128,{h},{w},{c}]",
        if max { "max" } else { "avg" }
    );
    if !cfg.wants(&case) {
        return;
    }
    eprintln!("{case}");
    let shape = [128, h, w, c];
    let n: usize = shape.iter().product();
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, shape);
    let o = kiln::Pool2dOptions::new([2, 2]);
    let y = if max {
        x.max_pool2d(&o)
    } else {
        x.avg_pool2d(&o)
    };
    let ys = y.shape().to_fixed().unwrap();
    let dy = g.placeholder("dy", DType::F32, Shape::fixed(&ys));
    let dx = kiln::autodiff::vjp(y, &[x], dy).unwrap()[0];
    let feeds = [
        (x, Array::new(shape, ramp(n, 8.0, 1009)).unwrap()),
        (
            dy,
            Array::new(&ys, ramp(ys.iter().product(), 2.0, 997)).unwrap(),
        ),
    ];
    let src = f32s(&feeds[0].1);
    let mut copy = vec![0f32; n];
    // A session compiled now (its first run), with or without the Cranelift kernels.
    let session = |fetch: Tensor<'_>, native: bool| {
        std::env::set_var("KILN_POOL_NATIVE", if native { "1" } else { "0" });
        let mut sess = Session::new(&g).unwrap();
        let mut out = vec![];
        sess.run_into(&[fetch], &feeds, &mut out).unwrap();
        std::env::remove_var("KILN_POOL_NATIVE");
        (sess, out)
    };
    for t in THREADS {
        kiln::threads::set_threads(t);
        for (dir, fetch) in [("fwd", y), ("bwd", dx)] {
            let (mut sess, mut kout) = session(fetch, false);
            let (mut nat, mut nout) = session(fetch, true);
            assert!(
                kout[0].bits_eq(&nout[0]),
                "{case} {dir}: the two paths differ"
            );
            let [k, native, base] = measure(
                cfg,
                [
                    &mut || {
                        sess.run_into(&[fetch], &feeds, &mut kout).unwrap();
                        black_box(&kout);
                    },
                    &mut || {
                        nat.run_into(&[fetch], &feeds, &mut nout).unwrap();
                        black_box(&nout);
                    },
                    &mut || black_box(&mut copy).copy_from_slice(black_box(src)),
                ],
            );
            let name = "memcpy of the input (1 thread)";
            report.row(&format!("{case} {dir}"), t, k, name, base, Target::None);
            let name = "native pooling loops";
            let row = format!("{case} {dir}, Cranelift kernel");
            report.row(&row, t, k, name, native, Target::None);
        }
    }
}
