//! Optimizers against hand-computed references, a worked regression, dropout statistics.

use kiln::prelude::*;
use kiln::train::clip_by_global_norm;

const BACKENDS: [Backend; 2] = [Backend::Interpreter, Backend::Jit];
const W0: [f64; 3] = [0.5, -1.0, 2.0];
const TARGET: [f64; 3] = [1.0, 2.0, -3.0];
const LR: f64 = 0.1;

/// Runs 4 steps of `opt` on `loss = ½‖w − target‖²` (so `g = w − target`) and returns `w`
/// after each step.
fn run_steps(
    backend: Backend,
    opt: &mut dyn FnMut(&Graph, Tensor<'_>, Tensor<'_>) -> kiln::NodeId,
) -> Vec<Vec<f64>> {
    let g = Graph::new();
    let w = g.variable("w", [3], init::zeros());
    let t = g.constant(Array::new([3], TARGET.iter().map(|&v| v as f32).collect()).unwrap());
    let loss = (w - t).square().sum_all() * 0.5f32;
    let train = g.tensor(opt(&g, loss, w));
    let mut s = Session::with_backend(&g, backend).unwrap();
    s.set_variable(
        w,
        Array::new([3], W0.iter().map(|&v| v as f32).collect()).unwrap(),
    )
    .unwrap();
    (0..4)
        .map(|_| {
            s.run(&[train], &[]).unwrap();
            s.variable(w).unwrap().to_f64_vec()
        })
        .collect()
}

/// The reference: `update(w, g, state, t)` per element, in f64.
fn reference(mut update: impl FnMut(usize, f64, f64, f64) -> f64) -> Vec<Vec<f64>> {
    let mut w = W0.to_vec();
    (1..=4)
        .map(|t| {
            for i in 0..3 {
                let g = w[i] - TARGET[i];
                w[i] = update(i, w[i], g, t as f64);
            }
            w.clone()
        })
        .collect()
}

fn check(
    name: &str,
    build: impl Fn() -> Box<dyn FnMut(&Graph, Tensor<'_>, Tensor<'_>) -> kiln::NodeId>,
    want: Vec<Vec<f64>>,
) {
    for b in BACKENDS {
        let got = run_steps(b, &mut *build());
        for (step, (gw, ww)) in got.iter().zip(&want).enumerate() {
            for (x, y) in gw.iter().zip(ww) {
                assert!(
                    (x - y).abs() <= 1e-6,
                    "{name} on {b:?}, step {}: {gw:?} vs {ww:?}",
                    step + 1
                );
            }
        }
    }
}

fn minimize<O: Optimizer>(mut o: O) -> impl FnMut(&Graph, Tensor<'_>, Tensor<'_>) -> kiln::NodeId {
    move |_, loss, w| o.minimize(loss, &[w]).unwrap().id()
}

#[test]
fn sgd_matches_the_reference() {
    check(
        "sgd",
        || Box::new(minimize(Sgd::new(LR))),
        reference(|_, w, g, _| w - LR * g),
    );
}

#[test]
fn momentum_and_nesterov_match_the_reference() {
    for nesterov in [false, true] {
        let mut m = [0.0f64; 3];
        let want = reference(|i, w, g, _| {
            m[i] = 0.9 * m[i] - LR * g;
            if nesterov {
                w + 0.9 * m[i] - LR * g
            } else {
                w + m[i]
            }
        });
        check(
            if nesterov { "nesterov" } else { "momentum" },
            || Box::new(minimize(Sgd::new(LR).momentum(0.9).nesterov(nesterov))),
            want,
        );
    }
}

fn adam_reference(wd: f64) -> Vec<Vec<f64>> {
    let (b1, b2, eps) = (0.9, 0.999, 1e-7);
    let (mut m, mut v) = ([0.0f64; 3], [0.0f64; 3]);
    reference(move |i, w, g, t| {
        m[i] += (g - m[i]) * (1.0 - b1);
        v[i] += (g * g - v[i]) * (1.0 - b2);
        let alpha = LR * (1.0 - b2.powf(t)).sqrt() / (1.0 - b1.powf(t));
        w - alpha * m[i] / (v[i].sqrt() + eps) - LR * wd * w
    })
}

