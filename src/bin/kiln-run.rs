//! `kiln-run`: runs a saved model (see `kiln::saved`) from the command line.
//!
//! ```text
//! kiln-run <model-dir> <inputs.safetensors> <outputs.safetensors> <fetch-name>...
//! ```
//!
//! Every tensor in the inputs file feeds the graph node of the same name; the fetched nodes
//! are written to the outputs file under their names. It is the smallest embedding of a
//! kiln model in another program, and the saved-graph tests run it as a separate process.

use kiln::checkpoint::{self, Checkpoint};
use kiln::{Error, Result};
use std::process::ExitCode;

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        return Err(Error::invalid(
            "usage: kiln-run <model-dir> <inputs.safetensors> <outputs.safetensors> <fetch>...",
        ));
    }
    let (g, mut sess) = kiln::saved::load(&args[0])?;
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
