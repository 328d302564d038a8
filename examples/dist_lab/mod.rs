//! The distributed MNIST MLP run (issue 19), shared by `examples/mnist_mpi.rs` and
//! `tests/dist.rs`, so the test runs exactly what the README's command runs.
//!
//! The MLP is 784-256-128-10 (ReLU, no dropout: in this hand-written graph a random op
//! would need keying by global micro-shard, which `fit` does through the run counter,
//! `FitConfig::distributed`, but one graph with k losses cannot), Adam at 1e-3, wrapped in
//! `Distributed`. Every global batch of `batch` rows is cut into `shards` micro-shards of
//! `batch / shards` rows; rank `r` of `N` computes micro-shards `r·k .. r·k + k` (`k =
//! shards / N`) with one placeholder pair and one loss each. Global batch `t` is rows
//! `t·batch ..` of the training set in file order (wrapping), so every run, whatever its
//! rank count, sees the same batches.

#![allow(dead_code)]

use kiln::data;
use kiln::dist;
use kiln::prelude::*;
use kiln::train::Distributed;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct Opts {
    /// Training steps (global batches), counted from 0 even when resuming.
    pub steps: usize,
    /// Micro-shards per global batch (a multiple of the rank count).
    pub shards: usize,
    /// Rows per global batch (a multiple of `shards`).
    pub batch: usize,
    /// Where rank 0 writes the final weights (a kiln checkpoint, atomically).
    pub out: Option<PathBuf>,
    /// Rank 0 also writes `out` every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Start from this checkpoint (read by rank 0, broadcast to the others) at step `from`.
    pub resume: Option<(PathBuf, usize)>,
    /// Fault injection: the last rank exits at this step without a word to the others.
    pub die_at: Option<usize>,
    /// Fault injection: the last rank builds a different graph.
    pub odd_graph: bool,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            steps: 300,
            shards: 4,
            batch: 128,
            out: None,
            checkpoint_every: 0,
            resume: None,
            die_at: None,
            odd_graph: false,
        }
    }
}

/// What a run measured.
pub struct Summary {
    /// FNV-1a over the bits of every weight, in variable order.
    pub weights_hash: u64,
    /// The last step's mean loss over this rank's micro-shards.
    pub last_loss: f32,
    /// Wall time of the steps.
    pub train_time: Duration,
    /// Time inside collectives during the steps.
    pub comm_time: Duration,
    /// Steps run.
    pub steps: usize,
}

fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Rows `lo..lo + n` of a row-major `[rows, width]` buffer as an array.
fn rows<T: kiln::array::Element + Copy>(
    v: &[T],
    width: usize,
    lo: usize,
    n: usize,
) -> Result<Array> {
    let shape: Vec<usize> = if width == 1 { vec![n] } else { vec![n, width] };
    Array::new(shape, v[lo * width..(lo + n) * width].to_vec())
}

