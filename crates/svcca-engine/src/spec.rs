//! The job spec: what a sweep compares, how, and where the results go.
//!
//! A spec is TOML (the text a user writes in `JOB.toml`, and what crosses gRPC to a coordinator) or
//! built in code with [`JobSpec::new`] and the `with_*` builders. [`JobSpec::validate`] checks
//! everything that can be checked without reading the dataset; the planner checks the rest
//! (selected keys exist, representations share the datapoint count).
//!
//! ```toml
//! dataset = "file:///data/digits"
//! output = "file:///results/digits-sweep"
//! # cache = "file:///results/digits-sweep.cache"  # the default: beside the output, see below
//! comparison = "all-pairs"            # all-pairs | vs-final | cross-seed | pairs
//! metrics = ["svcca", "pwcca", "cka"] # svcca | cca | pwcca | cka
//! mode = "default"                    # default | google-compat
//! precision = "f64"                   # f64 | mixed: f32 products in the moments (svcca, cca)
//! conv = "dft"                        # dft | fold | pool
//! tokens = "mean"                     # fold | mean; required when a tokens layer is selected
//! coefficients = "parquet"            # parquet | json | none: where canonical correlations go
//!
//! [select]
//! where = { run = "mlp", layer = "h*", step = "2250" }
//! # keys = ["run=mlp,seed=0,step=2250,layer=h1"]
//!
//! [keep]
//! variance = 0.99                     # or: dims = 20
//!
//! [resources]
//! memory_mb = 1024                    # per task, on a worker
//! # rows_per_task = 5000
//!
//! [analyses]                          # optional; computed after the job, see [`Analyses`]
//! labels = "probe_y.npy"              # integer class labels, one per datapoint (path or URL)
//! logits = "logits"                   # optional: the layer whose columns are the class targets
//! ```
//!
//! The cache (what later runs reuse: per-representation moments and whitened projections, pair
//! results) lives *beside* the output by default, at `<output>.cache` (`s3://b/sweeps/nightly` →
//! `s3://b/sweeps/nightly.cache`), so that copying the output copies results only. An output at
//! the root of a bucket has no place beside it and keeps its cache under `<output>/cache`, as
//! outputs written by earlier svcca releases do: a job whose output already holds a `cache/`
//! folder keeps using it (see [`JobSpec::legacy_cache_url`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
pub use svcca_results::CoefficientStore;

/// Which pairs a sweep compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ComparisonPlan {
    /// Every unordered pair of selected representations.
    #[default]
    AllPairs,
    /// Each checkpoint of a layer against the last step of the same run, seed and layer.
    VsFinal,
    /// Each layer across seeds at the same run and step.
    CrossSeed,
    /// The explicit list in [`JobSpec::pairs`].
    Pairs,
}

impl ComparisonPlan {
    pub fn as_str(self) -> &'static str {
        match self {
            ComparisonPlan::AllPairs => "all-pairs",
            ComparisonPlan::VsFinal => "vs-final",
            ComparisonPlan::CrossSeed => "cross-seed",
            ComparisonPlan::Pairs => "pairs",
        }
    }
}

impl std::str::FromStr for ComparisonPlan {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "all-pairs" => Ok(ComparisonPlan::AllPairs),
            "vs-final" => Ok(ComparisonPlan::VsFinal),
            "cross-seed" => Ok(ComparisonPlan::CrossSeed),
            "pairs" => Ok(ComparisonPlan::Pairs),
            other => Err(SpecError::UnknownValue {
                field: "comparison",
                value: other.to_string(),
                expected: "all-pairs, vs-final, cross-seed or pairs",
            }),
        }
    }
}

