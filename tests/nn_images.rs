//! The Keras level with images: rank-3 inputs (NHWC examples), `Reshape`, `Flatten`,
//! `BatchNormalization` per channel, fan rules for convolution kernels, `summary` of image
//! shapes and MNIST as images. The convolution and pooling layers build on these.

use kiln::nn::*;
use kiln::prelude::*;

fn quiet() -> FitConfig {
    FitConfig::new().verbosity(Verbosity::Silent)
}

/// Deterministic values in roughly [-2, 2], offset per channel so that each channel has its
/// own mean and scale (`c` channels, last axis).
fn images(shape: &[usize], seed: u64) -> Array {
    let c = *shape.last().unwrap();
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let ch = (i % c) as f32;
            (1.0 + ch) * kiln::internals::standard_normal(seed, 0, i as u64) + 3.0 * ch - 1.0
        })
        .collect();
    Array::new(shape, v).unwrap()
}

/// Per-channel mean and biased variance over every other axis, in f64.
fn channel_stats(x: &[f32], c: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (x.len() / c) as f64;
    let mut mean = vec![0.0; c];
    for (i, &v) in x.iter().enumerate() {
        mean[i % c] += v as f64 / m;
    }
    let mut var = vec![0.0; c];
    for (i, &v) in x.iter().enumerate() {
        var[i % c] += (v as f64 - mean[i % c]).powi(2) / m;
    }
    (mean, var)
}

fn close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

fn weight(m: &Model, suffix: &str) -> Vec<f32> {
    let w = m.get_weights().unwrap();
    let (_, a) = w.iter().find(|(n, _)| n.ends_with(suffix)).unwrap();
    a.to_vec::<f32>().unwrap()
}

#[test]
fn reshape_gives_each_example_the_target_shape_and_infers_minus_one() {
    let mut m = Sequential::new([Input::new([12]).into(), Reshape::new([2, -1, 3]).into()]);
    m.build().unwrap();
    let (input, out) = (m.input().unwrap(), m.output().unwrap());
    assert_eq!(out.shape().to_string(), "[?,2,2,3]");
    let x = images(&[5, 12], 1);
    let y = Session::new(m.graph())
        .unwrap()
        .run(&[out], &[(input, x.clone())])
        .unwrap();
    assert_eq!(y[0].shape(), &[5, 2, 2, 3]);
    assert!(y[0].bits_eq(&x.reshape([5, 2, 2, 3]).unwrap()));
    // Back to rows, and from images to images.
    let m2 = Model::functional(&[&[4, 4, 2]], |b, ins| {
        let a = b.apply(Reshape::new([-1]), ins[0])?;
        let c = b.apply(Reshape::new([8, 4]), ins[0])?;
        Ok(vec![a, c])
    })
    .unwrap();
    let shapes: Vec<String> = m2
        .outputs()
        .unwrap()
        .iter()
        .map(|t| t.shape().to_string())
        .collect();
    assert_eq!(shapes, ["[?,32]", "[?,8,4]"]);
}

#[test]
fn a_reshape_that_does_not_fit_names_the_layer_the_shapes_and_the_users_line() {
    let line = line!() + 4;
    let mut m = Sequential::new([
        Input::new([784]).into(),
        Dense::new(4).into(),
        Reshape::new([7, 7, 15]).into(),
    ]);
    let e = m.build().unwrap_err().to_string();
    for part in [
        "reshape (Reshape)",
        &format!("tests/nn_images.rs:{line}:"),
        "[4]",
        "[7, 7, 15]",
        "735 elements per example, the input 4",
    ] {
        assert!(e.contains(part), "{part:?} missing from: {e}");
    }
    for (target, why) in [
        (vec![-1, -1], "at most one entry"),
        (vec![3, -1], "do not divide"),
        (vec![0, 4], "must be positive"),
        (vec![2, -2], "must be positive"),
    ] {
        let mut m = Sequential::new([Input::new([4]).into(), Reshape::new(&target).into()]);
        let e = m.build().unwrap_err().to_string();
        assert!(e.contains(why), "{target:?}: {e}");
    }
}

