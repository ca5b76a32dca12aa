//! Streaming first and second moments, mergeable exactly.
//!
//! A [`MomentAccumulator`] over `d` neurons holds, for the `n` datapoints (rows) seen so far,
//!
//! * `n`,
//! * the mean `μ` (length `d`),
//! * the centred co-moment `M = Σ_r (x_r − μ)(x_r − μ)ᵀ` (`d × d`, symmetric),
//!
//! all in f64 whatever the input precision. The covariance is `Σ = M / (n − 1)`.
//!
//! Rows arrive in blocks ([`RowBlock`], row-major `[rows, d]`, f32 or f64). Each block (cut into
//! chunks of bounded size) is widened into a column-major f64 scratch, centred on *its own* mean,
//! multiplied into the lower triangle (`M_b = S_bᵀ S_b`, faer's triangular matmul), and merged
//! with Chan et al.'s pairwise update
//!
//! ```text
//! n = n_a + n_b,   δ = μ_b − μ_a,   μ = μ_a + δ·n_b/n,   M = M_a + M_b + δδᵀ·n_a·n_b/n
//! ```
//!
//! The same update merges two accumulators ([`MomentAccumulator::merge`]), so any split of the
//! rows into shards merged in any order or tree gives the same statistics to rounding
//! (~1e-12 relative; the property tests check it). `Σxxᵀ − nμμᵀ` is never formed: ReLU
//! activations have large means and that difference cancels catastrophically.
//!
//! Internally only the lower triangle of `M` is maintained (the triangular product halves the
//! work); every accessor returns the full symmetric matrix.
//!
//! With [`Precision::Mixed`] each chunk's centred rows are rounded to f32 and multiplied in f32
//! (about twice the f64 product rate on AVX-512 cores); the chunk's f32 Gram is added to the f64
//! co-moment, and every merge stays f64. Centring on the chunk's own mean happens in f64 before
//! the rounding, so large means cost no digits. The error this leaves is bounded per
//! representation when it is whitened (see [`mixed_precision_bound`]).
//!
//! [`JointMoments`] accumulates a pair of representations over the same datapoints as one
//! accumulator over the concatenated columns `[x | y]`, which yields `M_xx`, `M_yy` and the cross
//! co-moment `M_xy = Σ (x − μ_x)(y − μ_y)ᵀ` (`d_x × d_y`).

use faer::{Accum, Mat, MatRef};

use crate::error::{CoreError, Result};

/// Rows per chunk of the moments' product, whatever the width. In column-major chunks the rows
/// are the product's inner dimension; on an AVX-512 Xeon 256 rows were as fast as or faster than
/// 128 and 512 from 64 to 4,096 neurons (`examples/moments_rate.rs`), and the f64 scratch stays
/// at 2 KiB per neuron.
pub(crate) const MOMENT_CHUNK_ROWS: usize = 256;

/// How the product inside one chunk is computed; accumulation across chunks, every merge, and
/// everything after the moments are f64 either way.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// f64 products: the default, and always the arithmetic of google-compat mode.
    #[default]
    F64,
    /// f32 products per chunk, added into the f64 co-moment (opt-in; see the module docs).
    Mixed,
}

impl Precision {
    /// For `skip_serializing_if`: f64, the default, is left out of specs and payloads.
    pub fn is_f64(&self) -> bool {
        *self == Precision::F64
    }
}

impl std::str::FromStr for Precision {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f64" => Ok(Precision::F64),
            "mixed" => Ok(Precision::Mixed),
            _ => Err(CoreError::InvalidOption {
                name: "precision",
                detail: format!("unknown precision {s:?}; expected f64 or mixed"),
            }),
        }
    }
}

/// The unit roundoff of f32 (2⁻²⁴: half the gap from 1 to the next float).
const F32_UNIT_ROUNDOFF: f64 = f32::EPSILON as f64 / 2.0;

/// The change mixed precision makes to the canonical correlations of a representation, to first
/// order: a representation accumulated over `n` datapoints, the decomposed matrix (covariance, or
/// correlation for CCA) of eigenvalues summing to `trace` over `dims` of them, the smallest kept
/// `smallest_kept`. Each co-moment entry carries a rounding error of about `u·√k` of its scale
/// (`k` rows per f32 product, `u` = 2⁻²⁴), with random signs; a whitened direction `v` moves by
/// `vᵀEv / λ`, about `u·√k` times the mean eigenvalue over its own. That typical size came
/// within 1.4× of the largest error measured on the digits layers, so the bound is 10× it
/// (see `tests/mixed_precision.rs` and the benchmarks' README for the measurements).
pub fn mixed_precision_bound(trace: f64, dims: usize, smallest_kept: f64, n: u64) -> f64 {
    let k = MOMENT_CHUNK_ROWS.min(usize::try_from(n).unwrap_or(usize::MAX)) as f64;
    const SAFETY: f64 = 10.0;
    SAFETY * F32_UNIT_ROUNDOFF * k.sqrt() * (trace / dims.max(1) as f64) / smallest_kept
}

/// The stride, in elements of `elem_bytes`, between the rows of a row-major scratch holding `d`
/// values per row (or the columns of a column-major one holding `d` per column): `d` rounded up
/// to whole cache lines, then to an odd number of them. A stride of a power of two bytes
/// (`d` = 512 f64 is 4 KiB) maps every row of a column to the same cache sets, and the
/// product's packing of such a chunk ran at 32–35 GFLOP/s against 48–56 with the stride padded
/// (Xeon with AVX-512, one core, 512 neurons; `examples/gram_depth.rs`). The padding is never
/// read: the product sees only the `d` columns, and its panels, hence its bits, are the same.
pub fn padded_stride(d: usize, elem_bytes: usize) -> usize {
    let per_line = (64 / elem_bytes).max(1);
    let lines = d.div_ceil(per_line);
    let lines = if lines.is_multiple_of(2) {
        lines + 1
    } else {
        lines
    };
    lines * per_line
}

/// A borrowed block of rows, row-major `[rows, cols]` (one datapoint per row).
#[derive(Clone, Copy, Debug)]
pub enum RowBlock<'a> {
    /// f32 activations (widened to f64 on the way in).
    F32 {
        data: &'a [f32],
        rows: usize,
        cols: usize,
    },
    /// f64 activations.
    F64 {
        data: &'a [f64],
        rows: usize,
        cols: usize,
    },
    /// Blocks of the same width one above the other (consecutive datapoints, such as the
    /// shards a range of rows spans), read as one block without copying them together: every
    /// result is the same, to the bit, as from the blocks gathered into one. Built by
    /// [`RowBlock::stacked`]; `rows` is the sum of the pieces' rows.
    Stacked {
        pieces: &'a [RowBlock<'a>],
        rows: usize,
        cols: usize,
    },
}

impl<'a> RowBlock<'a> {
    /// An f32 block, checking `data.len() == rows * cols`.
    pub fn f32(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        let b = RowBlock::F32 { data, rows, cols };
        b.check_shape()?;
        Ok(b)
    }

