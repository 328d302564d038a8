//! The normalizations over trailing axes: LayerNormalization (17) and RMSNormalization (23),
//! both over the axes from `axis` to the last, in `f32` for half inputs (`stash_type = 1`, the
//! only one ONNX's reference defines), scale and bias broadcast numpy-style.

use super::{axis, float_only, restore, widen, Built};
use crate::graph::Tensor;
use crate::onnx::import::{Ctx, Val};

/// The normalized axes (`axis` to the last) of a rank-`r` input.
fn trailing(c: &Ctx<'_, '_>, r: usize) -> Result<Vec<isize>, String> {
    if c.int("stash_type", 1) != 1 {
        return Err("stash_type other than 1 (float) is not supported".into());
    }
    let a = axis(c.int("axis", -1), r)?;
    Ok((a as isize..r as isize).collect())
}

/// `LayerNormalization`: `(x − mean) / √(var + ε) · scale + bias`, and the optional `Mean` and
/// `InvStdDev` outputs (reduced axes kept as 1s).
pub(super) fn layer_norm<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x0 = c.t(0)?;
    let x = widen(x0);
    float_only(x)?;
    let axes = trailing(c, x.rank())?;
    let eps = c.float("epsilon", 1e-5) as f64;
    let mean = x.mean(&axes, true);
    let d = x - mean;
    let inv = ((d * d).mean(&axes, true) + eps).sqrt().recip();
    let mut y = d * inv * widen(c.t(1)?);
    if c.has(2) {
        y = y + widen(c.t(2)?);
    }
    let back = |t: Tensor<'g>| Val::T(restore(t, x0.dtype()));
    Ok(vec![back(y), back(mean), back(inv)])
}

/// `RMSNormalization`: `x / √(mean(x²) + ε) · scale`.
pub(super) fn rms_norm<'g>(c: &mut Ctx<'_, 'g>) -> Built<'g> {
    let x0 = c.t(0)?;
    let x = widen(x0);
    float_only(x)?;
    let axes = trailing(c, x.rank())?;
    let eps = c.float("epsilon", 1e-5) as f64;
    let rms = ((x * x).mean(&axes, true) + eps).sqrt();
    let y = x / rms * widen(c.t(1)?);
    Ok(vec![Val::T(restore(y, x0.dtype()))])
}
