//! Learning-rate schedules against Keras 3's formulas (computed here in f64), compiled once,
//! and a scheduled run against a hand-written loop feeding the same rates; and the `Send`
//! bounds that let a model move to another thread.

use kiln::nn::{Dense, Input, Loss, Metric, Model, Sequential};
use kiln::prelude::*;
use kiln::train::{CosineDecay, ExponentialDecay, LearningRate, PiecewiseConstant};
use std::f64::consts::PI;

const BACKENDS: [Backend; 2] = [Backend::Interpreter, Backend::Jit];

/// The rate an SGD step computes at steps `0..n` with `lr`, fetched beside the train op
/// (a run reads the step count from before its increment), and how many executables the
/// session compiled for it.
fn rates(backend: Backend, lr: impl Into<LearningRate>, n: usize) -> (Vec<f64>, usize) {
    let g = Graph::new();
    let w = g.variable("w", [2], init::ones());
    let mut opt = Sgd::new(lr);
    let train = opt.minimize(w.square().sum_all(), &[w]).unwrap();
    let rate = opt.learning_rate(&g).unwrap();
    assert_eq!(rate.dtype(), DType::F64);
    let mut s = Session::with_backend(&g, backend).unwrap();
    let got = (0..n)
        .map(|_| {
            s.run(&[rate, train], &[]).unwrap()[0]
                .scalar_value::<f64>()
                .unwrap()
        })
        .collect();
    (got, s.compile_count())
}

/// Asserts `got[t]` is `want(t)` within `tol` (relative to max(1, |want|)), and one compile.
fn check(name: &str, lr: impl Into<LearningRate> + Clone, want: impl Fn(f64) -> f64, tol: f64) {
    for b in BACKENDS {
        let (got, compiles) = rates(b, lr.clone(), 40);
        for (t, g) in got.iter().enumerate() {
            let w = want(t as f64);
            assert!(
                (g - w).abs() <= tol * w.abs().max(1.0),
                "{name} on {b:?} at step {t}: {g} vs {w}"
            );
        }
        if b == Backend::Jit {
            assert_eq!(compiles, 1, "{name}: the schedule recompiled");
        }
    }
}

#[test]
fn exponential_decay_is_keras_formula() {
    let want = |t: f64| 0.1 * 0.5f64.powf(t / 7.0);
    check("smooth", ExponentialDecay::new(0.1, 7, 0.5), want, 0.0);
    let stair = |t: f64| 0.1 * 0.5f64.powf((t / 7.0).floor());
    let sched = ExponentialDecay::new(0.1, 7, 0.5).staircase(true);
    check("staircase", sched, stair, 0.0);
    // The staircase really steps: constant inside a period, halved at its end.
    let (got, _) = rates(
        Backend::Jit,
        ExponentialDecay::new(0.1, 7, 0.5).staircase(true),
        15,
    );
    assert_eq!(got[6], 0.1);
    assert_eq!(got[7], 0.05);
    assert_eq!(got[14], 0.025);
}

/// Keras 3's `CosineDecay.__call__`, transcribed.
fn keras_cosine(t: f64, init: f64, d: f64, alpha: f64, warm: Option<(f64, f64)>) -> f64 {
    let decay = |s: f64, from: f64| {
        let c = 0.5 * (1.0 + (PI * s / d).cos());
        from * ((1.0 - alpha) * c + alpha)
    };
    match warm {
        None => decay(t.min(d), init),
        Some((target, w)) => {
            let t = t.min(d + w);
            if t < w {
                (target - init) * (t / w) + init
            } else {
                decay(t - w, target)
            }
        }
    }
}

#[test]
fn cosine_decay_is_keras_formula() {
    let plain = |t| keras_cosine(t, 0.1, 30.0, 0.0, None);
    check("cosine", CosineDecay::new(0.1, 30), plain, 1e-15);
    let floor = |t| keras_cosine(t, 0.1, 25.0, 0.1, None);
    check("alpha", CosineDecay::new(0.1, 25).alpha(0.1), floor, 1e-15);
    let warm = |t| keras_cosine(t, 0.0, 20.0, 0.05, Some((0.2, 10.0)));
    let sched = CosineDecay::new(0.0, 20).warmup(0.2, 10).alpha(0.05);
    check("warm-up", sched, warm, 1e-15);
    // The shape: 0 at step 0, the target at the end of the warm-up, the floor after.
    let (got, _) = rates(Backend::Jit, CosineDecay::new(0.0, 20).warmup(0.2, 10), 40);
    assert_eq!(got[0], 0.0);
    assert!((got[10] - 0.2).abs() < 1e-15, "{}", got[10]);
    assert!(got[30].abs() < 1e-15 && got[39].abs() < 1e-15, "{got:?}");
}

#[test]
fn piecewise_constant_is_keras_formula() {
    let want = |t: f64| match t {
        t if t <= 5.0 => 1.0,
        t if t <= 12.0 => 0.5,
        _ => 0.25,
    };
    check(
        "piecewise",
        PiecewiseConstant::new(&[5, 12], &[1.0, 0.5, 0.25]),
        want,
        0.0,
    );
}

