//! Two 4-bit codes a byte. The references disagree on which element goes in the low nibble:
//! torchao's MX and NVFP4 put element `2i` in the low nibble ([`NibbleOrder::LowFirst`]),
//! torchao's NF4 puts it in the high nibble ([`NibbleOrder::HighFirst`]). (GGML's blocks use a
//! third layout, element `j` and `j + 16` in one byte: see [`crate::formats::ggml`].)
//!
//! ```
//! use qnumeric::formats::packing::{pack_nibbles, unpack_nibbles, NibbleOrder};
//! let codes = [0x1u8, 0x2, 0x3, 0xf];
//! let packed = pack_nibbles(&codes, NibbleOrder::LowFirst)?;
//! assert_eq!(packed, vec![0x21, 0xf3]);
//! assert_eq!(pack_nibbles(&codes, NibbleOrder::HighFirst)?, vec![0x12, 0x3f]);
//! assert_eq!(unpack_nibbles(&packed, NibbleOrder::LowFirst), codes.to_vec());
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

use crate::error::{QuantError, Result};

/// Which nibble of a byte holds the first of its two elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum NibbleOrder {
    /// Element `2i` in bits 0..4, `2i + 1` in bits 4..8 (torchao MX, NVFP4).
    LowFirst,
    /// Element `2i` in bits 4..8, `2i + 1` in bits 0..4 (torchao NF4).
    HighFirst,
}

/// Packs 4-bit codes two a byte.
///
/// # Errors
/// [`QuantError::NotMultiple`] for an odd number of codes; [`QuantError::InvalidParameter`]
/// for a code above 15.
pub fn pack_nibbles(codes: &[u8], order: NibbleOrder) -> Result<Vec<u8>> {
    let mut out = vec![0u8; codes.len() / 2];
    pack_nibbles_into(codes, order, &mut out)?;
    Ok(out)
}

/// Packs 4-bit codes two a byte into `out` (`codes.len() / 2` bytes). See [`pack_nibbles`].
///
/// # Errors
/// As [`pack_nibbles`], plus [`QuantError::LengthMismatch`] for `out`. Nothing is written on
/// an error.
pub fn pack_nibbles_into(codes: &[u8], order: NibbleOrder, out: &mut [u8]) -> Result<()> {
    const OP: &str = "formats::pack_nibbles";
    if !codes.len().is_multiple_of(2) {
        return Err(QuantError::NotMultiple {
            op: OP,
            what: "code count",
            len: codes.len(),
            multiple_of: 2,
        });
    }
    if out.len() != codes.len() / 2 {
        return Err(QuantError::LengthMismatch {
            op: OP,
            what: "packed output",
            expected: codes.len() / 2,
            got: out.len(),
        });
    }
    if let Some(&c) = codes.iter().find(|&&c| c > 15) {
        return Err(QuantError::InvalidParameter {
            op: OP,
            what: "4-bit code",
            value: f64::from(c),
            reason: "must be at most 15",
        });
    }
    for (byte, pair) in out.iter_mut().zip(codes.chunks_exact(2)) {
        *byte = match order {
            NibbleOrder::LowFirst => pair[0] | (pair[1] << 4),
            NibbleOrder::HighFirst => (pair[0] << 4) | pair[1],
        };
    }
    Ok(())
}

/// Unpacks two 4-bit codes from every byte.
#[must_use]
pub fn unpack_nibbles(packed: &[u8], order: NibbleOrder) -> Vec<u8> {
    let mut out = vec![0u8; packed.len() * 2];
    unpack_nibbles_into(packed, order, &mut out);
    out
}

/// Unpacks into `out`; writes `min(out.len() / 2, packed.len())` bytes' codes.
pub fn unpack_nibbles_into(packed: &[u8], order: NibbleOrder, out: &mut [u8]) {
    for (pair, &byte) in out.chunks_exact_mut(2).zip(packed) {
        let (lo, hi) = (byte & 0xf, byte >> 4);
        match order {
            NibbleOrder::LowFirst => {
                pair[0] = lo;
                pair[1] = hi;
            }
            NibbleOrder::HighFirst => {
                pair[0] = hi;
                pair[1] = lo;
            }
        }
    }
}
