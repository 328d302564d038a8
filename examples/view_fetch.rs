//! Fetching a view of computed values: does it compile to native kernels, and what does it
//! cost next to fetching the values themselves?
//!
//! Issue 15 measured that a fetched view (a transpose of `exp(x) * 2`, the gradient of
//! `sum(tanh(xᵀ w))` with respect to `x`) ran its producers on the interpreter. This prints,
//! for each case, the number of native kernels and the median time of a compiled session's
//! `run_into` at 1 and 2 threads; then, over 200 of the test suite's random expression
//! graphs (half of them with pads, concats and views), how many leave a compute node to
//! anything but a native step (compile errors included).
//!
//! ```text
//! cargo run --release --example view_fetch [-- n reps]
//! ```

use kiln::prelude::*;
use std::time::Instant;

// The test suite's random graph generator (and its random inputs).
#[path = "../tests/common/mod.rs"]
mod common;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median milliseconds of `reps` runs of `fetch` (after one warm-up run that compiles).
fn time(
    g: &Graph,
    fetch: &[Tensor<'_>],
    feeds: &[(Tensor<'_>, Array)],
    reps: usize,
) -> Result<(f64, usize)> {
    let mut s = Session::new(g)?;
    let mut out = vec![];
    s.run_into(fetch, feeds, &mut out)?;
    let kernels = s.last_compile_times().map_or(0, |t| t.kernels);
    let mut ts = vec![];
    for _ in 0..reps {
        let t0 = Instant::now();
        s.run_into(fetch, feeds, &mut out)?;
        ts.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(ts), kernels))
}

/// Times fetching views of computed values against fetching the values.
#[derive(clap::Parser, Debug)]
#[command(name = "view_fetch", version)]
struct Args {
    /// The side of the square inputs.
    #[arg(default_value_t = 1000)]
    n: usize,
    /// Timed runs per case (the median is printed).
    #[arg(default_value_t = 9)]
    reps: usize,
}

fn main() -> Result<()> {
    let Args { n, reps } = <Args as clap::Parser>::parse();
    let data = |seed: u32| {
        let v: Vec<f32> = (0..n * n)
            .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32)
            .map(|u| u / (1u32 << 24) as f32 - 0.5)
            .collect();
        Array::new([n, n], v)
    };
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [Some(n), Some(n)]);
    let w = g.placeholder("w", DType::F32, [Some(n), Some(n)]);
    let y = x.exp() * 2.0;
    let yt = (x.exp() * 2.0).transpose();
    let loss = x.transpose().matmul(w).tanh().sum(&[0, 1], false);
    let gx = grad(loss, &[x])?[0];
    let feeds = [(x, data(1)?), (w, data(2)?)];
    println!("n = {n}, median of {reps} runs (ms), run_into on a compiled session");
    for threads in [1, 2] {
        kiln::threads::set_threads(threads);
        for (name, t) in [
            ("exp(x)*2", y),
            ("(exp(x)*2).transpose()", yt),
            ("grad_x sum(tanh(x^T w))", gx),
        ] {
            let (ms, kernels) = time(&g, &[t], &feeds, reps)?;
            println!("threads {threads}  {name:<26} {ms:9.3} ms  {kernels} kernel(s)");
        }
    }
    let mut off_kernel = 0;
    for seed in 0..200u64 {
        let (g, outs) = if seed.is_multiple_of(2) {
            common::random_graph(seed)
        } else {
            common::random_view_graph(seed)
        };
        let (feeds, vars) = common::inputs(&g, 7, seed);
        let mut s = Session::new(&g)?;
        for (id, v) in vars {
            s.set_variable(g.tensor(id), v)?;
        }
        let fetch: Vec<Tensor<'_>> = outs.iter().map(|&o| g.tensor(o)).collect();
        let fd: Vec<(Tensor<'_>, Array)> =
            feeds.into_iter().map(|(id, a)| (g.tensor(id), a)).collect();
        let native = match s.run(&fetch, &fd) {
            Ok(_) => s
                .last_compile_times()
                .is_some_and(|t| t.steps.covers_every_node()),
            Err(e) => {
                println!("seed {seed}: {e}");
                false
            }
        };
        if !native {
            println!("seed {seed}: {:?}", s.last_compile_times().map(|t| t.steps));
        }
        off_kernel += usize::from(!native);
    }
    println!("random expression graphs leaving work off native steps: {off_kernel} of 200");
    Ok(())
}
