//! ONNX export: each model is exported, read back with kiln's own importer and run, and must
//! give bitwise the outputs of the graph it came from (the MLP, the NHWC convnet, depthwise
//! convolutions, pooling, the elementwise and movement ops, a trained Keras `Sequential`).
//! Refusals name the op and the user's line; a failed export leaves no file.
//!
//! When a Python with `onnx` and `onnxruntime` is found (`KILN_PYTHON`, else the repo's
//! `.peers-venv/bin/python`), each model also goes through `onnx.checker.check_model`
//! (full check) and onnxruntime (`tests/onnx_export_ort.py`), whose outputs must match
//! kiln's within 1e-5 relative (plus 1e-5 of the output's largest magnitude, for sums that
//! cancel to near zero). Without one, those checks print that they were skipped and pass.

use kiln::nn::*;
use kiln::onnx::ExportOptions;
use kiln::prelude::*;
use kiln::{Conv2dOptions, DataFormat, Padding, Pool2dOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Deterministic values in [-1, 1).
fn values(shape: &[usize], seed: u64) -> Array {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Array::new(shape, v).unwrap()
}

/// A `.npy` file (format 1.0) of `a`, for the onnxruntime script.
fn write_npy(path: &Path, a: &Array) {
    let (descr, bytes): (&str, Vec<u8>) = match a.dtype() {
        DType::F32 => (
            "<f4",
            a.as_slice::<f32>()
                .unwrap()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        DType::I32 => (
            "<i4",
            a.as_slice::<i32>()
                .unwrap()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        DType::Bool => (
            "|b1",
            a.as_slice::<bool>()
                .unwrap()
                .iter()
                .map(|&b| u8::from(b))
                .collect(),
        ),
        d => panic!("no .npy writer for {d}"),
    };
    let dims: Vec<String> = a.shape().iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&bytes);
    std::fs::write(path, out).unwrap();
}

/// A Python with onnx and onnxruntime, if there is one.
fn python() -> Option<&'static PathBuf> {
    static PY: OnceLock<Option<PathBuf>> = OnceLock::new();
    PY.get_or_init(|| {
        let p = match std::env::var_os("KILN_PYTHON") {
            Some(p) => PathBuf::from(p),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".peers-venv/bin/python"),
        };
        let ok = Command::new(&p)
            .args(["-c", "import numpy, onnx, onnxruntime"])
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(p)
    })
    .as_ref()
}

