//! The loop-level kernel IR: what fusion produces and what the code generator consumes.
//!
//! A [`Kernel`] is one loop nest with a typed expression body. It has one of three shapes:
//!
//! - **elementwise**: the `epilogue` body is evaluated at every point of the output;
//! - **reduction**: the `prologue` body is evaluated at every point of the reduction's input
//!   domain, folded over the reduced axes, and the `epilogue` maps each reduced value
//!   ([`Expr::Core`]) to the output;
//! - **contraction**: a matrix product of two parameters (read through strides, so transposes
//!   cost nothing), then the `epilogue` (bias, activation, ...) on each output element.
//!
//! Parameters are read through an [`IndexMap`] (from [`crate::view`]): an offset plus one
//! stride per loop axis, in elements, and optional bounds. A stride of 0 is a broadcast,
//! permuted strides are a transpose, an offset is a slice, and bounds are a pad: outside
//! them a load yields zero without touching memory. A concat is an [`Expr::Select`] among
//! such loads by the index along one axis. Bodies are SSA lists: each [`Expr`] refers to earlier ones by index. Nothing here is
//! a string: the dump prints kernels, the interpreter and the JIT walk them.
//!
//! # Invariants
//! - Loop extents are concrete. Every [`IndexMap`] keeps its loads in bounds for every point of
//!   its body's domain inside its bounds: the smallest and largest element read over that
//!   region lie in `[0, param length)` (strides are non-negative, so they are at its
//!   corners). [`Kernel::validate`] checks this; the JIT relies on it for memory safety.
//! - Expressions refer only to earlier expressions of the same body; a body's last expression
//!   is its result.

use crate::dtype::DType;
use crate::graph::op::{BinaryOp, ReduceOp, Ty, UnaryOp};
use smallvec::SmallVec;
use std::fmt::{self, Write as _};

mod table;
pub(crate) use table::Kernels;

pub(crate) use crate::view::{row_major_strides, IndexMap};

/// Index of an expression within its body.
pub(crate) type ExprId = u32;

/// One typed operation of a kernel body.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Expr {
    /// Parameter `param` read through `map`.
    Load {
        /// parameter index
        param: u32,
        /// where to read
        map: IndexMap,
    },
    /// The core's result at the current output point (reduction or contraction kernels).
    Core,
    /// A literal, stored as the bits of an `f64` (exact for every `f32` and `i32`).
    Const(u64),
    /// `op(a)`
    Unary(UnaryOp, ExprId),
    /// `op(a, b)`
    Binary(BinaryOp, ExprId, ExprId),
    /// `c ? a : b`
    Where(ExprId, ExprId, ExprId),
    /// `parts[k]` where `bounds[k] <= point[axis] < bounds[k + 1]`, zero outside
    /// `[bounds[0], bounds[last])`: a concat, each part reading one operand through a
    /// guarded map. The value is copied bit for bit (no arithmetic).
    Select {
        /// The domain axis that chooses the part.
        axis: usize,
        /// `parts.len() + 1` increasing positions along `axis`.
        bounds: SmallVec<[usize; 4]>,
        /// The candidates, earlier expressions of the select's dtype.
        parts: SmallVec<[ExprId; 4]>,
    },
    /// conversion of `a` to the expression's dtype
    Cast(ExprId),
}

impl Expr {
    /// The expressions this one reads, in order (always earlier ones: [`Kernel::validate`]).
    pub(crate) fn operands(&self) -> SmallVec<[ExprId; 3]> {
        match self {
            Expr::Load { .. } | Expr::Core | Expr::Const(_) => SmallVec::new(),
            Expr::Unary(_, a) | Expr::Cast(a) => [*a].into_iter().collect(),
            Expr::Binary(_, a, b) => [*a, *b].into_iter().collect(),
            Expr::Where(c, a, b) => [*c, *a, *b].into_iter().collect(),
            Expr::Select { parts, .. } => parts.iter().copied().collect(),
        }
    }
}

/// A straight-line body evaluated at every point of `domain`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Body {
    /// Loop extents.
    pub domain: Vec<usize>,
    /// Expressions with their result dtypes; the last one is the body's result.
    pub exprs: Vec<(Expr, DType)>,
}

impl Body {
    /// The result expression.
    pub(crate) fn root(&self) -> ExprId {
        self.exprs.len() as u32 - 1
    }
}