#[test]
fn an_image_model_fits_evaluates_and_predicts_nhwc_batches() {
    // Two classes of 4x4 one-channel images: bright top half or bright bottom half.
    let n = 64;
    let mut xs = vec![];
    let mut ys = vec![];
    for i in 0..n {
        let top = i % 2 == 0;
        for p in 0..16u64 {
            let bright = (p < 8) == top;
            let noise = 0.2 * kiln::internals::standard_normal(3, 0, (i * 16) as u64 + p);
            xs.push(if bright { 1.0 } else { 0.0 } + noise);
        }
        ys.push(i32::from(!top));
    }
    let x = Array::new([n, 4, 4, 1], xs).unwrap();
    let y = Array::new([n], ys).unwrap();
    let mut m = Sequential::new([
        Input::new([4, 4, 1]).into(),
        BatchNormalization::new().into(),
        Flatten.into(),
        Dense::new(2).into(),
    ]);
    m.compile(
        Adam::new(0.05),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::Accuracy],
    )
    .unwrap();
    assert_eq!(m.input().unwrap().shape().to_string(), "[?,4,4,1]");
    let h = m
        .fit(
            &x,
            &y,
            quiet().epochs(20).batch_size(16).validation_split(0.25),
        )
        .unwrap();
    assert!(*h.get("accuracy").unwrap().last().unwrap() > 0.95);
    assert!(*h.get("val_accuracy").unwrap().last().unwrap() > 0.9);
    assert!(m.evaluate(&x, &y, 10).unwrap()["accuracy"] > 0.95);
    assert_eq!(m.predict(&x, 10).unwrap().shape(), &[64, 2]);
    // Flat rows for an image model: the error says which shape and how to get it.
    let flat = x.clone().reshape([64, 16]).unwrap();
    let e = m.predict(&flat, 10).unwrap_err().to_string();
    for part in [
        "[64, 16]",
        "f32[?,4,4,1]",
        "[4, 4, 1]",
        "reshape([64, 4, 4, 1])",
    ] {
        assert!(e.contains(part), "{part:?} missing from: {e}");
    }
    let e = m.fit(&flat, &y, quiet()).unwrap_err().to_string();
    assert!(e.starts_with("fit: x has shape [64, 16]"), "{e}");
}

/// A model of one BatchNormalization layer on `[h, w, c]` examples.
fn batch_norm_model(example: &[usize]) -> Model {
    Model::functional(&[example], |b, ins| {
        Ok(vec![b.apply(BatchNormalization::new(), ins[0])?])
    })
    .unwrap()
}

#[test]
fn batch_normalization_on_images_normalizes_each_channel_over_batch_and_positions() {
    let m = batch_norm_model(&[3, 5, 4]);
    assert_eq!(m.output().unwrap().ty().to_string(), "f32[?,3,5,4]");
    let (x_in, out, training) = (
        m.input().unwrap(),
        m.output().unwrap(),
        m.training_flag().unwrap(),
    );
    let mut sess = Session::new(m.graph()).unwrap();
    let x = images(&[2, 3, 5, 4], 5);
    let xv = x.to_vec::<f32>().unwrap();
    let (mean, var) = channel_stats(&xv, 4);
    let run = |sess: &mut Session, t: bool| {
        let o = sess
            .run(&[out], &[(x_in, x.clone()), (training, Array::scalar(t))])
            .unwrap();
        o[0].to_vec::<f32>().unwrap()
    };
    // Training: gamma 1 and beta 0, so the output is (x - mean_c) / sqrt(var_c + 0.001).
    let want: Vec<f64> = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 - mean[i % 4]) / (var[i % 4] + 1e-3).sqrt())
        .collect();
    close(&run(&mut sess, true), &want, 1e-5, "training");
    // Inference with fresh moving statistics (mean 0, variance 1): x / sqrt(1.001).
    let want: Vec<f64> = xv.iter().map(|&v| v as f64 / 1.001f64.sqrt()).collect();
    close(&run(&mut sess, false), &want, 1e-6, "inference");
}

#[test]
fn batch_normalization_needs_a_channel_axis() {
    let e = Model::functional(&[&[]], |b, ins| {
        Ok(vec![b.apply(BatchNormalization::new(), ins[0])?])
    })
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("BatchNormalization takes") && e.contains("got [?]"),
        "{e}"
    );
}

