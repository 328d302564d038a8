//! Imported ONNX models against onnxruntime, fine-tuning an imported model, and the import's
//! errors on bad files.
//!
//! `tests/data/onnx-models/` holds a small CNN (Conv, BatchNormalization, pooling, PyTorch's
//! Shape→Gather→Unsqueeze→Concat→Reshape flatten, Gemm, Softmax) and an MLP (Gemm, MatMul,
//! Add, Relu, Tanh), built with onnx's helper API by `make_models.py`, which also saved an
//! input and onnxruntime's output for each, so these tests need no Python.

use kiln::prelude::*;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/onnx-models")
        .join(name)
}

/// Runs `model` on its saved input on both backends and checks onnxruntime's output.
fn matches_onnxruntime(model: &str) {
    let m = kiln::onnx::import(data(&format!("{model}.onnx"))).unwrap();
    let io = kiln::checkpoint::read(data(&format!("{model}_io.safetensors"))).unwrap();
    let (xv, want) = (&io.tensors["x"], &io.tensors["y"]);
    let x = m.input(0).unwrap();
    assert_eq!(m.inputs[0].0, "x");
    assert_eq!(
        x.shape().dims()[0],
        Dim::Batch,
        "the dim_param batch becomes ?"
    );
    let y = m.output(0).unwrap();
    assert_eq!(m.outputs[0].0, "y");
    let want = want.to_vec::<f32>().unwrap();
    for backend in [Backend::Jit, Backend::Interpreter] {
        let mut sess = m.session_with_backend(backend).unwrap();
        let out = sess.run(&[y], &[(x, xv.clone())]).unwrap();
        assert_eq!(out[0].shape(), io.tensors["y"].shape());
        let got = out[0].to_vec::<f32>().unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                "{model} on {backend:?}: element {i} is {g}, onnxruntime gives {w}"
            );
        }
    }
}

#[test]
fn small_cnn_matches_onnxruntime() {
    matches_onnxruntime("cnn");
    // The shape subgraph folded at import: no Shape/Gather/Concat reached the graph, and the
    // initializers are variables (BatchNormalization's statistics not trainable).
    let m = kiln::onnx::import(data("cnn.onnx")).unwrap();
    let names: Vec<&str> = m.variables.iter().map(|v| v.name.as_str()).collect();
    assert!(
        names.contains(&"conv1.weight") && names.contains(&"fc.bias"),
        "{names:?}"
    );
    assert!(!names.contains(&"zero") && !names.contains(&"minus_one"));
    let state: Vec<&str> = m
        .variables
        .iter()
        .filter(|v| !v.trainable)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(state, ["bn1.running_mean", "bn1.running_var"]);
    assert_eq!(m.trainable_variables().len(), 8);
}

#[test]
fn small_mlp_matches_onnxruntime() {
    matches_onnxruntime("mlp");
}

/// One SGD step on the imported MLP changes its weights and lowers the loss.
#[test]
fn imported_mlp_fine_tunes() {
    let m = kiln::onnx::import(data("mlp.onnx")).unwrap();
    let g = &m.graph;
    let (x, logits) = (m.input(0).unwrap(), m.output(0).unwrap());
    let labels = g.placeholder("labels", DType::I32, [None]);
    let loss = logits
        .sparse_softmax_cross_entropy_with_logits(labels)
        .mean_all();
    let vars = m.trainable_variables();
    let mut opt = Sgd::new(0.1);
    let train = opt.minimize(loss, &vars).unwrap();
    let mut sess = m.session().unwrap();
    let io = kiln::checkpoint::read(data("mlp_io.safetensors")).unwrap();
    let xv = io.tensors["x"].clone();
    let yv = Array::new([6], vec![0i32, 1, 2, 0, 1, 2]).unwrap();
    let feeds = [(x, xv), (labels, yv)];
    let w0 = sess.variable(vars[0]).unwrap().clone();
    let before = sess.run(&[loss, train], &feeds).unwrap()[0]
        .scalar_value::<f32>()
        .unwrap();
    let after = sess.run(&[loss], &feeds).unwrap()[0]
        .scalar_value::<f32>()
        .unwrap();
    assert_ne!(
        sess.variable(vars[0]).unwrap(),
        &w0,
        "the step changed the weights"
    );
    assert!(after < before, "loss {before} -> {after}");
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("kiln-onnx-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(data("cnn.onnx")).unwrap();
    let cases: [(&str, &[u8]); 3] = [
        ("truncated.onnx", &bytes[..bytes.len() / 2]),
        ("garbage.onnx", b"\xff\xff\xff\xff this is not a protobuf"),
        ("empty.onnx", b""),
    ];
    for (name, content) in cases {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        let e = kiln::onnx::import(&p).err().expect(name).to_string();
        assert!(e.contains(name), "{e}");
        assert!(e.contains("not an ONNX model"), "{e}");
    }
    let e = kiln::onnx::import(dir.join("missing.onnx"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing.onnx"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Every node kiln cannot import is named at once, with its op and the model's opset.
#[test]
fn unsupported_ops_are_listed_by_node_op_and_opset() {
    let e = kiln::onnx::import(data("unsupported.onnx"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("unsupported.onnx"), "{e}");
    assert!(e.contains("2 node(s) cannot be imported"), "{e}");
    assert!(e.contains("node \"sin_1\" (Sin, opset 13)"), "{e}");
    assert!(e.contains("node \"cos_1\" (Cos, opset 13)"), "{e}");
    assert!(!e.contains("relu_1"), "{e}");
}

/// `Shape` and `Size` of an input whose batch is symbolic, used as data: the batch size is read
/// when the graph runs (so one compiled graph answers for every batch), as `int64`.
#[test]
fn shape_and_size_of_a_batched_input_are_computed_at_run_time() {
    let m = kiln::onnx::import(data("batch_shape.onnx")).unwrap();
    let x = m.input(0).unwrap();
    let (y, n) = (m.output(0).unwrap(), m.output(1).unwrap());
    assert_eq!(n.dtype(), DType::I64);
    for backend in [Backend::Jit, Backend::Interpreter] {
        let mut sess = m.session_with_backend(backend).unwrap();
        for batch in [1usize, 5, 7] {
            let xv = Array::new([batch, 3], vec![0.5f32; batch * 3]).unwrap();
            let out = sess.run(&[y, n], &[(x, xv)]).unwrap();
            assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![batch as f32, 3.0]);
            assert_eq!(out[1].scalar_value::<i64>().unwrap(), 3 * batch as i64);
        }
    }
}

/// `kiln-run model.onnx in.safetensors out.safetensors y` feeds and fetches by ONNX names.
#[test]
fn kiln_run_runs_an_onnx_file() {
    let dir = std::env::temp_dir().join(format!("kiln-onnx-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let io = kiln::checkpoint::read(data("mlp_io.safetensors")).unwrap();
    let mut feeds = kiln::checkpoint::Checkpoint::default();
    feeds.tensors.insert("x".into(), io.tensors["x"].clone());
    let (inp, out) = (dir.join("in.safetensors"), dir.join("out.safetensors"));
    kiln::checkpoint::write(&inp, &feeds).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-run"))
        .arg(data("mlp.onnx"))
        .arg(&inp)
        .arg(&out)
        .arg("y")
        .status()
        .unwrap();
    assert!(status.success());
    let got = kiln::checkpoint::read(&out).unwrap().tensors["y"]
        .to_vec::<f32>()
        .unwrap();
    let want = io.tensors["y"].to_vec::<f32>().unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{g} vs {w}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
