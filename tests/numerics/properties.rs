//! Property tests: the kernels' invariants, and that every public kernel family returns `Ok`
//! or the typed `Err` it documents (never panics) on arbitrary input: shapes including 0-d
//! and zero-sized ones, any memory layout, values including NaN, ±inf, subnormals and
//! ±`f32::MAX`, scales from `1e-45` to `1e38` (and invalid ones), any zero point, any axis.
//! Where the reference kernels (`qnumeric::kernels::reference`) define the result, the fast
//! kernels must agree with them bit for bit.
//!
//! Each property runs 64 cases by default, which keeps `cargo test` fast in debug builds. Set
//! the `PROPTEST_CASES` environment variable for more, e.g.
//! `PROPTEST_CASES=5000 cargo test --release --all-features --test properties`.

use std::fmt::Debug;

use half::{bf16, f16};
use ndarray::{Array1, Array2, ArrayD, ArrayViewD, Axis, IxDyn};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use qnumeric::kernels::reference;
use qnumeric::*;

type TestResult = std::result::Result<(), TestCaseError>;

/// `prop_assert!` that prints the condition itself (whose braces `prop_assert!` would read as
/// a format string).
macro_rules! ensure {
    ($c:expr_2021) => {
        prop_assert!($c, "{}", stringify!($c))
    };
    ($c:expr_2021, $($fmt:tt)+) => {
        prop_assert!($c, $($fmt)+)
    };
}

/// 64 cases unless `PROPTEST_CASES` says otherwise.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies.

/// Any `f32`, weighted towards ordinary values and the special ones.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -10.0f32..10.0,
        2 => prop::num::f32::ANY,
        1 => prop::sample::select(vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            -f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
            0.0,
            -0.0,
            2.5,
            -2.5,
            2_147_483_648.0,
            -2_147_483_648.0,
            4.2e6,
        ]),
    ]
}

/// Any finite `f32` (for invariants that need one).
fn finite() -> impl Strategy<Value = f32> {
    prop_oneof![-1e3f32..1e3, -10.0f32..10.0, Just(0.0), Just(-0.0)]
}

/// Scales from 1e-45 to 1e38 (log-uniform), and invalid ones.
fn scale() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => (-45.0f64..38.5).prop_map(|e| 10f64.powf(e) as f32),
        1 => prop::sample::select(vec![
            0.0,
            -0.0,
            -1.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-45,
            1e-39,
            2.938_736e-39,
            f32::MAX,
        ]),
    ]
}

/// Any `i64`, weighted towards small values and the ends of the integer types.
fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => -300i64..300,
        1 => any::<i64>(),
        1 => prop::sample::select(vec![
            i32::MIN as i64,
            i32::MIN as i64 + 1,
            i32::MAX as i64 - 1,
            i32::MAX as i64,
            1 << 31,
            -(1 << 31) - 1,
            65535,
            -32768,
            i64::MIN,
            i64::MAX,
        ]),
    ]
}

fn dtype() -> impl Strategy<Value = QDType> {
    prop::sample::select(QDType::ALL.to_vec())
}

/// A zero point inside `dtype`'s range (from `raw`), or `raw` itself when `inside` is false.
fn pick_zero_point(dtype: QDType, raw: i64, inside: bool) -> i64 {
    if inside {
        let span = (dtype.max() - dtype.min()) as u64 + 1;
        dtype.min() + (raw as u64 % span) as i64
    } else {
        raw
    }
}

/// Per-tensor parameters over the whole scale range (invalid combinations filtered out).
fn qparams() -> impl Strategy<Value = QParams> {
    (dtype(), scale(), int(), prop::bool::weighted(0.9))
        .prop_filter_map("valid parameters", |(d, s, z, inside)| {
            QParams::new(s, pick_zero_point(d, z, inside), d).ok()
        })
}

/// Shapes of rank 0 to 3 with axes of length 0 to 4.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..5, 0..4)
}

fn array_of<T: Debug + Clone + 'static>(
    shape: Vec<usize>,
    elem: impl Strategy<Value = T>,
) -> impl Strategy<Value = ArrayD<T>> {
    let n: usize = shape.iter().product();
    prop::collection::vec(elem, n)
        .prop_map(move |v| ArrayD::from_shape_vec(IxDyn(&shape), v).expect("shape"))
}