/// A similarity measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// CCA over the directions kept by the keep rule (the paper's SVCCA).
    Svcca,
    /// CCA over every direction above the small-variance threshold.
    Cca,
    /// Projection-weighted CCA (Morcos et al. 2018) over the CCA directions.
    Pwcca,
    /// Linear CKA (Kornblith et al. 2019).
    Cka,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Svcca => "svcca",
            Metric::Cca => "cca",
            Metric::Pwcca => "pwcca",
            Metric::Cka => "cka",
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "svcca" => Ok(Metric::Svcca),
            "cca" => Ok(Metric::Cca),
            "pwcca" => Ok(Metric::Pwcca),
            "cka" => Ok(Metric::Cka),
            other => Err(SpecError::UnknownValue {
                field: "metrics",
                value: other.to_string(),
                expected: "svcca, cca, pwcca or cka",
            }),
        }
    }
}

/// How many SVCCA directions each representation keeps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum KeepRule {
    /// The fewest leading directions that explain this fraction of the variance (the paper: 0.99).
    Variance(f64),
    /// A fixed number of leading directions (fewer if the representation has fewer).
    Dims(usize),
}

impl Default for KeepRule {
    fn default() -> Self {
        KeepRule::Variance(0.99)
    }
}

impl KeepRule {
    pub fn describe(&self) -> String {
        match self {
            KeepRule::Variance(f) => format!("variance {f}"),
            KeepRule::Dims(k) => format!("dims {k}"),
        }
    }
}

/// Numerical conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Exact CCA on the kept directions.
    #[default]
    Default,
    /// google/svcca's arithmetic (relative epsilon, regularised diagonal, truncated mean).
    GoogleCompat,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::GoogleCompat => "google-compat",
        }
    }
}

/// Arithmetic of the moments' products: `f64` (the default; google-compat is always f64) or
/// `mixed` (f32 products per chunk, accumulated and merged in f64; svcca and cca, dense layers;
/// a representation whose error estimate exceeds core's tolerance is refused).
pub use svcca_core::Precision;

/// How convolutional layers (`[h, w, c]` per datapoint) are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ConvMethod {
    /// One CCA per spatial frequency (the paper's DFT method).
    #[default]
    Dft,
    /// Spatial positions become datapoints: `n·h·w` rows of `c` channels.
    Fold,
    /// Average over spatial positions: `n` rows of `c` channels.
    Pool,
}

impl ConvMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ConvMethod::Dft => "dft",
            ConvMethod::Fold => "fold",
            ConvMethod::Pool => "pool",
        }
    }
}

/// How `tokens` layers (`[sequences, tokens, features]`) become rows; there is no default,
/// because the two answer different questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokensMethod {
    /// Every token of every sequence is a datapoint: `n·t` rows of `f` features.
    Fold,
    /// The mean over each sequence's tokens: `n` rows of `f` features.
    Mean,
}

impl TokensMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            TokensMethod::Fold => "fold",
            TokensMethod::Mean => "mean",
        }
    }

    /// The conv method that computes it: a tokens layer is read as a one-row image whose
    /// positions are the tokens.
    pub fn conv_method(self) -> ConvMethod {
        match self {
            TokensMethod::Fold => ConvMethod::Fold,
            TokensMethod::Mean => ConvMethod::Pool,
        }
    }

    /// What it does, for results and warnings.
    pub fn describe(self) -> &'static str {
        match self {
            TokensMethod::Fold => "tokens fold: every token of every sequence is a datapoint",
            TokensMethod::Mean => "tokens mean: each sequence is the mean of its tokens",
        }
    }
}

impl std::str::FromStr for TokensMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fold" => Ok(TokensMethod::Fold),
            "mean" => Ok(TokensMethod::Mean),
            other => Err(format!("unknown tokens method `{other}` (fold or mean)")),
        }
    }
}

/// One or several accepted values of a `where` filter (several: any of them matches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Patterns {
    One(String),
    Many(Vec<String>),
}

impl Patterns {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Patterns::One(p) => std::slice::from_ref(p),
            Patterns::Many(ps) => ps,
        }
    }
}

/// Which representations of the dataset take part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Explicit representation keys (`run=mlp,seed=0,step=2250,layer=h1`, tags included;
    /// earlier versions' `mlp/seed0/step2250/h1` still works); globs (`*`, `?`) allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Field filters: `run`, `seed`, `step`, `layer` or a tag name, each a glob or a list of globs.
    /// Every field must match; within a field, any pattern may.
    #[serde(default, rename = "where", skip_serializing_if = "BTreeMap::is_empty")]
    pub filters: BTreeMap<String, Patterns>,
}

