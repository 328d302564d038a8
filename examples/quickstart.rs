//! Build a small graph, print its canonical dump, and run it (compiled with the JIT).
//!
//! Run with `cargo run --example quickstart`.

use kiln::prelude::*;

fn main() -> Result<()> {
    // No arguments: `--help` and `--version` work, anything else is clap's error.
    clap::Command::new("quickstart")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Builds a small graph, prints its dump and runs it")
        .get_matches();
    let g = Graph::new();

    // A batch of 3-feature rows; the batch size is left open, as TF1's `None`.
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let labels = g.placeholder("labels", DType::I32, [None]);

    // One dense layer, inside a name scope so its ops read `dense_1/...` in the dump.
    let logits = {
        let _scope = g.name_scope("dense_1");
        let w = g.variable("kernel", [3, 2], init::glorot_uniform(42));
        let b = g.variable("bias", [2], init::zeros());
        x.matmul(w) + b
    };
    let probs = logits.softmax(-1);
    let loss = logits
        .sparse_softmax_cross_entropy_with_logits(labels)
        .mean_all();

    // Any shape or dtype mistake above would be reported here, with its source line.
    g.check()?;

    println!("{}", g.dump());

    // The session optimizes the graph and compiles it to native code with Cranelift;
    // `Session::with_backend(&g, Backend::Interpreter)` runs the reference interpreter instead.
    let mut sess = Session::new(&g)?;
    let xv = Array::new([2, 3], vec![1.0f32, 0.5, -1.0, -2.0, 0.0, 3.0])?;
    let yv = Array::new([2], vec![0i32, 1])?;
    let out = sess.run(&[probs, loss], &[(x, xv), (labels, yv)])?;
    println!("probs = {:?}", out[0].to_vec::<f32>()?);
    println!("loss  = {}", out[1].scalar_value::<f32>()?);
    Ok(())
}
