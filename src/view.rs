//! Movement ops as index maps: the one statement of what reshape, permute, broadcast_to,
//! slice, pad and concat mean, element by element.
//!
//! Before this module the same index math was written three times (the interpreter's loops,
//! fusion's view folding, the kernel IR's strides), and what one of them did not cover ran
//! somewhere else. Here it is pure arithmetic over concrete shapes, knowing nothing of
//! graphs' passes, kernels or the JIT; the interpreter evaluates movement ops with it, fusion
//! folds views into kernel loads with it, and [`IndexMap`] is the address the code generator
//! emits.
//!
//! A [`View`] says where a tensor is read at each point of a loop *domain*: tensor axis `j`
//! has index `point[src_j] + offset_j` (or the constant `offset_j` when the axis does not
//! follow the domain), and a point is read only inside its *guards* (ranges of domain axes);
//! elsewhere, and wherever an index falls outside the tensor, the value is zero. Walking a
//! view backwards through a movement op ([`View::through`]) gives the view of the op's
//! operand: a broadcast drops axes, a permute reorders them, a slice or a pad shifts offsets
//! (a pad's zeros are the indices that fall outside its operand), and a concat splits the
//! domain into ranges, one per operand ([`Through::Parts`]). Only a reshape that does more
//! than add or drop size-1 axes is not such a map ([`Through::Linear`]: the same bytes,
//! read in order).
//!
//! Guards keep pads exact through later ops: `pad(slice(x))` reads zero where the slice's
//! index is out of range even if `x` has an element there, because the slice's output range
//! becomes a guard before the view moves on to `x`.

use crate::graph::op::Op;
use smallvec::SmallVec;

/// Row-major strides of `shape`, in elements.
pub(crate) fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    // Saturating: a shape whose element count overflows never reaches here (the shape rules
    // and the runtime refuse it), and a saturated stride fails every bounds check.
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1].saturating_mul(shape[i + 1]);
    }
    s
}

/// A movement op, with its attributes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Movement<'a> {
    /// Same elements, new shape.
    Reshape,
    /// Output axis `i` is input axis `perm[i]`.
    Permute(&'a [usize]),
    /// Numpy broadcasting to the output shape.
    BroadcastTo,
    /// The box starting at `begin`.
    Slice(&'a [usize]),
    /// Zeros before (`lo`) each axis; the output shape gives the rest.
    Pad(&'a [usize]),
    /// The operands one after the other along `axis`.
    Concat(usize),
}

impl Movement<'_> {
    /// The movement op `op` is, if it is one whose elements are copies of its operands'
    /// (or zeros). `size` is a movement op by group but computes a number, so it is not one.
    pub(crate) fn of(op: &Op) -> Option<Movement<'_>> {
        match op {
            Op::Reshape => Some(Movement::Reshape),
            Op::Permute(p) => Some(Movement::Permute(p)),
            Op::BroadcastTo => Some(Movement::BroadcastTo),
            Op::Slice { begin } => Some(Movement::Slice(begin)),
            Op::Pad { lo, .. } => Some(Movement::Pad(lo)),
            Op::Concat { axis } => Some(Movement::Concat(*axis)),
            Op::Placeholder
            | Op::Variable { .. }
            | Op::Constant(_)
            | Op::Random { .. }
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::Cast(_)
            | Op::Reduce { .. }
            | Op::MatMul
            | Op::Conv { .. }
            | Op::StopGradient
            | Op::Size { .. }
            | Op::Assign
            | Op::Group
            | Op::Pool { .. }
            | Op::AllReduce
            | Op::Fusion(_) => None,
        }
    }

    /// True for the ops that may read zeros or select among operands (pad, concat): a
    /// consumer reads their operands from memory, never computes them at the view's points.
    pub(crate) fn is_guarded(&self) -> bool {
        matches!(self, Movement::Pad(_) | Movement::Concat(_))
    }
}

