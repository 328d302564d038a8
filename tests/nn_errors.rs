//! Mistakes made through the Keras-style API, each an error naming the user's argument, the
//! model's shape and what to do (issue 16): batch size 0, float or one-hot labels for a
//! sparse loss, labels out of range, non-finite losses and data, wrong feature counts, a
//! missing output directory.

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
    has(
        &e,
        &[
            "FitConfig::batch_size",
            "batch_size must be at least 1, got 0",
        ],
    );
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
    // With the data check off (it would name the value itself, see below), the loss does.
    let cfg = quiet().epochs(3).batch_size(4).shuffle(false);
    let e = msg(m.fit(&x, &y, cfg.check_finite(false)));
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
            .check_finite(false)
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

#[test]
fn nan_or_inf_in_the_data_is_named_by_argument_sample_and_feature_before_training() {
    let (x, y) = data();
    let mut m = model(sparse());
    let before = m.get_weights().unwrap();
    let mut xv: Vec<f32> = x.to_vec().unwrap();
    xv[2 * 5 + 1] = f32::NAN;
    let xn = Array::new([12, 2], xv).unwrap();
    let e = msg(m.fit(&xn, &y, quiet()));
    has(
        &e,
        &[
            "fit: x holds NaN at [5, 1] (sample 5, feature 1)",
            "check_finite(false)",
        ],
    );
    let e = msg(m.fit(&x, &y, quiet().validation_data(&xn, &y)));
    has(&e, &["fit: validation_data's x holds NaN at [5, 1]"]);
    let e = msg(m.evaluate(&xn, &y, 4));
    has(
        &e,
        &["evaluate: x holds NaN at [5, 1] (sample 5, feature 1)"],
    );
    assert_eq!(m.get_weights().unwrap(), before, "no step ran");
    // Targets of a float loss, and examples of rank 2 (feature as an index).
    let mut m = Sequential::new([
        Input::new([2, 2]).into(),
        Flatten.into(),
        Dense::new(3).into(),
    ]);
    m.compile(Sgd::new(0.1), Loss::MeanSquaredError, &[])
        .unwrap();
    let x3 = Array::new([3, 2, 2], vec![0.5f32; 12]).unwrap();
    let mut t = vec![0.0f32; 9];
    t[7] = f32::INFINITY;
    let t = Array::new([3, 3], t).unwrap();
    has(
        &msg(m.fit(&x3, &t, quiet())),
        &["fit: y holds inf at [2, 1] (sample 2, feature 1)"],
    );
    let mut xv = vec![0.5f32; 12];
    xv[4 + 3] = f32::NEG_INFINITY;
    let xb = Array::new([3, 2, 2], xv).unwrap();
    let t = Array::new([3, 3], vec![0.0f32; 9]).unwrap();
    has(
        &msg(m.fit(&xb, &t, quiet())),
        &["fit: x holds -inf at [1, 1, 1] (sample 1, feature [1, 1])"],
    );
    // Switched off, training starts (and TerminateOnNaN stops it at the first batch).
    let e = msg(m.fit(&xb, &t, quiet().check_finite(false)));
    has(&e, &["the loss became", "epoch 1, step 1"]);
}

/// A model whose loss overflows on rows with huge (finite) inputs: MSE of a Dense(3).
fn overflowing() -> (Model, Array, Array) {
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(3).into()]);
    m.compile(Sgd::new(0.01), Loss::MeanSquaredError, &[])
        .unwrap();
    let mut xv = vec![0.5f32; 24];
    xv[2 * 6] = 1e30;
    let x = Array::new([12, 2], xv).unwrap();
    let t = Array::new([12, 3], vec![0.0f32; 36]).unwrap();
    (m, x, t)
}

