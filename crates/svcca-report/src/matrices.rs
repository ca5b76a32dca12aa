//! Similarity matrices read back from stored pairs: the whole sweep's matrix, layer × layer
//! matrices between two networks (with each layer's best match), and per-frequency maps of conv
//! layers compared with the DFT method.

use std::collections::BTreeMap;

use serde::Serialize;
use svcca_results::{PairRecord, RepresentationKey, ResultsFile};

use crate::layers::{NetworkId, layer_order};

/// A dense matrix with `None` where no pair was stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Matrix {
    pub metric: String,
    pub title: String,
    pub row_labels: Vec<String>,
    pub col_labels: Vec<String>,
    /// Row-major, `rows × cols`.
    pub values: Vec<Option<f64>>,
}

impl Matrix {
    pub fn rows(&self) -> usize {
        self.row_labels.len()
    }
    pub fn cols(&self) -> usize {
        self.col_labels.len()
    }
    pub fn get(&self, r: usize, c: usize) -> Option<f64> {
        self.values[r * self.cols() + c]
    }
    /// Fraction of cells with a value.
    pub fn fill(&self) -> f64 {
        if self.values.is_empty() {
            return 0.0;
        }
        self.values.iter().filter(|v| v.is_some()).count() as f64 / self.values.len() as f64
    }
}

/// The similarity matrix of `metric` over all representations, in the results' order. Pairs are
/// symmetric; the diagonal is 1 (a representation compared with itself) unless a self-pair is stored.
pub fn full_matrix(results: &ResultsFile, metric: &str) -> Matrix {
    let index: BTreeMap<&RepresentationKey, usize> = results
        .representations
        .iter()
        .enumerate()
        .map(|(i, r)| (&r.key, i))
        .collect();
    let n = results.representations.len();
    let mut values = vec![None; n * n];
    for i in 0..n {
        values[i * n + i] = Some(1.0);
    }
    for pair in results.pairs_of(metric).filter(|p| p.mean.is_finite()) {
        if let (Some(&i), Some(&j)) = (index.get(&pair.a), index.get(&pair.b)) {
            values[i * n + j] = Some(pair.mean);
            values[j * n + i] = Some(pair.mean);
        }
    }
    let labels: Vec<String> = results
        .representations
        .iter()
        .map(|r| r.key.label())
        .collect();
    Matrix {
        metric: metric.to_string(),
        title: format!("{metric}: all representations"),
        row_labels: labels.clone(),
        col_labels: labels,
        values,
    }
}

/// What a layer × layer matrix ranks best matches by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RankedBy {
    /// The metric with both sides kept at `k = min(kₐ, k_b)` directions (the pairs'
    /// `equal_k_mean`). Over all kept directions, a layer that keeps few directions scores high
    /// against any layer that keeps many (the few fit inside the many), so every layer's best
    /// match would be the widest one.
    EqualK,
    /// The metric over all kept directions: some compared pair has no equal-k value (pwcca, cka,
    /// conv layers, google-compat mode, or results written before it was stored).
    Metric,
}

/// One row layer's best match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BestMatch {
    /// Column of the match.
    pub col: usize,
    /// The value it was ranked by (see [`LayerMatrix::ranked_by`]).
    pub value: f64,
    /// The metric over all kept directions.
    pub mean: f64,
    /// The metric with both sides kept at `min(kₐ, k_b)` directions.
    pub equal_k_mean: Option<f64>,
    /// Directions kept by the row layer and by the column layer.
    pub dims: Option<[usize; 2]>,
    /// Linear CKA of the same pair, when the sweep stored it.
    pub cka: Option<f64>,
}

