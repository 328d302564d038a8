//! The MLP cases (training step at batch 128 and 32, inference at 128, the cold compile),
//! against JAX, numpy and PyTorch measured in the same run when `.peers-venv` (or
//! `KILN_PYTHON`) exists: each peer's samples interleave with kiln's (`harness/peers.rs`).

use crate::harness::peers::{peer_row, Fw, Peers};
use crate::harness::{fmt_time, measure_timed, median, timed, Config, Report, Target, Timed};
use crate::{ramp, THREADS};
use kiln::prelude::*;
use std::hint::black_box;
use std::time::Instant;

/// The 784-256-128-10 ReLU MLP with mean sparse softmax cross-entropy and an SGD (lr 0.01)
/// train op, He-normal weights and zero biases (the peers' `mlp_peers.py` builds the same).
pub struct Mlp<'g> {
    pub x: Tensor<'g>,
    pub y: Tensor<'g>,
    pub logits: Tensor<'g>,
    pub loss: Tensor<'g>,
    pub train: Tensor<'g>,
}

impl<'g> Mlp<'g> {
    pub fn new(g: &'g Graph) -> Mlp<'g> {
        let x = g.placeholder("x", DType::F32, [None, Some(784)]);
        let y = g.placeholder("y", DType::I32, [None]);
        let mut params = vec![];
        let mut h = x;
        for (i, (inp, out)) in [(784, 256), (256, 128), (128, 10)].into_iter().enumerate() {
            let w = g.variable(&format!("w{i}"), [inp, out], init::he_normal(i as u64 + 1));
            let b = g.variable(&format!("b{i}"), [out], init::zeros());
            params.extend([w, b]);
            h = h.matmul(w) + b;
            if i < 2 {
                h = h.relu();
            }
        }
        let loss = h.sparse_softmax_cross_entropy_with_logits(y).mean_all();
        let train = Sgd::new(0.01).minimize(loss, &params).unwrap();
        Mlp {
            x,
            y,
            logits: h,
            loss,
            train,
        }
    }

    pub fn feeds(&self, batch: usize) -> [(Tensor<'g>, Array); 2] {
        let labels: Vec<i32> = (0..batch as i32).map(|i| i % 10).collect();
        [
            (
                self.x,
                Array::new([batch, 784], ramp(batch * 784, 1.0, 97)).unwrap(),
            ),
            (self.y, Array::new([batch], labels).unwrap()),
        ]
    }
}

const FWS: [Fw; 3] = [Fw::Jax, Fw::Numpy, Fw::Torch];

/// Times `kiln` and the peers' `peer_case` at `t` threads, interleaved; kiln's median and
/// each peer's (None when peers are not measured here, NaN if one failed).
fn with_peers(
    cfg: &Config,
    peers: &Peers,
    t: usize,
    peer_case: &str,
    kiln: &mut dyn FnMut(),
) -> (f64, [Option<f64>; 3]) {
    let mut k = timed(kiln);
    let mut pf: Vec<_> = if peers.available() {
        FWS.iter()
            .map(|&fw| peers.timed(fw, t, peer_case))
            .collect()
    } else {
        vec![]
    };
    let mut all: Vec<Timed> = vec![&mut k];
    all.extend(pf.iter_mut().map(|f| f as Timed));
    let m = measure_timed(cfg, &mut all);
    (m[0], std::array::from_fn(|i| m.get(i + 1).copied()))
}

/// One training step (forward, backward, SGD update). Targets (issue 21): 1.1× JAX at one
/// thread, 1.3× at two.
pub fn mlp_train(cfg: &Config, report: &mut Report, peers: &Peers, batch: usize) {
    let case = format!("MLP train step, batch {batch}");
    if !cfg.wants(&case) {
        return;
    }
    eprintln!("{case}");
    let g = Graph::new();
    let m = Mlp::new(&g);
    let feeds = m.feeds(batch);
    let fetch = [m.loss, m.train];
    let pcase = format!("train{batch}");
    for t in THREADS {
        kiln::threads::set_threads(t);
        let mut sess = Session::new(&g).unwrap();
        let (k, p) = with_peers(cfg, peers, t, &pcase, &mut || {
            black_box(sess.run(&fetch, &feeds).unwrap());
        });
        for (fw, p) in FWS.into_iter().zip(p) {
            let target = match fw {
                Fw::Jax => Target::Ratio(if t == 1 { 1.1 } else { 1.3 }),
                _ => Target::None,
            };
            peer_row(report, &case, t, k, fw, &pcase, p, target);
        }
    }
}

/// Inference (forward only, fetching the logits). Target: 1.2× JAX and numpy.
pub fn mlp_infer(cfg: &Config, report: &mut Report, peers: &Peers) {
    let batch = 128;
    let case = format!("MLP inference, batch {batch}");
    if !cfg.wants(&case) {
        return;
    }
    eprintln!("{case}");
    let g = Graph::new();
    let m = Mlp::new(&g);
    let [x_feed, _] = m.feeds(batch);
    let feeds = [x_feed];
    for t in THREADS {
        kiln::threads::set_threads(t);
        let mut sess = Session::new(&g).unwrap();
        let (k, p) = with_peers(cfg, peers, t, "infer128", &mut || {
            black_box(sess.run(&[m.logits], &feeds).unwrap());
        });
        for (fw, p) in FWS.into_iter().zip(p) {
            let target = match fw {
                Fw::Jax | Fw::Numpy => Target::Ratio(1.2),
                Fw::Torch => Target::None,
            };
            peer_row(report, &case, t, k, fw, "infer128", p, target);
        }
    }
}

/// A cold compile of the train step, passes included, in a new session each time (the graph
/// and its gradients are built once, outside the timing), against JAX's lower + compile of
/// the same step, one sample of each in turn. The note splits the whole cold start:
/// `Session::new` (variable initialization), the compile, the first step.
pub fn cold_compile(cfg: &Config, report: &mut Report, peers: &Peers) {
    let batch = 128;
    let case = format!("MLP train graph cold compile, batch {batch}");
    if !cfg.wants(&case) {
        return;
    }
    eprintln!("{case}");
    let g = Graph::new();
    let m = Mlp::new(&g);
    let feeds = m.feeds(batch);
    let fetch = [m.loss, m.train];
    let samples = if cfg.quick {
        cfg.samples
    } else {
        cfg.samples.max(9)
    };
    for t in THREADS {
        kiln::threads::set_threads(t);
        // One cold start: [whole, Session::new, compile total, passes, lowering, Cranelift,
        // finalize] in seconds, and the kernel count.
        let once = || {
            let t0 = Instant::now();
            let mut sess = Session::new(&g).unwrap();
            let new = t0.elapsed();
            black_box(sess.run(&fetch, &feeds).unwrap());
            let wall = t0.elapsed();
            let c = sess.last_compile_times().expect("a JIT compile");
            let parts = [
                wall,
                new,
                c.total(),
                c.passes,
                c.lowering,
                c.cranelift,
                c.finalize,
            ];
            (parts.map(|d| d.as_secs_f64()), c.kernels)
        };
        once(); // warm-up: page in code, prime the allocator
        let mut jax = vec![];
        if peers.available() {
            peers.sample(Fw::Jax, t, "compile", 1); // warm-up: imports, tracing caches
        }
        let mut runs = vec![];
        for _ in 0..samples {
            runs.push(once());
            if peers.available() {
                jax.push(peers.sample(Fw::Jax, t, "compile", 1).unwrap_or(f64::NAN));
            }
        }
        let m: [f64; 7] =
            std::array::from_fn(|i| median(&mut runs.iter().map(|r| r.0[i]).collect::<Vec<_>>()));
        let jax = (!jax.is_empty() && jax.iter().all(|s| s.is_finite())).then(|| median(&mut jax));
        // The target is the compile (passes, Cranelift IR, machine code, finalize), which is
        // what JAX's lower + compile measures; variable initialization and the first step are
        // in the note below.
        let target = Target::Under(20e-3, 10e-3);
        peer_row(report, &case, t, m[2], Fw::Jax, "compile", jax, target);
        let [wall, new, total, passes, lowering, cranelift, finalize] = m.map(fmt_time);
        report.note(format!(
            "cold start at {t} thread{}, medians of {samples}: {wall} in all; Session::new \
             {new}; compile {total} = passes {passes} + lowering {lowering} + Cranelift \
             {cranelift} + finalize {finalize} ({} kernels); the rest is checking feeds and \
             running the step",
            if t > 1 { "s" } else { "" },
            runs[0].1,
        ));
    }
}
