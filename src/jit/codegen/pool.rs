//! Pooling kernels: one Cranelift function per pooling node, its geometry (sizes, window,
//! strides, padding, dilation) baked in as constants.
//!
//! The function runs images `[lo, hi)` (`kernel_signature`'s range; `args` holds the
//! operands' addresses then the output's). Per image it walks the output positions row-major
//! and, at each, the channels: in NHWC a window tap is `C` contiguous channels, so a group of
//! 4 `f32` (2 `f64`) channels is one vector and the window's taps are unrolled with constant
//! byte offsets from the window's corner. Channels that do not fill a vector run the same
//! unrolled taps on scalars. Padding costs nothing inside the loops: the output rows (and
//! columns) are split into runs whose windows have the same taps inside the input (a few
//! border runs, then one interior run), each run is its own loop, and only its inside taps
//! are emitted. Runs nest rows outer, columns inner, so windows are still visited in
//! row-major order.
//!
//! The arithmetic is the interpreter's (`graph::op::pool`), operation for operation:
//! - the max keeps `best` unless the tap `v` wins, `v > best` or `v` a NaN where `best` is
//!   not, as `fcmp ugt(v, best) & fcmp ord(best, best)` and a select (no branch);
//! - `MaxGrad` tracks the winning tap's number per lane (an integer vector as wide as the
//!   float one), then adds `dy` where the number is the tap's and `+0.0` elsewhere; with
//!   disjoint windows each tap is stored once as `+0.0 + that` (what adding into the fill
//!   gives), without reading `dx`, and `dx` is zero-filled first only if a pixel lies in no
//!   window;
//! - the average sums from `-0.0` in scan order, then divides by the count; `AvgGrad` adds
//!   `dy / count` to each tap (stored as `+0.0 + q` for disjoint windows).

use super::{flags, kernel_signature, le, Gen, Helpers};
use crate::error::{Error, Result};
use crate::graph::op::{PoolKind, Window2d};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, F64, F64X2, I32, I32X4, I64, I64X2};
use cranelift_codegen::ir::{Function, InstBuilder, Type, UserFuncName, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Linkage, Module};

/// Above this many emitted taps (tap loads summed over every copy of the window code) the
/// step keeps the native loops: a window much larger than its input makes nearly every
/// output position a run of its own.
const MAX_EMITTED_TAPS: usize = 1 << 14;

/// At most this many ranges of rows (columns) in no window get a fill of their own.
const MAX_FILLS: usize = 32;

/// Channel vectors per window unrolled; more run in a loop. Unrolling all 8 groups of a
/// 32-channel `f32` window doubled the kernel's compile time (about 0.85 ms instead of 0.4
/// measured per kernel, loaded machine) for no speed the noise let us see: the loop's
/// pointer steps are few beside a group's loads, compares and selects.
const UNROLL_CHANNELS: usize = 2;

/// What a pooling kernel is specialized on.
pub(in crate::jit) struct PoolGeom {
    pub kind: PoolKind,
    /// `f64` (else `f32`).
    pub f64: bool,
    /// The image's height, width and channels.
    pub hwc: [usize; 3],
    /// The pooled height and width.
    pub out_hw: [usize; 2],
    pub window: Window2d,
    /// The divisor of every average window when the padding counts.
    pub whole: Option<usize>,
    /// No pixel lies in two windows.
    pub disjoint: bool,
    /// Disjoint, and every pixel lies in a window: a gradient writes all of `dx` once.
    pub covered: bool,
}

/// Consecutive output positions `[lo, hi)` along one axis whose windows have the same
/// inside taps `ks` (kernel indices).
struct Run {
    lo: usize,
    hi: usize,
    ks: std::ops::Range<usize>,
    /// The axis' stride, dilation and padding before (input index `s·o + d·k - pad`).
    stride: usize,
    dilation: usize,
    pad: usize,
}

fn runs(w: &Window2d, a: usize, size: usize, out: usize) -> Vec<Run> {
    let mut v: Vec<Run> = vec![];
    for o in 0..out {
        let ks = crate::jit::pool::inside(w, a, size, o);
        match v.last_mut() {
            Some(r) if r.ks == ks => r.hi = o + 1,
            _ => v.push(Run {
                lo: o,
                hi: o + 1,
                ks,
                stride: w.strides[a],
                dilation: w.dilations[a],
                pad: w.pad_lo[a],
            }),
        }
    }
    v
}

