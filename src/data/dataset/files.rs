//! Datasets from files: CSV streamed record by record, MNIST's IDX files.

use super::{Dataset, Item, ItemIter};
use crate::array::Array;
use crate::data::csv::{column, number, CsvOptions, Records};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Which columns of a CSV file are features and which one is the label.
struct Columns {
    features: Vec<usize>,
    label: Option<usize>,
}

impl Columns {
    fn of(path: &Path, header: &[String], label: Option<&str>, ignore: &[String]) -> Result<Self> {
        let label = label.map(|l| column(path, header, l)).transpose()?;
        let mut skip: Vec<usize> = label.into_iter().collect();
        for name in ignore {
            skip.push(column(path, header, name)?);
        }
        let features = (0..header.len()).filter(|c| !skip.contains(c)).collect();
        Ok(Columns { features, label })
    }
}

impl Dataset {
    /// A CSV file, streamed: one item per row, read when it is pulled, so a file of any
    /// size runs in constant memory. Every column but `label_column` and `ignore` is an
    /// `f32` feature (`x: f32 [features]`); the label (`y: i32 []`) must be an integer
    /// class index, since numbering string classes needs the whole file first
    /// ([`csv_to_features`](crate::data::csv_to_features) does that). `None` as the label gives
    /// items of features only (for `predict`).
    ///
    /// The header is read here, so a missing file or an unknown column is an error now; a
    /// bad cell (ragged row, non-numeric value) is an error item naming its line and column
    /// when the iteration reaches it.
    ///
    /// ```
    /// use kiln::data::{CsvOptions, Dataset};
    /// let path = std::env::temp_dir().join(format!("kiln-doc-ds-{}.csv", std::process::id()));
    /// std::fs::write(&path, "a;b;class\n1;2;0\n3;4;1\n5;6;1\n")?;
    /// let ds = Dataset::from_csv(&path, Some("class"), &[], &CsvOptions::new().delimiter(b';'))?;
    /// let batch = ds.batch(3).iter().next().unwrap()?;
    /// assert_eq!(batch.x[0].shape(), &[3, 2]);
    /// assert_eq!(batch.y.unwrap().to_vec::<i32>()?, [0, 1, 1]);
    /// # std::fs::remove_file(&path).ok();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_csv(
        path: impl AsRef<Path>,
        label_column: Option<&str>,
        ignore: &[&str],
        opts: &CsvOptions,
    ) -> Result<Dataset> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let opts = opts.clone();
        let label = label_column.map(str::to_string);
        let ignore: Vec<String> = ignore.iter().map(|s| s.to_string()).collect();
        // Checked once now, so the mistakes a caller can fix show before any epoch.
        let header = Records::open(&path, &opts)?.header;
        Columns::of(&path, &header, label.as_deref(), &ignore)?;
        Ok(Dataset::from_source(None, true, move |_| {
            let mut rec = Records::open(&path, &opts)?;
            let cols = Columns::of(&path, &rec.header, label.as_deref(), &ignore)?;
            let path = path.clone();
            Ok(Box::new(std::iter::from_fn(move || match rec.next_row() {
                Ok(Some((row, ln))) => Some(csv_item(&path, &rec.header, &cols, &row, ln)),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            })) as ItemIter)
        }))
    }

    /// MNIST-format IDX files (an image file and its label file, gzip-compressed or plain),
    /// one item per image: `x: f32 [rows · cols]` scaled to `[0, 1]`, `y: i32 []`, as
    /// [`load_mnist_files`](crate::data::load_mnist_files) reads them (whole: IDX files are
    /// small, and gzip cannot seek).
    pub fn from_mnist_files(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<Dataset> {
        let s = super::super::load_mnist_files(images, labels)?;
        Dataset::from_arrays(s.x, s.y)
    }
}

/// One CSV row as an item.
fn csv_item(
    path: &Path,
    header: &[String],
    cols: &Columns,
    row: &[String],
    ln: usize,
) -> Result<Item> {
    let at = |c: usize| format!("line {ln}, column {} ({})", c + 1, header[c]);
    let x: Vec<f32> = cols
        .features
        .iter()
        .map(|&c| number(path, &at(c), &row[c]))
        .collect::<Result<_>>()?;
    let y = match cols.label {
        None => None,
        Some(c) => {
            let s = &row[c];
            let k = s.parse::<i32>().map_err(|_| {
                Error::invalid_file(
                    path,
                    format!(
                        "{}: the label {s:?} is not an integer class index (Dataset::from_csv \
                         streams, so it cannot number string classes: read the file with \
                         csv_to_features, then Dataset::from_arrays)",
                        at(c)
                    ),
                )
            })?;
            Some(Array::scalar(k))
        }
    };
    Ok(Item {
        x: vec![Array::new([x.len()], x)?],
        y,
        sample_weight: None,
    })
}
