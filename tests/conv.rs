//! 2-D convolution: the interpreter against a seven-loop reference written here, gradients
//! (first and second order) against central differences over strides, paddings, dilation,
//! groups and depthwise, the NCHW format against NHWC, the JIT against the interpreter and
//! at 1 and 2 threads, and the errors a wrong convolution reports.

mod common;

use common::Rng;
use kiln::autodiff::grad;
use kiln::prelude::*;
use kiln::{Conv2dOptions, DataFormat, Padding};

/// One convolution to test: input `[n, h, w, c]`, filter `[kh, kw, c/groups, o]`.
#[derive(Clone, Debug)]
struct Case {
    n: usize,
    hw: [usize; 2],
    c: usize,
    k: [usize; 2],
    o: usize,
    opts: Conv2dOptions,
}

fn case(n: usize, hw: [usize; 2], c: usize, k: [usize; 2], o: usize, opts: Conv2dOptions) -> Case {
    Case {
        n,
        hw,
        c,
        k,
        o,
        opts,
    }
}

/// The cases every check runs over: strides 1 and 2, valid, same and explicit asymmetric
/// padding, dilation 2, groups 2, depthwise (with a multiplier), odd sizes, batch 1, 1×1.
fn cases() -> Vec<Case> {
    let o = Conv2dOptions::new;
    vec![
        case(2, [5, 6], 3, [3, 3], 4, o()),
        case(1, [7, 5], 2, [3, 2], 3, o().strides(2, 2)),
        case(2, [6, 7], 2, [3, 3], 2, o().padding(Padding::Same)),
        case(
            1,
            [5, 5],
            3,
            [2, 2],
            2,
            o().strides(2, 1).padding(Padding::Same),
        ),
        case(
            2,
            [4, 5],
            2,
            [3, 2],
            3,
            o().padding(Padding::Explicit([(2, 0), (0, 1)])),
        ),
        case(1, [7, 7], 2, [3, 3], 2, o().dilations(2, 2)),
        case(
            2,
            [5, 6],
            4,
            [3, 3],
            6,
            o().groups(2).padding(Padding::Same),
        ),
        case(1, [6, 5], 3, [3, 3], 6, o().groups(3).strides(2, 2)),
        case(2, [4, 4], 3, [1, 1], 5, o()),
        case(1, [5, 4], 3, [1, 1], 2, o().strides(2, 2)),
        case(
            1,
            [9, 8],
            2,
            [3, 3],
            4,
            o().strides(2, 3)
                .dilations(2, 1)
                .padding(Padding::Explicit([(1, 2), (0, 3)])),
        ),
    ]
}

fn values(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.f32() as f64).collect()
}

/// The seven loops of the definition (batch, output row, output column, output channel,
/// tap row, tap column, input channel), independent of kiln's code. NHWC/HWIO.
fn reference(cs: &Case, x: &[f64], w: &[f64]) -> (Vec<usize>, Vec<f64>) {
    let (s, d) = (cs.opts.strides, cs.opts.dilations);
    let (pad_lo, pad_hi) = match cs.opts.padding {
        Padding::Valid => ([0, 0], [0, 0]),
        Padding::Explicit(p) => ([p[0].0, p[1].0], [p[0].1, p[1].1]),
        Padding::Same => {
            let mut lo = [0; 2];
            let mut hi = [0; 2];
            for a in 0..2 {
                let out = cs.hw[a].div_ceil(s[a]);
                let ext = d[a] * (cs.k[a] - 1) + 1;
                let total = ((out - 1) * s[a] + ext).saturating_sub(cs.hw[a]);
                lo[a] = total / 2;
                hi[a] = total - total / 2;
            }
            (lo, hi)
        }
    };
    let out: Vec<usize> = (0..2)
        .map(|a| (cs.hw[a] + pad_lo[a] + pad_hi[a] - d[a] * (cs.k[a] - 1) - 1) / s[a] + 1)
        .collect();
    let groups = cs.opts.groups;
    let (cg, og) = (cs.c / groups, cs.o / groups);
    let mut y = vec![0.0; cs.n * out[0] * out[1] * cs.o];
    for n in 0..cs.n {
        for oh in 0..out[0] {
            for ow in 0..out[1] {
                for oc in 0..cs.o {
                    let mut acc = 0.0;
                    for kh in 0..cs.k[0] {
                        for kw in 0..cs.k[1] {
                            for ci in 0..cg {
                                let ih = (oh * s[0] + kh * d[0]) as isize - pad_lo[0] as isize;
                                let iw = (ow * s[1] + kw * d[1]) as isize - pad_lo[1] as isize;
                                if ih < 0
                                    || iw < 0
                                    || ih >= cs.hw[0] as isize
                                    || iw >= cs.hw[1] as isize
                                {
                                    continue;
                                }
                                let (ih, iw) = (ih as usize, iw as usize);
                                let c = (oc / og) * cg + ci;
                                let xv = x[((n * cs.hw[0] + ih) * cs.hw[1] + iw) * cs.c + c];
                                let wv = w[((kh * cs.k[1] + kw) * cg + ci) * cs.o + oc];
                                acc += xv * wv;
                            }
                        }
                    }
                    y[((n * out[0] + oh) * out[1] + ow) * cs.o + oc] = acc;
                }
            }
        }
    }
    (vec![cs.n, out[0], out[1], cs.o], y)
}