/// Declares the pooling kernel `name` and builds its IR into `lowered`; None (the native
/// loops run the step) when it would be too large or its offsets do not fit the 32-bit
/// immediates of loads and stores.
#[allow(clippy::too_many_arguments)]
pub(in crate::jit) fn lower(
    module: &mut JITModule,
    fctx: &mut FunctionBuilderContext,
    helpers: &Helpers,
    geo: &PoolGeom,
    name: &str,
    nparams: usize,
    lowered: &mut Vec<(FuncId, Function)>,
) -> Result<Option<FuncId>> {
    let [h, w, c] = geo.hwc;
    let es = if geo.f64 { 8 } else { 4 };
    let (ry, rx) = (
        runs(&geo.window, 0, h, geo.out_hw[0]),
        runs(&geo.window, 1, w, geo.out_hw[1]),
    );
    // Copies of the window code per output position: unrolled groups (or one loop body),
    // then the scalar channels.
    let (groups, lanes) = (c / (16 / es), 16 / es);
    let per_copy = if groups <= UNROLL_CHANNELS { groups } else { 1 } + c % lanes;
    let emitted: usize = ry
        .iter()
        .flat_map(|y| rx.iter().map(move |x| y.ks.len() * x.ks.len()))
        .sum::<usize>()
        .saturating_mul(per_copy);
    let image_bytes = h
        .checked_mul(w)
        .and_then(|p| p.checked_mul(c))
        .and_then(|p| p.checked_mul(es));
    let fits = image_bytes.is_some_and(|b| b < (i32::MAX as usize) / 2);
    if emitted > MAX_EMITTED_TAPS || !fits {
        return Ok(None);
    }
    let sig = kernel_signature(module.target_config().default_call_conv);
    let fid = module
        .declare_function(name, Linkage::Local, &sig)
        .map_err(|e| Error::invalid(format!("jit: {e}")))?;
    let mut func = Function::with_name_signature(UserFuncName::user(1, fid.as_u32()), sig);
    {
        let mut b = FunctionBuilder::new(&mut func, fctx);
        let mut g = Gen::new(&mut b, module, helpers, nparams);
        emit(&mut g, geo, &ry, &rx);
        g.finish();
        b.finalize(module.target_config());
    }
    lowered.push((fid, func));
    Ok(Some(fid))
}

/// Whether an operand (or the output) is image-shaped (read at the window's taps) or
/// pooled-shaped (read at the output position), per kind: operands, then the output.
fn roles(kind: PoolKind) -> &'static [bool] {
    match kind {
        PoolKind::Max | PoolKind::Avg { .. } => &[true, false],
        PoolKind::MaxGather => &[true, true, false],
        PoolKind::MaxGrad => &[true, false, true],
        PoolKind::AvgGrad { .. } => &[false, true],
    }
}

/// The element types of one channel group: the float, and the integer of the same lanes.
#[derive(Clone, Copy)]
struct Lanes {
    float: Type,
    int: Type,
    /// Channels per group.
    n: usize,
}