#[test]
fn adam_matches_the_reference() {
    check(
        "adam",
        || Box::new(minimize(Adam::new(LR))),
        adam_reference(0.0),
    );
}

#[test]
fn adamw_matches_the_reference() {
    check(
        "adamw",
        || Box::new(minimize(AdamW::new(LR))),
        adam_reference(0.004),
    );
    check(
        "adamw wd=0.1",
        || Box::new(minimize(AdamW::new(LR).weight_decay(0.1))),
        adam_reference(0.1),
    );
}

#[test]
fn rmsprop_matches_the_reference() {
    for mu in [0.0, 0.5] {
        let (mut a, mut m) = ([0.0f64; 3], [0.0f64; 3]);
        let want = reference(|i, w, g, _| {
            a[i] = 0.9 * a[i] + 0.1 * g * g;
            let delta = LR * g / (a[i] + 1e-7).sqrt();
            m[i] = mu * m[i] + delta;
            w - m[i]
        });
        check(
            "rmsprop",
            || Box::new(minimize(RmsProp::new(LR).momentum(mu))),
            want,
        );
    }
}

#[test]
fn clipping_by_global_norm_scales_all_gradients_together() {
    // g = w - target = [-0.5, -3, 5]: norm √34.25 ≈ 5.85; clipped to norm 1.
    let mut w = W0.to_vec();
    let want: Vec<Vec<f64>> = (0..4)
        .map(|_| {
            let g: Vec<f64> = w.iter().zip(TARGET).map(|(w, t)| w - t).collect();
            let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
            for (w, g) in w.iter_mut().zip(&g) {
                *w -= LR * g / norm.max(1.0);
            }
            w.clone()
        })
        .collect();
    check(
        "clipped sgd",
        || Box::new(minimize(Sgd::new(LR).clip_global_norm(1.0))),
        want,
    );
    // Below the threshold, nothing changes.
    let g = Graph::new();
    let a = g.constant(Array::new([2], vec![0.3f32, 0.4]).unwrap());
    let c = clip_by_global_norm(vec![a], 1.0);
    let mut s = Session::new(&g).unwrap();
    assert_eq!(
        s.run(&c, &[]).unwrap()[0].to_vec::<f32>().unwrap(),
        vec![0.3, 0.4]
    );
}

#[test]
fn optimizer_state_is_variables_and_the_learning_rate_is_one() {
    let g = Graph::new();
    let w = g.variable("w", [2], init::ones());
    let loss = w.square().sum_all();
    let mut opt = Adam::new(0.01);
    let train = opt.minimize(loss, &[w]).unwrap();
    for name in [
        "adam/learning_rate",
        "adam/iterations",
        "adam/w/m",
        "adam/w/v",
    ] {
        assert!(g.by_name(name).is_some(), "{name} missing: {}", g.dump());
    }
    let lr = opt.learning_rate(&g).unwrap();
    let it = opt.iterations(&g).unwrap();
    let mut s = Session::new(&g).unwrap();
    s.run(&[train], &[]).unwrap();
    s.set_variable(lr, Array::scalar(0.5f32)).unwrap();
    s.run(&[train], &[]).unwrap();
    // A learning-rate change is a variable write: no recompile.
    assert_eq!(s.compile_count(), 1);
    assert_eq!(s.variable(it).unwrap().scalar_value::<i32>().unwrap(), 2);
    // A second optimizer on the same graph gets its own names.
    let _ = Adam::new(0.01).minimize(loss, &[w]).unwrap();
    assert!(g.by_name("adam_1/iterations").is_some());
}

#[test]
fn a_placeholder_learning_rate_follows_a_schedule() {
    let g = Graph::new();
    let lr = g.placeholder("lr", DType::F32, Shape::scalar());
    let w = g.variable("w", Shape::scalar(), init::constant(1.0));
    let train = Sgd::new(0.0)
        .learning_rate_tensor(lr)
        .minimize(w * 1.0f32, &[w])
        .unwrap();
    let mut s = Session::new(&g).unwrap();
    for r in [0.5f32, 0.25] {
        s.run(&[train], &[(lr, Array::scalar(r))]).unwrap();
    }
    assert_eq!(s.variable(w).unwrap().scalar_value::<f32>().unwrap(), 0.25);
    assert_eq!(s.compile_count(), 1);
}

