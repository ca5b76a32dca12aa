//! The sweep's warnings grouped by kind, so that fifty "near-constant neurons dropped" lines that
//! differ only in a count and a layer read as one row: the kind, how many pairs carry it, for which
//! metrics, the representations concerned (each once) and one full example.

use std::collections::{BTreeMap, BTreeSet};

use svcca_results::ResultsFile;

/// One kind of warning over a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct WarningGroup {
    /// The warning with representations and numbers taken out (`only N datapoints for N
    /// dimensions (< Nx)`).
    pub kind: String,
    /// Pairs (records) carrying a warning of this kind.
    pub pairs: usize,
    /// Metrics of those records.
    pub metrics: BTreeSet<String>,
    /// Representations named in the warnings, or else the two sides of the pairs, each once.
    pub representations: BTreeSet<String>,
    /// The first warning of this kind, verbatim.
    pub example: String,
}

const REP: &str = "⟨representation⟩";

/// Groups every pair's warnings by kind, most frequent kind first (ties by kind, so the order is
/// a function of the results only).
pub fn group_warnings(results: &ResultsFile) -> Vec<WarningGroup> {
    // Longest label first, so that `…/h1` never eats the front of `…/h10`.
    let mut labels: Vec<String> = results
        .representations
        .iter()
        .map(|r| r.key.label())
        .collect();
    labels.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    labels.dedup();

    let mut groups: BTreeMap<String, WarningGroup> = BTreeMap::new();
    for pair in &results.pairs {
        let mut kinds_here = BTreeSet::new();
        for w in &pair.warnings {
            let (kind, named) = kind_of(w, &labels);
            let g = groups.entry(kind.clone()).or_insert_with(|| WarningGroup {
                kind: kind.clone(),
                pairs: 0,
                metrics: BTreeSet::new(),
                representations: BTreeSet::new(),
                example: w.clone(),
            });
            if kinds_here.insert(kind) {
                g.pairs += 1;
            }
            g.metrics.insert(pair.metric.clone());
            if named.is_empty() {
                g.representations.insert(pair.a.label());
                g.representations.insert(pair.b.label());
            } else {
                g.representations.extend(named);
            }
        }
    }
    let mut out: Vec<WarningGroup> = groups.into_values().collect();
    out.sort_by(|a, b| b.pairs.cmp(&a.pairs).then_with(|| a.kind.cmp(&b.kind)));
    out
}

