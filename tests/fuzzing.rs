//! The fuzz harness (tests/fuzz/mod.rs) in `cargo test`: each target for a fixed number of
//! seeded cases, and the seeds that once broke the parser. CI also runs it for a bounded time
//! (`cargo run --release --example fuzz -- --seconds 120`).

mod fuzz;

use std::time::Duration;

/// Runs `cases` cases of target `t` from seed 0, failing with every failure's seed and report.
fn run_target(t: usize, cases: u64) {
    let tallies = fuzz::run(
        &fuzz::TARGETS[t..=t],
        0,
        Duration::MAX,
        cases,
        None,
        |_, _| {},
    );
    let tally = &tallies[0];
    assert_eq!(tally.cases, cases);
    let report: Vec<String> = tally
        .failures
        .iter()
        .map(|f| format!("{} seed {}: {}", f.target, f.seed, f.what))
        .collect();
    assert!(report.is_empty(), "{}", report.join("\n\n"));
}

#[test]
fn random_graphs_agree_across_backends_and_threads() {
    run_target(0, 150);
}

#[test]
fn the_parser_survives_mutated_dumps() {
    run_target(1, 400);
}

#[test]
fn the_loaders_survive_damaged_files() {
    run_target(2, 200);
}

/// The generator makes what it claims: graphs that check, with steps, and sometimes gradients.
#[test]
fn the_generator_builds_checked_graphs() {
    let mut grads = 0;
    for seed in 0..50 {
        let plan = fuzz::graphs::Plan::new(seed);
        let b = fuzz::graphs::build(&plan);
        assert!(b.g.check().is_ok(), "seed {seed}:\n{}", b.g.dump());
        assert!(!b.outs.is_empty());
        grads += (b.outs.len() > 3) as usize;
    }
    assert!(grads > 0, "no case differentiated");
}

/// The mutators change their input (a fuzzer that returns its seed finds nothing).
#[test]
fn the_mutators_mutate() {
    let mut r = fuzz::Rng::new(1);
    let text = fuzz::text::SEEDS[0];
    let changed = (0..50)
        .filter(|_| fuzz::text::mutate(&mut r, text) != text)
        .count();
    assert!(
        changed > 30,
        "{changed} of 50 text mutations changed the input"
    );
    let bytes = vec![7u8; 100];
    let changed = (0..50)
        .filter(|_| {
            let mut b = bytes.clone();
            fuzz::files::mutate(&mut r, &mut b);
            b != bytes
        })
        .count();
    assert!(
        changed > 30,
        "{changed} of 50 byte mutations changed the input"
    );
}

/// The inputs that once broke the parser (tests/fuzz/text.rs's seeds) parse to `Ok` or `Err`
/// without panicking, and what parses checks and round-trips, but for the known findings
/// pending a fix (`fuzz::KNOWN`, tests/fuzz_findings.md).
#[test]
fn the_parser_seeds_fail_only_in_known_ways() {
    for text in fuzz::text::SEEDS {
        if let Err(e) = fuzz::text::check(text) {
            assert!(fuzz::known("text", &e).is_some(), "{e}\ninput:\n{text}");
        }
    }
}

/// The generator reaches every op it promises (a generator that never makes `pad` never
/// fuzzes it): each op's name appears in the dumps of the first 400 plans.
#[test]
fn the_generator_covers_every_op() {
    let mut seen = String::new();
    for seed in 0..400 {
        seen += &fuzz::graphs::build(&fuzz::graphs::Plan::new(seed)).g.dump();
    }
    // Every op kind of the table (but the effects, which the generator leaves to
    // tests/effects.rs, the argmax gather, which only a second-order gradient makes, and
    // fusion, which only the passes make; and the collective all_reduce, which
    // tests/dist_local.rs checks on both backends and tests/dist.rs under mpirun), then
    // dtypes, an open batch, empty axes, keepdims.
    let kinds = kiln::graph::op::OpKind::all()
        .map(|k| k.name())
        .filter(|n| {
            !matches!(
                *n,
                "assign" | "group" | "max_pool2d_gather" | "fusion" | "all_reduce"
            )
        })
        .map(|n| format!("{n}("));
    let extra = ["i32[", "f64[", "bool[", "?", ",0", "keepdims=true"];
    let ops: Vec<String> = kinds.chain(extra.iter().map(|s| s.to_string())).collect();
    let missing: Vec<&String> = ops.iter().filter(|o| !seen.contains(o.as_str())).collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}

/// The watchdog of a bounded run reports a case that does not finish as a hang, and passes
/// one that does.
#[test]
fn the_watchdog_reports_a_hang() {
    fn stuck(_: u64) -> Result<(), String> {
        std::thread::sleep(Duration::from_secs(3));
        Ok(())
    }
    fn quick(_: u64) -> Result<(), String> {
        Ok(())
    }
    let f = fuzz::run_case_watched("stuck", stuck, 7, Duration::from_millis(10)).unwrap();
    assert!(f.what.starts_with("hang:") && f.seed == 7, "{f:?}");
    assert!(fuzz::run_case_watched("quick", quick, 7, Duration::from_secs(600)).is_none());
}

/// The graph target compares values, not only refusals: most generated cases run on both
/// backends (an error in every case would make the comparison vacuous).
#[test]
fn most_generated_graphs_run() {
    let ran = (0..100u64)
        .filter(|&seed| {
            let plan = fuzz::graphs::Plan::new(seed);
            matches!(fuzz::graphs::check(&plan), Ok(true))
        })
        .count();
    assert!(ran >= 60, "only {ran} of 100 graphs ran on both backends");
}

/// Now and then the graph target appends a long elementwise chain (a few thousand ops,
/// which once overflowed fusion's recursion), and such a case runs and agrees like any other.
#[test]
fn the_graph_target_sometimes_builds_a_long_chain() {
    let seed = (0..5000u64)
        .find(|&s| {
            let p = fuzz::graphs::Plan::new(s);
            p.deep > 0 && p.grads && p.batch > 0 && !p.unfed
        })
        .expect("no differentiated long chain in 5000 plans");
    let plan = fuzz::graphs::Plan::new(seed);
    let b = fuzz::graphs::build(&plan);
    assert!(b.g.data().ids().len() > plan.deep, "seed {seed}");
    assert!(b.g.check().is_ok(), "seed {seed}");
    assert_eq!(fuzz::graphs::check(&plan), Ok(true), "seed {seed}");
}