/// A range `[lo, hi)` of one domain axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Bound {
    /// The domain axis.
    pub axis: usize,
    /// First index inside.
    pub lo: usize,
    /// One past the last index inside.
    pub hi: usize,
}

/// Reads a buffer at element `offset + sum(point_i * strides_i)` where every bound holds, and
/// yields zero (without reading) elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct IndexMap {
    /// Element offset (negative when a pad shifts the first element read past the start).
    pub offset: isize,
    /// One stride per axis of the domain, in elements (0 = broadcast).
    pub strides: SmallVec<[usize; 4]>,
    /// Where the map reads (none: everywhere).
    pub bounds: SmallVec<[Bound; 2]>,
}

impl IndexMap {
    /// An unguarded map.
    pub(crate) fn strided(offset: usize, strides: &[usize]) -> IndexMap {
        IndexMap {
            offset: offset as isize,
            strides: strides.iter().copied().collect(),
            bounds: SmallVec::new(),
        }
    }

    /// The row-major map of a buffer whose shape is the domain itself.
    pub(crate) fn contiguous(shape: &[usize]) -> IndexMap {
        IndexMap::strided(0, &row_major_strides(shape))
    }

    /// True if this map reads element `i` at domain point `i` (row-major) for `domain`.
    pub(crate) fn is_identity(&self, domain: &[usize]) -> bool {
        let mut want = IndexMap::contiguous(domain);
        for (s, &d) in want.strides.iter_mut().zip(domain) {
            if d == 1 {
                *s = 0;
            }
        }
        *self == want
    }

    /// True if `point` is inside every bound.
    pub(crate) fn reads(&self, point: &[usize]) -> bool {
        self.bounds
            .iter()
            .all(|b| (b.lo..b.hi).contains(&point[b.axis]))
    }

    /// The element read at `point`, or None where the map yields zero.
    pub(crate) fn at(&self, point: &[usize]) -> Option<usize> {
        if !self.reads(point) {
            return None;
        }
        let e = self.offset
            + point
                .iter()
                .zip(&self.strides)
                .map(|(i, s)| (i * s) as isize)
                .sum::<isize>();
        usize::try_from(e).ok()
    }

    /// The points of `domain` the map reads: per axis, the range its bounds leave (None if
    /// there is no such point).
    pub(crate) fn region(&self, domain: &[usize]) -> Option<Vec<(usize, usize)>> {
        let mut r: Vec<(usize, usize)> = domain.iter().map(|&d| (0, d)).collect();
        for b in &self.bounds {
            let x = r.get_mut(b.axis)?;
            *x = (x.0.max(b.lo), x.1.min(b.hi));
        }
        if r.iter().any(|&(lo, hi)| lo >= hi) {
            return None;
        }
        Some(r)
    }

    /// The smallest and largest element offsets read over `domain` (None if nothing is read).
    pub(crate) fn extent(&self, domain: &[usize]) -> Option<(isize, isize)> {
        let r = self.region(domain)?;
        // Checked: an offset that overflows is reported as the widest extent, which no
        // bounds check accepts (wrapped arithmetic here once let an out-of-bounds read pass).
        let step = |acc: isize, i: usize, s: usize| {
            i.checked_mul(s)
                .and_then(|d| isize::try_from(d).ok())
                .and_then(|d| acc.checked_add(d))
        };
        let (mut lo, mut hi) = (self.offset, self.offset);
        for ((a, b), &s) in r.iter().zip(&self.strides) {
            match (step(lo, *a, s), step(hi, b - 1, s)) {
                (Some(l), Some(h)) => (lo, hi) = (l, h),
                _ => return Some((isize::MIN, isize::MAX)),
            }
        }
        Some((lo, hi))
    }
}

/// Where a tensor is read at each point of a domain (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct View {
    /// Per tensor axis: the domain axis its index follows (None: constant), and an offset.
    pub axes: SmallVec<[(Option<usize>, isize); 4]>,
    /// Ranges of domain axes outside which the view reads zero (at most one per axis).
    pub guards: SmallVec<[Bound; 2]>,
    /// The view reads zero everywhere.
    pub zero: bool,
}

