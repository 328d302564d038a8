//! `kiln-run`: runs or describes a saved model (see `kiln::saved`, `kiln::nn::save`) or an
//! ONNX model from the command line.
//!
//! ```text
//! kiln-run [run] <model-dir | model.onnx> <inputs.safetensors> <outputs.safetensors> <fetch>...
//! kiln-run inspect <model-dir | model.onnx>
//! kiln-run onnx-conformance <dir-of-onnx-node-tests>
//! kiln-run --help | --version
//! ```
//!
//! `run` (the word may be left out, as before subcommands existed): every tensor in the
//! inputs file feeds the graph node of the same name (for an ONNX model, its graph inputs'
//! names); the fetched nodes are written to the outputs file under their names (an ONNX
//! model's output names, or any named node). It is the smallest embedding of a kiln model in
//! another program, and the saved-graph tests run it as a separate process.
//!
//! `inspect` lists a model's inputs, outputs and variables with their dtypes and shapes:
//! for a whole model saved by `Model::save`, also its layers and compile settings.
//!
//! `onnx-conformance` runs the ONNX backend node tests in a directory (see
//! `kiln::onnx::run_suite`) and prints the per-op table; it exits with failure if any case
//! gave a wrong result.
//!
//! Arguments are parsed by `clap`: an unknown option or a missing argument is an error with
//! clap's message and the usage, never ignored.

#[path = "kiln_run/inspect.rs"]
mod inspect;

use clap::{CommandFactory, Parser, Subcommand};
use kiln::checkpoint::{self, Checkpoint};
use kiln::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Runs or inspects a kiln saved model or an ONNX model.
#[derive(Parser, Debug)]
#[command(name = "kiln-run", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The `run` command's arguments, given without the word `run`.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Feeds the tensors of a safetensors file to a model and writes the fetched tensors.
    Run(RunArgs),
    /// Lists a model's inputs, outputs and variables (and a whole model's layers and
    /// compile settings).
    Inspect {
        /// A saved-model directory (from `kiln::saved::save`, `Model::save` or
        /// `Model::save_inference`) or an `.onnx` file.
        model: PathBuf,
    },
    /// Runs the ONNX backend node tests in a directory and prints the per-op table.
    OnnxConformance {
        /// A directory of ONNX node tests (`onnx/backend/test/data/node`).
        dir: PathBuf,
    },
}

#[derive(clap::Args, Debug, Default)]
struct RunArgs {
    /// A saved-model directory or an `.onnx` file.
    model: Option<PathBuf>,
    /// A safetensors file: each tensor feeds the node of its name.
    inputs: Option<PathBuf>,
    /// The safetensors file to write the fetched tensors to.
    outputs: Option<PathBuf>,
    /// The names of the nodes to fetch.
    fetch: Vec<String>,
}

fn conformance(dir: &Path) -> Result<()> {
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

/// Whether `path` names an ONNX file rather than a saved-model directory.
pub(crate) fn is_onnx(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "onnx") && !path.is_dir()
}

fn run(model: &Path, inputs: &Path, outputs: &Path, names: &[String]) -> Result<()> {
    let (g, mut sess) = if is_onnx(model) {
        let m = kiln::onnx::import(model)?;
        let s = m.session()?;
        (m.graph, s)
    } else {
        kiln::saved::load(model)?
    };
    let inputs = checkpoint::read(inputs)?;
    let mut feeds = vec![];
    for (name, value) in inputs.tensors {
        let t = g.by_name(&name).ok_or_else(|| {
            Error::invalid(format!("the model has no node named {name:?} to feed"))
        })?;
        feeds.push((t, value));
    }
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
    checkpoint::write(outputs, &ckpt)
}

/// `run`'s arguments, or clap's "missing argument" error (exits with usage).
fn run_args(a: RunArgs) -> (PathBuf, PathBuf, PathBuf, Vec<String>) {
    match (a.model, a.inputs, a.outputs) {
        (Some(m), Some(i), Some(o)) if !a.fetch.is_empty() => (m, i, o, a.fetch),
        (m, i, o) => {
            let missing: Vec<&str> = [
                (m.is_none(), "<MODEL>"),
                (i.is_none(), "<INPUTS>"),
                (o.is_none(), "<OUTPUTS>"),
                (a.fetch.is_empty(), "<FETCH>..."),
            ]
            .into_iter()
            .filter_map(|(gone, name)| gone.then_some(name))
            .collect();
            Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    format!(
                        "missing {} (kiln-run [run] <MODEL> <INPUTS> <OUTPUTS> <FETCH>...; \
                         see --help for inspect and onnx-conformance)",
                        missing.join(" ")
                    ),
                )
                .exit()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Inspect { model }) => inspect::inspect(&model),
        Some(Command::OnnxConformance { dir }) => conformance(&dir),
        Some(Command::Run(a)) => {
            let (m, i, o, f) = run_args(a);
            run(&m, &i, &o, &f)
        }
        None => {
            let (m, i, o, f) = run_args(cli.run);
            run(&m, &i, &o, &f)
        }
    };
    match result {
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
