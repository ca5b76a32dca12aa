//! Writing a report: figures, one `index.html` with the numbers in tables and their definitions,
//! `report.json` with the same analyses as data, and a short terminal summary.
//!
//! The page leads with the answers ([`crate::answers`]): bottom-up or not and why, each layer's
//! convergence step, cross-seed agreement against its null, and the pairs the sweep skipped, each
//! linking to the section and figure it comes from. The analyses follow, learning dynamics under
//! every stored metric first; the definitions and the sweep's settings close the page.
//!
//! Everything is derived from the stored results (plus, when given, the stored
//! [`ComputedAnalyses`]); the only computation is the seeded Gaussian null baseline at the shapes
//! of the stored pairs, which is cheap and can be turned off. The output is deterministic: the same
//! inputs give the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use svcca_results::{PairRecord, RepresentationKey, ResultsFile, SkippedPairs};

use crate::ReportError;
use crate::answers::{Answers, answers};
use crate::compute::{
    ClassSensitivity, ComputedAnalyses, DimensionalityCurve, NullBaseline, NullCache,
    conv_cca_shapes, conv_gaussian_null, gaussian_null,
};
use crate::dynamics::{DEFAULT_THRESHOLD, LearningDynamics, learning_dynamics};
use crate::layers::{layer_order, primary_metric, runs};
use crate::matrices::{
    FrequencyMap, LayerMatrix, Matrix, RankedBy, frequency_maps, full_matrix, layer_matrix,
    layer_matrix_candidates,
};
use crate::render::{
    Band, Dash, Figure, Heatmap, LineChart, PlotFiles, Reference, Series, SeriesStyle, XScale,
    fit_y_range, render,
};
use crate::seeds::{SeedSpread, cross_seed};
use crate::since::{SinceLastRun, since_last_run};

/// What a report contains and how it is computed. Plain data with `with_*` builders.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// The metric the analyses use; default `svcca` when present, else the first stored.
    pub metric: Option<String>,
    /// Convergence threshold of the learning dynamics (default 0.95).
    pub threshold: f64,
    /// Most layer × layer matrices drawn (default 6).
    pub max_layer_matrices: usize,
    /// Most per-frequency maps drawn (default 8).
    pub max_frequency_maps: usize,
    /// The whole-sweep matrix is drawn up to this many representations (default 400).
    pub max_matrix_size: usize,
    /// Compute the seeded Gaussian null at the stored shapes (default true).
    pub gaussian_null: bool,
    pub null_draws: usize,
    pub null_seed: u64,
    /// Analyses computed from activations earlier (`analyses.json`).
    pub computed: Option<ComputedAnalyses>,
    /// Where the results came from, shown on the page.
    pub source: Option<String>,
    /// Planned pairs the sweep skipped (`summary.json`), shown with why.
    pub skipped: Vec<SkippedPairs>,
    /// The previous run's results (`results.prev.json`), for what changed since.
    pub previous: Option<ResultsFile>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            metric: None,
            threshold: DEFAULT_THRESHOLD,
            max_layer_matrices: 6,
            max_frequency_maps: 8,
            max_matrix_size: 400,
            gaussian_null: true,
            null_draws: 5,
            null_seed: 0,
            computed: None,
            source: None,
            skipped: Vec::new(),
            previous: None,
        }
    }
}

impl ReportOptions {
    pub fn with_metric(mut self, metric: impl Into<String>) -> Self {
        self.metric = Some(metric.into());
        self
    }
    pub fn with_threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }
    pub fn with_gaussian_null(mut self, on: bool) -> Self {
        self.gaussian_null = on;
        self
    }
    pub fn with_computed(mut self, computed: ComputedAnalyses) -> Self {
        self.computed = Some(computed);
        self
    }
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }
    pub fn with_skipped(mut self, skipped: Vec<SkippedPairs>) -> Self {
        self.skipped = skipped;
        self
    }
    pub fn with_previous(mut self, previous: ResultsFile) -> Self {
        self.previous = Some(previous);
        self
    }
}

/// What [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSummary {
    pub out_dir: PathBuf,
    /// `out_dir/index.html`.
    pub index: PathBuf,
    /// Every file written, relative to `out_dir`, sorted.
    pub files: Vec<String>,
    /// The short terminal summary (what `svcca report` prints).
    pub text: String,
    /// Things the report could not show, in words.
    pub notes: Vec<String>,
}

/// The analyses of a report as data (`report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ReportData {
    pub metric: String,
    pub comparison: String,
    pub settings: String,
    /// What the page leads with, drawn from the analyses below.
    pub answers: Answers,
    pub dynamics: LearningDynamics,
    /// Learning dynamics under each other stored metric.
    pub other_dynamics: Vec<LearningDynamics>,
    /// What changed since the previous run of the same job, when its results were kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_last_run: Option<SinceLastRun>,
    pub cross_seed: Vec<SeedSpread>,
    pub layer_matrices: Vec<LayerMatrix>,
    pub frequency_maps: Vec<FrequencyMap>,
    pub null_baselines: Vec<NullBaseline>,
    /// Conv pairs' own nulls, computed per frequency (at most [`MAX_CONV_NULLS_LISTED`]).
    pub conv_nulls: Vec<ConvPairNull>,
    /// Every conv pair's null and dims, summarised per (run, layer, layer, method).
    pub conv_null_groups: Vec<ConvNullGroup>,
    pub dimensionality: Vec<DimensionalityCurve>,
    pub class_sensitivity: Vec<ClassSensitivity>,
}

/// Writes the report of `results` under `out_dir` (created if missing).
pub fn write_report(
    results: &ResultsFile,
    out_dir: &Path,
    options: &ReportOptions,
) -> Result<ReportSummary, ReportError> {
    let metrics = results.metrics();
    let metric = match &options.metric {
        Some(m) if metrics.contains(m) || results.pairs.is_empty() => m.clone(),
        Some(m) => {
            return Err(ReportError::UnknownMetric {
                metric: m.clone(),
                available: metrics.join(", "),
            });
        }
        None => primary_metric(results).unwrap_or_else(|| "svcca".to_string()),
    };
    let dynamics_of = |m: &str| {
        learning_dynamics(results, m, options.threshold).map_err(|e| ReportError::Options {
            detail: e.to_string(),
        })
    };
    let dynamics = dynamics_of(&metric)?;
    let other_dynamics = metrics
        .iter()
        .filter(|m| **m != metric)
        .map(|m| dynamics_of(m))
        .collect::<Result<Vec<_>, _>>()?;
    let seeds = cross_seed(results, &metric);
    let layer_mats: Vec<LayerMatrix> =
        layer_matrix_candidates(results, &metric, options.max_layer_matrices)
            .iter()
            .map(|(a, b)| layer_matrix(results, &metric, a, b))
            .collect();
    let freq_maps = frequency_maps(results, options.max_frequency_maps);
    let computed = options.computed.clone().unwrap_or_default();
    let mut notes = computed.notes.clone();
    let mut gaussian = if options.gaussian_null {
        gaussian_nulls(results, &metric, options, &mut notes)
    } else {
        GaussianNulls::default()
    };
    let mut nulls = std::mem::take(&mut gaussian.listed);
    nulls.extend(computed.null_baselines.iter().cloned());
    let conv_null_groups = conv_null_groups(&gaussian.conv);
    if gaussian.conv.len() > MAX_CONV_NULLS_LISTED {
        notes.push(format!(
            "conv pairs' nulls listed for the first {MAX_CONV_NULLS_LISTED} of {} pairs; every \
             pair's null is used in the charts and summarised per layer",
            gaussian.conv.len()
        ));
    }
    let mut conv_nulls = std::mem::take(&mut gaussian.conv);
    conv_nulls.truncate(MAX_CONV_NULLS_LISTED);

    let answers = answers(
        &dynamics,
        &other_dynamics,
        &seeds,
        |s| seed_null(&gaussian, results, &metric, s),
        &options.skipped,
    );

    // Only once the metric and threshold are known to be good: a refused report leaves no folder behind.
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let since = options
        .previous
        .as_ref()
        .map(|previous| since_last_run(previous, results, &dynamics));

    let mut page = Page::new(out_dir);
    page.summary(&answers, options.gaussian_null, since.as_ref());
    if let Some(since) = &since {
        page.since_last_run(since, &metric);
    }
    page.dynamics(&dynamics, &gaussian, results)?;
    for d in &other_dynamics {
        page.dynamics(d, &GaussianNulls::default(), results)?;
    }
    page.cross_seed(&seeds, &metric, &gaussian, results)?;
    page.nulls(&nulls, &metric, !conv_null_groups.is_empty());
    page.conv_nulls(&conv_nulls, &conv_null_groups, &metric);
    page.skipped(&options.skipped);
    page.layer_matrices(&layer_mats)?;
    for m in &metrics {
        let full = full_matrix(results, m);
        page.full_matrix(&full, options.max_matrix_size, &mut notes)?;
    }
    page.frequency_maps(&freq_maps)?;
    page.spectra(results)?;
    page.dimensionality(&computed.dimensionality, results)?;
    page.class_sensitivity(&computed.class_sensitivity, results, options)?;
    page.warnings(results);
    if !notes.is_empty() {
        page.section("notes", "Notes");
        for note in &notes {
            page.note(note);
        }
    }
    // Reference material closes the page: the answers and figures come first.
    page.definitions(&metric, options.threshold);
    page.header(results, &metric, options);

    let data = ReportData {
        metric: metric.clone(),
        comparison: results.comparison.clone(),
        settings: results.settings.clone(),
        answers,
        dynamics,
        other_dynamics,
        since_last_run: since,
        cross_seed: seeds,
        layer_matrices: layer_mats,
        frequency_maps: freq_maps,
        null_baselines: nulls,
        conv_nulls,
        conv_null_groups,
        dimensionality: computed.dimensionality.clone(),
        class_sensitivity: computed.class_sensitivity.clone(),
    };
    let text = terminal_summary(results, &data, out_dir);
    let json = serde_json::to_vec_pretty(&data).map_err(|e| ReportError::Options {
        detail: e.to_string(),
    })?;
    page.write_file("report.json", &json)?;
    let html = page.finish();
    page.write_file("index.html", html.as_bytes())?;
    let mut files = page.files.clone();
    files.sort();
    Ok(ReportSummary {
        out_dir: out_dir.to_path_buf(),
        index: out_dir.join("index.html"),
        files,
        text,
        notes,
    })
}

/// Representations a warning row lists in full; more fold under their count.
const WARNING_REPS_SHOWN: usize = 12;

/// Conv pairs' nulls listed in the page and report.json; every pair's null is still used.
pub const MAX_CONV_NULLS_LISTED: usize = 64;
/// Operation budget of the conv nulls of one report (a few seconds); shapes repeat, so it is
/// rarely reached.
const CONV_NULL_BUDGET: f64 = 5e10;

/// A conv pair's own null beside its score.
#[derive(Debug, Clone, Serialize)]
pub struct ConvPairNull {
    pub a: RepresentationKey,
    pub b: RepresentationKey,
    /// The pair's stored similarity.
    pub score: f64,
    pub null: NullBaseline,
}

