//! Kernel IR → Cranelift IR.
//!
//! Every [`Kernel`] becomes one function
//! `extern "C" fn(args: *const *mut u8, scratch: *mut u8, status: *mut i32, lo: i64, hi: i64)`:
//! `args[i]` is parameter `i`'s buffer, `args[params]` the output's, `scratch` a buffer of at
//! least [`scratch_bytes`] bytes for reduction accumulators or matmul results, and `status` is
//! set to 1 if an integer division by zero happened (the executable turns that into an
//! error after the call). `[lo, hi)` is the range of the domain's split axis (the first,
//! or the first outer one whose extent is not 1: [`Split::axis`]) this call computes, when the kernel has a [`Split`] (the executable runs several ranges on several
//! threads); kernels without one ignore it.
//!
//! The code is split by concern: this file has the kernel entry point and the loop nests;
//! `unary.rs` the unary ops; `body.rs` evaluates an expression body (loads, guarded loads, selects,
//! binary ops, casts) and decides what vectorizes; `reduce.rs` the accumulation of
//! reductions; `tiled.rs` the tile passes around the AVX2 calls.
//!
//! # Loops
//! A body's domain becomes a loop nest with constant extents, outer axes first. The innermost
//! axis runs 4 lanes at a time (`f32x4`) with a scalar tail when the body is *vectorizable*:
//! all of its values are `f32` (or `bool` masks, made by comparing `f32`s or loaded once per
//! row from a `bool` parameter that does not vary along the row, like dropout's `training`
//! flag), and every `f32` load walks its parameter with stride 1 (a vector load) or 0 (a
//! broadcast, loaded once per row, outside the inner loop). Anything else (integers, `f64`,
//! strided gathers, `pow`) runs the same nest one element at a time.
//!
//! # Reductions
//! A reduction accumulates into a scratch array with one slot per output element: the slots
//! are set to the identity, the prologue's domain is walked in row-major order adding each
//! value into its slot, then the epilogue maps slots to outputs. When the innermost axis is
//! reduced, a vector of 4 partial results is carried through the inner loop and combined at
//! its end; when it is kept, slots are updated 4 at a time. Either way the memory is walked
//! in order. Accumulation is in the accumulator's dtype (`f32` for `f32`), so sums differ
//! from the interpreter's (which adds in `f64`) by at most `n · 2⁻²⁴ · Σ|x|`.
//!
//! # Contractions
//! The executable calls `gemm` (see [`super::runtime::gemm`]) once per batch index, with the
//! operands' strides, so transposed operands are never copied, writing the product into the
//! output when it has the product's dtype ([`matmul_in_output`]) or else into scratch. The
//! kernel's function is then only the epilogue, an elementwise body reading the product as
//! `Expr::Core`; in the output's case it runs in place (each element is read before it is
//! overwritten, at the same position). A product with no epilogue has no function at all.
//!
//! # Memory safety
//! Every address is `base + element_offset * size`, where the offset is an index map applied
//! to a point of the loop domain. [`Kernel::validate`] proves each map stays inside its
//! parameter for every point of the domain, and the executable hands in buffers of exactly
//! the parameter types' sizes; loops run exactly over the domain (the vector loop stops at
//! the last multiple of 4, the tail does the rest). Loads and stores are not marked aligned
//! (feeds are plain `Vec`s), so misalignment cannot fault.

mod body;
pub(super) mod convert;
pub(super) mod pool;
mod reduce;
pub(super) mod tiled;
mod unary;

use body::vectorizable;

use super::math;
use crate::dtype::DType;

use crate::kernel::{Body, Core, Expr, Kernel};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{
    AbiParam, BlockArg, Endianness, InstBuilder, MemFlagsData, Signature, Type, Value,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Module};

