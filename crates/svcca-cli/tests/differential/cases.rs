//! The data the harness runs on and the random job specs it draws over it.

use std::path::{Path, PathBuf};

use crate::support::{Rng, copy_tree, repo, svcca, text, write_npy};

/// One representation of a dataset, as its manifest names it.
#[derive(Debug, Clone)]
pub struct Rep {
    pub run: String,
    pub seed: i64,
    pub step: i64,
    pub layer: String,
    /// `[datapoints, ...]`.
    pub shape: Vec<usize>,
    /// The `.npy` it was ingested from, when the harness knows it.
    pub npy: Option<PathBuf>,
}

impl Rep {
    pub fn label(&self) -> String {
        format!(
            "{}/seed{}/step{}/{}",
            self.run, self.seed, self.step, self.layer
        )
    }

    pub fn is_conv(&self) -> bool {
        self.shape.len() == 4
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `examples/digits-dataset`: the digits MLP, 3 seeds × 5 steps × 5 layers.
    Digits,
    /// The digits CNN's conv layers from `fixtures/digits/conv`, ingested by the harness.
    Conv,
    /// Small generated activations with a tag, several shards per representation, constant and
    /// duplicated neurons and float64 files, ingested by the harness.
    Generated,
}

/// A dataset the cases draw from.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub kind: Kind,
    /// The dataset folder (absolute).
    pub root: PathBuf,
    /// The `.npy` tree it was ingested from (for re-ingesting changed data).
    pub src: Option<PathBuf>,
    pub pattern: String,
    pub shard_rows: usize,
    pub reps: Vec<Rep>,
}

impl Dataset {
    pub fn selector(&self, rep: &Rep) -> String {
        format!(
            "file://{}#run={},seed={},step={},layer={}",
            self.root.display(),
            rep.run,
            rep.seed,
            rep.step,
            rep.layer
        )
    }

    /// Reads the keys and shapes from the manifest (`npy_root`: where the sources lie).
    fn load(
        kind: Kind,
        root: PathBuf,
        src: Option<PathBuf>,
        npy_root: Option<&Path>,
        pattern: &str,
        shard_rows: usize,
    ) -> Dataset {
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join("manifest.json")).expect("manifest.json"),
        )
        .expect("manifest JSON");
        let reps = manifest["representations"]
            .as_array()
            .expect("representations")
            .iter()
            .map(|r| {
                let key = &r["key"];
                Rep {
                    run: key["run"].as_str().expect("run").to_string(),
                    seed: key["seed"].as_i64().expect("seed"),
                    step: key["step"].as_i64().expect("step"),
                    layer: key["layer"].as_str().expect("layer").to_string(),
                    shape: r["shape"]
                        .as_array()
                        .expect("shape")
                        .iter()
                        .map(|d| d.as_u64().expect("dim") as usize)
                        .collect(),
                    npy: npy_root.map(|n| n.join(r["source"].as_str().expect("source"))),
                }
            })
            .collect();
        Dataset {
            kind,
            root,
            src,
            pattern: pattern.to_string(),
            shard_rows,
            reps,
        }
    }

    /// The same sources ingested afresh under `dir` with `shard_rows` datapoints per shard: a
    /// dataset a case may change.
    pub fn ingest_copy(&self, dir: &Path, shard_rows: usize) -> Dataset {
        let from = self.src.as_ref().expect("a dataset the harness ingested");
        let src = dir.join("src");
        copy_tree(from, &src);
        let copy = Dataset {
            root: dir.join("dataset"),
            src: Some(src.clone()),
            shard_rows,
            reps: Vec::new(),
            ..self.clone()
        };
        let out = copy.ingest(false);
        assert!(
            out.status.success(),
            "ingest {}: {}",
            src.display(),
            text(&out)
        );
        Dataset::load(
            self.kind,
            copy.root,
            Some(src.clone()),
            Some(&src),
            &self.pattern,
            shard_rows,
        )
    }

    pub fn ingest(&self, force: bool) -> std::process::Output {
        let shard_rows = self.shard_rows.to_string();
        let mut args = vec![
            "ingest",
            self.src.as_ref().expect("src").to_str().expect("utf-8"),
            self.root.to_str().expect("utf-8"),
            "--pattern",
            &self.pattern,
            "--shard-rows",
            &shard_rows,
            // Conv cases write [images, h, w, channels].
            "--layout",
            "nhwc",
        ];
        if force {
            args.push("--force");
        }
        svcca(&args)
    }
}

