//! Data-parallel training under `mpirun` (issue 19), bitwise against one process.
//!
//! A test binary without libtest's harness: run by `cargo test`, it is the driver, which
//! starts `mpirun -np N <this binary> --worker …`; under `mpirun` it is a worker, which
//! trains the MNIST MLP of `examples/dist_lab` (the code `examples/mnist_mpi.rs` runs) and
//! prints rank 0's weight hash. Without the `mpi` feature, or without `mpirun` on the
//! path, it says so and passes (`cargo test --release --features mpi --test dist`).
//!
//! What it shows: 1, 2 and 4 processes (4 oversubscribed on 2 cores) with 4 micro-shards
//! per global batch train to the same weights bit for bit; resuming a 2-process
//! checkpoint on 4 processes gives those weights too; a rank that exits makes every rank
//! stop (no hang) and leaves a valid checkpoint; ranks that built different graphs all
//! stop with an error naming them.

#[path = "../examples/dist_lab/mod.rs"]
mod dist_lab;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const STEPS: &str = "200";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        std::process::exit(worker(args[1..].to_vec()));
    }
    if !cfg!(feature = "mpi") {
        println!(
            "dist: SKIPPED: kiln was built without the `mpi` feature \
             (run `cargo test --release --features mpi --test dist`)"
        );
        return;
    }
    if Command::new("mpirun").arg("--version").output().is_err() {
        println!("dist: SKIPPED: no `mpirun` on the path (apt-get install openmpi-bin)");
        return;
    }
    let dir = tempdir();
    type Case = (&'static str, fn(&Path));
    let cases: [Case; 4] = [
        (
            "same_weights_on_1_2_and_4_ranks",
            same_weights_on_1_2_and_4_ranks,
        ),
        ("resume_on_another_rank_count", resume_on_another_rank_count),
        (
            "a_rank_that_exits_stops_every_rank",
            a_rank_that_exits_stops_every_rank,
        ),
        ("different_graphs_are_refused", different_graphs_are_refused),
    ];
    for (name, case) in cases {
        let t0 = Instant::now();
        case(&dir);
        println!("test {name} ... ok ({:.1} s)", t0.elapsed().as_secs_f64());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "mpi")]
fn worker(args: Vec<String>) -> i32 {
    let world = match kiln::dist::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("worker: {e}");
            return 1;
        }
    };
    let run = dist_lab::parse(args.into_iter()).and_then(|o| dist_lab::run(&o));
    match run {
        Ok(s) => {
            if world.is_root() {
                println!("weights {:016x}", s.weights_hash);
                println!(
                    "ms/step {:.3} comm ms/step {:.3}",
                    s.train_time.as_secs_f64() * 1e3 / s.steps.max(1) as f64,
                    s.comm_time.as_secs_f64() * 1e3 / s.steps.max(1) as f64
                );
            }
            0
        }
        Err(e) => {
            eprintln!("rank {}: {e}", world.rank());
            1
        }
    }
}

#[cfg(not(feature = "mpi"))]
fn worker(_: Vec<String>) -> i32 {
    eprintln!("worker: built without the `mpi` feature");
    1
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-dist-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// `mpirun -np n` this binary as a worker with `args`; killed (and the test failed) if it
/// has not finished after 5 minutes, so a hang is a failure, not a stuck CI.
fn mpirun(n: usize, args: &[&str]) -> Output {
    let exe = std::env::current_exe().expect("test binary path");
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &n.to_string(),
    ])
    .arg(exe)
    .arg("--worker")
    .args(args)
    .env("KILN_THREADS", "1")
    .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    // Ranks waiting in a collective yield the CPU instead of spinning: on a loaded or
    // oversubscribed machine a spinning rank starves the one it waits for (measured here:
    // 140-230 ms per step spinning, 57 ms yielding, 2 ranks of the MNIST MLP).
    .env("OMPI_MCA_mpi_yield_when_idle", "1")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("mpirun starts");
    let t0 = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("mpirun -np {n} {args:?} did not finish in 5 minutes (a rank hangs)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The weight hash rank 0 printed, after checking the run succeeded.
fn weights(n: usize, args: &[&str]) -> String {
    let out = mpirun(n, args);
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "mpirun -np {n} {args:?} failed:\n{so}\n{se}"
    );
    for line in so.lines().filter(|l| l.starts_with("ms/step")) {
        println!("  np {n}: {line}");
    }
    so.lines()
        .find_map(|l| l.strip_prefix("weights "))
        .unwrap_or_else(|| panic!("no weights line in:\n{so}\n{se}"))
        .to_string()
}

fn same_weights_on_1_2_and_4_ranks(_: &Path) {
    let reference = weights(1, &["--steps", STEPS, "--shards", "4"]);
    for n in [2, 4] {
        let got = weights(n, &["--steps", STEPS, "--shards", "4"]);
        assert_eq!(got, reference, "{n} ranks against the 1-process reference");
    }
    // The micro-shard count, not the process count, defines the result: 2 shards differ.
    let two = weights(2, &["--steps", STEPS, "--shards", "2"]);
    assert_ne!(two, reference, "2 micro-shards sum in another order than 4");
}

fn resume_on_another_rank_count(dir: &Path) {
    let ckpt = dir.join("half.safetensors");
    let ck = ckpt.to_str().expect("utf-8 path");
    let full = weights(1, &["--steps", STEPS, "--shards", "4"]);
    weights(2, &["--steps", "100", "--shards", "4", "--out", ck]);
    let resumed = weights(
        4,
        &[
            "--steps", STEPS, "--shards", "4", "--resume", ck, "--from", "100",
        ],
    );
    assert_eq!(
        resumed, full,
        "2 ranks to step 100, then 4 ranks to step 200"
    );
}

fn a_rank_that_exits_stops_every_rank(dir: &Path) {
    let ckpt = dir.join("fault.safetensors");
    let ck = ckpt.to_str().expect("utf-8 path");
    let args = [
        "--steps",
        STEPS,
        "--out",
        ck,
        "--checkpoint-every",
        "5",
        "--die-at",
        "12",
    ];
    let out = mpirun(2, &args);
    let se = text(&out.stderr);
    assert!(!out.status.success(), "the job must fail when a rank exits");
    assert!(se.contains("exiting at step 12"), "{se}");
    // Rank 0's checkpoints were written atomically: the last one reads back whole.
    let c = kiln::checkpoint::read(&ckpt).expect("the last checkpoint is valid");
    assert!(c.tensors.contains_key("dense_0/kernel"));
}

fn different_graphs_are_refused(_: &Path) {
    let out = mpirun(2, &["--steps", "5", "--odd-graph"]);
    let se = text(&out.stderr);
    assert!(!out.status.success(), "mismatched graphs must fail");
    assert!(
        se.contains("rank 0: ") && se.contains("rank 1: "),
        "every rank reports:\n{se}"
    );
    assert!(se.contains("built different graphs: rank 1"), "{se}");
}