fn emit(g: &mut Gen<'_, '_>, geo: &PoolGeom, ry: &[Run], rx: &[Run]) {
    let [h, w, c] = geo.hwc;
    let [oh, ow] = geo.out_hw;
    let es = if geo.f64 { 8i64 } else { 4 };
    let image = (h * w * c) as i64 * es;
    let pooled = (oh * ow * c) as i64 * es;
    let roles = roles(geo.kind);
    let mut bases = g.params.clone();
    bases.push(g.out);
    let (lo, hi) = (g.lo, g.hi);
    let win = &geo.window;
    g.for_each_v(lo, hi, 1, &mut |g, b| {
        // This image's operands and output.
        let ptrs: Vec<Value> = bases
            .iter()
            .zip(roles)
            .map(|(&p, &img)| {
                let t = g.b.ins().imul_imm_s(b, if img { image } else { pooled });
                g.b.ins().iadd(p, t)
            })
            .collect();
        let grad = matches!(geo.kind, PoolKind::MaxGrad | PoolKind::AvgGrad { .. });
        if grad && !geo.covered {
            let dx = ptrs[ptrs.len() - 1];
            match (geo.disjoint, uncovered(ry, h), uncovered(rx, w)) {
                // Disjoint windows store every pixel they cover: fill only the others.
                (true, Some(rows), Some(cols)) => {
                    let row = (w * c) as i64 * es;
                    for (a, e) in rows {
                        let at = g.b.ins().iadd_imm_s(dx, a as i64 * row);
                        zero_fill(g, at, (e - a) as i64 * row);
                    }
                    for (a, e) in cols {
                        let (z, n) = (g.b.ins().iconst(I64, 0), g.b.ins().iconst(I64, h as i64));
                        g.for_each_v(z, n, 1, &mut |g, iy| {
                            let t = g.b.ins().imul_imm_s(iy, row);
                            let at = g.b.ins().iadd(dx, t);
                            let at = g.b.ins().iadd_imm_s(at, (a * c) as i64 * es);
                            zero_fill(g, at, ((e - a) * c) as i64 * es);
                        });
                    }
                }
                _ => zero_fill(g, dx, image),
            }
        }
        // A window's corner (its tap (0, 0), maybe in the padding), in bytes from the
        // image's start: `((oy·sy - pad_y)·W + ox·sx - pad_x)·C·es`.
        let corner0 = -((win.pad_lo[0] * w + win.pad_lo[1]) as i64) * c as i64 * es;
        for y in ry {
            let (a, e) = (
                g.b.ins().iconst(I64, y.lo as i64),
                g.b.ins().iconst(I64, y.hi as i64),
            );
            g.for_each_v(a, e, 1, &mut |g, oy| {
                let ycorner =
                    g.b.ins()
                        .imul_imm_s(oy, (win.strides[0] * w * c) as i64 * es);
                let yout = g.b.ins().imul_imm_s(oy, (ow * c) as i64 * es);
                for x in rx {
                    let taps: Vec<i32> =
                        y.ks.clone()
                            .flat_map(|ky| {
                                x.ks.clone().map(move |kx| {
                                    let px = ky * win.dilations[0] * w + kx * win.dilations[1];
                                    (px * c) as i32 * es as i32
                                })
                            })
                            .collect();
                    let count = geo.whole.unwrap_or(taps.len());
                    let (a, e) = (
                        g.b.ins().iconst(I64, x.lo as i64),
                        g.b.ins().iconst(I64, x.hi as i64),
                    );
                    g.for_each_v(a, e, 1, &mut |g, ox| {
                        let xc = g.b.ins().imul_imm_s(ox, (win.strides[1] * c) as i64 * es);
                        let corner = g.b.ins().iadd(ycorner, xc);
                        let corner = g.b.ins().iadd_imm_s(corner, corner0);
                        let xo = g.b.ins().imul_imm_s(ox, c as i64 * es);
                        let at = g.b.ins().iadd(yout, xo);
                        let p: Vec<Value> = ptrs
                            .iter()
                            .zip(roles)
                            .map(|(&p, &img)| g.b.ins().iadd(p, if img { corner } else { at }))
                            .collect();
                        channels(g, geo, &p, &taps, count);
                    });
                }
            });
        }
    });
}

/// The input positions along an axis that lie in no window of `runs`, as ranges; None when
/// there are too many ranges to emit one fill each (then the whole gradient is filled).
fn uncovered(runs: &[Run], size: usize) -> Option<Vec<(usize, usize)>> {
    let mut hit = vec![false; size];
    for r in runs {
        for o in r.lo..r.hi {
            for k in r.ks.clone() {
                // `inside` keeps the taps of `o` within `0..size`.
                let w = r.stride * o + k * r.dilation - r.pad;
                hit[w] = true;
            }
        }
    }
    let mut v: Vec<(usize, usize)> = vec![];
    for (i, &h) in hit.iter().enumerate() {
        match v.last_mut() {
            _ if h => {}
            Some(last) if last.1 == i => last.1 = i + 1,
            _ => v.push((i, i + 1)),
        }
    }
    (v.len() <= MAX_FILLS).then_some(v)
}

