//! Analyses a sweep's report shows beside the stored similarities, computed from the activations
//! themselves, and written as `analyses.json` next to `results.json` so `svcca report` can redraw
//! them later without the dataset:
//! - how many SVCCA directions each layer really uses (the paper's intrinsic dimensionality), for
//!   every layer at its final checkpoint against the same layer of another seed;
//! - class sensitivity (the paper's interpretability experiment), when the job names class labels
//!   (`[analyses] labels`, `--labels`): for every run and seed, every dense layer other than the
//!   logits layer, at each of its checkpoints, against each class's column of the *final*
//!   checkpoint's logits of the same run and seed (or the class indicator without a logits layer).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use svcca_engine::spec::Analyses;
use svcca_report::ComputedAnalyses;
use svcca_report::compute::{
    ClassCurve, ClassSensitivity, ClassTarget, ComputeOptions, DimensionalityCurve,
    class_sensitivity, dimensionality, load_labels,
};
use svcca_report::layers::layer_order;
use svcca_report::report::network_name;
use svcca_results::{RepresentationKey, ResultsFile};
use svcca_storage::{Dataset, ReadOptions, Representation};

use crate::exit::Failure;

/// Layers larger than this (datapoints × neurons) are left out: the analysis holds both sides in
/// memory, which a report step must not turn into a surprise.
const MAX_VALUES: usize = 50_000_000;
/// At most this many dimensionality curves: one per (run, layer).
const MAX_CURVES: usize = 24;
/// Curves computed at the same time, each on its own thread.
const MAX_CURVES_AT_ONCE: usize = 4;
/// At most this many class-sensitivity tracks: one per (run, seed, layer). Each is one chart and
/// one table in the report.
const MAX_CLASS_TRACKS: usize = 24;

/// Class labels read and checked before the job runs, so a bad file fails in seconds rather than
/// after the sweep.
#[derive(Debug, Clone)]
pub struct ClassInputs {
    /// The file as the user named it (for messages).
    pub path: PathBuf,
    pub labels: Vec<i64>,
    /// The layer whose final checkpoint is the target; `None`: the class indicator.
    pub logits: Option<String>,
}

impl ClassInputs {
    fn bad(&self, detail: impl std::fmt::Display) -> Failure {
        Failure::fatal(format!("labels {}: {detail}", self.path.display()))
    }
}