#[test]
fn batch_normalization_on_images_has_the_finite_difference_gradient() {
    let m = batch_norm_model(&[2, 3, 2]);
    let g = m.graph();
    let (x_in, out, training) = (
        m.input().unwrap(),
        m.output().unwrap(),
        m.training_flag().unwrap(),
    );
    // Per-example weights (broadcast over the batch), and a cube so that the examples of the
    // batch weigh differently.
    let r = g.constant(images(&[2, 3, 2], 11));
    let loss = (out * r).sum_all() + (out * out * out).sum_all() * 0.1;
    let dx = grad(loss, &[x_in]).unwrap()[0];
    let mut sess = Session::new(g).unwrap();
    let x = images(&[2, 2, 3, 2], 7);
    let mut eval = |fetch: Tensor<'_>, xv: &Array| {
        let o = sess
            .run(
                &[fetch],
                &[(x_in, xv.clone()), (training, Array::scalar(true))],
            )
            .unwrap();
        o.into_iter().next().unwrap()
    };
    let analytic = eval(dx, &x).to_vec::<f32>().unwrap();
    let base = x.to_vec::<f32>().unwrap();
    let h = 1e-2f32;
    let mut largest = 0.0f64;
    for i in 0..base.len() {
        let at = |d: f32| {
            let mut v = base.clone();
            v[i] += d;
            Array::new([2, 2, 3, 2], v).unwrap()
        };
        let up = eval(loss, &at(h)).scalar_value::<f32>().unwrap() as f64;
        let down = eval(loss, &at(-h)).scalar_value::<f32>().unwrap() as f64;
        let fd = (up - down) / (2.0 * h as f64);
        let a = analytic[i] as f64;
        largest = largest.max(a.abs());
        assert!(
            (fd - a).abs() < 2e-2 * (1.0 + a.abs()),
            "d loss / d x[{i}]: analytic {a}, finite difference {fd}"
        );
    }
    assert!(largest > 0.1, "the gradient is not trivially zero");
}

#[test]
fn batch_normalization_on_images_trains_a_step_and_moves_its_statistics() {
    let mut m = Sequential::new([
        Input::new([3, 3, 2]).into(),
        BatchNormalization::new().momentum(0.5).into(),
    ]);
    let lr = 0.1;
    m.compile(Sgd::new(lr), Loss::MeanSquaredError, &[])
        .unwrap();
    let s = m.summary().unwrap();
    assert!(s.contains("(None, 3, 3, 2)"), "{s}");
    assert!(s.contains("Non-trainable params: 4"), "{s}");
    let x = images(&[4, 3, 3, 2], 21);
    let y = images(&[4, 3, 3, 2], 22);
    let (xv, yv) = (x.to_vec::<f32>().unwrap(), y.to_vec::<f32>().unwrap());
    let (mean, var) = channel_stats(&xv, 2);
    m.fit(&x, &y, quiet().epochs(1).batch_size(4)).unwrap();
    // One full-batch step with momentum 0.5 from (0, 1).
    let want_mm: Vec<f64> = mean.iter().map(|&v| 0.5 * v).collect();
    let want_mv: Vec<f64> = var.iter().map(|&v| 0.5 + 0.5 * v).collect();
    close(&weight(&m, "moving_mean"), &want_mm, 1e-5, "moving_mean");
    close(
        &weight(&m, "moving_variance"),
        &want_mv,
        1e-5,
        "moving_variance",
    );
    // SGD on mean((xhat * gamma + beta - y)^2) from gamma 1, beta 0:
    // d/dbeta_c = 2/M sum(xhat - y), d/dgamma_c = 2/M sum((xhat - y) xhat), sums over c's.
    let total = xv.len() as f64;
    let (mut gb, mut gg) = (vec![0.0; 2], vec![0.0; 2]);
    for (i, (&v, &t)) in xv.iter().zip(&yv).enumerate() {
        let c = i % 2;
        let xhat = (v as f64 - mean[c]) / (var[c] + 1e-3).sqrt();
        gb[c] += 2.0 / total * (xhat - t as f64);
        gg[c] += 2.0 / total * (xhat - t as f64) * xhat;
    }
    let beta: Vec<f64> = gb.iter().map(|g| -lr * g).collect();
    let gamma: Vec<f64> = gg.iter().map(|g| 1.0 - lr * g).collect();
    close(&weight(&m, "beta"), &beta, 1e-5, "beta");
    close(&weight(&m, "gamma"), &gamma, 1e-5, "gamma");
    // Inference normalizes with the moving statistics and the trained gamma and beta.
    let p = m.predict(&x, 3).unwrap().to_vec::<f32>().unwrap();
    let want: Vec<f64> = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i % 2;
            (v as f64 - want_mm[c]) / (want_mv[c] + 1e-3).sqrt() * gamma[c] + beta[c]
        })
        .collect();
    close(&p, &want, 1e-4, "predict");
}