    /// An f64 block, checking `data.len() == rows * cols`.
    pub fn f64(data: &'a [f64], rows: usize, cols: usize) -> Result<Self> {
        let b = RowBlock::F64 { data, rows, cols };
        b.check_shape()?;
        Ok(b)
    }

    /// `pieces` one above the other, all `cols` wide; with no pieces, an empty block.
    pub fn stacked(pieces: &'a [RowBlock<'a>], cols: usize) -> Result<Self> {
        let rows = pieces.iter().map(RowBlock::rows).sum();
        let b = RowBlock::Stacked { pieces, rows, cols };
        b.check_shape()?;
        Ok(b)
    }

    /// Number of rows (datapoints).
    pub fn rows(&self) -> usize {
        match *self {
            RowBlock::F32 { rows, .. }
            | RowBlock::F64 { rows, .. }
            | RowBlock::Stacked { rows, .. } => rows,
        }
    }

    /// Number of columns (neurons).
    pub fn cols(&self) -> usize {
        match *self {
            RowBlock::F32 { cols, .. }
            | RowBlock::F64 { cols, .. }
            | RowBlock::Stacked { cols, .. } => cols,
        }
    }

    /// Calls `f(piece, p0, p1, at)` for the rows `r0..r1` of this block that lie in each piece
    /// (`p0..p1` within the piece; `at` rows after `r0`). An f32 or f64 block is its own piece.
    fn for_pieces(
        &self,
        r0: usize,
        r1: usize,
        mut f: impl FnMut(&RowBlock<'a>, usize, usize, usize),
    ) {
        match *self {
            RowBlock::Stacked { pieces, .. } => {
                let mut first = 0;
                for p in pieces {
                    let (lo, hi) = (first, first + p.rows());
                    let (a, b) = (r0.max(lo), r1.min(hi));
                    if a < b {
                        f(p, a - lo, b - lo, a - r0);
                    }
                    first = hi;
                }
            }
            _ => f(self, r0, r1, 0),
        }
    }

    /// Checks the buffer length against the stated shape (the variants are public, so a block
    /// may have been built without [`RowBlock::f32`] / [`RowBlock::f64`]).
    pub fn check_shape(&self) -> Result<()> {
        let (len, rows, cols) = match *self {
            RowBlock::F32 { data, rows, cols } => (data.len(), rows, cols),
            RowBlock::F64 { data, rows, cols } => (data.len(), rows, cols),
            RowBlock::Stacked { pieces, rows, cols } => {
                let mut sum = 0usize;
                for p in pieces {
                    p.check_shape()?;
                    if p.cols() != cols {
                        return Err(CoreError::DimensionMismatch {
                            what: "stacked row blocks",
                            expected: cols,
                            found: p.cols(),
                        });
                    }
                    sum += p.rows();
                }
                (sum * cols, rows, cols)
            }
        };
        let expected = rows.checked_mul(cols).ok_or(CoreError::BlockShape {
            rows,
            cols,
            expected: usize::MAX,
            len,
        })?;
        if len != expected {
            return Err(CoreError::BlockShape {
                rows,
                cols,
                expected,
                len,
            });
        }
        Ok(())
    }

    /// Value at (row, column) widened to f64.
    #[inline]
    pub fn get(&self, row: usize, col: usize) -> f64 {
        match *self {
            RowBlock::F32 { data, cols, .. } => data[row * cols + col] as f64,
            RowBlock::F64 { data, cols, .. } => data[row * cols + col],
            RowBlock::Stacked { .. } => {
                let mut value = f64::NAN;
                self.for_pieces(row, row + 1, |p, r, _, _| value = p.get(r, col));
                value
            }
        }
    }

    /// First non-finite value in rows `r0..r1`, as (row within the block, column, value).
    pub(crate) fn first_non_finite(&self, r0: usize, r1: usize) -> Option<(usize, usize, f64)> {
        let cols = self.cols();
        let at = |i: usize| (r0 + i / cols, i % cols);
        // Branch-free folds over fixed chunks vectorise; an early-exit `position` over every
        // value does not, and this scan runs over every datapoint the engine reads.
        const CHUNK: usize = 256;
        fn first<T: Copy>(values: &[T], finite: impl Fn(T) -> bool + Copy) -> Option<usize> {
            for (k, chunk) in values.chunks(CHUNK).enumerate() {
                if !chunk.iter().fold(true, |ok, &v| ok & finite(v)) {
                    let i = chunk
                        .iter()
                        .position(|&v| !finite(v))
                        .expect("a value failed");
                    return Some(k * CHUNK + i);
                }
            }
            None
        }
        match *self {
            RowBlock::F32 { data, .. } => {
                first(&data[r0 * cols..r1 * cols], f32::is_finite).map(|i| {
                    let (r, c) = at(i);
                    (r, c, data[r * cols + c] as f64)
                })
            }
            RowBlock::F64 { data, .. } => {
                first(&data[r0 * cols..r1 * cols], f64::is_finite).map(|i| {
                    let (r, c) = at(i);
                    (r, c, data[r * cols + c])
                })
            }
            RowBlock::Stacked { .. } => {
                let mut found = None;
                self.for_pieces(r0, r1, |p, p0, p1, at| {
                    if found.is_none() {
                        found = p
                            .first_non_finite(p0, p1)
                            .map(|(r, c, v)| (r - p0 + r0 + at, c, v));
                    }
                });
                found
            }
        }
    }

    /// Adds the column sums of rows `r0..r1` into `sums`.
    fn add_column_sums(&self, r0: usize, r1: usize, sums: &mut [f64]) {
        match *self {
            RowBlock::F32 { data, cols, .. } => add_rows(&data[r0 * cols..r1 * cols], cols, sums),
            RowBlock::F64 { data, cols, .. } => add_rows(&data[r0 * cols..r1 * cols], cols, sums),
            // Pieces in order, rows in order: the additions of the gathered block.
            RowBlock::Stacked { .. } => {
                self.for_pieces(r0, r1, |p, p0, p1, _| p.add_column_sums(p0, p1, sums))
            }
        }
    }

    /// Writes rows `r0..r1`, minus `shift` per column, into the row-major `dst`: row `r` of this
    /// block goes to `dst[(r − r0) * ld + off ..][..cols]`, in one contiguous, vectorised pass.
    /// The projection's product (`k` output columns, `k` ≪ neurons) reads row-major chunks
    /// faster than column-major ones (measured on an AVX-512 Xeon at 20,000 × 512 → 40: 30 ms
    /// against 41 ms with [`RowBlock::write_centred_cols`]); the moments' product is the other
    /// way round.
    pub(crate) fn write_centred_rows<O: Centred>(
        &self,
        r0: usize,
        r1: usize,
        shift: &[f64],
        dst: &mut [O],
        (ld, off): (usize, usize),
    ) {
        let cols = self.cols();
        let shift = &shift[..cols];
        if let RowBlock::Stacked { .. } = *self {
            self.for_pieces(r0, r1, |p, p0, p1, at| {
                p.write_centred_rows(p0, p1, shift, &mut dst[at * ld..], (ld, off))
            });
            return;
        }
        match *self {
            RowBlock::F32 { data, .. } => {
                centre_rows(&data[r0 * cols..r1 * cols], shift, dst, (ld, off))
            }
            RowBlock::F64 { data, .. } => {
                centre_rows(&data[r0 * cols..r1 * cols], shift, dst, (ld, off))
            }
            RowBlock::Stacked { .. } => unreachable!("stacked blocks are written piece by piece"),
        }
    }
}

