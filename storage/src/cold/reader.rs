//! Reading segments: what to read ([`ReadRequest`], [`KeyFilter`]), each segment's
//! cached reader state ([`SegmentHandle`]: metadata and key bloom filters), ranged reads
//! through the object store and the range cache, and the key probes of row groups.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader, RowGroupMetaData};
use parquet::file::statistics::Statistics;

use super::cache::{RangeCache, RangeKey};
use crate::error::{Result, StorageError};

/// A key value in its Parquet physical form, for bloom filters and statistics.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyProbe {
    Bool(bool),
    I32(i32),
    I64(i64),
    F64(f64),
    Bytes(Vec<u8>),
}

#[derive(Clone)]
/// Keep only rows whose key column equals one of `values` (an Arrow array of the key
/// column's type); `probes` are the same values in physical form.
pub struct KeyFilter {
    pub column: u32,
    pub values: arrow::array::ArrayRef,
    pub probes: Vec<KeyProbe>,
}

/// What to read of a segment.
#[derive(Default, Clone)]
pub struct ReadRequest {
    /// Field ids of the columns to read; `None` for all, `_seq` included.
    pub columns: Option<Vec<u32>>,
    /// With `columns`, whether `_seq` comes too.
    pub seq: bool,
    pub key: Option<KeyFilter>,
    /// Which row groups to read; `None` for all.
    pub row_groups: Option<Vec<usize>>,
}

/// A segment's metadata and its key column's bloom filters, per row group.
pub struct SegmentHandle {
    /// Unique in this process: names the segment in the decoded row-group cache.
    pub(crate) id: u64,
    pub(crate) meta: ArrowReaderMetadata,
    /// The field id the bloom filters and `key_*` are of.
    pub(crate) key_column: Option<u32>,
    pub(crate) blooms: Vec<Option<Sbbf>>,
    pub(crate) key_leaf: Option<usize>,
    /// The key column's index among the Arrow columns.
    pub(crate) key_root: Option<usize>,
    /// The field id of each Arrow column (`None` for `_seq`).
    pub(crate) field_ids: Arc<[Option<u32>]>,
    pub(crate) seq_root: Option<usize>,
}

/// One row of a segment found by its key: the decoded row group that holds it, the
/// row's index there, its `_seq`, and the field id of each column of the batch.
pub struct SegmentRow {
    pub batch: arrow::array::RecordBatch,
    pub row: usize,
    pub seq: u64,
    pub field_ids: Arc<[Option<u32>]>,
}

/// Ranged reads of one segment file through the object store and the range cache.
pub(crate) struct SegmentReader {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) path: Path,
    pub(crate) size: u64,
    pub(crate) cache: Arc<RangeCache>,
}

impl SegmentReader {
    fn key(&self, r: &std::ops::Range<u64>) -> RangeKey {
        (Arc::from(self.path.as_ref()), r.start, r.end)
    }
}

fn parquet_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for SegmentReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        async move {
            let key = self.key(&range);
            if let Some(b) = self.cache.get(&key) {
                return Ok(b);
            }
            let b = self.store.get_range(&self.path, range).await.map_err(parquet_err)?;
            self.cache.put(key, b.clone());
            Ok(b)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        async move {
            let keys: Vec<_> = ranges.iter().map(|r| self.key(r)).collect();
            let mut out: Vec<Option<bytes::Bytes>> = keys.iter().map(|k| self.cache.get(k)).collect();
            let missing: Vec<std::ops::Range<u64>> = ranges
                .iter()
                .zip(&out)
                .filter(|(_, b)| b.is_none())
                .map(|(r, _)| r.clone())
                .collect();
            if !missing.is_empty() {
                let mut fetched = self
                    .store
                    .get_ranges(&self.path, &missing)
                    .await
                    .map_err(parquet_err)?
                    .into_iter();
                for (slot, key) in out.iter_mut().zip(keys) {
                    if slot.is_none() {
                        let b = fetched.next().unwrap_or_default();
                        self.cache.put(key, b.clone());
                        *slot = Some(b);
                    }
                }
            }
            Ok(out.into_iter().map(Option::unwrap_or_default).collect())
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let md = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(&mut *self, size)
                .await?;
            Ok(Arc::new(md))
        }
        .boxed()
    }
}

