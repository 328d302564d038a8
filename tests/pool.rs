//! 2-D pooling (`max_pool2d`, `avg_pool2d`, `global_avg_pool2d`) and its gradient family:
//! the interpreter against a direct reference loop (values, the tie and NaN rules, padding),
//! finite-difference gradients of first and second order, the JIT bitwise against the
//! interpreter at 1 and 2 threads, NCHW against NHWC, and the errors.

mod common;

use common::{assert_native, Rng};
use kiln::autodiff::{grad, hessian_vector_product, vjp};
use kiln::prelude::*;
use kiln::{DataFormat, Padding, Pool2dOptions};

/// A pooling configuration.
#[derive(Clone, Debug)]
struct Cfg {
    shape: [usize; 4],
    window: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    padding: Padding,
    count_include_pad: bool,
}

impl Cfg {
    fn opts(&self) -> Pool2dOptions {
        Pool2dOptions::new(self.window)
            .strides(self.strides)
            .dilations(self.dilations)
            .padding(self.padding)
            .count_include_pad(self.count_include_pad)
    }
}

fn cfg(shape: [usize; 4], window: [usize; 2], strides: [usize; 2], padding: Padding) -> Cfg {
    Cfg {
        shape,
        window,
        strides,
        dilations: [1, 1],
        padding,
        count_include_pad: false,
    }
}

/// The configurations the value and gradient tests sweep.
fn configs() -> Vec<Cfg> {
    let mut v = vec![
        cfg([2, 4, 4, 3], [2, 2], [2, 2], Padding::Valid),
        cfg([2, 7, 7, 2], [3, 3], [2, 2], Padding::Valid),
        cfg([1, 5, 7, 3], [3, 3], [2, 2], Padding::Same),
        cfg([1, 5, 6, 1], [2, 3], [1, 2], Padding::Same),
        cfg(
            [2, 5, 5, 2],
            [3, 2],
            [1, 1],
            Padding::Explicit([(1, 0), (0, 1)]),
        ),
        cfg([1, 3, 3, 4], [3, 3], [1, 1], Padding::Same),
    ];
    let mut dil = cfg(
        [1, 7, 6, 2],
        [2, 2],
        [1, 2],
        Padding::Explicit([(1, 1), (2, 0)]),
    );
    dil.dilations = [2, 2];
    v.push(dil);
    let n = v.len();
    for i in 0..n {
        let mut c = v[i].clone();
        c.count_include_pad = true;
        v.push(c);
    }
    v
}

/// The direct reference: every tap of every window, padding skipped, in plain f64.
fn reference(c: &Cfg, x: &[f64], max: bool) -> (Vec<usize>, Vec<f64>) {
    let [n, h, w, ch] = c.shape;
    let (k, s, d) = (c.window, c.strides, c.dilations);
    let (lo, hi) = match c.padding {
        Padding::Valid => ([0, 0], [0, 0]),
        Padding::Explicit(p) => ([p[0].0, p[1].0], [p[0].1, p[1].1]),
        Padding::Same => {
            let mut lo = [0; 2];
            let mut hi = [0; 2];
            for a in 0..2 {
                let size = [h, w][a];
                let out = size.div_ceil(s[a]);
                let total = ((out - 1) * s[a] + (k[a] - 1) * d[a] + 1).saturating_sub(size);
                lo[a] = total / 2;
                hi[a] = total - total / 2;
            }
            (lo, hi)
        }
    };
    let oh = (h + lo[0] + hi[0] - (d[0] * (k[0] - 1) + 1)) / s[0] + 1;
    let ow = (w + lo[1] + hi[1] - (d[1] * (k[1] - 1) + 1)) / s[1] + 1;
    let mut y = vec![];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for cc in 0..ch {
                    let mut best: Option<f64> = None;
                    let (mut sum, mut count) = (0.0, 0usize);
                    for i in 0..k[0] {
                        for j in 0..k[1] {
                            let iy = (oy * s[0] + i * d[0]) as isize - lo[0] as isize;
                            let ix = (ox * s[1] + j * d[1]) as isize - lo[1] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let v = x[((b * h + iy as usize) * w + ix as usize) * ch + cc];
                            best = Some(match best {
                                None => v,
                                Some(m) if m.is_nan() => m,
                                Some(_) if v.is_nan() => v,
                                Some(m) => m.max(v),
                            });
                            sum += v;
                            count += 1;
                        }
                    }
                    let div = if c.count_include_pad {
                        k[0] * k[1]
                    } else {
                        count
                    };
                    y.push(if max { best.unwrap() } else { sum / div as f64 });
                }
            }
        }
    }
    (vec![n, oh, ow, ch], y)
}

