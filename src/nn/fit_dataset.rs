//! `fit`, `evaluate` and `predict` on a [`Dataset`]: `fit_dataset`, `evaluate_dataset`,
//! `predict_dataset`.
//!
//! Why separate methods rather than one `fit` taking "arrays or a dataset": a dataset
//! already carries the targets, the weights and the batching, so the array signature's `y`
//! and `batch_size` would mean nothing for it. One generic `fit` would need a dummy `y`
//! (`fit(&ds, None, ...)`, whose `None` then needs a type annotation) and a run-time error
//! for a batch size given twice (what Keras does); separate methods make both compile-time
//! facts, and every existing call keeps its exact types. Both forms run the same epoch
//! loop (`Model::fit_loop`) and the same pass (`fit_pass`), so a dataset that yields the
//! batches `fit` would cut from arrays trains to the same bits.

use super::batch::{concat_rows, rows_of, Logs};
use super::check;
use super::fit::Data;
use super::fit_config::FitConfig;
use super::fit_pass::{BatchInfo, Batches};
use super::history::History;
use super::losses::sparse_labels_i32;
use super::model::Model;
use super::sample_weight::{check_class_weight, check_weights, class_weights};
use crate::array::Array;
use crate::data::{Dataset, DatasetIter, Item};
use crate::error::{Error, Result};
use crate::graph::Tensor;
use crate::session::Session;

/// A dataset's items as batches to feed, each checked against the model first.
pub(super) struct StreamBatches<'a> {
    iter: DatasetIter,
    /// The method, for messages.
    what: &'static str,
    check_finite: bool,
    /// `FitConfig::class_weight`, checked.
    class_weight: Option<&'a [(usize, f64)]>,
    step: usize,
    seen: usize,
    /// At most this many batches (`FitConfig::steps_per_epoch`).
    pub(super) limit: Option<usize>,
    /// The dataset ended (before `limit`, when there is one).
    pub(super) ran_out: bool,
}

impl<'a> StreamBatches<'a> {
    /// Batches from `iter`; `what` names the caller in messages.
    pub(super) fn new(
        iter: DatasetIter,
        what: &'static str,
        check_finite: bool,
        class_weight: Option<&'a [(usize, f64)]>,
    ) -> Self {
        StreamBatches {
            iter,
            what,
            check_finite,
            class_weight,
            step: 0,
            seen: 0,
            limit: None,
            ran_out: false,
        }
    }

    /// The dataset's iterator, for the next epoch to go on from.
    pub(super) fn into_inner(self) -> DatasetIter {
        self.iter
    }

    /// `item`'s arrays into `bufs` (inputs, then target), checked as `fit` checks arrays:
    /// the inputs' and targets' dtypes and shapes, label ranges, and NaN or infinity if
    /// asked.
    fn prepare(&mut self, model: &Model, item: Item, bufs: &mut Vec<Array>) -> Result<BatchInfo> {
        let at = format!("{}: batch {} of the dataset", self.what, self.step + 1);
        let Some(y) = item.y else {
            return Err(Error::invalid(format!(
                "{at} has no targets (y); training and evaluation need (x, y) items \
                 (predict_dataset takes x alone)"
            )));
        };
        let y = sparse_labels_i32(model.loss, &format!("{at}: y"), &y)?.into_owned();
        let xs: Vec<&Array> = item.x.iter().collect();
        check::inputs(&at, model, &xs)?;
        check::targets(&at, "y", model, &y)?;
        let rows = rows_of(&xs, Some(&y))?;
        if self.check_finite {
            let hint = "a non-finite input makes the loss NaN. Remove or replace that value \
                        (FitConfig::check_finite(false) skips this check)";
            for (name, a) in item.x.iter().enumerate().map(|(i, a)| (x_label(&xs, i), a)) {
                check::finite(&at, &name, a, hint)?;
            }
            check::finite(&at, "y", &y, hint)?;
        }
        let w = match (&item.sample_weight, self.class_weight) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(format!(
                    "{at} holds sample weights and FitConfig::class_weight was given; Keras \
                     refuses both at once too: fold the class weights into the items' weights"
                )))
            }
            (Some(w), None) => Some(check_weights(&format!("{at}: sample_weight"), w, rows)?),
            (None, Some(map)) => Some(class_weights(map, &y)?),
            (None, None) => None,
        };
        bufs.clear();
        bufs.extend(item.x);
        bufs.push(y);
        bufs.extend(w);
        let info = BatchInfo {
            rows,
            first_row: self.seen,
        };
        self.step += 1;
        self.seen += rows;
        Ok(info)
    }
}

