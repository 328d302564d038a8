//! Custom pipelines: a pass dropped, a pass added after memory planning, no passes at all.
//! Each must compute what the user's graph means, on the interpreter and on the JIT, for a
//! training graph with assigns: effect lowering and the verifier run whatever the passes.

use kiln::graph::{effects, NodeId};
use kiln::internals::Executable;
use kiln::interp::{evaluate, evaluate_lowered};
use kiln::passes::{cse::Cse, Pass, PassOptions, Pipeline, Program};
use kiln::prelude::*;
use kiln::{Op, UnaryOp};
use std::collections::HashMap;

mod common;
use common::*;

const BATCH: usize = 6;

/// An MLP trained by SGD with momentum: the train op groups one assign per weight and per
/// velocity. Fetches: the loss and the train op; then the updated values.
fn training() -> (Graph, Vec<NodeId>) {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [BATCH, 4]);
    let y = g.placeholder("y", DType::I32, [BATCH]);
    let w1 = g.variable("w1", [4, 5], init::zeros());
    let b1 = g.variable("b1", [5], init::zeros());
    let w2 = g.variable("w2", [5, 3], init::zeros());
    let h = (x.matmul(w1) + b1).relu();
    let loss = h
        .matmul(w2)
        .sparse_softmax_cross_entropy_with_logits(y)
        .mean_all();
    let train = Sgd::new(0.1)
        .momentum(0.9)
        .minimize(loss, &[w1, b1, w2])
        .unwrap();
    g.check().unwrap();
    let fetches = vec![loss.id(), train.id()];
    let updates = effects::collect(&g.data(), &fetches).unwrap();
    assert!(updates.len() >= 3, "the train op assigns");
    (g.clone(), effects::with_updates(&fetches, &updates))
}

/// Rewrites every float output `o` to `-(-o)` (bitwise the same), after memory planning:
/// the program changes, so the pipeline must drop the plan it made before.
struct NegNeg;
impl Pass for NegNeg {
    fn name(&self) -> &str {
        "negneg"
    }
    fn run(&self, p: &mut Program, _: &PassOptions) -> kiln::Result<bool> {
        for i in 0..p.outputs.len() {
            let o = p.outputs[i];
            if p.graph.node(o).ty.dtype == DType::F32 {
                let n = p
                    .graph
                    .add_node(Op::Unary(UnaryOp::Neg), &[o], None, None, None);
                p.outputs[i] = p
                    .graph
                    .add_node(Op::Unary(UnaryOp::Neg), &[n], None, None, None);
            }
        }
        Ok(true)
    }
}

fn variants() -> Vec<(&'static str, Pipeline)> {
    let without = |names: &[&str]| {
        let mut pl = Pipeline::default();
        for n in names {
            assert!(pl.remove(n), "{n}");
        }
        pl
    };
    let mut after_plan = Pipeline::default();
    after_plan.add(Box::new(Cse));
    let mut changed_after_plan = Pipeline::default();
    changed_after_plan.add(Box::new(NegNeg));
    vec![
        ("default", Pipeline::default()),
        ("without simplify", without(&["simplify", "cleanup"])),
        ("without cse", without(&["cse", "cleanup"])),
        ("without dce", without(&["dce", "cleanup"])),
        ("without fusion", without(&["fusion"])),
        ("without memplan", without(&["memplan"])),
        ("cse after memplan", after_plan),
        ("a change after memplan", changed_after_plan),
        ("empty", Pipeline::empty()),
    ]
}

/// The program's placeholders and variables in the order an executable takes them (the live
/// order, as `Executable::compile` lists them).
fn sources(p: &Program, want: fn(&Op) -> bool) -> Vec<NodeId> {
    let order = p.live_order();
    order
        .into_iter()
        .filter(|&id| want(&p.graph.node(id).op))
        .collect()
}

fn run_jit(p: &Program, feeds: &[(NodeId, Array)], vars: &HashMap<NodeId, Array>) -> Vec<Array> {
    let exe = Executable::compile(p).unwrap();
    let fed: HashMap<NodeId, &Array> = feeds.iter().map(|(id, a)| (*id, a)).collect();
    let f: Vec<&Array> = sources(p, |op| matches!(op, Op::Placeholder))
        .iter()
        .map(|id| fed[id])
        .collect();
    let v: Vec<&Array> = sources(p, |op| matches!(op, Op::Variable { .. }))
        .iter()
        .map(|id| &vars[id])
        .collect();
    exe.run(&f, &v, 0).unwrap()
}

