//! Per-epoch progress output for `fit`, in the style of Keras.
//!
//! Why it is built this way:
//! - **Three modes, like Keras' `verbose`.** A live bar is right on a terminal and wrong in a
//!   log file (carriage returns and escape codes pile up), so [`Verbosity::auto`] picks the bar
//!   only when stderr is a terminal and one plain line per epoch otherwise.
//! - **Bar on stderr, lines on stdout.** The bar is transient decoration and must not end up in
//!   redirected output; the per-epoch lines are the run's record, so they go to stdout where
//!   `> log.txt` captures them, in bar mode too: a finished bar is cleared and its epoch's
//!   line printed to stdout in its place (Keras prints to stdout).
//! - **One metric format.** The running bar and the finished line both write
//!   `loss: 0.2345 - accuracy: 0.9312`, so a value reads the same while and after it is
//!   computed; the bar shows them from the first step, and says `validating` while the
//!   validation pass runs.
//! - **A finished line fits 100 columns.** It gives the epoch's time Keras' way (`3s 6ms/step`,
//!   or `us/step` below a millisecond), and when the metrics would run past 100 columns the
//!   validation ones continue on a second, indented line (metric names long enough to pass
//!   100 columns on their own still do).
//! - **Cheap per step.** [`Progress::step`] runs after every batch, inside the training loop.
//!   Silent and line modes do nothing there. Bar mode moves the position (an atomic store)
//!   and rebuilds the metrics message at most every [`MESSAGE_INTERVAL`]; indicatif itself
//!   limits how often the terminal is redrawn.
//! - **Never panics.** Output errors (a closed pipe, a full disk) are ignored: losing a progress
//!   line must not lose a training run.
//! - **The bar is optional.** It needs indicatif, which sits behind the default-on `ui` cargo
//!   feature. Without the feature there is no bar: [`Verbosity::auto`] picks lines, and
//!   [`Verbosity::Bar`] prints the same per-epoch lines as [`Verbosity::Lines`], so an embedder
//!   that builds kiln with `default-features = false` keeps every call working.

#[cfg(feature = "ui")]
use std::io::IsTerminal;
use std::io::Write;
#[cfg(feature = "ui")]
use std::time::{Duration, Instant};

#[cfg(feature = "ui")]
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A live bar: indicatif's with the `ui` feature; without it no bar can exist.
#[cfg(feature = "ui")]
type Bar = ProgressBar;
#[cfg(not(feature = "ui"))]
type Bar = std::convert::Infallible;

/// The least time between two rebuilds of the bar's metrics message.
#[cfg(feature = "ui")]
const MESSAGE_INTERVAL: Duration = Duration::from_millis(100);

/// Bar layout while an epoch runs.
#[cfg(feature = "ui")]
const RUNNING_TEMPLATE: &str = "{prefix} [{bar:30}] {pos}/{len} ETA {eta} {msg}";

/// How much `fit` reports while it trains; Keras' `verbose=0`, `1` and `2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verbosity {
    /// Nothing at all (`verbose=0`).
    Silent,
    /// A live progress bar per epoch on stderr (`verbose=1`); without the `ui` feature, the
    /// same lines as [`Verbosity::Lines`].
    Bar,
    /// One line per epoch on stdout (`verbose=2`).
    Lines,
}

impl Verbosity {
    /// [`Verbosity::Bar`] when stderr is a terminal, [`Verbosity::Lines`] otherwise (a pipe,
    /// a log file, CI, or a build without the `ui` feature).
    pub(crate) fn auto() -> Verbosity {
        #[cfg(feature = "ui")]
        if std::io::stderr().is_terminal() {
            return Verbosity::Bar;
        }
        Verbosity::Lines
    }
}

/// Reports a training run's progress, epoch by epoch, in the chosen [`Verbosity`]: `fit`
/// calls `begin_epoch`, then `step` after every batch, then `end_epoch` with the epoch's logs.
#[derive(Debug)]
pub(crate) struct Progress {
    verbosity: Verbosity,
    epochs: usize,
    #[cfg(feature = "ui")]
    steps_per_epoch: usize,
    /// Where bars draw; `None` means stderr (made fresh per epoch).
    #[cfg(feature = "ui")]
    target: Option<fn() -> ProgressDrawTarget>,
    bar: Option<Bar>,
    #[cfg(feature = "ui")]
    last_message: Option<Instant>,
}