/// One operand of a contraction: `[batch.., rows, cols]` read through strides.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MatOperand {
    /// parameter index
    pub param: u32,
    /// element offset
    pub offset: usize,
    /// strides of the batch axes, then of rows and columns
    pub strides: SmallVec<[usize; 4]>,
}

/// What happens between the prologue and the epilogue.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Core {
    /// Elementwise: no core; the epilogue is the whole kernel.
    None,
    /// Fold the prologue's value over `axes` of its domain.
    Reduce {
        /// sum or max
        op: ReduceOp,
        /// reduced axes of the prologue's domain (sorted)
        axes: SmallVec<[usize; 4]>,
    },
    /// `[b.., m, k] x [b.., k, n]`.
    MatMul {
        /// left operand
        a: MatOperand,
        /// right operand
        b: MatOperand,
        /// batch extents
        batch: SmallVec<[usize; 2]>,
        /// rows of the result
        m: usize,
        /// contracted extent
        k: usize,
        /// columns of the result
        n: usize,
    },
}

/// A fused kernel. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Kernel {
    /// Parameter types, in the order of the fusion node's operands.
    pub params: Vec<Ty>,
    /// The reduction's per-element body (empty unless `core` is `Reduce`).
    pub prologue: Body,
    /// The core.
    pub core: Core,
    /// The per-output-element body; its domain is the output shape.
    pub epilogue: Body,
    /// The output type.
    pub out: Ty,
}

