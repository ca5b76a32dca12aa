//! The dataset manifest (`manifest.json` at the dataset root): the probe set, every
//! representation's keys, shape and shards. Readers never list the bucket; they read this.
//!
//! Representations are kept in a canonical order: run (natural order), seed and step
//! (numerically: step10 after step2), layer (natural order: h2 before h10), then tags.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::StorageError;

/// File name of the manifest at the dataset root.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Value of the manifest's `format` field.
pub const FORMAT_NAME: &str = "svcca-dataset";
/// Manifest version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `"svcca-dataset"`.
    pub format: String,
    /// Always 1 for now.
    pub version: u32,
    pub probe_set: ProbeSet,
    pub representations: Vec<Representation>,
}

/// Identity of the probe set every representation of the dataset covers, in the same datapoint
/// order. Two representations may only be compared when their probe sets are the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSet {
    /// Number of datapoints (the first axis of every representation).
    pub datapoints: usize,
    /// `sha256:<hex>` of whatever the user said identifies the probe set (a file of inputs or
    /// labels, or a name); `null` when nothing was given, in which case only the count is checked.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl ProbeSet {
    /// Errors unless representations over `self` and `other` may be compared: same datapoint
    /// count and, where both have one, the same fingerprint.
    pub fn check_compatible(&self, other: &ProbeSet) -> Result<(), StorageError> {
        if self.datapoints != other.datapoints {
            return Err(StorageError::ProbeMismatch {
                reason: format!(
                    "{} datapoints vs {} datapoints",
                    self.datapoints, other.datapoints
                ),
            });
        }
        if let (Some(a), Some(b)) = (&self.fingerprint, &other.fingerprint)
            && a != b
        {
            return Err(StorageError::ProbeMismatch {
                reason: format!(
                    "same datapoint count but different probe set fingerprints ({a} vs {b})"
                ),
            });
        }
        Ok(())
    }

    /// The fingerprint of bytes the user provides about the probe set.
    pub fn fingerprint_of(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }
}

/// Keys of a representation. `run` is the run or model name; `seed` and `step` are numbers so
/// that checkpoints sort numerically; anything else a path template captures goes in `tags`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepKey {
    pub run: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    pub layer: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl RepKey {
    /// The canonical id, which is also a valid selector: `run=mlp,seed=0,step=2250,layer=h1`
    /// (then tags in key order).
    pub fn id(&self) -> String {
        let mut s = format!("run={}", self.run);
        if let Some(seed) = self.seed {
            s.push_str(&format!(",seed={seed}"));
        }
        if let Some(step) = self.step {
            s.push_str(&format!(",step={step}"));
        }
        s.push_str(&format!(",layer={}", self.layer));
        for (k, v) in &self.tags {
            s.push_str(&format!(",{k}={v}"));
        }
        s
    }

    /// Directory of this representation's shards, relative to the dataset root.
    pub fn shard_dir(&self) -> String {
        let mut parts = vec![path_component(&self.run)];
        if let Some(seed) = self.seed {
            parts.push(format!("seed{seed}"));
        }
        if let Some(step) = self.step {
            parts.push(format!("step{step}"));
        }
        for (k, v) in &self.tags {
            parts.push(format!("{}={}", path_component(k), path_component(v)));
        }
        parts.push(path_component(&self.layer));
        format!("data/{}", parts.join("/"))
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let ok = |s: &str| !s.is_empty() && !s.contains([',', '=', '#']) && s.trim() == s;
        if !ok(&self.run) {
            return Err(format!(
                "run '{}' must be non-empty without ',', '=', '#' or surrounding spaces",
                self.run
            ));
        }
        if !ok(&self.layer) {
            return Err(format!(
                "layer '{}' must be non-empty without ',', '=', '#' or surrounding spaces",
                self.layer
            ));
        }
        for (k, v) in &self.tags {
            if !ok(k) || !ok(v) || matches!(k.as_str(), "run" | "model" | "seed" | "step" | "layer")
            {
                return Err(format!("tag '{k}={v}' is not allowed"));
            }
        }
        Ok(())
    }
}

