//! The Cranelift pooling kernels against the interpreter, bitwise, at 1, 2 and 3 threads, on
//! random geometries chosen to reach every code path of `jit/codegen/pool.rs`: odd sizes,
//! padding on each side (border runs of rows and columns), dilation, strides larger than the
//! window (pixels in no window: the gradient's zero fill), windows larger than the input,
//! channel counts with a scalar tail and past the unrolled groups (the channel loop), batch
//! 1, `f32` and `f64`, inputs with NaNs, signed zeros and ties. Also the native fallback for
//! a geometry whose unrolled kernel would be too large.

mod common;
mod pool_common;

use common::Rng;
use kiln::prelude::*;
use kiln::{Padding, Pool2dOptions};
use pool_common::all_kinds;

/// A random geometry the shape rule accepts, as `(shape, options)`.
fn random_geometry(rng: &mut Rng) -> ([usize; 4], Pool2dOptions) {
    loop {
        let k = [1 + rng.below(5), 1 + rng.below(5)];
        let s = [1 + rng.below(4), 1 + rng.below(4)];
        let d = [1 + rng.below(3), 1 + rng.below(3)];
        let padding = match rng.below(4) {
            0 => Padding::Valid,
            1 => Padding::Same,
            _ => Padding::Explicit([(rng.below(4), rng.below(4)), (rng.below(4), rng.below(4))]),
        };
        // Mostly small channel counts (a scalar tail for most), sometimes past the
        // unrolled groups (16 vectors) so the channel loop runs.
        let c = if rng.below(6) == 0 {
            60 + rng.below(20)
        } else {
            1 + rng.below(11)
        };
        let shape = [1 + rng.below(3), 1 + rng.below(12), 1 + rng.below(12), c];
        let o = Pool2dOptions::new(k)
            .strides(s)
            .dilations(d)
            .padding(padding)
            .count_include_pad(rng.below(2) == 0);
        let g = Graph::new();
        let _ = g.placeholder("x", DType::F32, shape).max_pool2d(&o);
        if g.check().is_ok() {
            return (shape, o);
        }
    }
}

/// Values with ties (a coarse grid), signed zeros and NaNs, as `f64` (exact in `f32`).
fn tricky(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| match rng.below(30) {
            0 => f64::NAN,
            1 => -0.0,
            2 => 0.0,
            k if k < 16 => (rng.below(5) as f64 - 2.0) * 0.5,
            _ => rng.f32() as f64,
        })
        .collect()
}

fn array(dtype: DType, shape: &[usize], v: Vec<f64>) -> Array {
    match dtype {
        DType::F64 => Array::new(shape, v).unwrap(),
        _ => Array::new(shape, v.into_iter().map(|x| x as f32).collect::<Vec<_>>()).unwrap(),
    }
}

/// Every pooling kind of `(shape, o)` in `dtype`: the JIT at 1, 2 and 3 threads against the
/// interpreter, bit for bit. Returns the JIT's step counts (of the last compile).
fn check(
    shape: [usize; 4],
    o: &Pool2dOptions,
    dtype: DType,
    rng: &mut Rng,
) -> kiln::session::StepCounts {
    let what = format!("{dtype:?} {shape:?} {o:?}");
    let g = Graph::new();
    let x = g.placeholder("x", dtype, shape);
    let probe = x.max_pool2d(o).shape();
    let u = g.placeholder("u", dtype, &probe);
    let w = g.placeholder("w", dtype, shape);
    let fetch = all_kinds(x, u, w, o);
    g.check().unwrap();
    let n: usize = shape.iter().product();
    let ys = probe.to_fixed().unwrap();
    let feeds = vec![
        (x, array(dtype, &shape, tricky(rng, n))),
        (u, array(dtype, &ys, tricky(rng, ys.iter().product()))),
        (w, array(dtype, &shape, tricky(rng, n))),
    ];
    let reference = Interpreter::new(&g).unwrap().run(&fetch, &feeds).unwrap();
    let mut counts = None;
    for threads in [1, 2, 3] {
        kiln::threads::set_threads(threads);
        let mut s = Session::new(&g).unwrap();
        let out = s.run(&fetch, &feeds).unwrap();
        counts = Some(s.last_compile_times().unwrap().steps);
        for (k, (r, a)) in reference.iter().zip(&out).enumerate() {
            assert!(
                r.bits_eq(a),
                "{what}: output {k} at {threads} threads differs from the interpreter"
            );
        }
    }
    kiln::threads::set_threads(0);
    counts.unwrap()
}

