//! ResNet blocks as the ONNX importer builds them (NCHW convolutions with OIHW filters,
//! batch normalization as `(x − mean) / sqrt(var + eps) · scale + bias` over `[1, C, 1, 1]`
//! reshapes, a residual add, ReLU) at batch 1, where every activation is `[1, H, W, C]`
//! after the layout pass: bitwise the same at 1, 2 and 3 threads, and within the
//! convolution tests' tolerance of the interpreter. At batch 1 the epilogue kernels split
//! along `H` (the first axis whose extent is not 1), so two threads really share them.

mod common;

use common::Rng;
use kiln::prelude::*;
use kiln::{Conv2dOptions, DataFormat, Padding};

/// One random bottleneck-like block.
#[derive(Clone, Debug)]
struct Case {
    /// Input channels, height and width (batch 1).
    c: usize,
    hw: [usize; 2],
    /// The main branch's middle channels and output channels.
    mid: usize,
    out: usize,
    /// The 3×3 convolution's stride (the shortcut projects when it is 2 or `c != out`).
    stride: usize,
}

/// Batch normalization in the importer's form, with random statistics as placeholders.
fn bn<'g>(
    g: &'g Graph,
    x: Tensor<'g>,
    ch: usize,
    name: &str,
    feeds: &mut Vec<(Tensor<'g>, Array)>,
    rng: &mut Rng,
) -> Tensor<'g> {
    let mut stat = |what: &str, lo: f32, span: f32| {
        let t = g.placeholder(&format!("{name}.{what}"), DType::F32, [ch]);
        let v: Vec<f32> = (0..ch)
            .map(|_| lo + span * (rng.f32() + 2.0) / 4.0)
            .collect();
        feeds.push((t, Array::new([ch], v).unwrap()));
        t.reshape([1, ch, 1, 1])
    };
    let (scale, bias) = (stat("scale", 0.5, 1.0), stat("bias", -0.5, 1.0));
    let (mean, var) = (stat("mean", -0.5, 1.0), stat("var", 0.25, 2.0));
    (x - mean) / (var + g.scalar(1e-5)).sqrt() * scale + bias
}

/// An OIHW filter placeholder of `o × i × k × k`, He-scaled values.
fn conv<'g>(
    g: &'g Graph,
    x: Tensor<'g>,
    (i, o, k, stride): (usize, usize, usize, usize),
    name: &str,
    feeds: &mut Vec<(Tensor<'g>, Array)>,
    rng: &mut Rng,
) -> Tensor<'g> {
    let w = g.placeholder(name, DType::F32, [o, i, k, k]);
    let scale = (2.0 / (i * k * k) as f32).sqrt();
    let v: Vec<f32> = (0..o * i * k * k).map(|_| rng.f32() * scale).collect();
    feeds.push((w, Array::new([o, i, k, k], v).unwrap()));
    let opts = Conv2dOptions {
        strides: [stride, stride],
        padding: if k == 1 {
            Padding::Valid
        } else {
            Padding::Explicit([(1, 1), (1, 1)])
        },
        format: DataFormat::Nchw,
        ..Conv2dOptions::default()
    };
    x.conv2d(w, &opts)
}

/// The block's output and feeds.
fn build<'g>(g: &'g Graph, c: &Case, rng: &mut Rng) -> (Tensor<'g>, Vec<(Tensor<'g>, Array)>) {
    let mut feeds = vec![];
    let x = g.placeholder("x", DType::F32, [1, c.c, c.hw[0], c.hw[1]]);
    let n = c.c * c.hw[0] * c.hw[1];
    let xv: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
    feeds.push((x, Array::new([1, c.c, c.hw[0], c.hw[1]], xv).unwrap()));
    let f = &mut feeds;
    let a = conv(g, x, (c.c, c.mid, 1, 1), "w1", f, rng);
    let a = bn(g, a, c.mid, "bn1", f, rng).relu();
    let a = conv(g, a, (c.mid, c.mid, 3, c.stride), "w2", f, rng);
    let a = bn(g, a, c.mid, "bn2", f, rng).relu();
    let a = conv(g, a, (c.mid, c.out, 1, 1), "w3", f, rng);
    let a = bn(g, a, c.out, "bn3", f, rng);
    let short = if c.stride != 1 || c.c != c.out {
        let s = conv(g, x, (c.c, c.out, 1, c.stride), "wp", f, rng);
        bn(g, s, c.out, "bnp", f, rng)
    } else {
        x
    };
    ((a + short).relu(), feeds)
}

