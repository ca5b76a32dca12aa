//! Streaming per-frequency Hermitian moments of a pair of conv layers.
//!
//! At each computed location `ℓ` of the plan (see [`super::plan`]) every image contributes one
//! complex datapoint `z = [X(f_x) | Y(f_y)] ∈ ℂ^{c_x+c_y}`: the channels' DFT values at the
//! location's frequency in each layer. Over the `n` images seen so far the accumulator holds
//!
//! * `n` (the same for every location: every image reaches every frequency),
//! * the mean `μ_ℓ ∈ ℂ^d` (`d = c_x + c_y`),
//! * the centred Hermitian co-moment `M_ℓ = Σ (z − μ_ℓ)(z − μ_ℓ)ᴴ` (`d × d`),
//!
//! in f64 complex whatever the input precision. `M_ℓ[..c_x, c_x..]` is the cross co-moment
//! `Σ (x − μ_x)(y − μ_y)ᴴ`; only the lower triangle is maintained (accessors and
//! [`ConvMomentParts`] give the full matrix). Images arrive in blocks, processed in chunks of up
//! to `chunk` images: first, in parallel over images, every image's spectra are taken and its
//! values at the held locations gathered; then, in parallel over locations, each location's
//! `chunk × d` matrix is centred on its own mean, multiplied into `M_ℓ` (`M_ℓ += Dᵀ D̄`, one
//! triangular GEMM) and merged with Chan et al.'s update `M = M_a + M_b + δδᴴ·n_a·n_b/n`,
//! `δ = μ_b − μ_a`. The same update merges two accumulators
//! ([`ConvMomentAccumulator::merge`]), so any split of the images into shards,
//! merged in any order, gives the same moments to rounding.
//!
//! An accumulator holds either every representative location of the plan or a chosen subset
//! (a *frequency block*, [`ConvMomentAccumulator::for_locations`]), the unit the engine
//! spreads across workers.

use faer::linalg::matmul::triangular::{BlockStructure, matmul as tri_matmul};
use faer::reborrow::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef, Par, c64};
use serde::{Deserialize, Serialize};

use super::error::{ConvError, Side};
use super::input::{ConvInput, Layout};
use super::plan::ConvPlan;
use super::spectrum::Spectrum;

/// Images gathered per GEMM (the product's inner dimension).
const DEFAULT_CHUNK: usize = 64;

/// The serialisable state of a [`ConvMomentAccumulator`] (what the engine ships between
/// workers). Complex numbers are stored as interleaved `(re, im)` f64 pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvMomentParts {
    pub plan: ConvPlan,
    /// Row-major grid indices of the locations held, ascending.
    pub locations: Vec<usize>,
    /// Images seen.
    pub n: u64,
    /// Per location, the mean (`d` complex values).
    pub means: Vec<f64>,
    /// Per location, the full `d × d` Hermitian co-moment, column-major.
    pub comoments: Vec<f64>,
}

/// Streaming per-frequency moments of a pair of conv layers; see the module docs.
pub struct ConvMomentAccumulator {
    plan: ConvPlan,
    locations: Vec<usize>,
    n: u64,
    /// `locations.len() × d`.
    means: Vec<c64>,
    /// `locations.len() × d × d`, column-major per location.
    comoments: Vec<c64>,
    work: Option<Workspace>,
    chunk: usize,
}

/// FFT engines and buffers, created on the first push and reused: one spectrum pair and one
/// scratch per thread, and the gather buffer of one chunk (`chunk × locations × d`).
struct Workspace {
    layouts: (Layout, Layout),
    spectra: Vec<(Spectrum, Spectrum)>,
    gather: Vec<c64>,
    locals: Vec<LocalScratch>,
}

struct LocalScratch {
    centred: Vec<c64>,
    block_mean: Vec<c64>,
}

impl Clone for ConvMomentAccumulator {
    fn clone(&self) -> Self {
        ConvMomentAccumulator {
            plan: self.plan.clone(),
            locations: self.locations.clone(),
            n: self.n,
            means: self.means.clone(),
            comoments: self.comoments.clone(),
            work: None,
            chunk: self.chunk,
        }
    }
}

impl std::fmt::Debug for ConvMomentAccumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvMomentAccumulator")
            .field("grid", &self.plan.grid())
            .field("locations", &self.locations.len())
            .field("n", &self.n)
            .finish()
    }
}

fn zero() -> c64 {
    c64::new(0.0, 0.0)
}

impl ConvMomentAccumulator {
    /// An empty accumulator over every representative location of `plan`.
    pub fn new(plan: &ConvPlan) -> Self {
        let locs = plan.representatives().to_vec();
        Self::with_locations(plan, locs)
    }

