//! The answers a report leads with, drawn from the analyses below them: whether each network's
//! layers converge bottom-up and at which step each layer converges ([`crate::dynamics`]), how
//! much seeds agree on each layer at the last step against the Gaussian null at the same shapes
//! ([`crate::seeds`]), the verdict under every other stored metric, and the planned pairs the
//! sweep skipped.
//!
//! Nothing here is computed anew: every number is one of the analyses', picked and put in the
//! order a reader asks for it, so the page's summary and its sections cannot disagree.

use std::collections::BTreeMap;

use serde::Serialize;
use svcca_results::SkippedPairs;

use crate::dynamics::{LearningDynamics, NetworkDynamics};
use crate::seeds::SeedSpread;

/// The answers of one report (`report.json`'s `answers`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answers {
    /// The metric the answers use (the report's).
    pub metric: String,
    pub threshold: f64,
    /// One per network with learning dynamics, in the dynamics' order.
    pub networks: Vec<NetworkAnswer>,
    /// Cross-seed agreement per layer at each run's last step with seed pairs.
    pub cross_seed: Vec<SeedAnswer>,
    /// The bottom-up verdict under each other stored metric with learning dynamics.
    pub other_metrics: Vec<MetricAnswer>,
    /// Planned pairs the sweep did not compare.
    pub skipped: Vec<SkippedPairs>,
}

/// One network's answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkAnswer {
    /// `run=mlp,seed=0` (then the tags), as [`crate::report::network_name`] names it.
    pub network: String,
    /// Convergence steps never decrease with depth (ties count as in order).
    pub bottom_up: bool,
    /// Share of checkpoints where similarity to the final checkpoint falls with depth.
    pub non_increasing_share: Option<f64>,
    /// Both criteria in words ([`NetworkDynamics::bottom_up_verdict`]).
    pub verdict: Vec<String>,
    /// Each layer's convergence step, input to output (`None`: not converged before the end).
    pub convergence: Vec<LayerStep>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerStep {
    pub layer: String,
    pub step: Option<i64>,
}

/// One layer's agreement across seeds at its run's last step with seed pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedAnswer {
    /// `run=mlp` (then the tags).
    pub network: String,
    pub step: Option<i64>,
    pub layer: String,
    pub pairs: usize,
    pub mean: f64,
    pub std: f64,
    /// The largest Gaussian null among the seed pairs (`None`: not computed).
    pub null: Option<f64>,
}

impl SeedAnswer {
    /// Whether the agreement says anything: above its null, or unknown (no null computed).
    pub fn above_null(&self) -> Option<bool> {
        self.null.map(|z| self.mean > z)
    }
}

/// The bottom-up verdict under one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricAnswer {
    pub metric: String,
    pub networks: usize,
    pub bottom_up_networks: usize,
}

impl Answers {
    /// Networks whose layers converge bottom-up (by convergence step).
    pub fn bottom_up_networks(&self) -> usize {
        self.networks.iter().filter(|n| n.bottom_up).count()
    }

    /// The headline in one sentence: bottom-up or not, in how many networks, under which metric.
    pub fn headline(&self) -> String {
        let n = self.networks.len();
        if n == 0 {
            return format!(
                "Bottom-up convergence cannot be judged: no pair compares a checkpoint with the \
                 final checkpoint of the same layer ({} similarity; a vs-final sweep gives them).",
                self.metric
            );
        }
        let up = self.bottom_up_networks();
        let verdict = match (up, n) {
            (0, 1) => "No: the layers do not converge bottom-up".to_string(),
            (1, 1) => "Yes: the layers converge bottom-up".to_string(),
            (0, _) => format!("No: the layers converge bottom-up in none of the {n} networks"),
            _ if up == n => format!("Yes: the layers converge bottom-up in all {n} networks"),
            _ => format!("In part: the layers converge bottom-up in {up} of {n} networks"),
        };
        format!(
            "{verdict}, judged by convergence step ({} similarity to the final checkpoint \
             staying >= {}).",
            self.metric, self.threshold
        )
    }
}

