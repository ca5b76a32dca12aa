//! `svcca._native`: the Rust half of the Python package.
//!
//! Thin bindings over the library crates the `svcca` command uses, so Python gets the same
//! numbers and the same messages: [`compare`] streams two in-memory arrays through
//! `svcca_compare::compare` (the code path of `svcca compare`), [`sweep`] runs a job on the
//! embedded engine as `svcca sweep` does, [`read_object`] fetches a result file from any store.
//! Argument checking that is about Python objects (dtypes, torch tensors, pandas) lives in the
//! Python half, `svcca/__init__.py`.
//!
//! Every long call releases the GIL and checks for Ctrl-C between blocks of work, so a notebook
//! can interrupt it.

use std::borrow::Cow;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use svcca_compare::{Block, BlockSource, CompareConfig, CompareError, Input, OptionNames};
use svcca_core::conv::{ConvMethod, Layout};
use svcca_core::{KeepRule, Metric, Mode, Precision};

mod dataset;
mod sweep;

create_exception!(
    _native,
    SvccaError,
    PyException,
    "A comparison, dataset or sweep that svcca refuses or cannot complete. `retryable` is \
     True when running it again may succeed (a store that failed), as the CLI's exit code 11."
);

/// The raised exception carries the CLI's message and its retryable/permanent classification.
pub(crate) fn svcca_error(py: Python<'_>, message: String, retryable: bool) -> PyErr {
    let err = SvccaError::new_err(message);
    // Setting an attribute on a fresh exception instance cannot fail in practice; if it did, the
    // message is still the useful part.
    let _ = err.value(py).setattr("retryable", retryable);
    err
}

/// Ctrl-C arrives as a flag the interpreter checks; long Rust calls check it themselves.
pub(crate) fn interrupted() -> bool {
    Python::attach(|py| py.check_signals().is_err())
}

/// How the Python keyword arguments are spelt in messages.
const PYTHON_NAMES: OptionNames = OptionNames {
    metric: "metric=",
    conv: "layout='nhwc' or layout='nchw'",
    memory: "memory_mb=",
    block_rows: "block_rows=",
    mixed: "precision='mixed'",
};

#[derive(Clone, Copy)]
enum Elem {
    F16,
    F32,
    F64,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::F16 => 2,
            Elem::F32 => 4,
            Elem::F64 => 8,
        }
    }
}

/// An array as NumPy's `__array_interface__` describes it: where its memory is, and how to step
/// through it. The Python caller keeps the array alive for the whole call.
struct ArraySource {
    name: String,
    shape: Vec<usize>,
    /// Bytes between consecutive indices along each axis (negative for reversed views).
    strides: Vec<isize>,
    address: usize,
    elem: Elem,
    next: usize,
    /// Byte offsets of a datapoint's values from its first one, in row-major order, for arrays
    /// whose rows are not contiguous (Fortran order, slices, transposes).
    gather: Option<Vec<isize>>,
    /// Owns the array for as long as its memory is read.
    _owner: Py<PyAny>,
}

impl ArraySource {
    fn new(name: String, array: &Bound<'_, PyAny>) -> PyResult<ArraySource> {
        let interface = array.getattr("__array_interface__")?;
        let interface = interface.cast::<PyDict>()?;
        let item = |key: &str| -> PyResult<Bound<'_, PyAny>> {
            interface.get_item(key)?.ok_or_else(|| {
                pyo3::exceptions::PyTypeError::new_err(format!(
                    "{name}: __array_interface__ has no {key}"
                ))
            })
        };
        let typestr: String = item("typestr")?.extract()?;
        let elem = match typestr.as_str() {
            "<f2" => Elem::F16,
            "<f4" => Elem::F32,
            "<f8" => Elem::F64,
            other => {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "{name}: arrays of type {other} are not read here; pass little-endian \
                     float16, float32 or float64"
                )));
            }
        };
        let data = item("data")?;
        let (address, _readonly): (usize, bool) = data.cast::<PyTuple>()?.extract()?;
        let shape: Vec<usize> = item("shape")?.extract()?;
        let strides = match interface.get_item("strides")? {
            Some(s) if !s.is_none() => s.extract::<Vec<isize>>()?,
            _ => row_major_strides(&shape, elem.size()),
        };
        let mut source = ArraySource {
            name,
            shape,
            strides,
            address,
            elem,
            next: 0,
            gather: None,
            _owner: array.clone().unbind(),
        };
        if !source.rows_contiguous() {
            source.gather = Some(source.item_offsets());
        }
        Ok(source)
    }

    fn row_len(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// The element type as the manifest's `source_dtype` names it.
    fn dtype_name(&self) -> &'static str {
        match self.elem {
            Elem::F16 => "float16",
            Elem::F32 => "float32",
            Elem::F64 => "float64",
        }
    }

    /// Rows are contiguous and row-major: blocks can be lent without a copy.
    fn rows_contiguous(&self) -> bool {
        let expected = row_major_strides(&self.shape, self.elem.size());
        let aligned = self.address.is_multiple_of(self.elem.size());
        aligned
            && self
                .shape
                .iter()
                .zip(self.strides.iter().zip(&expected))
                .all(|(&len, (&s, &e))| len <= 1 || s == e)
    }

    fn item_offsets(&self) -> Vec<isize> {
        let mut offsets = vec![0isize];
        for (&len, &stride) in self.shape[1..].iter().zip(&self.strides[1..]) {
            offsets = offsets
                .iter()
                .flat_map(|&o| (0..len as isize).map(move |i| o + i * stride))
                .collect();
        }
        offsets
    }
}