/// Layer × layer matrix between two networks, with each row layer's best match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerMatrix {
    pub a: NetworkId,
    pub b: NetworkId,
    /// The metric over all kept directions. Rows are `a`'s layers, columns `b`'s, both from
    /// input to output.
    pub matrix: Matrix,
    /// The metric at equal kept dimensions, same cells (`None` where the pair has no value).
    pub equal_k: Matrix,
    /// Row-major, aligned with `matrix`: directions kept by the row and the column layer.
    pub dims: Vec<Option<[usize; 2]>>,
    /// Linear CKA of the same cells, when the sweep stored CKA (and the metric is not CKA).
    pub cka: Option<Matrix>,
    /// What `best_match` ranks by.
    pub ranked_by: RankedBy,
    /// For each row: the column with the highest value of `ranked_by`, a layer of the same
    /// network never matching itself (that 1 is trivial).
    pub best_match: Vec<Option<BestMatch>>,
    /// For each row: the column with the highest metric over all kept directions (self
    /// matches skipped likewise), to show where the two rankings part.
    pub best_by_mean: Vec<Option<usize>>,
}

/// A layer of one network whose best match in another is not the same layer, with both
/// numbers and the `k` each was compared at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SameLayerMiss {
    pub layer: String,
    pub best: String,
    pub best_k: usize,
    pub best_value: f64,
    pub same_k: usize,
    pub same_value: f64,
}

impl LayerMatrix {
    /// Whether cell `(r, c)` is a layer compared with itself.
    pub fn is_self(&self, r: usize, c: usize) -> bool {
        self.a == self.b && self.matrix.row_labels[r] == self.matrix.col_labels[c]
    }

    /// Between two networks, the rows whose best match is another layer than the same one of
    /// the other network (where that pair was compared), in row order.
    pub fn same_layer_misses(&self) -> Vec<SameLayerMiss> {
        if self.a == self.b {
            return Vec::new();
        }
        let cols = self.matrix.cols();
        let ranked = match self.ranked_by {
            RankedBy::EqualK => &self.equal_k,
            RankedBy::Metric => &self.matrix,
        };
        let k = |i: usize| self.dims[i].map(|[ka, kb]| ka.min(kb));
        self.best_match
            .iter()
            .enumerate()
            .filter_map(|(r, best)| {
                let best = best.as_ref()?;
                let layer = &self.matrix.row_labels[r];
                let same = self.matrix.col_labels.iter().position(|c| c == layer)?;
                if same == best.col {
                    return None;
                }
                Some(SameLayerMiss {
                    layer: layer.clone(),
                    best: self.matrix.col_labels[best.col].clone(),
                    best_k: k(r * cols + best.col)?,
                    best_value: best.value,
                    same_k: k(r * cols + same)?,
                    same_value: ranked.get(r, same)?,
                })
            })
            .collect()
    }
}

/// What the stored pairs say about one cell.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    mean: Option<f64>,
    equal_k: Option<f64>,
    dims: Option<[usize; 2]>,
    cka: Option<f64>,
}

