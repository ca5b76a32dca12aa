//! Comparing convolutional layers: the paper's DFT method (one CCA per spatial frequency),
//! plus `fold` and `pool`.
//!
//! A conv layer's activations are `[images, h, w, c]` ([`Layout::Nhwc`], google's and
//! TensorFlow's layout) or `[images, c, h, w]` ([`Layout::Nchw`], PyTorch's), f32 or f64.
//! Flattened, a CCA over `h·w·c` dimensions is infeasible and, with few images, trivially 1.
//!
//! # Methods ([`ConvMethod`])
//! * **dft** (Raghu et al. 2017, google's `dft_ccas.fourier_ccas`): the 2-D DFT over `(h, w)` of
//!   every image and channel. If the statistics are invariant under circular shifts of the
//!   images, the covariance of the flattened layer is block-diagonal in the Fourier basis, one
//!   `c × c` Hermitian block per spatial frequency, so the flattened CCA splits into `h·w`
//!   complex CCAs over channels, the datapoints of each being the images. Then the multiset of
//!   per-frequency coefficients *equals* the flattened layer's CCA coefficients (tested on a data
//!   set closed under circular shifts). On other data it is the CCA of the block-diagonal part,
//!   an approximation that ignores covariance between frequencies.
//! * **fold**: every (image, position) is a datapoint, CCA over channels. Assumes positions are
//!   exchangeable samples of one per-channel distribution. Computed exactly from the same
//!   per-frequency moments (Parseval): the co-moment over all `n·h·w` datapoints is
//!   `Re(M_0 + Σ_{f≠0} (M_f + n μ_f μ_fᴴ)) / (h·w)`.
//! * **pool**: activations averaged over `(h, w)`, CCA over channels, datapoints = images.
//!   The spatial mean is the zero frequency divided by `h·w`, and CCA is scale-invariant, so pool
//!   is the DFT method's zero frequency (computed from that one location only).
//!
//! # Different spatial sizes
//! dft and fold crop the larger layer's spectrum to the smaller grid, keeping the low
//! frequencies as google's `fft_resize` does (see [`plan`] for the exact index rule; for fold
//! this equals folding the low-pass-resized maps). google needs square maps; the default mode
//! crops each axis separately, so non-square maps work. pool needs no resize.
//!
//! # Streaming and the engine
//! [`ConvPlan`] fixes shapes, method and grid; [`ConvMomentAccumulator`] takes blocks of images
//! of both layers ([`ConvInput`]) and holds per-frequency Hermitian moments (`n`, mean,
//! centred co-moment, f64 complex), merged exactly like the dense moments and serialisable
//! ([`ConvMomentParts`]). Real input has conjugate-symmetric spectra: only the representative
//! of each conjugate pair is accumulated and computed (about half the locations). A *frequency
//! block* (a list of representative locations, [`ConvPlan::frequency_blocks`]) is the unit
//! of work: [`ConvMomentAccumulator::for_locations`] accumulates only those,
//! [`ConvMomentAccumulator::frequency_results`] computes their CCAs, and
//! [`ConvComparison::from_frequency_results`] assembles the blocks into the final result.
//! [`compare_conv`] does all of it in one call.
//!
//! # Modes
//! [`Mode::Default`] is robust (relative eigenvalue cutoff, never NaN; see [`cca`]).
//! [`Mode::GoogleCompat`] reproduces `fourier_ccas`: FFT values rounded to complex64, effective
//! epsilon 0 (fourier_ccas passes `compute_dirns` into the epsilon slot), google's covariance
//! rescaling, pinv and eigh square roots, threshold 0.98 for the truncated mean.
//!
//! SVCCA truncation ([`KeepRule`]) applies per frequency (per the single CCA for fold/pool).

pub mod cca;
mod error;
mod input;
mod moments;
pub mod plan;
mod spectrum;

use faer::{Mat, c64};
use serde::{Deserialize, Serialize};

