//! The command lines: `kiln-run` (run, inspect, `--help`, `--version`, clap's errors) as a
//! separate process, and the MNIST examples' arguments (`examples/lab/mod.rs`).

#[path = "../examples/lab/mod.rs"]
mod lab;

use kiln::nn::*;
use kiln::prelude::*;
use std::path::PathBuf;
use std::process::{Command, Output};

fn kiln_run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln-run"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("kiln-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

#[test]
fn help_version_and_unknown_options() {
    let out = kiln_run(&["--help".as_ref()]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in ["inspect", "onnx-conformance", "run", "--version"] {
        assert!(help.contains(word), "{word}: {help}");
    }
    let out = kiln_run(&["--version".as_ref()]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("kiln-run {}", env!("CARGO_PKG_VERSION"))
    );

    let out = kiln_run(&["inspect".as_ref(), "--colour".as_ref(), "x".as_ref()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("unexpected argument '--colour'"), "{err}");

    let out = kiln_run(&["model-dir".as_ref()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("missing <INPUTS> <OUTPUTS> <FETCH>"), "{err}");
    assert!(err.contains("Usage"), "{err}");
}

fn trained_model() -> Model {
    let mut m = Sequential::new([
        Input::new([3]).into(),
        Dense::new(8).relu().into(),
        Dropout::new(0.5).into(),
        Dense::new(2).into(),
    ]);
    m.compile(
        Adam::new(0.01),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::Accuracy],
    )
    .unwrap();
    let x = Array::new([4, 3], (0..12).map(|i| i as f32 / 12.0).collect()).unwrap();
    let y = Array::new([4], vec![0i32, 1, 0, 1]).unwrap();
    m.fit(
        &x,
        &y,
        FitConfig::new().epochs(2).verbosity(Verbosity::Silent),
    )
    .unwrap();
    m
}

#[test]
fn inspect_lists_inputs_outputs_and_variables() {
    let dir = scratch("inspect");
    let m = trained_model();
    m.save(dir.join("whole")).unwrap();
    m.save_inference(dir.join("serving")).unwrap();

    let out = kiln_run(&["inspect".as_ref(), dir.join("whole").as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    for want in [
        "a whole model",
        "dense_1 (Dense)",
        "input  f32[?,3]",
        "f32[?,2]",
        "dense/kernel",
        "f32[3,8]",
        "adam/iterations",
        "i32[]",
        "SparseCategoricalCrossentropy",
    ] {
        assert!(report.contains(want), "{want}:\n{report}");
    }

    let out = kiln_run(&["inspect".as_ref(), dir.join("serving").as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains("outputs (1):\n  output  f32[?,2]"),
        "{report}"
    );
    assert!(
        report.contains("inputs (1):\n  input  f32[?,3]"),
        "{report}"
    );
    assert!(!report.contains("adam"), "{report}");

    let onnx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx-models/mlp.onnx");
    let out = kiln_run(&["inspect".as_ref(), onnx.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("an ONNX model"), "{report}");
    assert!(report.contains("outputs (1):\n  y"), "{report}");

    let out = kiln_run(&["inspect".as_ref(), dir.join("nothing").as_os_str()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("graph.kiln"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// An inference model runs in another process by its output's name, with or without the
/// word `run`, and gives `predict`'s bits.
#[test]
fn kiln_run_runs_an_inference_model_by_its_output_name() {
    let dir = scratch("run");
    let mut m = trained_model();
    m.save_inference(dir.join("serving")).unwrap();
    let x = Array::new([2, 3], vec![0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6]).unwrap();
    let want = m.predict(&x, 32).unwrap();
    let mut ck = kiln::checkpoint::Checkpoint::default();
    ck.tensors.insert("input".into(), x);
    let (inp, outp) = (dir.join("in.safetensors"), dir.join("out.safetensors"));
    kiln::checkpoint::write(&inp, &ck).unwrap();
    for run_word in [true, false] {
        let model = dir.join("serving");
        let mut args: Vec<&std::ffi::OsStr> = vec![];
        if run_word {
            args.push("run".as_ref());
        }
        args.extend([
            model.as_os_str(),
            inp.as_os_str(),
            outp.as_os_str(),
            "output".as_ref(),
        ]);
        let out = kiln_run(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let got = kiln::checkpoint::read(&outp).unwrap();
        assert!(got.tensors["output"].bits_eq(&want));
        std::fs::remove_file(&outp).unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `mnist_lowlevel -- --epochs 1` once trained 5 epochs on 1 row; the MNIST examples'
/// parser takes named options, keeps the example's default, and refuses what it does not
/// know instead of reading it as a directory or a number.
#[test]
fn mnist_example_arguments() {
    let a =
        lab::mnist_args_from("mnist", 30, ["mnist", "--epochs", "1", "--subset", "500"]).unwrap();
    assert_eq!((a.epochs, a.subset, a.dir.clone()), (1, Some(500), None));
    let a = lab::mnist_args_from("mnist", 30, ["mnist", "data/fashion"]).unwrap();
    assert_eq!((a.epochs, a.dir), (30, Some(PathBuf::from("data/fashion"))));
    let err = lab::mnist_args_from("mnist", 30, ["mnist", "--epoch", "1"]).unwrap_err();
    assert!(
        err.to_string().contains("unexpected argument '--epoch'"),
        "{err}"
    );
    let err = lab::mnist_args_from("mnist", 30, ["mnist", "--epochs", "one"]).unwrap_err();
    assert!(err.to_string().contains("invalid value 'one'"), "{err}");
    let help = lab::mnist_args_from("mnist_cnn", 15, ["mnist_cnn", "--help"])
        .unwrap_err()
        .to_string();
    assert!(help.contains("[default: 15]"), "{help}");
}
