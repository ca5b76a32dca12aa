//! The results of a sweep as stored under its output URL, shared by the writer (`svcca-engine`)
//! and the readers (`svcca-report`, users' scripts).
//!
//! Files under the output URL:
//! - `results.json`: one [`ResultsFile`]: the job spec, versions, every representation compared
//!   (with its kept dimensions and variance spectrum) and one [`PairRecord`] per compared pair and
//!   metric (their coefficients only when the job says `coefficients = "json"`);
//! - `pairs.parquet`: the same pairs as one long-form table, every key field of both sides its
//!   own column, with the coefficients ([`pairs_parquet`], [`ResultsFile::fill_coefficients`]);
//! - `matrix_<metric>.csv` and `matrix_<metric>.arrow`: the similarity matrix of one metric over
//!   the representations in [`ResultsFile::representations`] order (row/column labels are the
//!   canonical keys, [`RepresentationKey::id`]);
//! - `results.prev.json`: the previous run's `results.json`, when the same job ran again
//!   ([`PREVIOUS_RESULTS_NAME`]);
//! - `summary.json`: a small job summary (counts, timings, warnings, the planned pairs it
//!   skipped and why: [`SkippedPairs`]).
//!
//! This crate does no I/O beyond (de)serialising bytes: where the bytes live is the storage
//! crate's business. Its README documents every column of `pairs.parquet` for users.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod pairs_table;
pub use pairs_table::{
    PAIRS_TABLE_NAME, PairsTableError, pairs_batch, pairs_parquet, read_pairs_parquet,
};

/// Bumped when a field changes meaning or is removed; readers refuse newer major versions.
/// Version 2: coefficients (and PWCCA weights, per-frequency coefficients) may be absent from
/// `results.json`, kept in `pairs.parquet` only; [`ResultsFile::coefficients`] says where.
pub const SCHEMA_VERSION: u32 = 2;

/// Where a rerun of the same job (a nightly sweep over a growing dataset) keeps the results of
/// the run before it, so that what changed since can be shown.
pub const PREVIOUS_RESULTS_NAME: &str = "results.prev.json";

/// Where a sweep keeps each pair's canonical correlations, PWCCA weights and per-frequency
/// coefficients. Means, dimensions and warnings are always in `results.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoefficientStore {
    /// In `pairs.parquet` only: `results.json` stays small (the default).
    #[default]
    Parquet,
    /// In both `results.json` and `pairs.parquet` (what results written before version 2 hold).
    Json,
    /// Nowhere: the coefficient columns of `pairs.parquet` are null.
    None,
}

impl CoefficientStore {
    pub fn as_str(self) -> &'static str {
        match self {
            CoefficientStore::Parquet => "parquet",
            CoefficientStore::Json => "json",
            CoefficientStore::None => "none",
        }
    }
}

impl std::str::FromStr for CoefficientStore {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "parquet" => Ok(CoefficientStore::Parquet),
            "json" => Ok(CoefficientStore::Json),
            "none" => Ok(CoefficientStore::None),
            other => Err(format!(
                "unknown coefficients store `{other}` (parquet, json or none)"
            )),
        }
    }
}