impl Kernel {
    /// A short description of the kernel's shape: `elementwise`, `reduce_sum`, `matmul`.
    pub(crate) fn kind(&self) -> &'static str {
        match &self.core {
            Core::None => "elementwise",
            Core::Reduce { op, .. } => op.name(),
            Core::MatMul { .. } => "matmul",
        }
    }

    /// Checks the invariants in the module docs; an `Err` describes the first violation.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let out_shape = self
            .out
            .shape
            .to_fixed()
            .ok_or("output shape is not concrete")?;
        if crate::shape::checked_bytes(&out_shape, self.out.dtype).is_none() {
            return Err(format!(
                "output {} overflows memory's address space",
                self.out
            ));
        }
        if self.epilogue.domain != out_shape {
            return Err(format!(
                "epilogue domain {:?} != output {:?}",
                self.epilogue.domain, out_shape
            ));
        }
        let param_len = |p: u32| -> Result<usize, String> {
            let t = self
                .params
                .get(p as usize)
                .ok_or(format!("no parameter {p}"))?;
            let dims = t
                .shape
                .to_fixed()
                .ok_or_else(|| format!("parameter {p} is not concrete"))?;
            crate::shape::checked_bytes(&dims, t.dtype)
                .and_then(|_| crate::shape::checked_numel(&dims))
                .ok_or_else(|| format!("parameter {p} ({t}) overflows memory's address space"))
        };
        for (body, core_ok) in [
            (&self.prologue, false),
            (&self.epilogue, !matches!(self.core, Core::None)),
        ] {
            for (i, (e, _)) in body.exprs.iter().enumerate() {
                match e {
                    Expr::Load { param, map } => check_load(*param, map, &body.domain, &param_len)?,
                    Expr::Select {
                        axis,
                        bounds,
                        parts,
                    } => {
                        let ok = *axis < body.domain.len()
                            && bounds.len() == parts.len() + 1
                            && bounds.windows(2).all(|w| w[0] <= w[1])
                            && bounds.last().is_some_and(|&b| b <= body.domain[*axis])
                            && parts.iter().all(|&p| {
                                body.exprs
                                    .get(p as usize)
                                    .is_some_and(|e| e.1 == body.exprs[i].1)
                            });
                        if !ok {
                            return Err(format!("select {i}: bad axis, bounds or part types"));
                        }
                    }
                    Expr::Core if !core_ok => return Err("core read outside an epilogue".into()),
                    _ => {}
                }
                if e.operands().iter().any(|&r| r as usize >= i) {
                    return Err(format!("expression {i} refers forward"));
                }
            }
        }
        match &self.core {
            Core::None => {}
            Core::Reduce { axes, .. } => {
                if self.prologue.exprs.is_empty() {
                    return Err("reduction without a prologue".into());
                }
                if axes.iter().any(|&a| a >= self.prologue.domain.len()) {
                    return Err("reduced axis out of range".into());
                }
            }
            Core::MatMul {
                a,
                b,
                batch,
                m,
                k,
                n,
            } => {
                for (op, rows, cols) in [(a, *m, *k), (b, *k, *n)] {
                    let mut dom: Vec<usize> = batch.to_vec();
                    dom.extend([rows, cols]);
                    let map = IndexMap::strided(op.offset, &op.strides);
                    check_load(op.param, &map, &dom, &param_len)
                        .map_err(|e| format!("matmul operand: {e}"))?;
                }
            }
        }
        if self.epilogue.exprs.is_empty() {
            return Err("empty epilogue".into());
        }
        Ok(())
    }

    /// Writes the kernel as an indented block, one expression per line.
    pub(crate) fn write_block(&self, name: &str, out: &mut String) {
        let _ = writeln!(
            out,
            "{name} = kernel.{}({}) : {} {{",
            self.kind(),
            self.params
                .iter()
                .enumerate()
                .map(|(i, t)| format!("p{i}: {t}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.out
        );
        match &self.core {
            Core::None => {}
            Core::Reduce { op, axes } => {
                let _ = writeln!(out, "  prologue over {:?}:", self.prologue.domain);
                write_body(&self.prologue, "a", out);
                let _ = writeln!(
                    out,
                    "  core = {}(a{}, axes={:?})",
                    op.name(),
                    self.prologue.root(),
                    axes.as_slice()
                );
            }
            Core::MatMul {
                a,
                b,
                batch,
                m,
                k,
                n,
            } => {
                let _ = writeln!(
                    out,
                    "  core = matmul(p{}[off={} strides={:?}], p{}[off={} strides={:?}]) batch={:?} m={m} k={k} n={n}",
                    a.param, a.offset, a.strides.as_slice(), b.param, b.offset, b.strides.as_slice(), batch.as_slice()
                );
            }
        }
        let _ = writeln!(out, "  epilogue over {:?}:", self.epilogue.domain);
        write_body(&self.epilogue, "e", out);
        out.push_str("}\n");
    }
}

/// A load of `param` through `map` over `domain` stays inside the parameter wherever its
/// bounds let it read.
fn check_load(
    param: u32,
    map: &IndexMap,
    domain: &[usize],
    param_len: &dyn Fn(u32) -> Result<usize, String>,
) -> Result<(), String> {
    let len = param_len(param)?;
    if map.strides.len() != domain.len() {
        return Err(format!("load of p{param}: map rank != domain rank"));
    }
    if map.bounds.iter().any(|b| b.axis >= domain.len()) {
        return Err(format!("load of p{param}: a bound's axis is out of range"));
    }
    if let Some((lo, hi)) = map.extent(domain) {
        if lo < 0 || hi >= len as isize {
            return Err(format!(
                "load of p{param} reads elements {lo}..={hi}, outside 0..{len}"
            ));
        }
    }
    Ok(())
}

fn write_body(b: &Body, prefix: &str, out: &mut String) {
    for (i, (e, t)) in b.exprs.iter().enumerate() {
        let rhs = match e {
            Expr::Load { param, map } => {
                let bounds: String = map
                    .bounds
                    .iter()
                    .map(|b| format!(" axis{}={}..{}", b.axis, b.lo, b.hi))
                    .collect();
                format!(
                    "load p{param}[off={} strides={:?}{bounds}]",
                    map.offset,
                    map.strides.as_slice()
                )
            }
            Expr::Select {
                axis,
                bounds,
                parts,
            } => {
                let ps: Vec<String> = parts.iter().map(|p| format!("{prefix}{p}")).collect();
                format!(
                    "select(axis={axis}, at={:?}, {})",
                    bounds.as_slice(),
                    ps.join(", ")
                )
            }
            Expr::Core => "core".to_string(),
            Expr::Const(bits) => format!("{:?}", f64::from_bits(*bits)),
            Expr::Unary(u, a) => format!("{}({prefix}{a})", u.name()),
            Expr::Binary(o, a, c) => format!("{}({prefix}{a}, {prefix}{c})", o.name()),
            Expr::Where(c, a, d) => format!("where({prefix}{c}, {prefix}{a}, {prefix}{d})"),
            Expr::Cast(a) => format!("cast({prefix}{a})"),
        };
        let _ = writeln!(out, "    {prefix}{i} = {rhs} : {t}");
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.write_block("kernel", &mut s);
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::Shape;
    use crate::view::Bound;

    fn f32s(shape: &[usize]) -> Ty {
        Ty {
            dtype: DType::F32,
            shape: Shape::fixed(shape),
        }
    }

    /// A copy kernel over `[4]` reading a `[3]` parameter through `map`.
    fn copy(map: IndexMap) -> Kernel {
        Kernel {
            params: vec![f32s(&[3])],
            prologue: Body::default(),
            core: Core::None,
            epilogue: Body {
                domain: vec![4],
                exprs: vec![(Expr::Load { param: 0, map }, DType::F32)],
            },
            out: f32s(&[4]),
        }
    }

    fn bound(lo: usize, hi: usize) -> Bound {
        Bound { axis: 0, lo, hi }
    }

    #[test]
    fn pad_loads_are_checked_inside_their_bounds() {
        // pad(x, lo=1): element i - 1 where 1 <= i < 4.
        let mut ok = IndexMap::strided(0, &[1]);
        ok.offset = -1;
        ok.bounds.push(bound(1, 4));
        assert_eq!(copy(ok.clone()).validate(), Ok(()));
        // The same map with a bound that lets point 0 read element -1.
        let mut below = ok.clone();
        below.bounds[0] = bound(0, 4);
        assert!(copy(below).validate().is_err());
        // ... or without its bound at all.
        let mut unbounded = ok.clone();
        unbounded.bounds.clear();
        assert!(copy(unbounded).validate().is_err());
        // A bound past the end reads element 3 of 3.
        let mut above = IndexMap::strided(0, &[1]);
        above.bounds.push(bound(0, 4));
        assert!(copy(above).validate().is_err());
        // A bound on an axis the domain does not have.
        let mut axis = ok;
        axis.bounds[0].axis = 1;
        assert!(copy(axis).validate().is_err());
    }

    #[test]
    fn a_load_whose_offset_wraps_is_refused() {
        // 3 * s wraps to 2 in usize: with wrapping arithmetic the last point seemed to read
        // element 2 of 3 (issue 16, item 1).
        let s = usize::MAX / 3 + 1;
        assert_eq!(s.wrapping_mul(3), 2);
        assert!(copy(IndexMap::strided(0, &[s])).validate().is_err());
        // 3 * 2^62 fits in usize but not in isize (it wrapped negative).
        assert!(copy(IndexMap::strided(0, &[1 << 62])).validate().is_err());
        // An output whose byte size overflows.
        let mut k = copy(IndexMap::strided(0, &[0]));
        k.out = f32s(&[1 << 62]);
        k.epilogue.domain = vec![1 << 62];
        assert!(k.validate().unwrap_err().contains("overflows"));
    }

    #[test]
    fn concat_selects_are_checked() {
        // concat(p0[0..3], p1[0..1]) over [4].
        let mut k = copy(IndexMap::strided(0, &[1]));
        k.params.push(f32s(&[1]));
        let mut first = IndexMap::strided(0, &[1]);
        first.bounds.push(bound(0, 3));
        let mut second = IndexMap::strided(0, &[1]);
        second.offset = -3;
        second.bounds.push(bound(3, 4));
        let sel = |bounds: &[usize]| Expr::Select {
            axis: 0,
            bounds: bounds.iter().copied().collect(),
            parts: [0, 1].into_iter().collect(),
        };
        k.epilogue.exprs = vec![
            (
                Expr::Load {
                    param: 0,
                    map: first,
                },
                DType::F32,
            ),
            (
                Expr::Load {
                    param: 1,
                    map: second.clone(),
                },
                DType::F32,
            ),
            (sel(&[0, 3, 4]), DType::F32),
        ];
        assert_eq!(k.validate(), Ok(()));
        // Reading the second operand over the first's range goes out of bounds.
        let mut wide = k.clone();
        second.bounds[0] = bound(2, 4);
        wide.epilogue.exprs[1].0 = Expr::Load {
            param: 1,
            map: second,
        };
        assert!(wide.validate().is_err());
        // Bounds past the domain, out of order, or of the wrong count.
        for bad in [&[0, 3, 5][..], &[0, 4, 3], &[0, 4]] {
            let mut k2 = k.clone();
            k2.epilogue.exprs[2].0 = sel(bad);
            assert!(k2.validate().is_err(), "{bad:?}");
        }
    }
}
