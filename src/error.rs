//! Errors. Every fallible kiln call returns [`Result`]; no user input makes kiln panic.
//!
//! A graph error names the op, the operand types and names, and the user's source line, which
//! the builder captured with `#[track_caller]` when the op was added:
//!
//! ```text
//! matmul at examples/mnist.rs:42:17: cannot contract f32[?,784] "x" with f32[128,10] "w" (784 != 128)
//! ```
//!
//! Why it is built this way:
//! - **Causes are kept, not flattened into strings.** An [`Error::Io`] holds the operating
//!   system's [`std::io::Error`] as its [`source`](std::error::Error::source) (so a caller can
//!   ask for its [`kind`](std::io::Error::kind)), beside the path and what kiln was doing.
//!   `Display` is the error's own message only, as the Rust API guidelines ask, so a chain
//!   printer never shows a cause twice.
//! - **`Debug` is for people.** `fn main() -> kiln::Result<()>` prints an `Err` with `{:?}`,
//!   so `Debug` prints the message and its chain of causes (as `anyhow` does):
//!
//!   ```text
//!   Error: data/iris.csv: cannot read the CSV file
//!
//!   Caused by:
//!       No such file or directory (os error 2)
//!   ```
//!
//!   The structure (variant and fields) is still there with `{:#?}`.
//! - **`Clone`**, so a graph can keep its recorded errors and hand out copies: the I/O source
//!   is shared behind an [`Arc`].
//! - **`#[non_exhaustive]`**: new kinds of failure will come with new features; matching on
//!   `Error` needs a `_` arm.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where in the user's source an op was created.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SrcLoc {
    /// The source file, as the compiler names it (relative to the package root).
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
}

impl SrcLoc {
    /// The location of the caller of the current `#[track_caller]` function.
    #[track_caller]
    pub fn caller() -> SrcLoc {
        let l = std::panic::Location::caller();
        SrcLoc {
            file: Arc::from(l.file()),
            line: l.line(),
            col: l.column(),
        }
    }
}

impl fmt::Display for SrcLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// What went wrong.
#[derive(Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A shape or dtype mistake (or another invalid use) found when an op was added.
    ///
    /// [`Graph::check`](crate::Graph::check) reports the graph's first error with the others
    /// in `more`; `Display` lists the first [`MAX_LISTED`] of those, one per line, each with
    /// its op, operand types and source line, and counts the rest.
    #[error("{op}{}: {msg}{}", at(loc), more_errors(more))]
    Graph {
        /// The op's name, as in dumps (`matmul`, `add`, ...).
        op: String,
        /// Where the user created the op.
        loc: Option<SrcLoc>,
        /// What is wrong, with operand types and names.
        msg: String,
        /// The further errors the graph holds beyond this one, in the order they were made
        /// (empty for an error about one op).
        more: Vec<Error>,
    },
    /// Feeds or fetches given to a run that do not fit the graph.
    #[error("run: {0}")]
    Feed(String),
    /// A failure while evaluating a graph (such as an integer division by zero), naming the
    /// user's op as a build error does, on either backend:
    /// `div "ratio" at src/main.rs:12:9: integer division by zero`.
    #[error("{op}{}{}: {msg}", quoted(name), at(loc))]
    Runtime {
        /// The op's name.
        op: String,
        /// The node's name, if it has one.
        name: Option<String>,
        /// Where the user created the op.
        loc: Option<SrcLoc>,
        /// What went wrong.
        msg: String,
    },
    /// Text that does not parse as a graph dump.
    #[error("parse error at line {line}: {msg}")]
    Parse {
        /// 1-based line of the dump.
        line: usize,
        /// What is wrong there.
        msg: String,
    },
    /// An invalid argument to an API call that is not an op.
    #[error("{0}")]
    Invalid(String),
    /// The operating system refused a file operation: the file, what kiln was doing, and
    /// the OS error (the [`source`](std::error::Error::source)).
    #[error("{}: {action}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What kiln was doing, as a phrase (`cannot read the checkpoint`).
        action: String,
        /// The operating system's error, shared so that `Error` stays `Clone` (as a
        /// `dyn Error` it downcasts to `Arc<std::io::Error>`).
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A file that kiln read but cannot use: a damaged checkpoint, a malformed CSV line, a
    /// truncated IDX file, a saved graph that does not parse, tensors that do not fit.
    #[error("{}: {msg}", path.display())]
    InvalidFile {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it (with the line, tensor or field where there is one).
        msg: String,
    },
    /// A bug in kiln itself (a broken invariant found by a check such as the pass verifier),
    /// never the user's mistake. Please report it.
    #[error("internal compiler error (a kiln bug): {0}")]
    Internal(String),
}

