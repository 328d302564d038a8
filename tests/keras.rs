//! Keras parity of the high-level pieces: `ReduceLROnPlateau` against Keras 3's rule,
//! batch-level hooks, the learning rate in the history.

use kiln::nn::*;
use kiln::prelude::*;
use kiln::train::ExponentialDecay;
use std::sync::{Arc, Mutex};

fn small_model(lr: f64) -> Model {
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(1).into()]);
    m.compile(Sgd::new(lr), Loss::MeanSquaredError, &[])
        .unwrap();
    m
}

fn data(n: usize) -> (Array, Array) {
    let x = Array::new([n, 2], (0..2 * n).map(|i| (i % 7) as f32 / 7.0).collect()).unwrap();
    let y = Array::new([n, 1], (0..n).map(|i| (i % 3) as f32 / 3.0).collect()).unwrap();
    (x, y)
}

fn rate(m: &mut Model) -> f32 {
    let g = m.graph().clone();
    let lr = m.optimizer().unwrap().learning_rate(&g).unwrap();
    m.session()
        .unwrap()
        .variable(lr)
        .unwrap()
        .to_vec::<f32>()
        .unwrap()[0]
}

/// The rate after each epoch for a scripted monitored series, traced by hand through Keras
/// 3's `ReduceLROnPlateau.on_epoch_end` (factor 0.5, patience 2, cooldown 1, min_delta 0.1,
/// min_lr 0.02): a reduction at the 2nd epoch without improvement, the cooldown epoch
/// resets the count, the floor clamps 0.025·0.5 to 0.02, and at the floor nothing changes.
#[test]
fn reduce_lr_on_plateau_follows_keras() {
    let mut m = small_model(0.1);
    let mut cb = ReduceLROnPlateau::on("val_loss")
        .factor(0.5)
        .patience(2)
        .cooldown(1)
        .min_delta(0.1)
        .min_lr(0.02);
    cb.on_train_begin(&mut m).unwrap();
    let series = [1.0, 0.95, 0.92, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5];
    let want = [0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.02, 0.02, 0.02];
    for (e, (&v, &w)) in series.iter().zip(&want).enumerate() {
        let logs: Logs = [("val_loss".to_string(), v)].into_iter().collect();
        assert_eq!(
            cb.on_epoch_end(e, &logs, &mut m).unwrap(),
            Control::Continue
        );
        assert_eq!(rate(&mut m), w as f32, "epoch {e}");
    }
    // Mode max: an accuracy that stops rising lowers the rate too.
    let mut m = small_model(0.1);
    let mut cb = ReduceLROnPlateau::on("val_accuracy").patience(1);
    cb.on_train_begin(&mut m).unwrap();
    for (e, v) in [0.5, 0.6, 0.6].into_iter().enumerate() {
        let logs: Logs = [("val_accuracy".to_string(), v)].into_iter().collect();
        cb.on_epoch_end(e, &logs, &mut m).unwrap();
    }
    // Keras multiplies the float32 rate as a Python float (f64), then stores float32.
    assert_eq!(rate(&mut m), (0.1f32 as f64 * 0.1) as f32);
}

/// Records the compile count at every epoch end.
struct Compiles(Arc<Mutex<Vec<usize>>>);
impl Callback for Compiles {
    fn on_epoch_end(&mut self, _e: usize, _l: &Logs, m: &mut Model) -> kiln::Result<Control> {
        let n = m.session()?.compile_count();
        self.0.lock().unwrap().push(n);
        Ok(Control::Continue)
    }
}

#[test]
fn reduce_lr_on_plateau_in_fit_logs_the_rate_and_never_recompiles() {
    let mut m = small_model(0.5);
    let (x, y) = data(16);
    let seen = Arc::new(Mutex::new(vec![]));
    // min_delta 10: nothing counts as an improvement, so the rate halves every 2 epochs.
    let cb = ReduceLROnPlateau::on("loss")
        .factor(0.5)
        .patience(2)
        .min_delta(10.0);
    let cfg = FitConfig::new()
        .epochs(6)
        .batch_size(8)
        .verbosity(Verbosity::Silent);
    let h = m
        .fit(&x, &y, cfg.callback(cb).callback(Compiles(seen.clone())))
        .unwrap();
    let lrs: Vec<f32> = h
        .get("learning_rate")
        .unwrap()
        .iter()
        .map(|&v| v as f32)
        .collect();
    assert_eq!(lrs, [0.5, 0.5, 0.5, 0.25, 0.25, 0.125]);
    assert_eq!(rate(&mut m), 0.125);
    let seen = seen.lock().unwrap();
    assert!(seen.iter().all(|&n| n == seen[0]), "recompiled: {seen:?}");
}

