//! Deep graphs (issue 16, audit item 2): chains of 20,000 ops are built, differentiated,
//! optimized, compiled and run on the JIT and on the interpreter inside a thread with a
//! 2 MiB stack, and printed to text and parsed back there. Before, fusion recursed once per
//! op of a chain (a chain of about 4,200 overflowed such a thread) and a 7 MB graph file
//! aborted `kiln-run`. ARCHITECTURE.md's invariant "recursion depth does not depend on graph
//! size" is what these check; its costs (linear in the chain's length) are measured by the
//! benchmark report's deep-chain case, not here.
//!
//! The chains mix ops so that `simplify` cannot collapse them, and use ops on which the JIT
//! and the interpreter agree bit for bit (`+ - *`, `neg`, `abs`, `maximum`, permutation
//! matmuls), so results are compared bitwise.

use kiln::passes::{Pipeline, Program};
use kiln::prelude::*;

/// Ops in each chain.
const DEPTH: usize = 20_000;
/// The stack of every thread that handles a deep graph: a common default for spawned threads.
const STACK: usize = 2 << 20;

/// Runs `f` on a thread with a [`STACK`]-byte stack. An overflow aborts the test binary.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(f)
        .unwrap()
        .join()
        .expect("the deep-graph thread panicked")
}

/// `n` elementwise ops on `y`: mostly ops whose gradients do not need the forward value
/// (so long stretches fuse, into kernels cut at fusion's size cap), and every 32nd op a
/// `maximum` or an `abs`, whose gradients do (each cuts the chain into one more kernel:
/// compile time, not depth, is what more of them would add).
fn elementwise_chain(mut y: Tensor<'_>, n: usize) -> Tensor<'_> {
    for i in 0..n {
        y = match i % 8 {
            0 => y * 0.75f32,
            1 => y + 0.5f32,
            2 => y * 1.333_333_4f32,
            3 => y - 0.25f32,
            4 => -y,
            5 if i % 64 == 5 => y.maximum(-3.0f32),
            5 if i % 64 == 37 => y.abs(),
            5 => y + 0.0625f32,
            6 => y * 1.5f32,
            _ => y * 0.666_666_7f32 + 0.125f32,
        };
    }
    y
}

fn bits(a: &Array) -> Vec<u32> {
    a.to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Runs `fetches` on the JIT and on the interpreter, asserts they agree bit for bit, and
/// returns the results and the number of kernels the JIT compiled.
fn both_backends(
    g: &Graph,
    fetches: &[Tensor<'_>],
    feeds: &[(Tensor<'_>, Array)],
) -> (Vec<Array>, usize) {
    let mut sess = Session::new(g).unwrap();
    let jit = sess.run(fetches, feeds).unwrap();
    let kernels = sess.last_compile_times().unwrap().kernels;
    let mut interp = Session::with_backend(g, Backend::Interpreter).unwrap();
    let want = interp.run(fetches, feeds).unwrap();
    for (k, (a, b)) in jit.iter().zip(&want).enumerate() {
        assert_eq!(a.shape(), b.shape(), "fetch {k}");
        assert_eq!(
            bits(a),
            bits(b),
            "fetch {k}: the JIT and the interpreter differ"
        );
    }
    (jit, kernels)
}

fn input(rows: usize, cols: usize) -> Array {
    let v: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.37 - 2.0).collect();
    Array::new([rows, cols], v).unwrap()
}

#[test]
fn an_elementwise_chain_differentiates_compiles_and_runs_on_a_small_stack() {
    on_small_stack(|| {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [None, Some(5)]);
        let y = elementwise_chain(x, DEPTH);
        let loss = y.sum_all();
        let dx = kiln::autodiff::grad(loss, &[x]).unwrap()[0];
        // (Not the loss: the interpreter sums in f64, the JIT in f32.)
        let (out, kernels) = both_backends(&g, &[y, dx], &[(x, input(3, 5))]);
        let grad = out[1].to_vec::<f32>().unwrap();
        assert!(
            grad.iter().any(|&v| v != 0.0) && grad.iter().all(|v| v.is_finite()),
            "a degenerate gradient proves little: {grad:?}"
        );
        // Fusion cut the chain and its gradient into kernels of bounded size.
        assert!(kernels >= 2 * DEPTH / 256, "{kernels} kernels");
    });
}

#[test]
fn fusion_cuts_a_long_chain_into_kernels_of_bounded_size_and_says_why() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4]);
    let y = elementwise_chain(x, 1000);
    let mut p = Program::new(g.snapshot(), vec![y.id()]);
    Pipeline::default().run(&mut p).unwrap();
    // 1000 ops, some removed by simplify, at most 256 to a kernel.
    let kernels = kiln::passes::fusion::kernel_count(&p);
    assert!((4..=6).contains(&kernels), "{kernels} kernels");
    let dump = kiln::passes::program_dump(&p);
    let notes = dump.matches("the kernel already has 256 members").count();
    assert_eq!(notes, kernels - 1, "one note per cut:\n{dump}");
}