pub fn digits() -> Dataset {
    let root = std::path::absolute(repo().join("examples/digits-dataset")).expect("abs");
    let npy = std::path::absolute(repo().join("fixtures/digits")).expect("abs");
    Dataset::load(
        Kind::Digits,
        root,
        None,
        Some(&npy),
        "{run}/seed{seed}/step{step}/{layer}",
        597,
    )
}

/// The conv fixtures ingested into `dir/conv`.
pub fn conv(dir: &Path) -> Dataset {
    let src = dir.join("conv-src");
    let fixtures = repo().join("fixtures/digits");
    for seed in 0..2 {
        for layer in ["conv1", "conv2"] {
            let rel = format!("conv/seed{seed}/step1500/{layer}.npy");
            let to = src.join(&rel);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(fixtures.join(&rel), &to).expect("copy fixture");
        }
    }
    let ds = Dataset {
        kind: Kind::Conv,
        root: dir.join("conv"),
        src: Some(src.clone()),
        pattern: "{run}/seed{seed}/step{step}/{layer}.npy".into(),
        shard_rows: 250,
        reps: Vec::new(),
    };
    let out = ds.ingest(false);
    assert!(out.status.success(), "ingest conv: {}", text(&out));
    Dataset::load(
        Kind::Conv,
        ds.root,
        Some(src.clone()),
        Some(&src),
        &ds.pattern,
        ds.shard_rows,
    )
}

pub const GEN_ROWS: usize = 240;
const GEN_LAYERS: [(&str, usize, bool); 3] = [("a", 12, true), ("b", 24, true), ("c", 6, false)];

/// Activations of one generated representation: a mix of a seed's latent factors, drifting with
/// the step, plus noise; layer `b` has a constant neuron and a duplicated one (what real ReLU
/// layers have), so dropping and rank deficiency are exercised.
pub fn generated_values(rng: &mut Rng, latent: &[f64], neurons: usize, layer: &str) -> Vec<f64> {
    const FACTORS: usize = 5;
    let mix: Vec<f64> = (0..FACTORS * neurons).map(|_| rng.normal()).collect();
    let mut values = vec![0.0; GEN_ROWS * neurons];
    for r in 0..GEN_ROWS {
        for c in 0..neurons {
            let mut v = 0.3 * rng.normal();
            for f in 0..FACTORS {
                v += latent[r * FACTORS + f] * mix[f * neurons + c];
            }
            // Datasets store float32: values exactly representable in it make a float64 source
            // file and its ingested representation the same data.
            values[r * neurons + c] = v as f32 as f64;
        }
        if layer == "b" {
            values[r * neurons + 3] = 1.5;
            values[r * neurons + 7] = values[r * neurons + 5];
        }
    }
    values
}