fn floats() -> impl Strategy<Value = ArrayD<f32>> {
    shape().prop_flat_map(|s| array_of(s, value()))
}

/// Two arrays of one shape.
fn float_pair() -> impl Strategy<Value = (ArrayD<f32>, ArrayD<f32>)> {
    shape().prop_flat_map(|s| (array_of(s.clone(), value()), array_of(s, value())))
}

/// The view itself, or with its axes reversed (the strided paths).
fn layout<T>(a: &ArrayD<T>, reversed: bool) -> ArrayViewD<'_, T> {
    if reversed {
        a.view().reversed_axes()
    } else {
        a.view()
    }
}

/// A shape other than `shape` (for shape-mismatch checks).
fn other_shape(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    match s.last_mut() {
        Some(v) => *v += 1,
        None => s.push(2),
    }
    s
}

fn first_nan<F: QFloat>(x: &ArrayViewD<'_, F>) -> Option<usize> {
    x.iter().position(|v| v.is_nan())
}

fn is_nan_at<T>(r: &Result<T>, index: usize) -> bool {
    matches!(r, Err(QuantError::NanInput { index: i, .. }) if *i == index)
}

// ---------------------------------------------------------------------------------------------
// Per-tensor kernels.

/// Quantize, dequantize, fake-quantize (forward, mask, backward, `_into`, in place) of `x` as
/// `F` with storage `Q`: typed errors only, and agreement with the reference kernels.
fn per_tensor<F: QFloat, Q: QInt>(x32: &ArrayD<f32>, reversed: bool, qp: &QParams) -> TestResult {
    let owned = x32.mapv(F::from_compute);
    let x = layout(&owned, reversed);
    let xc: Vec<f32> = x.iter().map(|v| v.to_compute()).collect();
    let nan = first_nan(&x);
    let (s, z, d, r) = (qp.scale(), qp.zero_point() as i64, qp.dtype(), qp.range());
    let narrow_storage = Q::MIN > d.min() || Q::MAX < d.max();

    // quantize and quantize_into.
    let q = quantize::<F, Q, _>(&x, qp);
    let mut out = ArrayD::from_elem(x.raw_dim(), Q::from_i32_wrapping(0x5a));
    let into = quantize_into(&x, qp, &mut out.view_mut());
    if narrow_storage {
        ensure!(
            matches!(q, Err(QuantError::StorageTooNarrow { .. })),
            "{q:?}"
        );
        ensure!(matches!(into, Err(QuantError::StorageTooNarrow { .. })));
        ensure!(out.iter().all(|&v| v == Q::from_i32_wrapping(0x5a)));
    } else if let Some(i) = nan {
        ensure!(is_nan_at(&q, i), "{q:?}");
        ensure!(is_nan_at(&into, i));
    } else {
        let q = q.map_err(|e| TestCaseError::fail(e.to_string()))?;
        ensure!(into.is_ok());
        prop_assert_eq!(&out, &q);
        for (v, &xv) in q.iter().zip(&xc) {
            let want = reference::quantize(xv, s, z, d.min(), d.max())?;
            prop_assert_eq!(v.to_i32() as i64, want, "x {} scale {} zp {}", xv, s, z);
        }
        // Dequantize what came out, against the reference.
        let back: ArrayD<F> = dequantize(&q, qp)?;
        for (b, v) in back.iter().zip(q.iter()) {
            let want = F::from_compute(reference::dequantize(v.to_i32() as i64, s, z)?);
            prop_assert_eq!(b.to_f64_exact().to_bits(), want.to_f64_exact().to_bits());
        }
    }
    let mut wrong = ArrayD::from_elem(IxDyn(&other_shape(x.shape())), Q::default());
    ensure!(matches!(
        quantize_into(&x, qp, &mut wrong.view_mut()),
        Err(QuantError::ShapeMismatch { .. })
    ));

    // fake_quantize and friends.
    let sentinel = F::from_compute(-7.25);
    let y = fake_quantize(&x, qp);
    let mask = fake_quantize_mask(&x, qp);
    let dy = ArrayD::from_elem(x.raw_dim(), F::one());
    let dx = fake_quantize_backward(&x, &dy, qp);
    let mut yi = ArrayD::from_elem(x.raw_dim(), sentinel);
    let yi_r = fake_quantize_into(&x, qp, &mut yi.view_mut());
    let mut inplace = x.to_owned();
    let inplace_r = fake_quantize_inplace(&mut inplace.view_mut(), qp);
    match nan {
        Some(i) => {
            ensure!(is_nan_at(&y, i) && is_nan_at(&mask, i) && is_nan_at(&dx, i));
            ensure!(is_nan_at(&yi_r, i) && is_nan_at(&inplace_r, i));
            // In place, the output is the input: untouched on error.
            ensure!(
                inplace
                    .iter()
                    .zip(x.iter())
                    .all(|(a, b)| a.to_f64_exact().to_bits() == b.to_f64_exact().to_bits())
            );
        }
        None => {
            let (y, mask, dx) = (y?, mask?, dx?);
            yi_r?;
            inplace_r?;
            for (k, &xv) in xc.iter().enumerate() {
                let (wy, wm) = reference::fake_quantize(xv, s, z, r.quant_min(), r.quant_max())?;
                let wy = F::from_compute(wy).to_f64_exact().to_bits();
                let got = y.iter().nth(k).map(|v| v.to_f64_exact().to_bits());
                prop_assert_eq!(got, Some(wy), "x {} scale {} zp {} range {:?}", xv, s, z, r);
                prop_assert_eq!(mask.iter().nth(k).copied(), Some(wm));
                let g = dx.iter().nth(k).map(|v| v.to_f64_exact());
                prop_assert_eq!(g, Some(if wm { 1.0 } else { 0.0 }));
            }
            prop_assert_eq!(&yi, &y);
            prop_assert_eq!(&inplace, &y);
        }
    }
    let mut wrong = ArrayD::from_elem(IxDyn(&other_shape(x.shape())), sentinel);
    ensure!(matches!(
        fake_quantize_into(&x, qp, &mut wrong.view_mut()),
        Err(QuantError::ShapeMismatch { .. })
    ));
    ensure!(matches!(
        fake_quantize_backward_into(&x, &dy, qp, &mut wrong.view_mut()),
        Err(QuantError::ShapeMismatch { .. })
    ));
    ensure!(wrong.iter().all(|v| *v == sentinel));
    Ok(())
}