/// ` at file:line:col`, or nothing.
fn at(loc: &Option<SrcLoc>) -> String {
    loc.as_ref().map(|l| format!(" at {l}")).unwrap_or_default()
}

/// ` "name"`, or nothing.
fn quoted(name: &Option<String>) -> String {
    name.as_ref().map(|n| format!(" {n:?}")).unwrap_or_default()
}

/// How many of a graph's further errors [`Error::Graph`]'s message lists; the rest are
/// counted (all of them are in its `more` field and in `GraphData::errors`).
pub const MAX_LISTED: usize = 10;

/// The further errors, one per indented line, the first [`MAX_LISTED`] of them, then a count
/// of the rest; or nothing.
fn more_errors(more: &[Error]) -> String {
    if more.is_empty() {
        return String::new();
    }
    let s = if more.len() == 1 { "" } else { "s" };
    let mut out = format!("\nand {} more error{s}:", more.len());
    for e in more.iter().take(MAX_LISTED) {
        // An error listed here holds no list of its own (`GraphData::check` builds it).
        out.push_str(&format!("\n  {e}"));
    }
    if more.len() > MAX_LISTED {
        let rest = more.len() - MAX_LISTED;
        let s = if rest == 1 { "" } else { "s" };
        out.push_str(&format!(
            "\n  ... and {rest} more error{s} (Error::Graph's `more` holds them all)"
        ));
    }
    out
}

impl Error {
    /// An [`Error::Invalid`].
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::Invalid(msg.into())
    }

    /// An [`Error::Io`]: the OS refused `action` (`"cannot read the checkpoint"`) on `path`.
    pub fn io(path: impl AsRef<Path>, action: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            action: action.into(),
            source: Arc::new(source),
        }
    }

    /// An [`Error::InvalidFile`]: `path` was read, but `msg` is wrong with its contents.
    pub fn invalid_file(path: impl AsRef<Path>, msg: impl Into<String>) -> Error {
        Error::InvalidFile {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// The variant and its fields, as `#[derive(Debug)]` would print them (`{:#?}`).
    fn fmt_structure(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Graph { op, loc, msg, more } => f
                .debug_struct("Graph")
                .field("op", op)
                .field("loc", loc)
                .field("msg", msg)
                .field("more", more)
                .finish(),
            Error::Feed(m) => f.debug_tuple("Feed").field(m).finish(),
            Error::Runtime { op, name, loc, msg } => f
                .debug_struct("Runtime")
                .field("op", op)
                .field("name", name)
                .field("loc", loc)
                .field("msg", msg)
                .finish(),
            Error::Parse { line, msg } => f
                .debug_struct("Parse")
                .field("line", line)
                .field("msg", msg)
                .finish(),
            Error::Invalid(m) => f.debug_tuple("Invalid").field(m).finish(),
            Error::Io {
                path,
                action,
                source,
            } => f
                .debug_struct("Io")
                .field("path", path)
                .field("action", action)
                .field("source", source)
                .finish(),
            Error::InvalidFile { path, msg } => f
                .debug_struct("InvalidFile")
                .field("path", path)
                .field("msg", msg)
                .finish(),
            Error::Internal(m) => f.debug_tuple("Internal").field(m).finish(),
        }
    }
}

/// `{:?}` prints the message and its causes, one per line, for people (this is what
/// `fn main() -> kiln::Result<()>` shows on an error); `{:#?}` prints the variant and its
/// fields.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return self.fmt_structure(f);
        }
        write!(f, "{self}")?;
        let causes: Vec<&dyn std::error::Error> =
            std::iter::successors(std::error::Error::source(self), |e| e.source()).collect();
        match causes.as_slice() {
            [] => Ok(()),
            [one] => write!(f, "\n\nCaused by:\n    {one}"),
            many => {
                f.write_str("\n\nCaused by:")?;
                for (i, e) in many.iter().enumerate() {
                    write!(f, "\n    {i}: {e}")?;
                }
                Ok(())
            }
        }
    }
}

/// `Result` with kiln's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
