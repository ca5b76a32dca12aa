//! Learning dynamics from `vs-final` pairs: how each layer at every checkpoint compares with the
//! same layer at the final checkpoint, when each layer converges, whether they converge bottom-up,
//! and from that a suggested freeze step per layer (the paper's Freeze Training).
//!
//! Definitions (also printed in reports):
//! - a *track* is one layer of one run and seed across checkpoints;
//! - its *final step* is the largest step stored for the track; the final checkpoint's similarity
//!   to itself is 1 by definition (a self-pair, if stored, is used instead);
//! - the *convergence step* is the first checkpoint step from which the similarity to the final
//!   checkpoint stays at or above the threshold at every later checkpoint, the final one excluded
//!   as a candidate (a layer that only matches itself at the end has not converged);
//! - the *suggested freeze step* of a layer is the latest convergence step among it and every
//!   layer below it, because freezing a layer whose inputs still move would freeze it on inputs it
//!   will never see again. It is a suggestion for a rerun of the same recipe: it is measured in
//!   hindsight and only at the stored checkpoints (the true step lies between the previous
//!   checkpoint and the one named).

use std::collections::BTreeMap;

use serde::Serialize;
use svcca_results::ResultsFile;

use crate::layers::{depth, layer_order};

/// Default similarity threshold for convergence, as in the issue (the paper reads its curves by eye).
pub const DEFAULT_THRESHOLD: f64 = 0.95;

/// Similarity of one checkpoint to the final one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct DynamicsPoint {
    pub step: i64,
    pub similarity: f64,
}

/// One layer of one run and seed across checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerDynamics {
    pub run: String,
    pub seed: Option<i64>,
    pub layer: String,
    /// Position from the input (0 = first layer) in the run's layer order.
    pub depth: usize,
    pub final_step: i64,
    /// Ascending by step; the last point is the final checkpoint.
    pub points: Vec<DynamicsPoint>,
    /// `None`: the layer does not stay above the threshold before the final checkpoint.
    pub convergence_step: Option<i64>,
    /// `None`: no suggestion (this layer or one below it never converged before the end).
    pub suggested_freeze_step: Option<i64>,
}

impl LayerDynamics {
    /// Similarity at `step`, if that checkpoint was compared.
    pub fn similarity_at(&self, step: i64) -> Option<f64> {
        self.points
            .iter()
            .find(|p| p.step == step)
            .map(|p| p.similarity)
    }

    /// The suggestion in words, with the threshold and metric it rests on.
    pub fn freeze_suggestion(&self, metric: &str, threshold: f64) -> String {
        match (self.suggested_freeze_step, self.convergence_step) {
            (Some(step), _) => format!(
                "suggestion: {} could be frozen from step {step} ({metric} similarity to the final \
                 checkpoint stays >= {threshold} from then on for it and every layer below it)",
                self.layer
            ),
            (None, Some(_)) => format!(
                "no suggestion for {}: it converges, but a layer below it does not stay >= {threshold} \
                 before the final checkpoint",
                self.layer
            ),
            (None, None) => format!(
                "no suggestion for {}: its {metric} similarity to the final checkpoint does not stay \
                 >= {threshold} before the final checkpoint",
                self.layer
            ),
        }
    }
}

/// All layers of one run and seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkDynamics {
    pub run: String,
    pub seed: Option<i64>,
    /// In depth order.
    pub layers: Vec<LayerDynamics>,
    /// Layer names sorted by convergence step (never-converged last), ties by depth.
    pub convergence_order: Vec<String>,
    /// True when convergence steps never decrease with depth (the paper's bottom-up convergence).
    pub bottom_up: bool,
}

/// Learning dynamics of every run and seed in a results file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LearningDynamics {
    pub metric: String,
    pub threshold: f64,
    pub networks: Vec<NetworkDynamics>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DynamicsError {
    #[error("convergence threshold must be a number in (0, 1], got {threshold}")]
    BadThreshold { threshold: f64 },
}

