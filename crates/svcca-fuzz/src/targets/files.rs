//! Source files a user ingests or compares: `.npy` (streamed straight from bytes, as
//! `svcca compare` reads files), and `.npz` / `.safetensors` / `.npy` through `svcca ingest`'s
//! library entry point, which also exercises path templates.

use std::io::{Cursor, Write};
use std::path::PathBuf;

use svcca_storage::ingest::{IngestConfig, ingest_into};
use svcca_storage::npy::{NpyReader, encode_npy};
use svcca_storage::{Dataset, Env, ReadOptions};

use super::{Target, memory_location, outcome, repo_files, runtime};
use crate::mutate::Format;

fn npy_f32(shape: &[usize]) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.0).collect();
    let mut out = Vec::new();
    encode_npy(&mut out, shape, &data);
    out
}

fn npy_f64(shape: &[usize]) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n).map(|i| i as f64 * 0.25).collect();
    let mut out = Vec::new();
    encode_npy(&mut out, shape, &data);
    out
}

/// A `.npy` with a hand-written header (other versions, dtypes, orders).
fn npy_raw(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY".to_vec();
    out.push(version);
    out.push(0);
    if version == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn npy_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![
        npy_f32(&[3, 2]),
        npy_f64(&[4, 1, 2, 2]),
        npy_f32(&[5]),
        npy_raw(
            2,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }\n",
            &[0u8; 16],
        ),
        npy_raw(
            3,
            "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 1), }\n",
            &[0u8; 16],
        ),
        npy_raw(
            1,
            "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 2), }\n",
            &[0u8; 8],
        ),
        npy_raw(
            1,
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n",
            &[0u8; 4],
        ),
    ];
    for p in repo_files("fixtures/digits", "npy", 3) {
        if let Ok(bytes) = std::fs::read(p) {
            seeds.push(bytes);
        }
    }
    seeds
}

const NPY_DICT: &[&str] = &[
    "'descr'",
    "'<f4'",
    "'<f8'",
    "'<i8'",
    "'fortran_order'",
    "True",
    "False",
    "'shape'",
    "(",
    ")",
    ",",
    "{",
    "}",
    "[",
    "]",
    "L",
    "\\x93NUMPY",
];

/// `.npy` bytes through [`NpyReader`], with the length check a file gets.
pub struct NpyTarget;

impl Target for NpyTarget {
    fn name(&self) -> &'static str {
        "npy"
    }
    fn format(&self) -> Format {
        // Binary data behind a text header: the text mutations matter most.
        Format::Text(NPY_DICT)
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        npy_seeds()
    }
    fn run(&mut self, input: &[u8]) -> String {
        let len = Some(input.len() as u64);
        let opened = NpyReader::from_reader(Cursor::new(input), "fuzz.npy", len);
        let reader = match opened {
            Ok(r) => r,
            Err(e) => return outcome::<(), _>(&Err(e)),
        };
        let _ = reader.expect_rank(&[2, 4]);
        let rows = 1 + input.len() % 7;
        let mut blocks = reader.blocks_f32(rows);
        loop {
            match blocks.next_block() {
                Ok(Some(b)) => assert_eq!(b.data.len(), b.rows * b.row_len),
                Ok(None) => break,
                Err(e) => return outcome::<(), _>(&Err(e)),
            }
        }
        let all = NpyReader::from_reader(Cursor::new(input), "fuzz.npy", len)
            .and_then(|r| r.read_all::<f64>());
        outcome(&all)
    }
}

fn zip_bytes(members: &[(&str, Vec<u8>)], method: zip::CompressionMethod) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in members {
        w.start_file(
            *name,
            zip::write::SimpleFileOptions::default().compression_method(method),
        )
        .expect("zip member");
        w.write_all(bytes).expect("zip write");
    }
    w.finish().expect("zip finish").into_inner()
}

fn safetensors_bytes(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({"framework": "fuzz"}),
    );
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&header).expect("json");
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    out
}

fn le_f32(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect()
}

const SAFETENSORS_DICT: &[&str] = &[
    "\"dtype\"",
    "\"F32\"",
    "\"F64\"",
    "\"F16\"",
    "\"BF16\"",
    "\"I64\"",
    "\"shape\"",
    "\"data_offsets\"",
    "\"__metadata__\"",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "null",
];

/// A source tree with one file of the target's kind, ingested into a fresh in-memory dataset,
/// which is then read back.
pub struct IngestTarget {
    ext: &'static str,
    name: &'static str,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl IngestTarget {
    pub fn new(ext: &'static str) -> Self {
        let name = match ext {
            "npz" => "npz",
            "safetensors" => "safetensors",
            _ => "ingest-npy",
        };
        IngestTarget {
            ext,
            name,
            rt: runtime(),
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("src/mlp/seed0/step0/acts.{}", self.ext))
    }
}