/// What a view of a movement op's output is, seen on its operands.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Through {
    /// Operand `k` through a view.
    Input(usize, View),
    /// A concat along domain axis `axis`: each part reads operand `input` through `view` on
    /// `lo <= point[axis] < hi`; the ranges are disjoint and increasing, and zero elsewhere.
    Parts {
        /// The domain axis that selects the operand.
        axis: usize,
        /// `(operand, lo, hi, view)`, increasing.
        parts: Vec<(usize, usize, usize, View)>,
    },
    /// A reshape that is not an index map: the operand's bytes in order, read as a buffer of
    /// the output's shape through the view given.
    Linear(View),
}

impl View {
    /// Every tensor axis follows the domain axis of the same number.
    pub(crate) fn identity(rank: usize) -> View {
        View {
            axes: (0..rank).map(|i| (Some(i), 0)).collect(),
            guards: SmallVec::new(),
            zero: false,
        }
    }

    /// Restricts domain axis `axis` (of extent `ext`) to `[lo, hi)` (clipped to the domain).
    fn guard(&mut self, axis: usize, lo: isize, hi: isize, ext: usize) {
        let lo = lo.max(0) as usize;
        let hi = hi.clamp(0, ext as isize) as usize;
        if lo == 0 && hi == ext {
            return;
        }
        match self.guards.iter_mut().find(|b| b.axis == axis) {
            Some(b) => {
                b.lo = b.lo.max(lo);
                b.hi = b.hi.min(hi);
            }
            None => self.guards.push(Bound { axis, lo, hi }),
        }
        if self.guards.iter().any(|b| b.lo >= b.hi) {
            self.zero = true;
        }
    }

    /// Makes explicit, as guards, that the view reads zero wherever an index falls outside
    /// `shape` (the tensor it reads).
    fn constrain(&mut self, shape: &[usize], domain: &[usize]) {
        for (j, &(src, off)) in self.axes.clone().iter().enumerate() {
            let n = shape[j] as isize;
            match src {
                Some(d) => self.guard(d, -off, n - off, domain[d]),
                None if off < 0 || off >= n => self.zero = true,
                None => {}
            }
        }
        self.guards.sort_by_key(|b| b.axis);
    }

    /// True if the view reads `shape` at every point of `domain`, in bounds, without a guard.
    pub(crate) fn is_plain(&self, shape: &[usize], domain: &[usize]) -> bool {
        let mut v = self.clone();
        v.constrain(shape, domain);
        !v.zero && v.guards.is_empty()
    }

    /// The map that reads a row-major buffer of `shape` at this view over `domain`; None if
    /// it reads zero everywhere.
    pub(crate) fn index_map(&self, shape: &[usize], domain: &[usize]) -> Option<IndexMap> {
        let mut v = self.clone();
        v.constrain(shape, domain);
        if v.zero {
            return None;
        }
        let st = row_major_strides(shape);
        let mut strides: SmallVec<[usize; 4]> = SmallVec::from_elem(0, domain.len());
        let mut offset = 0isize;
        for (j, &(src, off)) in v.axes.iter().enumerate() {
            // A size-1 axis is read at index 0 wherever the guards hold.
            if shape[j] == 1 {
                continue;
            }
            offset += off * st[j] as isize;
            if let Some(d) = src {
                strides[d] += st[j];
            }
        }
        Some(IndexMap {
            offset,
            strides,
            bounds: v.guards,
        })
    }

