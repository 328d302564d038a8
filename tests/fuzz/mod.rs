//! kiln's fuzz harness: a seeded, deterministic, in-repo generator and mutator with three
//! targets (issue 16, "Must show"):
//!
//! - [`graphs`]: random well-typed graphs over every op and dtype, with empty and batch (`?`)
//!   dimensions and sometimes their gradients, run on the JIT and on the interpreter, and on
//!   the JIT at 1 and at 2 threads. Both backends must agree on Ok/Err, and on the values by
//!   the rules of tests/jit.rs: bitwise where only IEEE-exact ops were involved, within a
//!   loose relative bound after a transcendental, a float sum or a matrix product, and not at
//!   all after a comparison or a cast to an integer of such an approximate value (one ulp may
//!   flip it), nor after `log`, `recip`, `div` or `pow` of a sum that may cancel to near zero
//!   (see `compare.rs`). 1 thread against 2 is always bitwise.
//! - [`text`]: the text parser on mutated dumps of random graphs. It must return `Ok` or `Err`
//!   and never panic; what it accepts must type-check and dump/parse back to the same text.
//! - [`files`]: the checkpoint and IDX loaders on mutated, truncated and extended files. They
//!   must never panic, and a damaged checkpoint must never be restored with changed values.
//!
//! **Why seeded and in-repo rather than `cargo fuzz`:** `cargo fuzz` needs a nightly toolchain
//! and libFuzzer, and CI is a machine with only the stable Rust toolchain. A seeded generator
//! runs on stable, in `cargo test` and in CI, needs no extra crate, and a failure is a seed:
//! the same seed gives the same case on any machine.
//!
//! **Running it.** `cargo test --release --test fuzzing` runs each target for a fixed number of
//! cases. For a bounded-time run (CI does 90 s):
//! `cargo run --release --example fuzz -- --seconds 600 --seed 1`; it prints, per target,
//! `N cases, 0 failures`, and for each failure its seed and a minimized reproducer (for graphs,
//! shrunk by deleting the generator's steps). `--target graphs|text|files` runs one target and
//! `--case SEED` replays one case. A case that runs over a minute is reported as a hang and ends
//! the run. A process abort (stack overflow, failed allocation) cannot
//! be caught: `--verbose` prints every case's seed before it runs, so the last line names it.
#![allow(dead_code)]

pub mod compare;
pub mod files;
pub mod graphs;
pub mod text;

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// Failures already reported in tests/fuzz_findings.md whose fix is pending in a file another
/// change owns: (finding, target, a substring of the failure that identifies it). Findings
/// no substring can name (F2, F5, F8) are kept out of the value comparison instead, by the
/// switches at the top of tests/fuzz/compare.rs. A run counts
/// them apart and does not fail on them; delete a line when its fix lands, so the harness
/// guards the fix. Each has an `#[ignore]`d regression test in tests/fuzz_findings.rs.
pub const KNOWN: [(&str, &str, &str); 0] = [];

/// The known finding `what` is, if any.
pub fn known(target: &str, what: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .find(|(_, t, pat)| *t == target && what.contains(pat))
        .map(|(f, _, _)| *f)
}

thread_local! {
    /// Whether a panic on this thread is expected (caught by [`no_panic`]): then the hook
    /// records where it happened instead of printing it.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static WHERE: RefCell<String> = const { RefCell::new(String::new()) };
}

fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map_or(String::new(), |l| format!("{}:{}", l.file(), l.line()));
            WHERE.with(|w| *w.borrow_mut() = at);
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// A small deterministic generator (xorshift64*), so the harness needs no extra crates.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    /// A uniformly chosen element.
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    /// A float in `[-2, 2)`.
    pub fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
    }
}

/// One failing case: which target, its seed and what went wrong (with a reproducer).
#[derive(Debug)]
pub struct Failure {
    /// The target's name.
    pub target: &'static str,
    /// The case's seed: `--target T --case SEED` replays it.
    pub seed: u64,
    /// What went wrong, with the minimized reproducer.
    pub what: String,
}

