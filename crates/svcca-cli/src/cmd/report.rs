//! `svcca report`: regenerate a report (PNG/SVG plots, index.html, report.json and a terminal
//! summary) from a sweep's stored results, without recomputing any similarity.

use std::path::PathBuf;

use svcca_engine::cache::{Store, normalise_url};
use svcca_report::{ComputedAnalyses, ReportError, ReportOptions, write_report};
use svcca_results::ResultsFile;

use crate::exit::{CmdResult, Failure};

/// Write a report from a sweep's stored results: similarity heatmaps, learning-dynamics curves,
/// cross-seed agreement, variance spectra, null baselines, and the numbers in tables.
///
/// Reads `results.json` (and `analyses.json` when present: dimensionality and class sensitivity
/// computed from activations; `summary.json`: the pairs the sweep skipped; `results.prev.json`:
/// the previous run of the same job, for what changed since) and writes
/// `index.html` with its PNG and SVG figures. The page opens with the answers: bottom-up
/// convergence or not and why, each layer's convergence step, cross-seed agreement against its
/// null baseline, and skipped pairs.
///
/// The report of the sweep's default metric (svcca when stored) lives in `report/`; with
/// `--metric M` for another metric it goes to `report/M/`, leaving every other report as it was.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The sweep's output folder or URL (a local path, file://, s3://, gs://, az://), or the
    /// results.json file itself.
    pub results: String,
    /// Folder to write the report into [default: `report/` inside a local results folder, or
    /// `report/M/` with `--metric M` other than the default metric; required for a remote one].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Metric the analyses use [default: svcca when stored, else the first stored]. Its report
    /// goes to `report/M/`, beside the default one, unless M is the default metric.
    #[arg(long)]
    pub metric: Option<String>,
    /// Similarity to the final checkpoint a layer must keep to count as converged.
    #[arg(long, default_value_t = 0.95)]
    pub threshold: f64,
    /// Do not compute the Gaussian null baseline at the stored shapes.
    #[arg(long)]
    pub no_null: bool,
}

pub fn run(args: ReportArgs) -> CmdResult {
    let summary = write(args)?;
    out!("{summary}");
    Ok(())
}

/// Writes the report; returns its terminal summary.
pub fn write(args: ReportArgs) -> Result<String, Failure> {
    let text = args.results.trim();
    // A path or URL ending in `.json` names the results file; otherwise it is the sweep folder.
    let (folder, file) = match text.rsplit_once('/') {
        Some((dir, name)) if name.ends_with(".json") => {
            (if dir.is_empty() { "/" } else { dir }, name)
        }
        None if text.ends_with(".json") => (".", text),
        _ => (text, "results.json"),
    };
    let store =
        Store::open(folder).map_err(|e| Failure::fatal(format!("cannot open {folder}: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::retryable(format!("cannot start the I/O runtime: {e}")))?;
    let get = |key: &str| {
        runtime.block_on(store.get(key)).map_err(|e| {
            let message = format!("cannot read {key} under {}: {e}", store.url());
            crate::exit::classify(message, e.is_retryable(), &e)
        })
    };
    let bytes = get(file)?.ok_or_else(|| {
        Failure::fatal(format!(
            "no {file} under {}: point `svcca report` at the output of `svcca sweep`",
            store.url()
        ))
    })?;
    let results = ResultsFile::from_json(&bytes).map_err(|e| {
        Failure::fatal(format!("{}/{file}: {e}", store.url().trim_end_matches('/')))
    })?;
    // Skipped pairs are recorded in the job summary only; a summary that cannot be read costs
    // the report that one section, not the report.
    let skipped = match get("summary.json")? {
        Some(bytes) => match serde_json::from_slice::<svcca_engine::outputs::Summary>(&bytes) {
            Ok(summary) => summary.skipped,
            Err(e) => {
                tracing::warn!(error = %e, "summary.json unreadable; skipped pairs not shown");
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    // A sweep that ran again kept the run before's results: the report says what changed.
    let previous = match get(svcca_results::PREVIOUS_RESULTS_NAME)? {
        Some(bytes) if file == "results.json" => match ResultsFile::from_json(&bytes) {
            Ok(previous) => Some(previous),
            Err(e) => {
                tracing::warn!(error = %e, "results.prev.json unreadable; no \"since the last run\"");
                None
            }
        },
        _ => None,
    };
    let computed = match get("analyses.json")? {
        Some(bytes) => Some(ComputedAnalyses::from_json(&bytes).map_err(|e| {
            Failure::fatal(format!(
                "{}/analyses.json is not valid: {e}",
                store.url().trim_end_matches('/')
            ))
        })?),
        None => None,
    };

    let out = match args.out {
        Some(out) => out,
        None => {
            let url = normalise_url(folder).map_err(|e| Failure::fatal(e.to_string()))?;
            match url.to_file_path() {
                Ok(dir) if url.scheme() == "file" => {
                    report_dir(&dir, &results, args.metric.as_deref())
                }
                _ => {
                    return Err(Failure::fatal(format!(
                        "{folder} is not a local folder: pass --out DIR for the report"
                    )));
                }
            }
        }
    };
    let mut options = ReportOptions::default()
        .with_threshold(args.threshold)
        .with_gaussian_null(!args.no_null)
        .with_source(args.results.clone())
        .with_skipped(skipped);
    if let Some(metric) = args.metric {
        options = options.with_metric(metric);
    }
    if let Some(previous) = previous {
        options = options.with_previous(previous);
    }
    if let Some(computed) = computed {
        options = options.with_computed(computed);
    }
    let summary = write_report(&results, &out, &options).map_err(|e| match e {
        ReportError::Write { ref source, .. } => crate::exit::io_failure(e.to_string(), source),
        _ => Failure::fatal(e.to_string()),
    })?;
    Ok(summary.text)
}

/// Where a local sweep folder's report of `metric` goes: `report/` for the default metric (the
/// one the sweep's own report uses), `report/M/` for any other, so that reports of several
/// metrics sit side by side and none overwrites another.
fn report_dir(folder: &std::path::Path, results: &ResultsFile, metric: Option<&str>) -> PathBuf {
    let default = svcca_report::layers::primary_metric(results);
    match metric {
        Some(m) if default.as_deref() != Some(m) => folder.join("report").join(m),
        _ => folder.join("report"),
    }
}
