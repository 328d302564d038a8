//! CSV: header-plus-rows tables read with the `csv` crate, and their conversion to features
//! and labels.
//!
//! Why the `csv` crate rather than a hand-written splitter: the reader this replaced took
//! commas only and could not read a quoted field spanning lines, both of which real files
//! have (European exports use `;`; free-text columns hold newlines). The crate handles
//! RFC 4180 quoting, any one-byte delimiter and `\r\n` ends, and streams records, which
//! [`Dataset::from_csv`](super::Dataset::from_csv) needs. What kiln adds is the checking
//! the crate leaves to its caller, in kiln's error style: a ragged row names its line and
//! the first missing (or extra) column, and a non-numeric cell its line, column and text.

use crate::array::Array;
use crate::error::{Error, Result};
use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// How to read a CSV file: its delimiter and whether the first record is a header.
///
/// ```
/// use kiln::data::CsvOptions;
/// let european = CsvOptions::new().delimiter(b';');
/// let headless = CsvOptions::new().has_header(false); // columns named "0", "1", ...
/// # let _ = (european, headless);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    delimiter: u8,
    has_header: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions::new()
    }
}

impl CsvOptions {
    /// Commas, and a header line: what [`read_csv`] reads.
    pub fn new() -> CsvOptions {
        CsvOptions {
            delimiter: b',',
            has_header: true,
        }
    }
    /// The field delimiter (one byte: `b';'`, `b'\t'`).
    pub fn delimiter(mut self, d: u8) -> CsvOptions {
        self.delimiter = d;
        self
    }
    /// Whether the first record names the columns (default true). Without a header the
    /// columns are named by their 0-based position, `"0"`, `"1"`, ..., as pandas does.
    pub fn has_header(mut self, on: bool) -> CsvOptions {
        self.has_header = on;
        self
    }
}

/// A CSV file as text: the header and the data rows, every row as wide as the header.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Column names, from the first line.
    pub header: Vec<String>,
    /// Data rows, each with exactly `header.len()` fields.
    pub rows: Vec<Vec<String>>,
    /// The 1-based line of the file each row starts on (blank lines are skipped), for
    /// errors.
    pub lines: Vec<usize>,
}

/// The file under the `csv` reader, noting where each line break is as bytes go by, so a
/// record's byte offset gives its 1-based line. (The crate's own line count skips blank
/// lines, which would make messages point at the wrong line.) Only the breaks the reader
/// has read ahead of the records are held: a buffer's worth, whatever the file's size.
struct Breaks {
    file: std::fs::File,
    /// Offset of the next byte to read.
    at: u64,
    /// Offsets of the line breaks read but not yet counted.
    pending: Arc<Mutex<VecDeque<u64>>>,
}

