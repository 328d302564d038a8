//! `kiln::plot`: training curves render to an SVG with every curve and legend entry.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln::plot::plot_curves;
use kiln::Error;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kiln-test-plot-{}-{name}.svg", std::process::id()))
}

/// Ten epochs of an overfitting run: training loss keeps falling, validation loss turns up
/// after epoch 5 while validation accuracy stalls.
fn overfitting_history() -> BTreeMap<String, Vec<f64>> {
    let mut h = BTreeMap::new();
    let e = 1..=10;
    h.insert(
        "loss".into(),
        e.clone()
            .map(|e| 1.2 * (-0.35 * e as f64).exp() + 0.05)
            .collect(),
    );
    h.insert(
        "val_loss".into(),
        e.clone()
            .map(|e| {
                let e = e as f64;
                if e <= 5.0 {
                    1.25 * (-0.3 * e).exp() + 0.12
                } else {
                    1.25 * (-1.5f64).exp() + 0.12 + 0.04 * (e - 5.0).powf(1.3)
                }
            })
            .collect(),
    );
    h.insert(
        "accuracy".into(),
        e.clone()
            .map(|e| 0.99 - 0.5 * (-0.45 * e as f64).exp())
            .collect(),
    );
    h.insert(
        "val_accuracy".into(),
        e.map(|e| 0.93 - 0.45 * (-0.6 * e as f64).exp() - 0.004 * (e as f64 - 5.0).max(0.0))
            .collect(),
    );
    h
}

#[test]
fn ten_epochs_overfitting() {
    let path = tmp("overfit");
    plot_curves(
        &path,
        &overfitting_history(),
        "mnist mlp: overfitting after epoch 5",
    )
    .unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.contains("<svg"));
    for label in ["loss", "val_loss", "accuracy", "val_accuracy"] {
        assert!(
            svg.contains(&format!(">{label}<")) || svg.contains(&format!(">\n{label}\n<")),
            "legend text {label:?} missing"
        );
    }
    for label in ["epoch", "mnist mlp: overfitting after epoch 5"] {
        assert!(svg.contains(label), "{label:?} missing");
    }
    let lines = svg.matches("<polyline").count() + svg.matches("<path").count();
    assert!(lines >= 4, "only {lines} polyline/path elements");
    // No temporary file is left beside it.
    let stem = format!(".{}.tmp", path.file_name().unwrap().to_string_lossy());
    let dir = path.parent().unwrap();
    assert!(std::fs::read_dir(dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(&stem)));
    // Keep a copy for eyeballing when asked to.
    if let Ok(dir) = std::env::var("KILN_PLOT_KEEP") {
        std::fs::copy(&path, PathBuf::from(dir).join("curves.svg")).unwrap();
    }
    std::fs::remove_file(&path).ok();
}

#[test]
fn one_epoch_draws_a_marker() {
    let path = tmp("one");
    let mut h = BTreeMap::new();
    h.insert("loss".to_string(), vec![0.7]);
    h.insert("val_loss".to_string(), vec![0.8]);
    plot_curves(&path, &h, "one epoch").unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.contains("<svg"));
    assert!(svg.contains("<circle"), "single point needs a marker");
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
    if let Ok(dir) = std::env::var("KILN_PLOT_KEEP") {
        std::fs::copy(&path, PathBuf::from(dir).join("one.svg")).unwrap();
    }
    std::fs::remove_file(&path).ok();
}

#[test]
fn non_finite_and_flat_values() {
    let path = tmp("odd");
    let mut h = BTreeMap::new();
    h.insert(
        "loss".to_string(),
        vec![1.0, f64::NAN, 0.5, f64::INFINITY, 0.25],
    );
    h.insert("accuracy".to_string(), vec![0.5; 5]);
    h.insert("val_accuracy".to_string(), vec![f64::NAN; 5]);
    plot_curves(&path, &h, "odd values").unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
    assert!(svg.contains("val_accuracy"));
    std::fs::remove_file(&path).ok();
}

#[test]
fn empty_map_is_an_error() {
    let path = tmp("empty");
    let err = plot_curves(&path, &BTreeMap::new(), "nothing").unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert!(!path.exists());
    let mut h = BTreeMap::new();
    h.insert("loss".to_string(), vec![]);
    assert!(matches!(
        plot_curves(&path, &h, "x"),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn unwritable_path_is_an_io_error() {
    let mut h = BTreeMap::new();
    h.insert("loss".to_string(), vec![1.0, 0.5]);
    let path = std::env::temp_dir().join("kiln-no-such-dir/deeper/curves.svg");
    match plot_curves(&path, &h, "x") {
        Err(e @ Error::Io { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("kiln-no-such-dir"), "{msg}");
            // The OS error is kept as the source, not flattened into the message.
            let source = std::error::Error::source(&e).expect("an I/O error has a source");
            let io = source
                .downcast_ref::<std::sync::Arc<std::io::Error>>()
                .expect("the source is the shared std::io::Error");
            assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io error, got {other:?}"),
    }
}
