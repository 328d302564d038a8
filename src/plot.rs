//! Training curves as SVG, the picture `fit` draws from its history.
//!
//! Why it is built this way:
//! - **SVG, not PNG.** An SVG is a small text file that any browser or editor shows, diffs
//!   sensibly and scales without blur. It also needs no font rasteriser: plotters' font
//!   features (which need fontconfig and system fonts) stay off, so the plot works on a fresh
//!   machine or a headless CI box. Text goes into the file as `<text>` elements and the viewer
//!   renders it; plotters only estimates text sizes for layout, which is why the margins
//!   below are generous.
//! - **One panel per metric, side by side.** Loss and accuracy live on different scales, so
//!   each metric gets its own y-axis; its `val_` twin shares the panel (dashed, second colour)
//!   because the gap between the two is what one looks at to spot overfitting.
//! - **Bad values are skipped, not fatal.** A diverging run produces NaN or infinite losses;
//!   the curve breaks there and the rest is still drawn, since that is exactly the run one
//!   wants to look at.
//! - **Atomic write.** The SVG is rendered into memory, written to a temporary file and
//!   renamed over `path` (`src/atomic.rs`), so a viewer refreshing the file never sees half
//!   of it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};

/// Width of one metric panel, in pixels.
const PANEL_WIDTH: u32 = 450;
/// Height of the whole picture, title included, in pixels.
const HEIGHT: u32 = 380;
/// Colour of training curves (matplotlib's blue).
const TRAIN_COLOUR: RGBColor = RGBColor(31, 119, 180);
/// Colour of validation curves (matplotlib's orange).
const VAL_COLOUR: RGBColor = RGBColor(255, 127, 14);
/// Up to this many epochs every point gets a marker; beyond, markers would only clutter.
const MARKER_EPOCHS: usize = 30;

/// Writes an SVG of training curves: a loss panel (`loss` and `val_loss`) and, beside it, one
/// panel per other metric (e.g. `accuracy` with `val_accuracy`). `series` maps a name to one
/// value per epoch (epochs numbered from 1). Names starting with `val_` are drawn dashed and
/// in a second colour next to their training counterpart, with a legend.
///
/// Non-finite values (NaN, ±inf) are skipped and break the curve. An empty map, or one with
/// no values at all, is [`Error::Invalid`]; a file that cannot be written is [`Error::Io`]
/// (rendering into memory cannot fail on any input, so a failure there is
/// [`Error::Internal`]).
///
/// ```
/// use std::collections::BTreeMap;
/// let mut h = BTreeMap::new();
/// h.insert("loss".to_string(), vec![0.9, 0.5, 0.3]);
/// h.insert("val_loss".to_string(), vec![0.95, 0.6, 0.45]);
/// let path = std::env::temp_dir().join(format!("kiln-doc-plot-{}.svg", std::process::id()));
/// kiln::plot::plot_curves(&path, &h, "training")?;
/// assert!(std::fs::read_to_string(&path).unwrap().contains("<svg"));
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn plot_curves(
    path: impl AsRef<Path>,
    series: &BTreeMap<String, Vec<f64>>,
    title: &str,
) -> Result<()> {
    plot_curves_with(path, series, &PlotOptions::new().title(title))
}

/// How [`plot_curves_with`] draws: the title, and an epoch marked in every panel by a
/// vertical line with a legend entry (`History::plot` marks the epoch whose weights
/// `EarlyStopping` restored).
///
/// ```
/// use kiln::plot::PlotOptions;
/// let style = PlotOptions::new().title("MLP on MNIST").mark_epoch(6, "best weights (epoch 7)");
/// # let _ = style;
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PlotOptions {
    title: String,
    mark: Option<(usize, String)>,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions::new()
    }
}

impl PlotOptions {
    /// Titled "training curves", no epoch marked.
    pub fn new() -> PlotOptions {
        PlotOptions {
            title: "training curves".into(),
            mark: None,
        }
    }
    /// The picture's title.
    pub fn title(mut self, title: &str) -> Self {
        self.title = title.into();
        self
    }
    /// Marks the 0-based `epoch` (drawn at `epoch + 1`, as the x axis counts from 1) with a
    /// dotted vertical line, named `label` in each panel's legend. An epoch past the last
    /// one is not drawn.
    pub fn mark_epoch(mut self, epoch: usize, label: &str) -> Self {
        self.mark = Some((epoch, label.into()));
        self
    }
    /// No marked epoch (undoes [`mark_epoch`](Self::mark_epoch)).
    pub fn no_mark(mut self) -> Self {
        self.mark = None;
        self
    }
    /// The marked epoch and its label, if any.
    pub fn marked(&self) -> Option<(usize, &str)> {
        self.mark.as_ref().map(|(e, l)| (*e, l.as_str()))
    }
}

