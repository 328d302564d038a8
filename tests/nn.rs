//! The Keras-style API: fit, early stopping, dropout in fit only, checkpoints, summary, and
//! both directions of interop with the graph level.

use kiln::nn::*;
use kiln::prelude::*;

/// Three well-separated 2-D blobs, `n` points each.
fn blobs(n: usize, seed: u64) -> (Array, Array) {
    let centers = [(-3.0f32, 0.0f32), (3.0, 0.0), (0.0, 4.0)];
    let mut xs = vec![];
    let mut ys = vec![];
    for (c, &(cx, cy)) in centers.iter().enumerate() {
        for i in 0..n as u64 {
            xs.push(cx + 0.5 * kiln::internals::standard_normal(seed, 2 * c as u64, i));
            xs.push(cy + 0.5 * kiln::internals::standard_normal(seed, 2 * c as u64 + 1, i));
            ys.push(c as i32);
        }
    }
    (
        Array::new([3 * n, 2], xs).unwrap(),
        Array::new([3 * n], ys).unwrap(),
    )
}

fn quiet() -> FitConfig {
    FitConfig::new().verbosity(Verbosity::Silent)
}

fn sparse() -> Loss {
    Loss::SparseCategoricalCrossentropy { from_logits: true }
}

#[test]
fn fit_separates_a_separable_problem() {
    let (x, y) = blobs(30, 1);
    let mut m = Sequential::new([
        Input::new([2]).into(),
        Dense::new(16).relu().into(),
        Dense::new(3).into(),
    ]);
    m.compile(Adam::new(0.05), sparse(), &[Metric::Accuracy])
        .unwrap();
    let h = m.fit(&x, &y, quiet().epochs(30).batch_size(16)).unwrap();
    assert_eq!(h.epochs(), 30);
    let acc = h.get("accuracy").unwrap();
    assert_eq!(*acc.last().unwrap(), 1.0, "{acc:?}");
    let loss = h.get("loss").unwrap();
    assert!(loss[29] < loss[0] / 5.0, "{loss:?}");
    let ev = m.evaluate(&x, &y, 7).unwrap();
    assert_eq!(ev["accuracy"], 1.0);
    let p = m.predict(&x, 7).unwrap();
    assert_eq!(p.shape(), &[90, 3]);
}

#[test]
fn early_stopping_stops_at_the_expected_epoch_and_restores_the_best_weights() {
    // Validation labels contradict the training labels on the same points: every epoch of
    // learning makes validation worse, so the best epoch is the first one.
    let (x, y) = blobs(20, 2);
    let flipped: Vec<i32> = y
        .to_vec::<i32>()
        .unwrap()
        .iter()
        .map(|c| (c + 1) % 3)
        .collect();
    let y_val = Array::new([60], flipped).unwrap();
    // Zero weights: the model starts uniform, so no draw of initial weights can happen to
    // favour the flipped labels and make the first epochs improve on them.
    let mut m = Sequential::new([
        Input::new([2]).into(),
        Dense::new(3).kernel_initializer(init::zeros()).into(),
    ]);
    m.compile(Adam::new(0.05), sparse(), &[Metric::Accuracy])
        .unwrap();
    let h = m
        .fit(
            &x,
            &y,
            quiet()
                .epochs(20)
                .batch_size(10)
                .validation_data(&x, &y_val)
                .callback(
                    EarlyStopping::on("val_loss")
                        .patience(2)
                        .restore_best_weights(),
                ),
        )
        .unwrap();
    let vl = h.get("val_loss").unwrap();
    assert!(vl.windows(2).all(|w| w[1] > w[0]), "{vl:?}");
    // Best at epoch 0; epochs 1 and 2 do not improve; patience 2 stops after epoch 2.
    assert_eq!(h.stopped_epoch, Some(2));
    assert_eq!(h.epochs(), 3);
    let now = m.evaluate(&x, &y_val, 10).unwrap()["loss"];
    assert!(
        (now - vl[0]).abs() < 1e-6,
        "restored {now} vs best {}",
        vl[0]
    );
}