/// Limits on a task's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory a worker may use for one task, in MiB. Row ranges and tiles are sized to fit.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Datapoints per task; when absent, derived from `memory_mb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_task: Option<u64>,
}

/// Analyses computed from the activations after the comparisons (`[analyses]` in TOML). They do
/// not change which pairs are compared, so adding or changing them resumes the same job:
/// `svcca sweep` runs them once its job is done (and leaves them out of the spec its embedded
/// coordinator gets); a coordinator runs those of a submitted job once its results are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Analyses {
    /// A `.npy` of integer class labels, one per datapoint of the probe set (a local path,
    /// relative to the working directory, or a URL: `file://`, or `s3://`, `gs://`, `az://` for
    /// a job submitted to a coordinator, which reads it). Turns on class sensitivity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    /// The layer whose final checkpoint's columns are the class targets (column `c` = class
    /// `c`'s logit); without it the target is the class indicator `1[label = c]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logits: Option<String>,
}

impl Analyses {
    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.logits.is_none()
    }
}

fn default_memory_mb() -> u64 {
    1024
}

/// The largest `resources.memory_mb` accepted: 1 PiB, far beyond any worker. The planner works
/// in bytes, so a bound past `u64::MAX >> 20` MiB cannot even be represented.
pub const MAX_MEMORY_MB: u64 = 1 << 30;

impl Default for Resources {
    fn default() -> Self {
        Resources {
            memory_mb: default_memory_mb(),
            rows_per_task: None,
        }
    }
}

/// A sweep: see the module docs for the TOML form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Dataset root URL (`file:///...`, `s3://...`, or a local path).
    #[serde(default)]
    pub dataset: String,
    /// Where results go (an object-store URL or a local path).
    #[serde(default)]
    pub output: String,
    /// Where per-representation results are cached across jobs; default `<output>.cache`, beside
    /// the output (see the module documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    #[serde(default)]
    pub comparison: ComparisonPlan,
    /// Explicit pairs of representation labels, for `comparison = "pairs"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pairs: Vec<[String; 2]>,
    #[serde(default)]
    pub select: Selection,
    #[serde(default = "default_metrics")]
    pub metrics: Vec<Metric>,
    #[serde(default)]
    pub keep: KeepRule,
    #[serde(default)]
    pub mode: Mode,
    /// `mixed`: f32 products in the moments of svcca and cca (opt-in; f64 by default).
    #[serde(default, skip_serializing_if = "Precision::is_f64")]
    pub precision: Precision,
    #[serde(default)]
    pub conv: ConvMethod,
    /// How tokens layers are compared; required when the selection holds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokensMethod>,
    #[serde(default)]
    pub resources: Resources,
    /// Replace results of a *different* job found at `output` (a same job always resumes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overwrite: bool,
    /// Analyses `svcca sweep` computes after the job; see [`Analyses`].
    #[serde(default, skip_serializing_if = "Analyses::is_empty")]
    pub analyses: Analyses,
    /// Where each pair's canonical correlations are stored: `parquet` (default: in
    /// `pairs.parquet` only, keeping `results.json` small), `json` (in both) or `none`.
    #[serde(default, skip_serializing_if = "is_default_store")]
    pub coefficients: CoefficientStore,
}

fn is_default_store(store: &CoefficientStore) -> bool {
    *store == CoefficientStore::default()
}

fn default_metrics() -> Vec<Metric> {
    vec![Metric::Svcca]
}

impl Default for JobSpec {
    fn default() -> Self {
        JobSpec {
            dataset: String::new(),
            output: String::new(),
            cache: None,
            comparison: ComparisonPlan::default(),
            pairs: Vec::new(),
            select: Selection::default(),
            metrics: default_metrics(),
            keep: KeepRule::default(),
            mode: Mode::default(),
            precision: Precision::default(),
            conv: ConvMethod::default(),
            tokens: None,
            resources: Resources::default(),
            overwrite: false,
            analyses: Analyses::default(),
            coefficients: CoefficientStore::default(),
        }
    }
}

