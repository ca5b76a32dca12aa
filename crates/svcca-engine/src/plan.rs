//! The planner: which representations take part, which pairs are compared, and how the work is
//! cut into tasks.
//!
//! Everything here is a pure function of the job spec and the dataset's manifest (never of the
//! number of workers), so a rerun plans the same tasks and merges them in the same order:
//!
//! - row chunks: `[0, n)` cut into equal ranges of `rows_per_task` datapoints (the same grid for
//!   every representation, so pass-2 products line up row for row);
//! - pass 1: one task per (representation content, row chunk);
//! - whitening: one task per representation content (its eigendecompositions);
//! - projection: one task per (whitening basis, row chunk), writing `Z` to the cache;
//! - pass 2: representations grouped into blocks; one task per pair of blocks holding at least
//!   one needed pair (a *tile*), computing `Z_Aᵀ Z_B` over every row chunk in order.
//!
//! Task memory is estimated from shapes (`bytes_*` below) and kept under the spec's bound.

use std::collections::{BTreeMap, BTreeSet};

use svcca_results::RepresentationKey;

use crate::spec::{ComparisonPlan, JobSpec, Selection, glob_match};

/// A representation as the planner sees it (from the dataset's manifest).
#[derive(Debug, Clone, PartialEq)]
pub struct RepInfo {
    pub key: RepresentationKey,
    /// Shape of one datapoint: `[neurons]` or `[h, w, c]`.
    pub shape: Vec<usize>,
    pub datapoints: u64,
    /// Content checksum of the representation's shards.
    pub checksum: String,
    /// Depth of the layer in its network (the dataset's `depth`), when the source knows it.
    pub depth: Option<u32>,
    /// The dataset's layout (`dense`, `nhwc`, `tokens`), when the source knows it.
    pub layout: Option<String>,
}

impl RepInfo {
    /// Columns of the rows the maths sees: neurons, or channels of a conv layer (whose spatial
    /// positions the conv method turns into datapoints, averages, or frequencies).
    pub fn columns(&self) -> usize {
        match self.shape.as_slice() {
            [.., c] if self.shape.len() == 3 => *c,
            other => other.iter().product(),
        }
    }

    pub fn is_conv(&self) -> bool {
        self.shape.len() == 3
    }

    /// A `[sequences, tokens, features]` layer (listed as a one-row image, `[1, tokens, f]`).
    pub fn is_tokens(&self) -> bool {
        self.layout.as_deref() == Some("tokens")
    }
}

/// A job that cannot be planned on this dataset.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("the selection matches no representation of the dataset ({detail})")]
    EmptySelection { detail: String },
    #[error(
        "selected key `{key}` matches no representation of the dataset; `svcca ls DATASET` lists them"
    )]
    UnknownKey { key: String },
    #[error("pair ({a}, {b}): {problem}")]
    BadPair {
        a: String,
        b: String,
        problem: String,
    },
    #[error("{plan} needs {field} numbers, but representation `{label}` has none")]
    MissingField {
        plan: &'static str,
        field: &'static str,
        label: String,
    },
    #[error(
        "`{label}` has {n} datapoint(s): at least 2 are needed for a covariance (the SVCCA authors advise 5-10x more datapoints than neurons)"
    )]
    TooFewDatapoints { label: String, n: u64 },
    #[error("the comparison plan produced no pair: {detail}")]
    NoPairs { detail: String },
    #[error(
        "representations cover different datapoints: `{a}` has {n_a} and `{b}` has {n_b}; every \
         representation of a sweep must cover the same probe set in the same order"
    )]
    DatapointMismatch {
        a: String,
        n_a: u64,
        b: String,
        n_b: u64,
    },
    #[error(
        "`{label}` has datapoints of shape {shape:?}: sweeps compare dense layers ([neurons]) and \
         conv layers ([h, w, channels], NHWC, by conv method `{method}`); reshape it when ingesting"
    )]
    ConvUnsupported {
        label: String,
        shape: Vec<usize>,
        method: &'static str,
    },
    #[error(
        "`{label}` is a tokens layer [sequences, tokens, features]: choose how to compare it with \
         --tokens fold (every token is a datapoint) or --tokens mean (the mean of each sequence's \
         tokens); in a job file: tokens = \"fold\" or \"mean\""
    )]
    TokensMethodRequired { label: String },
    #[error(
        "--tokens {tokens} compares tokens layers by the `{needed}` conv method, but this job \
         compares its conv layers by `{conv}`; sweep them separately or set conv = \"{needed}\""
    )]
    TokensConvConflict {
        tokens: &'static str,
        needed: &'static str,
        conv: &'static str,
    },
    #[error(
        "{what} needs about {needed_mb} MiB per task, over the bound of {bound_mb} MiB; raise resources.memory_mb"
    )]
    OverMemory {
        what: String,
        needed_mb: u64,
        bound_mb: u64,
    },
}