pub use self::error::{ConvError, Side};
pub use self::input::{ConvData, ConvInput, Layout, SpatialShape};
pub use self::moments::{ConvMomentAccumulator, ConvMomentParts};
pub use self::plan::{ConvPlan, Location, real_at};
pub use crate::whiten::{KeepRule, Mode};

use self::cca::{CcaSettings, google_truncated_mean, location_cca, mean_all};

/// How a conv layer pair is compared; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvMethod {
    /// One complex CCA per spatial frequency.
    #[default]
    Dft,
    /// Every image × position is a datapoint.
    Fold,
    /// Spatial average per image.
    Pool,
}

impl ConvMethod {
    pub fn name(&self) -> &'static str {
        match self {
            ConvMethod::Dft => "dft",
            ConvMethod::Fold => "fold",
            ConvMethod::Pool => "pool",
        }
    }
}

impl std::fmt::Display for ConvMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ConvMethod {
    type Err = ConvError;
    fn from_str(s: &str) -> Result<Self, ConvError> {
        match s.to_ascii_lowercase().as_str() {
            "dft" => Ok(ConvMethod::Dft),
            "fold" => Ok(ConvMethod::Fold),
            "pool" => Ok(ConvMethod::Pool),
            _ => Err(ConvError::InvalidOption {
                name: "conv",
                detail: format!("unknown method {s:?}; expected dft, fold or pool"),
            }),
        }
    }
}

/// Options of a conv comparison (`Default` + `with_*` builders).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvOptions {
    pub method: ConvMethod,
    pub mode: Mode,
    /// SVCCA truncation, applied per frequency; `All` for plain CCA.
    pub keep: KeepRule,
    /// Relative variance cutoff (google-compat: also the ridge). `None`: 1e-10, except
    /// google-compat dft, where it is 0 as in `fourier_ccas`.
    pub epsilon: Option<f64>,
    /// Fraction of the coefficient sum for google's truncated mean (0.98).
    pub threshold: f64,
    /// Compute even when channels ≥ datapoints (every coefficient trivially 1).
    pub allow_trivial: bool,
    /// Images per GEMM when accumulating.
    pub chunk_images: usize,
}

impl Default for ConvOptions {
    fn default() -> Self {
        ConvOptions {
            method: ConvMethod::Dft,
            mode: Mode::Default,
            keep: KeepRule::All,
            epsilon: None,
            threshold: 0.98,
            allow_trivial: false,
            chunk_images: 64,
        }
    }
}

impl ConvOptions {
    pub fn with_method(mut self, method: ConvMethod) -> Self {
        self.method = method;
        self
    }
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    pub fn with_keep(mut self, keep: KeepRule) -> Self {
        self.keep = keep;
        self
    }
    pub fn with_epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = Some(epsilon);
        self
    }
    pub fn with_threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }
    pub fn with_allow_trivial(mut self, allow: bool) -> Self {
        self.allow_trivial = allow;
        self
    }
    pub fn with_chunk_images(mut self, chunk: usize) -> Self {
        self.chunk_images = chunk;
        self
    }

    /// The epsilon actually used.
    pub fn effective_epsilon(&self) -> f64 {
        match (self.epsilon, self.mode, self.method) {
            (Some(e), _, _) => e,
            (None, Mode::GoogleCompat, ConvMethod::Dft) => 0.0,
            (None, _, _) => 1e-10,
        }
    }

    fn validate(&self) -> Result<(), ConvError> {
        let e = self.effective_epsilon();
        if !(e.is_finite() && e >= 0.0) {
            return Err(ConvError::InvalidOption {
                name: "epsilon",
                detail: format!("{e} must be finite and >= 0"),
            });
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(ConvError::InvalidOption {
                name: "threshold",
                detail: format!("{} is not a fraction in (0, 1]", self.threshold),
            });
        }
        match self.keep {
            KeepRule::Dims(0) => Err(ConvError::InvalidOption {
                name: "keep_dims",
                detail: "must keep at least 1 dimension".into(),
            }),
            KeepRule::VarianceFraction(f) if !(f > 0.0 && f <= 1.0) => {
                Err(ConvError::InvalidOption {
                    name: "keep_variance",
                    detail: format!("{f} is not a fraction in (0, 1]"),
                })
            }
            _ => Ok(()),
        }
    }

    fn settings(&self) -> CcaSettings {
        CcaSettings {
            mode: self.mode,
            keep: self.keep,
            epsilon: self.effective_epsilon(),
        }
    }
}

