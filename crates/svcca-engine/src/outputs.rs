//! What a sweep leaves under its output URL.
//!
//! - `job.toml`: the job spec, written before any work starts. It marks the folder as this job's:
//!   a later run with the same spec resumes; a run with a different spec is refused unless it
//!   says `overwrite = true` (so nobody loses results by reusing a path). An overwriting job
//!   leaves the earlier job's files whole (readable, and resumable by the earlier spec) until it
//!   has computed everything, and replaces them only then: a run that fails loses nothing;
//! - `results.json`: a [`svcca_results::ResultsFile`] (spec, versions, representations, pairs;
//!   the pairs' coefficients only when the job says `coefficients = "json"`);
//! - `pairs.parquet`: the same pairs as one long-form table, one row per (pair, metric), every
//!   key field of both sides its own column, with the coefficients (see
//!   [`svcca_results::pairs_batch`]);
//! - `matrix_<metric>.csv` and `matrix_<metric>.arrow`: the similarity matrix of one metric over
//!   the representations in `results.json` order, labelled by their canonical keys
//!   (`RepresentationKey::id()`, tags included).
//!   Pairs not compared (the diagonal, pairs outside the plan) are empty in CSV and null in
//!   Arrow. A pair `(a, b)` fills both `[a][b]` and `[b][a]` (for PWCCA, which is not symmetric,
//!   `[a][b]` holds the record with `a` first and the mirror the same value);
//! - `summary.json`: counts, timings, warnings and the planned pairs skipped, with why;
//! - `results.prev.json`: when the same job runs again (resumed, or over a dataset that grew),
//!   the `results.json` of the run before, one run deep; a different job removes it.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use svcca_results::{CoefficientStore, RepresentationKey, ResultsFile};

use crate::cache::{CacheError, Store};
use crate::spec::JobSpec;

/// A problem with the output location.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "`{url}` already holds the results of a different job (its job.toml differs from this one); \
         choose another output URL, or set overwrite = true in the job spec (--overwrite) to replace them"
    )]
    DifferentJob { url: String },
    #[error(
        "`{url}/job.toml` is not a job spec svcca can read ({message}); remove it or choose another output URL"
    )]
    UnreadableJob { url: String, message: String },
    #[error(
        "cannot use `{url}` as the output folder: {problem} ({cause}); choose another output URL"
    )]
    UnusablePath {
        url: String,
        problem: &'static str,
        cause: String,
    },
    #[error(transparent)]
    Store(#[from] CacheError),
    #[error("writing the Arrow matrix for {metric}: {message}")]
    Arrow { metric: String, message: String },
    #[error(transparent)]
    PairsTable(#[from] svcca_results::PairsTableError),
}

impl OutputError {
    /// Store failures may pass, except those caused by the output path itself (a regular file
    /// where the folder should be, a folder that cannot be created or written): running again
    /// cannot fix those.
    pub fn is_retryable(&self) -> bool {
        match self {
            OutputError::Store(e) => e.is_retryable() && permanent_io_cause(e).is_none(),
            _ => false,
        }
    }
}

/// The local I/O error behind `error`, when it is one that names a problem with the path rather
/// than with the moment (object stores wrap it a few levels deep).
pub fn permanent_io_cause<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a std::io::Error> {
    use std::io::ErrorKind;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ErrorKind::NotFound
                    | ErrorKind::PermissionDenied
                    | ErrorKind::NotADirectory
                    | ErrorKind::IsADirectory
                    | ErrorKind::InvalidInput
                    | ErrorKind::ReadOnlyFilesystem
                    | ErrorKind::AlreadyExists
                    | ErrorKind::InvalidFilename
            )
        {
            return Some(io);
        }
        next = e.source();
    }
    None
}

/// Whether a job starts fresh or continues an earlier run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Fresh,
    Resume,
    Overwrite,
}

