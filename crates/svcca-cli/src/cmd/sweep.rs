//! `svcca sweep`: runs a comparison job on an embedded cluster (a coordinator and N in-process
//! workers on loopback), from a job file or from flags.

use std::io::IsTerminal;

use svcca_engine::client::ClusterError;
use svcca_engine::exec::ExecutorConfig;
use svcca_engine::spec::{ComparisonPlan, JobSpec, KeepRule, Metric, Mode, parse_where};

use crate::exit::{CmdResult, Failure};

/// Compare many representations at once: all pairs, each checkpoint against the final one, or
/// each layer across seeds. Results (results.json, pairs.parquet, one matrix per metric as CSV
/// and Arrow IPC, summary.json) go under --out; rerunning the same job resumes, and later runs
/// reuse each representation's cached statistics (kept beside the output, in OUT.cache). The
/// output also gets analyses.json (intrinsic dimensionality; class sensitivity with --labels) and
/// the HTML report under report/, in a local folder as in an object store.
///
/// Examples:
///   svcca sweep JOB.toml
///   svcca sweep ./digits-ds --out ./sweep --compare vs-final --where run=mlp --metric svcca --metric cka
///   svcca sweep ./digits-ds --out ./sweep --compare vs-final --labels probe_y.npy --logits logits
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct SweepArgs {
    /// A job spec file (`*.toml`), or a dataset URL/path when used with --out.
    pub target: String,
    /// Output URL or folder (required with a dataset; overrides `output` of a job file).
    #[arg(long)]
    pub out: Option<String>,
    /// Which pairs to compare.
    #[arg(long, value_parser = ["all-pairs", "vs-final", "cross-seed"])]
    pub compare: Option<String>,
    /// Keep representations whose field matches (run, seed, step, layer or a tag; globs allowed).
    /// Repeat for several fields; the same field twice means either value.
    #[arg(long = "where", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Metric to compute (repeatable): svcca, cca, pwcca, cka. Default svcca.
    #[arg(long = "metric", value_parser = ["svcca", "cca", "pwcca", "cka"])]
    pub metrics: Vec<String>,
    /// In-process workers (default: the number of cores).
    #[arg(long, env = "SVCCA_WORKERS")]
    pub workers: Option<usize>,
    /// SVCCA keeps the fewest directions explaining this fraction of variance (default 0.99).
    #[arg(long, conflicts_with = "keep_dims")]
    pub keep_variance: Option<f64>,
    /// SVCCA keeps this many directions.
    #[arg(long)]
    pub keep_dims: Option<usize>,
    /// Follow google/svcca's arithmetic (regularised covariance, truncated mean).
    #[arg(long)]
    pub google_compat: bool,
    /// Arithmetic of the moments: f64 (the default), or mixed: f32 products per chunk,
    /// accumulated and merged in f64 (svcca and cca). A representation whose estimated error
    /// exceeds 1e-3 on a canonical correlation is refused, naming it (`precision` in a job file).
    #[arg(long, value_parser = ["f64", "mixed"])]
    pub precision: Option<String>,
    /// Memory bound per task on a worker, MiB.
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// Replace the results of a different job found at --out. They are replaced only once this
    /// job has all its results: a run that fails leaves them as they were.
    #[arg(long)]
    pub overwrite: bool,
    /// Do not write the HTML report (`report/` under the output) nor analyses.json at the end.
    #[arg(long)]
    pub no_report: bool,
    /// Off a terminal, log a progress line (tasks done/total, rate, ETA) at most every this many
    /// seconds; 0 turns the lines off. On a terminal a progress bar is drawn instead.
    #[arg(
        long,
        env = "SVCCA_PROGRESS_EVERY",
        default_value_t = 30.0,
        value_name = "SECONDS"
    )]
    pub progress_every: f64,
    /// Class labels (`.npy` of integers, one per datapoint of the probe set) for class
    /// sensitivity: each layer at every checkpoint against each class (`[analyses] labels`).
    #[arg(long, value_name = "FILE")]
    pub labels: Option<String>,
    /// With labels: compare with each class's column of this layer's final checkpoint (same run
    /// and seed) instead of the class indicator (`[analyses] logits`).
    #[arg(long, value_name = "LAYER")]
    pub logits: Option<String>,
    /// How tokens layers ([sequences, tokens, features]) are compared: fold (every token is a
    /// datapoint) or mean (the mean of each sequence's tokens). Required when the sweep holds one.
    #[arg(long, value_parser = ["fold", "mean"])]
    pub tokens: Option<String>,
    /// Where each pair's canonical correlations are stored: parquet (in pairs.parquet only, the
    /// default), json (in results.json as well) or none (`coefficients` in a job file).
    #[arg(long, value_parser = ["parquet", "json", "none"])]
    pub coefficients: Option<String>,
}

fn spec_error(e: impl std::fmt::Display) -> Failure {
    Failure::fatal(e.to_string())
}

