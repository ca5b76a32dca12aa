//! Streaming reader for NumPy `.npy` files (format versions 1, 2 and 3).
//!
//! Only what activations need is accepted: float16, float32 and float64 (`f2`, `f4`, `f8`) in
//! either byte order, any rank ≥ 1, C (row-major) or Fortran (column-major) order. The first axis
//! is the datapoint axis; the remaining axes are flattened into one row in C order, so a dense
//! layer `[n, d]` yields rows of `d` values and a conv layer `[n, h, w, c]` yields rows of `h·w·c`
//! values in NHWC order, whatever the file's order. Everything else (integer, structured or object
//! arrays) is refused with an error naming the file.
//!
//! A Fortran-order file holds each column of all datapoints contiguously: a block of rows is
//! gathered with one positioned read per column (so memory stays at one block, as for C order).
//! That needs a seekable file: inside an `.npz` member it is refused.
//!
//! Memory is bounded by the block the caller asks for, not by the file:
//!
//! ```no_run
//! use svcca_storage::npy::NpyFile;
//! # fn main() -> Result<(), svcca_storage::npy::NpyError> {
//! let file = NpyFile::open("h1.npy")?;
//! file.expect_rank(&[2])?; // [datapoints, neurons]
//! let cols = file.row_len();
//! let mut blocks = file.blocks_f64(4096);
//! while let Some(block) = blocks.next_block()? {
//!     // block.data: block.rows × cols values, row-major; block.first_row: its offset in the file
//!     assert_eq!(block.data.len(), block.rows * cols);
//! }
//! # Ok(()) }
//! ```
//!
//! [`read_f64`] / [`read_f32`] read a whole (small) array at once. Blocks are checked for
//! NaN/±Inf as they are read (the error gives the first bad row and column); turn that off with
//! [`RowBlocks::check_finite`] when the caller validates itself.
//!
//! The parser is generic over [`std::io::Read`] ([`NpyReader`]) so `.npz` members stream through
//! the same code.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Element type of an accepted `.npy` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// Read as f32 (exactly).
    F16,
    F32,
    F64,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }

    /// NumPy's name for it (`float16`, `float32`, `float64`).
    pub fn numpy_name(self) -> &'static str {
        match self {
            Dtype::F16 => "float16",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.numpy_name())
    }
}

/// Errors of the `.npy` reader. Every variant names the file (for `.npz` members:
/// `archive.npz:member`).
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid .npy file: {reason}", path.display())]
    CorruptHeader { path: PathBuf, reason: String },
    #[error(
        "{} has dtype {dtype:?}; only float16, float32 and float64 ('<f2', '<f4', '<f8' or \
         big-endian '>f2', '>f4', '>f8') are supported (convert with `arr.astype('<f4')`)",
        path.display()
    )]
    UnsupportedDtype { path: PathBuf, dtype: String },
    #[error(
        "{} is stored in Fortran (column-major) order inside an archive, which cannot be read \
         block by block; save it in C order (`np.savez(path, name=np.ascontiguousarray(arr))`) \
         or as a separate .npy file",
        path.display()
    )]
    FortranOrder { path: PathBuf },
    #[error("{} is truncated: shape {shape:?} needs {expected} data bytes but only {actual} are present", path.display())]
    Truncated {
        path: PathBuf,
        shape: Vec<usize>,
        expected: u64,
        actual: u64,
    },
    #[error("{} has {extra} bytes after the data declared by shape {shape:?}; the header or the file is corrupt", path.display())]
    TrailingData {
        path: PathBuf,
        shape: Vec<usize>,
        extra: u64,
    },
    #[error("{} has rank {rank} (shape {shape:?}); expected rank {expected}", path.display())]
    WrongRank {
        path: PathBuf,
        shape: Vec<usize>,
        rank: usize,
        expected: String,
    },
    #[error("{} is empty (shape {shape:?}): it has no datapoints or no values per datapoint", path.display())]
    Empty { path: PathBuf, shape: Vec<usize> },
    #[error("{} has a non-finite value ({value}) at datapoint {row}, flat column {col}", path.display())]
    NonFinite {
        path: PathBuf,
        row: usize,
        col: usize,
        value: f64,
    },
}