#[test]
fn reduce_lr_on_plateau_refuses_what_it_cannot_do() {
    let (x, y) = data(8);
    let cfg = || FitConfig::new().verbosity(Verbosity::Silent);
    let mut m = small_model(0.1);
    let e = m
        .fit(
            &x,
            &y,
            cfg().callback(ReduceLROnPlateau::on("loss").factor(1.5)),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("factor must be in (0, 1), got 1.5") && e.contains("tests/keras.rs"),
        "{e}"
    );
    let e = m
        .fit(&x, &y, cfg().callback(ReduceLROnPlateau::on("val_loss")))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("val_ entries exist only when fit validates"),
        "{e}"
    );
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(1).into()]);
    let sched = ExponentialDecay::new(0.1, 10, 0.9);
    m.compile(Sgd::new(sched), Loss::MeanSquaredError, &[])
        .unwrap();
    let e = m
        .fit(&x, &y, cfg().callback(ReduceLROnPlateau::on("loss")))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not a variable") && e.contains("schedule"),
        "{e}"
    );
}

/// Records every hook call in order.
struct Trace(Arc<Mutex<Vec<String>>>);
impl Callback for Trace {
    fn on_epoch_begin(&mut self, e: usize, _m: &mut Model) -> kiln::Result<()> {
        self.0.lock().unwrap().push(format!("E{e}"));
        Ok(())
    }
    fn on_train_batch_begin(&mut self, e: usize, s: usize, _m: &mut Model) -> kiln::Result<()> {
        self.0.lock().unwrap().push(format!("b{e}.{s}"));
        Ok(())
    }
    fn on_batch_end(
        &mut self,
        e: usize,
        s: usize,
        l: &Logs,
        _m: &mut Model,
    ) -> kiln::Result<Control> {
        assert!(l["loss"].is_finite());
        self.0.lock().unwrap().push(format!("e{e}.{s}"));
        Ok(Control::Continue)
    }
}

#[test]
fn batch_hooks_run_around_every_training_batch_only() {
    let mut m = small_model(0.1);
    let (x, y) = data(10);
    let seen = Arc::new(Mutex::new(vec![]));
    let cfg = FitConfig::new()
        .epochs(2)
        .batch_size(4)
        .validation_split(0.2)
        .verbosity(Verbosity::Silent)
        .callback(Trace(seen.clone()));
    m.fit(&x, &y, cfg).unwrap();
    // 8 training rows in batches of 4: two steps per epoch; validation runs no hooks.
    let want = "E0 b0.0 e0.0 b0.1 e0.1 E1 b1.0 e1.0 b1.1 e1.1";
    assert_eq!(seen.lock().unwrap().join(" "), want);
}

/// What a scalar is built from: a loss, or a metric under a loss.
#[derive(Clone, Copy)]
enum Of {
    L(Loss),
    M(Metric, Loss),
}

/// The scalar the loss or metric computes for constant predictions and targets, on both
/// backends (they must agree bitwise).
fn value(p: Array, y: Array, f: Of) -> f64 {
    let mut out = vec![];
    for b in [Backend::Interpreter, Backend::Jit] {
        let g = Graph::new();
        let (pt, yt) = (g.constant(p.clone()), g.constant(y.clone()));
        let v = match f {
            Of::L(l) => l.build(pt, yt),
            Of::M(m, l) => m.build(&l, pt, yt),
        };
        let mut s = Session::with_backend(&g, b).unwrap();
        out.push(s.run(&[v], &[]).unwrap()[0].scalar_value::<f32>().unwrap());
    }
    assert_eq!(out[0].to_bits(), out[1].to_bits(), "{out:?}");
    out[0] as f64
}

fn col(v: &[f32]) -> Array {
    Array::new([v.len(), 1], v.to_vec()).unwrap()
}

/// Values computed by hand from Keras' definitions.
#[test]
fn new_losses_match_hand_values() {
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    // Huber, delta 1: ½·0.25, 3 − ½, ½·1 → mean 3.125 / 3.
    let (p, y) = (col(&[0.5, 3.0, -1.0]), col(&[0.0, 0.0, 0.0]));
    let huber = |d: f64| Of::L(Loss::Huber { delta: d });
    close(value(p.clone(), y.clone(), huber(1.0)), 3.125 / 3.0);
    // delta 2: ½·0.25, 2·3 − 2, ½·1 → 4.625 / 3.
    close(value(p.clone(), y.clone(), huber(2.0)), 4.625 / 3.0);
    close(
        value(p.clone(), y.clone(), Of::L(Loss::MeanAbsoluteError)),
        1.5,
    );
    // Hinge: {0, 1} targets become {−1, 1}: max(0.7, 0), max(−1, 0), max(0.2, 0).
    let hinge = Of::L(Loss::Hinge);
    let p = col(&[0.3, -2.0, 0.8]);
    close(value(p.clone(), col(&[1.0, 0.0, 1.0]), hinge), 0.3);
    close(value(p.clone(), col(&[1.0, -1.0, 1.0]), hinge), 0.3);
    // Not all binary: taken as they are: max(1 − 0.15, 0), max(1 − 0, 0), max(1 − 0.8, 0).
    close(
        value(p, col(&[0.5, 0.0, 1.0]), hinge),
        (0.85 + 1.0 + 0.2) / 3.0,
    );
    // A bad delta is an error at build time, naming it.
    let g = Graph::new();
    let _ = Loss::Huber { delta: -1.0 }.build(g.scalar(1.0), g.scalar(0.0));
    let e = g.check().unwrap_err().to_string();
    assert!(e.contains("delta must be finite and > 0, got -1.0"), "{e}");
}

