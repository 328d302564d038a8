//! Saved graphs: a graph and its variables, written by one program and run by another.
//!
//! A saved model is a directory with two files:
//! - `graph.kiln`, the graph in the canonical text format ([`crate::text`]): parseable,
//!   diffable, one instruction per line;
//! - `variables.safetensors`, a [checkpoint](crate::checkpoint) of every variable.
//!
//! The loader parses the graph, opens a session on it and restores the variables; tensors
//! are then found by the names they were given (`graph.by_name("logits")`). Both files are
//! written atomically, so an interrupted save leaves the previous model readable. The
//! `kiln-run` binary is a small embedding of this: it loads a saved model, feeds tensors
//! from a safetensors file and writes the fetched ones to another.
//!
//! ```
//! use kiln::prelude::*;
//! let dir = std::env::temp_dir().join(format!("kiln-saved-doc-{}", std::process::id()));
//! {
//!     let g = Graph::new();
//!     let x = g.placeholder("x", DType::F32, [None, Some(2)]);
//!     let w = g.variable("w", [2, 1], init::constant(0.5));
//!     let _y = x.matmul(w).named("y");
//!     let sess = Session::new(&g)?;
//!     kiln::saved::save(&dir, &sess)?;
//! }
//! let (g, mut sess) = kiln::saved::load(&dir)?;
//! let (x, y) = (g.by_name("x").unwrap(), g.by_name("y").unwrap());
//! let out = sess.run(&[y], &[(x, Array::new([1, 2], vec![2.0f32, 4.0])?)])?;
//! assert_eq!(out[0].to_vec::<f32>()?, vec![3.0]);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), kiln::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::graph::op::{Op, Ty};
use crate::graph::{Graph, GraphData, NodeId};
use crate::session::{Backend, Session};
use std::path::Path;

/// The graph file's name inside a saved-model directory.
pub const GRAPH_FILE: &str = "graph.kiln";
/// The variables file's name inside a saved-model directory.
pub const VARIABLES_FILE: &str = "variables.safetensors";

/// Saves `session`'s graph and variables into `dir` (created if needed).
pub fn save(dir: impl AsRef<Path>, session: &Session) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(dir, "cannot create the saved-model directory", e))?;
    let text = session.graph().dump();
    crate::atomic::write(&dir.join(GRAPH_FILE), text.as_bytes())?;
    session.save(dir.join(VARIABLES_FILE))
}

/// Loads a saved model with the JIT backend: the graph and a session holding its variables.
pub fn load(dir: impl AsRef<Path>) -> Result<(Graph, Session)> {
    load_with_backend(dir, Backend::Jit)
}

/// Loads a saved model with the chosen backend.
pub fn load_with_backend(dir: impl AsRef<Path>, backend: Backend) -> Result<(Graph, Session)> {
    let dir = dir.as_ref();
    let path = dir.join(GRAPH_FILE);
    let bytes = read_bounded(&path, MAX_GRAPH_BYTES, "the saved graph")?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::invalid_file(&path, format!("the saved graph is not UTF-8: {e}")))?;
    let graph = Graph::parse(&text).map_err(|e| Error::invalid_file(&path, e.to_string()))?;
    let mut session = Session::with_backend(&graph, backend)?;
    session.restore(dir.join(VARIABLES_FILE))?;
    Ok((graph, session))
}

/// A saved graph's interface: its feeds, its results and its state, each with its type.
#[derive(Clone, Debug, PartialEq)]
pub struct Signature {
    /// The placeholders, by name, in the graph's order.
    pub inputs: Vec<(String, Ty)>,
    /// The nodes of the dump's `return` line; without one, every named node that nothing
    /// reads and that is not a placeholder, a variable or an update (an `assign`).
    pub outputs: Vec<(String, Ty)>,
    /// The variables, by name, in the graph's order.
    pub variables: Vec<(String, Ty)>,
}

impl Signature {
    /// The signature of `graph` whose results are `outputs` (or, if empty, its named
    /// sinks).
    pub fn of(graph: &GraphData, outputs: &[NodeId]) -> Signature {
        let entry = |id: NodeId| {
            let n = graph.node(id);
            let name = n.name.as_deref().map_or_else(|| n.label(), str::to_string);
            (name, n.ty.clone())
        };
        let sinks: Vec<NodeId> = graph
            .ids()
            .into_iter()
            .filter(|&id| {
                let n = graph.node(id);
                n.name.is_some()
                    && graph.users(id).is_empty()
                    && !matches!(
                        n.op,
                        Op::Placeholder | Op::Variable { .. } | Op::Assign | Op::Group
                    )
            })
            .collect();
        let outputs = if outputs.is_empty() { &sinks } else { outputs };
        Signature {
            inputs: graph.placeholders().into_iter().map(entry).collect(),
            outputs: outputs.iter().copied().map(entry).collect(),
            variables: graph.variables().into_iter().map(entry).collect(),
        }
    }
}

