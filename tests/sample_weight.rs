//! `sample_weight` and `class_weight` (Keras 3 semantics: the loss is `sum(w · loss) / N`,
//! "sum_over_batch_size"; metrics unweighted): values against hand computations, a training
//! step against a hand-written graph loop, class weights against the sample weights they
//! stand for, datasets carrying weights, and the errors.

use kiln::data::Dataset;
use kiln::nn::*;
use kiln::prelude::*;

fn quiet() -> FitConfig {
    FitConfig::new().verbosity(Verbosity::Silent)
}

fn arr(shape: &[usize], v: Vec<f32>) -> Array {
    Array::new(shape, v).unwrap()
}

/// `Dense(1)` on 2 features with kernel `[0.5, -0.25]` and bias `0.1`, MSE, SGD 0.1.
fn line_model() -> Model {
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(1).into()]);
    m.compile(Sgd::new(0.1), Loss::MeanSquaredError, &[])
        .unwrap();
    m.set_weights(&[
        ("dense/kernel".into(), arr(&[2, 1], vec![0.5, -0.25])),
        ("dense/bias".into(), arr(&[1], vec![0.1])),
    ])
    .unwrap();
    m
}

fn data() -> (Array, Array, Array) {
    (
        arr(&[4, 2], vec![1., 2., 3., -1., 0., 1., 2., 2.]),
        arr(&[4, 1], vec![1., 0., 2., -1.]),
        arr(&[4], vec![1., 0.5, 2., 0.]),
    )
}

fn weight(m: &Model, name: &str) -> Vec<f32> {
    let w = m.get_weights().unwrap();
    w.iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
        .to_vec::<f32>()
        .unwrap()
}

#[test]
fn the_weighted_loss_divides_by_the_batch_size_not_the_weight_sum() {
    let (x, y, w) = data();
    let mut m = line_model();
    // Hand: p = x·k + b; loss = Σ w_i (p_i − y_i)² / 4.
    let (k, b) = ([0.5f64, -0.25], 0.1f64);
    let (xv, yv, wv) = (
        x.to_vec::<f32>().unwrap(),
        y.to_vec::<f32>().unwrap(),
        w.to_vec::<f32>().unwrap(),
    );
    let err: Vec<f64> = (0..4)
        .map(|i| xv[2 * i] as f64 * k[0] + xv[2 * i + 1] as f64 * k[1] + b - yv[i] as f64)
        .collect();
    let want: f64 = (0..4).map(|i| wv[i] as f64 * err[i] * err[i]).sum::<f64>() / 4.0;
    for bs in [4, 3, 1] {
        let logs = m.evaluate_weighted(&x, &y, &w, bs).unwrap();
        // Batches of 3 and 1: each batch divides by its own size, the epoch weighs batches
        // by rows, so the mean is the same sum over 4.
        assert!(
            (logs["loss"] - want).abs() < 1e-6,
            "batch {bs}: {} vs {want}",
            logs["loss"]
        );
    }
    let plain: f64 = err.iter().map(|e| e * e).sum::<f64>() / 4.0;
    assert!((m.evaluate(&x, &y, 4).unwrap()["loss"] - plain).abs() < 1e-6);
    // Weights of one give the unweighted loss.
    let ones = arr(&[4], vec![1.0; 4]);
    let l1 = m.evaluate_weighted(&x, &y, &ones, 4).unwrap()["loss"];
    assert!((l1 - plain).abs() < 1e-6, "{l1} vs {plain}");
}

