//! `FitConfig::distributed` in one process (the reference mode, default build): what it
//! computes against a plain `fit` (the same update up to f32 rounding, with SGD, which shows
//! a wrongly scaled gradient where Adam would hide it), ragged last batches, exact logs, and
//! the errors for what it does not take. The runs across processes are `tests/dist_fit.rs`.

use kiln::data::Dataset;
use kiln::nn::*;
use kiln::prelude::*;

/// `rows` examples of 6 features and a linear target with noise, deterministic.
fn data(rows: usize) -> (Array, Array) {
    let mut s = 12345u64;
    let mut next = || {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let x: Vec<f32> = (0..rows * 6).map(|_| next()).collect();
    let y: Vec<f32> = x
        .chunks(6)
        .map(|r| r.iter().enumerate().map(|(i, v)| v * i as f32).sum::<f32>() + 0.1 * next())
        .collect();
    (
        Array::new([rows, 6], x).unwrap(),
        Array::new([rows, 1], y).unwrap(),
    )
}

fn model() -> Model {
    let mut m = Sequential::new([
        Input::new([6]).into(),
        Dense::new(8).relu().into(),
        Dense::new(1).into(),
    ]);
    m.compile(
        Sgd::new(0.05),
        Loss::MeanSquaredError,
        &[Metric::MeanAbsoluteError],
    )
    .unwrap();
    m
}

fn weights(m: &Model) -> Vec<f32> {
    m.get_weights()
        .unwrap()
        .into_iter()
        .flat_map(|(_, a)| a.to_vec::<f32>().unwrap())
        .collect()
}

fn fit(config: FitConfig, rows: usize) -> (Vec<f32>, History) {
    let (x, y) = data(rows);
    let mut m = model();
    let h = m.fit(&x, &y, config.verbosity(Verbosity::Silent)).unwrap();
    (weights(&m), h)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_reference_mode_follows_a_plain_fit_within_rounding() {
    // 250 rows in batches of 64: the last batch has 58 rows, cut 14/15/14/15 into four
    // micro-shards, each weighted by its rows.
    for rows in [256, 250] {
        let base = || FitConfig::new().epochs(3).batch_size(64).seed(3);
        let (w_plain, h_plain) = fit(base(), rows);
        for shards in [1, 2, 4] {
            let (w, h) = fit(base().distributed(shards), rows);
            let d = max_diff(&w, &w_plain);
            assert!(d < 1e-4, "{rows} rows, S = {shards}: max |dw| {d}");
            for key in ["loss", "mean_absolute_error"] {
                for (a, b) in h.get(key).unwrap().iter().zip(h_plain.get(key).unwrap()) {
                    assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{key}: {a} vs {b}");
                }
            }
        }
        // A wrong scale (2x the gradient, or 1/S too much) would be far from this.
        let (w_once, _) = fit(FitConfig::new().epochs(1).batch_size(64), rows);
        assert!(
            max_diff(&w_once, &w_plain) > 1e-3,
            "three epochs moved the weights"
        );
    }
}

#[test]
fn the_same_micro_shards_give_the_same_bits_and_others_do_not() {
    let base = || {
        FitConfig::new()
            .epochs(2)
            .batch_size(32)
            .validation_split(0.25)
    };
    let (a, ha) = fit(base().distributed(4), 200);
    let (b, hb) = fit(base().distributed(4), 200);
    assert_eq!(a, b);
    assert_eq!(ha, hb);
    let (c, _) = fit(base().distributed(2), 200);
    assert_ne!(a, c, "2 micro-shards sum in another order than 4");
    assert!(ha.get("val_loss").is_some());
}

#[test]
fn dropout_draws_by_step_and_micro_shard() {
    // Dropout's masks come from (step, micro-shard), so a run with dropout repeats exactly,
    // and two fits in a row continue the streams where a single longer fit would be.
    let run = |epochs: &[usize]| {
        let (x, y) = data(128);
        let mut m = Sequential::new([
            Input::new([6]).into(),
            Dense::new(16).relu().into(),
            Dropout::new(0.5).into(),
            Dense::new(1).into(),
        ]);
        m.compile(Adam::new(1e-2), Loss::MeanSquaredError, &[])
            .unwrap();
        for &e in epochs {
            let c = FitConfig::new()
                .epochs(e)
                .batch_size(32)
                .shuffle(false)
                .distributed(4)
                .verbosity(Verbosity::Silent);
            m.fit(&x, &y, c).unwrap();
        }
        (weights(&m), m.session().unwrap().run_count())
    };
    let (a, runs_a) = run(&[2]);
    let (b, _) = run(&[2]);
    assert_eq!(a, b);
    // 2 epochs of 4 steps, 4 micro-shards each: the counter stands at 32 runs.
    assert_eq!(runs_a, 32);
    let (c, _) = run(&[1, 1]);
    assert_eq!(a, c, "shuffle off: fit(1) twice is fit(2)");
}

#[test]
fn what_the_distributed_fit_refuses() {
    let (x, y) = data(64);
    let err = |m: &mut Model, c: FitConfig| m.fit(&x, &y, c).unwrap_err().to_string();

    let e = err(&mut model(), FitConfig::new().distributed(0));
    assert!(
        e.contains("FitConfig::distributed") && e.contains("dist_fit_local.rs"),
        "{e}"
    );

    // A state update that is not an f32 assign of a variable: a counter of steps.
    struct Count;
    impl Layer for Count {
        fn kind(&self) -> &'static str {
            "Count"
        }
        fn call<'g>(&mut self, ctx: &Ctx<'g>, x: Tensor<'g>) -> kiln::Result<Tensor<'g>> {
            let n = ctx.state("steps", [1], kiln::init::zeros());
            ctx.add_update(n.assign_add(1.0f32).cast(DType::F64));
            Ok(x)
        }
    }
    let mut m = Sequential::new([Input::new([6]).into(), Count.into(), Dense::new(1).into()]);
    m.compile(Sgd::new(0.1), Loss::MeanSquaredError, &[])
        .unwrap();
    let e = err(&mut m, FitConfig::new().distributed(2));
    assert!(
        e.contains("state updates") && e.contains("\"count/cast\" is a cast of f64"),
        "{e}"
    );
}

/// 3 classes for `data`'s rows: the sign pattern of two features.
fn classes(x: &Array) -> Array {
    let v: Vec<i32> = x
        .to_vec::<f32>()
        .unwrap()
        .chunks(6)
        .map(|r| i32::from(r[0] > 0.0) + i32::from(r[1] > 0.2))
        .collect();
    Array::new([v.len()], v).unwrap()
}

fn classifier(weighted_metrics: bool) -> Model {
    let mut m = Sequential::new([
        Input::new([6]).into(),
        Dense::new(8).relu().into(),
        Dense::new(3).into(),
    ]);
    m.compile(
        Sgd::new(0.2),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::Accuracy],
    )
    .unwrap();
    if weighted_metrics {
        m.weighted_metrics(&[
            Metric::Accuracy,
            Metric::SparseTopKCategoricalAccuracy { k: 2 },
        ])
        .unwrap();
    }
    m
}

