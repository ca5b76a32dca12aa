//! What changed since the previous run of the same job: a sweep that runs again (nightly, over a
//! dataset that grew) keeps the run before's results as `results.prev.json`
//! ([`svcca_results::PREVIOUS_RESULTS_NAME`]), and the report sets the two side by side: the
//! checkpoints that are new, and the layers whose similarity to the previous final checkpoint
//! moved most.
//!
//! "Moved" is read off the new learning dynamics ([`crate::dynamics`]): a layer's similarity,
//! under the report's metric, between the checkpoint that was final in the previous run and the
//! new final checkpoint. 1 means the layer has not changed since; the lower, the more it moved.
//! A layer whose previous final checkpoint was not compared with the new one is not listed.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use svcca_results::ResultsFile;

use crate::dynamics::LearningDynamics;
use crate::layers::NetworkId;

/// The comparison of a report's results with the previous run's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinceLastRun {
    pub previous_representations: usize,
    pub representations: usize,
    /// Networks at a step present now and not in the previous run (`run=mlp,seed=0,step=3000`),
    /// in the results' order.
    pub new_checkpoints: Vec<String>,
    /// Layers whose final checkpoint is newer than the previous run's, most moved first.
    pub moved: Vec<LayerMove>,
}

/// One layer's change since the previous run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerMove {
    /// `run=mlp,seed=0` (then the tags).
    pub network: String,
    pub layer: String,
    /// The final step of the previous run, and of this one.
    pub previous_final: i64,
    pub final_step: i64,
    /// Similarity of the previous final checkpoint to the new one.
    pub similarity: f64,
}

/// What changed from `previous` to `current`; `dynamics` are the current results' learning
/// dynamics under the report's metric.
pub fn since_last_run(
    previous: &ResultsFile,
    current: &ResultsFile,
    dynamics: &LearningDynamics,
) -> SinceLastRun {
    let before: BTreeSet<NetworkId> = previous
        .representations
        .iter()
        .map(|r| NetworkId::of(&r.key))
        .collect();
    let mut new_checkpoints: Vec<String> = Vec::new();
    for r in &current.representations {
        let id = NetworkId::of(&r.key);
        let label = id.label();
        if !before.contains(&id) && !new_checkpoints.contains(&label) {
            new_checkpoints.push(label);
        }
    }
    type Track<'a> = (&'a str, Option<i64>, &'a BTreeMap<String, String>, &'a str);
    let mut previous_final: BTreeMap<Track<'_>, i64> = BTreeMap::new();
    for r in &previous.representations {
        let k = &r.key;
        if let Some(step) = k.step {
            let e = previous_final
                .entry((k.run.as_str(), k.seed, &k.tags, k.layer.as_str()))
                .or_insert(step);
            *e = (*e).max(step);
        }
    }
    let mut moved = Vec::new();
    for net in &dynamics.networks {
        for l in &net.layers {
            let track = (net.run.as_str(), net.seed, &net.tags, l.layer.as_str());
            let Some(&was) = previous_final.get(&track) else {
                continue;
            };
            if was >= l.final_step {
                continue;
            }
            if let Some(similarity) = l.similarity_at(was) {
                moved.push(LayerMove {
                    network: crate::report::network_name(&net.run, net.seed, &net.tags),
                    layer: l.layer.clone(),
                    previous_final: was,
                    final_step: l.final_step,
                    similarity,
                });
            }
        }
    }
    // Stable: equal similarities keep the dynamics' order (network, then depth).
    moved.sort_by(|a, b| a.similarity.total_cmp(&b.similarity));
    SinceLastRun {
        previous_representations: previous.representations.len(),
        representations: current.representations.len(),
        new_checkpoints,
        moved,
    }
}

impl SinceLastRun {
    /// The change in one sentence.
    pub fn headline(&self, metric: &str) -> String {
        let mut s = format!(
            "Since the last run: {} new checkpoint(s) ({} representations, {} before)",
            self.new_checkpoints.len(),
            self.representations,
            self.previous_representations
        );
        match self.moved.first() {
            Some(m) => s.push_str(&format!(
                "; moved most: {} of {}, {metric} {:.3} between step {} (the last run's final \
                 checkpoint) and step {}.",
                m.layer, m.network, m.similarity, m.previous_final, m.final_step
            )),
            None => s.push_str("; no layer has a final checkpoint newer than the last run's."),
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamics::learning_dynamics;
    use crate::test_support::{results_with, vs_final};

    #[test]
    fn new_checkpoints_and_the_layers_that_moved_most_since_the_previous_final() {
        // The previous run ended at step 100; this one has step 1000 too.
        let previous = results_with(&["h1", "h2"], vs_final("svcca", 0, 100, &[(10, 0.5, 0.4)]));
        let pairs = vs_final("svcca", 0, 1000, &[(10, 0.5, 0.3), (100, 0.97, 0.6)]);
        let current = results_with(&["h1", "h2"], pairs);
        let d = learning_dynamics(&current, "svcca", 0.95).unwrap();
        let since = since_last_run(&previous, &current, &d);
        assert_eq!(since.new_checkpoints, ["run=mlp,seed=0,step=1000"]);
        assert_eq!(
            (since.previous_representations, since.representations),
            (4, 6)
        );
        let moved: Vec<(&str, i64, i64, f64)> = since
            .moved
            .iter()
            .map(|m| {
                (
                    m.layer.as_str(),
                    m.previous_final,
                    m.final_step,
                    m.similarity,
                )
            })
            .collect();
        assert_eq!(moved, [("h2", 100, 1000, 0.6), ("h1", 100, 1000, 0.97)]);
        assert!(
            since
                .headline("svcca")
                .contains("moved most: h2 of run=mlp,seed=0")
        );

        // The same results again: nothing new, nothing moved.
        let same = since_last_run(&current, &current, &d);
        assert!(same.new_checkpoints.is_empty() && same.moved.is_empty());
        assert!(same.headline("svcca").contains("0 new checkpoint(s)"));
    }
}
