//! Tests for `kiln::data`: the shipped datasets load correctly, bad files give clear errors,
//! and preprocessing, splitting and batching behave as documented.

use flate2::write::GzEncoder;
use flate2::Compression;
use kiln::data::{self, MinMax, Standard};
use kiln::{Array, Error};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn iris_path() -> PathBuf {
    root().join("data/iris/iris.csv")
}

fn mnist(name: &str) -> PathBuf {
    root().join("data/mnist").join(name)
}

/// A fresh temp file path with a unique name, removed when dropped.
struct Temp(PathBuf);

impl Temp {
    fn new(name: &str, bytes: &[u8]) -> Temp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let k = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("kiln-data-{}-{k}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        Temp(p)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The message of a file error: [`Error::InvalidFile`] (the contents are wrong) or
/// [`Error::Io`] (the OS refused), which both name the path.
fn io_msg<T: std::fmt::Debug>(r: kiln::Result<T>) -> String {
    match r {
        Err(e @ (Error::InvalidFile { .. } | Error::Io { .. })) => e.to_string(),
        other => panic!("expected a file error, got {other:?}"),
    }
}

fn counts(y: &Array, classes: usize) -> Vec<usize> {
    let mut c = vec![0; classes];
    for &l in y.as_slice::<i32>().unwrap() {
        c[l as usize] += 1;
    }
    c
}

#[test]
fn iris_loads() {
    let (x, y, classes) = data::load_iris(iris_path()).unwrap();
    assert_eq!(x.shape(), &[150, 4]);
    assert_eq!(y.shape(), &[150]);
    assert_eq!(classes, ["setosa", "versicolor", "virginica"]);
    assert_eq!(counts(&y, 3), [50, 50, 50]);
    let xs = x.as_slice::<f32>().unwrap();
    assert_eq!(&xs[..4], &[5.1, 3.5, 1.4, 0.2]);
    let mm = MinMax::fit(&x).unwrap();
    assert_eq!(mm.min, [4.3, 2.0, 1.0, 0.1]);
    assert_eq!(mm.max, [7.9, 4.4, 6.9, 2.5]);
    // The species mapping agrees with the file's numeric label column.
    let (_, y2, names2) = data::csv_to_features(iris_path(), "label", &["species"]).unwrap();
    assert_eq!(names2, ["0", "1", "2"]);
    assert_eq!(y, y2);
}

#[test]
fn mnist_loads() {
    let t = std::time::Instant::now();
    let m = data::load_mnist(root().join("data/mnist")).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(m.train_x.shape(), &[60000, 784]);
    assert_eq!(m.train_y.shape(), &[60000]);
    assert_eq!(m.test_x.shape(), &[10000, 784]);
    assert_eq!(m.test_y.shape(), &[10000]);
    assert_eq!(m.train_y.as_slice::<i32>().unwrap()[0], 5);
    assert_eq!(
        counts(&m.train_y, 10),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        counts(&m.test_y, 10),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    for x in [&m.train_x, &m.test_x] {
        let px = x.as_slice::<f32>().unwrap();
        let (lo, hi) = px
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert_eq!((lo, hi), (0.0, 1.0));
    }
    // Raw reader: same labels, raw byte values.
    let raw = data::read_idx(mnist("t10k-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(raw, m.test_y);
    if !cfg!(debug_assertions) {
        assert!(secs < 2.0, "loading MNIST took {secs:.2} s");
    }
    eprintln!("load_mnist: {secs:.3} s");
}

#[test]
fn plain_idx_file_reads() {
    let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
    bytes.extend(0..12u8);
    let f = Temp::new("plain-idx3", &bytes);
    let a = data::read_idx(&f.0).unwrap();
    assert_eq!(a.shape(), &[2, 2, 3]);
    assert_eq!(a.to_vec::<i32>().unwrap(), (0..12).collect::<Vec<_>>());
}

#[test]
fn truncated_gz_is_reported() {
    let real = std::fs::read(mnist("train-labels-idx1-ubyte.gz")).unwrap();
    let f = Temp::new("train-labels-idx1-ubyte.gz", &real[..real.len() / 2]);
    let m = io_msg(data::read_idx(&f.0));
    assert!(m.contains(&f.0.display().to_string()), "{m}");
    assert!(m.contains("truncated"), "{m}");
    assert!(
        m.contains("header says 60000 labels") || m.contains("60000 items"),
        "{m}"
    );

    // A complete gzip stream whose IDX data is short: exact counts.
    let full = std::fs::read(mnist("t10k-labels-idx1-ubyte.gz")).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&full[..]), &mut raw).unwrap();
    let f = Temp::new("short.gz", &gzip(&raw[..raw.len() - 10]));
    let m = io_msg(data::read_idx(&f.0));
    assert!(
        m.contains("truncated: header says 10000 items, gzip stream holds 9990"),
        "{m}"
    );
}

#[test]
fn bad_magic_is_reported() {
    let f = Temp::new("bad-magic.gz", &gzip(&[0x12, 0x34, 0x08, 0x03, 0, 0, 0, 1]));
    let m = io_msg(data::read_idx(&f.0));
    assert!(m.contains("bad magic number 0x12340803"), "{m}");
    assert!(m.contains("bad-magic.gz"), "{m}");

    let f = Temp::new("float-idx", &[0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
    let m = io_msg(data::read_idx(&f.0));
    assert!(m.contains("unsupported IDX element type 0x0D (f32)"), "{m}");

    // A label file where an image file is expected.
    let labels = mnist("t10k-labels-idx1-ubyte.gz");
    let m = io_msg(data::load_mnist_files(&labels, &labels));
    assert!(m.contains("declares 1 dimensions, expected 3"), "{m}");

    let f = Temp::new("short-header", &[0, 0, 8]);
    let m = io_msg(data::read_idx(&f.0));
    assert!(m.contains("ends inside the IDX header"), "{m}");
}

#[test]
fn label_count_mismatch_is_reported() {
    let mut bytes = vec![0, 0, 8, 1, 0, 0, 0x27, 0x06]; // 9990 labels
    bytes.extend((0..9990).map(|i| (i % 10) as u8));
    let f = Temp::new("few-labels.gz", &gzip(&bytes));
    let images = mnist("t10k-images-idx3-ubyte.gz");
    let m = io_msg(data::load_mnist_files(&images, &f.0));
    assert!(m.contains("holds 9990 labels but"), "{m}");
    assert!(m.contains("holds 10000 images"), "{m}");
    assert!(m.contains("few-labels.gz"), "{m}");
}

#[test]
fn csv_errors_name_file_line_and_column() {
    let f = Temp::new("missing.csv", b"a,b,label\n1,2,x\n\n3,4\n");
    let m = io_msg(data::csv_to_features(&f.0, "label", &[]));
    assert!(
        m.contains("missing.csv: line 4, column 3 (label): missing field"),
        "{m}"
    );

    let f = Temp::new("nonnum.csv", b"a,b,label\n1,2,x\n3,abc,y\n");
    let m = io_msg(data::csv_to_features(&f.0, "label", &[]));
    assert!(
        m.contains("nonnum.csv: line 3, column 2 (b): not a finite number: \"abc\""),
        "{m}"
    );

    let f = Temp::new("empty.csv", b"a,b,label\n1,,x\n");
    let m = io_msg(data::csv_to_features(&f.0, "label", &[]));
    assert!(m.contains("line 2, column 2 (b): missing value"), "{m}");

    let f = Temp::new(
        "quoted.csv",
        b"a,\"the, label\"\n1.5,\"x \"\"y\"\"\"\n2,z\n",
    );
    let (x, y, names) = data::csv_to_features(&f.0, "the, label", &[]).unwrap();
    assert_eq!(x.to_vec::<f32>().unwrap(), [1.5, 2.0]);
    assert_eq!(y.to_vec::<i32>().unwrap(), [0, 1]);
    assert_eq!(names, ["x \"y\"", "z"]);

    assert!(matches!(
        data::csv_to_features(&f.0, "nope", &[]),
        Err(Error::Invalid(_))
    ));
    let m = io_msg(data::read_csv(root().join("no/such.csv")));
    assert!(m.contains("no/such.csv"), "{m}");
    // A missing file is the OS's refusal, with its error kept as the source.
    match data::read_csv(root().join("no/such.csv")) {
        Err(Error::Io { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::NotFound),
        other => panic!("expected Error::Io, got {other:?}"),
    }
    // Wrong contents are not an I/O failure.
    let f = Temp::new("extra.csv", b"a,label\n1,x,9\n");
    assert!(matches!(
        data::read_csv(&f.0),
        Err(Error::InvalidFile { .. })
    ));
}

#[test]
fn one_hot_encodes_and_checks_range() {
    let y = Array::new([3], vec![2i32, 0, 1]).unwrap();
    let h = data::one_hot(&y, 3).unwrap();
    assert_eq!(h.shape(), &[3, 3]);
    assert_eq!(
        h.to_vec::<f32>().unwrap(),
        [0., 0., 1., 1., 0., 0., 0., 1., 0.]
    );
    let bad = Array::new([2], vec![0i32, 3]).unwrap();
    let e = data::one_hot(&bad, 3).unwrap_err().to_string();
    assert!(e.contains("label 3 at row 1 is outside 0..3"), "{e}");
    assert!(data::one_hot(&Array::new([1], vec![-1i32]).unwrap(), 3).is_err());
}

#[test]
fn normalization_fits_on_train_only() {
    let (x, y, _) = data::load_iris(iris_path()).unwrap();
    let (xtr, _, xte, _) = data::train_test_split(&x, &y, 0.2, 1, true).unwrap();

    let mm = MinMax::fit(&xtr).unwrap();
    let t = mm.transform(&xtr).unwrap();
    let again = MinMax::fit(&t).unwrap();
    assert!(again.min.iter().all(|&v| v == 0.0), "{:?}", again.min);
    assert!(
        again.max.iter().all(|&v| (v - 1.0).abs() < 1e-6),
        "{:?}",
        again.max
    );
    assert_eq!(mm.transform(&xte).unwrap().shape(), &[30, 4]);

    let st = Standard::fit(&xtr).unwrap();
    let t = st.transform(&xtr).unwrap();
    let again = Standard::fit(&t).unwrap();
    assert!(
        again.mean.iter().all(|&v| v.abs() < 1e-5),
        "{:?}",
        again.mean
    );
    assert!(
        again.std.iter().all(|&v| (v - 1.0).abs() < 1e-5),
        "{:?}",
        again.std
    );
    // The test split is transformed with the training statistics, not its own.
    let te = st.transform(&xte).unwrap();
    assert_ne!(Standard::fit(&te).unwrap().mean, again.mean);

    // Constant columns: no NaN.
    let c = Array::new([3, 2], vec![1.0f32, 5.0, 2.0, 5.0, 3.0, 5.0]).unwrap();
    for out in [
        MinMax::fit(&c).unwrap().transform(&c).unwrap(),
        Standard::fit(&c).unwrap().transform(&c).unwrap(),
    ] {
        let v = out.to_vec::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
        assert_eq!([v[1], v[3], v[5]], [0.0, 0.0, 0.0]);
    }
    // Wrong feature count or dtype is an error, not a panic.
    assert!(st.transform(&c).is_err());
    assert!(Standard::fit(&Array::new([2], vec![1i32, 2]).unwrap()).is_err());
}

#[test]
fn stratified_split_keeps_proportions() {
    let (x, y, _) = data::load_iris(iris_path()).unwrap();
    let (xtr, ytr, xte, yte) = data::train_test_split(&x, &y, 0.2, 42, true).unwrap();
    assert_eq!(xtr.shape(), &[120, 4]);
    assert_eq!(xte.shape(), &[30, 4]);
    assert_eq!(counts(&yte, 3), [10, 10, 10]);
    assert_eq!(counts(&ytr, 3), [40, 40, 40]);
    // Same seed, same split; rows keep their labels.
    let again = data::train_test_split(&x, &y, 0.2, 42, true).unwrap();
    assert_eq!((&again.2, &again.3), (&xte, &yte));
    let other = data::train_test_split(&x, &y, 0.2, 43, true).unwrap();
    assert_ne!(other.2, xte);
    let (_, _, _, yte2) = data::train_test_split(&x, &y, 0.2, 42, false).unwrap();
    assert_eq!(yte2.shape(), &[30]);
    assert!(data::train_test_split(&x, &y, 1.5, 0, false).is_err());
}

#[test]
fn take_rows_any_dtype_and_rank() {
    let a = Array::new([3, 2, 2], (0..12).collect::<Vec<i32>>()).unwrap();
    let t = data::take_rows(&a, &[2, 0, 2]).unwrap();
    assert_eq!(t.shape(), &[3, 2, 2]);
    assert_eq!(
        t.to_vec::<i32>().unwrap(),
        [8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11]
    );
    let b = Array::new([2], vec![true, false]).unwrap();
    assert_eq!(
        data::take_rows(&b, &[1]).unwrap().to_vec::<bool>().unwrap(),
        [false]
    );
    assert!(data::take_rows(&a, &[3]).is_err());
}

#[test]
fn batches_cover_every_row_once() {
    let n = 23;
    let x = Array::new([n, 2], (0..2 * n).map(|v| v as f32).collect()).unwrap();
    let y = Array::new([n], (0..n as i32).collect()).unwrap();
    for shuffle in [None, Some(7)] {
        let it = data::batches(&x, &y, 5, shuffle).unwrap();
        assert_eq!(it.len(), 5);
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        for (xb, yb) in it {
            sizes.push(yb.shape()[0]);
            assert_eq!(xb.shape(), &[yb.shape()[0], 2]);
            let (xs, ys) = (xb.as_slice::<f32>().unwrap(), yb.as_slice::<i32>().unwrap());
            for (r, &label) in ys.iter().enumerate() {
                assert_eq!(xs[2 * r], 2.0 * label as f32, "x and y rows stay paired");
            }
            seen.extend_from_slice(ys);
        }
        assert_eq!(sizes, [5, 5, 5, 5, 3]);
        if shuffle.is_some() {
            assert_ne!(seen, (0..n as i32).collect::<Vec<_>>());
        }
        seen.sort();
        assert_eq!(seen, (0..n as i32).collect::<Vec<_>>());
    }
    assert!(data::batches(&x, &y, 0, None).is_err());
    let short = Array::new([3], vec![0i32, 1, 2]).unwrap();
    assert!(data::batches(&x, &short, 4, None).is_err());
}