#[test]
fn dropout_is_on_in_fit_and_off_in_evaluate_and_predict() {
    // x -> dropout(0.5) -> sum with fixed unit weights; SGD with lr 0 never changes them.
    let x = Array::new([64, 8], vec![1.0f32; 512]).unwrap();
    let y = Array::new([64, 1], vec![8.0f32; 64]).unwrap();
    let mut m = Sequential::new([
        Input::new([8]).into(),
        Dropout::new(0.5).into(),
        Dense::new(1)
            .use_bias(false)
            .kernel_initializer(init::ones())
            .into(),
    ]);
    m.compile(Sgd::new(0.0), Loss::MeanSquaredError, &[])
        .unwrap();
    let h = m.fit(&x, &y, quiet().epochs(1).batch_size(64)).unwrap();
    // With dropout the prediction is 2·(kept count), rarely 8: a positive training loss.
    assert!(h.get("loss").unwrap()[0] > 1.0);
    // Without it, predictions are exactly 8 and the loss 0.
    assert_eq!(m.evaluate(&x, &y, 64).unwrap()["loss"], 0.0);
    let p = m.predict(&x, 10).unwrap();
    assert!(p.to_vec::<f32>().unwrap().iter().all(|&v| v == 8.0));
}

#[test]
fn epoch_means_weight_the_last_partial_batch() {
    let (x, y) = blobs(4, 3); // 12 rows: batches of 5, 5, 2
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(3).into()]);
    m.compile(Sgd::new(0.0), sparse(), &[Metric::Accuracy])
        .unwrap();
    let h = m
        .fit(&x, &y, quiet().epochs(1).batch_size(5).shuffle(false))
        .unwrap();
    let ev = m.evaluate(&x, &y, 12).unwrap();
    assert!((h.get("loss").unwrap()[0] - ev["loss"]).abs() < 1e-6);
    assert!((h.get("accuracy").unwrap()[0] - ev["accuracy"]).abs() < 1e-6);
}

#[test]
fn fit_again_continues_training() {
    let (x, y) = blobs(10, 4);
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(3).into()]);
    m.compile(Sgd::new(0.1), sparse(), &[]).unwrap();
    let a = m.fit(&x, &y, quiet().epochs(3)).unwrap();
    let b = m.fit(&x, &y, quiet().epochs(3)).unwrap();
    assert!(b.get("loss").unwrap()[0] < a.get("loss").unwrap()[2]);
    let g = m.graph().clone();
    let it = g.by_name("sgd/iterations").unwrap();
    let steps = m
        .session()
        .unwrap()
        .variable(it)
        .unwrap()
        .scalar_value::<i32>()
        .unwrap();
    assert_eq!(steps, 6); // 2 fits x 3 epochs x 1 step (30 rows, batch 32)
}

/// `y = x * scale` per feature: a layer written with graph ops.
struct Scale;
impl Layer for Scale {
    fn kind(&self) -> &'static str {
        "Scale"
    }
    fn call<'g>(&mut self, ctx: &Ctx<'g>, x: Tensor<'g>) -> kiln::Result<Tensor<'g>> {
        let n = x.shape().dims()[1].fixed().unwrap_or(1);
        let s = ctx.weight("scale", [n], init::constant(0.1));
        Ok(x * s)
    }
}

#[test]
fn a_custom_layer_trains_inside_sequential() {
    let (x, y) = blobs(20, 5);
    let mut m = Sequential::new([Input::new([2]).into(), Scale.into(), Dense::new(3).into()]);
    m.compile(Adam::new(0.05), sparse(), &[Metric::Accuracy])
        .unwrap();
    assert!(m.summary().unwrap().contains("scale (Scale)"));
    let h = m.fit(&x, &y, quiet().epochs(20).batch_size(8)).unwrap();
    assert!(*h.get("accuracy").unwrap().last().unwrap() > 0.95);
    let w = m.get_weights().unwrap();
    let names: Vec<&str> = w.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["scale/scale", "dense/kernel", "dense/bias"]);
    let scale = &w[0].1;
    assert!(
        scale.to_vec::<f32>().unwrap().iter().all(|&s| s != 0.1),
        "trained"
    );
}