/// Whether two specs describe the same job: the overwrite flag, the analyses (drawn from the
/// results after the job, changing none of its pairs) and where coefficients are stored do not
/// make another job.
fn same_job(stored: &JobSpec, ours: &JobSpec) -> bool {
    let mut a = stored.clone();
    let mut b = ours.clone();
    a.overwrite = false;
    b.overwrite = false;
    a.analyses = Default::default();
    b.analyses = Default::default();
    a.coefficients = Default::default();
    b.coefficients = Default::default();
    a == b
}

fn read_job(out: &Store, bytes: &[u8]) -> Result<JobSpec, OutputError> {
    toml::from_str(&String::from_utf8_lossy(bytes)).map_err(|e| OutputError::UnreadableJob {
        url: out.url().to_string(),
        message: e.to_string(),
    })
}

/// A store failure at the output's first use says what is wrong with the path when the path
/// is the cause.
fn unusable(out: &Store, error: CacheError) -> OutputError {
    use std::io::ErrorKind;
    let Some(io) = permanent_io_cause(&error) else {
        return error.into();
    };
    let problem = match io.kind() {
        ErrorKind::NotADirectory | ErrorKind::AlreadyExists => {
            "it, or a folder above it, is a regular file"
        }
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => "it is not writable",
        ErrorKind::IsADirectory => "a folder is where svcca writes a file",
        _ => "it cannot be created there",
    };
    OutputError::UnusablePath {
        url: out.url().to_string(),
        problem,
        cause: io.to_string(),
    }
}

/// Claims the output location for a job (see the module docs). An overwriting job does not
/// touch the earlier job's `job.toml` here: [`write_all`] replaces it once there are results.
pub async fn claim(out: &Store, spec: &JobSpec) -> Result<Claim, OutputError> {
    let stored = out.get("job.toml").await.map_err(|e| unusable(out, e))?;
    let claim = match stored {
        None => Claim::Fresh,
        Some(bytes) => {
            let stored = read_job(out, &bytes)?;
            if same_job(&stored, spec) {
                Claim::Resume
            } else if spec.overwrite {
                Claim::Overwrite
            } else {
                return Err(OutputError::DifferentJob {
                    url: out.url().to_string(),
                });
            }
        }
    };
    if claim == Claim::Fresh {
        out.put("job.toml", spec.to_toml().into_bytes())
            .await
            .map_err(|e| unusable(out, e))?;
    }
    Ok(claim)
}

/// The small job summary written next to the results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub representations: usize,
    pub pairs: usize,
    pub metrics: Vec<String>,
    /// Pair results taken from the cache instead of computed.
    pub pairs_from_cache: usize,
    /// Tasks run by workers, by kind.
    pub tasks: BTreeMap<String, u64>,
    pub seconds: f64,
    pub resumed: bool,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Planned pairs not compared, by layer pair, with why (absent in summaries written before
    /// they were recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<svcca_results::SkippedPairs>,
}

