//! What the optimizer does to a training step.
//!
//! Builds the training graph of an MLP (784-256-128-10, ReLU, softmax cross-entropy, SGD,
//! batch 128) and prints, before and after the pass pipeline: the number of nodes, the number
//! of kernels, the peak intermediate bytes, and the time each pass took.
//!
//! Run with `cargo run --release --example explain`. Set `KILN_DUMP=dir` to also get the
//! graph after every pass as numbered text files.

use kiln::passes::{fusion, memplan, Pipeline, Program};
use kiln::prelude::*;

fn dense<'g>(
    g: &'g Graph,
    x: Tensor<'g>,
    name: &str,
    inp: usize,
    out: usize,
    seed: u64,
) -> (Tensor<'g>, [Tensor<'g>; 2]) {
    let _s = g.name_scope(name);
    let w = g.variable("kernel", [inp, out], init::glorot_uniform(seed));
    let b = g.variable("bias", [out], init::zeros());
    (x.matmul(w) + b, [w, b])
}

fn main() -> Result<()> {
    // No arguments: `--help` and `--version` work, anything else is clap's error.
    clap::Command::new("explain")
        .version(env!("CARGO_PKG_VERSION"))
        .about("What the optimizer does to a training step")
        .get_matches();
    let batch = 128;
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(784)]);
    let y = g.placeholder("y", DType::I32, [None]);
    let lr = g.placeholder("learning_rate", DType::F32, Shape::scalar());
    let (h1, p1) = dense(&g, x, "dense_1", 784, 256, 1);
    let (h2, p2) = dense(&g, h1.relu(), "dense_2", 256, 128, 2);
    let (logits, p3) = dense(&g, h2.relu(), "dense_3", 128, 10, 3);
    let loss = logits
        .sparse_softmax_cross_entropy_with_logits(y)
        .mean_all();
    let params: Vec<Tensor<'_>> = p1.into_iter().chain(p2).chain(p3).collect();
    let grads = kiln::autodiff::grad(loss, &params)?;
    // SGD: the new value of each parameter (the train op of the training issue assigns them).
    let updates: Vec<Tensor<'_>> = {
        let _s = g.name_scope("sgd");
        params
            .iter()
            .zip(&grads)
            .map(|(&w, &dw)| w - lr * dw)
            .collect()
    };
    g.check()?;

    let mut outputs = vec![loss.id()];
    outputs.extend(updates.iter().map(|t| t.id()));
    let mut program = Program::new(g.snapshot(), outputs);

    // "Before": the declared graph, shapes made concrete, every op its own kernel and buffer.
    let mut before = program.clone();
    let mut concretize_only = Pipeline::empty();
    concretize_only.options.batch = Some(batch);
    concretize_only.add(Box::new(kiln::passes::concretize::Concretize));
    concretize_only.run(&mut before)?;
    let before_plan = memplan::plan(&before);

    let mut pipeline = Pipeline::default();
    pipeline.options.batch = Some(batch);
    let report = pipeline.run(&mut program)?;
    let plan = program.memory().cloned().unwrap_or_default();

    println!(
        "MLP 784-256-128-10 training step (ReLU, softmax cross-entropy, SGD), batch {batch}\n"
    );
    println!("{:<34} {:>12} {:>12}", "", "before", "after");
    println!(
        "{:<34} {:>12} {:>12}",
        "nodes",
        before.live_order().len(),
        program.live_order().len()
    );
    println!(
        "{:<34} {:>12} {:>12}",
        "kernels",
        fusion::kernel_count(&before),
        fusion::kernel_count(&program)
    );
    println!(
        "{:<34} {:>12} {:>12}",
        "intermediate bytes, one buffer each",
        before_plan.unplanned_bytes(),
        plan.unplanned_bytes()
    );
    println!(
        "{:<34} {:>12} {:>12}",
        "peak intermediate bytes, planned",
        before_plan.peak_bytes(),
        plan.peak_bytes()
    );
    println!(
        "{:<34} {:>12} {:>12}",
        "fetched outputs (new weights, loss)",
        before_plan.output_bytes(),
        plan.output_bytes()
    );
    println!(
        "\npeak intermediate bytes after the pipeline: {:.1}% below the unplanned sum before it",
        100.0 * (1.0 - plan.peak_bytes() as f64 / before_plan.unplanned_bytes().max(1) as f64)
    );
    println!("\npass times:\n{report}");
    Ok(())
}