/// Conv pairs of one (run, layer, layer, method), summarised for the terminal and the page.
#[derive(Debug, Clone, Serialize)]
pub struct ConvNullGroup {
    pub run: String,
    pub layer_a: String,
    pub layer_b: String,
    pub method: String,
    pub pairs: usize,
    /// Datapoints of each CCA (images; images × positions for fold).
    pub datapoints: u64,
    /// CCAs per pair (grid locations for dft).
    pub frequencies: usize,
    /// Kept dims of one frequency over every frequency, side and pair of the group: the
    /// smallest, the range of the per-pair (per-side) medians, and the largest.
    pub dims_min: usize,
    pub median_min: f64,
    pub median_max: f64,
    pub dims_max: usize,
    /// The smallest and largest total over the frequencies of one side of one pair: what no
    /// single CCA sees.
    pub total_min: usize,
    pub total_max: usize,
    pub null_min: f64,
    pub null_max: f64,
    pub score_min: f64,
    pub score_max: f64,
    /// Pairs whose score is at or below their null's mean.
    pub at_or_below_null: usize,
}

/// The Gaussian nulls of a report, and each pair's own.
#[derive(Debug, Default)]
struct GaussianNulls {
    /// One per distinct dense shape (at most 12).
    listed: Vec<NullBaseline>,
    /// One per conv pair whose null could be computed, in the results' order.
    conv: Vec<ConvPairNull>,
    /// The null mean of every pair that has one.
    by_pair: BTreeMap<(RepresentationKey, RepresentationKey), f64>,
}

