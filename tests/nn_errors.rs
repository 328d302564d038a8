//! Mistakes made through the Keras-style API, each an error naming the user's argument, the
//! model's shape and what to do (issue 16): batch size 0, float or one-hot labels for a
//! sparse loss, labels out of range, non-finite losses, wrong feature counts.

use kiln::nn::*;
use kiln::prelude::*;

fn quiet() -> FitConfig {
    FitConfig::new().verbosity(Verbosity::Silent)
}

fn sparse() -> Loss {
    Loss::SparseCategoricalCrossentropy { from_logits: true }
}

/// 12 rows of 2 features and labels `i % 3`.
fn data() -> (Array, Array) {
    let x: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
    let y: Vec<i32> = (0..12).map(|i| i % 3).collect();
    (
        Array::new([12, 2], x).unwrap(),
        Array::new([12], y).unwrap(),
    )
}

fn model(loss: Loss) -> Model {
    let mut m = Sequential::new([
        Input::new([2]).into(),
        Dense::new(8).relu().into(),
        Dense::new(3).into(),
    ]);
    m.compile(Adam::new(0.01), loss, &[Metric::Accuracy])
        .unwrap();
    m
}

fn msg<T: std::fmt::Debug>(r: Result<T>) -> String {
    r.unwrap_err().to_string()
}

fn has(m: &str, parts: &[&str]) {
    for p in parts {
        assert!(m.contains(p), "{p:?} missing from: {m}");
    }
}

#[test]
fn batch_size_zero_is_rejected_everywhere() {
    let (x, y) = data();
    let mut m = model(sparse());
    let e = msg(m.fit(&x, &y, quiet().batch_size(0)));
    has(&e, &["fit", "batch_size must be at least 1, got 0"]);
    let e = msg(m.evaluate(&x, &y, 0));
    has(&e, &["evaluate", "batch_size must be at least 1"]);
    let e = msg(m.predict(&x, 0));
    has(&e, &["predict", "batch_size must be at least 1"]);
}

#[test]
fn sparse_cross_entropy_with_float_labels_is_a_build_error_at_the_users_line() {
    let g = Graph::new();
    let logits = g.placeholder("logits", DType::F32, [None, Some(3)]);
    let labels = g.placeholder("labels", DType::F32, [None]);
    let line = line!() + 1;
    let _loss = logits.sparse_softmax_cross_entropy_with_logits(labels);
    let e = msg(g.check());
    has(
        &e,
        &[
            "sparse_softmax_cross_entropy_with_logits",
            &format!("nn_errors.rs:{line}"),
            "labels must be i32",
            "f32[?] \"labels\"",
            "f32[?,3] \"logits\"",
            "softmax_cross_entropy_with_logits",
        ],
    );
}

#[test]
fn sparse_loss_with_float_or_one_hot_labels_names_y_and_the_fix() {
    let (x, y) = data();
    let mut m = model(sparse());
    let yf = Array::from_f64(DType::F32, vec![12], y.to_f64_vec());
    let e = msg(m.fit(&x, &yf, quiet()));
    has(
        &e,
        &[
            "fit: y holds f32",
            "integer class indices",
            "CategoricalCrossentropy",
        ],
    );
    let onehot: Vec<f64> = y
        .to_f64_vec()
        .iter()
        .flat_map(|&c| (0..3).map(move |k| if k as f64 == c { 1.0 } else { 0.0 }))
        .collect();
    let oh = Array::from_f64(DType::F32, vec![12, 3], onehot);
    let e = msg(m.evaluate(&x, &oh, 4));
    has(
        &e,
        &[
            "evaluate: y holds f32",
            "one-hot",
            "CategoricalCrossentropy",
        ],
    );
}

#[test]
fn labels_out_of_range_or_negative_name_the_first_bad_label() {
    let (x, y) = data();
    let mut m = model(sparse());
    let mut v: Vec<i32> = y.to_vec().unwrap();
    v[5] = 7;
    v[9] = -1;
    let bad = Array::new([12], v.clone()).unwrap();
    let e = msg(m.fit(&x, &bad, quiet()));
    has(&e, &["fit: y[5] = 7", "3 classes", "0..3"]);
    v[5] = 1;
    let neg = Array::new([12], v).unwrap();
    let e = msg(m.evaluate(&x, &neg, 4));
    has(&e, &["evaluate: y[9] = -1", "3 classes"]);
    // The weights did not move: the check runs before any batch.
    let before = m.get_weights().unwrap();
    let _ = m.fit(&x, &bad, quiet());
    assert_eq!(m.get_weights().unwrap(), before);
}

