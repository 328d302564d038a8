//! Depthwise convolutions (`groups == C`, one input channel per group, `multiplier` output
//! channels each): one Cranelift kernel per convolution node, with the native loops below as
//! the fallback and the reference.
//!
//! A depthwise filter's GEMM is `K = KH·KW` deep and `multiplier` wide (often 9 × 1), far too
//! thin for `gemm`: each output pixel is instead `KH·KW` multiply-adds of contiguous channel
//! vectors (`y[c·m + j] += x[c] · w[tap, c·m + j]`). [`lower`] emits a function with the
//! geometry baked in (`conv_dw/`: `plan.rs` decides the channel chunks and the interior of
//! each axis, `gather.rs` the forward and input-gradient kernels, `filter.rs` the filter
//! gradient's), which `module.rs` compiles with the other kernels, in parallel.
//!
//! **The same bits as the loops.** Each kernel computes every element with the loops'
//! operations in the loops' order: a sum starts from `+0` and adds one product at a time, taps
//! in order (the input gradient's gather takes them in decreasing order, the order the
//! scatter loops reached each pixel in), pixels in order for the filter gradient; a padding
//! tap multiplies a zero (forward, filter gradient) or adds nothing (input gradient). Vectors
//! only run several channels side by side, and Cranelift does not contract `a·b + c` into a
//! fused multiply-add. So the kernel equals the loops bitwise (`conv_dw/tests.rs`), and the
//! interpreter (which sums in `f64`) within `tests/conv.rs`'s tolerance. `KILN_DW_JIT=0` at
//! compile time keeps the loops (for comparing the two).
//!
//! Work is split by whole images (forward, input gradient: each image's output is one
//! worker's) and the filter gradient sums fixed image ranges into partials added in order,
//! as in `conv.rs`, so the bits do not depend on the thread count.

mod emit;
mod filter;
mod gather;
mod plan;
#[cfg(test)]
mod tests;

use super::conv::{Elem, Ptrs};
use super::module::KernelFn;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::op::{ConvGeom, ConvKind};
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{Function, InstBuilder, MemFlagsData, UserFuncName};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Linkage, Module};
use plan::{segments, Axis};

/// True for a depthwise convolution: one input channel per group, more than one group.
pub(super) fn is_depthwise(geo: &ConvGeom) -> bool {
    geo.groups > 1 && geo.groups == geo.c
}

/// The kernels are on unless `KILN_DW_JIT=0` (for comparing them with the loops).
fn enabled() -> bool {
    std::env::var("KILN_DW_JIT").map_or(true, |v| v != "0")
}