    /// The view of a movement op's operands, given this view of its output (`out` its
    /// shape, `ins` its operands' shapes), over `domain`.
    pub(crate) fn through(
        &self,
        mv: Movement<'_>,
        ins: &[&[usize]],
        out: &[usize],
        domain: &[usize],
    ) -> Through {
        let mut v = self.clone();
        v.constrain(out, domain);
        let ax = v.axes.clone();
        let with = |axes: SmallVec<[(Option<usize>, isize); 4]>| View {
            axes,
            guards: v.guards.clone(),
            zero: v.zero,
        };
        let x = ins[0];
        match mv {
            Movement::BroadcastTo => {
                let shift = out.len() - x.len();
                Through::Input(
                    0,
                    with(
                        x.iter()
                            .enumerate()
                            .map(|(j, &d)| {
                                if d == 1 && out[j + shift] != 1 {
                                    (None, 0)
                                } else {
                                    ax[j + shift]
                                }
                            })
                            .collect(),
                    ),
                )
            }
            Movement::Permute(perm) => {
                let mut a: SmallVec<[(Option<usize>, isize); 4]> =
                    SmallVec::from_elem((None, 0), x.len());
                for (i, &p) in perm.iter().enumerate() {
                    a[p] = ax[i];
                }
                Through::Input(0, with(a))
            }
            Movement::Slice(begin) => Through::Input(
                0,
                with(
                    ax.iter()
                        .zip(begin)
                        .map(|(&(s, o), &b)| (s, o + b as isize))
                        .collect(),
                ),
            ),
            Movement::Pad(lo) => Through::Input(
                0,
                with(
                    ax.iter()
                        .zip(lo)
                        .map(|(&(s, o), &l)| (s, o - l as isize))
                        .collect(),
                ),
            ),
            Movement::Reshape => {
                let strip =
                    |s: &[usize]| -> Vec<usize> { s.iter().copied().filter(|&d| d != 1).collect() };
                if strip(x) != strip(out) {
                    return Through::Linear(v);
                }
                // Only size-1 axes differ (their indices are 0 wherever the guards hold):
                // pair the other axes in order.
                let mut kept = out
                    .iter()
                    .zip(&ax)
                    .filter(|(&d, _)| d != 1)
                    .map(|(_, &a)| a);
                Through::Input(
                    0,
                    with(
                        x.iter()
                            .map(|&d| {
                                if d == 1 {
                                    (None, 0)
                                } else {
                                    kept.next().unwrap_or((None, 0))
                                }
                            })
                            .collect(),
                    ),
                )
            }
            Movement::Concat(axis) => v.concat(axis, ins, domain),
        }
    }

    /// [`View::through`] for a concat along `axis`; `self` is already constrained.
    fn concat(&self, axis: usize, ins: &[&[usize]], domain: &[usize]) -> Through {
        let (src, off) = self.axes[axis];
        let shifted = |start: usize| {
            let mut v = self.clone();
            v.axes[axis].1 = off - start as isize;
            v
        };
        let mut starts = vec![0usize];
        for x in ins {
            starts.push(starts.last().copied().unwrap_or(0) + x[axis]);
        }
        let Some(d) = src else {
            // A constant index along the axis: one operand (any, if it reads zero).
            let k = (0..ins.len())
                .find(|&k| (starts[k] as isize..starts[k + 1] as isize).contains(&off))
                .unwrap_or(0);
            return Through::Input(k, shifted(starts[k]));
        };
        // Domain points of axis `d` that the guards leave.
        let (glo, ghi) = self
            .guards
            .iter()
            .find(|b| b.axis == d)
            .map_or((0, domain[d]), |b| (b.lo, b.hi));
        let mut parts = vec![];
        for k in 0..ins.len() {
            let lo = (starts[k] as isize - off).max(glo as isize);
            let hi = (starts[k + 1] as isize - off).min(ghi as isize);
            if lo < hi {
                let mut v = shifted(starts[k]);
                v.guard(d, lo, hi, domain[d]);
                parts.push((k, lo as usize, hi as usize, v));
            }
        }
        match parts.len() {
            0 => {
                let mut v = shifted(0);
                v.zero = true;
                Through::Input(0, v)
            }
            1 => {
                let (k, _, _, v) = parts.remove(0);
                Through::Input(k, v)
            }
            _ => Through::Parts { axis: d, parts },
        }
    }
}

