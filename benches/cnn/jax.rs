//! JAX on the convnet, timed in this run: `benches/peers/bench_jax_cnn.py` (the same model
//! without dropout) in its own process per thread count, once before kiln's samples and once
//! after, as the ResNet-50 case does with onnxruntime. The 1-thread process is pinned to one
//! core with XLA's single-thread flags (the script's docstring); the 2-thread one runs
//! XLA's defaults. The baseline is the mean of the two medians, and both are printed, so a
//! machine that got busier in between shows.

use crate::harness::peers::{json_lines, json_number, python};
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
    let text = json_lines(
        cmd.arg(script).args(["--threads", &threads.to_string()]),
        "JAX convnet",
    )?;
    let mut ms = [None; 2];
    for line in text.lines() {
        if line.contains("\"cnn_train\"") {
            ms[0] = json_number(line, "ms");
        } else if line.contains("\"cnn_infer\"") {
            ms[1] = json_number(line, "ms");
        }
    }
    Some([ms[0]? * 1e-3, ms[1]? * 1e-3])
}