fn f64_values(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.f32() as f64).collect()
}

fn run_f64(g: &Graph, fetch: &[Tensor<'_>], feeds: &[(Tensor<'_>, Array)]) -> Vec<Vec<f64>> {
    let mut i = Interpreter::with_precision(g, Precision::F64).unwrap();
    i.run(fetch, feeds)
        .unwrap()
        .iter()
        .map(|a| a.to_f64_vec())
        .collect()
}

#[test]
fn interpreter_matches_a_direct_reference_loop() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for c in configs() {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F64, c.shape);
        let ym = x.max_pool2d(&c.opts());
        let ya = x.avg_pool2d(&c.opts());
        g.check().unwrap();
        let xs = f64_values(&mut rng, c.shape.iter().product());
        let out = run_f64(
            &g,
            &[ym, ya],
            &[(x, Array::new(c.shape, xs.clone()).unwrap())],
        );
        let (shape, want_max) = reference(&c, &xs, true);
        let (_, want_avg) = reference(&c, &xs, false);
        assert_eq!(ym.shape().to_fixed().unwrap(), shape, "{c:?}");
        assert_eq!(out[0], want_max, "max {c:?}");
        for (a, b) in out[1].iter().zip(&want_avg) {
            assert!(
                (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                "avg {c:?}: {a} vs {b}"
            );
        }
    }
}

/// `dx` of a max pool with `dy = 1`: where each window's gradient lands.
fn routed(x: Vec<f32>, shape: [usize; 4], opts: &Pool2dOptions) -> (Vec<f32>, Vec<f32>) {
    let g = Graph::new();
    let xt = g.placeholder("x", DType::F32, shape);
    let y = xt.max_pool2d(opts);
    let dx = grad(y.sum_all(), &[xt]).unwrap()[0];
    let out = Interpreter::new(&g)
        .unwrap()
        .run(&[y, dx], &[(xt, Array::new(shape, x).unwrap())])
        .unwrap();
    (out[0].to_vec().unwrap(), out[1].to_vec().unwrap())
}

#[test]
fn ties_go_to_the_first_tap_in_scan_order_and_nan_wins() {
    let two = Pool2dOptions::new([2, 2]);
    // One 2x2 window of equal values: the first (top-left) takes the gradient.
    let (y, dx) = routed(vec![3.0; 4], [1, 2, 2, 1], &two);
    assert_eq!((y, dx), (vec![3.0], vec![1.0, 0.0, 0.0, 0.0]));
    // A tie at the bottom row: the first in scan order (row by row) wins.
    let (_, dx) = routed(vec![1.0, 2.0, 5.0, 5.0], [1, 2, 2, 1], &two);
    assert_eq!(dx, vec![0.0, 0.0, 1.0, 0.0]);
    // A NaN wins over any number, the first NaN over later ones.
    let (y, dx) = routed(vec![9.0, f32::NAN, 1.0, f32::NAN], [1, 2, 2, 1], &two);
    assert!(y[0].is_nan());
    assert_eq!(dx, vec![0.0, 1.0, 0.0, 0.0]);
    // -0 and +0 tie: the first is kept, bit for bit.
    let (y, _) = routed(vec![-0.0, 0.0, -1.0, -1.0], [1, 2, 2, 1], &two);
    assert_eq!(y[0].to_bits(), (-0.0f32).to_bits());
    // Overlapping windows (3x3 stride 1 over 4x4) that pick the same maximum add their
    // gradients there.
    let mut x = vec![0.0f32; 16];
    x[5] = 7.0;
    let (_, dx) = routed(x, [1, 4, 4, 1], &Pool2dOptions::new([3, 3]).strides([1, 1]));
    assert_eq!(dx[5], 4.0);
    assert_eq!(dx.iter().sum::<f32>(), 4.0);
}

