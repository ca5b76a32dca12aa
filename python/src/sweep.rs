//! `svcca.sweep`: a job on the embedded engine (a coordinator and in-process workers on
//! loopback), as `svcca sweep` runs it, and reading what it stored.

use std::time::Duration;

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use svcca_engine::client::ClusterError;
use svcca_engine::exec::ExecutorConfig;
use svcca_engine::spec::{ComparisonPlan, JobSpec, KeepRule, Metric, Mode, parse_where};

use crate::{interrupted, svcca_error};

/// The job the arguments describe: a job file (`*.toml`) with overrides, or a dataset and an
/// output. The same rules as `svcca sweep`'s flags.
#[allow(clippy::too_many_arguments)]
fn build_spec(
    target: &str,
    out: Option<String>,
    compare: Option<&str>,
    filters: &[String],
    metrics: &[String],
    keep_variance: Option<f64>,
    keep_dims: Option<usize>,
    google_compat: bool,
    precision: Option<&str>,
    memory_mb: Option<u64>,
    overwrite: bool,
) -> Result<JobSpec, String> {
    let is_file = target.ends_with(".toml") && std::path::Path::new(target).is_file();
    let mut spec = if is_file {
        let text = std::fs::read_to_string(target)
            .map_err(|e| format!("cannot read job file {target}: {e}"))?;
        let mut spec = JobSpec::parse_toml(&text).map_err(|e| format!("{target}: {e}"))?;
        if let Some(out) = out {
            spec.output = out;
        }
        spec
    } else {
        let out = out.ok_or_else(|| {
            format!(
                "`{target}` is not a job file; to sweep a dataset give out=OUT_URL (e.g. \
                 svcca.sweep({target:?}, out=\"./sweep\"))"
            )
        })?;
        JobSpec::new(target.to_string(), out)
    };
    if let Some(c) = compare {
        spec.comparison = c.parse::<ComparisonPlan>().map_err(|e| e.to_string())?;
    }
    for f in filters {
        let (k, v) = parse_where(f).map_err(|e| e.to_string())?;
        spec = spec.with_where(k, v);
    }
    if !metrics.is_empty() {
        spec.metrics = metrics
            .iter()
            .map(|m| m.parse::<Metric>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
    }
    if let Some(f) = keep_variance {
        spec.keep = KeepRule::Variance(f);
    }
    if let Some(k) = keep_dims {
        spec.keep = KeepRule::Dims(k);
    }
    if google_compat {
        spec.mode = Mode::GoogleCompat;
    }
    if let Some(p) = precision {
        spec.precision = p
            .parse()
            .map_err(|e: svcca_core::CoreError| e.to_string())?;
    }
    if let Some(mb) = memory_mb {
        spec.resources.memory_mb = mb;
    }
    if overwrite {
        spec.overwrite = true;
    }
    // The analyses (class sensitivity) are computed by `svcca sweep` after the job; the engine
    // never sees them, and this entry point does not compute them.
    spec.analyses = Default::default();
    for url in [&mut spec.dataset, &mut spec.output] {
        if !url.contains("://")
            && !url.starts_with("file:")
            && let Ok(abs) = svcca_storage::store::absolute_path(std::path::Path::new(&*url))
        {
            *url = abs.to_string_lossy().to_string();
        }
    }
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

enum Ended {
    Done(Result<svcca_engine::driver::JobSummary, ClusterError>),
    Interrupted,
}

/// Runs a sweep; returns (output URL, summary lines, report index path or None).
#[pyfunction]
#[pyo3(signature = (target, *, out, compare, filters, metrics, workers, keep_variance, keep_dims,
    google_compat, precision, memory_mb, overwrite, report))]
