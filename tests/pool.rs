//! 2-D pooling (`max_pool2d`, `avg_pool2d`, `global_avg_pool2d`) and its gradient family on
//! the interpreter: values against a direct reference loop (the tie and NaN rules, padding),
//! and finite-difference gradients of first and second order. `tests/pool_jit.rs` has the
//! JIT, layouts, errors, text and the Keras layers.

mod common;
mod pool_common;

use common::Rng;
use kiln::autodiff::{grad, hessian_vector_product, vjp};
use kiln::prelude::*;
use kiln::{DataFormat, Padding, Pool2dOptions};
use pool_common::{configs, f64_values, Cfg};

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
