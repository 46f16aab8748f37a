//! The `f32` matrix product of the float layers: `C = A·B` over strided operands.
//!
//! On CPUs with AVX-512 it is the crate's own blocked product (the GotoBLAS / BLIS loop
//! order): per block of [`KC`] reduction steps, `B` packed in panels of 32 columns (once, or
//! in advance for a layer's weights: [`PackedB`]), `A` in panels of 14 rows ([`MC`] rows at a
//! time), and a 14 × 32 register tile (28 `zmm` accumulators, one FMA per product): each `A`
//! panel stays in L1 while the `B` panels of a [`NB`]-column block stream past it from L2.
//! Elsewhere it is `matrixmultiply` through ndarray, as before.
//!
//! Each element of `C` is summed in the same order whatever the shape of the rest of the
//! product and however the rows are split across threads: a chain of FMAs over each block of
//! [`KC`] reduction steps, the blocks added in order. Results are therefore identical with
//! and without the `rayon` feature and for any number of threads.

use ndarray::ArrayView2;
use ndarray::ShapeBuilder;
use ndarray::linalg::general_mat_mul;

/// Reduction steps per block.
const KC: usize = 384;
/// Rows of `A` packed at a time (each 14-row panel, 21 KiB, stays in L1 while the `B` panels
/// of a column block stream past it).
const MC: usize = 252;
/// Columns of `B` per column block (a packed block of 384 × 512 values, 768 KiB, in L2).
const NB: usize = 512;

/// A read-only strided matrix: element `(i, j)` at `data[i·rs + j·cs]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix with `cols` columns.
    pub(crate) fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns (each stored row is a column).
    pub(crate) fn transposed(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: cols,
        }
    }

    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }

    /// Whether every element of an `m × n` matrix lies inside `data`.
    fn holds(&self, m: usize, n: usize) -> bool {
        m == 0 || n == 0 || (m - 1) * self.rs + (n - 1) * self.cs < self.data.len()
    }
}

/// Packs rows `p0..p0 + kc` of a `? × n` matrix given by its rows into panels of [`NR`]
/// columns, as [`pack_b`] does.
fn pack_rows(f: RowFn<'_>, p0: usize, kc: usize, n: usize, row: &mut Vec<f32>, dst: &mut Vec<f32>) {
    let panels = n.div_ceil(NR);
    // Every entry is written below (padding included): no clearing pass.
    dst.resize(panels * kc * NR, 0.0);
    // The row padded to whole panels: the padding stays zero.
    row.resize(panels * NR, 0.0);
    row[n..].fill(0.0);
    for p in 0..kc {
        f(p0 + p, &mut row[..n]);
        for (t, src) in row.chunks_exact(NR).enumerate() {
            dst[(t * kc + p) * NR..][..NR].copy_from_slice(src);
        }
    }
}

/// Whether packing an operand in advance ([`PackedB`]) pays: the CPU runs the crate's own
/// blocked product (AVX-512).
pub(crate) fn packing_pays() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512::Tile::new().is_some()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `matrixmultiply` through ndarray.
fn portable(m: usize, n: usize, k: usize, a: Mat<'_>, b: Mat<'_>, c: &mut [f32]) {
    // The strided views start at the first element and stay inside `data` (`holds`).
    let av = ArrayView2::from_shape((m, k).strides((a.rs, a.cs)), a.data).expect("strided view");
    let bv = ArrayView2::from_shape((k, n).strides((b.rs, b.cs)), b.data).expect("strided view");
    let mut cv = ndarray::ArrayViewMut2::from_shape((m, n), c).expect("m·n outputs");
    general_mat_mul(1.0, &av, &bv, 0.0, &mut cv);
}

/// A buffer kept per thread between products (packing a large operand into a fresh
/// allocation cost a page fault per 4 KiB and a clearing pass each time).
pub(crate) mod scratch {
    use std::cell::Cell;

    /// Buffers above this many values are not kept.
    const KEEP: usize = 16 << 20;

    /// The slots: the packed `B` of a product, a caller's output block, a padded input.
    pub(crate) const PACKED: usize = 0;
    pub(crate) const OUTPUT: usize = 1;
    /// A convolution's padded input.
    pub(crate) const PADDED: usize = 2;
    /// The packed `A` panels of a product.
    pub(crate) const PANELS: usize = 3;