/// `x`, or `x[i]` when there are several inputs.
fn x_label(xs: &[&Array], i: usize) -> String {
    super::batch::x_name(xs, i, "x")
}

impl Batches for StreamBatches<'_> {
    fn next_into(&mut self, model: &Model, bufs: &mut Vec<Array>) -> Option<Result<BatchInfo>> {
        if self.limit.is_some_and(|l| self.step >= l) {
            return None;
        }
        let Some(item) = self.iter.next() else {
            self.ran_out = true;
            return None;
        };
        let item = match item {
            Ok(item) => item,
            Err(e) => return Some(Err(e)),
        };
        Some(self.prepare(model, item, bufs))
    }
}

/// An error if `data`'s items are known to be single examples, not batches.
fn batched(what: &str, data: &Dataset) -> Result<()> {
    if data.is_rows() {
        return Err(Error::invalid(format!(
            "{what}: the dataset's items are single examples (made from rows and not \
             batched); call .batch(n) on it first, as tf.data needs before Keras' fit"
        )));
    }
    Ok(())
}

impl Model {
    /// Trains on a dataset's batches, as [`fit`](Model::fit) does on arrays: one epoch is
    /// one full iteration of `data` (epoch `e` iterates [`Dataset::iter_epoch`]`(e)`, so a
    /// [`shuffle`](Dataset::shuffle) stage gives each epoch its own order), and only the
    /// batches in flight are in memory, so data larger than memory trains.
    ///
    /// Items are `(x, y)` batches (call [`Dataset::batch`] on a dataset of single
    /// examples); each is checked against the model as `fit` checks arrays (dtypes,
    /// shapes, label ranges, and NaN or infinity unless
    /// [`FitConfig::check_finite`]`(false)`), and an error names the batch. An error item
    /// from the dataset (a generator's, a file's) stops training with that error.
    /// `FitConfig`'s `batch_size` and `shuffle` are for arrays and are not used here; a
    /// [`validation_split`](FitConfig::validation_split) is refused (a dataset cannot be
    /// split; give [`validation_dataset`](FitConfig::validation_dataset) or
    /// `validation_data`).
    ///
    /// ```no_run
    /// use kiln::data::Dataset;
    /// use kiln::nn::*;
    /// use kiln::prelude::*;
    /// let mnist = kiln::data::load_mnist("data/mnist")?;
    /// let train = Dataset::from_arrays(mnist.train_x, mnist.train_y)?
    ///     .shuffle(60_000, 1).batch(128).prefetch(2);
    /// let mut model = Sequential::new([Input::new([784]).into(), Dense::new(10).into()]);
    /// model.compile(Adam::new(1e-3), Loss::SparseCategoricalCrossentropy { from_logits: true },
    ///     &[Metric::Accuracy])?;
    /// let history = model.fit_dataset(&train, FitConfig::new().epochs(2))?;
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn fit_dataset(&mut self, data: &Dataset, mut config: FitConfig) -> Result<History> {
        config.args.result()?;
        config.check_validation()?;
        if config.validation_split > 0.0 {
            return Err(Error::invalid(format!(
                "fit_dataset: validation_split({}) cannot split a dataset (its length may be \
                 unknown and its items are already batches); give FitConfig::\
                 validation_dataset or validation_data",
                config.validation_split
            )));
        }
        self.ids()?;
        batched("fit_dataset", data)?;
        if config.sample_weight.is_some() {
            return Err(Error::invalid(
                "fit_dataset: FitConfig::sample_weight gives one weight per row of arrays; a \
                 dataset carries its weights in its items, (x, y, sample_weight)",
            ));
        }
        if let Some(map) = &config.class_weight {
            check_class_weight(map, self.classes()?)?;
        }
        if let Some(v) = &config.validation_dataset {
            batched("fit_dataset (validation_dataset)", v)?;
        }
        self.validation_arrays_checks(&mut config)?;
        let check_finite = config.check_finite;
        let val_arrays = config.validation_data.take();
        let val_ds = config.validation_dataset.take();
        let val = match (&val_arrays, &val_ds) {
            (Some((vx, vy)), _) => Some(Data::Rows {
                xs: vx.iter().collect(),
                y: vy,
                w: None,
            }),
            (None, Some(ds)) => Some(Data::Stream {
                ds,
                check_finite,
                class_weight: None,
            }),
            (None, None) => None,
        };
        let class_weight = config.class_weight.take();
        let train = Data::Stream {
            ds: data,
            check_finite,
            class_weight: class_weight.as_deref(),
        };
        let steps = config.steps_per_epoch.or(data.len()).unwrap_or(0);
        self.fit_loop(&train, val.as_ref(), steps, config)
    }

