//! The Cranelift kernels against the native loops, bitwise, on random geometries: odd sizes,
//! every padding shape, strides up to 3, dilation, multipliers 1 to 8 (vector, splat and
//! scalar channel paths, chunk remainders and scalar tails), batch 1 to 3, f32 and f64, all
//! three kinds. A weight or gradient of `inf` checks that padding taps multiply their zero
//! (NaN where the loops give NaN).

use super::super::conv::{Elem, Ptrs};
use super::super::module::{define_all, finalize, new_module, KernelFn};
use super::super::CompileTimes;
use super::{filter_grad, forward, input_grad, lower};
use crate::dtype::DType;
use crate::graph::op::{ConvGeom, ConvKind, Window2d};
use cranelift_frontend::FunctionBuilderContext;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn value(&mut self) -> f64 {
        match self.below(16) {
            0 => 0.0,
            1 => -0.0,
            _ => (self.below(2001) as f64 - 1000.0) / 317.0,
        }
    }
}

fn random_geo(rng: &mut Rng) -> ConvGeom {
    loop {
        let window = Window2d {
            kernel: [1 + rng.below(4), 1 + rng.below(4)],
            strides: [1 + rng.below(3), 1 + rng.below(3)],
            dilations: [1 + rng.below(2), 1 + rng.below(2)],
            pad_lo: [rng.below(4), rng.below(4)],
            pad_hi: [rng.below(4), rng.below(4)],
        };
        let in_hw = [1 + rng.below(11), 1 + rng.below(11)];
        let c = [2, 3, 5, 8, 9, 13, 16][rng.below(7)];
        let m = [1, 1, 1, 2, 3, 4, 8][rng.below(7)];
        let Ok(out_hw) = window.out_hw(in_hw) else {
            continue;
        };
        if out_hw.contains(&0) {
            continue;
        }
        return ConvGeom {
            n: 1 + rng.below(3),
            in_hw,
            c,
            out_hw,
            o: c * m,
            groups: c,
            window,
        };
    }
}

/// Compiles the kernel of `kind` over `geo` in `dtype`.
fn kernel(kind: ConvKind, geo: &ConvGeom, dtype: DType) -> (cranelift_jit::JITModule, KernelFn) {
    let (mut module, _) = new_module(false).unwrap();
    let mut fctx = FunctionBuilderContext::new();
    let mut lowered = vec![];
    let fid = lower(&mut module, &mut fctx, (kind, geo, dtype), 0, &mut lowered)
        .unwrap()
        .expect("a depthwise geometry within the kernel's limits");
    define_all(&mut module, lowered, &mut CompileTimes::default()).unwrap();
    let f = finalize(&mut module, vec![(0, fid)]).unwrap()[0].1;
    (module, f)
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Runs `kind` by the loops and by the kernel on the same random operands; returns the
/// index of the first differing output element, if any.
fn compare<T: Elem + Into<f64>>(
    kind: ConvKind,
    geo: &ConvGeom,
    dtype: DType,
    conv: impl Fn(f64) -> T,
    rng: &mut Rng,
) -> Option<(usize, f64, f64)> {
    let x_len = geo.n * geo.in_pixels() * geo.c;
    let y_len = geo.n * geo.out_pixels() * geo.o;
    let w_len = geo.k() * geo.o;
    let (a_len, b_len, out_len) = match kind {
        ConvKind::Forward => (x_len, w_len, y_len),
        ConvKind::InputGrad { .. } => (y_len, w_len, x_len),
        ConvKind::FilterGrad => (x_len, y_len, w_len),
    };
    let mut fill = |n: usize| -> Vec<T> { (0..n).map(|_| conv(rng.value())).collect() };
    let a = fill(a_len);
    let mut b = fill(b_len);
    if rng.below(4) == 0 {
        let i = rng.below(b_len);
        b[i] = conv(f64::INFINITY);
    }
    let (_module, f) = kernel(kind, geo, dtype);
    let run = |k: Option<KernelFn>| -> Vec<T> {
        let mut out = vec![conv(7.0); out_len];
        let p = Ptrs {
            a: a.as_ptr() as usize,
            b: b.as_ptr() as usize,
            out: out.as_mut_ptr() as usize,
            scratch: 0,
        };
        // SAFETY: the buffers have the geometry's sizes, and this thread is the only user.
        unsafe {
            match kind {
                ConvKind::Forward => (0..geo.n).for_each(|n| forward::<T>(geo, k, p, n)),
                ConvKind::InputGrad { .. } => {
                    (0..geo.n).for_each(|n| input_grad::<T>(geo, k, p, n))
                }
                ConvKind::FilterGrad => filter_grad::<T>(geo, k, p, (0, geo.n), out.as_mut_ptr()),
            }
        }
        out
    };
    let (loops, jit) = (run(None), run(Some(f)));
    loops
        .iter()
        .zip(&jit)
        .map(|(&l, &j)| (l.into(), j.into()))
        .enumerate()
        .find(|&(_, (l, j))| !same(l, j))
        .map(|(i, (l, j))| (i, l, j))
}

#[test]
fn kernels_match_the_loops_bitwise() {
    let mut rng = Rng(0x5eed_d0c5);
    for case in 0..150 {
        let geo = random_geo(&mut rng);
        let kinds = [
            ConvKind::Forward,
            ConvKind::InputGrad {
                input_hw: geo.in_hw,
            },
            ConvKind::FilterGrad,
        ];
        for kind in kinds {
            let bad = if case % 3 == 2 {
                compare(kind, &geo, DType::F64, |v| v, &mut rng)
            } else {
                compare(kind, &geo, DType::F32, |v| v as f32, &mut rng)
            };
            assert!(bad.is_none(), "case {case} {kind:?} {geo:?}: {bad:?}");
        }
    }
}

/// The MobileNet shapes the benchmark measures, stride 1 and 2 with `same` padding.
#[test]
fn mobilenet_shapes_match_the_loops() {
    let mut rng = Rng(0xfeed);
    for (hw, c, s) in [(14, 32, 1), (15, 24, 2)] {
        let window = Window2d {
            kernel: [3, 3],
            strides: [s, s],
            dilations: [1, 1],
            pad_lo: [1, 1],
            pad_hi: [1, 1],
        };
        let out_hw = window.out_hw([hw, hw]).unwrap();
        let geo = ConvGeom {
            n: 2,
            in_hw: [hw, hw],
            c,
            out_hw,
            o: c,
            groups: c,
            window,
        };
        for kind in [
            ConvKind::Forward,
            ConvKind::InputGrad {
                input_hw: geo.in_hw,
            },
            ConvKind::FilterGrad,
        ] {
            let bad = compare(kind, &geo, DType::F32, |v| v as f32, &mut rng);
            assert!(bad.is_none(), "{kind:?} {geo:?}: {bad:?}");
        }
    }
}