impl NpyError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            NpyError::Io { path, .. }
            | NpyError::CorruptHeader { path, .. }
            | NpyError::UnsupportedDtype { path, .. }
            | NpyError::FortranOrder { path }
            | NpyError::Truncated { path, .. }
            | NpyError::TrailingData { path, .. }
            | NpyError::WrongRank { path, .. }
            | NpyError::Empty { path, .. }
            | NpyError::NonFinite { path, .. } => path,
        }
    }
}

/// The parsed header of a `.npy` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Format version (1, 2 or 3).
    pub version: u8,
    pub dtype: Dtype,
    /// Values are stored most significant byte first (`>f4`).
    pub big_endian: bool,
    /// Values are stored column-major (first axis fastest) with more than one axis longer
    /// than 1; a Fortran flag on a vector-like array is the same as C order and is cleared.
    pub fortran_order: bool,
    pub shape: Vec<usize>,
    /// Bytes before the data (magic + version + header length + header).
    pub data_offset: u64,
}

impl NpyHeader {
    /// Number of datapoints (the first axis).
    pub fn rows(&self) -> usize {
        self.shape[0]
    }

    /// Values per datapoint: the product of all axes after the first.
    pub fn row_len(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// Bytes of data the shape declares.
    pub fn data_len(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product::<u64>() * self.dtype.size() as u64
    }
}

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Parses the header from `reader`, leaving it positioned at the first data byte.
pub fn read_header<R: Read>(reader: &mut R, path: &Path) -> Result<NpyHeader, NpyError> {
    let corrupt = |reason: String| NpyError::CorruptHeader {
        path: path.to_path_buf(),
        reason,
    };
    let mut pre = [0u8; 8];
    read_exact_or(reader, &mut pre, path, || {
        corrupt("file is shorter than the 8-byte preamble".into())
    })?;
    if &pre[..6] != MAGIC {
        return Err(corrupt("missing the \\x93NUMPY magic string".into()));
    }
    let version = pre[6];
    let (header_len, prefix) = match version {
        1 => {
            let mut b = [0u8; 2];
            read_exact_or(reader, &mut b, path, || {
                corrupt("truncated header length".into())
            })?;
            (u16::from_le_bytes(b) as usize, 10)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            read_exact_or(reader, &mut b, path, || {
                corrupt("truncated header length".into())
            })?;
            (u32::from_le_bytes(b) as usize, 12)
        }
        v => {
            return Err(corrupt(format!(
                "unsupported format version {v}.{}",
                pre[7]
            )));
        }
    };
    // Real headers are a few hundred bytes; refuse absurd lengths before allocating.
    if header_len > 1 << 20 {
        return Err(corrupt(format!(
            "header length {header_len} is implausibly large"
        )));
    }
    let mut text = vec![0u8; header_len];
    read_exact_or(reader, &mut text, path, || {
        corrupt(format!(
            "header shorter than its declared {header_len} bytes"
        ))
    })?;
    let text = if version == 3 {
        String::from_utf8(text).map_err(|_| corrupt("header is not UTF-8".into()))?
    } else {
        // v1/v2 headers are latin-1; any non-ASCII byte cannot be part of a valid float header.
        if !text.is_ascii() {
            return Err(corrupt("header is not ASCII".into()));
        }
        String::from_utf8(text).expect("ascii is utf-8")
    };
    let dict = parse_header_dict(&text)
        .map_err(|reason| corrupt(format!("{reason} in header {:?}", text.trim_end())))?;
    let descr = match dict.get("descr") {
        Some(PyValue::Str(s)) => s.clone(),
        Some(other) => {
            return Err(NpyError::UnsupportedDtype {
                path: path.into(),
                dtype: other.describe(),
            });
        }
        None => return Err(corrupt("header has no 'descr'".into())),
    };
    let fortran = match dict.get("fortran_order") {
        Some(PyValue::Bool(b)) => *b,
        _ => return Err(corrupt("header has no boolean 'fortran_order'".into())),
    };
    let shape = match dict.get("shape") {
        Some(PyValue::Tuple(t)) => t.clone(),
        _ => return Err(corrupt("header has no tuple 'shape'".into())),
    };
    // `=` is the writer's native order; NumPy writes `<` or `>` itself, and `|` only for
    // one-byte types.
    let (big_endian, dtype) = match descr.as_bytes() {
        [
            order @ (b'<' | b'>' | b'='),
            b'f',
            size @ (b'2' | b'4' | b'8'),
        ] => (
            *order == b'>',
            match size {
                b'2' => Dtype::F16,
                b'4' => Dtype::F32,
                _ => Dtype::F64,
            },
        ),
        _ => {
            return Err(NpyError::UnsupportedDtype {
                path: path.into(),
                dtype: descr,
            });
        }
    };
    let fortran_order = fortran && shape.iter().filter(|&&d| d > 1).count() > 1;
    if shape.is_empty() {
        return Err(NpyError::WrongRank {
            path: path.into(),
            shape,
            rank: 0,
            expected: "at least 1".into(),
        });
    }
    if shape.contains(&0) {
        return Err(NpyError::Empty {
            path: path.into(),
            shape,
        });
    }
    let total = shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64));
    if total.is_none() {
        return Err(corrupt(format!("shape {shape:?} overflows")));
    }
    Ok(NpyHeader {
        version,
        dtype,
        big_endian,
        fortran_order,
        shape,
        data_offset: (prefix + header_len) as u64,
    })
}