fn field_value(key: &RepresentationKey, field: &str) -> Option<String> {
    match field {
        "run" => Some(key.run.clone()),
        "seed" => key.seed.map(|s| s.to_string()),
        "step" => key.step.map(|s| s.to_string()),
        "layer" => Some(key.layer.clone()),
        "label" | "key" => Some(key.label()),
        tag => key.tags.get(tag).cloned(),
    }
}

/// True when `pattern` matches the key's canonical form, with its tags or without them, or
/// the label earlier versions wrote (job specs written for them keep working).
fn label_matches(pattern: &str, key: &RepresentationKey) -> bool {
    glob_match(pattern, &key.id())
        || glob_match(pattern, &key.base_id())
        || glob_match(pattern, &key.legacy_label())
        || glob_match(pattern, &key.legacy_base_label())
}

/// The selected representations, sorted by key (the order of results and matrices).
pub fn select(all: &[RepInfo], selection: &Selection) -> Result<Vec<RepInfo>, PlanError> {
    for pattern in &selection.keys {
        if !all.iter().any(|r| label_matches(pattern, &r.key)) {
            return Err(PlanError::UnknownKey {
                key: pattern.clone(),
            });
        }
    }
    let mut chosen: Vec<RepInfo> = all
        .iter()
        .filter(|r| {
            let by_key = selection.keys.is_empty()
                || selection.keys.iter().any(|p| label_matches(p, &r.key));
            let by_fields = selection.filters.iter().all(|(field, patterns)| {
                if matches!(field.as_str(), "label" | "key") {
                    return patterns.as_slice().iter().any(|p| label_matches(p, &r.key));
                }
                field_value(&r.key, field)
                    .is_some_and(|v| patterns.as_slice().iter().any(|p| glob_match(p, &v)))
            });
            by_key && by_fields
        })
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err(PlanError::EmptySelection {
            detail: format!(
                "{} representations in the dataset; filters {:?}, keys {:?}",
                all.len(),
                selection
                    .filters
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_slice().join("|")))
                    .collect::<Vec<_>>(),
                selection.keys
            ),
        });
    }
    chosen.sort_by(|a, b| a.key.cmp(&b.key));
    chosen.dedup_by(|a, b| a.key == b.key);
    Ok(chosen)
}

/// Checks that every representation covers the same datapoints (at least 2); returns that count.
pub fn common_datapoints(reps: &[RepInfo]) -> Result<u64, PlanError> {
    let first = &reps[0];
    if first.datapoints < 2 {
        return Err(PlanError::TooFewDatapoints {
            label: first.key.label(),
            n: first.datapoints,
        });
    }
    for r in &reps[1..] {
        if r.datapoints != first.datapoints {
            return Err(PlanError::DatapointMismatch {
                a: first.key.label(),
                n_a: first.datapoints,
                b: r.key.label(),
                n_b: r.datapoints,
            });
        }
    }
    Ok(first.datapoints)
}

