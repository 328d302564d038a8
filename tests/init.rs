//! Initializers: Keras semantics (bounds, standard deviations, fans), seeded and reproducible.

use kiln::init::{self, Init};
use kiln::DType;

const SHAPE: [usize; 2] = [400, 300]; // fan_in 400, fan_out 300

fn stats(i: &Init) -> (Vec<f64>, f64, f64) {
    let v = i.fill(DType::F32, &SHAPE).to_f64_vec();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    (v, mean, std)
}

#[test]
fn uniform_families_respect_their_limits() {
    for (i, limit) in [
        (init::glorot_uniform(1), (6.0f64 / 700.0).sqrt()),
        (init::he_uniform(1), (6.0f64 / 400.0).sqrt()),
        (init::uniform(-0.3, 0.3, 1), 0.3),
    ] {
        let (v, mean, std) = stats(&i);
        let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(max <= limit + 1e-6, "{i:?}: {max} > {limit}");
        assert!(max > 0.99 * limit, "{i:?}: the range is not used: {max}");
        assert!(mean.abs() < 0.01 * limit, "{i:?}: mean {mean}");
        // U(-l, l) has std l/√3.
        let want = limit / 3f64.sqrt();
        assert!(
            (std / want - 1.0).abs() < 0.01,
            "{i:?}: std {std} vs {want}"
        );
    }
}

#[test]
fn normal_families_have_the_keras_standard_deviation() {
    for (i, want, truncated) in [
        (init::glorot_normal(2), (2.0f64 / 700.0).sqrt(), true),
        (init::he_normal(2), (2.0f64 / 400.0).sqrt(), true),
        (
            init::truncated_normal(0.0, 0.05, 2),
            0.05 * 0.879_625_661,
            true,
        ),
        (init::normal(0.0, 0.05, 2), 0.05, false),
    ] {
        let (v, mean, std) = stats(&i);
        assert!(mean.abs() < 0.01 * want, "{i:?}: mean {mean}");
        assert!(
            (std / want - 1.0).abs() < 0.01,
            "{i:?}: std {std} vs {want}"
        );
        if truncated {
            // Keras truncates at two standard deviations of the untruncated distribution.
            let cut = 2.0 * want / 0.879_625_661;
            assert!(v.iter().all(|x| x.abs() <= cut * (1.0 + 1e-6)), "{i:?}");
        }
    }
}

#[test]
fn constants_and_reproducibility() {
    assert!(init::zeros().fill(DType::F32, &[3]).to_f64_vec() == vec![0.0; 3]);
    assert!(init::ones().fill(DType::F64, &[2]).to_f64_vec() == vec![1.0; 2]);
    assert!(init::constant(0.25).fill(DType::F32, &[2]).to_f64_vec() == vec![0.25; 2]);
    let a = init::glorot_uniform(7).fill(DType::F32, &[5, 4]);
    let b = init::glorot_uniform(7).fill(DType::F32, &[5, 4]);
    let c = init::glorot_uniform(8).fill(DType::F32, &[5, 4]);
    assert!(a.bits_eq(&b), "the same seed gives the same weights");
    assert!(!a.bits_eq(&c), "another seed gives other weights");
}

#[test]
fn fans_follow_keras() {
    assert_eq!(init::fans(&[784, 256]), (784.0, 256.0));
    // A conv kernel [kh, kw, in, out]: receptive field 3*3.
    assert_eq!(init::fans(&[3, 3, 16, 32]), (144.0, 288.0));
    assert_eq!(init::fans(&[10]), (10.0, 10.0));
}
