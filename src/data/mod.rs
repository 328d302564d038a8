//! Datasets: loading, preprocessing, splitting and batching.
//!
//! A compiled graph is only useful once real data flows through it, and every example or
//! benchmark otherwise re-implements the same plumbing. This module is that plumbing, kept
//! small and dependency-light (`flate2` for gzip, `csv` for CSV files):
//!
//! - loaders for the two formats the shipped datasets use: CSV ([`read_csv`],
//!   [`csv_to_features`], [`load_iris`], with [`CsvOptions`] for other delimiters or no
//!   header) and gzip-compressed IDX ([`read_idx`], [`load_mnist`], [`load_mnist_files`]);
//! - [`Dataset`], a lazily computed, re-iterable stream of [`Item`]s as in `tf.data`: from
//!   arrays, a generator, a CSV file or MNIST's files, then `map`, `shuffle`, `batch`,
//!   `prefetch` (a background thread), `repeat` and `take`; `Model::fit_dataset` trains on
//!   one, so data larger than memory streams;
//! - preprocessing: [`one_hot`], [`MinMax`] and [`Standard`] scaling;
//! - [`train_test_split`] (optionally stratified), [`take_rows`] and the [`batches`] iterator.
//!
//! A file that cannot be read gives [`Error::Io`] (the path, what kiln was doing, and the
//! OS error as its source); a file whose contents are wrong gives [`Error::InvalidFile`]
//! naming the path and what is wrong (line and column for CSV); bad arguments give
//! [`Error::Invalid`]. Nothing here panics on bad input.
//!
//! ```no_run
//! use kiln::data;
//! let (x, y, classes) = data::load_iris("data/iris/iris.csv")?;
//! let (xtr, ytr, xte, yte) = data::train_test_split(&x, &y, 0.2, 42, true)?;
//! let scaler = data::Standard::fit(&xtr)?; // fit on the training split only
//! let (xtr, xte) = (scaler.transform(&xtr)?, scaler.transform(&xte)?);
//! for (xb, yb) in data::batches(&xtr, &ytr, 32, Some(7))? {
//!     let targets = data::one_hot(&yb, classes.len())?;
//!     // ... feed xb and targets to a training step
//! }
//! # Ok::<(), kiln::Error>(())
//! ```

mod csv;
mod dataset;
mod idx;

pub use csv::{csv_to_features, csv_to_features_with, load_iris, read_csv, read_csv_with};
pub use csv::{CsvOptions, Table};
pub use dataset::{Dataset, DatasetIter, Item};
pub use idx::{load_mnist, load_mnist_files, read_idx, Mnist};

use crate::array::{Array, ArrayData, Element};
use crate::error::{Error, Result};

/// Features and targets for one split of a dataset, as [`load_mnist_files`] returns them.
///
/// (Named `Dataset` before the streaming [`Dataset`] took the name `tf.data` gives it; its
/// fields are unchanged, so code reading `.x` and `.y` compiles as before.)
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// Features: `f32 [n, features...]`, one example per row.
    pub x: Array,
    /// Targets: `i32 [n]` class indices (or `f32` regression targets), one per row of `x`.
    pub y: Array,
}

impl Split {
    /// The number of examples (rows of `x`).
    pub fn len(&self) -> usize {
        self.x.shape().first().copied().unwrap_or(0)
    }

    /// True when the dataset holds no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One-hot encodes `i32 [n]` class indices as `f32 [n, classes]`.
///
/// A label outside `0..classes` is an error naming its row.
pub fn one_hot(labels: &Array, classes: usize) -> Result<Array> {
    let l = labels_of(labels, "one_hot")?;
    let mut out = vec![0.0f32; l.len() * classes];
    for (i, &c) in l.iter().enumerate() {
        if c < 0 || c as usize >= classes {
            return Err(Error::invalid(format!(
                "one_hot: label {c} at row {i} is outside 0..{classes}"
            )));
        }
        out[i * classes + c as usize] = 1.0;
    }
    Array::new([l.len(), classes], out)
}

/// The `i32` labels of a rank-1 array, or an error naming `what` was called.
fn labels_of<'a>(labels: &'a Array, what: &str) -> Result<&'a [i32]> {
    if labels.shape().len() != 1 {
        return Err(Error::invalid(format!(
            "{what}: labels must be 1-D i32, got {}{:?}",
            labels.dtype(),
            labels.shape()
        )));
    }
    labels.as_slice::<i32>().map_err(|_| {
        Error::invalid(format!(
            "{what}: labels must be i32, got {}",
            labels.dtype()
        ))
    })
}