/// Declares and builds the Cranelift kernel of depthwise step `index` (kind, geometry and
/// dtype as planned), appending it to `lowered`; `None` when the step is not depthwise, the
/// kernels are off, or a size is outside what the kernel's constant offsets cover (the loops
/// then run it).
pub(super) fn lower(
    module: &mut JITModule,
    fctx: &mut FunctionBuilderContext,
    (kind, geo, dtype): (ConvKind, &ConvGeom, DType),
    index: usize,
    lowered: &mut Vec<(FuncId, Function)>,
) -> Result<Option<FuncId>> {
    let size = dtype.size_bytes();
    let f64 = match dtype {
        DType::F32 => false,
        DType::F64 => true,
        _ => return Ok(None),
    };
    let bytes = |px: usize, ch: usize| px.checked_mul(ch).and_then(|v| v.checked_mul(size));
    let fits = [
        bytes(geo.in_pixels(), geo.c),
        bytes(geo.out_pixels(), geo.o),
        bytes(geo.window.kernel[0] * geo.window.kernel[1], geo.o),
    ]
    .iter()
    .all(|b| b.is_some_and(|b| b > 0 && b <= (i32::MAX / 4) as usize));
    if !is_depthwise(geo) || !enabled() || !fits || geo.o % geo.c != 0 {
        return Ok(None);
    }
    let sig = super::codegen::kernel_signature(module.target_config().default_call_conv);
    let fid = module
        .declare_function(&format!("dwconv_{index}"), Linkage::Local, &sig)
        .map_err(|e| Error::invalid(format!("jit: {e}")))?;
    let mut func = Function::with_name_signature(UserFuncName::user(0, fid.as_u32()), sig);
    {
        let mut b = FunctionBuilder::new(&mut func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let ps = b.block_params(entry).to_vec();
        let arg = |b: &mut FunctionBuilder, i: i32| {
            b.ins().load(I64, MemFlagsData::trusted(), ps[0], i * 8)
        };
        let (a, w, out) = (arg(&mut b, 0), arg(&mut b, 1), arg(&mut b, 2));
        let mut em = emit::Em::new(&mut b, f64);
        emit_kind(&mut em, kind, geo, [a, w, out, ps[3], ps[4]]);
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    lowered.push((fid, func));
    Ok(Some(fid))
}

/// The body of a depthwise kernel: `a`, `b`, `out` are the step's operands and output,
/// `[lo, hi)` its images.
fn emit_kind(
    em: &mut emit::Em,
    kind: ConvKind,
    geo: &ConvGeom,
    [a, b, out, lo, hi]: [cranelift_codegen::ir::Value; 5],
) {
    let (size, lanes) = (em.size as usize, em.lanes());
    let (c, o) = (geo.c, geo.o);
    let m = o / c;
    let axes = [Axis::of(geo, 0), Axis::of(geo, 1)];
    let w_tap = (o * size) as i64;
    let gather = |fwd: bool| {
        let segs = segments(c, m, (size, lanes, 2), !fwd);
        let accs = segs.iter().map(|s| s.g.accs()).max().unwrap_or(1);
        let (dest_ch, src_ch) = if fwd { (o, c) } else { (c, o) };
        let plan = |ax: Axis| if fwd { ax.forward() } else { ax.input_grad() };
        gather::Gather {
            rows: plan(axes[0]),
            cols: plan(axes[1]),
            axes,
            fwd,
            dest_hw: if fwd { geo.out_hw } else { geo.in_hw },
            src_hw: if fwd { geo.in_hw } else { geo.out_hw },
            dest_pix: (dest_ch * size) as i64,
            src_pix: (src_ch * size) as i64,
            w_tap,
            segs,
            p: (8 / accs.max(1)).clamp(1, 4),
        }
    };
    let args = gather::Args {
        src: a,
        w: b,
        dest: out,
        lo,
        hi,
    };
    match kind {
        ConvKind::Forward => gather(true).emit(em, args),
        ConvKind::InputGrad { .. } => gather(false).emit(em, args),
        ConvKind::FilterGrad => filter::Filter {
            rows: axes[0].forward(),
            cols: axes[1].forward(),
            axes,
            x_pix: (c * size) as i64,
            dy_pix: (o * size) as i64,
            w_tap,
            segs: segments(c, m, (size, lanes, 1), false),
        }
        .emit(em, (a, b, out, lo, hi)),
    }
}

/// Calls kernel `f` on buffers `a`, `b`, `out` for images `[n0, n1)`.
///
/// # Safety
/// `f` is the step's kernel, the buffers hold the step's operands and output, and the
/// images of `out` it writes (all of `out` for a filter gradient) are this call's alone.
unsafe fn call(f: KernelFn, [a, b, out]: [usize; 3], (n0, n1): (usize, usize)) {
    let args = [a as *mut u8, b as *mut u8, out as *mut u8];
    // SAFETY: the caller's contract; the kernel reads `args[0..3]` and the image range, and
    // ignores scratch and status.
    unsafe {
        f(
            args.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            n0 as i64,
            n1 as i64,
        )
    }
}

/// `&[T]` of `len` elements at `p + off`.
///
/// # Safety
/// The elements must be inside one live buffer, not written while the slice lives.
unsafe fn at<'a, T>(p: *const T, off: usize, len: usize) -> &'a [T] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(p.add(off), len) }
}

/// `&mut [T]` of `len` elements at `p + off`.
///
/// # Safety
/// As [`at`], and no other reference to those elements may live.
unsafe fn at_mut<'a, T>(p: *mut T, off: usize, len: usize) -> &'a mut [T] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts_mut(p.add(off), len) }
}

