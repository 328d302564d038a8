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
//! Parameters are read through an [`IndexMap`]: an offset plus one stride per loop axis, in
//! elements. A stride of 0 is a broadcast, permuted strides are a transpose, an offset is a
//! slice. Bodies are SSA lists: each [`Expr`] refers to earlier ones by index. Nothing here is
//! a string: the dump prints kernels, the interpreter and the JIT walk them.
//!
//! # Invariants
//! - Loop extents are concrete. Every [`IndexMap`] keeps its loads in bounds for every point of
//!   its body's domain: `offset + sum((extent_i - 1) * stride_i) < param length` (strides are
//!   non-negative). [`Kernel::validate`] checks this; the JIT relies on it for memory safety.
//! - Expressions refer only to earlier expressions of the same body; a body's last expression
//!   is its result.

use crate::dtype::DType;
use crate::graph::op::{BinaryOp, ReduceOp, Ty, UnaryOp};
use smallvec::SmallVec;
use std::fmt::{self, Write as _};

mod table;
pub use table::Kernels;

/// Reads a parameter at `offset + sum(index_i * strides_i)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IndexMap {
    /// Element offset into the parameter.
    pub offset: usize,
    /// One stride per axis of the body's domain, in elements (0 = broadcast).
    pub strides: SmallVec<[usize; 4]>,
}

impl IndexMap {
    /// The row-major map of a parameter whose shape is the domain itself.
    pub fn contiguous(shape: &[usize]) -> IndexMap {
        IndexMap {
            offset: 0,
            strides: row_major_strides(shape).into_iter().collect(),
        }
    }

    /// True if this map reads element `i` at domain point `i` (row-major) for `domain`.
    pub fn is_identity(&self, domain: &[usize]) -> bool {
        self.offset == 0 && *self == IndexMap::contiguous(domain).with_broadcast_zeros(domain)
    }

    fn with_broadcast_zeros(mut self, domain: &[usize]) -> IndexMap {
        for (s, &d) in self.strides.iter_mut().zip(domain) {
            if d == 1 {
                *s = 0;
            }
        }
        self
    }

    /// The element read at `index` (a point of the domain).
    pub fn at(&self, index: &[usize]) -> usize {
        self.offset
            + index
                .iter()
                .zip(&self.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>()
    }

    /// The largest element offset read over `domain` (None for an empty domain).
    pub fn max_offset(&self, domain: &[usize]) -> Option<usize> {
        if domain.contains(&0) {
            return None;
        }
        Some(
            self.offset
                + domain
                    .iter()
                    .zip(&self.strides)
                    .map(|(d, s)| (d - 1) * s)
                    .sum::<usize>(),
        )
    }
}

/// Row-major strides of `shape`, in elements.
pub fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Index of an expression within its body.
pub type ExprId = u32;

/// One typed operation of a kernel body.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expr {
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
    /// conversion of `a` to the expression's dtype
    Cast(ExprId),
}

impl Expr {
    /// The expressions this one reads, in order (always earlier ones: [`Kernel::validate`]).
    pub fn operands(&self) -> SmallVec<[ExprId; 3]> {
        match self {
            Expr::Load { .. } | Expr::Core | Expr::Const(_) => SmallVec::new(),
            Expr::Unary(_, a) | Expr::Cast(a) => [*a].into_iter().collect(),
            Expr::Binary(_, a, b) => [*a, *b].into_iter().collect(),
            Expr::Where(c, a, b) => [*c, *a, *b].into_iter().collect(),
        }
    }
}

/// A straight-line body evaluated at every point of `domain`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Body {
    /// Loop extents.
    pub domain: Vec<usize>,
    /// Expressions with their result dtypes; the last one is the body's result.
    pub exprs: Vec<(Expr, DType)>,
}

impl Body {
    /// The result expression.
    pub fn root(&self) -> ExprId {
        self.exprs.len() as u32 - 1
    }
}

/// One operand of a contraction: `[batch.., rows, cols]` read through strides.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MatOperand {
    /// parameter index
    pub param: u32,
    /// element offset
    pub offset: usize,
    /// strides of the batch axes, then of rows and columns
    pub strides: SmallVec<[usize; 4]>,
}

/// What happens between the prologue and the epilogue.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Core {
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
pub struct Kernel {
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
    pub fn kind(&self) -> &'static str {
        match &self.core {
            Core::None => "elementwise",
            Core::Reduce { op, .. } => op.name(),
            Core::MatMul { .. } => "matmul",
        }
    }

    /// Checks the invariants in the module docs; an `Err` describes the first violation.
    pub fn validate(&self) -> Result<(), String> {
        let out_shape = self
            .out
            .shape
            .to_fixed()
            .ok_or("output shape is not concrete")?;
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
            t.shape
                .numel()
                .ok_or_else(|| format!("parameter {p} is not concrete"))
        };
        for (body, core_ok) in [
            (&self.prologue, false),
            (&self.epilogue, !matches!(self.core, Core::None)),
        ] {
            for (i, (e, _)) in body.exprs.iter().enumerate() {
                match e {
                    Expr::Load { param, map } => {
                        let len = param_len(*param)?;
                        if map.strides.len() != body.domain.len() {
                            return Err(format!("load of p{param}: map rank != domain rank"));
                        }
                        if let Some(m) = map.max_offset(&body.domain) {
                            if m >= len {
                                return Err(format!("load of p{param} reads {m} >= {len}"));
                            }
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
                    let map = IndexMap {
                        offset: op.offset,
                        strides: op.strides.clone(),
                    };
                    if map.strides.len() != dom.len() {
                        return Err("matmul operand rank".into());
                    }
                    if let Some(mx) = map.max_offset(&dom) {
                        if mx >= param_len(op.param)? {
                            return Err(format!("matmul operand p{} out of bounds", op.param));
                        }
                    }
                }
            }
        }
        if self.epilogue.exprs.is_empty() {
            return Err("empty epilogue".into());
        }
        Ok(())
    }

    /// Writes the kernel as an indented block, one expression per line.
    pub fn write_block(&self, name: &str, out: &mut String) {
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

fn write_body(b: &Body, prefix: &str, out: &mut String) {
    for (i, (e, t)) in b.exprs.iter().enumerate() {
        let rhs = match e {
            Expr::Load { param, map } => {
                format!(
                    "load p{param}[off={} strides={:?}]",
                    map.offset,
                    map.strides.as_slice()
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