/// The CCA at one frequency location `(i, j)` of the compared grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrequencyResult {
    pub i: usize,
    pub j: usize,
    /// Canonical correlations, descending.
    pub coefficients: Vec<f64>,
    /// Mean of all coefficients (0 when none: no variance at this frequency).
    pub mean: f64,
    /// google's truncated mean (leading coefficients up to `threshold` of their sum).
    pub google_mean: f64,
    /// Directions kept on each side.
    pub x_dims: usize,
    pub y_dims: usize,
    /// For a location that was not computed: the representative `(i, j)` it mirrors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conjugate_of: Option<(usize, usize)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The comparison of a conv layer pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConvComparison {
    pub method: ConvMethod,
    pub mode: Mode,
    /// What was computed and what it assumes, in words.
    pub definition: String,
    pub images: u64,
    pub x_shape: SpatialShape,
    pub y_shape: SpatialShape,
    /// `[rows, cols]` of the compared frequency grid (`[1, 1]` for fold and pool).
    pub grid: [usize; 2],
    /// True when a spectrum was cropped to the smaller grid.
    pub cropped: bool,
    /// Mean of all coefficients (over every grid location for dft): the headline number.
    pub mean: f64,
    /// dft: mean of the per-frequency means; fold/pool: equals `mean`.
    pub mean_of_frequency_means: f64,
    /// google's truncated mean (dft: the mean of the per-frequency truncated means).
    pub google_mean: f64,
    /// Sum of all coefficients.
    pub sum: f64,
    /// fold/pool: the canonical correlations. dft: every grid location's coefficients pooled,
    /// descending (under translation invariance, the flattened layer's coefficients).
    pub coefficients: Vec<f64>,
    /// Directions kept (dft: summed over the grid).
    pub x_dims: usize,
    pub y_dims: usize,
    /// dft: every location of the grid, row-major. Empty for fold and pool.
    pub frequencies: Vec<FrequencyResult>,
    /// dft: the grid of per-frequency means, row-major `rows × cols`, for plots.
    pub mean_grid: Vec<f64>,
    pub warnings: Vec<String>,
}

fn definition(plan: &ConvPlan, mode: Mode) -> String {
    let (gh, gw) = plan.grid();
    let crop = if plan.cropped() {
        format!(
            " Layers of different spatial size ({}x{} and {}x{}): the larger spectrum is \
             cropped to the {gh}x{gw} low frequencies (google's fft_resize rule{}).",
            plan.x_shape().height,
            plan.x_shape().width,
            plan.y_shape().height,
            plan.y_shape().width,
            if mode == Mode::GoogleCompat {
                ""
            } else {
                ", per axis"
            }
        )
    } else {
        String::new()
    };
    let body = match plan.method() {
        ConvMethod::Dft => format!(
            "dft: 2-D DFT over (h, w) of every image and channel, then one complex CCA over \
             channels per spatial frequency ({gh}x{gw} grid), datapoints = images. Exact \
             (equal to the flattened layer's CCA) when the image statistics are invariant \
             under circular shifts; otherwise it ignores covariance between frequencies."
        ),
        ConvMethod::Fold => "fold: every (image, position) is a datapoint, one CCA over \
             channels. Assumes positions are exchangeable samples of one per-channel \
             distribution (spatial correlation ignored)."
            .to_string(),
        ConvMethod::Pool => "pool: activations averaged over (h, w) per image, one CCA over \
             channels, datapoints = images (equals the DFT method's zero frequency). Assumes \
             the spatial average carries the representation; spatial structure is discarded."
            .to_string(),
    };
    let mode_note = match mode {
        Mode::Default => "",
        Mode::GoogleCompat => {
            " Arithmetic: google-compatible (google/svcca cca_core; complex64 FFT for dft)."
        }
    };
    format!("{body}{crop}{mode_note}")
}