fn stored_in_json() -> CoefficientStore {
    CoefficientStore::Json
}

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
    /// The canonical key, which names the representation everywhere: matrix rows and columns,
    /// report tables and tooltips, `analyses.json`, `svcca ls` and error messages. It is also a
    /// valid dataset selector (`DATASET#run=mlp,seed=0,step=2250,layer=h1,lr=0.1`): `run`, then
    /// `seed` and `step` where present, `layer`, then every tag in byte order of its name. Tags
    /// are part of it, so two representations that differ only by a tag value never share one.
    pub fn id(&self) -> String {
        let mut id = self.base_id();
        for (k, v) in &self.tags {
            id.push_str(&format!(",{k}={v}"));
        }
        id
    }

    /// The label for axes and tables: the canonical key [`RepresentationKey::id`].
    pub fn label(&self) -> String {
        self.id()
    }

    /// The canonical key without the tags (`run=mlp,seed=0,step=2250,layer=h1`). Job specs may
    /// name a representation by it when no other selected one shares it.
    pub fn base_id(&self) -> String {
        let mut id = format!("run={}", self.run);
        if let Some(seed) = self.seed {
            id.push_str(&format!(",seed={seed}"));
        }
        if let Some(step) = self.step {
            id.push_str(&format!(",step={step}"));
        }
        id.push_str(&format!(",layer={}", self.layer));
        id
    }

    /// Reads a key written as `field=value` items separated by commas, in any order (the
    /// canonical [`RepresentationKey::id`] is one such text); other field names are tags.
    /// `None` unless it names `run` and `layer` once each, with whole numbers for `seed` and
    /// `step`.
    pub fn parse_id(text: &str) -> Option<RepresentationKey> {
        let (mut run, mut seed, mut step, mut layer) = (None, None, None, None);
        let mut tags = BTreeMap::new();
        for item in text.split(',') {
            let (k, v) = item.split_once('=')?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || v.is_empty() {
                return None;
            }
            let fresh = match k {
                "run" | "model" => run.replace(v.to_string()).is_none(),
                "seed" => seed.replace(v.parse::<i64>().ok()?).is_none(),
                "step" => step.replace(v.parse::<i64>().ok()?).is_none(),
                "layer" => layer.replace(v.to_string()).is_none(),
                tag => tags.insert(tag.to_string(), v.to_string()).is_none(),
            };
            if !fresh {
                return None;
            }
        }
        Some(RepresentationKey {
            run: run?,
            seed,
            step,
            layer: layer?,
            tags,
        })
    }

    /// The label earlier versions used (`mlp/seed0/step2250/h1[lr=0.1]`); job specs written for
    /// them may still name representations this way.
    pub fn legacy_label(&self) -> String {
        let mut label = self.legacy_base_label();
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            label.push('[');
            label.push_str(&tags.join(","));
            label.push(']');
        }
        label
    }

    /// [`RepresentationKey::legacy_label`] without the tags: `mlp/seed0/step2250/h1`.
    pub fn legacy_base_label(&self) -> String {
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
    /// Empty in `results.json` when coefficients are kept elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
    /// The mean at equal kept dimensions: with the side that kept more directions cut to its
    /// leading `min(dims_a, dims_b)` (equal to `mean` when the dims are equal). A small
    /// subspace fits inside a large one, so `mean` between layers of very different `k` is
    /// high whatever they compute; compare layers of different widths by this value instead.
    /// Dense svcca and cca in default mode; `None` otherwise and in results written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equal_k_mean: Option<f64>,
    pub dims_a: usize,
    pub dims_b: usize,
    /// Canonical correlations, descending (empty for cka, and in `results.json` when the job
    /// keeps them in `pairs.parquet`: see [`ResultsFile::coefficients`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
    /// Where the pairs' coefficients are ([`CoefficientStore`]); `json` in results written
    /// before there was a choice. Unless `json`, read them with
    /// [`ResultsFile::fill_coefficients`] from `pairs.parquet`.
    #[serde(default = "stored_in_json")]
    pub coefficients: CoefficientStore,
}

/// Why a sweep planned a pair and did not compare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// A conv layer (`[h, w, c]` per datapoint, compared per spatial frequency or position) and
    /// a dense layer have no common definition of similarity.
    ConvWithDense,
}

impl SkipReason {
    /// The reason in words, with what to do instead.
    pub fn explain(&self) -> &'static str {
        match self {
            SkipReason::ConvWithDense => {
                "a conv layer and a dense layer have no common definition of similarity (conv \
                 layers are compared per spatial frequency or position); select the conv layers \
                 and the dense layers in separate sweeps (--where layer=...)"
            }
        }
    }
}

/// Pairs of two layers that a sweep planned and skipped, counted over every run, seed and
/// checkpoint (`summary.json`'s `skipped`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedPairs {
    /// The two layers, each as `run=conv,layer=conv1` (tags follow, as in canonical keys).
    pub a: String,
    pub b: String,
    pub pairs: usize,
    pub reason: SkipReason,
}

/// Layer pairs listed by [`skipped_lines`]; the rest are counted.
pub const SKIPPED_LAYER_PAIRS_LISTED: usize = 8;