impl GaussianNulls {
    /// The band the nulls of the pairs `filter` selects span (the smallest and largest of their
    /// means), or `None` when none of them has a null.
    fn band_over(
        &self,
        results: &ResultsFile,
        metric: &str,
        filter: impl Fn(&PairRecord) -> bool,
    ) -> Option<Band> {
        let (lo, hi) = results
            .pairs_of(metric)
            .filter(|p| filter(p))
            .filter_map(|p| self.by_pair.get(&(p.a.clone(), p.b.clone())).copied())
            .fold(None, |m: Option<(f64, f64)>, v| {
                Some(m.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
            })?;
        let label = if hi - lo < 0.005 {
            format!("gaussian null {hi:.2}")
        } else {
            format!("gaussian null {lo:.2}–{hi:.2}")
        };
        Some(Band { lo, hi, label })
    }

    /// The largest null among the pairs `filter` selects.
    fn max_over(
        &self,
        results: &ResultsFile,
        metric: &str,
        filter: impl Fn(&PairRecord) -> bool,
    ) -> Option<f64> {
        results
            .pairs_of(metric)
            .filter(|p| filter(p))
            .filter_map(|p| self.by_pair.get(&(p.a.clone(), p.b.clone())).copied())
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    }
}

/// Gaussian nulls of the stored pairs: dense pairs at their distinct (datapoints, dims) shapes
/// (at most 12), conv pairs each computed as its result is (per frequency; see
/// [`crate::compute`]).
fn gaussian_nulls(
    results: &ResultsFile,
    metric: &str,
    options: &ReportOptions,
    notes: &mut Vec<String>,
) -> GaussianNulls {
    let reps: BTreeMap<&RepresentationKey, (u64, &[usize])> = results
        .representations
        .iter()
        .map(|r| (&r.key, (r.datapoints, r.shape.as_slice())))
        .collect();
    let mut out = GaussianNulls::default();
    let mut shapes: BTreeMap<(u64, usize, usize), usize> = BTreeMap::new();
    let mut dense_pairs: Vec<(&PairRecord, (u64, usize, usize))> = Vec::new();
    let mut cache = NullCache::new(options.null_draws, options.null_seed);
    let (mut spent, mut over_budget, mut stale) = (0.0f64, 0usize, Vec::new());
    for p in results.pairs_of(metric) {
        let (Some(&(n, shape_a)), Some(&(_, shape_b))) = (reps.get(&p.a), reps.get(&p.b)) else {
            continue;
        };
        let conv = match conv_cca_shapes(p, shape_a, shape_b, n) {
            Ok(None) => None,
            Ok(Some(c)) => Some(c),
            Err(e) => {
                stale.push(e.to_string());
                continue;
            }
        };
        let Some(conv) = conv else {
            let shape = (n, p.dims_a.min(p.dims_b), p.dims_a.max(p.dims_b));
            *shapes.entry(shape).or_default() += 1;
            dense_pairs.push((p, shape));
            continue;
        };
        let mut new_cost = 0.0;
        let mut seen = std::collections::BTreeSet::new();
        for c in &conv.ccas {
            if !cache.has(c) && seen.insert(*c) {
                new_cost += c.cost() * options.null_draws as f64;
            }
        }
        if spent + new_cost > CONV_NULL_BUDGET {
            over_budget += 1;
            continue;
        }
        spent += new_cost;
        let of = format!("{} vs {}", p.a.label(), p.b.label());
        match conv_gaussian_null(&of, metric, &conv, &mut cache) {
            Ok(null) => {
                out.by_pair.insert((p.a.clone(), p.b.clone()), null.mean);
                out.conv.push(ConvPairNull {
                    a: p.a.clone(),
                    b: p.b.clone(),
                    score: p.mean,
                    null,
                });
            }
            Err(e) => notes.push(e.to_string()),
        }
    }
    if let Some(first) = stale.first() {
        notes.push(format!(
            "gaussian null not computed for {} conv pair(s): {first}",
            stale.len()
        ));
    }
    if over_budget > 0 {
        notes.push(format!(
            "gaussian null not computed for {over_budget} conv pair(s): their frequencies' \
             shapes would take too long for a report ({} shapes computed)",
            cache.shapes()
        ));
    }
    // The summary sets each layer's agreement across seeds at the last step against its null:
    // those pairs' shapes are computed whatever their count.
    let mut last_seed_step: BTreeMap<&str, Option<i64>> = BTreeMap::new();
    for (p, _) in &dense_pairs {
        if is_seed_pair(p) {
            let e = last_seed_step.entry(p.a.run.as_str()).or_insert(p.a.step);
            *e = (*e).max(p.a.step);
        }
    }
    let answered: std::collections::BTreeSet<(u64, usize, usize)> = dense_pairs
        .iter()
        .filter(|(p, _)| is_seed_pair(p) && last_seed_step.get(p.a.run.as_str()) == Some(&p.a.step))
        .map(|&(_, shape)| shape)
        .take(MAX_ANSWERED_NULL_SHAPES)
        .collect();
    let mut ordered: Vec<((u64, usize, usize), usize)> = shapes.into_iter().collect();
    ordered.sort_by_key(|&(shape, count)| (std::cmp::Reverse(count), shape));
    if ordered.len() > 12 {
        notes.push(format!(
            "gaussian null computed for the 12 most frequent of {} pair shapes, and for those of \
             the seed pairs at the last step",
            ordered.len()
        ));
        let rest = ordered.split_off(12);
        ordered.extend(
            rest.into_iter()
                .filter(|(shape, _)| answered.contains(shape)),
        );
    }
    ordered.sort_by_key(|&(shape, _)| shape);
    for ((n, da, db), _) in ordered {
        // Keep report writing cheap: skip shapes whose null would take more than seconds.
        let cost = n as f64 * ((da + db) as f64).powi(2) * options.null_draws as f64;
        if cost > 2e10 {
            notes.push(format!("gaussian null not computed for {n} datapoints × {da}/{db} dims (too large for a report)"));
            continue;
        }
        match gaussian_null(n, da, db, metric, options.null_draws, options.null_seed) {
            Ok(null) => out.listed.push(null),
            Err(e) => notes.push(format!("gaussian null for {n} × {da}/{db}: {e}")),
        }
    }
    for (p, shape) in dense_pairs {
        if let Some(z) = out
            .listed
            .iter()
            .find(|z| (z.datapoints, z.dims_a, z.dims_b) == shape)
        {
            out.by_pair.insert((p.a.clone(), p.b.clone()), z.mean);
        }
    }
    out
}

/// The largest Gaussian null among the seed pairs behind one cross-seed spread.
fn seed_null(
    nulls: &GaussianNulls,
    results: &ResultsFile,
    metric: &str,
    s: &SeedSpread,
) -> Option<f64> {
    nulls.max_over(results, metric, |p| {
        let side = |k: &RepresentationKey| {
            k.run == s.run && k.tags == s.tags && k.step == s.step && k.layer == s.layer
        };
        side(&p.a) && side(&p.b) && p.a.seed != p.b.seed
    })
}

/// The section of the learning dynamics of `metric`.
fn dynamics_section(metric: &str) -> String {
    format!("dynamics-{}", anchor(metric))
}

/// The figure of one network's learning dynamics under `metric`, by its name (see
/// [`figure_anchor`]).
fn dynamics_figure(metric: &str, network: &str) -> String {
    format!("dynamics_{metric}_{network}")
}

/// The id of the `<figure>` drawn under `name`, so that answers can link to it.
fn figure_anchor(name: &str) -> String {
    format!("fig-{}", anchor(name))
}

/// Layers listed in the page's "since the last run" table.
const MAX_MOVED_LISTED: usize = 20;

/// Most shapes of last-step seed pairs given a null beyond the 12 most frequent shapes.
const MAX_ANSWERED_NULL_SHAPES: usize = 24;

/// The same layer of two seeds of one run at one step, with the same tags.
fn is_seed_pair(p: &PairRecord) -> bool {
    p.a.run == p.b.run
        && p.a.step == p.b.step
        && p.a.layer == p.b.layer
        && p.a.tags == p.b.tags
        && p.a.seed != p.b.seed
}

/// Summaries of the conv pairs' nulls per (run, layer, layer, method), in first-seen order.
fn conv_null_groups(conv: &[ConvPairNull]) -> Vec<ConvNullGroup> {
    let mut groups: Vec<ConvNullGroup> = Vec::new();
    for c in conv {
        let Some(shape) = &c.null.conv else { continue };
        let (run, layer_a, layer_b) = (&c.a.run, layer_text(&c.a), layer_text(&c.b));
        let at = groups.iter().position(|g| {
            &g.run == run
                && g.layer_a == layer_a
                && g.layer_b == layer_b
                && g.method == shape.method
        });
        let i = at.unwrap_or_else(|| {
            groups.push(ConvNullGroup {
                run: run.clone(),
                layer_a: layer_a.clone(),
                layer_b: layer_b.clone(),
                method: shape.method.clone(),
                pairs: 0,
                datapoints: c.null.datapoints,
                frequencies: shape.frequencies,
                dims_min: usize::MAX,
                median_min: f64::INFINITY,
                median_max: f64::NEG_INFINITY,
                dims_max: 0,
                total_min: usize::MAX,
                total_max: 0,
                null_min: f64::INFINITY,
                null_max: f64::NEG_INFINITY,
                score_min: f64::INFINITY,
                score_max: f64::NEG_INFINITY,
                at_or_below_null: 0,
            });
            groups.len() - 1
        });
        let g = &mut groups[i];
        g.pairs += 1;
        for d in [&shape.dims_a, &shape.dims_b] {
            g.dims_min = g.dims_min.min(d.min);
            g.dims_max = g.dims_max.max(d.max);
            g.median_min = g.median_min.min(d.median);
            g.median_max = g.median_max.max(d.median);
            g.total_min = g.total_min.min(d.total);
            g.total_max = g.total_max.max(d.total);
        }
        g.null_min = g.null_min.min(c.null.mean);
        g.null_max = g.null_max.max(c.null.mean);
        g.score_min = g.score_min.min(c.score);
        g.score_max = g.score_max.max(c.score);
        if c.score <= c.null.mean {
            g.at_or_below_null += 1;
        }
    }
    groups
}

/// A layer with its tags, so that layers of runs differing only by a tag stay apart (`conv2` or
/// `conv2 (lr=0.1)`).
fn layer_text(key: &RepresentationKey) -> String {
    if key.tags.is_empty() {
        return key.layer.clone();
    }
    let tags: Vec<String> = key.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{} ({})", key.layer, tags.join(","))
}

impl ConvNullGroup {
    /// `min 3 / median 17–21 / max 32 per frequency, total 1205–1340 per side`.
    fn dims_text(&self) -> String {
        let range = |lo: String, hi: String| if lo == hi { lo } else { format!("{lo}–{hi}") };
        if self.frequencies == 1 {
            return format!(
                "dims {} (one CCA)",
                range(self.dims_min.to_string(), self.dims_max.to_string())
            );
        }
        format!(
            "dims per frequency min {} / median {} / max {}, total over {} frequencies {}",
            self.dims_min,
            range(self.median_min.to_string(), self.median_max.to_string()),
            self.dims_max,
            self.frequencies,
            range(self.total_min.to_string(), self.total_max.to_string()),
        )
    }
}

/// The Gaussian null of a class-sensitivity chart: a layer's kept directions against one
/// independent column over the same datapoints, from the fewest to the most directions the layer
/// keeps over its checkpoints (min to max over the draws). `None` when the layer is not among the
/// stored representations (analyses named before keys were canonical).
fn class_null_band(
    cs: &ClassSensitivity,
    results: &ResultsFile,
    options: &ReportOptions,
) -> Option<Band> {
    let key = RepresentationKey::parse_id(&cs.layer)?;
    let shapes: Vec<(u64, usize)> = results
        .representations
        .iter()
        .filter(|r| {
            r.key.run == key.run
                && r.key.seed == key.seed
                && r.key.tags == key.tags
                && r.key.layer == key.layer
                && r.kept_dims > 0
        })
        .map(|r| (r.datapoints, r.kept_dims))
        .collect();
    let (n, k_lo) = shapes.iter().copied().min_by_key(|s| s.1)?;
    let (_, k_hi) = shapes.iter().copied().max_by_key(|s| s.1)?;
    let null = |k| gaussian_null(n, k, 1, "svcca", options.null_draws, options.null_seed).ok();
    let (lo, hi) = (null(k_lo)?, null(k_hi)?);
    let dims = if k_lo == k_hi {
        k_lo.to_string()
    } else {
        format!("{k_lo}–{k_hi}")
    };
    let (band_lo, band_hi) = (lo.min.min(hi.min), lo.max.max(hi.max));
    Some(Band {
        lo: band_lo,
        hi: band_hi,
        label: format!("gaussian null {band_lo:.2}–{band_hi:.2}, {dims} dims vs 1 column"),
    })
}

/// The conv layers (`[h, w, c]` per datapoint) of the results, named, or `None` when there are none.
fn conv_layers(results: &ResultsFile) -> Option<String> {
    let mut names: Vec<&str> = results
        .representations
        .iter()
        .filter(|r| r.shape.len() == 3)
        .map(|r| r.key.layer.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    (!names.is_empty()).then(|| names.join(", "))
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An HTML id for a label: like [`slug`], but whole, so that long labels stay apart.
fn anchor(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A file-name-safe form of a label.
fn slug(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(60);
    out
}

fn num(v: f64) -> String {
    format!("{v:.3}")
}

/// A network (run, seed and tags, every checkpoint) named as the canonical keys of its
/// representations name it: `run=mlp,seed=0`, then the tags (`,lr=0.1`).
pub fn network_name(run: &str, seed: Option<i64>, tags: &BTreeMap<String, String>) -> String {
    let mut name = format!("run={run}");
    if let Some(s) = seed {
        name.push_str(&format!(",seed={s}"));
    }
    for (k, v) in tags {
        name.push_str(&format!(",{k}={v}"));
    }
    name
}

/// The HTML page being built, and the files written for it.
struct Page {
    dir: PathBuf,
    html: String,
    /// Where the summary ends in `html`: the table of contents goes after it, so that the first
    /// screen holds the answers.
    lead_end: usize,
    toc: Vec<(String, String)>,
    files: Vec<String>,
    figures: usize,
}

impl Page {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            html: String::new(),
            lead_end: 0,
            toc: Vec::new(),
            files: Vec::new(),
            figures: 0,
        }
    }

    fn write_file(&mut self, name: &str, bytes: &[u8]) -> Result<(), ReportError> {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).map_err(|source| ReportError::Write { path, source })?;
        self.files.push(name.to_string());
        Ok(())
    }

    fn section(&mut self, id: &str, title: &str) {
        self.toc.push((id.to_string(), title.to_string()));
        let _ = writeln!(self.html, "<h2 id=\"{id}\">{}</h2>", esc(title));
    }

    fn p(&mut self, text: &str) {
        let _ = writeln!(self.html, "<p>{}</p>", esc(text));
    }

    fn note(&mut self, text: &str) {
        let _ = writeln!(self.html, "<p class=\"note\">{}</p>", esc(text));
    }

    fn figure<F: Figure>(
        &mut self,
        fig: &F,
        name: &str,
        caption: &str,
    ) -> Result<PlotFiles, ReportError> {
        self.figures += 1;
        let stem = format!("fig{:02}_{}", self.figures, slug(name));
        let files = render(fig, &self.dir, &stem)?;
        self.files.push(files.png.clone());
        self.files.push(files.svg.clone());
        let _ = writeln!(
            self.html,
            "<figure id=\"{id}\"><a href=\"{svg}\"><img src=\"{png}\" width=\"{w}\" height=\"{h}\" alt=\"{cap}\" /></a>\
             <figcaption>{cap} <a href=\"{svg}\">SVG</a></figcaption></figure>",
            id = figure_anchor(name),
            svg = esc(&files.svg),
            png = esc(&files.png),
            w = files.width,
            h = files.height,
            cap = esc(caption),
        );
        Ok(files)
    }

    fn table(&mut self, head: &[String], rows: &[Vec<String>]) {
        self.html.push_str("<table><thead><tr>");
        for h in head {
            let _ = write!(self.html, "<th>{}</th>", esc(h));
        }
        self.html.push_str("</tr></thead><tbody>\n");
        for row in rows {
            self.html.push_str("<tr>");
            for cell in row {
                let _ = write!(self.html, "<td>{}</td>", esc(cell));
            }
            self.html.push_str("</tr>\n");
        }
        self.html.push_str("</tbody></table>\n");
    }

    /// A table whose cells are HTML already (escaped, with links).
    fn table_html(&mut self, head: &[String], rows: &[Vec<String>]) {
        self.html.push_str("<table><thead><tr>");
        for h in head {
            let _ = write!(self.html, "<th>{}</th>", esc(h));
        }
        self.html.push_str("</tr></thead><tbody>\n");
        for row in rows {
            self.html.push_str("<tr>");
            for cell in row {
                let _ = write!(self.html, "<td>{cell}</td>");
            }
            self.html.push_str("</tr>\n");
        }
        self.html.push_str("</tbody></table>\n");
    }

    /// The answers, first on the page; each links to the section or figure it comes from.
    fn summary(&mut self, a: &Answers, nulls_computed: bool, since: Option<&SinceLastRun>) {
        let link = |target: &str, text: &str| format!("<a href=\"#{target}\">{}</a>", esc(text));
        self.section("summary", "Summary");
        let _ = writeln!(
            self.html,
            "<p class=\"answer\"><strong>{}</strong> {}</p>",
            esc(&a.headline()),
            link(&dynamics_section(&a.metric), "Learning dynamics")
        );
        if !a.networks.is_empty() {
            self.html
                .push_str("<h3 id=\"summary-bottom-up\">Bottom-up or not, and why</h3>\n<ul>\n");
            for n in &a.networks {
                let _ = writeln!(
                    self.html,
                    "<li>{}: {}</li>",
                    link(
                        &figure_anchor(&dynamics_figure(&a.metric, &n.network)),
                        &n.network
                    ),
                    esc(&n.verdict.join(" "))
                );
            }
            self.html.push_str("</ul>\n");
        }
        for m in &a.other_metrics {
            let _ = writeln!(
                self.html,
                "<p>Under {}: bottom-up by convergence step in {} of {} network(s) ({}).</p>",
                esc(&m.metric),
                m.bottom_up_networks,
                m.networks,
                link(
                    &dynamics_section(&m.metric),
                    &format!("curves under {}", m.metric)
                )
            );
        }
        if !a.networks.is_empty() {
            self.html
                .push_str("<h3 id=\"summary-convergence\">Convergence step per layer</h3>\n");
            self.p(&format!(
                "The first checkpoint from which a layer's {} similarity to its final checkpoint \
                 stays >= {} (—: not before the final checkpoint; blank: the network has no such \
                 layer).",
                a.metric, a.threshold
            ));
            let mut layers: Vec<&str> = Vec::new();
            for n in &a.networks {
                for l in &n.convergence {
                    if !layers.contains(&l.layer.as_str()) {
                        layers.push(l.layer.as_str());
                    }
                }
            }
            let mut head = vec!["network".to_string()];
            head.extend(layers.iter().map(|l| l.to_string()));
            head.push("bottom-up".into());
            let rows: Vec<Vec<String>> = a
                .networks
                .iter()
                .map(|n| {
                    let mut row = vec![link(
                        &figure_anchor(&dynamics_figure(&a.metric, &n.network)),
                        &n.network,
                    )];
                    row.extend(layers.iter().map(|layer| {
                        n.convergence
                            .iter()
                            .find(|l| l.layer == *layer)
                            .map_or(String::new(), |l| {
                                l.step.map_or("—".into(), |s| s.to_string())
                            })
                    }));
                    row.push(if n.bottom_up { "yes" } else { "no" }.into());
                    row
                })
                .collect();
            self.table_html(&head, &rows);
        }
        if !a.cross_seed.is_empty() {
            self.html
                .push_str("<h3 id=\"summary-seeds\">Agreement across seeds</h3>\n");
            self.p(&format!(
                "Mean {} over the seed pairs of each layer at the last step compared across \
                 seeds, against the largest Gaussian null of those pairs (unrelated data of the \
                 same shapes): a layer at or below its null is not shared by the seeds.",
                a.metric
            ));
            let rows: Vec<Vec<String>> = a
                .cross_seed
                .iter()
                .map(|s| {
                    vec![
                        link(&figure_anchor(&format!("seeds_{}", s.network)), &s.network),
                        s.step.map_or("—".into(), |v| v.to_string()),
                        esc(&s.layer),
                        s.pairs.to_string(),
                        format!("{} ± {}", num(s.mean), num(s.std)),
                        s.null.map_or(
                            if nulls_computed {
                                "—"
                            } else {
                                "not computed"
                            }
                            .into(),
                            num,
                        ),
                        match s.above_null() {
                            Some(true) => "above".into(),
                            Some(false) => "at or below".into(),
                            None => "—".into(),
                        },
                    ]
                })
                .collect();
            let head = [
                "run",
                "step",
                "layer",
                "seed pairs",
                "mean ± std",
                "gaussian null",
                "against null",
            ]
            .map(String::from);
            self.table_html(&head, &rows);
        }
        if let Some(since) = since {
            let _ = writeln!(
                self.html,
                "<p>{} {}</p>",
                esc(&since.headline(&a.metric)),
                link("since", "What changed")
            );
        }
        if !a.skipped.is_empty() {
            let total: usize = a.skipped.iter().map(|s| s.pairs).sum();
            let _ = writeln!(
                self.html,
                "<p class=\"note\">{} planned pair(s) were not compared: {}</p>",
                total,
                link("skipped", "which, and why")
            );
        }
        let _ = writeln!(
            self.html,
            "<p>Definitions of every number are in {} and the sweep's settings in {}, at the end.</p>",
            link("definitions", "What the numbers mean"),
            link("run", "The sweep")
        );
        self.lead_end = self.html.len();
    }

    fn since_last_run(&mut self, since: &SinceLastRun, metric: &str) {
        self.section("since", "Since the last run");
        self.p(&since.headline(metric));
        if !since.new_checkpoints.is_empty() {
            let shown = since
                .new_checkpoints
                .iter()
                .take(24)
                .cloned()
                .collect::<Vec<_>>();
            let more = since.new_checkpoints.len() - shown.len();
            self.p(&format!(
                "New checkpoints: {}{}.",
                shown.join(", "),
                if more > 0 {
                    format!(" … and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        if since.moved.is_empty() {
            return;
        }
        self.p(&format!(
            "Each layer's {metric} similarity between the last run's final checkpoint and this \
             run's, most moved first (1: unchanged since)."
        ));
        let rows: Vec<Vec<String>> = since
            .moved
            .iter()
            .take(MAX_MOVED_LISTED)
            .map(|m| {
                vec![
                    m.network.clone(),
                    m.layer.clone(),
                    m.previous_final.to_string(),
                    m.final_step.to_string(),
                    num(m.similarity),
                ]
            })
            .collect();
        let head = [
            "network".to_string(),
            "layer".into(),
            "last run's final step".into(),
            "final step".into(),
            format!("{metric} between them"),
        ];
        self.table(&head, &rows);
    }

    fn skipped(&mut self, skipped: &[SkippedPairs]) {
        if skipped.is_empty() {
            return;
        }
        self.section("skipped", "Pairs the sweep skipped");
        let lines = svcca_results::skipped_lines(skipped);
        for line in lines.iter().filter(|l| !l.starts_with(' ')) {
            self.p(line);
        }
        let rows: Vec<Vec<String>> = skipped
            .iter()
            .map(|s| {
                vec![
                    s.a.clone(),
                    s.b.clone(),
                    s.pairs.to_string(),
                    s.reason.explain().to_string(),
                ]
            })
            .collect();
        self.table(
            &["layer".into(), "with".into(), "pairs".into(), "why".into()],
            &rows,
        );
    }

    fn header(&mut self, results: &ResultsFile, metric: &str, options: &ReportOptions) {
        let mut rows = vec![
            vec!["comparison".into(), results.comparison.clone()],
            vec!["settings".into(), results.settings.clone()],
            vec!["metrics stored".into(), results.metrics().join(", ")],
            vec!["metric analysed".into(), metric.to_string()],
            vec![
                "representations".into(),
                results.representations.len().to_string(),
            ],
            vec!["pairs".into(), results.pairs.len().to_string()],
        ];
        if let Some(src) = &options.source {
            rows.insert(0, vec!["results".into(), src.clone()]);
        }
        for (k, v) in &results.versions {
            rows.push(vec![format!("version of {k}"), v.clone()]);
        }
        self.section("run", "The sweep");
        self.table(&["".into(), "".into()], &rows);
        let _ = writeln!(
            self.html,
            "<details><summary>job spec</summary><pre>{}</pre></details>",
            esc(&results.job_spec)
        );
    }

    fn definitions(&mut self, metric: &str, threshold: f64) {
        self.section("definitions", "What the numbers mean");
        let defs: Vec<(&str, String)> = vec![
            ("svcca", "mean of the canonical correlations between the top singular directions of each side (kept by the sweep's keep rule; the paper keeps 99% of the variance); 1 = the same subspace up to an invertible linear map.".into()),
            ("cca", "mean of the canonical correlations over every non-constant direction; with many directions and few datapoints it is high even for unrelated data (see the null baseline).".into()),
            ("pwcca", "canonical correlations weighted by how much of the representation each accounts for (Morcos et al. 2018).".into()),
            ("cka", "linear centred kernel alignment ‖Σxy‖²_F / (‖Σxx‖_F ‖Σyy‖_F) (Kornblith et al. 2019).".into()),
            ("mean vs google_mean", "reports use mean (all coefficients); google/svcca's tutorials quote a truncated mean of the leading coefficients holding 98% of their sum, stored as google_mean in results.json.".into()),
            ("learning dynamics", format!("{metric} similarity of each layer at every checkpoint to the same layer at the final checkpoint (1 at the final checkpoint by definition); the x axis is log(1 + step).")),
            ("convergence step", format!("the first checkpoint (before the final one) from which the similarity to the final checkpoint stays ≥ {threshold} at every later checkpoint; '—' when none does.")),
            ("bottom-up", "the paper's finding, judged two ways. By convergence step: convergence steps never decrease from the input to the output (layers converging at the same checkpoint tie: in order, but not ordered). Checkpoint-wise: at each checkpoint before the final one, whether similarity to the final checkpoint is non-increasing with depth over every layer but the deepest (the output, trained directly by the loss; all layers when there are fewer than three), and how many (lower, deeper) layer pairs are in that order.".into()),
            ("suggested freeze step", format!("the latest convergence step among a layer and every layer below it (the paper's Freeze Training freezes layers from the bottom). A suggestion for the next run of the same recipe, measured in hindsight at the stored checkpoints with threshold {threshold}: the true step lies between the previous checkpoint and the one named.")),
            ("cross-seed spread", "over all pairs of seeds of the same run, step and layer: mean, sample std (n − 1), min and max. Seed pairs share networks, so this describes the sweep, not a confidence interval.".into()),
            ("best match", "for each row layer, the column layer with the highest similarity at equal kept dimensions k = min(kₐ, k_b): the layer that kept more directions is cut to its top k before comparing (the pairs' equal_k_mean). Over all kept directions a layer keeping few directions scores high against any layer keeping many, because the few fit inside the many, so every layer would match the widest one (often the logits). Outlined in red; a layer is never its own match. Where a compared pair has no equal-k value (pwcca, cka, conv layers, google-compat mode) the metric over all kept directions ranks, and the section says so.".into()),
            ("null baseline", "what the same shapes give with no relation: gaussian = independent standard Gaussian data with the pair's datapoints and kept dimensions (seeded); permuted = the real pair with one side's datapoints shuffled (seeded). Unrelated data is far from 0 when there are few datapoints per dimension (≈0.2 mean CCA at common shapes): read a score against its null. Conv layers: the null is computed as the pair's result is — for the DFT method one CCA per spatial frequency at that frequency's kept dims (complex Gaussian data where the frequency's values are complex), their coefficients pooled like the result's; for fold one CCA over images × positions; for pool one over the images.".into()),
            ("dimensionality", "both(k): the mean canonical correlation with the top k singular directions kept on both sides (the paper's SVCCA with k directions; not monotone: weakly shared directions lower a mean); best both(k): its highest value and the k reaching it; k for 99% of best: the fewest directions on both sides reaching 99% of that highest value; shared directions: Σρ over all kept directions (SVCCA × the smaller kept count), how many directions the two sides share in effect; carried(k): share of the pair's SVCCA similarity carried by the layer's top k directions (never decreases, reaches the SVCCA value at the kept k); k carrying 99%: the smallest k carrying 99% of it, close to the kept count whenever every direction is shared, so it says little on its own.".into()),
            ("class sensitivity", "for each class, SVCCA between the layer and the single column of that class's logit (or class indicator) over the probe set, i.e. the multiple correlation of that column with the layer's top directions, at every checkpoint.".into()),
        ];
        self.html.push_str("<dl>\n");
        for (term, def) in defs {
            let _ = writeln!(self.html, "<dt>{}</dt><dd>{}</dd>", esc(term), esc(&def));
        }
        self.html.push_str("</dl>\n");
    }

    fn nulls(&mut self, nulls: &[NullBaseline], metric: &str, conv_nulls: bool) {
        self.section("null", "Null baselines");
        if nulls.is_empty() {
            if !conv_nulls {
                self.p("No null baseline was computed for this report.");
            }
            return;
        }
        self.p(&format!(
            "Scores of {metric} (or the metric named) on data with no relation, at the shapes of the stored pairs. A score near its null says nothing about the networks."
        ));
        let rows: Vec<Vec<String>> = nulls
            .iter()
            .map(|z| {
                vec![
                    z.kind.clone(),
                    z.metric.clone(),
                    z.of.clone(),
                    z.datapoints.to_string(),
                    format!("{} / {}", z.dims_a, z.dims_b),
                    format!("{} (seed {})", z.draws, z.seed),
                    num(z.mean),
                    num(z.std),
                    format!("{} – {}", num(z.min), num(z.max)),
                ]
            })
            .collect();
        let head = [
            "kind",
            "metric",
            "for",
            "datapoints",
            "dims",
            "draws",
            "mean",
            "std",
            "range",
        ]
        .map(String::from);
        self.table(&head, &rows);
    }

    fn conv_nulls(&mut self, listed: &[ConvPairNull], groups: &[ConvNullGroup], metric: &str) {
        if groups.is_empty() {
            return;
        }
        self.p(&format!(
            "Conv layers: each pair has its own null, computed as its result is. The DFT method \
             runs one CCA per spatial frequency over the images, each with the directions kept \
             at that frequency, and pools their coefficients; its null runs the same CCAs on \
             Gaussian data (complex where the frequency's values are complex) and pools them \
             alike. The pair's dims summed over the frequencies are never one CCA: set against \
             the images they would make any comparison look trivially 1. {} of {} conv pairs \
             score at or below their own null.",
            groups.iter().map(|g| g.at_or_below_null).sum::<usize>(),
            groups.iter().map(|g| g.pairs).sum::<usize>(),
        ));
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                vec![
                    format!("{}: {} vs {}", g.run, g.layer_a, g.layer_b),
                    g.method.clone(),
                    g.pairs.to_string(),
                    g.datapoints.to_string(),
                    g.frequencies.to_string(),
                    g.dims_text(),
                    format!("{} – {}", num(g.null_min), num(g.null_max)),
                    format!("{} – {}", num(g.score_min), num(g.score_max)),
                ]
            })
            .collect();
        let head = [
            "layers".to_string(),
            "method".into(),
            "pairs".into(),
            "datapoints per CCA".into(),
            "CCAs per pair (frequencies)".into(),
            "dims".into(),
            "gaussian null (pair means)".into(),
            format!("{metric} of the pairs"),
        ];
        self.table(&head, &rows);
        let rows: Vec<Vec<String>> = listed
            .iter()
            .filter_map(|c| {
                let z = c.null.conv.as_ref()?;
                Some(vec![
                    c.a.label(),
                    c.b.label(),
                    format!("{} ({} complex)", z.frequencies, z.complex_frequencies),
                    z.dims_a.text(),
                    z.dims_b.text(),
                    format!("{} ± {}", num(c.null.mean), num(c.null.std)),
                    num(c.score),
                ])
            })
            .collect();
        let head = [
            "a".to_string(),
            "b".into(),
            "frequencies".into(),
            "dims of a per frequency".into(),
            "dims of b per frequency".into(),
            format!(
                "gaussian null ({} draws, seed {})",
                listed.first().map_or(0, |c| c.null.draws),
                listed.first().map_or(0, |c| c.null.seed)
            ),
            metric.to_string(),
        ];
        self.table(&head, &rows);
    }

    fn dynamics(
        &mut self,
        d: &LearningDynamics,
        nulls: &GaussianNulls,
        results: &ResultsFile,
    ) -> Result<(), ReportError> {
        self.section(
            &dynamics_section(&d.metric),
            &format!("Learning dynamics ({})", d.metric),
        );
        if d.networks.is_empty() {
            self.p("No pair compares a checkpoint with the final checkpoint of the same layer (a vs-final sweep gives them).");
            return Ok(());
        }
        for net in &d.networks {
            let name = network_name(&net.run, net.seed, &net.tags);
            let mut steps: Vec<i64> = net
                .layers
                .iter()
                .flat_map(|l| l.points.iter().map(|p| p.step))
                .collect();
            steps.sort_unstable();
            steps.dedup();
            let bands: Vec<Band> = nulls
                .band_over(results, &d.metric, |p| {
                    p.a.run == net.run
                        && p.a.seed == net.seed
                        && p.b.seed == net.seed
                        && p.a.tags == net.tags
                        && p.b.tags == net.tags
                        && p.a.layer == p.b.layer
                })
                .into_iter()
                .collect();
            let references = vec![Reference {
                y: d.threshold,
                label: format!("threshold {}", d.threshold),
            }];
            // Fitted to the curves and the threshold they are judged by; the null band joins
            // the range when it lies near them, and is named in the legend otherwise.
            let y_range = fit_y_range(
                net.layers
                    .iter()
                    .flat_map(|l| l.points.iter().map(|p| p.similarity))
                    .chain([d.threshold]),
                &bands,
                (0.0, 1.0),
                0.05,
            );
            let chart = LineChart {
                title: format!("{name}: {} similarity to the final checkpoint", d.metric),
                x_desc: "training step (log scale)".into(),
                y_desc: format!("{} to final checkpoint", d.metric),
                series: net
                    .layers
                    .iter()
                    .map(|l| Series {
                        name: l.layer.clone(),
                        points: l
                            .points
                            .iter()
                            .map(|p| (p.step as f64, p.similarity))
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                x: XScale::Log1pSteps {
                    ticks: steps.clone(),
                },
                y_range,
                references,
                bands,
            };
            let caption = format!(
                "{name}: one line per layer; convergence order {}.",
                net.convergence_order.join(" → ")
            );
            self.figure(&chart, &dynamics_figure(&d.metric, &name), &caption)?;
            for sentence in net.bottom_up_verdict(true) {
                self.p(&sentence);
            }
            let mut head = vec!["layer".to_string()];
            head.extend(steps.iter().map(|s| format!("step {s}")));
            head.extend(["converged at".to_string(), "suggested freeze".to_string()]);
            let rows: Vec<Vec<String>> = net
                .layers
                .iter()
                .map(|l| {
                    let mut row = vec![l.layer.clone()];
                    row.extend(
                        steps
                            .iter()
                            .map(|s| l.similarity_at(*s).map_or("—".into(), num)),
                    );
                    row.push(l.convergence_step.map_or("—".into(), |s| s.to_string()));
                    row.push(
                        l.suggested_freeze_step
                            .map_or("—".into(), |s| s.to_string()),
                    );
                    row
                })
                .collect();
            self.table(&head, &rows);
            self.html.push_str("<ul class=\"freeze\">\n");
            for l in &net.layers {
                let _ = writeln!(
                    self.html,
                    "<li>{}</li>",
                    esc(&l.freeze_suggestion(&d.metric, d.threshold))
                );
            }
            self.html.push_str("</ul>\n");
        }
        Ok(())
    }

    fn cross_seed(
        &mut self,
        seeds: &[SeedSpread],
        metric: &str,
        nulls: &GaussianNulls,
        results: &ResultsFile,
    ) -> Result<(), ReportError> {
        self.section("seeds", "Across seeds");
        if seeds.is_empty() {
            self.p("No pair compares the same layer of two seeds at the same step.");
            return Ok(());
        }
        // One chart per run: one line per step, x = layers from input to output.
        let run_order = runs(results);
        // Runs that differ only by a tag are drawn apart.
        type RunKey<'a> = (usize, &'a BTreeMap<String, String>);
        let mut by_run: BTreeMap<RunKey<'_>, BTreeMap<Option<i64>, Vec<&SeedSpread>>> =
            BTreeMap::new();
        for s in seeds {
            let r = run_order
                .iter()
                .position(|x| *x == s.run)
                .unwrap_or(usize::MAX);
            by_run
                .entry((r, &s.tags))
                .or_default()
                .entry(s.step)
                .or_default()
                .push(s);
        }
        for (&(_, tags), lines) in &by_run {
            let Some(run) = lines
                .values()
                .next()
                .and_then(|v| v.first())
                .map(|s| s.run.clone())
            else {
                continue;
            };
            let present: Vec<String> = layer_order(results, &run)
                .into_iter()
                .filter(|l| {
                    seeds
                        .iter()
                        .any(|s| s.run == run && &s.tags == tags && &s.layer == l)
                })
                .collect();
            let pos = |l: &str| present.iter().position(|x| x == l).unwrap_or(0) as f64;
            let bands: Vec<Band> = nulls
                .band_over(results, metric, |p| {
                    p.a.run == run
                        && p.b.run == run
                        && &p.a.tags == tags
                        && &p.b.tags == tags
                        && p.a.layer == p.b.layer
                        && p.a.seed != p.b.seed
                })
                .into_iter()
                .collect();
            let y_range = fit_y_range(
                lines.values().flat_map(|v| v.iter().map(|s| s.mean)),
                &bands,
                (0.0, 1.0),
                0.05,
            );
            let name = network_name(&run, None, tags);
            let chart = LineChart {
                title: format!("{name}: {metric} between seeds, per layer"),
                x_desc: "layer".into(),
                y_desc: format!("mean {metric} over seed pairs"),
                series: lines
                    .iter()
                    .map(|(step, v)| Series {
                        name: step.map_or("no step".into(), |s| format!("step {s}")),
                        points: v.iter().map(|s| (pos(&s.layer), s.mean)).collect(),
                        ..Default::default()
                    })
                    .collect(),
                x: XScale::Categories(present.clone()),
                y_range,
                references: Vec::new(),
                bands,
            };
            self.figure(
                &chart,
                &format!("seeds_{name}"),
                &format!("{name}: mean over seed pairs per layer; the spread is in the table."),
            )?;
        }
        let rows: Vec<Vec<String>> = seeds
            .iter()
            .map(|s| {
                vec![
                    network_name(&s.run, None, &s.tags),
                    s.step.map_or("—".into(), |v| v.to_string()),
                    s.layer.clone(),
                    s.pairs.to_string(),
                    num(s.mean),
                    num(s.std),
                    num(s.min),
                    num(s.max),
                ]
            })
            .collect();
        let head = [
            "run",
            "step",
            "layer",
            "seed pairs",
            "mean",
            "std",
            "min",
            "max",
        ]
        .map(String::from);
        self.table(&head, &rows);
        Ok(())
    }

    fn layer_matrices(&mut self, mats: &[LayerMatrix]) -> Result<(), ReportError> {
        self.section("layers", "Layer × layer");
        if mats.is_empty() {
            self.p("No pair of networks has comparisons between different layers (an all-pairs sweep gives them).");
            return Ok(());
        }
        for m in mats {
            let metric = &m.matrix.metric;
            let equal_k = m.ranked_by == RankedBy::EqualK;
            let outlined = m
                .best_match
                .iter()
                .enumerate()
                .filter_map(|(r, b)| b.as_ref().map(|b| (r, b.col)))
                .collect();
            // The figure shows what the outline ranks by, so the outlined cell is its row's top.
            let shown = if equal_k { &m.equal_k } else { &m.matrix };
            let note = if equal_k {
                "red outline: best match of each row at equal kept dims k = min(k_a, k_b); grey: not compared"
            } else {
                "red outline: best match of each row over all kept dims; grey: not compared"
            };
            let heat = Heatmap {
                title: shown.title.clone(),
                note: Some(note.into()),
                row_labels: &shown.row_labels,
                col_labels: &shown.col_labels,
                values: &shown.values,
                x_desc: format!("layers of {}", m.b.label()),
                y_desc: format!("layers of {}", m.a.label()),
                colorbar_label: metric.clone(),
                range: (0.0, 1.0),
                outlined,
            };
            self.figure(
                &heat,
                &format!("layers_{}_vs_{}", m.a.label(), m.b.label()),
                &shown.title,
            )?;
            if equal_k {
                self.p(&format!(
                    "Best matches at equal kept dimensions: each pair compared with both layers kept at k = min(kₐ, k_b) directions, so a layer that keeps many directions does not win by holding the other's few. {metric} over all kept directions is listed alongside."
                ));
            } else {
                self.note(&format!(
                    "Best matches rank by {metric} over all kept directions: some of these pairs have no value at equal kept dimensions ({metric} on conv layers, pwcca, cka and google-compat mode have none). Layers that keep many directions tend to win."
                ));
            }
            let col = |c: usize| m.matrix.col_labels[c].clone();
            let rows: Vec<Vec<String>> = m
                .best_match
                .iter()
                .enumerate()
                .map(|(r, b)| {
                    let mut row = vec![m.matrix.row_labels[r].clone()];
                    match b {
                        Some(b) => {
                            row.push(col(b.col));
                            row.push(b.equal_k_mean.map_or("—".into(), num));
                            row.push(num(b.mean));
                            row.push(b.dims.map_or("—".into(), |[ka, kb]| {
                                format!("{ka}, {kb} (k = {})", ka.min(kb))
                            }));
                            if m.cka.is_some() {
                                row.push(b.cka.map_or("—".into(), num));
                            }
                        }
                        None => {
                            let cells = if m.cka.is_some() { 5 } else { 4 };
                            row.extend(std::iter::repeat_n("—".to_string(), cells));
                        }
                    }
                    row.push(m.best_by_mean[r].map_or("—".into(), col));
                    row
                })
                .collect();
            let mut head = vec![
                format!("layer of {}", m.a.label()),
                if equal_k {
                    format!("best match in {} (equal k)", m.b.label())
                } else {
                    format!("best match in {} (all kept dims)", m.b.label())
                },
                format!("{metric} at equal k"),
                format!("{metric} over all kept dims"),
                "dims kept (kₐ, k_b)".into(),
            ];
            if m.cka.is_some() {
                head.push("cka".into());
            }
            head.push(format!("best by {metric} over all kept dims"));
            self.table(&head, &rows);
            let misses = m.same_layer_misses();
            if !misses.is_empty() {
                let listed: Vec<String> = misses
                    .iter()
                    .map(|x| {
                        format!(
                            "{} → {} at k = {} ({}) above {} at k = {} ({})",
                            x.layer,
                            x.best,
                            x.best_k,
                            num(x.best_value),
                            x.layer,
                            x.same_k,
                            num(x.same_value)
                        )
                    })
                    .collect();
                let smaller_k = misses.iter().any(|x| x.best_k < x.same_k);
                let why = if smaller_k {
                    " Each pair is compared at its own k = min(kₐ, k_b), and a mean over fewer canonical correlations runs higher (the leading ones are the strongest): a match at a smaller k than the same layer's says the two layers share their top k directions, not that they are more alike than the same layer throughout. CKA, which keeps no directions, is listed alongside."
                } else {
                    ""
                };
                self.note(&format!("Not the same layer: {}.{why}", listed.join("; ")));
            }
        }
        Ok(())
    }

    fn full_matrix(
        &mut self,
        m: &Matrix,
        max: usize,
        notes: &mut Vec<String>,
    ) -> Result<(), ReportError> {
        let id = format!("matrix-{}", slug(&m.metric));
        self.section(&id, &format!("All representations: {}", m.metric));
        if m.rows() > max {
            self.p(&format!(
                "{} representations: too many to draw here; the matrix is in matrix_{}.csv next to results.json.",
                m.rows(),
                m.metric
            ));
            notes.push(format!(
                "{} matrix not drawn ({} representations > {max})",
                m.metric,
                m.rows()
            ));
            return Ok(());
        }
        if m.fill() < 0.2 {
            self.p(&format!(
                "Only {:.0}% of this matrix was compared (the sweep's plan did not compare every pair), so it is not drawn; the sections above hold its numbers.",
                m.fill() * 100.0
            ));
            return Ok(());
        }
        let heat = Heatmap {
            title: m.title.clone(),
            note: Some("grey: not compared; rows and columns in the sweep's order".into()),
            row_labels: &m.row_labels,
            col_labels: &m.col_labels,
            values: &m.values,
            x_desc: "representation".into(),
            y_desc: "representation".into(),
            colorbar_label: m.metric.clone(),
            range: (0.0, 1.0),
            outlined: Vec::new(),
        };
        self.figure(&heat, &format!("matrix_{}", m.metric), &m.title)?;
        Ok(())
    }

    fn frequency_maps(&mut self, maps: &[FrequencyMap]) -> Result<(), ReportError> {
        if maps.is_empty() {
            return Ok(());
        }
        self.section(
            "frequencies",
            "Per-frequency maps (conv layers, DFT method)",
        );
        self.p("Each cell is the mean canonical correlation at one spatial frequency (row: vertical index, column: horizontal index; (0, 0) is the constant component). Frequencies that a real input's conjugate symmetry makes redundant are filled from their mirror image.");
        let mut rows = Vec::new();
        for m in maps {
            let rl: Vec<String> = (0..m.h).map(|i| i.to_string()).collect();
            let cl: Vec<String> = (0..m.w).map(|j| j.to_string()).collect();
            let title = format!("{}: {} × {}", m.metric, m.a, m.b);
            let heat = Heatmap {
                title: title.clone(),
                note: Some(format!(
                    "{} × {} frequencies; {} filled by conjugate symmetry",
                    m.h, m.w, m.mirrored
                )),
                row_labels: &rl,
                col_labels: &cl,
                values: &m.values,
                x_desc: "horizontal frequency index".into(),
                y_desc: "vertical frequency index".into(),
                colorbar_label: format!("{} per frequency", m.metric),
                range: (0.0, 1.0),
                outlined: Vec::new(),
            };
            self.figure(&heat, &format!("freq_{}_vs_{}", m.a, m.b), &title)?;
            let vals: Vec<f64> = m.values.iter().flatten().copied().collect();
            let mean = vals.iter().sum::<f64>() / vals.len().max(1) as f64;
            let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            rows.push(vec![
                m.a.clone(),
                m.b.clone(),
                format!("{} × {}", m.h, m.w),
                num(mean),
                num(lo),
                num(hi),
            ]);
        }
        let head = [
            "a",
            "b",
            "frequencies",
            "mean over frequencies",
            "min",
            "max",
        ]
        .map(String::from);
        self.table(&head, &rows);
        Ok(())
    }

    fn spectra(&mut self, results: &ResultsFile) -> Result<(), ReportError> {
        let with_spectrum: Vec<_> = results
            .representations
            .iter()
            .filter(|r| r.spectrum.iter().any(|v| *v > 0.0))
            .collect();
        if with_spectrum.is_empty() {
            return Ok(());
        }
        self.section("spectra", "Variance spectra and kept directions");
        // One chart per run, at its last step and lowest seed: one line per layer.
        for run in runs(results) {
            let of_run: Vec<_> = with_spectrum.iter().filter(|r| r.key.run == run).collect();
            let last = of_run.iter().filter_map(|r| r.key.step).max();
            let seed = of_run
                .iter()
                .filter(|r| r.key.step == last)
                .filter_map(|r| r.key.seed)
                .min();
            // One network: representations that differ only by a tag are not drawn together.
            let tags = of_run
                .iter()
                .find(|r| r.key.step == last && r.key.seed == seed)
                .map(|r| r.key.tags.clone());
            let chosen: Vec<_> = of_run
                .iter()
                .filter(|r| r.key.step == last && r.key.seed == seed)
                .filter(|r| Some(&r.key.tags) == tags.as_ref())
                .collect();
            let Some(first) = chosen.first() else {
                continue;
            };
            let max_k = chosen.iter().map(|r| r.spectrum.len()).max().unwrap_or(1);
            let series = chosen
                .iter()
                .map(|r| {
                    let total: f64 = r.spectrum.iter().map(|v| v.max(0.0)).sum();
                    let mut acc = 0.0;
                    let points = r
                        .spectrum
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            acc += v.max(0.0);
                            ((i + 1) as f64, acc / total)
                        })
                        .collect();
                    Series {
                        name: format!("{} (kept {})", r.key.layer, r.kept_dims),
                        points,
                        ..Default::default()
                    }
                })
                .collect();
            let net = crate::layers::NetworkId::of(&first.key).label();
            let chart = LineChart {
                title: format!("{net}: variance explained by the top k directions"),
                x_desc: "k (singular directions, by variance)".into(),
                y_desc: "fraction of variance".into(),
                series,
                x: XScale::Linear {
                    min: 0.0,
                    max: max_k as f64,
                },
                y_range: (0.0, 1.02),
                references: vec![Reference {
                    y: 0.99,
                    label: "99% of the variance".into(),
                }],
                bands: Vec::new(),
            };
            let caption = format!(
                "{net}: cumulative variance per layer; the legend gives the directions the sweep kept."
            );
            self.figure(&chart, &format!("spectrum_{net}"), &caption)?;
        }
        let rows: Vec<Vec<String>> = results
            .representations
            .iter()
            .take(500)
            .map(|r| {
                vec![
                    r.key.label(),
                    format!("{:?}", r.shape),
                    r.datapoints.to_string(),
                    if r.shape.len() == 3 {
                        // Not whitened as a whole: the directions are kept per frequency and pair.
                        "per frequency (conv)".to_string()
                    } else {
                        r.kept_dims.to_string()
                    },
                    r.dropped_neurons.len().to_string(),
                ]
            })
            .collect();
        let head = [
            "representation",
            "shape",
            "datapoints",
            "kept directions",
            "dropped neurons",
        ]
        .map(String::from);
        self.table(&head, &rows);
        Ok(())
    }

    fn dimensionality(
        &mut self,
        curves: &[DimensionalityCurve],
        results: &ResultsFile,
    ) -> Result<(), ReportError> {
        self.section("dimensionality", "Intrinsic dimensionality");
        if let Some(layers) = conv_layers(results) {
            self.note(&format!(
                "Not computed for the conv layers ({layers}): the curve counts a layer's top \
                 singular directions k, and a conv layer compared per frequency has no single \
                 ordered set of them (each frequency keeps its own, of different variance and \
                 number), so neither carried(k) nor both(k) is defined; its dims per frequency \
                 are in the null baselines above."
            ));
        }
        if curves.is_empty() {
            self.p("Not computed for this report: it needs the activations (svcca_report::compute::dimensionality, stored in analyses.json).");
            return Ok(());
        }
        let max_k = curves.iter().map(|c| c.kept).max().unwrap_or(1);
        // One colour per pair; carried(k) solid, both(k) dashed.
        let series: Vec<Series> = curves
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                [
                    Series {
                        name: format!("{} vs {}: carried(k)", c.a, c.b),
                        points: c.points.iter().map(|p| (p.k as f64, p.carried)).collect(),
                        style: SeriesStyle {
                            colour: Some(i),
                            dash: Dash::Solid,
                        },
                    },
                    Series {
                        name: format!("{} vs {}: both(k)", c.a, c.b),
                        points: c.points.iter().map(|p| (p.k as f64, p.both)).collect(),
                        style: SeriesStyle {
                            colour: Some(i),
                            dash: Dash::Dashed,
                        },
                    },
                ]
            })
            .collect();
        let y_range = fit_y_range(
            series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
            &[],
            (0.0, 1.0),
            0.05,
        );
        let chart = LineChart {
            title: "Similarity against the number of kept directions".into(),
            x_desc: "k (top singular directions of the layer)".into(),
            y_desc: "similarity".into(),
            series,
            x: XScale::Linear {
                min: 0.0,
                max: max_k as f64,
            },
            y_range,
            references: Vec::new(),
            bands: Vec::new(),
        };
        self.figure(&chart, "dimensionality", "One colour per pair: carried(k) solid (it ends at the pair's SVCCA value), both(k) dashed (the mean with k directions kept on both sides).")?;
        let rows: Vec<Vec<String>> = curves
            .iter()
            .map(|c| {
                vec![
                    c.a.clone(),
                    c.b.clone(),
                    c.keep.clone(),
                    c.neurons.to_string(),
                    format!("{} / {}", c.kept, c.kept_b),
                    num(c.full),
                    format!("{:.1}", c.shared),
                    format!("{} (k = {})", num(c.best_both), c.best_both_k),
                    c.k99_both.to_string(),
                    c.k99_carried.to_string(),
                ]
            })
            .collect();
        let head = [
            "layer",
            "against",
            "keep rule",
            "neurons",
            "kept (layer / against)",
            "SVCCA",
            "shared directions (Σρ)",
            "best both(k)",
            "k for 99% of best",
            "k carrying 99%",
        ]
        .map(String::from);
        self.table(&head, &rows);
        Ok(())
    }

