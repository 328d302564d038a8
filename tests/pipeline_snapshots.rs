//! Snapshots of a small MLP *training* graph (forward, gradients, SGD update) after every
//! pass of the default pipeline, and of the fuser's decisions with their reasons. A change
//! in what a pass does shows up here as a readable diff.

use kiln::autodiff::grad;
use kiln::passes::{fusion, PassOptions, Pipeline, Program};
use kiln::prelude::*;

/// x: f32[?,4] → dense 8 (ReLU) → dense 3 → sparse softmax CE → SGD.
fn training_program() -> Program {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(4)]);
    let y = g.placeholder("y", DType::I32, [None]);
    let lr = g.placeholder("learning_rate", DType::F32, Shape::scalar());
    let mut params = vec![];
    let h = {
        let _s = g.name_scope("dense_1");
        let w = g.variable("kernel", [4, 8], init::glorot_uniform(1));
        let b = g.variable("bias", [8], init::zeros());
        params.extend([w, b]);
        (x.matmul(w) + b).relu()
    };
    let logits = {
        let _s = g.name_scope("dense_2");
        let w = g.variable("kernel", [8, 3], init::glorot_uniform(2));
        let b = g.variable("bias", [3], init::zeros());
        params.extend([w, b]);
        h.matmul(w) + b
    };
    let loss = {
        let _s = g.name_scope("loss");
        logits
            .sparse_softmax_cross_entropy_with_logits(y)
            .mean_all()
    };
    let grads = grad(loss, &params).unwrap();
    let mut outputs = vec![loss.id()];
    {
        let _s = g.name_scope("sgd");
        for (&w, &dw) in params.iter().zip(&grads) {
            outputs.push((w - lr * dw).id());
        }
    }
    g.check().unwrap();
    Program::new(g.snapshot(), outputs)
}

/// Drops ` @ file:line:col` so snapshots do not move with this file's line numbers.
fn without_locations(text: &str) -> String {
    text.lines()
        .map(|l| match l.find(" @ ") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn training_graph_after_each_pass() {
    let dir = std::env::temp_dir().join(format!("kiln-snap-{}", std::process::id()));
    let mut p = training_program();
    let mut pl = Pipeline::default();
    pl.options = PassOptions {
        relaxed: false,
        batch: Some(2),
        ..PassOptions::default()
    };
    pl.dump_to(&dir);
    pl.run(&mut p).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "00-input",
            "00-lower_effects",
            "01-concretize",
            "02-fold",
            "03-simplify",
            "04-cse",
            "05-dce",
            "06-cleanup",
            "07-fusion",
            "08-memplan"
        ]
    );
    for (f, name) in files.iter().zip(&names) {
        let text = without_locations(&std::fs::read_to_string(f).unwrap());
        insta::assert_snapshot!(format!("training_{name}"), text);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fusion_decisions_and_reasons() {
    let mut p = training_program();
    let mut pl = Pipeline::default();
    pl.options = PassOptions {
        relaxed: false,
        batch: Some(2),
        ..PassOptions::default()
    };
    pl.run(&mut p).unwrap();
    // Each kernel, and each refusal above the node it concerns.
    let text = without_locations(&kiln::passes::program_dump(&p));
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('#') || l.contains("= fusion("))
        .collect();
    insta::assert_snapshot!("training_fusion_decisions", summary.join("\n"));
    // One kernel per layer forward; the loss; per hidden layer one backward kernel; one
    // gradient-and-update kernel per parameter.
    assert_eq!(fusion::kernel_count(&p), 14);
}