/// Runs the onnxruntime script on `dir` (model, inputs, kiln's outputs), or says it skipped.
fn onnxruntime_agrees(dir: &Path) {
    let Some(py) = python() else {
        eprintln!("skipped: no python with onnxruntime (set KILN_PYTHON)");
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx_export_ort.py");
    let out = Command::new(py).arg(script).arg(dir).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{text}");
    assert!(out.status.success(), "onnxruntime disagrees:\n{text}");
}

/// Exports `outputs` of `sess`'s graph, imports the file, runs both (JIT) on `feeds` (plus
/// `fixed`, the values fixed in the export), asserts bitwise equal outputs under the
/// expected names, then checks the file with onnxruntime. Returns the directory and import.
fn round_trip(
    sess: &mut Session,
    feeds: &[(Tensor<'_>, Array)],
    fixed: &[(Tensor<'_>, Array)],
    outputs: &[Tensor<'_>],
    names: &[&str],
) -> (tempfile::TempDir, kiln::onnx::Imported) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    let inputs: Vec<Tensor<'_>> = feeds.iter().map(|f| f.0).collect();
    let mut opts = ExportOptions::new().output_names(names);
    for (t, v) in fixed {
        opts = opts.fix(*t, v.clone());
    }
    kiln::onnx::export_with(&*sess, &inputs, outputs, &path, &opts).unwrap();
    let mut all = feeds.to_vec();
    all.extend_from_slice(fixed);
    let want = sess.run(outputs, &all).unwrap();
    let m = kiln::onnx::import(&path).unwrap();
    let got_names: Vec<&str> = m.outputs.iter().map(|o| o.0.as_str()).collect();
    assert_eq!(got_names, names);
    let mut msess = m.session().unwrap();
    let mfeeds: Vec<(Tensor<'_>, Array)> = feeds
        .iter()
        .map(|(t, v)| {
            let name = t.name().unwrap();
            let id = m.inputs.iter().find(|i| *i.0 == *name).unwrap().1;
            (m.graph.tensor(id), v.clone())
        })
        .collect();
    let mouts: Vec<Tensor<'_>> = (0..names.len()).map(|i| m.output(i).unwrap()).collect();
    let got = msess.run(&mouts, &mfeeds).unwrap();
    for (k, (w, g)) in want.iter().zip(&got).enumerate() {
        assert!(
            w.bits_eq(g),
            "output {} differs after the round trip:\n{w:?}\n{g:?}",
            names[k]
        );
    }
    for (t, v) in feeds {
        write_npy(&dir.path().join(format!("in_{}.npy", t.name().unwrap())), v);
    }
    for (name, w) in names.iter().zip(&want) {
        write_npy(&dir.path().join(format!("out_{name}.npy")), w);
    }
    onnxruntime_agrees(dir.path());
    (dir, m)
}

#[test]
fn mlp_round_trips_bitwise() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(16)]);
    let w1 = g.variable("dense/kernel", [16, 32], kiln::init::glorot_uniform(1));
    let b1 = g.variable("dense/bias", [32], kiln::init::uniform(-0.1, 0.1, 2));
    let w2 = g.variable("dense_1/kernel", [32, 10], kiln::init::glorot_uniform(3));
    let b2 = g.variable("dense_1/bias", [10], kiln::init::uniform(-0.1, 0.1, 4));
    let h = (x.matmul(w1) + b1).relu();
    let logits = h.matmul(w2) + b2;
    let probs = logits.softmax(-1);
    let mut sess = Session::new(&g).unwrap();
    let (_dir, m) = round_trip(
        &mut sess,
        &[(x, values(&[5, 16], 7))],
        &[],
        &[logits, probs],
        &["logits", "probs"],
    );
    // The weights came back as variables under their kiln names, with the session's values.
    let names: Vec<&str> = m.variables.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "dense/kernel",
            "dense/bias",
            "dense_1/kernel",
            "dense_1/bias"
        ]
    );
    assert!(m.variables[0].value.bits_eq(sess.variable(w1).unwrap()));
    assert_eq!(m.input(0).unwrap().shape().dims()[0], Dim::Batch);
}

#[test]
fn nhwc_convnet_round_trips_bitwise_with_oihw_filters() {
    let g = Graph::new();
    let x = g.placeholder("image", DType::F32, [None, Some(10), Some(10), Some(3)]);
    let w1 = g.variable("conv/kernel", [3, 3, 3, 8], kiln::init::he_uniform(1));
    let b1 = g.variable("conv/bias", [8], kiln::init::uniform(-0.1, 0.1, 2));
    let w2 = g.variable("conv_1/kernel", [3, 3, 8, 16], kiln::init::he_uniform(3));
    let w3 = g.variable("dense/kernel", [144, 10], kiln::init::glorot_uniform(4));
    let same = Conv2dOptions::new().padding(Padding::Same);
    let h = (x.conv2d(w1, &same) + b1).relu();
    let h = h.max_pool2d(&Pool2dOptions::new([2, 2]).strides([2, 2]));
    let h = h.conv2d(w2, &Conv2dOptions::new()).relu();
    let logits = h.reshape([None, Some(144)]).matmul(w3);
    let out = logits.log_softmax(-1);
    let mut sess = Session::new(&g).unwrap();
    let (_dir, m) = round_trip(
        &mut sess,
        &[(x, values(&[3, 10, 10, 3], 9))],
        &[],
        &[out],
        &["log_probs"],
    );
    // Filters read only by convolutions are stored OIHW in the file, as PyTorch and ONNX
    // have them (the onnxruntime check reads them so), and the importer stores a 2-D
    // convolution's filter in kiln's HWIO again: the round trip gives back the original
    // variable's shape.
    let w = m
        .variables
        .iter()
        .find(|v| v.name == "conv/kernel")
        .unwrap();
    assert_eq!(w.value.shape(), &[3, 3, 3, 8]);
    let dense = m
        .variables
        .iter()
        .find(|v| v.name == "dense/kernel")
        .unwrap();
    assert_eq!(dense.value.shape(), &[144, 10]);
}

#[test]
fn depthwise_convolutions_round_trip_bitwise() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(9), Some(9), Some(4)]);
    let w = g.variable("dw/kernel", [3, 3, 1, 8], kiln::init::he_uniform(5));
    let b = g.variable("dw/bias", [8], kiln::init::uniform(-0.1, 0.1, 6));
    let dw = Conv2dOptions::new()
        .groups(4)
        .strides(2, 2)
        .padding(Padding::Same);
    let h = (x.conv2d(w, &dw) + b).relu().minimum(6.0);
    // A filter computed in the graph (not a variable) goes through a Transpose node.
    let w2 = g.variable("dw_1/kernel", [3, 3, 1, 8], kiln::init::he_uniform(7));
    let dw2 = Conv2dOptions::new()
        .groups(8)
        .dilations(2, 1)
        .padding(Padding::Explicit([(2, 1), (0, 2)]));
    let y = h.conv2d(w2 * 0.5, &dw2);
    let mut sess = Session::new(&g).unwrap();
    round_trip(
        &mut sess,
        &[(x, values(&[2, 9, 9, 4], 11))],
        &[],
        &[h, y],
        &["h", "y"],
    );
}

