//! JAX on the convnet, timed in this run: `benches/peers/bench_jax_cnn.py` (the same model
//! without dropout) in its own process per thread count, once before kiln's samples and once
//! after, as the ResNet-50 case does with onnxruntime. The 1-thread process is pinned to one
//! core with XLA's single-thread flags (the script's docstring); the 2-thread one runs
//! XLA's defaults. The baseline is the mean of the two medians, and both are printed, so a
//! machine that got busier in between shows.

use crate::harness::peers::python;
use std::path::Path;
use std::process::Command;

/// JAX's median seconds for one training step and one inference at batch 128, at `threads`.
pub fn times(threads: usize) -> Option<[f64; 2]> {
    let py = python()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/bench_jax_cnn.py");
    let mut cmd = if threads == 1 {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(&py);
        c.env(
            "XLA_FLAGS",
            "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
        );
        c
    } else {
        Command::new(&py)
    };
    let out = cmd
        .arg(script)
        .args(["--threads", &threads.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("  JAX convnet: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ms = [None; 2];
    for line in text.lines() {
        let ms_of = || {
            let rest = &line[line.find("\"ms\": ")? + 6..];
            let end = rest.find([',', '}'])?;
            rest[..end].trim().parse::<f64>().ok()
        };
        if line.contains("\"cnn_train\"") {
            ms[0] = ms_of();
        } else if line.contains("\"cnn_infer\"") {
            ms[1] = ms_of();
        }
    }
    Some([ms[0]? * 1e-3, ms[1]? * 1e-3])
}
