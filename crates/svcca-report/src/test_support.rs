//! Hand-built results for unit tests.

use std::collections::BTreeMap;

use svcca_results::{
    PairRecord, RepresentationKey, RepresentationRecord, ResultsFile, SCHEMA_VERSION,
};

pub(crate) fn key(run: &str, seed: i64, step: i64, layer: &str) -> RepresentationKey {
    RepresentationKey {
        run: run.into(),
        seed: Some(seed),
        step: Some(step),
        layer: layer.into(),
        tags: BTreeMap::new(),
    }
}

pub(crate) fn pair(
    a: RepresentationKey,
    b: RepresentationKey,
    metric: &str,
    mean: f64,
) -> PairRecord {
    PairRecord {
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

/// A vs-final job's records for one network: at each `(step, h1, h2)`, layer `h1` and then `h2`
/// at that step against the same layer at `final_step`, under `metric`.
pub(crate) fn vs_final(
    metric: &str,
    seed: i64,
    final_step: i64,
    rows: &[(i64, f64, f64)],
) -> Vec<PairRecord> {
    rows.iter()
        .flat_map(|&(step, h1, h2)| {
            [("h1", h1), ("h2", h2)].map(|(layer, v)| {
                pair(
                    key("mlp", seed, step, layer),
                    key("mlp", seed, final_step, layer),
                    metric,
                    v,
                )
            })
        })
        .collect()
}

/// A results file whose representations are the keys of `pairs`, listed in `layers` order within
/// each run, seed and step (as a manifest would list them).
pub(crate) fn results_with(layers: &[&str], pairs: Vec<PairRecord>) -> ResultsFile {
    let mut keys: Vec<RepresentationKey> = Vec::new();
    for p in &pairs {
        for k in [&p.a, &p.b] {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    let pos = |l: &str| layers.iter().position(|x| *x == l).unwrap_or(layers.len());
    keys.sort_by(|x, y| {
        (&x.run, x.seed, x.step, pos(&x.layer), &x.layer).cmp(&(
            &y.run,
            y.seed,
            y.step,
            pos(&y.layer),
            &y.layer,
        ))
    });
    ResultsFile {
        schema_version: SCHEMA_VERSION,
        coefficients: svcca_results::CoefficientStore::Json,
        job_spec: "comparison = \"vs-final\"".into(),
        versions: BTreeMap::new(),
        comparison: "vs-final".into(),
        settings: "svcca var 0.99".into(),
        representations: keys
            .into_iter()
            .map(|key| RepresentationRecord {
                key,
                shape: vec![8],
                datapoints: 100,
                kept_dims: 4,
                dropped_neurons: vec![],
                spectrum: vec![4.0, 2.0, 1.0, 0.5, 0.01, 0.001, 0.0001, 0.0],
                checksum: String::new(),
                depth: None,
                layout: None,
            })
            .collect(),
        pairs,
    }
}