#[allow(clippy::too_many_arguments)]
pub fn sweep(
    py: Python<'_>,
    target: &str,
    out: Option<String>,
    compare: Option<&str>,
    filters: Vec<String>,
    metrics: Vec<String>,
    workers: Option<usize>,
    keep_variance: Option<f64>,
    keep_dims: Option<usize>,
    google_compat: bool,
    precision: Option<&str>,
    memory_mb: Option<u64>,
    overwrite: bool,
    report: bool,
) -> PyResult<(String, Vec<String>, Option<String>)> {
    let spec = build_spec(
        target,
        out,
        compare,
        &filters,
        &metrics,
        keep_variance,
        keep_dims,
        google_compat,
        precision,
        memory_mb,
        overwrite,
    )
    .map_err(|m| svcca_error(py, m, false))?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let workers = workers.unwrap_or(cores).max(1);
    let threads = (cores / workers).max(1);
    let output = spec.output.clone();
    let ended = py.detach(|| -> Result<Ended, String> {
        svcca_core::set_parallelism(threads);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores.clamp(2, 8))
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        let job = svcca_engine::client::run_embedded(
            svcca_engine::job_factory(),
            svcca_engine::task_executor(ExecutorConfig::default().with_threads(threads)),
            spec.to_toml(),
            workers,
            |_| {},
        );
        let ended = runtime.block_on(async {
            tokio::select! {
                r = job => Ended::Done(r),
                () = watch_interrupt() => Ended::Interrupted,
            }
        });
        // An interrupted job's tasks are abandoned, not awaited: its output resumes on a rerun.
        runtime.shutdown_timeout(Duration::from_secs(2));
        Ok(ended)
    });
    let summary = match ended.map_err(|m| svcca_error(py, m, true))? {
        Ended::Interrupted => return Err(PyKeyboardInterrupt::new_err(())),
        Ended::Done(Ok(summary)) => summary,
        // As in `svcca sweep`: the coordinator is this process's own; the planner's reason is
        // the message.
        Ended::Done(Err(e)) => {
            let retryable = e.is_retryable();
            let message = match e {
                ClusterError::Rpc {
                    rpc: "SubmitJob",
                    message,
                    ..
                } => message,
                e => e.to_string(),
            };
            return Err(svcca_error(py, message, retryable));
        }
    };
    let index = if report {
        py.detach(|| write_local_report(&output))
            .map_err(|m| svcca_error(py, m, false))?
    } else {
        None
    };
    Ok((output, summary.lines, index))
}

async fn watch_interrupt() {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if interrupted() {
            return;
        }
    }
}

/// Reports are files for people to open: one is drawn next to local results (as `svcca sweep`
/// does, with analyses.json when a CLI sweep left one); remote results get theirs from
/// `svcca report URL --out DIR`.
fn write_local_report(output: &str) -> Result<Option<String>, String> {
    let local = !output.contains("://") || output.starts_with("file://");
    if !local {
        return Ok(None);
    }
    let folder = std::path::PathBuf::from(output.strip_prefix("file://").unwrap_or(output));
    let path = folder.join("results.json");
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let results = svcca_results::ResultsFile::from_json(&bytes).map_err(|e| e.to_string())?;
    let mut options = svcca_report::ReportOptions::default()
        .with_threshold(0.95)
        .with_gaussian_null(true)
        .with_source(output.to_string());
    if let Ok(bytes) = std::fs::read(folder.join("analyses.json")) {
        let computed = svcca_report::ComputedAnalyses::from_json(&bytes)
            .map_err(|e| format!("{}/analyses.json is not valid: {e}", folder.display()))?;
        options = options.with_computed(computed);
    }
    let summary = svcca_report::write_report(&results, &folder.join("report"), &options)
        .map_err(|e| e.to_string())?;
    Ok(Some(summary.index.to_string_lossy().to_string()))
}

/// The bytes of `key` under `url` (a folder, file://, s3://, gs://, az://), or None when absent.
#[pyfunction]
pub fn read_object(py: Python<'_>, url: &str, key: &str) -> PyResult<Option<Py<PyBytes>>> {
    let got = py.detach(|| -> Result<Option<Vec<u8>>, (String, bool)> {
        let store = svcca_engine::cache::Store::open(url)
            .map_err(|e| (format!("cannot open {url}: {e}"), false))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| (format!("cannot start the I/O runtime: {e}"), true))?;
        runtime
            .block_on(store.get(key))
            .map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| {
                (
                    format!("cannot read {key} under {}: {e}", store.url()),
                    e.is_retryable(),
                )
            })
    });
    let got = got.map_err(|(m, retryable)| svcca_error(py, m, retryable))?;
    Ok(got.map(|bytes| PyBytes::new(py, &bytes).unbind()))
}