/// Writes the generated `.npy` tree into `dir/gen-src` and ingests it into `dir/gen`.
pub fn generated(dir: &Path, rng: &mut Rng) -> Dataset {
    let src = dir.join("gen-src");
    for seed in 0..2 {
        let arch = if seed == 0 { "wide" } else { "deep" };
        let latent: Vec<f64> = (0..GEN_ROWS * 5).map(|_| rng.normal()).collect();
        for step in [10, 20, 30] {
            for (layer, neurons, f32_values) in GEN_LAYERS {
                let values = generated_values(rng, &latent, neurons, layer);
                let path = src.join(format!("gen/{arch}/seed{seed}/step{step}/{layer}.npy"));
                write_npy(&path, &[GEN_ROWS, neurons], &values, f32_values);
            }
        }
    }
    let ds = Dataset {
        kind: Kind::Generated,
        root: dir.join("gen"),
        src: Some(src.clone()),
        pattern: "{run}/{arch}/seed{seed}/step{step}/{layer}.npy".into(),
        shard_rows: 37,
        reps: Vec::new(),
    };
    let out = ds.ingest(false);
    assert!(out.status.success(), "ingest generated: {}", text(&out));
    Dataset::load(
        Kind::Generated,
        ds.root,
        Some(src.clone()),
        Some(&src),
        &ds.pattern,
        ds.shard_rows,
    )
}

/// What happens to a case's dataset after the first runs (path (e)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// New values for one representation, then `svcca ingest --force`.
    Reingest,
    /// A shard file overwritten with other valid shard bytes; the manifest is left alone.
    ShardBehindManifest,
    /// A shard file overwritten and its manifest entry's `sha256`/`bytes` updated, but the
    /// representation's `values_sha256` left as it was.
    StaleValuesHash,
}

/// One random job: the spec's settings, how to run it, and which extra paths to take.
#[derive(Debug, Clone)]
pub struct Case {
    pub index: usize,
    pub seed: u64,
    pub kind: Kind,
    /// Spec TOML without `dataset`/`output` (added per run).
    pub body: String,
    pub keep: (Option<f64>, Option<usize>),
    pub google: bool,
    /// `precision = "mixed"`: the sweep's moments and `svcca compare`'s run f32 products.
    pub mixed: bool,
    pub conv: Option<&'static str>,
    pub workers: usize,
    /// Generated data is ingested for each case with this many datapoints per shard.
    pub shard_rows: usize,
    /// `--block-rows` for the `svcca compare` runs.
    pub block_rows: usize,
    /// The spec's `rows_per_task`, when it sets one.
    pub rows_per_task: Option<usize>,
    /// How many (pair, metric) results are checked against `svcca compare`.
    pub compares: usize,
    pub kill_sweep: bool,
    pub kill_coordinator: bool,
    pub change: Option<Change>,
}

fn toml_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

impl Case {
    /// The full job spec for a dataset and an output folder.
    pub fn spec(&self, dataset: &Path, output: &Path) -> String {
        format!(
            "dataset = {:?}\noutput = {:?}\n{}",
            dataset.to_str().expect("utf-8"),
            output.to_str().expect("utf-8"),
            self.body
        )
    }