impl RowBlock<'_> {
    /// Writes rows `r0..r1`, minus `shift` per column, into the column-major `dst`: value
    /// `(r, c)` of this block goes to `dst[(off + c) * ld + (r − r0)]`. The moments' triangular
    /// product reads a column-major chunk faster than a row-major one (measured on an AVX-512
    /// Xeon: 53 against 44 GFLOP/s at 512 neurons, this transposing copy included), and the copy
    /// goes eight rows at a time, so that each column's eight values fill one cache line and the
    /// eight source rows are read front to back.
    pub(crate) fn write_centred_cols<O: Centred>(
        &self,
        r0: usize,
        r1: usize,
        shift: &[f64],
        dst: &mut [O],
        (ld, off): (usize, usize),
    ) {
        match *self {
            RowBlock::Stacked { .. } => self.for_pieces(r0, r1, |p, p0, p1, at| {
                p.write_centred_cols(p0, p1, shift, &mut dst[at..], (ld, off))
            }),
            RowBlock::F32 { data, cols, .. } => {
                transpose_centred(&data[r0 * cols..r1 * cols], cols, shift, dst, (ld, off))
            }
            RowBlock::F64 { data, cols, .. } => {
                transpose_centred(&data[r0 * cols..r1 * cols], cols, shift, dst, (ld, off))
            }
        }
    }
}

// The loops below are compiled for the baseline x86-64 (SSE2, two f64 per instruction); where
// the CPU has AVX2 the same loops run compiled for it. Each output value is computed by the
// same operations in the same order either way (the vectors run across columns), so the bits
// do not depend on the CPU.

/// Adds each `cols`-wide row of `data`, widened, into `sums`, row after row.
fn add_rows<I: Widen>(data: &[I], cols: usize, sums: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { add_rows_avx2(data, cols, sums) };
    }
    add_rows_body(data, cols, sums)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn add_rows_avx2<I: Widen>(data: &[I], cols: usize, sums: &mut [f64]) {
    add_rows_body(data, cols, sums)
}

#[inline(always)]
fn add_rows_body<I: Widen>(data: &[I], cols: usize, sums: &mut [f64]) {
    if cols == 0 {
        return;
    }
    for row in data.chunks_exact(cols) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += v.widen();
        }
    }
}

/// Each `shift.len()`-wide row of `src`, minus `shift`, into row `i` of the row-major `dst`
/// at `dst[i * ld + off..]`.
fn centre_rows<I: Widen, O: Centred>(src: &[I], shift: &[f64], dst: &mut [O], at: (usize, usize)) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { centre_rows_avx2(src, shift, dst, at) };
    }
    centre_rows_body(src, shift, dst, at)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn centre_rows_avx2<I: Widen, O: Centred>(
    src: &[I],
    shift: &[f64],
    dst: &mut [O],
    at: (usize, usize),
) {
    centre_rows_body(src, shift, dst, at)
}

#[inline(always)]
fn centre_rows_body<I: Widen, O: Centred>(
    src: &[I],
    shift: &[f64],
    dst: &mut [O],
    (ld, off): (usize, usize),
) {
    let cols = shift.len();
    if cols == 0 {
        return;
    }
    for (i, row) in src.chunks_exact(cols).enumerate() {
        let out = &mut dst[i * ld + off..][..cols];
        for ((o, &x), &m) in out.iter_mut().zip(row).zip(shift) {
            *o = O::from_f64(x.widen() - m);
        }
    }
}

/// A value of a stored block, widened to f64 for centring.
pub(crate) trait Widen: Copy {
    fn widen(self) -> f64;

    /// Four consecutive values from `p`, widened.
    ///
    /// # Safety
    /// `p..p + 4` must be readable, and the CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load4(p: *const Self) -> std::arch::x86_64::__m256d;
}

impl Widen for f32 {
    #[inline(always)]
    fn widen(self) -> f64 {
        self as f64
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load4(p: *const Self) -> std::arch::x86_64::__m256d {
        use std::arch::x86_64::{_mm_loadu_ps, _mm256_cvtps_pd};
        // SAFETY: the caller guarantees four readable values.
        unsafe { _mm256_cvtps_pd(_mm_loadu_ps(p)) }
    }
}

impl Widen for f64 {
    #[inline(always)]
    fn widen(self) -> f64 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load4(p: *const Self) -> std::arch::x86_64::__m256d {
        // SAFETY: the caller guarantees four readable values.
        unsafe { std::arch::x86_64::_mm256_loadu_pd(p) }
    }
}

/// The row-major `src` (`cols` wide), minus `shift` per column, into columns `off..` of the
/// column-major `dst` (columns `ld` apart).
fn transpose_centred<I: Widen, O: Centred>(
    src: &[I],
    cols: usize,
    shift: &[f64],
    dst: &mut [O],
    (ld, off): (usize, usize),
) {
    const BLOCK: usize = 8;
    if cols == 0 || src.is_empty() {
        return;
    }
    let shift = &shift[..cols];
    // Every write below lands in `dst` (the vectorised blocks rely on this one check).
    let last_column = (off + cols - 1) * ld;
    assert!(
        last_column + src.len() / cols <= dst.len(),
        "column-major scratch too small: {} values for {} rows of {cols} columns at stride {ld}",
        dst.len(),
        src.len() / cols
    );
    // The scalar loop below is compiled for the baseline x86-64 (SSE2): eight rows at a time
    // with AVX2 shuffles (4 × 4 transposes) when the CPU has them, bit for bit the same values.
    #[cfg(target_arch = "x86_64")]
    let simd_cols = if std::arch::is_x86_feature_detected!("avx2") {
        cols & !3
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let simd_cols = 0;
    let mut rows = src.chunks_exact(cols * BLOCK);
    let mut r = 0;
    for block in rows.by_ref() {
        #[cfg(target_arch = "x86_64")]
        if simd_cols > 0 {
            // SAFETY: AVX2 is present; `block` holds eight rows of `cols ≥ simd_cols` values and
            // `shift` `cols` values; the writes, columns `off..off + simd_cols` rows `r..r + 8`,
            // lie within `dst` by the check above (`r + 8` rows of `src` exist).
            unsafe {
                transpose_block8(
                    block.as_ptr(),
                    (cols, simd_cols),
                    shift.as_ptr(),
                    dst.as_mut_ptr().add(off * ld + r),
                    ld,
                )
            };
        }
        let row: [&[I]; BLOCK] = std::array::from_fn(|k| &block[k * cols..][..cols]);
        for (j, &m) in shift.iter().enumerate().skip(simd_cols) {
            let out = &mut dst[(off + j) * ld + r..][..BLOCK];
            for (o, x) in out.iter_mut().zip(&row) {
                *o = O::from_f64(x[j].widen() - m);
            }
        }
        r += BLOCK;
    }
    for (i, x) in rows.remainder().chunks_exact(cols).enumerate() {
        for (j, (&v, &m)) in x.iter().zip(shift).enumerate() {
            dst[(off + j) * ld + r + i] = O::from_f64(v.widen() - m);
        }
    }
}

/// Columns `0..simd_cols` (a multiple of 4) of eight rows at `src` (row-major, `cols` wide),
/// minus `shift`, into eight consecutive values of each column at `dst` (columns `ld` apart).
///
/// # Safety
/// The CPU must have AVX2; `src` must hold `8 × cols` values, `shift` `simd_cols`, and
/// `dst + j·ld + 0..8` must be writable for every `j < simd_cols`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_block8<I: Widen, O: Centred>(
    src: *const I,
    (cols, simd_cols): (usize, usize),
    shift: *const f64,
    dst: *mut O,
    ld: usize,
) {
    use std::arch::x86_64::{
        _mm256_loadu_pd, _mm256_permute2f128_pd, _mm256_sub_pd, _mm256_unpackhi_pd,
        _mm256_unpacklo_pd,
    };
    for j in (0..simd_cols).step_by(4) {
        // SAFETY: within the bounds the caller guarantees (see above).
        unsafe {
            let m = _mm256_loadu_pd(shift.add(j));
            for k0 in [0, 4] {
                let a = |k: usize| _mm256_sub_pd(I::load4(src.add((k0 + k) * cols + j)), m);
                let (a0, a1, a2, a3) = (a(0), a(1), a(2), a(3));
                // a_k holds row k0 + k, columns j..j + 4; the shuffles make columns of rows.
                let (t0, t1) = (_mm256_unpacklo_pd(a0, a1), _mm256_unpackhi_pd(a0, a1));
                let (t2, t3) = (_mm256_unpacklo_pd(a2, a3), _mm256_unpackhi_pd(a2, a3));
                let out = |c: usize| dst.add((j + c) * ld + k0);
                O::store4(out(0), _mm256_permute2f128_pd::<0x20>(t0, t2));
                O::store4(out(1), _mm256_permute2f128_pd::<0x20>(t1, t3));
                O::store4(out(2), _mm256_permute2f128_pd::<0x31>(t0, t2));
                O::store4(out(3), _mm256_permute2f128_pd::<0x31>(t1, t3));
            }
        }
    }
}

/// A centred value as the chunk's product takes it: f64, or rounded to f32 (mixed precision).
pub(crate) trait Centred: Copy {
    fn from_f64(v: f64) -> Self;