#[test]
fn linear_regression_recovers_slope_and_intercept() {
    // y = 2x + 0.9 + noise, x in [-1, 1].
    let n = 200;
    let xs: Vec<f32> = (0..n)
        .map(|i| kiln::internals::uniform(1, 0, i, -1.0, 1.0))
        .collect();
    let ys: Vec<f32> = xs
        .iter()
        .enumerate()
        .map(|(i, &x)| 2.0 * x + 0.9 + 0.05 * kiln::internals::standard_normal(2, 0, i as u64))
        .collect();
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(1)]);
    let y = g.placeholder("y", DType::F32, [None, Some(1)]);
    let w = g.variable("w", [1, 1], init::zeros());
    let b = g.variable("b", [1], init::zeros());
    let loss = (x.matmul(w) + b - y).square().mean_all();
    let train = Sgd::new(0.1).minimize(loss, &[w, b]).unwrap();
    let mut s = Session::new(&g).unwrap();
    let xv = Array::new([n as usize, 1], xs).unwrap();
    let yv = Array::new([n as usize, 1], ys).unwrap();
    for _ in 0..300 {
        s.run(&[train], &[(x, xv.clone()), (y, yv.clone())])
            .unwrap();
    }
    let wv = s.variable(w).unwrap().to_vec::<f32>().unwrap()[0];
    let bv = s.variable(b).unwrap().to_vec::<f32>().unwrap()[0];
    assert!((wv - 2.0).abs() < 0.03, "w = {wv}");
    assert!((bv - 0.9).abs() < 0.03, "b = {bv}");
}

#[test]
fn dropout_keeps_one_minus_rate_and_preserves_the_mean() {
    let (rows, cols, rate) = (1000usize, 1000usize, 0.3);
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(cols)]);
    let training = g.placeholder("training", DType::Bool, Shape::scalar());
    let y = x.dropout(rate, training, 11);
    let ones = Array::new([rows, cols], vec![1.0f32; rows * cols]).unwrap();
    let mut outs = vec![];
    for b in BACKENDS {
        let mut s = Session::with_backend(&g, b).unwrap();
        let on = s
            .run(&[y], &[(x, ones.clone()), (training, Array::scalar(true))])
            .unwrap()
            .remove(0);
        let v = on.to_vec::<f32>().unwrap();
        let n = v.len() as f64;
        let kept = v.iter().filter(|&&e| e != 0.0).count() as f64 / n;
        let sigma = (rate * (1.0 - rate) / n).sqrt();
        assert!(
            (kept - (1.0 - rate)).abs() < 3.0 * sigma,
            "{b:?}: kept {kept}"
        );
        let scale = 1.0 / (1.0 - rate);
        assert!(v
            .iter()
            .all(|&e| e == 0.0 || (e as f64 - scale).abs() < 1e-6));
        let mean = v.iter().map(|&e| e as f64).sum::<f64>() / n;
        assert!(
            (mean - 1.0).abs() < 3.0 * sigma * scale,
            "{b:?}: mean {mean}"
        );
        // Inference is the identity, bitwise.
        let off = s
            .run(&[y], &[(x, ones.clone()), (training, Array::scalar(false))])
            .unwrap();
        assert!(off[0].bits_eq(&ones));
        // The next training run draws a fresh mask.
        let again = s
            .run(&[y], &[(x, ones.clone()), (training, Array::scalar(true))])
            .unwrap();
        assert!(!again[0].bits_eq(&on));
        outs.push(on);
    }
    // The same mask on both backends.
    assert!(outs[0].bits_eq(&outs[1]));
}

#[test]
fn dropout_rejects_a_bad_rate_or_flag() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [Some(4)]);
    let t = g.placeholder("training", DType::Bool, Shape::scalar());
    let _ = x.dropout(1.0, t, 0);
    let e = g.check().unwrap_err().to_string();
    assert!(e.starts_with("dropout at tests/train.rs:"), "{e}");
    assert!(e.contains("rate must be in [0, 1), got 1"), "{e}");
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [Some(4)]);
    let _ = x.dropout(0.5, x, 0);
    assert!(g
        .check()
        .unwrap_err()
        .to_string()
        .contains("training must be a bool scalar"));
}
