//! The `TensorBoard` callback: files laid out as Keras lays them (`train/`, `validation/`,
//! `epoch_*` tags at the epoch), read back record by record with their checksums, a torn
//! tail dropped and a flipped byte refused; and, when a Python with the `tensorboard`
//! package is found (`KILN_PYTHON`, else the repo's `.peers-venv`), TensorBoard's own
//! reader gets the same values (skipped otherwise: CI does not install TensorBoard).
//! Also the plot's settable title and the restored-best mark.

use kiln::nn::*;
use kiln::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// The one event file in `dir`.
fn event_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    files[0].clone()
}

#[test]
fn tensorboard_writes_keras_layout_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let (x, y) = data();
    let mut m = model();
    let cfg = quiet()
        .epochs(3)
        .validation_split(0.2)
        .callback(TensorBoard::new(&logs).update_freq(1));
    let h = m.fit(&x, &y, cfg).unwrap();
    let train = TensorBoard::read_scalars(event_file(&logs.join("train"))).unwrap();
    let val = TensorBoard::read_scalars(event_file(&logs.join("validation"))).unwrap();
    // Epoch values at the epoch, in f32 (TensorBoard's simple_value).
    let series = |events: &[(i64, String, f32)], tag: &str| -> Vec<(i64, f32)> {
        events
            .iter()
            .filter(|e| e.1 == tag)
            .map(|e| (e.0, e.2))
            .collect()
    };
    let want = |k: &str| -> Vec<(i64, f32)> {
        h.get(k)
            .unwrap()
            .iter()
            .enumerate()
            .map(|(e, v)| (e as i64, *v as f32))
            .collect()
    };
    assert_eq!(series(&train, "epoch_loss"), want("loss"));
    assert_eq!(
        series(&train, "epoch_mean_absolute_error"),
        want("mean_absolute_error")
    );
    assert_eq!(series(&val, "epoch_loss"), want("val_loss"));
    assert!(val.iter().all(|e| e.1.starts_with("epoch_")));
    // 8 training rows in batches of 5: 2 batches an epoch, each logged at its count.
    let steps: Vec<i64> = series(&train, "batch_loss").iter().map(|s| s.0).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    tensorboard_reads(&logs, &h);

    // A torn last record (a writer killed mid-write) is dropped; a flipped byte is refused.
    let path = event_file(&logs.join("validation"));
    let bytes = std::fs::read(&path).unwrap();
    let torn = dir.path().join("torn");
    std::fs::write(&torn, &bytes[..bytes.len() - 3]).unwrap();
    let back = TensorBoard::read_scalars(&torn).unwrap();
    // The last event holds the last epoch's validation values (loss and the metric): all
    // of them go, and nothing before them.
    let last_step = val.last().unwrap().0;
    let kept = val.iter().take_while(|e| e.0 != last_step).count();
    assert_eq!(
        val.len() - kept,
        2,
        "the last event: val_loss and the metric"
    );
    assert_eq!(back, val[..kept], "the torn last event is dropped whole");
    let mut flipped = bytes.clone();
    let at = flipped.len() - 10;
    flipped[at] ^= 0x40;
    std::fs::write(&torn, &flipped).unwrap();
    let err = TensorBoard::read_scalars(&torn).unwrap_err().to_string();
    assert!(err.contains("checksum does not match"), "{err}");

    // A second fit writes new files beside the first run's; a missing parent is reported
    // before training.
    m.fit(&x, &y, quiet().callback(TensorBoard::new(&logs)))
        .unwrap();
    assert_eq!(std::fs::read_dir(logs.join("train")).unwrap().count(), 2);
    let bad = dir.path().join("no/such/logs");
    let err = m
        .fit(&x, &y, quiet().callback(TensorBoard::new(&bad)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("before training started"), "{err}");
    let err = m
        .fit(
            &x,
            &y,
            quiet().callback(TensorBoard::new(&logs).update_freq(0)),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("update_freq"), "{err}");
}

/// TensorBoard's own event reader, if a Python has the `tensorboard` package.
fn tensorboard_reads(logs: &Path, h: &History) {
    let py = match std::env::var_os("KILN_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".peers-venv/bin/python"),
    };
    let has = Command::new(&py)
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        eprintln!("skipped: no python with tensorboard (set KILN_PYTHON)");
        return;
    }
    let script = "import sys\n\
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
        for sub in ('train', 'validation'):\n\
        \x20   a = EventAccumulator(sys.argv[1] + '/' + sub); a.Reload()\n\
        \x20   for e in a.Scalars('epoch_loss'): print(sub, e.step, repr(e.value))\n";
    let out = Command::new(&py)
        .args(["-c", script])
        .arg(logs)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want = String::new();
    for (sub, k) in [("train", "loss"), ("validation", "val_loss")] {
        for (e, v) in h.get(k).unwrap().iter().enumerate() {
            // Python prints the f32 widened to a double, shortest round trip.
            want += &format!("{sub} {e} {:?}\n", *v as f32 as f64);
        }
    }
    assert_eq!(text, want);
}

#[cfg(feature = "ui")]
#[test]
fn plot_title_and_restored_epoch_mark_are_settable() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = data();
    let mut m = model();
    // A validation loss that cannot improve after epoch 0 at this rate: stopped at 2, the
    // weights of epoch 0 restored.
    let cfg = quiet().epochs(10).validation_split(0.2).callback(
        EarlyStopping::on("val_loss")
            .patience(2)
            .min_delta(1e9)
            .restore_best_weights(),
    );
    let h = m.fit(&x, &y, cfg).unwrap();
    assert_eq!(h.stopped_epoch, Some(2));
    assert_eq!(h.restored_epoch, Some(0));
    let svg = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    h.plot(dir.path().join("a.svg")).unwrap();
    let a = svg("a.svg");
    assert!(a.contains("training curves") && a.contains("best weights restored (epoch 1)"));
    let opts = h.plot_options().title("run 7").mark_epoch(1, "look here");
    h.plot_with(dir.path().join("b.svg"), &opts).unwrap();
    let b = svg("b.svg");
    assert!(b.contains("run 7") && b.contains("look here") && !b.contains("training curves"));
    h.plot_with(dir.path().join("c.svg"), &h.plot_options().no_mark())
        .unwrap();
    assert!(!svg("c.svg").contains("best weights restored"));
    // Without restore_best_weights nothing is restored, so nothing is marked.
    let mut m = model();
    let cfg = quiet()
        .epochs(10)
        .validation_split(0.2)
        .callback(EarlyStopping::on("val_loss").patience(2).min_delta(1e9));
    let h = m.fit(&x, &y, cfg).unwrap();
    assert_eq!((h.stopped_epoch, h.restored_epoch), (Some(2), None));
}
