//! The figures as a reader sees them, checked on the SVG the report writes: every row of a
//! mid-sized matrix labelled, rows of a large one labelled by group, y axes fitted to the data,
//! paired series sharing a colour, and the sweep's warnings grouped on the page.

use std::collections::BTreeMap;
use std::path::Path;

use svcca_report::compute::{
    ClassCurve, ClassSensitivity, DimensionalityCurve, DimensionalityPoint,
};
use svcca_report::dynamics::DynamicsPoint;
use svcca_report::{ComputedAnalyses, ReportOptions, write_report};
use svcca_results::{
    PairRecord, RepresentationKey, RepresentationRecord, ResultsFile, SCHEMA_VERSION,
};

fn key(run: &str, seed: i64, step: i64, layer: &str) -> RepresentationKey {
    RepresentationKey {
        run: run.into(),
        seed: Some(seed),
        step: Some(step),
        layer: layer.into(),
        tags: BTreeMap::new(),
    }
}

fn pair(a: &RepresentationKey, b: &RepresentationKey, metric: &str, mean: f64) -> PairRecord {
    PairRecord {
        a: a.clone(),
        b: b.clone(),
        metric: metric.into(),
        mean,
        google_mean: None,
        equal_k_mean: None,
        dims_a: 4,
        dims_b: 4,
        coefficients: vec![],
        weights: None,
        frequencies: None,
        conv: None,
        warnings: vec![],
    }
}

fn results(keys: &[RepresentationKey], pairs: Vec<PairRecord>) -> ResultsFile {
    ResultsFile {
        schema_version: SCHEMA_VERSION,
        coefficients: svcca_results::CoefficientStore::Json,
        job_spec: "comparison = \"all-pairs\"".into(),
        versions: BTreeMap::new(),
        comparison: "all-pairs".into(),
        settings: "svcca var 0.99".into(),
        representations: keys
            .iter()
            .map(|key| RepresentationRecord {
                key: key.clone(),
                shape: vec![64],
                datapoints: 597,
                kept_dims: 40,
                dropped_neurons: vec![],
                spectrum: vec![],
                checksum: String::new(),
                depth: None,
                layout: None,
            })
            .collect(),
        pairs,
    }
}

/// Every pair of `keys` compared with svcca, at values that vary from cell to cell.
fn all_pairs(keys: &[RepresentationKey]) -> ResultsFile {
    let mut pairs = Vec::new();
    for (i, a) in keys.iter().enumerate() {
        for (j, b) in keys.iter().enumerate().skip(i + 1) {
            pairs.push(pair(a, b, "svcca", ((i * 7 + j * 3) % 100) as f64 / 100.0));
        }
    }
    results(keys, pairs)
}

/// A `<text>` of an SVG: its attributes and its content, unescaped.
#[derive(Debug)]
struct Text {
    attrs: String,
    content: String,
}

