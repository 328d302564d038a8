//! `kiln-run`: runs a saved model (see `kiln::saved`) or an ONNX model from the command line.
//!
//! ```text
//! kiln-run <model-dir | model.onnx> <inputs.safetensors> <outputs.safetensors> <fetch-name>...
//! kiln-run onnx-conformance <dir-of-onnx-node-tests>
//! ```
//!
//! Every tensor in the inputs file feeds the graph node of the same name (for an ONNX model,
//! its graph inputs' names); the fetched nodes are written to the outputs file under their
//! names (an ONNX model's output names, or any named node). It is the smallest embedding of a
//! kiln model in another program, and the saved-graph tests run it as a separate process.
//!
//! `onnx-conformance` runs the ONNX backend node tests in a directory (see
//! `kiln::onnx::run_suite`) and prints the per-op table; it exits with failure if any case
//! gave a wrong result.

use kiln::checkpoint::{self, Checkpoint};
use kiln::{Error, Result};
use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage: kiln-run <model-dir | model.onnx> <inputs.safetensors> \
                     <outputs.safetensors> <fetch>...\n       kiln-run onnx-conformance <dir>";

fn conformance(dir: &str) -> Result<()> {
    let report = kiln::onnx::run_suite(dir)?;
    print!("{}", report.table());
    let failed = report.count(|o| matches!(o, kiln::onnx::CaseOutcome::Failed(_)));
    if failed > 0 {
        return Err(Error::invalid(format!(
            "{failed} case(s) gave wrong results"
        )));
    }
    Ok(())
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() == 2 && args[0] == "onnx-conformance" {
        return conformance(&args[1]);
    }
    if args.len() < 4 {
        return Err(Error::invalid(USAGE));
    }
    let model = Path::new(&args[0]);
    let (g, mut sess) = if model.extension().is_some_and(|e| e == "onnx") && !model.is_dir() {
        let m = kiln::onnx::import(model)?;
        let s = m.session()?;
        (m.graph, s)
    } else {
        kiln::saved::load(model)?
    };
    let inputs = checkpoint::read(&args[1])?;
    let mut feeds = vec![];
    for (name, value) in inputs.tensors {
        let t = g.by_name(&name).ok_or_else(|| {
            Error::invalid(format!("the model has no node named {name:?} to feed"))
        })?;
        feeds.push((t, value));
    }
    let names = &args[3..];
    let fetches = names
        .iter()
        .map(|n| {
            g.by_name(n).ok_or_else(|| {
                Error::invalid(format!("the model has no node named {n:?} to fetch"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let outs = sess.run(&fetches, &feeds)?;
    let mut ckpt = Checkpoint::default();
    for (n, a) in names.iter().zip(outs) {
        ckpt.tensors.insert(n.clone(), a);
    }
    checkpoint::write(&args[2], &ckpt)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The message in plain words, then each cause (the OS error of an I/O failure):
            // `{:?}` would print the enum's fields, which is not for the user.
            let mut line = format!("kiln-run: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                line.push_str(&format!(": {c}"));
                cause = c.source();
            }
            eprintln!("{line}");
            ExitCode::FAILURE
        }
    }
}
