//! The direct int8 convolution of small layers on AVX512-VNNI: output positions along the
//! vector, no unfolding and no transposes.
//!
//! The general path of [`QuantizedConv2d`](super::QuantizedConv2d) unfolds each output
//! position into a row and multiplies the rows by the weight panels, channels along the vector.
//! A layer with few channels spends most of its time around that product: transposing the
//! input to channels-last and the output back, and unfolding. Here each image is laid out once
//! with its padding and its input channels interleaved by four (`[c/4][plane][4]`, the input
//! zero point in the border): the 16 positions of a `zmm` register under one tap and four
//! channels are then 64 adjacent bytes, read in place by `vpdpbusd` against a broadcast of one
//! output channel's four weights. A tile of 8 channels × 48 positions holds the whole reduction
//! in registers, is requantized there (the same `f32` operations as the general path) and
//! stored channels-first, as the output is laid out, keeping only the real positions
//! (`vpcompressd`).
//!
//! Positions run over the padded width (`oh × wp`, stride 1): the `wp − ow` columns past each
//! output row are computed and dropped (for a 3 × 3 "same" convolution of 8 × 8 images, 80
//! positions for 64). The sums are the exact `i32` sums of the general path, so the outputs
//! are the same bytes. Used for stride 1, exact accumulation, weights without zero points and
//! at most [`MAX_CG`] input channels per group, where the CPU has AVX512-VNNI.

use super::requant::Requant;
use crate::nn::geometry::ConvShape;

/// Input channels per group up to which the direct path runs: measured faster than the
/// general path up to 128 (×1.04–2.2), slower at 256 (the tuned matrix product, whose channel
/// panels use the vector fully, keeps the wide layers).
const MAX_CG: usize = 128;

/// Bytes of one image's interleaved input or sums above which the direct path is not used (it
/// is meant for images that stay in L2).
const MAX_SCRATCH: usize = 1 << 20;

/// Output channels per tile (8 rows × 3 `zmm` of positions: 24 accumulators).
const TILE_CHANNELS: usize = 8;

/// The layout of one image for the direct path.
#[derive(Clone)]
pub(super) struct Plan {
    /// The proof that the CPU runs the tile.
    tile: avx512::Tile,
    /// Padded width.
    wp: usize,
    /// Positions computed per image (`oh·wp`, rounded up to 16).
    npos: usize,
    /// Quads of input channels per group.
    c4: usize,
    /// Pixels per quad plane (the padded image and room for the last tile's reads).
    plane: usize,
    /// Byte offset of each tap `(ky, kx)` in a quad plane, `4·(ky·dh·wp + kx·dw)`.
    taps: Vec<usize>,
    /// Per 16 positions: which are real outputs (`ox < ow`, `oy < oh`), and how many real
    /// ones come before (where the first is stored in the channel's output plane).
    chunks: Vec<(u16, usize)>,
}

impl Plan {
    /// The direct layout of `s`'s images, or `None` where the direct path does not apply (see
    /// the module): the caller has checked exact accumulation and the weights' zero points.
    pub(super) fn new(s: &ConvShape) -> Option<Plan> {
        let tile = avx512::Tile::new()?;
        if s.geo.stride != [1, 1] || s.cg() > MAX_CG {
            return None;
        }
        let [ph, pw] = s.geo.padding;
        let [dh, dw] = s.geo.dilation;
        let hp = ph.checked_mul(2)?.checked_add(s.h)?;
        let wp = pw.checked_mul(2)?.checked_add(s.w)?;
        // Stride 1: `oh = hp − (kh − 1)·dh`, `ow = wp − (kw − 1)·dw` (checked by the shape).
        debug_assert_eq!(s.ow + (s.kw - 1) * dw, wp);
        let npos = s.oh.checked_mul(wp)?.checked_next_multiple_of(16)?;
        let reach = (s.kh - 1)
            .checked_mul(dh)?
            .checked_mul(wp)?
            .checked_add((s.kw - 1).checked_mul(dw)?)?;
        let plane = npos.checked_add(reach)?.max(hp.checked_mul(wp)?);
        let c4 = s.cg().div_ceil(4);
        let input = plane.checked_mul(4)?.checked_mul(c4)?;
        if input > MAX_SCRATCH {
            return None;
        }
        let taps = (0..s.kh)
            .flat_map(|ky| (0..s.kw).map(move |kx| 4 * (ky * dh * wp + kx * dw)))
            .collect();
        let chunks = (0..npos / 16)
            .map(|c| {
                let real = |p: usize| p < s.oh * wp && p % wp < s.ow;
                let mask = (0..16).fold(0u16, |m, j| m | (u16::from(real(16 * c + j)) << j));
                let before = (16 * c) / wp * s.ow + ((16 * c) % wp).min(s.ow);
                (mask, before)
            })
            .collect();
        Some(Plan {
            tile,
            wp,
            npos,
            c4,
            plane,
            taps,
            chunks,
        })
    }
}