/// Trains as `o` says on this process's share of the world (call `dist::init` first).
pub fn run(o: &Opts) -> Result<Summary> {
    let (n, r) = (dist::world_size(), dist::rank());
    if o.shards == 0 || !o.shards.is_multiple_of(n) || !o.batch.is_multiple_of(o.shards) {
        return Err(Error::invalid(format!(
            "mnist_mpi: {n} ranks must divide {} micro-shards, which must divide the batch {}",
            o.shards, o.batch
        )));
    }
    let (k, m) = (o.shards / n, o.batch / o.shards);
    let mnist = data::load_mnist(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist"))?;
    let xs = mnist.train_x.to_vec::<f32>()?;
    let ys = mnist.train_y.to_vec::<i32>()?;
    let usable = ys.len() - ys.len() % o.batch;

    let g = Graph::new();
    let layers = [(784, 256, 1u64), (256, 128, 2), (128, 10, 3)];
    let mut vars = vec![];
    for (i, &(fan_in, units, seed)) in layers.iter().enumerate() {
        vars.push(g.variable(
            &format!("dense_{i}/kernel"),
            [fan_in, units],
            init::glorot_uniform(seed),
        ));
        vars.push(g.variable(&format!("dense_{i}/bias"), [units], init::zeros()));
    }
    let mut feeds = vec![];
    let mut losses = vec![];
    for j in 0..k {
        let x = g.placeholder(&format!("x_{j}"), DType::F32, [m, 784]);
        let y = g.placeholder(&format!("y_{j}"), DType::I32, [m]);
        let mut h = x;
        for (l, w) in vars.chunks(2).enumerate() {
            h = h.matmul(w[0]) + w[1];
            if l + 1 < layers.len() {
                h = h.relu();
            }
        }
        losses.push(h.sparse_softmax_cross_entropy_with_logits(y).mean_all());
        feeds.push((x, y));
    }
    if o.odd_graph && r + 1 == n && n > 1 {
        let _ = g.scalar(1.0f32).named("only_on_the_last_rank");
    }
    let train = Distributed::new(Adam::new(1e-3)).minimize_shards(&losses, &vars)?;
    let mut sess = Session::new(&g)?;
    let from = match &o.resume {
        Some((path, from)) => {
            if r == 0 {
                sess.restore(path)?;
            }
            *from
        }
        None => 0,
    };
    dist::start(&mut sess)?;

    let comm0 = dist::comm_time();
    let t0 = Instant::now();
    let mut last_loss = f32::NAN;
    for t in from..o.steps {
        if o.die_at == Some(t) && r + 1 == n && n > 1 {
            eprintln!("rank {r}: exiting at step {t} (fault injection)");
            std::process::exit(3);
        }
        let base = (t * o.batch) % usable;
        let mut fed = vec![];
        for (j, &(x, y)) in feeds.iter().enumerate() {
            let lo = base + (r * k + j) * m;
            fed.push((x, rows(&xs, 784, lo, m)?));
            fed.push((y, rows(&ys, 1, lo, m)?));
        }
        let out = sess.run(&[train, losses[0]], &fed)?;
        last_loss = out[1].scalar_value::<f32>()?;
        if o.checkpoint_every > 0 && (t + 1).is_multiple_of(o.checkpoint_every) && r == 0 {
            if let Some(p) = &o.out {
                sess.save(p)?;
            }
        }
    }
    let train_time = t0.elapsed();
    let comm_time = dist::comm_time() - comm0;
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &v in &vars {
        let a = sess
            .variable(v)
            .ok_or_else(|| Error::invalid("a weight has no value"))?;
        for x in a.to_vec::<f32>()? {
            h = fnv(h, &x.to_bits().to_le_bytes());
        }
    }
    if r == 0 {
        if let Some(p) = &o.out {
            sess.save(p)?;
        }
    }
    Ok(Summary {
        weights_hash: h,
        last_loss,
        train_time,
        comm_time,
        steps: o.steps - from,
    })
}

/// Parses `--steps N --shards S --batch B --out PATH --checkpoint-every N --resume PATH
/// --from STEP --die-at STEP --odd-graph`.
pub fn parse(args: impl Iterator<Item = String>) -> Result<Opts> {
    let mut o = Opts::default();
    let mut args = args.peekable();
    let mut resume = None;
    let mut from = 0;
    let bad = |what: &str| Error::invalid(format!("mnist_mpi: {what}"));
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| bad(&format!("{a} needs a value")))
        };
        let num = |s: String| {
            s.parse::<usize>()
                .map_err(|_| bad(&format!("not a count: {s}")))
        };
        match a.as_str() {
            "--steps" => o.steps = num(val()?)?,
            "--shards" => o.shards = num(val()?)?,
            "--batch" => o.batch = num(val()?)?,
            "--out" => o.out = Some(PathBuf::from(val()?)),
            "--checkpoint-every" => o.checkpoint_every = num(val()?)?,
            "--resume" => resume = Some(PathBuf::from(val()?)),
            "--from" => from = num(val()?)?,
            "--die-at" => o.die_at = Some(num(val()?)?),
            "--odd-graph" => o.odd_graph = true,
            _ => return Err(bad(&format!("unknown argument {a}"))),
        }
    }
    o.resume = resume.map(|p| (p, from));
    Ok(o)
}
