//! 2-D pooling on the JIT, bitwise against the interpreter at 1 and 2 threads on random
//! pooling graphs; NCHW against NHWC; the errors; the text round trip; the Keras layers.

mod common;
mod pool_common;

use common::{assert_native, Rng};
use kiln::prelude::*;
use kiln::{DataFormat, Padding, Pool2dOptions};
use pool_common::{all_kinds, cfg, configs, tricky_f32, Cfg};

/// A random pooling configuration.
fn random_cfg(rng: &mut Rng) -> Cfg {
    loop {
        let k = [1 + rng.below(3), 1 + rng.below(3)];
        let s = [1 + rng.below(3), 1 + rng.below(3)];
        let d = [1 + rng.below(2), 1 + rng.below(2)];
        let padding = match rng.below(3) {
            0 => Padding::Valid,
            1 => Padding::Same,
            _ => Padding::Explicit([(rng.below(2), rng.below(2)), (rng.below(2), rng.below(2))]),
        };
        let shape = [
            1 + rng.below(3),
            2 + rng.below(8),
            2 + rng.below(8),
            1 + rng.below(9),
        ];
        let c = Cfg {
            shape,
            window: k,
            strides: s,
            dilations: d,
            padding,
            count_include_pad: rng.below(2) == 0,
        };
        // Keep only windows the shape rule accepts (it refuses, say, windows in the padding).
        let g = Graph::new();
        let _ = g.placeholder("x", DType::F32, shape).max_pool2d(&c.opts());
        if g.check().is_ok() {
            return c;
        }
    }
}

