//! Host tensors: the values that go into and come out of a graph.

use crate::dtype::DType;
use crate::error::{Error, Result};
use half::{bf16, f16};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The typed storage of an [`Array`].
#[derive(Clone, Debug, PartialEq)]
pub enum ArrayData {
    /// `f32` elements.
    F32(Vec<f32>),
    /// `f64` elements.
    F64(Vec<f64>),
    /// `i32` elements.
    I32(Vec<i32>),
    /// `bool` elements.
    Bool(Vec<bool>),
    /// `i64` elements.
    I64(Vec<i64>),
    /// `i8` elements.
    I8(Vec<i8>),
    /// `u8` elements.
    U8(Vec<u8>),
    /// `f16` elements.
    F16(Vec<f16>),
    /// `bf16` elements.
    BF16(Vec<bf16>),
}

/// A dense, row-major host tensor with a concrete shape.
///
/// ```
/// use kiln::Array;
/// let a = Array::new([2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
/// assert_eq!(a.shape(), &[2, 2]);
/// assert_eq!(a.as_slice::<f32>().unwrap()[3], 4.0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    shape: Vec<usize>,
    data: ArrayData,
}

/// Rust types that can be elements of an [`Array`].
pub trait Element: Copy + fmt::Debug + 'static {
    /// The matching dtype.
    const DTYPE: DType;
    /// Wraps a vector as array storage.
    fn wrap(v: Vec<Self>) -> ArrayData;
    /// Borrows array storage, if it holds this type.
    fn unwrap(d: &ArrayData) -> Option<&[Self]>;
    /// Mutably borrows array storage, if it holds this type.
    fn unwrap_mut(d: &mut ArrayData) -> Option<&mut [Self]>;
    /// Converts from `f64` (floats round to nearest, integers truncate toward zero and
    /// saturate, NaN → 0).
    fn from_f64(v: f64) -> Self;
    /// Converts to `f64` (exact, except `i64` values past 2^53, which round).
    fn to_f64(self) -> f64;
}

macro_rules! element {
    ($t:ty, $d:ident, $from:expr, $to:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn wrap(v: Vec<Self>) -> ArrayData {
                ArrayData::$d(v)
            }
            fn unwrap(d: &ArrayData) -> Option<&[Self]> {
                match d {
                    ArrayData::$d(v) => Some(v),
                    _ => None,
                }
            }
            fn unwrap_mut(d: &mut ArrayData) -> Option<&mut [Self]> {
                match d {
                    ArrayData::$d(v) => Some(v),
                    _ => None,
                }
            }
            fn from_f64(v: f64) -> Self {
                let f: fn(f64) -> $t = $from;
                f(v)
            }
            fn to_f64(self) -> f64 {
                let f: fn($t) -> f64 = $to;
                f(self)
            }
        }
    };
}
element!(f32, F32, |v| v as f32, |x| x as f64);
element!(f64, F64, |v| v, |x| x);
element!(i32, I32, |v| v as i32, |x| x as f64);
element!(bool, Bool, |v| v != 0.0, |x| if x { 1.0 } else { 0.0 });
element!(i64, I64, |v| v as i64, |x| x as f64);
element!(i8, I8, |v| v as i8, |x| x as f64);
element!(u8, U8, |v| v as u8, |x| x as f64);
element!(f16, F16, f16::from_f64, f16::to_f64);
element!(bf16, BF16, bf16::from_f64, bf16::to_f64);

/// Applies `$body` to the typed vector inside an [`ArrayData`], whatever its element type.
macro_rules! each_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            ArrayData::F32($v) => $body,
            ArrayData::F64($v) => $body,
            ArrayData::I32($v) => $body,
            ArrayData::Bool($v) => $body,
            ArrayData::I64($v) => $body,
            ArrayData::I8($v) => $body,
            ArrayData::U8($v) => $body,
            ArrayData::F16($v) => $body,
            ArrayData::BF16($v) => $body,
        }
    };
}