/// A layer's weights in the direct path's order, `[out][tap][c4·4]` (channels past the
/// group's padded to 0), from the stored weights `[out, cg, kh, kw]` (standard layout):
/// packed once, when the layer is built.
pub(super) fn pack_weights(raw: &[i8], out: usize, cg: usize, taps: usize) -> Vec<i8> {
    let c4 = cg.div_ceil(4);
    let per = taps * c4 * 4;
    let mut w = vec![0i8; out * per];
    for (o, wo) in w.chunks_exact_mut(per.max(1)).enumerate() {
        for ci in 0..cg {
            for t in 0..taps {
                wo[t * c4 * 4 + ci] = raw[(o * cg + ci) * taps + t];
            }
        }
    }
    w
}

/// What every tile of one forward pass reads: the packed weights ([`pack_weights`]), each
/// output channel's starting sum `−zx·Σ w` and requantization parameters.
pub(super) struct Prepared<'a> {
    w: &'a [i8],
    init: Vec<i32>,
    channels: Vec<[f32; 2]>,
    shared: [f32; 4],
    zx: u8,
}

impl<'a> Prepared<'a> {
    /// From the packed weights, each output channel's `Σ w` (in order), the input zero point
    /// and the layer's requantization.
    pub(super) fn new(
        w: &'a [i8],
        sums: impl IntoIterator<Item = i32>,
        zx: u8,
        rq: &Requant,
    ) -> Self {
        // Within `i32`: the layer's weights passed the accumulator bound
        // (`2·255·Σ|w| <= i32::MAX`).
        let init: Vec<i32> = sums.into_iter().map(|sum| -i32::from(zx) * sum).collect();
        Prepared {
            w,
            channels: (0..init.len()).map(|o| rq.channel(o)).collect(),
            init,
            shared: rq.shared(),
            zx,
        }
    }
}

/// Per-thread buffers: one image's interleaved input, and a plane of zero points (the
/// channels past a group's, in its last quad).
#[derive(Default)]
pub(super) struct Scratch {
    xq: Vec<u8>,
    pad_plane: Vec<u8>,
}