async fn ingest_and_read(
    src: PathBuf,
    pattern: &str,
    shard_rows: usize,
) -> Result<usize, svcca_storage::StorageError> {
    let location = memory_location("memory://svcca-fuzz-ingest");
    let config = IngestConfig::new(src, "memory://svcca-fuzz-ingest")
        .with_pattern(pattern)
        .with_shard_rows(shard_rows)
        .with_env(Env::default());
    ingest_into(location.clone(), config).await?;
    let ds = Dataset::open_at(location, ReadOptions::default().with_env(Env::default())).await?;
    let mut values = 0;
    for rep in ds.representations() {
        values += ds.read_all(rep).await?.len();
    }
    Ok(values)
}

impl Target for IngestTarget {
    fn name(&self) -> &'static str {
        self.name
    }
    fn format(&self) -> Format {
        match self.ext {
            "safetensors" => Format::Text(SAFETENSORS_DICT),
            "npy" => Format::Text(NPY_DICT),
            _ => Format::Binary,
        }
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        match self.ext {
            "npz" => {
                let mut seeds = vec![
                    zip_bytes(
                        &[("h1.npy", npy_f32(&[4, 3])), ("h2.npy", npy_f64(&[4, 2]))],
                        zip::CompressionMethod::Stored,
                    ),
                    zip_bytes(
                        &[
                            ("conv.npy", npy_f32(&[4, 2, 2, 3])),
                            ("notes.txt", b"x".to_vec()),
                        ],
                        zip::CompressionMethod::Deflated,
                    ),
                ];
                if let Some(p) = repo_files("fixtures/digits", "npy", 2).last()
                    && let Ok(bytes) = std::fs::read(p)
                {
                    seeds.push(zip_bytes(
                        &[("real.npy", bytes)],
                        zip::CompressionMethod::Deflated,
                    ));
                }
                seeds
            }
            "safetensors" => {
                let f16: Vec<u8> = (0..8u16).flat_map(|i| (0x3c00 + i).to_le_bytes()).collect();
                vec![
                    safetensors_bytes(&[("h1", "F32", vec![4, 3], le_f32(12))]),
                    safetensors_bytes(&[
                        ("a", "F16", vec![4, 2], f16.clone()),
                        ("b", "BF16", vec![4, 2], f16),
                        (
                            "c",
                            "F64",
                            vec![4, 1],
                            (0..4).flat_map(|i| (i as f64).to_le_bytes()).collect(),
                        ),
                    ]),
                    safetensors_bytes(&[("i", "I64", vec![2, 1], vec![0; 16])]),
                ]
            }
            _ => npy_seeds(),
        }
    }
    fn run(&mut self, input: &[u8]) -> String {
        let file = self.file();
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("source dir");
        std::fs::write(&file, input).expect("write the fuzz input");
        let src = self.dir.path().join("src");
        let shard_rows = 1 + input.len() % 3;
        let r = self.rt.block_on(ingest_and_read(
            src,
            svcca_storage::ingest::DEFAULT_PATTERN,
            shard_rows,
        ));
        outcome(&r)
    }
}

const TEMPLATE_DICT: &[&str] = &[
    "{run}",
    "{model}",
    "{seed}",
    "{step}",
    "{layer}",
    "{*}",
    "{lr}",
    "/",
    ".npy",
    ".npz",
    ".safetensors",
    "{",
    "}",
    "seed",
    "step",
    "_",
    "=",
    "..",
    "./",
];

/// Path templates (`svcca ingest --pattern`) over a fixed source tree with every file kind.
pub struct TemplateTarget {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl TemplateTarget {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let src = dir.path().join("src");
        let put = |rel: &str, bytes: Vec<u8>| {
            let p = src.join(rel);
            std::fs::create_dir_all(p.parent().expect("a parent")).expect("dir");
            std::fs::write(p, bytes).expect("write");
        };
        put("mlp/seed0/step100/h1.npy", npy_f32(&[4, 3]));
        put("mlp/seed1/step100/h1.npy", npy_f32(&[4, 3]));
        put("mlp/seed1/step2250/h2.npy", npy_f64(&[4, 2]));
        put(
            "conv/seed0/step1500/acts.npz",
            zip_bytes(
                &[("conv1.npy", npy_f32(&[4, 2, 2, 3]))],
                zip::CompressionMethod::Deflated,
            ),
        );
        put(
            "bert_lr=0.1/ckpt-7.safetensors",
            safetensors_bytes(&[("emb", "F32", vec![4, 2], le_f32(8))]),
        );
        put("notes/readme.npy", b"not an array".to_vec());
        TemplateTarget { rt: runtime(), dir }
    }
}

impl Target for TemplateTarget {
    fn name(&self) -> &'static str {
        "template"
    }
    fn format(&self) -> Format {
        Format::Text(TEMPLATE_DICT)
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        [
            svcca_storage::ingest::DEFAULT_PATTERN,
            "{run}/seed{seed}/step{step}/{layer}.npy",
            "{model}/seed{seed}/step{step}/acts.npz",
            "{run}_lr={lr}/ckpt-{step}.safetensors",
            "{run}/{*}/{*}/{layer}",
            "mlp/seed{seed}/step{step}/{layer}",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    }
    fn run(&mut self, input: &[u8]) -> String {
        let pattern = String::from_utf8_lossy(input);
        let src = self.dir.path().join("src");
        let r = self.rt.block_on(ingest_and_read(src, &pattern, 2));
        outcome(&r)
    }
}
