//! Whole-model save and load (`Model::save`, `nn::load_model`, `Model::save_inference`):
//! training resumed from disk is bitwise the uninterrupted run (in this process and in a
//! fresh one), and every bad directory is a clear error.

use kiln::nn::*;
use kiln::prelude::*;
use kiln::train::ExponentialDecay;
use std::path::{Path, PathBuf};

/// A fresh, empty scratch path for one test.
fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("kiln-save-model-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// 96 rows of 4 features in 3 classes, deterministic.
fn data() -> (Array, Array) {
    let n = 96;
    let x: Vec<f32> = (0..n * 4)
        .map(|i| ((i as u32).wrapping_mul(2654435761) >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        .collect();
    let y: Vec<i32> = (0..n)
        .map(|r| {
            let s = x[r * 4] + x[r * 4 + 1] - x[r * 4 + 2];
            if s > 0.2 {
                2
            } else if s > -0.2 {
                1
            } else {
                0
            }
        })
        .collect();
    (Array::new([n, 4], x).unwrap(), Array::new([n], y).unwrap())
}

/// Dense with an L2 penalty, batch normalization (moving statistics: updates), dropout
/// (random streams), Adam on an exponential-decay schedule (step count and slots).
fn model() -> Model {
    let mut m = Sequential::new([
        Input::new([4]).into(),
        Dense::new(16)
            .relu()
            .kernel_regularizer(Regularizer::l2(1e-3))
            .into(),
        BatchNormalization::new().into(),
        Dropout::new(0.25).into(),
        Dense::new(3).into(),
    ]);
    m.compile(
        Adam::new(ExponentialDecay::new(0.02, 5, 0.9)),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[
            Metric::Accuracy,
            Metric::SparseTopKCategoricalAccuracy { k: 2 },
        ],
    )
    .unwrap();
    m
}

/// `epochs` epochs from epoch `first` of the uninterrupted run (its shuffle seed).
fn fit(m: &mut Model, first: usize, epochs: usize) -> History {
    let (x, y) = data();
    m.fit(
        &x,
        &y,
        FitConfig::new()
            .epochs(epochs)
            .batch_size(16)
            .validation_split(0.25)
            .seed(7 + first as u64)
            .verbosity(Verbosity::Silent),
    )
    .unwrap()
}

/// Every variable (weights, slots, step count, moving statistics) and the run counter.
fn state(m: &mut Model) -> (Vec<(String, Vec<u32>)>, u64) {
    let s = m.session().unwrap();
    let vars = s
        .named_variables()
        .into_iter()
        .map(|(n, a)| {
            (
                n,
                a.to_f64_vec()
                    .iter()
                    .map(|v| (*v as f32).to_bits())
                    .collect(),
            )
        })
        .collect();
    (vars, s.run_count())
}

const N: usize = 3;
const M: usize = 4;

#[test]
fn resumed_training_is_bitwise_the_uninterrupted_run() {
    let mut straight = model();
    let h_straight = fit(&mut straight, 0, N + M);

    let dir = scratch("resume");
    let mut first = model();
    fit(&mut first, 0, N);
    first.save(&dir).unwrap();
    drop(first);
    let mut resumed = load_model(&dir).unwrap();
    let h = fit(&mut resumed, N, M);

    assert_eq!(state(&mut resumed), state(&mut straight));
    assert_eq!(
        resumed.get_weights().unwrap(),
        straight.get_weights().unwrap()
    );
    for key in [
        "loss",
        "accuracy",
        "val_loss",
        "val_sparse_top_k_categorical_accuracy",
    ] {
        let all = h_straight.get(key).unwrap();
        assert_eq!(h.get(key).unwrap(), &all[N..], "{key}");
    }
    // The summary survives, and the model is usable from another thread.
    assert_eq!(resumed.summary().unwrap(), straight.summary().unwrap());
    let (x, _) = data();
    let want = straight.predict(&x, 32).unwrap();
    let got = std::thread::spawn(move || resumed.predict(&x, 32).unwrap())
        .join()
        .unwrap();
    assert_eq!(got, want);
    std::fs::remove_dir_all(&dir).ok();
}

/// The child half of `resumes_in_a_fresh_process`: loads, trains M epochs, saves.
#[test]
#[ignore = "run by resumes_in_a_fresh_process in a child process"]
fn child_resume() {
    let Some(dir) = std::env::var_os("KILN_SAVE_MODEL_CHILD") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mut m = load_model(dir.join("model")).unwrap();
    fit(&mut m, N, M);
    m.save(dir.join("after")).unwrap();
}

#[test]
fn resumes_in_a_fresh_process() {
    let dir = scratch("process");
    std::fs::create_dir_all(&dir).unwrap();
    let mut first = model();
    fit(&mut first, 0, N);
    first.save(dir.join("model")).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["child_resume", "--exact", "--ignored", "--test-threads=1"])
        .env("KILN_SAVE_MODEL_CHILD", &dir)
        .status()
        .unwrap();
    assert!(status.success());
    let mut after = load_model(dir.join("after")).unwrap();
    let mut straight = model();
    fit(&mut straight, 0, N + M);
    assert_eq!(state(&mut after), state(&mut straight));
    std::fs::remove_dir_all(&dir).ok();
}

/// A layer kiln does not know, and a loss of the user's own.
struct Gated;

impl Layer for Gated {
    fn kind(&self) -> &'static str {
        "Gated"
    }

    fn call<'g>(&mut self, ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        let w = ctx.weight("w", [4, 8], init::glorot_uniform(ctx.next_seed()));
        let v = ctx.weight("v", [4, 8], init::glorot_uniform(ctx.next_seed()));
        Ok(x.matmul(w) * x.matmul(v).sigmoid())
    }
}