#[test]
fn a_sequential_graph_trains_in_a_hand_written_loop() {
    let (x, y) = blobs(20, 6);
    let mut m = Sequential::new([
        Input::new([2]).into(),
        Dense::new(8).relu().into(),
        Dense::new(3).into(),
    ]);
    m.build().unwrap();
    let g = m.graph();
    let (input, logits, training) = (
        m.input().unwrap(),
        m.output().unwrap(),
        m.training_flag().unwrap(),
    );
    let labels = g.placeholder("labels", DType::I32, [None]);
    let loss = logits
        .sparse_softmax_cross_entropy_with_logits(labels)
        .mean_all();
    let vars = m.trainable_variables();
    assert_eq!(vars.len(), 4);
    let grads = gradients(&[loss], &vars, None).unwrap();
    let pairs: Vec<_> = grads.into_iter().zip(vars.iter().copied()).collect();
    let train = Adam::new(0.05).apply_gradients(&pairs).unwrap();
    let mut sess = Session::new(g).unwrap();
    let feeds = || {
        vec![
            (input, x.clone()),
            (labels, y.clone()),
            (training, Array::scalar(true)),
        ]
    };
    let first = sess.run(&[loss], &feeds()).unwrap()[0]
        .scalar_value::<f32>()
        .unwrap();
    for _ in 0..100 {
        sess.run(&[train], &feeds()).unwrap();
    }
    let last = sess.run(&[loss], &feeds()).unwrap()[0]
        .scalar_value::<f32>()
        .unwrap();
    assert!(last < first / 10.0, "{first} -> {last}");
}

#[test]
fn summary_reads_like_keras() {
    let mut m = Sequential::new([
        Input::new([784]).into(),
        Dense::new(256).relu().into(),
        Dropout::new(0.2).into(),
        Dense::new(128).relu().into(),
        Dense::new(10).into(),
    ]);
    insta::assert_snapshot!(m.summary().unwrap());
}

