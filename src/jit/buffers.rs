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