/// The pairs `(i, j)` (indices into `reps`) the spec asks for, sorted and without repeats.
pub fn plan_pairs(reps: &[RepInfo], spec: &JobSpec) -> Result<Vec<(usize, usize)>, PlanError> {
    let mut pairs: BTreeSet<(usize, usize)> = BTreeSet::new();
    match spec.comparison {
        ComparisonPlan::AllPairs => {
            for i in 0..reps.len() {
                for j in i + 1..reps.len() {
                    pairs.insert((i, j));
                }
            }
        }
        ComparisonPlan::VsFinal => {
            let mut groups: BTreeMap<(String, Option<i64>, String), Vec<usize>> = BTreeMap::new();
            for (i, r) in reps.iter().enumerate() {
                if r.key.step.is_none() {
                    return Err(PlanError::MissingField {
                        plan: "vs-final",
                        field: "step",
                        label: r.key.label(),
                    });
                }
                groups
                    .entry((r.key.run.clone(), r.key.seed, r.key.layer.clone()))
                    .or_default()
                    .push(i);
            }
            for members in groups.values() {
                let last_step = members.iter().map(|&i| reps[i].key.step).max().flatten();
                let finals: Vec<usize> = members
                    .iter()
                    .copied()
                    .filter(|&i| reps[i].key.step == last_step)
                    .collect();
                // Reps differing only in tags at the final step: compare against the first.
                let Some(&fin) = finals.first() else { continue };
                for &i in members {
                    if i != fin && reps[i].key.step != last_step {
                        pairs.insert((i, fin));
                    }
                }
            }
        }
        ComparisonPlan::CrossSeed => {
            let mut groups: BTreeMap<(String, Option<i64>, String), Vec<usize>> = BTreeMap::new();
            for (i, r) in reps.iter().enumerate() {
                if r.key.seed.is_none() {
                    return Err(PlanError::MissingField {
                        plan: "cross-seed",
                        field: "seed",
                        label: r.key.label(),
                    });
                }
                groups
                    .entry((r.key.run.clone(), r.key.step, r.key.layer.clone()))
                    .or_default()
                    .push(i);
            }
            for members in groups.values() {
                for (x, &i) in members.iter().enumerate() {
                    for &j in &members[x + 1..] {
                        if reps[i].key.seed != reps[j].key.seed {
                            pairs.insert((i.min(j), i.max(j)));
                        }
                    }
                }
            }
        }
        ComparisonPlan::Pairs => {
            let mut index: BTreeMap<String, usize> = BTreeMap::new();
            // A key without tags names the one selected representation that has it.
            let mut by_base: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (i, r) in reps.iter().enumerate() {
                index.insert(r.key.id(), i);
                index.insert(r.key.legacy_label(), i);
                by_base.entry(r.key.base_id()).or_default().push(i);
                by_base
                    .entry(r.key.legacy_base_label())
                    .or_default()
                    .push(i);
            }
            for [a, b] in &spec.pairs {
                let find = |label: &str| {
                    let bad = |problem: String| PlanError::BadPair {
                        a: a.clone(),
                        b: b.clone(),
                        problem,
                    };
                    // Fields and tags may come in any order: `layer=h1,run=mlp,...`.
                    let canonical = RepresentationKey::parse_id(label).map(|k| k.id());
                    let label = canonical.as_deref().unwrap_or(label);
                    if let Some(&i) = index.get(label) {
                        return Ok(i);
                    }
                    match by_base.get(label).map(Vec::as_slice) {
                        Some(&[i]) => Ok(i),
                        Some(several) => Err(bad(format!(
                            "`{label}` names {} selected representations that differ by their tags ({}); name one with its tags",
                            several.len(),
                            several
                                .iter()
                                .map(|&i| reps[i].key.label())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))),
                        None => Err(bad(format!(
                            "`{label}` is not a selected representation (keys look like run=mlp,seed=0,step=2250,layer=h1, with tags as run=mlp,seed=0,step=2250,layer=h1,lr=0.1)"
                        ))),
                    }
                };
                let (i, j) = (find(a)?, find(b)?);
                if i == j {
                    return Err(PlanError::BadPair {
                        a: a.clone(),
                        b: b.clone(),
                        problem: "a representation compared with itself".into(),
                    });
                }
                pairs.insert((i, j));
            }
        }
    }
    if pairs.is_empty() {
        return Err(PlanError::NoPairs {
            detail: format!(
                "{} selected representation(s) give nothing to compare under {} (vs-final needs several steps per layer, cross-seed several seeds)",
                reps.len(),
                spec.comparison.as_str()
            ),
        });
    }
    Ok(pairs.into_iter().collect())
}