/// Stores `+0.0` over `bytes` bytes at `p` (a multiple of 4): unrolled when short.
fn zero_fill(g: &mut Gen<'_, '_>, p: Value, bytes: i64) {
    let z = g.b.ins().f32const(0.0);
    let zv = g.b.ins().splat(F32X4, z);
    let whole = bytes & !15;
    if whole <= 16 * 16 {
        for off in (0..whole).step_by(16) {
            g.b.ins().store(flags(), zv, p, off as i32);
        }
    } else {
        let (a, e) = (g.b.ins().iconst(I64, 0), g.b.ins().iconst(I64, whole));
        g.for_each_v(a, e, 16, &mut |g, i| {
            let q = g.b.ins().iadd(p, i);
            g.b.ins().store(flags(), zv, q, 0);
        });
    }
    for off in (whole..bytes).step_by(4) {
        g.b.ins().store(flags(), z, p, off as i32);
    }
}

/// One output position's channels: vector groups (unrolled, or a loop past
/// `UNROLL_CHANNELS`), then scalar channels. `p` are the operands' and output's addresses at
/// the window's corner or the output position (`roles`).
fn channels(g: &mut Gen<'_, '_>, geo: &PoolGeom, p: &[Value], taps: &[i32], count: usize) {
    let c = geo.hwc[2];
    let (vec, one) = if geo.f64 {
        (
            Lanes {
                float: F64X2,
                int: I64X2,
                n: 2,
            },
            Lanes {
                float: F64,
                int: I64,
                n: 1,
            },
        )
    } else {
        (
            Lanes {
                float: F32X4,
                int: I32X4,
                n: 4,
            },
            Lanes {
                float: F32,
                int: I32,
                n: 1,
            },
        )
    };
    let es = if geo.f64 { 8 } else { 4 };
    let groups = c / vec.n;
    if groups <= UNROLL_CHANNELS {
        for j in 0..groups {
            group(g, geo, vec, p, (j * vec.n * es) as i32, taps, count);
        }
    } else {
        let step = (vec.n * es) as i64;
        let (a, e) = (
            g.b.ins().iconst(I64, 0),
            g.b.ins().iconst(I64, groups as i64 * step),
        );
        g.for_each_v(a, e, step, &mut |g, i| {
            let q: Vec<Value> = p.iter().map(|&p| g.b.ins().iadd(p, i)).collect();
            group(g, geo, vec, &q, 0, taps, count);
        });
    }
    for ch in groups * vec.n..c {
        group(g, geo, one, p, (ch * es) as i32, taps, count);
    }
}

/// `a` where `m` (a comparison's result of `a`'s lanes), else `b`.
fn pick(g: &mut Gen<'_, '_>, l: Lanes, m: Value, a: Value, b: Value) -> Value {
    if l.n == 1 {
        return g.b.ins().select(m, a, b);
    }
    let ty = g.b.func.dfg.value_type(a);
    let m = if g.b.func.dfg.value_type(m) == ty {
        m
    } else {
        g.b.ins().bitcast(ty, le(), m)
    };
    g.b.ins().bitselect(m, a, b)
}

/// `a` where `m`, else `+0.0`, whose bits are all clear: one `and` on vectors.
fn keep(g: &mut Gen<'_, '_>, l: Lanes, m: Value, a: Value, zero: Value) -> Value {
    if l.n == 1 {
        return g.b.ins().select(m, a, zero);
    }
    let m = g.b.ins().bitcast(l.float, le(), m);
    g.b.ins().band(m, a)
}

/// A float constant of the group's type.
fn constant(g: &mut Gen<'_, '_>, l: Lanes, v: f64) -> Value {
    let s = if l.float.lane_type() == F64 {
        g.b.ins().f64const(v)
    } else {
        g.b.ins().f32const(v as f32)
    };
    if l.n == 1 {
        s
    } else {
        g.b.ins().splat(l.float, s)
    }
}

