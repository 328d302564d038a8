//! The three Winograd F(2×2, 3×3) transforms, over the channel axis (contiguous in NHWC).
//!
//! With `Bᵀ = [[1,0,−1,0],[0,1,1,0],[0,−1,1,0],[0,1,0,−1]]`, `G = [[1,0,0],[½,½,½],[½,−½,½],
//! [0,0,1]]` and `Aᵀ = [[1,1,1,0],[0,1,−1,−1]]` (Lavin and Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2015), a 2×2 block of a 3×3 correlation `y` of a 4×4 input
//! tile `d` with a filter `g` is `Aᵀ·[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]·A`. Summed over input channels,
//! the elementwise product of the 16 transformed values becomes 16 matrix products, which
//! `conv_wino.rs` hands to `gemm`; this file holds the transforms around them.
//!
//! Each transform is written once over a chunk of [`LANES`] channels (`[f32; LANES]` values,
//! which LLVM keeps in one AVX register) and compiled twice: for AVX2 (`#[target_feature]`,
//! called when the CPU has it, as `vmath.rs` does) and for the baseline target. Both run the
//! same IEEE additions and multiplications by ½ in the same order (Rust never contracts
//! them into FMAs), so the results are bitwise the same on any CPU; a channel count that is
//! not a multiple of [`LANES`] runs its last chunk through the same arithmetic on a padded
//! copy.

/// Channels per chunk: one 256-bit register of `f32`.
pub(super) const LANES: usize = 8;

type V = [f32; LANES];

#[inline(always)]
fn add(a: V, b: V) -> V {
    std::array::from_fn(|l| a[l] + b[l])
}

#[inline(always)]
fn sub(a: V, b: V) -> V {
    std::array::from_fn(|l| a[l] - b[l])
}

#[inline(always)]
fn half(a: V) -> V {
    std::array::from_fn(|l| a[l] * 0.5)
}

/// `Bᵀ·d·B` of a 4×4 tile (`d[4·row + column]`), in the same layout.
#[inline(always)]
fn input_math(d: &[V; 16]) -> [V; 16] {
    let mut t = [[0.0; LANES]; 16];
    for j in 0..4 {
        t[j] = sub(d[j], d[8 + j]);
        t[4 + j] = add(d[4 + j], d[8 + j]);
        t[8 + j] = sub(d[8 + j], d[4 + j]);
        t[12 + j] = sub(d[4 + j], d[12 + j]);
    }
    let mut v = [[0.0; LANES]; 16];
    for i in 0..4 {
        let r = 4 * i;
        v[r] = sub(t[r], t[r + 2]);
        v[r + 1] = add(t[r + 1], t[r + 2]);
        v[r + 2] = sub(t[r + 2], t[r + 1]);
        v[r + 3] = sub(t[r + 1], t[r + 3]);
    }
    v
}

/// `Aᵀ·m·A` of a 4×4 product tile: the 2×2 outputs `[y00, y01, y10, y11]`.
#[inline(always)]
fn output_math(m: &[V; 16]) -> [V; 4] {
    let s: [V; 4] = std::array::from_fn(|j| add(add(m[j], m[4 + j]), m[8 + j]));
    let d: [V; 4] = std::array::from_fn(|j| sub(sub(m[4 + j], m[8 + j]), m[12 + j]));
    [
        add(add(s[0], s[1]), s[2]),
        sub(sub(s[1], s[2]), s[3]),
        add(add(d[0], d[1]), d[2]),
        sub(sub(d[1], d[2]), d[3]),
    ]
}

/// `G·g·Gᵀ` of a 3×3 filter (`g[3·row + column]`): 16 values, `u[4·row + column]`.
#[inline(always)]
fn filter_math(g: &[V; 9]) -> [V; 16] {
    let mut r = [[0.0; LANES]; 12];
    for j in 0..3 {
        r[j] = g[j];
        r[3 + j] = half(add(add(g[j], g[3 + j]), g[6 + j]));
        r[6 + j] = half(add(sub(g[j], g[3 + j]), g[6 + j]));
        r[9 + j] = g[6 + j];
    }
    let mut u = [[0.0; LANES]; 16];
    for i in 0..4 {
        let (a, b, c) = (r[3 * i], r[3 * i + 1], r[3 * i + 2]);
        u[4 * i] = a;
        u[4 * i + 1] = half(add(add(a, b), c));
        u[4 * i + 2] = half(add(sub(a, b), c));
        u[4 * i + 3] = c;
    }
    u
}