#[test]
fn weights_save_load_and_checkpoint_the_best_epoch() {
    let dir = std::env::temp_dir().join(format!("kiln-nn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (x, y) = blobs(10, 7);
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(3).into()]);
    m.compile(Adam::new(0.05), sparse(), &[Metric::Accuracy])
        .unwrap();
    let best = dir.join("best.safetensors");
    let h = m
        .fit(
            &x,
            &y,
            quiet().epochs(5).validation_split(0.2).callback(
                ModelCheckpoint::new(&best)
                    .monitor("val_accuracy")
                    .save_best_only(),
            ),
        )
        .unwrap();
    assert!(best.exists());
    assert!(h.get("val_accuracy").is_some());
    let before = m.predict(&x, 32).unwrap();
    let path = dir.join("w.safetensors");
    m.save_weights(&path).unwrap();
    let mut other = Sequential::new([Input::new([2]).into(), Dense::new(3).into()]).seed(99);
    other.compile(Adam::new(0.05), sparse(), &[]).unwrap();
    assert!(!other.predict(&x, 32).unwrap().bits_eq(&before));
    other.load_weights(&path).unwrap();
    assert!(other.predict(&x, 32).unwrap().bits_eq(&before));
    // A model with other shapes refuses the file and keeps its weights.
    let mut wrong = Sequential::new([Input::new([2]).into(), Dense::new(4).into()]);
    wrong.compile(Adam::new(0.05), sparse(), &[]).unwrap();
    let keep = wrong.get_weights().unwrap();
    let e = wrong.load_weights(&path).unwrap_err().to_string();
    assert!(e.contains("no weight was changed"), "{e}");
    assert_eq!(wrong.get_weights().unwrap(), keep);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_functional_model_with_two_inputs_trains() {
    let (x, y) = blobs(15, 8);
    // The two coordinates as two inputs.
    let xv = x.to_vec::<f32>().unwrap();
    let a = Array::new([45, 1], xv.iter().step_by(2).copied().collect()).unwrap();
    let b = Array::new([45, 1], xv.iter().skip(1).step_by(2).copied().collect()).unwrap();
    let mut m = Model::functional(&[&[1], &[1]], |bld, ins| {
        let ha = bld.apply(Dense::new(8).relu(), ins[0])?;
        let hb = bld.apply(Dense::new(8).relu(), ins[1])?;
        Ok(vec![bld.apply(Dense::new(3), ha + hb)?])
    })
    .unwrap();
    m.compile(Adam::new(0.05), sparse(), &[Metric::Accuracy])
        .unwrap();
    let h = m
        .fit([&a, &b], &y, quiet().epochs(40).batch_size(9))
        .unwrap();
    assert!(*h.get("accuracy").unwrap().last().unwrap() > 0.95);
    assert_eq!(m.predict([&a, &b], 8).unwrap().shape(), &[45, 3]);
}

#[test]
fn batch_normalization_tracks_moving_statistics_and_uses_them_at_inference() {
    // Features far from zero mean and unit scale.
    let (x0, y) = blobs(30, 9);
    let xs: Vec<f32> = x0
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if i % 2 == 0 {
                50.0 + 10.0 * v
            } else {
                -20.0 + 0.1 * v
            }
        })
        .collect();
    let x = Array::new([90, 2], xs.clone()).unwrap();
    let mut m = Sequential::new([
        Input::new([2]).into(),
        BatchNormalization::new().momentum(0.5).into(),
        Dense::new(3).into(),
    ]);
    m.compile(Adam::new(0.05), sparse(), &[Metric::Accuracy])
        .unwrap();
    let s = m.summary().unwrap();
    assert!(
        s.contains("batch_normalization (BatchNormalization)"),
        "{s}"
    );
    assert!(s.contains("Non-trainable params: 4"), "{s}");
    let h = m.fit(&x, &y, quiet().epochs(30).batch_size(90)).unwrap();
    assert!(*h.get("accuracy").unwrap().last().unwrap() > 0.95);
    // With full batches and momentum 0.5, the moving mean has converged to the data mean.
    let w = m.get_weights().unwrap();
    let mm = &w
        .iter()
        .find(|(n, _)| n.ends_with("moving_mean"))
        .unwrap()
        .1;
    let mean0 = xs.iter().step_by(2).map(|&v| v as f64).sum::<f64>() / 90.0;
    let got = mm.to_vec::<f32>().unwrap()[0] as f64;
    assert!((got - mean0).abs() < 1e-3 * mean0.abs(), "{got} vs {mean0}");
    // Inference does not depend on the batch: one row alone predicts as it does in a batch.
    let all = m.predict(&x, 90).unwrap().to_vec::<f32>().unwrap();
    let one = m
        .predict(&kiln::data::take_rows(&x, &[7]).unwrap(), 1)
        .unwrap();
    assert_eq!(one.to_vec::<f32>().unwrap(), all[21..24].to_vec());
    // Evaluate never moves the statistics.
    m.evaluate(&x, &y, 10).unwrap();
    let again = m.get_weights().unwrap();
    assert_eq!(w, again);
}

