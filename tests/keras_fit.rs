//! Issue 20's last Keras pieces: `initial_epoch` (resume), `steps_per_epoch` (endless and
//! partly read datasets), `weighted_metrics` against hand-computed values, and MNIST from a
//! generator trained to the same bits as from arrays with the same seed.

#[path = "../examples/lab/mod.rs"]
mod lab;

use kiln::data::{permutation, take_rows, Dataset};
use kiln::nn::*;
use kiln::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn quiet() -> FitConfig {
    FitConfig::new().verbosity(Verbosity::Silent)
}

fn same_weights(a: &Model, b: &Model) {
    for ((na, wa), (nb, wb)) in a
        .get_weights()
        .unwrap()
        .iter()
        .zip(b.get_weights().unwrap())
    {
        assert_eq!(na, &nb);
        assert!(wa.bits_eq(&wb), "{na} differs");
    }
}

/// `n` rows of 3 features and a class in 0..3.
fn rows(n: usize) -> (Array, Array) {
    let x: Vec<f32> = (0..n * 3)
        .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
        .collect();
    let y: Vec<i32> = (0..n).map(|i| (i * 7 % 3) as i32).collect();
    (Array::new([n, 3], x).unwrap(), Array::new([n], y).unwrap())
}

fn classifier(seed: u64) -> Model {
    let mut m = Sequential::new([
        Input::new([3]).into(),
        Dense::new(8).relu().into(),
        Dropout::new(0.25).into(),
        Dense::new(3).into(),
    ])
    .seed(seed);
    m.compile(
        Adam::new(0.01),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

/// Shuffled, with dropout and validation: epochs 0..2 then `initial_epoch(2)` up to 5 give
/// the bits of one run of 5, and the resumed history is the tail of the whole one.
#[test]
fn initial_epoch_resumes_to_the_bits_of_an_uninterrupted_run() {
    let (x, y) = rows(40);
    let cfg = || quiet().batch_size(8).seed(3).validation_split(0.2);
    let mut whole = classifier(1);
    let hw = whole.fit(&x, &y, cfg().epochs(5)).unwrap();
    let mut parts = classifier(1);
    let h1 = parts.fit(&x, &y, cfg().epochs(2)).unwrap();
    let h2 = parts.fit(&x, &y, cfg().initial_epoch(2).epochs(5)).unwrap();
    same_weights(&whole, &parts);
    for (k, v) in &hw.history {
        let mut joined = h1.history[k].clone();
        joined.extend(&h2.history[k]);
        assert_eq!(&joined, v, "{k}");
    }
    assert_eq!(h2.epochs(), 3);
    // Keras' meaning of `epochs` (the epoch to stop at), said when it is misread.
    let err = parts
        .fit(&x, &y, cfg().initial_epoch(5).epochs(3))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("initial_epoch(5) is not before epochs(3)"),
        "{err}"
    );
    assert!(err.contains("give epochs(8)"), "{err}");
}

/// A generator of numbered batches of 2 rows; counts the batches pulled.
fn numbered(batches: Option<usize>, pulled: Arc<AtomicUsize>) -> Dataset {
    let (x, y) = rows(64);
    Dataset::from_generator(move || {
        let (x, y, pulled) = (x.clone(), y.clone(), pulled.clone());
        (0..batches.unwrap_or(usize::MAX)).map(move |b| {
            pulled.fetch_add(1, Ordering::SeqCst);
            let idx = [2 * b % 64, (2 * b + 1) % 64];
            Ok((take_rows(&x, &idx)?, take_rows(&y, &idx)?))
        })
    })
}

#[test]
fn steps_per_epoch_trains_an_endless_dataset_in_epochs_and_goes_on_across_epochs() {
    // Endless: 4 epochs of 5 batches, and no more batches than that are made.
    let pulled = Arc::new(AtomicUsize::new(0));
    let mut m = classifier(2);
    let h = m
        .fit_dataset(
            &numbered(None, pulled.clone()),
            quiet().epochs(4).steps_per_epoch(5),
        )
        .unwrap();
    assert_eq!(h.epochs(), 4);
    assert_eq!(h.stopped_epoch, None);
    assert_eq!(pulled.load(Ordering::SeqCst), 20);
    // The epochs read on through the iterator: the same batches as one epoch of 20.
    let mut one = classifier(2);
    let pulled1 = Arc::new(AtomicUsize::new(0));
    one.fit_dataset(&numbered(Some(20), pulled1), quiet().epochs(1))
        .unwrap();
    same_weights(&m, &one);
    // A finite dataset that runs out mid-epoch: that epoch closes with what it ran and
    // training stops there, as Keras 3 does.
    let pulled = Arc::new(AtomicUsize::new(0));
    let mut m = classifier(2);
    let h = m
        .fit_dataset(
            &numbered(Some(7), pulled.clone()),
            quiet().epochs(4).steps_per_epoch(3),
        )
        .unwrap();
    assert_eq!(h.epochs(), 3);
    assert_eq!(h.stopped_epoch, Some(2));
    // Running out exactly at an epoch's end: the empty epoch is not recorded.
    let mut m = classifier(2);
    let h = m
        .fit_dataset(
            &numbered(Some(6), Arc::default()),
            quiet().epochs(4).steps_per_epoch(3),
        )
        .unwrap();
    assert_eq!(h.epochs(), 2);
    assert_eq!(h.stopped_epoch, Some(1));
    // Arrays have a length: refused, with what to do.
    let (x, y) = rows(8);
    let err = m
        .fit(&x, &y, quiet().steps_per_epoch(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("steps_per_epoch(2) is for a dataset"), "{err}");
    let err = m
        .fit_dataset(
            &numbered(Some(2), Arc::default()),
            quiet().steps_per_epoch(0),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("steps_per_epoch"), "{err}");
}

/// A 1-output model whose prediction is its input (kernel 1, bias 0), so metrics see the
/// predictions the test chooses.
fn identity(loss: Loss, metrics: &[Metric], weighted: &[Metric]) -> Model {
    let mut m = Sequential::new([Input::new([1]).into(), Dense::new(1).into()]);
    m.compile(Sgd::new(0.1), loss, metrics).unwrap();
    m.weighted_metrics(weighted).unwrap();
    m.set_weights(&[
        (
            "dense/kernel".into(),
            Array::new([1, 1], vec![1f32]).unwrap(),
        ),
        ("dense/bias".into(), Array::new([1], vec![0f32]).unwrap()),
    ])
    .unwrap();
    m
}

/// Every weighted metric against values worked out by hand from Keras 3's definitions:
/// a mean metric is `sum(w·m)/sum(w)`, counts are counted `w` times; batches add up.
#[test]
fn weighted_metrics_follow_keras_by_hand() {
    let p = [0.9f32, 0.8, 0.3, 0.6, 0.1];
    let t = [1f32, 0., 1., 1., 0.];
    let w = [2f32, 1., 3., 0.5, 1.];
    let x = Array::new([5, 1], p.to_vec()).unwrap();
    let y = Array::new([5, 1], t.to_vec()).unwrap();
    let wa = Array::new([5], w.to_vec()).unwrap();
    let bce = Loss::BinaryCrossentropy { from_logits: false };
    let all = [
        Metric::Accuracy,
        Metric::MeanAbsoluteError,
        Metric::Precision,
        Metric::Recall,
        Metric::F1Score,
    ];
    let mut m = identity(bce, &[Metric::Accuracy], &all);
    // Hits: 0.9→1 yes, 0.8→0 no, 0.3→1 no, 0.6→1 yes, 0.1→0 yes.
    let acc = (2.0 + 0.5 + 1.0) / (2.0 + 1.0 + 3.0 + 0.5 + 1.0);
    let abs_err: f64 = p
        .iter()
        .zip(&t)
        .zip(&w)
        .map(|((p, t), w)| (p - t).abs() as f64 * *w as f64)
        .sum();
    let mae = abs_err / 7.5;
    // Positives predicted: 0.9 (w 2, true), 0.8 (w 1, false), 0.6 (w 0.5, true).
    let (tp, fp, fneg) = (2.5, 1.0, 3.0); // the missed positive 0.3 weighs 3
    let precision = tp / (tp + fp);
    let recall = tp / (tp + fneg);
    let f1 = 2.0 * tp / (2.0 * tp + fp + fneg);
    for bs in [5, 2] {
        let logs = m.evaluate_weighted(&x, &y, &wa, bs).unwrap();
        let close = |k: &str, v: f64| {
            assert!(
                (logs[k] - v).abs() < 1e-6,
                "batch {bs}: {k} {} vs {v}",
                logs[k]
            )
        };
        close("weighted_accuracy", acc);
        close("accuracy", 3.0 / 5.0); // the compiled one ignores the weights
        close("mean_absolute_error", mae);
        close("precision", precision);
        close("recall", recall);
        close("f1_score", f1);
        // Without weights every example weighs 1: the unweighted values.
        let logs = m.evaluate(&x, &y, bs).unwrap();
        assert!((logs["weighted_accuracy"] - 0.6).abs() < 1e-9);
        assert!((logs["precision"] - 2.0 / 3.0).abs() < 1e-9);
    }
    // Sparse top-k with weights, and all-zero weights give 0 (divide_no_nan).
    let mut m = Sequential::new([Input::new([3]).into(), Dense::new(3).into()]);
    m.compile(
        Sgd::new(0.1),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[],
    )
    .unwrap();
    m.weighted_metrics(&[Metric::SparseTopKCategoricalAccuracy { k: 2 }])
        .unwrap();
    let eye = Array::new([3, 3], vec![1f32, 0., 0., 0., 1., 0., 0., 0., 1.]).unwrap();
    m.set_weights(&[
        ("dense/kernel".into(), eye),
        ("dense/bias".into(), Array::new([3], vec![0f32; 3]).unwrap()),
    ])
    .unwrap();
    let x = Array::new([2, 3], vec![3f32, 2., 1., 3., 2., 1.]).unwrap();
    let y = Array::new([2], vec![1i32, 2]).unwrap(); // in the top 2, not in the top 2
    let w = Array::new([2], vec![1f32, 3.]).unwrap();
    let logs = m.evaluate_weighted(&x, &y, &w, 2).unwrap();
    assert_eq!(logs["sparse_top_k_categorical_accuracy"], 0.25);
    let zero = Array::new([2], vec![0f32, 0.]).unwrap();
    let logs = m.evaluate_weighted(&x, &y, &zero, 2).unwrap();
    assert_eq!(logs["sparse_top_k_categorical_accuracy"], 0.0);
    // A custom metric cannot be weighted, and a name twice is refused.
    let custom = Metric::custom("c", |p, y| (p - y).abs().mean_all());
    let err = m.weighted_metrics(&[custom]).unwrap_err().to_string();
    assert!(err.contains("custom metric \"c\""), "{err}");
    let twice = [Metric::Accuracy, Metric::Accuracy];
    let err = m.weighted_metrics(&twice).unwrap_err().to_string();
    assert!(err.contains("given twice"), "{err}");
}

/// In `fit`, weighted metrics appear in the history (and for validation), and callbacks can
/// monitor them.
#[test]
fn weighted_metrics_are_logged_by_fit_and_monitored_by_callbacks() {
    let (x, y) = rows(30);
    let w = Array::new([30], (0..30).map(|i| (i % 4) as f32).collect::<Vec<_>>()).unwrap();
    let mut m = classifier(4);
    m.weighted_metrics(&[Metric::Accuracy]).unwrap();
    let h = m
        .fit(
            &x,
            &y,
            quiet()
                .epochs(2)
                .sample_weight(&w)
                .validation_split(0.2)
                .callback(EarlyStopping::on("val_weighted_accuracy").patience(5)),
        )
        .unwrap();
    for k in ["weighted_accuracy", "val_weighted_accuracy", "accuracy"] {
        assert_eq!(h.get(k).map(|v| v.len()), Some(2), "{k}");
    }
}

/// Issue 20's "a generator-backed dataset trains MNIST to the same accuracy as arrays, with
/// the same seed", on 3,000 shipped MNIST images (the full set is the `mnist_stream`
/// example's): a generator that shuffles by `permutation(n, seed + epoch)` yields the
/// batches `fit` cuts, so history, weights and test accuracy are bitwise the same.
#[test]
fn mnist_from_a_generator_trains_to_the_bits_of_arrays_with_the_same_seed() {
    let mnist = lab::mnist(None).unwrap();
    let (x, y) = lab::head(&mnist.train_x, &mnist.train_y, 3000).unwrap();
    let (tx, ty) = lab::head(&mnist.test_x, &mnist.test_y, 1000).unwrap();
    let (seed, bs, epochs) = (11u64, 64usize, 2usize);
    let mut a = lab::mlp(784, &[64], 10, 0.2, 1e-3).unwrap();
    let ha = a
        .fit(&x, &y, quiet().epochs(epochs).batch_size(bs).seed(seed))
        .unwrap();
    let (xs, ys) = (Arc::new(x.clone()), Arc::new(y.clone()));
    let gen = Dataset::from_epoch_generator(move |epoch| {
        let (xs, ys) = (xs.clone(), ys.clone());
        let order = permutation(xs.shape()[0], seed.wrapping_add(epoch));
        let chunks: Vec<Vec<usize>> = order.chunks(bs).map(<[usize]>::to_vec).collect();
        chunks
            .into_iter()
            .map(move |idx| Ok((take_rows(&xs, &idx)?, take_rows(&ys, &idx)?)))
    })
    .prefetch(2);
    let mut b = lab::mlp(784, &[64], 10, 0.2, 1e-3).unwrap();
    let hb = b.fit_dataset(&gen, quiet().epochs(epochs)).unwrap();
    assert_eq!(ha, hb);
    same_weights(&a, &b);
    let (ea, eb) = (
        a.evaluate(&tx, &ty, 500).unwrap(),
        b.evaluate(&tx, &ty, 500).unwrap(),
    );
    assert_eq!(ea, eb);
    assert!(ea["accuracy"] > 0.8, "{}", ea["accuracy"]);
}