/// Reads the labels named by `analyses` and checks them against the dataset: a 1-D integer
/// `.npy`, no negative label, one label per datapoint, and the logits layer present.
/// `Ok(None)` when no labels are asked for.
pub fn prepare_classes(
    analyses: &Analyses,
    dataset_url: &str,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<ClassInputs>, Failure> {
    let Some(text) = analyses.labels.as_deref() else {
        return Ok(None);
    };
    let local = text.strip_prefix("file://").unwrap_or(text);
    // Labels in an object store (a submitted job's) are read from a local copy.
    let fetched = if local.contains("://") {
        Some(crate::cmd::sweep_outputs::fetch_labels(text, runtime)?)
    } else {
        None
    };
    let path = PathBuf::from(local);
    let labels = load_labels(fetched.as_ref().map_or(path.as_path(), |f| f.path()))
        .map_err(|e| Failure::fatal(e.to_string()))?;
    let inputs = ClassInputs {
        path,
        labels,
        logits: analyses.logits.clone(),
    };
    if inputs.labels.is_empty() {
        return Err(inputs.bad("holds no label"));
    }
    if let Some((i, l)) = inputs.labels.iter().enumerate().find(|(_, l)| **l < 0) {
        return Err(inputs.bad(format!(
            "label {l} of datapoint {i} is negative; classes are numbered from 0"
        )));
    }
    let dataset = runtime
        .block_on(Dataset::open(dataset_url, ReadOptions::default()))
        .map_err(crate::source::storage_failure)?;
    let dense: Vec<&Representation> = dataset
        .representations()
        .iter()
        .filter(|r| r.shape.len() == 2)
        .collect();
    let counts: BTreeSet<usize> = dense.iter().map(|r| r.rows()).collect();
    if !counts.is_empty() && !counts.contains(&inputs.labels.len()) {
        let counts: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
        return Err(inputs.bad(format!(
            "{} labels, but the representations of {dataset_url} have {} datapoints; \
             give one label per datapoint of the probe set, in its order",
            inputs.labels.len(),
            counts.join(" or ")
        )));
    }
    if let Some(logits) = &inputs.logits {
        let columns: BTreeSet<usize> = dense
            .iter()
            .filter(|r| &r.key.layer == logits)
            .map(|r| r.row_len())
            .collect();
        if columns.is_empty() {
            let layers: BTreeSet<&str> = dense.iter().map(|r| r.key.layer.as_str()).collect();
            return Err(Failure::fatal(format!(
                "logits layer `{logits}` is not a dense layer of {dataset_url} (its dense layers: {})",
                layers.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        // Class c is compared with column c: every label must name a column.
        let top = inputs.labels.iter().copied().max().unwrap_or(0);
        if let Some(&narrowest) = columns.first()
            && top >= narrowest as i64
        {
            return Err(inputs.bad(format!(
                "label {top} has no column in the logits layer `{logits}` ({narrowest} columns, \
                 one per class numbered from 0)"
            )));
        }
    }
    Ok(Some(inputs))
}

/// Computes the analyses for a local sweep; `Ok(None)` when there is nothing to compute (one
/// seed and no labels).
pub fn compute(
    dataset_url: &str,
    results: &ResultsFile,
    classes: Option<&ClassInputs>,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<ComputedAnalyses>, Failure> {
    let wanted = dimensionality_pairs(results);
    if wanted.is_empty() && classes.is_none() {
        return Ok(None);
    }
    let dataset = runtime
        .block_on(Dataset::open(dataset_url, ReadOptions::default()))
        .map_err(crate::source::storage_failure)?;
    let data = Data {
        dataset: &dataset,
        runtime,
    };
    let mut analyses = ComputedAnalyses::default();
    if wanted.len() > MAX_CURVES {
        analyses.notes.push(format!(
            "dimensionality computed for the first {MAX_CURVES} of {} layers",
            wanted.len()
        ));
    }
    let mut curves = Vec::new();
    for (key_a, key_b) in wanted.into_iter().take(MAX_CURVES) {
        let (Some(a), Some(b)) = (data.find_key(&key_a), data.find_key(&key_b)) else {
            continue;
        };
        if a.rows() * a.row_len() > MAX_VALUES || b.rows() * b.row_len() > MAX_VALUES {
            analyses.notes.push(format!(
                "dimensionality of {} left out: more than {MAX_VALUES} values",
                key_a.label()
            ));
            continue;
        }
        curves.push((a, b, key_a.label(), key_b.label()));
    }
    // The job's workers are done: the curves share the cores, each on one thread (their
    // products' bits do not depend on it), in order. At most a few at once, since each holds
    // both of its layers.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_CURVES_AT_ONCE);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let computed: Vec<std::sync::Mutex<Option<Result<DimensionalityCurve, Failure>>>> =
        curves.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.min(curves.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((a, b, label_a, label_b)) = curves.get(i) else {
                        return;
                    };
                    let curve = (|| {
                        let (da, db) = (data.read(a)?, data.read(b)?);
                        dimensionality(
                            block(&da, a)?,
                            block(&db, b)?,
                            (label_a, label_b),
                            &ComputeOptions::default(),
                        )
                        .map_err(|e| Failure::fatal(format!("dimensionality of {label_a}: {e}")))
                    })();
                    *computed[i].lock().expect("curve slot") = Some(curve);
                }
            });
        }
    });
    for slot in computed {
        if let Some(curve) = slot.into_inner().expect("curve slot") {
            analyses.dimensionality.push(curve?);
        }
    }
    if let Some(classes) = classes {
        class_tracks(&data, results, classes, &mut analyses)?;
    }
    Ok(Some(analyses))
}

/// For every dense layer (run, layer and tags: representations that differ by a tag are never
/// mixed) stored at its final step under at least two seeds, the keys of two seeds there.
fn dimensionality_pairs(results: &ResultsFile) -> Vec<(RepresentationKey, RepresentationKey)> {
    type Layer = (String, String, BTreeMap<String, String>);
    let mut finals: BTreeMap<Layer, (i64, BTreeSet<i64>)> = BTreeMap::new();
    for rep in &results.representations {
        let (Some(step), Some(seed)) = (rep.key.step, rep.key.seed) else {
            continue;
        };
        if rep.shape.len() != 1 {
            continue; // conv layers have their per-frequency maps instead
        }
        let entry = finals
            .entry((
                rep.key.run.clone(),
                rep.key.layer.clone(),
                rep.key.tags.clone(),
            ))
            .or_insert((step, BTreeSet::new()));
        if step > entry.0 {
            *entry = (step, BTreeSet::new());
        }
        if step == entry.0 {
            entry.1.insert(seed);
        }
    }
    finals
        .into_iter()
        .filter_map(|((run, layer, tags), (step, seeds))| {
            let mut seeds = seeds.into_iter();
            let (a, b) = (seeds.next()?, seeds.next()?);
            let key = |seed| RepresentationKey {
                run: run.clone(),
                seed: Some(seed),
                step: Some(step),
                layer: layer.clone(),
                tags: tags.clone(),
            };
            Some((key(a), key(b)))
        })
        .collect()
}

/// Class sensitivity of every (run, seed, dense layer) of the sweep, one checkpoint at a time so
/// only one layer's activations are held besides the target.
fn class_tracks(
    data: &Data<'_>,
    results: &ResultsFile,
    classes: &ClassInputs,
    analyses: &mut ComputedAnalyses,
) -> Result<(), Failure> {
    // (run, seed, tags) -> layer -> steps, over the dense representations the sweep compared.
    // Tags are part of the network: two learning rates are two networks, never one track.
    type Network = (String, Option<i64>, BTreeMap<String, String>);
    let mut tracks: BTreeMap<Network, BTreeMap<String, BTreeSet<i64>>> = BTreeMap::new();
    for rep in &results.representations {
        let Some(step) = rep.key.step else { continue };
        if rep.shape.len() != 1 || Some(&rep.key.layer) == classes.logits.as_ref() {
            continue;
        }
        tracks
            .entry((rep.key.run.clone(), rep.key.seed, rep.key.tags.clone()))
            .or_default()
            .entry(rep.key.layer.clone())
            .or_default()
            .insert(step);
    }
    let total: usize = tracks.values().map(|layers| layers.len()).sum();
    if total == 0 {
        analyses.notes.push(
            "class sensitivity: the sweep compared no dense layer with a training step".into(),
        );
        return Ok(());
    }
    if total > MAX_CLASS_TRACKS {
        analyses.notes.push(format!(
            "class sensitivity computed for the first {MAX_CLASS_TRACKS} of {total} layers (run, seed, layer)"
        ));
    }
    let opts = ComputeOptions::default();
    let mut budget = MAX_CLASS_TRACKS;
    for ((run, seed, tags), layers) in tracks {
        if budget == 0 {
            break;
        }
        let network = network_name(&run, seed, &tags);
        // The target: the final checkpoint of the logits layer of the same run and seed.
        let target = match &classes.logits {
            None => None,
            Some(logits) => {
                let rep = data
                    .dataset
                    .representations()
                    .iter()
                    .filter(|r| {
                        r.key.run == run
                            && &r.key.layer == logits
                            && r.key.seed.map(|s| s as i64) == seed
                            && r.key.tags == tags
                            && r.shape.len() == 2
                    })
                    .max_by_key(|r| r.key.step)
                    .cloned()
                    .ok_or_else(|| {
                        Failure::fatal(format!(
                            "logits layer `{logits}` has no checkpoint for {network} in {}",
                            data.dataset.url()
                        ))
                    })?;
                let name = format!(
                    "{} (the final checkpoint's logits of the same network)",
                    RepresentationKey {
                        run: run.clone(),
                        seed,
                        step: rep.key.step.map(|s| s as i64),
                        layer: logits.clone(),
                        tags: tags.clone(),
                    }
                    .id()
                );
                check_rows(classes, &rep)?;
                Some((data.read(&rep)?, rep, name))
            }
        };
        let order = layer_order(results, &run);
        let mut layers: Vec<(String, BTreeSet<i64>)> = layers.into_iter().collect();
        layers.sort_by_key(|(l, _)| order.iter().position(|o| o == l).unwrap_or(order.len()));
        for (layer, steps) in layers {
            if budget == 0 {
                break;
            }
            budget -= 1;
            // The layer over all its checkpoints: its canonical key without the step.
            let label = RepresentationKey {
                run: run.clone(),
                seed,
                step: None,
                layer: layer.clone(),
                tags: tags.clone(),
            }
            .id();
            let mut merged: Option<ClassSensitivity> = None;
            for step in steps {
                let Some(rep) = data.find_key(&RepresentationKey {
                    run: run.clone(),
                    seed,
                    step: Some(step),
                    layer: layer.clone(),
                    tags: tags.clone(),
                }) else {
                    continue;
                };
                if rep.rows() * rep.row_len() > MAX_VALUES {
                    analyses.notes.push(format!(
                        "class sensitivity of {label} at step {step} left out: more than {MAX_VALUES} values"
                    ));
                    continue;
                }
                check_rows(classes, &rep)?;
                let values = data.read(&rep)?;
                let (target, target_name) = match &target {
                    Some((t, trep, name)) => (ClassTarget::Logits(block(t, trep)?), name.as_str()),
                    None => (ClassTarget::LabelIndicator, "the class labels"),
                };
                let one = class_sensitivity(
                    &label,
                    &[(step, block(&values, &rep)?)],
                    target,
                    target_name,
                    &classes.labels,
                    &opts,
                )
                .map_err(|e| classes.bad(e))?;
                merged = Some(match merged {
                    None => one,
                    Some(mut all) => {
                        append(&mut all.classes, one.classes);
                        all
                    }
                });
            }
            if let Some(cs) = merged {
                analyses.class_sensitivity.push(cs);
            }
        }
    }
    Ok(())
}

/// Adds one checkpoint's curves (same classes, in the same order) to the curves so far.
fn append(all: &mut [ClassCurve], more: Vec<ClassCurve>) {
    for (curve, extra) in all.iter_mut().zip(more) {
        curve.points.extend(extra.points);
        curve.warnings.extend(extra.warnings);
    }
}

fn check_rows(classes: &ClassInputs, rep: &Representation) -> Result<(), Failure> {
    if rep.rows() != classes.labels.len() {
        return Err(classes.bad(format!(
            "{} labels for the {} datapoints of {}",
            classes.labels.len(),
            rep.rows(),
            rep.id()
        )));
    }
    Ok(())
}

/// The dataset and the runtime that reads it.
struct Data<'a> {
    dataset: &'a Dataset,
    runtime: &'a tokio::runtime::Runtime,
}

impl Data<'_> {
    /// The representation with exactly this key, tags included.
    fn find_key(&self, key: &RepresentationKey) -> Option<Representation> {
        self.dataset
            .representations()
            .iter()
            .find(|r| {
                r.key.run == key.run
                    && r.key.layer == key.layer
                    && r.key.step.map(|s| s as i64) == key.step
                    && r.key.seed.map(|s| s as i64) == key.seed
                    && r.key.tags == key.tags
            })
            .cloned()
    }

    fn read(&self, rep: &Representation) -> Result<Vec<f32>, Failure> {
        self.runtime
            .block_on(self.dataset.read_all(rep))
            .map_err(crate::source::storage_failure)
    }
}

fn block<'a>(data: &'a [f32], rep: &Representation) -> Result<svcca_core::RowBlock<'a>, Failure> {
    svcca_core::RowBlock::f32(data, rep.rows(), rep.row_len())
        .map_err(|e| Failure::fatal(e.to_string()))
}