fn jit_runs(
    g: &Graph,
    fetch: &[Tensor<'_>],
    feeds: &[(Tensor<'_>, Array)],
    what: &str,
) -> Vec<Array> {
    let mut s = Session::new(g).unwrap();
    let out = s.run(fetch, feeds).unwrap();
    assert_native(&s, what);
    let steps = s.last_compile_times().unwrap().steps;
    assert!(steps.pools >= 1, "{what}: {steps:?}");
    out
}

#[test]
fn jit_is_bitwise_equal_to_the_interpreter_at_1_and_2_threads() {
    let mut rng = Rng(0x5eed_0f90);
    let mut cases: Vec<Cfg> = (0..40).map(|_| random_cfg(&mut rng)).collect();
    // Large enough to split over threads (the MNIST convnet's first pooling, smaller batch).
    cases.push(cfg([8, 26, 26, 32], [2, 2], [2, 2], Padding::Valid));
    cases.push(cfg([6, 11, 11, 64], [3, 3], [2, 2], Padding::Same));
    for c in cases {
        let what = format!("{c:?}");
        let g = Graph::new();
        let x = g.placeholder(
            "x",
            DType::F32,
            [None, Some(c.shape[1]), Some(c.shape[2]), Some(c.shape[3])],
        );
        let o = c.opts();
        let probe = x.max_pool2d(&o).shape();
        let u = g.placeholder("u", DType::F32, &probe);
        let w = g.placeholder(
            "w",
            DType::F32,
            [None, Some(c.shape[1]), Some(c.shape[2]), Some(c.shape[3])],
        );
        let fetch = all_kinds(x, u, w, &o);
        g.check().unwrap();
        let n: usize = c.shape.iter().product();
        let ys = probe.resolve(c.shape[0]);
        let un: usize = ys.iter().product();
        let feeds = vec![
            (x, Array::new(c.shape, tricky_f32(&mut rng, n)).unwrap()),
            (u, Array::new(&ys, tricky_f32(&mut rng, un)).unwrap()),
            (w, Array::new(c.shape, tricky_f32(&mut rng, n)).unwrap()),
        ];
        let reference = Interpreter::new(&g).unwrap().run(&fetch, &feeds).unwrap();
        kiln::threads::set_threads(1);
        let one = jit_runs(&g, &fetch, &feeds, &what);
        kiln::threads::set_threads(2);
        let two = jit_runs(&g, &fetch, &feeds, &what);
        kiln::threads::set_threads(0);
        for (k, ((r, a), b)) in reference.iter().zip(&one).zip(&two).enumerate() {
            assert!(
                r.bits_eq(a),
                "{what}: output {k}: JIT differs from the interpreter"
            );
            assert!(a.bits_eq(b), "{what}: output {k}: 2 threads differ from 1");
        }
    }
}

#[test]
fn nchw_pools_like_nhwc() {
    let mut rng = Rng(77);
    for c in configs() {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, c.shape);
        let [n, h, w, ch] = c.shape;
        let xc = g.placeholder("xc", DType::F32, [n, ch, h, w]);
        let o = c.opts();
        let oc = o.clone().format(DataFormat::Nchw);
        let to_nhwc = [0, 2, 3, 1];
        let fetch = [
            x.max_pool2d(&o),
            xc.max_pool2d(&oc).permute(&to_nhwc),
            x.avg_pool2d(&o),
            xc.avg_pool2d(&oc).permute(&to_nhwc),
            x.global_avg_pool2d(DataFormat::Nhwc),
            xc.global_avg_pool2d(DataFormat::Nchw),
        ];
        g.check().unwrap();
        let xs = Array::new(c.shape, tricky_f32(&mut rng, n * h * w * ch)).unwrap();
        // The same values in NCHW order.
        let v = xs.to_vec::<f32>().unwrap();
        let mut vc = vec![0.0f32; v.len()];
        for b in 0..n {
            for y in 0..h {
                for xx in 0..w {
                    for k in 0..ch {
                        vc[((b * ch + k) * h + y) * w + xx] = v[((b * h + y) * w + xx) * ch + k];
                    }
                }
            }
        }
        let feeds = [(x, xs), (xc, Array::new([n, ch, h, w], vc).unwrap())];
        for backend in [Backend::Interpreter, Backend::Jit] {
            let mut s = Session::with_backend(&g, backend).unwrap();
            let out = s.run(&fetch, &feeds).unwrap();
            for k in 0..3 {
                assert!(
                    out[2 * k].bits_eq(&out[2 * k + 1]),
                    "{c:?} {backend:?} pair {k}"
                );
            }
        }
    }
}

/// The error a failed build records, with the test file's line checked and then blanked.
fn error_at(g: &Graph, line: u32) -> String {
    let msg = g.check().unwrap_err().to_string();
    let at = format!("tests/pool_jit.rs:{line}:");
    assert!(msg.contains(&at), "{msg} does not name line {line}");
    msg.replace(&at, "tests/pool_jit.rs:L:")
}

#[test]
fn errors_name_the_op_the_shapes_and_the_line() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(28), Some(28)]);
    let line = line!() + 1;
    let _ = x.max_pool2d(&Pool2dOptions::new([2, 2]));
    let e = error_at(&g, line);
    assert!(e.starts_with("max_pool2d at tests/pool_jit.rs:L:"), "{e}");
    assert!(
        e.contains("rank-4") && e.contains("f32[?,28,28] \"x\""),
        "{e}"
    );

    let g = Graph::new();
    let x = g.placeholder("img", DType::F32, [None, Some(3), Some(3), Some(8)]);
    let line = line!() + 1;
    let _ = x.avg_pool2d(&Pool2dOptions::new([4, 4]));
    let e = error_at(&g, line);
    assert!(e.starts_with("avg_pool2d at tests/pool_jit.rs:L:"), "{e}");
    assert!(
        e.contains("larger than the padded input") && e.contains("f32[?,3,3,8] \"img\""),
        "{e}"
    );

    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [1, 4, 4, 1]);
    let line = line!() + 1;
    let _ = x.max_pool2d(&Pool2dOptions::new([2, 2]).padding(Padding::Explicit([(2, 0), (0, 0)])));
    let e = error_at(&g, line);
    assert!(
        e.contains("lies entirely in the padding") && e.contains("f32[1,4,4,1]"),
        "{e}"
    );

    let g = Graph::new();
    let x = g.placeholder("x", DType::I32, [1, 4, 4, 1]);
    let line = line!() + 1;
    let _ = x.max_pool2d(&Pool2dOptions::new([2, 2]));
    let e = error_at(&g, line);
    assert!(e.contains("float") && e.contains("i32[1,4,4,1]"), "{e}");

    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [1, 4, 4, 1]);
    let line = line!() + 1;
    let _ = x.max_pool2d(&Pool2dOptions::new([2, 0]));
    let e = error_at(&g, line);
    assert!(e.contains("at least 1"), "{e}");
}

