//! Reading results and telling how two of them differ.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// `|a - b|` allowed between `svcca compare` and any sweep.
pub const TOLERANCE: f64 = 1e-9;

/// Between a mixed-precision sweep and a mixed-precision `svcca compare`: each may be
/// `svcca_core::MIXED_PRECISION_TOLERANCE` from the f64 numbers, and they sum the moments in
/// other chunks, so they round differently.
pub const MIXED_TOLERANCE: f64 = 2.0 * svcca_core::MIXED_PRECISION_TOLERANCE;

/// `|a - b| <= tolerance`; false when either is NaN, so a NaN never passes as equal.
pub fn within(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

/// A pair's identity in `results.json`: both keys (with tags) and the metric.
pub fn pair_id(record: &Value) -> String {
    format!(
        "{} vs {} [{}]",
        key_label(&record["a"]),
        key_label(&record["b"]),
        record["metric"].as_str().unwrap_or("?")
    )
}

pub fn key_label(key: &Value) -> String {
    let mut label = format!(
        "{}/seed{}/step{}/{}",
        key["run"].as_str().unwrap_or("?"),
        key["seed"],
        key["step"],
        key["layer"].as_str().unwrap_or("?")
    );
    if let Some(tags) = key["tags"].as_object() {
        for (k, v) in tags {
            label.push_str(&format!(",{k}={}", v.as_str().unwrap_or("?")));
        }
    }
    label
}

/// The stored results of a run: every pair record by its id, and the representations.
#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    pub pairs: BTreeMap<String, Value>,
    pub representations: Value,
}

pub fn read_results(output: &Path) -> Result<Results, String> {
    let path = output.join("results.json");
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // The full record: coefficients are kept in pairs.parquet by default, and every way of
    // running must store the same ones there.
    let mut full = svcca_results::ResultsFile::from_json(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if full.coefficients != svcca_results::CoefficientStore::Json {
        let table = output.join(svcca_results::PAIRS_TABLE_NAME);
        let table =
            std::fs::read(&table).map_err(|e| format!("cannot read {}: {e}", table.display()))?;
        full.fill_coefficients(table)
            .map_err(|e| format!("{}: {e}", output.display()))?;
    }
    let file: Value = serde_json::to_value(&full).expect("results serialise");
    let mut pairs = BTreeMap::new();
    for record in file["pairs"].as_array().cloned().unwrap_or_default() {
        let id = pair_id(&record);
        if pairs.insert(id.clone(), record).is_some() {
            return Err(format!("{} holds {id} twice", path.display()));
        }
    }
    Ok(Results {
        pairs,
        representations: file["representations"].clone(),
    })
}

/// Where two runs that must be bitwise equal differ (at most a few lines per pair).
pub fn bitwise_differences(reference: &Results, other: &Results) -> Vec<String> {
    let mut diffs = Vec::new();
    for id in reference.pairs.keys() {
        if !other.pairs.contains_key(id) {
            diffs.push(format!("{id}: missing"));
        }
    }
    for id in other.pairs.keys() {
        if !reference.pairs.contains_key(id) {
            diffs.push(format!("{id}: not in the reference run"));
        }
    }
    for (id, want) in &reference.pairs {
        if let Some(got) = other.pairs.get(id)
            && got != want
        {
            diffs.push(format!(
                "{id}: mean {} vs {} (diff {:.3e}); dims {}/{} vs {}/{}{}",
                want["mean"],
                got["mean"],
                (want["mean"].as_f64().unwrap_or(f64::NAN)
                    - got["mean"].as_f64().unwrap_or(f64::NAN))
                .abs(),
                want["dims_a"],
                want["dims_b"],
                got["dims_a"],
                got["dims_b"],
                first_field_difference(want, got)
                    .map(|f| format!("; first difference at {f}"))
                    .unwrap_or_default()
            ));
        }
    }
    if reference.representations != other.representations {
        diffs.push("representations (kept dims, spectra, checksums) differ".into());
    }
    diffs
}

fn first_field_difference(a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                if va != vb {
                    let inner = first_field_difference(va, vb);
                    return Some(match inner {
                        Some(i) if !i.is_empty() => format!("{k}.{i}"),
                        _ => format!("{k} ({va} vs {vb})").chars().take(300).collect(),
                    });
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                if va != vb {
                    return Some(match first_field_difference(va, vb) {
                        Some(inner) if !inner.is_empty() => format!("[{i}].{inner}"),
                        _ => format!("[{i}] ({va} vs {vb})"),
                    });
                }
            }
            None
        }
        _ if a != b => Some(String::new()),
        _ => None,
    }
}

/// Rounding in the covariances as it reaches the canonical directions (the coefficients of
/// `svcca compare` run with different block sizes differ by up to ~1e-12).
const DIRECTION_NOISE: f64 = 1e-11;

/// PWCCA's weights come from the canonical directions, which are defined only up to a rotation
/// among equal correlations: to first order a direction moves by (rounding) / (gap to the
/// nearest other correlation), so a weight is held to `TOLERANCE + DIRECTION_NOISE / gap`. Where
/// correlations tie (a layer against a linear function of it) the weights are arbitrary and
/// only the coefficients and the weighted mean are compared; `svcca compare` itself gives
/// weights differing by 4e-9 between `--block-rows 64` and `8192` when neighbouring correlations
/// are 5e-7 apart.
fn weight_differences(diffs: &mut Vec<String>, record: &Value, compare: &Value, tolerance: f64) {
    let values = |v: &Value| -> Vec<f64> {
        v.as_array()
            .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
            .unwrap_or_default()
    };
    let (stored, direct) = (values(&record["weights"]), values(&compare["weights"]));
    let coefficients = values(&compare["coefficients"]);
    if stored.len() != direct.len() {
        diffs.push(format!(
            "weights: sweep has {} values, compare {}",
            stored.len(),
            direct.len()
        ));
        return;
    }
    for (i, (s, d)) in stored.iter().zip(&direct).enumerate() {
        let c = coefficients.get(i).copied().unwrap_or(f64::NAN);
        let gap = [i.checked_sub(1), Some(i + 1)]
            .into_iter()
            .flatten()
            .filter_map(|j| coefficients.get(j))
            .map(|n| (c - n).abs())
            .fold(f64::INFINITY, f64::min);
        let allowed = tolerance + DIRECTION_NOISE / gap;
        if !within(*s, *d, allowed) {
            diffs.push(format!(
                "weights[{i}]: sweep {s} vs compare {d} (|diff| {:.3e}, allowed {allowed:.3e} for \
                 a correlation {gap:.3e} from its neighbour)",
                (s - d).abs()
            ));
            return;
        }
    }
}

