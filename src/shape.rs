//! Shapes with an optional open batch dimension.
//!
//! A placeholder may leave its leading dimension open, as TF1's `None` does. kiln models that
//! with exactly one symbol, the *batch* dimension, written `?`. Every `?` in a graph is the same
//! symbol: when a graph runs, all fed placeholders with an open dimension must agree on its
//! size, and that one number makes every shape in the graph concrete.
//!
//! One symbol is enough for the graphs kiln targets (feed-forward nets over a batch) and keeps
//! shape checking decidable at build time: `?` only ever equals `?` or broadcasts against `1`.

use crate::dtype::DType;
use smallvec::SmallVec;
use std::fmt;

/// The default of [`alloc_limit`]: 64 GiB.
pub const DEFAULT_MAX_ALLOC: usize = 64 << 30;

/// The most bytes one array that kiln allocates on the input's behalf may take (a variable's
/// initial value, a value a run computes on either backend, an output), and the most a JIT
/// run's intermediates may take together: `KILN_MAX_ALLOC` (a byte count) if set, else
/// [`DEFAULT_MAX_ALLOC`]. Checking this first turns a size the machine cannot hold into an
/// error naming the op, instead of an allocation that aborts the process.
pub fn alloc_limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("KILN_MAX_ALLOC")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_ALLOC)
    })
}

/// Checks that an array of `dtype` and `dims` made for `what` (an op and its name) fits the
/// [`alloc_limit`]; returns its byte size.
pub fn check_alloc(what: &str, dtype: DType, dims: &[usize]) -> Result<usize, String> {
    let limit = alloc_limit();
    match checked_bytes(dims, dtype) {
        Some(b) if b <= limit => Ok(b),
        Some(b) => Err(format!(
            "{what}: {dtype}{dims:?} needs {b} bytes, more than the allocation limit of {limit} \
             bytes (set KILN_MAX_ALLOC to a byte count to raise it)"
        )),
        None => Err(format!(
            "{what}: {dtype}{dims:?} needs more bytes than memory can address"
        )),
    }
}

/// Checks that a value a run computes fits the [`alloc_limit`]: `elem_bytes` per element
/// (the dtype's size on the JIT; the interpreter holds every element as an `f64`). The error
/// names the op, its label (name), the user's line, the shape at this batch size and the
/// bytes, so a batch too large for memory fails its run instead of aborting the process.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_value(
    op: &str,
    label: &str,
    loc: Option<&crate::error::SrcLoc>,
    dtype: DType,
    dims: &[usize],
    elem_bytes: usize,
    batch: Option<usize>,
    how: &str,
) -> crate::error::Result<()> {
    let limit = alloc_limit();
    let bytes = checked_numel(dims)
        .and_then(|n| n.checked_mul(elem_bytes))
        .filter(|&b| b <= isize::MAX as usize);
    let at = batch.map_or(String::new(), |b| format!(" at batch size {b}"));
    let msg = match bytes {
        Some(b) if b <= limit => return Ok(()),
        Some(b) => format!(
            "{label} is {dtype}{dims:?}{at}, which needs {b} bytes{how}, more than the allocation \
             limit of {limit} bytes (a smaller batch, or KILN_MAX_ALLOC set to a larger byte \
             count)"
        ),
        None => format!(
            "{label} is {dtype}{dims:?}{at}, which needs more bytes than memory can address"
        ),
    };
    Err(crate::error::Error::Runtime {
        op: op.to_string(),
        // the label is in the message
        name: None,
        loc: loc.cloned(),
        msg,
    })
}

/// The element count of `dims`, or `None` if it overflows `usize`.
pub fn checked_numel(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// The byte size of an array of `dtype` with `dims`, or `None` if it overflows, or exceeds
/// `isize::MAX` (the most any allocation may hold).
pub fn checked_bytes(dims: &[usize], dtype: DType) -> Option<usize> {
    checked_numel(dims)?
        .checked_mul(dtype.size_bytes())
        .filter(|&b| b <= isize::MAX as usize)
}

/// One dimension of a shape: a known size, or the graph's open batch size `?`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A size known when the graph is built.
    Fixed(usize),
    /// The open batch dimension, known only when the graph runs.
    Batch,
}

impl Dim {
    /// The size, if known at build time.
    pub fn fixed(self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(n),
            Dim::Batch => None,
        }
    }

    /// The size once the batch size is known.
    pub fn resolve(self, batch: usize) -> usize {
        match self {
            Dim::Fixed(n) => n,
            Dim::Batch => batch,
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::Fixed(n)
    }
}

impl From<Option<usize>> for Dim {
    fn from(n: Option<usize>) -> Dim {
        n.map_or(Dim::Batch, Dim::Fixed)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Batch => f.write_str("?"),
        }
    }
}

/// The shape of a tensor: a list of [`Dim`]s, at most one kind of symbol (`?`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub SmallVec<[Dim; 4]>);

impl Shape {
    /// The shape of a scalar, `[]`.
    pub fn scalar() -> Shape {
        Shape(SmallVec::new())
    }