#[test]
fn random_geometries_are_bitwise_equal_to_the_interpreter() {
    let mut rng = Rng(0x9001_cafe);
    for i in 0..60 {
        let (shape, o) = random_geometry(&mut rng);
        let dtype = if i % 3 == 2 { DType::F64 } else { DType::F32 };
        let counts = check(shape, &o, dtype, &mut rng);
        // Every pooling step of these small geometries runs a Cranelift kernel.
        assert!(counts.pools >= 5, "{counts:?}");
        assert_eq!(counts.pool_kernels, counts.pools, "{shape:?} {o:?}");
    }
}

#[test]
fn chosen_edge_geometries_are_bitwise_equal_to_the_interpreter() {
    let mut rng = Rng(17);
    let e = |p: [(usize, usize); 2]| Padding::Explicit(p);
    let cases: Vec<([usize; 4], Pool2dOptions)> = vec![
        // The MNIST convnet's first pooling (disjoint, covering: no fill), batch large
        // enough to split over 3 threads.
        ([6, 26, 26, 32], Pool2dOptions::new([2, 2])),
        // Odd size: the last row and column lie in no window (fill, then stores).
        ([3, 27, 25, 8], Pool2dOptions::new([2, 2])),
        // Stride larger than the window.
        ([2, 9, 10, 5], Pool2dOptions::new([2, 2]).strides([3, 4])),
        // A window larger than the input, padding on every side.
        (
            [1, 3, 4, 6],
            Pool2dOptions::new([5, 6])
                .strides([1, 1])
                .padding(Padding::Same),
        ),
        // Padding on one side only, each side in turn, with dilation.
        (
            [2, 7, 6, 3],
            Pool2dOptions::new([3, 2]).padding(e([(2, 0), (0, 0)])),
        ),
        (
            [2, 7, 6, 3],
            Pool2dOptions::new([3, 2]).padding(e([(0, 2), (0, 0)])),
        ),
        (
            [2, 7, 6, 3],
            Pool2dOptions::new([2, 3])
                .strides([1, 1])
                .dilations([2, 2])
                .padding(e([(0, 0), (2, 0)])),
        ),
        (
            [2, 7, 6, 3],
            Pool2dOptions::new([2, 3])
                .strides([2, 1])
                .padding(e([(0, 0), (0, 2)])),
        ),
        // Batch 1, a 1×1 image, one channel.
        ([1, 1, 1, 1], Pool2dOptions::new([1, 1])),
        // Channels past the unrolled groups, with a tail, overlapping windows.
        (
            [2, 5, 5, 71],
            Pool2dOptions::new([3, 3])
                .strides([1, 1])
                .padding(Padding::Same)
                .count_include_pad(true),
        ),
    ];
    for (shape, o) in cases {
        for dtype in [DType::F32, DType::F64] {
            let counts = check(shape, &o, dtype, &mut rng);
            assert_eq!(counts.pool_kernels, counts.pools, "{shape:?} {o:?}");
        }
    }
}

#[test]
fn a_window_too_large_to_unroll_runs_the_native_loops_with_the_same_bits() {
    let mut rng = Rng(3);
    // Every output position of a 41×41 window over a 40×40 input has its own taps: the
    // unrolled kernel would hold about 40·40 windows of ~1000 taps.
    let o = Pool2dOptions::new([41, 41])
        .strides([1, 1])
        .padding(Padding::Same);
    let counts = check([1, 40, 40, 2], &o, DType::F32, &mut rng);
    assert!(counts.pools >= 5, "{counts:?}");
    assert_eq!(counts.pool_kernels, 0, "{counts:?}");
}
