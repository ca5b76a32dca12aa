//! The typed errors of the maths crate.
//!
//! Every variant is a struct variant naming what was wrong, so callers (the CLI, the engine) can
//! match on it, attach a file or shard name, and classify it. Nothing in this crate is retryable:
//! every error here is a property of the input or of the options.

/// Errors returned by `svcca-core`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// A NaN or infinite value in the input. `input` is the index of the piece in a multi-input
    /// call (0 = x, 1 = y for joint moments; 0 otherwise); `row` counts datapoints from the start
    /// of that accumulator's stream, `column` is the neuron.
    #[error(
        "input {input}: non-finite value {value} at datapoint {row}, neuron {column} \
         (NaN or infinite activations cannot be compared; check the layer for overflow)"
    )]
    NonFinite {
        input: usize,
        row: u64,
        column: usize,
        value: f64,
    },

    /// A row block whose buffer length is not `rows * cols`.
    #[error("row block of {rows} rows x {cols} columns needs {expected} values, got {len}")]
    BlockShape {
        rows: usize,
        cols: usize,
        expected: usize,
        len: usize,
    },

    /// Dimensions (neuron counts) that must agree do not.
    #[error("{what}: expected {expected} neurons, found {found}")]
    DimensionMismatch {
        what: &'static str,
        expected: usize,
        found: usize,
    },

    /// The two representations do not cover the same number of datapoints.
    #[error(
        "x has {n_x} datapoints but y has {n_y}: both representations must cover the same \
         datapoints in the same order"
    )]
    DatapointMismatch { n_x: u64, n_y: u64 },

    /// No neurons, or no datapoints.
    #[error("empty input: {what}")]
    Empty { what: &'static str },

    /// Fewer than two datapoints: no covariance exists.
    #[error("{n} datapoint(s): at least 2 are needed to estimate a covariance")]
    TooFewDatapoints { n: u64 },

    /// Every neuron of one side is (near-)constant over the datapoints.
    #[error(
        "{side}: all {neurons} neurons are constant over the datapoints (relative variance \
         cutoff {cutoff:e}); a constant layer carries no information to compare"
    )]
    ConstantLayer {
        side: &'static str,
        neurons: usize,
        cutoff: f64,
    },

    /// As many kept dimensions as (centred) datapoints: CCA is trivially 1.
    #[error(
        "comparing {dims_x} (x) and {dims_y} (y) dimensions over only {n} datapoints: with \
         n-1 or more dimensions the centred data span every direction, so every canonical \
         correlation is trivially 1 and the similarity means nothing. The SVCCA authors advise \
         5-10x more datapoints than neurons; use more datapoints, keep fewer dimensions \
         (SVCCA --keep-dims / --keep-variance), or opt in with allow_trivial"
    )]
    TrivialComparison {
        dims_x: usize,
        dims_y: usize,
        n: u64,
    },

    /// An option outside its valid range, or a metric that cannot be computed from what was given.
    #[error("invalid option {name}: {detail}")]
    InvalidOption { name: &'static str, detail: String },

    /// A decomposition did not converge (not expected on finite input).
    #[error("{what} did not converge")]
    NoConvergence { what: &'static str },

    /// Mixed precision's f32 products could move this representation's canonical correlations
    /// by more than the tolerance: its kept directions are too ill-conditioned.
    #[error(
        "{side}: mixed precision could move its canonical correlations by up to {bound:.1e}, \
         over the {tolerance:e} it allows: the smallest of its {kept} kept directions holds only \
         {smallest_share:.1e} of the variance, too little for f32 products. Compare it in f64 \
         (--precision f64), or keep fewer directions (SVCCA --keep-variance / --keep-dims)"
    )]
    MixedPrecisionUnsafe {
        side: &'static str,
        bound: f64,
        tolerance: f64,
        kept: usize,
        smallest_share: f64,
    },

    /// Serialised moments (`MomentParts`) that are inconsistent.
    #[error("invalid moment parts: {detail}")]
    InvalidParts { detail: String },
}

/// Result alias for this crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
