//! Gradients: central finite differences on the f64 interpreter for every primitive and every
//! composite, a hand-derived MLP backprop, higher order, and the API's edge cases.

mod common;

use common::Rng;
use kiln::autodiff::{grad, gradients, hessian_vector_product, vjp};
use kiln::prelude::*;
use kiln::text::Dumper;

/// Where a test input's values come from: away from kinks, ties and poles.
#[derive(Clone, Copy)]
enum Dom {
    /// uniform on [-2, 2] with |x| >= 0.2
    Any,
    /// uniform on [0.5, 2.5]
    Pos,
}

fn values(rng: &mut Rng, n: usize, dom: Dom) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
            match dom {
                Dom::Any => {
                    let v = 0.2 + 1.8 * u;
                    if rng.below(2) == 0 {
                        v
                    } else {
                        -v
                    }
                }
                Dom::Pos => 0.5 + 2.0 * u,
            }
        })
        .collect()
}

/// Checks `d sum(f(xs) * r) / d xs` (r a fixed random weight, so every output element
/// matters) against central differences, in f64.
fn check(
    name: &str,
    inputs: &[(&[usize], Dom)],
    f: impl for<'g> Fn(&'g Graph, &[Tensor<'g>]) -> Tensor<'g>,
) {
    let g = Graph::new();
    let mut rng = Rng(0x9e3779b97f4a7c15 ^ (name.len() as u64 * 7919));
    let xs: Vec<Tensor<'_>> = inputs
        .iter()
        .enumerate()
        .map(|(i, (s, _))| g.placeholder(&format!("x{i}"), DType::F64, Shape::fixed(s)))
        .collect();
    let y = f(&g, &xs);
    g.check().unwrap_or_else(|e| panic!("{name}: {e}"));
    let yshape = y.shape().to_fixed().unwrap();
    let n: usize = yshape.iter().product();
    let r = g.constant(Array::new(&yshape, values(&mut rng, n, Dom::Pos)).unwrap());
    let loss = (y * r).sum_all();
    let grads = grad(loss, &xs).unwrap_or_else(|e| panic!("{name}: {e}"));

    let vals: Vec<Array> = inputs
        .iter()
        .map(|(s, dom)| {
            let n = s.iter().product();
            Array::new(*s, values(&mut rng, n, *dom)).unwrap()
        })
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
        assert_eq!(
            analytic.len(),
            x.len(),
            "{name}: gradient {k} has the wrong size"
        );
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

const ANY: Dom = Dom::Any;
const POS: Dom = Dom::Pos;

#[test]
fn unary_primitives() {
    check("neg", &[(&[3, 2], ANY)], |_, x| -x[0]);
    check("exp", &[(&[3, 2], ANY)], |_, x| x[0].exp());
    check("log", &[(&[3, 2], POS)], |_, x| x[0].log());
    check("sqrt", &[(&[3, 2], POS)], |_, x| x[0].sqrt());
    check("recip", &[(&[3, 2], POS)], |_, x| x[0].recip());
    check("tanh", &[(&[3, 2], ANY)], |_, x| x[0].tanh());
    check("abs", &[(&[3, 2], ANY)], |_, x| x[0].abs());
    check("sigmoid", &[(&[3, 2], ANY)], |_, x| x[0].sigmoid());
    check("erf", &[(&[3, 2], ANY)], |_, x| x[0].erf());
    check("softplus", &[(&[3, 2], ANY)], |_, x| x[0].softplus());
    // Composites: their gradients come from the primitives they are made of.
    check("gelu", &[(&[3, 2], ANY)], |_, x| x[0].gelu(false));
    check("gelu_tanh", &[(&[3, 2], ANY)], |_, x| x[0].gelu(true));
}

#[test]
fn binary_primitives_broadcasting_in_every_direction() {
    let pairs: [(&[usize], &[usize]); 6] = [
        (&[3, 4], &[3, 4]),
        (&[3, 4], &[4]),
        (&[4], &[3, 4]),
        (&[3, 1], &[1, 4]),
        (&[], &[3, 4]),
        (&[2, 1, 4], &[3, 1]),
    ];
    for (a, b) in pairs {
        check("add", &[(a, ANY), (b, ANY)], |_, x| x[0] + x[1]);
        check("sub", &[(a, ANY), (b, ANY)], |_, x| x[0] - x[1]);
        check("mul", &[(a, ANY), (b, ANY)], |_, x| x[0] * x[1]);
        check("div", &[(a, ANY), (b, POS)], |_, x| x[0] / x[1]);
        check("pow", &[(a, POS), (b, ANY)], |_, x| x[0].pow(x[1]));
        check("rem", &[(a, ANY), (b, POS)], |_, x| x[0] % x[1]);
        check("maximum", &[(a, ANY), (b, ANY)], |_, x| x[0].maximum(x[1]));
        check("minimum", &[(a, ANY), (b, ANY)], |_, x| x[0].minimum(x[1]));
    }
}

#[test]
fn where_comparisons_and_casts() {
    check(
        "where",
        &[(&[3, 4], ANY), (&[3, 4], ANY), (&[4], ANY)],
        |_, x| x[0].greater(0.0).select(x[1], x[2]),
    );
    check("where_scalar_branch", &[(&[3, 4], ANY)], |_, x| {
        x[0].less(0.0).select(x[0] * 3.0, 0.5)
    });
    // Comparisons and integer casts pass no gradient; the float path still does.
    check("cast_to_int", &[(&[5], ANY)], |_, x| {
        x[0].greater(0.0).cast(DType::F64) * 2.0 + x[0].cast(DType::I32).cast(DType::F64) + x[0]
    });
}

#[test]
fn reductions_over_each_axis() {
    let axes: [&[isize]; 5] = [&[0], &[1], &[2], &[0, 2], &[0, 1, 2]];
    for a in axes {
        for keep in [false, true] {
            check("sum", &[(&[2, 3, 4], ANY)], |_, x| x[0].sum(a, keep));
            check("max", &[(&[2, 3, 4], ANY)], |_, x| x[0].max(a, keep));
            check("mean", &[(&[2, 3, 4], ANY)], |_, x| x[0].mean(a, keep));
            check("min", &[(&[2, 3, 4], ANY)], |_, x| x[0].min(a, keep));
        }
    }
}

#[test]
fn movement_and_contraction() {
    check("reshape", &[(&[2, 6], ANY)], |_, x| {
        x[0].reshape([3, 4]).exp()
    });
    check("permute", &[(&[2, 3, 4], ANY)], |_, x| {
        x[0].permute(&[2, 0, 1]).tanh()
    });
    check("transpose", &[(&[3, 4], ANY)], |_, x| x[0].transpose());
    check("broadcast_to", &[(&[3, 1], ANY)], |_, x| {
        x[0].broadcast_to([2, 3, 4])
    });
    check("slice", &[(&[4, 5], ANY)], |_, x| {
        x[0].slice(&[1, 2], [2, 3])
    });
    check("narrow", &[(&[4, 5], ANY)], |_, x| x[0].narrow(-1, 1, 3));
    check("pad", &[(&[2, 3], ANY)], |_, x| x[0].pad(&[1, 0], &[2, 1]));
    check("concat0", &[(&[2, 3], ANY), (&[1, 3], ANY)], |g, x| {
        g.concat(&[x[0], x[1]], 0)
    });
    check(
        "concat1",
        &[(&[2, 3], ANY), (&[2, 1], ANY), (&[2, 2], ANY)],
        |g, x| g.concat(&[x[0], x[1], x[2]], 1),
    );
    check("matmul", &[(&[3, 4], ANY), (&[4, 5], ANY)], |_, x| {
        x[0].matmul(x[1])
    });
    check(
        "batched_matmul",
        &[(&[2, 3, 4], ANY), (&[2, 4, 5], ANY)],
        |_, x| x[0].matmul(x[1]),
    );
    check("matmul_same_operand", &[(&[3, 3], ANY)], |_, x| {
        x[0].matmul(x[0])
    });
}

#[test]
fn composites() {
    check("relu", &[(&[3, 4], ANY)], |_, x| x[0].relu());
    check("square", &[(&[3, 4], ANY)], |_, x| x[0].square());
    check("softmax", &[(&[3, 4], ANY)], |_, x| x[0].softmax(-1));
    check("softmax_axis0", &[(&[3, 4], ANY)], |_, x| x[0].softmax(0));
    check("log_softmax", &[(&[3, 4], ANY)], |_, x| {
        x[0].log_softmax(-1)
    });
    check("logsumexp", &[(&[3, 4], ANY)], |_, x| {
        x[0].logsumexp(-1, false)
    });
    check("mean_all", &[(&[3, 4], ANY)], |_, x| x[0].mean_all());
    check("softmax_ce", &[(&[3, 4], ANY), (&[3, 4], POS)], |_, x| {
        x[0].softmax_cross_entropy_with_logits(x[1].softmax(-1))
    });
    check("sparse_softmax_ce", &[(&[3, 4], ANY)], |g, x| {
        let labels = g.constant(Array::new([3], vec![0i32, 3, 1]).unwrap());
        x[0].sparse_softmax_cross_entropy_with_logits(labels)
    });
    check("sigmoid_ce", &[(&[3, 4], ANY), (&[3, 4], POS)], |_, x| {
        x[0].sigmoid_cross_entropy_with_logits(x[1] / 3.0)
    });
    check("fan_out", &[(&[3], ANY)], |_, x| {
        x[0] * x[0] + x[0].exp() * x[0]
    });
}

/// The stable cross-entropies at logits of ±80: gradients finite and equal to the analytic
/// `softmax - onehot` (and `sigmoid - z`).
#[test]
fn cross_entropies_at_extreme_logits() {
    let g = Graph::new();
    let logits = g.placeholder("logits", DType::F64, [2, 3]);
    let labels = g.constant(Array::new([2], vec![1i32, 0]).unwrap());
    let z = g.placeholder("z", DType::F64, [2, 3]);
    let ce = logits
        .sparse_softmax_cross_entropy_with_logits(labels)
        .sum_all();
    let sce = logits.sigmoid_cross_entropy_with_logits(z).sum_all();
    let d_ce = grad(ce, &[logits]).unwrap()[0];
    let d_sce = grad(sce, &[logits]).unwrap()[0];
    let l = vec![80.0, -80.0, 0.0, -80.0, 80.0, 80.0];
    let zv = vec![1.0, 0.0, 0.5, 0.0, 1.0, 0.3];
    let mut interp = Interpreter::with_precision(&g, Precision::F64).unwrap();
    let out = interp
        .run(
            &[ce, d_ce, d_sce],
            &[
                (logits, Array::new([2, 3], l.clone()).unwrap()),
                (z, Array::new([2, 3], zv.clone()).unwrap()),
            ],
        )
        .unwrap();
    assert!(out[0].scalar_value::<f64>().unwrap().is_finite());
    let got = out[1].to_vec::<f64>().unwrap();
    let onehot = [0.0, 1.0, 0.0, 1.0, 0.0, 0.0];
    for r in 0..2 {
        let row = &l[r * 3..r * 3 + 3];
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        for c in 0..3 {
            let want = (row[c] - m).exp() / s - onehot[r * 3 + c];
            let i = r * 3 + c;
            assert!(
                got[i].is_finite() && (got[i] - want).abs() < 1e-12,
                "{i}: {} vs {want}",
                got[i]
            );
        }
    }
    let got = out[2].to_vec::<f64>().unwrap();
    for i in 0..6 {
        let want = 1.0 / (1.0 + (-l[i]).exp()) - zv[i];
        assert!(
            got[i].is_finite() && (got[i] - want).abs() < 1e-12,
            "{i}: {} vs {want}",
            got[i]
        );
    }
}

/// A two-layer MLP's weight gradients against backprop derived by hand and computed in
/// plain Rust.
#[test]
fn mlp_gradients_match_hand_backprop() {
    let (b, i, h, o) = (4, 3, 5, 2);
    let mut rng = Rng(77);
    let xv = values(&mut rng, b * i, ANY);
    let w1v = values(&mut rng, i * h, ANY);
    let b1v = values(&mut rng, h, ANY);
    let w2v = values(&mut rng, h * o, ANY);
    let b2v = values(&mut rng, o, ANY);
    let yv = vec![0i32, 1, 1, 0];

    let g = Graph::new();
    let x = g.placeholder("x", DType::F64, [None, Some(i)]);
    let y = g.placeholder("y", DType::I32, [None]);
    let w1 = g.variable_of("w1", DType::F64, [i, h], init::zeros());
    let b1 = g.variable_of("b1", DType::F64, [h], init::zeros());
    let w2 = g.variable_of("w2", DType::F64, [h, o], init::zeros());
    let b2 = g.variable_of("b2", DType::F64, [o], init::zeros());
    let hid = (x.matmul(w1) + b1).relu();
    let logits = hid.matmul(w2) + b2;
    let loss = logits
        .sparse_softmax_cross_entropy_with_logits(y)
        .mean_all();
    let grads = grad(loss, &[w1, b1, w2, b2]).unwrap();
    let mut interp = Interpreter::with_precision(&g, Precision::F64).unwrap();
    for (v, data, shape) in [
        (w1, &w1v, vec![i, h]),
        (b1, &b1v, vec![h]),
        (w2, &w2v, vec![h, o]),
        (b2, &b2v, vec![o]),
    ] {
        interp
            .set_variable(v.id(), Array::new(shape, data.clone()).unwrap())
            .unwrap();
    }
    let out = interp
        .run(
            &grads,
            &[
                (x, Array::new([b, i], xv.clone()).unwrap()),
                (y, Array::new([b], yv.clone()).unwrap()),
            ],
        )
        .unwrap();

    // Forward by hand.
    let mut pre = vec![0.0; b * h];
    for r in 0..b {
        for c in 0..h {
            pre[r * h + c] = b1v[c] + (0..i).map(|k| xv[r * i + k] * w1v[k * h + c]).sum::<f64>();
        }
    }
    let act: Vec<f64> = pre.iter().map(|v| v.max(0.0)).collect();
    let mut dlogits = vec![0.0; b * o];
    for r in 0..b {
        let lg: Vec<f64> = (0..o)
            .map(|c| b2v[c] + (0..h).map(|k| act[r * h + k] * w2v[k * o + c]).sum::<f64>())
            .collect();
        let m = lg.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = lg.iter().map(|v| (v - m).exp()).sum();
        for c in 0..o {
            let p = (lg[c] - m).exp() / s;
            dlogits[r * o + c] = (p - if yv[r] as usize == c { 1.0 } else { 0.0 }) / b as f64;
        }
    }
    // Backward by hand.
    let mut dw2 = vec![0.0; h * o];
    let mut db2 = vec![0.0; o];
    let mut dact = vec![0.0; b * h];
    for r in 0..b {
        for c in 0..o {
            db2[c] += dlogits[r * o + c];
            for k in 0..h {
                dw2[k * o + c] += act[r * h + k] * dlogits[r * o + c];
                dact[r * h + k] += w2v[k * o + c] * dlogits[r * o + c];
            }
        }
    }
    let dpre: Vec<f64> = dact
        .iter()
        .zip(&pre)
        .map(|(d, p)| if *p > 0.0 { *d } else { 0.0 })
        .collect();
    let mut dw1 = vec![0.0; i * h];
    let mut db1 = vec![0.0; h];
    for r in 0..b {
        for c in 0..h {
            db1[c] += dpre[r * h + c];
            for k in 0..i {
                dw1[k * h + c] += xv[r * i + k] * dpre[r * h + c];
            }
        }
    }
    for (got, want, what) in [
        (&out[0], &dw1, "dw1"),
        (&out[1], &db1, "db1"),
        (&out[2], &dw2, "dw2"),
        (&out[3], &db2, "db2"),
    ] {
        let got = got.to_vec::<f64>().unwrap();
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(want.iter()) {
            assert!((a - b).abs() < 1e-12, "{what}: {a} vs {b}");
        }
    }
}

#[test]
fn second_derivatives_and_hessian_vector_products() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F64, Shape::scalar());
    let t = x.tanh();
    let d1 = grad(t, &[x]).unwrap()[0];
    let d2 = grad(d1, &[x]).unwrap()[0];
    let d3 = grad(d2, &[x]).unwrap()[0];
    let mut interp = Interpreter::with_precision(&g, Precision::F64).unwrap();
    for xv in [-1.3, 0.0, 0.4, 2.0f64] {
        let out = interp
            .run(&[d1, d2, d3], &[(x, Array::scalar(xv))])
            .unwrap();
        let th = xv.tanh();
        let s = 1.0 - th * th;
        let want = [s, -2.0 * th * s, -2.0 * s * s + 4.0 * th * th * s];
        for (o, w) in out.iter().zip(want) {
            let v = o.scalar_value::<f64>().unwrap();
            assert!((v - w).abs() < 1e-12, "x={xv}: {v} vs {w}");
        }
    }

    // f(x) = (a.x)^2 / 2 + sum(exp(x)): H = a a^T + diag(exp(x)).
    let g = Graph::new();
    let x = g.placeholder("x", DType::F64, [3]);
    let v = g.placeholder("v", DType::F64, [3]);
    let a = [0.5, -1.0, 2.0];
    let ac = g.constant(Array::new([3], a.to_vec()).unwrap());
    let f = (x * ac).sum_all().square() * 0.5 + x.exp().sum_all();
    let hv = hessian_vector_product(f, &[x], &[v]).unwrap()[0];
    let mut interp = Interpreter::with_precision(&g, Precision::F64).unwrap();
    let (xv, vv) = ([0.3f64, -0.2, 0.1], [1.0f64, 2.0, -0.5]);
    let out = interp
        .run(
            &[hv],
            &[
                (x, Array::new([3], xv.to_vec()).unwrap()),
                (v, Array::new([3], vv.to_vec()).unwrap()),
            ],
        )
        .unwrap();
    let av: f64 = a.iter().zip(&vv).map(|(p, q)| p * q).sum();
    let got = out[0].to_vec::<f64>().unwrap();
    for k in 0..3 {
        let want = a[k] * av + xv[k].exp() * vv[k];
        assert!(
            (got[k] - want).abs() < 1e-12,
            "Hv[{k}] {} vs {want}",
            got[k]
        );
    }
}

