//! The stages of a [`Dataset`] pipeline: `map`, `shuffle`, `batch`, `repeat`, `take`, each
//! a lazy iterator adapter over the stage before it.

use super::{Dataset, Item, ItemIter};
use crate::array::{Array, ArrayData, Element};
use crate::data::{take_rows, SplitMix64};
use crate::error::{Error, Result};
use std::sync::Arc;

/// Row `i` of every array of `item`, without the row axis.
pub(super) fn row_of(item: &Item, i: usize) -> Result<Item> {
    let one = |a: &Array| -> Result<Array> {
        let r = take_rows(a, &[i])?;
        let shape = a.shape()[1..].to_vec();
        r.reshape(shape)
    };
    Ok(Item {
        x: item.x.iter().map(one).collect::<Result<_>>()?,
        y: item.y.as_ref().map(one).transpose()?,
        sample_weight: item.sample_weight.as_ref().map(one).transpose()?,
    })
}

impl Dataset {
    /// Applies `f` to every item, lazily (on the prefetch thread if a
    /// [`prefetch`](Dataset::prefetch) follows). An error from `f` becomes that item's error.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::data::Dataset;
    /// let x = Array::new([2, 1], vec![1f32, 2.])?;
    /// let ds = Dataset::from_arrays(x.clone(), x)?.map(|mut item| {
    ///     item.x[0] = Array::new([1], vec![item.x[0].to_vec::<f32>()?[0] * 10.0])?;
    ///     Ok(item)
    /// });
    /// let last = ds.iter().last().unwrap()?;
    /// assert_eq!(last.x[0].to_vec::<f32>()?, [20.]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn map<F>(&self, f: F) -> Dataset
    where
        F: Fn(Item) -> Result<Item> + Send + Sync + 'static,
    {
        let up = self.clone();
        let f = Arc::new(f);
        Dataset::from_source(self.len, self.rows, move |epoch| {
            let f = f.clone();
            Ok(Box::new(up.iter_epoch(epoch).map(move |r| r.and_then(|it| f(it)))) as ItemIter)
        })
    }

    /// Shuffles through a buffer of `buffer` items, as `tf.data`'s `shuffle`: the buffer is
    /// filled from the stage before, then each item given is drawn uniformly from it and its
    /// place refilled. A buffer as large as the dataset gives a uniform permutation; a
    /// smaller one mixes only nearby items but holds only `buffer` items in memory.
    ///
    /// Deterministic: epoch `e` draws from a generator seeded with `seed + e` (the rule
    /// `fit` uses for arrays), so each epoch has its own order and a run repeats exactly.
    /// A `buffer` of 0 or 1 keeps the order.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::data::Dataset;
    /// let x = Array::new([6], (0..6).map(|v| v as f32).collect::<Vec<_>>())?;
    /// let ds = Dataset::from_slices(x)?.shuffle(6, 1);
    /// let order = |e| -> kiln::Result<Vec<f32>> {
    ///     ds.iter_epoch(e).map(|i| Ok(i?.x[0].scalar_value::<f32>()?)).collect()
    /// };
    /// assert_eq!(order(0)?, order(0)?); // the same seed, the same order
    /// assert_ne!(order(0)?, order(1)?); // another epoch, another order
    /// let mut sorted = order(1)?;
    /// sorted.sort_by(f32::total_cmp);
    /// assert_eq!(sorted, [0., 1., 2., 3., 4., 5.]); // every item once
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn shuffle(&self, buffer: usize, seed: u64) -> Dataset {
        let up = self.clone();
        Dataset::from_source(self.len, self.rows, move |epoch| {
            Ok(Box::new(Shuffle {
                up: Box::new(up.iter_epoch(epoch)),
                buf: Vec::with_capacity(buffer.min(1 << 16)),
                cap: buffer.max(1),
                rng: SplitMix64(seed.wrapping_add(epoch)),
                up_done: false,
            }) as ItemIter)
        })
    }