/// The rows, columns and data of a 2-D `f32` array.
fn matrix<'a>(x: &'a Array, what: &str) -> Result<(usize, usize, &'a [f32])> {
    let bad = || {
        Error::invalid(format!(
            "{what}: expected a 2-D f32 array [rows, features], got {}{:?}",
            x.dtype(),
            x.shape()
        ))
    };
    match (x.shape(), x.as_slice::<f32>()) {
        (&[r, c], Ok(d)) => Ok((r, c, d)),
        _ => Err(bad()),
    }
}

/// Applies `(v - shift[j]) / scale[j]` to every column `j` of a 2-D `f32` array.
fn affine(x: &Array, shift: &[f32], scale: &[f32], what: &str) -> Result<Array> {
    let (r, c, d) = matrix(x, what)?;
    if c != shift.len() {
        return Err(Error::invalid(format!(
            "{what}: fitted on {} features, got an array with {c}",
            shift.len()
        )));
    }
    let mut out = Vec::with_capacity(d.len());
    for row in d.chunks_exact(c.max(1)).take(r) {
        out.extend(
            row.iter()
                .zip(shift.iter().zip(scale))
                .map(|(&v, (&s, &k))| (v - s) / k),
        );
    }
    Array::new([r, c], out)
}

/// Min–max scaling of each feature (column) to `[0, 1]`.
///
/// Fit on the **training split only** and apply the same transform to the test split, so that
/// no information about the test set leaks into training; test values may then fall slightly
/// outside `[0, 1]`. A constant column is scaled by 1 (it maps to 0, never NaN).
#[derive(Clone, Debug, PartialEq)]
pub struct MinMax {
    /// Per-feature minimum of the fitted data.
    pub min: Vec<f32>,
    /// Per-feature maximum of the fitted data.
    pub max: Vec<f32>,
}

impl MinMax {
    /// Computes per-column minimum and maximum over axis 0 of a 2-D `f32` array with at least
    /// one row.
    pub fn fit(x: &Array) -> Result<MinMax> {
        let (r, c, d) = matrix(x, "MinMax::fit")?;
        if r == 0 {
            return Err(Error::invalid("MinMax::fit: the array has no rows"));
        }
        let mut min = vec![f32::INFINITY; c];
        let mut max = vec![f32::NEG_INFINITY; c];
        for row in d.chunks_exact(c.max(1)) {
            for j in 0..c {
                min[j] = min[j].min(row[j]);
                max[j] = max[j].max(row[j]);
            }
        }
        Ok(MinMax { min, max })
    }

    /// Maps each column to `(v - min) / (max - min)`, or `v - min` for a constant column.
    pub fn transform(&self, x: &Array) -> Result<Array> {
        let scale: Vec<f32> = self
            .min
            .iter()
            .zip(&self.max)
            .map(|(&lo, &hi)| if hi > lo { hi - lo } else { 1.0 })
            .collect();
        affine(x, &self.min, &scale, "MinMax::transform")
    }
}

/// Standardization of each feature (column) to mean 0 and standard deviation 1.
///
/// Fit on the **training split only** and apply the same transform to the test split, so that
/// no information about the test set leaks into training. The standard deviation is the
/// population one (divided by `n`), so the transformed training data has exactly unit
/// variance. A constant column (standard deviation 0) is scaled by 1, never producing NaN.
#[derive(Clone, Debug, PartialEq)]
pub struct Standard {
    /// Per-feature mean of the fitted data.
    pub mean: Vec<f32>,
    /// Per-feature population standard deviation of the fitted data (0 for a constant column).
    pub std: Vec<f32>,
}