#[test]
fn evaluate_with_a_non_finite_loss_is_an_error_naming_the_batch() {
    let (mut m, x, t) = overflowing();
    let e = msg(m.evaluate(&x, &t, 4));
    has(
        &e,
        &[
            "evaluate: the loss is inf on batch 2 (rows 4..8 of 12)",
            "predict on those rows",
        ],
    );
    // Finite everywhere: a result.
    let ok = Array::new([12, 2], vec![0.5f32; 24]).unwrap();
    assert!(m.evaluate(&ok, &t, 4).unwrap()["loss"].is_finite());
    // In fit, the validation pass follows TerminateOnNaN: an error by default...
    let cfg = quiet().batch_size(4).validation_data(&x, &t);
    let e = msg(m.fit(&ok, &t, cfg));
    has(
        &e,
        &["fit: the validation loss became inf at epoch 1, validation batch 2 (rows 4..8 of 12)"],
    );
    // ...and with it off, the value goes into the history, as Keras records it.
    let cfg = quiet().epochs(2).batch_size(4).validation_data(&x, &t);
    let h = m.fit(&ok, &t, cfg.terminate_on_nan(false)).unwrap();
    assert_eq!(h.epochs(), 2);
    assert!(!h.get("val_loss").unwrap()[1].is_finite());
    assert!(h.get("loss").unwrap()[1].is_finite());
}

#[test]
fn a_missing_checkpoint_directory_is_reported_before_the_first_epoch() {
    let (x, y) = data();
    let mut m = model(sparse());
    let before = m.get_weights().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("best.safetensors");
    let e = m
        .fit(
            &x,
            &y,
            quiet().epochs(3).callback(ModelCheckpoint::new(&path)),
        )
        .unwrap_err();
    let s = e.to_string();
    has(
        &s,
        &[
            &path.display().to_string(),
            "ModelCheckpoint cannot write here",
            "does not exist",
            "before training started",
        ],
    );
    assert!(!s.contains(".kiln-tmp"), "names the temporary: {s}");
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert_eq!(m.get_weights().unwrap(), before, "an epoch ran");
    // A file where the directory should be is named as such.
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let path = dir.path().join("file").join("w.safetensors");
    let e = msg(m.fit(&x, &y, quiet().callback(ModelCheckpoint::new(&path))));
    has(&e, &["is not a directory"]);
    // An existing directory trains and saves; nothing else is left in it.
    let path = dir.path().join("w_{epoch}.safetensors");
    m.fit(
        &x,
        &y,
        quiet().epochs(2).callback(ModelCheckpoint::new(&path)),
    )
    .unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["file", "w_1.safetensors", "w_2.safetensors"]);
}

#[cfg(feature = "ui")]
#[test]
fn plot_curves_reports_a_missing_directory_before_training_and_draws_each_epoch() {
    let (x, y) = data();
    let mut m = model(sparse());
    let before = m.get_weights().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope").join("curves.svg");
    let e = msg(m.fit(&x, &y, quiet().epochs(2).callback(PlotCurves::new(&path))));
    has(
        &e,
        &[
            &path.display().to_string(),
            "PlotCurves cannot write here",
            "before training started",
        ],
    );
    assert_eq!(m.get_weights().unwrap(), before, "an epoch ran");
    let path = dir.path().join("curves.svg");
    let cfg = quiet()
        .epochs(2)
        .callback(PlotCurves::new(&path).title("run"));
    m.fit(&x, &y, cfg).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.contains("<svg") && svg.contains("run"), "{svg}");
}