/// The layer × layer matrix of `metric` between networks `a` and `b` (which may be equal).
pub fn layer_matrix(
    results: &ResultsFile,
    metric: &str,
    a: &NetworkId,
    b: &NetworkId,
) -> LayerMatrix {
    let rows = layer_order(results, &a.run);
    let cols = layer_order(results, &b.run);
    let mut cells = vec![Cell::default(); rows.len() * cols.len()];
    let slot = |ka: &RepresentationKey, kb: &RepresentationKey| -> Option<usize> {
        if NetworkId::of(ka) != *a || NetworkId::of(kb) != *b {
            return None;
        }
        let r = rows.iter().position(|l| *l == ka.layer)?;
        let c = cols.iter().position(|l| *l == kb.layer)?;
        Some(r * cols.len() + c)
    };
    for pair in results.pairs_of(metric).filter(|p| p.mean.is_finite()) {
        for (ka, kb, dims) in [
            (&pair.a, &pair.b, [pair.dims_a, pair.dims_b]),
            (&pair.b, &pair.a, [pair.dims_b, pair.dims_a]),
        ] {
            if let Some(i) = slot(ka, kb)
                && cells[i].mean.is_none()
            {
                cells[i].mean = Some(pair.mean);
                cells[i].equal_k = pair.equal_k_mean.filter(|v| v.is_finite());
                cells[i].dims = Some(dims);
            }
        }
    }
    if metric != "cka" {
        for pair in results.pairs_of("cka").filter(|p| p.mean.is_finite()) {
            for (ka, kb) in [(&pair.a, &pair.b), (&pair.b, &pair.a)] {
                if let Some(i) = slot(ka, kb) {
                    cells[i].cka.get_or_insert(pair.mean);
                }
            }
        }
    }
    if a == b {
        for i in 0..rows.len().min(cols.len()) {
            let cell = &mut cells[i * cols.len() + i];
            cell.mean.get_or_insert(1.0);
            cell.equal_k.get_or_insert(1.0);
        }
    }
    // Keep only layers the two networks actually have.
    let keep_rows: Vec<usize> = (0..rows.len())
        .filter(|&r| (0..cols.len()).any(|c| cells[r * cols.len() + c].mean.is_some()))
        .collect();
    let keep_cols: Vec<usize> = (0..cols.len())
        .filter(|&c| (0..rows.len()).any(|r| cells[r * cols.len() + c].mean.is_some()))
        .collect();
    let kept: Vec<Cell> = keep_rows
        .iter()
        .flat_map(|&r| keep_cols.iter().map(move |&c| (r, c)))
        .map(|(r, c)| cells[r * cols.len() + c])
        .collect();
    let row_labels: Vec<String> = keep_rows.iter().map(|&r| rows[r].clone()).collect();
    let col_labels: Vec<String> = keep_cols.iter().map(|&c| cols[c].clone()).collect();
    let grid = |title: String, value: &dyn Fn(&Cell) -> Option<f64>| Matrix {
        metric: metric.to_string(),
        title,
        row_labels: row_labels.clone(),
        col_labels: col_labels.clone(),
        values: kept.iter().map(value).collect(),
    };
    let names = format!("{} × {}", a.label(), b.label());
    let matrix = grid(format!("{metric}: {names}"), &|c| c.mean);
    let equal_k = grid(format!("{metric} at equal kept dims: {names}"), &|c| {
        c.equal_k
    });
    let cka = kept.iter().any(|c| c.cka.is_some()).then(|| Matrix {
        metric: "cka".into(),
        ..grid(format!("cka: {names}"), &|c| c.cka)
    });
    let (nrows, ncols) = (row_labels.len(), col_labels.len());
    let is_self = |r: usize, c: usize| a == b && row_labels[r] == col_labels[c];
    let candidates: Vec<Vec<usize>> = (0..nrows)
        .map(|r| {
            (0..ncols)
                .filter(|&c| !is_self(r, c) && kept[r * ncols + c].mean.is_some())
                .collect()
        })
        .collect();
    let every_equal_k = candidates
        .iter()
        .enumerate()
        .all(|(r, cs)| cs.iter().all(|&c| kept[r * ncols + c].equal_k.is_some()));
    let ranked_by = if every_equal_k {
        RankedBy::EqualK
    } else {
        RankedBy::Metric
    };
    // The highest value per row; ties go to the shallower column.
    let best = |r: usize, value: &dyn Fn(&Cell) -> Option<f64>| {
        candidates[r]
            .iter()
            .filter_map(|&c| value(&kept[r * ncols + c]).map(|v| (c, v)))
            .fold(None, |best: Option<(usize, f64)>, (c, v)| match best {
                Some((_, bv)) if bv >= v => best,
                _ => Some((c, v)),
            })
    };
    let rank = |c: &Cell| match ranked_by {
        RankedBy::EqualK => c.equal_k,
        RankedBy::Metric => c.mean,
    };
    let best_match = (0..nrows)
        .map(|r| {
            best(r, &rank).map(|(col, value)| {
                let cell = kept[r * ncols + col];
                BestMatch {
                    col,
                    value,
                    mean: cell.mean.unwrap_or(value),
                    equal_k_mean: cell.equal_k,
                    dims: cell.dims,
                    cka: cell.cka,
                }
            })
        })
        .collect();
    let best_by_mean = (0..nrows)
        .map(|r| best(r, &|c| c.mean).map(|(c, _)| c))
        .collect();
    LayerMatrix {
        a: a.clone(),
        b: b.clone(),
        matrix,
        equal_k,
        dims: kept.iter().map(|c| c.dims).collect(),
        cka,
        ranked_by,
        best_match,
        best_by_mean,
    }
}