#[test]
fn top_k_and_error_metrics_match_hand_values() {
    let p = Array::new(
        [5, 3],
        vec![
            0.1f32, 0.5, 0.4, // class 2: one above → in top 2
            0.3, 0.3, 0.4, // class 0: one above → in top 2 (the tie with class 1 is in)
            0.6, 0.2, 0.2, // class 1: one above → in top 2
            0.1, 0.8, 0.1, // class 1: the top → in top 1
            0.5, 0.3, 0.2, // class 2: two above → out of top 2
        ],
    )
    .unwrap();
    let sparse = Array::new([5], vec![2i32, 0, 1, 1, 2]).unwrap();
    let onehot = Array::new(
        [5, 3],
        [2, 0, 1, 1, 2]
            .iter()
            .flat_map(|&c| (0..3).map(move |i| if i == c { 1.0f32 } else { 0.0 }))
            .collect(),
    )
    .unwrap();
    let loss = Loss::SparseCategoricalCrossentropy { from_logits: false };
    for (k, want) in [(1, 0.2), (2, 0.8), (3, 1.0)] {
        let m = Metric::SparseTopKCategoricalAccuracy { k };
        let got = value(p.clone(), sparse.clone(), Of::M(m, loss));
        assert!((got - want).abs() < 1e-6, "sparse k={k}: {got}");
        let m = Metric::TopKCategoricalAccuracy { k };
        let cat = Loss::CategoricalCrossentropy { from_logits: false };
        let got = value(p.clone(), onehot.clone(), Of::M(m, cat));
        assert!((got - want).abs() < 1e-6, "categorical k={k}: {got}");
    }
    assert_eq!(
        Metric::SparseTopKCategoricalAccuracy { k: 5 }.name(),
        "sparse_top_k_categorical_accuracy"
    );
    let (p, y) = (col(&[1.0, -2.0, 0.5, 4.0]), col(&[0.0, 0.0, 1.0, 2.0]));
    let mse = Loss::MeanSquaredError;
    let mae = value(p.clone(), y.clone(), Of::M(Metric::MeanAbsoluteError, mse));
    let mse_v = value(p, y, Of::M(Metric::MeanSquaredError, mse));
    assert!((mae - (1.0 + 2.0 + 0.5 + 2.0) / 4.0).abs() < 1e-6, "{mae}");
    assert!(
        (mse_v - (1.0 + 4.0 + 0.25 + 4.0) / 4.0).abs() < 1e-6,
        "{mse_v}"
    );
}

#[test]
fn custom_losses_and_metrics_train_and_log() {
    let loss = Loss::custom("quartic", |p, y| (p - y).square().square().mean_all());
    let metric = Metric::custom("max_error", |p, y| (p - y).abs().max(&[0, 1], false));
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(1).into()]);
    m.compile(Sgd::new(0.05), loss, &[metric, Metric::MeanAbsoluteError])
        .unwrap();
    let (x, y) = data(12);
    let cfg = FitConfig::new()
        .epochs(20)
        .batch_size(12)
        .verbosity(Verbosity::Silent);
    let h = m.fit(&x, &y, cfg).unwrap();
    let l = h.get("loss").unwrap();
    assert!(l[19] < l[0], "{l:?}");
    let (mx, mae) = (
        h.get("max_error").unwrap(),
        h.get("mean_absolute_error").unwrap(),
    );
    assert!(mx.iter().zip(mae).all(|(a, b)| a >= b), "{mx:?} {mae:?}");
    // A custom function that does not reduce to a scalar is refused at compile.
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(1).into()]);
    let bad = Loss::custom("elementwise", |p, y| p - y);
    let e = m.compile(Sgd::new(0.1), bad, &[]).unwrap_err().to_string();
    assert!(e.contains("must return a scalar"), "{e}");
}