const MIB: u64 = 1 << 20;

/// Bytes a pass-1 task needs for `rows` rows of `cols` columns: the f32 block as read (twice:
/// decoded shard buffers and our copy), core's f64 scratch (capped at 32 MiB), two `d × d`.
// The estimates saturate: shapes come from a manifest, which may claim anything, and a
// saturated estimate is simply over every bound.
pub fn bytes_moments(rows: u64, cols: u64) -> u64 {
    let block = rows.saturating_mul(cols).saturating_mul(8);
    block
        .saturating_add(block.min(32 * MIB))
        .saturating_add(cols.saturating_mul(cols).saturating_mul(16))
}

/// Bytes a projection task needs: the f32 block twice, the f64 centred copy and `Z`
/// (`k ≤ cols`), plus the moments it whitens from.
pub fn bytes_project(rows: u64, cols: u64) -> u64 {
    rows.saturating_mul(cols)
        .saturating_mul(24)
        .saturating_add(cols.saturating_mul(cols).saturating_mul(24))
}

/// Bytes a pass-2 tile needs: one row chunk of both blocks and the product.
pub fn bytes_cross(rows: u64, dims_a: u64, dims_b: u64) -> u64 {
    rows.saturating_mul(dims_a.saturating_add(dims_b))
        .saturating_mul(16)
        .saturating_add(dims_a.saturating_mul(dims_b).saturating_mul(8))
}

/// Datapoints per task: the spec's value, or the most that fits the memory bound for the widest
/// representation.
pub fn rows_per_task(spec: &JobSpec, n: u64, max_cols: u64) -> Result<u64, PlanError> {
    let bound = spec.resources.memory_mb.saturating_mul(MIB);
    if let Some(rows) = spec.resources.rows_per_task {
        return Ok(rows.min(n).max(1));
    }
    let fixed = max_cols
        .saturating_mul(max_cols)
        .saturating_mul(24)
        .saturating_add(32 * MIB);
    if fixed >= bound {
        return Err(PlanError::OverMemory {
            what: format!("a representation of {max_cols} neurons"),
            needed_mb: fixed.div_ceil(MIB).saturating_add(1),
            bound_mb: spec.resources.memory_mb,
        });
    }
    // Projection is the largest per-row cost (24 bytes per value); leave room for the product.
    let per_row = max_cols.max(1).saturating_mul(40);
    Ok(((bound - fixed) / per_row).clamp(1, n.max(1)))
}

/// `[0, n)` in ranges of `rows` (the last may be shorter).
pub fn row_chunks(n: u64, rows: u64) -> Vec<(u64, u64)> {
    let rows = rows.max(1);
    (0..n.div_ceil(rows))
        .map(|c| (c * rows, ((c + 1) * rows).min(n)))
        .collect()
}

