//! svcca-report: the paper's analyses over a sweep's stored results, and reports people can look at.
//!
//! - Analyses read back from stored results ([`svcca_results::ResultsFile`]), pure and cheap:
//!   learning dynamics, convergence and suggested freeze steps ([`dynamics`]); cross-seed mean and
//!   spread per layer ([`seeds`]); full, layer × layer and per-frequency matrices ([`matrices`]).
//! - The answers a report leads with, picked from those analyses: bottom-up or not, convergence
//!   steps, cross-seed agreement against its null, skipped pairs ([`answers`]); what changed since
//!   the previous run of the same job ([`since`]).
//! - Rendering: PNG + SVG figures drawn with plotters and an embedded font ([`render`]), one
//!   self-contained `index.html` and a short terminal summary ([`report`]); the sweep's warnings
//!   grouped by kind ([`warnings`]).
//!
//! Reports are a function of their inputs only: no clock, no randomness without a fixed seed, no
//! hash-map iteration order, so regenerating one from the same stored results gives the same bytes.
//! This crate computes no similarity of its own from stored results; the analyses that need
//! activations call `svcca-core`.

pub mod answers;
pub mod compute;
pub mod dynamics;
pub mod layers;
pub mod matrices;
pub mod render;
pub mod report;
pub mod seeds;
pub mod since;
pub mod warnings;

#[cfg(test)]
mod test_support;

use std::path::PathBuf;

/// Errors of report writing. Every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the embedded font could not be loaded (a build problem, not an input problem)")]
    Font,
    #[error("could not draw {file}: {message}")]
    Plot { file: PathBuf, message: String },
    #[error("could not write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metric {metric:?} is not in these results (they hold: {available})")]
    UnknownMetric { metric: String, available: String },
    #[error("bad report option: {detail}")]
    Options { detail: String },
}

pub use compute::ComputedAnalyses;
pub use report::{ReportData, ReportOptions, ReportSummary, write_report};