/// Extern helpers a kernel may call, declared in the module once.
pub(super) struct Helpers {
    /// `vmath::ENTRIES`, declared when this CPU can run them (`vmath::available`) and
    /// tiling is not turned off; `None` keeps every transcendental in Cranelift.
    pub tile_fns: Option<Vec<FuncId>>,
    pub pow_f32: FuncId,
    pub pow_f64: FuncId,
    pub pow_i32: FuncId,
    pub rem_f32: FuncId,
    pub rem_f64: FuncId,
    pub unary_f64: FuncId,
    /// The half conversions of `convert.rs`.
    pub f16_to_f32: FuncId,
    pub f32_to_f16: FuncId,
    pub bf16_to_f32: FuncId,
    pub f32_to_bf16: FuncId,
}

/// Columns per block of a reordered loop (`body::loop_order`): 64 output rows of 64 bytes
/// stay in L1 while a block is written (a multiple of 4, so only the last block has a
/// scalar tail, as without blocks).
const COLUMN_BLOCK: i64 = 64;

/// The signature every kernel has.
pub(super) fn kernel_signature(call_conv: CallConv) -> Signature {
    let mut s = Signature::new(call_conv);
    for _ in 0..5 {
        s.params.push(AbiParam::new(I64));
    }
    s
}

/// How a kernel's work may be divided between threads: calls with ranges `[lo, hi)` of the
/// domain's split axis that together cover `0..extent` compute the same bits as one call
/// over all of it, provided every boundary is a multiple of `align`. Kernels that cannot be
/// divided this way (a reduction over the first axis) have no `Split` and ignore the range.
///
/// The split axis is the first one, except that an elementwise or matmul-epilogue body
/// skips leading axes of extent 1 (an NHWC image at batch 1, `[1, H, W, C]`, splits by its
/// rows `H`, not by its single image); every axis before it then runs its one index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Split {
    /// The axis divided (see [`split_axis`]).
    pub axis: usize,
    /// The split axis' extent.
    pub extent: usize,
    /// Boundaries are multiples of this (4 when the split axis is also the vectorized inner
    /// one, so that each element takes the same vector or scalar path however it is split).
    pub align: usize,
    /// Elementary operations per unit of the split axis (for deciding whether to split).
    pub cost: usize,
}

/// The axis a body over `domain` is split along: the first axis, or for an elementwise or
/// matmul-epilogue body (`skip_units`) the first of the outer axes whose extent is not 1
/// (the innermost is never chosen past axis 0: it is the vectorized one, and a reordered
/// loop walks it in column blocks).
fn split_axis(domain: &[usize], skip_units: bool) -> usize {
    if !skip_units || domain.len() < 2 {
        return 0;
    }
    (0..domain.len() - 1).find(|&a| domain[a] != 1).unwrap_or(0)
}

/// The [`Split`] of a kernel, if it has one.
pub(super) fn split_of(k: &Kernel) -> Option<Split> {
    // The loop nest's first axis is the one split (the loop order may differ from the
    // domain's, see `body::loop_order`).
    let reordered = body::loop_order(k).map(|(b, _)| b);
    let (body, skip_units) = match &k.core {
        Core::None => (reordered.as_ref().unwrap_or(&k.epilogue), true),
        Core::MatMul { .. } => (&k.epilogue, true),
        // A reduction's accumulator slots are divided along the first axis (see
        // `reduce_splittable`), and its epilogue with them.
        Core::Reduce { axes, .. } => {
            if !reduce_splittable(k, axes) {
                return None;
            }
            (&k.prologue, false)
        }
    };
    let axis = split_axis(&body.domain, skip_units);
    let extent = *body.domain.get(axis)?;
    if extent == 0 {
        return None;
    }
    let numel: usize = body.domain.iter().product();
    Some(Split {
        axis,
        extent,
        align: if body.domain.len() == 1 { 4 } else { 1 },
        cost: numel / extent * body.exprs.len().max(1),
    })
}

/// True if the kernel's loop nest runs its axes in another order than its domain's (so its
/// split's first axis may not be the domain's first).
pub(super) fn reordered(k: &Kernel) -> bool {
    body::loop_order(k).is_some()
}