    /// Groups `n` consecutive items into one, stacking each array along a new first axis
    /// (`n` items `(x: [784], y: [])` make `(x: [n, 784], y: [n])`). The last batch holds
    /// what is left, and may be smaller than `n` (`tf.data`'s default); see
    /// [`batch_drop_remainder`](Dataset::batch_drop_remainder) to drop it.
    ///
    /// The items of one batch must have the same arrays with the same dtypes and shapes; an
    /// error names the item and the array that differ. `n = 0` gives one error item.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::data::Dataset;
    /// let x = Array::new([5, 3], vec![0f32; 15])?;
    /// let ds = Dataset::from_arrays(x, Array::new([5], vec![0i32; 5])?)?;
    /// let shapes: Vec<Vec<usize>> =
    ///     ds.batch(2).iter().map(|b| Ok(b?.x[0].shape().to_vec())).collect::<kiln::Result<_>>()?;
    /// assert_eq!(shapes, [vec![2, 3], vec![2, 3], vec![1, 3]]);
    /// assert_eq!(ds.batch_drop_remainder(2).iter().count(), 2);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn batch(&self, n: usize) -> Dataset {
        self.batched(n, false)
    }

    /// Like [`batch`](Dataset::batch), but a last batch smaller than `n` is dropped, so
    /// every batch has exactly `n` items (`drop_remainder=True` in `tf.data`).
    pub fn batch_drop_remainder(&self, n: usize) -> Dataset {
        self.batched(n, true)
    }

    fn batched(&self, n: usize, drop: bool) -> Dataset {
        let up = self.clone();
        let len = match (self.len, n) {
            (_, 0) => Some(1),
            (Some(l), n) if drop => Some(l / n),
            (Some(l), n) => Some(l.div_ceil(n)),
            (None, _) => None,
        };
        Dataset::from_source(len, false, move |epoch| {
            if n == 0 {
                return Err(Error::invalid(
                    "Dataset::batch: the batch size must be at least 1",
                ));
            }
            Ok(Box::new(Batch {
                up: up.iter_epoch(epoch),
                n,
                drop,
                done: false,
            }) as ItemIter)
        })
    }

    /// The items `count` times over: iteration `e` of the result runs iterations
    /// `e·count .. e·count + count` of this dataset, so a shuffle before `repeat` gives each
    /// repetition its own order. `fit` counts one full iteration of the result as an epoch.
    pub fn repeat(&self, count: usize) -> Dataset {
        let up = self.clone();
        let len = self.len.map(|l| l.saturating_mul(count));
        Dataset::from_source(len, self.rows, move |epoch| {
            let up = up.clone();
            let base = epoch.wrapping_mul(count as u64);
            Ok(
                Box::new((0..count as u64).flat_map(move |i| up.iter_epoch(base.wrapping_add(i))))
                    as ItemIter,
            )
        })
    }

    /// At most the first `n` items.
    pub fn take(&self, n: usize) -> Dataset {
        let up = self.clone();
        let len = self.len.map(|l| l.min(n));
        Dataset::from_source(len, self.rows, move |epoch| {
            Ok(Box::new(up.iter_epoch(epoch).take(n)) as ItemIter)
        })
    }
}

/// The buffered shuffle's iterator.
struct Shuffle {
    up: ItemIter,
    buf: Vec<Item>,
    cap: usize,
    rng: SplitMix64,
    up_done: bool,
}

impl Iterator for Shuffle {
    type Item = Result<Item>;
    fn next(&mut self) -> Option<Result<Item>> {
        while !self.up_done && self.buf.len() < self.cap {
            match self.up.next() {
                Some(Ok(item)) => self.buf.push(item),
                // An error is given at once, where it happened in the stream.
                Some(Err(e)) => return Some(Err(e)),
                None => self.up_done = true,
            }
        }
        if self.buf.is_empty() {
            return None;
        }
        let j = self.rng.below(self.buf.len());
        Some(Ok(self.buf.swap_remove(j)))
    }
}

