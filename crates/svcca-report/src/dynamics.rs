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
//!
//! Bottom-up convergence (the paper's finding) is judged two ways, because sparse checkpoints
//! make the first coarse:
//! - *by convergence step*: convergence steps never decrease with depth. Layers converging at the
//!   same checkpoint tie, which counts as in order but says nothing about their order;
//! - *checkpoint-wise*: at each checkpoint before the final one, whether similarity to the final
//!   checkpoint is non-increasing with depth over the *depth layers* — every layer but the deepest
//!   when there are at least three (the deepest is usually the output, which the loss trains
//!   directly), else all of them — and how many (lower, deeper) layer pairs are in that order.

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
    /// The representations' tags: runs that differ only by a tag are separate tracks.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
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

/// Two adjacent depth layers at one checkpoint where the deeper one is closer to its final state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DepthRise {
    pub lower: String,
    pub deeper: String,
    pub lower_similarity: f64,
    pub deeper_similarity: f64,
}

/// The checkpoint-wise criterion at one checkpoint (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointOrder {
    pub step: i64,
    /// Similarity to the final checkpoint never rises from a depth layer to the next deeper one.
    pub non_increasing: bool,
    /// (lower, deeper) pairs of depth layers, all of them, where the lower layer is at least as
    /// close to its final state; out of `pairs`.
    pub pairs_in_order: usize,
    pub pairs: usize,
    /// The adjacent pairs that break `non_increasing`.
    pub rises: Vec<DepthRise>,
}

/// All layers of one run and seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkDynamics {
    pub run: String,
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// In depth order.
    pub layers: Vec<LayerDynamics>,
    /// Layer names sorted by convergence step (never-converged last), ties by depth.
    pub convergence_order: Vec<String>,
    /// True when convergence steps never decrease with depth (the paper's bottom-up convergence,
    /// by convergence step; ties count as in order).
    pub bottom_up: bool,
    /// The layers the checkpoint-wise criterion compares, in depth order.
    pub depth_layers: Vec<String>,
    /// The checkpoint-wise criterion at every checkpoint before the final one where all the
    /// depth layers were compared, ascending.
    pub checkpoint_order: Vec<CheckpointOrder>,
    /// Share of those checkpoints where similarity is non-increasing with depth (`None`: none).
    pub non_increasing_share: Option<f64>,
}

impl NetworkDynamics {
    /// Groups of two or more layers converging at the same step, ascending by step.
    pub fn convergence_ties(&self) -> Vec<(i64, Vec<String>)> {
        let mut by_step: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for l in &self.layers {
            if let Some(step) = l.convergence_step {
                by_step.entry(step).or_default().push(l.layer.clone());
            }
        }
        by_step.into_iter().filter(|(_, v)| v.len() > 1).collect()
    }

