//! Cross-seed agreement per layer: how similar the same layer is across networks trained from
//! different seeds, as a mean and spread over all seed pairs.
//!
//! A *seed pair* is a stored pair whose two sides share run, step and layer and differ in seed.
//! The spread is the sample standard deviation over seed pairs (denominator `pairs − 1`; 0 for a
//! single pair) with the minimum and maximum. Seed pairs are not independent samples (three seeds
//! give three pairs that share networks), so the spread describes the sweep, not a confidence.

use std::collections::BTreeMap;

use serde::Serialize;
use svcca_results::ResultsFile;

use crate::layers::{depth, layer_order};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedSpread {
    pub run: String,
    /// The representations' tags: seed pairs compare networks with the same tags.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    pub step: Option<i64>,
    pub layer: String,
    pub depth: usize,
    /// Number of seed pairs.
    pub pairs: usize,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

/// Per run, step and layer: mean and spread of `metric` over seed pairs. Ordered by run (first
/// seen), step and depth.
pub fn cross_seed(results: &ResultsFile, metric: &str) -> Vec<SeedSpread> {
    type Group = (String, BTreeMap<String, String>, Option<i64>, String);
    let mut groups: BTreeMap<Group, Vec<f64>> = BTreeMap::new();
    for pair in results.pairs_of(metric) {
        let (a, b) = (&pair.a, &pair.b);
        if a.run == b.run
            && a.step == b.step
            && a.layer == b.layer
            && a.tags == b.tags
            && a.seed != b.seed
            && pair.mean.is_finite()
        {
            groups
                .entry((a.run.clone(), a.tags.clone(), a.step, a.layer.clone()))
                .or_default()
                .push(pair.mean);
        }
    }
    let runs = crate::layers::runs(results);
    let mut out: Vec<SeedSpread> = groups
        .into_iter()
        .map(|((run, tags, step, layer), values)| {
            let order = layer_order(results, &run);
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let var = if values.len() > 1 {
                values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0)
            } else {
                0.0
            };
            SeedSpread {
                depth: depth(&order, &layer),
                run,
                tags,
                step,
                layer,
                pairs: values.len(),
                mean,
                std: var.sqrt(),
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            }
        })
        .collect();
    out.sort_by(|x, y| {
        let at = |s: &SeedSpread| runs.iter().position(|r| *r == s.run);
        (at(x), &x.tags, x.step, x.depth).cmp(&(at(y), &y.tags, y.step, y.depth))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{key, pair, results_with};

    #[test]
    fn seed_pairs_compare_networks_with_the_same_tags() {
        let tagged = |seed: i64, lr: &str| {
            let mut k = key("mlp", seed, 100, "h2");
            k.tags.insert("lr".into(), lr.into());
            k
        };
        let pairs = vec![
            pair(tagged(0, "0.1"), tagged(1, "0.1"), "svcca", 0.9),
            pair(tagged(0, "0.01"), tagged(1, "0.01"), "svcca", 0.3),
            // Other tags on each side: not the same network trained from another seed.
            pair(tagged(0, "0.1"), tagged(1, "0.01"), "svcca", 0.5),
        ];
        let spreads = cross_seed(&results_with(&["h2"], pairs), "svcca");
        let got: Vec<(String, usize, f64)> = spreads
            .iter()
            .map(|s| (s.tags["lr"].clone(), s.pairs, s.mean))
            .collect();
        assert_eq!(got, [("0.01".into(), 1, 0.3), ("0.1".into(), 1, 0.9)]);
    }

    #[test]
    fn mean_and_spread_over_seed_pairs() {
        let pairs = vec![
            pair(
                key("mlp", 0, 100, "h2"),
                key("mlp", 1, 100, "h2"),
                "svcca",
                0.6,
            ),
            pair(
                key("mlp", 0, 100, "h2"),
                key("mlp", 2, 100, "h2"),
                "svcca",
                0.7,
            ),
            pair(
                key("mlp", 1, 100, "h2"),
                key("mlp", 2, 100, "h2"),
                "svcca",
                0.8,
            ),
            pair(
                key("mlp", 0, 100, "h1"),
                key("mlp", 1, 100, "h1"),
                "svcca",
                0.9,
            ),
            // Ignored: another layer on one side, same seed, another metric.
            pair(
                key("mlp", 0, 100, "h1"),
                key("mlp", 1, 100, "h2"),
                "svcca",
                0.1,
            ),
            pair(
                key("mlp", 0, 25, "h1"),
                key("mlp", 0, 100, "h1"),
                "svcca",
                0.1,
            ),
            pair(
                key("mlp", 0, 100, "h1"),
                key("mlp", 1, 100, "h1"),
                "cka",
                0.1,
            ),
        ];
        let results = results_with(&["h1", "h2"], pairs);
        let s = cross_seed(&results, "svcca");
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].layer.as_str(), s[0].pairs, s[0].std), ("h1", 1, 0.0));
        assert_eq!(s[1].layer, "h2");
        assert_eq!(s[1].pairs, 3);
        assert!((s[1].mean - 0.7).abs() < 1e-12);
        assert!((s[1].std - 0.1).abs() < 1e-12);
        assert_eq!((s[1].min, s[1].max), (0.6, 0.8));
    }
}
