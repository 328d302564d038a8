//! The buffer assignment is part of the program dump after `memplan`: a header listing the
//! slots and, above each planned value, its slot, size and live range. The text parser skips
//! it (comments), so a planned program without kernels parses back to the same graph.

use kiln::passes::{program_dump, program_dumper, Pipeline, Program};
use kiln::prelude::*;
use kiln::text::parse;

fn program(fusion: bool) -> (Program, Program) {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [Some(3), Some(4)]);
    let y = (x.exp() - x.max(&[1], true)).tanh();
    let z = (y * 2.0).reshape([Some(6), Some(2)]).sum_all();
    let mut before = Program::new(g.snapshot(), vec![z.id()]);
    let mut pl = Pipeline::default();
    pl.options.batch = Some(3);
    if !fusion {
        assert!(pl.remove("fusion"));
    }
    let mut after = before.clone();
    pl.run(&mut after).unwrap();
    assert!(pl.remove("memplan"));
    pl.run(&mut before).unwrap();
    (before, after)
}

#[test]
fn the_dump_after_memplan_shows_every_planned_value() {
    let (before, after) = program(true);
    let plan = after.memory().expect("planned");
    let (a, b) = (program_dump(&before), program_dump(&after));
    assert_ne!(a, b, "the plan is visible");
    assert!(b.contains("# buffers: [slot0 "), "{b}");
    let lines = b
        .lines()
        .filter(|l| l.trim_start().starts_with("# buffer slot"));
    assert_eq!(lines.count(), plan.slot_of().len(), "{b}");
    // Without the comments, the dumps are the same program.
    let strip = |t: &str| {
        t.lines()
            .filter(|l| !l.trim_start().starts_with("# buffer"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&a), strip(&b));
}

#[test]
fn a_planned_dump_without_kernels_parses_back() {
    let (before, after) = program(false);
    assert!(after.memory().is_some());
    let text = program_dumper(&after).to_string();
    assert!(text.contains("# buffer slot"), "{text}");
    // Unfused, the reshape is a node of its own and shares its input's bytes.
    assert!(text.contains(", aliases %"), "{text}");
    let back = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let p2 = Program::new(back.graph.snapshot(), back.outputs.clone());
    assert_eq!(
        program_dumper(&p2).to_string(),
        program_dumper(&before).to_string()
    );
}