    thread_local! {
        static BUF: [Cell<Vec<f32>>; 4] = const {
            [
                Cell::new(Vec::new()),
                Cell::new(Vec::new()),
                Cell::new(Vec::new()),
                Cell::new(Vec::new()),
            ]
        };
    }

    /// A thread's [`PANELS`] buffer for the length of a task (taken when the task's scratch
    /// is made, given back when it is dropped): each task of a product packs into the same
    /// memory as the last one on its thread, without a fresh allocation and its clearing.
    #[derive(Debug)]
    pub(crate) struct Panels(pub(crate) Vec<f32>);

    impl Default for Panels {
        fn default() -> Self {
            Panels(take(PANELS))
        }
    }

    impl Drop for Panels {
        fn drop(&mut self) {
            give(PANELS, std::mem::take(&mut self.0));
        }
    }

    /// The thread's buffer in `slot` (empty if a caller further up the same thread holds it).
    pub(crate) fn take(slot: usize) -> Vec<f32> {
        BUF.with(|b| b[slot].take())
    }

    /// Gives a buffer back to the thread's `slot` for the next use.
    pub(crate) fn give(slot: usize, v: Vec<f32>) {
        if v.capacity() <= KEEP {
            BUF.with(|b| b[slot].set(v));
        }
    }
}

/// Rows of a register tile and columns of a packed panel.
const MR: usize = 14;
const NR: usize = 32;
const _: () = assert!(MC.is_multiple_of(MR), "row blocks are whole panels");

/// Packs `a(i0.., p0..)`, `mc × kc`, into panels of [`MR`] rows: panel `t`, step `p`, row `i`
/// at `(t·kc + p)·MR + i`; rows past `mc` are zero.
fn pack_a(a: Mat<'_>, i0: usize, mc: usize, p0: usize, kc: usize, dst: &mut Vec<f32>) {
    let panels = mc.div_ceil(MR);
    // Every entry is written below (padding included): no clearing pass.
    dst.resize(panels * kc * MR, 0.0);
    for t in 0..panels {
        let panel = &mut dst[t * kc * MR..][..kc * MR];
        let rows = MR.min(mc - t * MR);
        let r0 = i0 + t * MR;
        if a.cs == 1 {
            // The panel's rows side by side (12 read streams), the panel written in order.
            let srcs: [&[f32]; MR] = std::array::from_fn(|i| {
                if i < rows {
                    &a.data[(r0 + i) * a.rs + p0..][..kc]
                } else {
                    &[]
                }
            });
            for (p, d) in panel.chunks_exact_mut(MR).enumerate() {
                for (i, dv) in d.iter_mut().enumerate() {
                    *dv = if i < rows { srcs[i][p] } else { 0.0 };
                }
            }
        } else {
            for (p, d) in panel.chunks_exact_mut(MR).enumerate() {
                for (i, dv) in d.iter_mut().enumerate() {
                    *dv = if i < rows { a.at(r0 + i, p0 + p) } else { 0.0 };
                }
            }
        }
    }
}

/// Packs `b(p0.., j0..)`, `kc × nc`, into panels of [`NR`] columns: panel `t`, step `p`,
/// column `j` at `(t·kc + p)·NR + j`; columns past `nc` are zero.
fn pack_b(b: Mat<'_>, p0: usize, kc: usize, j0: usize, nc: usize, dst: &mut Vec<f32>) {
    let panels = nc.div_ceil(NR);
    // Every entry is written below (padding included): no clearing pass.
    dst.resize(panels * kc * NR, 0.0);
    for t in 0..panels {
        let panel = &mut dst[t * kc * NR..][..kc * NR];
        let cols = NR.min(nc - t * NR);
        let c0 = j0 + t * NR;
        if b.cs == 1 {
            for (p, d) in panel.chunks_exact_mut(NR).enumerate() {
                d[..cols].copy_from_slice(&b.data[(p0 + p) * b.rs + c0..][..cols]);
                d[cols..].fill(0.0);
            }
        } else if b.rs == 1 {
            // Each column is a stored row: read the panel's columns side by side (32 read
            // streams) and write the panel in order (strided writes cost twice as much).
            let srcs: [&[f32]; NR] = std::array::from_fn(|j| {
                if j < cols {
                    &b.data[(c0 + j) * b.cs + p0..][..kc]
                } else {
                    &[]
                }
            });
            for (p, d) in panel.chunks_exact_mut(NR).enumerate() {
                for (dv, src) in d[..cols].iter_mut().zip(&srcs) {
                    *dv = src[p];
                }
                d[cols..].fill(0.0);
            }
        } else {
            for (p, d) in panel.chunks_exact_mut(NR).enumerate() {
                for (j, dv) in d.iter_mut().enumerate() {
                    *dv = if j < cols { b.at(p0 + p, c0 + j) } else { 0.0 };
                }
            }
        }
    }
}