/// The job spec the arguments describe.
pub fn build_spec(args: &SweepArgs) -> Result<JobSpec, Failure> {
    let is_file = args.target.ends_with(".toml") && std::path::Path::new(&args.target).is_file();
    let mut spec = if is_file {
        let text = std::fs::read_to_string(&args.target)
            .map_err(|e| Failure::fatal(format!("cannot read job file {}: {e}", args.target)))?;
        let mut spec = JobSpec::parse_toml(&text)
            .map_err(|e| Failure::fatal(format!("{}: {e}", args.target)))?;
        if let Some(out) = &args.out {
            spec.output = out.clone();
        }
        spec
    } else {
        refuse_activation_folder(&args.target, args.out.as_deref())?;
        let out = args.out.clone().ok_or_else(|| {
            Failure::fatal(format!(
                "`{}` is not a job file; to sweep a dataset give --out OUT_URL (e.g. svcca sweep {} --out ./sweep)",
                args.target, args.target
            ))
        })?;
        JobSpec::new(args.target.clone(), out)
    };
    if let Some(c) = &args.compare {
        spec.comparison = c.parse::<ComparisonPlan>().map_err(spec_error)?;
    }
    for f in &args.filters {
        let (k, v) = parse_where(f).map_err(spec_error)?;
        spec = spec.with_where(k, v);
    }
    if !args.metrics.is_empty() {
        let metrics = args
            .metrics
            .iter()
            .map(|m| m.parse::<Metric>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(spec_error)?;
        spec.metrics = metrics;
    }
    if let Some(f) = args.keep_variance {
        spec.keep = KeepRule::Variance(f);
    }
    if let Some(k) = args.keep_dims {
        spec.keep = KeepRule::Dims(k);
    }
    if args.google_compat {
        spec.mode = Mode::GoogleCompat;
    }
    if let Some(p) = &args.precision {
        spec.precision = p
            .parse()
            .map_err(|e: svcca_core::CoreError| Failure::fatal(e.to_string()))?;
    }
    if let Some(t) = &args.tokens {
        spec.tokens = Some(t.parse().map_err(|e: String| Failure::fatal(e))?);
    }
    if let Some(c) = &args.coefficients {
        spec.coefficients = c.parse().map_err(|e: String| Failure::fatal(e))?;
    }
    if let Some(mb) = args.memory_mb {
        spec.resources.memory_mb = mb;
    }
    if args.overwrite {
        spec.overwrite = true;
    }
    if let Some(labels) = &args.labels {
        spec.analyses.labels = Some(labels.clone());
        // New labels from the command line do not inherit the job file's logits layer.
        spec.analyses.logits = None;
    }
    if let Some(logits) = &args.logits {
        spec.analyses.logits = Some(logits.clone());
    }
    // Relative paths are made absolute here: workers may not share this working directory.
    for url in [&mut spec.dataset, &mut spec.output] {
        if !url.contains("://")
            && !url.starts_with("file:")
            && let Ok(abs) = svcca_storage::store::absolute_path(std::path::Path::new(&*url))
        {
            *url = abs.to_string_lossy().to_string();
        }
    }
    spec.validate().map_err(spec_error)?;
    Ok(spec)
}

pub fn run(args: SweepArgs) -> CmdResult {
    let mut spec = build_spec(&args)?;
    check_local_dataset(&spec.dataset)?;
    // The analyses run here after the job and do not change its pairs: the engine gets the spec
    // without them, so adding labels to a finished job resumes it instead of refusing the output
    // folder as another job's.
    let analyses = std::mem::take(&mut spec.analyses);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let workers = args.workers.unwrap_or(cores).max(1);
    // Each worker runs one task at a time; share the cores between them.
    let threads = (cores / workers).max(1);
    // The moments and whitening products in svcca-core use the process-wide setting: without
    // this each concurrent task would spread over every core and the tasks would contend.
    svcca_core::set_parallelism(threads);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.clamp(2, 8))
        .enable_all()
        .build()
        .map_err(|e| Failure::retryable(format!("cannot start the async runtime: {e}")))?;
    let classes = if args.no_report {
        if analyses.labels.is_some() {
            eprintln!("note: --no-report: class sensitivity is not computed");
        }
        None
    } else {
        crate::cmd::sweep_analyses::prepare_classes(&analyses, &spec.dataset, &runtime)?
    };
    let interactive = std::io::stderr().is_terminal();
    let bar = if interactive {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tasks",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    if !(args.progress_every.is_finite() && args.progress_every >= 0.0) {
        return Err(Failure::fatal(format!(
            "--progress-every must be a number of seconds, 0 or more (got {})",
            args.progress_every
        )));
    }
    let mut progress_log = (!interactive && args.progress_every > 0.0).then(|| {
        crate::progress::ProgressLog::new(
            std::time::Duration::from_secs_f64(args.progress_every),
            std::time::Instant::now(),
        )
    });
    let toml_text = spec.to_toml();
    let progress_bar = bar.clone();
    let outcome = runtime.block_on(svcca_engine::client::run_embedded(
        svcca_engine::job_factory(),
        crate::heap::HeapReleasingExecutor::wrap(svcca_engine::task_executor(
            ExecutorConfig::default().with_threads(threads),
        )),
        toml_text,
        workers,
        move |p| {
            if let Some(bar) = &progress_bar {
                bar.set_length(p.total);
                bar.set_position(p.done);
            }
            if let Some(line) = progress_log
                .as_mut()
                .and_then(|log| log.observe(p.done, p.total, std::time::Instant::now()))
            {
                crate::progress::emit(&line);
            }
        },
    ));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let retryable = outcome.as_ref().is_err_and(|e| e.is_retryable());
    match outcome {
        Ok(summary) => {
            for line in &summary.lines {
                outln!("{line}");
            }
            if args.no_report {
                return Ok(());
            }
            write_report(
                &spec.dataset,
                &spec.output,
                classes.as_ref(),
                &runtime,
                &summary.lines,
            )
        }
        // The coordinator is this process's own, on loopback: its address and the RPC's name
        // mean nothing to the user, the planner's reason is the message.
        Err(ClusterError::Rpc {
            rpc: "SubmitJob",
            message,
            ..
        }) => Err(if retryable {
            Failure::retryable(message)
        } else {
            Failure::fatal(message)
        }),
        Err(e) if retryable => Err(Failure::retryable(e.to_string())),
        Err(e) => Err(Failure::fatal(e.to_string())),
    }
}