#[test]
fn padding_never_wins_a_max_and_averages_count_it_only_if_asked() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [1, 3, 3, 1]);
    let same = Pool2dOptions::new([3, 3])
        .strides([1, 1])
        .padding(Padding::Same);
    let ym = x.max_pool2d(&same);
    let ya = x.avg_pool2d(&same);
    let yp = x.avg_pool2d(&same.clone().count_include_pad(true));
    let xs: Vec<f32> = (1..=9).map(|v| -(v as f32)).collect();
    let out = Interpreter::new(&g)
        .unwrap()
        .run(&[ym, ya, yp], &[(x, Array::new([1, 3, 3, 1], xs).unwrap())])
        .unwrap();
    let m = out[0].to_vec::<f32>().unwrap();
    // All inputs are negative: a zero from the padding would win every border window.
    assert_eq!(
        m,
        vec![-1.0, -1.0, -2.0, -1.0, -1.0, -2.0, -4.0, -4.0, -5.0]
    );
    let a = out[1].to_vec::<f32>().unwrap();
    let p = out[2].to_vec::<f32>().unwrap();
    // Corner: taps -1, -2, -4, -5; centre: all nine.
    assert_eq!(a[0], -12.0 / 4.0);
    assert_eq!(p[0], -12.0 / 9.0);
    assert_eq!(a[4], -45.0 / 9.0);
    assert_eq!(p[4], -45.0 / 9.0);
}

