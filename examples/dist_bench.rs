//! What the ordered reduction costs (issue 19), and how far the micro-shard reference is
//! from a one-GEMM run. Timings are printed, never asserted.
//!
//! ```sh
//! cargo build --release --features mpi --example dist_bench
//! mpirun -np 2 target/release/examples/dist_bench            # the three algorithms
//! mpirun -np 4 --oversubscribe target/release/examples/dist_bench
//! target/release/examples/dist_bench --gemm-bound 1 200      # weights: S = 1 against S = 4
//! target/release/examples/dist_bench --scaling               # fit epochs, 1 and 2 ranks
//! ```
//!
//! The buffer is the MNIST MLP's gradient (784-256-128-10: 235,146 f32, 0.94 MB), one
//! contribution per rank. The algorithms run interleaved, `REPS` times each; the medians are
//! printed with the count of elements that differ from the one-process ordered sum.
//!
//! `--scaling` (not under mpirun: it starts the runs itself) times one `fit` epoch of the
//! MLP on MNIST in four set-ups, interleaved: 1 process × 1 thread and 1 × 2 threads (plain
//! `fit`), 2 processes × 1 thread (`FitConfig::distributed(2)`), and 1 process × 1 thread
//! with `distributed(2)` (the reference mode: what micro-sharding costs alone). It prints the
//! medians, the time per step inside collectives, the paper model of N machines (compute /
//! N + ring all-reduce `2(N−1)/N × bytes / bandwidth + 2(N−1)·latency`) and how far the
//! reference run's weights are from the plain run's.

mod dist_lab;
#[path = "dist_lab/scaling.rs"]
mod scaling;

use kiln::dist::{self, Algorithm};
use kiln::prelude::*;
use std::time::Instant;

const LEN: usize = 235_146;
const REPS: usize = 60;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--scaling") {
        // Before MPI starts: the driver launches mpirun, and must not pass it a singleton
        // MPI's environment.
        return scaling::drive(&args[1..]);
    }
    let world = dist::init()?;
    if args.first().map(String::as_str) == Some("--epoch") {
        return scaling::epoch(&world, &args[1..]);
    }
    if args.first().map(String::as_str) == Some("--gemm-bound") {
        let steps: Vec<usize> = args[1..].iter().filter_map(|s| s.parse().ok()).collect();
        return gemm_bound(&steps);
    }
    let (n, r) = (world.size(), world.rank());
    // Contribution of rank q, element i: varied magnitudes so that the grouping shows.
    let value = |q: usize, i: usize| {
        let x = ((i * 2_654_435_761 + q * 40_503) % 1_000_003) as f32 / 1_000_003.0 - 0.5;
        x * 10f32.powi(((i + q) % 7) as i32 - 3)
    };
    let mine: Vec<f32> = (0..LEN).map(|i| value(r, i)).collect();
    let all: Vec<Vec<f32>> = (0..n)
        .map(|q| (0..LEN).map(|i| value(q, i)).collect())
        .collect();
    let mut reference = all[0].clone();
    for p in &all[1..] {
        for (o, x) in reference.iter_mut().zip(p) {
            *o += x;
        }
    }
    let algos = [
        ("ordered (alltoall + allgather)", Algorithm::Ordered),
        ("allgather + local sum", Algorithm::Allgather),
        ("MPI_Allreduce", Algorithm::MpiAllreduce),
    ];
    let mut times = vec![vec![]; algos.len()];
    let mut differ = vec![0usize; algos.len()];
    let mut out = vec![0f32; LEN];
    for rep in 0..REPS {
        for (a, &(_, algo)) in algos.iter().enumerate() {
            world.set_algorithm(algo);
            dist::barrier()?;
            let t0 = Instant::now();
            dist::all_reduce_f32(&[&mine], &mut out)?;
            times[a].push(t0.elapsed().as_secs_f64() * 1e3);
            if rep == 0 {
                differ[a] = out
                    .iter()
                    .zip(&reference)
                    .filter(|(x, y)| x.to_bits() != y.to_bits())
                    .count();
            }
        }
    }
    if world.is_root() {
        println!(
            "{n} ranks, {LEN} f32 ({:.2} MB) per rank, {REPS} interleaved reps",
            LEN as f64 * 4e-6
        );
        for (a, (name, _)) in algos.iter().enumerate() {
            let t = &mut times[a];
            t.sort_by(f64::total_cmp);
            println!(
                "  {name:32} median {:.3} ms  (min {:.3})  elements differing from the ordered sum: {} ({:.1}%)",
                t[t.len() / 2],
                t[0],
                differ[a],
                100.0 * differ[a] as f64 / LEN as f64
            );
        }
    }
    Ok(())
}

/// Trains the MLP in one process with 1 micro-shard (one GEMM over the batch) and with 4,
/// for each step count, and prints how far apart the weights are.
fn gemm_bound(steps: &[usize]) -> Result<()> {
    let dir = std::env::temp_dir();
    for &s in steps {
        let mut w = vec![];
        for shards in [1usize, 4] {
            let path = dir.join(format!(
                "kiln-gemm-bound-{shards}-{}.safetensors",
                std::process::id()
            ));
            let o = dist_lab::Opts {
                steps: s,
                shards,
                out: Some(path.clone()),
                ..dist_lab::Opts::default()
            };
            dist_lab::run(&o)?;
            w.push(kiln::checkpoint::read(&path)?);
            let _ = std::fs::remove_file(&path);
        }
        let (mut max_abs, mut max_rel, mut differ, mut total) = (0f64, 0f64, 0usize, 0usize);
        for (name, a) in &w[0].tensors {
            if !name.starts_with("dense_") {
                continue;
            }
            let b = &w[1].tensors[name];
            for (x, y) in a.to_vec::<f32>()?.iter().zip(b.to_vec::<f32>()?) {
                let d = (f64::from(*x) - f64::from(y)).abs();
                max_abs = max_abs.max(d);
                if x.abs() > 1e-3 {
                    max_rel = max_rel.max(d / f64::from(x.abs()));
                }
                differ += usize::from(x.to_bits() != y.to_bits());
                total += 1;
            }
        }
        println!(
            "after {s} steps: {differ} of {total} weights differ between S = 1 and S = 4; \
             max |Δw| {max_abs:.3e}, max relative {max_rel:.3e} (|w| > 1e-3)"
        );
    }
    Ok(())
}
