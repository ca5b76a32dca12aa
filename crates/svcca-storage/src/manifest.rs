//! The dataset manifest (`manifest.json` at the dataset root): the probe set, every
//! representation's keys, shape and shards. Readers never list the bucket; they read this.
//!
//! Representations are kept in a canonical order: run (natural order), seed and step
//! (numerically: step10 after step2), layer (natural order: h2 before h10), then tags.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

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

/// How the axes of a representation are to be read.
///
/// In a manifest, `layout` describes the *stored* values: `dense` (`[n, d]`), `nhwc`
/// (`[n, h, w, c]`) or `tokens` (`[sequences, tokens, features]`). `nchw` is a *source* layout
/// only: writers transpose each datapoint to channels-last before storing it (so every reader
/// and the conv methods see one layout) and record `source_layout: "nchw"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[datapoints, neurons]`; a source with more axes is flattened to this.
    Dense,
    /// `[images, h, w, channels]` (TensorFlow/JAX order).
    Nhwc,
    /// `[images, channels, h, w]` (PyTorch order); stored as [`Layout::Nhwc`].
    Nchw,
    /// `[sequences, tokens, features]`.
    Tokens,
}

impl Layout {
    pub const ALL: [Layout; 4] = [Layout::Dense, Layout::Nhwc, Layout::Nchw, Layout::Tokens];

    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Dense => "dense",
            Layout::Nhwc => "nhwc",
            Layout::Nchw => "nchw",
            Layout::Tokens => "tokens",
        }
    }

    /// Axes of a source array in this layout, datapoints included; `None` for dense (any
    /// number of axes from two up, flattened).
    pub fn source_axes(self) -> Option<usize> {
        match self {
            Layout::Dense => None,
            Layout::Nhwc | Layout::Nchw => Some(4),
            Layout::Tokens => Some(3),
        }
    }

    /// The layout the values are stored in.
    pub fn stored(self) -> Layout {
        match self {
            Layout::Nchw => Layout::Nhwc,
            other => other,
        }
    }

    /// The stored shape of a source array of `shape` in this layout: dense flattens everything
    /// after the datapoint axis, nchw becomes nhwc. Errors name what is wrong with the shape.
    pub fn stored_shape(self, shape: &[usize]) -> Result<Vec<usize>, String> {
        if shape.len() < 2 {
            return Err(format!(
                "shape {shape:?} has {} axis; a representation needs [datapoints, ...]",
                shape.len()
            ));
        }
        if let Some(axes) = self.source_axes()
            && shape.len() != axes
        {
            return Err(format!(
                "layout '{}' needs {axes} axes ({}), the array has shape {shape:?}",
                self.as_str(),
                self.axes_text()
            ));
        }
        Ok(match self {
            Layout::Dense => vec![shape[0], shape[1..].iter().product()],
            Layout::Nchw => vec![shape[0], shape[2], shape[3], shape[1]],
            Layout::Nhwc | Layout::Tokens => shape.to_vec(),
        })
    }

    /// The axes in words, for messages.
    pub fn axes_text(self) -> &'static str {
        match self {
            Layout::Dense => "[datapoints, neurons]",
            Layout::Nhwc => "[images, h, w, channels]",
            Layout::Nchw => "[images, channels, h, w]",
            Layout::Tokens => "[sequences, tokens, features]",
        }
    }

    /// What a manifest written before layouts were recorded meant by a stored shape of `axes`
    /// axes (datapoints included).
    pub fn assumed_for(axes: usize) -> Layout {
        match axes {
            3 => Layout::Tokens,
            4 => Layout::Nhwc,
            _ => Layout::Dense,
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Layout::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| format!("unknown layout '{s}' (expected dense, nhwc, nchw or tokens)"))
    }
}

/// Converts row-major datapoints from `source` layout to the stored layout into `out`
/// (cleared first). Only nchw moves values; every datapoint is transposed on its own, so memory
/// is bounded by the block. `item_shape` is the source shape of one datapoint.
pub fn to_stored(source: Layout, item_shape: &[usize], values: &[f32], out: &mut Vec<f32>) {
    out.clear();
    match (source, item_shape) {
        (Layout::Nchw, &[c, h, w]) => {
            let len = c * h * w;
            out.reserve(values.len());
            for item in values.chunks_exact(len) {
                for y in 0..h {
                    for x in 0..w {
                        out.extend((0..c).map(|ch| item[(ch * h + y) * w + x]));
                    }
                }
            }
        }
        _ => out.extend_from_slice(values),
    }
}

