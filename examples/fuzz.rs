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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let num = |name: &str, default: u64| {
        arg(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, got {v:?}"))
        })
    };
    let seconds = num("--seconds", 60);
    let seed = num("--seed", 1);
    let verbose = args.iter().any(|a| a == "--verbose");
    let targets: Vec<(&'static str, fuzz::Target)> = match arg("--target") {
        Some(t) => fuzz::TARGETS
            .iter()
            .copied()
            .filter(|(n, _)| *n == t)
            .collect(),
        None => fuzz::TARGETS.to_vec(),
    };
    if targets.is_empty() {
        eprintln!("--target is one of graphs, text, files");
        std::process::exit(2);
    }
    if let Some(case) = arg("--case") {
        let s: u64 = case.parse().expect("--case takes a seed");
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
