//! Obviously-correct scalar reference kernels: the oracle the fast paths are tested against,
//! public so that custom backends can test their own kernels against it.
//!
//! Each function handles one element and follows PyTorch's arithmetic literally, with
//! `f32::round_ties_even` and no vectorisation tricks.

/// Quantizes one value: `clamp(rne(x * f32(1/scale)) + zp, qmin, qmax)`.
///
/// # Examples
/// ```
/// use qnumeric::kernels::reference;
/// assert_eq!(reference::quantize(0.5, 1.0, 1, 0, 255), 1); // zero point added after rounding
/// ```
#[must_use]
pub fn quantize(x: f32, scale: f32, zero_point: i64, qmin: i64, qmax: i64) -> i64 {
    let inv = 1.0f32 / scale;
    let r = (x * inv).round_ties_even() as f64;
    (r + zero_point as f64).clamp(qmin as f64, qmax as f64) as i64
}

/// Dequantizes one value per tensor: `f32(f32(q - zp) * scale)`.
#[must_use]
pub fn dequantize(q: i64, scale: f32, zero_point: i64) -> f32 {
    (q - zero_point) as f32 * scale
}

/// Dequantizes one value per channel: `f32(f64(q - zp) * f64(scale))`.
#[must_use]
pub fn dequantize_per_channel(q: i64, scale: f32, zero_point: i64) -> f32 {
    ((q - zero_point) as f64 * scale as f64) as f32
}

/// Fake-quantizes one value; returns `(y, mask)`.
#[must_use]
pub fn fake_quantize(x: f32, scale: f32, zero_point: i64, qmin: i64, qmax: i64) -> (f32, bool) {
    let inv = 1.0f32 / scale;
    let level = (x * inv).round_ties_even() as f64 + zero_point as f64;
    let mask = qmin as f64 <= level && level <= qmax as f64;
    let qc = level.clamp(qmin as f64, qmax as f64);
    (((qc - zero_point as f64) as f32) * scale, mask)
}