/// Learning dynamics of `metric` from the pairs that compare a checkpoint with the final
/// checkpoint of the same run, seed and layer. Other pairs are ignored, so this also works on an
/// all-pairs sweep. Returns no networks when the file holds no such pairs.
pub fn learning_dynamics(
    results: &ResultsFile,
    metric: &str,
    threshold: f64,
) -> Result<LearningDynamics, DynamicsError> {
    if !(threshold > 0.0 && threshold <= 1.0) {
        return Err(DynamicsError::BadThreshold { threshold });
    }
    type Track = (String, Option<i64>, String);
    // The final step of each track is the largest step the sweep knows for it.
    let mut final_step: BTreeMap<Track, i64> = BTreeMap::new();
    let keys = results
        .representations
        .iter()
        .map(|r| &r.key)
        .chain(results.pairs.iter().flat_map(|p| [&p.a, &p.b]));
    for key in keys {
        if let Some(step) = key.step {
            let e = final_step
                .entry((key.run.clone(), key.seed, key.layer.clone()))
                .or_insert(step);
            *e = (*e).max(step);
        }
    }

    let mut points: BTreeMap<Track, BTreeMap<i64, f64>> = BTreeMap::new();
    for pair in results.pairs_of(metric) {
        let (a, b) = (&pair.a, &pair.b);
        if a.run != b.run || a.seed != b.seed || a.layer != b.layer || !pair.mean.is_finite() {
            continue;
        }
        let (Some(sa), Some(sb)) = (a.step, b.step) else {
            continue;
        };
        let track = (a.run.clone(), a.seed, a.layer.clone());
        let Some(&last) = final_step.get(&track) else {
            continue;
        };
        let step = if sb == last {
            sa
        } else if sa == last {
            sb
        } else {
            continue;
        };
        // First pair wins, so a file with duplicates still gives one deterministic answer.
        points
            .entry(track)
            .or_default()
            .entry(step)
            .or_insert(pair.mean);
    }

    let mut by_network: BTreeMap<(String, Option<i64>), Vec<LayerDynamics>> = BTreeMap::new();
    let mut orders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((run, seed, layer), mut steps) in points {
        let last = final_step[&(run.clone(), seed, layer.clone())];
        steps.entry(last).or_insert(1.0);
        let points: Vec<DynamicsPoint> = steps
            .into_iter()
            .map(|(step, similarity)| DynamicsPoint { step, similarity })
            .collect();
        let order = orders
            .entry(run.clone())
            .or_insert_with(|| layer_order(results, &run));
        let convergence_step = convergence_step(&points, threshold);
        by_network
            .entry((run.clone(), seed))
            .or_default()
            .push(LayerDynamics {
                depth: depth(order, &layer),
                run,
                seed,
                layer,
                final_step: last,
                points,
                convergence_step,
                suggested_freeze_step: None,
            });
    }

    let networks = by_network
        .into_iter()
        .map(|((run, seed), mut layers)| {
            layers.sort_by(|x, y| x.depth.cmp(&y.depth).then_with(|| x.layer.cmp(&y.layer)));
            // Freeze bottom-up: a layer waits for every layer below it.
            let mut latest: Option<i64> = Some(i64::MIN);
            for layer in &mut layers {
                latest = match (latest, layer.convergence_step) {
                    (Some(l), Some(c)) => Some(l.max(c)),
                    _ => None,
                };
                layer.suggested_freeze_step = latest;
            }
            let mut order: Vec<&LayerDynamics> = layers.iter().collect();
            order.sort_by_key(|l| (l.convergence_step.is_none(), l.convergence_step, l.depth));
            let convergence_order = order.iter().map(|l| l.layer.clone()).collect();
            let bottom_up =
                layers
                    .windows(2)
                    .all(|w| match (w[0].convergence_step, w[1].convergence_step) {
                        (Some(lo), Some(hi)) => lo <= hi,
                        (_, None) => true,
                        (None, Some(_)) => false,
                    });
            NetworkDynamics {
                run,
                seed,
                layers,
                convergence_order,
                bottom_up,
            }
        })
        .collect();
    Ok(LearningDynamics {
        metric: metric.to_string(),
        threshold,
        networks,
    })
}