fn close(a: &Array, b: &Array) -> bool {
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    x.len() == y.len()
        && x.iter()
            .zip(&y)
            .all(|(p, q)| (p - q).abs() <= 1e-5 * (1.0 + q.abs()))
}

#[test]
fn custom_pipelines_compute_what_the_graph_means() {
    let (g, outs) = training();
    let d = g.snapshot();
    let (feeds, vars) = inputs(&g, BATCH, 11);
    // What the graph means: the interpreter on the user's graph, no pass involved.
    let want = evaluate(&d, &outs, &feeds, &vars, Precision::F32, 0).unwrap();
    let mut bitwise_on_jit: Option<Vec<bool>> = None;
    for (name, mut pl) in variants() {
        pl.options.batch = Some(BATCH);
        let mut p = Program::new(d.clone(), outs.clone());
        let report = pl.run(&mut p).unwrap();
        assert_eq!(report.passes[0].name, "lower_effects", "{name}");
        let live = p.live_order();
        assert!(
            live.iter()
                .all(|&id| !matches!(p.graph.node(id).op, Op::Assign | Op::Group)),
            "{name}: effects left in the program"
        );
        // The interpreter on the optimized program: every pass is bitwise.
        let kept: Vec<(NodeId, Array)> = feeds
            .iter()
            .filter(|(id, _)| p.graph.get(*id).is_some())
            .cloned()
            .collect();
        let interp = evaluate_lowered(
            &p.graph,
            p.kernels(),
            &p.outputs,
            &kept,
            &vars,
            Precision::F32,
            0,
        )
        .unwrap();
        for (k, (a, b)) in interp.iter().zip(&want).enumerate() {
            assert!(
                a.bits_eq(b),
                "{name}: interpreter output {k}: {a:?} vs {b:?}"
            );
        }
        // The JIT: bitwise where the default pipeline is, within float noise elsewhere
        // (its exp and log are polynomials).
        let jit = run_jit(&p, &kept, &vars);
        let bits: Vec<bool> = jit.iter().zip(&want).map(|(a, b)| a.bits_eq(b)).collect();
        let base = bitwise_on_jit.get_or_insert_with(|| bits.clone());
        assert!(
            base.iter().any(|&b| b),
            "some outputs are bitwise on the JIT"
        );
        for (k, (a, b)) in jit.iter().zip(&want).enumerate() {
            if base[k] {
                assert!(a.bits_eq(b), "{name}: JIT output {k}: {a:?} vs {b:?}");
            } else {
                assert!(close(a, b), "{name}: JIT output {k}: {a:?} vs {b:?}");
            }
        }
    }
}

/// The mandatory lowering runs even with no passes, and the program's outputs become pure:
/// the train op is the constant `true`, each update its value.
#[test]
fn an_empty_pipeline_still_lowers_effects() {
    let (g, outs) = training();
    let mut p = Program::new(g.snapshot(), outs.clone());
    let pl = Pipeline::empty();
    assert!(pl.names().is_empty());
    let report = pl.run(&mut p).unwrap();
    let names: Vec<&str> = report.passes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["lower_effects"]);
    assert!(report.passes[0].changed);
    assert!(matches!(p.graph.node(p.outputs[1]).op, Op::Constant(_)));
    assert_eq!(p.outputs[0], outs[0], "the loss is untouched");
}

/// A memory plan survives a pass after it that changes nothing, and is dropped by one that
/// changes the program (it would describe another program).
#[test]
fn a_change_after_memory_planning_drops_the_plan() {
    let (g, outs) = training();
    for (name, mut pl) in variants() {
        pl.options.batch = Some(BATCH);
        let mut p = Program::new(g.snapshot(), outs.clone());
        pl.run(&mut p).unwrap();
        match name {
            "cse after memplan" | "default" => assert!(p.memory().is_some(), "{name}"),
            "a change after memplan" | "without memplan" | "empty" => {
                assert!(p.memory().is_none(), "{name}")
            }
            _ => {}
        }
    }
}
