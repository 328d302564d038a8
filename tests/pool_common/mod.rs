//! Helpers shared by the pooling tests (`tests/pool.rs`, `tests/pool_jit.rs`): the swept
//! configurations, inputs with ties, NaNs and signed zeros, and a graph of every pooling kind.
#![allow(dead_code)]

use crate::common::Rng;
use kiln::autodiff::vjp;
use kiln::prelude::*;
use kiln::{Padding, Pool2dOptions};

/// A pooling configuration.
#[derive(Clone, Debug)]
pub struct Cfg {
    pub shape: [usize; 4],
    pub window: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub padding: Padding,
    pub count_include_pad: bool,
}

impl Cfg {
    pub fn opts(&self) -> Pool2dOptions {
        Pool2dOptions::new(self.window)
            .strides(self.strides)
            .dilations(self.dilations)
            .padding(self.padding)
            .count_include_pad(self.count_include_pad)
    }
}

pub fn cfg(shape: [usize; 4], window: [usize; 2], strides: [usize; 2], padding: Padding) -> Cfg {
    Cfg {
        shape,
        window,
        strides,
        dilations: [1, 1],
        padding,
        count_include_pad: false,
    }
}

/// The configurations the value and gradient tests sweep.
pub fn configs() -> Vec<Cfg> {
    let mut v = vec![
        cfg([2, 4, 4, 3], [2, 2], [2, 2], Padding::Valid),
        cfg([2, 7, 7, 2], [3, 3], [2, 2], Padding::Valid),
        cfg([1, 5, 7, 3], [3, 3], [2, 2], Padding::Same),
        cfg([1, 5, 6, 1], [2, 3], [1, 2], Padding::Same),
        cfg(
            [2, 5, 5, 2],
            [3, 2],
            [1, 1],
            Padding::Explicit([(1, 0), (0, 1)]),
        ),
        cfg([1, 3, 3, 4], [3, 3], [1, 1], Padding::Same),
    ];
    let mut dil = cfg(
        [1, 7, 6, 2],
        [2, 2],
        [1, 2],
        Padding::Explicit([(1, 1), (2, 0)]),
    );
    dil.dilations = [2, 2];
    v.push(dil);
    let n = v.len();
    for i in 0..n {
        let mut c = v[i].clone();
        c.count_include_pad = true;
        v.push(c);
    }
    v
}

pub fn f64_values(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.f32() as f64).collect()
}

/// Inputs with ties (values on a coarse grid), signed zeros and a few NaNs.
pub fn tricky_f32(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.below(40) {
            0 => f32::NAN,
            1 => -0.0,
            2 => 0.0,
            k if k < 20 => (rng.below(5) as f32 - 2.0) * 0.5,
            _ => rng.f32(),
        })
        .collect()
}

/// Builds every pooling kind on `x` (f32, NHWC): both forwards, both gradients (through
/// `vjp`, with `u` as the upstream gradient) and the gather (the gradient of `MaxGrad`).
pub fn all_kinds<'g>(
    x: Tensor<'g>,
    u: Tensor<'g>,
    w: Tensor<'g>,
    o: &Pool2dOptions,
) -> Vec<Tensor<'g>> {
    let ym = x.max_pool2d(o);
    let ya = x.avg_pool2d(o);
    let dxm = vjp(ym, &[x], u).unwrap()[0];
    let dxa = vjp(ya, &[x], u).unwrap()[0];
    let gather = vjp(dxm, &[u], w).unwrap()[0];
    vec![ym, ya, dxm, dxa, gather]
}