/// Image `n` of `y = conv(x, w)`.
///
/// # Safety
/// `p` holds `x [N,H,W,C]`, `w [KH,KW,1,O]`, `y [N,OH,OW,O]` (checked by `compile`), and
/// image `n` of `y` is this call's alone.
pub(super) unsafe fn forward<T: Elem>(geo: &ConvGeom, k: Option<KernelFn>, p: Ptrs, n: usize) {
    if let Some(f) = k {
        // SAFETY: the caller's contract (image `n` of `y` is this call's).
        return unsafe { call(f, [p.a, p.b, p.out], (n, n + 1)) };
    }
    let (c, o) = (geo.c, geo.o);
    let m = o / c.max(1);
    let [kh_n, kw_n] = geo.window.kernel;
    for oh in 0..geo.out_hw[0] {
        for ow in 0..geo.out_hw[1] {
            let yp = ((n * geo.out_hw[0] + oh) * geo.out_hw[1] + ow) * o;
            // SAFETY: an output pixel of image `n` (this call's).
            let y = unsafe { at_mut(p.out as *mut T, yp, o) };
            y.fill(T::default());
            for kh in 0..kh_n {
                let ih = geo.src(0, oh, kh);
                for kw in 0..kw_n {
                    // SAFETY: the tap's filter row.
                    let w = unsafe { at(p.b as *const T, (kh * kw_n + kw) * o, o) };
                    let Some((ih, iw)) = ih.zip(geo.src(1, ow, kw)) else {
                        // A padding tap: its zero is multiplied like any input (`0 · inf`
                        // is NaN), as im2col and `gemm` do and the interpreter defines (F9).
                        for (y, &w) in y.iter_mut().zip(w) {
                            *y = *y + T::default() * w;
                        }
                        continue;
                    };
                    let xp = ((n * geo.in_hw[0] + ih) * geo.in_hw[1] + iw) * c;
                    // SAFETY: an in-bounds input pixel.
                    let x = unsafe { at(p.a as *const T, xp, c) };
                    if m == 1 {
                        for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                            *y = *y + x * w;
                        }
                    } else {
                        for (ci, &x) in x.iter().enumerate() {
                            for j in ci * m..(ci + 1) * m {
                                y[j] = y[j] + x * w[j];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Image `n` of `dx = InputGrad(dy, w)`.
///
/// # Safety
/// `p` holds `dy [N,OH,OW,O]`, `w [KH,KW,1,O]`, `dx [N,H,W,C]`, and image `n` of `dx` is
/// this call's alone.
pub(super) unsafe fn input_grad<T: Elem>(geo: &ConvGeom, k: Option<KernelFn>, p: Ptrs, n: usize) {
    if let Some(f) = k {
        // SAFETY: the caller's contract (image `n` of `dx` is this call's).
        return unsafe { call(f, [p.a, p.b, p.out], (n, n + 1)) };
    }
    let (c, o) = (geo.c, geo.o);
    let m = o / c.max(1);
    let [kh_n, kw_n] = geo.window.kernel;
    let px = geo.in_pixels() * c;
    // SAFETY: image `n` of `dx` (this call's).
    unsafe { at_mut(p.out as *mut T, n * px, px) }.fill(T::default());
    for oh in 0..geo.out_hw[0] {
        for ow in 0..geo.out_hw[1] {
            let yp = ((n * geo.out_hw[0] + oh) * geo.out_hw[1] + ow) * o;
            // SAFETY: an output-gradient pixel.
            let dy = unsafe { at(p.a as *const T, yp, o) };
            for kh in 0..kh_n {
                let Some(ih) = geo.src(0, oh, kh) else {
                    continue;
                };
                for kw in 0..kw_n {
                    let Some(iw) = geo.src(1, ow, kw) else {
                        continue;
                    };
                    let xp = ((n * geo.in_hw[0] + ih) * geo.in_hw[1] + iw) * c;
                    // SAFETY: an in-bounds pixel of image `n` of `dx`, and the tap's row.
                    let (dx, w) = unsafe {
                        (
                            at_mut(p.out as *mut T, xp, c),
                            at(p.b as *const T, (kh * kw_n + kw) * o, o),
                        )
                    };
                    for (ci, dx) in dx.iter_mut().enumerate() {
                        let mut s = *dx;
                        for j in ci * m..(ci + 1) * m {
                            s = s + dy[j] * w[j];
                        }
                        *dx = s;
                    }
                }
            }
        }
    }
}

/// Images `[n0, n1)`'s sum of `dw = FilterGrad(x, dy)` into `dst` (`[KH·KW, O]`).
///
/// # Safety
/// `p` holds `x [N,H,W,C]` and `dy [N,OH,OW,O]`; `dst` holds `KH·KW·O` elements that are
/// this call's alone.
pub(super) unsafe fn filter_grad<T: Elem>(
    geo: &ConvGeom,
    k: Option<KernelFn>,
    p: Ptrs,
    (n0, n1): (usize, usize),
    dst: *mut T,
) {
    let (c, o) = (geo.c, geo.o);
    let m = o / c.max(1);
    let [kh_n, kw_n] = geo.window.kernel;
    // SAFETY: the caller's `dst`.
    let dw = unsafe { at_mut(dst, 0, kh_n * kw_n * o) };
    dw.fill(T::default());
    if let Some(f) = k {
        // SAFETY: the caller's contract; the kernel adds images `[n0, n1)` into `dst`.
        return unsafe { call(f, [p.a, p.b, dst as usize], (n0, n1)) };
    }
    for n in n0..n1 {
        for oh in 0..geo.out_hw[0] {
            for ow in 0..geo.out_hw[1] {
                let yp = ((n * geo.out_hw[0] + oh) * geo.out_hw[1] + ow) * o;
                // SAFETY: an output-gradient pixel.
                let dy = unsafe { at(p.b as *const T, yp, o) };
                for kh in 0..kh_n {
                    let ih = geo.src(0, oh, kh);
                    for kw in 0..kw_n {
                        let row = &mut dw[(kh * kw_n + kw) * o..(kh * kw_n + kw + 1) * o];
                        let Some((ih, iw)) = ih.zip(geo.src(1, ow, kw)) else {
                            // A padding tap: `0 · dy`, as im2col and `gemm` compute (F9).
                            for (r, &d) in row.iter_mut().zip(dy) {
                                *r = *r + T::default() * d;
                            }
                            continue;
                        };
                        let xp = ((n * geo.in_hw[0] + ih) * geo.in_hw[1] + iw) * c;
                        // SAFETY: an in-bounds input pixel.
                        let x = unsafe { at(p.a as *const T, xp, c) };
                        if m == 1 {
                            for ((r, &x), &d) in row.iter_mut().zip(x).zip(dy) {
                                *r = *r + x * d;
                            }
                        } else {
                            for (j, r) in row.iter_mut().enumerate() {
                                *r = *r + x[j / m] * dy[j];
                            }
                        }
                    }
                }
            }
        }
    }
}
