//! The results of a sweep as stored under its output URL, shared by the writer (`svcca-engine`)
//! and the readers (`svcca-report`, users' scripts).
//!
//! Files under the output URL:
//! - `results.json`: one [`ResultsFile`]: the job spec, versions, every representation compared
//!   (with its kept dimensions and variance spectrum) and one [`PairRecord`] per compared pair and
//!   metric;
//! - `matrix_<metric>.csv` and `matrix_<metric>.arrow`: the similarity matrix of one metric over
//!   the representations in [`ResultsFile::representations`] order (row/column labels are
//!   [`RepresentationKey::label`]);
//! - `summary.json`: a small job summary (counts, timings, warnings).
//!
//! This crate does no I/O beyond (de)serialising bytes: where the bytes live is the storage
//! crate's business.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped when a field changes meaning or is removed; readers refuse newer major versions.
pub const SCHEMA_VERSION: u32 = 1;

/// Identifies one representation: a layer of a network at a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RepresentationKey {
    /// The run or model name (`mlp`, `resnet18-wide`, ...).
    pub run: String,
    pub seed: Option<i64>,
    /// Training step of the checkpoint; ordered numerically.
    pub step: Option<i64>,
    pub layer: String,
    /// Free-form tags from the manifest (architecture, learning rate, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl RepresentationKey {
    /// A short label for axes and tables: `mlp/seed0/step2250/h1`, with the tags when there
    /// are any (`mlp/seed0/step2250/h1[lr=0.1,opt=adam]`), so that two representations that differ
    /// only by a tag never share a label.
    pub fn label(&self) -> String {
        let mut label = self.base_label();
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            label.push('[');
            label.push_str(&tags.join(","));
            label.push(']');
        }
        label
    }
}

impl RepresentationKey {
    /// The label without the tags: `mlp/seed0/step2250/h1`. Job specs may name a
    /// representation by it when no other selected one shares it.
    pub fn base_label(&self) -> String {
        let mut parts = vec![self.run.clone()];
        if let Some(seed) = self.seed {
            parts.push(format!("seed{seed}"));
        }
        if let Some(step) = self.step {
            parts.push(format!("step{step}"));
        }
        parts.push(self.layer.clone());
        parts.join("/")
    }
}

/// What a sweep knows about one representation after pass 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepresentationRecord {
    pub key: RepresentationKey,
    /// Shape of one datapoint's activations: `[neurons]` or `[h, w, c]` for conv layers.
    pub shape: Vec<usize>,
    pub datapoints: u64,
    /// SVCCA directions kept under the job's keep rule.
    pub kept_dims: usize,
    /// Neurons dropped as (near-)constant.
    #[serde(default)]
    pub dropped_neurons: Vec<usize>,
    /// Eigenvalues of the covariance, descending (the variance spectrum).
    #[serde(default)]
    pub spectrum: Vec<f64>,
    /// Content checksum of the representation's shards (what caches are keyed by).
    #[serde(default)]
    pub checksum: String,
    /// Position of the layer in its network, input side first (the dataset's `depth`). Layer
    /// analyses order layers by it; results written without it keep the listed order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    /// How the stored axes were read: `dense`, `nhwc` or `tokens` (`None` in older results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
}

/// Per-frequency result of a conv layer pair compared with the DFT method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrequencyRecord {
    pub i: usize,
    pub j: usize,
    pub coefficients: Vec<f64>,
    pub mean: f64,
    /// Directions kept at this frequency on each side (the CCA's dimensions there; `None` in
    /// results written before they were recorded). A pair's `dims_a`/`dims_b` are their sums
    /// over the grid, which no single CCA sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dims_a: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dims_b: Option<usize>,
}

/// How a pair of conv (or tokens) layers was compared: what each of its CCAs saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvRecord {
    /// `dft` (one CCA per spatial frequency), `fold` or `pool` (one CCA).
    pub method: String,
    /// Datapoints of each CCA: the images for dft and pool, images × positions for fold.
    pub datapoints: u64,
    /// `[rows, cols]` of the compared frequency grid (`[1, 1]` for fold and pool).
    pub grid: [usize; 2],
}