/// First step (the final one excluded) from which every later point is at or above `threshold`.
fn convergence_step(points: &[DynamicsPoint], threshold: f64) -> Option<i64> {
    let before_final = &points[..points.len().saturating_sub(1)];
    let mut candidate = None;
    for p in before_final.iter().rev() {
        if p.similarity >= threshold {
            candidate = Some(p.step);
        } else {
            break;
        }
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{key, pair, results_with};

    fn vs_final(seed: i64, layer: &str, values: &[(i64, f64)]) -> Vec<svcca_results::PairRecord> {
        values
            .iter()
            .map(|&(step, v)| {
                pair(
                    key("mlp", seed, step, layer),
                    key("mlp", seed, 2250, layer),
                    "svcca",
                    v,
                )
            })
            .collect()
    }

    #[test]
    fn convergence_needs_to_stay_above_the_threshold() {
        let mut pairs = vs_final(
            0,
            "h1",
            &[(0, 0.3), (25, 0.96), (100, 0.94), (400, 0.97), (1000, 0.99)],
        );
        pairs.extend(vs_final(
            0,
            "h2",
            &[(0, 0.2), (25, 0.5), (100, 0.96), (400, 0.98), (1000, 0.99)],
        ));
        pairs.extend(vs_final(
            0,
            "h3",
            &[(0, 0.1), (25, 0.3), (100, 0.6), (400, 0.8), (1000, 0.9)],
        ));
        let results = results_with(&["h1", "h2", "h3"], pairs);
        let d = learning_dynamics(&results, "svcca", 0.95).unwrap();
        assert_eq!(d.networks.len(), 1);
        let net = &d.networks[0];
        let names: Vec<&str> = net.layers.iter().map(|l| l.layer.as_str()).collect();
        assert_eq!(names, ["h1", "h2", "h3"]);
        // h1 dips below at 100, so it converges at 400, after h2.
        assert_eq!(net.layers[0].convergence_step, Some(400));
        assert_eq!(net.layers[1].convergence_step, Some(100));
        assert_eq!(net.layers[2].convergence_step, None);
        assert_eq!(net.convergence_order, ["h2", "h1", "h3"]);
        assert!(!net.bottom_up);
        // Freezing waits for the layers below: h2 cannot freeze before h1.
        assert_eq!(net.layers[0].suggested_freeze_step, Some(400));
        assert_eq!(net.layers[1].suggested_freeze_step, Some(400));
        assert_eq!(net.layers[2].suggested_freeze_step, None);
        assert!(
            net.layers[0]
                .freeze_suggestion("svcca", 0.95)
                .contains("0.95")
        );
        // The final checkpoint is appended at similarity 1 and points are ordered numerically.
        let steps: Vec<i64> = net.layers[0].points.iter().map(|p| p.step).collect();
        assert_eq!(steps, [0, 25, 100, 400, 1000, 2250]);
        assert_eq!(net.layers[0].similarity_at(2250), Some(1.0));
    }

    #[test]
    fn bottom_up_when_lower_layers_converge_first_and_pairs_may_be_reversed() {
        let mut pairs = vs_final(1, "h1", &[(25, 0.97), (100, 0.99)]);
        // Final checkpoint on the left: still a vs-final pair.
        pairs.push(pair(
            key("mlp", 1, 2250, "h2"),
            key("mlp", 1, 25, "h2"),
            "svcca",
            0.5,
        ));
        pairs.push(pair(
            key("mlp", 1, 2250, "h2"),
            key("mlp", 1, 100, "h2"),
            "svcca",
            0.96,
        ));
        // Noise that must be ignored: another metric, a cross-seed pair, a pair of two non-final steps.
        pairs.push(pair(
            key("mlp", 1, 25, "h2"),
            key("mlp", 1, 2250, "h2"),
            "cka",
            0.99,
        ));
        pairs.push(pair(
            key("mlp", 1, 25, "h2"),
            key("mlp", 2, 2250, "h2"),
            "svcca",
            0.99,
        ));
        pairs.push(pair(
            key("mlp", 1, 25, "h2"),
            key("mlp", 1, 100, "h2"),
            "svcca",
            0.99,
        ));
        let results = results_with(&["h1", "h2"], pairs);
        let d = learning_dynamics(&results, "svcca", 0.95).unwrap();
        let net = d.networks.iter().find(|n| n.seed == Some(1)).unwrap();
        assert_eq!(net.layers[0].convergence_step, Some(25));
        assert_eq!(net.layers[1].convergence_step, Some(100));
        assert_eq!(net.layers[1].similarity_at(25), Some(0.5));
        assert!(net.bottom_up);
        assert_eq!(net.convergence_order, ["h1", "h2"]);
    }

    #[test]
    fn refuses_bad_thresholds() {
        let results = results_with(&["h1"], vec![]);
        for t in [0.0, -1.0, 1.5, f64::NAN] {
            assert!(learning_dynamics(&results, "svcca", t).is_err());
        }
        assert!(
            learning_dynamics(&results, "svcca", 0.9)
                .unwrap()
                .networks
                .is_empty()
        );
    }
}