#[test]
fn pooling_round_trips_bitwise() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(11), Some(11), Some(3)]);
    let mx = x.max_pool2d(
        &Pool2dOptions::new([3, 3])
            .strides([2, 2])
            .padding(Padding::Same),
    );
    let explicit = Padding::Explicit([(1, 0), (0, 1)]);
    let avg = x.avg_pool2d(&Pool2dOptions::new([2, 2]).padding(explicit));
    let avg_pad = x.avg_pool2d(
        &Pool2dOptions::new([3, 2])
            .strides([2, 3])
            .padding(explicit)
            .count_include_pad(true),
    );
    let dil = x.max_pool2d(&Pool2dOptions::new([2, 2]).dilations([2, 3]));
    let gap = x.global_avg_pool2d(DataFormat::Nhwc);
    let mut sess = Session::new(&g).unwrap();
    round_trip(
        &mut sess,
        &[(x, values(&[2, 11, 11, 3], 13))],
        &[],
        &[mx, avg, avg_pad, dil, gap],
        &["max", "avg", "avg_pad", "dilated", "gap"],
    );
}

#[test]
fn elementwise_and_movement_ops_round_trip_bitwise() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(6)]);
    let a = x.narrow(1, 1, 4).pad(&[0, 1], &[0, 2]);
    let c = g.concat(&[x, a], 1);
    let big = c.max(&[1], true);
    let total = c.sum(&[1], false);
    let sel = c.greater(0.0).select(c, c * 0.1);
    let ne = c.not_equal(0.0);
    let pos = c.abs() + 0.5;
    let un = pos.sqrt().exp().log().tanh() + pos.sigmoid() + c.erf() + c.softplus() - pos.recip()
        + (-c).minimum(pos.pow(1.5))
        + c / pos
        + c % pos;
    let ints = (c * 4.0).cast(DType::I32) + 3i32;
    let t = c
        .narrow(1, 0, 12)
        .reshape([None, Some(3), Some(4)])
        .permute(&[0, 2, 1]);
    // A broadcast that creates the batch axis: Expand with the batch from the input's Shape.
    let row = g
        .constant(values(&[1, 13], 3))
        .broadcast_to([None, Some(13)]);
    let mut sess = Session::new(&g).unwrap();
    round_trip(
        &mut sess,
        &[(x, values(&[4, 6], 17))],
        &[],
        &[big, total, sel, ne, un, ints, t, row],
        &["big", "total", "sel", "ne", "un", "ints", "t", "row"],
    );
}