impl Text {
    fn attr(&self, name: &str) -> Option<&str> {
        let pat = format!(" {name}=\"");
        let at = self.attrs.find(&pat)? + pat.len();
        let rest = &self.attrs[at..];
        Some(&rest[..rest.find('"')?])
    }
    fn num(&self, name: &str) -> f64 {
        self.attr(name).unwrap().parse().unwrap()
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn texts(svg: &str) -> Vec<Text> {
    svg.split("<text")
        .skip(1)
        .map(|t| {
            let (attrs, rest) = t.split_once('>').unwrap();
            Text {
                attrs: format!(" {attrs}"),
                content: unescape(rest[..rest.find("</text>").unwrap()].trim()),
            }
        })
        .collect()
}

/// Polylines of an SVG: stroke colour and points.
fn polylines(svg: &str) -> Vec<(String, Vec<(i32, i32)>)> {
    svg.split("<polyline")
        .skip(1)
        .map(|t| {
            let t = &t[..t.find("/>").unwrap()];
            let attr = |name: &str| {
                let pat = format!(" {name}=\"");
                let at = t.find(&pat).unwrap() + pat.len();
                t[at..at + t[at..].find('"').unwrap()].to_string()
            };
            let points = attr("points")
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect();
            (attr("stroke"), points)
        })
        .collect()
}

fn figure(dir: &Path, files: &[String], part: &str) -> String {
    let name = files
        .iter()
        .find(|f| f.contains(part) && f.ends_with(".svg"))
        .unwrap_or_else(|| panic!("no figure named like {part} in {files:?}"));
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// 3 seeds × 5 checkpoints × 5 layers: the example sweep's 75 representations.
fn seventy_five() -> Vec<RepresentationKey> {
    let mut keys = Vec::new();
    for seed in 0..3 {
        for step in [0, 25, 100, 400, 2250] {
            for layer in ["h1", "h2", "h3", "h4", "logits"] {
                keys.push(key("mlp", seed, step, layer));
            }
        }
    }
    keys
}

#[test]
fn a_75_row_matrix_labels_every_row_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = seventy_five();
    let options = ReportOptions::default().with_gaussian_null(false);
    let summary = write_report(&all_pairs(&keys), tmp.path(), &options).unwrap();
    let svg = figure(tmp.path(), &summary.files, "matrix_svcca");
    let texts = texts(&svg);
    for k in &keys {
        let label = k.label();
        let rows = texts
            .iter()
            .filter(|t| t.content == label && t.attr("text-anchor") == Some("end"))
            .count();
        let cols = texts
            .iter()
            .filter(|t| t.content == label && t.attr("transform").is_some())
            .count();
        assert_eq!((rows, cols), (1, 1), "{label}: row and column labels");
    }
    // Labels one cell apart do not overlap: the font is no taller than a cell.
    let row_labels: Vec<&Text> = texts
        .iter()
        .filter(|t| t.content.starts_with("run=") && t.attr("text-anchor") == Some("end"))
        .collect();
    assert_eq!(row_labels.len(), 75);
    let gap = row_labels[1].num("y") - row_labels[0].num("y");
    let size: f64 = row_labels[0].num("font-size");
    assert!(
        size * 1.24 <= gap && size >= 7.0,
        "font {size} for rows {gap} px apart"
    );
}

#[test]
fn a_300_row_matrix_labels_groups_of_rows_with_separators() {
    let tmp = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    for run in ["cnn", "mlp"] {
        for seed in 0..3 {
            for step in [0, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] {
                for layer in ["h1", "h2", "h3", "h4", "logits"] {
                    keys.push(key(run, seed, step, layer));
                }
            }
        }
    }
    assert_eq!(keys.len(), 300);
    // SVCCA_REPORT_OUT=DIR keeps the pictures for a look.
    let dir = std::env::var_os("SVCCA_REPORT_OUT").map_or(tmp.path().to_path_buf(), |d| {
        Path::new(&d).join("matrix_300")
    });
    let options = ReportOptions::default().with_gaussian_null(false);
    let summary = write_report(&all_pairs(&keys), &dir, &options).unwrap();
    let svg = figure(&dir, &summary.files, "matrix_svcca");
    let texts = texts(&svg);
    // No representation is labelled alone: 300 labels would be 3 px apart.
    for k in &keys {
        assert!(
            !texts.iter().any(|t| t.content == k.label()),
            "{}",
            k.label()
        );
    }
    // One label per (run, seed, step) on each axis: 60 bands of 5 rows.
    let mut groups = Vec::new();
    for k in keys.iter().filter(|k| k.layer == "h1") {
        let group = format!(
            "run={},seed={},step={}",
            k.run,
            k.seed.unwrap(),
            k.step.unwrap()
        );
        let n = texts.iter().filter(|t| t.content == group).count();
        assert_eq!(n, 2, "{group}: one row and one column label");
        groups.push(group);
    }
    assert_eq!(groups.len(), 60);
    let group_texts = texts
        .iter()
        .filter(|t| t.content.starts_with("run="))
        .count();
    assert_eq!(group_texts, 120);
    // White separators between the bands, across the grid, both ways.
    let separators = polylines(&svg)
        .into_iter()
        .filter(|(stroke, pts)| stroke == "#FFFFFF" && pts.len() == 2)
        .count();
    assert_eq!(separators, 2 * 59);
}

/// Ten classes between 0.95 and 0.99 over five checkpoints, and two dimensionality curves.
fn analyses() -> ComputedAnalyses {
    let steps = [0, 25, 100, 400, 2250];
    let classes = (0..10)
        .map(|c| ClassCurve {
            class: c,
            count: 60,
            points: steps
                .iter()
                .enumerate()
                .map(|(i, &step)| DynamicsPoint {
                    step,
                    similarity: 0.95 + 0.003 * c as f64 + 0.002 * i as f64,
                })
                .collect(),
            warnings: vec![],
        })
        .collect();
    let curve = |a: &str, scale: f64| DimensionalityCurve {
        a: a.into(),
        b: "run=mlp,seed=1,step=2250,layer=h3".into(),
        keep: "99% of the variance".into(),
        neurons: 64,
        kept: 20,
        kept_b: 20,
        points: (1..=20)
            .map(|k| DimensionalityPoint {
                k,
                carried: scale * k as f64 / 20.0,
                both: scale * (0.6 + 0.02 * k as f64),
            })
            .collect(),
        full: scale,
        k99_carried: 20,
        shared: 10.0,
        best_both: scale,
        best_both_k: 20,
        k99_both: 19,
    };
    ComputedAnalyses {
        dimensionality: vec![
            curve("run=mlp,seed=0,step=2250,layer=h3", 0.9),
            curve("run=mlp,seed=0,step=2250,layer=h1", 0.8),
        ],
        class_sensitivity: vec![ClassSensitivity {
            layer: "run=mlp,seed=0,layer=h3".into(),
            target: "the class's logit column of logits".into(),
            keep: "99% of the variance".into(),
            classes,
        }],
        null_baselines: vec![],
        notes: vec![],
    }
}

#[test]
fn class_sensitivity_axis_is_fitted_to_the_classes_and_names_its_null() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = seventy_five();
    let mut res = results(&keys, vec![]);
    res.pairs.push(pair(&keys[0], &keys[1], "svcca", 0.5));
    let options = ReportOptions::default().with_computed(analyses());
    let summary = write_report(&res, tmp.path(), &options).unwrap();
    let svg = figure(tmp.path(), &summary.files, "classes_");
    let (lo, hi) = (0.95, 0.95 + 0.003 * 9.0 + 0.002 * 4.0);
    let ticks: Vec<f64> = texts(&svg)
        .iter()
        .filter(|t| t.attr("text-anchor") == Some("end"))
        .filter_map(|t| t.content.parse::<f64>().ok())
        .collect();
    assert!(ticks.len() >= 3, "y ticks {ticks:?}");
    // Padding and rounding to nice ticks widen the data's span by at most half of it.
    let pad = 0.5 * (hi - lo);
    for t in &ticks {
        assert!(
            *t >= lo - pad && *t <= hi + pad,
            "tick {t} outside {lo}..{hi} ± {pad}: {ticks:?}"
        );
    }
    let (first, last) = (ticks[0], ticks[ticks.len() - 1]);
    assert!(
        first <= lo && last >= hi,
        "ticks {ticks:?} do not cover the data {lo}..{hi}"
    );
    // Distinct labels: the step's decimals are all shown.
    let mut distinct: Vec<String> = ticks.iter().map(|t| t.to_string()).collect();
    distinct.dedup();
    assert_eq!(distinct.len(), ticks.len(), "{ticks:?}");
    // The Gaussian null of 40 directions against one column over 597 datapoints is near 0.26:
    // far below the classes, so it is named in the legend rather than squashing the axis.
    assert!(
        texts(&svg)
            .iter()
            .any(|t| t.content.starts_with("gaussian null 0.")
                && t.content.contains(", 40 dims vs 1 column")
                && t.content.ends_with("(below the axis)")),
        "{svg}"
    );
}

#[test]
fn dimensionality_pairs_share_a_colour_and_differ_by_dash() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = seventy_five();
    let mut res = results(&keys, vec![]);
    res.pairs.push(pair(&keys[0], &keys[1], "svcca", 0.5));
    let options = ReportOptions::default()
        .with_gaussian_null(false)
        .with_computed(analyses());
    let summary = write_report(&res, tmp.path(), &options).unwrap();
    let svg = figure(tmp.path(), &summary.files, "dimensionality");
    let lines = polylines(&svg);
    // A legend entry's sample: the line segments level with its text, left of it.
    let sample = |name: &str| -> (String, usize) {
        let t = texts(&svg)
            .into_iter()
            .find(|t| t.content == name)
            .unwrap_or_else(|| panic!("no legend entry {name}"));
        let (x, y) = (t.num("x") as i32, t.num("y") as i32);
        let segs: Vec<&(String, Vec<(i32, i32)>)> = lines
            .iter()
            .filter(|(_, p)| p.iter().all(|&(px, py)| py == y && px < x && px > x - 40))
            .collect();
        assert!(!segs.is_empty(), "no legend line for {name}");
        assert!(segs.iter().all(|s| s.0 == segs[0].0), "{name}: one colour");
        (segs[0].0.clone(), segs.len())
    };
    let mut colours = Vec::new();
    for a in ["h3", "h1"] {
        let pair =
            format!("run=mlp,seed=0,step=2250,layer={a} vs run=mlp,seed=1,step=2250,layer=h3");
        let carried = sample(&format!("{pair}: carried(k)"));
        let both = sample(&format!("{pair}: both(k)"));
        assert_eq!(carried.0, both.0, "{pair}: the two measures share a colour");
        assert_eq!(carried.1, 1, "carried(k) is solid");
        assert!(both.1 > 1, "both(k) is dashed");
        colours.push(carried.0);
    }
    assert_ne!(colours[0], colours[1], "two pairs, two colours");
}