/// The default cache of an output: beside it, `<output>.cache`, so that copying the output
/// (`aws s3 cp --recursive`, `gsutil cp -r`) copies the results without the cache. An output with
/// no parent (a bucket's root, `/`) keeps it inside, under `<output>/cache`.
pub fn default_cache_url(output: &str) -> String {
    let trimmed = output.trim().trim_end_matches('/');
    let path = match trimmed.find("://") {
        Some(at) => trimmed[at + 3..]
            .split_once('/')
            .map_or("", |(_, path)| path),
        None => trimmed.strip_prefix("file:").unwrap_or(trimmed),
    };
    if path.trim_matches('/').is_empty() {
        return inner_cache_url(output);
    }
    format!("{trimmed}.cache")
}

fn inner_cache_url(output: &str) -> String {
    let output = output.trim();
    let trimmed = output.trim_end_matches('/');
    if trimmed.is_empty() || trimmed.ends_with(':') {
        // `/`, `file:///`: the root itself, whose slashes must stay.
        return format!("{output}cache");
    }
    format!("{trimmed}/cache")
}

/// A spec that cannot run, with what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("job spec is not valid TOML for svcca: {message}")]
    Parse { message: String },
    #[error("job spec: `{field}` is required ({hint})")]
    Missing {
        field: &'static str,
        hint: &'static str,
    },
    #[error("job spec: `{field}` = `{value}` is not known; expected {expected}")]
    UnknownValue {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("job spec: {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl JobSpec {
    /// A spec comparing every selected representation of `dataset`, writing to `output`.
    pub fn new(dataset: impl Into<String>, output: impl Into<String>) -> Self {
        JobSpec {
            dataset: dataset.into(),
            output: output.into(),
            ..JobSpec::default()
        }
    }

    pub fn with_comparison(mut self, comparison: ComparisonPlan) -> Self {
        self.comparison = comparison;
        self
    }

    pub fn with_pairs(mut self, pairs: Vec<[String; 2]>) -> Self {
        self.pairs = pairs;
        self.comparison = ComparisonPlan::Pairs;
        self
    }

    pub fn with_where(mut self, field: impl Into<String>, pattern: impl Into<String>) -> Self {
        let field = field.into();
        let pattern = pattern.into();
        let merged = match self.select.filters.remove(&field) {
            None => Patterns::One(pattern),
            Some(Patterns::One(p)) => Patterns::Many(vec![p, pattern]),
            Some(Patterns::Many(mut ps)) => {
                ps.push(pattern);
                Patterns::Many(ps)
            }
        };
        self.select.filters.insert(field, merged);
        self
    }

    pub fn with_keys(mut self, keys: Vec<String>) -> Self {
        self.select.keys = keys;
        self
    }

    pub fn with_metrics(mut self, metrics: Vec<Metric>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn with_keep(mut self, keep: KeepRule) -> Self {
        self.keep = keep;
        self
    }

    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    pub fn with_conv(mut self, conv: ConvMethod) -> Self {
        self.conv = conv;
        self
    }

    pub fn with_cache(mut self, cache: impl Into<String>) -> Self {
        self.cache = Some(cache.into());
        self
    }

    pub fn with_memory_mb(mut self, memory_mb: u64) -> Self {
        self.resources.memory_mb = memory_mb;
        self
    }

    pub fn with_overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }

    pub fn with_coefficients(mut self, store: CoefficientStore) -> Self {
        self.coefficients = store;
        self
    }

    pub fn with_rows_per_task(mut self, rows: u64) -> Self {
        self.resources.rows_per_task = Some(rows);
        self
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let spec = Self::parse_toml(text)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parses TOML text without validating (for callers that fill in fields first).
    pub fn parse_toml(text: &str) -> Result<Self, SpecError> {
        toml::from_str(text).map_err(|e| SpecError::Parse {
            message: e.to_string(),
        })
    }

    /// The spec as TOML (what crosses gRPC and is stored with the results).
    pub fn to_toml(&self) -> String {
        // Plain data with string keys always serialises.
        toml::to_string(self).expect("job spec serialises to TOML")
    }

    /// Metrics in a canonical order without repeats.
    pub fn metric_set(&self) -> Vec<Metric> {
        let mut metrics = self.metrics.clone();
        metrics.sort();
        metrics.dedup();
        metrics
    }

    /// The cache root URL: `cache` when set, else [`default_cache_url`] of the output.
    pub fn cache_url(&self) -> String {
        match &self.cache {
            Some(c) => c.clone(),
            None => default_cache_url(&self.output),
        }
    }

    /// Where an output written by an earlier svcca release keeps its cache (`<output>/cache`),
    /// when no `cache` is set: the planner uses it instead of the default when it holds entries,
    /// so those outputs still resume from their cache.
    pub fn legacy_cache_url(&self) -> Option<String> {
        self.cache.is_none().then(|| inner_cache_url(&self.output))
    }

    /// Settings as one line for results files and logs.
    pub fn describe_settings(&self) -> String {
        let tokens = self
            .tokens
            .map(|t| format!("; {}", t.describe()))
            .unwrap_or_default();
        format!(
            "metrics {}; keep {}; mode {}; conv {}{tokens}",
            self.metric_set()
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(","),
            self.keep.describe(),
            self.mode.as_str(),
            self.conv.as_str()
        )
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if self.dataset.trim().is_empty() {
            return Err(SpecError::Missing {
                field: "dataset",
                hint: "the dataset root URL, e.g. file:///data/digits or s3://bucket/acts",
            });
        }
        if self.output.trim().is_empty() {
            return Err(SpecError::Missing {
                field: "output",
                hint: "where results go, e.g. file:///results/sweep1",
            });
        }
        if self.precision == Precision::Mixed && self.mode == Mode::GoogleCompat {
            return Err(SpecError::Invalid {
                field: "precision",
                message: "google-compat reproduces google/svcca's f64 arithmetic; mixed precision \
                          is only available in the default mode"
                    .into(),
            });
        }
        if self.metrics.is_empty() {
            return Err(SpecError::Invalid {
                field: "metrics",
                message: "no metric asked for; list at least one of svcca, cca, pwcca, cka".into(),
            });
        }
        match self.keep {
            KeepRule::Variance(f) if !(f > 0.0 && f <= 1.0) => {
                return Err(SpecError::Invalid {
                    field: "keep.variance",
                    message: format!("{f} is not a fraction in (0, 1]; the paper uses 0.99"),
                });
            }
            KeepRule::Dims(0) => {
                return Err(SpecError::Invalid {
                    field: "keep.dims",
                    message: "0 directions keeps nothing; use at least 1".into(),
                });
            }
            _ => {}
        }
        if self.resources.memory_mb < 16 {
            return Err(SpecError::Invalid {
                field: "resources.memory_mb",
                message: format!(
                    "{} MiB is too little for any task; use at least 16",
                    self.resources.memory_mb
                ),
            });
        }
        if self.resources.memory_mb > MAX_MEMORY_MB {
            return Err(SpecError::Invalid {
                field: "resources.memory_mb",
                message: format!(
                    "{} MiB is more than any worker has; the largest accepted is {MAX_MEMORY_MB} (1 PiB)",
                    self.resources.memory_mb
                ),
            });
        }
        if self.resources.rows_per_task == Some(0) {
            return Err(SpecError::Invalid {
                field: "resources.rows_per_task",
                message: "0 rows per task; leave it out to derive it from memory_mb".into(),
            });
        }
        match self.comparison {
            ComparisonPlan::Pairs if self.pairs.is_empty() => {
                return Err(SpecError::Invalid {
                    field: "pairs",
                    message: "comparison = \"pairs\" needs a list, e.g. pairs = [[\"run=mlp,seed=0,step=2250,layer=h1\", \"run=mlp,seed=1,step=2250,layer=h1\"]]".into(),
                });
            }
            ComparisonPlan::Pairs => {}
            other if !self.pairs.is_empty() => {
                return Err(SpecError::Invalid {
                    field: "pairs",
                    message: format!(
                        "an explicit pair list is only used with comparison = \"pairs\", not \"{}\"",
                        other.as_str()
                    ),
                });
            }
            _ => {}
        }
        match (&self.analyses.labels, &self.analyses.logits) {
            (Some(l), _) if l.trim().is_empty() => {
                return Err(SpecError::Invalid {
                    field: "analyses.labels",
                    message: "empty path; name a .npy of integer class labels".into(),
                });
            }
            (_, Some(l)) if l.trim().is_empty() => {
                return Err(SpecError::Invalid {
                    field: "analyses.logits",
                    message: "empty layer name; leave it out to compare with the class indicator"
                        .into(),
                });
            }
            (None, Some(_)) => {
                return Err(SpecError::Invalid {
                    field: "analyses.logits",
                    message: "class sensitivity needs analyses.labels too (a .npy of integer class labels)".into(),
                });
            }
            _ => {}
        }
        for (field, patterns) in &self.select.filters {
            if field.trim().is_empty() {
                return Err(SpecError::Invalid {
                    field: "select.where",
                    message: "a filter has an empty field name".into(),
                });
            }
            if patterns.as_slice().is_empty() {
                return Err(SpecError::Invalid {
                    field: "select.where",
                    message: format!("filter `{field}` lists no pattern"),
                });
            }
        }
        Ok(())
    }
}

/// Parses a `KEY=VALUE` filter as given on the command line.
pub fn parse_where(text: &str) -> Result<(String, String), SpecError> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
            Ok((k.trim().to_string(), v.trim().to_string()))
        }
        _ => Err(SpecError::Invalid {
            field: "where",
            message: format!("`{text}` is not KEY=VALUE (e.g. run=mlp or layer=h*)"),
        }),
    }
}

