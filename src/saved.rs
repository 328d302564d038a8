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
use crate::graph::Graph;
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
