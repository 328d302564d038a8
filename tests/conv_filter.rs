//! The direct small-K filter gradient (`jit/conv_direct/filter.rs`): against an f64
//! seven-loop reference within the error bound of a sum of that many terms, against the
//! `gemm` path (`KILN_CONV_FILTER=0`) within the same bound, bitwise equal at 1, 2 and 3
//! threads, on random geometries (strides, padding, dilation, odd sizes, batch 1, several
//! input channels, 8 to 40 output channels); and which filter gradients take it.

mod common;

use common::Rng;
use kiln::autodiff::vjp;
use kiln::prelude::*;
use kiln::{Conv2dOptions, Padding};
use std::sync::Mutex;

/// The thread count and `KILN_CONV_FILTER` are process-wide: one test at a time.
static GLOBAL: Mutex<()> = Mutex::new(());

/// Does this CPU run the kernel (x86-64 with AVX2 and FMA)? Elsewhere `gemm` does.
fn cpu_has_kernel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[derive(Clone, Debug)]
struct Case {
    n: usize,
    hw: [usize; 2],
    c: usize,
    o: usize,
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pad: [(usize, usize); 2],
}

impl Case {
    fn out_hw(&self) -> [usize; 2] {
        [0, 1].map(|a| {
            let extent = (self.kernel[a] - 1) * self.dilations[a] + 1;
            (self.hw[a] + self.pad[a].0 + self.pad[a].1 - extent) / self.strides[a] + 1
        })
    }
    fn x_shape(&self) -> [usize; 4] {
        [self.n, self.hw[0], self.hw[1], self.c]
    }
    fn w_shape(&self) -> [usize; 4] {
        [self.kernel[0], self.kernel[1], self.c, self.o]
    }
    fn y_shape(&self) -> [usize; 4] {
        let [oh, ow] = self.out_hw();
        [self.n, oh, ow, self.o]
    }
    fn k(&self) -> usize {
        self.kernel[0] * self.kernel[1] * self.c
    }
}

/// Random geometries with `K ≤ 32` and `O` a multiple of 8 (the kernel's), sizes 1–15.
fn random_case(rng: &mut Rng) -> Case {
    loop {
        let kernel = [1 + rng.below(3), 1 + rng.below(3)];
        let cs = Case {
            n: 1 + rng.below(4),
            hw: [1 + rng.below(15), 1 + rng.below(15)],
            c: [1, 2, 3][rng.below(3)],
            o: [8, 16, 24, 32, 40][rng.below(5)],
            kernel,
            strides: [1 + rng.below(2), 1 + rng.below(2)],
            dilations: [1 + rng.below(2), 1 + rng.below(2)],
            pad: [0, 1].map(|_| (rng.below(3), rng.below(3))),
        };
        let fits = (0..2)
            .all(|a| cs.hw[a] + cs.pad[a].0 + cs.pad[a].1 > (cs.kernel[a] - 1) * cs.dilations[a]);
        if fits && cs.k() <= 32 {
            return cs;
        }
    }
}

/// `dW` in f64, seven loops, and each element's `Σ |x·dy|` and term count.
fn reference(cs: &Case, x: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let [oh_n, ow_n] = cs.out_hw();
    let len: usize = cs.w_shape().iter().product();
    let (mut dw, mut mag) = (vec![0.0; len], vec![0.0; len]);
    for n in 0..cs.n {
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                for kh in 0..cs.kernel[0] {
                    for kw in 0..cs.kernel[1] {
                        let ih = (oh * cs.strides[0] + kh * cs.dilations[0]) as isize
                            - cs.pad[0].0 as isize;
                        let iw = (ow * cs.strides[1] + kw * cs.dilations[1]) as isize
                            - cs.pad[1].0 as isize;
                        if ih < 0 || iw < 0 || ih >= cs.hw[0] as isize || iw >= cs.hw[1] as isize {
                            continue;
                        }
                        for c in 0..cs.c {
                            let xi =
                                ((n * cs.hw[0] + ih as usize) * cs.hw[1] + iw as usize) * cs.c + c;
                            for o in 0..cs.o {
                                let g = dy[((n * oh_n + oh) * ow_n + ow) * cs.o + o] as f64;
                                let p = x[xi] as f64 * g;
                                let at = ((kh * cs.kernel[1] + kw) * cs.c + c) * cs.o + o;
                                dw[at] += p;
                                mag[at] += p.abs();
                            }
                        }
                    }
                }
            }
        }
    }
    (dw, mag)
}