/// Dequantize of arbitrary stored integers: values outside the dtype are a typed error that
/// leaves the output untouched; the others agree with the reference.
fn dequantize_any<Q: QInt>(q: &ArrayD<Q>, qp: &QParams) -> TestResult {
    let d = qp.dtype();
    let outside = q
        .iter()
        .any(|v| (v.to_i32() as i64) < d.min() || (v.to_i32() as i64) > d.max());
    let mut out = ArrayD::from_elem(q.raw_dim(), -7.25f32);
    let r = dequantize_into(q, qp, &mut out.view_mut());
    if outside {
        ensure!(
            matches!(r, Err(QuantError::InvalidParameter { .. })),
            "{r:?}"
        );
        ensure!(out.iter().all(|&v| v == -7.25));
    } else {
        r?;
        for (o, v) in out.iter().zip(q.iter()) {
            let want =
                reference::dequantize(v.to_i32() as i64, qp.scale(), qp.zero_point() as i64)?;
            prop_assert_eq!(o.to_bits(), want.to_bits());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Per-channel kernels.

#[derive(Debug, Clone)]
struct PerChannelCase {
    scales: Vec<f32>,
    zero_points: Vec<i64>,
    float_zero_points: Option<Vec<f32>>,
    axis: isize,
    dtype: QDType,
}

fn per_channel_case() -> impl Strategy<Value = PerChannelCase> {
    (
        0usize..5,
        dtype(),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.2),
    )
        .prop_flat_map(|(c, dtype, inside, float)| {
            (
                prop::collection::vec(scale(), c),
                prop::collection::vec(int(), c),
                prop::collection::vec(value(), c),
                prop_oneof![4 => -4isize..4, 1 => any::<isize>()],
            )
                .prop_map(move |(scales, zps, fz, axis)| PerChannelCase {
                    scales,
                    zero_points: zps
                        .into_iter()
                        .map(|z| pick_zero_point(dtype, z, inside))
                        .collect(),
                    float_zero_points: float.then_some(fz),
                    axis,
                    dtype,
                })
        })
}

impl PerChannelCase {
    fn build(&self) -> Result<PerChannelQParams> {
        let zps = match &self.float_zero_points {
            Some(f) => ZeroPoints::Float(f.clone()),
            None => {
                let mut z = Vec::new();
                for &v in &self.zero_points {
                    // Zero points that do not fit an i32 are outside every range.
                    let Ok(v) = i32::try_from(v) else {
                        return PerChannelQParams::new(
                            self.scales.clone(),
                            vec![i32::MAX; self.scales.len()],
                            self.axis,
                            QDType::QInt8,
                        );
                    };
                    z.push(v);
                }
                ZeroPoints::Int(z)
            }
        };
        PerChannelQParams::with_range(self.scales.clone(), zps, self.axis, self.dtype.full_range())
    }
}

/// Whether `axis` names an axis of `ndim` with `channels` elements.
fn axis_fits(axis: isize, shape: &[usize], channels: usize) -> Option<usize> {
    let n = shape.len() as isize;
    let a = if axis < 0 { axis.checked_add(n)? } else { axis };
    (0..n)
        .contains(&a)
        .then_some(a as usize)
        .filter(|&a| shape[a] == channels)
}

fn per_channel<F: QFloat, Q: QInt>(
    x32: &ArrayD<f32>,
    reversed: bool,
    case: &PerChannelCase,
) -> TestResult {
    let Ok(pc) = case.build() else {
        return Ok(());
    };
    let owned = x32.mapv(F::from_compute);
    let x = layout(&owned, reversed);
    let nan = first_nan(&x);
    let d = pc.dtype();
    let axis = axis_fits(pc.axis(), x.shape(), pc.channels());
    let narrow_storage = Q::MIN > d.min() || Q::MAX < d.max();

    let q = quantize_per_channel::<F, Q, _>(&x, &pc);
    let mut out = ArrayD::from_elem(x.raw_dim(), Q::from_i32_wrapping(0x5a));
    let into = quantize_per_channel_into(&x, &pc, &mut out.view_mut());
    let y = fake_quantize_per_channel(&x, &pc);
    let dy = ArrayD::from_elem(x.raw_dim(), F::one());
    let dx = fake_quantize_per_channel_backward(&x, &dy, &pc);
    let mut yi = ArrayD::from_elem(x.raw_dim(), F::from_compute(-7.25));
    let yi_r = fake_quantize_per_channel_into(&x, &pc, &mut yi.view_mut());
    let mut dxi = ArrayD::from_elem(x.raw_dim(), F::from_compute(-7.25));
    let dxi_r = fake_quantize_per_channel_backward_into(&x, &dy, &pc, &mut dxi.view_mut());
    let Some(axis) = axis else {
        for r in [
            &q.map(drop),
            &into,
            &y.map(drop),
            &dx.map(drop),
            &yi_r,
            &dxi_r,
        ] {
            ensure!(
                matches!(
                    r,
                    Err(QuantError::InvalidAxis { .. } | QuantError::LengthMismatch { .. })
                ),
                "{r:?}"
            );
        }
        ensure!(out.iter().all(|&v| v == Q::from_i32_wrapping(0x5a)));
        ensure!(yi.iter().chain(dxi.iter()).all(|v| v.to_compute() == -7.25));
        return Ok(());
    };
    if narrow_storage {
        ensure!(matches!(q, Err(QuantError::StorageTooNarrow { .. })));
        ensure!(matches!(into, Err(QuantError::StorageTooNarrow { .. })));
        ensure!(out.iter().all(|&v| v == Q::from_i32_wrapping(0x5a)));
    }
    if let Some(i) = nan {
        if !narrow_storage {
            ensure!(is_nan_at(&q, i) && is_nan_at(&into, i));
        }
        ensure!(is_nan_at(&y, i) && is_nan_at(&dx, i));
        ensure!(is_nan_at(&yi_r, i) && is_nan_at(&dxi_r, i));
        return Ok(());
    }
    let (y, dx) = (y?, dx?);
    yi_r?;
    dxi_r?;
    prop_assert_eq!(&yi, &y);
    prop_assert_eq!(&dxi, &dx);
    if narrow_storage {
        return Ok(());
    }
    let q = q?;
    into?;
    prop_assert_eq!(&out, &q);
    let back: ArrayD<F> = dequantize_per_channel(&q, &pc)?;
    let ZeroPoints::Int(zps) = pc.zero_points() else {
        return Ok(());
    };
    let r = pc.range();
    for (idx, v) in x.indexed_iter() {
        let c = idx[axis];
        let (s, z) = (pc.scales()[c], zps[c] as i64);
        let xv = v.to_compute();
        let want = reference::quantize(xv, s, z, d.min(), d.max())?;
        prop_assert_eq!(
            q[&idx].to_i32() as i64,
            want,
            "x {} scale {} zp {}",
            xv,
            s,
            z
        );
        let wb = F::from_compute(reference::dequantize_per_channel(want, s, z)?);
        prop_assert_eq!(
            back[&idx].to_f64_exact().to_bits(),
            wb.to_f64_exact().to_bits()
        );
        let (wy, wm) = reference::fake_quantize(xv, s, z, r.quant_min(), r.quant_max())?;
        let wy = F::from_compute(wy);
        prop_assert_eq!(
            y[&idx].to_f64_exact().to_bits(),
            wy.to_f64_exact().to_bits()
        );
        prop_assert_eq!(dx[&idx].to_f64_exact(), if wm { 1.0 } else { 0.0 });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Metrics.

fn metrics_total<F: QFloat>(x: &ArrayViewD<'_, F>, y: &ArrayViewD<'_, F>) -> TestResult {
    let finite = x.iter().chain(y.iter()).all(|v| v.is_finite());
    for m in [
        Metric::Sqnr,
        Metric::NormalizedL2Error,
        Metric::CosineSimilarity,
        Metric::Mse,
        Metric::MaxAbsError,
    ] {
        let r = m.compute(x, y);
        if x.shape() != y.shape() {
            ensure!(matches!(r, Err(QuantError::ShapeMismatch { .. })));
            continue;
        }
        if x.is_empty() {
            ensure!(matches!(r, Err(QuantError::EmptyInput { .. })), "{r:?}");
            continue;
        }
        if !finite {
            ensure!(
                matches!(
                    r,
                    Err(QuantError::NanInput { .. } | QuantError::InfiniteInput { .. })
                ),
                "{r:?}"
            );
            continue;
        }
        let v = r?;
        match m {
            Metric::CosineSimilarity => ensure!(v.abs() <= 1.0 + 1e-9, "cosine {}", v),
            Metric::NormalizedL2Error | Metric::Mse => {
                ensure!(v.is_nan() || v >= 0.0, "{} {}", m.name(), v)
            }
            Metric::MaxAbsError => ensure!(v >= 0.0),
            _ => {}
        }
    }
    Ok(())
}

/// Any `f64`, including magnitudes far outside the `f32` range.
fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => -10.0f64..10.0,
        2 => prop::num::f64::ANY,
        1 => prop::sample::select(vec![f64::MAX, -f64::MAX, 1e300, -1e-300, 5e-324, 0.0]),
    ]
}

// ---------------------------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parameter_constructors_are_total(
        d in dtype(),
        s in scale(),
        z in int(),
        lo in int(),
        hi in int(),
    ) {
        match QParams::new(s, z, d) {
            Ok(qp) => {
                ensure!((1.0f32 / s).is_finite() && s > 0.0);
                ensure!(d.min() <= z && z <= d.max());
                // 0.0 quantizes to the zero point, whatever the scale.
                let q: Array1<i32> = quantize(&Array1::from(vec![0.0f32, -0.0]), &qp)?;
                prop_assert_eq!(q, Array1::from_elem(2, z as i32));
            }
            Err(e) => ensure!(matches!(
                e,
                QuantError::InvalidScale { .. } | QuantError::ZeroPointOutOfRange { .. }
            )),
        }
        for r in [QRange::new(d, lo, hi), QRange::for_fake_quant(lo, hi)] {
            match r {
                Ok(r) => {
                    ensure!(r.quant_min() <= r.quant_max());
                    ensure!(r.dtype().min() <= r.quant_min() && r.quant_max() <= r.dtype().max());
                    match r.with_reduce_range() {
                        Ok(h) => ensure!(h.quant_min() <= h.quant_max()),
                        Err(e) => ensure!(matches!(e, QuantError::InvalidQuantRange { .. })),
                    }
                    let _ = QParams::with_range(s, z, r);
                }
                Err(e) => ensure!(matches!(e, QuantError::InvalidQuantRange { .. })),
            }
        }
    }

    #[test]
    fn per_channel_constructors_are_total(case in per_channel_case()) {
        match case.build() {
            Ok(pc) => {
                ensure!(pc.channels() >= 1);
                ensure!(pc.inv_scales().iter().all(|v| v.is_finite()));
                for c in 0..pc.channels() + 1 {
                    let _ = pc.channel(c);
                    let _ = pc.zero_points().get(c);
                }
            }
            Err(e) => ensure!(matches!(
                e,
                QuantError::InvalidScale { .. }
                    | QuantError::ZeroPointOutOfRange { .. }
                    | QuantError::LengthMismatch { .. }
                    | QuantError::NonFinite { .. }
            ), "{e:?}"),
        }
    }

    #[test]
    fn per_tensor_kernels_are_total_and_match_the_reference(
        x in floats(),
        reversed in any::<bool>(),
        qp in qparams(),
    ) {
        per_tensor::<f32, u8>(&x, reversed, &qp)?;
        per_tensor::<f32, i8>(&x, reversed, &qp)?;
        per_tensor::<f32, i32>(&x, reversed, &qp)?;
        per_tensor::<f64, i16>(&x, reversed, &qp)?;
        per_tensor::<f16, i32>(&x, reversed, &qp)?;
        per_tensor::<bf16, u16>(&x, reversed, &qp)?;
    }

    #[test]
    fn dequantize_of_any_stored_value_is_total(
        q in shape().prop_flat_map(|s| array_of(s, any::<i32>())),
        qp in qparams(),
    ) {
        dequantize_any(&q, &qp)?;
        dequantize_any(&q.mapv(|v| v as u8), &qp)?;
        dequantize_any(&q.mapv(|v| v as i8), &qp)?;
        dequantize_any(&q.mapv(|v| v as i16), &qp)?;
    }

    #[test]
    fn per_channel_kernels_are_total_and_match_the_reference(
        x in floats(),
        reversed in any::<bool>(),
        case in per_channel_case(),
    ) {
        per_channel::<f32, i32>(&x, reversed, &case)?;
        per_channel::<f32, u8>(&x, reversed, &case)?;
        per_channel::<f64, i8>(&x, reversed, &case)?;
        per_channel::<f16, i16>(&x, reversed, &case)?;
        per_channel::<bf16, i32>(&x, reversed, &case)?;
    }

    #[test]
    fn per_channel_kernels_on_matching_shapes(
        dims in prop::collection::vec(1usize..4, 1..4),
        axis_pick in any::<prop::sample::Index>(),
        reversed in any::<bool>(),
        seed in any::<u64>(),
        d in dtype(),
        float in prop::bool::weighted(0.2),
        values in prop::collection::vec(value(), 64),
        scales in prop::collection::vec(scale(), 4),
        zps in prop::collection::vec(int(), 4),
    ) {
        // Axes that fit, so that the kernels run (the general property mostly hits errors).
        let axis = axis_pick.index(dims.len());
        let c = dims[axis];
        let n: usize = dims.iter().product();
        let x = ArrayD::from_shape_vec(IxDyn(&dims), values[..n].to_vec()).expect("shape");
        let case = PerChannelCase {
            scales: scales[..c].to_vec(),
            zero_points: zps[..c].iter().map(|&z| pick_zero_point(d, z, true)).collect(),
            float_zero_points: float.then(|| values[..c].to_vec()),
            axis: if seed % 2 == 0 { axis as isize } else { axis as isize - dims.len() as isize },
            dtype: d,
        };
        // The reversed layout moves the axis: reverse it too.
        let mut case_r = case.clone();
        case_r.axis = (dims.len() - 1 - axis) as isize;
        let c_case = if reversed { &case_r } else { &case };
        per_channel::<f32, i32>(&x, reversed, c_case)?;
        per_channel::<f16, i32>(&x, reversed, c_case)?;
        per_channel::<f64, u8>(&x, reversed, c_case)?;
    }

    #[test]
    fn learnable_fake_quantize_is_total(
        (x, dy) in float_pair(),
        other in floats(),
        s in scale(),
        zero_point in value(),
        quant_min in int(),
        quant_max in int(),
        grad_factor in value(),
    ) {
        let p = LearnableParams { scale: s, zero_point, quant_min, quant_max, grad_factor };
        let y = learnable_fake_quantize(&x, &p);
        let mut out = ArrayD::from_elem(x.raw_dim(), -7.25f32);
        let into = learnable_fake_quantize_into(&x, &p, &mut out.view_mut());
        let g = learnable_fake_quantize_backward(&x, &dy, &p);
        let mut dx = ArrayD::from_elem(x.raw_dim(), -7.25f32);
        let g_into = learnable_fake_quantize_backward_into(&x, &dy, &p, &mut dx.view_mut());
        let nan = first_nan(&x.view());
        match (&y, nan) {
            (Ok(y), _) => {
                ensure!(into.is_ok());
                prop_assert_eq!(&out, y);
            }
            (Err(QuantError::NanInput { index, .. }), Some(i)) => {
                prop_assert_eq!(*index, i);
                ensure!(is_nan_at(&into, i) && is_nan_at(&g, i) && is_nan_at(&g_into, i));
            }
            (Err(e), _) => {
                ensure!(matches!(
                    e,
                    QuantError::InvalidScale { .. }
                        | QuantError::NonFinite { .. }
                        | QuantError::InvalidQuantRange { .. }
                        | QuantError::ZeroPointOutOfRange { .. }
                ), "{e:?}");
                // Argument errors leave the outputs untouched.
                ensure!(into.is_err() && g_into.is_err());
                ensure!(out.iter().chain(dx.iter()).all(|&v| v == -7.25));
            }
        }
        if let (Ok(g), Ok((ds, dz))) = (&g, &g_into) {
            // dx is dy where the gradient passes (NaN included): compare bits.
            ensure!(g.dx.iter().zip(dx.iter()).all(|(a, b)| a.to_bits() == b.to_bits()));
            prop_assert_eq!(g.dscale.to_bits(), ds.to_bits());
            prop_assert_eq!(g.dzero_point.to_bits(), dz.to_bits());
        }
        if other.shape() != x.shape() {
            ensure!(matches!(
                learnable_fake_quantize_backward(&x, &other, &p),
                Err(QuantError::ShapeMismatch { .. })
            ));
        }
    }

    #[test]
    fn metrics_are_total((x, y) in float_pair(), other in floats(), reversed in any::<bool>()) {
        let (xv, yv) = (layout(&x, reversed), layout(&y, reversed));
        metrics_total(&xv, &yv)?;
        metrics_total(&xv, &other.view())?;
        metrics_total(&xv.mapv(f16::from_f32).view(), &yv.mapv(f16::from_f32).view())?;
        metrics_total(&xv.mapv(bf16::from_f32).view(), &yv.mapv(bf16::from_f32).view())?;
    }

    #[test]
    fn metrics_of_any_f64_are_total(
        (x, y) in shape().prop_flat_map(|s| (array_of(s.clone(), any_f64()), array_of(s, any_f64()))),
    ) {
        metrics_total(&x.view(), &y.view())?;
    }

    #[test]
    fn reference_kernels_are_total(
        x in value(),
        s in scale(),
        z in int(),
        lo in int(),
        hi in int(),
        q in int(),
    ) {
        if let Ok(v) = reference::quantize(x, s, z, lo, hi) {
            ensure!(lo <= v && v <= hi);
        }
        if let Ok((y, _)) = reference::fake_quantize(x, s, z, lo, hi) {
            ensure!(!y.is_nan());
        }
        let _ = reference::dequantize(q, s, z);
        let _ = reference::dequantize_per_channel(q, s, z);
    }

    #[test]
    fn quantized_tensor_is_total(
        x in floats(),
        data in shape().prop_flat_map(|s| array_of(s, any::<u8>())),
        qp in qparams(),
    ) {
        if let Ok(t) = QuantizedTensor::<u8>::quantize(&x, qp) {
            ensure!(t.dequantize::<f32>().is_ok());
        }
        if let Ok(t) = QuantizedTensor::from_parts(data, qp) {
            ensure!(t.dequantize::<f64>().is_ok());
        }
    }

    // Invariants of the kernels on finite data.

    #[test]
    fn round_trip_within_half_a_step(qp in qparams(), xs in prop::collection::vec(finite(), 1..200)) {
        let x = Array1::from(xs);
        let q: Array1<i32> = quantize(&x, &qp)?;
        let back: Array1<f32> = dequantize(&q, &qp)?;
        let (lo, hi) = qp.representable();
        for (&v, &b) in x.iter().zip(back.iter()) {
            if v >= lo && v <= hi && qp.scale() >= 1e-30 && qp.scale() <= 1e30 {
                // Half a step, plus the f32 rounding of the products involved.
                let tol = qp.scale() * 0.5 * (1.0 + 1e-5) + v.abs() * 4.0 * f32::EPSILON;
                ensure!((v - b).abs() <= tol, "x {} back {} scale {}", v, b, qp.scale());
            }
        }
    }

    #[test]
    fn fake_quantize_is_dequantize_of_quantize(qp in qparams(), xs in prop::collection::vec(finite(), 1..200)) {
        let x = Array1::from(xs);
        let q: Array1<i32> = quantize(&x, &qp)?;
        let back: Array1<f32> = dequantize(&q, &qp)?;
        let fq = fake_quantize(&x, &qp)?;
        prop_assert_eq!(fq, back);
    }

    #[test]
    fn fake_quantize_is_idempotent(qp in qparams(), xs in prop::collection::vec(finite(), 1..200)) {
        let x = Array1::from(xs);
        let once = fake_quantize(&x, &qp)?;
        let twice = fake_quantize(&once, &qp)?;
        // `level * scale * (1 / scale)` rounds back to `level` only for levels well inside
        // the f32 significand, and for products that neither overflow nor underflow f32.
        let s = qp.scale();
        let on_grid = |v: &f32| v.is_finite() && (v / s).abs() <= (1 << 21) as f32;
        if once.iter().all(on_grid) && (1e-30..=1e30).contains(&s) {
            prop_assert_eq!(once, twice);
        }
    }

    #[test]
    fn per_channel_with_equal_params_is_per_tensor(qp in qparams(), xs in prop::collection::vec(finite(), 1..60), axis in 0usize..2) {
        let n = xs.len();
        let x = Array2::from_shape_vec((n, 3), xs.iter().flat_map(|&v| [v, -v, v * 0.5]).collect())
            .expect("shape");
        let c = x.shape()[axis];
        let pc = PerChannelQParams::with_range(
            vec![qp.scale(); c],
            ZeroPoints::Int(vec![qp.zero_point(); c]),
            axis as isize,
            qp.range(),
        )?;
        let a: Array2<i32> = quantize_per_channel(&x, &pc)?;
        let b: Array2<i32> = quantize(&x, &qp)?;
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(fake_quantize_per_channel(&x, &pc)?, fake_quantize(&x, &qp)?);
        let ones = Array2::from_elem(x.raw_dim(), 1.0f32);
        prop_assert_eq!(
            fake_quantize_per_channel_backward(&x, &ones, &pc)?,
            fake_quantize_backward(&x, &ones, &qp)?
        );
        // One channel of the per-channel result is the per-tensor kernel on that lane.
        let lane: Array1<i32> = quantize(&x.index_axis(Axis(axis), 0), &qp)?;
        prop_assert_eq!(a.index_axis(Axis(axis), 0), lane);
    }

    #[test]
    fn quantize_is_monotone(qp in qparams(), mut xs in prop::collection::vec(value(), 1..200)) {
        xs.retain(|v| !v.is_nan());
        xs.sort_by(f32::total_cmp);
        let q: Array1<i32> = quantize(&Array1::from(xs), &qp)?;
        ensure!(q.windows(2).into_iter().all(|w| w[0] <= w[1]));
    }
}
