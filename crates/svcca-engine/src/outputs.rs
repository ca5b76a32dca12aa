//! What a sweep leaves under its output URL.
//!
//! - `job.toml`: the job spec, written before any work starts. It marks the folder as this job's:
//!   a later run with the same spec resumes; a run with a different spec is refused unless it
//!   says `overwrite = true` (so nobody loses results by reusing a path);
//! - `results.json`: a [`svcca_results::ResultsFile`] (spec, versions, representations, pairs);
//! - `matrix_<metric>.csv` and `matrix_<metric>.arrow`: the similarity matrix of one metric over
//!   the representations in `results.json` order, labelled by `RepresentationKey::label()`.
//!   Pairs not compared (the diagonal, pairs outside the plan) are empty in CSV and null in
//!   Arrow. A pair `(a, b)` fills both `[a][b]` and `[b][a]` (for PWCCA, which is not symmetric,
//!   `[a][b]` holds the record with `a` first and the mirror the same value);
//! - `summary.json`: counts, timings and warnings.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use svcca_results::{RepresentationKey, ResultsFile};

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
    #[error(transparent)]
    Store(#[from] CacheError),
    #[error("writing the Arrow matrix for {metric}: {message}")]
    Arrow { metric: String, message: String },
}

impl OutputError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, OutputError::Store(e) if e.is_retryable())
    }
}

/// Whether a job starts fresh or continues an earlier run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Fresh,
    Resume,
    Overwrite,
}

/// Claims the output location for a job (see the module docs).
pub async fn claim(out: &Store, spec: &JobSpec) -> Result<Claim, OutputError> {
    let ours = spec.to_toml();
    let claim = match out.get("job.toml").await? {
        None => Claim::Fresh,
        Some(bytes) => {
            let text = String::from_utf8_lossy(&bytes).to_string();
            let stored: JobSpec =
                toml::from_str(&text).map_err(|e| OutputError::UnreadableJob {
                    url: out.url().to_string(),
                    message: e.to_string(),
                })?;
            let mut a = stored.clone();
            let mut b = spec.clone();
            a.overwrite = false;
            b.overwrite = false;
            // Analyses are drawn from the results after the job and change none of its pairs,
            // so a job submitted with them and rerun without (or the reverse) is the same job.
            a.analyses = Default::default();
            b.analyses = Default::default();
            if a == b {
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
    if claim != Claim::Resume {
        out.put("job.toml", ours.into_bytes()).await?;
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

/// Writes results, matrices and summary. `results.json` goes last, so its presence means the
/// job finished.
pub async fn write_all(
    out: &Store,
    results: &ResultsFile,
    summary: &Summary,
) -> Result<(), OutputError> {
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
        "summary.json",
        serde_json::to_vec_pretty(summary).expect("summary serialises"),
    )
    .await?;
    out.put("results.json", results.to_json()).await?;
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

    #[test]
    fn representations_that_differ_only_by_a_tag_get_their_own_rows_and_labels() {
        let key = |lr: &str| RepresentationKey {
            run: "mlp".into(),
            seed: Some(0),
            step: Some(10),
            layer: "h1".into(),
            tags: [("lr".to_string(), lr.to_string())].into_iter().collect(),
        };
        let rep = |lr: &str| svcca_results::RepresentationRecord {
            key: key(lr),
            shape: vec![4],
            datapoints: 10,
            kept_dims: 4,
            dropped_neurons: vec![],
            spectrum: vec![],
            checksum: String::new(),
        };
        let pair = |a: &str, b: &str, mean: f64| svcca_results::PairRecord {
            a: key(a),
            b: key(b),
            metric: "svcca".into(),
            mean,
            google_mean: None,
            dims_a: 4,
            dims_b: 4,
            coefficients: vec![],
            weights: None,
            frequencies: None,
            warnings: vec![],
        };
        let results = ResultsFile {
            schema_version: svcca_results::SCHEMA_VERSION,
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
                "mlp/seed0/step10/h1[lr=0.1]",
                "mlp/seed0/step10/h1[lr=0.01]"
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
        assert_eq!(claim(&out, &other).await.unwrap(), Claim::Resume);
        let mut with_labels = other.clone();
        with_labels.analyses.labels = Some("labels.npy".into());
        assert_eq!(
            claim(&out, &with_labels).await.unwrap(),
            Claim::Resume,
            "analyses do not make another job"
        );
    }
}