    /// A fresh random case over one of `datasets`.
    pub fn draw(index: usize, seed: u64, datasets: &[&Dataset]) -> Case {
        let mut rng = Rng::new(seed);
        let ds = *rng.pick(datasets);
        let kind = ds.kind;
        let mut top = Vec::new();
        let mut tables = Vec::new();

        // Which representations and pairs.
        let labels = |reps: &[Rep]| reps.iter().map(Rep::label).collect::<Vec<_>>();
        let reps = &ds.reps;
        let plan = match kind {
            Kind::Conv => *rng.pick(&["all-pairs", "cross-seed", "pairs"]),
            _ => *rng.pick(&["all-pairs", "all-pairs", "vs-final", "cross-seed", "pairs"]),
        };
        top.push(format!("comparison = {plan:?}"));
        match plan {
            "pairs" => {
                let n = rng.range(1, 4);
                let mut pairs = Vec::new();
                while pairs.len() < n {
                    let (a, b) = (rng.pick(reps), rng.pick(reps));
                    if a.label() != b.label() && a.is_conv() == b.is_conv() {
                        pairs.push(format!("[{:?}, {:?}]", a.label(), b.label()));
                    }
                }
                top.push(format!("pairs = [{}]", pairs.join(", ")));
            }
            "all-pairs" if rng.chance(0.4) => {
                let chosen = rng.some(reps, 2, 5);
                tables.push(format!("[select]\nkeys = {}", toml_list(&labels(&chosen))));
            }
            _ => {
                // Field filters narrow the selection to a few representations.
                let mut filters = Vec::new();
                let seeds: Vec<i64> = {
                    let mut s: Vec<i64> = reps.iter().map(|r| r.seed).collect();
                    s.dedup();
                    s.sort_unstable();
                    s.dedup();
                    s
                };
                let steps: Vec<i64> = {
                    let mut s: Vec<i64> = reps.iter().map(|r| r.step).collect();
                    s.sort_unstable();
                    s.dedup();
                    s
                };
                let layers: Vec<String> = {
                    let mut s: Vec<String> = reps.iter().map(|r| r.layer.clone()).collect();
                    s.sort_unstable();
                    s.dedup();
                    s
                };
                let as_text = |v: Vec<i64>| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
                match plan {
                    "vs-final" => {
                        filters.push(format!("seed = {:?}", rng.pick(&seeds).to_string()));
                        filters.push(format!("layer = {}", toml_list(&rng.some(&layers, 1, 2))));
                        if steps.len() > 3 && rng.chance(0.5) {
                            let mut chosen = rng.subset(&steps[..steps.len() - 1], 2);
                            chosen.push(*steps.last().expect("a step"));
                            filters.push(format!("step = {}", toml_list(&as_text(chosen))));
                        }
                    }
                    "cross-seed" => {
                        filters.push(format!("layer = {}", toml_list(&rng.some(&layers, 1, 2))));
                        filters.push(format!(
                            "step = {}",
                            toml_list(&as_text(rng.some(&steps, 1, 2)))
                        ));
                    }
                    _ => {
                        // all-pairs over a small block, sometimes by glob or by tag.
                        if kind == Kind::Generated && rng.chance(0.5) {
                            let arch = if rng.chance(0.5) { "wide" } else { "de*" };
                            filters.push(format!("arch = {arch:?}"));
                        } else {
                            filters.push(format!("seed = {:?}", rng.pick(&seeds).to_string()));
                        }
                        filters.push(format!(
                            "step = {}",
                            toml_list(&as_text(rng.some(&steps, 1, 2)))
                        ));
                        if kind == Kind::Digits && rng.chance(0.3) {
                            filters.push(format!("layer = {:?}", "h?"));
                        } else {
                            filters
                                .push(format!("layer = {}", toml_list(&rng.some(&layers, 2, 3))));
                        }
                    }
                }
                tables.push(format!("[select]\nwhere = {{ {} }}", filters.join(", ")));
            }
        }

        // How they are compared.
        let all_metrics: &[&str] = match kind {
            Kind::Conv => &["svcca", "cca"],
            _ => &["svcca", "cca", "pwcca", "cka"],
        };
        let metrics: Vec<String> = rng
            .some(all_metrics, 1, all_metrics.len().min(3))
            .into_iter()
            .map(str::to_string)
            .collect();
        top.push(format!("metrics = {}", toml_list(&metrics)));
        let google = rng.chance(0.3);
        if google {
            top.push("mode = \"google-compat\"".into());
        }
        // Drawn from the case seed, not the stream, so the other choices of every case stay as
        // they were before mixed precision existed. Not with pwcca: its weights follow the
        // canonical directions, which f32 products move by far more than the f64 checks allow.
        let mixed =
            !google && !metrics.iter().any(|m| m == "pwcca") && (seed >> 17).is_multiple_of(3);
        if mixed {
            top.push("precision = \"mixed\"".into());
        }
        let conv = (kind == Kind::Conv).then(|| *rng.pick(&["dft", "fold", "pool"]));
        if let Some(c) = conv {
            top.push(format!("conv = {c:?}"));
        }
        let keep = if rng.chance(0.5) {
            let f = *rng.pick(&[0.5, 0.9, 0.99, 0.999, 1.0]);
            tables.push(format!("[keep]\nvariance = {f:?}"));
            (Some(f), None)
        } else {
            let k = *rng.pick(&[1usize, 3, 8, 20, 200]);
            tables.push(format!("[keep]\ndims = {k}"));
            (None, Some(k))
        };

        // How the work is cut.
        let mut resources = Vec::new();
        if rng.chance(0.5) {
            resources.push(format!("memory_mb = {}", rng.pick(&[40u64, 64, 1024])));
        }
        let rows_per_task = rng
            .chance(0.6)
            .then(|| *rng.pick(&[37usize, 60, 100, 250, 1000]));
        if let Some(rows) = rows_per_task {
            resources.push(format!("rows_per_task = {rows}"));
        }
        if !resources.is_empty() {
            tables.push(format!("[resources]\n{}", resources.join("\n")));
        }

        let workers = rng.range(1, 3);
        let shard_rows = *rng.pick(&[13usize, 37, 64, GEN_ROWS]);
        let block_rows = *rng.pick(&[1usize, 7, 64, 8192]);
        let compares = rng.range(1, 3);
        let kill_sweep = rng.chance(0.3);
        let kill_coordinator = rng.chance(0.15);
        let change = (kind == Kind::Generated && rng.chance(0.6)).then(|| {
            *rng.pick(&[
                Change::Reingest,
                Change::ShardBehindManifest,
                Change::StaleValuesHash,
            ])
        });
        let body = format!("{}\n\n{}\n", top.join("\n"), tables.join("\n\n"));
        Case {
            index,
            seed,
            kind,
            body,
            keep,
            google,
            mixed,
            conv,
            workers,
            shard_rows,
            block_rows,
            rows_per_task,
            compares,
            kill_sweep,
            kill_coordinator,
            change,
        }
    }

