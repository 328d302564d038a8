//! The report's timing and table: interleaved samples and medians, rows and their targets.

pub mod peers;

use std::time::{Duration, Instant};

/// Where the published reference figures come from.
pub const PUBLISHED: &str = "published 2026-11-24";

/// Command-line settings: `--quick`, `--no-peers`, and filter substrings (any other `--flag` is ignored).
pub struct Config {
    pub quick: bool,
    /// `--no-peers`: never start the Python peers (their rows show published figures).
    pub no_peers: bool,
    pub samples: usize,
    pub min_sample: Duration,
    pub warmup: Duration,
    pub filters: Vec<String>,
}

impl Config {
    pub fn from_args() -> Config {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let no_peers = args.iter().any(|a| a == "--no-peers");
        // Anything else starting with `--` (cargo passes `--bench`) is ignored.
        let filters = args
            .into_iter()
            .filter(|a| !a.starts_with("--"))
            .map(|a| a.to_lowercase())
            .collect();
        let ms = Duration::from_millis;
        let (samples, min_sample, warmup) = if quick {
            (5, ms(5), ms(20))
        } else {
            (11, ms(20), ms(300))
        };
        Config {
            quick,
            no_peers,
            samples,
            min_sample,
            warmup,
            filters,
        }
    }

    /// Whether the case named `case` should run (its name contains a filter, or no filters).
    pub fn wants(&self, case: &str) -> bool {
        let case = case.to_lowercase();
        self.filters.is_empty() || self.filters.iter().any(|f| case.contains(f.as_str()))
    }
}

/// What a row's ratio (baseline / kiln) should reach.
#[derive(Clone, Copy)]
pub enum Target {
    /// ratio >= x.
    Ratio(f64),
    /// ratio > 1, against the named baseline.
    Faster,
    /// kiln's time below this many seconds (the moonshot is printed only).
    Under(f64, f64),
    /// A reference row without a target of its own.
    None,
}

struct Row {
    case: String,
    threads: usize,
    kiln: f64,
    baseline: String,
    base: f64,
    target: Target,
}

/// The rows and notes gathered so far; each is echoed to stderr as it comes.
#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    /// Adds a row: kiln's and the baseline's medians in seconds.
    pub fn row(
        &mut self,
        case: &str,
        threads: usize,
        kiln: f64,
        baseline: &str,
        base: f64,
        t: Target,
    ) {
        let row = Row {
            case: case.to_string(),
            threads,
            kiln,
            baseline: baseline.to_string(),
            base,
            target: t,
        };
        eprintln!("  {}", row_line(&row));
        self.rows.push(row);
    }

    pub fn note(&mut self, s: String) {
        eprintln!("  note: {s}");
        self.notes.push(s);
    }

    /// Prints the header, the table and the notes to stdout.
    pub fn print(&self, cfg: &Config) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!("# kiln benchmark report\n");
        println!(
            "Machine: {cores} hardware threads available. Mode: {}, {} samples per figure of at \
             least {} ms each, medians; kiln and Rust-baseline samples interleaved.",
            if cfg.quick { "quick" } else { "full" },
            cfg.samples,
            cfg.min_sample.as_millis()
        );
        println!(
            "Ratio = baseline median / kiln median: above 1 means kiln is faster. Rows marked \
             \"this run\" timed the peer framework in this run, its samples interleaved with \
             kiln's; rows marked \"{PUBLISHED}, not measured here\" show the peer scripts' \
             figures from that date on another machine.\n"
        );
        println!("Load average at the end: {}\n", load_average());
        println!(
            "| case | threads | kiln median | baseline | baseline median | ratio (baseline / kiln, \
             > 1 = kiln faster) | target |"
        );
        println!("|---|---|---|---|---|---|---|");
        for r in &self.rows {
            println!("{}", row_line(r));
        }
        if !self.notes.is_empty() {
            println!();
            for n in &self.notes {
                println!("- {n}");
            }
        }
    }
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), or "unknown".
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// `s` seconds with three significant digits in s, ms or µs.
pub fn fmt_time(s: f64) -> String {
    let (v, unit) = match s {
        s if s >= 1.0 => (s, "s"),
        s if s >= 1e-3 => (s * 1e3, "ms"),
        s => (s * 1e6, "µs"),
    };
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.decimals$} {unit}")
}

fn row_line(r: &Row) -> String {
    let ratio = r.base / r.kiln;
    let target = match r.target {
        Target::Ratio(x) => format!(">= {x}x: {}", met(ratio >= x)),
        Target::Faster => format!("faster: {}", met(ratio > 1.0)),
        Target::Under(limit, moon) => format!(
            "< {} (moonshot {}): {}",
            fmt_time(limit),
            fmt_time(moon),
            met(r.kiln < limit)
        ),
        Target::None => "(reference)".to_string(),
    };
    format!(
        "| {} | {} | {} | {} | {} | {ratio:.2}x | {target} |",
        r.case,
        r.threads,
        fmt_time(r.kiln),
        r.baseline,
        fmt_time(r.base)
    )
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}

// ---------------------------------------------------------------------------------------------
// Timing

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A workload as the sampler sees it: run it `calls` times back to back and return the
/// seconds per call (measured by the caller, or by a peer process in its own clock), or NaN
/// if it failed.
pub type Timed<'a> = &'a mut dyn FnMut(u32) -> f64;

/// `f` as a [`Timed`] workload, timed here.
pub fn timed(f: &mut dyn FnMut()) -> impl FnMut(u32) -> f64 + '_ {
    move |calls| {
        let t0 = Instant::now();
        for _ in 0..calls {
            f();
        }
        t0.elapsed().as_secs_f64() / f64::from(calls.max(1))
    }
}

/// Warms `f` up (at least two calls and `cfg.warmup`) and returns the calls per sample.
fn calibrate(cfg: &Config, f: Timed) -> u32 {
    if f(1).is_nan() {
        return 1;
    }
    let t0 = Instant::now();
    let (mut calls, mut sum) = (0u32, 0.0);
    while calls < 2 || t0.elapsed() < cfg.warmup {
        let s = f(1);
        if s.is_nan() {
            return 1;
        }
        sum += s;
        calls += 1;
    }
    let per_call = sum / f64::from(calls);
    (cfg.min_sample.as_secs_f64() / per_call)
        .ceil()
        .clamp(1.0, 1e6) as u32
}

/// The median seconds per call of each workload, samples interleaved (f0, f1, f0, f1, ...);
/// NaN for a workload that failed.
pub fn measure_timed(cfg: &Config, fs: &mut [Timed]) -> Vec<f64> {
    let iters: Vec<u32> = fs.iter_mut().map(|f| calibrate(cfg, *f)).collect();
    let mut times = vec![Vec::with_capacity(cfg.samples); fs.len()];
    for _ in 0..cfg.samples {
        for (i, f) in fs.iter_mut().enumerate() {
            times[i].push(f(iters[i]));
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            if t.iter().any(|s| s.is_nan()) {
                f64::NAN
            } else {
                median(&mut t)
            }
        })
        .collect()
}

/// The median seconds per call of each function, samples interleaved (f0, f1, f0, f1, ...).
pub fn measure<const N: usize>(cfg: &Config, fs: [&mut dyn FnMut(); N]) -> [f64; N] {
    let mut wrapped: Vec<_> = fs.into_iter().map(timed).collect();
    let mut refs: Vec<Timed> = wrapped.iter_mut().map(|f| f as Timed).collect();
    let m = measure_timed(cfg, &mut refs);
    std::array::from_fn(|i| m[i])
}
