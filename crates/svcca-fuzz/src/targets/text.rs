//! Text a user types: selectors (`DATASET#run=..,layer=..`) and job specs (`JOB.toml`).

use svcca_engine::spec::JobSpec;
use svcca_storage::{Manifest, Selector};

use super::coordinator::FuzzDataset;
use super::{Target, outcome, repo_root, runtime, signature};
use crate::mutate::Format;

const SELECTOR_DICT: &[&str] = &[
    "#",
    "run=",
    "seed=",
    "step=",
    "layer=",
    ",",
    "=",
    "*",
    "last",
    "first",
    "mlp",
    "h1",
    "logits",
    "s3://",
    "file://",
    "memory://",
    "%",
    " ",
];

/// `svcca compare` / `svcca ls` selectors, resolved against the example dataset's manifest.
pub struct SelectorTarget {
    manifest: Option<Manifest>,
}

impl SelectorTarget {
    pub fn new() -> Self {
        let manifest = std::fs::read(repo_root().join("examples/digits-dataset/manifest.json"))
            .ok()
            .and_then(|b| Manifest::from_json(&b, "manifest.json").ok());
        SelectorTarget { manifest }
    }
}

impl Target for SelectorTarget {
    fn name(&self) -> &'static str {
        "selector"
    }
    fn format(&self) -> Format {
        Format::Text(SELECTOR_DICT)
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut seeds: Vec<Vec<u8>> = [
            "s3://b/ds#run=mlp, seed=0,step=2250,layer=h1",
            "/tmp/ds#layer=h1",
            "ds#run=mlp,seed=1,step=last,layer=h2",
            "ds#layer=logits,quant=int8",
            "examples/digits-dataset#run=mlp,seed=0,step=first,layer=h4",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        if let Some(m) = &self.manifest {
            for rep in m.representations.iter().take(4) {
                seeds.push(format!("ds#{}", rep.id()).into_bytes());
            }
        }
        seeds
    }
    fn run(&mut self, input: &[u8]) -> String {
        let text = String::from_utf8_lossy(input);
        let _ = Selector::looks_like_selector(&text);
        let sel = match Selector::parse(&text) {
            Ok(s) => s,
            Err(e) => return signature(&e.to_string()),
        };
        let _ = (sel.conditions_text(), sel.to_string());
        // What `parse` accepts, its own display must give back.
        let again = Selector::parse(&sel.to_string());
        assert!(
            again.is_ok(),
            "selector {text:?} displays as {:?}, which does not parse: {:?}",
            sel.to_string(),
            again.err()
        );
        match &self.manifest {
            Some(m) => {
                let _ = sel.matches(m);
                outcome(&sel.resolve_in("ds", m))
            }
            None => "ok".into(),
        }
    }
}

const TOML_DICT: &[&str] = &[
    "dataset = ",
    "output = ",
    "cache = ",
    "comparison = ",
    "\"all-pairs\"",
    "\"pairs\"",
    "\"cross-seed\"",
    "pairs = ",
    "metrics = ",
    "\"svcca\"",
    "\"cca\"",
    "\"pwcca\"",
    "\"cka\"",
    "[select]",
    "where = ",
    "keys = ",
    "[keep]",
    "variance = ",
    "dims = ",
    "mode = ",
    "conv = ",
    "[resources]",
    "memory_mb = ",
    "rows_per_task = ",
    "[analyses]",
    "labels = ",
    "logits = ",
    "overwrite = true",
    "\"*\"",
    "nan",
    "inf",
    "[",
    "]",
    "{",
    "}",
    "\n",
];

/// Job spec TOML: parsed and validated, sent through its own TOML form (what crosses gRPC),
/// and planned by the coordinator's job factory over a small in-memory dataset.
pub struct SpecTarget {
    rt: tokio::runtime::Runtime,
    dataset: FuzzDataset,
}

impl SpecTarget {
    pub fn new() -> Self {
        let rt = runtime();
        let dataset = FuzzDataset::create(&rt);
        SpecTarget { rt, dataset }
    }
}

impl Target for SpecTarget {
    fn name(&self) -> &'static str {
        "spec"
    }
    fn format(&self) -> Format {
        Format::Text(TOML_DICT)
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut seeds = self.dataset.spec_seeds();
        for p in super::repo_files("examples", "toml", 8) {
            if let Ok(b) = std::fs::read(p) {
                seeds.push(b);
            }
        }
        seeds
    }
    fn run(&mut self, input: &[u8]) -> String {
        let Ok(text) = std::str::from_utf8(input) else {
            return "not utf-8".into();
        };
        let text = &self.dataset.expand(text);
        let spec = match JobSpec::from_toml(text) {
            Ok(s) => s,
            Err(e) => return signature(&e.to_string()),
        };
        let _ = (
            spec.describe_settings(),
            spec.metric_set(),
            spec.cache_url(),
        );
        // The coordinator hands workers `to_toml()`; it must mean the same job.
        let again = JobSpec::from_toml(&spec.to_toml());
        assert_eq!(
            again.as_ref().ok(),
            Some(&spec),
            "spec {text:?} does not survive its TOML form: {again:?}"
        );
        if !self.dataset.sandboxed(&spec) {
            return "accepted (not planned: outputs outside the sandbox)".into();
        }
        let factory = svcca_engine::job_factory();
        let r = self.rt.block_on(async {
            let created = factory.create(text.to_string()).await;
            let mut driver = match created {
                Ok(d) => d,
                Err(e) => return Err(e),
            };
            driver.take_ready().await.map(|t| t.len())
        });
        self.dataset.clear_outputs();
        outcome(&r)
    }
}
