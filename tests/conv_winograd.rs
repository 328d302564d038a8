//! Winograd F(2×2, 3×3) convolutions on the JIT (`src/jit/conv_wino.rs`): forward and input
//! gradient against an f64 seven-loop reference with a stated error bound, against the
//! direct im2col path (`KILN_WINOGRAD=0`) and the interpreter, on random shapes (odd sizes,
//! batch 1, valid, same and explicit padding including pads past the window, ragged edges,
//! channel counts that are and are not multiples of the transforms' 8 lanes); gradients of
//! a small training graph against the direct path; the same bits at 1, 2 and 3 threads; and
//! which convolutions the plan gives Winograd by default.

mod common;

use common::Rng;
use kiln::autodiff::{grad, vjp};
use kiln::prelude::*;
use kiln::{Conv2dOptions, Padding};
use std::sync::Mutex;

/// The thread count and `KILN_WINOGRAD` are process-wide: one test at a time changes them.
static GLOBAL: Mutex<()> = Mutex::new(());

/// Runs `f` with `KILN_WINOGRAD` set to `v` (`None`: unset, the plan's own rule). The
/// variable is read when a session compiles, so `f` must compile (run) its sessions.
fn with_setting<R>(v: Option<&str>, f: impl FnOnce() -> R) -> R {
    match v {
        Some(v) => std::env::set_var("KILN_WINOGRAD", v),
        None => std::env::remove_var("KILN_WINOGRAD"),
    }
    let r = f();
    std::env::remove_var("KILN_WINOGRAD");
    r
}

/// One 3×3 stride-1 convolution: input `[n, h, w, c]`, filter `[3, 3, c, o]`, padding
/// `(top, bottom), (left, right)`.
#[derive(Clone, Debug)]
struct Case {
    n: usize,
    hw: [usize; 2],
    c: usize,
    o: usize,
    pad: [(usize, usize); 2],
}

impl Case {
    fn out_hw(&self) -> [usize; 2] {
        [0, 1].map(|a| self.hw[a] + self.pad[a].0 + self.pad[a].1 - 2)
    }
    fn opts(&self) -> Conv2dOptions {
        Conv2dOptions::new().padding(Padding::Explicit(self.pad))
    }
    fn x_shape(&self) -> [usize; 4] {
        [self.n, self.hw[0], self.hw[1], self.c]
    }
    fn w_shape(&self) -> [usize; 4] {
        [3, 3, self.c, self.o]
    }
    fn y_shape(&self) -> [usize; 4] {
        let [oh, ow] = self.out_hw();
        [self.n, oh, ow, self.o]
    }
}

/// Random cases: sizes 1–13 (odd and even, so ragged edges both ways), batch 1–3, padding
/// valid, same or explicit up to 3 per side (past the window: the input gradient then
/// crops), channels from 1 to 40.
fn random_case(rng: &mut Rng) -> Case {
    let chans = [1, 3, 8, 16, 17, 24, 33, 40];
    loop {
        let hw = [1 + rng.below(13), 1 + rng.below(13)];
        let pad = match rng.below(3) {
            0 => [(0, 0); 2],
            1 => [(1, 1); 2],
            _ => [0, 1].map(|_| (rng.below(4), rng.below(4))),
        };
        let cs = Case {
            n: 1 + rng.below(3),
            hw,
            c: chans[rng.below(chans.len())],
            o: chans[rng.below(chans.len())],
            pad,
        };
        if (0..2).all(|a| cs.hw[a] + cs.pad[a].0 + cs.pad[a].1 >= 3) {
            return cs;
        }
    }
}

fn values(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.f32()).collect()
}