/// The penalty by hand: kernel of ones `[2, 1]`, inputs 0, target 1: the loss is
/// `1 + 0.01·Σ|w| + 0.1·Σw² = 1.22`, and one SGD step (rate 0.5) moves each weight by
/// `0.5·(0.01 + 0.2·w)` only (the data's gradient is 0).
#[test]
fn kernel_regularizers_join_the_loss() {
    let r = Regularizer::l1_l2(0.01, 0.1);
    let dense = Dense::new(1)
        .use_bias(false)
        .kernel_initializer(init::ones());
    let mut m = Sequential::new([Input::new([2]).into(), dense.kernel_regularizer(r).into()]);
    m.compile(Sgd::new(0.5), Loss::MeanSquaredError, &[])
        .unwrap();
    let x = Array::zeros(DType::F32, [4, 2]);
    let y = Array::new([4, 1], vec![1.0f32; 4]).unwrap();
    let loss = m.evaluate(&x, &y, 4).unwrap()["loss"];
    assert!((loss - 1.22).abs() < 1e-6, "{loss}");
    let cfg = FitConfig::new().batch_size(4).verbosity(Verbosity::Silent);
    m.fit(&x, &y, cfg).unwrap();
    let w = m.get_weights().unwrap()[0].1.to_vec::<f32>().unwrap();
    assert!(w.iter().all(|&v| (v - 0.895).abs() < 1e-6), "{w:?}");
    // Conv2D takes one too, and a bad factor names the line.
    let conv = Conv2D::new(2, [2, 2]).kernel_regularizer(Regularizer::l2(-1.0));
    let mut m = Sequential::new([Input::new([3, 3, 1]).into(), conv.into()]);
    let e = m
        .compile(Sgd::new(0.1), Loss::MeanSquaredError, &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Regularizer::l2 at tests/keras.rs") && e.contains("l2 must be finite and >= 0"),
        "{e}"
    );
}

/// Precision, recall, F1 and AUC over 8 scores, by hand (and as scikit-learn's
/// `precision_score`, `recall_score`, `f1_score`, `roc_auc_score` give them): predicted
/// positive above 0.5 are 0.8, 0.7, 0.9, 0.6, 0.55, of which 0.8, 0.9, 0.6 are positives, so
/// precision 3/5 and recall 3/4; AUC is the share of (positive, negative) pairs ranked right,
/// 12/16, which Keras' 200 thresholds reproduce since no two scores share a bucket. The epoch
/// value sums counts over batches, so batches of 3 give the same values as one batch of 8.
#[test]
fn counted_metrics_match_hand_values_over_batches() {
    let p = col(&[0.1, 0.4, 0.35, 0.8, 0.7, 0.55, 0.9, 0.6]);
    let y = col(&[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
    let identity = Dense::new(1)
        .use_bias(false)
        .kernel_initializer(init::ones());
    let mut m = Sequential::new([Input::new([1]).into(), identity.into()]);
    let ms = [
        Metric::Precision,
        Metric::Recall,
        Metric::F1Score,
        Metric::Auc,
    ];
    m.compile(
        Sgd::new(0.0),
        Loss::BinaryCrossentropy { from_logits: false },
        &ms,
    )
    .unwrap();
    let want = [
        ("precision", 0.6),
        ("recall", 0.75),
        ("f1_score", 2.0 * 0.6 * 0.75 / 1.35),
        ("auc", 0.75),
    ];
    for bs in [8, 3] {
        let logs = m.evaluate(&p, &y, bs).unwrap();
        for (name, w) in want {
            assert!(
                (logs[name] - w).abs() < 1e-6,
                "batch {bs}: {name} {} vs {w}",
                logs[name]
            );
        }
    }
    // A mean of per-batch precisions would differ: batches of 3 give 0 (no positive
    // predicted), 1/3 and 2/2, a weighted mean of 0.375.
    let h = m
        .fit(
            &p,
            &y,
            FitConfig::new()
                .batch_size(3)
                .shuffle(false)
                .verbosity(Verbosity::Silent),
        )
        .unwrap();
    assert!((h.get("precision").unwrap()[0] - 0.6).abs() < 1e-6);
    // On logits the threshold is a logit of 0, as a probability of 0.5.
    let logits = col(&[-2.2, -0.4, -0.6, 1.4, 0.85, 0.2, 2.2, 0.4]);
    let g = Graph::new();
    let counts = Metric::Precision.build(
        &Loss::BinaryCrossentropy { from_logits: true },
        g.constant(logits),
        g.constant(y.clone()),
    );
    let c = Session::new(&g).unwrap().run(&[counts], &[]).unwrap()[0].to_f64_vec();
    assert_eq!(c, [3.0, 2.0, 4.0, 4.0]);
    assert_eq!(Metric::Precision.result(&c), 0.6);
}