fn read_exact_or<R: Read>(
    reader: &mut R,
    buf: &mut [u8],
    path: &Path,
    on_eof: impl FnOnce() -> NpyError,
) -> Result<(), NpyError> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(on_eof()),
        Err(source) => Err(NpyError::Io {
            path: path.into(),
            source,
        }),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum PyValue {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
    Other(String),
}

impl PyValue {
    fn describe(&self) -> String {
        match self {
            PyValue::Str(s) => s.clone(),
            PyValue::Bool(b) => b.to_string(),
            PyValue::Tuple(t) => format!("{t:?}"),
            PyValue::Other(s) => s.clone(),
        }
    }
}

/// Parses the Python dict literal of a `.npy` header. Values other than strings, booleans and
/// integer tuples (structured dtypes are lists) are kept as raw text so the caller can report them.
fn parse_header_dict(text: &str) -> Result<std::collections::HashMap<String, PyValue>, String> {
    let s = text.trim_end_matches(['\n', ' ', '\0']).trim();
    let inner = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| "expected a dict literal".to_string())?;
    let mut out = std::collections::HashMap::new();
    let bytes = inner.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && (bytes[*i] as char).is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= bytes.len() {
            break;
        }
        let key = parse_py_str(inner, &mut i)?;
        skip_ws(&mut i);
        if bytes.get(i) != Some(&b':') {
            return Err(format!("expected ':' after key '{key}'"));
        }
        i += 1;
        skip_ws(&mut i);
        let value = match bytes.get(i) {
            Some(b'\'') | Some(b'"') => PyValue::Str(parse_py_str(inner, &mut i)?),
            Some(b'(') => {
                let end = inner[i..].find(')').ok_or("unterminated tuple")? + i;
                let body = &inner[i + 1..end];
                let mut dims = Vec::new();
                for part in body.split(',') {
                    let part = part.trim().trim_end_matches('L');
                    if part.is_empty() {
                        continue;
                    }
                    dims.push(
                        part.parse::<usize>()
                            .map_err(|_| format!("bad shape entry '{part}'"))?,
                    );
                }
                i = end + 1;
                PyValue::Tuple(dims)
            }
            Some(_) if inner[i..].starts_with("True") => {
                i += 4;
                PyValue::Bool(true)
            }
            Some(_) if inner[i..].starts_with("False") => {
                i += 5;
                PyValue::Bool(false)
            }
            Some(b'[') | Some(b'{') => {
                // Structured dtype: find the matching bracket, keep the text for the error.
                let (open, close) = if bytes[i] == b'[' {
                    (b'[', b']')
                } else {
                    (b'{', b'}')
                };
                let start = i;
                let mut depth = 0usize;
                while i < bytes.len() {
                    if bytes[i] == open {
                        depth += 1;
                    } else if bytes[i] == close {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    i += 1;
                }
                if depth != 0 {
                    return Err("unbalanced brackets".into());
                }
                PyValue::Other(inner[start..i].to_string())
            }
            _ => return Err(format!("unexpected value for key '{key}'")),
        };
        out.insert(key, value);
        skip_ws(&mut i);
        match bytes.get(i) {
            Some(b',') => i += 1,
            None => break,
            Some(c) => return Err(format!("unexpected character '{}'", *c as char)),
        }
    }
    Ok(out)
}