    fn class_sensitivity(
        &mut self,
        all: &[ClassSensitivity],
        results: &ResultsFile,
        options: &ReportOptions,
    ) -> Result<(), ReportError> {
        self.section("classes", "Class sensitivity");
        if let Some(layers) = conv_layers(results) {
            self.note(&format!(
                "Not computed for the conv layers ({layers}): a class's logit is one number per \
                 image with no spatial frequencies, so only the zero frequency (the spatial \
                 mean) could be set against it, which is not what the conv layers were compared \
                 by."
            ));
        }
        if all.is_empty() {
            self.p("Not computed for this report: it needs the activations, logits and labels (svcca_report::compute::class_sensitivity, stored in analyses.json).");
            return Ok(());
        }
        // First the mean over classes of every layer, then each layer's classes.
        let mut all_steps: Vec<i64> = all.iter().flat_map(|cs| cs.steps()).collect();
        all_steps.sort_unstable();
        all_steps.dedup();
        let mut head = vec!["layer".to_string(), "compared with".to_string()];
        head.extend(all_steps.iter().map(|s| format!("step {s}")));
        let rows: Vec<Vec<String>> = all
            .iter()
            .map(|cs| {
                let mut row = vec![cs.layer.clone(), cs.target.clone()];
                row.extend(
                    all_steps
                        .iter()
                        .map(|s| cs.mean_at(*s).map_or("—".into(), num)),
                );
                row
            })
            .collect();
        self.p("Mean over the classes of each layer's similarity with the class's column:");
        self.table(&head, &rows);
        for cs in all {
            let steps = cs.steps();
            let series: Vec<Series> = cs
                .classes
                .iter()
                .map(|c| Series {
                    name: format!("class {}", c.class),
                    points: c
                        .points
                        .iter()
                        .map(|p| (p.step as f64, p.similarity))
                        .collect(),
                    ..Default::default()
                })
                .collect();
            let bands: Vec<Band> = if options.gaussian_null {
                class_null_band(cs, results, options).into_iter().collect()
            } else {
                Vec::new()
            };
            // The classes differ by hundredths: a 0–1 axis would draw them as one flat line.
            let y_range = fit_y_range(
                series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
                &bands,
                (0.0, 1.0),
                0.02,
            );
            let chart = LineChart {
                title: format!("{}: similarity with each class", cs.layer),
                x_desc: "training step (log scale)".into(),
                y_desc: "SVCCA with the class column".into(),
                series,
                x: XScale::Log1pSteps {
                    ticks: steps.clone(),
                },
                y_range,
                references: Vec::new(),
                bands,
            };
            self.figure(
                &chart,
                &format!("classes_{}", cs.layer),
                &format!("{}: compared with {}.", cs.layer, cs.target),
            )?;
            let mut head = vec!["class".to_string(), "datapoints".to_string()];
            head.extend(steps.iter().map(|s| format!("step {s}")));
            let rows: Vec<Vec<String>> = cs
                .classes
                .iter()
                .map(|c| {
                    let mut row = vec![c.class.to_string(), c.count.to_string()];
                    row.extend(steps.iter().map(|s| {
                        c.points
                            .iter()
                            .find(|p| p.step == *s)
                            .map_or("—".into(), |p| num(p.similarity))
                    }));
                    row
                })
                .collect();
            self.table(&head, &rows);
        }
        Ok(())
    }