/// Groups representations into blocks for pass 2.
///
/// `dims[i]` is representation `i`'s whitened dimension. Blocks follow the comparison's
/// structure where it has one (vs-final: one layer's checkpoints; cross-seed: one layer's seeds),
/// so that needed pairs fall inside diagonal tiles; all-pairs cuts the sorted list into about
/// eight blocks (36 tiles) unless memory asks for more. With four (ten tiles, the diagonal ones
/// half the size of the others) the last tile of a 2-worker sweep ran alone for 5% of its time.
pub fn blocks(
    reps: &[RepInfo],
    dims: &[usize],
    plan: ComparisonPlan,
    pairs: &[(usize, usize)],
    max_block_dims: usize,
) -> Vec<Vec<usize>> {
    let involved: BTreeSet<usize> = pairs.iter().flat_map(|&(i, j)| [i, j]).collect();
    let groups: Vec<Vec<usize>> = match plan {
        ComparisonPlan::VsFinal | ComparisonPlan::CrossSeed => {
            let mut g: BTreeMap<(String, Option<i64>, String), Vec<usize>> = BTreeMap::new();
            for &i in &involved {
                let k = &reps[i].key;
                let group = if plan == ComparisonPlan::VsFinal {
                    (k.run.clone(), k.seed, k.layer.clone())
                } else {
                    (k.run.clone(), k.step, k.layer.clone())
                };
                g.entry(group).or_default().push(i);
            }
            g.into_values().collect()
        }
        ComparisonPlan::AllPairs | ComparisonPlan::Pairs => {
            let members: Vec<usize> = involved.iter().copied().collect();
            let total: usize = members.iter().map(|&i| dims[i]).sum();
            let target = total.div_ceil(8).max(256).min(max_block_dims.max(1));
            let mut out: Vec<Vec<usize>> = Vec::new();
            let mut current: Vec<usize> = Vec::new();
            let mut current_dims = 0;
            for i in members {
                if !current.is_empty() && current_dims + dims[i] > target {
                    out.push(std::mem::take(&mut current));
                    current_dims = 0;
                }
                current.push(i);
                current_dims += dims[i];
            }
            if !current.is_empty() {
                out.push(current);
            }
            return out;
        }
    };
    // Split structured groups that exceed the memory-derived width.
    let mut out = Vec::new();
    for group in groups {
        let mut current: Vec<usize> = Vec::new();
        let mut current_dims = 0;
        for i in group {
            if !current.is_empty() && current_dims + dims[i] > max_block_dims {
                out.push(std::mem::take(&mut current));
                current_dims = 0;
            }
            current.push(i);
            current_dims += dims[i];
        }
        if !current.is_empty() {
            out.push(current);
        }
    }
    out
}

/// A tile: its blocks `(a, b)` (`a ≤ b`) and the pairs it answers.
pub type TilePlan = ((usize, usize), Vec<(usize, usize)>);