/// `d sum(f(x) * r) / dx` against central differences on the f64 interpreter.
fn fd_check(
    name: &str,
    shapes: &[Vec<usize>],
    f: impl for<'g> Fn(&[Tensor<'g>]) -> Tensor<'g>,
    seed: u64,
) {
    let g = Graph::new();
    let xs: Vec<Tensor<'_>> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| g.placeholder(&format!("x{i}"), DType::F64, Shape::fixed(s)))
        .collect();
    let y = f(&xs);
    g.check().unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut rng = Rng(seed | 1);
    let ys = y.shape().to_fixed().unwrap();
    let r = g.constant(Array::new(&ys, f64_values(&mut rng, ys.iter().product())).unwrap());
    let loss = (y * r).sum_all();
    let grads = grad(loss, &xs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let vals: Vec<Array> = shapes
        .iter()
        .map(|s| Array::new(s, f64_values(&mut rng, s.iter().product())).unwrap())
        .collect();
    let mut interp = Interpreter::with_precision(&g, Precision::F64).unwrap();
    let feeds = |v: &[Array]| -> Vec<(Tensor<'_>, Array)> {
        xs.iter().copied().zip(v.iter().cloned()).collect()
    };
    let mut fetch = vec![loss];
    fetch.extend(&grads);
    let out = interp.run(&fetch, &feeds(&vals)).unwrap();
    let eps = 1e-6;
    for (k, x) in vals.iter().enumerate() {
        let analytic = out[1 + k].to_vec::<f64>().unwrap();
        assert_eq!(analytic.len(), x.len(), "{name}");
        for (i, &a) in analytic.iter().enumerate() {
            let mut at = |d: f64| {
                let mut v = vals.clone();
                v[k].as_mut_slice::<f64>().unwrap()[i] += d;
                interp.run(&[loss], &feeds(&v)).unwrap()[0]
                    .scalar_value::<f64>()
                    .unwrap()
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (a - fd).abs() <= 1e-6 * (1.0 + fd.abs()),
                "{name}: d/dx{k}[{i}] analytic {a} vs finite difference {fd}"
            );
        }
    }
}

#[test]
fn first_order_gradients_match_finite_differences() {
    for (i, c) in configs().into_iter().enumerate() {
        let s = c.shape.to_vec();
        let o = c.opts();
        fd_check(
            "max_pool2d",
            std::slice::from_ref(&s),
            |x| x[0].max_pool2d(&o),
            i as u64,
        );
        fd_check(
            "avg_pool2d",
            std::slice::from_ref(&s),
            |x| x[0].avg_pool2d(&o),
            i as u64,
        );
        // Through a nonlinearity, so the upstream gradient varies per window.
        fd_check("tanh(max)", &[s], |x| x[0].max_pool2d(&o).tanh(), i as u64);
    }
    fd_check(
        "global_avg_pool2d",
        &[vec![2, 3, 5, 4]],
        |x| x[0].global_avg_pool2d(DataFormat::Nhwc),
        7,
    );
}

/// The gradient kinds as functions of their linear operand: `MaxGrad` of `dy`, `MaxGather` of
/// `g`, `AvgGrad` of `dy` (so the rules of all five kinds are checked).
#[test]
fn the_gradient_ops_have_gradients_too() {
    for (i, c) in configs().into_iter().enumerate() {
        let s = c.shape.to_vec();
        let o = c.opts();
        let g0 = Graph::new();
        let probe = g0.placeholder("x", DType::F64, c.shape).max_pool2d(&o);
        let ys = probe.shape().to_fixed().unwrap();
        let x_fixed = {
            let mut rng = Rng(99 + i as u64);
            Array::new(c.shape, f64_values(&mut rng, s.iter().product())).unwrap()
        };
        // dx = MaxGrad(x, dy), a function of dy (x a constant).
        fd_check(
            "max_pool2d_grad",
            std::slice::from_ref(&ys),
            |t| {
                let x = t[0].graph().constant(x_fixed.clone());
                vjp(x.max_pool2d(&o), &[x], t[0]).unwrap()[0]
            },
            i as u64,
        );
        // MaxGather(x, v) = d<MaxGrad(x, dy), v>/d dy, a function of v.
        fd_check(
            "max_pool2d_gather",
            std::slice::from_ref(&s),
            |t| {
                let g = t[0].graph();
                let x = g.constant(x_fixed.clone());
                let dy = g.placeholder("dy", DType::F64, Shape::fixed(&ys));
                let dx = vjp(x.max_pool2d(&o), &[x], dy).unwrap()[0];
                vjp(dx, &[dy], t[0]).unwrap()[0]
            },
            i as u64,
        );
        fd_check(
            "avg_pool2d_grad",
            std::slice::from_ref(&ys),
            |t| {
                let x = t[0].graph().placeholder("xa", DType::F64, c.shape);
                vjp(x.avg_pool2d(&o), &[x], t[0]).unwrap()[0]
            },
            i as u64,
        );
    }
}

/// Second order: a Hessian-vector product of `sum(r * tanh(pool(x)))` against central
/// differences of its gradient (through `MaxGrad` → `MaxGather` → `MaxGrad`, and `AvgGrad` →
/// `Avg` → `AvgGrad`).
#[test]
fn second_order_matches_finite_differences_of_the_gradient() {
    for (i, c) in configs().into_iter().enumerate() {
        for max in [true, false] {
            let g = Graph::new();
            let x = g.placeholder("x", DType::F64, c.shape);
            let v = g.placeholder("v", DType::F64, c.shape);
            let o = c.opts();
            let y = if max {
                x.max_pool2d(&o)
            } else {
                x.avg_pool2d(&o)
            };
            let mut rng = Rng(0xabc + i as u64);
            let ys = y.shape().to_fixed().unwrap();
            let r = g.constant(Array::new(&ys, f64_values(&mut rng, ys.iter().product())).unwrap());
            let loss = (y.tanh() * r).sum_all();
            let gx = grad(loss, &[x]).unwrap()[0];
            let hv = hessian_vector_product(loss, &[x], &[v]).unwrap()[0];
            let n: usize = c.shape.iter().product();
            let (xs, vs) = (f64_values(&mut rng, n), f64_values(&mut rng, n));
            let mut interp = Interpreter::with_precision(&g, Precision::F64).unwrap();
            let mut run = |shift: f64, fetch: Tensor<'_>| -> Vec<f64> {
                let xv: Vec<f64> = xs.iter().zip(&vs).map(|(a, b)| a + shift * b).collect();
                let feeds = [
                    (x, Array::new(c.shape, xv).unwrap()),
                    (v, Array::new(c.shape, vs.clone()).unwrap()),
                ];
                interp.run(&[fetch], &feeds).unwrap()[0].to_f64_vec()
            };
            let eps = 1e-6;
            let analytic = run(0.0, hv);
            let (plus, minus) = (run(eps, gx), run(-eps, gx));
            for (k, a) in analytic.iter().enumerate() {
                let fd = (plus[k] - minus[k]) / (2.0 * eps);
                assert!(
                    (a - fd).abs() <= 1e-5 * (1.0 + fd.abs()),
                    "{c:?} max={max}: Hv[{k}] analytic {a} vs finite difference {fd}"
                );
            }
        }
    }
}

