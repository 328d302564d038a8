//! Every pass preserves results: the interpreter runs the graph before and after, on the
//! same random inputs, and the outputs must be bitwise equal.

use kiln::graph::NodeId;
use kiln::interp::{evaluate, evaluate_lowered};
use kiln::passes::{
    self, cse::Cse, dce::Dce, fold::Fold, fusion::Fusion, memplan::MemPlan, simplify::Simplify,
    Pass, PassOptions, Pipeline, Program,
};
use kiln::prelude::*;
use std::collections::HashMap;

mod common;
use common::*;

fn run(p: &Program, feeds: &[(NodeId, Array)], vars: &HashMap<NodeId, Array>) -> Vec<Array> {
    let feeds: Vec<(NodeId, Array)> = feeds
        .iter()
        .filter(|(id, _)| p.graph.get(*id).is_some())
        .cloned()
        .collect();
    evaluate_lowered(
        &p.graph,
        p.kernels(),
        &p.outputs,
        &feeds,
        vars,
        Precision::F32,
        0,
    )
    .unwrap()
}

fn assert_bitwise(a: &[Array], b: &[Array], what: &str) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!(x.bits_eq(y), "{what} changed a result:\n{x:?}\n{y:?}");
    }
}

/// Runs `pass` (after making shapes concrete) and checks that results do not change.
fn check_pass(
    g: &Graph,
    outputs: &[Tensor<'_>],
    batch: usize,
    pass: &dyn Pass,
    seed: u64,
) -> Program {
    let outs: Vec<NodeId> = outputs.iter().map(|t| t.id()).collect();
    let mut p = Program::new(g.snapshot(), outs);
    let opts = PassOptions {
        relaxed: false,
        batch: Some(batch),
        ..PassOptions::default()
    };
    passes::concretize::Concretize.run(&mut p, &opts).unwrap();
    let (feeds, vars) = inputs(g, batch, seed);
    let before = run(&p, &feeds, &vars);
    pass.run(&mut p, &opts).unwrap();
    let after = run(&p, &feeds, &vars);
    assert_bitwise(&before, &after, pass.name());
    p
}

#[test]
fn each_pass_preserves_random_graphs() {
    let passes: Vec<Box<dyn Pass>> = vec![
        Box::new(Fold),
        Box::new(Simplify),
        Box::new(Cse),
        Box::new(Dce),
        Box::new(Fusion),
        Box::new(MemPlan),
    ];
    for seed in 0..60 {
        let (g, outs) = random_graph(seed);
        let outputs: Vec<Tensor<'_>> = outs.iter().map(|&i| g.tensor(i)).collect();
        for pass in &passes {
            for batch in [1, 3, 17] {
                check_pass(&g, &outputs, batch, pass.as_ref(), seed);
            }
        }
    }
}

#[test]
fn the_default_pipeline_then_fusion_preserves_random_graphs() {
    for seed in 100..160 {
        let (g, outs) = random_graph(seed);
        let mut p = Program::new(g.snapshot(), outs);
        let mut pl = Pipeline::default();
        pl.options.batch = Some(5);
        let (feeds, vars) = inputs(&g, 5, seed);
        let mut before_p = Program::new(g.snapshot(), p.outputs.clone());
        passes::concretize::Concretize
            .run(&mut before_p, &pl.options)
            .unwrap();
        let before = run(&before_p, &feeds, &vars);
        pl.run(&mut p).unwrap();
        let after = run(&p, &feeds, &vars);
        assert_bitwise(&before, &after, "pipeline");
        for id in p.live_order() {
            if let kiln::Op::Fusion(k) = &p.graph.node(id).op {
                kiln::internals::validate_kernel(&p, *k).unwrap();
            }
        }
    }
}

#[test]
fn simplify_rewrites_what_it_documents() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2, 3]);
    let y = ((-(-x)) * 1.0 + (-0.0)).transpose().transpose() / 4.0;
    let p = check_pass(&g, &[y], 1, &Simplify, 1);
    // What is left: x * 0.25 (a mul by a broadcast scalar).
    let ops: Vec<&str> = p
        .live_order()
        .iter()
        .map(|&i| p.graph.node(i).op.name())
        .collect();
    assert!(
        ops.contains(&"mul")
            && !ops.contains(&"neg")
            && !ops.contains(&"permute")
            && !ops.contains(&"div"),
        "{ops:?}"
    );
}