    fn warnings(&mut self, results: &ResultsFile) {
        let groups = crate::warnings::group_warnings(results);
        if groups.is_empty() {
            return;
        }
        self.section("warnings", "Warnings from the sweep");
        self.p(
            "One row per kind of warning (numbers and representation names taken out): how many \
             pairs carry it, for which metrics, every representation concerned (each once) and \
             one warning of the kind in full.",
        );
        self.html.push_str(
            "<table class=\"warnings\"><thead><tr><th>kind</th><th>pairs</th><th>metrics</th>\
             <th>representations</th><th>example</th></tr></thead><tbody>\n",
        );
        // Representations in the sweep's order (run, seed, step, layer), not alphabetical.
        let order: BTreeMap<String, usize> = results
            .representations
            .iter()
            .enumerate()
            .map(|(i, r)| (r.key.label(), i))
            .collect();
        for g in &groups {
            let mut reps: Vec<&String> = g.representations.iter().collect();
            reps.sort_by_key(|r| (order.get(*r).copied().unwrap_or(usize::MAX), *r));
            let text = reps
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            // A long list folds under its count, so that the table stays a table.
            let listed = if reps.len() <= WARNING_REPS_SHOWN {
                esc(&text)
            } else {
                format!(
                    "<details><summary>{} representations</summary>{}</details>",
                    reps.len(),
                    esc(&text)
                )
            };
            let _ = writeln!(
                self.html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{listed}</td><td>{}</td></tr>",
                esc(&g.kind),
                g.pairs,
                esc(&g.metrics.iter().cloned().collect::<Vec<_>>().join(", ")),
                esc(&g.example),
            );
        }
        self.html.push_str("</tbody></table>\n");
    }

