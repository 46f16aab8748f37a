//! Results do not depend on the `rayon` feature: the checksums below were computed without it
//! and must hold with it (CI runs the suite with `--all-features`). Sizes are above the
//! parallel threshold so that the parallel paths really run.

use ndarray::{Array1, Array2};
use qnumeric::*;

fn data(n: usize) -> Vec<f32> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 9.0
        })
        .collect()
}

/// FNV-1a over the bit patterns.
fn hash(bits: impl Iterator<Item = u64>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bits {
        h ^= b;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn results() -> Vec<(&'static str, u64)> {
    let n = 1 << 20;
    let x = Array1::from(data(n));
    let y = Array1::from(data(n + 7).split_off(7));
    let qp = QParams::new(0.03, 11, QDType::QInt8).expect("valid");
    let q: Array1<i8> = quantize(&x, &qp).expect("ok");
    let fq = fake_quantize(&x, &qp).expect("ok");
    let x2 = x.view().into_shape_with_order((1024, 1024)).expect("shape");
    let scales: Vec<f32> = (0..1024).map(|i| 0.01 + i as f32 * 1e-4).collect();
    let zps: Vec<i32> = (0..1024).map(|i| (i % 7) - 3).collect();
    let pc0 = PerChannelQParams::new(scales.clone(), zps.clone(), 0, QDType::QInt8).expect("valid");
    let pc1 = PerChannelQParams::new(scales, zps, 1, QDType::QInt8).expect("valid");
    let q0: Array2<i8> = quantize_per_channel(&x2, &pc0).expect("ok");
    let q1: Array2<i8> = quantize_per_channel(&x2, &pc1).expect("ok");
    let f1 = fake_quantize_per_channel(&x2, &pc1).expect("ok");
    let d0: Array2<f32> = dequantize_per_channel(&q0, &pc0).expect("ok");
    let lsq = LearnableParams {
        scale: 0.02,
        zero_point: 1.4,
        quant_min: -128,
        quant_max: 127,
        grad_factor: 0.3,
    };
    let g = learnable_fake_quantize_backward(&x, &y, &lsq).expect("ok");
    let big = x.view().into_dyn();
    let pt = QSpec::new(QScheme::PerTensorAffine, QDType::QUInt8);
    let mut hist = HistogramObserver::new(pt).expect("valid");
    hist.observe(big.clone()).expect("ok");
    hist.observe(y.view().into_dyn()).expect("ok");
    let hist_sum = hash(hist.histogram().iter().map(|v| v.to_bits() as u64));
    let AnyQParams::PerTensor(hq) = hist.qparams().expect("ok") else {
        panic!("per tensor")
    };
    let mut mm = MinMaxObserver::new(pt).expect("valid");
    mm.observe(big.clone()).expect("ok");
    let AnyQParams::PerTensor(mq) = mm.qparams().expect("ok") else {
        panic!("per tensor")
    };
    let pcs = QSpec::new(QScheme::PerChannelSymmetric, QDType::QInt8);
    let mut pco = PerChannelMinMaxObserver::new(pcs, -1).expect("valid");
    pco.observe(x2.view().into_dyn()).expect("ok");
    let pc_sum = hash(
        pco.max_vals()
            .iter()
            .chain(pco.min_vals().iter())
            .map(|v| v.to_bits() as u64),
    );
    vec![
        ("histogram", hist_sum),
        (
            "histogram qparams",
            ((hq.scale().to_bits() as u64) << 32) | hq.zero_point() as u32 as u64,
        ),
        (
            "minmax qparams",
            ((mq.scale().to_bits() as u64) << 32) | mq.zero_point() as u32 as u64,
        ),
        ("per-channel min/max", pc_sum),
        ("quantize", hash(q.iter().map(|&v| v as u64))),
        ("fake_quantize", hash(fq.iter().map(|v| v.to_bits() as u64))),
        (
            "quantize_per_channel axis 0",
            hash(q0.iter().map(|&v| v as u64)),
        ),
        (
            "quantize_per_channel axis 1",
            hash(q1.iter().map(|&v| v as u64)),
        ),
        (
            "fake_quantize_per_channel axis 1",
            hash(f1.iter().map(|v| v.to_bits() as u64)),
        ),
        (
            "dequantize_per_channel axis 0",
            hash(d0.iter().map(|v| v.to_bits() as u64)),
        ),
        ("lsq dx", hash(g.dx.iter().map(|v| v.to_bits() as u64))),
        ("lsq dscale", g.dscale.to_bits() as u64),
        ("lsq dzero_point", g.dzero_point.to_bits() as u64),
        ("sqnr", sqnr(&x, &y).expect("ok").to_bits()),
        ("cosine", cosine_similarity(&x, &y).expect("ok").to_bits()),
        (
            "normalized_l2",
            normalized_l2_error(&x, &y).expect("ok").to_bits(),
        ),
    ]
}

#[test]
fn results_are_identical_with_and_without_rayon() {
    let expected: &[(&str, u64)] = &[
        ("histogram", 0x512fa61170716325),
        ("histogram qparams", 0x3d107e5400000080),
        ("minmax qparams", 0x3d10906600000080),
        ("per-channel min/max", 0xdce8be84511e907f),
        ("quantize", 0x2f049d92dd027699),
        ("fake_quantize", 0x89df709a0bc855e9),
        ("quantize_per_channel axis 0", 0xfd06bc401a61c439),
        ("quantize_per_channel axis 1", 0xb348bdc4ce2a3d92),
        ("fake_quantize_per_channel axis 1", 0xd0973d0da42c6fbc),
        ("dequantize_per_channel axis 0", 0xf9765066de65f7ee),
        ("lsq dx", 0xae067e60a5f7094f),
        ("lsq dscale", 0xc5330304),
        ("lsq dzero_point", 0xc1086711),
        ("sqnr", 0xc00819d506464487),
        ("cosine", 0xbf417fdb636f93c1),
        ("normalized_l2", 0x3ff6a22968b947ca),
    ];
    let got = results();
    assert_eq!(got, expected);
}
