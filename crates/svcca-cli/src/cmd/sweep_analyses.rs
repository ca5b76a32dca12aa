//! Analyses a sweep's report shows beside the stored similarities, computed from the activations
//! themselves: how many SVCCA directions each layer really uses (the paper's intrinsic
//! dimensionality), for every layer at its final checkpoint against the same layer of another
//! seed. Written as `analyses.json` next to `results.json`, so `svcca report` can redraw them later
//! without the dataset.

use std::collections::BTreeMap;

use svcca_report::ComputedAnalyses;
use svcca_report::compute::{ComputeOptions, dimensionality};
use svcca_results::ResultsFile;
use svcca_storage::{Dataset, ReadOptions, Representation};

use crate::exit::Failure;

/// Layers larger than this (datapoints × neurons) are left out: the analysis holds both sides in
/// memory, which a report step must not turn into a surprise.
const MAX_VALUES: usize = 50_000_000;
/// At most this many curves: one per (run, layer).
const MAX_CURVES: usize = 24;

/// Computes the curves for a local sweep; `Ok(None)` when there is nothing to pair (one seed).
pub fn compute(
    dataset_url: &str,
    results: &ResultsFile,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<ComputedAnalyses>, Failure> {
    // (run, layer) -> the final step's representations, by seed.
    let mut finals: BTreeMap<(String, String), (i64, BTreeMap<i64, ()>)> = BTreeMap::new();
    for rep in &results.representations {
        let (Some(step), Some(seed)) = (rep.key.step, rep.key.seed) else {
            continue;
        };
        if rep.shape.len() != 1 {
            continue; // conv layers have their per-frequency maps instead
        }
        let entry = finals
            .entry((rep.key.run.clone(), rep.key.layer.clone()))
            .or_insert((step, BTreeMap::new()));
        if step > entry.0 {
            *entry = (step, BTreeMap::new());
        }
        if step == entry.0 {
            entry.1.insert(seed, ());
        }
    }
    let wanted: Vec<((String, String), i64, i64, i64)> = finals
        .into_iter()
        .filter_map(|(key, (step, seeds))| {
            let mut seeds = seeds.into_keys();
            let (a, b) = (seeds.next()?, seeds.next()?);
            Some((key, step, a, b))
        })
        .take(MAX_CURVES)
        .collect();
    if wanted.is_empty() {
        return Ok(None);
    }
    let dataset = runtime
        .block_on(Dataset::open(dataset_url, ReadOptions::default()))
        .map_err(crate::source::storage_failure)?;
    let find = |run: &str, layer: &str, step: i64, seed: i64| -> Option<Representation> {
        dataset
            .representations()
            .iter()
            .find(|r| {
                r.key.run == run
                    && r.key.layer == layer
                    && r.key.step.map(|s| s as i64) == Some(step)
                    && r.key.seed.map(|s| s as i64) == Some(seed)
            })
            .cloned()
    };
    let mut analyses = ComputedAnalyses::default();
    for ((run, layer), step, seed_a, seed_b) in wanted {
        let (Some(a), Some(b)) = (
            find(&run, &layer, step, seed_a),
            find(&run, &layer, step, seed_b),
        ) else {
            continue;
        };
        if a.rows() * a.row_len() > MAX_VALUES || b.rows() * b.row_len() > MAX_VALUES {
            continue;
        }
        let da = runtime
            .block_on(dataset.read_all(&a))
            .map_err(crate::source::storage_failure)?;
        let db = runtime
            .block_on(dataset.read_all(&b))
            .map_err(crate::source::storage_failure)?;

        let label = |seed: i64| format!("{run}/seed{seed}/step{step}/{layer}");
        let curve = dimensionality(
            block(&da, &a)?,
            block(&db, &b)?,
            (&label(seed_a), &label(seed_b)),
            &ComputeOptions::default(),
        )
        .map_err(|e| Failure::fatal(format!("dimensionality of {}: {e}", label(seed_a))))?;
        analyses.dimensionality.push(curve);
    }
    Ok(Some(analyses))
}

fn block<'a>(data: &'a [f32], rep: &Representation) -> Result<svcca_core::RowBlock<'a>, Failure> {
    svcca_core::RowBlock::f32(data, rep.rows(), rep.row_len())
        .map_err(|e| Failure::fatal(e.to_string()))
}