#[test]
fn bad_schedule_arguments_name_the_line() {
    let g = Graph::new();
    let w = g.variable("w", [1], init::ones());
    let bad: Vec<(LearningRate, &str)> = vec![
        (
            ExponentialDecay::new(0.1, 0, 0.5).into(),
            "decay_steps must be at least 1, got 0",
        ),
        (
            CosineDecay::new(0.1, 10).alpha(1.5).into(),
            "alpha must be in [0, 1], got 1.5",
        ),
        (
            PiecewiseConstant::new(&[5, 3], &[1.0, 0.5, 0.1]).into(),
            "boundaries must be strictly increasing",
        ),
        (
            PiecewiseConstant::new(&[5], &[1.0]).into(),
            "values must be one more value",
        ),
    ];
    for (lr, msg) in bad {
        let e = Sgd::new(lr)
            .minimize(w.sum_all(), &[w])
            .unwrap_err()
            .to_string();
        assert!(e.contains(msg) && e.contains("tests/schedules.rs:"), "{e}");
    }
    let lr = g.placeholder("lr", DType::F32, Shape::scalar());
    let e = Sgd::new(CosineDecay::new(0.1, 10))
        .learning_rate_tensor(lr)
        .minimize(w.sum_all(), &[w])
        .unwrap_err()
        .to_string();
    assert!(e.contains("made with a schedule"), "{e}");
}

/// Adam on a small regression, its rate from `lr`; the weights after each of `n` steps.
/// `feed` gives a placeholder's value per step when the rate is a placeholder.
fn adam_run(backend: Backend, scheduled: bool, n: usize, rate: &dyn Fn(usize) -> f64) -> Vec<f32> {
    let g = Graph::new();
    let x =
        g.constant(Array::new([4, 2], vec![0.0f32, 1.0, 1.0, 0.5, 2.0, -1.0, 3.0, 0.0]).unwrap());
    let y = g.constant(Array::new([4, 1], vec![1.0f32, 2.0, -1.0, 0.5]).unwrap());
    let w = g.variable("w", [2, 1], init::glorot_uniform(3));
    let loss = (x.matmul(w) - y).square().mean_all();
    let lr = g.placeholder("lr", DType::F32, Shape::scalar());
    let opt = if scheduled {
        Adam::new(CosineDecay::new(0.0, 20).warmup(0.05, 5).alpha(0.1))
    } else {
        Adam::new(0.0).learning_rate_tensor(lr)
    };
    let train = { opt }.minimize(loss, &[w]).unwrap();
    let mut s = Session::with_backend(&g, backend).unwrap();
    let mut out = vec![];
    for t in 0..n {
        let feeds = if scheduled {
            vec![]
        } else {
            vec![(lr, Array::scalar(rate(t) as f32))]
        };
        s.run(&[train], &feeds).unwrap();
        out.extend(s.variable(w).unwrap().to_vec::<f32>().unwrap());
    }
    out
}

#[test]
fn scheduled_training_matches_a_loop_feeding_the_rates() {
    let rate = |t: usize| keras_cosine(t as f64, 0.0, 20.0, 0.1, Some((0.05, 5.0)));
    for b in BACKENDS {
        let a = adam_run(b, true, 30, &rate);
        let h = adam_run(b, false, 30, &rate);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&h), "{b:?}");
    }
}

#[test]
fn a_keras_model_trains_with_a_schedule() {
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(1).into()]);
    let sched = ExponentialDecay::new(0.05, 4, 0.5).staircase(true);
    m.compile(
        Adam::new(sched),
        Loss::MeanSquaredError,
        &[Metric::Accuracy],
    )
    .unwrap();
    let x = Array::new([8, 2], (0..16).map(|i| i as f32 / 16.0).collect()).unwrap();
    let y = Array::new([8, 1], (0..8).map(|i| i as f32 / 8.0).collect()).unwrap();
    let cfg = kiln::nn::FitConfig::new().epochs(3).batch_size(2);
    let cfg = cfg.verbosity(kiln::nn::Verbosity::Silent);
    m.fit(&x, &y, cfg).unwrap();
    // 12 steps: the step count went on, and the rate is 0.05 / 2^3 (step 12, staircase).
    let g = m.graph().clone();
    let rate = m.optimizer().unwrap().learning_rate(&g).unwrap();
    let v = m.session().unwrap().run(&[rate], &[]).unwrap()[0].clone();
    assert_eq!(v.scalar_value::<f64>().unwrap(), 0.05 / 8.0);
}

fn assert_send<T: Send>() {}

#[test]
fn models_and_optimizers_are_send() {
    assert_send::<Model>();
    assert_send::<Sgd>();
    assert_send::<Adam>();
    assert_send::<RmsProp>();
    assert_send::<Box<dyn Optimizer>>();
    assert_send::<LearningRate>();
    // And a model really trains on another thread.
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(1).into()]);
    m.compile(Sgd::new(0.1), Loss::MeanSquaredError, &[])
        .unwrap();
    let x = Array::new([4, 2], vec![0.0f32, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]).unwrap();
    let y = Array::new([4, 1], vec![1.0f32, 1.0, 2.0, 0.0]).unwrap();
    let h = std::thread::spawn(move || {
        let cfg = kiln::nn::FitConfig::new().epochs(50);
        let cfg = cfg.verbosity(kiln::nn::Verbosity::Silent);
        m.fit(&x, &y, cfg).map(|h| h.history["loss"].clone())
    });
    let loss = h.join().unwrap().unwrap();
    assert!(loss[49] < loss[0] * 0.1, "{loss:?}");
}
