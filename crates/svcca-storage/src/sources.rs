//! Ingest inputs: arrays inside `.npy`, `.npz` and `.safetensors` files, listed from their
//! headers and then streamed in row blocks as f32 (f64, f16 and bf16 are converted).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::StorageError;
use crate::npy::{NpyFile, NpyReader};

/// One array of an input file.
#[derive(Debug, Clone)]
pub(crate) struct SourceArray {
    /// The file.
    pub path: PathBuf,
    /// Member (`.npz`) or tensor (`.safetensors`) name; `None` for `.npy`.
    pub member: Option<String>,
    pub shape: Vec<usize>,
    /// NumPy-style name of the stored element type.
    pub dtype: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Npy,
    NpzMember { index: usize },
    Safetensors { data_start: u64, dtype: TensorDtype },
}

#[derive(Debug, Clone, Copy)]
enum TensorDtype {
    F32,
    F64,
    F16,
    Bf16,
}

impl TensorDtype {
    fn size(self) -> usize {
        match self {
            TensorDtype::F32 => 4,
            TensorDtype::F64 => 8,
            TensorDtype::F16 | TensorDtype::Bf16 => 2,
        }
    }
    fn name(self) -> &'static str {
        match self {
            TensorDtype::F32 => "float32",
            TensorDtype::F64 => "float64",
            TensorDtype::F16 => "float16",
            TensorDtype::Bf16 => "bfloat16",
        }
    }
    fn decode(self, bytes: &[u8], out: &mut Vec<f32>) {
        out.clear();
        match self {
            TensorDtype::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap())),
            ),
            TensorDtype::F64 => out.extend(
                bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32),
            ),
            TensorDtype::F16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32()),
            ),
            TensorDtype::Bf16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32()),
            ),
        }
    }
}

/// The kinds of input file, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Npy,
    Npz,
    Safetensors,
}

impl FileKind {
    pub fn from_path(p: &Path) -> Option<FileKind> {
        match p.extension()?.to_str()? {
            "npy" => Some(FileKind::Npy),
            "npz" => Some(FileKind::Npz),
            "safetensors" => Some(FileKind::Safetensors),
            _ => None,
        }
    }
    pub fn is_container(self) -> bool {
        !matches!(self, FileKind::Npy)
    }
}

