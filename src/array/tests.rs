//! `Array`'s own helpers against their definitions.

use super::*;

/// The permutation against the definition, `out[idx] = src[idx permuted back]`, over
/// every permutation of ranks 0 to 4 (sizes 1 to 4, so unit axes too) and two dtypes.
#[test]
fn permuted_matches_the_definition() {
    fn perms(r: usize) -> Vec<Vec<usize>> {
        if r == 0 {
            return vec![vec![]];
        }
        let mut out = vec![];
        for p in perms(r - 1) {
            for at in 0..=p.len() {
                let mut q = p.clone();
                q.insert(at, r - 1);
                out.push(q);
            }
        }
        out
    }
    for r in 0..=4 {
        let shape: Vec<usize> = (0..r).map(|a| [3, 1, 4, 2][a]).collect();
        let n: usize = shape.iter().product();
        let f = Array::new(shape.clone(), (0..n).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
        let l = Array::new(
            shape.clone(),
            (0..n as i64).map(|i| i << 40).collect::<Vec<_>>(),
        )
        .unwrap();
        for perm in perms(r) {
            let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
            let mut want = vec![];
            for o in 0..n {
                // The output index, then the source offset.
                let (mut rem, mut idx) = (o, vec![0; r]);
                for j in (0..r).rev() {
                    idx[j] = rem % out_shape[j];
                    rem /= out_shape[j];
                }
                let mut src = vec![0; r];
                for j in 0..r {
                    src[perm[j]] = idx[j];
                }
                want.push(src.iter().zip(&shape).fold(0, |acc, (&i, &d)| acc * d + i));
            }
            let got = f.permuted(&perm);
            assert_eq!(got.shape(), &out_shape[..], "{perm:?}");
            let wf: Vec<f32> = want.iter().map(|&i| i as f32).collect();
            assert_eq!(
                got.as_slice::<f32>().unwrap(),
                &wf[..],
                "{shape:?} {perm:?}"
            );
            let wl: Vec<i64> = want.iter().map(|&i| (i as i64) << 40).collect();
            assert_eq!(l.permuted(&perm).as_slice::<i64>().unwrap(), &wl[..]);
        }
    }
}