/// Loads `w ≤ LANES` floats at `p` (the rest of the chunk zero).
///
/// # Safety
/// `p` covers `w` readable floats.
#[inline(always)]
unsafe fn load(p: *const f32, w: usize) -> V {
    if w == LANES {
        // SAFETY: `p` covers a full chunk.
        unsafe { std::ptr::read_unaligned(p as *const V) }
    } else {
        let mut v = [0.0; LANES];
        // SAFETY: `p` covers `w` floats.
        unsafe { std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), w) };
        v
    }
}

/// Stores the first `w ≤ LANES` floats of `v` at `p`.
///
/// # Safety
/// `p` covers `w` writable floats.
#[inline(always)]
unsafe fn store(p: *mut f32, v: &V, w: usize) {
    if w == LANES {
        // SAFETY: `p` covers a full chunk.
        unsafe { std::ptr::write_unaligned(p as *mut V, *v) }
    } else {
        // SAFETY: `p` covers `w` floats.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p, w) };
    }
}

/// The input transform of one tile: `src[4·i + j]` points at input pixel `(i, j)` of the
/// tile (its `channels` floats; a zero row in the padding), and transformed value `ξ` of
/// channel `c` goes to `dst[ξ·plane + c]`.
///
/// # Safety
/// Every `src` covers `channels` readable floats; `dst` covers `15·plane + channels`
/// writable floats, disjoint from the sources.
#[inline(always)]
unsafe fn input_tile_impl(src: &[*const f32; 16], channels: usize, dst: *mut f32, plane: usize) {
    let mut c = 0;
    while c < channels {
        let w = (channels - c).min(LANES);
        // SAFETY: `c + w ≤ channels`, inside every source row and destination plane.
        unsafe {
            let d: [V; 16] = std::array::from_fn(|i| load(src[i].add(c), w));
            let v = input_math(&d);
            for (x, v) in v.iter().enumerate() {
                store(dst.add(x * plane + c), v, w);
            }
        }
        c += LANES;
    }
}