    /// A fully known shape.
    pub fn fixed(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Fixed(d)).collect())
    }

    /// A shape whose leading dimension is the open batch size: `Shape::batch(&[784])` is `[?,784]`.
    pub fn batch(rest: &[usize]) -> Shape {
        let mut v: SmallVec<[Dim; 4]> = SmallVec::new();
        v.push(Dim::Batch);
        v.extend(rest.iter().map(|&d| Dim::Fixed(d)));
        Shape(v)
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The dimensions.
    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// True if no dimension is `?`.
    pub fn is_fixed(&self) -> bool {
        self.0.iter().all(|d| matches!(d, Dim::Fixed(_)))
    }

    /// True if some dimension is `?`.
    pub fn has_batch(&self) -> bool {
        !self.is_fixed()
    }

    /// The sizes, if all are known.
    pub fn to_fixed(&self) -> Option<Vec<usize>> {
        self.0.iter().map(|d| d.fixed()).collect()
    }

    /// The sizes once the batch size is known.
    pub fn resolve(&self, batch: usize) -> Vec<usize> {
        self.0.iter().map(|d| d.resolve(batch)).collect()
    }

    /// Number of elements, if known and representable (`None` for a `?` dimension or an
    /// element count past `usize::MAX`; the shape rules refuse the latter at build time).
    pub fn numel(&self) -> Option<usize> {
        checked_numel(&self.to_fixed()?)
    }

    /// Checks that the shape's elements of `dtype` fit in memory's address space: the fixed
    /// factor's element count and byte size must not overflow (`?` dimensions count as 1;
    /// the runtime checks again once the batch size is known). Every shape rule ends here,
    /// so a graph never holds a shape whose size arithmetic wraps.
    pub fn check_size(&self, dtype: DType) -> Result<(), String> {
        let fixed: SmallVec<[usize; 4]> = self.0.iter().map(|d| d.fixed().unwrap_or(1)).collect();
        checked_bytes(&fixed, dtype).map(|_| ()).ok_or_else(|| {
            format!("the shape {dtype}{self} holds more bytes than memory can address (its element count or byte size overflows)")
        })
    }

    /// The element count as `(fixed factor, number of ? factors)`: `[?,28,28]` is `(784, 1)`.
    /// Two shapes hold the same number of elements for every batch size iff these agree.
    pub fn symbolic_numel(&self) -> (usize, usize) {
        let mut n = 1usize;
        let mut b = 0usize;
        for d in &self.0 {
            match d {
                Dim::Fixed(k) => n = n.saturating_mul(*k),
                Dim::Batch => b += 1,
            }
        }
        (n, b)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(a: [usize; N]) -> Shape {
        Shape::fixed(&a)
    }
}

impl<const N: usize> From<[Option<usize>; N]> for Shape {
    fn from(a: [Option<usize>; N]) -> Shape {
        Shape(a.iter().map(|&d| Dim::from(d)).collect())
    }
}

impl<const N: usize> From<[Dim; N]> for Shape {
    fn from(a: [Dim; N]) -> Shape {
        Shape(a.iter().copied().collect())
    }
}

impl From<&[usize]> for Shape {
    fn from(a: &[usize]) -> Shape {
        Shape::fixed(a)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(a: Vec<usize>) -> Shape {
        Shape::fixed(&a)
    }
}

impl From<&[Dim]> for Shape {
    fn from(a: &[Dim]) -> Shape {
        Shape(a.iter().copied().collect())
    }
}

impl From<Vec<Dim>> for Shape {
    fn from(a: Vec<Dim>) -> Shape {
        Shape(a.into_iter().collect())
    }
}

impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Shape {
        s.clone()
    }
}

/// The numpy broadcast of two shapes.
///
/// Shapes are aligned at their trailing dimensions; a missing or size-1 dimension stretches to
/// the other. `?` broadcasts with `?` and with `1`; `?` against any other fixed size is refused,
/// because it could only hold for one batch size.
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.rank().max(b.rank());
    let mut out: SmallVec<[Dim; 4]> = SmallVec::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.rank() >= rank {
            a.0[i + a.rank() - rank]
        } else {
            Dim::Fixed(1)
        };
        let db = if i + b.rank() >= rank {
            b.0[i + b.rank() - rank]
        } else {
            Dim::Fixed(1)
        };
        let d = match (da, db) {
            (x, y) if x == y => x,
            (Dim::Fixed(1), y) => y,
            (x, Dim::Fixed(1)) => x,
            _ => {
                return Err(format!(
                    "cannot broadcast {a} with {b} ({da} != {db} in axis {i} of the result)"
                ))
            }
        };
        out.push(d);
    }
    Ok(Shape(out))
}

/// True if `from` broadcasts to exactly `to` by numpy rules.
pub fn broadcasts_to(from: &Shape, to: &Shape) -> bool {
    from.rank() <= to.rank()
        && broadcast_shapes(from, to)
            .map(|s| &s == to)
            .unwrap_or(false)
}

/// Normalizes possibly negative axes against `rank`; rejects out-of-range and repeated axes.
pub fn normalize_axes(axes: &[isize], rank: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = if a < 0 { a + rank as isize } else { a };
        if n < 0 || n >= rank as isize {
            return Err(format!("axis {a} is out of range for rank {rank}"));
        }
        let n = n as usize;
        if out.contains(&n) {
            return Err(format!("axis {a} is repeated"));
        }
        out.push(n);
    }
    out.sort_unstable();
    Ok(out)
}