/// Inputs with ties (values on a coarse grid), signed zeros and a few NaNs.
fn tricky_f32(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.below(40) {
            0 => f32::NAN,
            1 => -0.0,
            2 => 0.0,
            k if k < 20 => (rng.below(5) as f32 - 2.0) * 0.5,
            _ => rng.f32(),
        })
        .collect()
}

/// A random pooling configuration.
fn random_cfg(rng: &mut Rng) -> Cfg {
    loop {
        let k = [1 + rng.below(3), 1 + rng.below(3)];
        let s = [1 + rng.below(3), 1 + rng.below(3)];
        let d = [1 + rng.below(2), 1 + rng.below(2)];
        let padding = match rng.below(3) {
            0 => Padding::Valid,
            1 => Padding::Same,
            _ => Padding::Explicit([(rng.below(2), rng.below(2)), (rng.below(2), rng.below(2))]),
        };
        let shape = [
            1 + rng.below(3),
            2 + rng.below(8),
            2 + rng.below(8),
            1 + rng.below(9),
        ];
        let c = Cfg {
            shape,
            window: k,
            strides: s,
            dilations: d,
            padding,
            count_include_pad: rng.below(2) == 0,
        };
        // Keep only windows the shape rule accepts (it refuses, say, windows in the padding).
        let g = Graph::new();
        let _ = g.placeholder("x", DType::F32, shape).max_pool2d(&c.opts());
        if g.check().is_ok() {
            return c;
        }
    }
}

/// Builds every pooling kind on `x` (f32, NHWC): both forwards, both gradients (through
/// `vjp`, with `u` as the upstream gradient) and the gather (the gradient of `MaxGrad`).
fn all_kinds<'g>(
    x: Tensor<'g>,
    u: Tensor<'g>,
    w: Tensor<'g>,
    o: &Pool2dOptions,
) -> Vec<Tensor<'g>> {
    let ym = x.max_pool2d(o);
    let ya = x.avg_pool2d(o);
    let dxm = vjp(ym, &[x], u).unwrap()[0];
    let dxa = vjp(ya, &[x], u).unwrap()[0];
    let gather = vjp(dxm, &[u], w).unwrap()[0];
    vec![ym, ya, dxm, dxa, gather]
}

