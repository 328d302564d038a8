//! The one summation order every mode shares: contributions folded left to right, starting
//! from the first (not from `+0`, which would turn a `-0` sum into `+0`). The one-process
//! world, the reduce-scatter's per-piece sums and the all-gather fallback all call this, so
//! "the same order" is one function, not several loops that must agree.

/// `out[i] = ((parts[0][i] + parts[1][i]) + parts[2][i]) + …`.
pub(super) fn sum_in_order<T: Copy + std::ops::Add<Output = T>>(parts: &[&[T]], out: &mut [T]) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    out.copy_from_slice(first);
    for p in rest {
        for (o, &x) in out.iter_mut().zip(p.iter()) {
            *o = *o + x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_left_to_right_from_the_first_part() {
        // 1e8 + 1 - 1e8 in f32: left to right loses the 1; (1 - 1e8) + 1e8 would keep 0.
        let (a, b, c) = ([1e8f32], [1.0f32], [-1e8f32]);
        let mut out = [0.0f32];
        sum_in_order(&[&a, &b, &c], &mut out);
        assert_eq!(out[0], 0.0);
        sum_in_order(&[&b, &c, &a], &mut out);
        assert_eq!(out[0], 0.0);
        sum_in_order(&[&c, &a, &b], &mut out);
        assert_eq!(out[0], 1.0);
        // A sum of negative zeros stays negative zero.
        sum_in_order(&[&[-0.0f32][..], &[-0.0f32][..]], &mut out);
        assert!(out[0] == 0.0 && out[0].is_sign_negative());
    }
}
