//! A counter-based random generator: Philox4x32-10 (Salmon et al., SC'11).
//!
//! Counter-based means the `i`-th random number of a stream is a pure function of
//! `(seed, stream, i)`. That is what lets the interpreter and the JIT, on any number of threads,
//! draw bitwise the same numbers: nobody carries state from one element to the next.
//!
//! Uniform element `i` of stream `s` under `seed` is word `i % 4` of the Philox block with key
//! `seed` and counter `(i / 4, s)`, top 24 bits: one block serves four elements (a block
//! costs ~20 ns, and dropout draws one uniform per activation every step). Normal element `i`
//! uses Box–Muller on the first two words of block `(i, s)`.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// One Philox4x32-10 block: 4 random words for `counter` under `key`.
#[inline]
pub(crate) fn philox4x32(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for _ in 0..10 {
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
        k[0] = k[0].wrapping_add(W0);
        k[1] = k[1].wrapping_add(W1);
    }
    c
}

/// The random block for element `index` of stream `stream` under `seed`.
#[inline]
pub(crate) fn block(seed: u64, stream: u64, index: u64) -> [u32; 4] {
    philox4x32(
        [
            index as u32,
            (index >> 32) as u32,
            stream as u32,
            (stream >> 32) as u32,
        ],
        [seed as u32, (seed >> 32) as u32],
    )
}

/// A uniform `f32` in `[0, 1)` with 24 random bits, from one random word.
#[inline]
pub(crate) fn unit_f32(word: u32) -> f32 {
    (word >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Element `index` of a uniform stream on `[low, high)`, computed in `f32`.
#[inline]
pub fn uniform(seed: u64, stream: u64, index: u64, low: f32, high: f32) -> f32 {
    let u = unit_f32(block(seed, stream, index / 4)[(index % 4) as usize]);
    low + (high - low) * u
}

/// Elements `range` of a uniform stream, as [`uniform`] computes them, passed to `f` with
/// their indices in order; each Philox block is computed once for its four elements.
#[inline]
pub(crate) fn fill_uniform(
    seed: u64,
    stream: u64,
    range: std::ops::Range<u64>,
    low: f32,
    high: f32,
    mut f: impl FnMut(u64, f32),
) {
    let mut blk = [0u32; 4];
    for i in range.clone() {
        if i % 4 == 0 || i == range.start {
            blk = block(seed, stream, i / 4);
        }
        f(i, low + (high - low) * unit_f32(blk[(i % 4) as usize]));
    }
}

/// Element `index` of a standard normal stream (Box–Muller, computed in `f64`, rounded to `f32`).
#[inline]
pub fn standard_normal(seed: u64, stream: u64, index: u64) -> f32 {
    let b = block(seed, stream, index);
    // u1 in (0, 1]: never 0, so the log is finite.
    let u1 = ((b[0] >> 8) as f64 + 1.0) * (1.0 / 16_777_216.0);
    let u2 = (b[1] >> 8) as f64 * (1.0 / 16_777_216.0);
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answer() {
        // Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32_10).
        assert_eq!(
            philox4x32([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniform_moments() {
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|i| uniform(7, 0, i, 0.0, 1.0) as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
    }

    #[test]
    fn normal_moments() {
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|i| standard_normal(3, 1, i) as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }
}