impl Standard {
    /// Computes per-column mean and standard deviation over axis 0 of a 2-D `f32` array with
    /// at least one row (accumulated in `f64`).
    pub fn fit(x: &Array) -> Result<Standard> {
        let (r, c, d) = matrix(x, "Standard::fit")?;
        if r == 0 {
            return Err(Error::invalid("Standard::fit: the array has no rows"));
        }
        let mut sum = vec![0.0f64; c];
        for row in d.chunks_exact(c.max(1)) {
            for j in 0..c {
                sum[j] += row[j] as f64;
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / r as f64).collect();
        let mut sq = vec![0.0f64; c];
        for row in d.chunks_exact(c.max(1)) {
            for j in 0..c {
                let dv = row[j] as f64 - mean[j];
                sq[j] += dv * dv;
            }
        }
        Ok(Standard {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std: sq.iter().map(|&s| (s / r as f64).sqrt() as f32).collect(),
        })
    }

    /// Maps each column to `(v - mean) / std`, or `v - mean` for a constant column.
    pub fn transform(&self, x: &Array) -> Result<Array> {
        let scale: Vec<f32> = self
            .std
            .iter()
            .map(|&s| if s > 0.0 { s } else { 1.0 })
            .collect();
        affine(x, &self.mean, &scale, "Standard::transform")
    }
}

/// SplitMix64: a tiny, fast, seedable generator, ample for shuffling.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index in `0..n` (`n > 0`), by multiply-shift.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }

    /// Fisher–Yates shuffle.
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// A seeded random permutation of `0..n` (Fisher–Yates over SplitMix64): the row order of
/// [`batches`] and of `fit`'s epochs.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64(seed).shuffle(&mut order);
    order
}

/// The number of rows (first-axis length) of an array, or an error for a scalar.
fn rows(a: &Array, what: &str, name: &str) -> Result<usize> {
    a.shape().first().copied().ok_or_else(|| {
        Error::invalid(format!(
            "{what}: {name} must have at least one axis (rows), got a scalar"
        ))
    })
}

fn same_rows(x: &Array, y: &Array, what: &str) -> Result<usize> {
    let (n, m) = (rows(x, what, "x")?, rows(y, what, "y")?);
    if n != m {
        return Err(Error::invalid(format!(
            "{what}: x has {n} rows but y has {m}"
        )));
    }
    Ok(n)
}

/// Selects rows (entries along the first axis) of an array of any dtype and rank ≥ 1, in the
/// order given; indices may repeat. An index out of range is an error.
pub fn take_rows(x: &Array, idx: &[usize]) -> Result<Array> {
    let mut out = Array::zeros(x.dtype(), [0]);
    take_rows_into(x, idx, &mut out)?;
    Ok(out)
}

/// [`take_rows`] into `out`, reusing its buffer when it already has the result's dtype and
/// shape (as the previous batch of a training loop does), so that a loop over batches
/// allocates nothing; otherwise `out` is replaced. On error `out` is unchanged.
///
/// ```
/// use kiln::prelude::*;
/// use kiln::data::take_rows_into;
/// let x = Array::new([3, 2], vec![0f32, 1., 2., 3., 4., 5.])?;
/// let mut batch = Array::scalar(0f32);
/// take_rows_into(&x, &[2, 0], &mut batch)?;
/// assert_eq!(batch.to_vec::<f32>()?, [4., 5., 0., 1.]);
/// take_rows_into(&x, &[1, 1], &mut batch)?; // same shape: written in place
/// assert_eq!(batch.to_vec::<f32>()?, [2., 3., 2., 3.]);
/// assert!(take_rows_into(&x, &[0, 3], &mut batch).is_err()); // row 3 does not exist...
/// assert_eq!(batch.to_vec::<f32>()?, [2., 3., 2., 3.]); // ...and nothing was written
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn take_rows_into(x: &Array, idx: &[usize], out: &mut Array) -> Result<()> {
    let n = rows(x, "take_rows", "x")?;
    if let Some(&bad) = idx.iter().find(|&&i| i >= n) {
        return Err(Error::invalid(format!(
            "take_rows: row index {bad} is out of range for {n} rows"
        )));
    }
    let mut shape = x.shape().to_vec();
    shape[0] = idx.len();
    if out.dtype() != x.dtype() || out.shape() != shape.as_slice() {
        *out = Array::zeros(x.dtype(), shape);
    }
    let row: usize = x.shape()[1..].iter().product();
    fn fill<T: Element>(data: &[T], row: usize, idx: &[usize], out: &mut [T]) {
        for (dst, &i) in out.chunks_exact_mut(row.max(1)).zip(idx) {
            dst.copy_from_slice(&data[i * row..(i + 1) * row]);
        }
    }
    match x.data() {
        ArrayData::F32(d) => fill(d, row, idx, out.as_mut_slice()?),
        ArrayData::F64(d) => fill(d, row, idx, out.as_mut_slice()?),
        ArrayData::I32(d) => fill(d, row, idx, out.as_mut_slice()?),
        ArrayData::Bool(d) => fill(d, row, idx, out.as_mut_slice()?),
        ArrayData::I64(d) => fill(d, row, idx, out.as_mut_slice()?),
        ArrayData::I8(d) => fill(d, row, idx, out.as_mut_slice()?),
        ArrayData::U8(d) => fill(d, row, idx, out.as_mut_slice()?),
        ArrayData::F16(d) => fill(d, row, idx, out.as_mut_slice()?),
        ArrayData::BF16(d) => fill(d, row, idx, out.as_mut_slice()?),
    }
    Ok(())
}

