//! `dist_bench --scaling`: one `fit` epoch of the MNIST MLP (784-256-128-10, no dropout, Adam,
//! batch 128) on 1 and 2 processes, the time inside collectives, a paper model of N
//! machines, and the weights of the reference mode against a plain run. Timings are printed,
//! never asserted.

use kiln::dist::{self, World};
use kiln::nn::*;
use kiln::prelude::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// The MLP's parameters (784·256 + 256 + 256·128 + 128 + 128·10 + 10).
const PARAMS: usize = 235_146;

/// The MLP, compiled (Adam at 1e-3, the README's MNIST settings without dropout; SGD at
/// 0.1 if `sgd`).
fn mlp_with(sgd: bool) -> Result<Model> {
    let linear = std::env::args().any(|a| a == "--linear");
    let mut model = if linear {
        Sequential::new([Input::new([784]).into(), Dense::new(10).into()])
    } else {
        Sequential::new([
            Input::new([784]).into(),
            Dense::new(256).relu().into(),
            Dense::new(128).relu().into(),
            Dense::new(10).into(),
        ])
    };
    let loss = Loss::SparseCategoricalCrossentropy { from_logits: true };
    if sgd {
        model.compile(Sgd::new(0.1), loss, &[Metric::Accuracy])?;
    } else {
        model.compile(Adam::new(1e-3), loss, &[Metric::Accuracy])?;
    }
    Ok(model)
}

fn mlp() -> Result<Model> {
    mlp_with(false)
}

/// One epoch over the first `rows` training rows, plain or with `distributed(2)`: the
/// model, the seconds and the seconds in collectives.
fn train(m: &kiln::data::Mnist, dist_mode: bool, rows: usize) -> Result<(Model, f64, f64)> {
    let idx: Vec<usize> = (0..rows.min(m.train_x.shape()[0])).collect();
    let (x, y) = (
        kiln::data::take_rows(&m.train_x, &idx)?,
        kiln::data::take_rows(&m.train_y, &idx)?,
    );
    let mut model = mlp()?;
    let mut config = FitConfig::new()
        .epochs(1)
        .batch_size(128)
        .verbosity(Verbosity::Silent);
    if dist_mode {
        config = config.distributed(2);
    }
    let comm0 = dist::comm_time();
    let t0 = Instant::now();
    model.fit(&x, &y, config)?;
    let secs = t0.elapsed().as_secs_f64();
    Ok((model, secs, (dist::comm_time() - comm0).as_secs_f64()))
}