    /// `svcca compare` flags matching the spec, for one metric.
    pub fn compare_flags(&self, metric: &str) -> Vec<String> {
        let mut flags = vec!["--json".to_string(), "--metric".into(), metric.into()];
        match self.keep {
            (Some(f), _) => flags.extend(["--keep-variance".into(), f.to_string()]),
            (_, Some(k)) => flags.extend(["--keep-dims".into(), k.to_string()]),
            _ => {}
        }
        if self.google {
            flags.push("--google-compat".into());
        }
        // Conv layers are compared in f64 in a mixed sweep, and compare refuses mixed for them.
        if self.mixed && self.conv.is_none() {
            flags.extend(["--precision".into(), "mixed".into()]);
        }
        if let Some(c) = self.conv {
            flags.extend(["--conv".into(), c.into()]);
        }
        flags.extend(["--block-rows".into(), self.block_rows.to_string()]);
        flags
    }

    /// The same flags with `--block-rows` set to the sweep's row chunk: the moments summed in
    /// the order the sweep sums them.
    pub fn compare_flags_at_sweep_chunks(&self, metric: &str) -> Vec<String> {
        let mut flags = self.compare_flags(metric);
        let rows = self.rows_per_task.unwrap_or(1 << 20);
        *flags.last_mut().expect("--block-rows value") = rows.to_string();
        flags
    }

    /// How far this case's results may be from `svcca compare`'s.
    pub fn tolerance(&self) -> f64 {
        if self.mixed {
            crate::check::MIXED_TOLERANCE
        } else {
            crate::check::TOLERANCE
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "case {} (case seed {:#x}, {:?} data; embedded workers {}, shard rows {}, compare \
             --block-rows {}, kill sweep {}, kill coordinator {}, change {:?})\n--- spec ---\n{}",
            self.index,
            self.seed,
            self.kind,
            self.workers,
            if self.kind == Kind::Generated {
                self.shard_rows.to_string()
            } else {
                "as stored".into()
            },
            self.block_rows,
            self.kill_sweep,
            self.kill_coordinator,
            self.change,
            self.body.trim_end()
        )
    }
}
