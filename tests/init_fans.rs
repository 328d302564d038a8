//! Kernel layouts for the variance-scaling initializers: Keras' fans for HWIO kernels,
//! PyTorch's for OIHW ones, and the LeCun pair; their text format round trip.

use kiln::init::{self, Init, KernelLayout};
use kiln::prelude::*;

#[test]
fn fans_follow_keras_for_hwio_and_pytorch_for_oihw() {
    use KernelLayout::{Hwio, Oihw};
    // Dense / Linear: Keras [in, out], PyTorch [out, in].
    assert_eq!(init::fans_for(&[784, 256], Hwio), (784.0, 256.0));
    assert_eq!(init::fans_for(&[256, 784], Oihw), (784.0, 256.0));
    // Convolutions: HWIO [3, 3, 16, 32] and OIHW [32, 16, 3, 3] are the same filter.
    assert_eq!(init::fans_for(&[3, 3, 16, 32], Hwio), (144.0, 288.0));
    assert_eq!(init::fans_for(&[32, 16, 3, 3], Oihw), (144.0, 288.0));
    // A grouped OIHW filter: in is Cin/groups, as PyTorch's weight.size(1).
    assert_eq!(init::fans_for(&[64, 1, 5, 5], Oihw), (25.0, 1600.0));
    // Non-square windows and 1-D convolutions.
    assert_eq!(init::fans_for(&[8, 4, 1, 7], Oihw), (28.0, 56.0));
    assert_eq!(init::fans_for(&[5, 4, 8], Hwio), (20.0, 40.0));
    assert_eq!(init::fans_for(&[8, 4, 5], Oihw), (20.0, 40.0));
    // Below rank 2 both layouts agree (Keras' rule).
    for l in [Hwio, Oihw] {
        assert_eq!(init::fans_for(&[10], l), (10.0, 10.0));
        assert_eq!(init::fans_for(&[], l), (1.0, 1.0));
    }
    assert_eq!(
        init::fans(&[3, 3, 16, 32]),
        (144.0, 288.0),
        "fans is Keras'"
    );
}

/// Max |v|, and the standard deviation about 0.
fn spread(i: &Init, shape: &[usize]) -> (f64, f64) {
    let v = i.fill(DType::F32, shape).to_f64_vec();
    let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let std = (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
    (max, std)
}

#[test]
fn an_oihw_filter_gets_its_own_fan_in() {
    // 64 filters over 32 channels, 3x3: fan_in 288 in PyTorch's rule.
    let shape = [64, 32, 3, 3];
    let limit = (6.0f64 / 288.0).sqrt();
    let (max, std) = spread(&init::he_uniform(5).with_layout(KernelLayout::Oihw), &shape);
    assert!(max <= limit && max > 0.99 * limit, "{max} vs {limit}");
    assert!((std / (limit / 3f64.sqrt()) - 1.0).abs() < 0.02, "{std}");
    // Read as HWIO, the same shape gives fan_in 3 * 64 * 32 and a limit 4.6x smaller.
    let (hwio_max, _) = spread(&init::he_uniform(5), &shape);
    assert!(hwio_max < limit / 4.0, "{hwio_max}");

    // Glorot normal uses both fans: 288 and 576.
    let want = (2.0f64 / (288.0 + 576.0)).sqrt();
    let (_, std) = spread(
        &init::glorot_normal(2).with_layout(KernelLayout::Oihw),
        &shape,
    );
    assert!((std / want - 1.0).abs() < 0.02, "{std} vs {want}");
}

#[test]
fn the_same_filter_in_either_layout_gets_the_same_distribution() {
    // Same seed, same element count, same fans: the same values in storage order.
    for i in [
        init::glorot_uniform(9),
        init::glorot_normal(9),
        init::he_uniform(9),
        init::he_normal(9),
        init::lecun_uniform(9),
        init::lecun_normal(9),
    ] {
        let a = i.fill(DType::F32, &[3, 3, 16, 32]);
        let b = i
            .clone()
            .with_layout(KernelLayout::Oihw)
            .fill(DType::F32, &[32, 16, 3, 3]);
        assert_eq!(a.to_f64_vec(), b.to_f64_vec(), "{i:?}");
    }
}

#[test]
fn lecun_initializers_have_keras_variance() {
    let shape = [400, 300]; // fan_in 400
    let limit = (3.0f64 / 400.0).sqrt();
    let (max, std) = spread(&init::lecun_uniform(1), &shape);
    assert!(max <= limit && max > 0.99 * limit, "{max} vs {limit}");
    assert!((std / (limit / 3f64.sqrt()) - 1.0).abs() < 0.01, "{std}");
    let want = (1.0f64 / 400.0).sqrt();
    let (max, std) = spread(&init::lecun_normal(1), &shape);
    assert!((std / want - 1.0).abs() < 0.01, "{std} vs {want}");
    assert!(
        max <= 2.0 * want / 0.879_625_661 * (1.0 + 1e-6),
        "truncated: {max}"
    );
    assert_ne!(
        init::lecun_normal(1).fill(DType::F32, &[4, 4]),
        init::lecun_normal(2).fill(DType::F32, &[4, 4]),
        "the seed matters"
    );
}

#[test]
fn layouts_and_lecun_round_trip_through_the_text_format() {
    let g = Graph::new();
    let inits = [
        init::glorot_uniform(1),
        init::he_normal(2).with_layout(KernelLayout::Oihw),
        init::lecun_uniform(3),
        init::lecun_normal(4).with_layout(KernelLayout::Oihw),
        init::glorot_normal(5).with_layout(KernelLayout::Hwio),
    ];
    for (k, i) in inits.iter().enumerate() {
        g.variable(&format!("v{k}"), [4, 2, 3, 3], i.clone());
    }
    let text = g.dump();
    assert!(text.contains("glorot_uniform(seed=1)"), "{text}");
    assert!(text.contains("he_normal(seed=2,layout=oihw)"), "{text}");
    assert!(text.contains("lecun_normal(seed=4,layout=oihw)"), "{text}");
    let back = kiln::text::parse(&text).unwrap();
    assert_eq!(back.graph.dump(), text);
    // Each initializer comes back as it was, values included.
    let a = Session::new(&g).unwrap();
    let b = Session::new(&back.graph).unwrap();
    for k in 0..inits.len() {
        let name = format!("v{k}");
        let va = a.variable(g.by_name(&name).unwrap()).unwrap().clone();
        let vb = b
            .variable(back.graph.by_name(&name).unwrap())
            .unwrap()
            .clone();
        assert!(va.bits_eq(&vb), "{name}");
    }

    for bad in [
        "he_normal(seed=1,layout=nchw)",
        "zeros(layout=oihw)",
        "lecun_uniform(0.5,seed=1)",
        "lecun_normal()",
    ] {
        let text = format!("kiln.graph {{\n  %0 = variable(init={bad}) : f32[3]\n}}\n");
        let e = kiln::text::parse(&text).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{bad}: {e}");
    }
}