#[test]
fn keras_model_exports_its_inference_graph() {
    let mut model = Sequential::new([
        Input::new([8, 8, 1]).into(),
        Conv2D::new(4, [3, 3]).relu().into(),
        BatchNormalization::new().into(),
        MaxPooling2D::new([2, 2]).into(),
        Flatten.into(),
        Dropout::new(0.5).into(),
        Dense::new(10).into(),
    ]);
    model
        .compile(
            Adam::new(1e-2),
            Loss::SparseCategoricalCrossentropy { from_logits: true },
            &[],
        )
        .unwrap();
    let x = values(&[32, 8, 8, 1], 21);
    let y = Array::new([32], (0..32).map(|i| i % 10).collect::<Vec<i32>>()).unwrap();
    // Training moves the weights and batch normalization's moving statistics.
    let cfg = FitConfig::new()
        .epochs(2)
        .batch_size(16)
        .verbosity(Verbosity::Silent);
    model.fit(&x, &y, cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    model.export_onnx(&path).unwrap();
    let want = model.predict(&x, 32).unwrap();

    let m = kiln::onnx::import(&path).unwrap();
    assert_eq!(m.inputs.len(), 1, "the training switch is not an input");
    assert_eq!(m.inputs[0].0, "input");
    assert_eq!(m.outputs[0].0, "dense");
    let d = m.graph.data();
    assert!(
        d.ids()
            .iter()
            .all(|&i| !matches!(d.node(i).op, kiln::Op::Random { .. })),
        "dropout's random mask was exported"
    );
    drop(d);
    let moving = m
        .variables
        .iter()
        .find(|v| v.name.ends_with("moving_variance"))
        .unwrap();
    assert!(
        moving
            .value
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .any(|&v| v != 1.0),
        "the trained moving variance was exported"
    );
    let mut s = m.session().unwrap();
    let got = s.run(&[m.output(0).unwrap()], &[(m.input(0).unwrap(), x.clone())]);
    assert!(
        want.bits_eq(&got.unwrap()[0]),
        "predict and the import differ"
    );
    write_npy(&dir.path().join("in_input.npy"), &x);
    write_npy(&dir.path().join("out_dense.npy"), &want);
    onnxruntime_agrees(dir.path());
}

#[test]
fn an_op_without_export_is_an_error_naming_it_and_its_line() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(4)]);
    let training = g.placeholder("training", DType::Bool, Shape::scalar());
    let y = x.dropout(0.5, training, 7);
    let noise = x + g.random_uniform([4], 0.0, 1.0, 3); // the line the error names
    let line = line!() - 1;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    let e = kiln::onnx::export(&g, &[x], &[noise], &path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("random") && e.contains(&format!("onnx_export.rs:{line}")),
        "{e}"
    );
    assert!(
        e.contains("f32[4]") && e.contains("cannot be exported"),
        "{e}"
    );
    assert!(!path.exists(), "a refused export wrote a file");
    // Dropout with its switch left open is refused too; fixed to false, it is the identity.
    let e = kiln::onnx::export(&g, &[x], &[y], &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ExportOptions::fix"), "{e}");
    let opts = ExportOptions::new().fix(training, Array::scalar(false));
    kiln::onnx::export_with(&g, &[x], &[y], &path, &opts).unwrap();
    let m = kiln::onnx::import(&path).unwrap();
    let xv = values(&[3, 4], 1);
    let mut s = m.session().unwrap();
    let out = s.run(
        &[m.output(0).unwrap()],
        &[(m.input(0).unwrap(), xv.clone())],
    );
    assert!(
        out.unwrap()[0].bits_eq(&xv),
        "inference dropout is the identity"
    );
    // A gradient op is refused, naming it and the line of the op it differentiates.
    let img = g.placeholder("img", DType::F32, [None, Some(4), Some(4), Some(2)]);
    let pooled = img.max_pool2d(&Pool2dOptions::new([2, 2]).strides([2, 2]));
    let line = line!() - 1;
    let loss = pooled.sum(&[0, 1, 2, 3], false);
    let dimg = kiln::autodiff::grad(loss, &[img]).unwrap()[0];
    let e = kiln::onnx::export(&g, &[img], &[dimg], &path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("training op") && e.contains(&format!("onnx_export.rs:{line}")),
        "{e}"
    );
}

#[test]
fn a_failed_export_leaves_no_file() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(2)]);
    let y = x * 2.0;
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist: an error, nothing created.
    let missing = dir.path().join("no/such/dir/model.onnx");
    assert!(kiln::onnx::export(&g, &[x], &[y], &missing).is_err());
    assert!(!dir.path().join("no").exists());
    // The target is a directory: the rename fails, and no temporary file is left beside it.
    let target = dir.path().join("model.onnx");
    std::fs::create_dir(&target).unwrap();
    let e = kiln::onnx::export(&g, &[x], &[y], &target).unwrap_err();
    assert!(e.to_string().contains("model.onnx"), "{e}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|f| f.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("model.onnx")], "{left:?}");
    // An existing file survives a refused export unchanged.
    let file = dir.path().join("kept.onnx");
    kiln::onnx::export(&g, &[x], &[y], &file).unwrap();
    let before = std::fs::read(&file).unwrap();
    let bad = x + g.random_normal([2], 0.0, 1.0, 1);
    assert!(kiln::onnx::export(&g, &[x], &[bad], &file).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn a_convolution_input_gradient_exports_as_conv_transpose() {
    // A saliency map: d(sum of the convolution)/d(image), with a stride that leaves a row
    // and a column over (ConvTranspose's output_padding).
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(8), Some(8), Some(2)]);
    let w = g.variable("conv/kernel", [3, 3, 2, 4], kiln::init::he_uniform(3));
    let y = x.conv2d(w, &Conv2dOptions::new().strides(2, 2));
    let loss = (y * y).sum(&[0, 1, 2, 3], false);
    let dx = kiln::autodiff::grad(loss, &[x]).unwrap()[0];
    let mut sess = Session::new(&g).unwrap();
    round_trip(
        &mut sess,
        &[(x, values(&[2, 8, 8, 2], 5))],
        &[],
        &[dx],
        &["saliency"],
    );
}

#[test]
fn a_mean_over_the_batch_round_trips_with_the_batch_size_read_at_run_time() {
    // The batch size is Shape -> Gather -> ReduceProd -> Cast in the file; the importer reads
    // it at run time (the batch is `?`), so other batch sizes give the same bits too.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let m = x.mean(&[0], false);
    let mut sess = Session::new(&g).unwrap();
    for (rows, seed) in [(5, 2), (1, 3), (8, 4)] {
        round_trip(
            &mut sess,
            &[(x, values(&[rows, 3], seed))],
            &[],
            &[m],
            &["m"],
        );
    }
}
