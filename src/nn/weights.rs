//! A model's weights by name (`get_weights`, `set_weights`, `save_weights` and `load_weights`
//! as safetensors), and loading weights written by other frameworks: a [`WeightMap`] turns a
//! checkpoint's tensors into the model's weights (names, and layouts where they differ), and
//! [`TorchLayout`] is the map for PyTorch's `state_dict` files.
//!
//! A map sees the whole checkpoint, not one tensor at a time, because a PyTorch tensor's
//! meaning depends on its neighbours: `1.weight` is a BatchNorm scale (`gamma`) when
//! `1.running_mean` exists, and a convolution or Linear kernel otherwise. A plain closure
//! `|name| -> Option<String>` is a map too (renaming only; `None` skips the tensor).

use super::model::Model;
use crate::array::Array;
use crate::checkpoint::{self, Checkpoint};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Turns a checkpoint's tensors (by their names in the file) into weights named as the
/// model's variables (`dense/kernel`), for [`Model::load_weights_with`].
pub trait WeightMap {
    /// The weights, by kiln name, made from `tensors`. Tensors the map does not place are
    /// left out; the model's variables that get no weight are an error of the loader.
    fn map(&self, tensors: &BTreeMap<String, Array>) -> Result<BTreeMap<String, Array>>;
}