impl SourceArray {
    /// `file` or `file:member`, for messages.
    pub fn display(&self) -> String {
        match &self.member {
            Some(m) => format!("{}:{m}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }

    pub fn rows(&self) -> usize {
        self.shape[0]
    }

    pub fn row_len(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// Streams the array as f32 in blocks of up to `rows_per_block` rows: `f(first_row, rows, values)`.
    /// Values are passed as stored (finiteness is the caller's check).
    pub fn for_each_block(
        &self,
        rows_per_block: usize,
        mut f: impl FnMut(usize, usize, &[f32]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let rows_per_block = rows_per_block.max(1);
        match &self.kind {
            Kind::Npy => {
                let file = NpyFile::open(&self.path)?;
                let mut blocks = file.blocks_f32(rows_per_block).check_finite(false);
                while let Some(b) = blocks.next_block()? {
                    f(b.first_row, b.rows, b.data)?;
                }
                Ok(())
            }
            Kind::NpzMember { index } => {
                let mut archive = open_zip(&self.path)?;
                let entry = archive
                    .by_index(*index)
                    .map_err(|e| zip_err(&self.path, e))?;
                let name = entry
                    .name()
                    .map_err(|e| zip_err(&self.path, e))?
                    .to_string();
                let size = checked_member_size(&self.path, &name, &entry)?;
                let reader =
                    NpyReader::from_reader(entry, PathBuf::from(self.display()), Some(size))?;
                let mut blocks = reader.blocks_f32(rows_per_block).check_finite(false);
                while let Some(b) = blocks.next_block()? {
                    f(b.first_row, b.rows, b.data)?;
                }
                Ok(())
            }
            Kind::Safetensors { data_start, dtype } => {
                let io = |source| StorageError::SourceIo {
                    path: self.path.clone(),
                    source,
                };
                let mut file =
                    BufReader::with_capacity(1 << 16, File::open(&self.path).map_err(io)?);
                file.seek(SeekFrom::Start(*data_start)).map_err(io)?;
                let row_len = self.row_len();
                let mut bytes = Vec::new();
                let mut values = Vec::new();
                let mut row = 0;
                while row < self.rows() {
                    let rows = rows_per_block.min(self.rows() - row);
                    bytes.resize(rows * row_len * dtype.size(), 0);
                    file.read_exact(&mut bytes).map_err(io)?;
                    dtype.decode(&bytes, &mut values);
                    f(row, rows, &values)?;
                    row += rows;
                }
                Ok(())
            }
        }
    }
}

/// One array of a `.npy`, `.npz` or `.safetensors` file, streamed as f32 in row blocks (what
/// ingest reads, for callers that compare files directly).
#[derive(Debug, Clone)]
pub struct FileArray(SourceArray);

impl FileArray {
    /// Opens the array `member` of `path` (an `.npz` member or a `.safetensors` tensor). Without
    /// a member, a `.npy` file, or a container holding exactly one array, is that array; any
    /// other container is refused with the names it holds. Files of other extensions are read
    /// as `.npy`.
    pub fn open(path: &Path, member: Option<&str>) -> Result<FileArray, StorageError> {
        let kind = FileKind::from_path(path).unwrap_or(FileKind::Npy);
        let mut arrays = list_arrays(path, kind)?;
        if kind == FileKind::Npy {
            if let Some(m) = member {
                return Err(StorageError::NoSuchArray {
                    path: path.into(),
                    member: Some(m.to_string()),
                    available: Vec::new(),
                });
            }
            return Ok(FileArray(arrays.remove(0)));
        }
        let names = || {
            arrays
                .iter()
                .filter_map(|a| a.member.clone())
                .collect::<Vec<_>>()
        };
        match member {
            None if arrays.len() == 1 => Ok(FileArray(arrays.remove(0))),
            None => Err(StorageError::NoSuchArray {
                path: path.into(),
                member: None,
                available: names(),
            }),
            Some(m) => match arrays.iter().position(|a| a.member.as_deref() == Some(m)) {
                Some(i) => Ok(FileArray(arrays.swap_remove(i))),
                None => Err(StorageError::NoSuchArray {
                    path: path.into(),
                    member: Some(m.to_string()),
                    available: names(),
                }),
            },
        }
    }

    /// Shape, datapoints first.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// NumPy name of the stored element type.
    pub fn dtype(&self) -> &str {
        &self.0.dtype
    }

    /// `file` or `file:member`, for messages.
    pub fn display(&self) -> String {
        self.0.display()
    }

    /// Streams the array as f32 in blocks of up to `rows_per_block` rows:
    /// `f(first_row, rows, values)`. Values are passed as stored (finiteness is not checked).
    pub fn for_each_block(
        &self,
        rows_per_block: usize,
        f: impl FnMut(usize, usize, &[f32]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        self.0.for_each_block(rows_per_block, f)
    }
}

fn zip_err(path: &Path, e: zip::result::ZipError) -> StorageError {
    StorageError::SourceCorrupt {
        path: path.into(),
        format: "npz",
        reason: e.to_string(),
    }
}

/// Deflate cannot expand data more than about 1032 times.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// The uncompressed size a member's header claims, refused when its compressed bytes cannot
/// produce it: the claim sizes the header check and so the reads, and a forged one would
/// otherwise have ingest allocate blocks for data that is not there.
fn checked_member_size<R: Read>(
    path: &Path,
    member: &str,
    entry: &zip::read::ZipFile<'_, R>,
) -> Result<u64, StorageError> {
    let (size, packed) = (entry.size(), entry.compressed_size());
    let file_len = std::fs::metadata(path)
        .map_err(|source| StorageError::SourceIo {
            path: path.into(),
            source,
        })?
        .len();
    let limit = match entry.compression() {
        zip::CompressionMethod::Stored => packed,
        _ => packed
            .saturating_mul(MAX_DEFLATE_RATIO)
            .saturating_add(1024),
    };
    if size > limit || packed > file_len {
        return Err(StorageError::SourceCorrupt {
            path: path.into(),
            format: "npz",
            reason: format!(
                "member '{member}' claims {size} bytes uncompressed from {packed} {} bytes in a {file_len}-byte file; the archive is damaged",
                if entry.compression() == zip::CompressionMethod::Stored {
                    "stored"
                } else {
                    "compressed"
                }
            ),
        });
    }
    Ok(size)
}

fn open_zip(path: &Path) -> Result<zip::ZipArchive<BufReader<File>>, StorageError> {
    let file = File::open(path).map_err(|source| StorageError::SourceIo {
        path: path.into(),
        source,
    })?;
    zip::ZipArchive::new(BufReader::new(file)).map_err(|e| zip_err(path, e))
}

/// Lists the arrays of a file from its headers, checking dtypes and lengths up front.
pub(crate) fn list_arrays(path: &Path, kind: FileKind) -> Result<Vec<SourceArray>, StorageError> {
    match kind {
        FileKind::Npy => {
            let f = NpyFile::open(path)?;
            Ok(vec![SourceArray {
                path: path.into(),
                member: None,
                shape: f.shape().to_vec(),
                dtype: f.dtype().numpy_name().into(),
                kind: Kind::Npy,
            }])
        }
        FileKind::Npz => {
            let mut archive = open_zip(path)?;
            let mut out = Vec::new();
            for index in 0..archive.len() {
                let entry = archive.by_index(index).map_err(|e| zip_err(path, e))?;
                if entry.is_dir() {
                    continue;
                }
                let name = entry.name().map_err(|e| zip_err(path, e))?.to_string();
                let Some(member) = name.strip_suffix(".npy") else {
                    tracing::warn!(file = %path.display(), member = %name, "skipping a non-.npy member of an .npz");
                    continue;
                };
                let member = member.to_string();
                let size = checked_member_size(path, &name, &entry)?;
                let display = PathBuf::from(format!("{}:{member}", path.display()));
                let reader = NpyReader::from_reader(entry, display, Some(size))?;
                out.push(SourceArray {
                    path: path.into(),
                    member: Some(member),
                    shape: reader.shape().to_vec(),
                    dtype: reader.dtype().numpy_name().into(),
                    kind: Kind::NpzMember { index },
                });
            }
            Ok(out)
        }
        FileKind::Safetensors => list_safetensors(path),
    }
}

fn list_safetensors(path: &Path) -> Result<Vec<SourceArray>, StorageError> {
    let corrupt = |reason: String| StorageError::SourceCorrupt {
        path: path.into(),
        format: "safetensors",
        reason,
    };
    let io = |source| StorageError::SourceIo {
        path: path.into(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut n = [0u8; 8];
    file.read_exact(&mut n)
        .map_err(|_| corrupt("shorter than its 8-byte header length".into()))?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || 8 + n > file_len {
        return Err(corrupt(format!(
            "header length {n} does not fit the {file_len}-byte file"
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(io)?;
    let map: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("header is not JSON: {e}")))?;
    let data_start = 8 + n;
    let data_len = file_len - data_start;
    let mut out = Vec::new();
    for (name, value) in map {
        if name == "__metadata__" {
            continue;
        }
        let info: safetensors::tensor::TensorInfo =
            serde_json::from_value(value).map_err(|e| corrupt(format!("tensor '{name}': {e}")))?;
        let dtype = match info.dtype {
            safetensors::Dtype::F32 => TensorDtype::F32,
            safetensors::Dtype::F64 => TensorDtype::F64,
            safetensors::Dtype::F16 => TensorDtype::F16,
            safetensors::Dtype::BF16 => TensorDtype::Bf16,
            other => {
                return Err(StorageError::UnsupportedTensorDtype {
                    path: path.into(),
                    tensor: name,
                    dtype: format!("{other:?}"),
                });
            }
        };
        let (start, end) = info.data_offsets;
        let expected = info
            .shape
            .iter()
            .try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d as u64));
        if start > end || end as u64 > data_len || expected != Some((end - start) as u64) {
            return Err(corrupt(format!(
                "tensor '{name}' has data offsets {start}..{end} that do not match its shape {:?} and dtype {} in {data_len} data bytes (truncated?)",
                info.shape,
                dtype.name()
            )));
        }
        out.push(SourceArray {
            path: path.into(),
            member: Some(name),
            shape: info.shape,
            dtype: dtype.name().into(),
            kind: Kind::Safetensors {
                data_start: data_start + start as u64,
                dtype,
            },
        });
    }
    Ok(out)
}
