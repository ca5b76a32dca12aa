//! The shard format: one Arrow IPC *file* per shard, one row per datapoint, a single
//! non-nullable column `values` of type `FixedSizeList<Float32>` whose width is the number of
//! values per datapoint (`d`, or `h·w·c` for conv layers in NHWC order).
//!
//! Why this schema: a FixedSizeList's child is one contiguous `Float32` buffer holding row after
//! row, so a record batch *is* a row-major `[rows, width]` f32 matrix; decoding is zero-copy (the
//! slice points into the fetched bytes). One column per neuron would be column-major, need
//! thousands of fields for wide layers, and cost a copy to assemble rows.
//!
//! Schema metadata: `svcca.format` = `"1"`, `svcca.dtype` = `"float32"`, `svcca.item_shape` =
//! JSON shape of one datapoint (`[128]`, `[8,8,16]`). The decoder accepts nullable fields when
//! they hold no nulls (pyarrow's default), and several record batches per file.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Array, FixedSizeListArray, Float32Array, RecordBatch};
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema};

/// Name of the single column.
pub const COLUMN: &str = "values";
pub const META_FORMAT: &str = "svcca.format";
pub const META_DTYPE: &str = "svcca.dtype";
pub const META_ITEM_SHAPE: &str = "svcca.item_shape";

/// The Arrow schema of a shard whose datapoints have shape `item_shape`.
pub fn shard_schema(item_shape: &[usize]) -> Schema {
    let width: usize = item_shape.iter().product();
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let field = Field::new(COLUMN, DataType::FixedSizeList(item, width as i32), false);
    let meta = HashMap::from([
        (META_FORMAT.to_string(), "1".to_string()),
        (META_DTYPE.to_string(), "float32".to_string()),
        (
            META_ITEM_SHAPE.to_string(),
            serde_json::to_string(item_shape).expect("shape serialises"),
        ),
    ]);
    Schema::new(vec![field]).with_metadata(meta)
}

/// Encodes `values` (`rows × width`, row-major) as one Arrow IPC file. Deterministic: the same
/// values and shape give the same bytes, which makes ingest idempotent and resumable.
pub fn encode_shard(item_shape: &[usize], values: &[f32]) -> Vec<u8> {
    let schema = Arc::new(shard_schema(item_shape));
    let width: usize = item_shape.iter().product();
    let DataType::FixedSizeList(item, _) = schema.field(0).data_type().clone() else {
        unreachable!()
    };
    let child = Float32Array::new(ScalarBuffer::from(values.to_vec()), None);
    let list = FixedSizeListArray::new(item, width as i32, Arc::new(child), None);
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(list)]).expect("schema matches");
    let mut out = Vec::with_capacity(values.len() * 4 + 1024);
    let mut w =
        arrow_ipc::writer::FileWriter::try_new(&mut out, &schema).expect("writing to memory");
    w.write(&batch).expect("writing to memory");
    w.finish().expect("writing to memory");
    drop(w);
    out
}

/// A run of consecutive datapoints of one representation: `rows × row_len` f32 values,
/// row-major, shared with the fetched bytes (no copy).
#[derive(Debug, Clone)]
pub struct RowBlock {
    /// Canonical id of the representation.
    pub representation: Arc<str>,
    /// Index of the shard it came from.
    pub shard: usize,
    /// Index of the first datapoint in the representation.
    pub first_row: usize,
    pub rows: usize,
    pub row_len: usize,
    values: ScalarBuffer<f32>,
}

impl RowBlock {
    /// The values, row-major: row `i` is `values()[i * row_len .. (i + 1) * row_len]`.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// A sub-range of rows (relative to this block), without copying.
    pub fn slice_rows(&self, start: usize, len: usize) -> RowBlock {
        assert!(start + len <= self.rows, "slice out of range");
        RowBlock {
            representation: self.representation.clone(),
            shard: self.shard,
            first_row: self.first_row + start,
            rows: len,
            row_len: self.row_len,
            values: self.values.slice(start * self.row_len, len * self.row_len),
        }
    }
}

/// What the decoder needs to know and to name in errors.
pub(crate) struct ShardContext {
    pub representation: Arc<str>,
    pub shard: usize,
    pub path: String,
    pub first_row: usize,
    pub expected_rows: usize,
    pub item_shape: Vec<usize>,
    pub check_finite: bool,
}

/// Decodes a whole shard file held in `bytes` into row blocks (one per record batch).
/// Index of the first NaN or ±Inf. Branch-free folds over fixed chunks vectorise (an early-exit
/// scan over every value does not), and every value a sweep reads passes through here.
fn first_non_finite(values: &[f32]) -> Option<usize> {
    const CHUNK: usize = 256;
    for (k, chunk) in values.chunks(CHUNK).enumerate() {
        if !chunk.iter().fold(true, |ok, v| ok & v.is_finite()) {
            return chunk
                .iter()
                .position(|v| !v.is_finite())
                .map(|i| k * CHUNK + i);
        }
    }
    None
}