/// The leaf column of the field with id `id`.
pub(crate) fn leaf_of(meta: &ArrowReaderMetadata, id: u32) -> Option<usize> {
    let descr = meta.metadata().file_metadata().schema_descr();
    (0..descr.num_columns()).find(|&i| {
        let info = descr.column(i).self_type().get_basic_info().clone();
        info.has_id() && info.id() == id as i32
    })
}

/// The index of the value of a key column equal to `probe` (floats compare by total
/// order, as the hot tier's key encoding does). A segment holds each key once, sorted
/// (a flush writes rows in key order, a compaction sorts them), so this is a binary
/// search.
pub(crate) fn position_of(a: &dyn arrow::array::Array, probe: &KeyProbe) -> Result<Option<usize>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{self as dt, DataType, TimeUnit};
    use std::cmp::Ordering;
    /// The first index in `0..n` whose value is not below the probe, if it equals it.
    fn search(n: usize, valid: impl Fn(usize) -> bool, cmp: impl Fn(usize) -> Ordering) -> Option<usize> {
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if cmp(mid).is_lt() {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo < n && valid(lo) && cmp(lo).is_eq()).then_some(lo)
    }
    fn find<T: dt::ArrowPrimitiveType>(
        a: &dyn arrow::array::Array,
        cmp: impl Fn(&T::Native) -> Ordering,
    ) -> Option<usize> {
        let p = a.as_primitive::<T>();
        let v = p.values();
        search(v.len(), |i| p.is_valid(i), |i| cmp(&v[i]))
    }
    Ok(match (a.data_type(), probe) {
        (DataType::Int64, KeyProbe::I64(v)) => find::<dt::Int64Type>(a, |x| x.cmp(v)),
        (DataType::Timestamp(TimeUnit::Microsecond, _), KeyProbe::I64(v)) => {
            find::<dt::TimestampMicrosecondType>(a, |x| x.cmp(v))
        }
        (DataType::Int32, KeyProbe::I32(v)) => find::<dt::Int32Type>(a, |x| x.cmp(v)),
        (DataType::Date32, KeyProbe::I32(v)) => find::<dt::Date32Type>(a, |x| x.cmp(v)),
        (DataType::Float64, KeyProbe::F64(v)) => find::<dt::Float64Type>(a, |x| x.total_cmp(v)),
        (DataType::Utf8, KeyProbe::Bytes(v)) => {
            let s = a.as_string::<i32>();
            search(s.len(), |i| s.is_valid(i), |i| s.value(i).as_bytes().cmp(v))
        }
        (DataType::Binary, KeyProbe::Bytes(v)) => {
            let b = a.as_binary::<i32>();
            search(b.len(), |i| b.is_valid(i), |i| b.value(i).cmp(v.as_slice()))
        }
        (DataType::Boolean, KeyProbe::Bool(v)) => a.as_boolean().iter().position(|x| x == Some(*v)),
        (t, _) => {
            return Err(StorageError::Corrupt(format!(
                "a key column of type {t} cannot be probed"
            )));
        }
    })
}