#[test]
fn warnings_are_grouped_by_kind_with_counts_and_each_representation_once() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = seventy_five();
    let fin = |k: &RepresentationKey| key("mlp", k.seed.unwrap(), 2250, &k.layer);
    let mut pairs = Vec::new();
    for k in keys.iter().filter(|k| k.step != Some(2250)) {
        for metric in ["svcca", "cka"] {
            let mut p = pair(k, &fin(k), metric, 0.8);
            if metric == "svcca" {
                p.warnings.push(format!(
                    "only 597 datapoints for {} dimensions (< 5x): canonical correlations are \
                     biased upwards; the SVCCA authors advise 5-10x more datapoints than neurons",
                    130 + k.step.unwrap()
                ));
            }
            if k.layer == "h1" {
                p.warnings.push(format!(
                    "near-constant neurons dropped: 3 from {}",
                    k.label()
                ));
            }
            pairs.push(p);
        }
    }
    let options = ReportOptions::default().with_gaussian_null(false);
    write_report(&results(&keys, pairs), tmp.path(), &options).unwrap();
    let html = std::fs::read_to_string(tmp.path().join("index.html")).unwrap();
    let section = html
        .split("id=\"warnings\"")
        .nth(1)
        .expect("a warnings section")
        .split("<h2")
        .next()
        .unwrap();
    let rows: Vec<&str> = section.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), 2, "one row per kind: {section}");
    let sample = rows
        .iter()
        .find(|r| r.contains("only N datapoints for N dimensions"))
        .unwrap();
    // 60 svcca pairs carry it (3 seeds × 4 steps × 5 layers), none of the cka ones.
    assert!(sample.contains("<td>60</td>"), "{sample}");
    assert!(sample.contains("<td>svcca</td>"), "{sample}");
    let dropped = rows
        .iter()
        .find(|r| r.contains("near-constant neurons dropped"))
        .unwrap();
    // 12 h1 representations in both metrics' 24 pairs, each named once in its cell.
    assert!(dropped.contains("<td>24</td>"), "{dropped}");
    let cells: Vec<&str> = dropped.split("<td>").skip(1).collect();
    assert_eq!(cells.len(), 5, "{dropped}");
    let named = cells[3];
    for k in keys
        .iter()
        .filter(|k| k.layer == "h1" && k.step != Some(2250))
    {
        assert_eq!(
            named.matches(&k.label()).count(),
            1,
            "{}: {named}",
            k.label()
        );
    }
    assert_eq!(named.matches("run=").count(), 12, "{named}");
    // In the sweep's order: step 25 before step 100.
    let at = |step: i64| named.find(&key("mlp", 0, step, "h1").label()).unwrap();
    assert!(
        at(0) < at(25) && at(25) < at(100) && at(100) < at(400),
        "{named}"
    );
    // The svcca pairs' warning names nobody: both sides of its pairs, 75 representations less
    // none, fold under their count.
    assert!(
        sample.contains("<summary>75 representations</summary>"),
        "{sample}"
    );
}

