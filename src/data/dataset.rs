//! [`Dataset`]: a re-iterable stream of [`Item`]s, built lazily, as `tf.data.Dataset` or
//! burn's `DataLoader`.
//!
//! Why it is built this way:
//! - **A dataset is a recipe, an iteration is a run.** A `Dataset` holds a function that
//!   makes a fresh iterator for an epoch number ([`Dataset::iter_epoch`]); nothing is read or
//!   computed until an iteration pulls items. So an epoch over a dataset larger than memory
//!   holds only the items in flight (a batch being stacked, the shuffle buffer, the prefetch
//!   queue), and each epoch starts from the beginning again, as `tf.data` does.
//! - **The epoch number is the only state shared between epochs.** [`Dataset::shuffle`]
//!   seeds epoch `e` with `seed + e`, the rule `fit` uses for arrays, so every epoch has a new
//!   order and a run is reproducible from its seed.
//! - **Items are fallible.** A generator, a file or a `map` can fail at any item; the error
//!   is the item (`Result<Item>`), so it reaches whoever iterates, across the
//!   [`prefetch`](Dataset::prefetch) thread too, instead of a panic or a silently short epoch.
//! - **`Send + Sync` throughout**, so any stage can run on the prefetch thread and a dataset
//!   can be shared by clones (`Dataset` is an `Arc` inside: cloning is cheap).
//!
//! ```
//! use kiln::prelude::*;
//! use kiln::data::Dataset;
//! let x = Array::new([5, 2], (0..10).map(|v| v as f32).collect::<Vec<_>>())?;
//! let y = Array::new([5], vec![0i32, 1, 0, 1, 0])?;
//! let ds = Dataset::from_arrays(x, y)?.shuffle(5, 7).batch(2).prefetch(2);
//! assert_eq!(ds.len(), Some(3)); // 2 + 2 + 1 rows: the last, partial batch is kept
//! let mut rows = 0;
//! for item in ds.iter() {
//!     let item = item?;
//!     assert_eq!(item.x[0].shape()[1], 2);
//!     rows += item.x[0].shape()[0];
//! }
//! assert_eq!(rows, 5);
//! # Ok::<(), kiln::Error>(())
//! ```

mod files;
mod ops;
mod prefetch;

use crate::array::Array;
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

/// One element of a [`Dataset`]: the model's inputs, the targets and per-example weights
/// (Keras' `(x, y, sample_weight)` tuple), for one example or one batch of them.
///
/// Tuples convert into it: `(x, y)`, `(x, y, sample_weight)`, `(vec![x0, x1], y)` for a
/// model with two inputs, or `x` alone (for `predict`).
///
/// ```
/// use kiln::prelude::*;
/// use kiln::data::Item;
/// let item: Item = (Array::scalar(1f32), Array::scalar(0i32)).into();
/// assert_eq!(item.x.len(), 1);
/// assert!(item.y.is_some() && item.sample_weight.is_none());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The inputs, one array per model input.
    pub x: Vec<Array>,
    /// The targets, if any (`predict` needs none).
    pub y: Option<Array>,
    /// Per-example weights of the loss, if any (`f32`, one per example).
    pub sample_weight: Option<Array>,
}

impl From<Array> for Item {
    fn from(x: Array) -> Item {
        Item {
            x: vec![x],
            y: None,
            sample_weight: None,
        }
    }
}

impl From<(Array, Array)> for Item {
    fn from((x, y): (Array, Array)) -> Item {
        Item {
            x: vec![x],
            y: Some(y),
            sample_weight: None,
        }
    }
}

impl From<(Array, Array, Array)> for Item {
    fn from((x, y, w): (Array, Array, Array)) -> Item {
        Item {
            x: vec![x],
            y: Some(y),
            sample_weight: Some(w),
        }
    }
}

impl From<(Vec<Array>, Array)> for Item {
    fn from((x, y): (Vec<Array>, Array)) -> Item {
        Item {
            x,
            y: Some(y),
            sample_weight: None,
        }
    }
}

impl Item {
    /// Every array of the item, in the order `x..., y, sample_weight`.
    pub(crate) fn arrays(&self) -> Vec<&Array> {
        let mut out: Vec<&Array> = self.x.iter().collect();
        out.extend(self.y.iter().chain(self.sample_weight.iter()));
        out
    }

    /// Every array of the item, in the order `x..., y, sample_weight`, with its role's name
    /// (`x`, `x[1]`, `y`, `sample_weight`) for messages.
    pub(crate) fn named(&self) -> Vec<(String, &Array)> {
        let many = self.x.len() > 1;
        let mut out: Vec<(String, &Array)> = self
            .x
            .iter()
            .enumerate()
            .map(|(i, a)| (if many { format!("x[{i}]") } else { "x".into() }, a))
            .collect();
        out.extend(self.y.iter().map(|a| ("y".to_string(), a)));
        out.extend(
            self.sample_weight
                .iter()
                .map(|a| ("sample_weight".into(), a)),
        );
        out
    }
}