fn run(g: &Graph, y: Tensor<'_>, feeds: &[(Tensor<'_>, Array)], backend: Backend) -> Array {
    let mut s = Session::with_backend(g, backend).unwrap();
    let out = s.run(&[y], feeds).unwrap().remove(0);
    if backend == Backend::Jit {
        common::assert_native(&s, "resnet block");
    }
    out
}

#[test]
fn blocks_are_thread_count_independent_and_match_the_interpreter() {
    let mut rng = Rng(0x5eed_1818);
    let mut cases = vec![
        // Wide enough for Winograd on the 3×3 (both channel counts ≥ 64).
        Case {
            c: 64,
            hw: [14, 14],
            mid: 64,
            out: 64,
            stride: 1,
        },
        // A stride-2 first block with a projection, odd sizes.
        Case {
            c: 24,
            hw: [15, 13],
            mid: 16,
            out: 40,
            stride: 2,
        },
    ];
    for _ in 0..4 {
        cases.push(Case {
            c: 4 + rng.below(40),
            hw: [1 + rng.below(20), 1 + rng.below(20)],
            mid: 4 + rng.below(40),
            out: 4 + rng.below(40),
            stride: 1 + rng.below(2),
        });
    }
    for c in &cases {
        let g = Graph::new();
        let (y, feeds) = build(&g, c, &mut rng);
        kiln::threads::set_threads(1);
        let one = run(&g, y, &feeds, Backend::Jit);
        for t in [2, 3] {
            kiln::threads::set_threads(t);
            let many = run(&g, y, &feeds, Backend::Jit);
            assert!(one.bits_eq(&many), "{c:?}: differs at {t} threads");
        }
        kiln::threads::set_threads(0);
        let reference = run(&g, y, &feeds, Backend::Interpreter);
        let (a, b) = (one.to_f64_vec(), reference.to_f64_vec());
        let worst = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs() / (1.0 + q.abs()))
            .fold(0.0, f64::max);
        assert!(worst <= 1e-4, "{c:?}: {worst} from the interpreter");
        assert!(a.iter().any(|&v| v > 0.0), "{c:?}: all zero after ReLU");
    }
}

/// Elementwise kernels over `[1, …, 1, H, W, C]`-like domains (leading unit axes) are split
/// along their first non-unit axis: bitwise the interpreter's values at 1, 2 and 3 threads,
/// including shapes whose only non-unit axis is the innermost (never split there) and a
/// broadcast operand along the split axis.
#[test]
fn elementwise_kernels_with_leading_unit_axes() {
    let mut rng = Rng(0xba7c_0001);
    let shapes: [&[usize]; 5] = [
        &[1, 56, 56, 64],
        &[1, 1, 300, 67],
        &[1, 1, 1, 70_001],
        &[1, 7, 1, 9_999],
        &[1, 1, 1, 1],
    ];
    for shape in shapes {
        let g = Graph::new();
        let n: usize = shape.iter().product();
        let ch = *shape.last().unwrap();
        let x = g.placeholder("x", DType::F32, shape);
        let s = g.placeholder("s", DType::F32, [ch]);
        let y = ((x - s) / (s * s + g.scalar(1.0)).sqrt()).relu() + x * g.scalar(0.5);
        let feeds = vec![
            (
                x,
                Array::new(shape, (0..n).map(|_| rng.f32()).collect::<Vec<_>>()).unwrap(),
            ),
            (
                s,
                Array::new([ch], (0..ch).map(|_| rng.f32()).collect::<Vec<_>>()).unwrap(),
            ),
        ];
        kiln::threads::set_threads(0);
        let reference = run(&g, y, &feeds, Backend::Interpreter);
        for t in [1, 2, 3] {
            kiln::threads::set_threads(t);
            let got = run(&g, y, &feeds, Backend::Jit);
            assert!(
                got.bits_eq(&reference),
                "{shape:?} at {t} threads differs from the interpreter"
            );
        }
    }
    kiln::threads::set_threads(0);
}
