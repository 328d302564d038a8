//! What a depthwise kernel is made of, decided at compile time from the geometry: how the
//! channels are walked ([`Seg`]), and along each spatial axis which destination positions
//! read only taps inside the source ([`AxisPlan`]: the interior, where the kernel has no
//! padding tests) and which need them (the border).
//!
//! One description serves all three kinds. `dest` is what a pixel block accumulates (the
//! output `y`, the input gradient `dx`, or the filter gradient's row `dw[tap]`), `src` the
//! pixels read at each tap (`x`, `dy`, `x`) and `w` the per-tap operand (`w`, `w`, `dy`).

use crate::graph::op::ConvGeom;

/// How one chunk of channels is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Group {
    /// `items` accumulators (vectors or scalars); item `i` reads `src` and `w` at its own
    /// channels (multiplier 1: `dest`, `src` and `w` channels coincide).
    Plain { items: usize, vector: bool },
    /// `items` accumulators sharing one `src` scalar (splatted for vectors): a forward or
    /// filter-gradient output channel `c·m + j` reads input channel `c`.
    Shared { items: usize, vector: bool },
    /// One scalar accumulator adding `m` products per tap, in order: the input gradient of
    /// channel `c` sums `dy[c·m + j] · w[c·m + j]` over `j`.
    Sum { m: usize },
}

impl Group {
    /// Accumulators per pixel.
    pub(super) fn accs(self) -> usize {
        match self {
            Group::Plain { items, .. } | Group::Shared { items, .. } => items,
            Group::Sum { .. } => 1,
        }
    }
    pub(super) fn vector(self) -> bool {
        match self {
            Group::Plain { vector, .. } | Group::Shared { vector, .. } => vector,
            Group::Sum { .. } => false,
        }
    }
}

/// `count` chunks of one [`Group`], chunk `k` at byte offsets `start + k·step` of `dest`,
/// `src` and `w`'s channel axes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Seg {
    pub count: usize,
    pub dest: (i64, i64),
    pub src: (i64, i64),
    pub w: (i64, i64),
    pub g: Group,
}

/// The channel walk of a depthwise step with `c` input channels, multiplier `m`, elements of
/// `size` bytes in vectors of `lanes`, `per` vectors per chunk with multiplier 1;
/// `input_grad` when `dest` is the input side.
pub(super) fn segments(
    c: usize,
    m: usize,
    (size, lanes, per_chunk): (usize, usize, usize),
    input_grad: bool,
) -> Vec<Seg> {
    let (sz, m_i) = (size as i64, m as i64);
    let same = |start: i64, step: i64| (start, step);
    if m == 1 {
        let per = per_chunk * lanes;
        let full = c / per;
        let vecs = (c % per) / lanes;
        let tail = c % lanes;
        let mut v = vec![];
        let mut push = |count: usize, start: usize, step: usize, g: Group| {
            if count > 0 {
                let (a, b) = (start as i64 * sz, step as i64 * sz);
                v.push(Seg {
                    count,
                    dest: same(a, b),
                    src: same(a, b),
                    w: same(a, b),
                    g,
                });
            }
        };
        let plain = |items, vector| Group::Plain { items, vector };
        push(full, 0, per, plain(per_chunk, true));
        push(usize::from(vecs > 0), full * per, 0, plain(vecs, true));
        push(usize::from(tail > 0), c - tail, 0, plain(tail, false));
        return v;
    }
    let g = if input_grad {
        Group::Sum { m }
    } else if m.is_multiple_of(lanes) {
        Group::Shared {
            items: m / lanes,
            vector: true,
        }
    } else {
        Group::Shared {
            items: m,
            vector: false,
        }
    };
    let (one, many) = ((0, sz), (0, m_i * sz));
    let (dest, src) = if input_grad { (one, many) } else { (many, one) };
    vec![Seg {
        count: c,
        dest,
        src,
        w: many,
        g,
    }]
}

/// Destination positions along one axis that share one list of taps, each tap reading
/// source position `a + k·src_step` for the class's `k`-th destination `start + k·step`.
#[derive(Clone, Debug)]
pub(super) struct Class {
    pub start: usize,
    pub step: usize,
    pub count: usize,
    /// `(tap index, a)`, in the order the sum takes them.
    pub taps: Vec<(usize, i64)>,
    pub src_step: usize,
}

/// One spatial axis: destination positions `[lo, hi)` are the interior, split into
/// [`Class`]es; the others are the border.
#[derive(Clone, Debug)]
pub(super) struct AxisPlan {
    pub lo: usize,
    pub hi: usize,
    pub classes: Vec<Class>,
}

/// One spatial axis of the geometry.
#[derive(Clone, Copy, Debug)]
pub(super) struct Axis {
    /// Output (forward side) extent.
    pub out: usize,
    /// Input extent.
    pub inp: usize,
    pub k: usize,
    pub s: usize,
    pub d: usize,
    pub pad: usize,
}

impl Axis {
    pub(super) fn of(geo: &ConvGeom, a: usize) -> Axis {
        let w = &geo.window;
        Axis {
            out: geo.out_hw[a],
            inp: geo.in_hw[a],
            k: w.kernel[a],
            s: w.strides[a],
            d: w.dilations[a],
            pad: w.pad_lo[a],
        }
    }

    /// Forward side (forward, filter gradient): output `o` reads input `o·s + t·d − pad` at
    /// tap `t`; the interior is where every tap is inside, taps in increasing order.
    pub(super) fn forward(self) -> AxisPlan {
        let ext = (self.k - 1) * self.d;
        let lo = self.pad.div_ceil(self.s).min(self.out);
        let hi = if self.inp + self.pad > ext {
            ((self.inp + self.pad - ext - 1) / self.s + 1).min(self.out)
        } else {
            0
        };
        let hi = hi.max(lo);
        let taps = (0..self.k)
            .map(|t| {
                (
                    (t * self.d) as i64 + (lo * self.s) as i64 - self.pad as i64,
                    t,
                )
            })
            .map(|(a, t)| (t, a))
            .collect();
        AxisPlan {
            lo,
            hi,
            classes: vec![Class {
                start: lo,
                step: 1,
                count: hi - lo,
                taps,
                src_step: self.s,
            }],
        }
    }

    /// Input-gradient side: input `i` gathers output `(i + pad − t·d) / s` at each tap `t`
    /// where that divides exactly and lands inside, taps in decreasing order (the order in
    /// which the forward loops reach `i`). The interior is split by `(i + pad) mod s`.
    pub(super) fn input_grad(self) -> AxisPlan {
        let ext = (self.k - 1) * self.d;
        let lo = ext.saturating_sub(self.pad).min(self.inp);
        let hi = (self.out * self.s)
            .saturating_sub(self.pad)
            .min(self.inp)
            .max(lo);
        let mut classes = vec![];
        for j in 0..self.s.min(hi - lo) {
            let start = lo + j;
            let taps = (0..self.k)
                .rev()
                .filter(|t| (start + self.pad - t * self.d).is_multiple_of(self.s))
                .map(|t| (t, ((start + self.pad - t * self.d) / self.s) as i64))
                .collect();
            classes.push(Class {
                start,
                step: self.s,
                count: (hi - start).div_ceil(self.s),
                taps,
                src_step: 1,
            });
        }
        AxisPlan { lo, hi, classes }
    }
}