    /// Both bottom-up criteria in words, with what breaks them and the ties: one sentence each.
    /// `exceptions`: also list each checkpoint's layer pairs that break the checkpoint-wise order.
    pub fn bottom_up_verdict(&self, exceptions: bool) -> Vec<String> {
        let mut breaks = Vec::new();
        for w in self.layers.windows(2) {
            let (lo, hi) = (&w[0], &w[1]);
            match (lo.convergence_step, hi.convergence_step) {
                (Some(a), Some(b)) if b < a => breaks.push(format!(
                    "{} converges at step {b}, before {} at step {a}",
                    hi.layer, lo.layer
                )),
                (None, Some(b)) => breaks.push(format!(
                    "{} converges at step {b} while {} does not",
                    hi.layer, lo.layer
                )),
                _ => {}
            }
        }
        let mut first = if self.bottom_up {
            "By convergence step: bottom-up (no layer converges before the layer below it)"
                .to_string()
        } else {
            format!("By convergence step: not bottom-up: {}", breaks.join("; "))
        };
        let ties = self.convergence_ties();
        if !ties.is_empty() {
            let ties: Vec<String> = ties
                .iter()
                .map(|(step, layers)| format!("{} tie at step {step}", layers.join(", ")))
                .collect();
            first.push_str(&format!(
                "; {}, which the stored checkpoints cannot order",
                ties.join(", ")
            ));
        }
        let never: Vec<&str> = self
            .layers
            .iter()
            .filter(|l| l.convergence_step.is_none())
            .map(|l| l.layer.as_str())
            .collect();
        if !never.is_empty() {
            first.push_str(&format!(
                "; not converged before the final checkpoint: {}",
                never.join(", ")
            ));
        }
        first.push('.');
        let mut out = vec![first];
        if self.checkpoint_order.is_empty() {
            out.push(format!(
                "Checkpoint-wise over {}: no checkpoint before the final one compares them all.",
                self.depth_layers.join(", ")
            ));
            return out;
        }
        let holds: Vec<String> = self
            .checkpoint_order
            .iter()
            .filter(|c| c.non_increasing)
            .map(|c| c.step.to_string())
            .collect();
        let (in_order, pairs) = self
            .checkpoint_order
            .iter()
            .fold((0, 0), |(a, b), c| (a + c.pairs_in_order, b + c.pairs));
        let mut second = format!(
            "Checkpoint-wise over {}: similarity to the final checkpoint falls with depth at {} of {} checkpoints{}; {in_order} of {pairs} (lower, deeper) layer pairs are in that order",
            self.depth_layers.join(", "),
            holds.len(),
            self.checkpoint_order.len(),
            if holds.is_empty() {
                String::new()
            } else {
                let s = if holds.len() == 1 { "" } else { "s" };
                format!(" (step{s} {})", holds.join(", "))
            },
        );
        let rises: Vec<String> = self
            .checkpoint_order
            .iter()
            .flat_map(|c| {
                c.rises.iter().map(move |r| {
                    let (lo, hi) = distinct(r.lower_similarity, r.deeper_similarity);
                    format!("step {}: {} {lo} < {} {hi}", c.step, r.lower, r.deeper)
                })
            })
            .collect();
        if exceptions && !rises.is_empty() {
            second.push_str(&format!("; exceptions: {}", rises.join(", ")));
        }
        second.push('.');
        out.push(second);
        out
    }
}

/// Two numbers printed with 3 decimals, or as many more (up to 8) as it takes to tell them apart.
fn distinct(a: f64, b: f64) -> (String, String) {
    for digits in 3..8 {
        let (x, y) = (format!("{a:.digits$}"), format!("{b:.digits$}"));
        if x != y {
            return (x, y);
        }
    }
    (format!("{a:.8}"), format!("{b:.8}"))
}