#[test]
fn a_loss_that_blows_up_stops_fit_naming_epoch_and_step() {
    let (x, _) = data();
    let t: Vec<f32> = (0..36).map(|i| i as f32).collect();
    let t = Array::new([12, 3], t).unwrap();
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(3).into()]);
    m.compile(Sgd::new(1e6), Loss::MeanSquaredError, &[])
        .unwrap();
    let e = msg(m.fit(&x, &t, quiet().epochs(50).batch_size(4)));
    has(
        &e,
        &["fit: the loss became", "at epoch", "step", "TerminateOnNaN"],
    );
    // Switched off, training runs every epoch and the history shows the damage.
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(3).into()]);
    m.compile(Sgd::new(1e6), Loss::MeanSquaredError, &[])
        .unwrap();
    let h = m
        .fit(
            &x,
            &t,
            quiet().epochs(5).batch_size(4).terminate_on_nan(false),
        )
        .unwrap();
    assert_eq!(h.epochs(), 5);
    assert!(!h.get("loss").unwrap()[4].is_finite());
}

#[test]
fn nan_in_the_data_stops_fit_at_the_batch_holding_it() {
    let (x, y) = data();
    let mut xv: Vec<f32> = x.to_vec().unwrap();
    xv[2 * 5] = f32::NAN; // row 5: the second batch of 4
    let x = Array::new([12, 2], xv).unwrap();
    let mut m = model(sparse());
    let e = msg(m.fit(&x, &y, quiet().epochs(3).batch_size(4).shuffle(false)));
    has(&e, &["the loss became NaN at epoch 1, step 2", "x and y"]);
}

#[test]
fn terminate_on_nan_is_a_callback_like_any_other() {
    let (x, y) = data();
    let mut m = model(sparse());
    let mut cb = TerminateOnNaN::new();
    let mut logs = Logs::new();
    logs.insert("loss".into(), f64::INFINITY);
    let e = msg(cb.on_batch_end(2, 6, &logs, &mut m));
    has(&e, &["the loss became inf at epoch 3, step 7"]);
    logs.insert("loss".into(), 0.5);
    assert_eq!(
        cb.on_batch_end(0, 0, &logs, &mut m).unwrap(),
        Control::Continue
    );
    // Given explicitly with the default off, it still stops a run.
    let mut xv: Vec<f32> = x.to_vec().unwrap();
    xv[0] = f32::NAN;
    let x = Array::new([12, 2], xv).unwrap();
    let e = msg(m.fit(
        &x,
        &y,
        quiet()
            .shuffle(false)
            .terminate_on_nan(false)
            .callback(TerminateOnNaN::new()),
    ));
    has(&e, &["epoch 1, step 1"]);
}

#[test]
fn wrong_feature_count_names_x_and_the_models_input() {
    let (_, y) = data();
    let x3 = Array::new([12, 3], vec![0.5f32; 36]).unwrap();
    let mut m = model(sparse());
    let e = msg(m.fit(&x3, &y, quiet()));
    has(
        &e,
        &[
            "fit: x has shape [12, 3]",
            "the model's input is f32[?,2]",
            "pass an array of shape [12, 2]",
            "Input::new([3])",
        ],
    );
    let e = msg(m.predict(&x3, 4));
    has(&e, &["predict: x has shape [12, 3]", "f32[?,2]"]);
    let xi = Array::new([12, 2], vec![1i32; 24]).unwrap();
    let e = msg(m.evaluate(&xi, &y, 4));
    has(&e, &["evaluate: x holds i32", "f32[?,2]", "DType::F32"]);
}

#[test]
fn wrong_target_shape_or_dtype_names_y_and_the_models_output() {
    let (x, y) = data();
    // Categorical cross-entropy wants one-hot rows shaped like the output.
    let mut m = model(Loss::CategoricalCrossentropy { from_logits: true });
    let yf = Array::from_f64(DType::F32, vec![12], y.to_f64_vec());
    let e = msg(m.fit(&x, &yf, quiet()));
    has(
        &e,
        &[
            "fit: y has shape [12]",
            "f32[?,3]",
            "pass targets of shape [12, 3]",
        ],
    );
    let yi = Array::new([12, 3], vec![0i32; 36]).unwrap();
    let e = msg(m.fit(&x, &yi, quiet()));
    has(&e, &["fit: y holds i32", "f32[?,3]", "DType::F32"]);
    // Sparse labels shaped like the output, but integer: still the one-hot hint.
    let mut m = model(sparse());
    let e = msg(m.fit(&x, &yi, quiet()));
    has(&e, &["fit: y has shape [12, 3]", "i32[?]", "one-hot"]);
    // Validation data is checked before training too.
    let bad = Array::new([12], vec![3i32; 12]).unwrap();
    let e = msg(m.fit(&x, &y, quiet().validation_data(&x, &bad)));
    has(&e, &["validation_data's y[0] = 3"]);
}

#[test]
fn loss_build_with_float_labels_for_a_sparse_loss_is_a_build_error() {
    for from_logits in [false, true] {
        let g = Graph::new();
        let p = g.placeholder("p", DType::F32, [None, Some(3)]);
        let y = g.placeholder("y", DType::F32, [None]);
        let line = line!() + 1;
        let _ = Loss::SparseCategoricalCrossentropy { from_logits }.build(p, y);
        let e = msg(g.check());
        has(
            &e,
            &[
                "labels must be i32 class indices",
                "f32[?] \"y\"",
                &format!("nn_errors.rs:{line}"),
            ],
        );
    }
}