/// One metric on one pair of representations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    pub a: RepresentationKey,
    pub b: RepresentationKey,
    /// `svcca`, `cca`, `pwcca` or `cka`.
    pub metric: String,
    /// Mean of all canonical correlations; the weighted mean for pwcca; the value for cka.
    pub mean: f64,
    /// google/svcca's truncated mean (cca/svcca only).
    #[serde(default)]
    pub google_mean: Option<f64>,
    pub dims_a: usize,
    pub dims_b: usize,
    /// Canonical correlations, descending (empty for cka).
    #[serde(default)]
    pub coefficients: Vec<f64>,
    /// PWCCA weights, aligned with `coefficients`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
    /// Conv layers compared per frequency: one record per frequency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequencies: Option<Vec<FrequencyRecord>>,
    /// Conv and tokens layers: the method and the datapoints of each CCA (`None` for dense
    /// pairs and in results written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv: Option<ConvRecord>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Everything a sweep wrote to `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsFile {
    pub schema_version: u32,
    /// The job spec as TOML text, exactly as run.
    pub job_spec: String,
    /// `svcca` and dependency versions used.
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
    /// Which comparison plan produced the pairs (`all-pairs`, `vs-final`, `cross-seed`, `pairs`).
    pub comparison: String,
    /// Keep rule, mode and thresholds, stated as text (`svcca var 0.99, default mode`).
    pub settings: String,
    pub representations: Vec<RepresentationRecord>,
    pub pairs: Vec<PairRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("results file is not valid JSON for schema version {SCHEMA_VERSION}: {source}")]
    Parse { source: serde_json::Error },
    #[error("results file has schema version {found}; this svcca reads up to {SCHEMA_VERSION}")]
    NewerSchema { found: u32 },
}

impl ResultsFile {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ResultsError> {
        let file: ResultsFile =
            serde_json::from_slice(bytes).map_err(|source| ResultsError::Parse { source })?;
        if file.schema_version > SCHEMA_VERSION {
            return Err(ResultsError::NewerSchema {
                found: file.schema_version,
            });
        }
        Ok(file)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec_pretty(self).expect("results serialise to JSON")
    }

    /// The pairs of one metric.
    pub fn pairs_of<'a>(&'a self, metric: &'a str) -> impl Iterator<Item = &'a PairRecord> + 'a {
        self.pairs.iter().filter(move |p| p.metric == metric)
    }

    /// Metrics present, in first-seen order.
    pub fn metrics(&self) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for pair in &self.pairs {
            if !seen.contains(&pair.metric) {
                seen.push(pair.metric.clone());
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(layer: &str, step: i64) -> RepresentationKey {
        RepresentationKey {
            run: "mlp".into(),
            seed: Some(0),
            step: Some(step),
            layer: layer.into(),
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trips_and_refuses_newer_schema() {
        let file = ResultsFile {
            schema_version: SCHEMA_VERSION,
            job_spec: "dataset = \"x\"".into(),
            versions: BTreeMap::new(),
            comparison: "vs-final".into(),
            settings: "svcca".into(),
            representations: vec![],
            pairs: vec![PairRecord {
                a: key("h1", 25),
                b: key("h1", 2250),
                metric: "svcca".into(),
                mean: 0.5,
                google_mean: Some(0.6),
                dims_a: 3,
                dims_b: 4,
                coefficients: vec![0.9, 0.4, 0.2],
                weights: None,
                frequencies: None,
                conv: None,
                warnings: vec![],
            }],
        };
        let back = ResultsFile::from_json(&file.to_json()).unwrap();
        assert_eq!(back, file);
        assert_eq!(back.pairs[0].a.label(), "mlp/seed0/step25/h1");

        let mut newer = file.clone();
        newer.schema_version = SCHEMA_VERSION + 1;
        assert!(matches!(
            ResultsFile::from_json(&newer.to_json()),
            Err(ResultsError::NewerSchema { .. })
        ));
    }
}
