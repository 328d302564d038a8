//! Tiled elementwise loops: cheap operations in Cranelift, transcendentals by a call per tile.
//!
//! A body with `exp`, `log`, `tanh` or `sigmoid` on `f32` spends most of its time in those
//! polynomials, which Cranelift can only run 4 lanes wide; rustc runs them 8 wide (see
//! `vmath.rs` for the measurements). So when the CPU allows it, such a body's vector part
//! runs in tiles of [`TILE`] elements, each tile in *passes*:
//!
//! - every expression gets a **level**: loads, constants and the core read are level 0; a
//!   transcendental is one more than its operand; anything else is the highest of its
//!   operands' levels;
//! - pass `p` is one Cranelift vector loop over the tile computing the level-`p` expressions
//!   it needs; before pass `p` the tile calls (`vmath::ENTRIES`) compute every level-`p`
//!   transcendental from its operand's tile into its own;
//! - a value crosses passes through a tile in a stack slot: each transcendental's operand
//!   and result, and each computed value read by a later pass. Loads and constants are not
//!   kept; a later pass reads them again (from L1, since the tile just touched them);
//! - the last pass writes the body's result.
//!
//! `sigmoid(a*b+c) * tanh(a)` thus becomes: pass 0 stores `a*b+c` and `a` in two tiles; the
//! calls write `sigmoid` and `tanh` of them into two more; pass 1 multiplies those and stores
//! the product. Results are bitwise those of the untiled loop (vmath's functions are
//! transcriptions of math.rs's), and a row's last `< 4` elements still run the untiled
//! scalar code.
//!
//! Invariant relied on: expressions refer only to earlier ones
//! ([`crate::kernel::Kernel::validate`]), so a single forward walk computes levels, and pass `p` never needs a value of a later pass.

use super::{flags, CoreSrc, Gen, RowPrep};
use crate::dtype::DType;
use crate::jit::vmath;
use crate::kernel::{Body, Expr};
use cranelift_codegen::ir::types::{F32X4, I32X4, I64};
use cranelift_codegen::ir::{InstBuilder, StackSlotData, StackSlotKind, Value};
use cranelift_codegen::packed_option::ReservedValue;

/// Elements per tile: 1 KiB per tile, so a body's tiles stay in L1 and a call costs a
/// few cycles per 256 elements.
pub(in crate::jit) const TILE: i64 = 256;

/// Values a later pass reads again from memory rather than from a tile: loads, constants
/// and the core read (in an in-place epilogue each position is still read before the last
/// pass overwrites it, in the same iteration).
fn reloadable(e: &Expr) -> bool {
    matches!(e, Expr::Load { .. } | Expr::Const(_) | Expr::Core)
}

/// Rows shorter than this stay untiled: a tile call costs about as much as the 4-lane
/// polynomials of a dozen elements.
pub(in crate::jit) const MIN_ROW: usize = 32;

/// How one body runs in passes (see the module docs).
#[derive(Debug, PartialEq, Eq)]
pub(in crate::jit) struct Plan {
    /// Each expression's pass.
    level: Vec<usize>,
    /// For transcendentals, the index into `vmath::ENTRIES`.
    call: Vec<Option<usize>>,
    /// The tile holding each expression's value across passes, if any.
    tile: Vec<Option<usize>>,
    tiles: usize,
}

impl Plan {
    /// The plan for `body`, or `None` if it has no `f32` transcendental (and so gains
    /// nothing from tiles).
    pub(in crate::jit) fn of(body: &Body) -> Option<Plan> {
        let n = body.exprs.len();
        let call: Vec<Option<usize>> = body
            .exprs
            .iter()
            .map(|(e, dt)| match e {
                Expr::Unary(u, _) if *dt == DType::F32 => vmath::index(*u),
                _ => None,
            })
            .collect();
        if call.iter().all(Option::is_none) {
            return None;
        }
        let mut level = vec![0usize; n];
        for (j, (e, _)) in body.exprs.iter().enumerate() {
            let ops = e.operands();
            let top = ops.iter().map(|&a| level[a as usize]).max().unwrap_or(0);
            level[j] = top + usize::from(call[j].is_some());
        }
        let mut kept = vec![false; n];
        for (j, (e, _)) in body.exprs.iter().enumerate() {
            if call[j].is_some() {
                kept[j] = true;
            }
            for a in e.operands() {
                let a = a as usize;
                if call[j].is_some() || (level[a] < level[j] && !reloadable(&body.exprs[a].0)) {
                    kept[a] = true;
                }
            }
        }
        let mut tile = vec![None; n];
        let mut tiles = 0;
        for j in 0..n {
            if kept[j] {
                tile[j] = Some(tiles);
                tiles += 1;
            }
        }
        Some(Plan {
            level,
            call,
            tile,
            tiles,
        })
    }

    /// The stack bytes the tiles take.
    pub(in crate::jit) fn bytes(&self) -> u32 {
        (self.tiles as i64 * TILE * 4) as u32
    }

    /// The expressions kept in tiles, in tile order.
    #[cfg(test)]
    pub(in crate::jit) fn kept(&self) -> Vec<usize> {
        (0..self.tile.len())
            .filter(|&j| self.tile[j].is_some())
            .collect()
    }

    /// Each expression's pass.
    #[cfg(test)]
    pub(in crate::jit) fn levels(&self) -> &[usize] {
        &self.level
    }