fn jit_runs(
    g: &Graph,
    fetch: &[Tensor<'_>],
    feeds: &[(Tensor<'_>, Array)],
    what: &str,
) -> Vec<Array> {
    let mut s = Session::new(g).unwrap();
    let out = s.run(fetch, feeds).unwrap();
    assert_native(&s, what);
    let steps = s.last_compile_times().unwrap().steps;
    assert!(steps.pools >= 1, "{what}: {steps:?}");
    out
}

#[test]
fn jit_is_bitwise_equal_to_the_interpreter_at_1_and_2_threads() {
    let mut rng = Rng(0x5eed_0f90);
    let mut cases: Vec<Cfg> = (0..40).map(|_| random_cfg(&mut rng)).collect();
    // Large enough to split over threads (the MNIST convnet's first pooling, smaller batch).
    cases.push(cfg([8, 26, 26, 32], [2, 2], [2, 2], Padding::Valid));
    cases.push(cfg([6, 11, 11, 64], [3, 3], [2, 2], Padding::Same));
    for c in cases {
        let what = format!("{c:?}");
        let g = Graph::new();
        let x = g.placeholder(
            "x",
            DType::F32,
            [None, Some(c.shape[1]), Some(c.shape[2]), Some(c.shape[3])],
        );
        let o = c.opts();
        let probe = x.max_pool2d(&o).shape();
        let u = g.placeholder("u", DType::F32, &probe);
        let w = g.placeholder(
            "w",
            DType::F32,
            [None, Some(c.shape[1]), Some(c.shape[2]), Some(c.shape[3])],
        );
        let fetch = all_kinds(x, u, w, &o);
        g.check().unwrap();
        let n: usize = c.shape.iter().product();
        let ys = probe.resolve(c.shape[0]);
        let un: usize = ys.iter().product();
        let feeds = vec![
            (x, Array::new(c.shape, tricky_f32(&mut rng, n)).unwrap()),
            (u, Array::new(&ys, tricky_f32(&mut rng, un)).unwrap()),
            (w, Array::new(c.shape, tricky_f32(&mut rng, n)).unwrap()),
        ];
        let reference = Interpreter::new(&g).unwrap().run(&fetch, &feeds).unwrap();
        kiln::threads::set_threads(1);
        let one = jit_runs(&g, &fetch, &feeds, &what);
        kiln::threads::set_threads(2);
        let two = jit_runs(&g, &fetch, &feeds, &what);
        kiln::threads::set_threads(0);
        for (k, ((r, a), b)) in reference.iter().zip(&one).zip(&two).enumerate() {
            assert!(
                r.bits_eq(a),
                "{what}: output {k}: JIT differs from the interpreter"
            );
            assert!(a.bits_eq(b), "{what}: output {k}: 2 threads differ from 1");
        }
    }
}

#[test]
fn nchw_pools_like_nhwc() {
    let mut rng = Rng(77);
    for c in configs() {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, c.shape);
        let [n, h, w, ch] = c.shape;
        let xc = g.placeholder("xc", DType::F32, [n, ch, h, w]);
        let o = c.opts();
        let oc = o.clone().format(DataFormat::Nchw);
        let to_nhwc = [0, 2, 3, 1];
        let fetch = [
            x.max_pool2d(&o),
            xc.max_pool2d(&oc).permute(&to_nhwc),
            x.avg_pool2d(&o),
            xc.avg_pool2d(&oc).permute(&to_nhwc),
            x.global_avg_pool2d(DataFormat::Nhwc),
            xc.global_avg_pool2d(DataFormat::Nchw),
        ];
        g.check().unwrap();
        let xs = Array::new(c.shape, tricky_f32(&mut rng, n * h * w * ch)).unwrap();
        // The same values in NCHW order.
        let v = xs.to_vec::<f32>().unwrap();
        let mut vc = vec![0.0f32; v.len()];
        for b in 0..n {
            for y in 0..h {
                for xx in 0..w {
                    for k in 0..ch {
                        vc[((b * ch + k) * h + y) * w + xx] = v[((b * h + y) * w + xx) * ch + k];
                    }
                }
            }
        }
        let feeds = [(x, xs), (xc, Array::new([n, ch, h, w], vc).unwrap())];
        for backend in [Backend::Interpreter, Backend::Jit] {
            let mut s = Session::with_backend(&g, backend).unwrap();
            let out = s.run(&fetch, &feeds).unwrap();
            for k in 0..3 {
                assert!(
                    out[2 * k].bits_eq(&out[2 * k + 1]),
                    "{c:?} {backend:?} pair {k}"
                );
            }
        }
    }
}

/// The error a failed build records, with the test file's line checked and then blanked.
fn error_at(g: &Graph, line: u32) -> String {
    let msg = g.check().unwrap_err().to_string();
    let at = format!("tests/pool.rs:{line}:");
    assert!(msg.contains(&at), "{msg} does not name line {line}");
    msg.replace(&at, "tests/pool.rs:L:")
}

#[test]
fn errors_name_the_op_the_shapes_and_the_line() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(28), Some(28)]);
    let line = line!() + 1;
    let _ = x.max_pool2d(&Pool2dOptions::new([2, 2]));
    let e = error_at(&g, line);
    assert!(e.starts_with("max_pool2d at tests/pool.rs:L:"), "{e}");
    assert!(
        e.contains("rank-4") && e.contains("f32[?,28,28] \"x\""),
        "{e}"
    );

    let g = Graph::new();
    let x = g.placeholder("img", DType::F32, [None, Some(3), Some(3), Some(8)]);
    let line = line!() + 1;
    let _ = x.avg_pool2d(&Pool2dOptions::new([4, 4]));
    let e = error_at(&g, line);
    assert!(e.starts_with("avg_pool2d at tests/pool.rs:L:"), "{e}");
    assert!(
        e.contains("larger than the padded input") && e.contains("f32[?,3,3,8] \"img\""),
        "{e}"
    );

    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [1, 4, 4, 1]);
    let line = line!() + 1;
    let _ = x.max_pool2d(&Pool2dOptions::new([2, 2]).padding(Padding::Explicit([(2, 0), (0, 0)])));
    let e = error_at(&g, line);
    assert!(
        e.contains("lies entirely in the padding") && e.contains("f32[1,4,4,1]"),
        "{e}"
    );

    let g = Graph::new();
    let x = g.placeholder("x", DType::I32, [1, 4, 4, 1]);
    let line = line!() + 1;
    let _ = x.max_pool2d(&Pool2dOptions::new([2, 2]));
    let e = error_at(&g, line);
    assert!(e.contains("float") && e.contains("i32[1,4,4,1]"), "{e}");

    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [1, 4, 4, 1]);
    let line = line!() + 1;
    let _ = x.max_pool2d(&Pool2dOptions::new([2, 0]));
    let e = error_at(&g, line);
    assert!(e.contains("at least 1"), "{e}");
}