/// Glob match with `*` and `?`, as ingest's layout rules match (one matcher for both).
pub use svcca_storage::selector::glob_match;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cache_lies_beside_the_output() {
        for (output, cache) in [
            ("s3://b/sweeps/nightly", "s3://b/sweeps/nightly.cache"),
            ("s3://b/sweeps/nightly/", "s3://b/sweeps/nightly.cache"),
            ("gs://b/x", "gs://b/x.cache"),
            ("file:///results/run1", "file:///results/run1.cache"),
            ("/results/run1", "/results/run1.cache"),
            ("out", "out.cache"),
            ("memory://name/p", "memory://name/p.cache"),
            // Nothing lies beside a bucket's root or `/`: the cache stays inside.
            ("s3://b", "s3://b/cache"),
            ("s3://b/", "s3://b/cache"),
            ("file:///", "file:///cache"),
            ("/", "/cache"),
        ] {
            assert_eq!(default_cache_url(output), cache, "{output}");
            assert_eq!(JobSpec::new("/d", output).cache_url(), cache, "{output}");
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let text = r#"
dataset = "file:///data/digits"
output = "file:///results/digits-sweep"
comparison = "vs-final"
metrics = ["svcca", "pwcca", "cka"]
mode = "google-compat"
conv = "fold"
[select]
where = { run = "mlp", layer = ["h1", "h2"] }
[keep]
dims = 20
[resources]
memory_mb = 512
rows_per_task = 300
"#;
        let spec = JobSpec::from_toml(text).unwrap();
        assert_eq!(spec.comparison, ComparisonPlan::VsFinal);
        assert_eq!(spec.keep, KeepRule::Dims(20));
        assert_eq!(spec.mode, Mode::GoogleCompat);
        assert_eq!(spec.conv, ConvMethod::Fold);
        assert_eq!(spec.select.filters["layer"].as_slice(), ["h1", "h2"]);
        assert_eq!(spec.resources.rows_per_task, Some(300));
        let back = JobSpec::from_toml(&spec.to_toml()).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn defaults_and_builders_agree() {
        let spec = JobSpec::from_toml("dataset = \"/d\"\noutput = \"/o\"\n").unwrap();
        assert_eq!(spec, JobSpec::new("/d", "/o"));
        assert_eq!(spec.keep, KeepRule::Variance(0.99));
        assert_eq!(spec.metrics, vec![Metric::Svcca]);
        assert_eq!(spec.cache_url(), "/o.cache");
        assert_eq!(spec.legacy_cache_url().as_deref(), Some("/o/cache"));
        assert_eq!(spec.clone().with_cache("/c").legacy_cache_url(), None);
        let built = JobSpec::new("/d", "/o")
            .with_where("layer", "h*")
            .with_where("layer", "logits");
        assert_eq!(built.select.filters["layer"].as_slice(), ["h*", "logits"]);
    }

    #[test]
    fn bad_specs_say_what_to_fix() {
        let cases = [
            ("output = \"/o\"", "`dataset` is required"),
            (
                "dataset = \"/d\"\noutput = \"/o\"\ncomparison = \"every\"",
                "unknown variant",
            ),
            (
                "dataset = \"/d\"\noutput = \"/o\"\nmetrics = []",
                "no metric",
            ),
            (
                "dataset = \"/d\"\noutput = \"/o\"\n[keep]\nvariance = 1.5",
                "not a fraction",
            ),
            (
                "dataset = \"/d\"\noutput = \"/o\"\n[keep]\ndims = 0",
                "keeps nothing",
            ),
            (
                "dataset = \"/d\"\noutput = \"/o\"\ncomparison = \"pairs\"",
                "needs a list",
            ),
            (
                "dataset = \"/d\"\noutput = \"/o\"\nbogus = 1",
                "unknown field",
            ),
            (
                "dataset = \"/d\"\noutput = \"/o\"\n[resources]\nmemory_mb = 18446744073709",
                "more than any worker has",
            ),
        ];
        for (text, expected) in cases {
            let err = JobSpec::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        assert!(parse_where("layer").is_err());
        assert_eq!(
            parse_where("layer=h*").unwrap(),
            ("layer".into(), "h*".into())
        );
    }

    #[test]
    fn analyses_are_optional_and_round_trip() {
        // Without [analyses] the spec, and so its TOML (the job's identity), is as before.
        let plain = JobSpec::from_toml("dataset = \"/d\"\noutput = \"/o\"\n").unwrap();
        assert!(plain.analyses.is_empty());
        assert!(!plain.to_toml().contains("analyses"), "{}", plain.to_toml());
        let text = "dataset = \"/d\"\noutput = \"/o\"\n[analyses]\nlabels = \"y.npy\"\nlogits = \"logits\"\n";
        let spec = JobSpec::from_toml(text).unwrap();
        assert_eq!(spec.analyses.labels.as_deref(), Some("y.npy"));
        assert_eq!(spec.analyses.logits.as_deref(), Some("logits"));
        assert_eq!(JobSpec::from_toml(&spec.to_toml()).unwrap(), spec);
        let only_labels = JobSpec::from_toml(
            "dataset = \"/d\"\noutput = \"/o\"\n[analyses]\nlabels = \"y.npy\"\n",
        )
        .unwrap();
        assert_eq!(only_labels.analyses.logits, None);
        for (text, expected) in [
            ("[analyses]\nlogits = \"logits\"", "needs analyses.labels"),
            ("[analyses]\nlabels = \" \"", "empty path"),
            (
                "[analyses]\nlabels = \"y.npy\"\nlogits = \"\"",
                "empty layer",
            ),
            ("[analyses]\nlabel = \"y.npy\"", "unknown field"),
        ] {
            let text = format!("dataset = \"/d\"\noutput = \"/o\"\n{text}\n");
            let err = JobSpec::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_match("h*", "h1"));
        assert!(glob_match("h?", "h2"));
        assert!(!glob_match("h?", "h12"));
        assert!(glob_match("*", ""));
        assert!(glob_match("mlp/*/step2250/*", "mlp/seed0/step2250/h1"));
        assert!(!glob_match("conv*", "mlp"));
        assert!(glob_match("a*b*c", "aXbYbc"));
    }
}