/// The direct convolution of the images of `x` (`[nb, c_in, h, w]`, stored u8) into `out`
/// (`[nb, c_out, oh, ow]`): the sums `Σ (x − zx)·w`, requantized.
pub(super) fn run_block(
    s: &ConvShape,
    plan: &Plan,
    pre: &Prepared,
    x: &[u8],
    out: &mut [u8],
    scratch: &mut Scratch,
) {
    let tile = plan.tile;
    let (plane_in, l) = (s.h * s.w, s.positions());
    let (cg, og, c4) = (s.cg(), s.og(), plan.c4);
    let [ph, pw] = s.geo.padding;
    let per = s.kh * s.kw * c4 * 4;
    let Scratch { xq, pad_plane } = scratch;
    pad_plane.clear();
    pad_plane.resize(plane_in, pre.zx);
    // The border (and the room past it) keeps the zero point: each image rewrites the inside.
    xq.clear();
    xq.resize(c4 * plan.plane * 4, pre.zx);
    for i in 0..out.len() / (s.c_out * l).max(1) {
        let img = &x[i * s.c_in * plane_in..][..s.c_in * plane_in];
        let out_i = &mut out[i * s.c_out * l..][..s.c_out * l];
        for g in 0..s.geo.groups {
            // [cg, h, w] → [c4][plane][4] (channels past the group's: the zero point).
            for q in 0..c4 {
                let plane_of = |j: usize| -> &[u8] {
                    let c = 4 * q + j;
                    if c < cg {
                        &img[(g * cg + c) * plane_in..][..plane_in]
                    } else {
                        pad_plane
                    }
                };
                let (a, b, c, d) = (plane_of(0), plane_of(1), plane_of(2), plane_of(3));
                for iy in 0..s.h {
                    let row = iy * s.w..(iy + 1) * s.w;
                    let d0 = (q * plan.plane + (iy + ph) * plan.wp + pw) * 4;
                    interleave4(
                        [&a[row.clone()], &b[row.clone()], &c[row.clone()], &d[row]],
                        &mut xq[d0..][..4 * s.w],
                    );
                }
            }
            // Tiles of 8 channels × 48 (or a last 32 or 16) positions, requantized and stored
            // channels-first.
            let wg = &pre.w[g * og * per..][..og * per];
            for o0 in (0..og).step_by(TILE_CHANNELS) {
                let (c0, r) = (g * og + o0, TILE_CHANNELS.min(og - o0));
                for p0 in (0..plan.npos).step_by(48) {
                    let p = (plan.npos - p0).min(48) / 16;
                    tile.run(
                        (r, p),
                        (&xq[p0 * 4..], plan.plane * 4, &plan.taps, c4),
                        (&wg[o0 * per..], per),
                        (&pre.init[c0..], pre.shared, &pre.channels[c0..]),
                        (&mut out_i[c0 * l..], l, &plan.chunks[p0 / 16..][..p]),
                    );
                }
            }
        }
    }
}

/// `dst[4·i + j] = rows[j][i]`: four rows of bytes interleaved, eight at a time with SSE2
/// unpacks where the CPU is x86-64.
fn interleave4(rows: [&[u8]; 4], dst: &mut [u8]) {
    let n = dst.len() / 4;
    let [a, b, c, d] = rows;
    assert!(
        a.len() >= n && b.len() >= n && c.len() >= n && d.len() >= n,
        "four rows of n bytes"
    );
    let done = avx512::interleave4_by8(rows, dst);
    for i in done..n {
        dst[4 * i..4 * i + 4].copy_from_slice(&rows.map(|r| r[i]));
    }
}