/// Percent-encodes anything but `[A-Za-z0-9._-]` so keys become safe object-store path parts.
fn path_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out == "." || out == ".." {
        out = out.replace('.', "%2E");
    }
    out
}

impl Ord for RepKey {
    fn cmp(&self, other: &Self) -> Ordering {
        natural_cmp(&self.run, &other.run)
            .then(self.seed.cmp(&other.seed))
            .then(self.step.cmp(&other.step))
            .then(natural_cmp(&self.layer, &other.layer))
            .then_with(|| self.tags.cmp(&other.tags))
    }
}

impl PartialOrd for RepKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares strings with embedded numbers by value: `h2 < h10`, `conv1 < conv2 < fc`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (&a[..na], &b[..nb]);
                let ta = trim_zeros(da);
                let tb = trim_zeros(db);
                let ord = ta.len().cmp(&tb.len()).then(ta.cmp(tb)).then(na.cmp(&nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|&&c| c == b'0').count();
    &d[z..]
}

/// One representation: an activation matrix over the probe set, stored as shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Representation {
    pub key: RepKey,
    /// Full shape, datapoints first: `[n, d]` for dense layers, `[n, h, w, c]` for conv layers.
    pub shape: Vec<usize>,
    /// Stored element type; always `float32` in format version 1.
    pub dtype: String,
    /// Element type of the ingested source (`float64`, `float16`, `bfloat16`, ...), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_dtype: Option<String>,
    /// Where it was ingested from, relative to the ingest source, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub shards: Vec<ShardEntry>,
    /// Hex SHA-256 of all values as little-endian f32, row-major, datapoint 0 first; independent
    /// of how the rows are split into shards. Written by `svcca ingest`; optional for other writers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_sha256: Option<String>,
}

/// One Arrow IPC file holding datapoints `row_start .. row_start + rows`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    /// Path relative to the dataset root, `/`-separated.
    pub path: String,
    pub row_start: usize,
    pub rows: usize,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the whole file.
    pub sha256: String,
}

impl Representation {
    pub fn id(&self) -> String {
        self.key.id()
    }
    /// Number of datapoints.
    pub fn rows(&self) -> usize {
        self.shape[0]
    }
    /// Values per datapoint (`d`, or `h·w·c`); saturates at `usize::MAX` for a shape whose
    /// product overflows (see [`Representation::check_size`]).
    pub fn row_len(&self) -> usize {
        self.checked_row_len().unwrap_or(usize::MAX)
    }
    /// Values per datapoint, `None` when the product overflows.
    pub fn checked_row_len(&self) -> Option<usize> {
        self.shape
            .get(1..)?
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }
    /// All values (datapoints × values per datapoint), `None` when that overflows.
    pub fn checked_values(&self) -> Option<usize> {
        self.shape.first()?.checked_mul(self.checked_row_len()?)
    }
    /// Bytes of all values as float32, `None` when that overflows.
    pub fn checked_value_bytes(&self) -> Option<u64> {
        u64::try_from(self.checked_values()?).ok()?.checked_mul(4)
    }

