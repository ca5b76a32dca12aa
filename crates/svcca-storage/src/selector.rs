//! Selectors: naming one representation of a dataset on a command line.
//!
//! Syntax: `DATASET_URL#key=value,key=value,...`, for example
//! `s3://bucket/acts#run=mlp,seed=0,step=2250,layer=h1`.
//!
//! - Keys: `run` (alias `model`), `seed`, `step`, `layer`, or any tag key the dataset uses.
//! - `seed` and `step` compare as numbers (`step=0100` is step 100).
//! - `step=last` (or `latest`) picks the highest step among the otherwise matching
//!   representations; `step=first` the lowest.
//! - Keys may be left out as long as exactly one representation matches; otherwise the error lists
//!   the candidates. A representation's canonical id ([`crate::RepKey::id`]) is always a selector
//!   that matches exactly it.
//! - The URL is everything before the last `#`; spaces around keys and values are ignored; values
//!   cannot contain `,` or `=`.

use crate::StorageError;
use crate::manifest::{Manifest, Representation};

/// One `key=value` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Run(String),
    Seed(u64),
    Step(StepSel),
    Layer(String),
    Tag(String, String),
}

/// What `step=` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepSel {
    Exact(u64),
    First,
    Last,
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The dataset URL (before `#`).
    pub dataset_url: String,
    pub conditions: Vec<Condition>,
}

impl Selector {
    /// True when `text` looks like a selector (a `#` followed by `key=value`), as opposed to a
    /// plain file path; lets the CLI accept both.
    pub fn looks_like_selector(text: &str) -> bool {
        text.rsplit_once('#')
            .is_some_and(|(url, sel)| !url.is_empty() && sel.contains('='))
    }

    /// Parses `URL#k=v,...`.
    pub fn parse(text: &str) -> Result<Selector, StorageError> {
        let bad = |reason: String| StorageError::InvalidSelector {
            text: text.to_string(),
            reason,
        };
        let (url, body) = text
            .rsplit_once('#')
            .ok_or_else(|| bad("expected DATASET_URL#key=value,... (for example ds#run=mlp,seed=0,step=2250,layer=h1)".into()))?;
        if url.trim().is_empty() {
            return Err(bad("the dataset URL before '#' is empty".into()));
        }
        let mut conditions = Vec::new();
        for part in body.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("'{part}' is not key=value")))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || v.is_empty() || v.contains('=') {
                return Err(bad(format!("'{part}' is not key=value")));
            }
            let num = |what: &str| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("{what} must be a non-negative integer, got '{v}'")))
            };
            let c = match k {
                "run" | "model" => Condition::Run(v.into()),
                "seed" => Condition::Seed(num("seed")?),
                "step" => Condition::Step(match v {
                    "last" | "latest" => StepSel::Last,
                    "first" => StepSel::First,
                    _ => StepSel::Exact(num("step")?),
                }),
                "layer" => Condition::Layer(v.into()),
                _ => Condition::Tag(k.into(), v.into()),
            };
            let same_key = |a: &Condition, b: &Condition| match (a, b) {
                (Condition::Tag(x, _), Condition::Tag(y, _)) => x == y,
                _ => std::mem::discriminant(a) == std::mem::discriminant(b),
            };
            if conditions.iter().any(|o| same_key(o, &c)) {
                return Err(bad(format!("key '{k}' is given twice")));
            }
            conditions.push(c);
        }
        if conditions.is_empty() {
            return Err(bad("no key=value conditions after '#'".into()));
        }
        Ok(Selector {
            dataset_url: url.trim().to_string(),
            conditions,
        })
    }

    /// The conditions as `k=v,...` text.
    pub fn conditions_text(&self) -> String {
        self.conditions
            .iter()
            .map(|c| match c {
                Condition::Run(r) => format!("run={r}"),
                Condition::Seed(s) => format!("seed={s}"),
                Condition::Step(StepSel::Exact(s)) => format!("step={s}"),
                Condition::Step(StepSel::First) => "step=first".into(),
                Condition::Step(StepSel::Last) => "step=last".into(),
                Condition::Layer(l) => format!("layer={l}"),
                Condition::Tag(k, v) => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn matches_except_step_order(&self, r: &Representation) -> bool {
        self.conditions.iter().all(|c| match c {
            Condition::Run(v) => &r.key.run == v,
            Condition::Seed(v) => r.key.seed == Some(*v),
            Condition::Step(StepSel::Exact(v)) => r.key.step == Some(*v),
            Condition::Step(_) => r.key.step.is_some(),
            Condition::Layer(v) => &r.key.layer == v,
            Condition::Tag(k, v) => r.key.tags.get(k) == Some(v),
        })
    }

    /// Every representation of `manifest` that matches.
    pub fn matches<'m>(&self, manifest: &'m Manifest) -> Vec<&'m Representation> {
        let mut found: Vec<&Representation> = manifest
            .representations
            .iter()
            .filter(|r| self.matches_except_step_order(r))
            .collect();
        let pick = self.conditions.iter().find_map(|c| match c {
            Condition::Step(StepSel::First) => Some(false),
            Condition::Step(StepSel::Last) => Some(true),
            _ => None,
        });
        if let Some(last) = pick {
            let target = if last {
                found.iter().filter_map(|r| r.key.step).max()
            } else {
                found.iter().filter_map(|r| r.key.step).min()
            };
            found.retain(|r| r.key.step == target);
        }
        found
    }

    /// The one representation of `manifest` that matches; `url` names the dataset in errors.
    pub fn resolve_in<'m>(
        &self,
        url: &str,
        manifest: &'m Manifest,
    ) -> Result<&'m Representation, StorageError> {
        let found = self.matches(manifest);
        match found.len() {
            1 => Ok(found[0]),
            0 => {
                // Show the closest candidates: those matching the run (or everything), capped.
                let run = self.conditions.iter().find_map(|c| match c {
                    Condition::Run(r) => Some(r.as_str()),
                    _ => None,
                });
                let mut available: Vec<String> = manifest
                    .representations
                    .iter()
                    .filter(|r| run.is_none_or(|run| r.key.run == run))
                    .map(|r| r.id())
                    .collect();
                if available.is_empty() {
                    let mut runs: Vec<String> = manifest
                        .representations
                        .iter()
                        .map(|r| format!("run={}", r.key.run))
                        .collect();
                    runs.dedup();
                    available = runs;
                }
                if available.len() > 8 {
                    let n = available.len();
                    available.truncate(8);
                    available.push(format!("... ({n} in all; see `svcca ls {url}`)"));
                }
                Err(StorageError::NoMatch {
                    url: url.into(),
                    selector: self.conditions_text(),
                    available,
                })
            }
            _ => Err(StorageError::Ambiguous {
                url: url.into(),
                selector: self.conditions_text(),
                matches: found.iter().map(|r| r.id()).collect(),
            }),
        }
    }
}

