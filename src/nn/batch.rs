//! What goes in and out of a model's batch loops: the [`Inputs`] a model is fed, the
//! [`Logs`] an epoch reports, and the row helpers both sides share.
//!
//! It sits below `model`, `callbacks` and `fit`, which depend one way: `model` (building,
//! compiling, weights) knows nothing of training; `callbacks` see a `Model` and the `Logs`;
//! `fit` (the epoch loop, `evaluate`, `predict`) uses all three.

use crate::array::Array;
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// Per-epoch values by name (`loss`, `accuracy`, `val_loss`, ...).
pub type Logs = BTreeMap<String, f64>;

/// The inputs of a model: one array, or one per input.
pub trait Inputs {
    /// The arrays, in the model's input order.
    fn arrays(&self) -> Vec<&Array>;
}

impl Inputs for &Array {
    fn arrays(&self) -> Vec<&Array> {
        vec![self]
    }
}

impl Inputs for &[&Array] {
    fn arrays(&self) -> Vec<&Array> {
        self.to_vec()
    }
}

impl<const N: usize> Inputs for [&Array; N] {
    fn arrays(&self) -> Vec<&Array> {
        self.to_vec()
    }
}

/// Rows shared by every array (and `y`), or an error naming the mismatch.
pub(crate) fn rows_of(xs: &[&Array], y: Option<&Array>) -> Result<usize> {
    let mut n = None;
    for a in xs.iter().copied().chain(y) {
        let r = *a
            .shape()
            .first()
            .ok_or_else(|| Error::invalid("inputs and targets need a batch axis"))?;
        match n {
            None => n = Some(r),
            Some(m) if m != r => {
                return Err(Error::invalid(format!(
                    "inputs and targets have different numbers of rows: {m} vs {r}"
                )))
            }
            _ => {}
        }
    }
    n.ok_or_else(|| Error::invalid("no inputs"))
}

/// Stacks arrays along their first axis.
pub(crate) fn concat_rows(parts: &[Array]) -> Result<Array> {
    let Some(first) = parts.first() else {
        return Err(Error::invalid("concat_rows: nothing to stack"));
    };
    let mut shape = first.shape().to_vec();
    shape[0] = parts.iter().map(|p| p.shape()[0]).sum();
    if parts.iter().all(|p| p.dtype() == crate::dtype::DType::F32) {
        let mut data: Vec<f32> = Vec::with_capacity(shape.iter().product());
        for p in parts {
            data.extend_from_slice(p.as_slice::<f32>()?);
        }
        return Array::new(shape, data);
    }
    // Through the interpreter's exact slots (an i64 past 2^53, a half NaN's payload).
    let mut data: Vec<f64> = Vec::new();
    for p in parts {
        data.extend(p.to_slots());
    }
    Ok(Array::from_slots(first.dtype(), shape, data))
}

/// How the `i`th of the arrays `xs` is named in messages: `x`, or `x[1]` when there are
/// several (`x` stands for `base`).
pub(crate) fn x_name(xs: &[&Array], i: usize, base: &str) -> String {
    if xs.len() > 1 {
        format!("{base}[{i}]")
    } else {
        base.to_string()
    }
}