fn parse_py_str(s: &str, i: &mut usize) -> Result<String, String> {
    let bytes = s.as_bytes();
    let quote = *bytes.get(*i).ok_or("expected a string")?;
    if quote != b'\'' && quote != b'"' {
        return Err("expected a quoted string".into());
    }
    let start = *i + 1;
    let end = s[start..]
        .find(quote as char)
        .ok_or("unterminated string")?
        + start;
    *i = end + 1;
    Ok(s[start..end].to_string())
}

/// Element types a block can be read as.
pub trait Element: Copy + Default + Send + Sync + 'static {
    fn from_f32(v: f32) -> Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
}

impl Element for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Element for f64 {
    fn from_f32(v: f32) -> Self {
        v as f64
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
}

/// Converts `bytes` of `dtype` (big-endian when `big_endian`) into `out` (cleared first).
pub fn decode<T: Element>(dtype: Dtype, big_endian: bool, bytes: &[u8], out: &mut Vec<T>) {
    out.clear();
    match (dtype, big_endian) {
        (Dtype::F16, false) => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| T::from_f32(half::f16::from_le_bytes(c.try_into().unwrap()).to_f32())),
        ),
        (Dtype::F16, true) => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| T::from_f32(half::f16::from_be_bytes(c.try_into().unwrap()).to_f32())),
        ),
        (Dtype::F32, false) => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| T::from_f32(f32::from_le_bytes(c.try_into().unwrap()))),
        ),
        (Dtype::F32, true) => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| T::from_f32(f32::from_be_bytes(c.try_into().unwrap()))),
        ),
        (Dtype::F64, false) => out.extend(
            bytes
                .chunks_exact(8)
                .map(|c| T::from_f64(f64::from_le_bytes(c.try_into().unwrap()))),
        ),
        (Dtype::F64, true) => out.extend(
            bytes
                .chunks_exact(8)
                .map(|c| T::from_f64(f64::from_be_bytes(c.try_into().unwrap()))),
        ),
    }
}

/// A `.npy` stream whose header has been read: any [`Read`] (a file, an `.npz` member).
pub struct NpyReader<R> {
    path: PathBuf,
    header: NpyHeader,
    reader: R,
    /// A second handle for the positioned reads of a Fortran-order file.
    columns: Option<File>,
}

/// An opened `.npy` file.
pub type NpyFile = NpyReader<BufReader<File>>;

impl NpyReader<BufReader<File>> {
    /// Opens a file, parses its header and checks that its length matches the declared shape.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NpyError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| NpyError::Io {
            path: path.into(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| NpyError::Io {
                path: path.into(),
                source,
            })?
            .len();
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let header = read_header(&mut reader, path)?;
        check_length(path, &header, len - header.data_offset.min(len))?;
        let columns = if header.fortran_order {
            Some(File::open(path).map_err(|source| NpyError::Io {
                path: path.into(),
                source,
            })?)
        } else {
            None
        };
        Ok(NpyReader {
            path: path.into(),
            header,
            reader,
            columns,
        })
    }
}

