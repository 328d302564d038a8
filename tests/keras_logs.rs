//! Training logs as files: `CSVLogger` (Keras' columns, append mode, its path checked before
//! training) and `History::to_csv` / `to_json`.

use kiln::nn::*;
use kiln::prelude::*;

fn model() -> Model {
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(1).into()]);
    m.compile(
        Sgd::new(0.1),
        Loss::MeanSquaredError,
        &[Metric::MeanAbsoluteError],
    )
    .unwrap();
    m
}

fn data() -> (Array, Array) {
    let x = Array::new([10, 2], (0..20).map(|i| (i % 5) as f32 / 5.0).collect()).unwrap();
    let y = Array::new([10, 1], (0..10).map(|i| (i % 3) as f32 / 3.0).collect()).unwrap();
    (x, y)
}

fn quiet() -> FitConfig {
    FitConfig::new().batch_size(5).verbosity(Verbosity::Silent)
}

#[test]
fn csv_logger_writes_keras_columns_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.csv");
    let (x, y) = data();
    let mut m = model();
    let cfg = quiet().epochs(3).validation_split(0.2);
    let h = m.fit(&x, &y, cfg.callback(CSVLogger::new(&path))).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,loss,mean_absolute_error,val_loss,val_mean_absolute_error"
    );
    assert_eq!(lines.len(), 4, "{text}");
    // Each row holds exactly the history's values, epoch 0-based.
    for (e, line) in lines[1..].iter().enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[0], e.to_string());
        let loss: f64 = cells[1].parse().unwrap();
        assert_eq!(loss, h.get("loss").unwrap()[e]);
        let vmae: f64 = cells[4].parse().unwrap();
        assert_eq!(vmae, h.get("val_mean_absolute_error").unwrap()[e]);
    }
    // The file equals the history's own CSV.
    assert_eq!(text, h.to_csv());
    // Append: no second header, rows go on; without validation the val_ columns are NA.
    let cfg = quiet().epochs(2);
    m.fit(&x, &y, cfg.callback(CSVLogger::new(&path).append(true)))
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(
        lines[4].starts_with("0,") && lines[4].ends_with(",NA,NA"),
        "{text}"
    );
    // Without append the file is replaced, with a header of its own columns.
    m.fit(
        &x,
        &y,
        quiet().callback(CSVLogger::new(&path).separator(';')),
    )
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        "epoch;loss;mean_absolute_error;val_loss;val_mean_absolute_error"
    );
    assert_eq!(text.lines().count(), 2);
}

#[test]
fn csv_logger_checks_its_path_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("log.csv");
    let (x, y) = data();
    let mut m = model();
    let before = m.get_weights().unwrap();
    let e = m
        .fit(&x, &y, quiet().callback(CSVLogger::new(&path)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("CSVLogger cannot write here") && e.contains("before training"),
        "{e}"
    );
    assert_eq!(m.get_weights().unwrap(), before, "trained before failing");
    let e = m
        .fit(
            &x,
            &y,
            quiet().callback(CSVLogger::new(dir.path().join("a.csv")).separator('"')),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("separator must be") && e.contains("tests/keras_logs.rs"),
        "{e}"
    );
}

#[test]
fn history_exports_escape_names_and_non_finite_values() {
    let mut h = History::default();
    h.history.insert("loss".into(), vec![0.5, 0.25]);
    h.history
        .insert("a \"quoted\", name\\".into(), vec![1e-7, f64::NAN]);
    h.history
        .insert("tab\tname".into(), vec![f64::INFINITY, -1.0]);
    assert_eq!(
        h.to_json(),
        "{\"a \\\"quoted\\\", name\\\\\": [1e-7, null], \"loss\": [0.5, 0.25], \
         \"tab\\tname\": [null, -1.0]}"
    );
    assert_eq!(
        h.to_csv(),
        "epoch,\"a \"\"quoted\"\", name\\\",loss,tab\tname\n0,1e-7,0.5,inf\n1,nan,0.25,-1.0\n"
    );
    assert_eq!(History::default().to_json(), "{}");
    assert_eq!(History::default().to_csv(), "epoch\n");
}