/// The similarity matrix of one metric: `values[i][j]`, `None` where not compared.
pub fn matrix(results: &ResultsFile, metric: &str) -> Vec<Vec<Option<f64>>> {
    // By whole key, tags included: labels are for people.
    let index: BTreeMap<&RepresentationKey, usize> = results
        .representations
        .iter()
        .enumerate()
        .map(|(i, r)| (&r.key, i))
        .collect();
    let n = results.representations.len();
    let mut m = vec![vec![None; n]; n];
    for p in results.pairs_of(metric) {
        let (Some(&i), Some(&j)) = (index.get(&p.a), index.get(&p.b)) else {
            continue;
        };
        m[i][j] = Some(p.mean);
        if m[j][i].is_none() {
            m[j][i] = Some(p.mean);
        }
    }
    m
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

pub fn matrix_csv(labels: &[String], m: &[Vec<Option<f64>>]) -> String {
    let mut out = String::from("label");
    for l in labels {
        out.push(',');
        out.push_str(&csv_field(l));
    }
    out.push('\n');
    for (l, row) in labels.iter().zip(m) {
        out.push_str(&csv_field(l));
        for v in row {
            out.push(',');
            if let Some(v) = v {
                // `{:?}` prints the shortest text that reads back to the same f64.
                out.push_str(&format!("{v:?}"));
            }
        }
        out.push('\n');
    }
    out
}

pub fn matrix_arrow(
    metric: &str,
    labels: &[String],
    m: &[Vec<Option<f64>>],
) -> Result<Vec<u8>, OutputError> {
    let arrow_err = |e: arrow_schema::ArrowError| OutputError::Arrow {
        metric: metric.to_string(),
        message: e.to_string(),
    };
    let mut fields = vec![Field::new("label", DataType::Utf8, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(labels.to_vec()))];
    for (j, l) in labels.iter().enumerate() {
        fields.push(Field::new(l, DataType::Float64, true));
        columns.push(Arc::new(Float64Array::from(
            m.iter().map(|row| row[j]).collect::<Vec<_>>(),
        )));
    }
    let schema = Arc::new(
        Schema::new(fields).with_metadata(
            [("svcca.metric".to_string(), metric.to_string())]
                .into_iter()
                .collect::<std::collections::HashMap<String, String>>(),
        ),
    );
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err)?;
    let mut buf = Vec::new();
    {
        let mut w = arrow_ipc::writer::FileWriter::try_new(&mut buf, &schema).map_err(arrow_err)?;
        w.write(&batch).map_err(arrow_err)?;
        w.finish().map_err(arrow_err)?;
    }
    Ok(buf)
}

/// Writes results, the pairs table, matrices and summary. `results` holds every coefficient;
/// `results.json` keeps them only as the job's `coefficients` says. `results.json` goes last, so
/// its presence means the job finished.
///
/// When the folder still holds another job's files (an overwriting job, see [`claim`]), they
/// are replaced now that the new results exist. The earlier `results.json` goes first, so that
/// however far this gets the folder is never a finished job whose files disagree: it is the
/// earlier job unfinished (resumable from the cache) until the new `job.toml` is written, then
/// this job unfinished until its `results.json` is.
pub async fn write_all(
    out: &Store,
    results: &ResultsFile,
    summary: &Summary,
) -> Result<(), OutputError> {
    let ours: JobSpec =
        toml::from_str(&results.job_spec).map_err(|e| OutputError::UnreadableJob {
            url: out.url().to_string(),
            message: format!("the results' own job spec: {e}"),
        })?;
    let replacing = match out.get("job.toml").await? {
        Some(bytes) => match read_job(out, &bytes) {
            Ok(stored) => !same_job(&stored, &ours),
            Err(_) => true,
        },
        None => true,
    };
    if replacing {
        replace_earlier_job(out, results).await?;
    } else if let Some(earlier) = out.get("results.json").await? {
        // The same job ran before (a nightly over a growing dataset): its results are kept, one
        // run deep, so that a report can say what changed since. Written before the new
        // results, so a run that stops in between still has the earlier ones in one of the two.
        out.put(svcca_results::PREVIOUS_RESULTS_NAME, earlier)
            .await?;
    }
    let labels: Vec<String> = results
        .representations
        .iter()
        .map(|r| r.key.label())
        .collect();
    for metric in results.metrics() {
        let m = matrix(results, &metric);
        out.put(
            &format!("matrix_{metric}.csv"),
            matrix_csv(&labels, &m).into_bytes(),
        )
        .await?;
        out.put(
            &format!("matrix_{metric}.arrow"),
            matrix_arrow(&metric, &labels, &m)?,
        )
        .await?;
    }
    out.put(
        svcca_results::PAIRS_TABLE_NAME,
        svcca_results::pairs_parquet(results, ours.coefficients != CoefficientStore::None)?,
    )
    .await?;
    out.put(
        "summary.json",
        serde_json::to_vec_pretty(summary).expect("summary serialises"),
    )
    .await?;
    out.put(
        "results.json",
        results.stored_as(ours.coefficients).to_json(),
    )
    .await?;
    Ok(())
}

