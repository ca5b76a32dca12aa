//! Where submitted jobs may read and write.
//!
//! A coordinator writes each job's results wherever the job spec's `output` says, with the
//! coordinator's own credentials: a submitter could otherwise overwrite any folder or bucket
//! prefix the coordinator can reach. [`JobPolicy`] bounds that:
//! - with `--allow-output PREFIX` (repeatable), a job's `output` and `cache` (by default
//!   `<output>.cache`, beside the output) must lie under one of the prefixes; with
//!   `--allow-dataset PREFIX`, its `dataset` (and `[analyses] labels`) too;
//! - with no output prefix configured, a job may write only to an output that is empty or holds
//!   nothing but an svcca output (`job.toml`, `results.json`, `results.prev.json`,
//!   `pairs.parquet`, `summary.json`, `analyses.json`, `matrix_*.csv`, `matrix_*.arrow`,
//!   `report/`, `cache/`): a folder of other files is refused.
//!   (Whose svcca output it is, and whether it may be replaced, is the job's `job.toml` check.)
//!
//! Locations are compared after normalisation: local paths and `file://` URLs become absolute
//! `file://` URLs with `.` and `..` resolved lexically, `s3a://` is `s3://`, and a prefix matches
//! whole path segments only (`s3://b/team` allows `s3://b/team/x`, not `s3://b/team2`).
//!
//! [`GuardedFactory`] applies the policy to every submitted job before the job's own factory
//! plans it. Specs that are not sweep specs (the scheduler's test jobs) pass to that factory
//! untouched, which refuses what it cannot read.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::driver::{JobDriver, JobDriverFactory, TaskFailure};
use crate::spec::JobSpec;

/// Prefixes a job's locations must lie under; empty lists leave that kind unrestricted (but see
/// the module documentation for outputs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobPolicy {
    pub allow_output: Vec<String>,
    pub allow_dataset: Vec<String>,
}

impl JobPolicy {
    pub fn new(allow_output: Vec<String>, allow_dataset: Vec<String>) -> Self {
        Self {
            allow_output,
            allow_dataset,
        }
    }

    /// Checks the prefixes themselves, so that a typo fails at start-up rather than refusing
    /// every job.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, prefixes) in [
            ("--allow-output", &self.allow_output),
            ("--allow-dataset", &self.allow_dataset),
        ] {
            for prefix in prefixes {
                canonical(prefix).map_err(|why| format!("{flag} `{prefix}`: {why}"))?;
            }
        }
        Ok(())
    }

    /// Why `spec` may not run here, if it may not. Only the locations are checked here; the
    /// contents of the output are checked by [`check_output_contents`].
    pub fn check_locations(&self, spec: &JobSpec) -> Result<(), String> {
        // The default cache lies beside the output (`<output>.cache`): it is written to as much
        // as the output, so it must be allowed as much.
        let cache_field = if spec.cache.is_some() {
            "cache"
        } else {
            "cache (by default beside the output; set `cache` in the job spec to choose another)"
        };
        let places = [
            ("output", spec.output.clone()),
            (cache_field, spec.cache_url()),
        ];
        for (field, url) in places {
            check_under("output", field, &url, &self.allow_output, "--allow-output")?;
        }
        check_under(
            "dataset",
            "dataset",
            &spec.dataset,
            &self.allow_dataset,
            "--allow-dataset",
        )?;
        // The class labels are read like the dataset (by the analyses after the job).
        match &spec.analyses.labels {
            Some(labels) => check_under(
                "dataset",
                "analyses.labels",
                labels,
                &self.allow_dataset,
                "--allow-dataset",
            ),
            None => Ok(()),
        }
    }
}

fn check_under(
    kind: &str,
    field: &str,
    url: &str,
    prefixes: &[String],
    flag: &str,
) -> Result<(), String> {
    if prefixes.is_empty() {
        return Ok(());
    }
    let location = canonical(url).map_err(|why| format!("{field} `{url}`: {why}"))?;
    let allowed = prefixes.iter().any(|prefix| {
        canonical(prefix).is_ok_and(|p| {
            let p = p.trim_end_matches('/');
            location == p || location.starts_with(&format!("{p}/"))
        })
    });
    if allowed {
        return Ok(());
    }
    Err(format!(
        "{field} `{url}` is outside the {kind} locations this coordinator allows ({flag}: {}); \
         choose a location under one of them",
        prefixes.join(", ")
    ))
}