/// A reduction divides along its first axis when that axis is kept, and the output's first
/// axis is the same one (so a range of prologue rows owns the same range of accumulator slots
/// and of output rows).
fn reduce_splittable(k: &Kernel, axes: &[usize]) -> bool {
    let dom = &k.prologue.domain;
    let epi = &k.epilogue.domain;
    if dom.is_empty() || axes.contains(&0) || epi.first() != dom.first() {
        return false;
    }
    let kept_rest: usize = (1..dom.len())
        .filter(|a| !axes.contains(a))
        .map(|a| dom[a])
        .product();
    epi[1..].iter().product::<usize>() == kept_rest
}

/// Bytes of scratch a kernel needs (reduction accumulators, or a matmul result that cannot
/// be written into the output itself).
pub(super) fn scratch_bytes(k: &Kernel) -> usize {
    match &k.core {
        Core::None => 0,
        Core::Reduce { .. } => {
            let acc = k.prologue.exprs.last().map_or(DType::F32, |e| e.1);
            k.epilogue.domain.iter().product::<usize>() * acc.size_bytes()
        }
        Core::MatMul { .. } => {
            if matmul_in_output(k) {
                0
            } else {
                k.epilogue.domain.iter().product::<usize>() * k.params[0].dtype.size_bytes()
            }
        }
    }
}

/// True if a matmul's epilogue is just its result: `gemm` writes the output and there is no
/// kernel to run after it.
pub(super) fn direct_matmul(k: &Kernel) -> bool {
    k.epilogue.exprs.len() == 1 && matches!(k.epilogue.exprs[0].0, Expr::Core)
}

/// True if the product is written into the output buffer and the epilogue then runs in place
/// (each element is read before it is overwritten, at the same position): possible when the
/// output has the product's dtype. Otherwise the product goes to scratch.
pub(super) fn matmul_in_output(k: &Kernel) -> bool {
    k.out.dtype == k.params[0].dtype
}

use convert::cl_type;

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

fn le() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// What an expression of a body needs that is the same along a whole row (see
/// `Gen::prepare_loads`).
#[derive(Clone, Copy)]
pub(super) struct RowPrep {
    /// A load's element offset at the row's start.
    base: Value,
    /// A broadcast load's value, splatted (vector mode).
    splat: Option<Value>,
    /// A guarded load: whether its bounds on the outer axes hold in this row (None: it has
    /// none there). A select on an outer axis: the row's index on that axis.
    row: Option<Value>,
}

/// Where the body reads `Expr::Core` from: a contiguous array (accumulators or the matmul
/// result) indexed by the output's row-major position.
#[derive(Clone, Copy)]
struct CoreSrc {
    ptr: Value,
    dtype: DType,
}

/// Generates one kernel function body.
pub(super) struct Gen<'a, 'b> {
    pub b: &'b mut FunctionBuilder<'a>,
    pub module: &'b mut dyn Module,
    pub helpers: &'b Helpers,
    params: Vec<Value>,
    out: Value,
    scratch: Value,
    status: Value,
    /// The range of the split axis this call computes (see [`Split`]).
    lo: Value,
    hi: Value,
    /// The axis `lo..hi` ranges over ([`Split::axis`]; 0 without a split).
    split_axis: usize,
    /// Whether a body ran in tiles (`tiled.rs`).
    pub tiled: bool,
}