/// One representation: an activation matrix over the probe set, stored as shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Representation {
    pub key: RepKey,
    /// Full stored shape, datapoints first: `[n, d]` (dense), `[n, h, w, c]` (nhwc) or
    /// `[n, tokens, features]` (tokens).
    pub shape: Vec<usize>,
    /// How the stored axes are read: `dense`, `nhwc` or `tokens` (never `nchw`, which writers
    /// transpose). Manifests written without it are read as dense for 2 axes, nhwc for 4,
    /// tokens for 3.
    pub layout: Layout,
    /// Position of the layer in the network, input side first (forward execution order).
    /// Analyses order layers by it, never by name. One value per (run, layer). Manifests written
    /// without it get the layers' natural name order within each run.
    pub depth: u32,
    /// Layout of the ingested source when it differs from `layout` (`nchw`, transposed when
    /// written; or a source flattened to `dense`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_layout: Option<Layout>,
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
    /// Lower-case hex SHA-256 of the whole file: names the shard and keys caches.
    pub sha256: String,
    /// CRC-32 (IEEE) of the whole file, written at ingest. Readers check it instead of the
    /// SHA-256 when present: it catches the same accidental damage at memory speed, where
    /// hashing every shard on every read cost a tenth of a sweep. `svcca verify` still checks
    /// the SHA-256. Absent in manifests written before it existed, whose shards are hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<u32>,
}

/// Which of a shard's checksums a read checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardCheck {
    /// The CRC-32 when the manifest has one, else the SHA-256.
    Fast,
    /// The SHA-256, and the CRC-32 too when the manifest has one.
    Full,
}

