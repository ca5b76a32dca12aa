//! `svcca.Dataset.write` and `svcca.record`'s storage: representations streamed batch by batch
//! through svcca-storage's dataset writer, the writer `svcca ingest` uses, so the shards and the
//! manifest are the ones ingest would write from the same arrays.

use std::collections::BTreeMap;
use std::sync::Mutex;

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use serde_json::json;
use svcca_compare::{Block, BlockSource};
use svcca_storage::writer::{Change, RepresentationWriter};
use svcca_storage::{Layout, RepKey, RepresentationSpec, StorageError, WriteOptions};

use crate::{ArraySource, svcca_error};

/// One representation being written, and the item shape every batch must have.
struct Open {
    key: RepKey,
    item: Vec<usize>,
    writer: RepresentationWriter,
}

struct State {
    runtime: tokio::runtime::Runtime,
    dataset: svcca_storage::DatasetWriter,
    open: Vec<Open>,
}

#[derive(Default)]
struct Report {
    added: Vec<String>,
    unchanged: Vec<String>,
    replaced: Vec<String>,
    shards_written: usize,
    shards_reused: usize,
    bytes_written: u64,
}

/// A dataset being written: `append` batches of any number of representations, then `finish`
/// (which writes the manifest, once) or `abort`.
#[pyclass(module = "svcca._native")]
pub struct DatasetWriter {
    url: String,
    state: Mutex<Option<State>>,
}

fn storage_error(py: Python<'_>, e: StorageError) -> PyErr {
    let retryable = e.is_retryable();
    svcca_error(py, e.to_string(), retryable)
}

impl DatasetWriter {
    fn closed(&self, py: Python<'_>) -> PyErr {
        svcca_error(
            py,
            format!(
                "the writer of {} is finished; start another with Dataset.writer()",
                self.url
            ),
            false,
        )
    }
}

