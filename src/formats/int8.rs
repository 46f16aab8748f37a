//! [`Int8PerRow`]: PyTorch's x86 weight scheme (qint8, symmetric, one scale per output
//! channel) as an [`ElementFormat`], so that int8 weights sit in the same comparisons as the
//! low-precision formats.

use std::fmt;

use ndarray::{ArrayView2, ArrayViewMut2};

use super::{ElementFormat, check_rows};
use crate::dtype::QDType;
use crate::error::{QuantError, Result};
use crate::kernels::fake_quantize_per_channel_into;
use crate::observers::{Observer, PerChannelMinMaxObserver};
use crate::qparams::{QScheme, QSpec};

/// int8 weights, symmetric, one scale per row: PyTorch's `per_channel_symmetric` qint8 weight
/// observer (`scale = max|row| / 127.5`, zero point 0, range −128..=127), bit for bit.
///
/// ```
/// use qnumeric::formats::{ElementFormat, Int8PerRow};
/// let x = [1.0f32, -0.5, 0.25, 0.0];
/// let mut y = [0.0f32; 4];
/// Int8PerRow.fake_quantize_rows(&x, 4, &mut y)?;
/// assert!((y[1] + 0.5).abs() < 1e-2);
/// assert_eq!(Int8PerRow.bits_per_element(), 8.0);
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Int8PerRow;

impl fmt::Display for Int8PerRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("int8 per row")
    }
}

impl ElementFormat for Int8PerRow {
    /// 8 (the f32 scale per row is not counted: it depends on the row length).
    fn bits_per_element(&self) -> f64 {
        8.0
    }

    fn block_len(&self) -> usize {
        1
    }

    fn fake_quantize_rows(&self, x: &[f32], row_len: usize, out: &mut [f32]) -> Result<()> {
        const OP: &str = "Int8PerRow::fake_quantize_rows";
        check_rows(OP, x.len(), row_len, 1, out.len())?;
        if let Some(index) = x.iter().position(|v| v.is_nan()) {
            return Err(QuantError::NanInput { op: OP, index });
        }
        if x.is_empty() {
            return Ok(());
        }
        let rows = x.len() / row_len;
        let view = ArrayView2::from_shape((rows, row_len), x).map_err(|e| QuantError::Format {
            op: OP,
            detail: e.to_string(),
        })?;
        let mut observer = PerChannelMinMaxObserver::new(
            QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8),
            0,
        )?;
        observer.observe(view)?;
        let qp = observer.per_channel_qparams()?;
        let mut y =
            ArrayViewMut2::from_shape((rows, row_len), out).map_err(|e| QuantError::Format {
                op: OP,
                detail: e.to_string(),
            })?;
        fake_quantize_per_channel_into(&view, &qp, &mut y)?;
        Ok(())
    }
}
