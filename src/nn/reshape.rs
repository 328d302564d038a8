//! `Reshape`: gives each example a new shape, as Keras' `Reshape(target_shape)`.
//!
//! A convnet turns flat rows into images (`[?, 784] -> [?, 28, 28, 1]`) and images back into
//! rows; `Flatten` does the second, `Reshape` any other. The target is per example, so the
//! batch axis stays the open `?` of the model's input, and one entry may be `-1`, inferred from
//! the others (Keras' rule). The sizes are checked when the model is built, and a mismatch is
//! reported with the layer's name, the input's shape, the target and the line that created
//! the layer (captured by `#[track_caller]`): the graph's own `reshape` error would point at
//! this file instead of the user's.

use super::layers::{Ctx, Layer};
use crate::error::{Error, Result, SrcLoc};
use crate::graph::Tensor;
use crate::shape::{Dim, Shape};

/// Reshapes each example to `target_shape` (the batch axis is kept): `Reshape::new([28, 28, 1])`
/// turns `[?, 784]` into `[?, 28, 28, 1]`. One entry may be `-1`, inferred from the others
/// (`Reshape::new([-1, 7])` on `[?, 49]` gives `[?, 7, 7]`).
///
/// ```
/// use kiln::nn::{Dense, Flatten, Input, Reshape, Sequential};
/// let mut model = Sequential::new([
///     Input::new([784]).into(),
///     Reshape::new([28, 28, 1]).into(),
///     Flatten.into(),
///     Dense::new(10).into(),
/// ]);
/// assert!(model.summary()?.contains("(None, 28, 28, 1)"));
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Reshape {
    target: Vec<isize>,
    loc: SrcLoc,
}

impl Reshape {
    /// Reshapes each example to `target_shape`, with at most one `-1`. The arguments are
    /// checked when the model is built; an error then names this call's line.
    #[track_caller]
    pub fn new(target_shape: impl AsRef<[isize]>) -> Reshape {
        Reshape {
            target: target_shape.as_ref().to_vec(),
            loc: SrcLoc::caller(),
        }
    }

    /// The per-example shape asked for (with its `-1`, if any).
    pub fn target_shape(&self) -> &[isize] {
        &self.target
    }

    /// The per-example output shape for a per-example input of `count` elements.
    fn resolve(&self, count: usize) -> std::result::Result<Vec<usize>, String> {
        let unknown = self.target.iter().filter(|&&d| d == -1).count();
        if unknown > 1 {
            return Err("at most one entry of the target may be -1".into());
        }
        if let Some(&bad) = self.target.iter().find(|&&d| d < -1 || d == 0) {
            return Err(format!(
                "the target's entries must be positive, or -1 for one inferred size; got {bad}"
            ));
        }
        let known = self
            .target
            .iter()
            .filter(|&&d| d > 0)
            .try_fold(1usize, |p, &d| p.checked_mul(d as usize))
            .ok_or("the target's size overflows")?;
        if unknown == 1 {
            if !count.is_multiple_of(known) {
                return Err(format!(
                    "{count} elements per example do not divide into the target's other \
                     sizes (product {known}), so -1 cannot be inferred"
                ));
            }
            let inferred = count / known;
            Ok(self
                .target
                .iter()
                .map(|&d| if d == -1 { inferred } else { d as usize })
                .collect())
        } else if known != count {
            Err(format!(
                "the target holds {known} elements per example, the input {count}"
            ))
        } else {
            Ok(self.target.iter().map(|&d| d as usize).collect())
        }
    }
}

impl Layer for Reshape {
    fn kind(&self) -> &'static str {
        "Reshape"
    }

    fn call<'g>(&mut self, ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        let shape = x.shape();
        let scope = ctx.graph.scoped_name("");
        let name = scope.trim_end_matches('/');
        let fail = |why: String| Error::Graph {
            op: format!("{name} (Reshape)"),
            loc: Some(self.loc.clone()),
            msg: format!(
                "cannot reshape examples of shape [{}] (input {shape}) to {:?}: {why}",
                per_example(&shape),
                self.target,
            ),
            more: vec![],
        };
        let dims = shape.dims();
        if dims.is_empty() {
            return Err(fail("the input has no batch axis".into()));
        }
        let count = dims[1..]
            .iter()
            .map(|d| d.fixed())
            .try_fold(1usize, |p, d| p.checked_mul(d?))
            .ok_or_else(|| fail("the input's per-example size is not fixed".into()))?;
        let out = self.resolve(count).map_err(fail)?;
        let mut full = vec![dims[0]];
        full.extend(out.into_iter().map(Dim::Fixed));
        Ok(x.reshape(Shape::from(full)))
    }
}

/// The per-example part of a batch shape, as `28, 28, 1`.
fn per_example(shape: &Shape) -> String {
    shape
        .dims()
        .iter()
        .skip(1)
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