impl ShardEntry {
    /// Checks `bytes` against the checksums `check` asks for; on a mismatch, the checksum
    /// (expected, actual) that failed, the CRC-32 written `crc32:xxxxxxxx`.
    pub fn check_bytes(&self, bytes: &[u8], check: ShardCheck) -> Result<(), (String, String)> {
        if let Some(expected) = self.crc32 {
            let actual = crc32fast::hash(bytes);
            if actual != expected {
                return Err((
                    format!("crc32:{expected:08x}"),
                    format!("crc32:{actual:08x}"),
                ));
            }
            if check == ShardCheck::Fast {
                return Ok(());
            }
        }
        let actual = hex::encode(Sha256::digest(bytes));
        if actual != self.sha256 {
            return Err((self.sha256.clone(), actual));
        }
        Ok(())
    }
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
        let axes = match self.layout {
            Layout::Dense => 2,
            Layout::Nhwc => 4,
            Layout::Tokens => 3,
            Layout::Nchw => {
                return Err(format!(
                    "{id}: layout 'nchw' is not a stored layout: shards hold conv layers channels-last; transpose each datapoint to [h, w, channels] and write layout 'nhwc' with source_layout 'nchw'"
                ));
            }
        };
        if self.shape.len() != axes {
            return Err(format!(
                "{id}: layout '{}' needs {axes} axes {}, the shape is {:?}",
                self.layout,
                self.layout.axes_text(),
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
        let mut value = value;
        if fill_legacy_fields(&mut value) {
            warn_legacy_once(name);
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
        let mut depths: HashMap<(&str, &str), u32> = HashMap::new();
        for r in &self.representations {
            r.validate(self.probe_set.datapoints)?;
            if !seen.insert(&r.key) {
                return Err(format!("{} is listed twice", r.id()));
            }
            let first = *depths
                .entry((r.key.run.as_str(), r.key.layer.as_str()))
                .or_insert(r.depth);
            if first != r.depth {
                return Err(format!(
                    "run '{}' layer '{}' has depth {first} in one representation and {} in another ({}); a layer has one depth",
                    r.key.run,
                    r.key.layer,
                    r.depth,
                    r.id()
                ));
            }
        }
        Ok(())
    }

    /// The depth of `layer` in `run`, if the manifest holds it.
    pub fn depth_of(&self, run: &str, layer: &str) -> Option<u32> {
        self.representations
            .iter()
            .find(|r| r.key.run == run && r.key.layer == layer)
            .map(|r| r.depth)
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

/// Fills `layout` and `depth` into representations of a manifest written before they existed:
/// the layout from the number of axes (what readers assumed then), the depth from the natural
/// order of the layer names within each run (the order reports used then). Returns whether
/// anything was filled in.
fn fill_legacy_fields(value: &mut serde_json::Value) -> bool {
    let Some(reps) = value
        .get_mut("representations")
        .and_then(|r| r.as_array_mut())
    else {
        return false;
    };
    let text = |v: &serde_json::Value, k: &str| {
        v.get("key")
            .and_then(|key| key.get(k))
            .and_then(|s| s.as_str())
            .map(str::to_string)
    };
    let mut layers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in reps.iter() {
        if let (Some(run), Some(layer)) = (text(r, "run"), text(r, "layer")) {
            layers.entry(run).or_default().push(layer);
        }
    }
    for names in layers.values_mut() {
        names.sort_by(|a, b| natural_cmp(a, b));
        names.dedup();
    }
    let mut filled = false;
    for r in reps.iter_mut() {
        let axes = r
            .get("shape")
            .and_then(|s| s.as_array())
            .map(|s| s.len())
            .unwrap_or(0);
        let depth = match (text(r, "run"), text(r, "layer")) {
            (Some(run), Some(layer)) => layers
                .get(&run)
                .and_then(|names| names.iter().position(|n| *n == layer))
                .unwrap_or(0),
            _ => 0,
        };
        let Some(obj) = r.as_object_mut() else {
            continue;
        };
        if !obj.contains_key("layout") {
            obj.insert("layout".into(), Layout::assumed_for(axes).as_str().into());
            filled = true;
        }
        if !obj.contains_key("depth") {
            obj.insert("depth".into(), depth.into());
            filled = true;
        }
    }
    filled
}

/// One warning per manifest and process: the same dataset is opened many times by a sweep.
fn warn_legacy_once(name: &str) {
    static WARNED: std::sync::Mutex<Option<std::collections::HashSet<String>>> =
        std::sync::Mutex::new(None);
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if warned
        .get_or_insert_with(Default::default)
        .insert(name.to_string())
    {
        tracing::warn!(
            manifest = %name,
            "the dataset was written without layouts and depths: reading [n, d] as dense, \
             [n, h, w, c] as nhwc and [n, t, f] as tokens, and ordering layers by name; \
             re-ingest with --layout and --layer-order to declare them"
        );
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

    fn entry_for(bytes: &[u8], crc32: Option<u32>) -> ShardEntry {
        ShardEntry {
            path: "data/part-00000.arrow".into(),
            row_start: 0,
            rows: 1,
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            crc32,
        }
    }

    #[test]
    fn shard_checks_use_the_crc_when_listed_and_the_sha256_when_asked() {
        let good = b"shard bytes".to_vec();
        let mut bad = good.clone();
        bad[3] ^= 1;
        let with_crc = entry_for(&good, Some(crc32fast::hash(&good)));
        let without = entry_for(&good, None);
        for check in [ShardCheck::Fast, ShardCheck::Full] {
            assert_eq!(with_crc.check_bytes(&good, check), Ok(()));
            assert_eq!(without.check_bytes(&good, check), Ok(()));
            let (expected, actual) = with_crc.check_bytes(&bad, check).unwrap_err();
            assert_eq!(expected, format!("crc32:{:08x}", crc32fast::hash(&good)));
            assert_eq!(actual, format!("crc32:{:08x}", crc32fast::hash(&bad)));
            let (expected, actual) = without.check_bytes(&bad, check).unwrap_err();
            assert_eq!((expected.len(), actual.len()), (64, 64));
            assert_eq!(expected, without.sha256);
        }
        // A CRC-32 that agrees with changed bytes passes the fast check only.
        let forged = ShardEntry {
            crc32: Some(crc32fast::hash(&bad)),
            ..with_crc.clone()
        };
        assert_eq!(forged.check_bytes(&bad, ShardCheck::Fast), Ok(()));
        assert!(forged.check_bytes(&bad, ShardCheck::Full).is_err());
    }

    #[test]
    fn manifests_without_a_crc_still_parse_and_new_ones_round_trip() {
        let old = serde_json::json!({"path": "a", "row_start": 0, "rows": 1, "bytes": 4, "sha256": "0".repeat(64)});
        let e: ShardEntry = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(e.crc32, None);
        assert_eq!(serde_json::to_value(&e).unwrap(), old);
        let new = ShardEntry {
            crc32: Some(0xdead_beef),
            ..e
        };
        let back: ShardEntry = serde_json::from_value(serde_json::to_value(&new).unwrap()).unwrap();
        assert_eq!(back, new);
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

#[cfg(test)]
mod legacy_tests {
    use super::*;

    #[test]
    fn manifests_without_layout_and_depth_read_as_before() {
        let shard = |p: &str, rows: usize| serde_json::json!({"path": p, "row_start": 0, "rows": rows, "bytes": 4 * rows * 64, "sha256": "0".repeat(64)});
        let rep = |layer: &str, shape: serde_json::Value| serde_json::json!({"key": {"run": "r", "layer": layer}, "shape": shape, "dtype": "float32", "shards": [shard(layer, 3)]});
        let json = serde_json::json!({
            "format": "svcca-dataset", "version": 1,
            "probe_set": {"datapoints": 3, "fingerprint": null},
            "representations": [
                rep("h10", serde_json::json!([3, 4])),
                rep("conv2", serde_json::json!([3, 2, 2, 4])),
                rep("h2", serde_json::json!([3, 4])),
                rep("tok", serde_json::json!([3, 2, 4])),
            ]
        });
        let m = Manifest::from_json(&serde_json::to_vec(&json).unwrap(), "old.json").unwrap();
        let got: Vec<(&str, Layout, u32)> = m
            .representations
            .iter()
            .map(|r| (r.key.layer.as_str(), r.layout, r.depth))
            .collect();
        assert_eq!(
            got,
            vec![
                ("conv2", Layout::Nhwc, 0),
                ("h2", Layout::Dense, 1),
                ("h10", Layout::Dense, 2),
                ("tok", Layout::Tokens, 3)
            ]
        );
        // Written back, the fields are explicit and read the same.
        let again = Manifest::from_json(&m.to_json(), "new.json").unwrap();
        assert_eq!(again, m);
        assert!(
            String::from_utf8(m.to_json())
                .unwrap()
                .contains("\"layout\": \"nhwc\"")
        );
    }

    #[test]
    fn a_layer_has_one_depth_and_nchw_is_not_stored() {
        let mut m = Manifest::new(ProbeSet {
            datapoints: 2,
            fingerprint: None,
            description: None,
        });
        let rep = |seed: u64, depth: u32, layout: Layout, shape: Vec<usize>| Representation {
            key: RepKey {
                run: "r".into(),
                seed: Some(seed),
                step: None,
                layer: "l".into(),
                tags: Default::default(),
            },
            shape,
            layout,
            depth,
            source_layout: None,
            dtype: "float32".into(),
            source_dtype: None,
            source: None,
            shards: vec![ShardEntry {
                path: "a".into(),
                row_start: 0,
                rows: 2,
                bytes: 100,
                sha256: "0".repeat(64),
                crc32: None,
            }],
            values_sha256: None,
        };
        m.upsert(rep(0, 1, Layout::Dense, vec![2, 3]));
        m.upsert(rep(1, 1, Layout::Dense, vec![2, 3]));
        m.validate().unwrap();
        m.upsert(rep(1, 2, Layout::Dense, vec![2, 3]));
        let e = m.validate().unwrap_err();
        assert!(e.contains("has depth 1 in one representation and 2"), "{e}");
        m.upsert(rep(1, 1, Layout::Nchw, vec![2, 3, 1, 1]));
        let e = m.validate().unwrap_err();
        assert!(e.contains("'nchw' is not a stored layout"), "{e}");
        m.upsert(rep(1, 1, Layout::Nhwc, vec![2, 3]));
        let e = m.validate().unwrap_err();
        assert!(e.contains("layout 'nhwc' needs 4 axes"), "{e}");
    }
}