/// [`plot_curves`] with a title and a marked epoch ([`PlotOptions`]).
pub fn plot_curves_with(
    path: impl AsRef<Path>,
    series: &BTreeMap<String, Vec<f64>>,
    options: &PlotOptions,
) -> Result<()> {
    let path = path.as_ref();
    if series.is_empty() {
        return Err(Error::Invalid(format!(
            "plot_curves {}: no series to plot",
            path.display()
        )));
    }
    let epochs = series.values().map(Vec::len).max().unwrap_or(0);
    if epochs == 0 {
        return Err(Error::Invalid(format!(
            "plot_curves {}: every series is empty",
            path.display()
        )));
    }
    let panels = panels(series);
    let svg = render(&panels, epochs, options)
        .map_err(|e| Error::Internal(format!("{}: cannot render the plot: {e}", path.display())))?;
    crate::atomic::write(path, svg.as_bytes())
}

/// One curve: its series name, its values, and whether it is a validation curve.
type Curve<'a> = (&'a str, &'a [f64], bool);

/// One panel: its metric name and the curves drawn in it (training first, then validation).
struct Panel<'a> {
    metric: &'a str,
    curves: Vec<Curve<'a>>,
}

/// The metric a series belongs to: `val_accuracy` belongs to `accuracy`.
fn base_name(name: &str) -> (&str, bool) {
    match name.strip_prefix("val_") {
        Some(rest) if !rest.is_empty() => (rest, true),
        _ => (name, false),
    }
}

/// Groups series into panels: `loss` first, then the other metrics in name order.
fn panels(series: &BTreeMap<String, Vec<f64>>) -> Vec<Panel<'_>> {
    let mut groups: BTreeMap<&str, Vec<Curve<'_>>> = BTreeMap::new();
    for (name, values) in series {
        let (base, val) = base_name(name);
        groups
            .entry(base)
            .or_default()
            .push((name.as_str(), values.as_slice(), val));
    }
    let mut out: Vec<Panel<'_>> = groups
        .into_iter()
        .map(|(metric, mut curves)| {
            curves.sort_by_key(|c| c.2); // training before validation
            Panel { metric, curves }
        })
        .collect();
    out.sort_by_key(|p| p.metric != "loss"); // stable: the rest keep name order
    out
}