/// The output transform of one tile: product `ξ` of channel `o` is at `src[ξ·plane + o]`,
/// and output pixel `(a, b)` of the tile goes to `dst[2·a + b]` (`None`: past the ragged
/// edge, not written).
///
/// # Safety
/// `src` covers `15·plane + channels` readable floats, each `Some` destination `channels`
/// writable floats, disjoint from `src`.
#[inline(always)]
unsafe fn output_tile_impl(
    src: *const f32,
    plane: usize,
    channels: usize,
    dst: &[Option<*mut f32>; 4],
) {
    let mut c = 0;
    while c < channels {
        let w = (channels - c).min(LANES);
        // SAFETY: `c + w ≤ channels`, inside every plane and destination pixel.
        unsafe {
            let m: [V; 16] = std::array::from_fn(|x| load(src.add(x * plane + c), w));
            let y = output_math(&m);
            for (y, d) in y.iter().zip(dst) {
                if let Some(d) = d {
                    store(d.add(c), y, w);
                }
            }
        }
        c += LANES;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn input_tile_avx2(src: &[*const f32; 16], channels: usize, dst: *mut f32, plane: usize) {
    // SAFETY: the caller's contract.
    unsafe { input_tile_impl(src, channels, dst, plane) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn output_tile_avx2(
    src: *const f32,
    plane: usize,
    channels: usize,
    dst: &[Option<*mut f32>; 4],
) {
    // SAFETY: the caller's contract.
    unsafe { output_tile_impl(src, plane, channels, dst) }
}

/// True when this CPU runs the AVX2 copies.
pub(super) fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`input_tile_impl`], compiled for AVX2 when `fast` (the CPU has it).
///
/// # Safety
/// As [`input_tile_impl`]; `fast` only if [`avx2`] holds.
pub(super) unsafe fn input_tile(
    fast: bool,
    src: &[*const f32; 16],
    channels: usize,
    dst: *mut f32,
    plane: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: the caller's contract, and the CPU has AVX2.
        return unsafe { input_tile_avx2(src, channels, dst, plane) };
    }
    let _ = fast;
    // SAFETY: the caller's contract.
    unsafe { input_tile_impl(src, channels, dst, plane) }
}

/// [`output_tile_impl`], compiled for AVX2 when `fast` (the CPU has it).
///
/// # Safety
/// As [`output_tile_impl`]; `fast` only if [`avx2`] holds.
pub(super) unsafe fn output_tile(
    fast: bool,
    src: *const f32,
    plane: usize,
    channels: usize,
    dst: &[Option<*mut f32>; 4],
) {
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: the caller's contract, and the CPU has AVX2.
        return unsafe { output_tile_avx2(src, plane, channels, dst) };
    }
    let _ = fast;
    // SAFETY: the caller's contract.
    unsafe { output_tile_impl(src, plane, channels, dst) }
}

/// The filter transform: `u[ξ·cin·cout + i·cout + j] = (G·g·Gᵀ)[ξ]` of the 3×3 filter
/// `g[t] = w[tap(t, i, j)]` of input channel `i` and output channel `j` (`tap` maps the 9
/// taps of the pair to their index in `w`, which is how the input gradient rotates the
/// filter and swaps its channels). Runs once per step over `cin·cout` pairs: scalar code,
/// chunked like the others so it rounds as they do.
pub(super) fn filter(
    w: &[f32],
    (cin, cout): (usize, usize),
    tap: impl Fn(usize, usize, usize) -> usize,
    u: &mut [f32],
) {
    let plane = cin * cout;
    for i in 0..cin {
        let mut j = 0;
        while j < cout {
            let n = (cout - j).min(LANES);
            let g: [V; 9] = std::array::from_fn(|t| {
                std::array::from_fn(|l| if l < n { w[tap(t, i, j + l)] } else { 0.0 })
            });
            for (x, v) in filter_math(&g).iter().enumerate() {
                let at = x * plane + i * cout + j;
                u[at..at + n].copy_from_slice(&v[..n]);
            }
            j += LANES;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splat(x: f32) -> V {
        [x; LANES]
    }

    /// One tile, one channel: the three transforms give the direct 3×3 correlation's 2×2
    /// outputs (small integers: exact in f32 whatever the order).
    #[test]
    fn transforms_compute_a_2x2_block_of_the_correlation() {
        let d: [f32; 16] = std::array::from_fn(|i| ((i * 7) % 5) as f32 - 2.0);
        let g: [f32; 9] = std::array::from_fn(|i| ((i * 3) % 4) as f32 - 1.0);
        let v = input_math(&d.map(splat));
        let u = filter_math(&g.map(splat));
        let m: [V; 16] = std::array::from_fn(|x| std::array::from_fn(|l| v[x][l] * u[x][l]));
        let y = output_math(&m);
        for a in 0..2 {
            for b in 0..2 {
                let mut want = 0.0;
                for kh in 0..3 {
                    for kw in 0..3 {
                        want += d[4 * (a + kh) + b + kw] * g[3 * kh + kw];
                    }
                }
                assert_eq!(y[2 * a + b][0], want, "pixel ({a},{b})");
            }
        }
    }

    /// The AVX2 copy and the baseline copy give the same bits, full chunks and a tail.
    #[test]
    fn avx2_and_baseline_copies_agree_bitwise() {
        if !avx2() {
            return;
        }
        let channels = 21;
        let rows: Vec<Vec<f32>> = (0..16)
            .map(|i| {
                (0..channels)
                    .map(|c| ((i * 31 + c * 17) % 23) as f32 * 0.37 - 3.1)
                    .collect()
            })
            .collect();
        let src: [*const f32; 16] = std::array::from_fn(|i| rows[i].as_ptr());
        let plane = 24;
        let (mut a, mut b) = (vec![0f32; 16 * plane], vec![0f32; 16 * plane]);
        // SAFETY: 16 rows of `channels` floats; 16 planes of `plane ≥ channels` floats.
        unsafe {
            input_tile(true, &src, channels, a.as_mut_ptr(), plane);
            input_tile(false, &src, channels, b.as_mut_ptr(), plane);
        }
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        let (mut ya, mut yb) = (vec![0f32; 4 * channels], vec![0f32; 4 * channels]);
        let dst = |y: &mut Vec<f32>| -> [Option<*mut f32>; 4] {
            let p = y.as_mut_ptr();
            // SAFETY: four pixels of `channels` floats.
            std::array::from_fn(|k| Some(unsafe { p.add(k * channels) }))
        };
        // SAFETY: as above.
        unsafe {
            output_tile(true, a.as_ptr(), plane, channels, &dst(&mut ya));
            output_tile(false, a.as_ptr(), plane, channels, &dst(&mut yb));
        }
        assert!(ya.iter().zip(&yb).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert!(ya.iter().any(|&x| x != 0.0));
    }
}
