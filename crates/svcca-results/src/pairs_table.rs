//! `pairs.parquet`: the pairs of a [`ResultsFile`] as one long-form table, one row per
//! (pair, metric) in `results.json` order, for pandas, pyarrow, DuckDB or Spark.
//!
//! Columns, for each side `a_` and `b_`:
//! - `a_run` (string), `a_seed`, `a_step` (int64, null where the key has none), `a_layer`
//!   (string), `a_depth` (uint32, null in results without depths), `a_layout` (string, null
//!   likewise), `a_key` (the canonical key [`RepresentationKey::id`]);
//! - one `a_tag_<name>` string column per tag name met on either side of any pair, null where
//!   the representation has no such tag;
//!
//! then `metric`, `mean`, `google_mean` (null for pwcca and cka), `equal_k_mean` (the mean
//! with both sides kept at `min(dims_a, dims_b)` directions: dense svcca and cca in default
//! mode, null otherwise), `dims_a`, `dims_b`,
//! `dropped_a`, `dropped_b` (neurons dropped as constant), `datapoints` (uint64),
//! `warnings` (list of strings), `coefficients` (list of float64: canonical correlations,
//! descending; empty for cka, null where the job stored none), `weights` (list of float64, the
//! PWCCA weights; null for other metrics) and `frequencies` (conv layers compared per frequency:
//! a list of `{i, j, mean, coefficients}`; null otherwise).
//!
//! The file is written uncompressed: canonical correlations are float64 values that general
//! codecs barely shrink, and the repeated key columns are dictionary-encoded already.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, Int64Builder, ListBuilder, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{
    Array, ArrayRef, Float64Array, ListArray, RecordBatch, RecordBatchReader, StringArray,
    StructArray, UInt32Array,
};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{PairRecord, RepresentationKey, RepresentationRecord, ResultsFile};

/// File name of the table under a sweep's output URL.
pub const PAIRS_TABLE_NAME: &str = "pairs.parquet";

/// The table could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum PairsTableError {
    #[error("building the pairs table: {source}")]
    Arrow { source: arrow_schema::ArrowError },
    #[error("pairs.parquet: {source}")]
    Parquet {
        source: parquet::errors::ParquetError,
    },
    #[error("pairs.parquet does not match results.json: {detail}")]
    Mismatch { detail: String },
}

fn arrow(source: arrow_schema::ArrowError) -> PairsTableError {
    PairsTableError::Arrow { source }
}

fn parquet(source: parquet::errors::ParquetError) -> PairsTableError {
    PairsTableError::Parquet { source }
}

fn f64_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float64, true)))
}

fn frequency_fields() -> Fields {
    Fields::from(vec![
        Field::new("i", DataType::UInt32, false),
        Field::new("j", DataType::UInt32, false),
        Field::new("mean", DataType::Float64, false),
        Field::new("coefficients", f64_list(), false),
    ])
}

/// One side's key columns, filled pair by pair.
struct Side {
    prefix: &'static str,
    run: StringBuilder,
    seed: Int64Builder,
    step: Int64Builder,
    layer: StringBuilder,
    depth: UInt32Builder,
    layout: StringBuilder,
    key: StringBuilder,
    tags: Vec<(String, StringBuilder)>,
}

impl Side {
    fn new(prefix: &'static str, tag_names: &BTreeSet<String>) -> Self {
        Side {
            prefix,
            run: StringBuilder::new(),
            seed: Int64Builder::new(),
            step: Int64Builder::new(),
            layer: StringBuilder::new(),
            depth: UInt32Builder::new(),
            layout: StringBuilder::new(),
            key: StringBuilder::new(),
            tags: tag_names
                .iter()
                .map(|t| (t.clone(), StringBuilder::new()))
                .collect(),
        }
    }