impl Read for Breaks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        if let Ok(mut p) = self.pending.lock() {
            for (i, _) in buf[..n].iter().enumerate().filter(|(_, &b)| b == b'\n') {
                p.push_back(self.at + i as u64);
            }
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// A streaming reader of checked records: the header, then rows as wide as it.
pub(crate) struct Records {
    path: std::path::PathBuf,
    reader: csv::Reader<Breaks>,
    /// The line breaks the reader has seen and not yet counted.
    breaks: Arc<Mutex<VecDeque<u64>>>,
    /// Line breaks before the last record counted so far.
    lines_before: usize,
    /// The column names.
    pub header: Vec<String>,
    /// A first data record read while looking for the header (no header).
    pending: Option<(Vec<String>, usize)>,
}

impl Records {
    /// Opens `path` and reads its header (or names the columns when there is none).
    pub(crate) fn open(path: &Path, opts: &CsvOptions) -> Result<Records> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::io(path, "cannot read the CSV file", e))?;
        let breaks = Arc::new(Mutex::new(VecDeque::new()));
        let reader = csv::ReaderBuilder::new()
            .delimiter(opts.delimiter)
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::None)
            .from_reader(Breaks {
                file,
                at: 0,
                pending: breaks.clone(),
            });
        let mut r = Records {
            path: path.to_path_buf(),
            reader,
            breaks,
            lines_before: 0,
            header: vec![],
            pending: None,
        };
        let Some((first, line)) = r.next_raw()? else {
            return Err(Error::invalid_file(path, "empty file: no header line"));
        };
        if opts.has_header {
            r.header = first;
        } else {
            r.header = (0..first.len()).map(|i| i.to_string()).collect();
            r.pending = Some((first, line));
        }
        Ok(r)
    }

    /// The next non-blank record and its 1-based line, unchecked.
    fn next_raw(&mut self) -> Result<Option<(Vec<String>, usize)>> {
        let mut rec = csv::StringRecord::new();
        loop {
            let more = self
                .reader
                .read_record(&mut rec)
                .map_err(|e| self.error(e))?;
            if !more {
                return Ok(None);
            }
            // The crate's record start includes blank lines it skipped, so count from
            // the record's end: its last line, less the breaks inside quoted fields.
            let end = self.reader.position().byte();
            let inside: usize = rec.iter().map(|f| f.matches('\n').count()).sum();
            let line = self.last_line(end).saturating_sub(inside).max(1);
            if rec.iter().all(|f| f.trim().is_empty()) && rec.len() <= 1 {
                continue; // a blank line (or one of spaces)
            }
            let mut fields: Vec<String> = rec.iter().map(|f| f.trim().to_string()).collect();
            if line == 1 && self.header.is_empty() {
                if let Some(f) = fields.first_mut() {
                    if let Some(rest) = f.strip_prefix('\u{feff}') {
                        *f = rest.trim_start().to_string(); // a UTF-8 byte-order mark
                    }
                }
            }
            return Ok(Some((fields, line)));
        }
    }

    /// The 1-based line of byte `offset` (offsets only grow from call to call).
    fn line_at(&mut self, offset: u64) -> usize {
        if let Ok(mut p) = self.breaks.lock() {
            while p.front().is_some_and(|&b| b < offset) {
                p.pop_front();
                self.lines_before += 1;
            }
        }
        self.lines_before + 1
    }

    /// The 1-based line a record ending at byte `end` (after its line break, if any) ends
    /// on; `end` only grows from call to call.
    fn last_line(&mut self, end: u64) -> usize {
        let mut terminated = false;
        if let Ok(mut p) = self.breaks.lock() {
            while let Some(&b) = p.front().filter(|&&b| b < end) {
                p.pop_front();
                self.lines_before += 1;
                terminated = b + 1 == end;
            }
        }
        self.lines_before + 1 - usize::from(terminated)
    }

    /// The next data row and its line, checked to be as wide as the header.
    pub(crate) fn next_row(&mut self) -> Result<Option<(Vec<String>, usize)>> {
        let Some((fields, ln)) = (match self.pending.take() {
            Some(p) => Some(p),
            None => self.next_raw()?,
        }) else {
            return Ok(None);
        };
        let h = &self.header;
        if fields.len() < h.len() {
            let c = fields.len();
            return Err(Error::invalid_file(
                &self.path,
                format!(
                    "line {ln}, column {} ({}): missing field (the row has {} fields, the header {})",
                    c + 1,
                    h[c],
                    fields.len(),
                    h.len()
                ),
            ));
        }
        if fields.len() > h.len() {
            return Err(Error::invalid_file(
                &self.path,
                format!(
                    "line {ln}, column {}: extra field (the row has {} fields, the header {})",
                    h.len() + 1,
                    fields.len(),
                    h.len()
                ),
            ));
        }
        Ok(Some((fields, ln)))
    }

    /// A `csv` crate error as kiln's: I/O as [`Error::Io`], anything else (invalid UTF-8)
    /// as [`Error::InvalidFile`] with its line.
    fn error(&mut self, e: csv::Error) -> Error {
        let line = e.position().map(|p| self.line_at(p.byte()));
        match e.into_kind() {
            csv::ErrorKind::Io(io) => Error::io(&self.path, "cannot read the CSV file", io),
            kind => {
                let what = match kind {
                    csv::ErrorKind::Utf8 { err, .. } => format!("not UTF-8 text ({err})"),
                    other => format!("{other:?}"),
                };
                let at = line.map_or(String::new(), |l| format!("line {l}: "));
                Error::invalid_file(&self.path, format!("{at}{what}"))
            }
        }
    }
}

/// Reads a comma-separated file with a header line: [`read_csv_with`] and
/// [`CsvOptions::new`].
///
/// Blank lines are skipped, `\r\n` line ends and a UTF-8 byte-order mark are accepted,
/// fields are trimmed, and a double-quoted field may hold the delimiter, `""` for a quote,
/// and line breaks. A row with fewer or more fields than the header is an error naming the
/// file, the 1-based line and the first missing (or extra) column.
pub fn read_csv(path: impl AsRef<Path>) -> Result<Table> {
    read_csv_with(path, &CsvOptions::new())
}

/// Reads a CSV file as [`read_csv`] does, with another delimiter or without a header.
///
/// ```
/// use kiln::data::{read_csv_with, CsvOptions};
/// let path = std::env::temp_dir().join(format!("kiln-doc-{}.csv", std::process::id()));
/// std::fs::write(&path, "a;note\n1,5;\"two\nlines\"\n")?;
/// let t = read_csv_with(&path, &CsvOptions::new().delimiter(b';'))?;
/// assert_eq!(t.rows, [["1,5", "two\nlines"]]);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_csv_with(path: impl AsRef<Path>, opts: &CsvOptions) -> Result<Table> {
    let mut r = Records::open(path.as_ref(), opts)?;
    let (mut rows, mut lines) = (Vec::new(), Vec::new());
    while let Some((row, ln)) = r.next_row()? {
        rows.push(row);
        lines.push(ln);
    }
    Ok(Table {
        header: r.header,
        rows,
        lines,
    })
}