    /// Stores four values at `p`, as [`Centred::from_f64`] would.
    ///
    /// # Safety
    /// `p..p + 4` must be writable, and the CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    unsafe fn store4(p: *mut Self, v: std::arch::x86_64::__m256d);
}

impl Centred for f64 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store4(p: *mut Self, v: std::arch::x86_64::__m256d) {
        // SAFETY: the caller guarantees four writable values.
        unsafe { std::arch::x86_64::_mm256_storeu_pd(p, v) }
    }
}

impl Centred for f32 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store4(p: *mut Self, v: std::arch::x86_64::__m256d) {
        use std::arch::x86_64::{_mm_storeu_ps, _mm256_cvtpd_ps};
        // Rounds to nearest, ties to even (the default MXCSR mode), as `v as f32` does.
        // SAFETY: the caller guarantees four writable values.
        unsafe { _mm_storeu_ps(p, _mm256_cvtpd_ps(v)) }
    }
}

/// The error for the first non-finite value of `pieces` (in piece order, then row-major), its
/// datapoint counted from `n0`, the datapoints seen before them.
fn first_non_finite_error(pieces: &[RowBlock<'_>], rows: usize, n0: u64) -> Option<CoreError> {
    pieces.iter().enumerate().find_map(|(idx, p)| {
        p.first_non_finite(0, rows)
            .map(|(r, c, v)| CoreError::NonFinite {
                input: idx,
                row: n0 + r as u64,
                column: c,
                value: v,
            })
    })
}

/// Writes rows `r0..r1` of the side-by-side `pieces`, each centred on its columns of `means`,
/// into the column-major front of `scratch` (grown as needed, with room for `extra` rows under
/// them), columns [`padded_stride`] apart; returns that stride.
fn write_chunk<O: Centred + Default>(
    pieces: &[RowBlock<'_>],
    (r0, r1, extra): (usize, usize, usize),
    means: &[f64],
    scratch: &mut Vec<O>,
    d: usize,
) -> usize {
    let ld = padded_stride(r1 - r0 + extra, std::mem::size_of::<O>());
    if scratch.len() < d * ld {
        scratch.resize(d * ld, O::default());
    }
    let mut off = 0;
    for p in pieces {
        let c = p.cols();
        p.write_centred_cols(
            r0,
            r1,
            &means[off..off + c],
            &mut scratch[..d * ld],
            (ld, off),
        );
        off += c;
    }
    ld
}

/// Plain-data form of a [`MomentAccumulator`], for serialisation by the engine.
#[derive(Clone, Debug, PartialEq)]
pub struct MomentParts {
    /// Number of datapoints.
    pub n: u64,
    /// Mean, length `d`.
    pub mean: Vec<f64>,
    /// Centred co-moment `M`, `d × d`, full symmetric, row-major (= column-major).
    pub comoment: Vec<f64>,
}

/// Streaming mean and centred co-moment of `d` neurons; see the module docs.
#[derive(Clone, Debug)]
pub struct MomentAccumulator {
    d: usize,
    n: u64,
    mean: Vec<f64>,
    /// Only the lower triangle (diagonal included) is meaningful.
    m_lower: Mat<f64>,
    /// Reused per chunk so the hot loop does not allocate.
    scratch: Vec<f64>,
    sums: Vec<f64>,
    /// Rows per chunk ([`MOMENT_CHUNK_ROWS`]; tests set others).
    chunk_rows: usize,
    precision: Precision,
    /// Mixed precision's chunk rows and chunk Gram (lower triangle), reused per chunk.
    scratch32: Vec<f32>,
    gram32: Mat<f32>,
}

impl MomentAccumulator {
    /// An empty accumulator over `d` neurons.
    pub fn new(d: usize) -> Self {
        Self::with_precision(d, Precision::F64)
    }

    /// An empty accumulator over `d` neurons whose per-chunk products run in `precision`.
    pub fn with_precision(d: usize, precision: Precision) -> Self {
        MomentAccumulator {
            d,
            n: 0,
            mean: vec![0.0; d],
            m_lower: Mat::zeros(d, d),
            scratch: Vec::new(),
            sums: Vec::new(),
            chunk_rows: MOMENT_CHUNK_ROWS,
            precision,
            scratch32: Vec::new(),
            gram32: Mat::new(),
        }
    }

    /// The precision of this accumulator's per-chunk products.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Number of neurons.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Number of datapoints seen.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// The mean (length `d`; zeros while empty).
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The centred co-moment `M = Σ (x−μ)(x−μ)ᵀ`, full symmetric `d × d`.
    pub fn comoment(&self) -> Mat<f64> {
        symmetric_from_lower(self.m_lower.as_ref())
    }

    /// The sample covariance `M / (n − 1)`, full symmetric.
    pub fn covariance(&self) -> Result<Mat<f64>> {
        if self.n < 2 {
            return Err(CoreError::TooFewDatapoints { n: self.n });
        }
        let s = 1.0 / (self.n - 1) as f64;
        let mut c = self.comoment();
        c *= faer::Scale(s);
        Ok(c)
    }

    /// The diagonal of `M` (per-neuron sums of squared deviations).
    pub fn comoment_diagonal(&self) -> Vec<f64> {
        (0..self.d).map(|i| self.m_lower[(i, i)]).collect()
    }

    /// The lower triangle of `M` (upper part unspecified). For callers that only read the
    /// lower triangle (e.g. a self-adjoint eigendecomposition with `Side::Lower`) and want to
    /// avoid the copy.
    pub fn comoment_lower(&self) -> MatRef<'_, f64> {
        self.m_lower.as_ref()
    }

    /// The uncentred second moment `Σ x xᵀ = M + n μμᵀ` (full symmetric). Only for formulas
    /// that need it (google's PWCCA weights); never used to *compute* `M`.
    pub fn uncentred_second_moment(&self) -> Mat<f64> {
        let nf = self.n as f64;
        let mut s = self.comoment();
        for j in 0..self.d {
            for i in 0..self.d {
                s[(i, j)] += nf * self.mean[i] * self.mean[j];
            }
        }
        s
    }

    /// Adds a block of rows `[rows, d]`.
    ///
    /// Errors: wrong column count, a buffer whose length is not `rows * cols`, or a non-finite
    /// value (reported with its datapoint index counted from the start of this accumulator's
    /// stream). On error the accumulator is unchanged.
    pub fn push(&mut self, block: RowBlock<'_>) -> Result<()> {
        self.push_pieces(&[block])
    }

    /// Adds a block made of several pieces side by side (same rows; their column counts must sum
    /// to `d`). Used by [`JointMoments`] to accumulate `[x | y]` without copying.
    pub(crate) fn push_pieces(&mut self, pieces: &[RowBlock<'_>]) -> Result<()> {
        let rows = match pieces.first() {
            Some(p) => p.rows(),
            None => return Ok(()),
        };
        let mut total_cols = 0usize;
        for p in pieces {
            p.check_shape()?;
            if p.rows() != rows {
                return Err(CoreError::DatapointMismatch {
                    n_x: rows as u64,
                    n_y: p.rows() as u64,
                });
            }
            total_cols += p.cols();
        }
        if total_cols != self.d {
            return Err(CoreError::DimensionMismatch {
                what: "row block",
                expected: self.d,
                found: total_cols,
            });
        }
        if rows == 0 {
            return Ok(());
        }
        if self.d == 0 {
            self.n += rows as u64;
            return Ok(());
        }
        // No separate finiteness scan: a non-finite value makes its column's chunk sum
        // non-finite, and the sums are needed anyway. An error must leave the accumulator
        // untouched, so a block of several chunks keeps the state to restore until it is done.
        let chunk = self.chunk_rows.min(rows);
        let n0 = self.n;
        let saved = (chunk < rows).then(|| (self.n, self.mean.clone(), self.m_lower.clone()));
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + chunk).min(rows);
            // Non-finite sums can also be an overflow of huge f64 values: the exact scan
            // decides, over the whole block so the first bad value is the one reported.
            if !self.chunk_sums(pieces, r0, r1)
                && let Some(e) = first_non_finite_error(pieces, rows, n0)
            {
                if let Some((n, mean, m_lower)) = saved {
                    (self.n, self.mean, self.m_lower) = (n, mean, m_lower);
                }
                return Err(e);
            }
            self.push_chunk(pieces, r0, r1);
            r0 = r1;
        }
        Ok(())
    }

    /// Puts the column sums of rows `r0..r1` into `self.sums`; false when one is not finite.
    fn chunk_sums(&mut self, pieces: &[RowBlock<'_>], r0: usize, r1: usize) -> bool {
        self.sums.clear();
        self.sums.resize(self.d, 0.0);
        let mut off = 0;
        for p in pieces {
            let c = p.cols();
            p.add_column_sums(r0, r1, &mut self.sums[off..off + c]);
            off += c;
        }
        self.sums.iter().fold(true, |ok, s| ok & s.is_finite())
    }

    /// Merges rows `r0..r1`, whose column sums [`Self::chunk_sums`] left in `self.sums`.
    fn push_chunk(&mut self, pieces: &[RowBlock<'_>], r0: usize, r1: usize) {
        let d = self.d;
        let nb = r1 - r0;
        let inv = 1.0 / nb as f64;
        for s in self.sums.iter_mut() {
            *s *= inv; // now the chunk mean
        }
        // Chan's merge term `w·δδᵀ` (δ the chunk mean minus the running one, w = n_a·n_b/n) is,
        // in f64, one more row `sqrt(w)·δ` under the chunk's rows, so the product adds it: a
        // separate rank-one update would read and write the whole `d × d` co-moment once per
        // chunk, evicting the chunk from cache (2% of a sweep's samples). Mixed precision keeps
        // it in f64, outside its f32 product.
        let chan_row = usize::from(self.n > 0 && self.precision == Precision::F64);
        let ld = match self.precision {
            Precision::F64 => {
                write_chunk(pieces, (r0, r1, chan_row), &self.sums, &mut self.scratch, d)
            }
            Precision::Mixed => {
                write_chunk(pieces, (r0, r1, 0), &self.sums, &mut self.scratch32, d)
            }
        };
        let na = self.n as f64;
        let nbf = nb as f64;
        let ntot = na + nbf;
        if self.n > 0 {
            let w = na * nbf / ntot;
            if chan_row == 1 {
                let root_w = w.sqrt();
                for (j, (s, m)) in self.sums.iter().zip(&self.mean).enumerate() {
                    self.scratch[j * ld + nb] = root_w * (s - m);
                }
            } else {
                for j in 0..d {
                    let dj = self.sums[j] - self.mean[j];
                    let wdj = w * dj;
                    let col = self.m_lower.col_mut(j);
                    let col = col
                        .try_as_col_major_mut()
                        .expect("owned Mat is column-major");
                    let col = col.as_slice_mut();
                    for ((c, s), m) in col[j..]
                        .iter_mut()
                        .zip(&self.sums[j..])
                        .zip(&self.mean[j..])
                    {
                        *c += (s - m) * wdj;
                    }
                }
            }
            for i in 0..d {
                self.mean[i] += (self.sums[i] - self.mean[i]) * (nbf / ntot);
            }
        } else {
            self.mean.copy_from_slice(&self.sums);
        }
        match self.precision {
            Precision::F64 => {
                let rows = nb + chan_row;
                crate::products::gram_lower(
                    self.m_lower.as_mut(),
                    Accum::Add,
                    MatRef::from_column_major_slice_with_stride(
                        &self.scratch[..d * ld],
                        rows,
                        d,
                        ld,
                    ),
                    1.0,
                    crate::parallelism(),
                )
            }
            Precision::Mixed => {
                if self.gram32.nrows() != d {
                    self.gram32 = Mat::zeros(d, d);
                }
                crate::products::gram_lower(
                    self.gram32.as_mut(),
                    Accum::Replace,
                    MatRef::from_column_major_slice_with_stride(
                        &self.scratch32[..d * ld],
                        nb,
                        d,
                        ld,
                    ),
                    1.0f32,
                    crate::parallelism(),
                );
                for j in 0..d {
                    let dst = self.m_lower.col_mut(j).try_as_col_major_mut();
                    let src = self.gram32.col(j).try_as_col_major();
                    let (dst, src) = (
                        dst.expect("owned Mat is column-major").as_slice_mut(),
                        src.expect("owned Mat is column-major").as_slice(),
                    );
                    for (m, &g) in dst[j..].iter_mut().zip(&src[j..]) {
                        *m += g as f64;
                    }
                }
            }
        }
        self.n += nb as u64;
    }

    /// Merges `other` into `self` exactly (Chan et al.). Both must have the same `d`.
    pub fn merge(&mut self, other: &MomentAccumulator) -> Result<()> {
        if other.d != self.d {
            return Err(CoreError::DimensionMismatch {
                what: "merging moment accumulators",
                expected: self.d,
                found: other.d,
            });
        }
        if other.n == 0 {
            return Ok(());
        }
        if self.n == 0 {
            self.n = other.n;
            self.mean.copy_from_slice(&other.mean);
            self.m_lower.copy_from(&other.m_lower);
            return Ok(());
        }
        let d = self.d;
        let na = self.n as f64;
        let nb = other.n as f64;
        let nt = na + nb;
        let w = na * nb / nt;
        for j in 0..d {
            let wdj = w * (other.mean[j] - self.mean[j]);
            for i in j..d {
                self.m_lower[(i, j)] +=
                    other.m_lower[(i, j)] + (other.mean[i] - self.mean[i]) * wdj;
            }
        }
        for i in 0..d {
            self.mean[i] += (other.mean[i] - self.mean[i]) * (nb / nt);
        }
        self.n += other.n;
        Ok(())
    }

    /// The plain-data form (full symmetric co-moment).
    pub fn to_parts(&self) -> MomentParts {
        let m = self.comoment();
        let mut comoment = Vec::with_capacity(self.d * self.d);
        for i in 0..self.d {
            for j in 0..self.d {
                comoment.push(m[(i, j)]);
            }
        }
        MomentParts {
            n: self.n,
            mean: self.mean.clone(),
            comoment,
        }
    }

    /// Rebuilds an accumulator from [`MomentParts`]. The co-moment is read from its lower
    /// triangle (row-major index `i * d + j`, `i ≥ j`).
    pub fn from_parts(parts: MomentParts) -> Result<Self> {
        let d = parts.mean.len();
        if parts.comoment.len() != d * d {
            return Err(CoreError::InvalidParts {
                detail: format!(
                    "mean has {d} entries so the co-moment needs {} values, got {}",
                    d * d,
                    parts.comoment.len()
                ),
            });
        }
        if let Some(i) = parts.mean.iter().position(|v| !v.is_finite()) {
            return Err(CoreError::InvalidParts {
                detail: format!("mean[{i}] is not finite"),
            });
        }
        if let Some(i) = parts.comoment.iter().position(|v| !v.is_finite()) {
            return Err(CoreError::InvalidParts {
                detail: format!("co-moment entry ({}, {}) is not finite", i / d, i % d),
            });
        }
        if let Some(i) = (0..d).find(|&i| parts.comoment[i * d + i] < 0.0) {
            return Err(CoreError::InvalidParts {
                detail: format!("co-moment diagonal entry {i} is negative"),
            });
        }
        let mut acc = MomentAccumulator::new(d);
        acc.n = parts.n;
        acc.mean = parts.mean;
        for j in 0..d {
            for i in j..d {
                acc.m_lower[(i, j)] = parts.comoment[i * d + j];
            }
        }
        Ok(acc)
    }

    /// An accumulator made of given statistics (lower triangle of `m` used), accumulated in
    /// `precision`.
    pub(crate) fn from_lower(
        n: u64,
        mean: Vec<f64>,
        m: MatRef<'_, f64>,
        precision: Precision,
    ) -> Self {
        let d = mean.len();
        let mut acc = MomentAccumulator::with_precision(d, precision);
        acc.n = n;
        acc.mean = mean;
        for j in 0..d {
            for i in j..d {
                acc.m_lower[(i, j)] = m[(i, j)];
            }
        }
        acc
    }
}

/// Full symmetric copy of a matrix whose lower triangle is meaningful.
pub(crate) fn symmetric_from_lower(l: MatRef<'_, f64>) -> Mat<f64> {
    let d = l.nrows();
    Mat::from_fn(d, d, |i, j| if i >= j { l[(i, j)] } else { l[(j, i)] })
}

/// Moments of a pair of representations `x` (`d_x` neurons) and `y` (`d_y` neurons) over the
/// same datapoints: one accumulator over the concatenated columns `[x | y]`.
#[derive(Clone, Debug)]
pub struct JointMoments {
    acc: MomentAccumulator,
    dx: usize,
}

impl JointMoments {
    /// Empty joint moments for `dx` + `dy` neurons.
    pub fn new(dx: usize, dy: usize) -> Self {
        Self::with_precision(dx, dy, Precision::F64)
    }

    /// Empty joint moments whose per-chunk products run in `precision`.
    pub fn with_precision(dx: usize, dy: usize, precision: Precision) -> Self {
        JointMoments {
            acc: MomentAccumulator::with_precision(dx + dy, precision),
            dx,
        }
    }

    /// Adds the same datapoints of both representations (`x: [rows, dx]`, `y: [rows, dy]`).
    /// A non-finite value is reported with `input` 0 (x) or 1 (y).
    pub fn push(&mut self, x: RowBlock<'_>, y: RowBlock<'_>) -> Result<()> {
        if x.cols() != self.dx {
            return Err(CoreError::DimensionMismatch {
                what: "x row block",
                expected: self.dx,
                found: x.cols(),
            });
        }
        if y.cols() != self.dy() {
            return Err(CoreError::DimensionMismatch {
                what: "y row block",
                expected: self.dy(),
                found: y.cols(),
            });
        }
        if x.rows() != y.rows() {
            return Err(CoreError::DatapointMismatch {
                n_x: x.rows() as u64,
                n_y: y.rows() as u64,
            });
        }
        self.acc.push_pieces(&[x, y])
    }

    /// Merges another joint accumulator of the same shape.
    pub fn merge(&mut self, other: &JointMoments) -> Result<()> {
        if other.dx != self.dx {
            return Err(CoreError::DimensionMismatch {
                what: "merging joint moments (x side)",
                expected: self.dx,
                found: other.dx,
            });
        }
        self.acc.merge(&other.acc)
    }

    /// Builds joint moments from an accumulator over `[x | y]` with `dx` x-columns.
    pub fn from_accumulator(acc: MomentAccumulator, dx: usize) -> Result<Self> {
        if dx > acc.dim() {
            return Err(CoreError::DimensionMismatch {
                what: "joint split point",
                expected: acc.dim(),
                found: dx,
            });
        }
        Ok(JointMoments { acc, dx })
    }

    /// The accumulator over `[x | y]`.
    pub fn joint(&self) -> &MomentAccumulator {
        &self.acc
    }

    /// Number of datapoints.
    pub fn n(&self) -> u64 {
        self.acc.n
    }

    /// Neurons of x.
    pub fn dx(&self) -> usize {
        self.dx
    }

    /// Neurons of y.
    pub fn dy(&self) -> usize {
        self.acc.d - self.dx
    }

    /// The marginal moments of x.
    pub fn x(&self) -> MomentAccumulator {
        let dx = self.dx;
        MomentAccumulator::from_lower(
            self.acc.n,
            self.acc.mean[..dx].to_vec(),
            self.acc.m_lower.as_ref().submatrix(0, 0, dx, dx),
            self.acc.precision,
        )
    }

    /// The marginal moments of y.
    pub fn y(&self) -> MomentAccumulator {
        let (dx, dy) = (self.dx, self.dy());
        MomentAccumulator::from_lower(
            self.acc.n,
            self.acc.mean[dx..].to_vec(),
            self.acc.m_lower.as_ref().submatrix(dx, dx, dy, dy),
            self.acc.precision,
        )
    }

    /// The cross co-moment `M_xy = Σ (x − μ_x)(y − μ_y)ᵀ`, `dx × dy`.
    pub fn cross(&self) -> Mat<f64> {
        let (dx, dy) = (self.dx, self.dy());
        // The lower triangle holds the (y, x) block.
        self.acc
            .m_lower
            .as_ref()
            .submatrix(dx, 0, dy, dx)
            .transpose()
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, d: usize) -> Vec<f64> {
        // Deterministic, correlated, with a large offset to exercise the centring.
        (0..n * d)
            .map(|i| {
                let (r, c) = (i / d, i % d);
                1e3 + ((r * 7919 + c * 104729) % 1000) as f64 / 100.0 + (r % 13) as f64 * c as f64
            })
            .collect()
    }

    #[test]
    fn padded_strides_hold_the_row_and_an_odd_number_of_cache_lines() {
        for elem in [4usize, 8, 16] {
            for d in [1usize, 7, 8, 16, 39, 64, 128, 384, 512, 1000, 1024, 4096] {
                let ld = super::padded_stride(d, elem);
                assert!(ld >= d, "{d} of {elem} bytes: {ld}");
                assert_eq!(
                    ld * elem % 64,
                    0,
                    "{d} of {elem} bytes: {ld} is not whole lines"
                );
                assert_eq!(ld * elem / 64 % 2, 1, "{d} of {elem} bytes: {ld}");
                assert!(
                    ld - d < 2 * 64 / elem,
                    "{d} of {elem} bytes: {ld} pads too much"
                );
            }
        }
    }

    /// Odd widths and row ranges around the copies' blocks of eight rows and four columns:
    /// `f(rows, cols, r0, r1, x64, x32, shift)` for each, `x32` the f32 copy of `x64`.
    fn centring_cases(mut f: impl FnMut(usize, usize, usize, usize, &[f64], &[f32], &[f64])) {
        for (rows, cols, r0, r1) in [
            (40, 24, 0, 40),
            (37, 19, 3, 37),
            (9, 8, 1, 9),
            (7, 3, 0, 7),
            (300, 5, 0, 300),
            (17, 33, 0, 17),
        ] {
            let x64 = data(rows, cols);
            let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
            let shift: Vec<f64> = (0..cols).map(|c| c as f64 * 0.25 - 1.0).collect();
            f(rows, cols, r0, r1, &x64, &x32, &shift);
        }
    }

    #[test]
    fn centred_columns_are_written_exactly_for_every_shape_offset_and_piece() {
        // Also a block of stacked pieces whose boundary falls inside an eight-row block, and
        // columns at an offset in the scratch.
        centring_cases(|rows, cols, r0, r1, x64, x32, shift| {
            let (off, nb) = (3, r1 - r0);
            let ld = nb + 5;
            let cut = rows / 3;
            let pieces = [
                RowBlock::f32(&x32[..cut * cols], cut, cols).unwrap(),
                RowBlock::f32(&x32[cut * cols..], rows - cut, cols).unwrap(),
            ];
            for (name, block) in [
                ("f32", RowBlock::f32(x32, rows, cols).unwrap()),
                ("f64", RowBlock::f64(x64, rows, cols).unwrap()),
                ("stacked f32", RowBlock::stacked(&pieces, cols).unwrap()),
            ] {
                let mut dst = vec![f64::NAN; ld * (off + cols + 1)];
                block.write_centred_cols(r0, r1, shift, &mut dst, (ld, off));
                for r in 0..nb {
                    for c in 0..cols {
                        let v = match block {
                            RowBlock::F64 { .. } => x64[(r0 + r) * cols + c],
                            _ => x32[(r0 + r) * cols + c] as f64,
                        };
                        assert_eq!(
                            dst[(off + c) * ld + r],
                            v - shift[c],
                            "{name} {rows}x{cols} r{r} c{c}"
                        );
                    }
                }
                // Nothing outside the block's rows and the piece's columns is written.
                let inside = |i: usize| (off..off + cols).contains(&(i / ld)) && i % ld < nb;
                assert!(
                    dst.iter().enumerate().all(|(i, v)| inside(i) || v.is_nan()),
                    "{name} {rows}x{cols}"
                );
                // Mixed precision's f32 scratch gets the same values, rounded once.
                let mut dst32 = vec![f32::NAN; ld * (off + cols + 1)];
                block.write_centred_cols(r0, r1, shift, &mut dst32, (ld, off));
                for (i, (&v32, &v64)) in dst32.iter().zip(&dst).enumerate() {
                    assert!(
                        v32.to_bits() == (v64 as f32).to_bits() || (!inside(i) && v32.is_nan()),
                        "{name} {rows}x{cols} f32 at {i}: {v32} against {v64}"
                    );
                }
            }
        });
    }

    #[test]
    fn centred_rows_are_written_exactly_for_every_shape_and_offset() {
        // Also a piece at an offset in a wider scratch row.
        centring_cases(|rows, cols, r0, r1, x64, x32, shift| {
            let (off, nb) = (3, r1 - r0);
            let ld = off + cols + 2;
            for block in [
                RowBlock::f32(x32, rows, cols).unwrap(),
                RowBlock::f64(x64, rows, cols).unwrap(),
            ] {
                let mut dst = vec![f64::NAN; ld * nb];
                block.write_centred_rows(r0, r1, shift, &mut dst, (ld, off));
                for r in 0..nb {
                    for c in 0..cols {
                        let v = match block {
                            RowBlock::F32 { .. } => x32[(r0 + r) * cols + c] as f64,
                            _ => x64[(r0 + r) * cols + c],
                        };
                        assert_eq!(
                            dst[r * ld + off + c],
                            v - shift[c],
                            "{rows}x{cols} r{r} c{c}"
                        );
                    }
                }
                // Nothing outside the piece's columns is written.
                let inside = |i: usize| (off..off + cols).contains(&(i % ld));
                assert!(dst.iter().enumerate().all(|(i, v)| inside(i) || v.is_nan()));
            }
        });
    }

    #[test]
    fn stacked_pieces_give_the_bits_of_the_gathered_block() {
        let (n, d) = (1500, 24);
        let x64 = data(n, d);
        let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
        // Piece boundaries inside and on chunk boundaries, an empty piece, and nesting.
        for cuts in [vec![700], vec![256, 512], vec![1, 0, 1498], vec![]] {
            let mut bounds = vec![0];
            for c in &cuts {
                bounds.push(bounds.last().unwrap() + c);
            }
            bounds.push(n);
            let pieces: Vec<RowBlock<'_>> = bounds
                .windows(2)
                .map(|w| RowBlock::f32(&x32[w[0] * d..w[1] * d], w[1] - w[0], d).unwrap())
                .collect();
            let stacked = RowBlock::stacked(&pieces, d).unwrap();
            let nested_outer = [stacked];
            let nested = RowBlock::stacked(&nested_outer, d).unwrap();
            let whole = RowBlock::f32(&x32, n, d).unwrap();
            let mut want = MomentAccumulator::new(d);
            want.chunk_rows = 300;
            want.push(whole).unwrap();
            for block in [stacked, nested] {
                assert_eq!(block.rows(), n);
                let mut got = MomentAccumulator::new(d);
                got.chunk_rows = 300;
                got.push(block).unwrap();
                assert_eq!(got.n(), want.n());
                let bits = |a: &MomentAccumulator| -> Vec<u64> {
                    a.mean()
                        .iter()
                        .chain(a.comoment().col_iter().flat_map(|c| c.iter()))
                        .map(|v| v.to_bits())
                        .collect()
                };
                assert_eq!(bits(&got), bits(&want), "cuts {cuts:?}");
                assert_eq!(block.get(n - 1, 3), whole.get(n - 1, 3));
            }
        }
        // A bad value in the second piece is reported at its row in the whole block.
        let mut bad = x32.clone();
        bad[1000 * d + 5] = f32::NAN;
        let pieces = [
            RowBlock::f32(&bad[..700 * d], 700, d).unwrap(),
            RowBlock::f32(&bad[700 * d..], n - 700, d).unwrap(),
        ];
        let err = MomentAccumulator::new(d)
            .push(RowBlock::stacked(&pieces, d).unwrap())
            .unwrap_err();
        assert!(
            matches!(
                err,
                CoreError::NonFinite {
                    row: 1000,
                    column: 5,
                    ..
                }
            ),
            "{err}"
        );
        let narrow = [RowBlock::f32(&x32[..d - 1], 1, d - 1).unwrap()];
        let err = RowBlock::stacked(&narrow, d).unwrap_err();
        assert!(
            matches!(err, CoreError::DimensionMismatch { expected, found, .. } if expected == d && found == d - 1),
            "{err}"
        );
        assert!(err.to_string().contains("stacked row blocks"), "{err}");
    }

    #[test]
    fn chunked_push_equals_single_chunk() {
        let (n, d) = (1000, 5);
        let x = data(n, d);
        let mut one = MomentAccumulator::new(d);
        one.chunk_rows = n;
        one.push(RowBlock::f64(&x, n, d).unwrap()).unwrap();
        let mut many = MomentAccumulator::new(d);
        many.chunk_rows = 256; // 4 chunks
        many.push(RowBlock::f64(&x, n, d).unwrap()).unwrap();
        assert_eq!(many.n(), 1000);
        let (a, b) = (one.comoment(), many.comoment());
        for i in 0..d {
            assert!((one.mean()[i] - many.mean()[i]).abs() < 1e-12);
            for j in 0..d {
                assert!((a[(i, j)] - b[(i, j)]).abs() <= 1e-12 * a[(i, i)].max(a[(j, j)]));
                assert_eq!(a[(i, j)], a[(j, i)], "symmetric");
            }
        }
    }

    #[test]
    fn a_bad_value_in_a_late_chunk_is_reported_and_leaves_the_accumulator_unchanged() {
        let (n, d) = (1000, 5);
        let mut x = data(n, d);
        let mut acc = MomentAccumulator::new(d);
        acc.chunk_rows = 256; // 256-row chunks: the bad values sit in the third and fourth
        acc.push(RowBlock::f64(&x[..10 * d], 10, d).unwrap())
            .unwrap();
        let before = acc.to_parts();
        for (row, col, bad) in [(600, 3, f64::NAN), (900, 0, f64::NEG_INFINITY)] {
            x[row * d + col] = bad;
        }
        for pieces in [1, 2] {
            // As one block, and as the y side of a joint block whose x side is clean.
            let e = if pieces == 1 {
                acc.push(RowBlock::f64(&x, n, d).unwrap()).unwrap_err()
            } else {
                let clean = data(n, 2);
                let mut joint = MomentAccumulator::new(d + 2);
                joint.chunk_rows = 256;
                joint
                    .push_pieces(&[
                        RowBlock::f64(&clean, n, 2).unwrap(),
                        RowBlock::f64(&x, n, d).unwrap(),
                    ])
                    .unwrap_err()
            };
            let CoreError::NonFinite {
                input, row, column, ..
            } = e
            else {
                panic!("{e:?}");
            };
            let base = if pieces == 1 { 10 } else { 0 };
            assert_eq!((input, row, column), (pieces - 1, base + 600, 3));
        }
        let after = acc.to_parts();
        assert_eq!(after.n, before.n);
        assert_eq!(after.mean, before.mean);
        assert_eq!(after.comoment, before.comoment);
    }

    #[test]
    fn huge_finite_values_whose_sums_overflow_are_accepted() {
        let d = 2;
        let x = [f64::MAX, 1.0, f64::MAX, 2.0, 0.0, 3.0];
        let mut acc = MomentAccumulator::new(d);
        acc.push(RowBlock::f64(&x, 3, d).unwrap()).unwrap();
        assert_eq!(acc.n(), 3);
    }

    #[test]
    fn joint_blocks_are_the_marginals() {
        let (n, dx, dy) = (300, 3, 2);
        let x = data(n, dx);
        let y: Vec<f64> = data(n, dy).iter().map(|v| v * 0.5 - 3.0).collect();
        let mut j = JointMoments::new(dx, dy);
        j.push(
            RowBlock::f64(&x, n, dx).unwrap(),
            RowBlock::f64(&y, n, dy).unwrap(),
        )
        .unwrap();
        let mut mx = MomentAccumulator::new(dx);
        mx.push(RowBlock::f64(&x, n, dx).unwrap()).unwrap();
        let (a, b) = (j.x().comoment(), mx.comoment());
        for i in 0..dx {
            for k in 0..dx {
                assert!((a[(i, k)] - b[(i, k)]).abs() <= 1e-12 * b[(i, i)]);
            }
        }
        assert_eq!(j.cross().nrows(), dx);
        assert_eq!(j.cross().ncols(), dy);
        assert_eq!(j.y().dim(), dy);
    }
}