fn shapes(cs: &Case) -> ([usize; 4], [usize; 4]) {
    (
        [cs.n, cs.hw[0], cs.hw[1], cs.c],
        [cs.k[0], cs.k[1], cs.c / cs.opts.groups, cs.o],
    )
}

#[test]
fn interpreter_matches_the_seven_loop_reference() {
    let mut rng = Rng(0x5eed_c0de);
    for cs in cases() {
        let g = Graph::new();
        let (xs, ws) = shapes(&cs);
        let x = g.placeholder("x", DType::F64, xs);
        let w = g.placeholder("w", DType::F64, ws);
        let y = x.conv2d(w, &cs.opts);
        g.check().unwrap_or_else(|e| panic!("{cs:?}: {e}"));
        let xv = values(&mut rng, xs.iter().product());
        let wv = values(&mut rng, ws.iter().product());
        let (yshape, want) = reference(&cs, &xv, &wv);
        let mut interp = Interpreter::with_precision(&g, Precision::F64).unwrap();
        let feeds = [
            (x, Array::new(xs, xv).unwrap()),
            (w, Array::new(ws, wv).unwrap()),
        ];
        let got = interp.run(&[y], &feeds).unwrap().remove(0);
        assert_eq!(got.shape(), yshape.as_slice(), "{cs:?}");
        for (i, (a, b)) in got.to_vec::<f64>().unwrap().iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-12,
                "{cs:?}: y[{i}] {a} vs reference {b}"
            );
        }
    }
}

