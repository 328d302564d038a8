//! Issue 18's speed case: ResNet-50 imported from ONNX, against onnxruntime on the same file
//! in the same run.
//!
//! The model is written by `benches/peers/resnet50_onnx.py` (seeded random weights; no
//! network) with the repository's `.peers-venv` Python, or the one `KILN_PYTHON` names. With
//! no such Python the case prints why it was skipped and times nothing: a figure from another
//! day is not a ratio. onnxruntime runs in its own process (the script's `--time`), once
//! before kiln's samples and once after; the baseline is the mean of the two medians, and both
//! are printed, so a machine that got busier in between shows.

use crate::harness::peers::{json_lines, json_number, python};
use crate::harness::{fmt_time, measure, median, Config, Report, Target};
use kiln::prelude::*;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const CASE: &str = "resnet50 onnx inference b1";
const COMPILE: &str = "resnet50 onnx import + compile";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/resnet50_onnx.py")
}

/// onnxruntime's median milliseconds at each thread count, from the script's JSON lines.
fn ort_times(py: &Path, model: &Path, runs: usize) -> Option<[f64; 2]> {
    let text = json_lines(
        Command::new(py)
            .arg(script())
            .args(["--out".as_ref(), model.as_os_str()])
            .args(["--time", "--threads", "1", "2", "--runs", &runs.to_string()]),
        "onnxruntime",
    )?;
    let mut ms = [None; 2];
    for line in text.lines() {
        if let (Some(t), Some(v)) = (json_number(line, "threads"), json_number(line, "ms")) {
            if (1.0..=2.0).contains(&t) {
                ms[t as usize - 1] = Some(v * 1e-3);
            }
        }
    }
    Some([ms[0]?, ms[1]?])
}

/// Import, and import plus the compile (passes, Cranelift) of a fresh session's first run.
fn cold(model: &Path, x: &Array) -> (f64, f64) {
    let t0 = Instant::now();
    let m = kiln::onnx::import(model).expect("ResNet-50 imports");
    let import = t0.elapsed().as_secs_f64();
    let mut sess = m.session().expect("a session");
    let (xin, out) = (m.input(0).unwrap(), m.output(0).unwrap());
    black_box(
        sess.run(&[out], &[(xin, x.clone())])
            .expect("inference runs"),
    );
    let c = sess.last_compile_times().expect("a JIT compile").total();
    (import, import + c.as_secs_f64())
}

/// ResNet-50 at batch 1, 224×224, at 1 and 2 threads, against onnxruntime on the same file.
pub fn resnet50(cfg: &Config, report: &mut Report) {
    if !cfg.wants(CASE) && !cfg.wants(COMPILE) {
        return;
    }
    eprintln!("{CASE}");
    let Some(py) = python() else {
        report.note(format!(
            "{CASE}: skipped, no Python with onnx and onnxruntime (.peers-venv or KILN_PYTHON; \
             see benches/peers/README.md)"
        ));
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers");
    std::fs::create_dir_all(&dir).expect("target/peers");
    let model = dir.join("resnet50.onnx");
    let runs = if cfg.quick { 5 } else { 20 };
    let Some(before) = ort_times(&py, &model, runs) else {
        report.note(format!(
            "{CASE}: skipped, the peer script failed (printed above)"
        ));
        return;
    };
    let x = Array::new([1, 3, 224, 224], crate::ramp(3 * 224 * 224, 1.0, 97)).unwrap();
    kiln::threads::set_threads(1);
    let colds: Vec<(f64, f64)> = (0..if cfg.quick { 1 } else { 3 })
        .map(|_| cold(&model, &x))
        .collect();
    let import = median(&mut colds.iter().map(|c| c.0).collect::<Vec<_>>());
    let total = median(&mut colds.iter().map(|c| c.1).collect::<Vec<_>>());
    let m = kiln::onnx::import(&model).expect("ResNet-50 imports");
    let (xin, out) = (m.input(0).unwrap(), m.output(0).unwrap());
    let feeds = [(xin, x)];
    let mut kiln_t = [0.0; 2];
    for t in [1, 2] {
        kiln::threads::set_threads(t);
        let mut sess = m.session().unwrap();
        let [k] = measure(
            cfg,
            [&mut || {
                black_box(sess.run(&[out], &feeds).unwrap());
            }],
        );
        kiln_t[t - 1] = k;
    }
    let after = ort_times(&py, &model, runs).unwrap_or(before);
    for t in [1, 2] {
        let base = (before[t - 1] + after[t - 1]) / 2.0;
        let name = format!(
            "onnxruntime, this run (before {} / after {})",
            fmt_time(before[t - 1]),
            fmt_time(after[t - 1])
        );
        report.row(CASE, t, kiln_t[t - 1], &name, base, Target::Ratio(0.8));
    }
    report.row(
        COMPILE,
        1,
        total,
        "target (no peer figure)",
        1.0,
        Target::Under(1.0, 1.0),
    );
    report.note(format!(
        "{COMPILE}: import {} (protobuf decode, graph build, folding), import + compile {}, \
         medians of {}",
        fmt_time(import),
        fmt_time(total),
        colds.len()
    ));
}