/// Takes the earlier job's files out of the way of this job's (see [`write_all`]). Matrices of
/// metrics this job does not compute, the earlier analyses and the earlier report would
/// otherwise sit beside the new results as if they were theirs.
async fn replace_earlier_job(out: &Store, results: &ResultsFile) -> Result<(), OutputError> {
    let earlier_metrics = match out.get("results.json").await? {
        Some(bytes) => ResultsFile::from_json(&bytes)
            .map(|r| r.metrics())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let ours = results.metrics();
    for metric in earlier_metrics.iter().filter(|m| !ours.contains(m)) {
        out.delete(&format!("matrix_{metric}.csv")).await?;
        out.delete(&format!("matrix_{metric}.arrow")).await?;
    }
    out.delete("analyses.json").await?;
    out.delete(svcca_results::PAIRS_TABLE_NAME).await?;
    // The earlier job's previous run is not this job's.
    out.delete(svcca_results::PREVIOUS_RESULTS_NAME).await?;
    // The earlier job's report drew the earlier numbers; this job draws its own, or none
    // (`--no-report`), but never leaves the old one beside the new results.
    out.delete_prefix("report").await?;
    // Last, in this order: a write that failed part-way (and is tried again) starts the
    // replacement over from the earlier job's `results.json`, which names its matrices, and its
    // `job.toml`, which says the output is not yet ours.
    out.delete("results.json").await?;
    out.put("job.toml", results.job_spec.clone().into_bytes())
        .await?;
    Ok(())
}

/// Versions recorded with results.
pub fn versions() -> BTreeMap<String, String> {
    [
        ("svcca".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        (
            "svcca-results-schema".to_string(),
            svcca_results::SCHEMA_VERSION.to_string(),
        ),
        ("faer".to_string(), "0.24".to_string()),
    ]
    .into_iter()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    #[test]
    fn csv_and_arrow_matrices_carry_labels_and_gaps() {
        let labels = vec!["a/x".to_string(), "b,y".to_string()];
        let m = vec![vec![None, Some(0.25)], vec![Some(0.25), None]];
        let csv = matrix_csv(&labels, &m);
        assert_eq!(csv, "label,a/x,\"b,y\"\na/x,,0.25\n\"b,y\",0.25,\n");
        let bytes = matrix_arrow("svcca", &labels, &m).unwrap();
        let reader =
            arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(batches[0].num_rows(), 2);
        let col = batches[0]
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert!(col.is_null(0));
        assert_eq!(col.value(1), 0.25);
    }

    /// A four-neuron representation of ten datapoints, as results record it.
    fn representation(key: RepresentationKey) -> svcca_results::RepresentationRecord {
        svcca_results::RepresentationRecord {
            key,
            shape: vec![4],
            datapoints: 10,
            kept_dims: 4,
            dropped_neurons: vec![],
            spectrum: vec![],
            checksum: String::new(),
            depth: None,
            layout: None,
        }
    }

    fn pair_record(
        a: RepresentationKey,
        b: RepresentationKey,
        metric: &str,
        mean: f64,
    ) -> svcca_results::PairRecord {
        svcca_results::PairRecord {
            a,
            b,
            metric: metric.into(),
            mean,
            google_mean: None,
            equal_k_mean: None,
            dims_a: 4,
            dims_b: 4,
            coefficients: vec![],
            weights: None,
            frequencies: None,
            conv: None,
            warnings: vec![],
        }
    }

    #[test]
    fn representations_that_differ_only_by_a_tag_get_their_own_rows_and_labels() {
        let key = |lr: &str| RepresentationKey {
            run: "mlp".into(),
            seed: Some(0),
            step: Some(10),
            layer: "h1".into(),
            tags: [("lr".to_string(), lr.to_string())].into_iter().collect(),
        };
        let rep = |lr: &str| representation(key(lr));
        let pair = |a: &str, b: &str, mean: f64| pair_record(key(a), key(b), "svcca", mean);
        let results = ResultsFile {
            schema_version: svcca_results::SCHEMA_VERSION,
            coefficients: svcca_results::CoefficientStore::Json,
            job_spec: String::new(),
            versions: BTreeMap::new(),
            comparison: "all-pairs".into(),
            settings: String::new(),
            representations: vec![rep("0.1"), rep("0.01")],
            pairs: vec![
                pair("0.1", "0.1", 1.0),
                pair("0.1", "0.01", 0.5),
                pair("0.01", "0.01", 1.0),
            ],
        };
        let m = matrix(&results, "svcca");
        assert_eq!(
            m,
            vec![vec![Some(1.0), Some(0.5)], vec![Some(0.5), Some(1.0)]]
        );
        let labels: Vec<String> = results
            .representations
            .iter()
            .map(|r| r.key.label())
            .collect();
        assert_eq!(
            labels,
            [
                "run=mlp,seed=0,step=10,layer=h1,lr=0.1",
                "run=mlp,seed=0,step=10,layer=h1,lr=0.01"
            ]
        );
    }

    #[tokio::test]
    async fn a_different_job_is_refused_and_the_same_one_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let out = Store::open(dir.path().to_str().unwrap()).unwrap();
        let spec = JobSpec::new("/d", dir.path().to_str().unwrap());
        assert_eq!(claim(&out, &spec).await.unwrap(), Claim::Fresh);
        assert_eq!(claim(&out, &spec).await.unwrap(), Claim::Resume);
        let other = spec.clone().with_where("layer", "h1");
        let err = claim(&out, &other).await.unwrap_err();
        assert!(matches!(err, OutputError::DifferentJob { .. }), "{err}");
        let mut forced = other.clone();
        forced.overwrite = true;
        assert_eq!(claim(&out, &forced).await.unwrap(), Claim::Overwrite);
        assert_eq!(
            out.get("job.toml").await.unwrap().unwrap(),
            spec.to_toml().as_bytes(),
            "the earlier job stays until the overwriting one has results"
        );
        assert_eq!(claim(&out, &spec).await.unwrap(), Claim::Resume);
        let results = ResultsFile {
            schema_version: svcca_results::SCHEMA_VERSION,
            coefficients: svcca_results::CoefficientStore::Json,
            job_spec: forced.to_toml(),
            versions: versions(),
            comparison: forced.comparison.as_str().to_string(),
            settings: forced.describe_settings(),
            representations: Vec::new(),
            pairs: Vec::new(),
        };
        write_all(&out, &results, &Summary::default())
            .await
            .unwrap();
        assert_eq!(claim(&out, &other).await.unwrap(), Claim::Resume);
        let mut with_labels = other.clone();
        with_labels.analyses.labels = Some("labels.npy".into());
        assert_eq!(
            claim(&out, &with_labels).await.unwrap(),
            Claim::Resume,
            "analyses do not make another job"
        );
    }

    #[tokio::test]
    async fn a_rerun_of_the_same_job_keeps_the_previous_results_and_another_job_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        let out = Store::open(dir.path().to_str().unwrap()).unwrap();
        let spec = JobSpec::new("/d", dir.path().to_str().unwrap());
        let results = |spec: &JobSpec, settings: &str| ResultsFile {
            schema_version: svcca_results::SCHEMA_VERSION,
            coefficients: svcca_results::CoefficientStore::Json,
            job_spec: spec.to_toml(),
            versions: versions(),
            comparison: spec.comparison.as_str().to_string(),
            settings: settings.into(),
            representations: Vec::new(),
            pairs: Vec::new(),
        };
        let prev = svcca_results::PREVIOUS_RESULTS_NAME;
        assert_eq!(claim(&out, &spec).await.unwrap(), Claim::Fresh);
        let first = results(&spec, "first run");
        write_all(&out, &first, &Summary::default()).await.unwrap();
        assert!(
            out.get(prev).await.unwrap().is_none(),
            "no run before the first"
        );

        // The same job again (a nightly over a dataset that grew): the first run's results stay,
        // as they were, beside the new ones.
        assert_eq!(claim(&out, &spec).await.unwrap(), Claim::Resume);
        let second = results(&spec, "second run");
        write_all(&out, &second, &Summary::default()).await.unwrap();
        let kept = ResultsFile::from_json(&out.get(prev).await.unwrap().unwrap()).unwrap();
        assert_eq!(kept.settings, "first run");
        let now = ResultsFile::from_json(&out.get("results.json").await.unwrap().unwrap()).unwrap();
        assert_eq!(now.settings, "second run");

        // Another job replacing this one does not inherit its previous run.
        let mut other = spec.clone().with_where("layer", "h1");
        other.overwrite = true;
        assert_eq!(claim(&out, &other).await.unwrap(), Claim::Overwrite);
        write_all(&out, &results(&other, "other job"), &Summary::default())
            .await
            .unwrap();
        assert!(out.get(prev).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_replacement_that_failed_part_way_is_done_whole_when_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let out = Store::open(dir.path().to_str().unwrap()).unwrap();
        let results = |spec: &JobSpec| ResultsFile {
            schema_version: svcca_results::SCHEMA_VERSION,
            coefficients: svcca_results::CoefficientStore::Json,
            job_spec: spec.to_toml(),
            versions: versions(),
            comparison: spec.comparison.as_str().to_string(),
            settings: String::new(),
            representations: Vec::new(),
            pairs: Vec::new(),
        };
        // An earlier job with its report.
        let mut earlier = JobSpec::new("/d", dir.path().to_str().unwrap());
        earlier.metrics = vec![crate::spec::Metric::Svcca, crate::spec::Metric::Cka];
        assert_eq!(claim(&out, &earlier).await.unwrap(), Claim::Fresh);
        let key = RepresentationKey {
            run: "mlp".into(),
            seed: Some(0),
            step: None,
            layer: "h1".into(),
            tags: BTreeMap::new(),
        };
        let mut earlier_results = results(&earlier);
        earlier_results
            .representations
            .push(representation(key.clone()));
        earlier_results
            .pairs
            .push(pair_record(key.clone(), key, "cka", 1.0));
        write_all(&out, &earlier_results, &Summary::default())
            .await
            .unwrap();
        out.put("report/index.html", b"earlier numbers".to_vec())
            .await
            .unwrap();
        assert!(out.get("matrix_cka.csv").await.unwrap().is_some());

        // Another job replaces it; its first write fails part-way (the earlier report cannot be
        // listed: a link to itself stands in it), as a store that refuses a request would.
        let mut ours = JobSpec::new("/d", dir.path().to_str().unwrap()).with_where("layer", "h1");
        ours.overwrite = true;
        assert_eq!(claim(&out, &ours).await.unwrap(), Claim::Overwrite);
        let looped = dir.path().join("report/loop");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        write_all(&out, &results(&ours), &Summary::default())
            .await
            .expect_err("the report cannot be listed");
        std::fs::remove_file(&looped).unwrap();
        write_all(&out, &results(&ours), &Summary::default())
            .await
            .unwrap();
        assert!(
            out.get("report/index.html").await.unwrap().is_none(),
            "the earlier report is gone"
        );
        assert!(out.get("matrix_cka.csv").await.unwrap().is_none());
        assert!(out.get("matrix_cka.arrow").await.unwrap().is_none());
        let stored = read_job(&out, &out.get("job.toml").await.unwrap().unwrap()).unwrap();
        assert!(same_job(&stored, &ours));
    }
}