#[test]
fn simplify_keeps_ieee_semantics() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4]);
    let zero = x * 0.0; // not 0 for NaN, inf, -0
    let diff = x - x; // not 0 for NaN, inf
    let plus_zero = x + 0.0; // -0 + 0 = +0
    let p = check_pass(&g, &[zero, diff, plus_zero], 1, &Simplify, 3);
    let mut ids = p.outputs.clone();
    ids.sort();
    assert_eq!(
        ids,
        {
            let mut v = vec![zero.id(), diff.id(), plus_zero.id()];
            v.sort();
            v
        },
        "none of these may be rewritten"
    );
    // And on the inputs where it matters:
    let feeds = vec![(
        x.id(),
        Array::new([4], vec![f32::NAN, f32::INFINITY, -0.0, 1.0]).unwrap(),
    )];
    let out = run(&p, &feeds, &HashMap::new());
    let z = out[0].to_vec::<f32>().unwrap();
    assert!(z[0].is_nan() && z[1].is_nan() && z[2].is_sign_negative());
    assert!(out[2].to_vec::<f32>().unwrap()[2].is_sign_positive());
}

#[test]
fn cse_merges_structural_duplicates() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3]);
    let a = x.exp() + x.tanh();
    let b = x.tanh() + x.exp(); // commutative: the same sum
    let p = check_pass(&g, &[a, b], 1, &Cse, 5);
    assert_eq!(p.outputs[0], p.outputs[1]);
}

#[test]
fn fold_evaluates_constant_subgraphs() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3]);
    let c = (g.scalar(2.0).exp() * 3.0).log();
    let y = x + c;
    let p = check_pass(&g, &[y], 1, &Fold, 7);
    let live: Vec<&str> = p
        .live_order()
        .iter()
        .map(|&i| p.graph.node(i).op.name())
        .collect();
    assert!(!live.contains(&"exp") && !live.contains(&"log"), "{live:?}");
}

#[test]
fn fold_computes_on_broadcast_scalars() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    // neg(broadcast(c)) and broadcast(c1) * broadcast(c2) over a batch-sized shape.
    let ones = g.scalar(0.5).broadcast_to([None, Some(3)]);
    let k = -ones
        * g.constant(Array::new([1], vec![4.0f32]).unwrap())
            .broadcast_to([None, Some(3)]);
    let y = x * k;
    let p = check_pass(&g, &[y], 2, &Fold, 3);
    let live: Vec<String> = p
        .live_order()
        .iter()
        .map(|&i| p.graph.node(i).op.name().to_string())
        .collect();
    assert_eq!(
        live,
        ["placeholder", "constant", "broadcast_to", "mul"],
        "{live:?}"
    );
}

#[test]
fn dce_drops_what_outputs_do_not_need() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3]);
    let unused = g.placeholder("unused", DType::F32, [3]);
    let _dead = unused.exp();
    let y = x.sqrt();
    let p = check_pass(&g, &[y], 1, &Dce, 9);
    assert_eq!(p.graph.len(), 2);
}