#[test]
fn a_weighted_step_matches_a_hand_written_graph_loop_and_the_formula() {
    let (x, y, w) = data();
    let mut m = line_model();
    let h = m
        .fit(
            &x,
            &y,
            quiet().batch_size(4).shuffle(false).sample_weight(&w),
        )
        .unwrap();

    // The same step, TF1 style.
    let g = Graph::new();
    let xp = g.placeholder("x", DType::F32, [None, Some(2)]);
    let yp = g.placeholder("y", DType::F32, [None, Some(1)]);
    let wp = g.placeholder("w", DType::F32, [None]);
    let k = g.variable("k", [2, 1], kiln::init::zeros());
    let b = g.variable("b", [1], kiln::init::zeros());
    let per = (xp.matmul(k) + b - yp).square().mean(&[1], false);
    let loss = (per * wp).mean_all();
    let train = Sgd::new(0.1).minimize(loss, &[k, b]).unwrap();
    let mut s = Session::new(&g).unwrap();
    s.set_variable(k, arr(&[2, 1], vec![0.5, -0.25])).unwrap();
    s.set_variable(b, arr(&[1], vec![0.1])).unwrap();
    let out = s
        .run(
            &[loss, train],
            &[(xp, x.clone()), (yp, y.clone()), (wp, w.clone())],
        )
        .unwrap();
    let hand_loss = out[0].scalar_value::<f32>().unwrap() as f64;
    let hk = s.variable(k).unwrap().to_vec::<f32>().unwrap();
    let hb = s.variable(b).unwrap().to_vec::<f32>().unwrap();
    assert!((h.get("loss").unwrap()[0] - hand_loss).abs() < 1e-6);
    let (mk, mb) = (weight(&m, "dense/kernel"), weight(&m, "dense/bias"));
    for (a, b) in mk.iter().chain(&mb).zip(hk.iter().chain(&hb)) {
        assert!((a - b).abs() < 1e-6, "{mk:?} {mb:?} vs {hk:?} {hb:?}");
    }
    // And the formula: dL/dk = (2/N) Σ w_i e_i x_i, dL/db = (2/N) Σ w_i e_i.
    let (xv, yv, wv) = (
        x.to_vec::<f32>().unwrap(),
        y.to_vec::<f32>().unwrap(),
        w.to_vec::<f32>().unwrap(),
    );
    let e: Vec<f64> = (0..4)
        .map(|i| 0.5 * xv[2 * i] as f64 - 0.25 * xv[2 * i + 1] as f64 + 0.1 - yv[i] as f64)
        .collect();
    let gk0: f64 = (0..4)
        .map(|i| wv[i] as f64 * e[i] * xv[2 * i] as f64)
        .sum::<f64>()
        / 2.0;
    let gb: f64 = (0..4).map(|i| wv[i] as f64 * e[i]).sum::<f64>() / 2.0;
    assert!((mk[0] as f64 - (0.5 - 0.1 * gk0)).abs() < 1e-6, "{mk:?}");
    assert!((mb[0] as f64 - (0.1 - 0.1 * gb)).abs() < 1e-6, "{mb:?}");
}