/// The forward convolution in f64, seven loops, and each output's `Σ |x·w|` (the scale
/// its rounding error is measured against).
fn reference(cs: &Case, x: &[f32], w: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let [oh_n, ow_n] = cs.out_hw();
    let (mut y, mut mag) = (vec![], vec![]);
    for n in 0..cs.n {
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                for o in 0..cs.o {
                    let (mut acc, mut abs) = (0.0, 0.0);
                    for kh in 0..3 {
                        for kw in 0..3 {
                            let ih = (oh + kh) as isize - cs.pad[0].0 as isize;
                            let iw = (ow + kw) as isize - cs.pad[1].0 as isize;
                            if ih < 0
                                || iw < 0
                                || ih >= cs.hw[0] as isize
                                || iw >= cs.hw[1] as isize
                            {
                                continue;
                            }
                            for c in 0..cs.c {
                                let xi = ((n * cs.hw[0] + ih as usize) * cs.hw[1] + iw as usize)
                                    * cs.c
                                    + c;
                                let p =
                                    x[xi] as f64 * w[((kh * 3 + kw) * cs.c + c) * cs.o + o] as f64;
                                acc += p;
                                abs += p.abs();
                            }
                        }
                    }
                    y.push(acc);
                    mag.push(abs);
                }
            }
        }
    }
    (y, mag)
}