/// A location in one comparable form (see the module documentation).
pub fn canonical(url: &str) -> Result<String, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("it is empty".into());
    }
    let Some(at) = url.find("://") else {
        return local(std::path::Path::new(url));
    };
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    let scheme = url[..at].to_ascii_lowercase();
    if scheme == "file" {
        let path = parsed
            .to_file_path()
            .map_err(|_| "not an absolute local path".to_string())?;
        return local(&path);
    }
    let scheme = if scheme == "s3a" { "s3".into() } else { scheme };
    let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
    let mut segments: Vec<String> = Vec::new();
    for segment in parsed.path().split('/') {
        // Percent-encoded dots and slashes would name other places once decoded by a store.
        let decoded = segment.to_ascii_lowercase();
        if decoded.contains("%2e") || decoded.contains("%2f") || decoded.contains("%5c") {
            return Err("it holds a percent-encoded `.`, `/` or `\\`".into());
        }
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other.to_string()),
        }
    }
    Ok(format!("{scheme}://{host}/{}", segments.join("/"))
        .trim_end_matches('/')
        .to_string())
}

fn local(path: &std::path::Path) -> Result<String, String> {
    let abs = svcca_storage::store::absolute_path(path).map_err(|e| e.to_string())?;
    let text = abs
        .to_str()
        .ok_or_else(|| "the path is not UTF-8".to_string())?;
    Ok(format!("file://{}", text.trim_end_matches('/')))
}

/// Whether a top-level entry of an output folder is part of an svcca output. A local store writes
/// `NAME#N` and renames it to `NAME`; a run killed in between leaves it, and must still resume.
fn is_svcca_output(name: &str, is_folder: bool) -> bool {
    let name = if is_folder {
        name
    } else {
        name.split('#').next().unwrap_or(name)
    };
    if is_folder {
        return matches!(name, "cache" | "report");
    }
    matches!(
        name,
        "job.toml"
            | "results.json"
            | "results.prev.json"
            | "pairs.parquet"
            | "summary.json"
            | "analyses.json"
    ) || (name.starts_with("matrix_") && (name.ends_with(".csv") || name.ends_with(".arrow")))
}

/// Refuses an output that holds anything but an svcca output. A location that cannot be listed
/// passes: planning the job opens it and reports that failure with its real cause.
pub async fn check_output_contents(output: &str) -> Result<(), String> {
    let Ok(location) = svcca_storage::store::resolve(output) else {
        return Ok(());
    };
    if let Some(dir) = &location.local_dir
        && !dir.is_dir()
    {
        return Ok(());
    }
    let listed = object_store::ObjectStore::list_with_delimiter(
        location.store.as_ref(),
        Some(&location.root),
    )
    .await;
    let Ok(listed) = listed else {
        return Ok(());
    };
    let mut foreign: Vec<String> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .filter(|name| !is_svcca_output(name, true))
        .map(|name| format!("{name}/"))
        .chain(
            listed
                .objects
                .iter()
                .filter_map(|o| o.location.filename().map(str::to_string))
                .filter(|name| !is_svcca_output(name, false)),
        )
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    let shown = foreign.len().min(5);
    Err(format!(
        "output `{output}` holds files that are not an svcca output ({}{}): a job may write only \
         to an empty folder or an svcca output; choose another output URL (or start the \
         coordinator with --allow-output for the locations jobs may write to)",
        foreign[..shown].join(", "),
        if foreign.len() > shown { ", ..." } else { "" }
    ))
}

/// A [`JobDriverFactory`] that applies a [`JobPolicy`] before the inner factory plans the job.
pub struct GuardedFactory {
    inner: Arc<dyn JobDriverFactory>,
    policy: JobPolicy,
}

impl GuardedFactory {
    pub fn new(inner: Arc<dyn JobDriverFactory>, policy: JobPolicy) -> Self {
        Self { inner, policy }
    }
}