/// The AVX512-VNNI tile.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::*;

    /// A value exists only where the CPU has AVX512F, AVX512BW and AVX512-VNNI (its
    /// constructor checks), which makes [`Tile::run`] sound.
    #[derive(Clone, Copy)]
    pub(super) struct Tile(());

    impl Tile {
        pub(super) fn new() -> Option<Self> {
            crate::simd::has_avx512_vnni().then_some(Tile(()))
        }

        /// For `i < rows` output channels and the `16·cols` positions `j` of `chunks`:
        /// `acc(i, j) = init[i] + Σ_{tap, q, b} x[q·plane + tap + 4·j + b] ·
        /// w[i·wstride + (tap_index·c4 + q)·4 + b]`, requantized with `shared` and
        /// `channels[i]` as [`Requant::apply`](super::super::requant::Requant) does, the real
        /// positions of chunk `c` (`chunks[c] = (mask, before)`) stored at
        /// `out[i·plane_out + before..]` (`rows <= 8`, `cols` 1 to 3 `zmm` of positions).
        #[allow(clippy::type_complexity)]
        pub(super) fn run(
            &self,
            (rows, cols): (usize, usize),
            (x, plane, taps, c4): (&[u8], usize, &[usize], usize),
            (w, wstride): (&[i8], usize),
            (init, shared, channels): (&[i32], [f32; 4], &[[f32; 2]]),
            (out, plane_out, chunks): (&mut [u8], usize, &[(u16, usize)]),
        ) {
            assert!(
                (1..=8).contains(&rows) && (1..=3).contains(&cols),
                "tile shape"
            );
            assert!(c4 >= 1 && !taps.is_empty(), "a reduction");
            let reach = (c4 - 1) * plane + taps.iter().max().expect("taps") + 64 * cols;
            assert!(x.len() >= reach, "input planes");
            assert!(
                w.len() >= (rows - 1) * wstride + taps.len() * c4 * 4,
                "weight rows"
            );
            assert!(init.len() >= rows && channels.len() >= rows, "channels");
            assert_eq!(chunks.len(), cols, "a mask per 16 positions");
            let end = chunks
                .iter()
                .map(|&(m, before)| before + m.count_ones() as usize)
                .max()
                .unwrap_or(0);
            assert!(out.len() >= (rows - 1) * plane_out + end, "output planes");
            let args = Args {
                x,
                plane,
                taps,
                c4,
                w,
                wstride,
                init,
                shared,
                channels,
                out,
                plane_out,
                chunks,
            };
            // SAFETY: a `Tile` exists only on a CPU with AVX512F/BW/VL/VNNI; the slices hold
            // every element the tile reads and writes (asserted just above).
            unsafe {
                match cols {
                    1 => rows_of::<1>(rows, args),
                    2 => rows_of::<2>(rows, args),
                    _ => rows_of::<3>(rows, args),
                }
            }
        }
    }

    /// [`tile`] for `rows` output channels.
    ///
    /// # Safety
    /// As [`tile`].
    unsafe fn rows_of<const P: usize>(rows: usize, args: Args<'_>) {
        unsafe {
            match rows {
                1 => tile::<1, P>(args),
                2 => tile::<2, P>(args),
                3 => tile::<3, P>(args),
                4 => tile::<4, P>(args),
                5 => tile::<5, P>(args),
                6 => tile::<6, P>(args),
                7 => tile::<7, P>(args),
                _ => tile::<8, P>(args),
            }
        }
    }

    /// [`super::interleave4`] of the first multiple of 8 values: four 8-byte loads, byte
    /// then 16-bit unpacks, two 16-byte stores. Returns how many values it did.
    pub(super) fn interleave4_by8(rows: [&[u8]; 4], dst: &mut [u8]) -> usize {
        let [a, b, c, d] = rows.map(<[u8]>::len);
        let whole = (dst.len() / 4).min(a).min(b).min(c).min(d) / 8 * 8;
        for i in (0..whole).step_by(8) {
            // SAFETY: SSE2 is part of x86-64; `i + 8 <= whole` keeps each 8-byte load inside
            // its row and the 32 bytes stored inside `dst` (`4·whole <= dst.len()`).
            unsafe {
                let [a, b, c, d] = rows.map(|r| _mm_loadl_epi64(r.as_ptr().add(i).cast()));
                let (ab, cd) = (_mm_unpacklo_epi8(a, b), _mm_unpacklo_epi8(c, d));
                let p = dst.as_mut_ptr().add(4 * i);
                _mm_storeu_si128(p.cast(), _mm_unpacklo_epi16(ab, cd));
                _mm_storeu_si128(p.add(16).cast(), _mm_unpackhi_epi16(ab, cd));
            }
        }
        whole
    }

    /// The arguments of [`tile`] (as [`Tile::run`] names them).
    struct Args<'a> {
        x: &'a [u8],
        plane: usize,
        taps: &'a [usize],
        c4: usize,
        w: &'a [i8],
        wstride: usize,
        init: &'a [i32],
        shared: [f32; 4],
        channels: &'a [[f32; 2]],
        out: &'a mut [u8],
        plane_out: usize,
        chunks: &'a [(u16, usize)],
    }

    /// # Safety
    /// The CPU must have AVX512F, AVX512BW, AVX512VL and AVX512-VNNI; the slices must hold
    /// what [`Tile::run`] asserts.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn tile<const R: usize, const P: usize>(a: Args<'_>) {
        unsafe {
            // An array of accumulators per 16 positions, indexed by constants once unrolled,
            // so they live in registers.
            let mut acc0 = [_mm512_setzero_si512(); R];
            let mut acc1 = [_mm512_setzero_si512(); R];
            let mut acc2 = [_mm512_setzero_si512(); R];
            for r in 0..R {
                acc0[r] = _mm512_set1_epi32(a.init[r]);
                acc1[r] = acc0[r];
                acc2[r] = acc0[r];
            }
            let (xp, mut wq) = (a.x.as_ptr(), a.w.as_ptr());
            for &tap in a.taps {
                let mut xt = xp.add(tap);
                for _ in 0..a.c4 {
                    // SAFETY (all loads): `xt` stays below `(c4 − 1)·plane + tap` and each
                    // load reads 64 bytes within `64·P` of it; `wq` stays below
                    // `taps·c4·4` and each row adds at most `(R − 1)·wstride`.
                    let b0 = _mm512_loadu_si512(xt.cast());
                    let b1 = if P >= 2 {
                        _mm512_loadu_si512(xt.add(64).cast())
                    } else {
                        b0
                    };
                    let b2 = if P >= 3 {
                        _mm512_loadu_si512(xt.add(128).cast())
                    } else {
                        b0
                    };
                    for r in 0..R {
                        let wr =
                            _mm512_set1_epi32(wq.add(r * a.wstride).cast::<i32>().read_unaligned());
                        // The u8 operand first: `vpdpbusd` multiplies unsigned by signed.
                        acc0[r] = _mm512_dpbusd_epi32(acc0[r], b0, wr);
                        if P >= 2 {
                            acc1[r] = _mm512_dpbusd_epi32(acc1[r], b1, wr);
                        }
                        if P >= 3 {
                            acc2[r] = _mm512_dpbusd_epi32(acc2[r], b2, wr);
                        }
                    }
                    xt = xt.add(a.plane);
                    wq = wq.add(4);
                }
            }
            // Requantization, the operations of `Requant::apply` in the same order:
            // `clamp(rne((f32(acc)·sx·w + b) / so) + zo, lo, 255)`. `vmaxps(r, lo)` gives `lo`
            // for a NaN `r`, as the scalar `if r > lo { r } else { lo }` does.
            let [sx, so, zo, lo] = a.shared.map(|v| _mm512_set1_ps(v));
            let (zero, top) = (_mm512_setzero_ps(), _mm512_set1_ps(255.0));
            let op = a.out.as_mut_ptr();
            // The sums leave the registers once, here: indexing the accumulators by a
            // runtime row below would keep them in memory, stored at every step.
            let mut sums = [[_mm512_setzero_si512(); 3]; R];
            for r in 0..R {
                sums[r] = [acc0[r], acc1[r], acc2[r]];
            }
            for (r, row) in sums.iter().enumerate() {
                let [w, b] = a.channels[r].map(|v| _mm512_set1_ps(v));
                for (&v, &(mask, before)) in row[..P].iter().zip(&a.chunks[..P]) {
                    let t = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(v), sx), w);
                    let t = _mm512_div_ps(_mm512_add_ps(t, b), so);
                    let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                        t,
                    );
                    let t = _mm512_max_ps(_mm512_add_ps(t, zo), lo);
                    let t = _mm512_min_ps(_mm512_max_ps(t, zero), top);
                    // The real positions first, then one byte each.
                    let q = _mm512_maskz_compress_epi32(mask, _mm512_cvttps_epi32(t));
                    let bytes = _mm512_cvtepi32_epi8(q);
                    let n = mask.count_ones();
                    // SAFETY: the store writes `n` bytes at `r·plane_out + before`, below
                    // `(R − 1)·plane_out + end <= out.len()`.
                    _mm_mask_storeu_epi8(
                        op.add(r * a.plane_out + before).cast(),
                        ((1u32 << n) - 1) as u16,
                        bytes,
                    );
                }
            }
        }
    }
}
