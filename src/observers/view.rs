//! [`FloatView`]: a borrowed batch of any float element type the kernels accept.

use half::{bf16, f16};
use ndarray::{ArrayBase, ArrayRef, ArrayView, ArrayViewD, Data, Dimension};

use crate::element::QFloat;
use crate::error::{QuantError, Result};

/// A borrowed batch of `f32`, `f64`, [`struct@f16`] or [`struct@bf16`] values, any shape: what
/// [`Observer::observe_view`](super::Observer::observe_view) takes.
///
/// Callers rarely name it: `observe` (on `dyn Observer` and on every observer type) takes
/// anything that converts into it, which is an [`ArrayView`] of any dimension (`x.view()`) or
/// a reference to an array (`&x`) of the four float types.
///
/// Observers compute in `f32`, as PyTorch's do: `f16`/`bf16` values convert exactly, `f64`
/// values round to nearest. The conversion runs in blocks inside the observer (no copy of the
/// batch); an `f64` value beyond `f32`'s range is refused with
/// [`QuantError::RangeOverflow`].
///
/// # Examples
/// ```
/// use half::f16;
/// use ndarray::array;
/// use qnumeric::{MinMaxObserver, QDType, QScheme, QSpec};
///
/// let mut obs = MinMaxObserver::new(QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8))?;
/// obs.observe(array![1.0f32, 2.0].view())?; // an f32 view
/// obs.observe(&array![0.5f64, 3.0])?; // an f64 array by reference
/// obs.observe(&array![f16::from_f32(-1.0)])?; // f16
/// assert_eq!(obs.min_max(), Some((-1.0, 3.0)));
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone)]
pub enum FloatView<'a> {
    /// `f32` values.
    F32(ArrayViewD<'a, f32>),
    /// `f64` values.
    F64(ArrayViewD<'a, f64>),
    /// IEEE half-precision values.
    F16(ArrayViewD<'a, f16>),
    /// bfloat16 values.
    BF16(ArrayViewD<'a, bf16>),
}

impl FloatView<'_> {
    /// The shape.
    #[must_use]
    pub fn shape(&self) -> &[usize] {
        match self {
            FloatView::F32(v) => v.shape(),
            FloatView::F64(v) => v.shape(),
            FloatView::F16(v) => v.shape(),
            FloatView::BF16(v) => v.shape(),
        }
    }

    /// Number of dimensions.
    #[must_use]
    pub fn ndim(&self) -> usize {
        self.shape().len()
    }

    /// Number of values.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// Whether there are no values.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type's name (`"f32"`, `"f64"`, `"f16"`, `"bf16"`).
    #[must_use]
    pub fn dtype_name(&self) -> &'static str {
        match self {
            FloatView::F32(_) => f32::NAME,
            FloatView::F64(_) => f64::NAME,
            FloatView::F16(_) => f16::NAME,
            FloatView::BF16(_) => bf16::NAME,
        }
    }

    /// A shorter-lived copy of the view (for passing the same batch on).
    #[must_use]
    pub fn reborrow(&self) -> FloatView<'_> {
        match self {
            FloatView::F32(v) => FloatView::F32(v.view()),
            FloatView::F64(v) => FloatView::F64(v.view()),
            FloatView::F16(v) => FloatView::F16(v.view()),
            FloatView::BF16(v) => FloatView::BF16(v.view()),
        }
    }
}

macro_rules! float_view_from {
    ($t:ty, $variant:ident) => {
        impl<'a, D: Dimension> From<ArrayView<'a, $t, D>> for FloatView<'a> {
            fn from(v: ArrayView<'a, $t, D>) -> Self {
                FloatView::$variant(v.into_dyn())
            }
        }

        impl<'a, S: Data<Elem = $t>, D: Dimension> From<&'a ArrayBase<S, D, $t>> for FloatView<'a> {
            fn from(a: &'a ArrayBase<S, D, $t>) -> Self {
                FloatView::$variant(a.view().into_dyn())
            }
        }

        impl<'a, D: Dimension> From<&'a ArrayRef<$t, D>> for FloatView<'a> {
            fn from(a: &'a ArrayRef<$t, D>) -> Self {
                FloatView::$variant(a.view().into_dyn())
            }
        }
    };
}
float_view_from!(f32, F32);
float_view_from!(f64, F64);
float_view_from!(f16, F16);
float_view_from!(bf16, BF16);

/// Values per conversion block: 16 KiB of `f32`, L1-resident.
pub(crate) const BLOCK: usize = 4096;

/// Calls `f` with the values of `x` converted to `f32`, `block` values at a time (memory
/// order for contiguous arrays, logical order otherwise), without materialising the whole
/// batch.
pub(crate) fn for_each_block<F: QFloat>(
    x: &ArrayViewD<'_, F>,
    block: usize,
    mut f: impl FnMut(&[f32]),
) {
    let mut buf = vec![0.0f32; block.min(x.len())];
    match x.as_slice_memory_order() {
        Some(s) => {
            for c in s.chunks(block) {
                let b = &mut buf[..c.len()];
                F::slice_to_compute(c, b);
                f(b);
            }
        }
        None => {
            let mut n = 0;
            for &v in x.iter() {
                buf[n] = v.to_compute();
                n += 1;
                if n == buf.len() {
                    f(&buf);
                    n = 0;
                }
            }
            if n > 0 {
                f(&buf[..n]);
            }
        }
    }
}

/// The first value of `x` (logical order) that has no finite `f32` value, as the error to
/// return: NaN ([`QuantError::NanInput`]), ±inf ([`QuantError::NonFinite`]) or a finite
/// value beyond `f32`'s range ([`QuantError::RangeOverflow`]).
pub(crate) fn non_finite_error<F: QFloat>(op: &'static str, x: &ArrayViewD<'_, F>) -> Result<()> {
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() {
            return Err(QuantError::NanInput { op, index: i });
        }
        if v.is_infinite() {
            return Err(QuantError::NonFinite {
                op,
                what: "observed value",
                value: v.to_f64_exact(),
            });
        }
        if !v.to_compute().is_finite() {
            let value = v.to_f64_exact();
            return Err(QuantError::RangeOverflow {
                op,
                min: value,
                max: value,
            });
        }
    }
    Ok(())
}
