//! `History`: what `fit` returns, each logged value per epoch, and its curves. It sits below
//! `fit` and the callbacks (ARCHITECTURE.md, "The Keras layer"): they write it and read it,
//! it names neither.

#[cfg(feature = "ui")]
use crate::error::Result;
use std::collections::BTreeMap;

/// What `fit` returns: each logged value per epoch.
///
/// ```
/// use kiln::prelude::*;
/// use kiln::nn::*;
/// let x = Array::new([4, 1], vec![0f32, 1., 2., 3.])?;
/// let y = Array::new([4, 1], vec![1f32, 3., 5., 7.])?;
/// let mut m = Sequential::new([Input::new([1]).into(), Dense::new(1).into()]);
/// m.compile(Sgd::new(0.05), Loss::MeanSquaredError, &[Metric::MeanAbsoluteError])?;
/// let h = m.fit(&x, &y, FitConfig::new().epochs(4).verbosity(Verbosity::Silent))?;
/// assert_eq!(h.epochs(), 4);
/// let loss = h.get("loss").unwrap();
/// assert!(loss[3] < loss[0]);
/// assert!(h.to_csv().starts_with("epoch,loss,mean_absolute_error\n0,"));
/// assert!(h.to_json().starts_with("{\"loss\": ["));
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Values by name, one per epoch run.
    pub history: BTreeMap<String, Vec<f64>>,
    /// The epoch (0-based) at which a callback stopped training, if one did.
    pub stopped_epoch: Option<usize>,
    /// The epoch (0-based) whose weights a callback put back at the end, if one did
    /// ([`EarlyStopping::restore_best_weights`](super::EarlyStopping::restore_best_weights)):
    /// the model holds that epoch's weights, not the last one's. [`plot`](Self::plot)
    /// marks it.
    pub restored_epoch: Option<usize>,
}

impl History {
    /// The series for `name` (`"val_loss"`).
    pub fn get(&self, name: &str) -> Option<&[f64]> {
        self.history.get(name).map(|v| v.as_slice())
    }
    /// How many epochs ran.
    pub fn epochs(&self) -> usize {
        self.history.get("loss").map_or(0, |v| v.len())
    }
    /// Writes the curves as SVG: loss and validation loss, with each metric beside them
    /// (see [`crate::plot::plot_curves`]).
    ///
    /// Only with the default-on `ui` cargo feature (plotters): a build without it has no
    /// `plot` at all, so a call to it is a compile error rather than a failure at the end of
    /// a training run.
    ///
    /// A path whose directory does not exist fails here, after training; the
    /// [`PlotCurves`](super::PlotCurves) callback draws the same picture during `fit` and
    /// reports a bad path before the first epoch.
    ///
    /// The picture is titled "training curves" and, when
    /// [`restored_epoch`](Self::restored_epoch) is set, marks that epoch ("best weights
    /// restored"); [`plot_with`](Self::plot_with) sets both.
    #[cfg(feature = "ui")]
    pub fn plot(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.plot_with(path, &self.plot_options())
    }
    /// [`plot`](Self::plot) with its title and marked epoch set by `options`; start from
    /// [`plot_options`](Self::plot_options) to keep the default mark.
    ///
    /// ```
    /// let mut h = kiln::nn::History::default(); // as fit with EarlyStopping returns it:
    /// h.history.insert("loss".into(), vec![0.9, 0.5, 0.6]);
    /// h.restored_epoch = Some(1);
    /// let path = std::env::temp_dir().join(format!("kiln-doc-plot-with-{}.svg", std::process::id()));
    /// h.plot_with(&path, &h.plot_options().title("MLP, early stopped"))?;
    /// let svg = std::fs::read_to_string(&path).unwrap();
    /// assert!(svg.contains("MLP, early stopped") && svg.contains("best weights restored"));
    /// # std::fs::remove_file(&path).ok();
    /// # Ok::<(), kiln::Error>(())
    /// ```
    #[cfg(feature = "ui")]
    pub fn plot_with(
        &self,
        path: impl AsRef<std::path::Path>,
        options: &crate::plot::PlotOptions,
    ) -> Result<()> {
        crate::plot::plot_curves_with(path, &self.history, options)
    }
    /// What [`plot`](Self::plot) draws with: titled "training curves", with
    /// [`restored_epoch`](Self::restored_epoch) marked "best weights restored (epoch N)"
    /// (1-based, as the axis) if set.
    #[cfg(feature = "ui")]
    pub fn plot_options(&self) -> crate::plot::PlotOptions {
        let o = crate::plot::PlotOptions::new();
        match self.restored_epoch {
            Some(e) => o.mark_epoch(e, &format!("best weights restored (epoch {})", e + 1)),
            None => o,
        }
    }
}
