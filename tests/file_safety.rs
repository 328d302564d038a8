//! The files kiln writes and reads, against an adversary or a crash: a symlink planted next
//! to a checkpoint, concurrent saves to one path, temporaries left by killed writers, and a
//! checkpoint stripped of kiln's metadata (issue 16, audit items 4, 5 and 9).

use kiln::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A fresh, empty directory of this test's own.
fn dir(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("kiln-files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn session() -> (Graph, Session) {
    let g = Graph::new();
    g.variable("w", [64], init::constant(2.5));
    let s = Session::new(&g).unwrap();
    (g, s)
}

fn temporaries(d: &Path) -> Vec<String> {
    std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".kiln-tmp-"))
        .collect()
}

/// Audit item 4: kiln once wrote through `.{file}.tmp-{pid}`; a symlink planted there made
/// `save` overwrite the file it pointed to. The temporary now has a random name and is
/// created exclusively, so the planted link and its target are left alone.
#[cfg(unix)]
#[test]
fn a_symlink_at_the_old_temporary_name_is_not_written_through() {
    let d = dir("symlink");
    let victim = d.join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let path = d.join("model.safetensors");
    let planted = d.join(format!(".model.safetensors.tmp-{}", std::process::id()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let (_, s) = session();
    s.save(&path).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(&planted)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(kiln::checkpoint::read(&path).unwrap().checksum_verified());
    std::fs::remove_dir_all(&d).unwrap();
}

/// Audit item 5: two threads saving to one path collided on one temporary (199 of 400 saves
/// failed). Every save must succeed and leave a complete file, and no temporary behind.
#[test]
fn concurrent_saves_to_one_path_all_succeed() {
    let d = dir("concurrent");
    let path = d.join("ckpt.safetensors");
    std::thread::scope(|scope| {
        for t in 0..3 {
            let path = &path;
            scope.spawn(move || {
                let g = Graph::new();
                g.variable("w", [256], init::constant(t as f64));
                let s = Session::new(&g).unwrap();
                for i in 0..40 {
                    s.save(path)
                        .unwrap_or_else(|e| panic!("thread {t}, save {i}: {e}"));
                }
            });
        }
    });
    let ck = kiln::checkpoint::read(&path).unwrap();
    let w = ck.tensors["w"].to_vec::<f32>().unwrap();
    assert_eq!(w.len(), 256);
    // One writer's file, whole: every element the same thread's value.
    assert!(w.iter().all(|&x| x == w[0]) && (0.0..3.0).contains(&w[0]));
    assert_eq!(temporaries(&d), Vec::<String>::new());
    std::fs::remove_dir_all(&d).unwrap();
}

/// Audit item 5: a writer killed between creating its temporary and renaming it leaves the
/// temporary behind. A later save in the same directory removes those older than an hour and
/// keeps recent ones (another process may be writing them).
#[test]
fn a_save_removes_stale_temporaries_of_killed_writers() {
    let d = dir("stale");
    let stale = d.join(".kiln-tmp-killed1");
    let fresh = d.join(".kiln-tmp-running");
    let other = d.join(".not-kiln-tmp");
    for p in [&stale, &fresh, &other] {
        std::fs::write(p, vec![0u8; 1024]).unwrap();
    }
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    for p in [&stale, &other] {
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(two_hours_ago).unwrap();
    }
    let (_, s) = session();
    s.save(d.join("ckpt.safetensors")).unwrap();
    assert!(!stale.exists(), "the stale temporary was kept");
    assert!(
        fresh.exists(),
        "a recent temporary (a live writer's) was removed"
    );
    assert!(other.exists(), "a file without kiln's prefix was removed");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A save into a directory that does not exist names the user's path, not a temporary.
#[test]
fn a_save_into_a_missing_directory_names_it() {
    let d = dir("missing");
    let path = d.join("no/such/dir/ckpt.safetensors");
    let (_, s) = session();
    let e = s.save(&path).unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("does not exist"), "{e}");
    assert!(!e.contains(".kiln-tmp-"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Audit item 9: a kiln checkpoint with its metadata stripped cannot be told from a foreign
/// file. It restores, but the result says no checksum was verified and no run counter
/// restored; a kiln file says both were.
#[test]
fn a_checkpoint_stripped_of_its_metadata_is_reported_as_foreign() {
    let d = dir("stripped");
    let (g, mut s) = session();
    s.run(&[], &[]).unwrap();
    let path = d.join("ckpt.safetensors");
    s.save(&path).unwrap();
    let own = s.restore(&path).unwrap();
    assert!(own.checksum_verified && own.run_counter_restored);
    assert_eq!(own.warning(), None);

    // The same tensors, no metadata: what a stripping tool leaves.
    let ck = kiln::checkpoint::read(&path).unwrap();
    let w = &ck.tensors["w"];
    let bytes: Vec<u8> = w
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![64], &bytes).unwrap();
    let stripped = safetensors::serialize([("w".to_string(), view)], &None).unwrap();
    let spath = d.join("stripped.safetensors");
    std::fs::write(&spath, stripped).unwrap();
    assert!(!kiln::checkpoint::read(&spath).unwrap().checksum_verified());
    let mut fresh = Session::new(&g).unwrap();
    let r = fresh.restore(&spath).unwrap();
    assert!(!r.checksum_verified && !r.run_counter_restored);
    let warning = r.warning().unwrap();
    assert!(warning.contains("no kiln checksum"), "{warning}");
    assert!(warning.contains("run counter"), "{warning}");
    assert_eq!(
        fresh
            .variable(g.by_name("w").unwrap())
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        vec![2.5; 64]
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// Audit item 3: the IDX reader decompressed everything before checking the header. A `.gz`
/// whose header claims 4096x4096x4096 bytes (64 GiB) is refused from its header, naming the
/// path and the limit, before any data is decompressed.
#[test]
fn an_idx_header_claiming_huge_dims_is_refused_before_decompressing() {
    use flate2::write::GzEncoder;
    use std::io::Write;
    let d = dir("idx");
    let path = d.join("huge-idx3-ubyte.gz");
    let mut raw = vec![0u8, 0, 0x08, 3];
    for _ in 0..3 {
        raw.extend(4096u32.to_be_bytes());
    }
    raw.extend(vec![0u8; 1 << 16]);
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&raw).unwrap();
    std::fs::write(&path, e.finish().unwrap()).unwrap();
    let msg = kiln::data::read_idx(&path).unwrap_err().to_string();
    assert!(msg.contains("huge-idx3-ubyte.gz"), "{msg}");
    assert!(msg.contains("4096x4096x4096"), "{msg}");
    assert!(msg.contains("limit"), "{msg}");

    // Data beyond the declared size is trailing data, read no further than one byte past it.
    let small = d.join("small-idx1-ubyte.gz");
    let mut raw = vec![0u8, 0, 0x08, 1];
    raw.extend(4u32.to_be_bytes());
    raw.extend(vec![7u8; 1 << 20]);
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&raw).unwrap();
    std::fs::write(&small, e.finish().unwrap()).unwrap();
    let msg = kiln::data::read_idx(&small).unwrap_err().to_string();
    assert!(msg.contains("trailing data"), "{msg}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Audit item 3: `saved::load` and `checkpoint::read` read a symlink to `/dev/zero` until
/// memory ran out. A non-regular file is refused from its metadata, naming the path.
#[cfg(unix)]
#[test]
fn a_symlink_to_dev_zero_is_refused_by_the_loaders() {
    let d = dir("devzero");
    std::os::unix::fs::symlink("/dev/zero", d.join("graph.kiln")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.join("variables.safetensors")).unwrap();
    let e = kiln::saved::load(&d).map(|_| ()).unwrap_err().to_string();
    assert!(
        e.contains("graph.kiln") && e.contains("not a regular file"),
        "{e}"
    );
    let ck = d.join("variables.safetensors");
    let e = kiln::checkpoint::read(&ck).unwrap_err().to_string();
    assert!(
        e.contains("variables.safetensors") && e.contains("not a regular file"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// A saved graph over the documented limit is refused before it is read, naming the limit.
#[test]
fn a_saved_graph_over_the_limit_is_refused() {
    let d = dir("biggraph");
    let f = std::fs::File::create(d.join("graph.kiln")).unwrap();
    f.set_len(kiln::saved::MAX_GRAPH_BYTES + 1).unwrap(); // sparse: no disk used
    let e = kiln::saved::load(&d).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("graph.kiln"), "{e}");
    assert!(e.contains(&kiln::saved::MAX_GRAPH_BYTES.to_string()), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A model directory that does not exist is reported by `kiln-run` in plain words, naming the
/// path and the OS's reason, not as `Io { .. }`.
#[test]
fn kiln_run_names_a_missing_model_directory_in_plain_words() {
    let d = dir("kiln-run-missing");
    let model = d.join("no-such-model");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-run"))
        .arg(&model)
        .args(["in.safetensors", "out.safetensors", "y"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-model"), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(!err.contains("Io {"), "{err}");
    std::fs::remove_dir_all(&d).unwrap();
}