impl Array {
    /// Makes an array from a shape and row-major data; the lengths must agree.
    pub fn new<T: Element>(shape: impl AsRef<[usize]>, data: Vec<T>) -> Result<Array> {
        let shape = shape.as_ref().to_vec();
        let Some(n) = crate::shape::checked_bytes(&shape, T::DTYPE)
            .and_then(|_| crate::shape::checked_numel(&shape))
        else {
            return Err(Error::invalid(format!(
                "Array::new: the element count of shape {shape:?} overflows"
            )));
        };
        if n != data.len() {
            return Err(Error::invalid(format!(
                "Array::new: shape {:?} holds {n} elements but {} were given",
                shape,
                data.len()
            )));
        }
        Ok(Array {
            shape,
            data: T::wrap(data),
        })
    }

    /// A scalar (rank-0) array.
    pub fn scalar<T: Element>(v: T) -> Array {
        Array {
            shape: vec![],
            data: T::wrap(vec![v]),
        }
    }

    /// An array of zeros (or `false`).
    ///
    /// # Panics
    /// If the shape's element count overflows `usize`, or the allocation fails (which aborts
    /// the process). For a shape that comes from input, use [`Array::try_zeros`].
    pub fn zeros(dtype: DType, shape: impl AsRef<[usize]>) -> Array {
        let shape = shape.as_ref().to_vec();
        let n = crate::shape::checked_numel(&shape).expect("Array::zeros: element count overflows");
        // Straight to zeroed memory of the right type (large ones come from the OS already
        // zeroed), not through an f64 vector.
        let data = match dtype {
            DType::F32 => ArrayData::F32(vec![0.0; n]),
            DType::F64 => ArrayData::F64(vec![0.0; n]),
            DType::I32 => ArrayData::I32(vec![0; n]),
            DType::Bool => ArrayData::Bool(vec![false; n]),
            DType::I64 => ArrayData::I64(vec![0; n]),
            DType::I8 => ArrayData::I8(vec![0; n]),
            DType::U8 => ArrayData::U8(vec![0; n]),
            DType::F16 => ArrayData::F16(vec![f16::ZERO; n]),
            DType::BF16 => ArrayData::BF16(vec![bf16::ZERO; n]),
        };
        Array { shape, data }
    }

    /// An array of zeros (or `false`), or an error instead of a panic or an aborting
    /// allocation: when the byte size overflows, passes [`crate::shape::alloc_limit`]
    /// (`KILN_MAX_ALLOC`), or the allocator refuses it.
    ///
    /// ```
    /// use kiln::{Array, DType};
    /// assert_eq!(Array::try_zeros(DType::I32, [2, 3])?.to_vec::<i32>()?, vec![0; 6]);
    /// assert!(Array::try_zeros(DType::F32, [1usize << 40, 1 << 40]).is_err()); // overflows
    /// assert!(Array::try_zeros(DType::F32, [1usize << 40]).is_err()); // 4 TiB: past the limit
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn try_zeros(dtype: DType, shape: impl AsRef<[usize]>) -> Result<Array> {
        fn zeros<T: Element + Default>(n: usize) -> Option<Vec<T>> {
            let mut v = Vec::new();
            v.try_reserve_exact(n).ok()?;
            v.resize(n, T::default());
            Some(v)
        }
        let shape = shape.as_ref().to_vec();
        let bytes =
            crate::shape::check_alloc("Array::try_zeros", dtype, &shape).map_err(Error::invalid)?;
        let n = crate::shape::checked_numel(&shape).unwrap_or(0);
        let data = match dtype {
            DType::F32 => zeros(n).map(ArrayData::F32),
            DType::F64 => zeros(n).map(ArrayData::F64),
            DType::I32 => zeros(n).map(ArrayData::I32),
            DType::Bool => zeros(n).map(ArrayData::Bool),
            DType::I64 => zeros(n).map(ArrayData::I64),
            DType::I8 => zeros(n).map(ArrayData::I8),
            DType::U8 => zeros(n).map(ArrayData::U8),
            DType::F16 => zeros(n).map(ArrayData::F16),
            DType::BF16 => zeros(n).map(ArrayData::BF16),
        };
        let data = data.ok_or_else(|| {
            Error::invalid(format!(
                "Array::try_zeros: cannot allocate {dtype}{shape:?} ({bytes} bytes): out of memory"
            ))
        })?;
        Ok(Array { shape, data })
    }

