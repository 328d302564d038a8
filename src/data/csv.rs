//! CSV: a small reader for header-plus-rows tables and their conversion to features and labels.

use crate::array::Array;
use crate::error::{Error, Result};
use std::collections::HashSet;
use std::path::Path;

/// A CSV file as text: the header and the data rows, every row as wide as the header.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Column names, from the first line.
    pub header: Vec<String>,
    /// Data rows, each with exactly `header.len()` fields.
    pub rows: Vec<Vec<String>>,
    /// The 1-based line of the file each row came from (blank lines are skipped), for errors.
    pub lines: Vec<usize>,
}

/// Splits one CSV line into fields. Fields are trimmed; a field may be double-quoted, with
/// `""` standing for a quote inside it (quoted fields may not span lines).
fn split_fields(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err(format!("unterminated quoted field {}", fields.len() + 1)),
                }
            }
            while chars.peek().is_some_and(|c| *c != ',') {
                match chars.next() {
                    Some(' ' | '\t') => {}
                    _ => {
                        return Err(format!(
                            "text after the closing quote of field {}",
                            fields.len() + 1
                        ))
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                field.push(c);
                chars.next();
            }
            field.truncate(field.trim_end().len());
        }
        fields.push(field);
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

/// Reads a comma-separated file with a header line.
///
/// Blank lines are skipped, `\r\n` line ends and a UTF-8 byte-order mark are accepted. A row
/// with fewer or more fields than the header is an error naming the file, the 1-based line
/// and the first missing (or extra) column.
pub fn read_csv(path: impl AsRef<Path>) -> Result<Table> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(path, "cannot read the CSV file", e))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut header: Option<Vec<String>> = None;
    let (mut rows, mut lines) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        let ln = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields =
            split_fields(line).map_err(|m| Error::invalid_file(path, format!("line {ln}: {m}")))?;
        let Some(h) = &header else {
            header = Some(fields);
            continue;
        };
        if fields.len() < h.len() {
            let c = fields.len();
            return Err(Error::invalid_file(
                path,
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
                path,
                format!(
                    "line {ln}, column {}: extra field (the row has {} fields, the header {})",
                    h.len() + 1,
                    fields.len(),
                    h.len()
                ),
            ));
        }
        rows.push(fields);
        lines.push(ln);
    }
    let header = header.ok_or_else(|| Error::invalid_file(path, "empty file: no header line"))?;
    Ok(Table {
        header,
        rows,
        lines,
    })
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
pub fn csv_to_features(
    path: impl AsRef<Path>,
    label_column: &str,
    ignore: &[&str],
) -> Result<(Array, Array, Vec<String>)> {
    let path = path.as_ref();
    let p = path.display();
    let t = read_csv(path)?;
    let find = |name: &str| {
        t.header.iter().position(|h| h == name).ok_or_else(|| {
            Error::invalid(format!(
                "{p}: no column named {name:?}; the header has {:?}",
                t.header
            ))
        })
    };
    let label = find(label_column)?;
    let mut skip = HashSet::from([label]);
    for name in ignore {
        skip.insert(find(name)?);
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
            let s = row[c].as_str();
            if s.is_empty() {
                return Err(Error::invalid_file(
                    path,
                    format!("{}: missing value (empty field)", at(r, c)),
                ));
            }
            match s.parse::<f32>() {
                Ok(v) if v.is_finite() => x.push(v),
                _ => {
                    return Err(Error::invalid_file(
                        path,
                        format!("{}: not a finite number: {s:?}", at(r, c)),
                    ))
                }
            }
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