/// Tiles `(block a, block b)` with `a ≤ b` that hold at least one of `pairs`, and for each tile
/// the pairs it answers (each pair in exactly one tile).
pub fn tiles(blocks: &[Vec<usize>], pairs: &[(usize, usize)]) -> Vec<TilePlan> {
    let mut block_of: BTreeMap<usize, usize> = BTreeMap::new();
    for (b, members) in blocks.iter().enumerate() {
        for &i in members {
            block_of.insert(i, b);
        }
    }
    let mut by_tile: BTreeMap<(usize, usize), Vec<(usize, usize)>> = BTreeMap::new();
    for &(i, j) in pairs {
        let (bi, bj) = (block_of[&i], block_of[&j]);
        by_tile
            .entry((bi.min(bj), bi.max(bj)))
            .or_default()
            .push((i, j));
    }
    by_tile.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{JobSpec, Metric};

    fn rep(run: &str, seed: i64, step: i64, layer: &str) -> RepInfo {
        RepInfo {
            key: RepresentationKey {
                run: run.into(),
                seed: Some(seed),
                step: Some(step),
                layer: layer.into(),
                tags: Default::default(),
            },
            shape: vec![8],
            datapoints: 100,
            checksum: format!("{run}{seed}{step}{layer}"),
            depth: None,
            layout: None,
        }
    }

    fn grid() -> Vec<RepInfo> {
        let mut v = Vec::new();
        for seed in 0..2 {
            for step in [0, 10, 200] {
                for layer in ["h1", "h2"] {
                    v.push(rep("mlp", seed, step, layer));
                }
            }
        }
        v.push(rep("cnn", 0, 5, "conv1"));
        v
    }

    #[test]
    fn tagged_representations_are_named_with_or_without_their_tags() {
        let tagged = |lr: &str, step: i64| {
            let mut r = rep("mlp", 0, step, "h1");
            r.key.tags.insert("lr".into(), lr.into());
            r
        };
        let all = vec![tagged("0.1", 10), tagged("0.1", 20), tagged("0.01", 20)];
        let pairs = |a: &str, b: &str| {
            JobSpec::new("/d", "/o")
                .with_comparison(crate::spec::ComparisonPlan::Pairs)
                .with_pairs(vec![[a.to_string(), b.to_string()]])
        };
        // With tags, or without where only one selected representation has the label.
        let spec = pairs("mlp/seed0/step10/h1", "mlp/seed0/step20/h1[lr=0.01]");
        let reps = select(&all, &spec.select).unwrap();
        assert_eq!(plan_pairs(&reps, &spec).unwrap().len(), 1);
        // Two share `mlp/seed0/step20/h1`: the error names both.
        let spec = pairs("mlp/seed0/step10/h1", "mlp/seed0/step20/h1");
        let err = plan_pairs(&reps, &spec).unwrap_err().to_string();
        assert!(
            err.contains("differ by their tags")
                && err.contains("run=mlp,seed=0,step=20,layer=h1,lr=0.1")
                && err.contains("run=mlp,seed=0,step=20,layer=h1,lr=0.01"),
            "{err}"
        );
        // The canonical keys name them too, their fields in any order.
        let spec = pairs(
            "run=mlp,seed=0,step=10,layer=h1",
            "lr=0.01,layer=h1,step=20,seed=0,run=mlp",
        );
        let planned = plan_pairs(&reps, &spec).unwrap();
        assert_eq!(planned.len(), 1);
        let (i, j) = planned[0];
        let named: BTreeSet<String> = [reps[i].key.id(), reps[j].key.id()].into();
        assert_eq!(
            named,
            BTreeSet::from([
                "run=mlp,seed=0,step=10,layer=h1,lr=0.1".to_string(),
                "run=mlp,seed=0,step=20,layer=h1,lr=0.01".to_string()
            ])
        );
        let spec = pairs(
            "run=mlp,seed=0,step=10,layer=h1",
            "run=mlp,seed=0,step=20,layer=h1",
        );
        let err = plan_pairs(&reps, &spec).unwrap_err().to_string();
        assert!(err.contains("differ by their tags"), "{err}");
        // Selections by key match the label with or without tags.
        let spec = JobSpec::new("/d", "/o").with_keys(vec!["mlp/seed0/step20/h1".into()]);
        assert_eq!(select(&all, &spec.select).unwrap().len(), 2);
        let spec = JobSpec::new("/d", "/o").with_keys(vec!["*[lr=0.01]".into()]);
        assert_eq!(select(&all, &spec.select).unwrap().len(), 1);
        let spec = JobSpec::new("/d", "/o").with_keys(vec!["*,lr=0.01".into()]);
        assert_eq!(select(&all, &spec.select).unwrap().len(), 1);
        let spec = JobSpec::new("/d", "/o").with_keys(vec!["run=mlp,seed=0,step=20,*".into()]);
        assert_eq!(select(&all, &spec.select).unwrap().len(), 2);
    }

    #[test]
    fn selection_filters_and_sorts() {
        let all = grid();
        let spec = JobSpec::new("/d", "/o")
            .with_where("run", "mlp")
            .with_where("layer", "h1")
            .with_metrics(vec![Metric::Svcca]);
        let chosen = select(&all, &spec.select).unwrap();
        assert_eq!(chosen.len(), 6);
        assert!(chosen.windows(2).all(|w| w[0].key < w[1].key));
        let spec = JobSpec::new("/d", "/o").with_where("step", "2?0");
        assert_eq!(select(&all, &spec.select).unwrap().len(), 4);
        let spec = JobSpec::new("/d", "/o").with_keys(vec!["mlp/seed9/*".into()]);
        assert!(matches!(
            select(&all, &spec.select),
            Err(PlanError::UnknownKey { .. })
        ));
        let spec = JobSpec::new("/d", "/o").with_where("run", "nothing");
        assert!(matches!(
            select(&all, &spec.select),
            Err(PlanError::EmptySelection { .. })
        ));
    }

    #[test]
    fn comparison_plans_pick_the_right_pairs() {
        let reps = select(
            &grid(),
            &JobSpec::new("/d", "/o").with_where("run", "mlp").select,
        )
        .unwrap();
        let all = plan_pairs(&reps, &JobSpec::new("/d", "/o")).unwrap();
        assert_eq!(all.len(), 12 * 11 / 2);
        let vs = plan_pairs(
            &reps,
            &JobSpec::new("/d", "/o").with_comparison(ComparisonPlan::VsFinal),
        )
        .unwrap();
        // 2 seeds x 2 layers x 2 earlier steps.
        assert_eq!(vs.len(), 8);
        for &(i, j) in &vs {
            assert_eq!(reps[j].key.step, Some(200));
            assert!(reps[i].key.step < reps[j].key.step);
            assert_eq!(
                (reps[i].key.seed, &reps[i].key.layer),
                (reps[j].key.seed, &reps[j].key.layer)
            );
        }
        let cs = plan_pairs(
            &reps,
            &JobSpec::new("/d", "/o").with_comparison(ComparisonPlan::CrossSeed),
        )
        .unwrap();
        // 3 steps x 2 layers, one seed pair each.
        assert_eq!(cs.len(), 6);
        let explicit = JobSpec::new("/d", "/o").with_pairs(vec![[
            "mlp/seed0/step0/h1".into(),
            "mlp/seed1/step0/h2".into(),
        ]]);
        assert_eq!(plan_pairs(&reps, &explicit).unwrap().len(), 1);
        let bad =
            JobSpec::new("/d", "/o").with_pairs(vec![["mlp/seed0/step0/h1".into(), "nope".into()]]);
        assert!(matches!(
            plan_pairs(&reps, &bad),
            Err(PlanError::BadPair { .. })
        ));
    }

    #[test]
    fn tiles_cover_every_pair_once() {
        let reps = select(
            &grid(),
            &JobSpec::new("/d", "/o").with_where("run", "mlp").select,
        )
        .unwrap();
        let dims: Vec<usize> = (0..reps.len()).map(|i| 50 + 10 * i).collect();
        for plan in [
            ComparisonPlan::AllPairs,
            ComparisonPlan::VsFinal,
            ComparisonPlan::CrossSeed,
        ] {
            let pairs = plan_pairs(&reps, &JobSpec::new("/d", "/o").with_comparison(plan)).unwrap();
            for max in [60, 300, 10_000] {
                let b = blocks(&reps, &dims, plan, &pairs, max);
                let t = tiles(&b, &pairs);
                let mut covered: Vec<(usize, usize)> =
                    t.iter().flat_map(|(_, p)| p.clone()).collect();
                covered.sort();
                assert_eq!(covered, pairs, "{plan:?} max {max}");
                for members in &b {
                    let width: usize = members.iter().map(|&i| dims[i]).sum();
                    assert!(
                        members.len() == 1 || width <= max.max(256),
                        "{plan:?}: block too wide"
                    );
                }
            }
        }
    }

    #[test]
    fn row_chunks_cover_the_rows() {
        assert_eq!(row_chunks(10, 4), vec![(0, 4), (4, 8), (8, 10)]);
        assert_eq!(row_chunks(3, 10), vec![(0, 3)]);
        let spec = JobSpec::new("/d", "/o");
        let rows = rows_per_task(&spec, 20_000, 512).unwrap();
        assert!((1..=20_000).contains(&rows));
        assert!(bytes_project(rows, 512) <= 1024 * MIB);
        assert!(rows_per_task(&JobSpec::new("/d", "/o").with_memory_mb(16), 100, 4096).is_err());
    }

    #[test]
    fn claimed_shapes_too_large_to_multiply_are_over_the_bound_not_a_panic() {
        let spec = JobSpec::new("/d", "/o");
        let err = rows_per_task(&spec, 597, 1_000_000_000_000).unwrap_err();
        assert!(matches!(err, PlanError::OverMemory { .. }), "{err}");
        assert_eq!(bytes_project(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(bytes_moments(1 << 40, 1 << 40), u64::MAX);
        assert_eq!(bytes_cross(u64::MAX, 3, 4), u64::MAX);
    }
}