#[test]
fn sample_and_class_weights_and_weighted_metrics_train_as_one_process_does() {
    // 250 rows, 20% held out: 200 to train in batches of 64 (the last of 8 rows, cut 2/2/2/2).
    let (x, _) = data(250);
    let y = classes(&x);
    let map = [(0usize, 2.0f64), (2, 0.25)];
    let w: Vec<f32> = y
        .to_vec::<i32>()
        .unwrap()
        .iter()
        .map(|&c| [2.0, 1.0, 0.25][c as usize])
        .collect();
    let w = Array::new([250], w).unwrap();
    let run = |c: FitConfig| {
        let mut m = classifier(true);
        let c = c
            .epochs(3)
            .batch_size(64)
            .seed(5)
            .validation_split(0.2)
            .verbosity(Verbosity::Silent);
        let h = m.fit(&x, &y, c).unwrap();
        (weights(&m), h)
    };
    let (w_plain, h_plain) = run(FitConfig::new().sample_weight(&w));
    let (w_sw, h_sw) = run(FitConfig::new().sample_weight(&w).distributed(4));
    let (w_cw, h_cw) = run(FitConfig::new().class_weight(map).distributed(4));
    // class_weight is the same weights by another route: the same bits.
    assert_eq!(w_sw, w_cw);
    assert_eq!(h_sw, h_cw);
    // The reference mode against one process on whole batches: f32 rounding apart.
    let d = max_diff(&w_sw, &w_plain);
    assert!(d < 1e-4, "max |dw| {d}");
    for key in [
        "loss",
        "accuracy",
        "weighted_accuracy",
        "sparse_top_k_categorical_accuracy",
        "val_loss",
        "val_weighted_accuracy",
        "val_sparse_top_k_categorical_accuracy",
    ] {
        let (a, b) = (h_sw.get(key).unwrap(), h_plain.get(key).unwrap());
        assert_eq!(a.len(), 3, "{key}");
        for (a, b) in a.iter().zip(b) {
            assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{key}: {a} vs {b}");
        }
    }
    // The weights matter: unweighted, the weights and the weighted accuracy differ.
    let (w_un, h_un) = run(FitConfig::new().distributed(4));
    assert!(max_diff(&w_un, &w_sw) > 1e-3);
    assert_ne!(h_un.get("weighted_accuracy"), h_sw.get("weighted_accuracy"));
    // Unweighted, a weighted metric weighs each row 1 and is its unweighted form.
    for (a, b) in h_un
        .get("weighted_accuracy")
        .unwrap()
        .iter()
        .zip(h_un.get("accuracy").unwrap())
    {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
}

#[test]
fn batch_normalization_moves_by_the_row_weighted_mean_of_the_micro_shards() {
    // One step on 62 rows cut 15/16/15/16: BatchNormalization right after the input sees
    // the rows themselves, so its new moving statistics are known by hand.
    let (x, y) = data(62);
    let m = 0.5;
    let bn_model = || {
        let mut b = Sequential::new([
            Input::new([6]).into(),
            BatchNormalization::new().momentum(m).into(),
            Dense::new(1).into(),
        ]);
        b.compile(Sgd::new(0.05), Loss::MeanSquaredError, &[])
            .unwrap();
        b
    };
    let stats = |b: &Model| {
        let w = b.get_weights().unwrap();
        let get = |k: &str| {
            w.iter()
                .find(|(n, _)| n.ends_with(k))
                .map(|(_, a)| a.to_vec::<f32>().unwrap())
                .unwrap()
        };
        (get("moving_mean"), get("moving_variance"))
    };
    let one_step = |c: FitConfig| {
        let mut b = bn_model();
        let c = c.epochs(1).batch_size(62).shuffle(false);
        b.fit(&x, &y, c.verbosity(Verbosity::Silent)).unwrap();
        b
    };
    let b = one_step(FitConfig::new().distributed(4));
    let (mean, var) = stats(&b);
    let xs = x.to_vec::<f32>().unwrap();
    let cuts = [0, 15, 31, 46, 62];
    for f in 0..6 {
        let (mut want_mean, mut want_var) = (0f64, 0f64);
        for s in 0..4 {
            let col: Vec<f64> = (cuts[s]..cuts[s + 1])
                .map(|r| f64::from(xs[r * 6 + f]))
                .collect();
            let n = col.len() as f64;
            let mu = col.iter().sum::<f64>() / n;
            let v = col.iter().map(|c| (c - mu) * (c - mu)).sum::<f64>() / n;
            let share = n / 62.0;
            want_mean += share * (1.0 - m) * mu;
            want_var += share * (m + (1.0 - m) * v);
        }
        assert!(
            (f64::from(mean[f]) - want_mean).abs() < 1e-5,
            "feature {f}: {} vs {want_mean}",
            mean[f]
        );
        assert!(
            (f64::from(var[f]) - want_var).abs() < 1e-5,
            "feature {f}: {} vs {want_var}",
            var[f]
        );
        // Not the whole batch's variance (SyncBatchNorm's): the micro-shards' own.
        let col: Vec<f64> = (0..62).map(|r| f64::from(xs[r * 6 + f])).collect();
        let mu = col.iter().sum::<f64>() / 62.0;
        let v = col.iter().map(|c| (c - mu) * (c - mu)).sum::<f64>() / 62.0;
        assert!((m + (1.0 - m) * v - want_var).abs() > 1e-4, "feature {f}");
    }
    // One micro-shard is the plain fit's batch statistics, up to f32 rounding.
    let (p_mean, p_var) = stats(&one_step(FitConfig::new()));
    let (d_mean, d_var) = stats(&one_step(FitConfig::new().distributed(1)));
    assert!(max_diff(&p_mean, &d_mean) < 1e-6 && max_diff(&p_var, &d_var) < 1e-6);
    // And a longer run repeats bit for bit, evaluation included.
    let run = || {
        let mut b = bn_model();
        let c = FitConfig::new()
            .epochs(3)
            .batch_size(16)
            .validation_split(0.25);
        let h = b
            .fit(&x, &y, c.distributed(2).verbosity(Verbosity::Silent))
            .unwrap();
        (weights(&b), h)
    };
    assert_eq!(run(), run());
}

#[test]
fn a_dataset_trains_to_the_bits_of_its_arrays() {
    let (x, y) = data(200);
    let w: Vec<f32> = (0..200).map(|i| (i % 5) as f32 * 0.5).collect();
    let w = Array::new([200], w).unwrap();
    let (vx, vy) = data(40);
    let base = || {
        FitConfig::new()
            .epochs(3)
            .batch_size(48) // validation_data's batches, for fit_dataset too
            .distributed(4)
            .validation_data(&vx, &vy)
            .verbosity(Verbosity::Silent)
    };
    let arrays = |c: FitConfig| {
        let mut m = model();
        let h = m.fit(&x, &y, c.shuffle(false)).unwrap();
        (weights(&m), h)
    };
    let dataset = |ds: &Dataset, c: FitConfig| {
        let mut m = model();
        let h = m.fit_dataset(ds, c).unwrap();
        (weights(&m), h)
    };
    let ds = Dataset::from_arrays(x.clone(), y.clone())
        .unwrap()
        .batch(48);
    let a = arrays(base());
    assert_eq!(dataset(&ds, base()), a);
    // Weighted items, (x, y, w): the same as the weights given to fit.
    let dsw = Dataset::from_slices((x.clone(), y.clone(), w.clone()))
        .unwrap()
        .batch(48);
    let aw = arrays(base().sample_weight(&w));
    assert_eq!(dataset(&dsw, base()), aw);
    assert_ne!(aw.0, a.0, "the weights matter");
    // An endless dataset: an epoch is steps_per_epoch batches (5: one pass over the 200
    // rows in batches of 48 is 5 batches), the iterator going on across epochs.
    let endless = ds.repeat(usize::MAX);
    assert_eq!(dataset(&endless, base().steps_per_epoch(5)), a);
    // 3 batches an epoch for 4 epochs: 12 batches, as a plain fit_dataset runs them.
    let c = || base().epochs(4).steps_per_epoch(3);
    let (w3, h3) = dataset(&endless, c());
    let mut m = model();
    let h_plain = m
        .fit_dataset(
            &endless,
            FitConfig::new()
                .epochs(4)
                .batch_size(48)
                .steps_per_epoch(3)
                .validation_data(&vx, &vy)
                .verbosity(Verbosity::Silent),
        )
        .unwrap();
    assert!(max_diff(&w3, &weights(&m)) < 1e-4);
    assert_eq!(h3.get("loss").unwrap().len(), 4);
    for (a, b) in h3
        .get("val_loss")
        .unwrap()
        .iter()
        .zip(h_plain.get("val_loss").unwrap())
    {
        assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{a} vs {b}");
    }
    // A shuffled dataset with a validation dataset repeats bit for bit.
    let shuffled = Dataset::from_arrays(x.clone(), y.clone())
        .unwrap()
        .shuffle(200, 9)
        .batch(48);
    let val = Dataset::from_arrays(vx.clone(), vy.clone())
        .unwrap()
        .batch(16);
    let c = || {
        FitConfig::new()
            .epochs(2)
            .distributed(2)
            .validation_dataset(&val)
            .verbosity(Verbosity::Silent)
    };
    let (s1, h1) = dataset(&shuffled, c());
    assert_eq!((s1.clone(), h1.clone()), dataset(&shuffled, c()));
    assert_ne!(s1, a.0, "shuffled, not in order");
    assert!(h1.get("val_loss").is_some());
}

#[test]
fn only_callbacks_that_write_run_on_rank_0_alone() {
    let dir = std::env::temp_dir();
    assert!(ModelCheckpoint::new(dir.join("x.safetensors")).root_only());
    assert!(CSVLogger::new(dir.join("x.csv")).root_only());
    assert!(!EarlyStopping::on("loss").root_only());
    assert!(!ReduceLROnPlateau::on("loss").root_only());
    assert!(!TerminateOnNaN::new().root_only());
}