/// Checks that `data_bytes` (what follows the header) matches the shape exactly.
pub(crate) fn check_length(
    path: &Path,
    header: &NpyHeader,
    data_bytes: u64,
) -> Result<(), NpyError> {
    let expected = header.data_len();
    if data_bytes < expected {
        return Err(NpyError::Truncated {
            path: path.into(),
            shape: header.shape.clone(),
            expected,
            actual: data_bytes,
        });
    }
    if data_bytes > expected {
        return Err(NpyError::TrailingData {
            path: path.into(),
            shape: header.shape.clone(),
            extra: data_bytes - expected,
        });
    }
    Ok(())
}

impl<R: Read> NpyReader<R> {
    /// Parses the header of a stream; `data_bytes_available`, when known (the total stream length
    /// minus the header), is checked against the shape up front.
    pub fn from_reader(
        mut reader: R,
        path: impl Into<PathBuf>,
        total_len: Option<u64>,
    ) -> Result<Self, NpyError> {
        let path = path.into();
        let header = read_header(&mut reader, &path)?;
        if header.fortran_order {
            return Err(NpyError::FortranOrder { path });
        }
        if let Some(len) = total_len {
            check_length(&path, &header, len.saturating_sub(header.data_offset))?;
        }
        Ok(NpyReader {
            path,
            header,
            reader,
            columns: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn header(&self) -> &NpyHeader {
        &self.header
    }
    pub fn shape(&self) -> &[usize] {
        &self.header.shape
    }
    pub fn dtype(&self) -> Dtype {
        self.header.dtype
    }
    /// Number of datapoints (first axis).
    pub fn rows(&self) -> usize {
        self.header.rows()
    }
    /// Values per datapoint (product of the other axes).
    pub fn row_len(&self) -> usize {
        self.header.row_len()
    }

    /// Errors with [`NpyError::WrongRank`] unless the rank is one of `allowed`.
    pub fn expect_rank(&self, allowed: &[usize]) -> Result<(), NpyError> {
        let rank = self.header.shape.len();
        if allowed.contains(&rank) {
            return Ok(());
        }
        let expected = allowed
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(" or ");
        Err(NpyError::WrongRank {
            path: self.path.clone(),
            shape: self.header.shape.clone(),
            rank,
            expected,
        })
    }

    /// Iterates blocks of up to `rows_per_block` datapoints as f32.
    pub fn blocks_f32(self, rows_per_block: usize) -> RowBlocks<R, f32> {
        RowBlocks::new(self, rows_per_block)
    }

    /// Iterates blocks of up to `rows_per_block` datapoints as f64.
    pub fn blocks_f64(self, rows_per_block: usize) -> RowBlocks<R, f64> {
        RowBlocks::new(self, rows_per_block)
    }

    /// Reads the whole array.
    pub fn read_all<T: Element>(self) -> Result<NpyArray<T>, NpyError> {
        let shape = self.header.shape.clone();
        let rows = self.rows();
        let mut blocks = RowBlocks::<R, T>::new(self, rows);
        let mut data = Vec::new();
        if let Some(b) = blocks.next_block()? {
            data = b.data.to_vec();
        }
        Ok(NpyArray { shape, data })
    }
}

/// A whole array in memory, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

impl<T> NpyArray<T> {
    pub fn rows(&self) -> usize {
        self.shape[0]
    }
    pub fn row_len(&self) -> usize {
        self.shape[1..].iter().product()
    }
}

/// Reads a whole `.npy` file as f64 (checks finiteness).
pub fn read_f64(path: impl AsRef<Path>) -> Result<NpyArray<f64>, NpyError> {
    NpyFile::open(path)?.read_all()
}

/// Reads a whole `.npy` file as f32 (checks finiteness; f64 files are narrowed).
pub fn read_f32(path: impl AsRef<Path>) -> Result<NpyArray<f32>, NpyError> {
    NpyFile::open(path)?.read_all()
}

/// One block of consecutive datapoints, row-major: `rows × row_len` values.
#[derive(Debug)]
pub struct RowBlock<'a, T> {
    /// Index of the block's first datapoint in the file.
    pub first_row: usize,
    pub rows: usize,
    pub row_len: usize,
    pub data: &'a [T],
}

/// Bytes of a block reserved before reading it; larger blocks grow as their data arrives.
const RESERVE_AHEAD: usize = 1 << 20;

/// Block iterator over a `.npy` stream; reuses its buffers, so memory stays at one block.
pub struct RowBlocks<R, T> {
    inner: NpyReader<R>,
    rows_per_block: usize,
    next_row: usize,
    check_finite: bool,
    bytes: Vec<u8>,
    /// One column of a block of a Fortran-order file.
    column: Vec<u8>,
    values: Vec<T>,
}

/// Gathers rows `first .. first + rows` of a Fortran-order file into `out`, in C order: one
/// positioned read per column. Column `k` (first axis fastest, so the trailing axes in
/// column-major order) holds every datapoint's value `k` contiguously.
fn gather_columns(
    file: &File,
    header: &NpyHeader,
    first: usize,
    rows: usize,
    column: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let size = header.dtype.size();
    let n = header.rows();
    let trailing = &header.shape[1..];
    let row_len = header.row_len();
    out.clear();
    out.resize(rows * row_len * size, 0);
    column.resize(rows * size, 0);
    // C position c of a row is the multi-index (i_1, .., i_k) with the last axis fastest; its
    // column in the file counts with the first axis fastest.
    let mut index = vec![0usize; trailing.len()];
    for c in 0..row_len {
        let mut k = 0usize;
        let mut stride = 1usize;
        for (i, d) in index.iter().zip(trailing) {
            k += i * stride;
            stride *= d;
        }
        let offset = header.data_offset + ((k * n + first) * size) as u64;
        file.read_exact_at(column, offset)?;
        for (r, value) in column.chunks_exact(size).enumerate() {
            let at = (r * row_len + c) * size;
            out[at..at + size].copy_from_slice(value);
        }
        for axis in (0..index.len()).rev() {
            index[axis] += 1;
            if index[axis] < trailing[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Ok(())
}

impl<R: Read, T: Element> RowBlocks<R, T> {
    fn new(inner: NpyReader<R>, rows_per_block: usize) -> Self {
        RowBlocks {
            inner,
            rows_per_block: rows_per_block.max(1),
            next_row: 0,
            check_finite: true,
            bytes: Vec::new(),
            column: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Changes the size of the following blocks (callers aligning two files block by block).
    pub fn set_rows_per_block(&mut self, rows: usize) {
        self.rows_per_block = rows.max(1);
    }

    /// Whether to reject NaN/±Inf (default true).
    pub fn check_finite(mut self, on: bool) -> Self {
        self.check_finite = on;
        self
    }

    pub fn header(&self) -> &NpyHeader {
        &self.inner.header
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The next block, or `None` after the last datapoint.
    pub fn next_block(&mut self) -> Result<Option<RowBlock<'_, T>>, NpyError> {
        let total = self.inner.rows();
        if self.next_row >= total {
            return Ok(None);
        }
        let rows = self.rows_per_block.min(total - self.next_row);
        let row_len = self.inner.row_len();
        let nbytes = rows * row_len * self.inner.header.dtype.size();
        // The stream's length was checked against the shape, but for an `.npz` member that
        // length is the zip directory's claim, not the data: a 300-byte archive can declare a
        // terabyte. So the buffer grows with the bytes that actually arrive (capacity is kept
        // between blocks) instead of being sized from the header up front.
        self.bytes.clear();
        if let Some(file) = &self.inner.columns {
            // The file's length was checked against the shape when it was opened.
            gather_columns(
                file,
                &self.inner.header,
                self.next_row,
                rows,
                &mut self.column,
                &mut self.bytes,
            )
            .map_err(|source| NpyError::Io {
                path: self.inner.path.clone(),
                source,
            })?;
            return self.finish_block(rows, row_len);
        }
        self.bytes.reserve(nbytes.min(RESERVE_AHEAD));
        let read = (&mut self.inner.reader)
            .take(nbytes as u64)
            .read_to_end(&mut self.bytes);
        let short = match read {
            Ok(n) => n < nbytes,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => true,
            Err(e) => {
                return Err(NpyError::Io {
                    path: self.inner.path.clone(),
                    source: e,
                });
            }
        };
        if short {
            let h = &self.inner.header;
            let actual = (self.next_row * row_len * h.dtype.size() + self.bytes.len()) as u64;
            return Err(NpyError::Truncated {
                path: self.inner.path.clone(),
                shape: h.shape.clone(),
                expected: h.data_len(),
                actual,
            });
        }
        self.finish_block(rows, row_len)
    }

    /// Decodes the block's bytes (C order) and checks them.
    fn finish_block(
        &mut self,
        rows: usize,
        row_len: usize,
    ) -> Result<Option<RowBlock<'_, T>>, NpyError> {
        let h = &self.inner.header;
        decode(h.dtype, h.big_endian, &self.bytes, &mut self.values);
        let first_row = self.next_row;
        if self.check_finite
            && let Some(pos) = self.values.iter().position(|v| !v.to_f64().is_finite())
        {
            return Err(NpyError::NonFinite {
                path: self.inner.path.clone(),
                row: first_row + pos / row_len,
                col: pos % row_len,
                value: self.values[pos].to_f64(),
            });
        }
        self.next_row += rows;
        Ok(Some(RowBlock {
            first_row,
            rows,
            row_len,
            data: &self.values,
        }))
    }
}

impl<R: Read + std::io::Seek, T: Element> RowBlocks<R, T> {
    /// Starts over at the first row, for callers that read a file twice (a comparison that
    /// projects each side in a second pass).
    pub fn rewind(&mut self) -> Result<(), NpyError> {
        if self.inner.columns.is_none() {
            let offset = self.inner.header.data_offset;
            self.inner
                .reader
                .seek(std::io::SeekFrom::Start(offset))
                .map_err(|source| NpyError::Io {
                    path: self.inner.path.clone(),
                    source,
                })?;
        }
        self.next_row = 0;
        Ok(())
    }
}

/// Writes a C-order little-endian `.npy` (version 1) file; used by tests and tools.
pub fn write_npy<T: Element + NpyWritable>(
    path: impl AsRef<Path>,
    shape: &[usize],
    data: &[T],
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(128 + std::mem::size_of_val(data));
    encode_npy(&mut out, shape, data);
    std::fs::write(path, out)
}

/// Element types [`write_npy`] can write.
pub trait NpyWritable: Copy {
    const DESCR: &'static str;
    fn put_le(self, out: &mut Vec<u8>);
}
impl NpyWritable for f32 {
    const DESCR: &'static str = "<f4";
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}
impl NpyWritable for f64 {
    const DESCR: &'static str = "<f8";
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

/// Encodes an array as `.npy` v1 bytes into `out`.
pub fn encode_npy<T: NpyWritable>(out: &mut Vec<u8>, shape: &[usize], data: &[T]) {
    let shape_txt = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        T::DESCR,
        shape_txt
    );
    // Pad so the data starts on a 64-byte boundary, as NumPy does.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for &v in data {
        v.put_le(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numpy_headers() {
        let d = parse_header_dict(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (597, 8, 8, 16), }   \n",
        )
        .unwrap();
        assert_eq!(d["descr"], PyValue::Str("<f4".into()));
        assert_eq!(d["fortran_order"], PyValue::Bool(false));
        assert_eq!(d["shape"], PyValue::Tuple(vec![597, 8, 8, 16]));
        let d =
            parse_header_dict("{'descr': '<f8', 'fortran_order': True, 'shape': (5,), }").unwrap();
        assert_eq!(d["shape"], PyValue::Tuple(vec![5]));
        let d = parse_header_dict(
            "{'descr': [('a', '<f4'), ('b', '<i8')], 'fortran_order': False, 'shape': (3,), }",
        )
        .unwrap();
        assert!(matches!(d["descr"], PyValue::Other(_)));
        assert!(parse_header_dict("{'descr': '<f4'").is_err());
        assert!(parse_header_dict("{'descr' '<f4'}").is_err());
    }
}