/// Pairs of networks worth a layer × layer matrix: those with pairs between different layers.
/// Different networks at the same step first (cross-seed, cross-architecture), latest step first,
/// then networks at different steps, then a network with itself; at most `limit`.
pub fn layer_matrix_candidates(
    results: &ResultsFile,
    metric: &str,
    limit: usize,
) -> Vec<(NetworkId, NetworkId)> {
    let mut counts: BTreeMap<(NetworkId, NetworkId), usize> = BTreeMap::new();
    for pair in results.pairs_of(metric) {
        if pair.a.layer == pair.b.layer && pair.a.run == pair.b.run {
            continue;
        }
        let (x, y) = (NetworkId::of(&pair.a), NetworkId::of(&pair.b));
        let key = if x <= y { (x, y) } else { (y, x) };
        *counts.entry(key).or_default() += 1;
    }
    let mut cands: Vec<(NetworkId, NetworkId)> = counts
        .into_iter()
        .filter(|(_, n)| *n >= 2)
        .map(|(k, _)| k)
        .collect();
    cands.sort_by_key(|(x, y)| {
        (
            x == y,
            x.step != y.step,
            std::cmp::Reverse(x.step.max(y.step)),
            x.clone(),
            y.clone(),
        )
    });
    cands.truncate(limit);
    cands
}

/// Per-frequency means of one conv pair compared with the DFT method, on the `h × w` grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrequencyMap {
    pub a: String,
    pub b: String,
    pub metric: String,
    pub h: usize,
    pub w: usize,
    /// Row-major `h × w`; conjugate frequencies not stored are filled from their mirror image
    /// (a real input's DFT at `(−i, −j)` is the conjugate of `(i, j)`: same correlations).
    pub values: Vec<Option<f64>>,
    pub mirrored: usize,
}

/// One map per stored pair with per-frequency records, in stored order, at most `limit`.
pub fn frequency_maps(results: &ResultsFile, limit: usize) -> Vec<FrequencyMap> {
    results
        .pairs
        .iter()
        .filter_map(|p| frequency_map(results, p))
        .take(limit)
        .collect()
}