    /// Makes an array of `dtype` from `f64` values, rounding or truncating each.
    ///
    /// Panics if `data.len()` differs from the shape's element count (an internal invariant).
    pub fn from_f64(dtype: DType, shape: Vec<usize>, data: Vec<f64>) -> Array {
        assert_eq!(
            crate::shape::checked_numel(&shape),
            Some(data.len()),
            "Array::from_f64 length"
        );
        fn conv<T: Element>(d: &[f64]) -> ArrayData {
            T::wrap(d.iter().map(|&v| T::from_f64(v)).collect())
        }
        let data = match dtype {
            DType::F32 => conv::<f32>(&data),
            DType::F64 => ArrayData::F64(data),
            DType::I32 => conv::<i32>(&data),
            DType::Bool => conv::<bool>(&data),
            DType::I64 => conv::<i64>(&data),
            DType::I8 => conv::<i8>(&data),
            DType::U8 => conv::<u8>(&data),
            DType::F16 => conv::<f16>(&data),
            DType::BF16 => conv::<bf16>(&data),
        };
        Array { shape, data }
    }

    /// The elements as the interpreter's `f64` slots: the value, except for `i64`, `f16` and
    /// `bf16`, whose bits the slot holds so that every value moves exactly (`src/cast.rs`).
    pub(crate) fn to_slots(&self) -> Vec<f64> {
        use crate::cast::{half_slot, i64_slot};
        match &self.data {
            ArrayData::I64(v) => v.iter().map(|&x| i64_slot(x)).collect(),
            ArrayData::F16(v) => v.iter().map(|x| half_slot(x.to_bits())).collect(),
            ArrayData::BF16(v) => v.iter().map(|x| half_slot(x.to_bits())).collect(),
            ArrayData::F32(_)
            | ArrayData::F64(_)
            | ArrayData::I32(_)
            | ArrayData::Bool(_)
            | ArrayData::I8(_)
            | ArrayData::U8(_) => self.to_f64_vec(),
        }
    }

    /// The array with its axes reordered: output axis `j` is input axis `perm[j]` (exact for
    /// every dtype; `perm` is a permutation of the axes, which callers guarantee). Filter
    /// layouts (HWIO ↔ OIHW) at import, export and weight loading use it.
    pub(crate) fn permuted(&self, perm: &[usize]) -> Array {
        let shape = self.shape();
        let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
        let data = match &self.data {
            ArrayData::F32(v) => ArrayData::F32(permute_vec(v, shape, perm)),
            ArrayData::F64(v) => ArrayData::F64(permute_vec(v, shape, perm)),
            ArrayData::I32(v) => ArrayData::I32(permute_vec(v, shape, perm)),
            ArrayData::Bool(v) => ArrayData::Bool(permute_vec(v, shape, perm)),
            ArrayData::I64(v) => ArrayData::I64(permute_vec(v, shape, perm)),
            ArrayData::I8(v) => ArrayData::I8(permute_vec(v, shape, perm)),
            ArrayData::U8(v) => ArrayData::U8(permute_vec(v, shape, perm)),
            ArrayData::F16(v) => ArrayData::F16(permute_vec(v, shape, perm)),
            ArrayData::BF16(v) => ArrayData::BF16(permute_vec(v, shape, perm)),
        };
        Array {
            shape: out_shape,
            data,
        }
    }