/// The finite points of a curve, split into runs where a non-finite value breaks it.
fn segments(values: &[f64]) -> Vec<Vec<(i32, f64)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        if v.is_finite() {
            cur.push((i32::try_from(i + 1).unwrap_or(i32::MAX), v));
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The y-range of a panel: the finite values, padded by 5%; all-equal values get ±10% (or ±1
/// around zero) so the line sits mid-panel; no finite values at all gives `0..1`.
fn y_range(panel: &Panel<'_>) -> Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (_, values, _) in &panel.curves {
        for &v in values.iter().filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if lo > hi {
        return 0.0..1.0;
    }
    let span = hi - lo;
    let pad = if span > 0.0 && span.is_finite() {
        span * 0.05
    } else if lo != 0.0 {
        lo.abs() * 0.1
    } else {
        1.0
    };
    let (a, b) = (lo - pad, hi + pad);
    if a.is_finite() && b.is_finite() && a < b {
        a..b
    } else {
        // Values near f64::MAX: padding overflowed, fall back to the raw extent.
        lo..if hi > lo { hi } else { lo + 1.0 }
    }
}

/// The corner of the panel with the fewest data points, where the legend hides least.
fn legend_corner(panel: &Panel<'_>, x: &Range<i32>, y: &Range<f64>) -> SeriesLabelPosition {
    // Corners as (left?, top?); the legend box covers roughly 35% × 30% of the panel.
    let corners = [
        (false, true, SeriesLabelPosition::UpperRight),
        (false, false, SeriesLabelPosition::LowerRight),
        (true, true, SeriesLabelPosition::UpperLeft),
        (true, false, SeriesLabelPosition::LowerLeft),
    ];
    let xw = f64::from(x.end - x.start).max(1.0);
    let yh = (y.end - y.start).max(f64::MIN_POSITIVE);
    let mut best = (usize::MAX, SeriesLabelPosition::UpperRight);
    for (left, top, pos) in corners {
        let mut n = 0;
        for (_, values, _) in &panel.curves {
            for (i, &v) in values.iter().enumerate() {
                if !v.is_finite() {
                    continue;
                }
                let fx = (i as f64 + 1.0 - f64::from(x.start)) / xw;
                let fy = (v - y.start) / yh;
                let in_x = if left { fx <= 0.4 } else { fx >= 0.6 };
                let in_y = if top { fy >= 0.65 } else { fy <= 0.35 };
                n += usize::from(in_x && in_y);
            }
        }
        if n < best.0 {
            best = (n, pos);
        }
    }
    best.1
}

/// Tick labels with just enough decimals for the axis span: plotters places at most 6 labels,
/// so ticks are at least `span / 8` apart and that many decimals tell neighbours apart.
fn format_tick(v: f64, span: f64) -> String {
    let step = span / 8.0;
    if v.abs() >= 1e6 || step.is_nan() || step < 1e-6 {
        return format!("{v:.2e}");
    }
    let decimals = (-step.log10().floor()).clamp(0.0, 8.0) as usize;
    format!("{v:.decimals$}")
}

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Renders the panels into an SVG string.
fn render(panels: &[Panel<'_>], epochs: usize, options: &PlotOptions) -> DrawResult<String> {
    let title = options.title.as_str();
    let mark = options.mark.as_ref().filter(|(e, _)| *e < epochs);
    let n = u32::try_from(panels.len()).unwrap_or(u32::MAX).max(1);
    let width = PANEL_WIDTH.saturating_mul(n);
    let last = i32::try_from(epochs).unwrap_or(i32::MAX);
    // One epoch: centre the single point in 0..2 rather than a zero-width range.
    let x = if last <= 1 { 0..2 } else { 1..last };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let body = root.titled(title, ("sans-serif", 22).into_font().color(&BLACK))?;
        let areas = body.split_evenly((1, panels.len().max(1)));
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, panel, x.clone(), epochs, mark)?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// Draws one metric's panel: axes, curves, markers and legend.
fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    panel: &Panel<'_>,
    x: Range<i32>,
    epochs: usize,
    mark: Option<&(usize, String)>,
) -> DrawResult<()> {
    let y = y_range(panel);
    let span = y.end - y.start;
    let mut chart = ChartBuilder::on(area)
        .margin_top(8)
        .margin_right(18)
        .margin_left(8)
        .margin_bottom(6)
        .x_label_area_size(42)
        .y_label_area_size(68)
        .build_cartesian_2d(x.clone(), y.clone())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(panel.metric)
        .x_labels(epochs.clamp(2, 10))
        .y_labels(6)
        .x_label_formatter(&|v| v.to_string())
        .y_label_formatter(&|v| format_tick(*v, span))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .draw()?;

    for &(name, values, val) in &panel.curves {
        let colour = if val { VAL_COLOUR } else { TRAIN_COLOUR };
        let style = ShapeStyle::from(&colour).stroke_width(2);
        // An empty series carries the legend entry, so a curve with no finite value (or one
        // broken into pieces) still appears exactly once in the legend.
        chart
            .draw_series(LineSeries::new(std::iter::empty::<(i32, f64)>(), style))?
            .label(name)
            .legend(move |(lx, ly)| {
                // Dashed validation entries show a gap; training entries are one solid stroke.
                let (a, b) = if val { (8, 13) } else { (10, 10) };
                EmptyElement::at((lx, ly))
                    + PathElement::new(vec![(0, 0), (a, 0)], style)
                    + PathElement::new(vec![(b, 0), (20, 0)], style)
            });
        for seg in segments(values) {
            if val {
                chart.draw_series(DashedLineSeries::new(seg.clone(), 7, 4, style))?;
            } else {
                chart.draw_series(LineSeries::new(seg.clone(), style))?;
            }
            if epochs <= MARKER_EPOCHS || seg.len() == 1 {
                chart.draw_series(
                    seg.iter()
                        .map(|&p| Circle::new(p, 3, ShapeStyle::from(&colour).filled())),
                )?;
            }
        }
    }
    if let Some((epoch, label)) = mark {
        let at = i32::try_from(epoch + 1).unwrap_or(i32::MAX);
        let style = ShapeStyle::from(&BLACK.mix(0.55)).stroke_width(1);
        let line = vec![(at, y.start), (at, y.end)];
        chart
            .draw_series(DashedLineSeries::new(line, 3, 3, style))?
            .label(label.as_str())
            .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 20, ly)], style));
    }
    chart
        .configure_series_labels()
        .position(legend_corner(panel, &x, &y))
        .margin(10)
        .legend_area_size(26)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_break_at_non_finite() {
        let s = segments(&[1.0, f64::NAN, 2.0, 3.0, f64::INFINITY]);
        assert_eq!(s, vec![vec![(1, 1.0)], vec![(3, 2.0), (4, 3.0)]]);
    }

    #[test]
    fn y_range_pads_flat_and_empty() {
        let v = [2.0, 2.0];
        let p = Panel {
            metric: "m",
            curves: vec![("m", &v, false)],
        };
        let r = y_range(&p);
        assert!(r.start < 2.0 && r.end > 2.0);
        let z = [0.0];
        let p = Panel {
            metric: "m",
            curves: vec![("m", &z, false)],
        };
        assert_eq!(y_range(&p), -1.0..1.0);
        let nan = [f64::NAN];
        let p = Panel {
            metric: "m",
            curves: vec![("m", &nan, false)],
        };
        assert_eq!(y_range(&p), 0.0..1.0);
    }

    #[test]
    fn tick_decimals_follow_span() {
        assert_eq!(format_tick(0.7, 0.33), "0.70");
        assert_eq!(format_tick(0.4, 1.0), "0.4");
        assert_eq!(format_tick(120.0, 300.0), "120");
        assert_eq!(format_tick(2e7, 1e7), "2.00e7");
    }

    #[test]
    fn loss_panel_first() {
        let mut m = BTreeMap::new();
        for k in ["accuracy", "val_accuracy", "loss", "val_loss", "auc"] {
            m.insert(k.to_string(), vec![1.0]);
        }
        let names: Vec<_> = panels(&m).iter().map(|p| p.metric).collect();
        assert_eq!(names, ["loss", "accuracy", "auc"]);
    }
}
