//! The fuzz harness for a bounded time (see tests/fuzz/mod.rs for what it checks):
//!
//! ```text
//! cargo run --release --example fuzz -- --seconds 120 [--seed S] [--target graphs|text|files]
//!                                       [--case SEED] [--verbose]
//! ```
//!
//! Prints `N cases, F failures` per target and each failure's seed and reproducer; exits with
//! status 1 if anything failed, so CI fails.

#[path = "../tests/fuzz/mod.rs"]
mod fuzz;

use std::time::Duration;

/// Fuzzes kiln for a bounded time: random graphs (JIT vs interpreter), the parser on
/// mutated dumps, the loaders on damaged files.
#[derive(clap::Parser, Debug)]
#[command(name = "fuzz", version)]
struct Args {
    /// How long to fuzz, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The first case's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fuzz one target only (default: all).
    #[arg(long, value_parser = ["graphs", "text", "files"])]
    target: Option<String>,
    /// Replay the case of this seed and exit.
    #[arg(long, value_name = "SEED")]
    case: Option<u64>,
    /// Print each case's target and seed before running it.
    #[arg(long)]
    verbose: bool,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let (seconds, seed, verbose) = (args.seconds, args.seed, args.verbose);
    let targets: Vec<(&'static str, fuzz::Target)> = match &args.target {
        Some(t) => fuzz::TARGETS
            .iter()
            .copied()
            .filter(|(n, _)| n == t)
            .collect(),
        None => fuzz::TARGETS.to_vec(),
    };
    if let Some(s) = args.case {
        let mut failed = false;
        for (name, t) in &targets {
            match fuzz::run_case(name, *t, s) {
                Some(f) => {
                    failed = true;
                    let known = fuzz::known(name, &f.what)
                        .map_or(String::new(), |k| format!(" (known finding {k})"));
                    println!("{name} seed {s}: FAILED{known}\n{}", f.what);
                }
                None => println!("{name} seed {s}: ok"),
            }
        }
        std::process::exit(failed as i32);
    }
    println!("fuzzing {seconds} s from seed {seed}");
    let tallies = fuzz::run(
        &targets,
        seed,
        Duration::from_secs(seconds),
        u64::MAX,
        Some(Duration::from_secs(60)),
        |t, s| {
            if verbose {
                eprintln!("{t} {s}");
            }
        },
    );
    let mut failed = 0;
    for ((name, _), tally) in targets.iter().zip(&tallies) {
        println!("{name}: {}", tally.summary());
        for f in &tally.failures {
            println!(
                "\n--- {name} seed {} (replay: --target {name} --case {})\n{}\n",
                f.seed, f.seed, f.what
            );
        }
        failed += tally.failures.len();
    }
    std::process::exit((failed > 0) as i32);
}