/// The [`Signature`] of the saved graph in `dir` (read from `graph.kiln` alone).
///
/// ```
/// use kiln::prelude::*;
/// let dir = std::env::temp_dir().join(format!("kiln-signature-doc-{}", std::process::id()));
/// let g = Graph::new();
/// let x = g.placeholder("x", DType::F32, [None, Some(2)]);
/// let w = g.variable("w", [2, 1], init::constant(0.5));
/// let _y = x.matmul(w).named("y");
/// kiln::saved::save(&dir, &Session::new(&g)?)?;
/// let s = kiln::saved::signature(&dir)?;
/// assert_eq!(s.inputs[0].0, "x");
/// assert_eq!(s.outputs[0].0, "y");
/// assert_eq!(s.variables[0].1.to_string(), "f32[2,1]");
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn signature(dir: impl AsRef<Path>) -> Result<Signature> {
    let path = dir.as_ref().join(GRAPH_FILE);
    let bytes = read_bounded(&path, MAX_GRAPH_BYTES, "the saved graph")?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::invalid_file(&path, format!("the saved graph is not UTF-8: {e}")))?;
    let parsed =
        crate::text::parse(&text).map_err(|e| Error::invalid_file(&path, e.to_string()))?;
    let d = parsed.graph.data();
    Ok(Signature::of(&d, &parsed.outputs))
}

/// The dump (with a `return` line) of the ops of `graph` that `outputs` need, each
/// placeholder of `fixed` replaced by its value and the result folded, simplified and
/// pruned as a session's pipeline does before fusion (so `where(training, ...)` keeps one
/// branch and the other's ops are gone), output `i` named `names[i]`. What
/// `Model::save_inference` writes: the text format holds graph ops only, so no fusion.
pub(crate) fn pruned_dump(
    graph: &GraphData,
    outputs: &[NodeId],
    names: &[String],
    fixed: Vec<(NodeId, crate::Array)>,
) -> Result<String> {
    use crate::passes::{self, Pass, PassOptions, Program};
    let mut p = Program::new(graph.cone(outputs), outputs.to_vec());
    let opts = PassOptions {
        fixed_feeds: fixed,
        ..PassOptions::default()
    };
    passes::concretize::Concretize.run(&mut p, &opts)?;
    let cleanup: [&dyn Pass; 4] = [
        &passes::fold::Fold,
        &passes::simplify::Simplify,
        &passes::cse::Cse,
        &passes::dce::Dce,
    ];
    for _ in 0..16 {
        let mut changed = false;
        for pass in cleanup {
            changed |= pass.run(&mut p, &opts)?;
        }
        if !changed {
            break;
        }
    }
    for (i, name) in names.iter().enumerate() {
        let id = p.outputs[i];
        let keeps_its_name = matches!(p.graph.node(id).op, Op::Placeholder | Op::Variable { .. });
        if keeps_its_name || p.outputs[..i].contains(&id) {
            // An output that is an input, a weight or another output keeps its own name:
            // the output is a named copy of it instead.
            p.outputs[i] = copy_of(&mut p.graph, id)?;
        }
        p.graph.rename(p.outputs[i], name)?;
    }
    Ok(crate::text::Dumper::new(&p.graph)
        .outputs(&p.outputs)
        .only_live(true)
        .to_string())
}

/// A copy of `id` (`id * 1`, bitwise the same for every float) that can carry another name.
fn copy_of(g: &mut GraphData, id: NodeId) -> Result<NodeId> {
    let graph = Graph::from_data(std::mem::take(g));
    let copy = (graph.tensor(id) * 1.0).id();
    let result = graph.check();
    *g = graph.snapshot();
    result.map(|()| copy)
}

/// The largest `graph.kiln` [`load`] reads (256 MiB; a graph of a million ops is ~100 MB).
pub const MAX_GRAPH_BYTES: u64 = 256 << 20;

/// Reads the file at `path` (`what` names it in errors), refusing anything but a regular
/// file (a symlink to `/dev/zero` or a FIFO would never end) and a file over `limit` bytes,
/// before reading; the read itself stops at `limit + 1` bytes in case the file grows.
pub(crate) fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta =
        std::fs::metadata(path).map_err(|e| Error::io(path, format!("cannot read {what}"), e))?;
    if !meta.is_file() {
        return Err(Error::invalid_file(
            path,
            format!("{what} is not a regular file (a device, FIFO or directory); refused"),
        ));
    }
    let too_big = |n: u64| {
        Error::invalid_file(
            path,
            format!("{what} holds {n} bytes, more than the limit of {limit} bytes; refused"),
        )
    };
    if meta.len() > limit {
        return Err(too_big(meta.len()));
    }
    let f =
        std::fs::File::open(path).map_err(|e| Error::io(path, format!("cannot read {what}"), e))?;
    let mut data = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(path, format!("cannot read {what}"), e))?;
    if data.len() as u64 > limit {
        return Err(too_big(data.len() as u64));
    }
    Ok(data)
}