#[test]
fn vjp_unreachable_stop_gradient_and_argmax() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let u = g.variable("unused", [2], init::ones());
    let s = g.placeholder("s", DType::F32, [None, Some(3)]);
    let y = x * x.stop_gradient() + x.argmax(-1).cast(DType::F32).reshape([None, Some(1)]);
    let d = vjp(y, &[x, u], s).unwrap();
    let mut interp = Interpreter::new(&g).unwrap();
    let xv = Array::new([2, 3], vec![1.0f32, -2.0, 3.0, 0.5, 0.0, 4.0]).unwrap();
    let sv = Array::new([2, 3], vec![1.0f32, 1.0, 2.0, -1.0, 3.0, 0.5]).unwrap();
    let out = interp.run(&d, &[(x, xv), (s, sv)]).unwrap();
    // d(x * sg(x)) = sg(x) (the stopped factor is a constant); argmax contributes nothing.
    assert_eq!(
        out[0].to_vec::<f32>().unwrap(),
        vec![1.0, -2.0, 6.0, -0.5, 0.0, 2.0]
    );
    // An x that y does not depend on gets zeros of its shape.
    assert_eq!(out[1].to_vec::<f32>().unwrap(), vec![0.0, 0.0]);
}

#[test]
fn api_errors() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3]);
    let labels = g.placeholder("labels", DType::I32, [3]);
    let y = (x * labels.cast(DType::F32)).sum_all();
    let e = gradients(&[y], &[labels], None).unwrap_err().to_string();
    let e = e.replace(&format!("{}:", file!()), "tests/autodiff.rs:");
    assert!(e.starts_with("gradients at tests/autodiff.rs:"), "{e}");
    assert!(
        e.ends_with(r#"cannot differentiate with respect to i32[3] "labels": only f32 and f64 tensors have gradients"#),
        "{e}"
    );
    let e = grad(x * 2.0, &[x]).unwrap_err().to_string();
    assert!(e.contains("the loss must be a scalar, got f32[3]"), "{e}");
    let seed = g.placeholder("seed", DType::F32, [4]);
    let e = vjp(x * 2.0, &[x], seed).unwrap_err().to_string();
    assert!(
        e.contains(r#"the seed f32[4] "seed" does not match its y f32[3]"#),
        "{e}"
    );
    let other = Graph::new();
    let z = other.placeholder("z", DType::F32, [3]);
    let e = gradients(&[y], &[z], None).unwrap_err().to_string();
    assert!(e.contains("tensors cannot cross graphs"), "{e}");
}

fn mlp_training_graph(g: &Graph) -> (Tensor<'_>, Vec<Tensor<'_>>, Vec<Tensor<'_>>) {
    let x = g.placeholder("x", DType::F32, [None, Some(4)]);
    let y = g.placeholder("y", DType::I32, [None]);
    let mut params = vec![];
    let h = {
        let _s = g.name_scope("dense_1");
        let w = g.variable("kernel", [4, 8], init::glorot_uniform(1));
        let b = g.variable("bias", [8], init::zeros());
        params.extend([w, b]);
        (x.matmul(w) + b).relu()
    };
    let logits = {
        let _s = g.name_scope("dense_2");
        let w = g.variable("kernel", [8, 3], init::glorot_uniform(2));
        let b = g.variable("bias", [3], init::zeros());
        params.extend([w, b]);
        h.matmul(w) + b
    };
    let loss = {
        let _s = g.name_scope("loss");
        logits
            .sparse_softmax_cross_entropy_with_logits(y)
            .mean_all()
    };
    let grads = grad(loss, &params).unwrap();
    (loss, params, grads)
}

#[test]
fn gradient_graph_snapshot() {
    let g = Graph::new();
    let (loss, _, grads) = mlp_training_graph(&g);
    let mut outs = vec![loss.id()];
    outs.extend(grads.iter().map(|t| t.id()));
    let text = Dumper::new(&g.data())
        .outputs(&outs)
        .only_live(true)
        .to_string();
    assert!(text.contains("\"gradients/dense_1/matmul_grad/matmul\""));
    insta::assert_snapshot!("mlp_gradient_graph", text);
}

#[test]
fn gradient_nodes_point_at_the_forward_line() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2]);
    let y = x.exp(); // the line gradient nodes must name
    let line = line!() - 1;
    let _ = grad(y.sum_all(), &[x]).unwrap();
    let d = g.data();
    let id = d
        .by_name("gradients/exp_grad/mul")
        .expect("named gradient node");
    assert_eq!(d.node(id).loc.as_ref().unwrap().line, line);
}