/// `d sum(f(x, w) · r) / d(x, w)` against central differences on the f64 interpreter.
fn check_grad(
    what: &str,
    cs: &Case,
    seed: u64,
    f: impl for<'g> Fn(Tensor<'g>, Tensor<'g>) -> Tensor<'g>,
) {
    let g = Graph::new();
    let mut rng = Rng(seed | 1);
    let (xs, ws) = shapes(cs);
    let x = g.placeholder("x", DType::F64, xs);
    let w = g.placeholder("w", DType::F64, ws);
    let y = f(x, w);
    g.check().unwrap_or_else(|e| panic!("{what} {cs:?}: {e}"));
    let yshape = y.shape().to_fixed().unwrap();
    let r = g.constant(Array::new(&yshape, values(&mut rng, yshape.iter().product())).unwrap());
    let loss = (y * r).sum_all();
    let grads = grad(loss, &[x, w]).unwrap();
    let vals = [
        Array::new(xs, values(&mut rng, xs.iter().product())).unwrap(),
        Array::new(ws, values(&mut rng, ws.iter().product())).unwrap(),
    ];
    let mut interp = Interpreter::with_precision(&g, Precision::F64).unwrap();
    let feeds = |v: &[Array]| vec![(x, v[0].clone()), (w, v[1].clone())];
    let out = interp.run(&[grads[0], grads[1]], &feeds(&vals)).unwrap();
    let eps = 1e-5;
    for k in 0..2 {
        let analytic = out[k].to_vec::<f64>().unwrap();
        assert_eq!(analytic.len(), vals[k].len());
        for (i, &a) in analytic.iter().enumerate() {
            let mut at = |dv: f64| {
                let mut v = vals.clone();
                v[k].as_mut_slice::<f64>().unwrap()[i] += dv;
                interp.run(&[loss], &feeds(&v)).unwrap()[0]
                    .scalar_value::<f64>()
                    .unwrap()
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (a - fd).abs() <= 1e-6 * (1.0 + fd.abs()),
                "{what} {cs:?}: d/d{}[{i}] analytic {a} vs finite difference {fd}",
                ["x", "w"][k]
            );
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    for (i, cs) in cases().iter().enumerate() {
        let opts = cs.opts.clone();
        check_grad("conv2d", cs, 11 + i as u64, move |x, w| x.conv2d(w, &opts));
    }
}

/// Second order: the gradients of `sum(conv(x, w)²)` are input and filter gradients of the
/// output, and differentiating them again goes through all three kinds' rules.
#[test]
fn second_order_gradients_match_finite_differences() {
    let all = cases();
    for (i, cs) in [&all[1], &all[4], &all[6], &all[7]].into_iter().enumerate() {
        for which in 0..2 {
            let opts = cs.opts.clone();
            check_grad("second order", cs, 101 + i as u64, move |x, w| {
                let y = x.conv2d(w, &opts);
                grad((y * y).sum_all(), &[x, w]).unwrap()[which]
            });
        }
    }
}

/// NCHW operands (PyTorch's layout, OIHW filter) give the NHWC numbers, transposed.
#[test]
fn nchw_matches_nhwc() {
    let mut rng = Rng(77);
    for cs in cases() {
        let g = Graph::new();
        let (xs, ws) = shapes(&cs);
        let x = g.placeholder("x", DType::F32, xs);
        let w = g.placeholder("w", DType::F32, ws);
        let nhwc = x.conv2d(w, &cs.opts);
        let xc = x.permute(&[0, 3, 1, 2]);
        let wc = w.permute(&[3, 2, 0, 1]);
        let nchw = xc.conv2d(wc, &cs.opts.clone().format(DataFormat::Nchw));
        let back = nchw.permute(&[0, 2, 3, 1]);
        g.check().unwrap();
        let feeds = [
            (x, common::random_array(&mut rng, &xs, DType::F32)),
            (w, common::random_array(&mut rng, &ws, DType::F32)),
        ];
        let mut interp = Interpreter::new(&g).unwrap();
        let mut jit = Session::new(&g).unwrap();
        for out in [
            interp.run(&[nhwc, back], &feeds).unwrap(),
            jit.run(&[nhwc, back], &feeds).unwrap(),
        ] {
            assert!(out[0].bits_eq(&out[1]), "{cs:?}");
        }
    }
}

/// What a wrong convolution reports: the op, the shapes, and the caller's line.
#[test]
fn errors_name_op_shapes_and_line() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(8), Some(8), Some(3)]);
    let w = g.placeholder("w", DType::F32, [3, 3, 4, 8]);
    let _ = x.conv2d(w, &Conv2dOptions::new());
    let line = line!() - 1;
    let e = g.check().unwrap_err().to_string();
    assert!(e.contains("conv2d"), "{e}");
    assert!(
        e.contains("f32[?,8,8,3]") && e.contains("f32[3,3,4,8]"),
        "{e}"
    );
    assert!(e.contains(&format!("conv.rs:{line}:")), "{e}");

    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(8), Some(8), Some(6)]);
    let w = g.placeholder("w", DType::F32, [3, 3, 2, 8]);
    let _ = x.conv2d(w, &Conv2dOptions::new().groups(4));
    let e = g.check().unwrap_err().to_string();
    assert!(e.contains("conv2d") && e.contains("groups = 4"), "{e}");
    assert!(e.contains("f32[?,8,8,6]"), "{e}");

    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(2), Some(8), Some(1)]);
    let w = g.placeholder("w", DType::F32, [3, 3, 1, 1]);
    let _ = x.conv2d(w, &Conv2dOptions::new());
    let e = g.check().unwrap_err().to_string();
    assert!(
        e.contains("conv2d") && e.contains("larger than the padded input"),
        "{e}"
    );
    assert!(e.contains("f32[?,2,8,1]") && e.contains("conv.rs:"), "{e}");

    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(8)]);
    let w = g.placeholder("w", DType::F32, [3, 3, 1, 1]);
    let _ = x.conv2d(w, &Conv2dOptions::new());
    let e = g.check().unwrap_err().to_string();
    assert!(e.contains("conv2d") && e.contains("4-D"), "{e}");
}