    fn finish(&self) -> String {
        let mut out = String::new();
        out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\" />\n<title>svcca report</title>\n<style>\n");
        out.push_str(CSS);
        out.push_str("</style></head><body>\n<h1>svcca report</h1>\n");
        out.push_str(&self.html[..self.lead_end]);
        out.push_str("<nav><ul>");
        for (id, title) in &self.toc {
            let _ = write!(out, "<li><a href=\"#{id}\">{}</a></li>", esc(title));
        }
        out.push_str("</ul></nav>\n");
        out.push_str(&self.html[self.lead_end..]);
        out.push_str("</body></html>\n");
        out
    }
}

const CSS: &str = "body{font-family:'DejaVu Sans',sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}\n\
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}\n\
td:first-child,th:first-child{text-align:left}thead{background:#f3f3f3}figure{margin:1em 0}\n\
img{max-width:100%;height:auto}figcaption{color:#444;font-size:90%}dt{font-weight:bold;margin-top:0.4em}\n\
.note{color:#8a5a00}nav ul{columns:3;font-size:90%}\n\
table.warnings td{text-align:left;vertical-align:top}\n";

/// Splits a layer's key over its checkpoints (`run=mlp,seed=0,layer=h1,lr=0.1`) into its
/// network (`run=mlp,seed=0,lr=0.1`) and layer (`h1`). Analyses written before keys were
/// canonical used `mlp/seed0/h1`.
fn network_and_layer(key: &str) -> (String, String) {
    if let Some(k) = RepresentationKey::parse_id(key) {
        return (network_name(&k.run, k.seed, &k.tags), k.layer);
    }
    match key.rsplit_once('/') {
        Some((n, l)) => (n.to_string(), l.to_string()),
        None => (String::new(), key.to_string()),
    }
}