/// An integer constant of the group's type (a tap's number).
fn int_constant(g: &mut Gen<'_, '_>, l: Lanes, v: i64) -> Value {
    let s = g.b.ins().iconst(l.int.lane_type(), v);
    if l.n == 1 {
        s
    } else {
        g.b.ins().splat(l.int, s)
    }
}

/// Whether tap `v` replaces `best`: greater, or a NaN over a number.
fn wins(g: &mut Gen<'_, '_>, v: Value, best: Value) -> Value {
    let gt = g.b.ins().fcmp(FloatCC::UnorderedOrGreaterThan, v, best);
    let num = g.b.ins().fcmp(FloatCC::Ordered, best, best);
    g.b.ins().band(gt, num)
}

/// One group of channels (`l.n` lanes at byte `off` from each address) of one window.
fn group(
    g: &mut Gen<'_, '_>,
    geo: &PoolGeom,
    l: Lanes,
    p: &[Value],
    off: i32,
    taps: &[i32],
    count: usize,
) {
    let ld = |g: &mut Gen<'_, '_>, base: Value, at: i32| g.b.ins().load(l.float, flags(), base, at);
    let out = p[p.len() - 1];
    match geo.kind {
        PoolKind::Max => {
            let mut best = ld(g, p[0], taps[0] + off);
            for &t in &taps[1..] {
                let v = ld(g, p[0], t + off);
                let m = wins(g, v, best);
                best = pick(g, l, m, v, best);
            }
            g.b.ins().store(flags(), best, out, off);
        }
        PoolKind::MaxGather => {
            let mut best = ld(g, p[0], taps[0] + off);
            let mut y = ld(g, p[1], taps[0] + off);
            for &t in &taps[1..] {
                let v = ld(g, p[0], t + off);
                let gv = ld(g, p[1], t + off);
                let m = wins(g, v, best);
                best = pick(g, l, m, v, best);
                y = pick(g, l, m, gv, y);
            }
            g.b.ins().store(flags(), y, out, off);
        }
        PoolKind::MaxGrad => {
            let mut best = ld(g, p[0], taps[0] + off);
            let mut arg = int_constant(g, l, 0);
            for (k, &t) in taps.iter().enumerate().skip(1) {
                let v = ld(g, p[0], t + off);
                let m = wins(g, v, best);
                best = pick(g, l, m, v, best);
                let kv = int_constant(g, l, k as i64);
                arg = pick(g, l, m, kv, arg);
            }
            let zero = constant(g, l, 0.0);
            let dy = ld(g, p[1], off);
            // `+0.0 + dy`: the disjoint store's value where the tap is the argmax.
            let dy0 = g.b.ins().fadd(zero, dy);
            for (k, &t) in taps.iter().enumerate() {
                let kv = int_constant(g, l, k as i64);
                let is = g.b.ins().icmp(IntCC::Equal, arg, kv);
                // `dy` where the tap is the argmax, `+0.0` (no bit set) elsewhere.
                let v = if geo.disjoint {
                    keep(g, l, is, dy0, zero)
                } else {
                    let add = keep(g, l, is, dy, zero);
                    let d = ld(g, out, t + off);
                    g.b.ins().fadd(d, add)
                };
                g.b.ins().store(flags(), v, out, t + off);
            }
        }
        PoolKind::Avg { .. } => {
            let mut acc = constant(g, l, -0.0);
            for &t in taps {
                let v = ld(g, p[0], t + off);
                acc = g.b.ins().fadd(acc, v);
            }
            let n = constant(g, l, count as f64);
            let y = g.b.ins().fdiv(acc, n);
            g.b.ins().store(flags(), y, out, off);
        }
        PoolKind::AvgGrad { .. } => {
            let dy = ld(g, p[0], off);
            let n = constant(g, l, count as f64);
            let q = g.b.ins().fdiv(dy, n);
            let zero = constant(g, l, 0.0);
            let q0 = g.b.ins().fadd(zero, q);
            for &t in taps {
                let v = if geo.disjoint {
                    q0
                } else {
                    let d = ld(g, out, t + off);
                    g.b.ins().fadd(d, q)
                };
                g.b.ins().store(flags(), v, out, t + off);
            }
        }
    }
}