    /// The inverse of [`Array::to_slots`]: an array of `dtype` from slots of that dtype.
    pub(crate) fn from_slots(dtype: DType, shape: Vec<usize>, data: Vec<f64>) -> Array {
        use crate::cast::{slot_half, slot_i64};
        let data = match dtype {
            DType::I64 => ArrayData::I64(data.iter().map(|&x| slot_i64(x)).collect()),
            DType::F16 => {
                ArrayData::F16(data.iter().map(|&x| f16::from_bits(slot_half(x))).collect())
            }
            DType::BF16 => ArrayData::BF16(
                data.iter()
                    .map(|&x| bf16::from_bits(slot_half(x)))
                    .collect(),
            ),
            DType::F32 | DType::F64 | DType::I32 | DType::Bool | DType::I8 | DType::U8 => {
                return Array::from_f64(dtype, shape, data)
            }
        };
        Array { shape, data }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self.data {
            ArrayData::F32(_) => DType::F32,
            ArrayData::F64(_) => DType::F64,
            ArrayData::I32(_) => DType::I32,
            ArrayData::Bool(_) => DType::Bool,
            ArrayData::I64(_) => DType::I64,
            ArrayData::I8(_) => DType::I8,
            ArrayData::U8(_) => DType::U8,
            ArrayData::F16(_) => DType::F16,
            ArrayData::BF16(_) => DType::BF16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        // Fits: the data holds this many elements (every constructor checks it).
        self.shape.iter().product()
    }

    /// True if the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The storage.
    pub fn data(&self) -> &ArrayData {
        &self.data
    }

    /// The elements, if they are of type `T`.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        T::unwrap(&self.data).ok_or_else(|| {
            Error::invalid(format!(
                "array holds {} elements, not {}",
                self.dtype(),
                T::DTYPE
            ))
        })
    }

    /// The elements, mutably, if they are of type `T`.
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        let dt = self.dtype();
        T::unwrap_mut(&mut self.data)
            .ok_or_else(|| Error::invalid(format!("array holds {dt} elements, not {}", T::DTYPE)))
    }

    /// A copy of the elements, if they are of type `T`.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.as_slice::<T>().map(|s| s.to_vec())
    }

    /// The single element of a one-element array.
    pub fn scalar_value<T: Element>(&self) -> Result<T> {
        let s = self.as_slice::<T>()?;
        if s.len() != 1 {
            return Err(Error::invalid(format!(
                "scalar_value: array of shape {:?} has {} elements, not 1",
                self.shape,
                s.len()
            )));
        }
        Ok(s[0])
    }

    /// All elements converted to `f64` (booleans as 0/1; `i64` values past 2^53 round).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        each_data!(&self.data, v => v.iter().map(|&x| x.to_f64()).collect())
    }

    /// The same values converted to another dtype, by the rules of the graph's `cast` (see
    /// [`crate::dtype`]): float → integer truncates and saturates (NaN → 0), integer →
    /// integer wraps, conversions to and from `f16`/`bf16` go through `f32`.
    ///
    /// ```
    /// use kiln::{Array, DType};
    /// let a = Array::new([3], vec![300i64, -1, 1 << 40]).unwrap();
    /// assert_eq!(a.cast(DType::U8).to_vec::<u8>().unwrap(), vec![44, 255, 0]);
    /// let h = Array::new([2], vec![1.5f32, 65520.0]).unwrap().cast(DType::F16);
    /// assert_eq!(h.cast(DType::F32).to_vec::<f32>().unwrap(), vec![1.5, f32::INFINITY]);
    /// ```
    pub fn cast(&self, dtype: DType) -> Array {
        let from = self.dtype();
        if dtype == from {
            return self.clone();
        }
        let slots = self.to_slots();
        let out = slots
            .iter()
            .map(|&x| crate::cast::cast_slot(from, dtype, x, false))
            .collect();
        Array::from_slots(dtype, self.shape.clone(), out)
    }

    /// The same data under another shape with the same element count.
    pub fn reshape(mut self, shape: impl AsRef<[usize]>) -> Result<Array> {
        let shape = shape.as_ref().to_vec();
        if crate::shape::checked_numel(&shape) != Some(self.len()) {
            return Err(Error::invalid(format!(
                "cannot reshape an array of shape {:?} to {:?}",
                self.shape, shape
            )));
        }
        self.shape = shape;
        Ok(self)
    }

    /// Bitwise equality of shape, dtype and every element's bits (`NaN == NaN`, `0.0 != -0.0`).
    pub fn bits_eq(&self, other: &Array) -> bool {
        if self.shape != other.shape {
            return false;
        }
        match (&self.data, &other.data) {
            (ArrayData::F32(a), ArrayData::F32(b)) => {
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            (ArrayData::F64(a), ArrayData::F64(b)) => {
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            (ArrayData::I32(a), ArrayData::I32(b)) => a == b,
            (ArrayData::Bool(a), ArrayData::Bool(b)) => a == b,
            (ArrayData::I64(a), ArrayData::I64(b)) => a == b,
            (ArrayData::I8(a), ArrayData::I8(b)) => a == b,
            (ArrayData::U8(a), ArrayData::U8(b)) => a == b,
            (ArrayData::F16(a), ArrayData::F16(b)) => {
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            (ArrayData::BF16(a), ArrayData::BF16(b)) => {
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            _ => false,
        }
    }

    fn hash_bits<H: Hasher>(&self, h: &mut H) {
        self.shape.hash(h);
        self.dtype().hash(h);
        match &self.data {
            ArrayData::F32(v) => v.iter().for_each(|x| x.to_bits().hash(h)),
            ArrayData::F64(v) => v.iter().for_each(|x| x.to_bits().hash(h)),
            ArrayData::I32(v) => v.hash(h),
            ArrayData::Bool(v) => v.hash(h),
            ArrayData::I64(v) => v.hash(h),
            ArrayData::I8(v) => v.hash(h),
            ArrayData::U8(v) => v.hash(h),
            ArrayData::F16(v) => v.iter().for_each(|x| x.to_bits().hash(h)),
            ArrayData::BF16(v) => v.iter().for_each(|x| x.to_bits().hash(h)),
        }
    }
}

impl<T: Element> From<T> for Array {
    fn from(v: T) -> Array {
        Array::scalar(v)
    }
}

/// A constant's value inside an op: shared, and compared and hashed by bits so that
/// structural hashing (CSE) treats `NaN` constants as equal to themselves.
#[derive(Clone, Debug)]
pub struct ConstValue(pub Arc<Array>);

impl PartialEq for ConstValue {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0) || self.0.bits_eq(&o.0)
    }
}
impl Eq for ConstValue {}
impl Hash for ConstValue {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.hash_bits(h)
    }
}