fn mnist() -> Result<kiln::data::Mnist> {
    kiln::data::load_mnist(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist"))
}

/// `--epoch plain|dist`: one epoch, then rank 0 prints `epoch_ms E steps S comm_ms C`.
pub fn epoch(world: &World, args: &[String]) -> Result<()> {
    let mode = args.first().map(String::as_str).unwrap_or("plain");
    let m = mnist()?;
    let (_, secs, comm) = train(&m, mode == "dist", usize::MAX)?;
    if world.is_root() {
        let steps = m.train_x.shape()[0].div_ceil(128);
        println!(
            "epoch_ms {:.1} steps {steps} comm_ms {:.1}",
            secs * 1e3,
            comm * 1e3
        );
    }
    Ok(())
}

/// Keeps the weights every `every` steps.
struct Snapshots {
    every: usize,
    kept: Vec<(usize, Vec<f32>)>,
}

impl Callback for Snapshots {
    fn on_batch_end(&mut self, _: usize, step: usize, _: &Logs, m: &mut Model) -> Result<Control> {
        if (step + 1).is_multiple_of(self.every) || step == 0 {
            let mut w = vec![];
            for (_, a) in m.get_weights()? {
                w.extend(a.to_vec::<f32>()?);
            }
            self.kept.push((step + 1, w));
        }
        Ok(Control::Continue)
    }
}

/// How far the reference mode (S = 2) is from the plain run along one epoch: the weights
/// compared every `every` steps.
fn bound(m: &kiln::data::Mnist, every: usize, sgd: bool) -> Result<()> {
    let mut runs = vec![];
    for dist_mode in [false, true] {
        let mut model = mlp_with(sgd)?;
        let mut config = FitConfig::new()
            .epochs(1)
            .batch_size(128)
            .verbosity(Verbosity::Silent);
        if dist_mode {
            config = config.distributed(2);
        }
        let snaps = std::rc::Rc::new(std::cell::RefCell::new(Snapshots {
            every,
            kept: vec![],
        }));
        model.fit(
            &m.train_x,
            &m.train_y,
            config.callback(Shared(snaps.clone())),
        )?;
        let kept = std::mem::take(&mut snaps.borrow_mut().kept);
        runs.push(kept);
    }
    for ((step, a), (_, b)) in runs[0].iter().zip(&runs[1]) {
        let (mut max_abs, mut differ, mut far) = (0f64, 0usize, 0usize);
        for (p, q) in a.iter().zip(b) {
            let d = (f64::from(*p) - f64::from(*q)).abs();
            max_abs = max_abs.max(d);
            far += usize::from(d > 1e-4);
            differ += usize::from(p.to_bits() != q.to_bits());
        }
        println!(
            "  after {step:3} steps: {differ} of {} weights differ, max |dw| {max_abs:.2e}, \
             {far} by more than 1e-4",
            a.len()
        );
    }
    Ok(())
}

/// A callback shared with the caller, who reads it after `fit`.
struct Shared(std::rc::Rc<std::cell::RefCell<Snapshots>>);

impl Callback for Shared {
    fn on_batch_end(&mut self, e: usize, s: usize, l: &Logs, m: &mut Model) -> Result<Control> {
        self.0.borrow_mut().on_batch_end(e, s, l, m)
    }
}

/// One timed set-up: a label, the process count, the threads per process, the mode.
struct Setup {
    label: &'static str,
    ranks: usize,
    threads: usize,
    mode: &'static str,
}

/// Runs one set-up and returns (epoch ms, steps, comm ms).
fn run(s: &Setup) -> Result<(f64, usize, f64)> {
    let io = |e: std::io::Error| Error::invalid(format!("{}: {e}", s.label));
    let exe = std::env::current_exe().map_err(io)?;
    let mut c = if s.ranks > 1 {
        let mut c = Command::new("mpirun");
        c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
            .arg(s.ranks.to_string())
            .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    c.args(["--epoch", s.mode])
        .env("KILN_THREADS", s.threads.to_string())
        .env("OMPI_MCA_mpi_yield_when_idle", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    let o = c.output().map_err(io)?;
    let so = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        return Err(Error::invalid(format!(
            "{} failed: {so}{}",
            s.label,
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    let line = so
        .lines()
        .find(|l| l.starts_with("epoch_ms"))
        .ok_or_else(|| Error::invalid(format!("{}: no epoch line in {so}", s.label)))?;
    let w: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| {
        w.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    Ok((num(1), num(3) as usize, num(5)))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The driver: `--reps K` (default 3) interleaved repetitions of the four set-ups;
/// `--bound-only [EVERY] [--sgd] [--linear]` prints only the weights' distance (every 50
/// steps by default; with SGD at 0.1 instead of Adam; of softmax regression, which has no
/// ReLU to flip, instead of the MLP).
pub fn drive(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "--bound-only") {
        let every = args.iter().find_map(|a| a.parse().ok()).unwrap_or(50);
        return bound(&mnist()?, every, args.iter().any(|a| a == "--sgd"));
    }
    let reps = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize);
    let setups = [
        Setup {
            label: "1 process x 1 thread (plain fit)",
            ranks: 1,
            threads: 1,
            mode: "plain",
        },
        Setup {
            label: "1 process x 2 threads (plain fit)",
            ranks: 1,
            threads: 2,
            mode: "plain",
        },
        Setup {
            label: "2 processes x 1 thread (distributed(2))",
            ranks: 2,
            threads: 1,
            mode: "dist",
        },
        Setup {
            label: "1 process x 1 thread (distributed(2), reference)",
            ranks: 1,
            threads: 1,
            mode: "dist",
        },
    ];
    let mut times = vec![vec![]; setups.len()];
    let mut comms = vec![vec![]; setups.len()];
    let mut steps = 0;
    let load = |when: &str| {
        let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "load {when}: {}",
            l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );
    };
    load("before");
    for _ in 0..reps {
        for (i, s) in setups.iter().enumerate() {
            let (ms, st, comm) = run(s)?;
            times[i].push(ms);
            comms[i].push(comm);
            steps = st;
        }
    }
    load("after");
    println!(
        "one epoch of the MNIST MLP (60,000 rows, batch 128, {steps} steps), medians of {reps}:"
    );
    let t: Vec<f64> = times.iter_mut().map(|v| median(v)).collect();
    let c: Vec<f64> = comms.iter_mut().map(|v| median(v)).collect();
    for (i, s) in setups.iter().enumerate() {
        println!(
            "  {:50} {:8.0} ms  speed-up {:.2}x  collectives {:.3} ms/step",
            s.label,
            t[i],
            t[0] / t[i],
            c[i] / steps as f64
        );
    }
    // The weights of the reference mode (S = 2) against the plain run (one GEMM per step).
    println!("weights of the reference mode (S = 2) against the plain run (Adam, lr 1e-3):");
    bound(&mnist()?, 50, false)?;
    // The paper model: per step, compute of the global batch split over N machines plus the
    // ring all-reduce of the gradient.
    let compute = t[0] / steps as f64; // ms per step of the whole batch on one thread
    let bytes = (PARAMS * 4) as f64;
    println!(
        "paper model, N machines of 1 thread: step = {compute:.2} ms / N + 2(N-1)/N x {:.2} MB / \
         bandwidth + 2(N-1) x latency; speed-up against N = 1:",
        bytes / 1e6
    );
    let links = [
        ("10 GbE (1.1 GB/s, 30 us)", 1.1e9, 30e-6),
        ("25 GbE (2.8 GB/s, 20 us)", 2.8e9, 20e-6),
        ("100 GbE RoCE (11 GB/s, 3 us)", 11e9, 3e-6),
        ("IB HDR (23 GB/s, 1.5 us)", 23e9, 1.5e-6),
    ];
    let ns = [2usize, 4, 8, 16, 64];
    println!(
        "  {:30} {}",
        "link",
        ns.map(|n| format!("N={n:<6}")).join(" ")
    );
    for (name, bw, lat) in links {
        let row: Vec<String> = ns
            .iter()
            .map(|&n| {
                let nf = n as f64;
                let comm = 2.0 * (nf - 1.0) / nf * bytes / bw + 2.0 * (nf - 1.0) * lat;
                format!("{:<8.2}", compute / (compute / nf + comm * 1e3))
            })
            .collect();
        println!("  {name:30} {}", row.join(" "));
    }
    println!(
        "  (measured here, shared memory: {:.3} ms/step in collectives at N = 2, waiting included)",
        c[2] / steps as f64
    );
    Ok(())
}