impl JobDriverFactory for GuardedFactory {
    fn create(
        &self,
        job_spec_toml: String,
    ) -> BoxFuture<'static, Result<Box<dyn JobDriver>, TaskFailure>> {
        let inner = self.inner.clone();
        let policy = self.policy.clone();
        async move {
            if let Ok(spec) = JobSpec::parse_toml(&job_spec_toml) {
                let refuse = |message: String| {
                    tracing::warn!(output = %spec.output, dataset = %spec.dataset, %message, "job refused by the coordinator's policy");
                    TaskFailure::Fatal {
                        task_id: "job-spec".into(),
                        message,
                    }
                };
                policy.check_locations(&spec).map_err(refuse)?;
                if policy.allow_output.is_empty() && !spec.output.trim().is_empty() {
                    check_output_contents(&spec.output).await.map_err(refuse)?;
                }
            }
            inner.create(job_spec_toml).await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_normalise_before_they_compare() {
        assert_eq!(
            canonical("s3a://Bucket/a/./b/../c/").unwrap(),
            "s3://bucket/a/c"
        );
        assert_eq!(canonical("/data/out/../x").unwrap(), "file:///data/x");
        assert_eq!(canonical("file:///data/x/").unwrap(), "file:///data/x");
        // URL parsing reads an encoded `..` as `..`, as the stores do.
        assert_eq!(canonical("s3://b/a/%2e%2e/c").unwrap(), "s3://b/c");
        assert!(canonical("s3://b/team/x%2F..%2F..%2Fother").is_err());
        assert!(canonical("").is_err());
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let allow = vec!["s3://b/team".to_string(), "/results".to_string()];
        for ok in [
            "s3://b/team",
            "s3://b/team/x",
            "s3a://b/team/x/y",
            "/results/a",
        ] {
            assert!(
                check_under("output", "output", ok, &allow, "--allow-output").is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "s3://b/team2",
            "s3://b/team/../other",
            "gs://b/team/x",
            "/results2",
            "/results/../etc",
        ] {
            let why =
                check_under("output", "output", bad, &allow, "--allow-output").expect_err(bad);
            assert!(why.contains("s3://b/team, /results"), "{why}");
        }
    }

    #[test]
    fn the_default_cache_beside_the_output_must_be_allowed_too() {
        let policy = JobPolicy::new(vec!["s3://b/team".into()], Vec::new());
        let spec = JobSpec::new("s3://b/data", "s3://b/team/nightly");
        assert!(policy.check_locations(&spec).is_ok());
        // `s3://b/team.cache` is beside the allowed prefix, not under it.
        let why = policy
            .check_locations(&JobSpec::new("s3://b/data", "s3://b/team"))
            .unwrap_err();
        assert!(why.contains("s3://b/team.cache"), "{why}");
        assert!(why.contains("set `cache` in the job spec"), "{why}");
        let mut labelled = JobSpec::new("s3://b/data", "s3://b/team/x");
        labelled.analyses.labels = Some("s3://b/secret/labels.npy".into());
        assert!(policy.check_locations(&labelled).is_ok());
        let why = JobPolicy::new(Vec::new(), vec!["s3://b/data".into()])
            .check_locations(&labelled)
            .unwrap_err();
        assert!(
            why.starts_with("analyses.labels `s3://b/secret/labels.npy`"),
            "{why}"
        );
        let explicit = JobSpec::new("s3://b/data", "s3://b/team").with_cache("s3://b/team/cache");
        assert!(policy.check_locations(&explicit).is_ok());
        let outside = JobSpec::new("s3://b/data", "s3://b/team/x").with_cache("s3://b/other");
        let why = policy.check_locations(&outside).unwrap_err();
        assert!(why.starts_with("cache `s3://b/other`"), "{why}");
    }

    #[test]
    fn only_svcca_outputs_count_as_such() {
        for (name, folder) in [
            ("job.toml", false),
            ("matrix_cka.arrow", false),
            ("results.json#3", false),
            ("pairs.parquet", false),
            ("cache", true),
            ("report", true),
        ] {
            assert!(is_svcca_output(name, folder), "{name}");
        }
        for (name, folder) in [
            ("notes.txt", false),
            ("matrix_cka.py", false),
            ("data", true),
            ("results.json", true),
        ] {
            assert!(!is_svcca_output(name, folder), "{name}");
        }
    }
}