/// A random convolution: sizes, strides, dilations, padding and groups drawn so that the
/// window fits.
fn random_case(rng: &mut Rng) -> Case {
    loop {
        let groups = [1, 1, 2, 3][rng.below(4)];
        let c = groups * (1 + rng.below(3));
        let o = groups * (1 + rng.below(3));
        let k = [1 + rng.below(3), 1 + rng.below(3)];
        let hw = [1 + rng.below(9), 1 + rng.below(9)];
        let padding = match rng.below(3) {
            0 => Padding::Valid,
            1 => Padding::Same,
            _ => Padding::Explicit([(rng.below(3), rng.below(3)), (rng.below(3), rng.below(3))]),
        };
        let opts = Conv2dOptions::new()
            .strides(1 + rng.below(2), 1 + rng.below(3))
            .dilations(1 + rng.below(2), 1 + rng.below(2))
            .padding(padding)
            .groups(groups);
        let cs = case(1 + rng.below(5), hw, c, k, o, opts);
        let g = Graph::new();
        let (xs, ws) = shapes(&cs);
        let x = g.placeholder("x", DType::F32, xs);
        let w = g.placeholder("w", DType::F32, ws);
        let _ = x.conv2d(w, &cs.opts);
        if g.check().is_ok() {
            return cs;
        }
    }
}

/// Forward, both gradients and a second-order term of `conv(x, w)` with a bias and a ReLU,
/// fetched from `backend`.
fn conv_training_outputs(cs: &Case, backend: Backend, seed: u64) -> Vec<Array> {
    let g = Graph::new();
    let mut rng = Rng(seed | 1);
    let (xs, ws) = shapes(cs);
    let x = g.placeholder(
        "x",
        DType::F32,
        [None, Some(xs[1]), Some(xs[2]), Some(xs[3])],
    );
    let w = g.placeholder("w", DType::F32, ws);
    let b = g.placeholder("b", DType::F32, [cs.o]);
    let y = (x.conv2d(w, &cs.opts) + b).relu();
    let loss = (y * y).sum_all();
    let d = grad(loss, &[x, w]).unwrap();
    let dd = grad((d[0] * d[0]).sum_all(), &[w]).unwrap()[0];
    let feeds = [
        (x, common::random_array(&mut rng, &xs, DType::F32)),
        (w, common::random_array(&mut rng, &ws, DType::F32)),
        (b, common::random_array(&mut rng, &[cs.o], DType::F32)),
    ];
    let mut s = Session::with_backend(&g, backend).unwrap();
    let out = s.run(&[y, d[0], d[1], dd], &feeds).unwrap();
    if backend == Backend::Jit {
        common::assert_native(&s, "conv");
        let steps = s.last_compile_times().unwrap().steps;
        assert!(steps.conv >= 4, "{cs:?}: {steps:?}");
    }
    out
}

/// The worst `|a − b| / (1 + |b|)` over two outputs.
fn worst(a: &Array, b: &Array) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.to_f64_vec()
        .iter()
        .zip(&b.to_f64_vec())
        .map(|(p, q)| (p - q).abs() / (1.0 + q.abs()))
        .fold(0.0, f64::max)
}

/// The JIT's im2col and `gemm` steps against the interpreter, on the fixed cases and on
/// random ones. `gemm` sums in another order than the interpreter's `f64` loops, so the
/// results agree to f32 rounding of sums of a few hundred terms, not bitwise.
#[test]
fn jit_matches_interpreter_on_random_convolutions() {
    let mut rng = Rng(0xc0ffee);
    let mut all = cases();
    all.extend((0..40).map(|_| random_case(&mut rng)));
    for (i, cs) in all.iter().enumerate() {
        let jit = conv_training_outputs(cs, Backend::Jit, i as u64);
        let interp = conv_training_outputs(cs, Backend::Interpreter, i as u64);
        for (k, (a, b)) in jit.iter().zip(&interp).enumerate() {
            let e = worst(a, b);
            assert!(e <= 2e-4, "{cs:?}: output {k} is {e} from the interpreter");
        }
    }
}