/// The iterator one epoch of a dataset runs on.
pub(crate) type ItemIter = Box<dyn Iterator<Item = Result<Item>> + Send>;
/// What makes a fresh iterator for an epoch.
type Source = Arc<dyn Fn(u64) -> Result<ItemIter> + Send + Sync>;

/// A re-iterable, lazily computed stream of [`Item`]s: arrays, a generator or a file, then
/// [`map`](Dataset::map), [`shuffle`](Dataset::shuffle), [`batch`](Dataset::batch),
/// [`prefetch`](Dataset::prefetch) and [`repeat`](Dataset::repeat) stages, as in `tf.data`.
///
/// `Model::fit_dataset`, `evaluate_dataset` and `predict_dataset` take one whose items are
/// batches (call [`batch`](Dataset::batch) on a dataset of single examples). Each epoch is
/// one full iteration from the start ([`iter_epoch`](Dataset::iter_epoch) with the epoch
/// number, so shuffling differs per epoch).
///
/// ```
/// use kiln::prelude::*;
/// use kiln::data::Dataset;
/// let x = Array::new([5, 2], (0..10).map(|v| v as f32).collect::<Vec<_>>())?;
/// let y = Array::new([5], vec![0i32, 1, 0, 1, 0])?;
/// let ds = Dataset::from_arrays(x, y)?.shuffle(5, 7).batch(2).prefetch(2);
/// assert_eq!(ds.len(), Some(3));
/// let rows: usize = ds.iter().map(|b| Ok(b?.x[0].shape()[0])).sum::<kiln::Result<usize>>()?;
/// assert_eq!(rows, 5);
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone)]
pub struct Dataset {
    source: Source,
    /// Items per iteration, when known.
    len: Option<usize>,
    /// The items are known to be single examples (made from rows and not batched yet).
    rows: bool,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("len", &self.len)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl Dataset {
    /// A dataset whose epoch `e` iterates `make(e)`: the general constructor the others use.
    pub(crate) fn from_source(
        len: Option<usize>,
        rows: bool,
        make: impl Fn(u64) -> Result<ItemIter> + Send + Sync + 'static,
    ) -> Dataset {
        Dataset {
            source: Arc::new(make),
            len,
            rows,
        }
    }

    /// The examples of `x` and `y` row by row: item `i` is `(x[i], y[i])`, each without the
    /// batch axis. The rows must agree.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::data::Dataset;
    /// let x = Array::new([3, 2], vec![0f32, 1., 2., 3., 4., 5.])?;
    /// let y = Array::new([3], vec![7i32, 8, 9])?;
    /// let first = Dataset::from_arrays(x, y)?.iter().next().unwrap()?;
    /// assert_eq!(first.x[0].to_vec::<f32>()?, [0., 1.]);
    /// assert_eq!(first.y.unwrap().shape(), &[] as &[usize]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn from_arrays(x: Array, y: Array) -> Result<Dataset> {
        Dataset::from_slices((x, y))
    }

    /// The rows of every array of `item` (Keras' `(x, y[, sample_weight])` of whole arrays,
    /// or `x` alone), sliced along the first axis as `tf.data.Dataset.from_tensor_slices`
    /// does. Every array must have the same number of rows; an error names the one that
    /// differs.
    pub fn from_slices(item: impl Into<Item>) -> Result<Dataset> {
        let item = item.into();
        let mut n = None;
        for (name, a) in item.named() {
            let r = *a.shape().first().ok_or_else(|| {
                Error::invalid(format!(
                    "Dataset::from_slices: {name} is a scalar; every array needs a first \
                     (row) axis"
                ))
            })?;
            match n {
                None => n = Some((r, name)),
                Some((m, ref first)) if m != r => {
                    return Err(Error::invalid(format!(
                        "Dataset::from_slices: {first} has {m} rows but {name} has {r}"
                    )))
                }
                _ => {}
            }
        }
        let rows = n.map_or(0, |(r, _)| r);
        let item = Arc::new(item);
        Ok(Dataset::from_source(Some(rows), true, move |_| {
            let item = item.clone();
            Ok(Box::new((0..rows).map(move |i| ops::row_of(&item, i))))
        }))
    }

    /// A dataset from a generator: `make()` is called at the start of every epoch and its
    /// iterator's items (anything that converts into an [`Item`], or an error) are the
    /// epoch's items. Items may be single examples or whole batches; an `Err` item reaches
    /// the consumer as an error at that point of the epoch.
    ///
    /// This is how data larger than memory streams: the generator makes each item when it
    /// is pulled, and nothing holds the items already consumed.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::data::Dataset;
    /// // Batches of 4 rows of y = 2x, made on demand, 10 per epoch.
    /// let ds = Dataset::from_generator(|| {
    ///     (0..10).map(|b| {
    ///         let x: Vec<f32> = (0..4).map(|i| (b * 4 + i) as f32).collect();
    ///         let y: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
    ///         Ok((Array::new([4, 1], x)?, Array::new([4, 1], y)?))
    ///     })
    /// });
    /// assert_eq!(ds.iter().count(), 10);
    /// assert_eq!(ds.len(), None); // a generator's length is not known in advance
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn from_generator<F, I, T>(make: F) -> Dataset
    where
        F: Fn() -> I + Send + Sync + 'static,
        I: IntoIterator<Item = Result<T>>,
        I::IntoIter: Send + 'static,
        T: Into<Item>,
    {
        Dataset::from_source(None, false, move |_| {
            Ok(Box::new(make().into_iter().map(|r| r.map(Into::into))))
        })
    }