#[test]
fn conv_kernels_get_keras_fans_in_every_variance_scaling_initializer() {
    // HWIO [3, 3, 32, 64]: receptive field 9, fan_in 288, fan_out 576.
    let shape = [3, 3, 32, 64];
    assert_eq!(init::fans(&shape), (288.0, 576.0));
    let std_of = |i: init::Init| {
        let v = i.fill(DType::F32, &shape).to_f64_vec();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        (std, max)
    };
    for (i, limit) in [
        (init::glorot_uniform(3), (6.0f64 / (288.0 + 576.0)).sqrt()),
        (init::he_uniform(3), (6.0f64 / 288.0).sqrt()),
    ] {
        let (std, max) = std_of(i.clone());
        assert!(
            max <= limit * (1.0 + 1e-6) && max > 0.99 * limit,
            "{i:?}: {max}"
        );
        let want = limit / 3f64.sqrt();
        assert!(
            (std / want - 1.0).abs() < 0.02,
            "{i:?}: std {std} vs {want}"
        );
    }
    for (i, want) in [
        (init::glorot_normal(4), (2.0f64 / (288.0 + 576.0)).sqrt()),
        (init::he_normal(4), (2.0f64 / 288.0).sqrt()),
    ] {
        let (std, max) = std_of(i.clone());
        assert!(
            (std / want - 1.0).abs() < 0.02,
            "{i:?}: std {std} vs {want}"
        );
        assert!(
            max <= 2.0 * want / 0.879_625_661 * (1.0 + 1e-6),
            "{i:?}: {max}"
        );
    }
}

#[test]
fn summary_of_an_image_model_reads_like_keras() {
    let mut m = Sequential::new([
        Input::new([784]).into(),
        Reshape::new([28, 28, 1]).into(),
        BatchNormalization::new().into(),
        Flatten.into(),
        Dropout::new(0.5).into(),
        Dense::new(10).into(),
    ]);
    insta::assert_snapshot!(m.summary().unwrap());
}

#[test]
fn mnist_loads_as_nhwc_images_without_copying_pixels() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let flat = kiln::data::load_mnist(root.join("data/mnist")).unwrap();
    let (test_x, train_y) = (flat.test_x.clone(), flat.train_y.clone());
    // Row-major NHWC: pixel (r, c) of image i is flat element i * 784 + r * 28 + c.
    // The brightest pixel of image 3, away from the diagonal (where r == c hides a swap).
    let i = 3;
    let row = &flat.train_x.as_slice::<f32>().unwrap()[i * 784..(i + 1) * 784];
    let k = (0..784)
        .filter(|k| k / 28 != k % 28)
        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
        .unwrap();
    let (r, c, pixel) = (k / 28, k % 28, row[k]);
    assert!(pixel > 0.0);
    let img = flat.into_images().unwrap();
    assert_eq!(img.train_x.shape(), &[60000, 28, 28, 1]);
    assert_eq!(img.test_x.shape(), &[10000, 28, 28, 1]);
    assert_eq!(img.train_y, train_y);
    assert_eq!(
        img.test_x.as_slice::<f32>().unwrap(),
        test_x.as_slice::<f32>().unwrap()
    );
    assert_eq!(
        img.train_x.as_slice::<f32>().unwrap()[(i * 28 + r) * 28 + c],
        pixel
    );
    let e = img.into_images().unwrap_err().to_string();
    assert!(
        e.contains("[60000, 28, 28, 1]") && e.contains("not [n, 784]"),
        "{e}"
    );
}

/// A layer that only has a kind, to see the name it gets.
struct Kind(&'static str);

impl Layer for Kind {
    fn kind(&self) -> &'static str {
        self.0
    }
    fn call<'g>(&mut self, _ctx: &Ctx<'g>, x: Tensor<'g>) -> kiln::Result<Tensor<'g>> {
        Ok(x)
    }
}

#[test]
fn layers_are_named_by_keras_snake_case() {
    for (kind, name) in [
        ("Dense", "dense"),
        ("BatchNormalization", "batch_normalization"),
        ("InputLayer", "input_layer"),
        ("Conv2D", "conv2d"),
        ("DepthwiseConv2D", "depthwise_conv2d"),
        ("MaxPooling2D", "max_pooling2d"),
        ("GlobalAveragePooling2D", "global_average_pooling2d"),
        ("Conv2DTranspose", "conv2d_transpose"),
        ("MyLSTMLayer", "my_lstm_layer"),
    ] {
        assert_eq!(Kind(kind).base_name(), name);
    }
    // The names scope the variables: a second layer of a kind gets `_1`.
    let mut m = Sequential::new([
        Input::new([4, 4, 1]).into(),
        Kind("MaxPooling2D").into(),
        Kind("MaxPooling2D").into(),
    ]);
    let s = m.summary().unwrap();
    assert!(s.contains(" max_pooling2d (MaxPooling2D) "), "{s}");
    assert!(s.contains(" max_pooling2d_1 (MaxPooling2D) "), "{s}");
}