impl ConvMomentAccumulator {
    fn check_ready(&self, options: &ConvOptions) -> Result<(), ConvError> {
        options.validate()?;
        if options.method != self.plan().method() {
            return Err(ConvError::InvalidOption {
                name: "method",
                detail: format!(
                    "the moments were planned for {} but {} was asked",
                    self.plan().method(),
                    options.method
                ),
            });
        }
        let google_dft = options.mode == Mode::GoogleCompat && options.method == ConvMethod::Dft;
        if google_dft != self.plan().complex64() {
            return Err(ConvError::InvalidOption {
                name: "mode",
                detail: "the moments were planned for another mode (FFT precision differs)".into(),
            });
        }
        if self.n() < 2 {
            return Err(ConvError::TooFewImages { images: self.n() });
        }
        let (cx, cy) = (
            self.plan().x_shape().channels,
            self.plan().y_shape().channels,
        );
        let (gh, gw) = self.plan().grid();
        let datapoints = match options.method {
            ConvMethod::Fold => self.n() * (gh * gw) as u64,
            _ => self.n(),
        };
        if !options.allow_trivial && (cx + cy) as u64 >= datapoints {
            return Err(ConvError::TrivialCca {
                method: options.method.name(),
                x_channels: cx,
                y_channels: cy,
                datapoints,
            });
        }
        Ok(())
    }

    fn cca_at(
        &self,
        m: faer::MatRef<'_, c64>,
        n: f64,
        loc: &Location,
        settings: &CcaSettings,
        threshold: f64,
    ) -> Result<FrequencyResult, ConvError> {
        let cx = self.plan().x_shape().channels;
        let out = location_cca(m, n, cx, settings).map_err(|e| ConvError::NoConvergence {
            what: e.0,
            i: loc.i,
            j: loc.j,
        })?;
        Ok(FrequencyResult {
            i: loc.i,
            j: loc.j,
            mean: mean_all(&out.coefficients),
            google_mean: google_truncated_mean(&out.coefficients, threshold),
            coefficients: out.coefficients,
            x_dims: out.x_dims,
            y_dims: out.y_dims,
            conjugate_of: None,
            warnings: out.warnings,
        })
    }