/// Whether row group `md` may hold `probe` in leaf column `leaf`, by its statistics and
/// its bloom filter.
pub(crate) fn may_hold(md: &RowGroupMetaData, leaf: usize, bloom: Option<&Sbbf>, probe: &KeyProbe) -> bool {
    let in_range = match (md.column(leaf).statistics(), probe) {
        (Some(Statistics::Int64(s)), KeyProbe::I64(v)) => {
            s.min_opt().is_none_or(|m| m <= v) && s.max_opt().is_none_or(|m| m >= v)
        }
        (Some(Statistics::Int32(s)), KeyProbe::I32(v)) => {
            s.min_opt().is_none_or(|m| m <= v) && s.max_opt().is_none_or(|m| m >= v)
        }
        (Some(Statistics::Double(s)), KeyProbe::F64(v)) => {
            s.min_opt().is_none_or(|m| m <= v) && s.max_opt().is_none_or(|m| m >= v)
        }
        (Some(Statistics::ByteArray(s)), KeyProbe::Bytes(v)) => {
            s.min_opt().is_none_or(|m| m.data() <= v.as_slice()) && s.max_opt().is_none_or(|m| m.data() >= v.as_slice())
        }
        _ => true,
    };
    in_range
        && bloom.is_none_or(|b| match probe {
            KeyProbe::Bool(v) => b.check(v),
            KeyProbe::I32(v) => b.check(v),
            KeyProbe::I64(v) => b.check(v),
            KeyProbe::F64(v) => b.check(v),
            KeyProbe::Bytes(v) => b.check(v.as_slice()),
        })
}

/// The field id a segment column carries.
pub fn with_field_id(field: arrow::datatypes::Field, id: u32) -> arrow::datatypes::Field {
    let mut md = field.metadata().clone();
    md.insert(PARQUET_FIELD_ID_META_KEY.to_string(), id.to_string());
    field.with_metadata(md)
}

/// The field id of a segment column read back.
pub fn field_id_of(field: &arrow::datatypes::Field) -> Option<u32> {
    field.metadata().get(PARQUET_FIELD_ID_META_KEY)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key is found in a (sorted) column of each type a primary key can have, floats
    /// by total order (so -0.0 is not 0.0), and a probe of the wrong kind is an error.
    #[test]
    fn keys_are_found_in_columns_of_every_key_type() {
        use arrow::array::{
            ArrayRef, BinaryArray, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, StringArray,
            TimestampMicrosecondArray,
        };
        let cases: Vec<(ArrayRef, KeyProbe, Option<usize>)> = vec![
            (Arc::new(Int64Array::from(vec![2, 5, 9])), KeyProbe::I64(9), Some(2)),
            (Arc::new(Int64Array::from(vec![2, 5, 9])), KeyProbe::I64(3), None),
            (Arc::new(Int64Array::from(vec![2, 5, 9])), KeyProbe::I64(10), None),
            (
                Arc::new(Int64Array::from(
                    (0..16_384).map(|i| i * 3 - 9000).collect::<Vec<i64>>(),
                )),
                KeyProbe::I64(3 * 12_345 - 9000),
                Some(12_345),
            ),
            (
                Arc::new(TimestampMicrosecondArray::from(vec![10, 20]).with_timezone("UTC")),
                KeyProbe::I64(20),
                Some(1),
            ),
            (Arc::new(Int32Array::from(vec![1, 2])), KeyProbe::I32(1), Some(0)),
            (Arc::new(Date32Array::from(vec![100, 200])), KeyProbe::I32(200), Some(1)),
            (
                Arc::new(Float64Array::from(vec![-0.0, 0.0])),
                KeyProbe::F64(0.0),
                Some(1),
            ),
            (
                Arc::new(StringArray::from(vec!["a", "bb"])),
                KeyProbe::Bytes(b"bb".to_vec()),
                Some(1),
            ),
            (
                Arc::new(StringArray::from(vec!["a", "bb"])),
                KeyProbe::Bytes(b"b".to_vec()),
                None,
            ),
            (
                Arc::new(BinaryArray::from(vec![&b"\x00"[..], b"\xff"])),
                KeyProbe::Bytes(vec![0xff]),
                Some(1),
            ),
            (
                Arc::new(BooleanArray::from(vec![false, true])),
                KeyProbe::Bool(true),
                Some(1),
            ),
        ];
        for (a, probe, want) in cases {
            assert_eq!(position_of(a.as_ref(), &probe).unwrap(), want, "{probe:?} in {a:?}");
        }
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        assert!(position_of(ints.as_ref(), &KeyProbe::Bytes(b"1".to_vec())).is_err());
    }
}