    fn push(&mut self, key: &RepresentationKey, rep: Option<&RepresentationRecord>) {
        self.run.append_value(&key.run);
        self.seed.append_option(key.seed);
        self.step.append_option(key.step);
        self.layer.append_value(&key.layer);
        self.depth.append_option(rep.and_then(|r| r.depth));
        self.layout
            .append_option(rep.and_then(|r| r.layout.as_deref()));
        self.key.append_value(key.id());
        for (name, column) in &mut self.tags {
            column.append_option(key.tags.get(name));
        }
    }

    fn finish(mut self, fields: &mut Vec<Field>, columns: &mut Vec<ArrayRef>) {
        let p = self.prefix;
        let mut add = |name: String, data_type: DataType, nullable: bool, array: ArrayRef| {
            fields.push(Field::new(name, data_type, nullable));
            columns.push(array);
        };
        add(
            format!("{p}_run"),
            DataType::Utf8,
            false,
            Arc::new(self.run.finish()),
        );
        add(
            format!("{p}_seed"),
            DataType::Int64,
            true,
            Arc::new(self.seed.finish()),
        );
        add(
            format!("{p}_step"),
            DataType::Int64,
            true,
            Arc::new(self.step.finish()),
        );
        add(
            format!("{p}_layer"),
            DataType::Utf8,
            false,
            Arc::new(self.layer.finish()),
        );
        add(
            format!("{p}_depth"),
            DataType::UInt32,
            true,
            Arc::new(self.depth.finish()),
        );
        add(
            format!("{p}_layout"),
            DataType::Utf8,
            true,
            Arc::new(self.layout.finish()),
        );
        add(
            format!("{p}_key"),
            DataType::Utf8,
            false,
            Arc::new(self.key.finish()),
        );
        for (name, mut column) in self.tags {
            add(
                format!("{p}_tag_{name}"),
                DataType::Utf8,
                true,
                Arc::new(column.finish()),
            );
        }
    }
}

/// The list-of-frequencies column: one entry per pair, null where the pair was not compared per
/// frequency (or, `coefficients` false, everywhere).
fn frequencies_column(
    pairs: &[PairRecord],
    coefficients: bool,
) -> Result<ArrayRef, PairsTableError> {
    let (mut i, mut j) = (UInt32Builder::new(), UInt32Builder::new());
    let mut mean = Float64Builder::new();
    let mut values = ListBuilder::new(Float64Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Float64,
        true,
    )));
    let mut lengths = Vec::with_capacity(pairs.len());
    let mut valid = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let stored = pair.frequencies.as_deref().filter(|_| coefficients);
        let freqs = stored.unwrap_or(&[]);
        lengths.push(freqs.len());
        valid.push(stored.is_some());
        for f in freqs {
            i.append_value(f.i as u32);
            j.append_value(f.j as u32);
            mean.append_value(f.mean);
            values.append_value(f.coefficients.iter().copied().map(Some));
        }
    }
    let entries = StructArray::try_new(
        frequency_fields(),
        vec![
            Arc::new(i.finish()),
            Arc::new(j.finish()),
            Arc::new(mean.finish()),
            Arc::new(values.finish()),
        ],
        None,
    )
    .map_err(arrow)?;
    let list = ListArray::try_new(
        Arc::new(Field::new(
            "item",
            DataType::Struct(frequency_fields()),
            false,
        )),
        OffsetBuffer::from_lengths(lengths),
        Arc::new(entries),
        Some(NullBuffer::from(valid)),
    )
    .map_err(arrow)?;
    Ok(Arc::new(list))
}