pub(crate) fn decode_shard(
    bytes: bytes::Bytes,
    ctx: &ShardContext,
) -> Result<Vec<RowBlock>, crate::StorageError> {
    // arrow validates what it decodes, but a hostile or damaged file must never take the
    // process down: any panic in the decoder becomes a corrupt-shard error.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_inner(bytes, ctx))) {
        Ok(r) => r,
        Err(_) => Err(corrupt(ctx, "the Arrow decoder rejected the file".into())),
    }
}

fn corrupt(ctx: &ShardContext, reason: String) -> crate::StorageError {
    crate::StorageError::ShardCorrupt {
        representation: ctx.representation.to_string(),
        shard: ctx.shard,
        path: ctx.path.to_string(),
        reason,
    }
}

fn schema_err(ctx: &ShardContext, reason: String) -> crate::StorageError {
    crate::StorageError::ShardSchema {
        representation: ctx.representation.to_string(),
        shard: ctx.shard,
        path: ctx.path.to_string(),
        reason,
    }
}

fn decode_inner(
    bytes: bytes::Bytes,
    ctx: &ShardContext,
) -> Result<Vec<RowBlock>, crate::StorageError> {
    use arrow_ipc::reader::{FileDecoder, read_footer_length};
    const MAGIC: &[u8] = b"ARROW1";
    let len = bytes.len();
    if len < 8 + 10 || &bytes[..6] != MAGIC || &bytes[len - 6..] != MAGIC {
        return Err(corrupt(
            ctx,
            format!(
                "{len} bytes without the ARROW1 magic at both ends (truncated, or not an IPC file; an IPC *stream* is not accepted)"
            ),
        ));
    }
    // One Buffer over the fetched bytes: every array below is a slice of it.
    let buffer = Buffer::from(bytes);
    let trailer_start = len - 10;
    let footer_len = read_footer_length(buffer[trailer_start..].try_into().expect("10 bytes"))
        .map_err(|e| corrupt(ctx, e.to_string()))?;
    if footer_len > trailer_start {
        return Err(corrupt(
            ctx,
            format!("footer length {footer_len} exceeds the file"),
        ));
    }
    let footer = arrow_ipc::root_as_footer(&buffer[trailer_start - footer_len..trailer_start])
        .map_err(|e| corrupt(ctx, format!("bad footer: {e}")))?;
    let fb_schema = footer
        .schema()
        .ok_or_else(|| corrupt(ctx, "footer has no schema".into()))?;
    let schema = arrow_ipc::convert::try_fb_to_schema(fb_schema)
        .map_err(|e| corrupt(ctx, format!("bad schema: {e}")))?;
    let width = check_schema(&schema, ctx)?;

    let schema = Arc::new(schema);
    let decoder = FileDecoder::new(schema, footer.version());
    if footer.dictionaries().is_some_and(|d| !d.is_empty()) {
        return Err(schema_err(
            ctx,
            "dictionary-encoded data is not supported".into(),
        ));
    }
    let batches = footer
        .recordBatches()
        .ok_or_else(|| corrupt(ctx, "footer lists no record batches".into()))?;
    let mut blocks = Vec::with_capacity(batches.len());
    let mut row = 0usize;
    for (i, block) in batches.iter().enumerate() {
        let offset = usize::try_from(block.offset())
            .map_err(|_| corrupt(ctx, "negative block offset".into()))?;
        let block_len = usize::try_from(block.bodyLength())
            .ok()
            .zip(usize::try_from(block.metaDataLength()).ok())
            .and_then(|(b, m)| b.checked_add(m))
            .ok_or_else(|| corrupt(ctx, "bad block length".into()))?;
        if offset
            .checked_add(block_len)
            .is_none_or(|end| end > trailer_start)
        {
            return Err(corrupt(
                ctx,
                format!("record batch {i} lies outside the file (truncated?)"),
            ));
        }
        let data = buffer.slice_with_length(offset, block_len);
        let batch = decoder
            .read_record_batch(block, &data)
            .map_err(|e| corrupt(ctx, format!("record batch {i}: {e}")))?
            .ok_or_else(|| corrupt(ctx, format!("record batch {i} is empty")))?;
        let list = batch
            .column(0)
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .ok_or_else(|| schema_err(ctx, "column is not a FixedSizeList".into()))?;
        if let Some(nulls) = list.nulls().filter(|n| n.null_count() > 0) {
            let first = (0..list.len()).find(|&j| nulls.is_null(j)).unwrap_or(0);
            return Err(crate::StorageError::NullValue {
                representation: ctx.representation.to_string(),
                shard: ctx.shard,
                row: ctx.first_row + row + first,
            });
        }
        let child = list
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| schema_err(ctx, "list items are not Float32".into()))?;
        // A sliced FixedSizeList starts `offset()` rows into its child.
        let start = list.offset() * width;
        let n = list.len();
        if let Some(nulls) = child.nulls().filter(|n| n.null_count() > 0)
            && let Some(j) = (start..start + n * width).find(|&j| nulls.is_null(j))
        {
            return Err(crate::StorageError::NullValue {
                representation: ctx.representation.to_string(),
                shard: ctx.shard,
                row: ctx.first_row + row + (j - start) / width,
            });
        }
        let values = child.values().slice(start, n * width);
        if ctx.check_finite
            && let Some(pos) = first_non_finite(&values)
        {
            return Err(crate::StorageError::NonFinite {
                representation: ctx.representation.to_string(),
                shard: Some(ctx.shard),
                row: ctx.first_row + row + pos / width,
                col: pos % width,
                value: values[pos] as f64,
            });
        }
        if n > 0 {
            blocks.push(RowBlock {
                representation: ctx.representation.clone(),
                shard: ctx.shard,
                first_row: ctx.first_row + row,
                rows: n,
                row_len: width,
                values,
            });
        }
        row += n;
    }
    if row != ctx.expected_rows {
        return Err(crate::StorageError::ShardRows {
            representation: ctx.representation.to_string(),
            shard: ctx.shard,
            path: ctx.path.to_string(),
            expected: ctx.expected_rows,
            actual: row,
        });
    }
    Ok(blocks)
}