/// The kind of one warning and the representations it names.
fn kind_of(warning: &str, labels_longest_first: &[String]) -> (String, Vec<String>) {
    let mut text = warning.to_string();
    let mut named = Vec::new();
    for label in labels_longest_first {
        if let Some(at) = text.find(label.as_str()) {
            // Results stored before pairs named only the sides that lost neurons say
            // "0 from <side>": that side is not concerned.
            let before = &text[..at];
            let none = before.ends_with(": 0 from ") || before.ends_with(", 0 from ");
            if !none {
                named.push(label.clone());
            }
            text = text.replace(label.as_str(), REP);
        }
    }
    let mut kind = String::with_capacity(text.len());
    let mut in_number = false;
    for c in text.chars() {
        let numeric = c.is_ascii_digit() || (in_number && (c == '.' || c == 'e' || c == '-'));
        if numeric {
            if !in_number {
                kind.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            kind.push(c);
        }
    }
    // "kind: details" — the part before the colon names the kind when it is a phrase, not a side
    // name like "x".
    if let Some((head, _)) = kind.split_once(": ")
        && head.split_whitespace().count() >= 3
    {
        kind = head.to_string();
    }
    // "what happened; why it matters": the first clause is the kind.
    if let Some((head, _)) = kind.split_once("; ") {
        kind = head.to_string();
    }
    (kind.trim().to_string(), named)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{key, pair, results_with};

    #[test]
    fn near_identical_warnings_are_one_row_with_each_representation_once() {
        let h1 = key("mlp", 0, 100, "h1");
        let h10 = key("mlp", 0, 100, "h10");
        let fin = key("mlp", 0, 2250, "h1");
        let mut pairs = Vec::new();
        for (i, (a, n)) in [(&h1, 6), (&h10, 5), (&h1, 6)].into_iter().enumerate() {
            let mut p = pair(
                a.clone(),
                fin.clone(),
                if i == 2 { "pwcca" } else { "svcca" },
                0.5,
            );
            p.warnings = vec![
                format!("near-constant neurons dropped: {n} from {}", a.label()),
                format!(
                    "only 597 datapoints for {} dimensions (< 5x): canonical correlations are \
                     biased upwards",
                    120 + i
                ),
            ];
            pairs.push(p);
        }
        let mut lone = pair(h1.clone(), h10.clone(), "svcca", 0.5);
        lone.warnings = vec!["x: the keep rule asked for 9 directions but only 3 have".into()];
        pairs.push(lone);
        let results = results_with(&["h1", "h10"], pairs);

        let groups = group_warnings(&results);
        assert_eq!(groups.len(), 3, "{groups:#?}");
        let dropped = groups
            .iter()
            .find(|g| g.kind == "near-constant neurons dropped")
            .expect("one group for the dropped neurons");
        assert_eq!(dropped.pairs, 3);
        // h10 is not read as h1 followed by "0".
        let want: BTreeSet<String> = [h1.label(), h10.label()].into_iter().collect();
        assert_eq!(dropped.representations, want);
        assert_eq!(
            dropped.metrics,
            ["pwcca", "svcca"].map(String::from).into_iter().collect()
        );
        let sample = groups
            .iter()
            .find(|g| g.kind == "only N datapoints for N dimensions (< Nx)")
            .expect("one group for the sample-size warning");
        assert_eq!(sample.pairs, 3);
        // Named nobody: the pairs' sides stand in.
        assert!(sample.representations.contains(&fin.label()));
        // A short prefix ("x") is not a kind: the whole normalised text is.
        assert!(
            groups
                .iter()
                .any(|g| g.kind == "x: the keep rule asked for N directions but only N have"),
            "{groups:#?}"
        );
        // Most frequent first.
        assert!(groups[0].pairs >= groups[1].pairs && groups[1].pairs >= groups[2].pairs);
    }

    #[test]
    fn a_side_named_with_none_dropped_is_not_concerned() {
        let (h1, h2) = (key("mlp", 0, 100, "h1"), key("mlp", 0, 100, "h2"));
        let mut p = pair(h1.clone(), h2.clone(), "svcca", 0.5);
        p.warnings = vec![format!(
            "near-constant neurons dropped: 0 from {}, 3 from {}",
            h1.label(),
            h2.label()
        )];
        let groups = group_warnings(&results_with(&["h1", "h2"], vec![p]));
        let want: BTreeSet<String> = [h2.label()].into_iter().collect();
        assert_eq!(groups[0].representations, want);
    }

    #[test]
    fn the_first_clause_of_a_warning_is_its_kind() {
        let h1 = key("mlp", 0, 100, "h1");
        let fin = key("mlp", 0, 2250, "h1");
        let mut pairs = Vec::new();
        for range in ["1-8", "1-5"] {
            let mut p = pair(h1.clone(), fin.clone(), "pwcca", 0.5);
            p.warnings = vec![format!(
                "pwcca: canonical correlations {range} tie; how the weight splits between their \
                 directions is not determined by the data, so the mean can move by up to 3.0e-2"
            )];
            pairs.push(p);
        }
        let groups = group_warnings(&results_with(&["h1"], pairs));
        assert_eq!(groups.len(), 1, "{groups:#?}");
        assert_eq!(groups[0].kind, "pwcca: canonical correlations N tie");
        assert_eq!(groups[0].pairs, 2);
    }
}