/// A target: runs the case for `seed`, returning what went wrong.
pub type Target = fn(u64) -> Result<(), String>;

/// The three targets, by name.
pub const TARGETS: [(&str, Target); 3] = [
    ("graphs", graphs::case),
    ("text", text::case),
    ("files", files::case),
];

/// Runs `f`, turning a panic into an `Err` with its message.
pub fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    let was = QUIET.with(|q| q.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    r.map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(no message)".into());
        let at = WHERE.with(|w| w.borrow().clone());
        format!("{what} panicked at {at}: {msg}")
    })
}

/// Runs one case of `target`, catching a panic of the harness itself as a failure too.
pub fn run_case(name: &'static str, target: Target, seed: u64) -> Option<Failure> {
    let r = no_panic(name, || target(seed)).and_then(|r| r);
    r.err().map(|what| Failure {
        target: name,
        seed,
        what,
    })
}

/// [`run_case`] on its own thread, reported as a hang if it has not finished within `limit`
/// (the thread is then left behind: a run stops at its first hang).
pub fn run_case_watched(
    name: &'static str,
    target: Target,
    seed: u64,
    limit: Duration,
) -> Option<Failure> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run_case(name, target, seed));
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| {
        Some(Failure {
            target: name,
            seed,
            what: format!("hang: the case did not finish within {limit:?}"),
        })
    })
}

/// Per-target totals of a run.
#[derive(Debug, Default)]
pub struct Tally {
    /// Cases run.
    pub cases: u64,
    /// The failures, in order.
    pub failures: Vec<Failure>,
    /// Known failures (see [`KNOWN`]): finding and seed.
    pub known: Vec<(&'static str, u64)>,
}

impl Tally {
    /// `N cases, F failures`, and the known findings met, if any.
    pub fn summary(&self) -> String {
        let mut s = format!("{} cases, {} failures", self.cases, self.failures.len());
        if !self.known.is_empty() {
            let mut ids: Vec<&str> = self.known.iter().map(|k| k.0).collect();
            ids.sort_unstable();
            ids.dedup();
            s += &format!(
                " ({} known, fix pending: {})",
                self.known.len(),
                ids.join(", ")
            );
        }
        s
    }
}

/// The seed of case `k` of a run seeded by `seed`, distinct per target.
pub fn case_seed(seed: u64, target: usize, k: u64) -> u64 {
    seed.wrapping_mul(1_000_003)
        .wrapping_add(k.wrapping_mul(3))
        .wrapping_add(target as u64)
}

/// Runs the `targets` round-robin from `seed` until `budget` is spent or every target has run
/// `max_cases` cases, calling `before` with each case's target and seed first. With a
/// `watchdog`, a case running longer is a hang, and the run stops there.
pub fn run(
    targets: &[(&'static str, Target)],
    seed: u64,
    budget: Duration,
    max_cases: u64,
    watchdog: Option<Duration>,
    mut before: impl FnMut(&str, u64),
) -> Vec<Tally> {
    let start = Instant::now();
    let mut tallies: Vec<Tally> = targets.iter().map(|_| Tally::default()).collect();
    let mut k = 0u64;
    while k < max_cases && start.elapsed() < budget {
        for (t, (name, target)) in targets.iter().enumerate() {
            let s = case_seed(seed, t, k);
            before(name, s);
            tallies[t].cases += 1;
            let failure = match watchdog {
                Some(limit) => run_case_watched(name, *target, s, limit),
                None => run_case(name, *target, s),
            };
            if let Some(f) = failure {
                let hang = f.what.starts_with("hang:");
                match known(name, &f.what) {
                    Some(id) => tallies[t].known.push((id, s)),
                    None => tallies[t].failures.push(f),
                }
                if hang {
                    return tallies;
                }
            }
        }
        k += 1;
    }
    tallies
}