impl Progress {
    /// A reporter for `epochs` epochs of `steps_per_epoch` batches each (0 if unknown: the bar
    /// then counts batches without a length or ETA).
    pub(crate) fn new(verbosity: Verbosity, epochs: usize, steps_per_epoch: usize) -> Progress {
        #[cfg(not(feature = "ui"))]
        let _ = steps_per_epoch; // only a bar shows steps
        let verbosity = match verbosity {
            Verbosity::Bar if !cfg!(feature = "ui") => Verbosity::Lines,
            v => v,
        };
        Progress {
            verbosity,
            epochs,
            #[cfg(feature = "ui")]
            steps_per_epoch,
            #[cfg(feature = "ui")]
            target: None,
            bar: None,
            #[cfg(feature = "ui")]
            last_message: None,
        }
    }

    /// Whether [`Progress::step`] shows anything (bar mode, within an epoch), so a caller can
    /// skip computing running metrics otherwise.
    pub(crate) fn shows_steps(&self) -> bool {
        self.bar.is_some()
    }

    /// Like [`Progress::new`], with bars drawn to `target()` instead of stderr (for tests).
    #[cfg(all(test, feature = "ui"))]
    pub(crate) fn with_target(
        verbosity: Verbosity,
        epochs: usize,
        steps_per_epoch: usize,
        target: fn() -> ProgressDrawTarget,
    ) -> Progress {
        Progress {
            target: Some(target),
            ..Progress::new(verbosity, epochs, steps_per_epoch)
        }
    }

    /// Starts epoch `epoch` (0-based): in bar mode, a new bar prefixed `Epoch {epoch+1}/{epochs}`.
    pub(crate) fn begin_epoch(&mut self, epoch: usize) {
        if self.verbosity == Verbosity::Bar {
            self.start_bar(epoch);
        }
    }

    /// Reports that batch `step` (0-based) of the current epoch is done; `running` holds the
    /// running means of the metrics so far. Does nothing outside bar mode.
    pub(crate) fn step(&mut self, step: usize, running: &[(&str, f64)]) {
        if self.bar.is_some() {
            self.advance_bar(step, running);
        }
    }

    /// Marks the validation pass of the current epoch (bar mode: the message says
    /// `validating`).
    pub(crate) fn validating(&mut self) {
        if self.bar.is_some() {
            self.show_validating();
        }
    }