/// Splits rows into `(x_train, y_train, x_test, y_test)` after a seeded shuffle.
///
/// The test split gets `round(n * test_fraction)` rows. With `stratify`, `y` must hold `i32`
/// class labels `[n]` and each class is split on its own (`round(count * test_fraction)` of
/// its rows go to the test split), so class proportions are kept in both splits; the splits
/// are then shuffled so classes are interleaved. The same seed always gives the same split.
pub fn train_test_split(
    x: &Array,
    y: &Array,
    test_fraction: f64,
    seed: u64,
    stratify: bool,
) -> Result<(Array, Array, Array, Array)> {
    const WHAT: &str = "train_test_split";
    let n = same_rows(x, y, WHAT)?;
    if !(0.0..=1.0).contains(&test_fraction) {
        return Err(Error::invalid(format!(
            "{WHAT}: test_fraction must be in [0, 1], got {test_fraction}"
        )));
    }
    let mut rng = SplitMix64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    if stratify {
        let labels = labels_of(y, "train_test_split (stratified)")?;
        let mut classes: Vec<i32> = labels.to_vec();
        classes.sort_unstable();
        classes.dedup();
        for c in classes {
            let mut members: Vec<usize> = (0..n).filter(|&i| labels[i] == c).collect();
            rng.shuffle(&mut members);
            let k = (members.len() as f64 * test_fraction).round() as usize;
            test.extend_from_slice(&members[..k]);
            train.extend_from_slice(&members[k..]);
        }
        rng.shuffle(&mut train);
        rng.shuffle(&mut test);
    } else {
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        let k = ((n as f64 * test_fraction).round() as usize).min(n);
        test.extend_from_slice(&order[..k]);
        train.extend_from_slice(&order[k..]);
    }
    Ok((
        take_rows(x, &train)?,
        take_rows(y, &train)?,
        take_rows(x, &test)?,
        take_rows(y, &test)?,
    ))
}

/// An iterator over `(x, y)` mini-batches; see [`batches`].
#[derive(Debug)]
pub struct Batches<'a> {
    x: &'a Array,
    y: &'a Array,
    order: Vec<usize>,
    batch_size: usize,
    pos: usize,
}

/// Mini-batches of `batch_size` rows of `x` and the matching rows of `y`.
///
/// With `shuffle: Some(seed)` the rows are visited in a seeded random order (pass a different
/// seed each epoch for a fresh order); with `None`, in order. Every row appears exactly once;
/// the last batch holds the remainder and may be smaller than `batch_size`.
pub fn batches<'a>(
    x: &'a Array,
    y: &'a Array,
    batch_size: usize,
    shuffle: Option<u64>,
) -> Result<Batches<'a>> {
    let n = same_rows(x, y, "batches")?;
    if batch_size == 0 {
        return Err(Error::invalid("batches: batch_size must be at least 1"));
    }
    let order = match shuffle {
        Some(seed) => permutation(n, seed),
        None => (0..n).collect(),
    };
    Ok(Batches {
        x,
        y,
        order,
        batch_size,
        pos: 0,
    })
}

impl Iterator for Batches<'_> {
    type Item = (Array, Array);

    fn next(&mut self) -> Option<(Array, Array)> {
        if self.pos >= self.order.len() {
            return None;
        }
        let end = (self.pos + self.batch_size).min(self.order.len());
        let idx = &self.order[self.pos..end];
        self.pos = end;
        // The indices are a permutation of 0..rows, checked against both arrays in `batches`.
        let xb = take_rows(self.x, idx).expect("batch rows are in range");
        let yb = take_rows(self.y, idx).expect("batch rows are in range");
        Some((xb, yb))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.order.len() - self.pos;
        let k = left.div_ceil(self.batch_size);
        (k, Some(k))
    }
}

impl ExactSizeIterator for Batches<'_> {}