#[test]
fn dumps_parse_back_to_the_same_graph() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(6), Some(5), Some(2)]);
    let u = g.placeholder("u", DType::F32, [None, Some(3), Some(3), Some(2)]);
    let o = Pool2dOptions::new([3, 2])
        .strides([2, 2])
        .padding(Padding::Same)
        .dilations([1, 1]);
    let fetch = all_kinds(x, u, x, &o);
    let _ = fetch;
    let text = g.dump();
    for name in [
        "max_pool2d(",
        "avg_pool2d(",
        "max_pool2d_grad(",
        "max_pool2d_gather(",
        "avg_pool2d_grad(",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    assert!(text.contains("input_hw=[6,5]"), "{text}");
    let again = Graph::parse(&text).unwrap().dump();
    assert_eq!(text, again);
}

#[test]
fn keras_layers_show_their_shapes_and_no_params_and_train() {
    use kiln::nn::*;
    let mut m = Sequential::new([
        Input::new([12, 12, 2]).into(),
        MaxPooling2D::new([2, 2]).into(),
        AveragePooling2D::new([3, 3])
            .strides([1, 1])
            .padding(Padding::Same)
            .into(),
        MaxPooling2D::new([3, 3]).strides([2, 2]).into(),
        GlobalAveragePooling2D::new().into(),
        Dense::new(3).into(),
    ]);
    m.compile(
        Sgd::new(0.1),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[],
    )
    .unwrap();
    let s = m.summary().unwrap();
    for (layer, shape) in [
        ("max_pooling2d (MaxPooling2D)", "(None, 6, 6, 2)"),
        ("average_pooling2d (AveragePooling2D)", "(None, 6, 6, 2)"),
        ("max_pooling2d_1 (MaxPooling2D)", "(None, 2, 2, 2)"),
        (
            "global_average_pooling2d (GlobalAveragePooling2D)",
            "(None, 2)",
        ),
    ] {
        let row = s.lines().find(|l| l.trim_start().starts_with(layer));
        let row = row.unwrap_or_else(|| panic!("{layer} not in\n{s}"));
        assert!(row.contains(shape) && row.ends_with(" 0"), "{row:?}");
    }
    assert!(s.contains("Total params: 9"), "{s}");
    // A pooling model trains: the loss on a fixed batch goes down.
    let mut rng = Rng(5);
    let xs: Vec<f32> = (0..16 * 288).map(|_| rng.f32()).collect();
    let x = Array::new([16, 12, 12, 2], xs).unwrap();
    let y = Array::new([16], (0..16i32).map(|i| i % 3).collect::<Vec<_>>()).unwrap();
    let h = m
        .fit(
            &x,
            &y,
            FitConfig::new()
                .epochs(5)
                .batch_size(16)
                .verbosity(Verbosity::Silent),
        )
        .unwrap();
    let loss = h.get("loss").unwrap();
    assert!(loss[4] < loss[0], "{loss:?}");

    // A flat input is refused with the layer's name.
    let mut bad = Sequential::new([Input::new([784]).into(), MaxPooling2D::new([2, 2]).into()]);
    let e = bad.summary().unwrap_err().to_string();
    assert!(
        e.contains("MaxPooling2D takes a 4-D") && e.contains("[?,784]"),
        "{e}"
    );
}
