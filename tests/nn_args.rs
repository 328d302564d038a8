//! Arguments out of their domain, given to a layer, an optimizer, a callback or `FitConfig`,
//! are reported at the first `Result` (`Model::add`, `compile`, `fit`, `minimize`) as an
//! error naming the function, the user's line (this file's, through `#[track_caller]`), the
//! argument, its allowed range and the value (issue 16). Never a panic, never kiln's line.

use kiln::nn::*;
use kiln::prelude::*;

fn quiet() -> FitConfig {
    FitConfig::new().verbosity(Verbosity::Silent)
}

fn sparse() -> Loss {
    Loss::SparseCategoricalCrossentropy { from_logits: true }
}

fn msg<T: std::fmt::Debug>(r: Result<T>) -> String {
    r.unwrap_err().to_string()
}

fn has(m: &str, parts: &[&str]) {
    for p in parts {
        assert!(m.contains(p), "{p:?} missing from: {m}");
    }
    assert!(!m.contains("src/"), "names kiln's source: {m}");
}

/// `tests/nn_args.rs:LINE:`, the location the message must name.
fn at(line: u32) -> String {
    format!("tests/nn_args.rs:{line}:")
}

fn data() -> (Array, Array) {
    let x: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
    let y: Vec<i32> = (0..12).map(|i| i % 3).collect();
    (
        Array::new([12, 2], x).unwrap(),
        Array::new([12], y).unwrap(),
    )
}

fn model() -> Model {
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(3).into()]);
    m.compile(Adam::new(0.01), sparse(), &[]).unwrap();
    m
}

#[test]
fn a_dropout_rate_out_of_range_is_reported_by_compile_at_the_users_line() {
    let (layer, line) = (Dropout::new(1.5), line!());
    let mut m = Sequential::new([Input::new([2]).into(), layer.into(), Dense::new(3).into()]);
    let e = msg(m.compile(Adam::new(0.01), sparse(), &[]));
    has(
        &e,
        &[
            &format!("Dropout::new at {}", at(line)),
            "rate must be in [0, 1)",
            "got 1.5",
        ],
    );
    // Model::add refuses it at once.
    let mut m = Sequential::new([Input::new([2]).into()]);
    let (layer, line) = (Dropout::new(-0.1), line!());
    let e = msg(m.add(layer));
    has(&e, &[&at(line), "rate", "got -0.1"]);
    m.add(Dense::new(3)).unwrap();
    m.compile(Adam::new(0.01), sparse(), &[]).unwrap();
    assert_eq!(m.trainable_variables().len(), 2);
}

#[test]
fn layer_arguments_are_checked_where_they_are_given() {
    let mut m = Sequential::new([Input::new([2]).into()]);
    let (layer, line) = (Dense::new(0).relu(), line!());
    has(
        &msg(m.add(layer)),
        &[
            &format!("Dense::new at {}", at(line)),
            "units must be at least 1, got 0",
        ],
    );
    // Two bad arguments: both are named, each with its line.
    let bn = BatchNormalization::new().momentum(1.5);
    let l1 = line!() - 1;
    let (bn, l2) = (bn.epsilon(-1e-3), line!());
    let e = msg(m.add(bn));
    has(
        &e,
        &[
            &format!("BatchNormalization::momentum at {}", at(l1)),
            "momentum must be in [0, 1], got 1.5",
            &format!("BatchNormalization::epsilon at {}", at(l2)),
            "epsilon must be finite and > 0, got -0.001",
        ],
    );
    // A later good value replaces a bad one.
    let bn = BatchNormalization::new().momentum(1.5).momentum(0.9);
    m.add(bn).unwrap();
    let (input, line) = (Input::new([2, 0]), line!());
    let mut m = Sequential::new([input.into(), Flatten.into()]);
    let e = msg(m.summary());
    has(&e, &[&format!("Input::new at {}", at(line)), "[2, 0]"]);
    // The functional API checks in `apply`.
    let (layer, line) = (Dropout::new(1.0), line!());
    let r = Model::functional(&[&[4]], move |b, ins| Ok(vec![b.apply(layer, ins[0])?]));
    let e = msg(r.map(|_| ()));
    has(&e, &[&at(line), "got 1.0"]);
}