impl std::str::FromStr for Selector {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.dataset_url, self.conditions_text())
    }
}

/// Glob match with `*` (any run of characters) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point: linear in practice, no recursion.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ProbeSet, RepKey, ShardEntry};

    fn rep(run: &str, seed: u64, step: u64, layer: &str) -> Representation {
        Representation {
            key: RepKey {
                run: run.into(),
                seed: Some(seed),
                step: Some(step),
                layer: layer.into(),
                tags: Default::default(),
            },
            shape: vec![10, 2],
            layout: crate::Layout::Dense,
            depth: 0,
            source_layout: None,
            dtype: "float32".into(),
            source_dtype: None,
            source: None,
            shards: vec![ShardEntry {
                path: "x".into(),
                row_start: 0,
                rows: 10,
                bytes: 1,
                sha256: "0".repeat(64),
                crc32: None,
            }],
            values_sha256: None,
        }
    }

    fn manifest() -> Manifest {
        let mut m = Manifest::new(ProbeSet {
            datapoints: 10,
            fingerprint: None,
            description: None,
        });
        for seed in [0, 1] {
            for step in [0, 25, 100, 2250] {
                for layer in ["h1", "h2"] {
                    m.representations.push(rep("mlp", seed, step, layer));
                }
            }
        }
        m.representations.push(rep("conv", 0, 1500, "conv1"));
        m.sort();
        m
    }

    #[test]
    fn parse_and_display() {
        let s = Selector::parse("s3://b/ds#run=mlp, seed=0,step=2250,layer=h1").unwrap();
        assert_eq!(s.dataset_url, "s3://b/ds");
        assert_eq!(s.to_string(), "s3://b/ds#run=mlp,seed=0,step=2250,layer=h1");
        assert!(Selector::looks_like_selector("/tmp/ds#layer=h1"));
        assert!(!Selector::looks_like_selector("/tmp/a.npy"));
        for bad in [
            "nohash",
            "#run=a",
            "ds#seed=x",
            "ds#run",
            "ds#run=a,run=b",
            "ds#",
            "ds#step=-1",
        ] {
            assert!(
                matches!(
                    Selector::parse(bad),
                    Err(StorageError::InvalidSelector { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn resolves_exactly_one() {
        let m = manifest();
        let s = Selector::parse("ds#run=mlp,seed=1,step=100,layer=h2").unwrap();
        assert_eq!(
            s.resolve_in("ds", &m).unwrap().id(),
            "run=mlp,seed=1,step=100,layer=h2"
        );
        // Canonical ids round-trip.
        for r in &m.representations {
            let s = Selector::parse(&format!("ds#{}", r.id())).unwrap();
            assert_eq!(s.resolve_in("ds", &m).unwrap().key, r.key);
        }
        let s = Selector::parse("ds#model=mlp,seed=0,step=last,layer=h1").unwrap();
        assert_eq!(s.resolve_in("ds", &m).unwrap().key.step, Some(2250));
        let s = Selector::parse("ds#run=mlp,seed=0,step=first,layer=h1").unwrap();
        assert_eq!(s.resolve_in("ds", &m).unwrap().key.step, Some(0));
        let s = Selector::parse("ds#layer=conv1").unwrap();
        assert_eq!(s.resolve_in("ds", &m).unwrap().key.run, "conv");
    }

    #[test]
    fn ambiguous_and_missing_name_candidates() {
        let m = manifest();
        let e = Selector::parse("ds#run=mlp,seed=0,layer=h1")
            .unwrap()
            .resolve_in("ds", &m)
            .unwrap_err();
        match e {
            StorageError::Ambiguous { matches, .. } => assert_eq!(matches.len(), 4),
            other => panic!("{other}"),
        }
        let e = Selector::parse("ds#run=mlp,seed=0,step=7,layer=h1")
            .unwrap()
            .resolve_in("ds", &m)
            .unwrap_err();
        assert!(matches!(e, StorageError::NoMatch { .. }));
        assert!(
            e.to_string().contains("run=mlp,seed=0,step=0,layer=h1"),
            "{e}"
        );
    }
}
