//! Errors. Every fallible kiln call returns [`Result`]; no user input makes kiln panic.
//!
//! A graph error names the op, the operand types and names, and the user's source line, which
//! the builder captured with `#[track_caller]` when the op was added:
//!
//! ```text
//! matmul at examples/mnist.rs:42:17: cannot contract f32[?,784] "x" with f32[128,10] "w" (784 != 128)
//! ```

use std::fmt;
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
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// A shape or dtype mistake (or another invalid use) found when an op was added.
    Graph {
        /// The op's name, as in dumps (`matmul`, `add`, ...).
        op: String,
        /// Where the user created the op.
        loc: Option<SrcLoc>,
        /// What is wrong, with operand types and names.
        msg: String,
        /// How many further errors the graph holds beyond this one.
        more: usize,
    },
    /// Feeds or fetches given to a run that do not fit the graph.
    Feed(String),
    /// A failure while evaluating a graph (such as an integer division by zero).
    Runtime {
        /// The op's name.
        op: String,
        /// Where the user created the op.
        loc: Option<SrcLoc>,
        /// What went wrong.
        msg: String,
    },
    /// Text that does not parse as a graph dump.
    Parse {
        /// 1-based line of the dump.
        line: usize,
        /// What is wrong there.
        msg: String,
    },
    /// An invalid argument to an API call that is not an op.
    Invalid(String),
    /// An I/O failure, with the path it concerns.
    Io(String),
    /// A bug in kiln itself (a broken invariant found by a check such as the pass verifier),
    /// never the user's mistake. Please report it.
    Internal(String),
}

impl Error {
    /// An [`Error::Invalid`].
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::Invalid(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Graph { op, loc, msg, more } => {
                write!(f, "{op}")?;
                if let Some(l) = loc {
                    write!(f, " at {l}")?;
                }
                write!(f, ": {msg}")?;
                if *more > 0 {
                    write!(
                        f,
                        " (and {more} more error{})",
                        if *more == 1 { "" } else { "s" }
                    )?;
                }
                Ok(())
            }
            Error::Runtime { op, loc, msg } => {
                write!(f, "{op}")?;
                if let Some(l) = loc {
                    write!(f, " at {l}")?;
                }
                write!(f, ": {msg}")
            }
            Error::Feed(m) => write!(f, "run: {m}"),
            Error::Parse { line, msg } => write!(f, "parse error at line {line}: {msg}"),
            Error::Invalid(m) => f.write_str(m),
            Error::Io(m) => f.write_str(m),
            Error::Internal(m) => write!(f, "internal compiler error (a kiln bug): {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// `Result` with kiln's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
