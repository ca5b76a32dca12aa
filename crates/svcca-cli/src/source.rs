//! Where a representation to compare comes from, read as aligned blocks of datapoints.
//!
//! A source is a `.npy` file (datapoints first, or google's neurons-first layout), an array
//! inside an `.npz` or `.safetensors` file (`FILE::NAME`), or one representation of a dataset
//! named by a selector (`DATASET_URL#run=mlp,seed=0,...`). Every source
//! hands out blocks of exactly the number of datapoints asked for (fewer only at the end), so two
//! sources whose native blocks differ (shards of different sizes) stay aligned datapoint by
//! datapoint. Memory is bounded by one block per side, never by the file.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use futures::stream::BoxStream;
use svcca_storage::npy::{Dtype, NpyFile, NpyHeader, RowBlocks};
use svcca_storage::{Dataset, FileArray, ReadOptions, Selector, StorageError};

use crate::exit::Failure;

/// A block of consecutive datapoints as the comparison reads them.
pub use svcca_compare::Block;

/// An opened representation.
pub struct Source {
    /// What the user typed, for messages.
    pub name: String,
    /// Shape with datapoints first (`[n, d]` or `[n, h, w, c]` / `[n, c, h, w]` as stored).
    pub shape: Vec<usize>,
    reader: Reader,
}

enum Reader {
    NpyF32(RowBlocks<BufReader<File>, f32>),
    NpyF64(RowBlocks<BufReader<File>, f64>),
    NeuronsFirst(NeuronsFirstReader),
    Dataset(Box<DatasetReader>),
    Member(MemberReader),
}

impl Source {
    /// Opens `spec`: a selector when it looks like one, else a `.npy` path.
    pub fn open(
        spec: &str,
        neurons_first: bool,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<Source, Failure> {
        if Selector::looks_like_selector(spec) {
            if neurons_first {
                return Err(Failure::fatal(format!(
                    "{spec}: --neurons-first applies to .npy files only; dataset representations are always stored datapoints first"
                )));
            }
            return runtime
                .block_on(DatasetReader::open(spec))
                .map(|(shape, reader)| Source {
                    name: spec.to_string(),
                    shape,
                    reader: Reader::Dataset(Box::new(reader)),
                });
        }
        let (file, member) = match spec.rsplit_once("::") {
            Some((file, member)) if !member.is_empty() => (file, Some(member)),
            _ => (spec, None),
        };
        let container = matches!(
            Path::new(file).extension().and_then(|e| e.to_str()),
            Some("npz" | "safetensors")
        );
        if container || member.is_some() {
            if neurons_first {
                return Err(Failure::fatal(format!(
                    "{spec}: --neurons-first applies to .npy files only"
                )));
            }
            let array = FileArray::open(Path::new(file), member).map_err(storage_failure)?;
            let shape = array.shape().to_vec();
            if shape.is_empty() {
                return Err(Failure::fatal(format!(
                    "{spec} holds a single number (shape []); a representation is [datapoints, neurons]"
                )));
            }
            return Ok(Source {
                name: spec.to_string(),
                shape,
                reader: Reader::Member(MemberReader::spawn(array)),
            });
        }
        let path = PathBuf::from(spec);
        if neurons_first {
            let reader = NeuronsFirstReader::open(&path)?;
            let shape = vec![reader.datapoints, reader.neurons];
            return Ok(Source {
                name: spec.to_string(),
                shape,
                reader: Reader::NeuronsFirst(reader),
            });
        }
        let file = NpyFile::open(&path).map_err(|e| Failure::fatal(e.to_string()))?;
        let shape = file.shape().to_vec();
        if shape.is_empty() {
            return Err(Failure::fatal(format!(
                "{spec} holds a single number (shape []); a representation is [datapoints, neurons]"
            )));
        }
        let reader = match file.dtype() {
            // Blocks are requested with an explicit row count on every call.
            // float16 widens to f32 exactly.
            Dtype::F16 | Dtype::F32 => Reader::NpyF32(file.blocks_f32(1)),
            Dtype::F64 => Reader::NpyF64(file.blocks_f64(1)),
        };
        Ok(Source {
            name: spec.to_string(),
            shape,
            reader,
        })
    }

    /// Starts over at the first datapoint (a dataset's shards or a container's array are
    /// streamed again from the start).
    pub fn rewind(&mut self) -> Result<(), Failure> {
        let fatal = |e: svcca_storage::npy::NpyError| Failure::fatal(e.to_string());
        match &mut self.reader {
            Reader::NpyF32(blocks) => blocks.rewind().map_err(fatal),
            Reader::NpyF64(blocks) => blocks.rewind().map_err(fatal),
            Reader::NeuronsFirst(r) => {
                r.next = 0;
                Ok(())
            }
            Reader::Dataset(r) => {
                r.rewind();
                Ok(())
            }
            Reader::Member(r) => {
                r.rewind();
                Ok(())
            }
        }
    }

    /// The next `rows` datapoints (fewer at the end; `None` when exhausted).
    pub fn next(
        &mut self,
        rows: usize,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<Option<Block<'_>>, Failure> {
        let fatal = |e: svcca_storage::npy::NpyError| Failure::fatal(e.to_string());
        match &mut self.reader {
            Reader::NpyF32(blocks) => Ok(read_exact_rows(blocks, rows)
                .map_err(fatal)?
                .map(|v| Block::F32(v.into()))),
            Reader::NpyF64(blocks) => Ok(read_exact_rows(blocks, rows)
                .map_err(fatal)?
                .map(|v| Block::F64(v.into()))),
            Reader::NeuronsFirst(r) => r.next(rows),
            Reader::Dataset(r) => runtime.block_on(r.next(rows)),
            Reader::Member(r) => r.next(rows),
        }
    }
}

/// Reads exactly `rows` rows (or what is left) from a `.npy` block iterator, lent from its
/// reused buffer: a copy per block would double the memory traffic of reading.
fn read_exact_rows<T: svcca_storage::npy::Element + Copy>(
    blocks: &mut RowBlocks<BufReader<File>, T>,
    rows: usize,
) -> Result<Option<&[T]>, svcca_storage::npy::NpyError> {
    blocks.set_rows_per_block(rows);
    Ok(blocks.next_block()?.map(|b| b.data))
}

/// google's `[neurons, datapoints]` layout: each block of datapoints is gathered with one
/// positioned read per neuron and transposed, so memory stays at one block.
struct NeuronsFirstReader {
    path: PathBuf,
    file: File,
    header: NpyHeader,
    neurons: usize,
    datapoints: usize,
    next: usize,
    bytes: Vec<u8>,
}

impl NeuronsFirstReader {
    fn open(path: &Path) -> Result<Self, Failure> {
        let file = NpyFile::open(path).map_err(|e| Failure::fatal(e.to_string()))?;
        file.expect_rank(&[2]).map_err(|e| {
            Failure::fatal(format!(
                "{e} (--neurons-first reads [neurons, datapoints] matrices)"
            ))
        })?;
        let header = file.header().clone();
        let (neurons, datapoints) = (header.shape[0], header.shape[1]);
        let raw = File::open(path)
            .map_err(|e| Failure::fatal(format!("cannot read {}: {e}", path.display())))?;
        Ok(NeuronsFirstReader {
            path: path.into(),
            file: raw,
            header,
            neurons,
            datapoints,
            next: 0,
            bytes: Vec::new(),
        })
    }