#[test]
fn a_chain_of_views_fuses_differentiates_and_runs_on_a_small_stack() {
    on_small_stack(|| {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [None, Some(4), Some(6)]);
        let mut y = x;
        // Mostly movement ops: a transpose, a size-1 axis added and dropped (views fusion
        // folds into loads), with a multiply or an add between them so that `simplify`
        // cannot cancel the views.
        // Whole rounds of six, so the chain ends at the shape it started from.
        for i in 0..DEPTH.next_multiple_of(6) {
            let dims: Vec<Dim> = y.shape().dims().to_vec();
            y = match i % 6 {
                0 => y.permute(&[0, 2, 1]),
                3 => y.permute(&[0, 2, 1, 3]),
                1 => {
                    let mut d = dims.clone();
                    d.push(Dim::Fixed(1));
                    y.reshape(d)
                }
                2 => y * 1.5f32,
                4 => y.reshape(dims[..dims.len() - 1].to_vec()),
                _ => y + 0.25f32,
            };
        }
        let loss = (y * y.stop_gradient()).sum_all();
        let dx = kiln::autodiff::grad(loss, &[x]).unwrap()[0];
        let xv = Array::new(
            [2, 4, 6],
            (0..48).map(|i| i as f32 * 0.25 - 6.0).collect::<Vec<f32>>(),
        )
        .unwrap();
        let (out, _) = both_backends(&g, &[y, dx], &[(x, xv)]);
        assert_eq!(out[0].shape(), &[2, 4, 6]);
    });
}

#[test]
fn a_chain_of_matmuls_differentiates_and_runs_on_a_small_stack() {
    on_small_stack(|| {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [None, Some(3)]);
        // A permutation matrix: every product is exact, so gemm and the interpreter agree.
        let p = g.constant(
            Array::new([3, 3], vec![0f32, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]).unwrap(),
        );
        let mut y = x;
        // Fewer than the other chains: each matmul is a kernel of its own (and so is each of
        // its gradients), and the depth that matters is passed long before.
        for i in 0..DEPTH / 10 {
            y = y.matmul(p);
            if i % 2 == 0 {
                y = y * 0.75f32 + 0.5f32;
            }
        }
        let loss = y.sum_all();
        let dx = kiln::autodiff::grad(loss, &[x]).unwrap()[0];
        both_backends(&g, &[y, dx], &[(x, input(2, 3))]);
    });
}

#[test]
fn a_deep_graph_file_parses_and_runs_as_kiln_run_runs_it_on_a_small_stack() {
    let dir = std::env::temp_dir().join(format!("kiln-deep-{}", std::process::id()));
    let d = dir.clone();
    let (text, want) = on_small_stack(move || {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [None, Some(5)]);
        let w = g.variable("w", [5], init::constant(0.5));
        let y = elementwise_chain(x * w, DEPTH).named("y");
        let loss = y.sum_all();
        let dw = kiln::autodiff::grad(loss, &[w]).unwrap()[0].named("dw");
        let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
        // `dw` sums two rows: one rounding in f64 or in f32 gives the same bits.
        let want = interp.run(&[y, dw], &[(x, input(2, 5))]).unwrap();
        kiln::saved::save(&d, &Session::new(&g).unwrap()).unwrap();
        (g.dump(), want)
    });
    assert!(text.len() > 1 << 20, "only {} bytes of text", text.len());
    let d = dir.clone();
    let got = on_small_stack(move || {
        // The text round trip...
        let parsed = Graph::parse(&text).unwrap();
        assert_eq!(parsed.dump(), text);
        // ... and `kiln-run`'s path: load the saved model, find the tensors by name, run.
        let (g, mut sess) = kiln::saved::load(&d).unwrap();
        let by = |n: &str| g.by_name(n).unwrap();
        sess.run(&[by("y"), by("dw")], &[(by("x"), input(2, 5))])
            .unwrap()
    });
    std::fs::remove_dir_all(&dir).ok();
    for (a, b) in got.iter().zip(&want) {
        assert_eq!(
            bits(a),
            bits(b),
            "the loaded model's JIT against the interpreter"
        );
    }
}
