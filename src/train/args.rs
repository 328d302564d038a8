//! Arguments checked where the user passes them, reported where a `Result` can carry them.
//!
//! Constructors and builder methods (`Dropout::new(1.5)`, `Sgd::new(-0.1)`,
//! `FitConfig::new().epochs(0)`) return `Self` so that they chain, so they cannot return an
//! error, and a panic is not an option (no user input panics kiln). Checking later, where the
//! value is used, points at kiln's own source and comes late: `Dropout::new(1.5)` used to be
//! reported by the graph builder at `compile`, at a line inside kiln. So they do what the graph
//! builder does with a failed shape rule (`Graph::fail`): the method is `#[track_caller]`, checks
//! its argument against its domain at once, and *records* a violation inside the value with the
//! caller's [`SrcLoc`]. The first call that returns a `Result` with the value in hand
//! (`Model::add`, `compile`, `fit`, `minimize`, a callback's `on_train_begin`) reports it:
//!
//! ```text
//! Dropout::new at src/main.rs:12:9: rate must be in [0, 1) (the fraction of inputs dropped while training), got 1.5
//! ```
//!
//! It lives in `train` because optimizers need it and `train` sits below `nn`, which uses it
//! for layers, callbacks and `FitConfig`.

use crate::error::{Error, Result, SrcLoc};
use std::fmt::Display;

/// One argument found outside its domain.
#[derive(Clone, Debug, PartialEq)]
struct ArgError {
    /// The function given the argument (`Dropout::new`).
    func: &'static str,
    /// The argument's name (`rate`).
    arg: &'static str,
    /// What it must be (`in [0, 1)`), with what it means.
    allowed: String,
    /// The value given, as the user would write it.
    value: String,
    /// The user's line.
    loc: SrcLoc,
}

/// The arguments of one value (a layer, an optimizer, a `FitConfig`) found outside their
/// domain, in the order they were passed. Empty for a valid value.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ArgErrors(Vec<ArgError>);

impl ArgErrors {
    /// Records, with the location of the caller's caller (the user's line, through
    /// `#[track_caller]` constructors and builders), that `func`'s argument `arg` was given
    /// `value` although it must be `allowed`, unless `ok`. A later call for the same argument
    /// replaces an earlier one (`.momentum(2.0).momentum(0.5)` is valid: the last value wins).
    #[track_caller]
    pub(crate) fn check(
        &mut self,
        ok: bool,
        func: &'static str,
        arg: &'static str,
        allowed: impl Display,
        value: impl Display,
    ) {
        self.0.retain(|e| e.func != func || e.arg != arg);
        if !ok {
            self.0.push(ArgError {
                func,
                arg,
                allowed: allowed.to_string(),
                value: value.to_string(),
                loc: SrcLoc::caller(),
            });
        }
    }

    /// `Ok`, or an [`Error::Invalid`] naming every recorded problem: function, your
    /// `file:line:col`, argument, domain and value.
    pub(crate) fn result(&self) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let all: Vec<String> = self
            .0
            .iter()
            .map(|e| {
                format!(
                    "{} at {}: {} must be {}, got {}",
                    e.func, e.loc, e.arg, e.allowed, e.value
                )
            })
            .collect();
        Err(Error::invalid(all.join("; and ")))
    }
}

/// `x` as Rust prints an `f64` literal (`1.5`, `-0.1`, `NaN`, `inf`).
pub(crate) fn float(x: f64) -> String {
    format!("{x:?}")
}

/// True for a finite `x > 0`.
pub(crate) fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// True for `0 <= x < 1`.
pub(crate) fn unit_open(x: f64) -> bool {
    (0.0..1.0).contains(&x)
}