/// The checkpoint-wise criterion for layers in depth order (see the module docs).
fn checkpoint_order(layers: &[LayerDynamics]) -> (Vec<String>, Vec<CheckpointOrder>) {
    let depth_layers: Vec<&LayerDynamics> = if layers.len() >= 3 {
        layers[..layers.len() - 1].iter().collect()
    } else {
        layers.iter().collect()
    };
    let names = depth_layers.iter().map(|l| l.layer.clone()).collect();
    if depth_layers.len() < 2 {
        return (names, Vec::new());
    }
    let mut steps: Vec<i64> = depth_layers
        .iter()
        .flat_map(|l| {
            l.points[..l.points.len().saturating_sub(1)]
                .iter()
                .map(|p| p.step)
        })
        .collect();
    steps.sort_unstable();
    steps.dedup();
    let mut out = Vec::new();
    for step in steps {
        let Some(values) = depth_layers
            .iter()
            .map(|l| {
                (l.final_step != step)
                    .then(|| l.similarity_at(step))
                    .flatten()
            })
            .collect::<Option<Vec<f64>>>()
        else {
            continue;
        };
        let mut pairs_in_order = 0;
        let mut pairs = 0;
        for i in 0..values.len() {
            for j in i + 1..values.len() {
                pairs += 1;
                if values[i] >= values[j] {
                    pairs_in_order += 1;
                }
            }
        }
        let rises: Vec<DepthRise> = (1..values.len())
            .filter(|&i| values[i] > values[i - 1])
            .map(|i| DepthRise {
                lower: depth_layers[i - 1].layer.clone(),
                deeper: depth_layers[i].layer.clone(),
                lower_similarity: values[i - 1],
                deeper_similarity: values[i],
            })
            .collect();
        out.push(CheckpointOrder {
            step,
            non_increasing: rises.is_empty(),
            pairs_in_order,
            pairs,
            rises,
        });
    }
    (names, out)
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
    type Track = (String, Option<i64>, BTreeMap<String, String>, String);
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
                .entry((
                    key.run.clone(),
                    key.seed,
                    key.tags.clone(),
                    key.layer.clone(),
                ))
                .or_insert(step);
            *e = (*e).max(step);
        }
    }

    let mut points: BTreeMap<Track, BTreeMap<i64, f64>> = BTreeMap::new();
    for pair in results.pairs_of(metric) {
        let (a, b) = (&pair.a, &pair.b);
        if a.run != b.run
            || a.seed != b.seed
            || a.tags != b.tags
            || a.layer != b.layer
            || !pair.mean.is_finite()
        {
            continue;
        }
        let (Some(sa), Some(sb)) = (a.step, b.step) else {
            continue;
        };
        let track = (a.run.clone(), a.seed, a.tags.clone(), a.layer.clone());
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

    type Network = (String, Option<i64>, BTreeMap<String, String>);
    let mut by_network: BTreeMap<Network, Vec<LayerDynamics>> = BTreeMap::new();
    let mut orders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((run, seed, tags, layer), mut steps) in points {
        let last = final_step[&(run.clone(), seed, tags.clone(), layer.clone())];
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
            .entry((run.clone(), seed, tags.clone()))
            .or_default()
            .push(LayerDynamics {
                depth: depth(order, &layer),
                run,
                seed,
                tags,
                layer,
                final_step: last,
                points,
                convergence_step,
                suggested_freeze_step: None,
            });
    }

    let networks = by_network
        .into_iter()
        .map(|((run, seed, tags), mut layers)| {
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
            let (depth_layers, checkpoint_order) = checkpoint_order(&layers);
            let non_increasing_share = (!checkpoint_order.is_empty()).then(|| {
                checkpoint_order.iter().filter(|c| c.non_increasing).count() as f64
                    / checkpoint_order.len() as f64
            });
            NetworkDynamics {
                run,
                seed,
                tags,
                layers,
                convergence_order,
                bottom_up,
                depth_layers,
                checkpoint_order,
                non_increasing_share,
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
    fn runs_that_differ_only_by_a_tag_value_are_separate_networks() {
        let tagged = |lr: &str, values: &[(i64, f64)]| {
            let mut pairs = vs_final(0, "h1", values);
            for p in &mut pairs {
                p.a.tags.insert("lr".into(), lr.into());
                p.b.tags.insert("lr".into(), lr.into());
            }
            pairs
        };
        let mut pairs = tagged("0.1", &[(0, 0.2), (400, 0.9)]);
        pairs.extend(tagged("0.01", &[(0, 0.5), (400, 0.6)]));
        let d = learning_dynamics(&results_with(&["h1"], pairs), "svcca", 0.8).unwrap();
        assert_eq!(d.networks.len(), 2);
        let at = |lr: &str| {
            let net = d.networks.iter().find(|n| n.tags["lr"] == lr).unwrap();
            assert_eq!(net.layers.len(), 1);
            net.layers[0]
                .points
                .iter()
                .map(|p| (p.step, p.similarity))
                .collect::<Vec<_>>()
        };
        assert_eq!(at("0.1"), [(0, 0.2), (400, 0.9), (2250, 1.0)]);
        assert_eq!(at("0.01"), [(0, 0.5), (400, 0.6), (2250, 1.0)]);
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

    /// Three hidden layers and an output layer over checkpoints 0, 25, 100 and the final 2250.
    fn network(h1: [f64; 3], h2: [f64; 3], h3: [f64; 3], logits: [f64; 3]) -> NetworkDynamics {
        let steps = [0, 25, 100];
        let mut pairs = Vec::new();
        for (layer, v) in [("h1", h1), ("h2", h2), ("h3", h3), ("logits", logits)] {
            let values: Vec<(i64, f64)> = steps.iter().copied().zip(v).collect();
            pairs.extend(vs_final(0, layer, &values));
        }
        let results = results_with(&["h1", "h2", "h3", "logits"], pairs);
        let mut d = learning_dynamics(&results, "svcca", 0.95).unwrap();
        assert_eq!(d.networks.len(), 1);
        d.networks.remove(0)
    }

    #[test]
    fn checkpoint_wise_order_holds_when_similarity_falls_with_depth() {
        // The output layer converges first (not bottom-up by convergence step), but at every
        // checkpoint the hidden layers are ordered by depth.
        let net = network(
            [0.8, 0.97, 0.99],
            [0.7, 0.96, 0.98],
            [0.6, 0.9, 0.97],
            [0.5, 0.99, 0.99],
        );
        assert_eq!(net.depth_layers, ["h1", "h2", "h3"]);
        let steps: Vec<i64> = net.checkpoint_order.iter().map(|c| c.step).collect();
        assert_eq!(steps, [0, 25, 100], "every checkpoint but the final one");
        for c in &net.checkpoint_order {
            assert!(c.non_increasing, "step {}", c.step);
            assert_eq!((c.pairs_in_order, c.pairs), (3, 3));
            assert!(c.rises.is_empty());
        }
        assert_eq!(net.non_increasing_share, Some(1.0));
        assert!(!net.bottom_up);
        // h1 and h2 converge at 25, h3 at 100, logits at 25: a tie and a break, both said.
        let verdict = net.bottom_up_verdict(true);
        assert_eq!(verdict.len(), 2);
        assert!(
            verdict[0]
                .contains("not bottom-up: logits converges at step 25, before h3 at step 100"),
            "{}",
            verdict[0]
        );
        assert!(
            verdict[0].contains("h1, h2, logits tie at step 25"),
            "{}",
            verdict[0]
        );
        assert!(
            verdict[1].contains("over h1, h2, h3")
                && verdict[1].contains("at 3 of 3 checkpoints (steps 0, 25, 100)")
                && verdict[1].contains("9 of 9"),
            "{}",
            verdict[1]
        );
        assert!(!verdict[1].contains("exceptions"));
    }

    #[test]
    fn checkpoint_wise_order_names_the_layers_that_break_it() {
        // At step 25 h3 is closer to its final state than h2.
        let net = network(
            [0.8, 0.9, 0.99],
            [0.7, 0.74, 0.98],
            [0.6, 0.75, 0.97],
            [0.5, 0.9, 0.99],
        );
        let at25 = &net.checkpoint_order[1];
        assert_eq!(at25.step, 25);
        assert!(!at25.non_increasing);
        assert_eq!((at25.pairs_in_order, at25.pairs), (2, 3));
        assert_eq!(at25.rises.len(), 1);
        assert_eq!(
            (at25.rises[0].lower.as_str(), at25.rises[0].deeper.as_str()),
            ("h2", "h3")
        );
        assert!(net.checkpoint_order[0].non_increasing && net.checkpoint_order[2].non_increasing);
        let share = net.non_increasing_share.unwrap();
        assert!((share - 2.0 / 3.0).abs() < 1e-12, "{share}");
        let verdict = net.bottom_up_verdict(true);
        assert!(
            verdict[1].contains("at 2 of 3 checkpoints (steps 0, 100)")
                && verdict[1].contains("8 of 9")
                && verdict[1].contains("step 25: h2 0.740 < h3 0.750"),
            "{}",
            verdict[1]
        );
        assert!(!net.bottom_up_verdict(false)[1].contains("exceptions"));
        // Nearly equal values are printed with the digits that tell them apart.
        assert_eq!(
            distinct(0.98187, 0.98189),
            ("0.98187".into(), "0.98189".into())
        );
    }

    #[test]
    fn checkpoint_wise_order_skips_checkpoints_a_layer_lacks_and_uses_all_of_two_layers() {
        let mut pairs = vs_final(0, "h1", &[(25, 0.9), (100, 0.95)]);
        pairs.extend(vs_final(0, "h2", &[(100, 0.97)]));
        let results = results_with(&["h1", "h2"], pairs);
        let d = learning_dynamics(&results, "svcca", 0.95).unwrap();
        let net = &d.networks[0];
        // Two layers: both compared (no output layer is set aside).
        assert_eq!(net.depth_layers, ["h1", "h2"]);
        let steps: Vec<i64> = net.checkpoint_order.iter().map(|c| c.step).collect();
        assert_eq!(steps, [100]);
        assert!(!net.checkpoint_order[0].non_increasing);
        assert_eq!(net.non_increasing_share, Some(0.0));
        assert!(net.bottom_up_verdict(true)[1].contains("at 0 of 1 checkpoints;"));
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