    /// An empty accumulator over a frequency block: the given representative locations
    /// (row-major grid indices, e.g. one entry of [`ConvPlan::frequency_blocks`]).
    pub fn for_locations(plan: &ConvPlan, locations: &[usize]) -> Result<Self, ConvError> {
        if locations.is_empty() {
            return Err(ConvError::InvalidOption {
                name: "locations",
                detail: "a frequency block needs at least one location".into(),
            });
        }
        let mut locs = locations.to_vec();
        locs.sort_unstable();
        locs.dedup();
        for &l in &locs {
            if l >= plan.locations().len() {
                return Err(ConvError::UnknownLocation {
                    index: l,
                    detail: "outside the plan's grid",
                });
            }
            if !plan.locations()[l].representative {
                return Err(ConvError::UnknownLocation {
                    index: l,
                    detail: "a conjugate location; use its representative",
                });
            }
        }
        Ok(Self::with_locations(plan, locs))
    }

    fn with_locations(plan: &ConvPlan, locations: Vec<usize>) -> Self {
        let d = plan.x_shape().channels + plan.y_shape().channels;
        ConvMomentAccumulator {
            plan: plan.clone(),
            means: vec![zero(); locations.len() * d],
            comoments: vec![zero(); locations.len() * d * d],
            locations,
            n: 0,
            work: None,
            chunk: DEFAULT_CHUNK,
        }
    }