/// Where each element of a movement op's output comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Element `elem` (row-major) of operand `input`.
    Input(usize, usize),
    /// The element is zero (padding).
    Zero,
}

/// Calls `f` with the source of every element of a movement op's output, in row-major
/// order: the interpreter's definition of the op.
pub(crate) fn for_each_source(
    mv: Movement<'_>,
    ins: &[&[usize]],
    out: &[usize],
    mut f: impl FnMut(Source),
) {
    let read = |k: usize, v: &View, shape: &[usize]| (k, v.index_map(shape, out));
    let maps: Vec<(usize, usize, usize, usize, Option<IndexMap>)> =
        match View::identity(out.len()).through(mv, ins, out, out) {
            Through::Input(k, v) => {
                let (k, m) = read(k, &v, ins[k]);
                vec![(usize::MAX, 0, usize::MAX, k, m)]
            }
            Through::Parts { axis, parts } => parts
                .iter()
                .map(|(k, lo, hi, v)| {
                    let (k, m) = read(*k, v, ins[*k]);
                    (axis, *lo, *hi, k, m)
                })
                .collect(),
            Through::Linear(_) => {
                let n: usize = out.iter().product();
                (0..n).for_each(|i| f(Source::Input(0, i)));
                return;
            }
        };
    for_each_index(out, |p| {
        let hit = maps
            .iter()
            .find(|(axis, lo, hi, _, _)| *axis == usize::MAX || (*lo..*hi).contains(&p[*axis]));
        f(match hit {
            Some((_, _, _, k, Some(m))) => m.at(p).map_or(Source::Zero, |e| Source::Input(*k, e)),
            _ => Source::Zero,
        });
    });
}

/// Calls `f` with every multi-index of `shape` in row-major order.
pub(crate) fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    loop {
        f(&idx);
        let mut k = shape.len();
        loop {
            if k == 0 {
                return;
            }
            k -= 1;
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(mv: Movement<'_>, ins: &[&[usize]], out: &[usize]) -> Vec<Source> {
        let mut v = vec![];
        for_each_source(mv, ins, out, |s| v.push(s));
        v
    }

    #[test]
    fn pad_of_a_slice_reads_zero_where_the_slice_ends() {
        // x = [0 1 2 3], s = x[1..3], view = pad(s, lo=1, hi=1) = [0, x1, x2, 0].
        let s = View::identity(1).through(Movement::Pad(&[1]), &[&[2]], &[4], &[4]);
        let Through::Input(0, s) = s else { panic!() };
        let x = s.through(Movement::Slice(&[1]), &[&[4]], &[2], &[4]);
        let Through::Input(0, x) = x else { panic!() };
        let m = x.index_map(&[4], &[4]).unwrap();
        let got: Vec<Option<usize>> = (0..4).map(|i| m.at(&[i])).collect();
        assert_eq!(got, vec![None, Some(1), Some(2), None]);
    }

    #[test]
    fn concat_selects_operands_by_range() {
        use Source::*;
        let got = gather(Movement::Concat(1), &[&[2, 1], &[2, 2]], &[2, 3]);
        assert_eq!(
            got,
            vec![
                Input(0, 0),
                Input(1, 0),
                Input(1, 1),
                Input(0, 1),
                Input(1, 2),
                Input(1, 3)
            ]
        );
    }

    #[test]
    fn pad_and_transpose() {
        use Source::*;
        let got = gather(Movement::Pad(&[1, 0]), &[&[1, 2]], &[2, 2]);
        assert_eq!(got, vec![Zero, Zero, Input(0, 0), Input(0, 1)]);
        let got = gather(Movement::Permute(&[1, 0]), &[&[2, 3]], &[3, 2]);
        assert_eq!(
            got,
            vec![
                Input(0, 0),
                Input(0, 3),
                Input(0, 1),
                Input(0, 4),
                Input(0, 2),
                Input(0, 5)
            ]
        );
    }
}