fn row_major_strides(shape: &[usize], size: usize) -> Vec<isize> {
    let mut strides = vec![0isize; shape.len()];
    let mut step = size as isize;
    for (s, &len) in strides.iter_mut().zip(shape).rev() {
        *s = step;
        step *= len.max(1) as isize;
    }
    strides
}

impl BlockSource for ArraySource {
    fn name(&self) -> &str {
        &self.name
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn next_block(&mut self, rows: usize) -> Result<Option<Block<'_>>, CompareError> {
        if interrupted() {
            return Err(CompareError::Interrupted);
        }
        let rows = rows.min(self.shape[0] - self.next);
        if rows == 0 {
            return Ok(None);
        }
        let row_len = self.row_len();
        let first = self.next as isize * self.strides[0];
        self.next += rows;
        let Some(offsets) = &self.gather else {
            let start = (self.address as isize + first) as usize;
            // SAFETY: the array (held by `_owner`) is C-contiguous from `address` over its whole
            // shape, aligned for its element type, and these rows lie inside it. NumPy arrays are
            // not mutated by this call; the caller is told not to write them from another thread
            // while a comparison reads them.
            return Ok(Some(unsafe {
                match self.elem {
                    Elem::F32 => Block::F32(Cow::Borrowed(std::slice::from_raw_parts(
                        start as *const f32,
                        rows * row_len,
                    ))),
                    Elem::F64 => Block::F64(Cow::Borrowed(std::slice::from_raw_parts(
                        start as *const f64,
                        rows * row_len,
                    ))),
                    Elem::F16 => Block::F32(Cow::Owned(
                        std::slice::from_raw_parts(start as *const u16, rows * row_len)
                            .iter()
                            .map(|&b| half::f16::from_bits(b).to_f32())
                            .collect(),
                    )),
                }
            }));
        };
        let row_offsets = (0..rows as isize).map(|r| first + r * self.strides[0]);
        let at = |o: isize| (self.address as isize + o) as usize;
        // SAFETY: every offset is an index of the array's shape stepped by its own strides, so it
        // lies inside the array's memory (held by `_owner`); reads are unaligned-safe.
        let block = unsafe {
            match self.elem {
                Elem::F64 => Block::F64(Cow::Owned(
                    row_offsets
                        .flat_map(|r| offsets.iter().map(move |&o| r + o))
                        .map(|o| std::ptr::read_unaligned(at(o) as *const f64))
                        .collect(),
                )),
                Elem::F32 => Block::F32(Cow::Owned(
                    row_offsets
                        .flat_map(|r| offsets.iter().map(move |&o| r + o))
                        .map(|o| std::ptr::read_unaligned(at(o) as *const f32))
                        .collect(),
                )),
                Elem::F16 => Block::F32(Cow::Owned(
                    row_offsets
                        .flat_map(|r| offsets.iter().map(move |&o| r + o))
                        .map(|o| {
                            half::f16::from_bits(std::ptr::read_unaligned(at(o) as *const u16))
                                .to_f32()
                        })
                        .collect(),
                )),
            }
        };
        Ok(Some(block))
    }

    fn rewind(&mut self) -> Result<(), CompareError> {
        self.next = 0;
        Ok(())
    }
}

fn input(s: &ArraySource) -> Input<'_> {
    Input {
        name: &s.name,
        shape: &s.shape,
    }
}