/// Checks the shard schema against the representation; returns the row width.
fn check_schema(schema: &Schema, ctx: &ShardContext) -> Result<usize, crate::StorageError> {
    // The item shape is the manifest's claim: a product that overflows matches no file.
    let expected_width = ctx
        .item_shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            schema_err(
                ctx,
                format!(
                    "the manifest's datapoint shape {:?} has more values than can be addressed",
                    ctx.item_shape
                ),
            )
        })?;
    if schema.fields().len() != 1 {
        return Err(schema_err(
            ctx,
            format!(
                "expected one column '{COLUMN}', found {} columns",
                schema.fields().len()
            ),
        ));
    }
    let field = schema.field(0);
    let DataType::FixedSizeList(item, width) = field.data_type() else {
        return Err(schema_err(
            ctx,
            format!(
                "column '{}' has type {}, expected FixedSizeList<Float32>",
                field.name(),
                field.data_type()
            ),
        ));
    };
    if item.data_type() != &DataType::Float32 {
        return Err(schema_err(
            ctx,
            format!(
                "list items are {}, expected Float32 (cast with `.astype(np.float32)`)",
                item.data_type()
            ),
        ));
    }
    if usize::try_from(*width).ok() != Some(expected_width) {
        return Err(schema_err(
            ctx,
            format!(
                "list width is {width} but the representation has {expected_width} values per datapoint"
            ),
        ));
    }
    if let Some(shape) = schema.metadata().get(META_ITEM_SHAPE) {
        let parsed: Result<Vec<usize>, _> = serde_json::from_str(shape);
        if parsed.as_deref().ok() != Some(ctx.item_shape.as_slice()) {
            return Err(schema_err(
                ctx,
                format!(
                    "metadata {META_ITEM_SHAPE} is {shape} but the manifest says {:?}",
                    ctx.item_shape
                ),
            ));
        }
    }
    if let Some(dtype) = schema.metadata().get(META_DTYPE)
        && dtype != "float32"
    {
        return Err(schema_err(
            ctx,
            format!("metadata {META_DTYPE} is '{dtype}', expected 'float32'"),
        ));
    }
    Ok(expected_width)
}

#[cfg(test)]
mod tests {
    use super::first_non_finite;

    #[test]
    fn the_first_non_finite_value_is_found_at_any_position() {
        let clean = vec![1.5f32; 1000];
        assert_eq!(first_non_finite(&clean), None);
        assert_eq!(first_non_finite(&[]), None);
        for (at, bad) in [
            (0, f32::NAN),
            (255, f32::INFINITY),
            (256, f32::NEG_INFINITY),
            (999, f32::NAN),
        ] {
            let mut v = clean.clone();
            v[at] = bad;
            let last = v.len() - 1;
            if at < last {
                v[last] = f32::NAN; // a later one must not win
            }
            assert_eq!(first_non_finite(&v), Some(at), "bad value at {at}");
        }
    }
}