#[test]
fn dumps_parse_back_to_the_same_graph() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(6), Some(5), Some(2)]);
    let u = g.placeholder("u", DType::F32, [None, Some(3), Some(3), Some(2)]);
    let o = Pool2dOptions::new([3, 2])
        .strides([2, 2])
        .padding(Padding::Same)
        .dilations([1, 1]);
    let fetch = all_kinds(x, u, x, &o);
    let _ = fetch;
    let text = g.dump();
    for name in [
        "max_pool2d(",
        "avg_pool2d(",
        "max_pool2d_grad(",
        "max_pool2d_gather(",
        "avg_pool2d_grad(",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    assert!(text.contains("input_hw=[6,5]"), "{text}");
    let again = Graph::parse(&text).unwrap().dump();
    assert_eq!(text, again);
}

#[test]
fn keras_layers_show_their_shapes_and_no_params_and_train() {
    use kiln::nn::*;
    let mut m = Sequential::new([
        Input::new([12, 12, 2]).into(),
        MaxPooling2D::new([2, 2]).into(),
        AveragePooling2D::new([3, 3])
            .strides([1, 1])
            .padding(Padding::Same)
            .into(),
        MaxPooling2D::new([3, 3]).strides([2, 2]).into(),
        GlobalAveragePooling2D::new().into(),
        Dense::new(3).into(),
    ]);
    m.compile(
        Sgd::new(0.1),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[],
    )
    .unwrap();
    let s = m.summary().unwrap();
    for (layer, shape) in [
        ("max_pooling2d (MaxPooling2D)", "(None, 6, 6, 2)"),
        ("average_pooling2d (AveragePooling2D)", "(None, 6, 6, 2)"),
        ("max_pooling2d_1 (MaxPooling2D)", "(None, 2, 2, 2)"),
        (
            "global_average_pooling2d (GlobalAveragePooling2D)",
            "(None, 2)",
        ),
    ] {
        let row = s.lines().find(|l| l.trim_start().starts_with(layer));
        let row = row.unwrap_or_else(|| panic!("{layer} not in\n{s}"));
        assert!(row.contains(shape) && row.ends_with(" 0"), "{row:?}");
    }
    assert!(s.contains("Total params: 9"), "{s}");
    // A pooling model trains: the loss on a fixed batch goes down.
    let mut rng = Rng(5);
    let xs: Vec<f32> = (0..16 * 288).map(|_| rng.f32()).collect();
    let x = Array::new([16, 12, 12, 2], xs).unwrap();
    let y = Array::new([16], (0..16i32).map(|i| i % 3).collect::<Vec<_>>()).unwrap();
    let h = m
        .fit(
            &x,
            &y,
            FitConfig::new()
                .epochs(5)
                .batch_size(16)
                .verbosity(Verbosity::Silent),
        )
        .unwrap();
    let loss = h.get("loss").unwrap();
    assert!(loss[4] < loss[0], "{loss:?}");

    // A flat input is refused with the layer's name.
    let mut bad = Sequential::new([Input::new([784]).into(), MaxPooling2D::new([2, 2]).into()]);
    let e = bad.summary().unwrap_err().to_string();
    assert!(
        e.contains("MaxPooling2D takes a 4-D") && e.contains("[?,784]"),
        "{e}"
    );
}

#[test]
fn a_window_whose_area_overflows_is_an_error() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [1, 2, 2, 1]);
    let huge = 1usize << 40;
    let o =
        Pool2dOptions::new([huge, huge]).padding(Padding::Explicit([(huge - 1, 0), (huge - 1, 0)]));
    let _ = x.avg_pool2d(&o);
    let e = g.check().unwrap_err().to_string();
    assert!(e.contains("overflows") && e.contains("f32[1,2,2,1]"), "{e}");
}