    /// A generator that knows the epoch: `make(epoch)` is called at the start of every
    /// epoch (`fit_dataset`'s epoch `e` calls `make(e)`), as [`from_generator`] calls
    /// `make()`. A generator that shuffles by the epoch's number
    /// ([`permutation`](crate::data::permutation)`(n, seed + epoch)`) yields the very
    /// batches `fit` cuts from arrays with [`FitConfig::seed`](crate::nn::FitConfig::seed),
    /// so it trains to the same bits.
    ///
    /// [`from_generator`]: Dataset::from_generator
    ///
    /// ```
    /// use kiln::data::Dataset;
    /// let ds = Dataset::from_epoch_generator(|epoch| {
    ///     (0..3).map(move |i| Ok(kiln::Array::scalar((10 * epoch + i) as f32)))
    /// });
    /// let first = |e| ds.iter_epoch(e).next().unwrap().unwrap().x[0].scalar_value::<f32>();
    /// assert_eq!(first(2)?, 20.0);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn from_epoch_generator<F, I, T>(make: F) -> Dataset
    where
        F: Fn(u64) -> I + Send + Sync + 'static,
        I: IntoIterator<Item = Result<T>>,
        I::IntoIter: Send + 'static,
        T: Into<Item>,
    {
        Dataset::from_source(None, false, move |epoch| {
            Ok(Box::new(make(epoch).into_iter().map(|r| r.map(Into::into))))
        })
    }

    /// A dataset from one iterator, which can run only once: a second iteration (a second
    /// epoch of `fit`) gives one error item saying so. Use [`from_generator`] with a closure
    /// that makes the iterator to run several epochs.
    ///
    /// [`from_generator`]: Dataset::from_generator
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::data::Dataset;
    /// let ds = Dataset::from_iter((0..3).map(|i| Ok(Array::scalar(i as f32))));
    /// assert_eq!(ds.iter().count(), 3);
    /// let again: Vec<_> = ds.iter().collect();
    /// assert!(again[0].as_ref().unwrap_err().to_string().contains("runs once"));
    /// ```
    #[allow(clippy::should_implement_trait)] // returns a Dataset, not Self from items
    pub fn from_iter<I, T>(iter: I) -> Dataset
    where
        I: IntoIterator<Item = Result<T>>,
        I::IntoIter: Send + 'static,
        T: Into<Item> + 'static,
    {
        let once = Mutex::new(Some(iter.into_iter()));
        Dataset::from_source(None, false, move |_| {
            let taken = once.lock().map_err(|_| poisoned())?.take();
            match taken {
                Some(it) => Ok(Box::new(it.map(|r| r.map(Into::into))) as ItemIter),
                None => Err(Error::invalid(
                    "Dataset::from_iter: this dataset was made from an iterator, which runs \
                     once, and it has run; use Dataset::from_generator with a closure that \
                     makes a fresh iterator to iterate again (a second epoch of fit)",
                )),
            }
        })
    }

    /// Items per iteration when known: arrays and files know it, and `map`, `shuffle`,
    /// `batch`, `prefetch`, `repeat` and `take` carry it through; a generator's is `None`.
    /// `fit` uses it for the progress bar's length.
    pub fn len(&self) -> Option<usize> {
        self.len
    }

    /// True when the dataset is known to hold no items.
    pub fn is_empty(&self) -> bool {
        self.len == Some(0)
    }

    /// Whether the items are known to be single examples (from arrays or a file, not batched
    /// yet), which `fit` refuses with a hint to call [`batch`](Dataset::batch).
    pub(crate) fn is_rows(&self) -> bool {
        self.rows
    }

    /// An iteration over epoch 0.
    pub fn iter(&self) -> DatasetIter {
        self.iter_epoch(0)
    }

    /// An iteration over epoch `epoch`: the same items as any other epoch, in the order
    /// that epoch's shuffle seed gives. A failure to start (a file that cannot be opened) is
    /// the first item.
    pub fn iter_epoch(&self, epoch: u64) -> DatasetIter {
        let inner: ItemIter = match (self.source)(epoch) {
            Ok(it) => it,
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
        DatasetIter { inner }
    }
}

/// The error for a lock whose holder panicked.
fn poisoned() -> Error {
    Error::Internal("a dataset's lock was poisoned by a panic in another thread".into())
}

/// One iteration over a [`Dataset`]: its items in order, each a `Result`.
pub struct DatasetIter {
    inner: ItemIter,
}

impl std::fmt::Debug for DatasetIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasetIter").finish_non_exhaustive()
    }
}

impl Iterator for DatasetIter {
    type Item = Result<Item>;
    fn next(&mut self) -> Option<Result<Item>> {
        self.inner.next()
    }
}