/// The number in one feature cell, or an error naming its place (`at`) and text.
pub(crate) fn number(path: &Path, at: &str, s: &str) -> Result<f32> {
    if s.is_empty() {
        return Err(Error::invalid_file(
            path,
            format!("{at}: missing value (empty field)"),
        ));
    }
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(Error::invalid_file(
            path,
            format!("{at}: not a finite number: {s:?}"),
        )),
    }
}

/// The index of column `name` in `header`, or an error listing the header.
pub(crate) fn column(path: &Path, header: &[String], name: &str) -> Result<usize> {
    header.iter().position(|h| h == name).ok_or_else(|| {
        Error::invalid(format!(
            "{}: no column named {name:?}; the header has {header:?}",
            path.display()
        ))
    })
}

/// Reads a CSV file as numeric features and class labels: [`csv_to_features_with`] with
/// [`CsvOptions::new`] (commas, a header).
pub fn csv_to_features(
    path: impl AsRef<Path>,
    label_column: &str,
    ignore: &[&str],
) -> Result<(Array, Array, Vec<String>)> {
    csv_to_features_with(path, label_column, ignore, &CsvOptions::new())
}

/// Reads a CSV file as numeric features and class labels.
///
/// Every column except `label_column` and those named in `ignore` is a feature and must hold
/// a finite number in every row. The label column's distinct strings are the classes, in
/// sorted order (numerically if they all parse as numbers, else lexicographically), and each
/// row's label becomes the index of its class.
///
/// Returns `x: f32 [rows, features]`, `y: i32 [rows]` and the class names. A missing or
/// non-numeric value is an error naming the file, the 1-based line and the column; a
/// `label_column` or `ignore` name that is not in the header is an [`Error::Invalid`].
///
/// `ignore` is there for columns that must not become features, such as an id column or a
/// second encoding of the label (iris.csv has both `label` and `species`).
pub fn csv_to_features_with(
    path: impl AsRef<Path>,
    label_column: &str,
    ignore: &[&str],
    opts: &CsvOptions,
) -> Result<(Array, Array, Vec<String>)> {
    let path = path.as_ref();
    let t = read_csv_with(path, opts)?;
    let label = column(path, &t.header, label_column)?;
    let mut skip = HashSet::from([label]);
    for name in ignore {
        skip.insert(column(path, &t.header, name)?);
    }
    let features: Vec<usize> = (0..t.header.len()).filter(|c| !skip.contains(c)).collect();
    if t.rows.is_empty() {
        return Err(Error::invalid_file(path, "no data rows after the header"));
    }

    let at =
        |r: usize, c: usize| format!("line {}, column {} ({})", t.lines[r], c + 1, t.header[c]);
    let mut x = Vec::with_capacity(t.rows.len() * features.len());
    for (r, row) in t.rows.iter().enumerate() {
        for &c in &features {
            x.push(number(path, &at(r, c), &row[c])?);
        }
        if row[label].is_empty() {
            return Err(Error::invalid_file(
                path,
                format!("{}: missing label (empty field)", at(r, label)),
            ));
        }
    }

    let mut classes: Vec<String> = t.rows.iter().map(|r| r[label].clone()).collect();
    classes.sort_unstable();
    classes.dedup();
    let numeric: Option<Vec<f64>> = classes.iter().map(|c| c.parse::<f64>().ok()).collect();
    if let Some(keys) = numeric {
        let mut pairs: Vec<(f64, String)> = keys.into_iter().zip(classes).collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        classes = pairs.into_iter().map(|(_, c)| c).collect();
    }
    let mut y = Vec::with_capacity(t.rows.len());
    for row in &t.rows {
        // Every label is in `classes` by construction.
        let k = classes.iter().position(|c| *c == row[label]).unwrap_or(0);
        y.push(k as i32);
    }
    let n = t.rows.len();
    Ok((
        Array::new([n, features.len()], x)?,
        Array::new([n], y)?,
        classes,
    ))
}

/// Loads the shipped iris file (`data/iris/iris.csv`): `x: f32 [150, 4]` (sepal length and
/// width, petal length and width, in cm), `y: i32 [150]` class indices and the class names
/// `["setosa", "versicolor", "virginica"]`.
///
/// The label comes from the `species` column; the redundant numeric `label` column is left out
/// of the features. Any CSV with these two columns and numeric feature columns loads.
pub fn load_iris(path: impl AsRef<Path>) -> Result<(Array, Array, Vec<String>)> {
    csv_to_features(path, "species", &["label"])
}