#[test]
fn the_checked_sparse_cross_entropy_is_nan_exactly_on_rows_with_bad_labels() {
    let g = Graph::new();
    let logits = g.placeholder("logits", DType::F32, [None, Some(3)]);
    let labels = g.placeholder("labels", DType::I32, [None]);
    let checked = logits.sparse_softmax_cross_entropy_with_logits_checked(labels);
    let plain = logits.sparse_softmax_cross_entropy_with_logits(labels);
    let mean = checked.mean_all();
    let w = g.variable("w", [3], init::ones());
    let grad = kiln::autodiff::grad(
        (logits * w)
            .sparse_softmax_cross_entropy_with_logits_checked(labels)
            .mean_all(),
        &[w],
    )
    .unwrap()[0];
    g.check().unwrap();
    let lv: Vec<f32> = (0..15).map(|i| (i as f32 * 0.7).sin()).collect();
    let l = Array::new([5, 3], lv).unwrap();
    let y = Array::new([5], vec![0i32, 3, 2, -1, 1]).unwrap();
    for backend in [Backend::Jit, Backend::Interpreter] {
        let mut s = Session::with_backend(&g, backend).unwrap();
        let out = s
            .run(
                &[checked, plain, mean],
                &[(logits, l.clone()), (labels, y.clone())],
            )
            .unwrap();
        let (c, p) = (
            out[0].to_vec::<f32>().unwrap(),
            out[1].to_vec::<f32>().unwrap(),
        );
        for (i, (c, p)) in c.iter().zip(&p).enumerate() {
            if [1, 3].contains(&i) {
                assert!(c.is_nan(), "row {i}: {c}");
                assert_eq!(*p, 0.0, "the unchecked loss of a bad row is 0");
            } else {
                assert_eq!(c.to_bits(), p.to_bits(), "row {i}");
            }
        }
        assert!(out[2].scalar_value::<f32>().unwrap().is_nan());
        // The NaN sends no gradient: the gradient of the other rows stays finite.
        let gv = s
            .run(&[grad], &[(logits, l.clone()), (labels, y.clone())])
            .unwrap();
        assert!(gv[0].to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()));
    }
}

/// Counts the batches `fit` runs.
struct Batches(std::rc::Rc<std::cell::Cell<usize>>);

impl Callback for Batches {
    fn on_batch_end(&mut self, _: usize, _: usize, _: &Logs, _: &mut Model) -> Result<Control> {
        self.0.set(self.0.get() + 1);
        Ok(Control::Continue)
    }
}

/// A monitored name the logs will not have fails before any epoch runs (not after the
/// first), naming the callback, the name and the names available; a `val_` name without
/// validation says how to get one.
#[test]
fn a_monitored_name_the_logs_lack_is_reported_before_the_first_epoch() {
    let (x, y) = data();
    let mut m = model(sparse());
    let before = m.get_weights().unwrap();
    let ran = std::rc::Rc::new(std::cell::Cell::new(0));
    let count = || Batches(ran.clone());
    let e = msg(m.fit(
        &x,
        &y,
        quiet()
            .epochs(3)
            .callback(count())
            .callback(EarlyStopping::on("val_loss")),
    ));
    has(
        &e,
        &[
            "EarlyStopping monitors \"val_loss\"",
            "(they will have: loss, accuracy)",
            "validation_split",
        ],
    );
    // A typo, with validation: the available names include the val_ ones.
    let e = msg(m.fit(
        &x,
        &y,
        quiet()
            .validation_split(0.25)
            .callback(count())
            .callback(EarlyStopping::on("val_acuracy")),
    ));
    has(
        &e,
        &[
            "\"val_acuracy\"",
            "loss, accuracy, val_loss, val_accuracy",
            "monitor one of those",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let ckpt = ModelCheckpoint::new(dir.path().join("best.safetensors"))
        .monitor("val_loss")
        .save_best_only();
    let e = msg(m.fit(&x, &y, quiet().callback(count()).callback(ckpt)));
    has(&e, &["ModelCheckpoint monitors \"val_loss\""]);
    assert_eq!(ran.get(), 0, "a batch ran before the error");
    assert_eq!(m.get_weights().unwrap(), before, "an epoch ran");
    // A name the logs have trains as before.
    let h = m
        .fit(
            &x,
            &y,
            quiet()
                .epochs(2)
                .callback(count())
                .callback(EarlyStopping::on("accuracy")),
        )
        .unwrap();
    assert!(ran.get() > 0 && h.get("accuracy").is_some());
}
