//! What a finished sweep leaves beside its results, wherever they are: `analyses.json` (computed
//! from the activations, see [`super::sweep_analyses`]) and the HTML report under `report/`.
//!
//! A local output folder gets both written in place. An object-store output (`s3://`, `gs://`,
//! `az://`) gets the same files: the report is drawn into a temporary folder and uploaded, so a
//! cluster's outputs are a laptop's. `svcca sweep` writes them after its job; a coordinator
//! writes them for every submitted job before it counts as succeeded ([`SweepOutputsHook`]).

use std::path::Path;

use svcca_engine::cache::{Store, normalise_url};
use svcca_engine::coordinator::{CompletedJob, CompletionHook};
use svcca_engine::driver::TaskFailure;
use svcca_engine::spec::JobSpec;
use svcca_results::ResultsFile;

use super::sweep_analyses::{ClassInputs, prepare_classes};
use crate::exit::Failure;

/// What [`write`] wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// One line per file written, for summaries (`analyses: URL`, `report: URL`).
    pub lines: Vec<String>,
    /// The report's terminal summary.
    pub report_text: String,
}

/// Writes `analyses.json` (when there is anything to compute) and `report/` under `output`.
pub fn write(
    dataset: &str,
    output: &str,
    classes: Option<&ClassInputs>,
    runtime: &tokio::runtime::Runtime,
) -> Result<Written, Failure> {
    let store =
        Store::open(output).map_err(|e| Failure::fatal(format!("cannot open {output}: {e}")))?;
    let shown = store.url().trim_end_matches('/').to_string();
    let store_failure = |what: &str, e: svcca_engine::cache::CacheError| {
        crate::exit::classify(
            format!("cannot {what} under {shown}: {e}"),
            e.is_retryable(),
            &e,
        )
    };
    let bytes = runtime
        .block_on(store.get("results.json"))
        .map_err(|e| store_failure("read results.json", e))?
        .ok_or_else(|| Failure::fatal(format!("no results.json under {shown}")))?;
    let results = ResultsFile::from_json(&bytes)
        .map_err(|e| Failure::fatal(format!("{shown}/results.json: {e}")))?;
    let mut written = Written::default();
    if let Some(analyses) = super::sweep_analyses::compute(dataset, &results, classes, runtime)? {
        runtime
            .block_on(store.put("analyses.json", analyses.to_json()))
            .map_err(|e| store_failure("write analyses.json", e))?;
        written
            .lines
            .push(format!("analyses: {shown}/analyses.json"));
    }
    let report_args = |out| super::report::ReportArgs {
        results: output.to_string(),
        out,
        metric: None,
        threshold: 0.95,
        no_null: false,
    };
    let local = normalise_url(output)
        .ok()
        .filter(|url| url.scheme() == "file")
        .is_some();
    if local {
        written.report_text = super::report::write(report_args(None))?;
    } else {
        let tmp = tempfile::tempdir().map_err(|e| {
            crate::exit::io_failure(
                format!("cannot make a temporary folder for the report: {e}"),
                &e,
            )
        })?;
        let drawn = tmp.path().join("report");
        written.report_text = super::report::write(report_args(Some(drawn.clone())))?;
        // The earlier report's figures would otherwise stay beside the new ones.
        runtime
            .block_on(store.delete_prefix("report"))
            .map_err(|e| store_failure("replace report/", e))?;
        runtime.block_on(upload(&store, &drawn, "report"))?;
    }
    written
        .lines
        .push(format!("report: {shown}/report/index.html"));
    Ok(written)
}

/// Copies every file under `dir` to `prefix/` of `store`, keeping relative paths.
async fn upload(store: &Store, dir: &Path, prefix: &str) -> Result<(), Failure> {
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|e| {
            crate::exit::io_failure(format!("cannot list {}: {e}", folder.display()), &e)
        })?;
        for entry in entries {
            let path = entry
                .map_err(|e| {
                    crate::exit::io_failure(format!("cannot list {}: {e}", folder.display()), &e)
                })?
                .path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let relative = path.strip_prefix(dir).unwrap_or(&path);
            let key = format!("{prefix}/{}", relative.to_string_lossy());
            let bytes = std::fs::read(&path).map_err(|e| {
                crate::exit::io_failure(format!("cannot read {}: {e}", path.display()), &e)
            })?;
            let content_type = Store::content_type_of(&key);
            store
                .put_typed(&key, bytes, content_type)
                .await
                .map_err(|e| {
                    crate::exit::classify(
                        format!("cannot write {key} under {}: {e}", store.url()),
                        e.is_retryable(),
                        &e,
                    )
                })?;
        }
    }
    Ok(())
}

