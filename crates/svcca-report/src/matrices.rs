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

/// Layer × layer matrix between two networks, with each row layer's best match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerMatrix {
    pub a: NetworkId,
    pub b: NetworkId,
    /// Rows are `a`'s layers, columns `b`'s, both from input to output.
    pub matrix: Matrix,
    /// For each row: the column with the highest similarity and its value.
    pub best_match: Vec<Option<(usize, f64)>>,
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
    let mut values = vec![None; rows.len() * cols.len()];
    let mut put = |ka: &RepresentationKey, kb: &RepresentationKey, v: f64| {
        if NetworkId::of(ka) == *a && NetworkId::of(kb) == *b {
            let r = rows.iter().position(|l| *l == ka.layer);
            let c = cols.iter().position(|l| *l == kb.layer);
            if let (Some(r), Some(c)) = (r, c) {
                values[r * cols.len() + c].get_or_insert(v);
            }
        }
    };
    for pair in results.pairs_of(metric).filter(|p| p.mean.is_finite()) {
        put(&pair.a, &pair.b, pair.mean);
        put(&pair.b, &pair.a, pair.mean);
    }
    if a == b {
        for i in 0..rows.len() {
            values[i * cols.len() + i].get_or_insert(1.0);
        }
    }
    // Keep only layers the two networks actually have.
    let keep_rows: Vec<usize> = (0..rows.len())
        .filter(|&r| (0..cols.len()).any(|c| values[r * cols.len() + c].is_some()))
        .collect();
    let keep_cols: Vec<usize> = (0..cols.len())
        .filter(|&c| (0..rows.len()).any(|r| values[r * cols.len() + c].is_some()))
        .collect();
    let kept: Vec<Option<f64>> = keep_rows
        .iter()
        .flat_map(|&r| keep_cols.iter().map(move |&c| (r, c)))
        .map(|(r, c)| values[r * cols.len() + c])
        .collect();
    let matrix = Matrix {
        metric: metric.to_string(),
        title: format!("{metric}: {} × {}", a.label(), b.label()),
        row_labels: keep_rows.iter().map(|&r| rows[r].clone()).collect(),
        col_labels: keep_cols.iter().map(|&c| cols[c].clone()).collect(),
        values: kept,
    };
    let best_match = (0..matrix.rows())
        .map(|r| {
            (0..matrix.cols())
                .filter_map(|c| matrix.get(r, c).map(|v| (c, v)))
                .fold(None, |best: Option<(usize, f64)>, (c, v)| match best {
                    Some((_, bv)) if bv >= v => best,
                    _ => Some((c, v)),
                })
        })
        .collect();
    LayerMatrix {
        a: a.clone(),
        b: b.clone(),
        matrix,
        best_match,
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
                .map(|b| b.unwrap().0)
                .collect::<Vec<_>>(),
            [0, 1, 2]
        );
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
