//! CSV through the `csv` crate: the two cases the hand-written reader failed (a `;`
//! delimiter, a quoted field spanning lines), headers, and bad input named by line and
//! column, for `read_csv`, `csv_to_features` and the streaming `Dataset::from_csv`.

use kiln::data::{self, CsvOptions, Dataset};
use std::path::PathBuf;

/// A temporary file holding `text`, removed when dropped.
struct Temp(PathBuf);

impl Temp {
    fn new(name: &str, text: &str) -> Temp {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let k = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("kiln-csv-{}-{k}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        Temp(p)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_semicolon_delimiter_reads() {
    let f = Temp::new("semi.csv", "a;b;label\n1.5;2;x\n3;4,5;y\n");
    let semi = CsvOptions::new().delimiter(b';');
    let t = data::read_csv_with(&f.0, &semi).unwrap();
    assert_eq!(t.header, ["a", "b", "label"]);
    assert_eq!(t.rows, [["1.5", "2", "x"], ["3", "4,5", "y"]]);
    let (x, y, names) = data::csv_to_features_with(&f.0, "label", &["b"], &semi).unwrap();
    assert_eq!(x.to_vec::<f32>().unwrap(), [1.5, 3.0]);
    assert_eq!(y.to_vec::<i32>().unwrap(), [0, 1]);
    assert_eq!(names, ["x", "y"]);
    // Read with commas, the same file is one column wide: its rows are not ragged, but
    // its cells are not numbers.
    let e = data::csv_to_features(&f.0, "a;b;label", &[]).unwrap_err();
    assert!(matches!(e, kiln::Error::InvalidFile { .. }), "{e:?}");
}

#[test]
fn a_quoted_field_may_span_lines_and_rows_keep_their_first_line() {
    let f = Temp::new(
        "multi.csv",
        "v,note,label\n1,\"first line\nsecond line, with a comma\",a\n2,\"say \"\"hi\"\"\",b\n\n3,plain,a\n",
    );
    let t = data::read_csv(&f.0).unwrap();
    assert_eq!(t.rows.len(), 3);
    assert_eq!(t.rows[0][1], "first line\nsecond line, with a comma");
    assert_eq!(t.rows[1][1], "say \"hi\"");
    // Line numbers are where each row starts: the quoted newline moves the next rows down.
    assert_eq!(t.lines, [2, 4, 6]);
    let (x, y, names) = data::csv_to_features(&f.0, "label", &["note"]).unwrap();
    assert_eq!(x.to_vec::<f32>().unwrap(), [1., 2., 3.]);
    assert_eq!(y.to_vec::<i32>().unwrap(), [0, 1, 0]);
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn without_a_header_columns_are_numbered() {
    let f = Temp::new("nohead.csv", "1,2,0\n3,4,1\n");
    let opts = CsvOptions::new().has_header(false);
    let t = data::read_csv_with(&f.0, &opts).unwrap();
    assert_eq!(t.header, ["0", "1", "2"]);
    assert_eq!(t.rows.len(), 2);
    let (x, y, _) = data::csv_to_features_with(&f.0, "2", &[], &opts).unwrap();
    assert_eq!(x.shape(), &[2, 2]);
    assert_eq!(y.to_vec::<i32>().unwrap(), [0, 1]);
}

#[test]
fn ragged_rows_and_bad_cells_name_line_and_column() {
    let f = Temp::new("short.csv", "a,b,label\n1,2,x\n\n3,4\n");
    let e = data::read_csv(&f.0).unwrap_err().to_string();
    assert!(
        e.contains("short.csv: line 4, column 3 (label): missing field"),
        "{e}"
    );
    let f = Temp::new("long.csv", "a,label\n1,x\n1,x,9\n");
    let e = data::read_csv(&f.0).unwrap_err().to_string();
    assert!(
        e.contains("line 3, column 3: extra field (the row has 3 fields, the header 2)"),
        "{e}"
    );
    let f = Temp::new("text.csv", "a,b,label\n1,2,x\n3,\"4\nfour\",y\n");
    let e = data::csv_to_features(&f.0, "label", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 3, column 2 (b): not a finite number: \"4\\nfour\""),
        "{e}"
    );
    let f = Temp::new("bytes.csv", "a,label\n1,x\n");
    std::fs::write(&f.0, b"a,label\n\xff\xfe,x\n").unwrap();
    let e = data::read_csv(&f.0).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("UTF-8"), "{e}");
    let f = Temp::new("empty.csv", "");
    let e = data::read_csv(&f.0).unwrap_err().to_string();
    assert!(e.contains("no header line"), "{e}");
}

#[test]
fn a_streamed_csv_dataset_reads_rows_lazily_and_reports_bad_rows_when_reached() {
    let f = Temp::new(
        "stream.csv",
        "id;f1;f2;class\n7;0,5;1;0\n8;2;3;2\n9;4;\"5\";1\n10;6;oops;1\n",
    );
    let opts = CsvOptions::new().delimiter(b';');
    // "0,5" is not a number for kiln (no locale): the error names it when reached.
    let ds = Dataset::from_csv(&f.0, Some("class"), &["id"], &opts).unwrap();
    let items: Vec<_> = ds.iter().collect();
    assert_eq!(items.len(), 4);
    let e = items[0].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("line 2, column 2 (f1): not a finite number: \"0,5\""),
        "{e}"
    );
    let second = items[1].as_ref().unwrap();
    assert_eq!(second.x[0].to_vec::<f32>().unwrap(), [2., 3.]);
    assert_eq!(second.y.as_ref().unwrap().scalar_value::<i32>().unwrap(), 2);
    let e = items[3].as_ref().unwrap_err().to_string();
    assert!(e.contains("line 5, column 3 (f2)"), "{e}");
    // Unknown columns and missing files fail at once; string labels say what to use.
    let e = Dataset::from_csv(&f.0, Some("nope"), &[], &opts).unwrap_err();
    assert!(e.to_string().contains("no column named \"nope\""), "{e}");
    assert!(Dataset::from_csv(f.0.with_extension("missing"), None, &[], &opts).is_err());
    let g = Temp::new("strlabel.csv", "a,label\n1,cat\n");
    let ds = Dataset::from_csv(&g.0, Some("label"), &[], &CsvOptions::new()).unwrap();
    let e = ds.iter().next().unwrap().unwrap_err().to_string();
    assert!(
        e.contains("not an integer class index") && e.contains("csv_to_features"),
        "{e}"
    );
    // Batched, the rows stack.
    let h = Temp::new("ok.csv", "a,b,y\n1,2,0\n3,4,1\n5,6,1\n");
    let ds = Dataset::from_csv(&h.0, Some("y"), &[], &CsvOptions::new()).unwrap();
    let b = ds.batch(2).iter().next().unwrap().unwrap();
    assert_eq!(b.x[0].to_vec::<f32>().unwrap(), [1., 2., 3., 4.]);
    assert_eq!(b.y.unwrap().to_vec::<i32>().unwrap(), [0, 1]);
}