    /// Which expressions pass `p` evaluates, and which of those it reads from tiles.
    fn pass(&self, body: &Body, p: usize) -> (Vec<bool>, Vec<bool>) {
        let n = body.exprs.len();
        let last = n - 1;
        let mut need: Vec<bool> = (0..n)
            .map(|j| {
                let stored_here = self.tile[j].is_some() && self.call[j].is_none();
                self.level[j] == p && (j == last || stored_here)
            })
            .collect();
        let mut from_tile = vec![false; n];
        for j in (0..n).rev() {
            if !need[j] {
                continue;
            }
            if self.call[j].is_some() || (self.level[j] < p && !reloadable(&body.exprs[j].0)) {
                from_tile[j] = true;
                continue;
            }
            for a in body.exprs[j].0.operands() {
                need[a as usize] = true;
            }
        }
        (need, from_tile)
    }
}

impl Gen<'_, '_> {
    /// The vector part `[lo, end)` of one row of `body` (`end - lo` a multiple of 4), tile
    /// by tile as `plan` says; `tiles` is the stack slot's address, `out` the output base,
    /// `obase` the row's offset in it and `os` the output's stride along the row.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tiled_row(
        &mut self,
        body: &Body,
        plan: &Plan,
        tiles: Value,
        loads: &[Option<RowPrep>],
        (lo, end): (Value, Value),
        core: Option<CoreSrc>,
        (out, obase, os): (Value, Value, usize),
    ) {
        let helpers = self.helpers;
        let fns = helpers
            .tile_fns
            .as_ref()
            .expect("tiled only when the tile functions are declared");
        let last = body.exprs.len() - 1;
        let passes = plan.level[last] + 1;
        let pass_sets: Vec<_> = (0..passes).map(|p| plan.pass(body, p)).collect();
        // What a tile holds, as a vector: `bool` values are lane masks (`fcmp`'s result
        // type, and the per-row masks of `prepare_loads`), everything else is f32 (a tiled
        // body is vectorizable).
        let ty = |j: usize| {
            if body.exprs[j].1 == DType::Bool {
                I32X4
            } else {
                F32X4
            }
        };
        self.for_each_v(lo, end, TILE, &mut |g, t0| {
            // n = min(TILE, end - t0): a multiple of 4, at least 4.
            let left = g.b.ins().isub(end, t0);
            let full = g.b.ins().iconst(I64, TILE);
            let small = g.b.ins().icmp(
                cranelift_codegen::ir::condcodes::IntCC::SignedLessThan,
                left,
                full,
            );
            let n = g.b.ins().select(small, left, full);
            let zero = g.b.ins().iconst(I64, 0);
            for (p, (need, from_tile)) in pass_sets.iter().enumerate() {
                for (j, c) in plan.call.iter().enumerate() {
                    if let (Some(c), true) = (c, plan.level[j] == p) {
                        let a = body.exprs[j].0.operands()[0] as usize;
                        let src = g.tile_addr(tiles, plan.tile[a].expect("kept"), zero);
                        let dst = g.tile_addr(tiles, plan.tile[j].expect("kept"), zero);
                        let fref = g.module.declare_func_in_func(fns[*c], g.b.func);
                        g.b.ins().call(fref, &[src, dst, n]);
                    }
                }
                g.for_each_v(zero, n, 4, &mut |g, i| {
                    let gi = g.b.ins().iadd(t0, i);
                    let mut vals = vec![Value::reserved_value(); body.exprs.len()];
                    for j in 0..body.exprs.len() {
                        if !need[j] {
                            continue;
                        }
                        vals[j] = if from_tile[j] {
                            let a = g.tile_addr(tiles, plan.tile[j].expect("kept"), i);
                            g.b.ins().load(ty(j), flags(), a, 0)
                        } else {
                            g.eval_expr(body, j, loads, Some(gi), 4, core, obase, &vals)
                        };
                        let stored = plan.tile[j].is_some() && plan.call[j].is_none();
                        if stored && plan.level[j] == p && !from_tile[j] {
                            let a = g.tile_addr(tiles, plan.tile[j].expect("kept"), i);
                            g.b.ins().store(flags(), vals[j], a, 0);
                        }
                    }
                    if p == passes - 1 && os == 1 {
                        let o = g.b.ins().iadd(obase, gi);
                        let a = g.addr(out, o, 4);
                        g.b.ins().store(flags(), vals[last], a, 0);
                    } else if p == passes - 1 {
                        // A reordered loop (`body::loop_order`): the lanes go to a column.
                        let t = g.b.ins().imul_imm_s(gi, os as i64);
                        let o = g.b.ins().iadd(obase, t);
                        let a = g.addr(out, o, 4);
                        for l in 0..4u8 {
                            let x = g.b.ins().extractlane(vals[last], l);
                            g.b.ins().store(flags(), x, a, (l as usize * os * 4) as i32);
                        }
                    }
                });
            }
        });
    }

    /// Address of element `i` of tile `t`.
    fn tile_addr(&mut self, tiles: Value, t: usize, i: Value) -> Value {
        let a = self.b.ins().iadd_imm_s(tiles, t as i64 * TILE * 4);
        self.addr(a, i, 4)
    }

    /// A stack slot for `plan`'s tiles; returns its address.
    pub(super) fn tile_slot(&mut self, plan: &Plan) -> Value {
        let ss = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            plan.bytes(),
            4, // 16-byte aligned, like every vector access here
        ));
        self.b.ins().stack_addr(I64, ss, 0)
    }
}