/// Fetches class labels named by a URL (`s3://…/labels.npy`) to a temporary file, for the
/// labels of a job that runs where the submitter's files are not.
pub fn fetch_labels(
    url: &str,
    runtime: &tokio::runtime::Runtime,
) -> Result<tempfile::NamedTempFile, Failure> {
    let (folder, name) = url
        .rsplit_once('/')
        .filter(|(_, name)| !name.is_empty())
        .ok_or_else(|| Failure::fatal(format!("labels {url}: not the URL of a .npy file")))?;
    let store = Store::open(folder)
        .map_err(|e| Failure::fatal(format!("labels {url}: cannot open {folder}: {e}")))?;
    let bytes = runtime
        .block_on(store.get(name))
        .map_err(|e| crate::exit::classify(format!("labels {url}: {e}"), e.is_retryable(), &e))?
        .ok_or_else(|| Failure::fatal(format!("labels {url}: no such object")))?;
    let io = |e: std::io::Error| {
        crate::exit::io_failure(format!("labels {url}: cannot keep a local copy: {e}"), &e)
    };
    let mut file = tempfile::Builder::new()
        .suffix(".npy")
        .tempfile()
        .map_err(io)?;
    std::io::Write::write_all(&mut file, &bytes).map_err(io)?;
    Ok(file)
}

/// The coordinator's [`CompletionHook`]: every submitted sweep gets its analyses and report,
/// written under its output as `svcca sweep` writes them. Its labels are checked when the job is
/// submitted, so a bad labels file is refused before the sweep runs.
#[derive(Debug, Default)]
pub struct SweepOutputsHook;

/// A current-thread runtime for the hook's I/O: it runs on a blocking thread of the
/// coordinator's runtime, where that runtime cannot be blocked on.
fn hook_runtime() -> Result<tokio::runtime::Runtime, TaskFailure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TaskFailure::Retryable {
            task_id: TASK.into(),
            message: format!("cannot start a runtime for the analyses and report: {e}"),
        })
}

/// How failures of the step after a job are named.
const TASK: &str = "analyses-and-report";

fn task_failure(failure: Failure, context: impl std::fmt::Display) -> TaskFailure {
    let message = format!("{context}{}", failure.message);
    if failure.retryable {
        TaskFailure::Retryable {
            task_id: TASK.into(),
            message,
        }
    } else {
        TaskFailure::Fatal {
            task_id: TASK.into(),
            message,
        }
    }
}

impl CompletionHook for SweepOutputsHook {
    fn check(&self, job_spec_toml: &str) -> Result<(), TaskFailure> {
        // Specs that are not sweep specs are the job factory's to refuse.
        let Ok(spec) = JobSpec::parse_toml(job_spec_toml) else {
            return Ok(());
        };
        if spec.analyses.labels.is_none() {
            return Ok(());
        }
        let runtime = hook_runtime()?;
        prepare_classes(&spec.analyses, &spec.dataset, &runtime)
            .map(|_| ())
            .map_err(|f| task_failure(f, ""))
    }

    fn run(&self, job: &CompletedJob) -> Result<Vec<String>, TaskFailure> {
        let Ok(spec) = JobSpec::parse_toml(&job.job_spec_toml) else {
            return Ok(Vec::new());
        };
        let runtime = hook_runtime()?;
        let context = format!(
            "the results are written under {}, but not their analyses and report: ",
            spec.output
        );
        let classes = prepare_classes(&spec.analyses, &spec.dataset, &runtime)
            .map_err(|f| task_failure(f, &context))?;
        let written = write(&spec.dataset, &spec.output, classes.as_ref(), &runtime)
            .map_err(|f| task_failure(f, &context))?;
        for line in &written.lines {
            tracing::info!(output = %spec.output, "{line}");
        }
        Ok(written.lines)
    }
}