/// An `f64` attribute compared and hashed by its bits, so ops can derive `Eq` and `Hash`.
#[derive(Clone, Copy, Debug)]
pub struct FloatAttr(pub f64);

impl PartialEq for FloatAttr {
    fn eq(&self, o: &Self) -> bool {
        self.0.to_bits() == o.0.to_bits()
    }
}
impl Eq for FloatAttr {}
impl Hash for FloatAttr {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.to_bits().hash(h)
    }
}
impl fmt::Display for FloatAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// `src` (row-major over `shape`) with its axes reordered by `perm`, in the output's order:
/// the source offset follows the output's index like an odometer, each step one add (a
/// ResNet-50 import permutes 25 M filter values; a per-element index sum took 0.4 s).
fn permute_vec<T: Copy>(src: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let r = shape.len();
    let strides = crate::view::row_major_strides(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
    let step: Vec<usize> = perm.iter().map(|&a| strides[a]).collect();
    let mut out = Vec::with_capacity(src.len());
    if src.is_empty() {
        return out;
    }
    let (mut idx, mut off) = (vec![0usize; r], 0usize);
    // The innermost output axis as a run of strided reads.
    let (inner, inner_step) = (
        out_shape.last().copied().unwrap_or(1),
        step.last().copied().unwrap_or(1),
    );
    while out.len() < src.len() {
        out.extend((0..inner).map(|i| src[off + i * inner_step]));
        // Advance the outer axes (all but the last).
        let mut j = r.saturating_sub(1);
        while j > 0 {
            j -= 1;
            idx[j] += 1;
            off += step[j];
            if idx[j] < out_shape[j] {
                break;
            }
            off -= step[j] * out_shape[j];
            idx[j] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests;