    /// The CCAs of a frequency block: one result per given representative location (held by
    /// this accumulator), in the order given. For a DFT plan; for fold and pool these are the
    /// per-frequency CCAs of the locations the plan holds.
    pub fn frequency_results(
        &self,
        locations: &[usize],
        options: &ConvOptions,
    ) -> Result<Vec<FrequencyResult>, ConvError> {
        self.check_ready(options)?;
        let settings = options.settings();
        let one = |l: usize| -> Result<FrequencyResult, ConvError> {
            let m = self.comoment(l).ok_or(ConvError::UnknownLocation {
                index: l,
                detail: "not held by this accumulator",
            })?;
            let loc = self.plan().locations()[l];
            self.cca_at(
                m.as_ref(),
                self.n() as f64,
                &loc,
                &settings,
                options.threshold,
            )
        };
        let threads = moments::worker_threads(locations.len());
        if threads == 1 {
            return locations.iter().map(|&l| one(l)).collect();
        }
        // Locations are independent: spread them over threads, interleaved so that each
        // thread gets a similar mix, and put the results back in the order asked.
        let mut slots: Vec<Option<Result<FrequencyResult, ConvError>>> =
            (0..locations.len()).map(|_| None).collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let one = &one;
                    scope.spawn(move || {
                        (t..locations.len())
                            .step_by(threads)
                            .map(|k| (k, one(locations[k])))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                for (k, r) in h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)) {
                    slots[k] = Some(r);
                }
            }
        });
        slots
            .into_iter()
            .map(|r| r.expect("every location computed"))
            .collect()
    }

    /// The whole comparison; the accumulator must hold every representative location.
    pub fn compare(&self, options: &ConvOptions) -> Result<ConvComparison, ConvError> {
        self.check_ready(options)?;
        if self.locations() != self.plan().representatives() {
            return Err(ConvError::IncompatibleMoments {
                detail: "this accumulator holds a frequency block, not every location; merge \
                         the blocks' results with ConvComparison::from_frequency_results"
                    .into(),
            });
        }
        match options.method {
            ConvMethod::Dft => {
                let results = self.frequency_results(self.locations(), options)?;
                ConvComparison::from_frequency_results(self.plan(), self.n(), results, options)
            }
            ConvMethod::Pool => {
                let m = self.comoment(0).expect("pool plan holds its one location");
                let loc = self.plan().locations()[0];
                let r = self.cca_at(
                    m.as_ref(),
                    self.n() as f64,
                    &loc,
                    &options.settings(),
                    options.threshold,
                )?;
                Ok(single_result(self.plan(), self.n(), r, options))
            }
            ConvMethod::Fold => {
                let m = self.fold_comoment();
                let (gh, gw) = self.plan().grid();
                let loc = self.plan().locations()[0];
                let big_n = (self.n() * (gh * gw) as u64) as f64;
                let r = self.cca_at(
                    m.as_ref(),
                    big_n,
                    &loc,
                    &options.settings(),
                    options.threshold,
                )?;
                Ok(single_result(self.plan(), self.n(), r, options))
            }
        }
    }

    /// The co-moment of the fold method over all `n·h·w` (image, position) datapoints, from
    /// the per-frequency moments (Parseval; see the module docs).
    fn fold_comoment(&self) -> Mat<c64> {
        let d = self.dim();
        let n = self.n() as f64;
        let (gh, gw) = self.plan().grid();
        let mut acc = Mat::<c64>::zeros(d, d);
        for &l in self.locations() {
            let m = self.comoment(l).expect("held");
            let mult = self.plan().multiplicity(l) as f64;
            let dc = l == 0;
            let mu = self.mean(l).expect("held");
            for c in 0..d {
                for r in 0..d {
                    let mut v = m[(r, c)];
                    if !dc {
                        v += mu[r] * mu[c].conj() * n;
                    }
                    acc[(r, c)] += v * mult;
                }
            }
        }
        let s = 1.0 / (gh * gw) as f64;
        Mat::from_fn(d, d, |r, c| c64::new(acc[(r, c)].re * s, 0.0))
    }
}

fn collect_warnings(results: &[FrequencyResult], per_frequency: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut flagged = 0usize;
    for r in results.iter().filter(|r| r.conjugate_of.is_none()) {
        for w in &r.warnings {
            flagged += 1;
            if flagged <= 20 {
                out.push(if per_frequency {
                    format!("frequency ({}, {}): {w}", r.i, r.j)
                } else {
                    w.clone()
                });
            }
        }
    }
    if flagged > 20 {
        out.push(format!("... and {} more frequency warnings", flagged - 20));
    }
    out
}