/// A renaming: each tensor goes to the name the closure returns, or is skipped on `None`.
impl<F: Fn(&str) -> Option<String>> WeightMap for F {
    fn map(&self, tensors: &BTreeMap<String, Array>) -> Result<BTreeMap<String, Array>> {
        let mut out = BTreeMap::new();
        for (name, a) in tensors {
            if let Some(to) = self(name) {
                if out.insert(to.clone(), a.clone()).is_some() {
                    return Err(Error::invalid(format!(
                        "two tensors of the file are mapped to {to:?} (the last was {name:?})"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// The [`WeightMap`] for a PyTorch `state_dict` saved with safetensors: module prefixes
/// (`"0"`, `"features.3"`) map to kiln layer names (`"conv2d"`), and each tensor is put in
/// kiln's layout:
///
/// | PyTorch | kiln |
/// |---|---|
/// | `Conv2d.weight` `[O, I, kh, kw]` (OIHW) | `conv2d/kernel` `[kh, kw, I, O]` (HWIO) |
/// | `Linear.weight` `[out, in]` | `dense/kernel` `[in, out]` (transposed) |
/// | `.bias` | `…/bias` |
/// | `BatchNorm.weight`, `.bias` | `…/gamma`, `…/beta` |
/// | `BatchNorm.running_mean`, `.running_var` | `…/moving_mean`, `…/moving_variance` |
/// | `BatchNorm.num_batches_tracked` (`i64`) | skipped |
///
/// PyTorch flattens `C, H, W` where kiln (NHWC) flattens `H, W, C`: a Linear that follows a
/// `Flatten` of a `[C, H, W]` feature map needs its input columns reordered, which
/// [`TorchLayout::linear_after_flatten`] does. Tensors under prefixes that are not mapped are
/// ignored. Grouped and depthwise convolutions are not handled (their weights are
/// `[O, I/groups, kh, kw]`, which maps differently). Also remember PyTorch's defaults when
/// building the kiln model: BatchNorm's epsilon is `1e-5` (Keras: `1e-3`).
///
/// ```no_run
/// use kiln::nn::TorchLayout;
/// # fn model() -> kiln::nn::Model { unimplemented!() }
/// let mut m = model(); // Conv2D, BatchNormalization, Activation, Flatten, Dense, compiled
/// let torch = TorchLayout::new()
///     .layer("0", "conv2d")
///     .layer("1", "batch_normalization")
///     .layer("4", "dense")
///     .linear_after_flatten("4", [3, 3, 3]); // the conv's output: C, H, W
/// m.load_weights_with("model.safetensors", torch)?;
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct TorchLayout {
    layers: HashMap<String, String>,
    flatten: HashMap<String, [usize; 3]>,
}

impl TorchLayout {
    /// A map with no layers yet.
    pub fn new() -> TorchLayout {
        TorchLayout::default()
    }

    /// Maps the PyTorch module `prefix` (the state_dict names' part before the last `.`)
    /// to the kiln layer `name`.
    pub fn layer(mut self, prefix: &str, name: &str) -> TorchLayout {
        self.layers.insert(prefix.to_string(), name.to_string());
        self
    }

    /// The Linear at `prefix` reads a flattened `[C, H, W]` feature map (`chw`): its weight's
    /// columns are reordered from PyTorch's `C, H, W` order to kiln's `H, W, C`.
    pub fn linear_after_flatten(mut self, prefix: &str, chw: [usize; 3]) -> TorchLayout {
        self.flatten.insert(prefix.to_string(), chw);
        self
    }

    /// A kernel (`weight` of a layer without running statistics) in kiln's layout.
    fn kernel(&self, name: &str, prefix: &str, a: &Array) -> Result<Array> {
        let s = a.shape().to_vec();
        match s.len() {
            2 => {
                let (o, i) = (s[0], s[1]);
                let col: Box<dyn Fn(usize) -> usize> = match self.flatten.get(prefix) {
                    Some(&[c, h, w]) if c * h * w == i => {
                        // kiln's column r = (hh * w + ww) * c + cc is PyTorch's cc*h*w + hh*w + ww.
                        Box::new(move |r| {
                            let (cc, hw) = (r % c, r / c);
                            cc * h * w + hw
                        })
                    }
                    Some(chw) => {
                        return Err(Error::invalid(format!(
                            "{name:?} is [{o}, {i}], but linear_after_flatten says it reads \
                             {chw:?} ({} features)",
                            chw.iter().product::<usize>()
                        )))
                    }
                    None => Box::new(|r| r),
                };
                // out[r, oo] = in[oo, col(r)]
                Ok(gather(a, vec![i, o], |k| (k % o) * i + col(k / o)))
            }
            // OIHW → HWIO.
            4 => Ok(a.permuted(&[2, 3, 1, 0])),
            r => Err(Error::invalid(format!(
                "{name:?} has rank {r}: a PyTorch kernel kiln maps is a Linear [out, in] or a \
                 Conv2d [O, I, kh, kw] weight"
            ))),
        }
    }
}

/// The array of `shape` whose element `k` is `a`'s element `src(k)` (exact for every dtype).
fn gather(a: &Array, shape: Vec<usize>, src: impl Fn(usize) -> usize) -> Array {
    let s = a.to_slots();
    let out = (0..s.len()).map(|k| s[src(k)]).collect();
    Array::from_slots(a.dtype(), shape, out)
}

impl WeightMap for TorchLayout {
    fn map(&self, tensors: &BTreeMap<String, Array>) -> Result<BTreeMap<String, Array>> {
        let mut out = BTreeMap::new();
        for (name, a) in tensors {
            let Some((prefix, leaf)) = name.rsplit_once('.') else {
                continue;
            };
            let Some(layer) = self.layers.get(prefix) else {
                continue;
            };
            let norm = tensors.contains_key(&format!("{prefix}.running_mean"));
            let (to, value) = match (leaf, norm) {
                ("num_batches_tracked", _) => continue,
                ("running_mean", _) => ("moving_mean", a.clone()),
                ("running_var", _) => ("moving_variance", a.clone()),
                ("weight", true) => ("gamma", a.clone()),
                ("bias", true) => ("beta", a.clone()),
                ("weight", false) => ("kernel", self.kernel(name, prefix, a)?),
                ("bias", false) => ("bias", a.clone()),
                _ => {
                    return Err(Error::invalid(format!(
                        "{name:?}: TorchLayout knows weight, bias, running_mean, running_var \
                         and num_batches_tracked, not {leaf:?}"
                    )))
                }
            };
            out.insert(format!("{layer}/{to}"), value);
        }
        Ok(out)
    }
}

impl Model {
    /// The current value of every layer variable, by name.
    pub fn get_weights(&self) -> Result<Vec<(String, Array)>> {
        let built = self.built()?;
        let sess = self
            .session
            .as_ref()
            .ok_or_else(|| Error::invalid("the model is not compiled yet"))?;
        let d = self.graph.data();
        built
            .weights
            .iter()
            .map(|&id| {
                let name = d.node(id).name.as_deref().unwrap_or("").to_string();
                let v = sess
                    .variable(self.graph.tensor(id))
                    .cloned()
                    .ok_or_else(|| Error::invalid(format!("variable {name} has no value")))?;
                Ok((name, v))
            })
            .collect()
    }

    /// Sets layer variables by name; every name, dtype and shape is checked before any is
    /// set.
    pub fn set_weights(&mut self, weights: &[(String, Array)]) -> Result<()> {
        let mut todo = vec![];
        for (name, value) in weights {
            let t = self.graph.by_name(name).ok_or_else(|| {
                Error::invalid(format!("set_weights: no variable named {name:?}"))
            })?;
            let ty = t.ty();
            let want = ty.shape.to_fixed().unwrap_or_default();
            if value.dtype() != ty.dtype || value.shape() != want.as_slice() {
                return Err(Error::invalid(format!(
                    "set_weights: {name:?} is {ty}, the value is {}{:?}; no weight was changed",
                    value.dtype(),
                    value.shape()
                )));
            }
            todo.push((t.id(), value.clone()));
        }
        let sess = self
            .session
            .as_mut()
            .ok_or_else(|| Error::invalid("the model is not compiled yet"))?;
        for (id, v) in todo {
            sess.set_variable(self.graph.tensor(id), v)?;
        }
        Ok(())
    }

    /// Saves the layer variables (not the optimizer state) as a safetensors checkpoint.
    pub fn save_weights(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut ck = Checkpoint::default();
        for (n, a) in self.get_weights()? {
            ck.tensors.insert(n, a);
        }
        checkpoint::write(path, &ck)
    }

    /// Loads layer variables saved by `save_weights` (or any safetensors file holding them
    /// under the same names: [`Model::load_weights_with`] maps other names and layouts). On a
    /// missing tensor, a wrong shape or a damaged file nothing changes.
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.load_weights_with(path, |n: &str| Some(n.to_string()))
    }

    /// Loads the layer variables from a safetensors file written by anything (kiln, Python's
    /// `safetensors`, PyTorch), through `map`, which names (and lays out) the file's tensors
    /// as the model's variables: a closure `|name| -> Option<String>` to rename, or
    /// [`TorchLayout`] for a PyTorch `state_dict`. Every safetensors dtype reads; a float
    /// tensor (`f16`, `bf16`, `f64`) is cast to its variable's dtype (`f32`), other dtype
    /// differences are errors. On any error (a missing weight, a wrong shape, a damaged file)
    /// no weight changes.
    ///
    /// ```no_run
    /// # fn model() -> kiln::nn::Model { unimplemented!() }
    /// let mut m = model();
    /// // A file whose names carry a "model." prefix that kiln's do not.
    /// m.load_weights_with("w.safetensors", |n: &str| n.strip_prefix("model.").map(String::from))?;
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn load_weights_with(&mut self, path: impl AsRef<Path>, map: impl WeightMap) -> Result<()> {
        let path = path.as_ref();
        let ck = crate::checkpoint::read(path)?;
        let file_err = |e: Error| Error::invalid_file(path, format!("load_weights: {e}"));
        let mapped = map.map(&ck.tensors).map_err(file_err)?;
        let mut ws = vec![];
        let mut missing = vec![];
        for (n, current) in self.get_weights()? {
            match mapped.get(&n) {
                Some(a) => {
                    let (have, want) = (a.dtype(), current.dtype());
                    let floats = |d: crate::DType| d.is_float() || d.is_half();
                    let a = if have != want && floats(have) && floats(want) {
                        a.cast(want)
                    } else {
                        a.clone()
                    };
                    ws.push((n, a));
                }
                None => missing.push(format!("{n:?}")),
            }
        }
        if !missing.is_empty() {
            let mut have: Vec<&str> = mapped.keys().map(String::as_str).collect();
            have.truncate(12);
            return Err(Error::invalid_file(
                path,
                format!(
                    "load_weights: missing tensor(s) {} (the map gave {}); no weight was \
                     changed",
                    missing.join(", "),
                    if have.is_empty() {
                        "nothing".to_string()
                    } else {
                        have.join(", ")
                    }
                ),
            ));
        }
        self.set_weights(&ws).map_err(file_err)
    }
}