    /// Sets how many images are gathered per GEMM (default 64): larger is faster per image,
    /// memory is `locations × chunk × (c_x + c_y)` complex values.
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self.work = None;
        self
    }

    pub fn plan(&self) -> &ConvPlan {
        &self.plan
    }

    /// Row-major grid indices of the locations held, ascending.
    pub fn locations(&self) -> &[usize] {
        &self.locations
    }

    /// Images seen.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// `c_x + c_y`.
    pub fn dim(&self) -> usize {
        self.plan.x_shape().channels + self.plan.y_shape().channels
    }

    /// Position of a grid location in this accumulator.
    pub(crate) fn slot(&self, location: usize) -> Option<usize> {
        self.locations.binary_search(&location).ok()
    }

    /// The mean at held location `location` (row-major grid index).
    pub fn mean(&self, location: usize) -> Option<&[c64]> {
        let d = self.dim();
        self.slot(location).map(|s| &self.means[s * d..(s + 1) * d])
    }

    /// The full Hermitian co-moment at held location `location`, `d × d`.
    pub fn comoment(&self, location: usize) -> Option<Mat<c64>> {
        let d = self.dim();
        self.slot(location).map(|s| {
            let m = &self.comoments[s * d * d..(s + 1) * d * d];
            Mat::from_fn(d, d, |r, c| {
                if r >= c {
                    m[c * d + r]
                } else {
                    m[r * d + c].conj()
                }
            })
        })
    }

    /// Adds a block of images of both layers (the same images, in the same order).
    pub fn push(&mut self, x: ConvInput<'_>, y: ConvInput<'_>) -> Result<(), ConvError> {
        if x.images() != y.images() {
            return Err(ConvError::ImageCountMismatch {
                x: x.images() as u64,
                y: y.images() as u64,
            });
        }
        for (side, input, want) in [
            (Side::X, &x, self.plan.x_shape()),
            (Side::Y, &y, self.plan.y_shape()),
        ] {
            if input.spatial() != want {
                return Err(ConvError::ShapeChanged {
                    side,
                    expected: want.as_array(),
                    found: input.spatial().as_array(),
                });
            }
        }
        let d = self.dim();
        let nloc = self.locations.len();
        let chunk = self.chunk;
        let threads = worker_threads(chunk.max(nloc));
        let fits = self
            .work
            .as_ref()
            .is_some_and(|w| w.layouts == (x.layout(), y.layout()) && w.spectra.len() == threads);
        if !fits {
            self.work = Some(Workspace::new(
                &self.plan,
                (x.layout(), y.layout()),
                threads,
                chunk,
                nloc,
                d,
            ));
        }
        let mut work = self.work.take().expect("workspace just created");
        let mut result = Ok(());
        let total = x.images();
        let mut start = 0;
        while start < total {
            let rows = chunk.min(total - start);
            if let Err(e) = self.gather_chunk(&mut work, x, y, start, rows) {
                // The moments change only after a whole chunk is valid, so an error leaves
                // the accumulator as it was before that chunk.
                result = Err(e);
                break;
            }
            self.absorb_chunk(&mut work, rows);
            start += rows;
        }
        self.work = Some(work);
        result
    }

    /// Phase 1, parallel over images: FFT of images `start..start+rows` of both layers and
    /// their values at every held location into `work.gather` (image-major:
    /// `[image][location][channel]`).
    fn gather_chunk(
        &self,
        work: &mut Workspace,
        x: ConvInput<'_>,
        y: ConvInput<'_>,
        start: usize,
        rows: usize,
    ) -> Result<(), ConvError> {
        let d = self.dim();
        let cx = self.plan.x_shape().channels;
        let stride = self.locations.len() * d;
        let threads = work.spectra.len().min(rows).max(1);
        let per = rows.div_ceil(threads);
        let sources: Vec<((usize, usize), (usize, usize))> = self
            .locations
            .iter()
            .map(|&l| {
                let loc = self.plan.locations()[l];
                (loc.x_source, loc.y_source)
            })
            .collect();
        let first_image = self.n + start as u64;
        let job = |(sx, sy): &mut (Spectrum, Spectrum), images: &mut [c64], b0: usize| {
            for (k, row) in images.chunks_mut(stride).enumerate() {
                let image = start + b0 + k;
                let at = first_image + (b0 + k) as u64;
                if let Some(value) = sx.transform(x.data(), image) {
                    return Err(ConvError::NonFinite {
                        side: Side::X,
                        image: at,
                        value,
                    });
                }
                if let Some(value) = sy.transform(y.data(), image) {
                    return Err(ConvError::NonFinite {
                        side: Side::Y,
                        image: at,
                        value,
                    });
                }
                for (z, &(xs, ys)) in row.chunks_mut(d).zip(&sources) {
                    sx.extract(xs, z, 1);
                    sy.extract(ys, &mut z[cx..], 1);
                }
            }
            Ok(())
        };
        let parts = work.gather[..rows * stride]
            .chunks_mut(per * stride)
            .zip(work.spectra.iter_mut())
            .enumerate();
        if threads == 1 {
            for (t, (g, sp)) in parts {
                job(sp, g, t * per)?;
            }
            return Ok(());
        }
        let outcomes: Vec<Result<(), ConvError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .map(|(t, (g, sp))| {
                    let job = &job;
                    scope.spawn(move || job(sp, g, t * per))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        // the earliest image's error (threads hold increasing image ranges)
        outcomes.into_iter().collect()
    }

    /// Phase 2, parallel over locations: centre each location's chunk on its own mean,
    /// multiply it into the co-moment, merge.
    fn absorb_chunk(&mut self, work: &mut Workspace, rows: usize) {
        let d = self.dim();
        let (n_a, n_b) = (self.n as f64, rows as f64);
        let nloc = self.locations.len();
        let threads = work.locals.len().min(nloc).max(1);
        let per = nloc.div_ceil(threads).max(1);
        let gather = &work.gather[..rows * nloc * d];
        let jobs = self
            .comoments
            .chunks_mut(per * d * d)
            .zip(self.means.chunks_mut(per * d))
            .zip(work.locals.iter_mut())
            .enumerate();
        if threads == 1 {
            for (t, ((m, mu), local)) in jobs {
                absorb_locations(gather, t * per, m, mu, local, rows, nloc, d, n_a, n_b);
            }
        } else {
            std::thread::scope(|scope| {
                for (t, ((m, mu), local)) in jobs {
                    scope.spawn(move || {
                        absorb_locations(gather, t * per, m, mu, local, rows, nloc, d, n_a, n_b);
                    });
                }
            });
        }
        self.n += rows as u64;
    }

    /// Merges another accumulator over other images (same plan, same locations) into this one.
    pub fn merge(&mut self, other: &ConvMomentAccumulator) -> Result<(), ConvError> {
        if self.plan != other.plan {
            return Err(ConvError::IncompatibleMoments {
                detail: "different plans (shapes, method or mode)".into(),
            });
        }
        if self.locations != other.locations {
            return Err(ConvError::IncompatibleMoments {
                detail: "different frequency locations".into(),
            });
        }
        if other.n == 0 {
            return Ok(());
        }
        if self.n == 0 {
            self.means.clone_from(&other.means);
            self.comoments.clone_from(&other.comoments);
            self.n = other.n;
            return Ok(());
        }
        let d = self.dim();
        let (n_a, n_b) = (self.n as f64, other.n as f64);
        let n = n_a + n_b;
        for s in 0..self.locations.len() {
            let m = &mut self.comoments[s * d * d..(s + 1) * d * d];
            for (a, b) in m
                .iter_mut()
                .zip(&other.comoments[s * d * d..(s + 1) * d * d])
            {
                *a += *b;
            }
            chan_update(
                &mut self.means[s * d..(s + 1) * d],
                m,
                n_a,
                &other.means[s * d..(s + 1) * d],
                n_b,
                n,
            );
        }
        self.n += other.n;
        Ok(())
    }

    /// The moments of a subset of the held locations (to ship a frequency block to a worker).
    pub fn select(&self, locations: &[usize]) -> Result<ConvMomentAccumulator, ConvError> {
        let mut out = Self::for_locations(&self.plan, locations)?;
        let d = self.dim();
        for (t, &l) in out.locations.clone().iter().enumerate() {
            let s = self.slot(l).ok_or(ConvError::UnknownLocation {
                index: l,
                detail: "not held by this accumulator",
            })?;
            out.means[t * d..(t + 1) * d].copy_from_slice(&self.means[s * d..(s + 1) * d]);
            out.comoments[t * d * d..(t + 1) * d * d]
                .copy_from_slice(&self.comoments[s * d * d..(s + 1) * d * d]);
        }
        out.n = self.n;
        Ok(out)
    }

    /// The serialisable state.
    pub fn to_parts(&self) -> ConvMomentParts {
        let flat = |v: &[c64]| v.iter().flat_map(|z| [z.re, z.im]).collect::<Vec<f64>>();
        ConvMomentParts {
            plan: self.plan.clone(),
            locations: self.locations.clone(),
            n: self.n,
            means: flat(&self.means),
            comoments: self
                .locations
                .iter()
                .flat_map(|&l| {
                    let m = self.comoment(l).expect("held");
                    let d = m.nrows();
                    (0..d * d).flat_map(move |k| {
                        let z = m[(k % d, k / d)];
                        [z.re, z.im]
                    })
                })
                .collect(),
        }
    }

    /// Rebuilds an accumulator from [`ConvMomentAccumulator::to_parts`], checking consistency.
    pub fn from_parts(parts: ConvMomentParts) -> Result<Self, ConvError> {
        let ConvMomentParts {
            plan,
            locations,
            n,
            means,
            comoments,
        } = parts;
        // A deserialised plan is only trusted if it is the plan its shapes and method give.
        let mode = if plan.complex64() {
            crate::whiten::Mode::GoogleCompat
        } else {
            crate::whiten::Mode::Default
        };
        let options = super::ConvOptions::default()
            .with_method(plan.method())
            .with_mode(mode);
        if ConvPlan::new(plan.x_shape(), plan.y_shape(), &options).as_ref() != Ok(&plan) {
            return Err(ConvError::IncompatibleMoments {
                detail: "the plan in the parts is inconsistent with its shapes and method".into(),
            });
        }
        let mut acc = Self::for_locations(&plan, &locations)?;
        if acc.locations != locations {
            return Err(ConvError::IncompatibleMoments {
                detail: "locations not ascending and distinct".into(),
            });
        }
        let d = acc.dim();
        let l = locations.len();
        if means.len() != 2 * l * d || comoments.len() != 2 * l * d * d {
            return Err(ConvError::IncompatibleMoments {
                detail: format!(
                    "{} mean and {} co-moment values for {l} locations of dimension {d}",
                    means.len(),
                    comoments.len()
                ),
            });
        }
        if means.iter().chain(&comoments).any(|v| !v.is_finite()) {
            return Err(ConvError::IncompatibleMoments {
                detail: "non-finite moment values".into(),
            });
        }
        let unflat = |v: &[f64]| v.chunks_exact(2).map(|p| c64::new(p[0], p[1])).collect();
        acc.means = unflat(&means);
        acc.comoments = unflat(&comoments);
        acc.n = n;
        Ok(acc)
    }
}

/// Centres each location's chunk (copied from the image-major gather buffer into a
/// column-major `rows × d` scratch) on its own mean, multiplies it into the co-moment's lower
/// triangle and merges the means: the hot loop of the accumulation (no allocation).
///
/// Chan's merge term `δδᴴ·n_a·n_b/n` (`δ = μ_b − μ_a`) rides in the same product as one more
/// row, `sqrt(n_a·n_b/n)·δ`, of the centred chunk: the co-moment is read and written once per
/// chunk instead of once more for a separate rank-one update.
#[allow(clippy::too_many_arguments)]
fn absorb_locations(
    gather: &[c64],
    first: usize,
    comoments: &mut [c64],
    means: &mut [c64],
    local: &mut LocalScratch,
    rows: usize,
    nloc: usize,
    d: usize,
    n_a: f64,
    n_b: f64,
) {
    let n = n_a + n_b;
    let stride = nloc * d;
    // Columns a padded stride apart: 64 images of c64 are exactly 1 KiB, and columns that far
    // apart share cache sets (see `moments::padded_stride`). One spare row for Chan's term.
    let ld = crate::moments::padded_stride(rows + 1, std::mem::size_of::<c64>());
    let merge_row = n_a > 0.0;
    let k = rows + usize::from(merge_row);
    let gain = (n_a * n_b / n).sqrt();
    for (j, (m, mean)) in comoments
        .chunks_mut(d * d)
        .zip(means.chunks_mut(d))
        .enumerate()
    {
        let s = first + j;
        let mu = &mut local.block_mean;
        mu.fill(zero());
        let buf = &mut local.centred[..ld * d];
        for b in 0..rows {
            let z = &gather[b * stride + s * d..b * stride + (s + 1) * d];
            for (c, (a, &v)) in mu.iter_mut().zip(z).enumerate() {
                buf[c * ld + b] = v;
                *a += v;
            }
        }
        for (c, a) in mu.iter_mut().enumerate() {
            *a /= n_b;
            let col = &mut buf[c * ld..c * ld + k];
            for v in &mut col[..rows] {
                *v -= *a;
            }
            if merge_row {
                col[rows] = (*a - mean[c]) * gain;
            }
        }
        let dm = MatRef::from_column_major_slice_with_stride(buf, k, d, ld);
        let mut mm = MatMut::from_column_major_slice_mut(m, d, d);
        // M[r, c] += Σ_b z_br · conj(z_bc), i.e. Dᵀ D̄ (the (z − μ)(z − μ)ᴴ convention);
        // Hermitian, so only the lower triangle is formed (half the work).
        tri_matmul(
            mm.rb_mut(),
            BlockStructure::TriangularLower,
            Accum::Add,
            dm.transpose(),
            BlockStructure::Rectangular,
            dm.conjugate(),
            BlockStructure::Rectangular,
            c64::new(1.0, 0.0),
            Par::Seq,
        );
        merge_mean(mean, n_a, mu, n_b, n);
    }
}

/// Threads to spread `jobs` independent locations over: faer's global parallelism setting
/// ([`crate::set_parallelism`]), at most one per job.
pub(crate) fn worker_threads(jobs: usize) -> usize {
    crate::par().degree().clamp(1, jobs.max(1))
}

/// Chan et al.'s update, after `m` already holds `M_a + M_b`: adds `δδᴴ·n_a·n_b/n` (lower
/// triangle) and moves `mean` (= `μ_a`) to the merged mean.
fn chan_update(mean: &mut [c64], m: &mut [c64], n_a: f64, mean_b: &[c64], n_b: f64, n: f64) {
    let d = mean.len();
    if n_a > 0.0 {
        let w = n_a * n_b / n;
        for c in 0..d {
            let dc = (mean_b[c] - mean[c]).conj() * w;
            let col = &mut m[c * d..(c + 1) * d];
            for r in c..d {
                col[r] += (mean_b[r] - mean[r]) * dc;
            }
        }
    }
    merge_mean(mean, n_a, mean_b, n_b, n);
}

/// Moves `mean` (`μ_a` over `n_a` datapoints) to the mean of both sets (`μ_b` over `n_b`,
/// `n = n_a + n_b` in all).
fn merge_mean(mean: &mut [c64], n_a: f64, mean_b: &[c64], n_b: f64, n: f64) {
    if n_a == 0.0 {
        mean.copy_from_slice(mean_b);
        return;
    }
    let f = n_b / n;
    for (a, b) in mean.iter_mut().zip(mean_b) {
        *a += (*b - *a) * f;
    }
}

impl Workspace {
    fn new(
        plan: &ConvPlan,
        layouts: (Layout, Layout),
        threads: usize,
        chunk: usize,
        nloc: usize,
        d: usize,
    ) -> Self {
        Workspace {
            layouts,
            spectra: (0..threads)
                .map(|_| {
                    (
                        Spectrum::new(plan.x_shape(), layouts.0, plan.complex64()),
                        Spectrum::new(plan.y_shape(), layouts.1, plan.complex64()),
                    )
                })
                .collect(),
            gather: vec![zero(); chunk * nloc * d],
            locals: (0..threads)
                .map(|_| LocalScratch {
                    centred: vec![
                        zero();
                        crate::moments::padded_stride(
                            chunk + 1,
                            std::mem::size_of::<c64>()
                        ) * d
                    ],
                    block_mean: vec![zero(); d],
                })
                .collect(),
        }
    }
}