/// The answers of a report from its analyses. `null_of` gives a seed spread's Gaussian null
/// (the largest over its seed pairs), when computed.
pub fn answers(
    dynamics: &LearningDynamics,
    other_dynamics: &[LearningDynamics],
    seeds: &[SeedSpread],
    null_of: impl Fn(&SeedSpread) -> Option<f64>,
    skipped: &[SkippedPairs],
) -> Answers {
    let networks = dynamics.networks.iter().map(network_answer).collect();
    // The last step with seed pairs of each run (and tags): the trained networks.
    let mut last: BTreeMap<(&str, &BTreeMap<String, String>), Option<i64>> = BTreeMap::new();
    for s in seeds {
        let e = last.entry((s.run.as_str(), &s.tags)).or_insert(s.step);
        *e = (*e).max(s.step);
    }
    let cross_seed = seeds
        .iter()
        .filter(|s| last.get(&(s.run.as_str(), &s.tags)) == Some(&s.step))
        .map(|s| SeedAnswer {
            network: crate::report::network_name(&s.run, None, &s.tags),
            step: s.step,
            layer: s.layer.clone(),
            pairs: s.pairs,
            mean: s.mean,
            std: s.std,
            null: null_of(s),
        })
        .collect();
    let other_metrics = other_dynamics
        .iter()
        .filter(|d| !d.networks.is_empty())
        .map(|d| MetricAnswer {
            metric: d.metric.clone(),
            networks: d.networks.len(),
            bottom_up_networks: d.networks.iter().filter(|n| n.bottom_up).count(),
        })
        .collect();
    Answers {
        metric: dynamics.metric.clone(),
        threshold: dynamics.threshold,
        networks,
        cross_seed,
        other_metrics,
        skipped: skipped.to_vec(),
    }
}

fn network_answer(net: &NetworkDynamics) -> NetworkAnswer {
    NetworkAnswer {
        network: crate::report::network_name(&net.run, net.seed, &net.tags),
        bottom_up: net.bottom_up,
        non_increasing_share: net.non_increasing_share,
        verdict: net.bottom_up_verdict(false),
        convergence: net
            .layers
            .iter()
            .map(|l| LayerStep {
                layer: l.layer.clone(),
                step: l.convergence_step,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamics::learning_dynamics;
    use crate::seeds::cross_seed;
    use crate::test_support::{key, pair, results_with, vs_final};

    /// Two seeds, h1 converging at step 100 and h2 only at the end; seeds agree more on h1.
    fn results() -> svcca_results::ResultsFile {
        let mut pairs = Vec::new();
        for seed in [0, 1] {
            pairs.extend(vs_final(
                "svcca",
                seed,
                1000,
                &[(10, 0.5, 0.3), (100, 0.97, 0.8)],
            ));
        }
        for (step, h1, h2) in [(100, 0.5, 0.4), (1000, 0.9, 0.6)] {
            pairs.push(pair(
                key("mlp", 0, step, "h1"),
                key("mlp", 1, step, "h1"),
                "svcca",
                h1,
            ));
            pairs.push(pair(
                key("mlp", 0, step, "h2"),
                key("mlp", 1, step, "h2"),
                "svcca",
                h2,
            ));
        }
        results_with(&["h1", "h2"], pairs)
    }

    #[test]
    fn answers_pick_convergence_steps_and_the_last_step_of_cross_seed_agreement() {
        let results = results();
        let d = learning_dynamics(&results, "svcca", 0.95).unwrap();
        let seeds = cross_seed(&results, "svcca");
        let a = answers(&d, &[], &seeds, |s| (s.layer == "h2").then_some(0.7), &[]);
        assert_eq!(a.networks.len(), 2);
        let steps: Vec<(String, Option<i64>)> = a.networks[0]
            .convergence
            .iter()
            .map(|l| (l.layer.clone(), l.step))
            .collect();
        assert_eq!(steps, [("h1".into(), Some(100)), ("h2".into(), None)]);
        assert!(a.networks.iter().all(|n| n.bottom_up));
        assert!(a.headline().starts_with("Yes"), "{}", a.headline());
        // Only the last step with seed pairs, each layer with its null.
        let got: Vec<(&str, Option<i64>, f64, Option<bool>)> = a
            .cross_seed
            .iter()
            .map(|s| (s.layer.as_str(), s.step, s.mean, s.above_null()))
            .collect();
        assert_eq!(
            got,
            [
                ("h1", Some(1000), 0.9, None),
                ("h2", Some(1000), 0.6, Some(false))
            ]
        );
    }

    #[test]
    fn a_layer_converging_before_the_one_below_it_is_not_bottom_up() {
        let pairs = vs_final("svcca", 0, 1000, &[(10, 0.5, 0.96), (100, 0.97, 0.98)]);
        let results = results_with(&["h1", "h2"], pairs);
        let d = learning_dynamics(&results, "svcca", 0.95).unwrap();
        let a = answers(&d, &[], &[], |_| None, &[]);
        assert!(!a.networks[0].bottom_up);
        assert!(a.headline().starts_with("No"), "{}", a.headline());
        assert!(a.networks[0].verdict[0].contains("h2 converges at step 10, before h1"));
        let none = answers(
            &learning_dynamics(&results_with(&[], vec![]), "svcca", 0.95).unwrap(),
            &[],
            &[],
            |_| None,
            &[],
        );
        assert!(
            none.headline().contains("cannot be judged"),
            "{}",
            none.headline()
        );
    }
}