#[test]
fn optimizer_arguments_are_checked_by_compile_and_minimize() {
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(3).into()]);
    let (opt, line) = (Sgd::new(-0.1), line!());
    let e = msg(m.compile(opt, sparse(), &[]));
    has(
        &e,
        &[
            &format!("Sgd::new at {}", at(line)),
            "learning_rate must be finite and >= 0, got -0.1",
        ],
    );
    // The model was left untouched: a good optimizer compiles it.
    m.compile(Sgd::new(0.1), sparse(), &[]).unwrap();

    let check = |mut opt: Box<dyn Optimizer>, line: u32, parts: &[&str]| {
        let g = Graph::new();
        let w = g.variable("w", [2], init::zeros());
        let loss = (w * w).sum_all();
        let nodes = g.len();
        let e = msg(opt.minimize(loss, &[w]));
        has(&e, &[&at(line)]);
        has(&e, parts);
        assert_eq!(g.len(), nodes, "nothing is added to the graph");
    };
    let (o, l) = (Sgd::new(0.1).momentum(1.0), line!());
    check(Box::new(o), l, &["Sgd::momentum", "in [0, 1)", "got 1.0"]);
    let (o, l) = (Adam::new(f64::NAN), line!());
    check(Box::new(o), l, &["Adam::new", "got NaN"]);
    let (o, l) = (Adam::new(0.1).beta_2(1.5), line!());
    check(Box::new(o), l, &["Adam::beta_2", "got 1.5"]);
    let (o, l) = (Adam::new(0.1).beta_1(-0.1), line!());
    check(Box::new(o), l, &["Adam::beta_1", "got -0.1"]);
    let (o, l) = (Adam::new(0.1).epsilon(0.0), line!());
    check(Box::new(o), l, &["Adam::epsilon", "> 0"]);
    let (o, l) = (AdamW::new(f64::INFINITY), line!());
    check(Box::new(o), l, &["AdamW::new", "got inf"]);
    let (o, l) = (RmsProp::new(0.1).rho(-0.5), line!());
    check(Box::new(o), l, &["RmsProp::rho", "got -0.5"]);
    let (o, l) = (RmsProp::new(0.1).momentum(2.0), line!());
    check(Box::new(o), l, &["RmsProp::momentum", "got 2.0"]);
    let (o, l) = (RmsProp::new(0.1).epsilon(-1.0), line!());
    check(Box::new(o), l, &["RmsProp::epsilon", "got -1.0"]);
    let (o, l) = (RmsProp::new(0.1).clip_global_norm(0.0), line!());
    check(Box::new(o), l, &["RmsProp::clip_global_norm", "got 0.0"]);
    let (o, l) = (Sgd::new(0.1).weight_decay(-1.0), line!());
    check(Box::new(o), l, &["Sgd::weight_decay", ">= 0"]);
    let (o, l) = (Adam::new(0.1).name(""), line!());
    check(Box::new(o), l, &["Adam::name", "non-empty"]);
    // A learning-rate tensor must be a float scalar.
    let g = Graph::new();
    let w = g.variable("w", [2], init::zeros());
    let lr = g.placeholder("lr", DType::F32, [2]);
    let (mut opt, line) = (Sgd::new(0.1).learning_rate_tensor(lr), line!());
    let e = msg(opt.minimize((w * w).sum_all(), &[w]));
    has(&e, &[&at(line), "a float scalar", "f32[2]"]);
}

#[test]
fn callback_and_fit_config_arguments_are_checked_by_fit_before_any_epoch() {
    let (x, y) = data();
    let mut m = model();
    let before = m.get_weights().unwrap();
    let (cb, line) = (EarlyStopping::on("").min_delta(f64::NAN), line!());
    let e = msg(m.fit(&x, &y, quiet().callback(cb)));
    has(
        &e,
        &[
            &format!("EarlyStopping::on at {}", at(line)),
            "name must be the name of a logged value",
            &format!("EarlyStopping::min_delta at {}", at(line)),
            "min_delta must be finite, got NaN",
        ],
    );
    let (cb, line) = (ModelCheckpoint::new("").monitor(""), line!());
    let e = msg(m.fit(&x, &y, quiet().callback(cb)));
    has(
        &e,
        &[
            &format!("ModelCheckpoint::new at {}", at(line)),
            "a file path",
        ],
    );
    has(&e, &["ModelCheckpoint::monitor"]);

    let (cfg, line) = (quiet().epochs(0), line!());
    let e = msg(m.fit(&x, &y, cfg));
    has(
        &e,
        &[
            &format!("FitConfig::epochs at {}", at(line)),
            "epochs must be at least 1, got 0",
        ],
    );
    let (cfg, line) = (quiet().batch_size(0), line!());
    has(
        &msg(m.fit(&x, &y, cfg)),
        &[&at(line), "batch_size must be at least 1, got 0"],
    );
    let (cfg, line) = (quiet().validation_split(1.0), line!());
    has(
        &msg(m.fit(&x, &y, cfg)),
        &[&at(line), "validation_split must be in [0, 1)", "got 1.0"],
    );
    let cfg = quiet().validation_split(0.25).validation_data(&x, &y);
    has(
        &msg(m.fit(&x, &y, cfg)),
        &["fit: both validation_split(0.25) and validation_data"],
    );
    // No epoch ran: the weights are those before.
    assert_eq!(m.get_weights().unwrap(), before);
}