fn half_mse<'g>(p: Tensor<'g>, y: Tensor<'g>) -> Tensor<'g> {
    (p - y).square().mean_all() * 0.5
}

fn custom_model() -> Model {
    let mut m = Sequential::new([Input::new([4]).into(), Gated.into(), Dense::new(1).into()]);
    m.compile(
        Sgd::new(0.05).momentum(0.9),
        Loss::custom("half_mse", half_mse),
        &[Metric::custom("half_mse_metric", half_mse)],
    )
    .unwrap();
    m
}

#[test]
fn custom_layers_and_losses_load_without_registration() {
    let (x, _) = data();
    let y = Array::new(
        [96, 1],
        x.to_vec::<f32>()
            .unwrap()
            .chunks(4)
            .map(|r| r[0] - r[3])
            .collect(),
    )
    .unwrap();
    let cfg = || {
        FitConfig::new()
            .epochs(2)
            .batch_size(32)
            .shuffle(false)
            .verbosity(Verbosity::Silent)
    };
    let mut straight = custom_model();
    let all = straight.fit(&x, &y, cfg().epochs(4)).unwrap();
    let dir = scratch("custom");
    let mut m = custom_model();
    m.fit(&x, &y, cfg()).unwrap();
    m.save(&dir).unwrap();
    let text = std::fs::read_to_string(dir.join("model.txt")).unwrap();
    assert!(text.contains("loss custom name=\"half_mse\""), "{text}");
    assert!(text.contains("\"Gated\""), "{text}");
    let mut back = load_model(&dir).unwrap();
    let h = back.fit(&x, &y, cfg()).unwrap();
    assert_eq!(h.get("loss").unwrap(), &all.get("loss").unwrap()[2..]);
    assert_eq!(
        h.get("half_mse_metric").unwrap(),
        &all.get("half_mse_metric").unwrap()[2..]
    );
    assert_eq!(back.get_weights().unwrap(), straight.get_weights().unwrap());
    // Compiling again needs the code, which was not saved: a clear error, not a panic.
    let err = back
        .compile(Sgd::new(0.1), back_loss(&dir), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("loaded from a saved model"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The loss a loaded model was compiled with (its custom stand-in).
fn back_loss(dir: &Path) -> Loss {
    let m = load_model(dir).unwrap();
    m.loss().unwrap()
}

/// A saved compiled model in a fresh directory.
fn saved(name: &str) -> PathBuf {
    let dir = scratch(name);
    model().save(&dir).unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    load_model(dir).err().expect("load should fail").to_string()
}

#[test]
fn bad_directories_are_clear_errors() {
    // Missing.
    let err = load_err(&scratch("missing"));
    assert!(err.contains("model.txt"), "{err}");

    // Another format version.
    let dir = saved("version");
    let cfg = dir.join("model.txt");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replacen("kiln.model 1", "kiln.model 99", 1)).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("format version 99"), "{err}");

    // Not a config at all; an unknown record; an unknown loss; a node out of range.
    for (bad, want) in [
        (
            "PK\u{3}\u{4} zip bytes".to_string(),
            "not a kiln model config",
        ),
        (
            text.replace("seed 42", "colour blue"),
            "unknown record \"colour\"",
        ),
        (
            text.replace("sparse_categorical_crossentropy", "focal_crossentropy"),
            "unknown loss \"focal_crossentropy\"",
        ),
        (text.replace("training ", "training 9999"), "lists"),
        (
            text.replace("name \"sequential\"", "name \"unclosed"),
            "not closed",
        ),
    ] {
        std::fs::write(&cfg, &bad).unwrap();
        let err = load_err(&dir);
        assert!(err.contains(want), "{want}: {err}");
        assert!(err.contains("model.txt"), "{err}");
    }
    std::fs::write(&cfg, &text).unwrap();
    load_model(&dir).unwrap();

    // A truncated graph.
    let graph = dir.join("graph.kiln");
    let g = std::fs::read_to_string(&graph).unwrap();
    std::fs::write(&graph, &g[..g.len() / 2]).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("graph.kiln"), "{err}");
    std::fs::write(&graph, &g).unwrap();

    // A flipped byte in the variables: the checksum.
    let vars = dir.join("variables.safetensors");
    let mut v = std::fs::read(&vars).unwrap();
    let last = v.len() - 1;
    v[last] ^= 1;
    std::fs::write(&vars, &v).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("variables.safetensors"), "{err}");

    // Variables of another model: shapes that do not match the graph.
    let other = scratch("other");
    let mut wide = Sequential::new([Input::new([4]).into(), Dense::new(5).into()]);
    wide.compile(Sgd::new(0.1), Loss::MeanSquaredError, &[])
        .unwrap();
    wide.save(&other).unwrap();
    std::fs::copy(other.join("variables.safetensors"), &vars).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("in the graph"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&other).ok();
}

