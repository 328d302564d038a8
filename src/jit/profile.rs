//! Per-step timers, off unless `KILN_PROFILE=1`: where a run's time goes, step by step.
//!
//! A compiled program is a flat list of steps (kernel calls, `gemm`s, convolutions, pooling,
//! random fills, copies), so "which step costs what" is the question every speed change
//! starts from; timing each step from outside (`perf`) cannot name the graph node a JIT'd
//! function came from. With the variable set when an executable is compiled, each run adds
//! every step's wall time to the executable's totals; [`Executable::step_profile`] returns
//! them, and dropping the executable prints them to stderr (step order, the share of the
//! run, the node's label), so a benchmark run under `KILN_PROFILE=1` prints one table per
//! compiled executable. Off, a run pays one branch per step.

use super::compile::Step;
use super::Executable;
use crate::graph::op::Op;
use crate::passes::Program;
use std::sync::Mutex;
use std::time::Duration;

/// The accumulated time of one step of an executable (see [`Executable::step_profile`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StepTime {
    /// What the step runs: `kernel elementwise`, `kernel reduce_sum`, `kernel matmul`, or
    /// the op of a native step (`conv2d`, `max_pool_grad`, `random`, `reshape`, ...).
    pub kind: String,
    /// The graph node the step computes, as errors name it.
    pub name: String,
    /// How many runs were timed.
    pub runs: u64,
    /// Their total wall time in this step.
    pub total: Duration,
}

/// Whether `KILN_PROFILE=1` was set when the process first asked.
pub(super) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("KILN_PROFILE").is_ok_and(|v| v == "1"))
}

/// An executable's step timers (empty when profiling is off).
pub(super) struct Profile {
    /// Kind and name of each step, in order; empty when off.
    labels: Vec<(String, String)>,
    /// Total time and runs of each step.
    acc: Mutex<(Vec<Duration>, u64)>,
}

impl Profile {
    /// Timers for `steps` of `p` if profiling is on, else none.
    pub(super) fn new(p: &Program, steps: &[Step]) -> Profile {
        let labels = if enabled() {
            steps.iter().map(|s| describe(p, s)).collect()
        } else {
            vec![]
        };
        let n = labels.len();
        Profile {
            labels,
            acc: Mutex::new((vec![Duration::ZERO; n], 0)),
        }
    }

    /// Whether runs should time their steps.
    pub(super) fn on(&self) -> bool {
        !self.labels.is_empty()
    }

    /// Adds one run's step times (`times[i]` for step `i`).
    pub(super) fn add(&self, times: &[Duration]) {
        if let Ok(mut a) = self.acc.lock() {
            for (t, d) in a.0.iter_mut().zip(times) {
                *t += *d;
            }
            a.1 += 1;
        }
    }

    fn snapshot(&self) -> Vec<StepTime> {
        let Ok(a) = self.acc.lock() else {
            return vec![];
        };
        self.labels
            .iter()
            .zip(&a.0)
            .map(|((kind, name), &total)| StepTime {
                kind: kind.clone(),
                name: name.clone(),
                runs: a.1,
                total,
            })
            .collect()
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let steps = self.snapshot();
        let runs = steps.first().map_or(0, |s| s.runs);
        if runs == 0 {
            return;
        }
        let total: Duration = steps.iter().map(|s| s.total).sum();
        let per = |d: Duration| d.as_secs_f64() * 1e3 / runs as f64;
        let mut out = format!(
            "kiln profile: {} steps, {runs} runs, {:.3} ms per run in steps\n",
            steps.len(),
            per(total)
        );
        for (i, s) in steps.iter().enumerate() {
            let share = s.total.as_secs_f64() / total.as_secs_f64().max(1e-12) * 100.0;
            out += &format!(
                "  {i:>3} {:>9.3} ms {share:>5.1}%  {:<24} {}\n",
                per(s.total),
                s.kind,
                s.name
            );
        }
        eprint!("{out}");
    }
}

/// A step's kind and its node's label.
fn describe(p: &Program, s: &Step) -> (String, String) {
    let node = match s {
        Step::Kernel { node, .. }
        | Step::Conv { node, .. }
        | Step::Copy { node, .. }
        | Step::Random { node, .. } => *node,
        Step::Pool(ps) => ps.node,
        Step::ConvFused(f) => f.node(),
        Step::AllReduce(c) => c.node,
    };
    let n = p.graph.node(node);
    let kind = match (&n.op, s) {
        (_, Step::ConvFused(f)) => f.kind().to_string(),
        (_, Step::Conv { conv, .. }) if conv.epi.is_some() => {
            conv.epi.as_ref().map_or("", |e| e.kind()).to_string()
        }
        (Op::Fusion(k), _) => match p.kernels().lookup(*k) {
            Ok(k) => format!("kernel {}", k.kind()),
            Err(_) => "kernel".into(),
        },
        (Op::Conv { kind, .. }, _) => format!("conv {kind:?}"),
        (op, _) => op.name().to_string(),
    };
    (kind, n.label())
}

impl Executable {
    /// Each step's accumulated wall time over the runs so far, in step order, when the
    /// executable was compiled with `KILN_PROFILE=1` set (else empty). Dropping such an
    /// executable prints the same table to stderr.
    pub fn step_profile(&self) -> Vec<StepTime> {
        self.profile.snapshot()
    }
}