    fn next(&mut self, rows: usize) -> Result<Option<Block<'static>>, Failure> {
        use std::os::unix::fs::FileExt;
        if self.next >= self.datapoints {
            return Ok(None);
        }
        let rows = rows.min(self.datapoints - self.next);
        let size = self.header.dtype.size();
        self.bytes.resize(rows * size, 0);
        let mut out_f32 = Vec::new();
        let mut out_f64 = Vec::new();
        let wide = self.header.dtype == Dtype::F64;
        if wide {
            out_f64.resize(rows * self.neurons, 0f64);
        } else {
            out_f32.resize(rows * self.neurons, 0f32);
        }
        let (mut col_f32, mut col_f64) = (Vec::new(), Vec::new());
        if self.header.fortran_order {
            // Column-major [neurons, datapoints] is datapoint after datapoint: one read.
            let offset = self.header.data_offset + (self.next * self.neurons * size) as u64;
            self.bytes.resize(rows * self.neurons * size, 0);
            self.file
                .read_exact_at(&mut self.bytes, offset)
                .map_err(|e| Failure::fatal(format!("cannot read {}: {e}", self.path.display())))?;
            let (dtype, big_endian) = (self.header.dtype, self.header.big_endian);
            self.next += rows;
            return Ok(Some(if wide {
                svcca_storage::npy::decode(dtype, big_endian, &self.bytes, &mut out_f64);
                Block::F64(out_f64.into())
            } else {
                svcca_storage::npy::decode(dtype, big_endian, &self.bytes, &mut out_f32);
                Block::F32(out_f32.into())
            }));
        }
        for neuron in 0..self.neurons {
            let offset =
                self.header.data_offset + ((neuron * self.datapoints + self.next) * size) as u64;
            self.file
                .read_exact_at(&mut self.bytes, offset)
                .map_err(|e| {
                    Failure::fatal(format!(
                        "cannot read {} at neuron {neuron}: {e}",
                        self.path.display()
                    ))
                })?;
            let (dtype, big_endian) = (self.header.dtype, self.header.big_endian);
            if wide {
                svcca_storage::npy::decode(dtype, big_endian, &self.bytes, &mut col_f64);
                for (r, v) in col_f64.iter().enumerate() {
                    out_f64[r * self.neurons + neuron] = *v;
                }
            } else {
                svcca_storage::npy::decode(dtype, big_endian, &self.bytes, &mut col_f32);
                for (r, v) in col_f32.iter().enumerate() {
                    out_f32[r * self.neurons + neuron] = *v;
                }
            }
        }
        self.next += rows;
        Ok(Some(if wide {
            Block::F64(out_f64.into())
        } else {
            Block::F32(out_f32.into())
        }))
    }
}