#[test]
fn save_replaces_a_model_but_never_a_directory_of_yours() {
    let dir = scratch("replace");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let err = model().save(&dir).unwrap_err().to_string();
    assert!(err.contains("refused"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "mine"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // A second save replaces the first whole, and leaves no temporary behind.
    let mut m = model();
    m.save(&dir).unwrap();
    fit(&mut m, 0, 1);
    m.save(&dir).unwrap();
    let mut back = load_model(&dir).unwrap();
    assert_eq!(state(&mut back), state(&mut m));
    let parent = dir.parent().unwrap();
    let stray = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.starts_with(".kiln-save-") || n.starts_with(".kiln-old-")
        })
        .count();
    assert_eq!(stray, 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn inference_model_is_pruned_named_and_predicts_the_same_bits() {
    let mut m = model();
    fit(&mut m, 0, 2);
    let dir = scratch("inference");
    m.save_inference(&dir).unwrap();
    let text = std::fs::read_to_string(dir.join("graph.kiln")).unwrap();
    for gone in ["adam", "target", "training", "random", "iterations"] {
        assert!(!text.contains(gone), "{gone} in:\n{text}");
    }
    assert!(text.contains("\"output\""), "{text}");
    let (g, mut sess) = kiln::saved::load(&dir).unwrap();
    let (x, out) = (g.by_name("input").unwrap(), g.by_name("output").unwrap());
    let (xv, _) = data();
    let got = sess.run(&[out], &[(x, xv.clone())]).unwrap();
    assert_eq!(got[0], m.predict(&xv, 96).unwrap());
    std::fs::remove_dir_all(&dir).ok();
}
