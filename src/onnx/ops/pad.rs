//! `Pad`: `constant` mode (zero or another value) as kiln's `pad` op, and `reflect`, `edge`
//! and `wrap` as a gather of the input's own positions along each padded axis. The pads and
//! axes come from the file, so every sum over them is checked and the gathered axis is
//! bounded before its position list is built: a hostile or damaged model is an error naming
//! the node, never an abort.

use super::shape::{gather_along, MAX_GATHER};
use super::{axis, one, static_ints, Built};
use crate::dtype::DType;
use crate::onnx::import::Ctx;

/// `Pad`: `constant` mode (zero or another value), or `reflect`, `edge` and `wrap` as a
/// gather of the input's own positions along each padded axis; negative pads crop first.
pub(super) fn pad<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let mode = c.string("mode").unwrap_or_else(|| "constant".into());
    let source: fn(i64, i64) -> i64 = match mode.as_str() {
        "constant" => |i, _| i,
        "edge" => |i, n| i.clamp(0, n - 1),
        "wrap" => |i, n| i.rem_euclid(n),
        "reflect" => reflect_index,
        o => {
            return Err(format!(
                "mode = {o:?} is not an ONNX pad mode (constant, reflect, edge, wrap)"
            ))
        }
    };
    let mut x = c.t(0)?;
    let r = x.rank();
    let (pads, value) = if c.version < 11 {
        (
            c.ints("pads").ok_or("pads are required")?,
            c.float("value", 0.0) as f64,
        )
    } else {
        let p = static_ints(&c.s(1, "pads")?, "pads")?;
        let v = if c.has(2) {
            c.s(2, "constant_value")?.scalar_f64().unwrap_or(0.0)
        } else {
            0.0
        };
        (p, v)
    };
    let axes: Vec<usize> = if c.version >= 18 && c.has(3) {
        static_ints(&c.s(3, "axes")?, "axes")?
            .iter()
            .map(|&a| axis(a, r))
            .collect::<Result<_, _>>()?
    } else {
        (0..r).collect()
    };
    let n = axes.len();
    if pads.len() != 2 * n {
        return Err(format!(
            "pads {pads:?} must hold 2 values per padded axis ({n})"
        ));
    }
    let (mut lo, mut hi) = (vec![0usize; r], vec![0usize; r]);
    for (k, &a) in axes.iter().enumerate() {
        let (b, e) = (pads[k], pads[k + n]);
        let dim = x.shape().dims()[a];
        if b < 0 || e < 0 {
            let len = dim.fixed().ok_or("cannot crop the open batch axis")? as i64;
            // Checked: pads come from the file (`i64::MIN` is a valid int64 there).
            let keep = len
                .checked_add(b.min(0))
                .and_then(|k| k.checked_add(e.min(0)))
                .filter(|&k| k >= 0)
                .ok_or_else(|| format!("pads {pads:?} crop more than axis {a} holds"))?;
            // `keep >= 0` bounds `-b` by `len`, so the start fits.
            x = x.narrow(a as isize, b.min(0).unsigned_abs() as usize, keep as usize);
        }
        if (b > 0 || e > 0) && dim.fixed().is_none() {
            return Err("cannot pad the open batch axis".into());
        }
        lo[a] = b.max(0) as usize;
        hi[a] = e.max(0) as usize;
    }
    if mode != "constant" {
        // Each padded axis is a gather of the (cropped) input's own positions.
        for a in 0..r {
            if lo[a] == 0 && hi[a] == 0 {
                continue;
            }
            let n = x.shape().dims()[a]
                .fixed()
                .ok_or("cannot pad the open batch axis")?;
            if n == 0 {
                return Err(format!("mode = {mode:?} cannot pad the empty axis {a}"));
            }
            // The gathered axis is built as a list of positions: bound it before building
            // it (pads come from the file), with checked sums.
            let total = n
                .checked_add(lo[a])
                .and_then(|t| t.checked_add(hi[a]))
                .filter(|&t| t <= MAX_GATHER)
                .ok_or_else(|| {
                    format!(
                        "mode = {mode:?} pads axis {a} of {n} by {}+{}: kiln pads an axis to at \
                         most {MAX_GATHER} positions in this mode",
                        lo[a], hi[a]
                    )
                })?;
            // Every value below is at most MAX_GATHER, so the i64 arithmetic is exact.
            let (n, lo_a) = (n as i64, lo[a] as i64);
            let idx: Vec<usize> = (0..total as i64)
                .map(|i| source(i - lo_a, n) as usize)
                .collect();
            x = gather_along(x, a, &idx)?;
        }
        return one(x);
    }
    let padded = x.pad(&lo, &hi);
    if value == 0.0 {
        return one(padded);
    }
    // True inside, false in the padding (a bool pads with false).
    let inside =
        c.g.scalar_of(DType::Bool, 1.0)
            .broadcast_to(x.shape())
            .pad(&lo, &hi);
    one(inside.select(padded, value))
}

/// The position that `reflect` padding copies into position `i` of an axis of `n` (numpy's
/// `reflect`: mirrored about the edge elements, which are not repeated, as often as needed).
fn reflect_index(i: i64, n: i64) -> i64 {
    if n == 1 {
        return 0;
    }
    let m = i.rem_euclid(2 * (n - 1));
    if m >= n {
        2 * (n - 1) - m
    } else {
        m
    }
}

#[cfg(test)]
mod tests;