/// An array of an `.npz` / `.safetensors` file, read on its own thread in blocks (the container
/// readers push blocks) and re-blocked to the requested number of rows. The channel holds one
/// block, so memory stays at about two blocks.
struct MemberReader {
    /// Kept to read the array again from the start.
    array: FileArray,
    blocks: std::sync::mpsc::Receiver<Result<Vec<f32>, Failure>>,
    pending: Vec<f32>,
    row_len: usize,
}

/// Values per block read from a container (about 8 MiB of f32).
const MEMBER_BLOCK_VALUES: usize = 2 << 20;

impl MemberReader {
    fn spawn(array: FileArray) -> MemberReader {
        let row_len = array.shape()[1..].iter().product::<usize>().max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let kept = array.clone();
        std::thread::spawn(move || {
            let name = array.display();
            let rows_per_block = (MEMBER_BLOCK_VALUES / row_len).max(1);
            let result = array.for_each_block(rows_per_block, |first_row, _, values| {
                if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
                    return Err(StorageError::NonFinite {
                        representation: name.clone(),
                        shard: None,
                        row: first_row + pos / row_len,
                        col: pos % row_len,
                        value: values[pos] as f64,
                    });
                }
                // A closed channel means the comparison stopped early: stop reading.
                tx.send(Ok(values.to_vec()))
                    .map_err(|_| StorageError::Cancelled {
                        representation: name.clone(),
                        shard: 0,
                    })
            });
            if let Err(e) = result
                && !matches!(e, StorageError::Cancelled { .. })
            {
                let _ = tx.send(Err(storage_failure(e)));
            }
        });
        MemberReader {
            array: kept,
            blocks: rx,
            pending: Vec::new(),
            row_len,
        }
    }

    /// Reads the array again from its first row; the previous reader thread stops at its next
    /// block, when it finds its channel closed.
    fn rewind(&mut self) {
        *self = MemberReader::spawn(self.array.clone());
    }

    fn next(&mut self, rows: usize) -> Result<Option<Block<'static>>, Failure> {
        let want = rows.saturating_mul(self.row_len);
        while self.pending.len() < want {
            match self.blocks.recv() {
                Ok(block) => self.pending.extend_from_slice(&block?),
                Err(_) => break, // the reader finished
            }
        }
        if self.pending.is_empty() {
            return Ok(None);
        }
        let rest = self.pending.split_off(want.min(self.pending.len()));
        Ok(Some(Block::F32(
            std::mem::replace(&mut self.pending, rest).into(),
        )))
    }
}

/// One representation of a dataset, re-blocked to the requested number of rows.
struct DatasetReader {
    /// Kept to stream the representation again from the start.
    dataset: Dataset,
    rep: svcca_storage::Representation,
    stream: BoxStream<'static, Result<svcca_storage::RowBlock, StorageError>>,
    pending: Option<svcca_storage::RowBlock>,
    row_len: usize,
    /// All values of the representation.
    values: usize,
}

impl DatasetReader {
    async fn open(spec: &str) -> Result<(Vec<usize>, DatasetReader), Failure> {
        let selector = Selector::parse(spec).map_err(storage_failure)?;
        let dataset = Dataset::open(&selector.dataset_url, ReadOptions::default())
            .await
            .map_err(storage_failure)?;
        let rep = dataset.resolve(&selector).map_err(storage_failure)?.clone();
        // The shape is the manifest's claim: refuse one its shards cannot hold before any
        // buffer (here or in the statistics) is sized by it.
        let value_bytes = rep.check_size().map_err(storage_failure)?;
        let stream = dataset.row_blocks(&rep, 0..rep.rows());
        let reader = DatasetReader {
            dataset,
            rep: rep.clone(),
            stream,
            pending: None,
            row_len: rep.row_len(),
            values: (value_bytes / 4) as usize,
        };
        Ok((rep.shape.clone(), reader))
    }

    fn rewind(&mut self) {
        self.stream = self.dataset.row_blocks(&self.rep, 0..self.rep.rows());
        self.pending = None;
    }

    async fn next(&mut self, rows: usize) -> Result<Option<Block<'static>>, Failure> {
        let mut out: Vec<f32> =
            Vec::with_capacity(rows.saturating_mul(self.row_len).min(self.values));
        while out.len() < rows.saturating_mul(self.row_len) {
            let block = match self.pending.take() {
                Some(b) => b,
                None => match self.stream.next().await {
                    Some(b) => b.map_err(storage_failure)?,
                    None => break,
                },
            };
            let want = rows - out.len() / self.row_len;
            if block.rows > want {
                out.extend_from_slice(block.slice_rows(0, want).values());
                self.pending = Some(block.slice_rows(want, block.rows - want));
            } else {
                out.extend_from_slice(block.values());
            }
        }
        Ok((!out.is_empty()).then_some(Block::F32(out.into())))
    }
}

/// Storage errors are retryable when the store, not the data, failed.
pub fn storage_failure(e: StorageError) -> Failure {
    crate::exit::classify(e.to_string(), e.is_retryable(), &e)
}
