//! Checkpoints: exact resume, refusal of damaged files with nothing changed, atomic
//! replacement, and a saved graph run by another process.

use kiln::prelude::*;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("kiln-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// A small MLP with dropout, trained by Adam: everything that carries state across steps
/// (weights, moments, step count, random streams) is in play.
fn build(g: &Graph) -> (Tensor<'_>, Tensor<'_>, Tensor<'_>, Tensor<'_>) {
    let x = g.placeholder("x", DType::F32, [None, Some(4)]);
    let y = g.placeholder("y", DType::I32, [None]);
    let training = g.placeholder("training", DType::Bool, Shape::scalar());
    let w1 = g.variable("dense_1/kernel", [4, 8], init::glorot_uniform(1));
    let b1 = g.variable("dense_1/bias", [8], init::zeros());
    let w2 = g.variable("dense_2/kernel", [8, 3], init::glorot_uniform(2));
    let h = (x.matmul(w1) + b1).relu().dropout(0.25, training, 5);
    let logits = h.matmul(w2);
    let loss = logits
        .sparse_softmax_cross_entropy_with_logits(y)
        .mean_all();
    let train = Adam::new(0.01).minimize(loss, &[w1, b1, w2]).unwrap();
    (x, y, training, train)
}

fn data() -> Vec<(Array, Array)> {
    (0..3u64)
        .map(|b| {
            let xs: Vec<f32> = (0..24)
                .map(|i| kiln::internals::uniform(9, b, i, -1.0, 1.0))
                .collect();
            let ys: Vec<i32> = (0..6).map(|i| ((b as i32) + i) % 3).collect();
            (
                Array::new([6, 4], xs).unwrap(),
                Array::new([6], ys).unwrap(),
            )
        })
        .collect()
}

fn epochs(g: &Graph, s: &mut Session, n: usize) {
    let (x, y, training, _) = (
        g.by_name("x").unwrap(),
        g.by_name("y").unwrap(),
        g.by_name("training").unwrap(),
        (),
    );
    let train = g.by_name("train").unwrap();
    for _ in 0..n {
        for (xb, yb) in data() {
            s.run(
                &[train],
                &[(x, xb), (y, yb), (training, Array::scalar(true))],
            )
            .unwrap();
        }
    }
}

fn new_graph() -> Graph {
    let g = Graph::new();
    let (_, _, _, train) = build(&g);
    train.named("train");
    g
}

fn all_vars(s: &Session) -> Vec<(String, Array)> {
    s.named_variables()
        .into_iter()
        .map(|(n, a)| (n, a.clone()))
        .collect()
}

#[test]
fn resuming_is_bitwise_exact() {
    for backend in [Backend::Jit, Backend::Interpreter] {
        let g = new_graph();
        let mut straight = Session::with_backend(&g, backend).unwrap();
        epochs(&g, &mut straight, 4);

        let path = tmp(&format!("resume-{backend:?}.safetensors"));
        let g1 = new_graph();
        let mut first = Session::with_backend(&g1, backend).unwrap();
        epochs(&g1, &mut first, 2);
        first.save(&path).unwrap();
        drop(first);

        let g2 = new_graph(); // as a new program would build it
        let mut second = Session::with_backend(&g2, backend).unwrap();
        second.restore(&path).unwrap();
        epochs(&g2, &mut second, 2);

        let (a, b) = (all_vars(&straight), all_vars(&second));
        assert_eq!(a.len(), b.len());
        assert!(a.iter().any(|(n, _)| n == "adam/dense_1/kernel/m"));
        for ((na, va), (nb, vb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert!(va.bits_eq(vb), "{backend:?}: {na} differs after resuming");
        }
        std::fs::remove_file(&path).unwrap();
    }
}

/// Restoring `path` into a fresh session of `g` fails with a message containing `want`, and
/// leaves every variable as it was.
fn refused(g: &Graph, path: &PathBuf, want: &str) {
    let mut s = Session::new(g).unwrap();
    let before = all_vars(&s);
    let e = s.restore(path).unwrap_err().to_string();
    assert!(e.contains(want), "expected {want:?} in: {e}");
    assert!(
        e.contains(&path.display().to_string()),
        "the error names the file: {e}"
    );
    let after = all_vars(&s);
    for ((n, a), (_, b)) in before.iter().zip(&after) {
        assert!(a.bits_eq(b), "{n} changed by a refused restore");
    }
}

fn saved_checkpoint(name: &str) -> (Graph, PathBuf, Vec<u8>) {
    let g = new_graph();
    let mut s = Session::new(&g).unwrap();
    epochs(&g, &mut s, 1);
    let path = tmp(name);
    s.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (g, path, bytes)
}

#[test]
fn a_truncated_file_is_refused() {
    let (g, path, bytes) = saved_checkpoint("trunc.safetensors");
    for cut in [4, 20, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        refused(&g, &path, "not a valid safetensors file");
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn flipped_bytes_are_refused() {
    let (g, path, bytes) = saved_checkpoint("flip.safetensors");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // The length prefix and every byte of the header, one at a time.
    for pos in 0..8 + header_len {
        let mut b = bytes.clone();
        b[pos] ^= 0x5a;
        std::fs::write(&path, &b).unwrap();
        let mut s = Session::new(&g).unwrap();
        let before = all_vars(&s);
        assert!(s.restore(&path).is_err(), "flip at byte {pos} was accepted");
        assert_eq!(before.len(), all_vars(&s).len());
        for ((_, a), (_, c)) in before.iter().zip(&all_vars(&s)) {
            assert!(a.bits_eq(c));
        }
    }
    // In the data: caught by the checksum.
    let mut b = bytes.clone();
    let last = b.len() - 3;
    b[last] ^= 0x01;
    std::fs::write(&path, &b).unwrap();
    refused(&g, &path, "checksum");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_wrong_shape_or_a_missing_tensor_is_refused() {
    let (_, path, _) = saved_checkpoint("shape.safetensors");
    // The same names with another hidden size.
    let g = Graph::new();
    let _ = g.variable("dense_1/kernel", [4, 16], init::zeros());
    refused(
        &g,
        &path,
        "tensor \"dense_1/kernel\" is f32[4, 8] in the file, f32[4,16] in the graph; no variable was changed",
    );
    // A variable the file lacks.
    let g = new_graph();
    let _ = g.variable("dense_3/kernel", [3, 3], init::zeros());
    refused(&g, &path, "tensor \"dense_3/kernel\" is missing");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_save_replaces_the_file_atomically() {
    let g = Graph::new();
    let w = g.variable("w", [1000], init::constant(1.0));
    let mut s = Session::new(&g).unwrap();
    let path = tmp("atomic.safetensors");
    s.save(&path).unwrap();
    // A reader that opened the old file keeps reading the old, complete file: the new one
    // is renamed over it, never written into it.
    let old = std::fs::File::open(&path).unwrap();
    s.set_variable(w, Array::new([1000], vec![2.0f32; 1000]).unwrap())
        .unwrap();
    s.save(&path).unwrap();
    let mut buf = vec![];
    std::io::Read::read_to_end(&mut &old, &mut buf).unwrap();
    let old_path = tmp("atomic-old.safetensors");
    std::fs::write(&old_path, &buf).unwrap();
    let oldck = kiln::checkpoint::read(&old_path).unwrap();
    assert_eq!(oldck.tensors["w"].to_vec::<f32>().unwrap(), vec![1.0; 1000]);
    let newck = kiln::checkpoint::read(&path).unwrap();
    assert_eq!(newck.tensors["w"].to_vec::<f32>().unwrap(), vec![2.0; 1000]);
    // No temporary file is left behind.
    let dir = path.parent().unwrap();
    let stem = path.file_name().unwrap().to_string_lossy().to_string();
    let leftovers = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.starts_with(&format!(".{stem}.tmp"))
        })
        .count();
    assert_eq!(leftovers, 0);
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&old_path).unwrap();
}

#[test]
fn a_saved_graph_runs_in_another_process() {
    let dir = tmp("saved-model");
    let g = new_graph();
    let mut s = Session::new(&g).unwrap();
    epochs(&g, &mut s, 2);
    // An inference head on the trained weights.
    let x = g.by_name("x").unwrap();
    let training = g.by_name("training").unwrap();
    let w1 = g.by_name("dense_1/kernel").unwrap();
    let b1 = g.by_name("dense_1/bias").unwrap();
    let w2 = g.by_name("dense_2/kernel").unwrap();
    let _probs = (x.matmul(w1) + b1)
        .relu()
        .dropout(0.25, training, 5)
        .matmul(w2)
        .softmax(-1)
        .named("probs");
    let probs = g.by_name("probs").unwrap();
    kiln::saved::save(&dir, &s).unwrap();
    let (xb, _) = data().remove(1);
    let want = s
        .run(
            &[probs],
            &[(x, xb.clone()), (training, Array::scalar(false))],
        )
        .unwrap()
        .remove(0);

    let inputs = dir.join("inputs.safetensors");
    let outputs = dir.join("outputs.safetensors");
    let mut ck = kiln::checkpoint::Checkpoint::default();
    ck.tensors.insert("x".into(), xb);
    ck.tensors.insert("training".into(), Array::scalar(false));
    kiln::checkpoint::write(&inputs, &ck).unwrap();
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-run"))
        .args([&dir, &inputs, &outputs])
        .arg("probs")
        .status()
        .unwrap();
    assert!(st.success());
    let got = kiln::checkpoint::read(&outputs).unwrap();
    assert!(got.tensors["probs"].bits_eq(&want));

    // A missing name is a clear error from the other process.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-run"))
        .args([&dir, &inputs, &outputs])
        .arg("nope")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no node named \"nope\""), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Interop: a file written by Python's `safetensors` (numpy, `save_file`; see
/// tests/fixtures/README.md) restores into a kiln session. The other direction was checked
/// by reading a kiln checkpoint with `safetensors.numpy.load_file`.
#[test]
fn a_file_written_by_python_restores() {
    let g = Graph::new();
    let w = g.variable("w", [1, 3], init::zeros());
    let step = g.variable_of("step", DType::I32, Shape::scalar(), init::zeros());
    let mut s = Session::new(&g).unwrap();
    let restored = s
        .restore(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/written_by_python.safetensors"
        ))
        .unwrap();
    // A foreign file: nothing to verify, no run counter, and the result says so.
    assert!(!restored.checksum_verified && !restored.run_counter_restored);
    assert!(restored.warning().unwrap().contains("no kiln checksum"));
    assert_eq!(
        s.variable(w).unwrap().to_vec::<f32>().unwrap(),
        vec![1.5, -2.0, 3.25]
    );
    assert_eq!(s.variable(step).unwrap().scalar_value::<i32>().unwrap(), 4);
}
