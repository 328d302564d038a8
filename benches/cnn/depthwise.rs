//! MobileNet-like depthwise convolutions (3×3, `same` padding, batch 8, 64 and 128 channels,
//! 56×56 and 28×28, stride 1 and 2): forward, input gradient and filter gradient on the
//! Cranelift kernels, against the native loops they replaced (the same graph compiled with
//! `KILN_DW_JIT=0`, measured in the same `measure`, samples interleaved) and against a copy
//! of the step's input and output bytes (`copy_from_slice`, what any pass over them costs at
//! least). Both kiln sides run through `Session::run_into`, so the ratio to the loops
//! includes the same per-run overhead on both. No target: the ratios say how far each is
//! from memory speed.

use crate::harness::{fmt_time, measure, Config, Report, Target};
use crate::ramp;
use kiln::prelude::*;
use std::hint::black_box;

const BATCH: usize = 8;

/// The depthwise cases, one thread.
pub fn depthwise(cfg: &Config, report: &mut Report) {
    for (c, hw) in [(64, 56), (128, 28)] {
        for s in [1, 2] {
            one(cfg, report, c, hw, s);
        }
    }
}

fn one(cfg: &Config, report: &mut Report, c: usize, hw: usize, s: usize) {
    let case = format!("depthwise 3×3/{s} [{BATCH},{hw},{hw},{c}]");
    if !cfg.wants(&case) {
        return;
    }
    eprintln!("{case}");
    let g = Graph::new();
    let xs = [BATCH, hw, hw, c];
    let x = g.placeholder("x", DType::F32, xs);
    let w = g.placeholder("w", DType::F32, [3, 3, 1, c]);
    let opts = kiln::Conv2dOptions::new()
        .strides(s, s)
        .padding(kiln::Padding::Same)
        .groups(c);
    let y = x.conv2d(w, &opts);
    let ys = y.shape().to_fixed().unwrap();
    let dy = g.placeholder("dy", DType::F32, Shape::fixed(&ys));
    let d = kiln::autodiff::vjp(y, &[x, w], dy).unwrap();
    let (nx, ny) = (xs.iter().product::<usize>(), ys.iter().product::<usize>());
    let feeds = [
        (x, Array::new(xs, ramp(nx, 2.0, 1009)).unwrap()),
        (w, Array::new([3, 3, 1, c], ramp(9 * c, 1.0, 97)).unwrap()),
        (dy, Array::new(&ys[..], ramp(ny, 2.0, 997)).unwrap()),
    ];
    let flop = 2.0 * 9.0 * ny as f64;
    // The memory a step reads and writes at least: its big operand and its big result (the
    // filter gradient's result is 9·C floats; it reads x and dy).
    let src = ramp(nx + ny, 1.0, 89);
    let mut copy = vec![0f32; nx + ny];
    kiln::threads::set_threads(1);
    for (dir, fetch) in [("fwd", y), ("dx", d[0]), ("dw", d[1])] {
        let session = |loops: bool| {
            if loops {
                std::env::set_var("KILN_DW_JIT", "0");
            }
            let mut sess = Session::new(&g).unwrap();
            let mut out = vec![];
            // Compiles now, while the variable says which code to build.
            sess.run_into(&[fetch], &feeds, &mut out).unwrap();
            std::env::remove_var("KILN_DW_JIT");
            (sess, out)
        };
        let (mut cl, mut cl_out) = session(false);
        let (mut nat, mut nat_out) = session(true);
        let same = cl_out[0].bits_eq(&nat_out[0]);
        let [k, loops, base] = measure(
            cfg,
            [
                &mut || {
                    cl.run_into(&[fetch], &feeds, &mut cl_out).unwrap();
                    black_box(&cl_out);
                },
                &mut || {
                    nat.run_into(&[fetch], &feeds, &mut nat_out).unwrap();
                    black_box(&nat_out);
                },
                &mut || black_box(&mut copy).copy_from_slice(black_box(&src)),
            ],
        );
        let name = format!("{case} {dir}");
        report.row(
            &name,
            1,
            k,
            "native loops (KILN_DW_JIT=0)",
            loops,
            Target::None,
        );
        report.row(&name, 1, k, "memcpy of input+output", base, Target::None);
        report.note(format!(
            "{name}: Cranelift {} ({:.1} GFLOP/s), loops {} ({:.2}× the kernel), copy of \
             {:.1} MB {} (kernel = {:.2}× the copy); bits {}",
            fmt_time(k),
            flop / k / 1e9,
            fmt_time(loops),
            loops / k,
            (nx + ny) as f64 * 4.0 / 1e6,
            fmt_time(base),
            k / base,
            if same { "equal" } else { "DIFFER" },
        ));
    }
    kiln::threads::set_threads(0);
}
