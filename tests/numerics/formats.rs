//! The formats' shared pieces: nibble packing, `Int8PerRow`, `Format` names, row checks.

use proptest::prelude::*;
use qnumeric::QuantError;
use qnumeric::formats::packing::{NibbleOrder, pack_nibbles, pack_nibbles_into, unpack_nibbles};
use qnumeric::formats::{ElementFormat, Format, Int8PerRow};

#[test]
fn nibbles_pack_in_both_orders_and_refuse_bad_input() {
    let codes = [1u8, 2, 3, 15, 0, 8];
    let low = pack_nibbles(&codes, NibbleOrder::LowFirst).expect("pack");
    assert_eq!(low, vec![0x21, 0xf3, 0x80]);
    let high = pack_nibbles(&codes, NibbleOrder::HighFirst).expect("pack");
    assert_eq!(high, vec![0x12, 0x3f, 0x08]);
    assert_eq!(unpack_nibbles(&low, NibbleOrder::LowFirst), codes.to_vec());
    assert_eq!(
        unpack_nibbles(&high, NibbleOrder::HighFirst),
        codes.to_vec()
    );
    assert!(matches!(
        pack_nibbles(&[1, 2, 3], NibbleOrder::LowFirst),
        Err(QuantError::NotMultiple {
            len: 3,
            multiple_of: 2,
            ..
        })
    ));
    assert!(matches!(
        pack_nibbles(&[1, 16], NibbleOrder::LowFirst),
        Err(QuantError::InvalidParameter { .. })
    ));
    let mut out = [0xaau8; 2];
    assert!(matches!(
        pack_nibbles_into(&[1, 2], NibbleOrder::LowFirst, &mut out),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert_eq!(out, [0xaa, 0xaa], "nothing written on an error");
}

#[test]
fn int8_per_row_is_pytorchs_weight_scheme() {
    // Row 0: amax 1.275 → scale 0.01: values land on multiples of 0.01.
    let x = [1.275f32, -0.5, 0.013, 0.0, 2.0, 0.0, 0.0, -2.0];
    let mut y = [0.0f32; 8];
    Int8PerRow.fake_quantize_rows(&x, 4, &mut y).expect("fq");
    assert_eq!(y[0], 1.27); // +amax clips at 127 (scale = amax / 127.5)
    assert!((y[1] + 0.5).abs() < 1e-6);
    assert!((y[2] - 0.01).abs() < 1e-6);
    // Row 1: x · f32(1/scale) then round half to even (PyTorch's order): ±2.0 land on ±127.
    let s = 2.0f32 / 127.5;
    let inv = 1.0f32 / s;
    assert_eq!(y[7], (-2.0f32 * inv).round_ties_even() * s);
    assert_eq!(y[4], 127.0 * s);
    assert!(matches!(
        Int8PerRow.fake_quantize_rows(&[f32::NAN, 1.0], 2, &mut [0.0; 2]),
        Err(QuantError::NanInput { index: 0, .. })
    ));
    assert!(matches!(
        Int8PerRow.fake_quantize_rows(&[1.0; 6], 4, &mut [0.0; 6]),
        Err(QuantError::NotMultiple {
            len: 6,
            multiple_of: 4,
            ..
        })
    ));
    assert!(matches!(
        Int8PerRow.fake_quantize_rows(&[1.0; 4], 0, &mut [0.0; 4]),
        Err(QuantError::NotMultiple { .. })
    ));
    assert!(matches!(
        Int8PerRow.fake_quantize_rows(&[1.0; 4], 4, &mut [0.0; 3]),
        Err(QuantError::LengthMismatch { .. })
    ));
}

#[test]
fn format_names_round_trip_and_unknown_names_are_typed_errors() {
    for name in Format::NAMES {
        let f: Format = name.parse().expect("known name");
        assert_eq!(f.to_string(), *name);
        assert_eq!(f.name().parse::<Format>().expect("again"), f);
        assert!(f.bits_per_element() > 0.0 && f.block_len() >= 1);
    }
    let e = "int3-g7".parse::<Format>().unwrap_err();
    assert!(matches!(e, QuantError::Format { .. }));
    assert!(e.to_string().contains("int8"), "{e}");
}

proptest! {
    #[test]
    fn every_format_fake_quantizes_or_refuses(
        x in proptest::collection::vec(prop_oneof![4 => -1e4f32..1e4, 1 => Just(f32::NAN), 1 => Just(f32::INFINITY), 1 => Just(-3.0e38f32), 1 => Just(1e-40f32)], 0..300),
        row_len in 0usize..300,
        which in 0usize..64,
    ) {
        let name = Format::NAMES[which % Format::NAMES.len()];
        let f: Format = name.parse().expect("known");
        let mut out = vec![0.0f32; x.len()];
        match f.fake_quantize_rows(&x, row_len, &mut out) {
            Ok(()) => {
                prop_assert!(out.iter().all(|v| !v.is_nan()), "{name}: NaN out of finite or refused input");
                // Idempotent.
                let mut again = vec![0.0f32; x.len()];
                f.fake_quantize_rows(&out, row_len, &mut again).expect("fq of fq");
                prop_assert_eq!(out, again);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let mut mask = vec![false; x.len()];
        let _ = f.ste_mask_rows(&x, row_len, &mut mask);
    }

    #[test]
    fn packing_round_trips(codes in proptest::collection::vec(0u8..16, 0..64)) {
        let even = &codes[..codes.len() / 2 * 2];
        for order in [NibbleOrder::LowFirst, NibbleOrder::HighFirst] {
            let p = pack_nibbles(even, order).expect("pack");
            prop_assert_eq!(unpack_nibbles(&p, order), even.to_vec());
        }
    }
}

mod edges {
    use qnumeric::QuantError;
    use qnumeric::formats::float8::{Float8Granularity, Float8Recipe, Float8Spec};
    use qnumeric::formats::ggml::GgmlType;
    use qnumeric::formats::groupwise::{GroupMapping, GroupwiseSpec};
    use qnumeric::formats::minifloat::MiniFloat;
    use qnumeric::formats::mx::{MxScaleMode, MxSpec};
    use qnumeric::formats::nf4::Nf4Spec;
    use qnumeric::formats::nvfp4::Nvfp4Spec;
    use qnumeric::formats::{Dequantize as _, ElementFormat, Format, RowCodec};

    #[test]
    fn float8_edges() {
        let e4 = MiniFloat::E4M3Fn;
        assert_eq!(e4.max(), 448.0);
        assert_eq!(e4.encode(464.0), 0x7e); // saturates, also past the top
        assert_eq!(e4.encode(f32::NEG_INFINITY), 0xfe);
        assert_eq!(e4.encode(-f32::NAN), 0xff);
        assert_eq!(e4.encode(-0.0), 0x80);
        assert_eq!(e4.min_positive(), 2f32.powi(-9));
        assert_eq!(e4.encode(2f32.powi(-10)), 0x00); // half the smallest subnormal: ties to even (0)
        assert_eq!(e4.encode(1.5 * 2f32.powi(-9)), 0x02); // tie between 1 and 2 quanta → even
        let e5 = MiniFloat::E5M2;
        assert_eq!(e5.encode(61439.0), 0x7b);
        assert_eq!(e5.encode(61440.0), 0x7c); // inf
        assert_eq!(e5.decode(0xfc), f32::NEG_INFINITY);
        assert_eq!(MiniFloat::E4M3Fnuz.encode(-0.0), 0x00);
        assert_eq!(MiniFloat::E4M3Fnuz.encode(248.0), 0x80);
        assert_eq!(
            MiniFloat::E4M3Fnuz.encode(247.0),
            MiniFloat::E4M3Fnuz.encode(240.0)
        );
        assert_eq!(
            MiniFloat::E5M2Fnuz.encode_saturating(f32::INFINITY),
            MiniFloat::E5M2Fnuz.encode(57344.0)
        );
        let e8 = MiniFloat::E8M0Fnu;
        assert_eq!(e8.encode(1.5), 128); // ties up
        assert_eq!(e8.encode(-3.0), 129); // sign ignored, 3 → 4
        assert_eq!(e8.encode(0.0), 0);
        assert!(e8.decode(0xff).is_nan());
        assert_eq!(e8.decode(0), 2f32.powi(-127));
        // Every code round-trips through its value.
        for t in MiniFloat::ALL {
            for c in 0..=255u8 {
                let v = t.decode(c);
                if v.is_nan() {
                    continue;
                }
                assert_eq!(t.decode(t.encode(v)).to_bits(), v.to_bits(), "{t} {c:#x}");
            }
        }
    }

    #[test]
    fn fp4_fp6_edges() {
        let f4 = MiniFloat::E2M1Fn;
        let values: Vec<f32> = (0..8).map(|c| f4.decode(c)).collect();
        assert_eq!(values, vec![0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
        assert_eq!(f4.encode(5.0), 6); // tie 4 | 6 → even mantissa (4)
        assert_eq!(f4.encode(100.0), 7); // saturates
        assert_eq!(f4.encode(f32::NAN), 0x08); // ml_dtypes: NaN → −0
        assert_eq!(MiniFloat::E2M3Fn.max(), 7.5);
        assert_eq!(MiniFloat::E3M2Fn.max(), 28.0);
        assert_eq!(MiniFloat::E3M2Fn.min_positive(), 0.0625);
    }

    #[test]
    fn float8_scaled_zero_rows() {
        let x = [0.0f32; 4];
        let bad = Float8Spec::new(
            MiniFloat::E4M3Fn,
            Float8Recipe::Inference,
            Float8Granularity::Rowwise,
        )
        .expect("spec");
        let t = bad.quantize_rows(&x, 4).expect("q");
        assert!(
            t.codes.iter().all(|&c| c == 0xff),
            "torchao: 0/0 → NaN codes"
        );
        assert!(t.dequantize().iter().all(|v| v.is_nan()));
        let good = Float8Spec::new(
            MiniFloat::E4M3Fn,
            Float8Recipe::InferenceSafe,
            Float8Granularity::Rowwise,
        )
        .expect("spec");
        assert_eq!(
            good.quantize_rows(&x, 4).expect("q").dequantize(),
            vec![0.0; 4]
        );
        assert!(
            Float8Spec::new(
                MiniFloat::E2M1Fn,
                Float8Recipe::Inference,
                Float8Granularity::Rowwise
            )
            .is_err()
        );
        let train = Float8Spec::new(
            MiniFloat::E4M3Fn,
            Float8Recipe::Training {
                round_scales_to_power_of_2: true,
            },
            Float8Granularity::Tensorwise,
        )
        .expect("spec");
        let s = train.quantize_rows(&[3.0, -1.0], 2).expect("q").scales[0];
        assert_eq!(s, 128.0); // 448 / 3 = 149.3 → 2^7
    }

    #[test]
    fn mx_modes_and_zero_blocks() {
        // amax just under a power of two: floor keeps the exponent and clips at max; ceil goes up.
        let mut x = vec![0.1f32; 32];
        x[0] = 7.9; // e2m1: emax 2, exponent 2 → floor byte 127, 7.9 → clamp 6
        let floor = MxSpec::new(MiniFloat::E2M1Fn, 32, MxScaleMode::Floor).expect("spec");
        let t = floor.quantize_rows(&x, 32).expect("q");
        assert_eq!(t.scales, vec![127]);
        assert_eq!(t.dequantize()[0], 6.0, "the known FLOOR clipping");
        let ceil = MxSpec::new(MiniFloat::E2M1Fn, 32, MxScaleMode::Ceil).expect("spec");
        assert_eq!(ceil.quantize_rows(&x, 32).expect("q").scales, vec![128]);
        assert_eq!(ceil.quantize_rows(&x, 32).expect("q").dequantize()[0], 8.0);
        let zero = floor.quantize_rows(&[0.0; 32], 32).expect("q");
        assert_eq!(zero.dequantize(), vec![0.0; 32]);
        assert!(matches!(
            floor.quantize_rows(&[0.0; 31], 31),
            Err(QuantError::NotMultiple { .. })
        ));
        assert!(MxSpec::new(MiniFloat::E8M0Fnu, 32, MxScaleMode::Floor).is_err());
        // Encode / decode rows through the codec.
        let row: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) / 7.0).collect();
        let enc = floor.encode_row(&row).expect("enc");
        assert_eq!((enc.data.len(), enc.scales.len()), (32, 2));
        let mut back = vec![0.0; 64];
        floor.decode_row(&enc, &mut back).expect("dec");
        let mut fq = vec![0.0; 64];
        floor.fake_quantize_rows(&row, 64, &mut fq).expect("fq");
        assert_eq!(back, fq);
    }

    #[test]
    fn nvfp4_zero_block_and_saturation() {
        let t = Nvfp4Spec::new(false)
            .quantize_rows(&[0.0; 16], 16)
            .expect("q");
        assert_eq!(t.block_scales, vec![0x08]);
        let big = Nvfp4Spec::new(false)
            .quantize_rows(&[1e6; 16], 16)
            .expect("q");
        assert_eq!(big.block_scales, vec![0x7e]);
        let mut out = [1.0f32; 16];
        Nvfp4Spec::new(true)
            .fake_quantize_rows(&[0.0; 16], 16, &mut out)
            .expect("fq");
        assert_eq!(out, [0.0; 16]);
    }

    #[test]
    fn groupwise_edges() {
        // Symmetric int4 clips +amax at 7 (scale amax / 7.5); no-clipping-error does not.
        let x = [1.5f32, -0.5, 0.25, 0.0];
        let sym = GroupwiseSpec::int4(4, GroupMapping::Symmetric).expect("spec");
        let t = sym.quantize_rows(&x, 4).expect("q");
        assert_eq!(t.codes[0], 7);
        assert!(t.dequantize()[0] < 1.5);
        let mut mask = [true; 4];
        sym.ste_mask_rows(&x, 4, &mut mask).expect("mask");
        assert_eq!(mask, [false, true, true, true]);
        let nc = GroupwiseSpec::int4(4, GroupMapping::SymmetricNoClippingErr).expect("spec");
        assert_eq!(nc.quantize_rows(&x, 4).expect("q").dequantize()[0], 1.5);
        assert_eq!(
            GroupwiseSpec::uint4(4, GroupMapping::Symmetric)
                .expect("spec")
                .qparams(&x)
                .1,
            8
        );
        assert!(GroupwiseSpec::new(7, -8, GroupMapping::Asymmetric, 4, 0.0).is_err());
        assert!(GroupwiseSpec::int4(0, GroupMapping::Asymmetric).is_err());
        assert!(matches!(
            sym.quantize_rows(&[f32::NAN; 4], 4),
            Err(QuantError::NanInput { .. })
        ));
    }

    #[test]
    fn nf4_zero_block_quirk_and_fix() {
        // Blocks with absmax 0.5, 0.3, 0.9 and an all-zero block.
        let mut x = vec![0.0f32; 256];
        for (b, m) in [0.5f32, 0.3, 0.9].iter().enumerate() {
            for (i, v) in x[b * 64..b * 64 + 64].iter_mut().enumerate() {
                *v = m * ((i % 7) as f32 - 3.0) / 3.0;
            }
        }
        let torchao = Nf4Spec::torchao(64, 4)
            .expect("spec")
            .quantize(&x)
            .expect("q");
        assert!(torchao.codes[192..].iter().all(|&c| c == 0));
        assert!(
            torchao.dequantize()[192..].iter().all(|v| *v != 0.0),
            "reference: −scaler"
        );
        let fixed = Nf4Spec::new(64, 4).expect("spec").quantize(&x).expect("q");
        assert!(fixed.dequantize()[192..].iter().all(|v| *v == 0.0));
        assert!(
            Nf4Spec::new(64, 4)
                .expect("spec")
                .quantize(&x[..64])
                .is_err()
        );
    }

    #[test]
    fn ggml_edges() {
        // Q8_0 rounds ties away from zero.
        let mut x = vec![0.0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        let mut b = vec![0u8; 34];
        GgmlType::Q8_0.quantize_row(&x, &mut b).expect("q");
        assert_eq!((b[3] as i8, b[4] as i8), (3, -3));
        // Q4_0: the block's signed extreme maps to −8·d; the opposite extreme clips at 7·d.
        let mut x = vec![0.0f32; 32];
        x[0] = -8.0;
        x[1] = 8.0;
        let mut b = vec![0u8; 18];
        GgmlType::Q4_0.quantize_row(&x, &mut b).expect("q");
        let mut y = vec![0.0; 32];
        GgmlType::Q4_0.dequantize_row(&b, &mut y).expect("dq");
        assert_eq!((y[0], y[1]), (-8.0, 7.0));
        // A scale beyond f16 stores inf.
        let mut b = vec![0u8; 34];
        GgmlType::Q8_0.quantize_row(&[1e7; 32], &mut b).expect("q");
        let mut y = vec![0.0; 32];
        GgmlType::Q8_0.dequantize_row(&b, &mut y).expect("dq");
        assert!(y.iter().all(|v| v.is_infinite()));
        // Zero blocks are zeros for every encodable type.
        for t in GgmlType::ALL.into_iter().filter(|t| t.can_quantize()) {
            let mut b = vec![0u8; t.type_size()];
            t.quantize_row(&vec![0.0; t.block_size()], &mut b)
                .expect("q");
            let mut y = vec![1.0; t.block_size()];
            t.dequantize_row(&b, &mut y).expect("dq");
            assert!(y.iter().all(|v| *v == 0.0), "{t}");
        }
        assert!(matches!(
            GgmlType::Q4_K.quantize_row(&[0.0; 256], &mut [0u8; 144]),
            Err(QuantError::UnsupportedConfig { .. })
        ));
        assert!(matches!(
            GgmlType::Q4_0.dequantize_row(&[0u8; 17], &mut [0.0; 32]),
            Err(QuantError::NotMultiple { .. })
        ));
        assert!(matches!(
            GgmlType::Q4_0.dequantize_row(&[0u8; 18], &mut [0.0; 31]),
            Err(QuantError::LengthMismatch { .. })
        ));
        assert_eq!("q4_k".parse::<GgmlType>().expect("name"), GgmlType::Q4_K);
        assert_eq!(GgmlType::Q4_0.bits_per_element(), 4.5);
        assert!(
            "q4_k".parse::<Format>().is_err(),
            "decode-only types are not simulation formats"
        );
    }

    #[test]
    fn format_names_cover_every_family() {
        for n in [
            "int4-g32",
            "uint4-sym-g64",
            "int8-sym-g16",
            "int4-symnc-g8",
            "mxfp8-e5m2",
            "mxfp6-e3m2-rceil",
            "mxfp4-even",
            "fp8-e5m2-tensor",
            "nvfp4-no-tensor-scale",
            "int4-tinygemm-g64",
        ] {
            let f: Format = n.parse().unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(f.to_string(), n);
        }
        for bad in ["int4-g0", "int4-gx", "mxfp3", "fp9", ""] {
            assert!(bad.parse::<Format>().is_err(), "{bad}");
        }
    }
}

mod decoders {
    use proptest::prelude::*;
    use qnumeric::formats::ggml::GgmlType;
    use qnumeric::formats::minifloat::MiniFloat;

    proptest! {
        /// Any bytes of any length: Ok or a typed error, never a panic.
        #[test]
        fn ggml_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), which in 0usize..12, extra in 0usize..3) {
            let t = GgmlType::ALL[which];
            let n = bytes.len() / t.type_size() * t.block_size() + extra;
            let mut out = vec![0.0f32; n];
            let _ = t.dequantize_row(&bytes, &mut out);
        }

        #[test]
        fn casts_never_panic(v in any::<f32>(), c in any::<u8>()) {
            for t in MiniFloat::ALL {
                let _ = t.decode(t.encode(v));
                let _ = t.encode_saturating(v);
                let _ = t.decode(c);
            }
        }
    }
}

mod calibration {
    use qnumeric::QuantError;
    use qnumeric::formats::Dequantize as _;
    use qnumeric::formats::groupwise::{GroupMapping, GroupwiseSpec};
    use qnumeric::formats::observe::{AmaxGranularity, AmaxObserver, mse_group_search};
    use qnumeric::rng::Lcg;

    fn heavy(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Lcg::new(seed);
        (0..n)
            .map(|_| {
                let u1 = r.unit_f32().max(1e-6);
                let u2 = r.unit_f32();
                let g = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
                g / r.unit_f32().max(0.05).sqrt()
            })
            .collect()
    }

    #[test]
    fn amax_merges_exactly_like_one_pass() {
        let x = heavy(8 * 64, 1);
        let g = AmaxGranularity::ColumnBlocks { block: 16 };
        let mut whole = AmaxObserver::new(64, g).expect("obs");
        whole.observe(&x).expect("obs");
        let (mut a, mut b) = (
            AmaxObserver::new(64, g).expect("a"),
            AmaxObserver::new(64, g).expect("b"),
        );
        a.observe(&x[..3 * 64]).expect("a");
        b.observe(&x[3 * 64..]).expect("b");
        a.merge(&b).expect("merge");
        assert_eq!(a, whole);
        assert_eq!(a.amax().len(), 4);
        assert_eq!(a.rows(), 8);
        assert!(matches!(
            a.merge(&AmaxObserver::new(32, g).expect("c")),
            Err(QuantError::Incompatible { .. })
        ));
        assert!(matches!(
            a.observe(&[f32::NAN; 64]),
            Err(QuantError::NanInput { .. })
        ));
        assert_eq!(a, whole, "nothing recorded on an error");
        assert!(AmaxObserver::new(64, AmaxGranularity::ColumnBlocks { block: 24 }).is_err());
    }

    #[test]
    fn mse_search_never_worse_and_better_on_heavy_tails() {
        let spec = GroupwiseSpec::int4(128, GroupMapping::Asymmetric).expect("spec");
        let x = heavy(16 * 128, 3);
        let r = mse_group_search(&spec, &x, 128).expect("search");
        assert!(r.sse <= r.sse_minmax);
        assert!(r.sse < 0.95 * r.sse_minmax, "{} vs {}", r.sse, r.sse_minmax);
        assert!(r.shrink.iter().any(|&f| f < 1.0));
        // The tensor's own dequantization gives that error.
        let sse: f64 = r
            .tensor
            .dequantize()
            .iter()
            .zip(&x)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        assert!((sse - r.sse).abs() <= 1e-9 * r.sse.max(1.0));
        // A uniform group: little to gain, never a loss.
        let flat: Vec<f32> = (0..128).map(|i| i as f32 / 127.0).collect();
        let r = mse_group_search(&spec, &flat, 128).expect("search");
        assert!(r.sse <= r.sse_minmax && r.sse > 0.5 * r.sse_minmax);
    }
}

#[test]
fn generic_fake_quantize_and_straight_through_backward() {
    use ndarray::array;
    use qnumeric::formats::{fake_quantize, fake_quantize_backward};
    let sym: Format = "int4-sym-g4".parse().expect("fmt");
    let x = array![[1.5f32, -0.5, 0.25, 0.0]];
    let y = fake_quantize(&sym, &x).expect("fq");
    assert!(y[[0, 0]] < 1.5);
    let dx = fake_quantize_backward(&sym, &x, &array![[1.0f32, 2.0, 3.0, 4.0]]).expect("bw");
    assert_eq!(dx, array![[0.0, 2.0, 3.0, 4.0]]); // +amax clipped: no gradient
    let h = x.mapv(half::f16::from_f32);
    let yh = fake_quantize(&sym, &h).expect("f16");
    assert_eq!(yh[[0, 1]], half::f16::from_f32(y[[0, 1]]));
    assert!(fake_quantize_backward(&sym, &x, &array![[1.0f32, 2.0]]).is_err());
    let mx: Format = "mxfp4".parse().expect("fmt");
    assert!(matches!(
        fake_quantize(&mx, &x),
        Err(QuantError::NotMultiple { .. })
    ));
}

mod tensor_quantizers {
    use proptest::prelude::*;
    use qnumeric::QuantError;
    use qnumeric::formats::Dequantize as _;
    use qnumeric::formats::float8::{Float8Granularity, Float8Recipe, Float8Spec};
    use qnumeric::formats::groupwise::{GroupMapping, GroupwiseSpec, QParamsDtype, TinygemmSpec};
    use qnumeric::formats::minifloat::MiniFloat;
    use qnumeric::formats::mx::{MxScaleMode, MxSpec};
    use qnumeric::formats::nf4::Nf4Spec;
    use qnumeric::formats::nvfp4::Nvfp4Spec;

    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            6 => -1e3f32..1e3,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(f32::MAX),
            1 => Just(1e-42f32),
            1 => Just(-0.0f32),
        ]
    }

    proptest! {
        /// The tensor-level quantizers (the reference paths, NaN and ±inf allowed where the
        /// reference takes them): Ok or a typed error for any values, row length and block;
        /// what they return always decodes.
        #[test]
        fn tensor_quantizers_never_panic(
            x in proptest::collection::vec(value(), 0..260),
            row_len in 0usize..260,
            block in 0usize..70,
            mode in 0usize..4,
        ) {
            for dtype in [MiniFloat::E4M3Fn, MiniFloat::E5M2] {
                for recipe in [Float8Recipe::Training { round_scales_to_power_of_2: true }, Float8Recipe::Inference, Float8Recipe::InferenceSafe] {
                    for g in [Float8Granularity::Tensorwise, Float8Granularity::Rowwise] {
                        let spec = Float8Spec::new(dtype, recipe, g).expect("spec");
                        if let Ok(t) = spec.quantize_rows(&x, row_len) {
                            let _ = t.dequantize();
                        }
                    }
                }
            }
            for elem in [MiniFloat::E4M3Fn, MiniFloat::E5M2, MiniFloat::E2M3Fn, MiniFloat::E3M2Fn, MiniFloat::E2M1Fn] {
                if let Ok(spec) = MxSpec::new(elem, block, MxScaleMode::ALL[mode])
                    && let Ok(t) = spec.quantize_rows(&x, row_len)
                {
                        let _ = (t.dequantize(), t.packed());
                }
            }
            for pts in [false, true] {
                if let Ok(t) = Nvfp4Spec::new(pts).quantize_rows(&x, row_len) {
                    let _ = (t.dequantize(), t.packed());
                }
            }
            for mapping in [GroupMapping::Symmetric, GroupMapping::Asymmetric, GroupMapping::SymmetricNoClippingErr] {
                if let Ok(spec) = GroupwiseSpec::int4(block, mapping)
                    && let Ok(t) = spec.quantize_rows(&x, row_len)
                {
                        let _ = t.dequantize();
                }
            }
            if let Ok(spec) = TinygemmSpec::new(block, 1e-6, QParamsDtype::BF16)
                && let Ok(t) = spec.quantize_rows(&x, row_len)
            {
                    let _ = t.dequantize();
            }
            for nf4 in [Nf4Spec::new(block, 2), Nf4Spec::torchao(block, 1)] {
                if let Ok(spec) = nf4
                    && let Ok(t) = spec.quantize(&x)
                {
                        let _ = (t.dequantize(), t.packed());
                }
            }
        }

        /// Specs built field by field (the fields are public and deserializable), with any
        /// element type, block, range and eps: every entry point gives Ok or a typed error,
        /// never a panic, and an error wherever the constructor refuses the same fields (a
        /// spec `new` refuses once quantized silently: an MX spec of e8m0 elements wrote
        /// zeros, a group range `quant_min > quant_max` panicked in a clamp).
        #[test]
        fn specs_built_field_by_field_are_checked(
            src in proptest::collection::vec(value(), 1..64),
            (blocks_per_row, rows) in (1usize..4, 0usize..3),
            elem in 0usize..MiniFloat::ALL.len(),
            block in prop_oneof![8 => 1usize..70, 1 => Just(0), 1 => Just(usize::MAX)],
            mode in 0usize..4,
            (quant_min, quant_max) in prop_oneof![(-40000i32..40000, -40000i32..40000), Just((-8, 7))],
            eps in prop_oneof![value(), Just(1e-6)],
            scaler in prop_oneof![1usize..5, Just(0), Just(usize::MAX)],
        ) {
            use qnumeric::formats::ElementFormat as _;
            // Rows of whole blocks where the block is sane (so that the spec's own fields are
            // what is checked), else rows of 32.
            let row_len = if (1..70).contains(&block) { block * blocks_per_row } else { 32 };
            let x: Vec<f32> = src.iter().copied().cycle().take(row_len * rows).collect();
            let elem = MiniFloat::ALL[elem];
            let mut out = vec![0.0f32; x.len()];
            let mut mask = vec![false; x.len()];
            let mx = MxSpec { elem, block_size: block, mode: MxScaleMode::ALL[mode] };
            let refused = MxSpec::new(elem, block, mx.mode).is_err();
            prop_assert!(!(refused && mx.quantize_rows(&x, row_len).is_ok()));
            let _ = (mx.fake_quantize_rows(&x, row_len, &mut out), mx.ste_mask_rows(&x, row_len, &mut mask));
            for mapping in [GroupMapping::Symmetric, GroupMapping::Asymmetric, GroupMapping::SymmetricNoClippingErr] {
                let g = GroupwiseSpec { quant_min, quant_max, mapping, group_size: block, eps };
                let refused = GroupwiseSpec::new(quant_min, quant_max, mapping, block, eps).is_err();
                prop_assert!(!(refused && g.quantize_rows(&x, row_len).is_ok()));
                prop_assert!(!(refused && g.ste_mask_rows(&x, row_len, &mut mask).is_ok()));
                let _ = g.fake_quantize_rows(&x, row_len, &mut out);
            }
            let t = TinygemmSpec { group_size: block, eps, qparams_dtype: QParamsDtype::BF16 };
            let refused = TinygemmSpec::new(block, eps, QParamsDtype::BF16).is_err();
            prop_assert!(!(refused && t.quantize_rows(&x, row_len).is_ok()));
            let _ = t.fake_quantize_rows(&x, row_len, &mut out);
            let f = Float8Spec { dtype: elem, recipe: Float8Recipe::Inference, granularity: Float8Granularity::Rowwise };
            let refused = Float8Spec::new(elem, f.recipe, f.granularity).is_err();
            prop_assert!(!(refused && f.quantize_rows(&x, row_len).is_ok()));
            let _ = f.fake_quantize_rows(&x, row_len, &mut out);
            let mut amax = qnumeric::formats::observe::AmaxObserver::new(4, qnumeric::formats::observe::AmaxGranularity::Tensor).expect("observer");
            amax.observe(&[1.0, -2.0, 0.5, 3.0]).expect("finite row");
            prop_assert!(!(refused && amax.float8_scales(&f).is_ok()));
            let n = Nf4Spec { block_size: block, scaler_block_size: scaler, exact_zero_blocks: mode % 2 == 0 };
            let refused = Nf4Spec::new(block, scaler).is_err();
            prop_assert!(!(refused && n.quantize(&x).is_ok()));
            let _ = n.fake_quantize_rows(&x, row_len, &mut out);
        }

        /// The `_into` encoders, into a tensor already holding another encoding: the
        /// allocating encoder's result when it succeeds (compared as printed, so that NaN
        /// scales compare), the same error and the tensor untouched when it fails.
        #[test]
        fn into_encoders_match_the_allocating_ones(
            x in proptest::collection::vec(value(), 0..260),
            row_len in 0usize..260,
            block in 1usize..70,
            mode in 0usize..4,
        ) {
            fn check<T: std::fmt::Debug>(
                mut t: T,
                into: impl FnOnce(&mut T) -> Result<(), QuantError>,
                fresh: Result<T, QuantError>,
            ) -> Result<(), TestCaseError> {
                let before = format!("{t:?}");
                match (into(&mut t), fresh) {
                    (Ok(()), Ok(f)) => prop_assert_eq!(format!("{t:?}"), format!("{f:?}")),
                    (Err(a), Err(b)) => {
                        prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
                        // NaN and inf are found in the encoding pass (the tensor then holds
                        // unspecified values); every other error leaves it as it was.
                        let in_pass = matches!(a, QuantError::NanInput { .. } | QuantError::InfiniteInput { .. });
                        if !in_pass {
                            prop_assert_eq!(format!("{t:?}"), before);
                        }
                    }
                    (a, b) => prop_assert!(false, "into {a:?} against allocating {:?}", b.map(|_| ())),
                }
                Ok(())
            }
            let seed = vec![0.25f32; block * 2];
            let f8 = Float8Spec::new(MiniFloat::E4M3Fn, Float8Recipe::Inference, Float8Granularity::Rowwise).expect("spec");
            check(f8.quantize_rows(&seed, block).expect("seed"), |t| f8.quantize_rows_into(&x, row_len, t), f8.quantize_rows(&x, row_len))?;
            let mx = MxSpec::new(MiniFloat::E2M1Fn, block, MxScaleMode::ALL[mode]).expect("spec");
            check(mx.quantize_rows(&seed, block).expect("seed"), |t| mx.quantize_rows_into(&x, row_len, t), mx.quantize_rows(&x, row_len))?;
            let nv = Nvfp4Spec::new(mode % 2 == 0);
            check(nv.quantize_rows(&[0.25; 32], 16).expect("seed"), |t| nv.quantize_rows_into(&x, row_len, t), nv.quantize_rows(&x, row_len))?;
            let g = GroupwiseSpec::int4(block, GroupMapping::Asymmetric).expect("spec");
            check(g.quantize_rows(&seed, block).expect("seed"), |t| g.quantize_rows_into(&x, row_len, t), g.quantize_rows(&x, row_len))?;
            let tg = TinygemmSpec::new(block, 1e-6, QParamsDtype::BF16).expect("spec");
            check(tg.quantize_rows(&seed, block).expect("seed"), |t| tg.quantize_rows_into(&x, row_len, t), tg.quantize_rows(&x, row_len))?;
            let nf = Nf4Spec::new(block, 2).expect("spec");
            check(nf.quantize(&seed).expect("seed"), |t| nf.quantize_into(&x, t), nf.quantize(&x))?;
        }
    }
}

/// Every encoder that refuses NaN and infinities (the integer formats: GGML's blocks, NF4,
/// group-wise int4, tinygemm; float8, MX and NVFP4 encode them as their references do)
/// reports the first one, whatever sits after
/// it, wherever it sits (first and last value, inside a batch of blocks, in a row's last
/// blocks): the encoders find them in their own pass over the blocks, not a scan before it.
mod non_finite {
    use qnumeric::QuantError;
    use qnumeric::formats::ggml::GgmlType;
    use qnumeric::formats::groupwise::{GroupMapping, GroupwiseSpec, QParamsDtype, TinygemmSpec};
    use qnumeric::formats::nf4::Nf4Spec;

    type Encode = Box<dyn Fn(&[f32]) -> Result<(), QuantError>>;

    fn encoders() -> Vec<(&'static str, Encode)> {
        const ROW: usize = 4096;
        let mut v: Vec<(&'static str, Encode)> = Vec::new();
        for (name, ty) in [
            ("Q8_0", GgmlType::Q8_0),
            ("Q4_0", GgmlType::Q4_0),
            ("Q4_1", GgmlType::Q4_1),
            ("Q5_0", GgmlType::Q5_0),
            ("Q5_1", GgmlType::Q5_1),
            ("ggml MXFP4", GgmlType::Mxfp4),
        ] {
            v.push((
                name,
                Box::new(move |x: &[f32]| ty.quantize_rows(x, ROW).map(drop)),
            ));
        }
        let nf4 = Nf4Spec::new(64, 256).expect("spec");
        v.push(("NF4", Box::new(move |x: &[f32]| nf4.quantize(x).map(drop))));
        for mapping in [GroupMapping::Asymmetric, GroupMapping::Symmetric] {
            let g = GroupwiseSpec::int4(128, mapping).expect("spec");
            v.push((
                "int4 g128",
                Box::new(move |x: &[f32]| g.quantize_rows(x, ROW).map(drop)),
            ));
        }
        let t = TinygemmSpec::new(128, 1e-6, QParamsDtype::BF16).expect("spec");
        v.push((
            "tinygemm",
            Box::new(move |x: &[f32]| t.quantize_rows(x, ROW).map(drop)),
        ));
        v
    }

    #[test]
    fn ggml_rows_report_under_their_own_name() {
        let e = GgmlType::Q5_1
            .quantize_rows(&[f32::NAN; 32], 32)
            .unwrap_err();
        assert!(e.to_string().starts_with("GgmlType::quantize_rows:"), "{e}");
        let e = GgmlType::Q4_0
            .quantize_row(&[f32::NAN; 32], &mut [0; 18])
            .unwrap_err();
        assert!(e.to_string().starts_with("GgmlType::quantize_row:"), "{e}");
    }

    #[test]
    fn the_first_nan_or_infinity_is_reported() {
        // Four rows: one scaler block of NF4's (64 · 256).
        let n = 4 * 4096;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        for (name, encode) in encoders() {
            encode(&x).unwrap_or_else(|e| panic!("{name}: {e}"));
            for at in [0usize, 31, 32 * 9 + 3, 4096 + 4095, n - 33, n - 1] {
                for (first, later) in [
                    (f32::NAN, f32::INFINITY),
                    (f32::NEG_INFINITY, f32::NAN),
                    (f32::INFINITY, f32::NEG_INFINITY),
                ] {
                    let mut bad = x.clone();
                    bad[at] = first;
                    for later_at in [at + 1, at + 700, n - 1] {
                        if later_at > at && later_at < n {
                            bad[later_at] = later;
                        }
                    }
                    match encode(&bad) {
                        Err(QuantError::NanInput { index, .. }) if first.is_nan() => {
                            assert_eq!(index, at, "{name}: NaN at {at}");
                        }
                        Err(QuantError::InfiniteInput { index, value, .. })
                            if first.is_infinite() =>
                        {
                            assert_eq!(
                                (index, value),
                                (at, f64::from(first)),
                                "{name}: {first} at {at}"
                            );
                        }
                        other => panic!("{name}: {first} at {at} gave {other:?}"),
                    }
                }
            }
        }
    }
}