#[test]
fn pipeline_is_editable_and_timed() {
    let mut pl = Pipeline::default();
    let names = pl.names();
    assert_eq!(
        names,
        vec![
            "concretize",
            "fold",
            "simplify",
            "cse",
            "dce",
            "cleanup",
            "fusion",
            "memplan"
        ]
    );
    assert!(pl.remove("cse"));
    assert!(!pl.remove("cse"));
    pl.insert_before("dce", Box::new(Cse));
    assert_eq!(pl.names()[3], "cse");
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let y = (x * 1.0).exp();
    let mut p = Program::new(g.snapshot(), vec![y.id()]);
    pl.options.batch = Some(2);
    let report = pl.run(&mut p).unwrap();
    // The mandatory effect lowering runs first, outside the editable list.
    assert_eq!(report.passes.len(), pl.names().len() + 1);
    assert_eq!(report.passes[0].name, "lower_effects");
    assert!(report.passes.iter().any(|r| r.changed));
    assert!(report.to_string().contains("total"));
}

#[test]
fn dumps_are_written_per_pass() {
    let dir = std::env::temp_dir().join(format!("kiln-dump-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let y = (x * 1.0).exp();
    let mut p = Program::new(g.snapshot(), vec![y.id()]);
    let mut pl = Pipeline::default();
    pl.options.batch = Some(2);
    pl.dump_to(&dir);
    pl.run(&mut p).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec![
            "00-input.txt",
            "00-lower_effects.txt",
            "01-concretize.txt",
            "02-fold.txt",
            "03-simplify.txt",
            "04-cse.txt",
            "05-dce.txt",
            "06-cleanup.txt",
            "07-fusion.txt",
            "08-memplan.txt"
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Checks a memory plan: two values that are alive at the same time never share a slot,
/// except a kernel writing over a parameter that dies there (an in-place update).
fn check_plan(p: &Program) {
    let plan = p.memory().expect("memplan ran");
    let order = p.live_order();
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut last: HashMap<NodeId, usize> = HashMap::new();
    for (i, &id) in order.iter().enumerate() {
        for &inp in &p.graph.node(id).inputs {
            last.insert(inp, i);
        }
    }
    for &o in &p.outputs {
        last.insert(o, usize::MAX);
    }
    // A reshape aliases its input: the input lives as long as the reshape does.
    for &id in order.iter().rev() {
        if let kiln::Op::Reshape = p.graph.node(id).op {
            let inp = p.graph.node(id).inputs[0];
            let l = last.get(&id).copied().unwrap_or(pos[&id]);
            let e = last.entry(inp).or_insert(0);
            *e = (*e).max(l);
        }
    }
    let vals: Vec<(NodeId, usize, usize, usize)> = plan
        .slot_of()
        .iter()
        .map(|(&id, &slot)| {
            (
                id,
                slot,
                pos[&id],
                last.get(&id).copied().unwrap_or(pos[&id]),
            )
        })
        .collect();
    for (i, a) in vals.iter().enumerate() {
        for b in &vals[i + 1..] {
            if a.1 != b.1 {
                continue;
            }
            let (first, second) = if a.2 <= b.2 { (a, b) } else { (b, a) };
            let aliased = plan.in_place().contains(&(second.0, first.0))
                || matches!(p.graph.node(second.0).op, kiln::Op::Reshape)
                || matches!(p.graph.node(first.0).op, kiln::Op::Reshape);
            let overlap = first.3 > second.2 || (first.3 == second.2 && !aliased);
            assert!(
                !overlap || aliased,
                "{:?} and {:?} share slot {} while both alive",
                first,
                second,
                a.1
            );
        }
        let need = {
            let t = &p.graph.node(a.0).ty;
            t.shape.numel().unwrap() * t.dtype.size_bytes()
        };
        assert!(plan.slots()[a.1] >= need, "slot too small");
    }
}

#[test]
fn memory_plans_are_valid_on_random_graphs() {
    for seed in 200..260 {
        let (g, outs) = random_graph(seed);
        let mut p = Program::new(g.snapshot(), outs);
        let mut pl = Pipeline::default();
        pl.options.batch = Some(7);
        pl.run(&mut p).unwrap();
        check_plan(&p);
    }
}

#[test]
fn memory_plan_reuses_buffers_along_a_chain() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [64, 64]);
    // Each reduction forces a new kernel; the [64,64] intermediates can share two slots.
    let mut t = x;
    for _ in 0..6 {
        t = (t.exp() - t.max(&[1], true)).tanh();
    }
    let mut p = Program::new(g.snapshot(), vec![t.id()]);
    let mut pl = Pipeline::default();
    pl.options.batch = Some(1);
    pl.run(&mut p).unwrap();
    check_plan(&p);
    let plan = p.memory().unwrap();
    assert!(
        plan.peak_bytes() * 2 <= plan.unplanned_bytes(),
        "{} vs {}",
        plan.peak_bytes(),
        plan.unplanned_bytes()
    );
}

/// A matmul's operands are read by `gemm` from memory, so fusion never absorbs them into the
/// matmul's kernel: an inference-only MLP (whose hidden activations have no other users)
/// compiles to one kernel per layer, with every compute op inside a kernel. (It once made the
/// hidden activations members of the next layer's kernel, so nothing computed them and they
/// ran op by op on the interpreter.)
#[test]
fn matmul_operands_get_kernels_of_their_own() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(6)]);
    let mut h = x;
    for (i, (a, b)) in [(6, 5), (5, 4), (4, 3)].into_iter().enumerate() {
        let w = g.variable(&format!("w{i}"), [a, b], init::glorot_uniform(i as u64));
        let bias = g.variable(&format!("b{i}"), [b], init::zeros());
        h = (h.matmul(w) + bias).relu();
    }
    let mut p = Program::new(g.snapshot(), vec![h.id()]);
    let mut pl = Pipeline::default();
    pl.options.batch = Some(7);
    pl.run(&mut p).unwrap();
    let live = p.live_order();
    let kernels = live
        .iter()
        .filter(|&&id| matches!(p.graph.node(id).op, kiln::Op::Fusion(_)))
        .count();
    let unfused: Vec<String> = live
        .iter()
        .map(|&id| &p.graph.node(id).op)
        .filter(|op| {
            !matches!(
                op,
                kiln::Op::Fusion(_)
                    | kiln::Op::Placeholder
                    | kiln::Op::Variable { .. }
                    | kiln::Op::Constant(_)
            )
        })
        .map(|op| op.name().to_string())
        .collect();
    assert_eq!(kernels, 3, "{}", passes::program_dump(&p));
    assert!(unfused.is_empty(), "ops outside kernels: {unfused:?}");
}