/// The SVCCA authors' sample-size rule applied to each CCA on its own: a location whose CCA has
/// fewer than 5 datapoints per dimension is biased upwards, however small the other locations'.
/// (The pair's summed dims say nothing here: no CCA sees them together.)
fn sample_size_warning(datapoints: u64, results: &[FrequencyResult]) -> Option<String> {
    let few: Vec<&FrequencyResult> = results
        .iter()
        .filter(|r| datapoints < 5 * r.x_dims.max(r.y_dims) as u64)
        .collect();
    let widest = few.iter().map(|r| r.x_dims.max(r.y_dims)).max()?;
    let at = if results.len() == 1 {
        String::new()
    } else {
        format!(" at {} of {} frequencies", few.len(), results.len())
    };
    Some(format!(
        "only {datapoints} datapoints per CCA for up to {widest} dimensions{at} (< 5x): \
         canonical correlations are biased upwards; the SVCCA authors advise 5-10x more \
         datapoints than neurons"
    ))
}

fn single_result(
    plan: &ConvPlan,
    n: u64,
    r: FrequencyResult,
    options: &ConvOptions,
) -> ConvComparison {
    let mut warnings = collect_warnings(std::slice::from_ref(&r), false);
    let (gh, gw) = (
        plan.x_shape().height.min(plan.y_shape().height),
        plan.x_shape().width.min(plan.y_shape().width),
    );
    let datapoints = match plan.method() {
        ConvMethod::Fold => n * (gh * gw) as u64,
        _ => n,
    };
    warnings.extend(sample_size_warning(datapoints, std::slice::from_ref(&r)));
    ConvComparison {
        method: plan.method(),
        mode: options.mode,
        definition: definition(plan, options.mode),
        images: n,
        x_shape: plan.x_shape(),
        y_shape: plan.y_shape(),
        grid: [1, 1],
        cropped: plan.cropped(),
        mean: r.mean,
        mean_of_frequency_means: r.mean,
        google_mean: r.google_mean,
        sum: r.coefficients.iter().sum(),
        x_dims: r.x_dims,
        y_dims: r.y_dims,
        coefficients: r.coefficients,
        frequencies: Vec::new(),
        mean_grid: vec![r.mean],
        warnings,
    }
}

impl ConvComparison {
    /// Assembles a DFT comparison from the results of its frequency blocks (in any order, each
    /// representative location exactly once); conjugate locations are filled in.
    pub fn from_frequency_results(
        plan: &ConvPlan,
        images: u64,
        results: Vec<FrequencyResult>,
        options: &ConvOptions,
    ) -> Result<ConvComparison, ConvError> {
        if plan.method() != ConvMethod::Dft {
            return Err(ConvError::InvalidOption {
                name: "method",
                detail: "per-frequency results assemble a dft comparison only".into(),
            });
        }
        let (gh, gw) = plan.grid();
        let mut grid: Vec<Option<FrequencyResult>> = vec![None; gh * gw];
        for r in results {
            if r.i >= gh || r.j >= gw {
                return Err(ConvError::UnknownLocation {
                    index: r.i * gw + r.j,
                    detail: "outside the plan's grid",
                });
            }
            let idx = r.i * gw + r.j;
            if !plan.locations()[idx].representative || grid[idx].is_some() {
                return Err(ConvError::UnknownLocation {
                    index: idx,
                    detail: "a conjugate or duplicated location",
                });
            }
            grid[idx] = Some(r);
        }
        for &rep in plan.representatives() {
            if grid[rep].is_none() {
                return Err(ConvError::UnknownLocation {
                    index: rep,
                    detail: "missing from the frequency results",
                });
            }
            if let Some(c) = plan.locations()[rep].conjugate {
                let mut mirror = grid[rep].clone().expect("checked");
                let loc = plan.locations()[c];
                mirror.conjugate_of = Some((mirror.i, mirror.j));
                mirror.i = loc.i;
                mirror.j = loc.j;
                mirror.warnings.clear();
                grid[c] = Some(mirror);
            }
        }
        let frequencies: Vec<FrequencyResult> = grid
            .into_iter()
            .map(|r| r.expect("every location filled"))
            .collect();
        let mut coefficients: Vec<f64> = frequencies
            .iter()
            .flat_map(|r| r.coefficients.iter().copied())
            .collect();
        coefficients.sort_by(|a, b| b.total_cmp(a));
        let locs = frequencies.len() as f64;
        let mean_grid: Vec<f64> = frequencies.iter().map(|r| r.mean).collect();
        let sum: f64 = coefficients.iter().sum();
        Ok(ConvComparison {
            method: ConvMethod::Dft,
            mode: options.mode,
            definition: definition(plan, options.mode),
            images,
            x_shape: plan.x_shape(),
            y_shape: plan.y_shape(),
            grid: [gh, gw],
            cropped: plan.cropped(),
            mean: mean_all(&coefficients),
            mean_of_frequency_means: mean_grid.iter().sum::<f64>() / locs,
            google_mean: frequencies.iter().map(|r| r.google_mean).sum::<f64>() / locs,
            sum,
            x_dims: frequencies.iter().map(|r| r.x_dims).sum(),
            y_dims: frequencies.iter().map(|r| r.y_dims).sum(),
            warnings: {
                let mut w = collect_warnings(&frequencies, true);
                w.extend(sample_size_warning(images, &frequencies));
                w
            },
            coefficients,
            frequencies,
            mean_grid,
        })
    }
}