#[pymethods]
impl DatasetWriter {
    #[new]
    #[pyo3(signature = (url, *, force, shard_rows))]
    fn new(py: Python<'_>, url: String, force: bool, shard_rows: Option<usize>) -> PyResult<Self> {
        if shard_rows == Some(0) {
            return Err(svcca_error(
                py,
                "shard_rows must be at least 1".into(),
                false,
            ));
        }
        let mut options = WriteOptions::default().with_force(force);
        options.shard_rows = shard_rows;
        let opened = py.detach(|| -> Result<State, Result<StorageError, String>> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| Err(format!("cannot start the async runtime: {e}")))?;
            let dataset = runtime
                .block_on(svcca_storage::DatasetWriter::open(&url, options))
                .map_err(Ok)?;
            Ok(State {
                runtime,
                dataset,
                open: Vec::new(),
            })
        });
        let state = match opened {
            Ok(state) => state,
            Err(Ok(e)) => return Err(storage_error(py, e)),
            Err(Err(message)) => return Err(svcca_error(py, message, true)),
        };
        Ok(DatasetWriter {
            url,
            state: Mutex::new(Some(state)),
        })
    }

    /// Appends the next datapoints of one representation. `datapoints` is the representation's
    /// total, needed when its first batch arrives.
    #[pyo3(signature = (array, *, run, layer, seed, step, tags, layout, depth, datapoints))]
    #[allow(clippy::too_many_arguments)]
    fn append(
        &self,
        py: Python<'_>,
        array: &Bound<'_, PyAny>,
        run: String,
        layer: String,
        seed: Option<u64>,
        step: Option<u64>,
        tags: BTreeMap<String, String>,
        layout: Option<&str>,
        depth: Option<u32>,
        datapoints: usize,
    ) -> PyResult<()> {
        let key = RepKey {
            run,
            seed,
            step,
            layer,
            tags,
        };
        let mut batch = ArraySource::new(key.id(), array)?;
        if batch.shape.len() < 2 {
            return Err(svcca_error(
                py,
                format!(
                    "{}: a batch has shape {:?}; a representation is [datapoints, neurons] or \
                     [datapoints, h, w, c]",
                    key.id(),
                    batch.shape
                ),
                false,
            ));
        }
        let layout = match layout {
            None => None,
            Some(text) => Some(
                text.parse::<Layout>()
                    .map_err(|reason| svcca_error(py, format!("{}: {reason}", key.id()), false))?,
            ),
        };
        let item = batch.shape[1..].to_vec();
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = guard.as_mut() else {
            return Err(self.closed(py));
        };
        let index = match state.open.iter().position(|o| o.key == key) {
            Some(i) => {
                if state.open[i].item != item {
                    return Err(svcca_error(
                        py,
                        format!(
                            "{}: a batch of datapoints shaped {:?} after batches shaped {:?}; every \
                             batch of a representation has the same shape after its first axis",
                            key.id(),
                            item,
                            state.open[i].item
                        ),
                        false,
                    ));
                }
                i
            }
            None => {
                let mut shape = vec![datapoints];
                shape.extend(&item);
                let layout = match layout {
                    Some(l) => l,
                    None if shape.len() == 2 => Layout::Dense,
                    None => {
                        return Err(svcca_error(
                            py,
                            format!(
                                "{}: arrays of shape {shape:?} need a declared layout: pass \
                                 layout='nhwc', 'nchw' (PyTorch conv outputs), 'tokens' \
                                 ([sequences, tokens, features]) or 'dense' (flattened)",
                                key.id()
                            ),
                            false,
                        ));
                    }
                };
                let mut spec = RepresentationSpec::new(key.clone(), shape, layout);
                spec.depth = depth;
                spec.source_dtype = Some(batch.dtype_name().to_string());
                let writer = state
                    .dataset
                    .begin(spec)
                    .map_err(|e| storage_error(py, e))?;
                state.open.push(Open { key, item, writer });
                state.open.len() - 1
            }
        };
        let State { runtime, open, .. } = state;
        let writer = &mut open[index].writer;
        let rows = batch.shape[0];
        // `None` when Ctrl-C was pressed.
        let written = py.detach(|| -> Option<Result<(), StorageError>> {
            let block = match batch.next_block(rows) {
                Ok(Some(block)) => block,
                // An empty batch adds nothing.
                Ok(None) => return Some(Ok(())),
                // Reading memory in place fails only by being interrupted.
                Err(_) => return None,
            };
            Some(match block {
                Block::F32(values) => runtime.block_on(writer.write(&values)),
                // As `svcca ingest` stores float64 sources: rounded to the nearest float32.
                Block::F64(values) => {
                    let narrowed: Vec<f32> = values.iter().map(|&v| v as f32).collect();
                    runtime.block_on(writer.write(&narrowed))
                }
            })
        });
        match written {
            None => Err(PyKeyboardInterrupt::new_err(())),
            Some(result) => result.map_err(|e| storage_error(py, e)),
        }
    }

    /// Finishes every representation, writes the manifest and returns the report as JSON.
    fn finish(&self, py: Python<'_>) -> PyResult<String> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut state) = state else {
            return Err(self.closed(py));
        };
        let url = self.url.clone();
        let done = py.detach(move || -> Result<String, StorageError> {
            let mut report = Report::default();
            let runtime = &state.runtime;
            for open in std::mem::take(&mut state.open) {
                let written = runtime.block_on(open.writer.finish())?;
                report.shards_written += written.shards_written;
                report.shards_reused += written.shards_reused;
                report.bytes_written += written.bytes_written;
                let id = open.key.id();
                match state.dataset.add(written)? {
                    Change::Added => report.added.push(id),
                    Change::Unchanged => report.unchanged.push(id),
                    Change::Replaced => report.replaced.push(id),
                }
            }
            runtime.block_on(state.dataset.commit())?;
            let datapoints = state
                .dataset
                .manifest()
                .map(|m| m.probe_set.datapoints)
                .unwrap_or(0);
            Ok(json!({
                "url": url,
                "added": report.added,
                "unchanged": report.unchanged,
                "replaced": report.replaced,
                "datapoints": datapoints,
                "shards_written": report.shards_written,
                "shards_reused": report.shards_reused,
                "bytes_written": report.bytes_written,
            })
            .to_string())
        });
        done.map_err(|e| storage_error(py, e))
    }

    /// Drops what was appended; the manifest stays as it was (shards already stored are not
    /// listed by it, and a later write of the same values reuses them).
    fn abort(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}