fn classifier() -> Model {
    let mut m = Sequential::new([
        Input::new([3]).into(),
        Dense::new(6).relu().into(),
        Dense::new(3).into(),
    ]);
    m.compile(
        Adam::new(0.02),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

fn three_classes(n: usize) -> (Array, Array) {
    let x: Vec<f32> = (0..n * 3)
        .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
        .collect();
    let y: Vec<i32> = (0..n).map(|i| (i * 7 % 3) as i32).collect();
    (arr(&[n, 3], x), Array::new([n], y).unwrap())
}

#[test]
fn class_weight_is_the_sample_weight_of_each_label_and_metrics_stay_unweighted() {
    let (x, y) = three_classes(30);
    let map = [(0usize, 1.0f64), (1, 3.0)]; // class 2 unnamed: weight 1, as in Keras
    let w: Vec<f32> = y
        .to_vec::<i32>()
        .unwrap()
        .iter()
        .map(|&c| if c == 1 { 3.0 } else { 1.0 })
        .collect();
    let w = arr(&[30], w);
    let cfg = || quiet().epochs(3).batch_size(8).seed(5);
    let (mut a, mut b) = (classifier(), classifier());
    let ha = a.fit(&x, &y, cfg().class_weight(map)).unwrap();
    let hb = b.fit(&x, &y, cfg().sample_weight(&w)).unwrap();
    assert_eq!(ha, hb);
    for ((na, wa), (_, wb)) in a
        .get_weights()
        .unwrap()
        .iter()
        .zip(b.get_weights().unwrap())
    {
        assert!(wa.bits_eq(&wb), "{na}");
    }
    // Weighted and unweighted fits continue one optimizer: no second set of Adam state.
    a.fit(&x, &y, cfg()).unwrap();
    assert!(a.graph().by_name("adam_1/iterations").is_none());
    assert!(a.graph().by_name("adam/iterations").is_some());
    // Metrics are not weighted (Keras 3's `metrics`), the loss is.
    let ev = a.evaluate(&x, &y, 8).unwrap();
    let ew = a.evaluate_weighted(&x, &y, &w, 8).unwrap();
    assert_eq!(ev["accuracy"], ew["accuracy"]);
    assert_ne!(ev["loss"], ew["loss"]);
}

#[test]
fn a_dataset_of_weighted_batches_trains_as_weighted_arrays() {
    let (x, y) = three_classes(20);
    let w = arr(&[20], (0..20).map(|i| (i % 4) as f32 * 0.5).collect());
    let mut a = classifier();
    let ha = a
        .fit(
            &x,
            &y,
            quiet()
                .epochs(2)
                .batch_size(5)
                .shuffle(false)
                .sample_weight(&w),
        )
        .unwrap();
    let mut b = classifier();
    let ds = Dataset::from_slices((x.clone(), y.clone(), w.clone()))
        .unwrap()
        .batch(5);
    let hb = b.fit_dataset(&ds, quiet().epochs(2)).unwrap();
    assert_eq!(ha, hb);
    for ((na, wa), (_, wb)) in a
        .get_weights()
        .unwrap()
        .iter()
        .zip(b.get_weights().unwrap())
    {
        assert!(wa.bits_eq(&wb), "{na}");
    }
    // class_weight applies to a dataset's batches too, and equals its sample weights.
    let map = [(0usize, 2.0), (2, 0.5)];
    let cw: Vec<f32> = y
        .to_vec::<i32>()
        .unwrap()
        .iter()
        .map(|&c| [2.0, 1.0, 0.5][c as usize])
        .collect();
    let (mut c, mut d) = (classifier(), classifier());
    let plain = Dataset::from_arrays(x.clone(), y.clone()).unwrap().batch(5);
    let hc = c.fit_dataset(&plain, quiet().class_weight(map)).unwrap();
    let weighted = Dataset::from_slices((x.clone(), y.clone(), arr(&[20], cw)))
        .unwrap()
        .batch(5);
    let hd = d.fit_dataset(&weighted, quiet()).unwrap();
    assert_eq!(hc, hd);
}

#[test]
fn bad_weights_are_clear_errors() {
    let (x, y) = three_classes(6);
    let mut m = classifier();
    let err = |m: &mut Model, cfg: FitConfig| m.fit(&x, &y, cfg).unwrap_err().to_string();
    let e = err(&mut m, quiet().sample_weight(&arr(&[5], vec![1.0; 5])));
    assert!(e.contains("shape [5], but there are 6 examples"), "{e}");
    let e = err(
        &mut m,
        quiet().sample_weight(&arr(&[6], vec![1., 1., -2., 1., 1., 1.])),
    );
    assert!(e.contains("sample weight 2 is -2"), "{e}");
    let e = err(
        &mut m,
        quiet().sample_weight(&arr(&[6], vec![1., f32::NAN, 1., 1., 1., 1.])),
    );
    assert!(e.contains("sample weight 1 is NaN"), "{e}");
    let ints = Array::new([6], vec![1i32; 6]).unwrap();
    let e = err(&mut m, quiet().sample_weight(&ints));
    assert!(e.contains("must be f32"), "{e}");
    let e = err(&mut m, quiet().class_weight([(3, 1.0)]));
    assert!(
        e.contains("class_weight names class 3, but the model has 3 classes"),
        "{e}"
    );
    let e = err(&mut m, quiet().class_weight([(0, -1.0)]));
    assert!(e.contains("class 0 the weight -1"), "{e}");
    let e = err(&mut m, quiet().class_weight([(1, 1.0), (1, 2.0)]));
    assert!(e.contains("class 1 twice"), "{e}");
    let both = quiet()
        .class_weight([(0, 1.0)])
        .sample_weight(&arr(&[6], vec![1.0; 6]));
    let e = err(&mut m, both);
    assert!(e.contains("both sample_weight and class_weight"), "{e}");
    let e = m
        .evaluate_weighted(&x, &y, &arr(&[2], vec![1.0; 2]), 4)
        .unwrap_err()
        .to_string();
    assert!(e.contains("evaluate: sample_weight"), "{e}");
    // A custom loss gives a batch mean, which cannot be weighted per example.
    let mut c = Sequential::new([Input::new([3]).into(), Dense::new(3).into()]);
    c.compile(
        Sgd::new(0.1),
        Loss::custom("l2", |p, y| (p - y).square().mean_all()),
        &[],
    )
    .unwrap();
    let yf = arr(&[6, 3], vec![0.0; 18]);
    let e = c
        .fit(&x, &yf, quiet().sample_weight(&arr(&[6], vec![1.0; 6])))
        .unwrap_err()
        .to_string();
    assert!(e.contains("custom loss \"l2\""), "{e}");
    // A dataset's weights are checked per batch.
    let ds = Dataset::from_slices((
        x.clone(),
        y.clone(),
        arr(&[6], vec![1., 1., 1., 1., 1., -1.]),
    ))
    .unwrap()
    .batch(3);
    let e = m.fit_dataset(&ds, quiet()).unwrap_err().to_string();
    assert!(
        e.contains("batch 2 of the dataset: sample_weight: sample weight 2 is -1"),
        "{e}"
    );
}