/// y tick labels of a line chart (the right-aligned numbers beside the axis).
fn y_ticks(svg: &str) -> Vec<f64> {
    texts(svg)
        .iter()
        .filter(|t| t.attr("text-anchor") == Some("end"))
        .filter_map(|t| t.content.parse::<f64>().ok())
        .collect()
}

#[test]
fn learning_dynamics_and_cross_seed_axes_are_fitted_and_show_their_null_band() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = seventy_five();
    let steps = [0, 25, 100, 400];
    let layers = ["h1", "h2", "h3", "h4", "logits"];
    let mut pairs = Vec::new();
    for seed in 0..3 {
        for (si, step) in steps.iter().enumerate() {
            for (li, layer) in layers.iter().enumerate() {
                // Between 0.90 and 0.99: every curve far above the null (~0.3 at 40 dims).
                let v = 0.90 + 0.02 * si as f64 + 0.003 * li as f64 + 0.001 * seed as f64;
                pairs.push(pair(
                    &key("mlp", seed, *step, layer),
                    &key("mlp", seed, 2250, layer),
                    "svcca",
                    v,
                ));
            }
        }
    }
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        for (li, layer) in layers.iter().enumerate() {
            pairs.push(pair(
                &key("mlp", a, 2250, layer),
                &key("mlp", b, 2250, layer),
                "svcca",
                0.45 + 0.07 * li as f64,
            ));
        }
    }
    let res = results(&keys, pairs);
    let summary = write_report(&res, tmp.path(), &ReportOptions::default()).unwrap();

    let dynamics = figure(tmp.path(), &summary.files, "dynamics_svcca_");
    let ticks = y_ticks(&dynamics);
    assert!(ticks.len() >= 3, "y ticks {ticks:?}");
    // The curves (0.90..0.99) and the 0.95 threshold fill the axis: not a 0–1 axis.
    assert!(ticks[0] >= 0.8 && ticks[0] <= 0.9, "{ticks:?}");
    assert!(*ticks.last().unwrap() >= 0.99, "{ticks:?}");
    let legend: Vec<String> = texts(&dynamics).into_iter().map(|t| t.content).collect();
    assert!(
        legend
            .iter()
            .any(|t| t.starts_with("gaussian null 0.") && t.ends_with("(below the axis)")),
        "{legend:?}"
    );
    assert!(!legend.iter().any(|t| t.contains("(max)")), "{legend:?}");

    // Seed pairs at 0.45..0.73 with a null near 0.3: the band is close enough to be drawn,
    // and the axis spans both, up to just above the data (not to 1).
    let seeds = figure(tmp.path(), &summary.files, "seeds_");
    let ticks = y_ticks(&seeds);
    assert!(ticks.len() >= 3, "y ticks {ticks:?}");
    assert!(ticks[0] <= 0.3, "{ticks:?}");
    assert!(
        *ticks.last().unwrap() >= 0.74 && *ticks.last().unwrap() <= 0.9,
        "{ticks:?}"
    );
    let legend: Vec<String> = texts(&seeds).into_iter().map(|t| t.content).collect();
    assert!(
        legend
            .iter()
            .any(|t| t.starts_with("gaussian null 0.") && !t.ends_with("(below the axis)")),
        "{legend:?}"
    );
}