/// A local dataset path that is a regular file, or lies under one, can never be read: say so
/// here, as the planner reports every failure to read a store as one that may pass.
/// A local folder of `.npy` / `.npz` / `.safetensors` files is not a dataset yet: say exactly
/// what to run instead of failing on its missing (or foreign) manifest.
fn refuse_activation_folder(target: &str, out: Option<&str>) -> CmdResult {
    if target.contains("://") && !target.starts_with("file://") {
        return Ok(());
    }
    let dir = std::path::Path::new(target.strip_prefix("file://").unwrap_or(target));
    let manifest = dir.join(svcca_storage::manifest::MANIFEST_NAME);
    let is_dataset = std::fs::read(&manifest).is_ok_and(|bytes| {
        serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| {
            v.get("format").and_then(|f| f.as_str()) == Some(svcca_storage::manifest::FORMAT_NAME)
        })
    });
    if is_dataset || !dir.is_dir() {
        return Ok(());
    }
    let Some(example) = first_activation_file(dir) else {
        return Ok(());
    };
    let shown = target.trim_end_matches('/');
    Err(Failure::fatal(format!(
        "{shown} is a folder of activation files (e.g. {example}), not a dataset: ingest it, then \
         sweep the dataset:\n  svcca ingest {shown} {shown}-dataset --pattern \
         '{{run}}/seed{{seed}}/step{{step}}/{{layer}}.npy'\n  svcca sweep {shown}-dataset --out {}\n\
         (--pattern maps each file's path under the folder to run, seed, step and layer; arrays \
         of more than two axes also need --layout nhwc, nchw or tokens)",
        out.unwrap_or("./sweep")
    )))
}

/// The first `.npy` / `.npz` / `.safetensors` file under `dir` (relative), looking at a bounded
/// number of entries so a huge folder is not walked.
fn first_activation_file(dir: &std::path::Path) -> Option<String> {
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d).ok()?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            seen += 1;
            if seen > 10_000 {
                return None;
            }
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|x| x.to_str()),
                Some("npy" | "npz" | "safetensors")
            ) {
                return path.strip_prefix(dir).ok().map(|p| p.display().to_string());
            }
        }
    }
    None
}

fn check_local_dataset(dataset: &str) -> CmdResult {
    if dataset.contains("://") && !dataset.starts_with("file://") {
        return Ok(());
    }
    let path = std::path::Path::new(dataset.strip_prefix("file://").unwrap_or(dataset));
    let not_a_folder = match std::fs::metadata(path) {
        Ok(meta) => !meta.is_dir(),
        Err(e) => e.kind() == std::io::ErrorKind::NotADirectory,
    };
    if not_a_folder {
        return Err(Failure::fatal(format!(
            "dataset {dataset} is not a folder (it, or a folder above it, is a regular file); a \
             dataset is the folder `svcca ingest` wrote, holding manifest.json"
        )));
    }
    Ok(())
}

/// Writes the analyses and the report beside the results, local or remote alike. The report's
/// summary repeats what the job's lines said already (the skipped pairs): `printed` are those
/// lines, left out of it here.
fn write_report(
    dataset: &str,
    output: &str,
    classes: Option<&crate::cmd::sweep_analyses::ClassInputs>,
    runtime: &tokio::runtime::Runtime,
    printed: &[String],
) -> CmdResult {
    let written = crate::cmd::sweep_outputs::write(dataset, output, classes, runtime)?;
    let text: String = written
        .report_text
        .lines()
        .filter(|line| !printed.iter().any(|p| p == line))
        .map(|line| format!("{line}\n"))
        .collect();
    out!("{text}");
    let local = !output.contains("://") || output.starts_with("file://");
    if !local {
        for line in &written.lines {
            outln!("{line}");
        }
    }
    Ok(())
}