/// `dW = vjp(conv(x, w), w, dy)` on the JIT at `threads`, with `KILN_CONV_FILTER` set to
/// `setting`, and how many filter gradients ran the direct kernel.
fn filter_grad(cs: &Case, x: &[f32], dy: &[f32], threads: usize, setting: &str) -> (Array, usize) {
    let g = Graph::new();
    let xp = g.placeholder("x", DType::F32, cs.x_shape());
    let wp = g.placeholder("w", DType::F32, cs.w_shape());
    let dyp = g.placeholder("dy", DType::F32, cs.y_shape());
    let opts = Conv2dOptions::new()
        .strides(cs.strides[0], cs.strides[1])
        .dilations(cs.dilations[0], cs.dilations[1])
        .padding(Padding::Explicit(cs.pad));
    let y = xp.conv2d(wp, &opts);
    let dw = vjp(y, &[wp], dyp).unwrap()[0];
    let w = vec![0.5f32; cs.w_shape().iter().product()];
    let feeds = [
        (xp, Array::new(cs.x_shape(), x.to_vec()).unwrap()),
        (wp, Array::new(cs.w_shape(), w).unwrap()),
        (dyp, Array::new(cs.y_shape(), dy.to_vec()).unwrap()),
    ];
    kiln::threads::set_threads(threads);
    std::env::set_var("KILN_CONV_FILTER", setting);
    let mut s = Session::new(&g).unwrap();
    let out = s.run(&[dw], &feeds).unwrap().remove(0);
    std::env::remove_var("KILN_CONV_FILTER");
    kiln::threads::set_threads(0);
    let direct = s.last_compile_times().unwrap().steps.conv_filter_direct;
    (out, direct)
}

/// The worst `|got − want| / bound`, where `bound` is the rounding error of a recursive sum
/// of `terms` products in f32 (`γ = terms·u / (1 − terms·u)`, `u = 2⁻²⁴`, times `Σ|terms|`;
/// one more term for adding the per-image blocks) plus the f32 rounding of the stored value.
fn worst(got: &Array, want: &[f64], mag: &[f64], terms: usize) -> f64 {
    let u = f64::powi(2.0, -24);
    let m = (terms + 1) as f64 * u;
    let gamma = m / (1.0 - m);
    got.to_f64_vec()
        .iter()
        .zip(want)
        .zip(mag)
        .map(|((g, w), m)| (g - w).abs() / (gamma * m + u * w.abs() + f64::MIN_POSITIVE))
        .fold(0.0, f64::max)
}

#[test]
fn random_geometries_match_the_reference_and_gemm_at_any_thread_count() {
    let _one = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng(0x5eed_f117);
    for i in 0..40 {
        let cs = random_case(&mut rng);
        let x: Vec<f32> = (0..cs.x_shape().iter().product())
            .map(|_| rng.f32())
            .collect();
        let dy: Vec<f32> = (0..cs.y_shape().iter().product())
            .map(|_| rng.f32())
            .collect();
        let (want, mag) = reference(&cs, &x, &dy);
        let [oh, ow] = cs.out_hw();
        let terms = cs.n * oh * ow;
        let (one, direct) = filter_grad(&cs, &x, &dy, 1, "1");
        assert_eq!(direct, usize::from(cpu_has_kernel()), "case {i}: {cs:?}");
        let e = worst(&one, &want, &mag, terms);
        assert!(e <= 1.0, "case {i}: {cs:?}: error {e} of the bound");
        for threads in [2, 3] {
            let (t, _) = filter_grad(&cs, &x, &dy, threads, "1");
            assert!(
                one.bits_eq(&t),
                "case {i}: {cs:?}: {threads} threads differ from 1"
            );
        }
        let (gemm, on_gemm) = filter_grad(&cs, &x, &dy, 1, "0");
        assert_eq!(
            on_gemm, 0,
            "case {i}: KILN_CONV_FILTER=0 still ran the kernel"
        );
        let e = worst(&gemm, &want, &mag, terms);
        assert!(e <= 1.0, "case {i}: {cs:?}: gemm's error {e} of the bound");
    }
}

#[test]
fn the_mnist_first_layer_takes_it_and_wide_or_ragged_layers_do_not() {
    let _one = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = Case {
        n: 2,
        hw: [28, 28],
        c: 1,
        o: 32,
        kernel: [3, 3],
        strides: [1, 1],
        dilations: [1, 1],
        pad: [(0, 0); 2],
    };
    let run = |cs: &Case| {
        let x = vec![0.25f32; cs.x_shape().iter().product()];
        let dy = vec![-0.5f32; cs.y_shape().iter().product()];
        filter_grad(cs, &x, &dy, 1, "1")
    };
    // Every tap of the valid 3×3 window sees 26·26 pixels of 0.25 · −0.5, per image.
    let (dw, direct) = run(&base);
    assert_eq!(direct, usize::from(cpu_has_kernel()));
    let want = -0.125 * 26.0 * 26.0 * 2.0;
    assert!(dw.to_f64_vec().iter().all(|&v| v == want), "{want}");
    // K = 3·3·4 = 36 > 32, and 12 output channels (not a multiple of 8): `gemm`.
    for cs in [
        Case {
            c: 4,
            ..base.clone()
        },
        Case { o: 12, ..base },
    ] {
        assert_eq!(run(&cs).1, 0, "{cs:?}");
    }
}