fn parse_metric(text: &str) -> PyResult<Metric> {
    match text {
        "svcca" => Ok(Metric::Svcca),
        "cca" => Ok(Metric::Cca),
        "pwcca" => Ok(Metric::Pwcca),
        "cka" => Ok(Metric::Cka),
        other => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "metric={other:?}: choose one of 'svcca', 'cca', 'pwcca', 'cka'"
        ))),
    }
}

/// Compares two arrays; returns the `svcca compare --json` record as text.
#[pyfunction]
#[pyo3(signature = (x, y, *, x_name, y_name, metric, keep_variance, keep_dims, epsilon, threshold,
    google_compat, precision, layout, conv, allow_trivial, block_rows, memory_mb, threads))]
#[allow(clippy::too_many_arguments)]
fn compare(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    x_name: String,
    y_name: String,
    metric: &str,
    keep_variance: Option<f64>,
    keep_dims: Option<usize>,
    epsilon: Option<f64>,
    threshold: f64,
    google_compat: bool,
    precision: Option<&str>,
    layout: Option<&str>,
    conv: &str,
    allow_trivial: bool,
    block_rows: usize,
    memory_mb: Option<u64>,
    threads: Option<usize>,
) -> PyResult<String> {
    let metric = parse_metric(metric)?;
    let method = match conv {
        "dft" => ConvMethod::Dft,
        "fold" => ConvMethod::Fold,
        "pool" => ConvMethod::Pool,
        other => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "conv={other:?}: choose one of 'dft', 'fold', 'pool'"
            )));
        }
    };
    let conv = match layout {
        None | Some("dense") => None,
        Some("nhwc") => Some((method, Layout::Nhwc)),
        Some("nchw") => Some((method, Layout::Nchw)),
        Some(other) => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "layout={other:?}: choose 'dense' ([datapoints, neurons]), 'nhwc' or 'nchw' (4-D conv \
                 activations)"
            )));
        }
    };
    let keep = match (keep_dims, keep_variance) {
        (Some(k), _) => KeepRule::Dims(k),
        (None, Some(f)) => KeepRule::VarianceFraction(f),
        (None, None) => KeepRule::VarianceFraction(0.99),
    };
    let precision = match precision {
        None => Precision::F64,
        Some(p) => p.parse().map_err(|_| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "precision={p:?}: choose 'f64' (the default) or 'mixed' (f32 products, f64 \
                 accumulation)"
            ))
        })?,
    };
    let config = CompareConfig {
        metric,
        mode: if google_compat {
            Mode::GoogleCompat
        } else {
            Mode::Default
        },
        keep,
        epsilon,
        threshold,
        conv,
        allow_trivial,
        block_rows,
        memory_mb: memory_mb.unwrap_or_else(|| svcca_engine::spec::Resources::default().memory_mb),
        precision,
        joint_moments: false,
    };
    let mut xs = ArraySource::new(x_name, x)?;
    let mut ys = ArraySource::new(y_name, y)?;
    for s in [&xs, &ys] {
        if s.shape.is_empty() {
            return Err(svcca_error(
                py,
                format!(
                    "{} holds a single number (shape []); a representation is [datapoints, neurons]",
                    s.name
                ),
                false,
            ));
        }
    }
    let outcome = py.detach(|| {
        svcca_core::set_parallelism(threads.unwrap_or(0));
        svcca_compare::compare(&mut xs, &mut ys, &config, &PYTHON_NAMES)
    });
    match outcome {
        Ok(outcome) => Ok(svcca_compare::to_json(
            input(&xs),
            input(&ys),
            metric,
            &outcome,
        )),
        Err(CompareError::Interrupted) => Err(PyKeyboardInterrupt::new_err(())),
        Err(e @ CompareError::DatapointMismatch { .. }) => Err(svcca_error(
            py,
            format!("{e} (if your arrays are [neurons, datapoints], pass their transpose, x.T)"),
            false,
        )),
        Err(e) => {
            let retryable = e.is_retryable();
            Err(svcca_error(py, e.to_string(), retryable))
        }
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("SvccaError", m.py().get_type::<SvccaError>())?;
    m.add_class::<dataset::DatasetWriter>()?;
    m.add_function(wrap_pyfunction!(compare, m)?)?;
    m.add_function(wrap_pyfunction!(sweep::sweep, m)?)?;
    m.add_function(wrap_pyfunction!(sweep::read_object, m)?)?;
    Ok(())
}