/// The pairs of `results` as an Arrow record batch (see the module docs for its columns).
/// `coefficients`: whether the coefficient, weight and per-frequency columns hold the values
/// (`false`: null, for jobs that store no coefficients).
pub fn pairs_batch(
    results: &ResultsFile,
    coefficients: bool,
) -> Result<RecordBatch, PairsTableError> {
    let reps: BTreeMap<&RepresentationKey, &RepresentationRecord> = results
        .representations
        .iter()
        .map(|r| (&r.key, r))
        .collect();
    let tag_names: BTreeSet<String> = results
        .pairs
        .iter()
        .flat_map(|p| p.a.tags.keys().chain(p.b.tags.keys()))
        .cloned()
        .collect();
    let (mut a, mut b) = (Side::new("a", &tag_names), Side::new("b", &tag_names));
    let mut metric = StringBuilder::new();
    let mut mean = Float64Builder::new();
    let mut google_mean = Float64Builder::new();
    let mut equal_k_mean = Float64Builder::new();
    let (mut dims_a, mut dims_b) = (UInt64Builder::new(), UInt64Builder::new());
    let (mut dropped_a, mut dropped_b) = (UInt64Builder::new(), UInt64Builder::new());
    let mut datapoints = UInt64Builder::new();
    let mut warnings = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Utf8,
        true,
    )));
    let mut coeffs = ListBuilder::new(Float64Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Float64,
        true,
    )));
    let mut weights = ListBuilder::new(Float64Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Float64,
        true,
    )));
    for p in &results.pairs {
        let (rep_a, rep_b) = (reps.get(&p.a).copied(), reps.get(&p.b).copied());
        a.push(&p.a, rep_a);
        b.push(&p.b, rep_b);
        metric.append_value(&p.metric);
        mean.append_value(p.mean);
        google_mean.append_option(p.google_mean);
        equal_k_mean.append_option(p.equal_k_mean);
        dims_a.append_value(p.dims_a as u64);
        dims_b.append_value(p.dims_b as u64);
        dropped_a.append_option(rep_a.map(|r| r.dropped_neurons.len() as u64));
        dropped_b.append_option(rep_b.map(|r| r.dropped_neurons.len() as u64));
        datapoints.append_option(rep_a.or(rep_b).map(|r| r.datapoints));
        warnings.append_value(p.warnings.iter().map(Some));
        if coefficients {
            coeffs.append_value(p.coefficients.iter().copied().map(Some));
        } else {
            coeffs.append_null();
        }
        match (&p.weights, coefficients) {
            (Some(w), true) => weights.append_value(w.iter().copied().map(Some)),
            _ => weights.append_null(),
        }
    }
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    a.finish(&mut fields, &mut columns);
    b.finish(&mut fields, &mut columns);
    let mut add = |name: &str, data_type: DataType, nullable: bool, array: ArrayRef| {
        fields.push(Field::new(name, data_type, nullable));
        columns.push(array);
    };
    add("metric", DataType::Utf8, false, Arc::new(metric.finish()));
    add("mean", DataType::Float64, false, Arc::new(mean.finish()));
    add(
        "google_mean",
        DataType::Float64,
        true,
        Arc::new(google_mean.finish()),
    );
    add(
        "equal_k_mean",
        DataType::Float64,
        true,
        Arc::new(equal_k_mean.finish()),
    );
    add("dims_a", DataType::UInt64, false, Arc::new(dims_a.finish()));
    add("dims_b", DataType::UInt64, false, Arc::new(dims_b.finish()));
    add(
        "dropped_a",
        DataType::UInt64,
        true,
        Arc::new(dropped_a.finish()),
    );
    add(
        "dropped_b",
        DataType::UInt64,
        true,
        Arc::new(dropped_b.finish()),
    );
    add(
        "datapoints",
        DataType::UInt64,
        true,
        Arc::new(datapoints.finish()),
    );
    let warnings = warnings.finish();
    add(
        "warnings",
        warnings.data_type().clone(),
        false,
        Arc::new(warnings),
    );
    add("coefficients", f64_list(), true, Arc::new(coeffs.finish()));
    add("weights", f64_list(), true, Arc::new(weights.finish()));
    let frequencies = frequencies_column(&results.pairs, coefficients)?;
    add(
        "frequencies",
        frequencies.data_type().clone(),
        true,
        frequencies,
    );
    let metadata: std::collections::HashMap<String, String> = [(
        "svcca.results_schema".to_string(),
        crate::SCHEMA_VERSION.to_string(),
    )]
    .into();
    let schema = Arc::new(Schema::new(fields).with_metadata(metadata));
    RecordBatch::try_new(schema, columns).map_err(arrow)
}

