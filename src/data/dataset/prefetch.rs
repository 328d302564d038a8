//! `prefetch`: the stages before it run on a background thread, a bounded queue ahead of
//! the consumer.
//!
//! The threading rule (ARCHITECTURE.md, "Datasets"): one plain `std` thread per iteration,
//! a `sync_channel` of `n` items between it and the consumer, and nothing else shared.
//! - **Errors travel as items.** The producer sends each `Result<Item>` as it is; a panic in
//!   a user's generator or `map` is caught on the producer thread and sent as an error
//!   item, so no panic crosses into the consumer and an epoch never ends silently short.
//! - **Dropping the consumer stops the producer.** Dropping the iterator drops the receiver
//!   first, so a producer blocked on a full queue gets a send error and returns at once; a
//!   producer busy in its upstream stops after the item it is making. Then the drop joins
//!   the thread, so when it returns the upstream iterator (a generator, a file) has been
//!   dropped too: no thread outlives its iteration, and an early stop of `fit` (a callback,
//!   an error) leaks nothing and cannot deadlock.
//! - **Bounded memory.** At most `n` items wait in the queue, plus the one the producer is
//!   making and the one the consumer holds.

use super::{Dataset, DatasetIter, Item, ItemIter};
use crate::error::{Error, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

impl Dataset {
    /// Runs the stages before this one on a background thread, keeping up to `n` items
    /// ready ahead of the consumer, so that making the next batch (reading, decoding,
    /// `map`, stacking) overlaps the training step. `prefetch(0)` runs everything on the
    /// consumer's thread, as if there were no prefetch.
    ///
    /// An error or a panic in an earlier stage arrives as an error item at its place in the
    /// stream. Dropping the iteration early (a `fit` stopped by a callback, a `break`) stops
    /// and joins the thread.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::data::Dataset;
    /// let ds = Dataset::from_generator(|| {
    ///     (0..1_000_000).map(|i| Ok(Array::scalar(i as f32)))
    /// })
    /// .prefetch(4);
    /// // Take three items of a million and drop the iteration: the thread stops.
    /// let first: Vec<f32> = ds.iter().take(3).map(|i| Ok(i?.x[0].scalar_value()?))
    ///     .collect::<kiln::Result<_>>()?;
    /// assert_eq!(first, [0., 1., 2.]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn prefetch(&self, n: usize) -> Dataset {
        if n == 0 {
            return self.clone();
        }
        let up = self.clone();
        Dataset::from_source(self.len, self.rows, move |epoch| {
            Ok(Box::new(Prefetch::start(up.clone(), epoch, n)?) as ItemIter)
        })
    }
}

/// The consumer's side of a prefetch thread.
struct Prefetch {
    rx: Option<Receiver<Result<Item>>>,
    handle: Option<JoinHandle<()>>,
}

impl Prefetch {
    /// Starts the thread that runs `up`'s epoch `epoch` into a queue of `n` items.
    fn start(up: Dataset, epoch: u64, n: usize) -> Result<Prefetch> {
        let (tx, rx) = sync_channel::<Result<Item>>(n);
        let producer = move || {
            let run = catch_unwind(AssertUnwindSafe(|| {
                let items: DatasetIter = up.iter_epoch(epoch);
                for item in items {
                    if tx.send(item).is_err() {
                        return; // the consumer is gone
                    }
                }
            }));
            if let Err(panic) = run {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                let _ = tx.send(Err(Error::invalid(format!(
                    "a dataset stage panicked on the prefetch thread: {msg}"
                ))));
            }
        };
        let handle = std::thread::Builder::new()
            .name("kiln-prefetch".into())
            .spawn(producer)
            .map_err(|e| {
                Error::invalid(format!(
                    "Dataset::prefetch: cannot start the prefetch thread: {e}"
                ))
            })?;
        Ok(Prefetch {
            rx: Some(rx),
            handle: Some(handle),
        })
    }
}

impl Iterator for Prefetch {
    type Item = Result<Item>;
    fn next(&mut self) -> Option<Result<Item>> {
        // A receive error means the producer finished and dropped its sender.
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // The receiver first: a producer blocked on a full queue then fails its send and
        // returns, so the join below cannot wait on it.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            // The producer catches panics, so joining it cannot fail; if it somehow did,
            // dropping must not panic either.
            let _ = h.join();
        }
    }
}