#[test]
fn losses_and_metrics_match_hand_computed_values() {
    let g = Graph::new();
    let c = |shape: &[usize], v: Vec<f32>| g.constant(Array::new(shape, v).unwrap());
    let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
    // Binary: two examples, logits and the matching probabilities.
    let z = [2.0f64, -1.0];
    let logits = c(&[2, 1], z.iter().map(|&v| v as f32).collect());
    let probs = c(&[2, 1], z.iter().map(|&v| sig(v) as f32).collect());
    let yb = c(&[2, 1], vec![1.0, 1.0]);
    let bce = -(sig(2.0).ln() + sig(-1.0).ln()) / 2.0;
    // Categorical: one example over 3 classes, target class 1.
    let l3 = [1.0f64, 2.0, 0.5];
    let lse = l3.iter().map(|v| v.exp()).sum::<f64>().ln();
    let cce = lse - 2.0;
    let logits3 = c(&[1, 3], l3.iter().map(|&v| v as f32).collect());
    let probs3 = c(
        &[1, 3],
        l3.iter().map(|&v| (v - lse).exp() as f32).collect(),
    );
    let onehot = c(&[1, 3], vec![0.0, 1.0, 0.0]);
    let sparse_y = g.constant(Array::new([1], vec![1i32]).unwrap());
    let mse_p = c(&[2], vec![1.0, 3.0]);
    let mse_y = c(&[2], vec![0.0, 1.0]);
    let cases: Vec<(&str, Tensor<'_>, f64)> = vec![
        (
            "bce logits",
            Loss::BinaryCrossentropy { from_logits: true }.build(logits, yb),
            bce,
        ),
        (
            "bce probs",
            Loss::BinaryCrossentropy { from_logits: false }.build(probs, yb),
            bce,
        ),
        (
            "cce logits",
            Loss::CategoricalCrossentropy { from_logits: true }.build(logits3, onehot),
            cce,
        ),
        (
            "cce probs",
            Loss::CategoricalCrossentropy { from_logits: false }.build(probs3, onehot),
            cce,
        ),
        ("scce logits", sparse().build(logits3, sparse_y), cce),
        (
            "scce probs",
            Loss::SparseCategoricalCrossentropy { from_logits: false }.build(probs3, sparse_y),
            cce,
        ),
        (
            "mse",
            Loss::MeanSquaredError.build(mse_p, mse_y),
            (1.0 + 4.0) / 2.0,
        ),
        // Logit -1 is below the threshold 0: one of two right.
        (
            "binary accuracy",
            Metric::Accuracy.build(&Loss::BinaryCrossentropy { from_logits: true }, logits, yb),
            0.5,
        ),
        (
            "categorical accuracy",
            Metric::Accuracy.build(
                &Loss::CategoricalCrossentropy { from_logits: true },
                logits3,
                onehot,
            ),
            1.0,
        ),
        (
            "sparse accuracy",
            Metric::Accuracy.build(&sparse(), logits3, sparse_y),
            1.0,
        ),
    ];
    let mut s = Session::new(&g).unwrap();
    for (name, t, want) in cases {
        let got = s.run(&[t], &[]).unwrap()[0].scalar_value::<f32>().unwrap() as f64;
        assert!((got - want).abs() < 1e-6, "{name}: {got} vs {want}");
    }
}

#[test]
fn a_functional_model_with_two_outputs_predicts_both() {
    let mut m = Model::functional(&[&[3]], |b, ins| {
        let h = b.apply(Dense::new(4).relu(), ins[0])?;
        let class = b.apply(Dense::new(2), h)?;
        let value = b.apply(Dense::new(1), h)?;
        Ok(vec![class, value])
    })
    .unwrap();
    let x = Array::new([5, 3], vec![0.5f32; 15]).unwrap();
    let outs = m.predict_outputs(&x, 2).unwrap();
    assert_eq!(outs[0].shape(), &[5, 2]);
    assert_eq!(outs[1].shape(), &[5, 1]);
    let e = m
        .compile(Sgd::new(0.1), Loss::MeanSquaredError, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("one output"), "{e}");
}

/// The Keras layer's modules depend one way (ARCHITECTURE.md, "The Keras layer"):
/// `batch`, `history` <- `model` <- `check`, `callbacks` <- `fit`. A `use` pointing back up is a cycle again.
#[test]
fn nn_modules_depend_one_way() {
    let src = |name: &str| {
        std::fs::read_to_string(format!("{}/src/nn/{name}.rs", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    // What each module may not name, because it sits above it.
    let rules = [
        (
            "batch",
            &["super::model", "super::callbacks", "super::fit", "nn::"][..],
        ),
        (
            "model",
            &["super::callbacks", "super::fit", "super::check"][..],
        ),
        ("check", &["super::callbacks", "super::fit"][..]),
        (
            "history",
            &[
                "super::model",
                "super::callbacks",
                "super::fit",
                "super::check",
            ][..],
        ),
        ("callbacks", &["super::fit"][..]),
    ];
    for (module, above) in rules {
        let text = src(module);
        for a in above {
            assert!(!text.contains(a), "src/nn/{module}.rs names {a}");
        }
    }
    // And the modules above do use the ones below (the rule is not vacuous).
    assert!(src("fit").contains("super::callbacks"));
    assert!(src("callbacks").contains("super::model::Model"));
    assert!(src("fit").contains("super::check"));
    assert!(src("check").contains("super::model::Model"));
    assert!(src("fit").contains("super::history::History"));
}