/// Rows of `C` per task when the product is split across threads: whole [`MC`] blocks, or
/// fewer rows (a multiple of [`MR`]) so that every thread gets some.
fn rows_per_task(m: usize, k: usize, n: usize) -> usize {
    let threads = crate::parallel::threads_for(m.saturating_mul(k).saturating_mul(n));
    if threads <= 1 {
        return m;
    }
    m.div_ceil(threads).next_multiple_of(MR).min(m)
}

/// `B` packed once for every product with it (a layer's weights): the panels of each block
/// of [`KC`] reduction steps, in order (block `q`, panel `t` at `q·KC·panels·NR + t·kc·NR`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PackedB {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl PackedB {
    /// Packs the `k × n` matrix `b`.
    pub(crate) fn new(k: usize, n: usize, b: Mat<'_>) -> Self {
        assert!(b.holds(k, n), "operand holds its elements");
        let mut data = Vec::with_capacity(k * n.next_multiple_of(NR));
        let mut block = Vec::new();
        for p0 in (0..k).step_by(KC) {
            pack_b(b, p0, KC.min(k - p0), 0, n, &mut block);
            data.extend_from_slice(&block);
        }
        PackedB { k, n, data }
    }

    /// The panels of the block of reduction steps from `p0`.
    fn block(&self, p0: usize) -> &[f32] {
        let panels = self.n.div_ceil(NR);
        &self.data[p0 * panels * NR..][..KC.min(self.k - p0) * panels * NR]
    }

    /// Element `(p, j)`.
    fn at(&self, p: usize, j: usize) -> f32 {
        let (q0, kc) = (p - p % KC, KC.min(self.k - (p - p % KC)));
        self.block(q0)[(j / NR) * kc * NR + (p % KC) * NR + j % NR]
    }
}

/// `A` packed once for every product with it (a convolution's weights): per block of [`KC`]
/// reduction steps, the panels of [`MR`] rows (block `q`, panel `t` at
/// `q·KC·panels·MR + t·kc·MR`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PackedA {
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedA {
    /// Packs the `m × k` matrix `a`.
    pub(crate) fn new(m: usize, k: usize, a: Mat<'_>) -> Self {
        assert!(a.holds(m, k), "operand holds its elements");
        let mut data = Vec::with_capacity(k * m.next_multiple_of(MR));
        let mut block = Vec::new();
        for p0 in (0..k).step_by(KC) {
            pack_a(a, 0, m, p0, KC.min(k - p0), &mut block);
            data.extend_from_slice(&block);
        }
        PackedA { m, k, data }
    }

    /// The panels of rows `r0..r0 + mc` (`r0` a multiple of [`MR`]) in the block of
    /// reduction steps from `p0`.
    fn panels(&self, p0: usize, r0: usize, mc: usize) -> &[f32] {
        debug_assert_eq!(r0 % MR, 0);
        let kc = KC.min(self.k - p0);
        let block = &self.data[p0 * self.m.div_ceil(MR) * MR..];
        &block[(r0 / MR) * kc * MR..][..mc.div_ceil(MR) * kc * MR]
    }

    /// Element `(i, p)`.
    fn at(&self, i: usize, p: usize) -> f32 {
        let q0 = p - p % KC;
        self.panels(q0, i - i % MR, MR.min(self.m - (i - i % MR)))[(p % KC) * MR + i % MR]
    }
}

/// Row `p` of a `k × n` matrix, written into a slice of `n` values: an operand computed as
/// it is packed (a convolution's unfolded input), never stored whole.
pub(crate) type RowFn<'a> = &'a (dyn Fn(usize, &mut [f32]) + Sync);

/// One panel of an `m × k` operand computed as it is packed (a convolution's unfolded input,
/// positions as rows): `f(r0, p0, panel)` either writes rows `r0..r0 + MR` and reduction
/// steps `p0..p0 + kc` (`kc = panel.len() / MR`) with row `i` of step `p` at
/// `panel[p·MR + i]`, and zeros for rows past `m`, and returns `None`; or writes nothing and
/// returns `Some(base)`: the panel's `MR` rows are read in place, row `i` of step `p` at
/// `data[base + offsets[p] + i]` ([`Lhs::Panels`]).
pub(crate) type PanelFn<'a> = &'a (dyn Fn(usize, usize, &mut [f32]) -> Option<usize> + Sync);