/// A fused node holds only its kernel's id; the kernel is in the program's table. With the
/// table, the dump prints the kernel and the interpreter evaluates it; a graph read without
/// its table dumps the id and is a clear evaluation error, not a panic.
#[test]
fn fused_nodes_need_their_programs_kernel_table() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2, 3]);
    let y = (x.exp() * 2.0).sum(&[1], false);
    let mut p = Program::new(g.snapshot(), vec![y.id()]);
    Pipeline::default().run(&mut p).unwrap();
    assert_eq!(p.kernels().len(), 1);
    let with = passes::program_dumper(&p).to_string();
    assert!(
        with.contains("kind=reduce_sum") && with.contains("kernel.reduce_sum("),
        "{with}"
    );
    let without = p.graph.dump();
    assert!(without.contains("fusion(%0, kernel=0)"), "{without}");
    assert!(!without.contains("kernel.reduce_sum"), "{without}");
    let feeds = vec![(x.id(), random_array(&mut Rng(7), &[2, 3], DType::F32))];
    let vars = HashMap::new();
    let lowered = run(&p, &feeds, &vars);
    let user = evaluate(&g.data(), &[y.id()], &feeds, &vars, Precision::F32, 0).unwrap();
    assert_bitwise(&user, &lowered, "fusion");
    let e = evaluate(&p.graph, &p.outputs, &feeds, &vars, Precision::F32, 0).unwrap_err();
    assert!(
        e.to_string()
            .contains("kernel #0 is not in the kernel table"),
        "{e}"
    );
}
