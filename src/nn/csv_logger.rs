//! Training logs as files: the [`CSVLogger`] callback (one row per epoch, written as the
//! run goes, as Keras') and [`History`]'s `to_csv` and `to_json`.
//!
//! Both are written by hand: a CSV row of numbers needs only the RFC 4180 quoting of a
//! name that holds a separator or a quote, and the JSON is one object of number arrays,
//! whose only string escapes are the names'. A crate for either would be more code to
//! trust than this file. Numbers are printed as Rust prints an `f64` (the shortest text
//! that reads back to the same value); in JSON a NaN or infinity, which JSON cannot hold,
//! is `null`, and in CSV it is `nan`, `inf` or `-inf`, as Python writes them.

use super::batch::Logs;
use super::callbacks::{check_output_path, Callback, Control};
use super::history::History;
use super::model::Model;
use crate::error::{Error, Result};
use crate::train::args::ArgErrors;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

/// `v` as a CSV or JSON number (`None` for NaN and infinities).
fn number(v: f64) -> Option<String> {
    v.is_finite().then(|| format!("{v:?}"))
}

/// `v` in a CSV cell: its number, or Python's `nan`, `inf`, `-inf`.
fn csv_number(v: f64) -> String {
    number(v).unwrap_or_else(|| {
        if v.is_nan() {
            "nan".into()
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    })
}

/// `s` as a CSV cell: quoted (quotes doubled) when it holds `sep`, a quote or a line break.
fn csv_cell(s: &str, sep: char) -> String {
    if s.contains([sep, '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One CSV line: `cells` joined by `sep`, ending in a line break.
fn csv_line(cells: impl IntoIterator<Item = String>, sep: char) -> String {
    let mut line = cells.into_iter().collect::<Vec<_>>().join(&sep.to_string());
    line.push('\n');
    line
}

impl History {
    /// The history as CSV, in [`CSVLogger`]'s columns: `epoch` (0-based, as Keras writes
    /// it), then every logged name in sorted order, one row per epoch.
    ///
    /// ```
    /// use kiln::nn::History;
    /// let mut h = History::default();
    /// h.history.insert("loss".into(), vec![0.5, 0.25]);
    /// h.history.insert("accuracy".into(), vec![0.75, 1.0]);
    /// assert_eq!(h.to_csv(), "epoch,accuracy,loss\n0,0.75,0.5\n1,1.0,0.25\n");
    /// ```
    pub fn to_csv(&self) -> String {
        let names: Vec<&String> = self.history.keys().collect();
        let header =
            std::iter::once("epoch".to_string()).chain(names.iter().map(|n| csv_cell(n, ',')));
        let mut out = csv_line(header, ',');
        for e in 0..self.history.values().map(Vec::len).max().unwrap_or(0) {
            let cells = names.iter().map(|n| match self.history[*n].get(e) {
                Some(&v) => csv_number(v),
                None => "NA".into(),
            });
            out += &csv_line(std::iter::once(e.to_string()).chain(cells), ',');
        }
        out
    }

    /// The history as a JSON object of arrays, `{"accuracy": [...], "loss": [...]}` (what
    /// `json.dumps(history.history)` gives in Keras), names sorted; a NaN or infinite value
    /// is `null`, since JSON has no such numbers.
    ///
    /// ```
    /// use kiln::nn::History;
    /// let mut h = History::default();
    /// h.history.insert("loss".into(), vec![0.5, f64::NAN]);
    /// assert_eq!(h.to_json(), r#"{"loss": [0.5, null]}"#);
    /// ```
    pub fn to_json(&self) -> String {
        let fields: Vec<String> = self
            .history
            .iter()
            .map(|(k, vs)| {
                let vals: Vec<String> = vs
                    .iter()
                    .map(|&v| number(v).unwrap_or_else(|| "null".into()))
                    .collect();
                format!("{}: [{}]", json_string(k), vals.join(", "))
            })
            .collect();
        format!("{{{}}}", fields.join(", "))
    }
}

/// Writes each epoch's logs as a CSV row while `fit` runs, as Keras' `CSVLogger`: the
/// columns are `epoch` (0-based) then the logged names sorted, fixed at the first epoch; a
/// run without validation also gets the `val_` columns, filled with `NA`, as Keras does.
/// Each row is flushed at once, so the file is current if training stops.
///
/// The path is checked before the first epoch (its directory exists and takes a file), as
/// [`ModelCheckpoint`](super::ModelCheckpoint)'s is.
///
/// ```no_run
/// use kiln::nn::*;
/// use kiln::prelude::*;
/// # let (x, y) = (Array::zeros(DType::F32, [8, 4]), Array::zeros(DType::F32, [8, 1]));
/// let mut model = Sequential::new([Input::new([4]).into(), Dense::new(1).into()]);
/// model.compile(Adam::new(1e-2), Loss::MeanSquaredError, &[])?;
/// model.fit(&x, &y, FitConfig::new().epochs(5).callback(CSVLogger::new("training.csv")))?;
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug)]
pub struct CSVLogger {
    path: PathBuf,
    sep: char,
    append: bool,
    keys: Option<Vec<String>>,
    file: Option<File>,
    header: bool,
    args: ArgErrors,
}

impl CSVLogger {
    /// Writes to `path` (a file path), comma-separated, replacing the file.
    #[track_caller]
    pub fn new(path: impl Into<PathBuf>) -> CSVLogger {
        let path = path.into();
        let mut args = ArgErrors::default();
        let ok = path.file_name().is_some();
        let f = "CSVLogger::new";
        args.check(ok, f, "path", "a file path", format!("{:?}", path));
        CSVLogger {
            path,
            sep: ',',
            append: false,
            keys: None,
            file: None,
            header: true,
            args,
        }
    }
    /// The separator (not a quote or a line break).
    #[track_caller]
    pub fn separator(mut self, sep: char) -> Self {
        let ok = !matches!(sep, '"' | '\n' | '\r');
        let f = "CSVLogger::separator";
        let allowed = "a character other than a quote or a line break";
        self.args
            .check(ok, f, "separator", allowed, format!("{sep:?}"));
        self.sep = sep;
        self
    }
    /// Append to the file if it exists (its header is not written again when it has one),
    /// as a resumed run would.
    #[track_caller]
    pub fn append(mut self, on: bool) -> Self {
        self.append = on;
        self
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::io(&self.path, "CSVLogger cannot write its log", e)
    }
}

impl Callback for CSVLogger {
    /// Writes a file: rank 0 only in a distributed `fit`.
    fn root_only(&self) -> bool {
        true
    }
    /// Reports bad arguments and a path that cannot be written, then opens the file.
    fn on_train_begin(&mut self, _model: &mut Model) -> Result<()> {
        self.args.result()?;
        check_output_path("CSVLogger", &self.path)?;
        self.keys = None;
        let existing = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        self.header = !(self.append && existing > 0);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(self.append)
            .truncate(!self.append)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        self.file = Some(file);
        Ok(())
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, _model: &mut Model) -> Result<Control> {
        let sep = self.sep;
        let keys = self.keys.get_or_insert_with(|| {
            let mut keys: Vec<String> = logs.keys().cloned().collect();
            if !keys.iter().any(|k| k.starts_with("val_")) {
                let val: Vec<String> = keys.iter().map(|k| format!("val_{k}")).collect();
                keys.extend(val);
            }
            keys
        });
        let mut text = String::new();
        if std::mem::take(&mut self.header) {
            let names = keys.iter().map(|k| csv_cell(k, sep));
            text += &csv_line(std::iter::once("epoch".to_string()).chain(names), sep);
        }
        let cells = keys
            .iter()
            .map(|k| logs.get(k).map_or("NA".to_string(), |&v| csv_number(v)));
        text += &csv_line(std::iter::once(epoch.to_string()).chain(cells), sep);
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| Error::Internal("CSVLogger: no file open".into()))?;
        let r = file.write_all(text.as_bytes()).and_then(|_| file.flush());
        r.map_err(|e| self.io(e))?;
        Ok(Control::Continue)
    }

    fn on_train_end(&mut self, _model: &mut Model) -> Result<()> {
        self.file = None;
        Ok(())
    }
}