/// Tiles and partial sums are fixed by the plan, never by the thread count: the same bits
/// at 1, 2 and 3 threads, on shapes large enough for several tiles and four filter-gradient
/// partials.
#[test]
fn same_bits_at_every_thread_count() {
    let o = Conv2dOptions::new;
    let big = [
        case(8, [64, 64], 4, [3, 3], 8, o().padding(Padding::Same)),
        case(6, [20, 18], 6, [3, 3], 6, o().strides(2, 2).groups(2)),
        case(4, [16, 16], 8, [1, 1], 8, o()),
        case(
            4,
            [16, 16],
            8,
            [3, 3],
            16,
            o().groups(8).padding(Padding::Same),
        ),
    ];
    for cs in &big {
        kiln::threads::set_threads(1);
        let one = conv_training_outputs(cs, Backend::Jit, 5);
        for t in [2, 3] {
            kiln::threads::set_threads(t);
            let many = conv_training_outputs(cs, Backend::Jit, 5);
            for (k, (a, b)) in one.iter().zip(&many).enumerate() {
                assert!(a.bits_eq(b), "{cs:?}: output {k} differs at {t} threads");
            }
        }
        kiln::threads::set_threads(0);
    }
}

/// `Conv2D` and `DepthwiseConv2D` in a model: Keras' names, output shapes and parameter
/// counts in `summary`, Keras' kernel shapes, and training that lowers the loss on the JIT.
#[test]
fn keras_layers_summarize_and_train() {
    use kiln::nn::*;
    let mut m = Sequential::new([
        Input::new([8, 8, 1]).into(),
        Conv2D::new(4, [3, 3]).relu().into(),
        DepthwiseConv2D::new([3, 3])
            .depth_multiplier(2)
            .padding(Padding::Same)
            .strides(2, 2)
            .into(),
        Conv2D::new(6, [1, 1]).groups(2).use_bias(false).into(),
        Flatten.into(),
        Dense::new(2).into(),
    ]);
    // Compared with runs of spaces collapsed (column widths are the summary's business).
    let s = m.summary().unwrap();
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    for line in [
        "conv2d (Conv2D) (None, 6, 6, 4) 40",
        "depthwise_conv2d (DepthwiseConv2D)",
        "(None, 3, 3, 8) 80",
        "conv2d_1 (Conv2D) (None, 3, 3, 6) 24",
        "Total params: 254",
    ] {
        assert!(flat.contains(line), "{line}\n{s}");
    }
    m.compile(
        Adam::new(0.01),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[],
    )
    .unwrap();
    let w = m.get_weights().unwrap();
    let shapes: Vec<(&str, &[usize])> = w.iter().map(|(n, a)| (n.as_str(), a.shape())).collect();
    assert_eq!(
        shapes[2],
        ("depthwise_conv2d/depthwise_kernel", &[3, 3, 4, 2][..])
    );
    // Glorot limits from Keras' fans: sqrt(6 / (9 + 36)) for the [3,3,1,4] kernel, and
    // sqrt(6 / (36 + 18)) for the depthwise [3,3,4,2] one (its [3,3,1,8] filter's fans
    // would give 0.27).
    let max_abs = |a: &Array| {
        a.to_vec::<f32>()
            .unwrap()
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()))
    };
    let (l0, l2) = ((6.0f32 / 45.0).sqrt(), (6.0f32 / 54.0).sqrt());
    assert!(max_abs(&w[0].1) <= l0 && max_abs(&w[0].1) > 0.8 * l0);
    assert!(max_abs(&w[2].1) <= l2 && max_abs(&w[2].1) > 0.28);
    // Bright top half is class 1, bright bottom half class 0.
    let mut rng = Rng(3);
    let n = 32;
    let mut xs = vec![];
    let mut ys = vec![];
    for i in 0..n {
        let top = i % 2;
        ys.push(top as i32);
        for r in 0..8 {
            for _ in 0..8 {
                let bright = (r < 4) == (top == 1);
                xs.push(if bright { 1.0 } else { 0.0 } + 0.1 * rng.f32());
            }
        }
    }
    let x = Array::new([n, 8, 8, 1], xs).unwrap();
    let y = Array::new([n], ys).unwrap();
    let cfg = FitConfig::new()
        .verbosity(Verbosity::Silent)
        .epochs(15)
        .batch_size(8);
    let h = m.fit(&x, &y, cfg).unwrap();
    let loss = h.get("loss").unwrap();
    assert!(loss[14] < loss[0] / 2.0, "{loss:?}");
}