impl<'a, 'b> Gen<'a, 'b> {
    pub(super) fn new(
        b: &'b mut FunctionBuilder<'a>,
        module: &'b mut dyn Module,
        helpers: &'b Helpers,
        nparams: usize,
    ) -> Gen<'a, 'b> {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let args = b.block_params(entry)[0];
        let scratch = b.block_params(entry)[1];
        let status = b.block_params(entry)[2];
        let lo = b.block_params(entry)[3];
        let hi = b.block_params(entry)[4];
        let params = (0..nparams)
            .map(|i| {
                b.ins()
                    .load(I64, MemFlagsData::trusted(), args, (i * 8) as i32)
            })
            .collect();
        let out = b
            .ins()
            .load(I64, MemFlagsData::trusted(), args, (nparams * 8) as i32);
        Gen {
            b,
            module,
            helpers,
            params,
            out,
            scratch,
            status,
            lo,
            hi,
            split_axis: 0,
            tiled: false,
        }
    }

    pub(super) fn finish(self) {
        self.b.ins().return_(&[]);
        self.b.seal_all_blocks();
    }

    /// `for i in (lo..hi).step_by(step)`, carrying `carry` values through the iterations;
    /// returns their final values.
    #[allow(clippy::type_complexity)] // a loop body: (builder, index, carried) -> carried
    fn for_carry(
        &mut self,
        lo: Value,
        hi: Value,
        step: i64,
        carry: &[Value],
        body: &mut dyn FnMut(&mut Self, Value, &[Value]) -> Vec<Value>,
    ) -> Vec<Value> {
        let header = self.b.create_block();
        let body_blk = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, I64);
        let types: Vec<Type> = carry
            .iter()
            .map(|&v| self.b.func.dfg.value_type(v))
            .collect();
        for &t in &types {
            self.b.append_block_param(header, t);
            self.b.append_block_param(exit, t);
        }
        let mut args = vec![BlockArg::Value(lo)];
        args.extend(carry.iter().map(|&v| BlockArg::Value(v)));
        self.b.ins().jump(header, &args);

        self.b.switch_to_block(header);
        let ps: Vec<Value> = self.b.block_params(header).to_vec();
        let i = ps[0];
        let cur: Vec<Value> = ps[1..].to_vec();
        let c = self.b.ins().icmp(IntCC::SignedLessThan, i, hi);
        let exit_args: Vec<BlockArg> = cur.iter().map(|&v| BlockArg::Value(v)).collect();
        self.b.ins().brif(c, body_blk, &[], exit, &exit_args);

        self.b.switch_to_block(body_blk);
        let next = body(self, i, &cur);
        let i2 = self.b.ins().iadd_imm_s(i, step);
        let mut args = vec![BlockArg::Value(i2)];
        args.extend(next.iter().map(|&v| BlockArg::Value(v)));
        self.b.ins().jump(header, &args);

