//! Where values live during a run, and the raw pointers native code gets to them.
//!
//! A value is read where it already is (a feed, a variable, a constant), or lives in one of
//! the buffer assignment's slots (a workspace of 64-byte-aligned buffers, one per concurrent
//! run), or in an output array handed back to the caller. This file is the one place that
//! turns a [`Loc`] into a pointer; everything that dereferences such a pointer relies on the
//! buffer having exactly the type the schedule was compiled for (checked by `run_into` for
//! arrays from outside, by construction for slots and outputs).

use super::runtime::AlignedBuf;
use crate::array::{Array, ArrayData};
use crate::dtype::DType;
use std::sync::Arc;

/// Where a value lives during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Loc {
    /// The i-th array fed to `run`.
    Feed(usize),
    /// The i-th variable's array.
    Var(usize),
    /// The i-th constant of the executable.
    Const(usize),
    /// A slot of the buffer assignment, in the run's workspace.
    Slot(usize),
    /// The i-th distinct output's array.
    Out(usize),
}

/// The buffers one run writes: the slots of the buffer assignment and the kernels' scratch.
pub(super) struct Workspace {
    pub(super) slots: Vec<AlignedBuf>,
    pub(super) scratch: AlignedBuf,
}

fn array_ptr(a: &Array) -> *mut u8 {
    match a.data() {
        ArrayData::F32(v) => v.as_ptr() as *mut u8,
        ArrayData::F64(v) => v.as_ptr() as *mut u8,
        ArrayData::I32(v) => v.as_ptr() as *mut u8,
        ArrayData::Bool(v) => v.as_ptr() as *mut u8,
        ArrayData::I64(v) => v.as_ptr() as *mut u8,
        ArrayData::I8(v) => v.as_ptr() as *mut u8,
        ArrayData::U8(v) => v.as_ptr() as *mut u8,
        ArrayData::F16(v) => v.as_ptr() as *mut u8,
        ArrayData::BF16(v) => v.as_ptr() as *mut u8,
    }
}

fn array_mut_ptr(a: &mut Array) -> *mut u8 {
    match a.dtype() {
        DType::F32 => a
            .as_mut_slice::<f32>()
            .map_or(std::ptr::null_mut(), |s| s.as_mut_ptr() as *mut u8),
        DType::F64 => a
            .as_mut_slice::<f64>()
            .map_or(std::ptr::null_mut(), |s| s.as_mut_ptr() as *mut u8),
        DType::I32 => a
            .as_mut_slice::<i32>()
            .map_or(std::ptr::null_mut(), |s| s.as_mut_ptr() as *mut u8),
        DType::Bool => a
            .as_mut_slice::<bool>()
            .map_or(std::ptr::null_mut(), |s| s.as_mut_ptr() as *mut u8),
        DType::I64 => a
            .as_mut_slice::<i64>()
            .map_or(std::ptr::null_mut(), |s| s.as_mut_ptr() as *mut u8),
        DType::I8 => a
            .as_mut_slice::<i8>()
            .map_or(std::ptr::null_mut(), |s| s.as_mut_ptr() as *mut u8),
        DType::U8 => a
            .as_mut_slice::<u8>()
            .map_or(std::ptr::null_mut(), |s| s.as_mut_ptr()),
        DType::F16 => a
            .as_mut_slice::<half::f16>()
            .map_or(std::ptr::null_mut(), |s| s.as_mut_ptr() as *mut u8),
        DType::BF16 => a
            .as_mut_slice::<half::bf16>()
            .map_or(std::ptr::null_mut(), |s| s.as_mut_ptr() as *mut u8),
    }
}

/// Every buffer of one run, by location.
pub(super) struct Buffers<'a> {
    pub(super) feeds: &'a [&'a Array],
    pub(super) vars: &'a [&'a Array],
    pub(super) consts: &'a [Arc<Array>],
    pub(super) ws: &'a mut Workspace,
    pub(super) outs: &'a mut [Array],
}

impl Buffers<'_> {
    /// The buffer of a location. Feeds, variables and constants are only ever read through
    /// it (kernels write only their output, which is a slot or an output array).
    pub(super) fn ptr(&mut self, l: Loc) -> *mut u8 {
        match l {
            Loc::Feed(i) => array_ptr(self.feeds[i]),
            Loc::Var(i) => array_ptr(self.vars[i]),
            Loc::Const(i) => array_ptr(&self.consts[i]),
            Loc::Slot(s) => self.ws.slots[s].as_mut_ptr(),
            Loc::Out(i) => array_mut_ptr(&mut self.outs[i]),
        }
    }
}

/// A zeroed array of `ty` for an output of a run, or an error instead of an aborting
/// allocation: past [`crate::shape::alloc_limit`] (the session checked every value against it
/// before compiling, naming its op; this guards `Executable::run` called directly), or when
/// the allocator refuses. Zeroed memory comes from `alloc_zeroed` (large arrays come from the
/// OS already zeroed, as `vec![0; n]`'s do), not from writing zeros.
pub(super) fn try_zeroed(dtype: DType, shape: &[usize]) -> Result<Array, String> {
    crate::shape::check_alloc("an output of the run", dtype, shape)?;
    let n = crate::shape::checked_numel(shape).unwrap_or(0);
    let shape = shape.to_vec();
    let made = match dtype {
        DType::F32 => Array::new(shape, zeroed_vec::<f32>(n)?),
        DType::F64 => Array::new(shape, zeroed_vec::<f64>(n)?),
        DType::I32 => Array::new(shape, zeroed_vec::<i32>(n)?),
        DType::Bool => Array::new(shape, zeroed_vec::<bool>(n)?),
        DType::I64 => Array::new(shape, zeroed_vec::<i64>(n)?),
        DType::I8 => Array::new(shape, zeroed_vec::<i8>(n)?),
        DType::U8 => Array::new(shape, zeroed_vec::<u8>(n)?),
        DType::F16 => Array::new(shape, zeroed_vec::<half::f16>(n)?),
        DType::BF16 => Array::new(shape, zeroed_vec::<half::bf16>(n)?),
    };
    made.map_err(|e| e.to_string())
}

/// `n` elements of all-zero bits. Called only with the element types above, for each of
/// which all-zero bits are the value zero (or `false`).
fn zeroed_vec<T: crate::array::Element>(n: usize) -> Result<Vec<T>, String> {
    if n == 0 || std::mem::size_of::<T>() == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(n)
        .map_err(|_| format!("{n} elements of {} overflow", T::DTYPE))?;
    // SAFETY: the layout has a non-zero size (n > 0, T is not zero-sized).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut T;
    if ptr.is_null() {
        return Err(format!(
            "cannot allocate an output of {n} elements of {} ({} bytes): out of memory",
            T::DTYPE,
            layout.size()
        ));
    }
    // SAFETY: `ptr` comes from the global allocator with `Layout::array::<T>(n)`, exactly the
    // layout a `Vec<T>` of capacity `n` has; its `n` elements are initialized, since all-zero
    // bits are a valid value of each type this is called with (see above).
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}