fn frequency_map(results: &ResultsFile, pair: &PairRecord) -> Option<FrequencyMap> {
    let freqs = pair.frequencies.as_ref().filter(|f| !f.is_empty())?;
    let shape = results
        .representations
        .iter()
        .find(|r| r.key == pair.a)
        .map(|r| r.shape.clone());
    let (h, w) = match shape.as_deref() {
        Some([h, w, _]) if freqs.iter().all(|f| f.i < *h && f.j < *w) => (*h, *w),
        _ => (
            freqs.iter().map(|f| f.i).max()? + 1,
            freqs.iter().map(|f| f.j).max()? + 1,
        ),
    };
    let mut values = vec![None; h * w];
    for f in freqs.iter().filter(|f| f.mean.is_finite()) {
        values[f.i * w + f.j] = Some(f.mean);
    }
    let mut mirrored = 0;
    for i in 0..h {
        for j in 0..w {
            let mirror = ((h - i) % h) * w + (w - j) % w;
            if values[i * w + j].is_none() && values[mirror].is_some() {
                values[i * w + j] = values[mirror];
                mirrored += 1;
            }
        }
    }
    Some(FrequencyMap {
        a: pair.a.label(),
        b: pair.b.label(),
        metric: pair.metric.clone(),
        h,
        w,
        values,
        mirrored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{key, pair, results_with};
    use svcca_results::FrequencyRecord;

    #[test]
    fn layer_matrix_with_best_matches() {
        let layers = ["h1", "h2", "h3"];
        let mut pairs = Vec::new();
        for (i, la) in layers.iter().enumerate() {
            for (j, lb) in layers.iter().enumerate() {
                let v = 1.0 - 0.2 * (i as f64 - j as f64).abs() - if j == 2 { 0.05 } else { 0.0 };
                pairs.push(pair(
                    key("mlp", 0, 100, la),
                    key("mlp", 1, 100, lb),
                    "svcca",
                    v,
                ));
            }
        }
        let results = results_with(&layers, pairs);
        let cands = layer_matrix_candidates(&results, "svcca", 5);
        assert_eq!(cands.len(), 1);
        let (a, b) = &cands[0];
        assert_eq!(a.seed, Some(0));
        let m = layer_matrix(&results, "svcca", a, b);
        assert_eq!(m.matrix.row_labels, ["h1", "h2", "h3"]);
        assert_eq!(
            m.best_match
                .iter()
                .map(|b| b.as_ref().unwrap().col)
                .collect::<Vec<_>>(),
            [0, 1, 2]
        );
        // No equal-k values stored: the metric ranks, and says so.
        assert_eq!(m.ranked_by, RankedBy::Metric);
        assert!(m.cka.is_none());
        assert!((m.matrix.get(0, 2).unwrap() - 0.55).abs() < 1e-12);
        // Reading the pairs the other way round transposes the matrix.
        let t = layer_matrix(&results, "svcca", b, a);
        assert_eq!(t.matrix.get(2, 0), m.matrix.get(0, 2));

        let full = full_matrix(&results, "svcca");
        assert_eq!(full.rows(), 6);
        assert_eq!(full.get(0, 0), Some(1.0));
        assert_eq!(full.get(0, 1), None); // h1 vs h2 within seed 0 was not compared
        assert!(full.get(0, 3).is_some() && full.get(0, 3) == full.get(3, 0));
    }

    /// Real shapes of the digits MLP: h1…h4 keep few directions, logits many, so over all
    /// kept directions every layer's best match is logits; at equal kept dimensions it is the
    /// same layer of the other seed.
    #[test]
    fn best_matches_rank_at_equal_kept_dims_and_skip_self_matches() {
        let layers = ["h1", "h2", "logits"];
        let dims = [7usize, 9, 60];
        let mut pairs = Vec::new();
        for (sa, sb) in [(0, 1), (0, 0)] {
            for (i, la) in layers.iter().enumerate() {
                for (j, lb) in layers.iter().enumerate() {
                    if sa == sb && i >= j {
                        continue;
                    }
                    let same = i == j;
                    // Over all kept dims the widest layer wins; at equal k the same layer does.
                    let mean = if lb == &"logits" || la == &"logits" {
                        0.95
                    } else if same {
                        0.7
                    } else {
                        0.6
                    };
                    let equal_k = if same { 0.7 } else { 0.5 - 0.01 * j as f64 };
                    let mut p = pair(key("mlp", sa, 9, la), key("mlp", sb, 9, lb), "svcca", mean);
                    p.equal_k_mean = Some(equal_k);
                    (p.dims_a, p.dims_b) = (dims[i], dims[j]);
                    pairs.push(p);
                    let cka = if same { 0.9 } else { 0.3 };
                    pairs.push(pair(
                        key("mlp", sa, 9, la),
                        key("mlp", sb, 9, lb),
                        "cka",
                        cka,
                    ));
                }
            }
        }
        let results = results_with(&layers, pairs);
        let (s0, s1) = (
            NetworkId::of(&key("mlp", 0, 9, "h1")),
            NetworkId::of(&key("mlp", 1, 9, "h1")),
        );
        let m = layer_matrix(&results, "svcca", &s0, &s1);
        assert_eq!(m.ranked_by, RankedBy::EqualK);
        let cols = |b: &[Option<BestMatch>]| -> Vec<usize> {
            b.iter().map(|b| b.as_ref().unwrap().col).collect()
        };
        assert_eq!(cols(&m.best_match), [0, 1, 2]);
        assert!(m.same_layer_misses().is_empty());
        assert_eq!(m.best_by_mean, [Some(2), Some(2), Some(0)]);
        let h1 = m.best_match[0].as_ref().unwrap();
        assert_eq!((h1.value, h1.mean, h1.equal_k_mean), (0.7, 0.7, Some(0.7)));
        assert_eq!((h1.dims, h1.cka), (Some([7, 7]), Some(0.9)));
        // Read the other way round, dims follow the axes.
        let t = layer_matrix(&results, "svcca", &s1, &s0);
        assert_eq!(t.dims[2], Some([7, 60]));
        assert_eq!(t.cka.as_ref().unwrap().get(1, 1), Some(0.9));

        // A network with itself: the diagonal (1, trivially) is never a match.
        let own = layer_matrix(&results, "svcca", &s0, &s0);
        assert_eq!(own.matrix.get(0, 0), Some(1.0));
        assert!(own.is_self(1, 1) && !own.is_self(0, 1));
        for (r, b) in own.best_match.iter().enumerate() {
            assert_ne!(b.as_ref().unwrap().col, r, "row {r} matched itself");
        }
        assert_eq!(own.ranked_by, RankedBy::EqualK);

        // One compared pair without an equal-k value: the metric ranks the whole matrix.
        let mut partial = results.clone();
        partial.pairs[0].equal_k_mean = None;
        let m = layer_matrix(&partial, "svcca", &s0, &s1);
        assert_eq!(m.ranked_by, RankedBy::Metric);
        assert_eq!(cols(&m.best_match), [2, 2, 0]);
        let misses = m.same_layer_misses();
        assert_eq!(misses.len(), 3);
        assert_eq!(
            (misses[0].layer.as_str(), misses[0].best.as_str()),
            ("h1", "logits")
        );
        assert_eq!((misses[0].best_k, misses[0].same_k), (7, 7));
        assert_eq!((misses[0].best_value, misses[0].same_value), (0.95, 0.7));
    }

    #[test]
    fn frequency_map_fills_conjugate_frequencies() {
        let mut p = pair(
            key("conv", 0, 1500, "conv1"),
            key("conv", 1, 1500, "conv1"),
            "svcca",
            0.5,
        );
        // A 4 × 3 grid where only the non-redundant half is stored.
        let mut stored = Vec::new();
        for i in 0..4usize {
            for j in 0..3usize {
                let m = ((4 - i) % 4, (3 - j) % 3);
                if (i, j) <= m {
                    stored.push(FrequencyRecord {
                        i,
                        j,
                        coefficients: vec![],
                        mean: (i * 10 + j) as f64 / 100.0,
                        dims_a: None,
                        dims_b: None,
                    });
                }
            }
        }
        p.frequencies = Some(stored);
        let mut results = results_with(&["conv1"], vec![p]);
        results.representations[0].shape = vec![4, 3, 16];
        let maps = frequency_maps(&results, 10);
        assert_eq!(maps.len(), 1);
        let m = &maps[0];
        assert_eq!((m.h, m.w), (4, 3));
        assert!(m.values.iter().all(|v| v.is_some()));
        assert!(m.mirrored > 0);
        // (3, 2) mirrors (1, 1).
        assert_eq!(m.values[3 * 3 + 2], Some(0.11));
    }
}