/// `pairs.parquet` for `results` (see [`pairs_batch`]).
pub fn pairs_parquet(
    results: &ResultsFile,
    coefficients: bool,
) -> Result<Vec<u8>, PairsTableError> {
    let batch = pairs_batch(results, coefficients)?;
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None).map_err(parquet)?;
    writer.write(&batch).map_err(parquet)?;
    writer.close().map_err(parquet)?;
    Ok(bytes)
}

/// Reads `pairs.parquet` back into one record batch.
pub fn read_pairs_parquet(bytes: Vec<u8>) -> Result<RecordBatch, PairsTableError> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).map_err(parquet)?;
    let rows = builder.metadata().file_metadata().num_rows().max(1) as usize;
    // All rows in one batch: the table is one row per pair and metric, small next to the data.
    let mut reader = builder.with_batch_size(rows).build().map_err(parquet)?;
    match reader.next() {
        Some(batch) => batch.map_err(arrow),
        None => Ok(RecordBatch::new_empty(reader.schema())),
    }
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, PairsTableError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| PairsTableError::Mismatch {
            detail: format!("no column `{name}` of the expected type"),
        })
}

fn floats(list: &ListArray, row: usize) -> Result<Vec<f64>, PairsTableError> {
    let values = list.value(row);
    let values = values
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| PairsTableError::Mismatch {
            detail: "a coefficient list does not hold float64".into(),
        })?;
    Ok(values.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

impl ResultsFile {
    /// Puts back the coefficients, PWCCA weights and per-frequency coefficients a job kept in
    /// `pairs.parquet` only (see [`CoefficientStore`](crate::CoefficientStore)). Each row must
    /// name the same pair and metric as the record at its position.
    pub fn fill_coefficients(&mut self, pairs_parquet: Vec<u8>) -> Result<(), PairsTableError> {
        let batch = read_pairs_parquet(pairs_parquet)?;
        if batch.num_rows() != self.pairs.len() {
            return Err(PairsTableError::Mismatch {
                detail: format!(
                    "{} rows for {} pair records",
                    batch.num_rows(),
                    self.pairs.len()
                ),
            });
        }
        let (a_key, b_key) = (
            column::<StringArray>(&batch, "a_key")?,
            column::<StringArray>(&batch, "b_key")?,
        );
        let metric = column::<StringArray>(&batch, "metric")?;
        let coefficients = column::<ListArray>(&batch, "coefficients")?;
        let weights = column::<ListArray>(&batch, "weights")?;
        let frequencies = column::<ListArray>(&batch, "frequencies")?;
        for (row, pair) in self.pairs.iter_mut().enumerate() {
            if a_key.value(row) != pair.a.id()
                || b_key.value(row) != pair.b.id()
                || metric.value(row) != pair.metric
            {
                return Err(PairsTableError::Mismatch {
                    detail: format!(
                        "row {row} is {} vs {} [{}], the record {} vs {} [{}]",
                        a_key.value(row),
                        b_key.value(row),
                        metric.value(row),
                        pair.a.id(),
                        pair.b.id(),
                        pair.metric
                    ),
                });
            }
            if coefficients.is_valid(row) {
                pair.coefficients = floats(coefficients, row)?;
            }
            if weights.is_valid(row) {
                pair.weights = Some(floats(weights, row)?);
            }
            if let Some(stored) = pair.frequencies.as_mut()
                && frequencies.is_valid(row)
            {
                let entries = frequencies.value(row);
                let entries = entries
                    .as_any()
                    .downcast_ref::<StructArray>()
                    .ok_or_else(|| PairsTableError::Mismatch {
                        detail: "frequencies are not a list of structs".into(),
                    })?;
                let i = entries
                    .column_by_name("i")
                    .and_then(|c| c.as_any().downcast_ref::<UInt32Array>());
                let j = entries
                    .column_by_name("j")
                    .and_then(|c| c.as_any().downcast_ref::<UInt32Array>());
                let c = entries
                    .column_by_name("coefficients")
                    .and_then(|c| c.as_any().downcast_ref::<ListArray>());
                let (Some(i), Some(j), Some(c)) = (i, j, c) else {
                    return Err(PairsTableError::Mismatch {
                        detail: "frequencies lack i, j or coefficients".into(),
                    });
                };
                let by_ij: BTreeMap<(usize, usize), usize> = (0..entries.len())
                    .map(|e| ((i.value(e) as usize, j.value(e) as usize), e))
                    .collect();
                for f in stored.iter_mut() {
                    if let Some(&e) = by_ij.get(&(f.i, f.j)) {
                        f.coefficients = floats(c, e)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CoefficientStore, FrequencyRecord, SCHEMA_VERSION};
    use arrow_array::{Int64Array, UInt64Array};

    fn key(seed: i64, layer: &str, tags: &[(&str, &str)]) -> RepresentationKey {
        RepresentationKey {
            run: "net".into(),
            seed: Some(seed),
            step: None,
            layer: layer.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn rep(key: RepresentationKey, depth: u32, dropped: usize) -> RepresentationRecord {
        RepresentationRecord {
            key,
            shape: vec![4],
            datapoints: 50,
            kept_dims: 3,
            dropped_neurons: (0..dropped).collect(),
            spectrum: vec![],
            checksum: String::new(),
            depth: Some(depth),
            layout: Some("dense".into()),
        }
    }

    fn pair(a: RepresentationKey, b: RepresentationKey, metric: &str) -> PairRecord {
        PairRecord {
            a,
            b,
            metric: metric.into(),
            mean: 0.5,
            google_mean: (metric == "svcca").then_some(0.6),
            equal_k_mean: (metric == "svcca").then_some(0.45),
            dims_a: 3,
            dims_b: 2,
            coefficients: if metric == "cka" {
                vec![]
            } else {
                vec![0.9, 0.1]
            },
            weights: (metric == "pwcca").then(|| vec![0.75, 0.25]),
            frequencies: None,
            conv: None,
            warnings: vec![],
        }
    }

    /// Two networks that differ only by the value of `lr`, one with an extra tag, and a conv
    /// pair compared per frequency.
    fn results() -> ResultsFile {
        let a = key(0, "h1", &[("lr", "0.1")]);
        let b = key(0, "h1", &[("lr", "0.01"), ("opt", "adam")]);
        let c = key(1, "conv", &[]);
        let mut conv = pair(c.clone(), c.clone(), "svcca");
        conv.frequencies = Some(vec![
            FrequencyRecord {
                i: 0,
                j: 1,
                coefficients: vec![0.8, 0.2],
                mean: 0.5,
                dims_a: Some(2),
                dims_b: Some(2),
            },
            FrequencyRecord {
                i: 1,
                j: 0,
                coefficients: vec![0.7],
                mean: 0.7,
                dims_a: Some(1),
                dims_b: Some(2),
            },
        ]);
        conv.warnings = vec!["few datapoints".into()];
        ResultsFile {
            schema_version: SCHEMA_VERSION,
            coefficients: CoefficientStore::Json,
            job_spec: String::new(),
            versions: BTreeMap::new(),
            comparison: "pairs".into(),
            settings: String::new(),
            representations: vec![rep(a.clone(), 1, 0), rep(b.clone(), 1, 2), rep(c, 0, 1)],
            pairs: vec![
                pair(a.clone(), b.clone(), "svcca"),
                pair(a.clone(), b.clone(), "pwcca"),
                pair(b, a, "cka"),
                conv,
            ],
        }
    }

    #[test]
    fn every_key_field_is_a_column_and_the_coefficients_read_back() {
        let full = results();
        let batch = read_pairs_parquet(pairs_parquet(&full, true).unwrap()).unwrap();
        assert_eq!(batch.num_rows(), full.pairs.len());
        let names: Vec<&str> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        for side in ["a", "b"] {
            for field in [
                "run", "seed", "step", "layer", "depth", "layout", "key", "tag_lr", "tag_opt",
            ] {
                assert!(
                    names.contains(&format!("{side}_{field}").as_str()),
                    "{names:?}"
                );
            }
        }
        let strings = |name: &str| -> Vec<Option<String>> {
            column::<StringArray>(&batch, name)
                .unwrap()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect()
        };
        // Tag values that differ only in value stay apart, and a missing tag is null.
        assert_eq!(
            strings("a_tag_lr"),
            [Some("0.1"), Some("0.1"), Some("0.01"), None].map(|v| v.map(String::from))
        );
        assert_eq!(
            strings("b_tag_opt"),
            [Some("adam"), Some("adam"), None, None].map(|v| v.map(String::from))
        );
        assert_eq!(
            strings("a_key")[0].as_deref(),
            Some("run=net,seed=0,layer=h1,lr=0.1")
        );
        let seeds = column::<Int64Array>(&batch, "b_seed").unwrap();
        assert_eq!(seeds.values().to_vec(), [0, 0, 0, 1]);
        assert!(column::<Int64Array>(&batch, "a_step").unwrap().is_null(0));
        let dropped = column::<UInt64Array>(&batch, "dropped_b").unwrap();
        assert_eq!(dropped.values().to_vec(), [2, 2, 0, 1]);
        assert_eq!(
            strings("metric"),
            full.pairs
                .iter()
                .map(|p| Some(p.metric.clone()))
                .collect::<Vec<_>>()
        );
        let google = column::<Float64Array>(&batch, "google_mean").unwrap();
        assert!(google.is_valid(0) && google.is_null(1));
        let equal_k = column::<Float64Array>(&batch, "equal_k_mean").unwrap();
        assert!(equal_k.is_null(1));
        assert_eq!(equal_k.value(0), 0.45);
        let weights = column::<ListArray>(&batch, "weights").unwrap();
        assert!(weights.is_null(0) && weights.is_valid(1));

        // What results.json keeps without them, filled back from the table, is the full record.
        let stored = full.stored_as(CoefficientStore::Parquet);
        let mut back = ResultsFile::from_json(&stored.to_json()).unwrap();
        assert!(
            back.pairs
                .iter()
                .all(|p| p.coefficients.is_empty() && p.weights.is_none())
        );
        assert!(
            back.pairs[3]
                .frequencies
                .as_ref()
                .unwrap()
                .iter()
                .all(|f| f.coefficients.is_empty())
        );
        back.fill_coefficients(pairs_parquet(&full, true).unwrap())
            .unwrap();
        back.coefficients = CoefficientStore::Json;
        assert_eq!(back, full);
    }

    #[test]
    fn a_table_of_other_pairs_is_refused_and_none_stores_nulls() {
        let full = results();
        let mut other = full.clone();
        other.pairs.swap(0, 2);
        let mut back = full.stored_as(CoefficientStore::Parquet);
        let err = back
            .fill_coefficients(pairs_parquet(&other, true).unwrap())
            .unwrap_err();
        assert!(matches!(err, PairsTableError::Mismatch { .. }), "{err}");
        other.pairs.pop();
        let err = back
            .fill_coefficients(pairs_parquet(&other, true).unwrap())
            .unwrap_err();
        assert!(
            err.to_string().contains("3 rows for 4 pair records"),
            "{err}"
        );

        let batch = read_pairs_parquet(pairs_parquet(&full, false).unwrap()).unwrap();
        for name in ["coefficients", "weights", "frequencies"] {
            assert_eq!(
                column::<ListArray>(&batch, name).unwrap().null_count(),
                full.pairs.len(),
                "{name}"
            );
        }
        let empty = ResultsFile {
            pairs: vec![],
            ..full
        };
        assert_eq!(
            read_pairs_parquet(pairs_parquet(&empty, true).unwrap())
                .unwrap()
                .num_rows(),
            0
        );
    }
}