/// The canonical correlations of complex data `x` (`n × cx`) and `y` (`n × cy`), row-major,
/// over the same `n` rows, descending: plain CCA (every direction kept) exactly as one
/// frequency location of the DFT method computes it in the default mode (columns centred,
/// relative variance cutoff `epsilon`). Real data is complex data with zero imaginary parts.
/// Null baselines use it to run a frequency's CCA on unrelated data of that frequency's shape.
pub fn complex_cca(
    x: &[c64],
    y: &[c64],
    n: usize,
    (cx, cy): (usize, usize),
    epsilon: f64,
) -> Result<Vec<f64>, ConvError> {
    if x.len() != n * cx || y.len() != n * cy {
        return Err(ConvError::BufferLength {
            shape: vec![n, cx, cy],
            expected: n * (cx + cy),
            len: x.len() + y.len(),
        });
    }
    if n < 2 {
        return Err(ConvError::TooFewImages { images: n as u64 });
    }
    let d = cx + cy;
    let mut z = Mat::<c64>::from_fn(n, d, |r, c| {
        if c < cx {
            x[r * cx + c]
        } else {
            y[r * cy + c - cx]
        }
    });
    for c in 0..d {
        let mu = (0..n).map(|r| z[(r, c)]).sum::<c64>() / n as f64;
        for r in 0..n {
            z[(r, c)] -= mu;
        }
    }
    // The accumulator's convention: M = Zᵀ conj(Z) (its conjugate gives the same correlations).
    let mut m = Mat::<c64>::zeros(d, d);
    faer::linalg::matmul::matmul(
        m.as_mut(),
        faer::Accum::Replace,
        z.transpose(),
        z.conjugate(),
        c64::new(1.0, 0.0),
        faer::Par::Seq,
    );
    let settings = CcaSettings {
        mode: Mode::Default,
        keep: KeepRule::All,
        epsilon,
    };
    location_cca(m.as_ref(), n as f64, cx, &settings)
        .map(|out| out.coefficients)
        .map_err(|e| ConvError::NoConvergence {
            what: e.0,
            i: 0,
            j: 0,
        })
}

/// Compares two conv layers held in memory (the same images, in the same order).
pub fn compare_conv(
    x: ConvInput<'_>,
    y: ConvInput<'_>,
    options: &ConvOptions,
) -> Result<ConvComparison, ConvError> {
    options.validate()?;
    if x.images() != y.images() {
        return Err(ConvError::ImageCountMismatch {
            x: x.images() as u64,
            y: y.images() as u64,
        });
    }
    let plan = ConvPlan::new(x.spatial(), y.spatial(), options)?;
    let mut acc = ConvMomentAccumulator::new(&plan).with_chunk(options.chunk_images);
    acc.push(x, y)?;
    acc.compare(options)
}