/// The largest bound svcca states on a PWCCA mean with tied canonical correlations, in the
/// warnings of the stored record or of `svcca compare --json`.
pub fn pwcca_tie_bound(record: &Value, compare: &Value) -> Option<f64> {
    [record, compare]
        .into_iter()
        .filter_map(|v| v["warnings"].as_array())
        .flatten()
        .filter_map(|w| w.as_str().and_then(svcca_core::PwccaTie::bound_in))
        .reduce(f64::max)
}

/// Differences beyond `tolerance` ([`TOLERANCE`], or [`MIXED_TOLERANCE`] for mixed precision)
/// between a stored pair record and `svcca compare --json`.
///
/// A PWCCA mean whose canonical correlations nearly tie is held to the bound svcca states for it
/// in a warning (on either side) instead, and its weights are not compared: there the data do
/// not determine how the weight splits between the tied directions, and rounding of ~1e-16 can
/// move the mean by far more than 1e-9.
pub fn compare_differences(record: &Value, compare: &Value, tolerance: f64) -> Vec<String> {
    let mut diffs = Vec::new();
    let conv = compare.get("x_dims").is_some();
    let tie = pwcca_tie_bound(record, compare);
    let mean_tolerance = tolerance.max(tie.unwrap_or(0.0));
    let num = |diffs: &mut Vec<String>, what: &str, a: &Value, b: &Value| match (
        a.as_f64(),
        b.as_f64(),
    ) {
        (Some(x), Some(y)) if what == "mean" && (x - y).abs() <= mean_tolerance => {}
        (Some(x), Some(y)) if (x - y).abs() <= tolerance => {}
        (None, None) if a.is_null() && b.is_null() => {}
        _ => diffs.push(format!("{what}: sweep {a} vs compare {b}")),
    };
    let list = |diffs: &mut Vec<String>, what: &str, a: &Value, b: &Value| {
        let (x, y) = (
            a.as_array().cloned().unwrap_or_default(),
            b.as_array().cloned().unwrap_or_default(),
        );
        if x.len() != y.len() {
            diffs.push(format!(
                "{what}: sweep has {} values, compare {}",
                x.len(),
                y.len()
            ));
            return;
        }
        let worst = x
            .iter()
            .zip(&y)
            .enumerate()
            .map(|(i, (p, q))| {
                let d = match (p.as_f64(), q.as_f64()) {
                    (Some(p), Some(q)) => (p - q).abs(),
                    _ => f64::INFINITY,
                };
                (i, d)
            })
            .fold((0, 0.0f64), |w, c| if c.1 > w.1 { c } else { w });
        if worst.1 > tolerance {
            diffs.push(format!(
                "{what}[{}]: sweep {} vs compare {} (|diff| {:.3e})",
                worst.0, x[worst.0], y[worst.0], worst.1
            ));
        }
    };
    num(&mut diffs, "mean", &record["mean"], &compare["mean"]);
    num(
        &mut diffs,
        "google_mean",
        &record["google_mean"],
        &compare["google_mean"],
    );
    // The mean at equal kept dimensions is what the report ranks best matches by.
    num(
        &mut diffs,
        "equal_k_mean",
        &record["equal_k_mean"],
        &compare["equal_k_mean"],
    );
    let (dims_x, dims_y) = if conv {
        (&compare["x_dims"], &compare["y_dims"])
    } else {
        (&compare["dims_x"], &compare["dims_y"])
    };
    if &record["dims_a"] != dims_x || &record["dims_b"] != dims_y {
        diffs.push(format!(
            "dims: sweep {}/{} vs compare {dims_x}/{dims_y}",
            record["dims_a"], record["dims_b"]
        ));
    }
    list(
        &mut diffs,
        "coefficients",
        &record["coefficients"],
        &compare["coefficients"],
    );
    // With tied correlations the weights are normalised over an undetermined split, so every
    // weight moves with it; the mean's bound covers what that does to the result.
    if !conv && tie.is_none() {
        weight_differences(&mut diffs, record, compare, tolerance);
    }
    if conv {
        let stored = record["frequencies"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let direct = compare["frequencies"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if stored.len() != direct.len() {
            diffs.push(format!(
                "frequencies: sweep has {}, compare {}",
                stored.len(),
                direct.len()
            ));
        } else {
            for (s, d) in stored.iter().zip(&direct) {
                let at = format!("frequency ({}, {})", d["i"], d["j"]);
                if s["i"] != d["i"] || s["j"] != d["j"] {
                    diffs.push(format!("{at}: sweep stores ({}, {})", s["i"], s["j"]));
                    continue;
                }
                num(&mut diffs, &format!("{at} mean"), &s["mean"], &d["mean"]);
                list(
                    &mut diffs,
                    &format!("{at} coefficients"),
                    &s["coefficients"],
                    &d["coefficients"],
                );
            }
        }
    }
    diffs
}
