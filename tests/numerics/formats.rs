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
