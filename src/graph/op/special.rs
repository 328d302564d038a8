//! Reference `f64` implementations of the special functions Rust's `std` lacks, for the
//! props table (the interpreter and the JIT's `f64` helper both call them).
//!
//! `erf` is fdlibm's `s_erf.c` (Sun Microsystems, 1993), as carried by FreeBSD's msun, musl
//! and the `libm` crate: four rational approximations over `[0, 0.84375)`, `[0.84375, 1.25)`,
//! `[1.25, 1/0.35)` and `[1/0.35, 6)`, each accurate to better than one ulp, and `±1` beyond.
//! The constants are fdlibm's, digit for digit. Its notice: "Developed at SunPro, a Sun
//! Microsystems, Inc. business. Permission to use, copy, modify, and distribute this software
//! is freely granted, provided that this notice is preserved."

#![allow(clippy::excessive_precision, clippy::unreadable_literal)]

const ERX: f64 = 8.45062911510467529297e-01;
// erf on [0, 0.84375): x + x*P(x^2)/Q(x^2)
const EFX8: f64 = 1.02703333676410069053e+00;
const PP: [f64; 5] = [
    1.28379167095512558561e-01,
    -3.25042107247001499370e-01,
    -2.84817495755985104766e-02,
    -5.77027029648944159157e-03,
    -2.37630166566501626084e-05,
];
const QQ: [f64; 5] = [
    3.97917223959155352819e-01,
    6.50222499887672944485e-02,
    5.08130628187576562776e-03,
    1.32494738004321644526e-04,
    -3.96022827877536812320e-06,
];
// erf on [0.84375, 1.25): erx + P1(s)/Q1(s), s = |x| - 1
const PA: [f64; 7] = [
    -2.36211856075265944077e-03,
    4.14856118683748331666e-01,
    -3.72207876035701323847e-01,
    3.18346619901161753674e-01,
    -1.10894694282396677476e-01,
    3.54783043256182359371e-02,
    -2.16637559486879084300e-03,
];
const QA: [f64; 6] = [
    1.06420880400844228286e-01,
    5.40397917702171048937e-01,
    7.18286544141962662868e-02,
    1.26171219808761642112e-01,
    1.36370839120290507362e-02,
    1.19844998467991074170e-02,
];
// erfc on [1.25, 1/0.35): exp(-x^2 - 0.5625 + R1/S1) / x, in 1/x^2
const RA: [f64; 8] = [
    -9.86494403484714822705e-03,
    -6.93858572707181764372e-01,
    -1.05586262253232909814e+01,
    -6.23753324503260060396e+01,
    -1.62396669462573470355e+02,
    -1.84605092906711035994e+02,
    -8.12874355063065934246e+01,
    -9.81432934416914548592e+00,
];
const SA: [f64; 8] = [
    1.96512716674392571292e+01,
    1.37657754143519042600e+02,
    4.34565877475229228821e+02,
    6.45387271733267880336e+02,
    4.29008140027567833386e+02,
    1.08635005541779435134e+02,
    6.57024977031928170135e+00,
    -6.04244152148580987438e-02,
];
// erfc on [1/0.35, 6): exp(-x^2 - 0.5625 + R2/S2) / x, in 1/x^2
const RB: [f64; 7] = [
    -9.86494292470009928597e-03,
    -7.99283237680523006574e-01,
    -1.77579549177547519889e+01,
    -1.60636384855821916062e+02,
    -6.37566443368389627722e+02,
    -1.02509513161107724954e+03,
    -4.83519191608651397019e+02,
];
const SB: [f64; 7] = [
    3.03380607434824582924e+01,
    3.25792512996573918826e+02,
    1.53672958608443695994e+03,
    3.19985821950859553908e+03,
    2.55305040643316442583e+03,
    4.74528541206955367215e+02,
    -2.24409524465858183362e+01,
];

/// `c[0] + z*(c[1] + z*(...))`, fdlibm's nesting order.
fn horner(z: f64, c: &[f64]) -> f64 {
    c.iter().rev().fold(0.0, |acc, &k| acc * z + k)
}

/// `1 + z*(c[0] + z*(c[1] + ...))`: fdlibm's denominators.
fn one_plus(z: f64, c: &[f64]) -> f64 {
    1.0 + z * horner(z, c)
}

/// `erfc(|x|)` for `0.84375 <= |x| < 6` (fdlibm's `erfc1`/`erfc2`).
fn erfc_mid(ix: u32, x: f64) -> f64 {
    let ax = x.abs();
    if ix < 0x3ff4_0000 {
        // |x| < 1.25
        let s = ax - 1.0;
        return 1.0 - ERX - horner(s, &PA) / one_plus(s, &QA);
    }
    let s = 1.0 / (ax * ax);
    let (r, big_s) = if ix < 0x4006_db6d {
        // |x| < 1/0.35
        (horner(s, &RA), one_plus(s, &SA))
    } else {
        (horner(s, &RB), one_plus(s, &SB))
    };
    // z = ax with the low 32 bits cleared, so -z*z is exact (fdlibm's Note1).
    let z = f64::from_bits(ax.to_bits() & 0xffff_ffff_0000_0000);
    (-z * z - 0.5625).exp() * ((z - ax) * (z + ax) + r / big_s).exp() / ax
}

/// The error function `erf(x) = 2/√π ∫₀ˣ e^{-t²} dt`, to within one ulp (fdlibm `s_erf.c`).
/// `erf(±0) = ±0`, `erf(±inf) = ±1`, `erf(NaN) = NaN`.
pub(crate) fn erf(x: f64) -> f64 {
    let hi = (x.to_bits() >> 32) as u32;
    let negative = hi >> 31 != 0;
    let ix = hi & 0x7fff_ffff;
    if ix >= 0x7ff0_0000 {
        // NaN stays NaN (1/NaN); ±inf gives ±1.
        return 1.0 - 2.0 * f64::from(u8::from(negative)) + 1.0 / x;
    }
    if ix < 0x3feb_0000 {
        // |x| < 0.84375
        if ix < 0x3e30_0000 {
            // |x| < 2^-28: avoid underflow in x*x.
            return 0.125 * (8.0 * x + EFX8 * x);
        }
        let z = x * x;
        return x + x * (horner(z, &PP) / one_plus(z, &QQ));
    }
    let y = if ix < 0x4018_0000 {
        // |x| < 6
        1.0 - erfc_mid(ix, x)
    } else {
        1.0 - f64::MIN_POSITIVE
    };
    if negative {
        -y
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::erf;

    #[test]
    fn erf_matches_known_values() {
        // References: mpmath at 30 digits, rounded to f64.
        let cases: [(f64, f64); 6] = [
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (-3.0, -0.9999779095030014),
            (0.1, 0.1124629160182849),
            (2.0, 0.9953222650189527),
            (1e-10, 1.1283791670955126e-10),
        ];
        for (x, want) in cases {
            let got = erf(x);
            let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(ulps <= 1, "erf({x}) = {got:e}, want {want:e}");
        }
        assert_eq!(erf(0.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(erf(-0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        assert_eq!(erf(7.0), 1.0);
        assert!(erf(f64::NAN).is_nan());
    }

    #[test]
    fn erf_is_odd_and_monotone() {
        let mut prev = -1.0;
        for i in -600..=600 {
            let x = f64::from(i) / 100.0;
            let y = erf(x);
            assert_eq!(y, -erf(-x), "odd at {x}");
            assert!(y >= prev, "monotone at {x}");
            prev = y;
        }
    }
}