fn terminal_summary(results: &ResultsFile, data: &ReportData, out_dir: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "svcca report: {} representations, {} pairs, comparison {}, metric {} ({})",
        results.representations.len(),
        results.pairs.len(),
        results.comparison,
        data.metric,
        results.settings
    );
    // The answers first, as on the page.
    let _ = writeln!(s, "{}", data.answers.headline());
    for m in &data.answers.other_metrics {
        let _ = writeln!(
            s,
            "  under {}: bottom-up in {} of {} network(s)",
            m.metric, m.bottom_up_networks, m.networks
        );
    }
    if let Some(since) = &data.since_last_run {
        let _ = writeln!(s, "{}", since.headline(&data.metric));
    }
    for line in svcca_results::skipped_lines(&data.answers.skipped) {
        let _ = writeln!(s, "{line}");
    }
    if !data.dynamics.networks.is_empty() {
        let _ = writeln!(
            s,
            "learning dynamics ({}, threshold {}):",
            data.dynamics.metric, data.dynamics.threshold
        );
        for net in &data.dynamics.networks {
            let conv: Vec<String> = net
                .layers
                .iter()
                .map(|l| {
                    format!(
                        "{}@{}",
                        l.layer,
                        l.convergence_step.map_or("—".into(), |c| c.to_string())
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "  {}: converged {}",
                network_name(&net.run, net.seed, &net.tags),
                conv.join(" "),
            );
            for sentence in net.bottom_up_verdict(false) {
                let _ = writeln!(s, "    {sentence}");
            }
            let freeze: Vec<String> = net
                .layers
                .iter()
                .filter_map(|l| {
                    l.suggested_freeze_step
                        .map(|f| format!("{} from step {f}", l.layer))
                })
                .collect();
            if !freeze.is_empty() {
                let _ = writeln!(
                    s,
                    "    suggestion (freeze bottom-up): {}",
                    freeze.join(", ")
                );
            }
        }
    }
    if !data.answers.cross_seed.is_empty() {
        let _ = writeln!(
            s,
            "across seeds ({}, mean ± std over seed pairs, last step; gaussian null in brackets):",
            data.metric
        );
        let mut by_network: Vec<(&str, Option<i64>, Vec<String>)> = Vec::new();
        for x in &data.answers.cross_seed {
            let cell = format!(
                "{} {:.3}±{:.3}{}",
                x.layer,
                x.mean,
                x.std,
                x.null.map_or(String::new(), |z| format!(
                    " (null {z:.3}{})",
                    if x.mean > z { "" } else { ", not above it" }
                ))
            );
            match by_network.last_mut() {
                Some((n, step, cells)) if *n == x.network && *step == x.step => cells.push(cell),
                _ => by_network.push((&x.network, x.step, vec![cell])),
            }
        }
        for (network, step, cells) in by_network {
            let at = step.map_or(String::new(), |st| format!(" step {st}"));
            let _ = writeln!(s, "  {network}{at}: {}", cells.join(", "));
        }
    }
    if !data.null_baselines.is_empty() {
        let lo = data
            .null_baselines
            .iter()
            .map(|z| z.mean)
            .fold(f64::INFINITY, f64::min);
        let hi = data
            .null_baselines
            .iter()
            .map(|z| z.mean)
            .fold(f64::NEG_INFINITY, f64::max);
        let _ = writeln!(
            s,
            "null baselines (no relation, same shapes): {lo:.3} – {hi:.3}"
        );
    }
    for g in &data.conv_null_groups {
        let _ = writeln!(
            s,
            "null baselines of conv layers, {}: {} vs {} ({}, {} pairs, {} over {} datapoints; \
             {}): {:.3} – {:.3}, against {} {:.3} – {:.3}{}",
            g.run,
            g.layer_a,
            g.layer_b,
            g.method,
            g.pairs,
            if g.frequencies > 1 {
                "one CCA per frequency"
            } else {
                "one CCA"
            },
            g.datapoints,
            g.dims_text(),
            g.null_min,
            g.null_max,
            data.metric,
            g.score_min,
            g.score_max,
            if g.at_or_below_null > 0 {
                format!("; {} pair(s) at or below their null", g.at_or_below_null)
            } else {
                String::new()
            }
        );
    }
    for c in &data.dimensionality {
        let _ = writeln!(
            s,
            "dimensionality: {} vs {}: SVCCA {:.3} over {}/{} directions, {:.1} shared (Σρ); \
             with k on both sides it peaks at {:.3} (k = {}), 99% of that from k = {}",
            c.a, c.b, c.full, c.kept, c.kept_b, c.shared, c.best_both, c.best_both_k, c.k99_both
        );
    }
    // Class sensitivity: one line per network, each layer's mean over classes first → last step.
    let mut by_network: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for cs in &data.class_sensitivity {
        let (network, layer) = network_and_layer(&cs.layer);
        let steps = cs.steps();
        if let (Some(first), Some(last)) = (steps.first(), steps.last())
            && let (Some(a), Some(b)) = (cs.mean_at(*first), cs.mean_at(*last))
        {
            by_network
                .entry(network)
                .or_default()
                .push(format!("{layer} {a:.3}@{first} → {b:.3}@{last}"));
        }
    }
    for (network, cells) in by_network {
        let _ = writeln!(
            s,
            "class sensitivity {network} (mean over classes): {}",
            cells.join(", ")
        );
    }
    let _ = writeln!(s, "report: {}", out_dir.join("index.html").display());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{key, pair, results_with, vs_final};
    use svcca_results::FrequencyRecord;

    #[test]
    fn a_layer_key_splits_into_network_and_layer_with_tags_kept() {
        let split = |k: &str| {
            let (n, l) = network_and_layer(k);
            (n, l)
        };
        assert_eq!(
            split("run=mlp,seed=0,layer=h1,lr=0.1"),
            ("run=mlp,seed=0,lr=0.1".to_string(), "h1".to_string())
        );
        assert_eq!(
            split("run=mlp,layer=blocks/1"),
            ("run=mlp".to_string(), "blocks/1".to_string())
        );
        assert_eq!(
            split("mlp/seed0/h1"),
            ("mlp/seed0".to_string(), "h1".to_string())
        );
    }

    /// An all-pairs sweep of two conv networks, one pair compared per frequency.
    fn all_pairs() -> ResultsFile {
        let keys: Vec<_> = [0, 1]
            .into_iter()
            .flat_map(|seed| ["conv1", "conv2", "fc"].map(move |l| key("conv", seed, 1500, l)))
            .collect();
        let mut pairs = Vec::new();
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                let v = if a.layer == b.layer { 0.8 } else { 0.4 };
                pairs.push(pair(a.clone(), b.clone(), "cka", v));
                let mut p = pair(a.clone(), b.clone(), "svcca", v - 0.1);
                if a.layer == "conv1" && b.layer == "conv1" {
                    p.frequencies = Some(
                        (0..8usize)
                            .flat_map(|i| (0..8usize).map(move |j| (i, j)))
                            .map(|(i, j)| FrequencyRecord {
                                i,
                                j,
                                coefficients: vec![],
                                mean: 1.0 / (1.0 + (i + j) as f64),
                                dims_a: None,
                                dims_b: None,
                            })
                            .collect(),
                    );
                }
                pairs.push(p);
            }
        }
        let mut results = results_with(&["conv1", "conv2", "fc"], pairs);
        results.comparison = "all-pairs".into();
        results
    }

    #[test]
    fn all_pairs_report_draws_matrices_and_frequency_maps() {
        let tmp = tempfile::tempdir().unwrap();
        // SVCCA_REPORT_OUT=DIR keeps the pictures for a look.
        let dir = std::env::var_os("SVCCA_REPORT_OUT").map_or(tmp.path().to_path_buf(), |d| {
            PathBuf::from(d).join("all_pairs")
        });
        let results = all_pairs();
        let summary = write_report(&results, &dir, &ReportOptions::default()).unwrap();
        let has = |part: &str| {
            summary
                .files
                .iter()
                .any(|f| f.contains(part) && f.ends_with(".png"))
        };
        assert!(
            has("matrix_svcca") && has("matrix_cka"),
            "{:?}",
            summary.files
        );
        assert!(has("freq_"), "{:?}", summary.files);
        assert!(has("layers_"), "{:?}", summary.files);
        assert!(has("seeds_"), "{:?}", summary.files);
        let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
        assert!(html.contains("No pair compares a checkpoint with the final checkpoint"));
        assert!(summary.text.contains("across seeds"), "{}", summary.text);
        // The Gaussian null at the stored shapes (4 × 4 dims over 100 datapoints) is well above 0.
        let data: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
        let null = data["null_baselines"][0]["mean"].as_f64().unwrap();
        assert!(null > 0.05 && null < 0.5, "{null}");
        // The conv1 pair was stored without its per-frequency dims (as results written before
        // they were recorded): no flat null of its summed dims, and a note that says why.
        assert!(data["conv_nulls"].as_array().unwrap().is_empty());
        assert!(
            summary
                .notes
                .iter()
                .any(|n| n.contains("conv pair") && n.contains("rerun the sweep")),
            "{:?}",
            summary.notes
        );
    }

    /// Two seeds of a vs-final + cross-seed sweep under two metrics: h1 converges at step 100,
    /// h2 only at the end; seeds agree on h1 at the last step.
    fn vs_final_and_seeds() -> ResultsFile {
        let mut pairs = Vec::new();
        for metric in ["svcca", "cka"] {
            for seed in [0, 1] {
                pairs.extend(vs_final(
                    metric,
                    seed,
                    1000,
                    &[(10, 0.5, 0.3), (100, 0.97, 0.8)],
                ));
            }
            for (layer, v) in [("h1", 0.9), ("h2", 0.6)] {
                pairs.push(pair(
                    key("mlp", 0, 1000, layer),
                    key("mlp", 1, 1000, layer),
                    metric,
                    v,
                ));
            }
        }
        let mut results = results_with(&["h1", "h2"], pairs);
        results.comparison = "vs-final".into();
        results
    }

    /// Every `href="#x"` of a page, and whether an element has `id="x"`.
    fn dangling_links(html: &str) -> Vec<String> {
        html.split("href=\"#")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().to_string())
            .filter(|target| !html.contains(&format!("id=\"{target}\"")))
            .collect()
    }

    #[test]
    fn the_page_opens_with_the_answers_and_ends_with_definitions_and_settings() {
        let tmp = tempfile::tempdir().unwrap();
        let results = vs_final_and_seeds();
        let skipped = vec![SkippedPairs {
            a: "run=conv,layer=conv2".into(),
            b: "run=mlp,layer=h1".into(),
            pairs: 3,
            reason: svcca_results::SkipReason::ConvWithDense,
        }];
        let options = ReportOptions::default().with_skipped(skipped);
        let summary = write_report(&results, tmp.path(), &options).unwrap();
        let html = std::fs::read_to_string(tmp.path().join("index.html")).unwrap();
        let at = |needle: &str| {
            html.find(needle)
                .unwrap_or_else(|| panic!("page lacks {needle:?}"))
        };
        // The answers come first, before the table of contents and every figure; the
        // definitions and the settings after the last figure.
        let last_figure = html.rfind("<figure").unwrap();
        assert!(at("id=\"summary\"") < at("<nav>"));
        assert!(at("<nav>") < at("<figure"));
        assert!(last_figure < at("id=\"definitions\""));
        assert!(at("id=\"definitions\"") < at("id=\"run\""));
        let lead = &html[..at("<nav>")];
        assert!(
            lead.contains("Yes: the layers converge bottom-up in all 2 networks"),
            "{lead}"
        );
        assert!(lead.contains("By convergence step: bottom-up"), "{lead}");
        // Convergence step per layer, each network linked to its curves.
        assert!(
            lead.contains(
                "<td><a href=\"#fig-dynamics_svcca_run_mlp_seed_1\">run=mlp,seed=1</a></td>\
                 <td>100</td><td>—</td><td>yes</td>"
            ),
            "{lead}"
        );
        // Cross-seed agreement with its null, computed at the stored shapes.
        let data: serde_json::Value =
            serde_json::from_slice(&std::fs::read(tmp.path().join("report.json")).unwrap())
                .unwrap();
        let seeds = data["answers"]["cross_seed"].as_array().unwrap();
        assert_eq!(seeds.len(), 2);
        for s in seeds {
            let null = s["null"].as_f64().expect("a null for every layer");
            let row = format!(
                "<td>{}</td><td>1</td><td>{} ± 0.000</td><td>{}</td>",
                s["layer"].as_str().unwrap(),
                num(s["mean"].as_f64().unwrap()),
                num(null)
            );
            assert!(lead.contains(&row), "{row} not in {lead}");
        }
        // Every stored metric gets its learning dynamics, and the summary links to them.
        assert!(html.contains("id=\"dynamics-svcca\"") && html.contains("id=\"dynamics-cka\""));
        assert!(
            lead.contains("Under cka: bottom-up by convergence step in 2 of 2"),
            "{lead}"
        );
        assert!(
            summary.files.iter().any(|f| f.contains("dynamics_cka_")),
            "{:?}",
            summary.files
        );
        // Skipped pairs: counted in the summary, listed with why further down.
        assert!(
            lead.contains("3 planned pair(s) were not compared"),
            "{lead}"
        );
        assert!(html.contains("Pairs the sweep skipped"));
        assert!(html.contains("no common definition of similarity"));
        assert_eq!(dangling_links(&html), Vec::<String>::new());
        // The terminal says the same, in the same order.
        let text = &summary.text;
        assert!(
            text.find("Yes: the layers converge bottom-up in all 2 networks")
                .unwrap()
                < text.find("learning dynamics").unwrap(),
            "{text}"
        );
        assert!(
            text.contains("under cka: bottom-up in 2 of 2 network(s)"),
            "{text}"
        );
        assert!(text.contains("skipped 3 planned pair(s)"), "{text}");
        assert!(
            text.contains("run=conv,layer=conv2 × run=mlp,layer=h1: 3 pair(s)"),
            "{text}"
        );
        assert!(text.contains("h1 0.900±0.000 (null "), "{text}");
    }

    #[test]
    fn a_rerun_over_more_checkpoints_says_what_changed_since_the_last_run() {
        let tmp = tempfile::tempdir().unwrap();
        // The last run ended at step 100, for both seeds.
        let mut pairs = Vec::new();
        for seed in [0, 1] {
            for layer in ["h1", "h2"] {
                pairs.push(pair(
                    key("mlp", seed, 10, layer),
                    key("mlp", seed, 100, layer),
                    "svcca",
                    0.5,
                ));
            }
        }
        let previous = results_with(&["h1", "h2"], pairs);
        let options = ReportOptions::default().with_previous(previous);
        let summary = write_report(&vs_final_and_seeds(), tmp.path(), &options).unwrap();
        let html = std::fs::read_to_string(tmp.path().join("index.html")).unwrap();
        let lead = &html[..html.find("<nav>").unwrap()];
        let headline = "Since the last run: 2 new checkpoint(s) (12 representations, 8 before); \
                        moved most: h2 of run=mlp,seed=0, svcca 0.800 between step 100";
        assert!(lead.contains(headline), "{lead}");
        assert!(html.contains("id=\"since\""));
        assert!(
            html.contains("New checkpoints: run=mlp,seed=0,step=1000, run=mlp,seed=1,step=1000.")
        );
        assert!(summary.text.contains(headline), "{}", summary.text);
        assert_eq!(dangling_links(&html), Vec::<String>::new());
    }

    #[test]
    fn a_layer_converging_out_of_order_is_the_headline() {
        let tmp = tempfile::tempdir().unwrap();
        let pairs = vs_final("svcca", 0, 1000, &[(10, 0.5, 0.96), (100, 0.97, 0.98)]);
        let results = results_with(&["h1", "h2"], pairs);
        let summary = write_report(&results, tmp.path(), &ReportOptions::default()).unwrap();
        let html = std::fs::read_to_string(tmp.path().join("index.html")).unwrap();
        let lead = &html[..html.find("<nav>").unwrap()];
        assert!(
            lead.contains("No: the layers do not converge bottom-up, judged"),
            "{lead}"
        );
        assert!(
            lead.contains("h2 converges at step 10, before h1 at step 100"),
            "{lead}"
        );
        assert!(
            summary.text.starts_with("svcca report:"),
            "{}",
            summary.text
        );
        assert!(
            summary.text.contains("No: the layers do not converge"),
            "{}",
            summary.text
        );
        assert!(!html.contains("Pairs the sweep skipped"));
    }

    #[test]
    fn refuses_unknown_metric_and_bad_threshold() {
        let tmp = tempfile::tempdir().unwrap();
        let results = all_pairs();
        let err = write_report(
            &results,
            tmp.path(),
            &ReportOptions::default().with_metric("pwcca"),
        )
        .unwrap_err();
        assert!(matches!(err, ReportError::UnknownMetric { .. }), "{err}");
        assert!(err.to_string().contains("svcca"));
        let err = write_report(
            &results,
            tmp.path(),
            &ReportOptions::default().with_threshold(2.0),
        )
        .unwrap_err();
        assert!(matches!(err, ReportError::Options { .. }), "{err}");
    }

    #[test]
    fn empty_results_still_give_a_page() {
        let tmp = tempfile::tempdir().unwrap();
        let results = results_with(&[], vec![]);
        let summary = write_report(&results, tmp.path(), &ReportOptions::default()).unwrap();
        assert_eq!(summary.files, ["index.html", "report.json"]);
    }

    #[test]
    fn html_escapes_labels() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(slug("mlp/seed0 step<1>"), "mlp_seed0_step_1_");
    }
}