/// The input gradient in f64: each `dy` element times the filter, added to the pixels its
/// output read (the transpose of [`reference`]), and each `dx` element's `Σ |dy·w|`.
fn reference_dx(cs: &Case, dy: &[f32], w: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let [oh_n, ow_n] = cs.out_hw();
    let mut dx = vec![0.0; cs.x_shape().iter().product()];
    let mut mag = dx.clone();
    for n in 0..cs.n {
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                for kh in 0..3 {
                    for kw in 0..3 {
                        let ih = (oh + kh) as isize - cs.pad[0].0 as isize;
                        let iw = (ow + kw) as isize - cs.pad[1].0 as isize;
                        if ih < 0 || iw < 0 || ih >= cs.hw[0] as isize || iw >= cs.hw[1] as isize {
                            continue;
                        }
                        let at = ((n * cs.hw[0] + ih as usize) * cs.hw[1] + iw as usize) * cs.c;
                        for c in 0..cs.c {
                            for o in 0..cs.o {
                                let g = dy[((n * oh_n + oh) * ow_n + ow) * cs.o + o] as f64;
                                let p = g * w[((kh * 3 + kw) * cs.c + c) * cs.o + o] as f64;
                                dx[at + c] += p;
                                mag[at + c] += p.abs();
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, mag)
}

/// `y = conv(x, w)` and `dx = vjp(y, x, dy)` from `backend`, and the session's step counts.
fn forward_and_dx(
    cs: &Case,
    backend: Backend,
    (x, w, dy): (&[f32], &[f32], &[f32]),
) -> (Vec<Array>, Option<kiln::session::StepCounts>) {
    let g = Graph::new();
    let xp = g.placeholder("x", DType::F32, cs.x_shape());
    let wp = g.placeholder("w", DType::F32, cs.w_shape());
    let dyp = g.placeholder("dy", DType::F32, cs.y_shape());
    let y = xp.conv2d(wp, &cs.opts());
    let dx = vjp(y, &[xp], dyp).unwrap()[0];
    let feeds = [
        (xp, Array::new(cs.x_shape(), x.to_vec()).unwrap()),
        (wp, Array::new(cs.w_shape(), w.to_vec()).unwrap()),
        (dyp, Array::new(cs.y_shape(), dy.to_vec()).unwrap()),
    ];
    let mut s = Session::with_backend(&g, backend).unwrap();
    let out = s.run(&[y, dx], &feeds).unwrap();
    let steps = s.last_compile_times().map(|t| t.steps);
    (out, steps)
}

/// The worst `|got − want| / Σ|terms|` (rounding relative to the sum's scale, what a
/// summation's error bound is proportional to) and the worst `|got − want| / (1 + |want|)`
/// (`tests/conv.rs`'s measure).
fn errors(got: &Array, want: &[f64], mag: &[f64]) -> (f64, f64) {
    let got = got.to_f64_vec();
    assert_eq!(got.len(), want.len());
    let mut e = (0.0f64, 0.0f64);
    for ((g, w), m) in got.iter().zip(want).zip(mag) {
        let d = (g - w).abs();
        e.0 = e.0.max(if *m > 0.0 { d / m } else { d });
        e.1 = e.1.max(d / (1.0 + w.abs()));
    }
    e
}

/// Winograd error bound relative to `Σ|terms|` (f32's epsilon is 1.2e-7; a direct sum of
/// `k` terms is bounded by about `k·ε` of it, Winograd's transforms add a small constant
/// factor).
const WINO_TOL: f64 = 2e-6;

/// Forward and input gradient, Winograd (forced on every shape, so small and odd channel
/// counts run it too), the direct path and the interpreter, each against the f64
/// reference; Winograd also against the direct path with `tests/conv.rs`'s tolerance.
#[test]
fn winograd_matches_the_f64_reference_the_direct_path_and_the_interpreter() {
    let _g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    kiln::threads::set_threads(1);
    let mut rng = Rng(0x3a9d_11c7);
    let mut fixed = vec![
        // MNIST's conv2 at batch 2, and its ragged 11×11 output.
        Case {
            n: 2,
            hw: [13, 13],
            c: 32,
            o: 64,
            pad: [(0, 0); 2],
        },
        Case {
            n: 1,
            hw: [9, 7],
            c: 17,
            o: 19,
            pad: [(1, 1); 2],
        },
        Case {
            n: 3,
            hw: [5, 6],
            c: 16,
            o: 16,
            pad: [(3, 0), (0, 3)],
        },
    ];
    fixed.extend((0..40).map(|_| random_case(&mut rng)));
    let mut worst = [(0.0f64, 0.0f64); 2];
    for cs in &fixed {
        let x = values(&mut rng, cs.x_shape().iter().product());
        let w = values(&mut rng, cs.w_shape().iter().product());
        let dy = values(&mut rng, cs.y_shape().iter().product());
        let ops = (&x[..], &w[..], &dy[..]);
        let (wino, st) = with_setting(Some("1"), || forward_and_dx(cs, Backend::Jit, ops));
        assert_eq!(st.unwrap().conv_winograd, 2, "{cs:?}");
        let (direct, st) = with_setting(Some("0"), || forward_and_dx(cs, Backend::Jit, ops));
        assert_eq!(st.unwrap().conv_winograd, 0, "{cs:?}");
        let (interp, _) = forward_and_dx(cs, Backend::Interpreter, ops);
        let refs = [reference(cs, &x, &w), reference_dx(cs, &dy, &w)];
        for (k, (want, mag)) in refs.iter().enumerate() {
            let e = errors(&wino[k], want, mag);
            assert!(e.0 <= WINO_TOL, "{cs:?}: output {k}: Winograd error {e:?}");
            worst[k] = (worst[k].0.max(e.0), worst[k].1.max(e.1));
            for other in [&direct[k], &interp[k]] {
                let e = errors(other, want, mag);
                assert!(e.0 <= WINO_TOL, "{cs:?}: output {k}: direct error {e:?}");
            }
            let want = direct[k].to_f64_vec();
            let ones = vec![0.0; want.len()];
            let e = errors(&wino[k], &want, &ones).1;
            assert!(e <= 2e-4, "{cs:?}: output {k} is {e} from the direct path");
        }
    }
    eprintln!(
        "Winograd vs f64: forward worst |err|/Σ|terms| {:.2e}, |err|/(1+|y|) {:.2e}; input \
         gradient {:.2e}, {:.2e}",
        worst[0].0, worst[0].1, worst[1].0, worst[1].1
    );
    kiln::threads::set_threads(0);
}

/// Forward, both gradients and a second-order term of `relu(conv(x, w) + b)` in `dtype`
/// from `backend` (the JIT compiled under `setting`), and the number of Winograd steps.
fn training_outputs(
    cs: &Case,
    (setting, backend, dtype): (Option<&str>, Backend, DType),
    seed: u64,
) -> (Vec<Array>, usize) {
    with_setting(setting, || {
        let g = Graph::new();
        let mut rng = Rng(seed | 1);
        let x = g.placeholder("x", dtype, cs.x_shape());
        let w = g.placeholder("w", dtype, cs.w_shape());
        let b = g.placeholder("b", dtype, [cs.o]);
        let y = (x.conv2d(w, &cs.opts()) + b).relu();
        let loss = (y * y).sum_all();
        let d = grad(loss, &[x, w]).unwrap();
        let dd = grad((d[0] * d[0]).sum_all(), &[w]).unwrap()[0];
        let mut random = |s: &[usize]| common::random_array(&mut rng, s, DType::F32).cast(dtype);
        let feeds = [
            (x, random(&cs.x_shape())),
            (w, random(&cs.w_shape())),
            (b, random(&[cs.o])),
        ];
        let mut s = Session::with_backend(&g, backend).unwrap();
        let out = s.run(&[y, d[0], d[1], dd], &feeds).unwrap();
        let wino = s.last_compile_times().map_or(0, |t| t.steps.conv_winograd);
        (out, wino)
    })
}

/// The worst `|a − b|` over `max(1, max |b|)`: the error relative to the output's scale
/// (an elementwise measure is dominated by outputs that cancel to near zero, whichever
/// algorithm rounds them).
fn normwise(a: &Array, b: &Array) -> f64 {
    let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .fold(0f64, |e, (p, q)| e.max((p - q).abs()))
        / scale
}

/// Gradients through Winograd steps (the input gradient, and the forward convolution the
/// second-order term contains) and through the direct path, each against the interpreter
/// computing the same graph in f64: Winograd's error relative to each output's scale stays
/// under `1e-5`, within a small factor of the direct path's.
#[test]
fn gradients_via_winograd_match_the_direct_path_and_f64() {
    let _g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    kiln::threads::set_threads(1);
    let mut rng = Rng(0x77aa_0b1d);
    let mut worst = (0f64, 0f64);
    for i in 0..12 {
        let cs = random_case(&mut rng);
        let (wino, count) = training_outputs(&cs, (Some("1"), Backend::Jit, DType::F32), i);
        assert!(count >= 2, "{cs:?}: {count} Winograd steps");
        let (direct, count) = training_outputs(&cs, (Some("0"), Backend::Jit, DType::F32), i);
        assert_eq!(count, 0, "{cs:?}");
        let (exact, _) = training_outputs(&cs, (None, Backend::Interpreter, DType::F64), i);
        for k in 0..4 {
            let (ew, ed) = (
                normwise(&wino[k], &exact[k]),
                normwise(&direct[k], &exact[k]),
            );
            assert!(
                ew <= 1e-5,
                "{cs:?}: output {k}: Winograd {ew:.2e}, direct {ed:.2e}"
            );
            worst = (worst.0.max(ew), worst.1.max(ed));
        }
    }
    eprintln!(
        "gradients vs f64, worst |err| / max|output|: Winograd {:.2e}, direct {:.2e}",
        worst.0, worst.1
    );
    kiln::threads::set_threads(0);
}

/// Blocks are fixed by the shapes and threads take whole blocks: the same bits at 1, 2 and
/// 3 threads, on shapes with many blocks (and a ragged edge), by the plan's own rule (the
/// `same`-padded case runs its input gradient through Winograd too).
#[test]
fn same_bits_at_every_thread_count() {
    let _g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    let big = [
        Case {
            n: 6,
            hw: [13, 13],
            c: 64,
            o: 64,
            pad: [(0, 0); 2],
        },
        Case {
            n: 4,
            hw: [21, 18],
            c: 64,
            o: 72,
            pad: [(1, 1); 2],
        },
    ];
    for cs in &big {
        kiln::threads::set_threads(1);
        let (one, count) = training_outputs(cs, (None, Backend::Jit, DType::F32), 3);
        assert!(count >= 1, "{cs:?}: the plan's own rule picks Winograd");
        for t in [2, 3] {
            kiln::threads::set_threads(t);
            let (many, _) = training_outputs(cs, (None, Backend::Jit, DType::F32), 3);
            for (k, (a, b)) in one.iter().zip(&many).enumerate() {
                assert!(a.bits_eq(b), "{cs:?}: output {k} differs at {t} threads");
            }
        }
    }
    kiln::threads::set_threads(0);
}

/// The plan's rule: a 64→64 convolution on MNIST's conv2 size runs Winograd forward, but its
/// input gradient (13×13: too ragged to pay) stays direct, while a `same`-padded 14×14 one
/// runs both; MNIST's own conv2 (32 input channels, measured not to pay), conv1 (one input
/// channel), 16 channels, f64, strides, dilations and groups stay direct;
/// `KILN_WINOGRAD=0` turns it off and `=1` forces it on any f32 3×3 stride-1 form.
#[test]
fn the_plan_picks_winograd_for_wide_3x3_stride_1_f32_convolutions_only() {
    let _g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    let count = |dtype: DType, xs: [usize; 4], o: usize, opts: Conv2dOptions| {
        let g = Graph::new();
        let x = g.placeholder("x", dtype, xs);
        let w = g.placeholder("w", dtype, [3, 3, xs[3] / opts.groups, o]);
        let y = x.conv2d(w, &opts);
        let dx = grad(y.sum_all(), &[x]).unwrap()[0];
        let mut rng = Rng(9);
        let feeds = [
            (
                x,
                common::random_array(&mut rng, &xs, DType::F32).cast(dtype),
            ),
            (
                w,
                common::random_array(&mut rng, &[3, 3, xs[3] / opts.groups, o], DType::F32)
                    .cast(dtype),
            ),
        ];
        let mut s = Session::new(&g).unwrap();
        s.run(&[y, dx], &feeds).unwrap();
        s.last_compile_times().unwrap().steps.conv_winograd
    };
    let o = Conv2dOptions::new;
    let conv2 = [4, 13, 13, 32];
    with_setting(None, || {
        let wide = [4, 13, 13, 64];
        assert_eq!(count(DType::F32, wide, 64, o()), 1, "64→64: forward only");
        assert_eq!(
            count(DType::F32, conv2, 64, o()),
            0,
            "MNIST's conv2: 32 channels"
        );
        let same = o().padding(Padding::Same);
        assert_eq!(
            count(DType::F32, [2, 14, 14, 64], 64, same),
            2,
            "same, 14×14"
        );
        assert_eq!(
            count(DType::F32, [2, 14, 14, 16], 64, o()),
            0,
            "16 channels"
        );
        assert_eq!(count(DType::F32, [4, 28, 28, 1], 32, o()), 0, "conv1");
        assert_eq!(count(DType::F64, conv2, 64, o()), 0, "f64");
        assert_eq!(
            count(DType::F32, conv2, 64, o().strides(2, 2)),
            0,
            "stride 2"
        );
        assert_eq!(
            count(DType::F32, conv2, 64, o().dilations(2, 2)),
            0,
            "dilation 2"
        );
        assert_eq!(count(DType::F32, conv2, 64, o().groups(2)), 0, "groups 2");
    });
    with_setting(Some("0"), || {
        assert_eq!(count(DType::F32, conv2, 64, o()), 0)
    });
    with_setting(Some("1"), || {
        assert_eq!(
            count(DType::F32, [4, 28, 28, 1], 32, o()),
            2,
            "conv1, forced"
        );
        assert_eq!(count(DType::F64, conv2, 64, o()), 0, "f64 even when forced");
    });
}
