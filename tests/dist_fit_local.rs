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

    let w = Array::new([64], vec![1f32; 64]).unwrap();
    let e = err(
        &mut model(),
        FitConfig::new().distributed(2).sample_weight(&w),
    );
    assert!(e.contains("sample_weight"), "{e}");

    let mut bn = Sequential::new([
        Input::new([6]).into(),
        BatchNormalization::new().into(),
        Dense::new(1).into(),
    ]);
    bn.compile(Sgd::new(0.1), Loss::MeanSquaredError, &[])
        .unwrap();
    let e = err(&mut bn, FitConfig::new().distributed(2));
    assert!(e.contains("BatchNormalization"), "{e}");

    let ds = Dataset::from_arrays(x.clone(), y.clone())
        .unwrap()
        .batch(16);
    let e = model()
        .fit_dataset(&ds, FitConfig::new().distributed(2))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("fit_dataset") && e.contains("distributed"),
        "{e}"
    );
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