        self.b.switch_to_block(exit);
        self.b.block_params(exit).to_vec()
    }

    fn for_each_v(
        &mut self,
        lo: Value,
        hi: Value,
        step: i64,
        body: &mut dyn FnMut(&mut Self, Value),
    ) {
        self.for_carry(lo, hi, step, &[], &mut |g, i, _| {
            body(g, i);
            vec![]
        });
    }

    /// `lo + (hi - lo)` rounded down to a multiple of 4: where a vector loop over `[lo, hi)`
    /// stops and its scalar tail begins.
    fn vec_end(&mut self, lo: Value, hi: Value) -> Value {
        let len = self.b.ins().isub(hi, lo);
        let len4 = self.b.ins().band_imm_s(len, -4);
        self.b.ins().iadd(lo, len4)
    }

    /// Walks `domain` row-major: `inner` is called once per innermost row with the outer
    /// indices, and handles the innermost axis itself. A rank-0 domain calls it once with no
    /// indices and an innermost extent of 1. An empty domain (any extent 0) emits nothing:
    /// `inner` hoists loads of row-invariant operands above its loop, and those must not run
    /// when there is no element to read (the buffer of an empty array may be dangling).
    ///
    /// `inner` also gets the innermost axis' range. With `split`, the split axis
    /// ([`Split::axis`]) runs over this call's `[lo, hi)` instead of all of it (for a rank-1
    /// domain that is the innermost range itself).
    #[allow(clippy::type_complexity)] // a row body: (builder, outer indices, inner range)
    fn rows(
        &mut self,
        domain: &[usize],
        split: bool,
        inner: &mut dyn FnMut(&mut Self, &[Value], Value, Value),
    ) {
        if domain.contains(&0) {
            return;
        }
        // One level per axis of the domain: the depth is the kernel's rank, not the graph's
        // size (the one recursion in code generation; ARCHITECTURE invariant 16).
        #[allow(clippy::type_complexity)]
        fn rec<'a, 'b>(
            g: &mut Gen<'a, 'b>,
            domain: &[usize],
            split: bool,
            idx: &mut Vec<Value>,
            inner: &mut dyn FnMut(&mut Gen<'a, 'b>, &[Value], Value, Value),
        ) {
            let (lo, hi) = if split && idx.len() == g.split_axis {
                (g.lo, g.hi)
            } else {
                let ext = domain.get(idx.len()).copied().unwrap_or(1) as i64;
                (g.b.ins().iconst(I64, 0), g.b.ins().iconst(I64, ext))
            };
            if idx.len() + 1 >= domain.len() {
                inner(g, idx, lo, hi);
                return;
            }
            g.for_each_v(lo, hi, 1, &mut |g, i| {
                idx.push(i);
                rec(g, domain, split, idx, inner);
                idx.pop();
            });
        }
        rec(self, domain, split, &mut vec![], inner);
    }

    /// `offset + sum(idx_k * strides_k)` over the outer axes, as an i64 value.
    fn base_offset(&mut self, offset: isize, strides: &[usize], idx: &[Value]) -> Value {
        let mut acc = self.b.ins().iconst(I64, offset as i64);
        for (k, &i) in idx.iter().enumerate() {
            let s = strides[k] as i64;
            if s != 0 {
                let t = self.b.ins().imul_imm_s(i, s);
                acc = self.b.ins().iadd(acc, t);
            }
        }
        acc
    }

    fn addr(&mut self, base: Value, elem: Value, size: usize) -> Value {
        let bytes = self.b.ins().imul_imm_s(elem, size as i64);
        self.b.ins().iadd(base, bytes)
    }

    // ---------------------------------------------------------------- kernels

    /// The kernel's code for one call over `[lo, hi)` of its split axis (see [`Split`]). A
    /// matmul kernel's function is only its epilogue: the executable calls `gemm` first,
    /// writing the product where the epilogue reads it (see [`matmul_in_output`]).
    pub(super) fn kernel(&mut self, k: &Kernel) {
        let sp = split_of(k);
        let split = sp.is_some();
        self.split_axis = sp.map_or(0, |s| s.axis);
        match &k.core {
            Core::None => {
                let out = self.out;
                match body::loop_order(k) {
                    Some((body, out_strides)) => {
                        self.elementwise_in(k, &body, out, None, split, &out_strides)
                    }
                    None => self.elementwise(k, &k.epilogue, out, None, split),
                }
            }
            Core::Reduce { op, axes } => self.reduce(k, *op, axes, split),
            Core::MatMul { .. } => {
                let src = CoreSrc {
                    ptr: if matmul_in_output(k) {
                        self.out
                    } else {
                        self.scratch
                    },
                    dtype: k.params[0].dtype,
                };
                let out = self.out;
                self.elementwise(k, &k.epilogue, out, Some(src), split);
            }
        }
    }

    /// An elementwise body over its domain, writing row-major into `out`.
    fn elementwise(
        &mut self,
        k: &Kernel,
        body: &Body,
        out: Value,
        core: Option<CoreSrc>,
        split: bool,
    ) {
        let out_strides = crate::kernel::row_major_strides(&body.domain);
        self.elementwise_in(k, body, out, core, split, &out_strides);
    }

    /// [`Gen::elementwise`] writing the point `p` of the domain at `sum(p_i * out_strides_i)`
    /// (a body whose loop order `body::loop_order` changed writes its rows with a stride).
    fn elementwise_in(
        &mut self,
        k: &Kernel,
        body: &Body,
        out: Value,
        core: Option<CoreSrc>,
        split: bool,
        out_strides: &[usize],
    ) {
        let domain = body.domain.clone();
        let out_dt = body.exprs.last().map_or(DType::F32, |e| e.1);
        let size = out_dt.size_bytes();
        let vec_ok = vectorizable(k, body, core);
        let rank = domain.len();
        // The output's stride along the inner loop (1 unless the loop order changed).
        let os = out_strides.last().copied().unwrap_or(1);
        // Short rows (softmax over 10 classes) would pay a call per few elements; both
        // paths give the same bits, so this is only a matter of speed.
        let long_rows = domain.last().is_some_and(|&n| n >= tiled::MIN_ROW);
        let plan = match self.helpers.tile_fns {
            Some(_) if vec_ok && long_rows => tiled::Plan::of(body),
            _ => None,
        };
        let tiles = plan.as_ref().map(|p| self.tile_slot(p));
        self.tiled |= plan.is_some();
        let row = |g: &mut Self, idx: &[Value], lo: Value, hi: Value| {
            let obase = g.base_offset(0, out_strides, idx);
            let loads = g.prepare_loads(k, body, idx, vec_ok);
            let emit = |g: &mut Self, i: Option<Value>, lanes: u8| {
                let v = g.eval_body(k, body, &loads, i, lanes, core, obase);
                let o = match i {
                    Some(i) if os == 1 => g.b.ins().iadd(obase, i),
                    Some(i) => {
                        let t = g.b.ins().imul_imm_s(i, os as i64);
                        g.b.ins().iadd(obase, t)
                    }
                    None => obase,
                };
                let a = g.addr(out, o, size);
                if lanes == 4 && os != 1 {
                    // Lanes go to a column: one store each.
                    for l in 0..4u8 {
                        let x = g.b.ins().extractlane(v, l);
                        g.b.ins()
                            .store(flags(), x, a, (l as usize * os * size) as i32);
                    }
                } else {
                    g.b.ins().store(flags(), v, a, 0);
                }
            };
            if rank == 0 {
                emit(g, None, 1);
                return;
            }
            let tail = if vec_ok {
                let end = g.vec_end(lo, hi);
                match (&plan, tiles) {
                    (Some(plan), Some(tiles)) => {
                        let o = (out, obase, os);
                        g.tiled_row(body, plan, tiles, &loads, (lo, end), core, o)
                    }
                    _ => g.for_each_v(lo, end, 4, &mut |g, i| emit(g, Some(i), 4)),
                }
                end
            } else {
                lo
            };
            g.for_each_v(tail, hi, 1, &mut |g, i| emit(g, Some(i), 1));
        };
        if os == 1 || rank < 2 {
            self.rows(&domain, split, &mut |g, idx, lo, hi| row(g, idx, lo, hi));
            return;
        }
        // A reordered loop writes a column per row: walk the inner axis in blocks so that the
        // output lines a block writes stay in L1 from one row to the next (a cache-blocked
        // transpose). The points, and the code computing each, are the same.
        let ext = self.b.ins().iconst(I64, domain[rank - 1] as i64);
        let zero = self.b.ins().iconst(I64, 0);
        self.for_each_v(zero, ext, COLUMN_BLOCK, &mut |g, jb| {
            let e = g.b.ins().iadd_imm_s(jb, COLUMN_BLOCK);
            let c = g.b.ins().icmp(IntCC::SignedLessThan, e, ext);
            let hi = g.b.ins().select(c, e, ext);
            g.rows(&domain, split, &mut |g, idx, _, _| row(g, idx, jb, hi));
        });
    }

    fn call_helper(&mut self, f: FuncId, args: &[Value]) -> Value {
        let fref = self.module.declare_func_in_func(f, self.b.func);
        let call = self.b.ins().call(fref, args);
        self.b.inst_results(call)[0]
    }
}