    /// Loss and metrics over a dataset's `(x, y)` batches, dropout off, as
    /// [`evaluate`](Model::evaluate) on arrays (each batch checked first, NaN and infinity
    /// included; a non-finite loss is an error naming the batch).
    ///
    /// ```no_run
    /// use kiln::data::Dataset;
    /// # let mut model = kiln::nn::Sequential::new([kiln::nn::Input::new([784]).into()]);
    /// let mnist = kiln::data::load_mnist("data/mnist")?;
    /// let test = Dataset::from_arrays(mnist.test_x, mnist.test_y)?.batch(1000);
    /// let logs = model.evaluate_dataset(&test)?;
    /// println!("test accuracy {:.4}", logs["accuracy"]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn evaluate_dataset(&mut self, data: &Dataset) -> Result<Logs> {
        self.ids()?;
        batched("evaluate_dataset", data)?;
        let mut src = StreamBatches::new(data.iter(), "evaluate_dataset", true, None);
        let pass = self.epoch_pass(&mut src, false, None)?;
        if pass.seen == 0 {
            return Err(Error::invalid(
                "evaluate_dataset: the dataset gave no batches",
            ));
        }
        match pass.bad {
            None => Ok(pass.logs),
            Some(b) => Err(Error::invalid(format!(
                "evaluate_dataset: the loss is {} on batch {} (rows {}..{} of the dataset's \
                 {}), so the mean loss is not finite; the data holds only finite values, so \
                 the model's outputs overflow there (very large weights, or a log of 0)",
                b.loss,
                b.step + 1,
                b.first_row,
                b.first_row + b.rows,
                pass.seen,
            ))),
        }
    }

    /// The (first) output on a dataset's batches, dropout off, stacked in order. Items need
    /// only `x` (a `y` or weights are ignored); each batch runs as it comes, so a session
    /// compiles once per distinct batch size (a partial last batch is a second one).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::data::Dataset;
    /// use kiln::nn::*;
    /// let mut model = Sequential::new([Input::new([2]).into(), Dense::new(1).into()]);
    /// model.build()?;
    /// let x = Array::new([5, 2], vec![0f32; 10])?;
    /// let p = model.predict_dataset(&Dataset::from_slices(x.clone())?.batch(2))?;
    /// assert_eq!(p, model.predict(&x, 32)?);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn predict_dataset(&mut self, data: &Dataset) -> Result<Array> {
        batched("predict_dataset", data)?;
        let built = self.built()?.clone();
        let g = self.graph().clone();
        if self.session.is_none() {
            self.session = Some(Session::new(&g)?);
        }
        let fetch: Vec<Tensor<'_>> = vec![g.tensor(built.outputs[0])];
        let mut parts = vec![];
        for (step, item) in data.iter().enumerate() {
            let item = item?;
            let xs: Vec<&Array> = item.x.iter().collect();
            check::inputs(&format!("predict_dataset: batch {}", step + 1), self, &xs)?;
            let mut feeds: Vec<(Tensor<'_>, Array)> = built
                .inputs
                .iter()
                .map(|&id| g.tensor(id))
                .zip(item.x)
                .collect();
            feeds.push((g.tensor(built.training), Array::scalar(false)));
            let sess = self
                .session
                .as_mut()
                .ok_or_else(|| Error::invalid("predict_dataset: no session"))?;
            parts.extend(sess.run(&fetch, &feeds)?);
        }
        if parts.is_empty() {
            return Err(Error::invalid(
                "predict_dataset: the dataset gave no batches",
            ));
        }
        concat_rows(&parts)
    }
}