/// Skipped pairs in words, as the sweep and the report print them: one line per reason (how
/// many and why), then one indented line per layer pair (the first
/// [`SKIPPED_LAYER_PAIRS_LISTED`] of each reason).
pub fn skipped_lines(skipped: &[SkippedPairs]) -> Vec<String> {
    let mut by_reason: BTreeMap<SkipReason, Vec<&SkippedPairs>> = BTreeMap::new();
    for s in skipped {
        by_reason.entry(s.reason).or_default().push(s);
    }
    let mut lines = Vec::new();
    for (reason, groups) in by_reason {
        let total: usize = groups.iter().map(|g| g.pairs).sum();
        lines.push(format!(
            "skipped {total} planned pair(s): {}",
            reason.explain()
        ));
        for g in groups.iter().take(SKIPPED_LAYER_PAIRS_LISTED) {
            lines.push(format!("  {} × {}: {} pair(s)", g.a, g.b, g.pairs));
        }
        if groups.len() > SKIPPED_LAYER_PAIRS_LISTED {
            lines.push(format!(
                "  and {} more layer pair(s)",
                groups.len() - SKIPPED_LAYER_PAIRS_LISTED
            ));
        }
    }
    lines
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

    /// The record as `results.json` keeps it: without coefficients, PWCCA weights and
    /// per-frequency coefficients unless `store` is [`CoefficientStore::Json`].
    pub fn stored_as(&self, store: CoefficientStore) -> ResultsFile {
        let mut file = self.clone();
        file.coefficients = store;
        if store != CoefficientStore::Json {
            for pair in &mut file.pairs {
                pair.coefficients = Vec::new();
                pair.weights = None;
                for f in pair.frequencies.iter_mut().flatten() {
                    f.coefficients = Vec::new();
                }
            }
        }
        file
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
    fn the_canonical_key_holds_every_field_and_reads_back() {
        let mut a = key("h1", 2250);
        a.tags.insert("opt".into(), "adam".into());
        a.tags.insert("lr".into(), "0.1".into());
        let mut b = a.clone();
        b.tags.insert("lr".into(), "0.01".into());
        // Tags in byte order of their names, whatever order they were inserted in.
        assert_eq!(a.id(), "run=mlp,seed=0,step=2250,layer=h1,lr=0.1,opt=adam");
        assert_eq!(a.label(), a.id());
        assert_ne!(a.label(), b.label(), "tag values tell keys apart");
        assert_eq!(a.base_id(), b.base_id());
        assert_eq!(a.legacy_label(), "mlp/seed0/step2250/h1[lr=0.1,opt=adam]");
        assert_eq!(a.legacy_base_label(), "mlp/seed0/step2250/h1");
        assert_eq!(RepresentationKey::parse_id(&a.id()), Some(a.clone()));
        assert_eq!(
            RepresentationKey::parse_id("opt=adam, lr=0.1,layer=h1,step=2250,seed=0,model=mlp"),
            Some(a.clone())
        );
        let bare = RepresentationKey {
            seed: None,
            step: None,
            tags: BTreeMap::new(),
            ..a.clone()
        };
        assert_eq!(bare.id(), "run=mlp,layer=h1");
        assert_eq!(RepresentationKey::parse_id("run=mlp,layer=h1"), Some(bare));
        for bad in [
            "mlp/seed0/step2250/h1",
            "run=mlp",
            "run=mlp,layer=h1,run=cnn",
            "run=mlp,layer=h1,step=last",
            "run=mlp,layer=h1,lr=",
        ] {
            assert_eq!(RepresentationKey::parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips_and_refuses_newer_schema() {
        let file = ResultsFile {
            schema_version: SCHEMA_VERSION,
            coefficients: CoefficientStore::Json,
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
                equal_k_mean: Some(0.55),
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
        assert_eq!(back.pairs[0].a.label(), "run=mlp,seed=0,step=25,layer=h1");

        let mut newer = file.clone();
        newer.schema_version = SCHEMA_VERSION + 1;
        assert!(matches!(
            ResultsFile::from_json(&newer.to_json()),
            Err(ResultsError::NewerSchema { .. })
        ));
    }
}