    /// Refuses a representation whose shape cannot be what its shards hold: its sizes overflow,
    /// or a shard's manifest size is smaller than its datapoints as float32. A manifest may claim
    /// any shape; call this before sizing memory by it. Returns the bytes of all values.
    pub fn check_size(&self) -> Result<u64, StorageError> {
        let refuse = |reason: String| StorageError::RepresentationTooLarge {
            representation: self.id(),
            shape: self.shape.clone(),
            reason,
        };
        let total = self
            .checked_value_bytes()
            .ok_or_else(|| refuse("its number of values overflows".into()))?;
        let row_bytes = total / (self.rows().max(1) as u64);
        for (i, s) in self.shards.iter().enumerate() {
            let needed = (s.rows as u64).checked_mul(row_bytes);
            if needed.is_none_or(|n| n > s.bytes) {
                return Err(refuse(format!(
                    "shard {i} ({}) is {} bytes, too small for {} datapoints of {} float32 values",
                    s.path,
                    s.bytes,
                    s.rows,
                    row_bytes / 4
                )));
            }
        }
        Ok(total)
    }
    /// Shape of one datapoint: `[d]` or `[h, w, c]`.
    pub fn item_shape(&self) -> &[usize] {
        &self.shape[1..]
    }
    /// Total bytes of the shards (saturating: the sizes come from the manifest).
    pub fn bytes(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |acc, s| acc.saturating_add(s.bytes))
    }

    /// A checksum of the representation's content: equal checksums mean equal data, so caches
    /// can key on it. Built from the shape, dtype, every shard's SHA-256 and row range, and
    /// `values_sha256` when present. The shards' SHA-256 are what readers verify against the bytes
    /// they read; `values_sha256` is never checked on read, so a key built from it alone would let
    /// a rewritten shard with a stale `values_sha256` be answered from a cache.
    pub fn content_checksum(&self) -> String {
        let mut h = Sha256::new();
        h.update(
            format!(
                "svcca-representation-v2\n{:?}\n{}\n",
                self.shape, self.dtype
            )
            .as_bytes(),
        );
        if let Some(v) = &self.values_sha256 {
            h.update(format!("values {v}\n").as_bytes());
        }
        for s in &self.shards {
            h.update(format!("shard {} {} {}\n", s.row_start, s.rows, s.sha256).as_bytes());
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    fn validate(&self, datapoints: usize) -> Result<(), String> {
        let id = self.id();
        self.key.validate().map_err(|e| format!("{id}: {e}"))?;
        if self.shape.len() < 2 || self.shape.contains(&0) {
            return Err(format!(
                "{id}: shape {:?} must be [datapoints, ...] with no zero axis",
                self.shape
            ));
        }
        if self.dtype != "float32" {
            return Err(format!(
                "{id}: dtype '{}' is not supported (format version 1 stores float32)",
                self.dtype
            ));
        }
        if self.shape[0] != datapoints {
            return Err(format!(
                "{id}: {} datapoints but the probe set has {datapoints}",
                self.shape[0]
            ));
        }
        if self.shards.is_empty() {
            return Err(format!("{id}: no shards"));
        }
        let mut next = 0usize;
        for (i, s) in self.shards.iter().enumerate() {
            if s.row_start != next || s.rows == 0 {
                return Err(format!(
                    "{id}: shard {i} covers rows {}..{} but the next row expected is {next} (shards must be contiguous, in order, and non-empty)",
                    s.row_start,
                    s.row_start.saturating_add(s.rows)
                ));
            }
            if s.sha256.len() != 64
                || !s
                    .sha256
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            {
                return Err(format!(
                    "{id}: shard {i} has an invalid sha256 '{}'",
                    s.sha256
                ));
            }
            if s.path.is_empty()
                || s.path.starts_with('/')
                || s.path.split('/').any(|p| p == ".." || p.is_empty())
            {
                return Err(format!(
                    "{id}: shard {i} path '{}' must be relative to the dataset root",
                    s.path
                ));
            }
            next = next
                .checked_add(s.rows)
                .ok_or_else(|| format!("{id}: shard {i}'s row count {} overflows", s.rows))?;
        }
        if next != self.shape[0] {
            return Err(format!(
                "{id}: shards cover {next} rows but the shape has {}",
                self.shape[0]
            ));
        }
        Ok(())
    }
}

impl Manifest {
    /// An empty manifest for a probe set.
    pub fn new(probe_set: ProbeSet) -> Self {
        Manifest {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            probe_set,
            representations: Vec::new(),
        }
    }

    /// Parses and validates manifest JSON; `name` is used in errors. Representations come back
    /// sorted in canonical order.
    pub fn from_json(bytes: &[u8], name: &str) -> Result<Self, StorageError> {
        let invalid = |reason: String| StorageError::ManifestInvalid {
            manifest: name.to_string(),
            reason,
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(invalid(
                "the file is empty (an interrupted copy?); rerun `svcca ingest` to rewrite it"
                    .into(),
            ));
        }
        // Format and version first, so that a manifest from another tool or a newer svcca says
        // so instead of failing on the first field this version does not know.
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let Some(object) = value.as_object() else {
            return Err(invalid("not a JSON object".into()));
        };
        match object.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT_NAME) => {}
            Some(other) => {
                return Err(invalid(format!(
                    "format is '{other}', expected '{FORMAT_NAME}'"
                )));
            }
            None => {
                return Err(invalid(format!(
                    "no \"format\": \"{FORMAT_NAME}\" field; this is not an svcca dataset manifest"
                )));
            }
        }
        match object.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(invalid(format!(
                    "version {v} is not supported (this svcca reads version {FORMAT_VERSION}; a newer svcca may read it)"
                )));
            }
            None => {
                return Err(invalid(format!(
                    "\"version\" is missing or not a whole number (this svcca reads version {FORMAT_VERSION})"
                )));
            }
        }
        let mut m: Manifest = serde_json::from_value(value).map_err(|e| {
            invalid(format!(
                "does not match the version {FORMAT_VERSION} schema: {e}"
            ))
        })?;
        m.validate().map_err(invalid)?;
        m.sort();
        Ok(m)
    }

    /// Canonical pretty JSON (sorted representations).
    pub fn to_json(&self) -> Vec<u8> {
        let mut m = self.clone();
        m.sort();
        let mut out = serde_json::to_vec_pretty(&m).expect("manifest serialises");
        out.push(b'\n');
        out
    }

    pub fn sort(&mut self) {
        self.representations.sort_by(|a, b| a.key.cmp(&b.key));
    }

    /// Checks every representation and that keys are unique.
    pub fn validate(&self) -> Result<(), String> {
        if self.probe_set.datapoints == 0 {
            return Err("probe_set.datapoints must be positive".into());
        }
        let mut seen = std::collections::HashSet::new();
        for r in &self.representations {
            r.validate(self.probe_set.datapoints)?;
            if !seen.insert(&r.key) {
                return Err(format!("{} is listed twice", r.id()));
            }
        }
        Ok(())
    }

    /// The representation with exactly this key.
    pub fn get(&self, key: &RepKey) -> Option<&Representation> {
        self.representations.iter().find(|r| &r.key == key)
    }

    /// Adds or replaces the representation with the same key.
    pub fn upsert(&mut self, rep: Representation) {
        match self.representations.iter_mut().find(|r| r.key == rep.key) {
            Some(slot) => *slot = rep,
            None => self.representations.push(rep),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(run: &str, seed: Option<u64>, step: Option<u64>, layer: &str) -> RepKey {
        RepKey {
            run: run.into(),
            seed,
            step,
            layer: layer.into(),
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["h10", "h2", "logits", "conv2", "conv10", "h02", "conv1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec!["conv1", "conv2", "conv10", "h2", "h02", "h10", "logits"]
        );
    }

    #[test]
    fn steps_sort_numerically() {
        let mut keys = [
            key("mlp", Some(0), Some(10), "h1"),
            key("mlp", Some(0), Some(2), "h1"),
            key("mlp", Some(0), Some(2250), "h1"),
            key("mlp", Some(0), Some(400), "h1"),
        ];
        keys.sort();
        let steps: Vec<_> = keys.iter().map(|k| k.step.unwrap()).collect();
        assert_eq!(steps, vec![2, 10, 400, 2250]);
    }

    #[test]
    fn ids_and_paths() {
        let mut k = key("my run", Some(0), Some(5), "blocks/1");
        k.tags.insert("lr".into(), "0.1".into());
        assert_eq!(k.id(), "run=my run,seed=0,step=5,layer=blocks/1,lr=0.1");
        assert_eq!(k.shard_dir(), "data/my%20run/seed0/step5/lr=0.1/blocks%2F1");
    }
}