    /// Ends epoch `epoch` (0-based) with its final `logs` (training and validation metrics),
    /// the `seconds` it took and its training `steps`: bar mode clears the bar, and both bar
    /// and line mode print [`format_epoch_line`] to stdout.
    pub(crate) fn end_epoch(
        &mut self,
        epoch: usize,
        logs: &[(&str, f64)],
        seconds: f64,
        steps: usize,
    ) {
        if self.verbosity == Verbosity::Silent {
            return;
        }
        self.clear_bar();
        let line = format_epoch_line(epoch, self.epochs, logs, seconds, steps);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Without the `ui` feature [`Progress::new`] turns `Bar` into `Lines`, so no bar is ever
/// started and these are never reached.
#[cfg(not(feature = "ui"))]
impl Progress {
    fn start_bar(&mut self, _epoch: usize) {}
    fn advance_bar(&mut self, _step: usize, _running: &[(&str, f64)]) {}
    fn show_validating(&mut self) {}
    fn clear_bar(&mut self) {}
}

/// The bar, drawn with indicatif.
#[cfg(feature = "ui")]
impl Progress {
    /// A new bar for epoch `epoch`, prefixed `Epoch {epoch+1}/{epochs}`.
    fn start_bar(&mut self, epoch: usize) {
        if let Some(old) = self.bar.take() {
            // The previous epoch was not ended: leave its bar where it stopped.
            old.abandon();
        }
        let target = self.target.map_or_else(ProgressDrawTarget::stderr, |t| t());
        let len = (self.steps_per_epoch > 0).then_some(self.steps_per_epoch as u64);
        let bar = ProgressBar::with_draw_target(len, target);
        bar.set_style(style(RUNNING_TEMPLATE));
        bar.set_prefix(format!("Epoch {}/{}", epoch + 1, self.epochs));
        self.bar = Some(bar);
        self.last_message = None;
    }

    /// Moves the bar to `step + 1` and refreshes its metrics message when due.
    fn advance_bar(&mut self, step: usize, running: &[(&str, f64)]) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(step as u64 + 1);
        let now = Instant::now();
        let due = self
            .last_message
            .is_none_or(|t| now.duration_since(t) >= MESSAGE_INTERVAL);
        if due || step + 1 == self.steps_per_epoch {
            bar.set_message(format_metrics(running));
            self.last_message = Some(now);
        }
    }

    /// The bar's message during the validation pass.
    fn show_validating(&mut self) {
        if let Some(bar) = &self.bar {
            bar.set_message("- validating");
        }
    }

    /// Removes the bar: the epoch's line replaces it on stdout.
    fn clear_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// The bar style for `template`, falling back to indicatif's default if it were rejected.
#[cfg(feature = "ui")]
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// The widest a finished epoch line may be.
const COLUMNS: usize = 100;

/// `name: value` pairs with four decimals, joined by ` - `: the one metric format of the
/// running bar and the finished line.
fn format_metrics(logs: &[(&str, f64)]) -> String {
    logs.iter()
        .map(|(name, v)| format!("{name}: {v:.4}"))
        .collect::<Vec<_>>()
        .join(" - ")
}

/// The epoch's time as Keras gives it: whole seconds, then the time per step, `3s 6ms/step`
/// (`us/step` below a millisecond); no step part without steps.
fn format_time(seconds: f64, steps: usize) -> String {
    let total = format!("{seconds:.0}s");
    if steps == 0 {
        return total;
    }
    let per = seconds / steps as f64;
    if per >= 1e-3 {
        format!("{total} {:.0}ms/step", per * 1e3)
    } else {
        format!("{total} {:.0}us/step", per * 1e6)
    }
}

/// One epoch's summary line, as Keras prints it with `verbose=2`; `epoch` is 0-based, so
/// epoch 2 of 20 (of 40 steps) prints as
/// `Epoch 3/20 1s 31ms/step - loss: 0.2345 - val_loss: 0.2500`. A line that would be
/// wider than 100 columns puts the validation metrics on a second, indented line.
pub(crate) fn format_epoch_line(
    epoch: usize,
    epochs: usize,
    logs: &[(&str, f64)],
    seconds: f64,
    steps: usize,
) -> String {
    let head = format!(
        "Epoch {}/{} {}",
        epoch + 1,
        epochs,
        format_time(seconds, steps)
    );
    let join = |part: &[(&str, f64)]| {
        if part.is_empty() {
            String::new()
        } else {
            format!(" - {}", format_metrics(part))
        }
    };
    let line = format!("{head}{}", join(logs));
    let split = logs.iter().position(|(n, _)| n.starts_with("val_"));
    match split {
        Some(k) if k > 0 && line.chars().count() > COLUMNS => {
            let (train, val) = logs.split_at(k);
            format!(
                "{head}{}\n{:w$}{}",
                join(train),
                "",
                join(val),
                w = "Epoch ".len()
            )
        }
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_line_exact() {
        let logs = [
            ("loss", 0.2345),
            ("accuracy", 0.93124),
            ("val_loss", 0.25006),
            ("val_accuracy", 0.925),
        ];
        assert_eq!(
            format_epoch_line(2, 20, &logs, 1.234, 40),
            "Epoch 3/20 1s 31ms/step - loss: 0.2345 - accuracy: 0.9312 - val_loss: 0.2501 - \
             val_accuracy: 0.9250"
        );
        assert_eq!(format_epoch_line(0, 1, &[], 0.0, 0), "Epoch 1/1 0s");
        assert_eq!(
            format_epoch_line(0, 1, &[("loss", f64::NAN)], 12.0, 30_000),
            "Epoch 1/1 12s 400us/step - loss: NaN"
        );
    }

    /// The README's MLP line (four metrics, two-digit epochs) fits 100 columns; more metrics
    /// put the validation ones on a second line, each line within 100 columns.
    #[test]
    fn finished_lines_fit_100_columns() {
        let logs = [
            ("loss", 0.0263),
            ("accuracy", 0.9906),
            ("val_loss", 0.0647),
            ("val_accuracy", 0.9847),
        ];
        let line = format_epoch_line(13, 30, &logs, 2.55, 422);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(
            line.chars().count() <= COLUMNS,
            "{} columns: {line}",
            line.len()
        );
        let many = [
            ("loss", 0.0263),
            ("accuracy", 0.9906),
            ("top_k_categorical_accuracy", 0.999),
            ("val_loss", 0.0647),
            ("val_accuracy", 0.9847),
            ("val_top_k_categorical_accuracy", 0.998),
        ];
        let text = format_epoch_line(13, 30, &many, 125.0, 422);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("Epoch 14/30 125s 296ms/step - loss: 0.0263"),
            "{text}"
        );
        assert!(lines[1].starts_with("       - val_loss: 0.0647"), "{text}");
        assert!(lines.iter().all(|l| l.chars().count() <= COLUMNS), "{text}");
    }

    #[test]
    fn running_and_finished_metrics_share_one_format() {
        let m = format_metrics(&[("loss", 0.23454), ("accuracy", 0.93119)]);
        assert_eq!(m, "loss: 0.2345 - accuracy: 0.9312");
        let line = format_epoch_line(0, 1, &[("loss", 0.23454), ("accuracy", 0.93119)], 1.0, 1);
        assert!(line.ends_with(&m), "{line}");
    }

    fn run(p: &mut Progress, epochs: usize, steps: usize) {
        for e in 0..epochs {
            p.begin_epoch(e);
            for s in 0..steps {
                p.step(s, &[("loss", 1.0 / (s + 1) as f64), ("accuracy", 0.5)]);
            }
            p.end_epoch(e, &[("loss", 0.1), ("val_loss", 0.2)], 0.5, steps);
        }
    }

    #[test]
    fn lines_mode_runs() {
        let mut p = Progress::new(Verbosity::Lines, 2, 5);
        run(&mut p, 2, 5);
        assert!(p.bar.is_none());
    }

    #[test]
    fn silent_mode_runs() {
        let mut p = Progress::new(Verbosity::Silent, 2, 5);
        run(&mut p, 2, 5);
        assert!(p.bar.is_none());
    }

    #[test]
    #[cfg(not(feature = "ui"))]
    fn bar_mode_prints_lines_without_the_ui_feature() {
        let mut p = Progress::new(Verbosity::Bar, 2, 5);
        assert_eq!(p.verbosity, Verbosity::Lines);
        run(&mut p, 2, 5);
        assert!(p.bar.is_none() && !p.shows_steps());
        assert_eq!(Verbosity::auto(), Verbosity::Lines);
    }

    #[test]
    #[cfg(feature = "ui")]
    fn bar_mode_hidden_runs() {
        let mut p = Progress::with_target(Verbosity::Bar, 3, 50, ProgressDrawTarget::hidden);
        p.begin_epoch(0);
        for s in 0..50 {
            p.step(s, &[("loss", 0.3)]);
        }
        let bar = p.bar.clone().unwrap();
        assert_eq!(bar.position(), 50);
        assert_eq!(bar.message(), "loss: 0.3000"); // last step always refreshes the message
        assert_eq!(bar.prefix(), "Epoch 1/3");
        p.validating();
        assert_eq!(bar.message(), "- validating");
        p.end_epoch(0, &[("loss", 0.3), ("val_loss", 0.4)], 1.5, 50);
        // The bar is cleared; the epoch's line went to stdout in its place.
        assert!(bar.is_finished() && p.bar.is_none());
        // Metrics show from the first step.
        p.begin_epoch(1);
        p.step(0, &[("loss", 0.7)]);
        assert_eq!(p.bar.clone().unwrap().message(), "loss: 0.7000");
        p.end_epoch(1, &[], 0.1, 1);
        run(&mut p, 3, 50);
        // Unknown length, steps before begin_epoch, and an epoch never ended: no panic.
        let mut p = Progress::with_target(Verbosity::Bar, 2, 0, ProgressDrawTarget::hidden);
        p.step(0, &[]);
        p.begin_epoch(0);
        p.step(0, &[("loss", 1.0)]);
        p.begin_epoch(1);
        p.end_epoch(1, &[], 0.1, 0);
        p.end_epoch(1, &[], 0.1, 0);
    }
}
