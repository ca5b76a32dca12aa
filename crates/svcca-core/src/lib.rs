//! svcca-core: the maths of svcca, with no I/O and no networking.
//!
//! It owns:
//! * [`moments`]: streaming, exactly mergeable means and centred co-moments
//!   ([`MomentAccumulator`], [`JointMoments`], input as [`RowBlock`]s of f32/f64);
//! * [`whiten`]: whitening one representation from its moments ([`Whitening`]), with the
//!   SVCCA reduction ([`KeepRule`]) and both arithmetics ([`Mode::Default`],
//!   [`Mode::GoogleCompat`]);
//! * [`compare`]: CCA, SVCCA, PWCCA and linear CKA from moments or from whitened cross
//!   products ([`compare_moments`], [`compare_whitened`], [`linear_cka`]), returning a
//!   [`Comparison`] with its diagnostics and the definition of the number it reports.
//!
//! It does not read files (svcca-storage does), schedule work (svcca-engine) or print
//! (svcca-cli). Every error is a typed [`CoreError`].
//!
//! Parallelism: matrix products ([`products`]) run on at most [`set_parallelism`]'s thread
//! count (default: all of rayon's pool) and give the same bits on any count; decompositions run
//! sequentially for the same reason.
//!
//! Instruction sets: faer picks its product kernels for the CPU at run time; the copies and sums
//! around them ([`moments`]) run compiled for AVX2 where the CPU has it, computing every value
//! with the same operations in the same order as the baseline x86-64 build.

pub mod compare;
pub mod conv;
mod decompose;
pub mod error;
pub mod moments;
pub mod products;
pub mod whiten;

pub use compare::{
    CanonicalCorrelations, CompareOptions, Comparison, Metric, PwccaTie, Side,
    canonical_correlations, compare_cka, compare_moments, compare_whitened, linear_cka,
    pwcca_tie_sensitivity, pwcca_weights, truncated_mean,
};
pub use error::CoreError;
pub use moments::{
    JointMoments, MomentAccumulator, MomentParts, Precision, RowBlock, mixed_precision_bound,
};
pub use whiten::{
    KeepRule, MIXED_PRECISION_TOLERANCE, Mode, WhitenOptions, Whitening, WhiteningParts,
};

/// Re-exported so callers can build faer views without naming faer's version.
pub use faer;

static THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sets the number of threads every product in this crate uses (0 = all of rayon's global
/// pool, 1 = sequential). The numbers do not depend on it.
pub fn set_parallelism(threads: usize) {
    THREADS.store(threads, std::sync::atomic::Ordering::Relaxed);
    let par = if threads == 1 {
        faer::Par::Seq
    } else {
        faer::Par::rayon(threads)
    };
    faer::set_global_parallelism(par);
}

/// The thread count [`set_parallelism`] set (0 = all of rayon's pool).
pub fn parallelism() -> usize {
    THREADS.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn par() -> faer::Par {
    faer::get_global_parallelism()
}