/// The batching iterator.
struct Batch {
    up: super::DatasetIter,
    n: usize,
    drop: bool,
    done: bool,
}

impl Iterator for Batch {
    type Item = Result<Item>;
    fn next(&mut self) -> Option<Result<Item>> {
        if self.done {
            return None;
        }
        let mut items = Vec::with_capacity(self.n.min(1 << 16));
        while items.len() < self.n {
            match self.up.next() {
                Some(Ok(item)) => items.push(item),
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    self.done = true;
                    break;
                }
            }
        }
        if items.is_empty() || (self.drop && items.len() < self.n) {
            return None;
        }
        Some(stack_items(&items))
    }
}

/// The items stacked into one batch item.
fn stack_items(items: &[Item]) -> Result<Item> {
    let first = &items[0];
    let names = first.named();
    for (k, it) in items.iter().enumerate().skip(1) {
        let same = it.x.len() == first.x.len()
            && it.y.is_some() == first.y.is_some()
            && it.sample_weight.is_some() == first.sample_weight.is_some();
        if !same {
            return Err(Error::invalid(format!(
                "Dataset::batch: item {k} of a batch holds other arrays than item 0 \
                 ({:?} vs {:?})",
                it.named().iter().map(|n| n.0.clone()).collect::<Vec<_>>(),
                names.iter().map(|n| n.0.clone()).collect::<Vec<_>>(),
            )));
        }
    }
    let arrays: Vec<Vec<&Array>> = items.iter().map(Item::arrays).collect();
    let mut out = Vec::with_capacity(names.len());
    for (slot, (name, _)) in names.iter().enumerate() {
        let parts: Vec<&Array> = arrays.iter().map(|a| a[slot]).collect();
        out.push(stack(&parts, name)?);
    }
    let nx = first.x.len();
    let mut rest = out.split_off(nx).into_iter();
    Ok(Item {
        x: out,
        y: first.y.as_ref().and_then(|_| rest.next()),
        sample_weight: first.sample_weight.as_ref().and_then(|_| rest.next()),
    })
}

/// Arrays of one dtype and shape stacked along a new first axis; `name` is the array's
/// role in messages.
pub(crate) fn stack(parts: &[&Array], name: &str) -> Result<Array> {
    let Some(first) = parts.first() else {
        return Err(Error::invalid("Dataset::batch: nothing to stack"));
    };
    if let Some((k, p)) = parts
        .iter()
        .enumerate()
        .find(|(_, p)| p.dtype() != first.dtype() || p.shape() != first.shape())
    {
        return Err(Error::invalid(format!(
            "Dataset::batch: item {k} of a batch has {name} {}{:?}, item 0 has {}{:?}; the \
             items of a batch must have one dtype and shape",
            p.dtype(),
            p.shape(),
            first.dtype(),
            first.shape()
        )));
    }
    let mut shape = vec![parts.len()];
    shape.extend_from_slice(first.shape());
    fn cat<T: Element>(parts: &[&Array], shape: Vec<usize>) -> Result<Array> {
        let mut data: Vec<T> = Vec::with_capacity(shape.iter().product());
        for p in parts {
            data.extend_from_slice(p.as_slice::<T>()?);
        }
        Array::new(shape, data)
    }
    match first.data() {
        ArrayData::F32(_) => cat::<f32>(parts, shape),
        ArrayData::F64(_) => cat::<f64>(parts, shape),
        ArrayData::I32(_) => cat::<i32>(parts, shape),
        ArrayData::Bool(_) => cat::<bool>(parts, shape),
        ArrayData::I64(_) => cat::<i64>(parts, shape),
        ArrayData::I8(_) => cat::<i8>(parts, shape),
        ArrayData::U8(_) => cat::<u8>(parts, shape),
        ArrayData::F16(_) => cat::<half::f16>(parts, shape),
        ArrayData::BF16(_) => cat::<half::bf16>(parts, shape),
    }
}