/// Rows of a packed panel of the first operand (what a [`PanelFn`] writes per step).
pub(crate) const PANEL_ROWS: usize = MR;

/// Columns of a packed panel of the second operand: a product with `n` a multiple of it
/// computes no padding column.
pub(crate) const PANEL_COLS: usize = NR;

/// The first operand of [`product`]: `m × k`.
#[derive(Clone, Copy)]
pub(crate) enum Lhs<'a> {
    /// Strided values.
    Mat(Mat<'a>),
    /// Packed in advance.
    Packed(&'a PackedA),
    /// Given panel by panel, each computed once as the product packs it or read in place
    /// from `data` (row `i` of step `p` of an in-place panel at `data[base + offsets[p] +
    /// i]`, `offsets` holding one entry per reduction step).
    Panels {
        f: PanelFn<'a>,
        data: &'a [f32],
        offsets: &'a [usize],
    },
}

/// The second operand of [`product`]: `k × n`.
#[derive(Clone, Copy)]
pub(crate) enum Rhs<'a> {
    /// Strided values.
    Mat(Mat<'a>),
    /// Packed in advance.
    Packed(&'a PackedB),
    /// Given by its rows, each computed once as the product packs it.
    Rows(RowFn<'a>),
}

/// `c[i·n + j] = Σ_p a(i, p)·b(p, j)` for an `m × k` matrix `a` and a `k × n` matrix `b`;
/// `c` is row-major `m × n` and is overwritten. Packed operands must have been packed with
/// the same `m`, `k`, `n`.
///
/// # Panics
/// If an operand does not hold its elements (a bug of the caller, not an input error).
pub(crate) fn product(m: usize, n: usize, k: usize, a: Lhs<'_>, b: Rhs<'_>, c: &mut [f32]) {
    match a {
        Lhs::Mat(a) => assert!(a.holds(m, k), "operand holds its elements"),
        Lhs::Packed(a) => assert!(a.m == m && a.k == k, "packed with this shape"),
        Lhs::Panels { offsets, .. } => assert_eq!(offsets.len(), k, "one offset per step"),
    }
    match b {
        Rhs::Mat(b) => assert!(b.holds(k, n), "operand holds its elements"),
        Rhs::Packed(b) => assert!(b.k == k && b.n == n, "packed with this shape"),
        Rhs::Rows(_) => {}
    }
    assert_eq!(c.len(), m * n, "m·n outputs");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(kern) = avx512::Tile::new() {
        return blocked(kern, m, n, k, a, b, c);
    }
    // Elsewhere `matrixmultiply`, on the operands unpacked (packing in advance is only done
    // where it pays: [`packing_pays`]).
    let a_full: Vec<f32>;
    let a = match a {
        Lhs::Mat(a) => a,
        Lhs::Packed(pa) => {
            a_full = (0..m * k).map(|i| pa.at(i / k, i % k)).collect();
            Mat::rows(&a_full, k)
        }
        Lhs::Panels { f, data, offsets } => {
            let (mut full, mut panel) = (vec![0.0f32; m * k], vec![0.0f32; k * MR]);
            for r0 in (0..m).step_by(MR) {
                let base = f(r0, 0, &mut panel);
                for p in 0..k {
                    for i in 0..MR.min(m - r0) {
                        full[(r0 + i) * k + p] = match base {
                            Some(b) => data[b + offsets[p] + i],
                            None => panel[p * MR + i],
                        };
                    }
                }
            }
            a_full = full;
            Mat::rows(&a_full, k)
        }
    };
    let b_full: Vec<f32>;
    let b = match b {
        Rhs::Mat(b) => b,
        Rhs::Packed(pb) => {
            b_full = (0..k * n).map(|i| pb.at(i / n, i % n)).collect();
            Mat::rows(&b_full, n)
        }
        Rhs::Rows(f) => {
            let mut full = vec![0.0f32; k * n];
            for (p, row) in full.chunks_exact_mut(n).enumerate() {
                f(p, row);
            }
            b_full = full;
            Mat::rows(&b_full, n)
        }
    };
    portable(m, n, k, a, b, c);
}

/// The blocked product with the AVX-512 tile: per block of [`KC`] reduction steps, `B`'s
/// panels (packed once, shared by the threads), then per task of rows, per [`MC`] rows of
/// packed `A`, per [`NB`] columns: every `A` panel against every `B` panel of the block.
#[cfg(target_arch = "x86_64")]
fn blocked(
    kern: avx512::Tile,
    m: usize,
    n: usize,
    k: usize,
    a: Lhs<'_>,
    b: Rhs<'_>,
    c: &mut [f32],
) {
    let (mut packed, mut row) = (scratch::take(scratch::PACKED), Vec::new());
    let task_rows = rows_per_task(m, k, n);
    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        let bp: &[f32] = match b {
            Rhs::Mat(b) => {
                pack_b(b, p0, kc, 0, n, &mut packed);
                &packed
            }
            Rhs::Packed(b) => b.block(p0),
            Rhs::Rows(f) => {
                pack_rows(f, p0, kc, n, &mut row, &mut packed);
                &packed
            }
        };
        crate::parallel::for_each_block(
            c,
            task_rows * n,
            usize::MAX,
            |t, ct: &mut [f32], ap: &mut scratch::Panels| {
                let ap = &mut ap.0;
                let steps = match a {
                    Lhs::Panels { data, offsets, .. } => {
                        Some(avx512::InPlace::new(data, &offsets[p0..p0 + kc]))
                    }
                    _ => None,
                };
                let rows = ct.len() / n;
                for i1 in (0..rows).step_by(MC) {
                    let mc = MC.min(rows - i1);
                    let r0 = t * task_rows + i1;
                    // Panels read in place: their base in `data`.
                    let mut in_place = [None::<usize>; MC / MR];
                    let ap: &[f32] = match a {
                        Lhs::Mat(a) => {
                            pack_a(a, r0, mc, p0, kc, ap);
                            ap
                        }
                        Lhs::Packed(a) => a.panels(p0, r0, mc),
                        Lhs::Panels { f, .. } => {
                            let len = mc.div_ceil(MR) * kc * MR;
                            ap.resize(len, 0.0);
                            for (t, panel) in ap.chunks_exact_mut(kc * MR).enumerate() {
                                in_place[t] = f(r0 + t * MR, p0, panel);
                            }
                            ap
                        }
                    };
                    for j0 in (0..n).step_by(NB) {
                        let block = &bp[j0 * kc..][..NB.min(n - j0).div_ceil(NR) * kc * NR];
                        for (it, apanel) in ap.chunks_exact(kc * MR).enumerate() {
                            let r = i1 + it * MR;
                            let tile_rows = MR.min(mc - it * MR);
                            for (jt, bpanel) in block.chunks_exact(kc * NR).enumerate() {
                                let j = j0 + jt * NR;
                                let cols = NR.min(n - j);
                                let origin = r * n + j;
                                let span = (tile_rows - 1) * n + cols;
                                let c = &mut ct[origin..][..span];
                                match (&steps, in_place[it]) {
                                    (Some(steps), Some(base)) => kern.run_in_place(
                                        steps,
                                        base,
                                        bpanel,
                                        c,
                                        n,
                                        tile_rows,
                                        cols,
                                        p0 > 0,
                                    ),
                                    _ => {
                                        kern.run(kc, apanel, bpanel, c, n, tile_rows, cols, p0 > 0)
                                    }
                                }
                            }
                        }
                    }
                }
            },
        );
    }
    scratch::give(scratch::PACKED, packed);
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use super::{MR, NR};

    /// How many reduction steps ahead the `B` panel is prefetched.
    const PF: usize = 8;
    use std::arch::x86_64::*;

    /// The 14 × 32 register tile. A value exists only where the CPU has AVX512F (its
    /// constructor checks), which makes [`Tile::run`] sound.
    #[derive(Clone, Copy)]
    pub(super) struct Tile(());

    impl Tile {
        pub(super) fn new() -> Option<Self> {
            crate::simd::has_avx512().then_some(Tile(()))
        }

        /// `c(i, j) (+)= Σ_p a[p·MR + i]·b[p·NR + j]` for `i < rows`, `j < cols`, with
        /// `c(i, j) = c[i·ldc + j]`: overwritten, or added to when `add`.
        #[allow(clippy::too_many_arguments)]
        #[inline]
        pub(super) fn run(
            self,
            kc: usize,
            a: &[f32],
            b: &[f32],
            c: &mut [f32],
            ldc: usize,
            rows: usize,
            cols: usize,
            add: bool,
        ) {
            assert!(a.len() >= kc * MR && b.len() >= kc * NR, "packed panels");
            assert!(
                (1..=MR).contains(&rows) && (1..=NR).contains(&cols),
                "tile size"
            );
            assert!(c.len() > (rows - 1) * ldc + cols - 1, "tile outputs");
            // SAFETY: a `Tile` exists only on a CPU with AVX512F; the slices hold what the
            // tile reads and writes (asserted above).
            unsafe { tile_of(Packed(a.as_ptr()), kc, b.as_ptr(), c, ldc, rows, cols, add) }
        }

        /// As [`Tile::run`] over `steps.offsets.len()` reduction steps, with row `i` of step
        /// `p` of the first operand read in place at `steps.data[base + steps.offsets[p] +
        /// i]` (not packed).
        #[allow(clippy::too_many_arguments)]
        #[inline]
        pub(super) fn run_in_place(
            self,
            steps: &InPlace<'_>,
            base: usize,
            b: &[f32],
            c: &mut [f32],
            ldc: usize,
            rows: usize,
            cols: usize,
            add: bool,
        ) {
            let kc = steps.offsets.len();
            assert!(b.len() >= kc * NR, "packed panel");
            assert!(
                (1..=MR).contains(&rows) && (1..=NR).contains(&cols),
                "tile size"
            );
            assert!(c.len() > (rows - 1) * ldc + cols - 1, "tile outputs");
            assert!(
                base.checked_add(steps.reach)
                    .is_some_and(|end| end <= steps.data.len()),
                "in-place rows inside their data"
            );
            let a = Offsets(steps.data[base..].as_ptr(), steps.offsets.as_ptr());
            // SAFETY: a `Tile` exists only on a CPU with AVX512F; `b` and `c` hold what the
            // tile reads and writes, and every row of `a` it reads, `base + offsets[p] + i` for
            // `i < rows <= MR`, lies below `base + reach <= data.len()` (asserted above).
            unsafe { tile_of(a, kc, b.as_ptr(), c, ldc, rows, cols, add) }
        }
    }

    /// The first operand's rows read in place for one block of reduction steps: step `p`
    /// of a panel based at `base` at `data[base + offsets[p]..]`, `MR` rows.
    pub(in crate::nn::sgemm) struct InPlace<'a> {
        data: &'a [f32],
        offsets: &'a [usize],
        /// `max(offsets) + MR`: how far past its base a panel reads.
        reach: usize,
    }

    impl<'a> InPlace<'a> {
        pub(in crate::nn::sgemm) fn new(data: &'a [f32], offsets: &'a [usize]) -> Self {
            let reach = offsets.iter().max().map_or(0, |&o| o.saturating_add(MR));
            InPlace {
                data,
                offsets,
                reach,
            }
        }
    }

    /// Where the first operand's rows of reduction step `p` start.
    trait Steps: Copy {
        /// # Safety
        /// `p` is a step of the panel the value was made for.
        unsafe fn at(self, p: usize) -> *const f32;
    }

    /// A packed panel: step `p` at `p·MR`.
    #[derive(Clone, Copy)]
    struct Packed(*const f32);

    impl Steps for Packed {
        #[inline(always)]
        unsafe fn at(self, p: usize) -> *const f32 {
            // SAFETY: the panel holds `kc·MR` values and `p < kc` (the caller's contract).
            unsafe { self.0.add(p * MR) }
        }
    }

    /// Rows read in place: step `p` at `offsets[p]`.
    #[derive(Clone, Copy)]
    struct Offsets(*const f32, *const usize);

    impl Steps for Offsets {
        #[inline(always)]
        unsafe fn at(self, p: usize) -> *const f32 {
            // SAFETY: `offsets` holds `kc` entries, each leaving the step's rows inside the
            // data (the caller's contract), and `p < kc`.
            unsafe { self.0.add(*self.1.add(p)) }
        }
    }

    /// The tile of `rows` rows (a short last panel of rows runs a tile of its own height: a
    /// panel of 4 rows costs 4 rows, not 14).
    ///
    /// # Safety
    /// As [`tile`].
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn tile_of<S: Steps>(
        a: S,
        kc: usize,
        b: *const f32,
        c: &mut [f32],
        ldc: usize,
        rows: usize,
        cols: usize,
        add: bool,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            match rows {
                14 => tile::<14, S>(kc, a, b, c, ldc, cols, add),
                13 => tile::<13, S>(kc, a, b, c, ldc, cols, add),
                12 => tile::<12, S>(kc, a, b, c, ldc, cols, add),
                11 => tile::<11, S>(kc, a, b, c, ldc, cols, add),
                10 => tile::<10, S>(kc, a, b, c, ldc, cols, add),
                9 => tile::<9, S>(kc, a, b, c, ldc, cols, add),
                8 => tile::<8, S>(kc, a, b, c, ldc, cols, add),
                7 => tile::<7, S>(kc, a, b, c, ldc, cols, add),
                6 => tile::<6, S>(kc, a, b, c, ldc, cols, add),
                5 => tile::<5, S>(kc, a, b, c, ldc, cols, add),
                4 => tile::<4, S>(kc, a, b, c, ldc, cols, add),
                3 => tile::<3, S>(kc, a, b, c, ldc, cols, add),
                2 => tile::<2, S>(kc, a, b, c, ldc, cols, add),
                _ => tile::<1, S>(kc, a, b, c, ldc, cols, add),
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX512F; `a` must give rows `0..R` of steps `0..kc` inside their
    /// data and `b` must hold `kc·NR` values; `c` must hold `(R − 1)·ldc + cols` values,
    /// `1 <= R <= MR`, `1 <= cols <= NR`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, S: Steps>(
        kc: usize,
        a: S,
        b: *const f32,
        c: &mut [f32],
        ldc: usize,
        cols: usize,
        add: bool,
    ) {
        let rows = R;
        unsafe {
            if add {
                // The tile's outputs are read at the end: start fetching them now.
                for i in 0..rows {
                    let r = c.as_ptr().add(i * ldc);
                    _mm_prefetch::<_MM_HINT_T0>(r.cast());
                    _mm_prefetch::<_MM_HINT_T0>(r.add(cols - 1).cast());
                }
            }
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for p in 0..kc {
                // SAFETY (all loads): `p < kc` keeps `p·NR + 31 < kc·NR` and `p·MR + i <
                // kc·MR` (the caller's contract); the loads are unaligned.
                // The panel streams from L2: fetch it a few steps ahead (a prefetch past the
                // end of the panel is harmless: it never faults).
                _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((p + PF) * NR).cast());
                _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((p + PF) * NR + 16).cast());
                let b0 = _mm512_loadu_ps(b.add(p * NR));
                let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
                let ap = a.at(p);
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*ap.add(i));
                    acc_i[0] = _mm512_fmadd_ps(x, b0, acc_i[0]);
                    acc_i[1] = _mm512_fmadd_ps(x, b1, acc_i[1]);
                }
            }
            let m0: __mmask16 = if cols >= 16 {
                0xffff
            } else {
                (1u16 << cols) - 1
            };
            let m1: __mmask16 = if cols >= NR {
                0xffff
            } else if cols > 16 {
                (1u16 << (cols - 16)) - 1
            } else {
                0
            };
            let cp = c.as_mut_ptr();
            for (i, acc_i) in acc.iter().enumerate().take(rows) {
                // SAFETY: row `i < rows` of the tile starts at `i·ldc`; the masks keep the
                // lanes below `cols`, inside `c` (the caller's contract). Masked-off lanes
                // are neither read nor written.
                let r = cp.add(i * ldc);
                let (mut v0, mut v1) = (acc_i[0], acc_i[1]);
                if add {
                    v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, r), v0);
                    v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, r.add(16)), v1);
                }
                _mm512_mask_storeu_ps(r, m0, v0);
                _mm512_mask_storeu_ps(r.add(16), m1, v1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: Mat<'_>, b: Mat<'_>) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| f64::from(a.at(i, p)) * f64::from(b.at(p, j)))
                    .sum();
            }
        }
        c
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Lcg::new(seed);
        (0..len).map(|_| rng.unit_f32() * 2.0 - 1.0).collect()
    }

    #[test]
    fn equals_the_exact_product_at_every_edge_and_stride() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (12, 32, 256),
            (13, 33, 257),
            (25, 65, 300),
            (150, 40, 513),
            (250, 530, 800),
            (7, 1100, 20),
        ] {
            let ad = values(m * k, 1);
            let bd = values(k * n, 2);
            for (a, b) in [
                (Mat::rows(&ad, k), Mat::rows(&bd, n)),
                (Mat::transposed(&ad, m), Mat::transposed(&bd, k)),
                (
                    Mat {
                        data: &ad,
                        rs: k,
                        cs: 1,
                    },
                    Mat::transposed(&bd, k),
                ),
            ] {
                let want = naive(m, n, k, a, b);
                let mut c = vec![f32::NAN; m * n];
                product(m, n, k, Lhs::Mat(a), Rhs::Mat(b), &mut c);
                let mut p = vec![f32::NAN; m * n];
                portable(m, n, k, a, b, &mut p);
                for ((&g, &q), &w) in c.iter().zip(&p).zip(&want) {
                    let tol = 1e-5 * (k as f64).sqrt() * 4.0;
                    assert!((f64::from(g) - w).abs() <= tol, "{m}×{n}×{k}: {g} vs {w}");
                    assert!((f64::from(q) - w).abs() <= tol, "{m}×{n}×{k}: {q} vs {w}");
                }
                // Every way of giving the operands: the same sums, bit for bit.
                let (pa, pb) = (PackedA::new(m, k, a), PackedB::new(k, n, b));
                let rows = |p: usize, row: &mut [f32]| {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = b.at(p, j);
                    }
                };
                for (lhs, rhs) in [
                    (Lhs::Packed(&pa), Rhs::Mat(b)),
                    (Lhs::Mat(a), Rhs::Packed(&pb)),
                    (Lhs::Packed(&pa), Rhs::Packed(&pb)),
                    (Lhs::Mat(a), Rhs::Rows(&rows)),
                    (Lhs::Packed(&pa), Rhs::Rows(&rows)),
                ] {
                    let mut q = vec![f32::NAN; m * n];
                    product(m, n, k, lhs, rhs, &mut q);
                    assert_eq!(c, q, "{m}×{n}×{k}");
                }
                for i in 0..m {
                    for p in 0..k {
                        assert_eq!(pa.at(i, p), a.at(i, p));
                    }
                }
                for p in 0..k {
                    for j in 0..n {
                        assert_eq!(pb.at(p, j), b.at(p, j));
                    }
                }
            }
        }
    }

    #[test]
    fn an_empty_reduction_gives_zeros() {
        let mut c = vec![f32::NAN; 6];
        product(
            2,
            3,
            0,
            Lhs::Mat(Mat::rows(&[], 0)),
            Rhs::Mat(Mat::rows(&[], 3)),
            &mut c,
        );
        assert_eq!(c, vec![0.0; 6]);
    }

    /// A first operand given panel by panel, some panels packed by the caller and some read
    /// in place (row `i` of step `p` at `data[base + offsets[p] + i]`): the product of the
    /// same matrix given whole, bit for bit.
    #[test]
    fn panels_packed_or_read_in_place_give_the_product_of_the_whole_operand() {
        for &(m, n, k) in &[(1, 32, 5), (14, 64, 384), (30, 32, 500), (45, 96, 770)] {
            // Row `i`, step `p` of `A` lives at `data[i + offsets[p]]`: steps far apart.
            let offsets: Vec<usize> = (0..k).map(|p| p * (m + 3)).collect();
            let data = values(k * (m + 3) + MR, 3);
            let a_full: Vec<f32> = (0..m * k)
                .map(|ij| data[ij / k + offsets[ij % k]])
                .collect();
            let bd = values(k * n, 4);
            let mut want = vec![0.0f32; m * n];
            product(
                m,
                n,
                k,
                Lhs::Mat(Mat::rows(&a_full, k)),
                Rhs::Mat(Mat::rows(&bd, n)),
                &mut want,
            );
            let panel = |r0: usize, p0: usize, dst: &mut [f32]| {
                if (r0 / MR).is_multiple_of(2) && r0 + MR <= m {
                    return Some(r0);
                }
                for (p, step) in dst.chunks_exact_mut(MR).enumerate() {
                    for (i, v) in step.iter_mut().enumerate() {
                        *v = if r0 + i < m {
                            data[r0 + i + offsets[p0 + p]]
                        } else {
                            0.0
                        };
                    }
                }
                None
            };
            let mut got = vec![0.0f32; m * n];
            let lhs = Lhs::Panels {
                f: &panel,
                data: &data,
                offsets: &offsets,
            };
            product(m, n, k, lhs, Rhs::Mat(Mat::rows(&bd, n)), &mut got);
            assert_eq!(got, want, "{m}×{n}×{k}");
        }
    }
}
