//! Grouping stored representations into networks and layers, in the order the sweep listed them.

use svcca_results::{RepresentationKey, ResultsFile};

/// One network at one checkpoint: the unit a layer × layer matrix is drawn for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct NetworkId {
    pub run: String,
    pub seed: Option<i64>,
    pub step: Option<i64>,
    /// The representations' tags: networks that differ only by a tag (`lr=0.1`, `lr=0.01`)
    /// are different networks.
    pub tags: std::collections::BTreeMap<String, String>,
}

impl NetworkId {
    pub fn of(key: &RepresentationKey) -> Self {
        Self {
            run: key.run.clone(),
            seed: key.seed,
            step: key.step,
            tags: key.tags.clone(),
        }
    }

    /// `run=mlp,seed=0,step=2250` (then the tags): the canonical key of its representations
    /// ([`RepresentationKey::id`]) without the layer.
    pub fn label(&self) -> String {
        let mut label = format!("run={}", self.run);
        if let Some(seed) = self.seed {
            label.push_str(&format!(",seed={seed}"));
        }
        if let Some(step) = self.step {
            label.push_str(&format!(",step={step}"));
        }
        for (k, v) in &self.tags {
            label.push_str(&format!(",{k}={v}"));
        }
        label
    }
}

/// The layers of a run from input to output: by the depth each representation carries (the
/// dataset's `depth`, forward execution order), never by name. Layers without a depth (results
/// written before depths existed, or met only in pairs) follow in the order the sweep listed
/// them, which was the manifest's.
pub fn layer_order(results: &ResultsFile, run: &str) -> Vec<String> {
    let mut order: Vec<(String, Option<u32>)> = Vec::new();
    let keys = results
        .representations
        .iter()
        .map(|r| (&r.key, r.depth))
        .chain(
            results
                .pairs
                .iter()
                .flat_map(|p| [(&p.a, None), (&p.b, None)]),
        );
    for (key, depth) in keys {
        if key.run != run {
            continue;
        }
        match order.iter_mut().find(|(l, _)| *l == key.layer) {
            Some((_, d)) => *d = d.or(depth),
            None => order.push((key.layer.clone(), depth)),
        }
    }
    // Stable: equal depths and unknown ones keep the listed order.
    order.sort_by_key(|(_, d)| (d.is_none(), *d));
    order.into_iter().map(|(l, _)| l).collect()
}

/// Position of `layer` in `order` (unknown layers sort last).
pub(crate) fn depth(order: &[String], layer: &str) -> usize {
    order.iter().position(|l| l == layer).unwrap_or(order.len())
}

/// Runs in first-seen order.
pub fn runs(results: &ResultsFile) -> Vec<String> {
    let mut runs: Vec<String> = Vec::new();
    let keys = results
        .representations
        .iter()
        .map(|r| &r.key)
        .chain(results.pairs.iter().flat_map(|p| [&p.a, &p.b]));
    for key in keys {
        if !runs.contains(&key.run) {
            runs.push(key.run.clone());
        }
    }
    runs
}

/// The metric a report leads with: `svcca` when present (the paper's measure), else the first.
pub fn primary_metric(results: &ResultsFile) -> Option<String> {
    let metrics = results.metrics();
    if metrics.iter().any(|m| m == "svcca") {
        Some("svcca".to_string())
    } else {
        metrics.into_iter().next()
    }
}
