//! The cold tier: Parquet segment files and the manifests that list them, kept in an
//! `object_store` (the local filesystem by default).
//!
//! A partition's files live in one directory and carry the table's storage uid in
//! their names, so a table dropped and created again under the same name never mixes
//! its files with the old ones: `t{uid}.manifest.json` and `t{uid}-{segment}.parquet`.
//! Columns are written under their names at flush time with their stable column id as
//! the Parquet field id, so a reader maps them by id across renames; `_seq` is by name.
//!
//! A manifest is replaced with one `put`, which is atomic on every backend (the local
//! filesystem writes a temporary file and renames it). Segments are immutable; the
//! metadata, statistics and primary-key bloom filters of each are read once and cached.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::RwLock;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, RowFilter};
use parquet::arrow::arrow_writer::ArrowWriter;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::{PARQUET_FIELD_ID_META_KEY, arrow_reader::ArrowPredicate};
use parquet::basic::Compression;
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};

/// The column every segment carries besides the table's own: the row's `_seq`.
pub const SEQ_FIELD: &str = "_seq";
/// Rows per row group: small enough that a key lookup decodes little, large enough for
/// scans to stay fast.
const ROW_GROUP_ROWS: usize = 16 * 1024;

/// The directory of one partition and the storage uid of its table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColdDir {
    pub dir: String,
    pub uid: u64,
}

impl ColdDir {
    pub fn new(dir: impl Into<String>, uid: u64) -> Self {
        Self { dir: dir.into(), uid }
    }
    fn path(&self, file: &str) -> Result<Path> {
        Path::parse(format!("{}/{file}", self.dir)).map_err(|e| StorageError::Cold(e.to_string()))
    }
    fn manifest_file(&self) -> String {
        format!("t{}.manifest.json", self.uid)
    }
    pub fn segment_file(&self, id: u64) -> String {
        format!("t{}-{id:08}.parquet", self.uid)
    }
    /// Whether a file name is one of this table's (a segment, the manifest, or a
    /// temporary file a crashed write left behind).
    fn owns(&self, name: &str) -> bool {
        name.starts_with(&format!("t{}-", self.uid)) || name.starts_with(&self.manifest_file())
    }
}

/// Options of a cold store named by URL, by `object_store`'s key names. They may hold
/// secrets, so `Debug` shows the keys only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ColdStoreOptions(pub std::collections::BTreeMap<String, String>);

impl std::fmt::Debug for ColdStoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A statistic value of a column, in the column's physical kind.
#[derive(Debug, Clone, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnStats {
    /// The column's stable id (the Parquet field id).
    pub id: u32,
    pub min: Option<Stat>,
    pub max: Option<Stat>,
    pub nulls: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub id: u64,
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub min_seq: u64,
    pub max_seq: u64,
    /// Every row of the partition at or below this `_seq` was flushed when the segment
    /// was written: newer segments have higher ones, and among two versions of a key
    /// the one in the segment with the higher `covered_seq` wins.
    pub covered_seq: u64,
    pub schema_version: u32,
    pub columns: Vec<ColumnStats>,
    pub created_ms: u64,
    /// The segment's reader state once a key lookup loaded it.
    #[serde(skip)]
    pub handle: Derived<Arc<SegmentHandle>>,
}

impl SegmentMeta {
    pub fn stats(&self, column: u32) -> Option<&ColumnStats> {
        self.columns.iter().find(|c| c.id == column)
    }
}

impl ColumnStats {
    /// Whether a column with these statistics may hold `v` (unknown bounds allow all).
    pub fn may_hold(&self, v: &Stat) -> bool {
        match (&self.min, &self.max) {
            (Some(min), Some(max)) => min <= v && v <= max,
            _ => true,
        }
    }
}

/// The segments of one partition, newest last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub segments: Vec<SegmentMeta>,
    pub next_segment: u64,
    /// The highest `covered_seq` of any flush: every hot row at or below it is cold too.
    pub covered_seq: u64,
    /// Indexes of `segments` from the newest to the oldest, worked out on first use
    /// (a committed manifest is shared and never changes).
    #[serde(skip)]
    newest: Derived<Vec<usize>>,
    /// The key ranges of the segments, worked out on the first key lookup.
    #[serde(skip)]
    key_ranges: Derived<KeyRanges>,
}

/// A value worked out from its owner on first use. A copy starts empty, as the copy's
/// owner may then change; it takes no part in comparisons.
pub struct Derived<T>(std::sync::OnceLock<T>);

impl<T> Default for Derived<T> {
    fn default() -> Self {
        Self(std::sync::OnceLock::new())
    }
}

impl<T> Clone for Derived<T> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> std::fmt::Debug for Derived<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Derived(set)"
        } else {
            "Derived(unset)"
        })
    }
}

/// The segments' ranges of one column (the key), to find those that may hold a key
/// without visiting every segment.
struct KeyRanges {
    column: u32,
    /// Segments with both bounds, by lower bound: (min, max, newest-first rank, index).
    by_min: Vec<(Stat, Stat, usize, usize)>,
    /// The highest max among `by_min[..=i]`: no segment before a position whose value
    /// is below the key may hold it.
    max_upto: Vec<Stat>,
    /// Segments without bounds for the column, which may hold any key: (rank, index).
    unbounded: Vec<(usize, usize)>,
}

impl KeyRanges {
    fn new(m: &Manifest, column: u32) -> Self {
        let mut by_min = vec![];
        let mut unbounded = vec![];
        for (rank, &i) in m.newest_order().iter().enumerate() {
            match m.segments[i].stats(column).map(|c| (&c.min, &c.max)) {
                Some((Some(lo), Some(hi))) => by_min.push((lo.clone(), hi.clone(), rank, i)),
                _ => unbounded.push((rank, i)),
            }
        }
        by_min.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        let mut max_upto: Vec<Stat> = Vec::with_capacity(by_min.len());
        for (_, hi, _, _) in &by_min {
            let top = match max_upto.last() {
                Some(m) if m >= hi => m.clone(),
                _ => hi.clone(),
            };
            max_upto.push(top);
        }
        Self {
            column,
            by_min,
            max_upto,
            unbounded,
        }
    }
}

impl Manifest {
    pub fn new(segments: Vec<SegmentMeta>, next_segment: u64, covered_seq: u64) -> Self {
        Self {
            segments,
            next_segment,
            covered_seq,
            newest: Derived::default(),
            key_ranges: Derived::default(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
    pub fn rows(&self) -> u64 {
        self.segments.iter().map(|s| s.rows).sum()
    }
    fn newest_order(&self) -> &[usize] {
        self.newest.0.get_or_init(|| {
            let mut v: Vec<usize> = (0..self.segments.len()).collect();
            v.sort_by_key(|&i| std::cmp::Reverse((self.segments[i].covered_seq, self.segments[i].id)));
            v
        })
    }

    /// Segments from the newest to the oldest.
    pub fn newest_first(&self) -> impl Iterator<Item = &SegmentMeta> {
        self.newest_order().iter().map(|&i| &self.segments[i])
    }

    /// The segments whose statistics of `column` allow the value `key`, newest first.
    /// The ranges are sorted once per manifest, so a lookup visits only the segments
    /// around the key rather than all of them.
    pub fn holding(&self, column: u32, key: &Stat) -> Vec<&SegmentMeta> {
        let r = self.key_ranges.0.get_or_init(|| KeyRanges::new(self, column));
        if r.column != column {
            return self
                .newest_first()
                .filter(|s| s.stats(column).is_none_or(|c| c.may_hold(key)))
                .collect();
        }
        let end = r.by_min.partition_point(|(lo, ..)| lo <= key);
        let mut hits = r.unbounded.clone();
        for i in (0..end).rev() {
            if r.max_upto[i] < *key {
                break;
            }
            let (_, hi, rank, seg) = &r.by_min[i];
            if hi >= key {
                hits.push((*rank, *seg));
            }
        }
        hits.sort_unstable();
        hits.into_iter().map(|(_, i)| &self.segments[i]).collect()
    }
}

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
    id: u64,
    meta: ArrowReaderMetadata,
    /// The field id the bloom filters and `key_*` are of.
    key_column: Option<u32>,
    blooms: Vec<Option<Sbbf>>,
    key_leaf: Option<usize>,
    /// The key column's index among the Arrow columns.
    key_root: Option<usize>,
    /// The field id of each Arrow column (`None` for `_seq`).
    field_ids: Arc<[Option<u32>]>,
    seq_root: Option<usize>,
}

/// One row of a segment found by its key: the decoded row group that holds it, the
/// row's index there, its `_seq`, and the field id of each column of the batch.
pub struct SegmentRow {
    pub batch: arrow::array::RecordBatch,
    pub row: usize,
    pub seq: u64,
    pub field_ids: Arc<[Option<u32>]>,
}

static NEXT_HANDLE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub struct ColdStore {
    store: Arc<dyn ObjectStore>,
    manifests: RwLock<HashMap<ColdDir, Arc<Manifest>>>,
    handles: RwLock<HashMap<String, Arc<SegmentHandle>>>,
    ranges: Arc<RangeCache>,
    decoded: DecodedCache,
}

/// Memory for byte ranges of segments read before (key lookups read the same few).
const RANGE_CACHE_BYTES: usize = 128 << 20;
/// Memory for row groups decoded by key lookups.
const DECODED_CACHE_BYTES: usize = 64 << 20;

impl std::fmt::Debug for ColdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColdStore")
            .field("store", &self.store.to_string())
            .finish()
    }
}

fn cold_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Cold(e.to_string())
}

fn field_id(f: &arrow::datatypes::Field) -> Option<u32> {
    f.metadata().get(PARQUET_FIELD_ID_META_KEY)?.parse().ok()
}

impl ColdStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            manifests: RwLock::new(HashMap::new()),
            handles: RwLock::new(HashMap::new()),
            ranges: Arc::new(RangeCache {
                inner: parking_lot::Mutex::new(BoundedInner::default()),
                budget: RANGE_CACHE_BYTES,
            }),
            decoded: DecodedCache(BoundedCache {
                inner: parking_lot::Mutex::new(BoundedInner::default()),
                budget: DECODED_CACHE_BYTES,
            }),
        }
    }

    /// A store on the local filesystem under `root`.
    pub fn local(root: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(cold_err)?;
        let fs = LocalFileSystem::new_with_prefix(root).map_err(cold_err)?;
        Ok(Self::new(Arc::new(fs)))
    }

    /// A store named by URL: `s3://bucket` or `s3://bucket/prefix` for Amazon S3 or any
    /// S3-compatible service, configured by `options` (`object_store`'s keys, such as
    /// `aws_endpoint`, `aws_region`, `aws_access_key_id`, `aws_secret_access_key`,
    /// `aws_allow_http`) over the standard `AWS_*` environment variables. Errors name
    /// the URL or the option, never an option's value.
    pub fn at_url(url: &str, options: &ColdStoreOptions) -> Result<Self> {
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(StorageError::Cold(format!(
                "cold store URL '{url}': only s3://bucket[/prefix] is supported (or cold_dir for the filesystem)"
            )));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StorageError::Cold(format!("cold store URL '{url}' names no bucket")));
        }
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (k, v) in &options.0 {
            let key: AmazonS3ConfigKey = k
                .parse()
                .map_err(|_| StorageError::Cold(format!("unknown cold store option '{k}'")))?;
            b = b.with_config(key, v);
        }
        let s3 = b
            .build()
            .map_err(|e| StorageError::Cold(format!("cold store '{url}': {e}")))?;
        let prefix = prefix.trim_matches('/');
        Ok(Self::new(if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
        }))
    }

    /// The partition's manifest (empty when it has none), read once and then served
    /// from memory: this process is the only writer.
    pub async fn manifest(&self, dir: &ColdDir) -> Result<Arc<Manifest>> {
        if let Some(m) = self.manifests.read().get(dir) {
            return Ok(m.clone());
        }
        let path = dir.path(&dir.manifest_file())?;
        let m = match self.store.get(&path).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(cold_err)?;
                serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt(format!("manifest {path}: {e}")))?
            }
            Err(object_store::Error::NotFound { .. }) => Manifest::default(),
            Err(e) => return Err(cold_err(e)),
        };
        let m = Arc::new(m);
        Ok(self.manifests.write().entry(dir.clone()).or_insert(m).clone())
    }

    /// The manifest if it was read before, without any I/O.
    pub fn cached_manifest(&self, dir: &ColdDir) -> Option<Arc<Manifest>> {
        self.manifests.read().get(dir).cloned()
    }

    /// Writes one segment file from `batches` (all of one schema), compressed, with a
    /// bloom filter on the key column. Returns its size in bytes.
    pub async fn write_segment(
        &self,
        dir: &ColdDir,
        id: u64,
        batches: &[arrow::array::RecordBatch],
        key_column: &str,
    ) -> Result<u64> {
        let Some(first) = batches.first() else {
            return Err(StorageError::Cold("a segment needs at least one batch".into()));
        };
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_column_bloom_filter_enabled(ColumnPath::from(key_column), true)
            .set_column_bloom_filter_max_ndv(ColumnPath::from(key_column), rows.clamp(1, ROW_GROUP_ROWS) as u64)
            .build();
        let mut buf = Vec::with_capacity(rows * 16);
        {
            let mut w = ArrowWriter::try_new(&mut buf, first.schema(), Some(props)).map_err(cold_err)?;
            for b in batches {
                w.write(b).map_err(cold_err)?;
            }
            w.close().map_err(cold_err)?;
        }
        let size = buf.len() as u64;
        self.store
            .put(&dir.path(&dir.segment_file(id))?, PutPayload::from(buf))
            .await
            .map_err(cold_err)?;
        Ok(size)
    }

    /// Replaces the partition's manifest in one atomic put.
    pub async fn commit_manifest(&self, dir: &ColdDir, m: Manifest) -> Result<Arc<Manifest>> {
        let bytes = serde_json::to_vec_pretty(&m).map_err(cold_err)?;
        self.store
            .put(&dir.path(&dir.manifest_file())?, PutPayload::from(bytes))
            .await
            .map_err(cold_err)?;
        let m = Arc::new(m);
        self.manifests.write().insert(dir.clone(), m.clone());
        Ok(m)
    }

    /// The segment's cached metadata, with the bloom filters of column `key` when one
    /// is asked for (loaded on the first read that needs them).
    async fn handle(&self, dir: &ColdDir, seg: &SegmentMeta, key: Option<u32>) -> Result<Arc<SegmentHandle>> {
        if let Some(h) = seg.handle.0.get()
            && (key.is_none() || h.key_column == key)
        {
            return Ok(h.clone());
        }
        let path = dir.path(&seg.file)?;
        let cached = self.handles.read().get(path.as_ref()).cloned();
        if let Some(h) = &cached
            && (key.is_none() || (h.key_column == key && h.key_leaf.is_some()))
        {
            if key.is_some() {
                let _ = seg.handle.0.set(h.clone());
            }
            return Ok(h.clone());
        }
        let mut reader = SegmentReader {
            store: self.store.clone(),
            path: path.clone(),
            size: seg.bytes,
            cache: self.ranges.clone(),
        };
        let meta = match cached {
            Some(h) => h.meta.clone(),
            None => ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
                .await
                .map_err(cold_err)?,
        };
        let key_leaf = key.and_then(|id| leaf_of(&meta, id));
        let mut blooms = vec![];
        if let Some(leaf) = key_leaf {
            let mut b = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta.clone());
            for rg in 0..meta.metadata().num_row_groups() {
                blooms.push(b.get_row_group_column_bloom_filter(rg, leaf).await.map_err(cold_err)?);
            }
        }
        let key_root = key.and_then(|id| meta.schema().fields().iter().position(|f| field_id(f) == Some(id)));
        let field_ids: Arc<[Option<u32>]> = meta.schema().fields().iter().map(|f| field_id(f)).collect();
        let seq_root = meta.schema().index_of(SEQ_FIELD).ok();
        let h = Arc::new(SegmentHandle {
            id: NEXT_HANDLE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            meta,
            key_column: key,
            blooms,
            key_leaf,
            key_root,
            field_ids,
            seq_root,
        });
        self.handles.write().insert(path.to_string(), h.clone());
        if key.is_some() && h.key_leaf.is_some() {
            let _ = seg.handle.0.set(h.clone());
        }
        Ok(h)
    }

    /// How many row groups a segment has (the unit of parallel reads).
    pub async fn row_group_count(&self, dir: &ColdDir, seg: &SegmentMeta) -> Result<usize> {
        Ok(self.handle(dir, seg, None).await?.meta.metadata().num_row_groups())
    }

    /// The row of a segment whose key column (field id `column`) equals `probe`. The
    /// row groups whose statistics and bloom filter may hold it are decoded whole (all
    /// columns) once and kept in a bounded cache, so that repeated lookups only compare
    /// keys.
    pub async fn find_row(
        &self,
        dir: &ColdDir,
        seg: &SegmentMeta,
        column: u32,
        probe: &KeyProbe,
    ) -> Result<Option<SegmentRow>> {
        let h = self.handle(dir, seg, Some(column)).await?;
        let (Some(leaf), Some(col), Some(seq_col)) = (h.key_leaf, h.key_root, h.seq_root) else {
            return Ok(None);
        };
        for rg in 0..h.meta.metadata().num_row_groups() {
            let md = h.meta.metadata().row_group(rg);
            let bloom = h.blooms.get(rg).and_then(Option::as_ref);
            if !may_hold(md, leaf, bloom, probe) {
                continue;
            }
            let group = match self.decoded.get(&(h.id, rg)) {
                Some(b) => b,
                None => {
                    let req = ReadRequest {
                        row_groups: Some(vec![rg]),
                        ..ReadRequest::default()
                    };
                    let batches = self.read(dir, seg, &req).await?;
                    let Some(first) = batches.first() else { continue };
                    let b = arrow::compute::concat_batches(&first.schema(), &batches).map_err(cold_err)?;
                    self.decoded.put((h.id, rg), b.clone());
                    b
                }
            };
            if let Some(row) = position_of(group.column(col).as_ref(), probe)? {
                use arrow::array::AsArray;
                let seqs = group
                    .column(seq_col)
                    .as_primitive_opt::<arrow::datatypes::Int64Type>()
                    .ok_or_else(|| StorageError::Corrupt(format!("{}: _seq is not BIGINT", seg.file)))?;
                return Ok(Some(SegmentRow {
                    seq: seqs.value(row) as u64,
                    batch: group,
                    row,
                    field_ids: h.field_ids.clone(),
                }));
            }
        }
        Ok(None)
    }

    /// Reads a segment: the requested columns, and with a key filter only the row
    /// groups whose statistics and bloom filter may hold one of the keys, and of those
    /// only the matching rows.
    pub async fn read(
        &self,
        dir: &ColdDir,
        seg: &SegmentMeta,
        req: &ReadRequest,
    ) -> Result<Vec<arrow::array::RecordBatch>> {
        self.read_stream(dir, seg, req).await?.try_collect().await
    }

    /// As [`ColdStore::read`], as a stream that decodes each batch when it is polled.
    pub async fn read_stream(
        &self,
        dir: &ColdDir,
        seg: &SegmentMeta,
        req: &ReadRequest,
    ) -> Result<BoxStream<'static, Result<arrow::array::RecordBatch>>> {
        let h = self.handle(dir, seg, req.key.as_ref().map(|k| k.column)).await?;
        let path = dir.path(&seg.file)?;
        let reader = SegmentReader {
            store: self.store.clone(),
            path,
            size: seg.bytes,
            cache: self.ranges.clone(),
        };
        let mut b = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, h.meta.clone()).with_batch_size(8192);
        let schema_descr = h.meta.metadata().file_metadata().schema_descr_ptr();
        if let Some(cols) = &req.columns {
            let arrow_schema = h.meta.schema();
            let roots: Vec<usize> = arrow_schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| {
                    if f.name() == SEQ_FIELD {
                        req.seq
                    } else {
                        field_id(f).is_some_and(|id| cols.contains(&id))
                    }
                })
                .map(|(i, _)| i)
                .collect();
            b = b.with_projection(ProjectionMask::roots(&schema_descr, roots));
        }
        let all: Vec<usize> = (0..h.meta.metadata().num_row_groups()).collect();
        let wanted = req.row_groups.as_ref().unwrap_or(&all);
        if req.row_groups.is_some() {
            b = b.with_row_groups(wanted.clone());
        }
        if let Some(key) = &req.key {
            let Some(leaf) = h.key_leaf else {
                return Ok(futures::stream::empty().boxed());
            };
            let groups: Vec<usize> = wanted
                .iter()
                .copied()
                .filter(|&rg| {
                    let md = h.meta.metadata().row_group(rg);
                    let bloom = h.blooms.get(rg).and_then(Option::as_ref);
                    key.probes.iter().any(|p| may_hold(md, leaf, bloom, p))
                })
                .collect();
            if groups.is_empty() {
                return Ok(futures::stream::empty().boxed());
            }
            b = b.with_row_groups(groups);
            let values = key.values.clone();
            let predicate = ArrowPredicateFn::new(
                ProjectionMask::leaves(&schema_descr, [leaf]),
                move |batch: arrow::array::RecordBatch| {
                    let col = batch.column(0);
                    let mut mask = arrow::array::BooleanArray::from(vec![false; batch.num_rows()]);
                    for i in 0..values.len() {
                        let one = arrow::array::Scalar::new(values.slice(i, 1));
                        let eq = arrow::compute::kernels::cmp::eq(col, &one)?;
                        mask = arrow::compute::or(&mask, &eq)?;
                    }
                    Ok(mask)
                },
            );
            let predicates: Vec<Box<dyn ArrowPredicate>> = vec![Box::new(predicate)];
            b = b.with_row_filter(RowFilter::new(predicates));
        }
        let stream = b.build().map_err(cold_err)?;
        Ok(stream.map(|b| b.map_err(cold_err)).boxed())
    }

    /// Deletes the partition's files that its manifest does not list (segments of a
    /// flush that crashed, temporary files), and forgets cached handles of files gone.
    /// Returns how many were deleted.
    pub async fn delete_unlisted(&self, dir: &ColdDir) -> Result<usize> {
        let m = self.manifest(dir).await?;
        let keep: HashSet<&str> = m.segments.iter().map(|s| s.file.as_str()).collect();
        let manifest = dir.manifest_file();
        let prefix = Path::parse(&dir.dir).map_err(cold_err)?;
        let listed = self.store.list_with_delimiter(Some(&prefix)).await.map_err(cold_err)?;
        let mut n = 0;
        for obj in listed.objects {
            let Some(name) = obj.location.filename() else { continue };
            if dir.owns(name) && name != manifest && !keep.contains(name) {
                match self.store.delete(&obj.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(cold_err(e)),
                }
                self.handles.write().remove(obj.location.as_ref());
                n += 1;
            }
        }
        Ok(n)
    }

    /// Deletes every file of table `uid` under `prefix`, in all its partitions.
    pub async fn delete_table(&self, prefix: &str, uid: u64) -> Result<usize> {
        let owner = ColdDir::new(prefix, uid);
        let prefix = Path::parse(prefix).map_err(cold_err)?;
        let mut files = self.store.list(Some(&prefix));
        let mut doomed = vec![];
        while let Some(obj) = files.next().await {
            let obj = obj.map_err(cold_err)?;
            if obj.location.filename().is_some_and(|n| owner.owns(n)) {
                doomed.push(obj.location);
            }
        }
        for p in &doomed {
            match self.store.delete(p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(cold_err(e)),
            }
            self.handles.write().remove(p.as_ref());
        }
        self.manifests.write().retain(|d, _| d.uid != uid);
        Ok(doomed.len())
    }

    /// Deletes segment files no manifest lists any more (after a compaction).
    pub async fn delete_segments(&self, dir: &ColdDir, files: &[String]) -> Result<()> {
        for f in files {
            let p = dir.path(f)?;
            match self.store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(cold_err(e)),
            }
            self.handles.write().remove(p.as_ref());
        }
        Ok(())
    }

    /// The names of the subdirectories of `prefix` (the user partitions of a table).
    pub async fn subdirs(&self, prefix: &str) -> Result<Vec<String>> {
        let p = Path::parse(prefix).map_err(cold_err)?;
        let listed = self.store.list_with_delimiter(Some(&p)).await.map_err(cold_err)?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|c| c.filename().map(str::to_string))
            .collect())
    }
}

/// Values of immutable segment data (byte ranges, decoded row groups) kept up to a
/// budget and dropped oldest first. Segments never change, so nothing cached is stale.
struct BoundedCache<K, V> {
    inner: parking_lot::Mutex<BoundedInner<K, V>>,
    budget: usize,
}

struct BoundedInner<K, V> {
    map: HashMap<K, (V, usize)>,
    order: std::collections::VecDeque<K>,
    size: usize,
}

impl<K, V> Default for BoundedInner<K, V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: std::collections::VecDeque::new(),
            size: 0,
        }
    }
}

impl<K: Clone + Eq + std::hash::Hash, V: Clone> BoundedCache<K, V> {
    fn get(&self, key: &K) -> Option<V> {
        self.inner.lock().map.get(key).map(|(v, _)| v.clone())
    }

    fn put_sized(&self, key: K, v: V, size: usize) {
        if size > self.budget / 8 {
            return;
        }
        let mut c = self.inner.lock();
        if c.map.insert(key.clone(), (v, size)).is_some() {
            return;
        }
        c.size += size;
        c.order.push_back(key);
        while c.size > self.budget {
            let Some(old) = c.order.pop_front() else { break };
            if let Some((_, n)) = c.map.remove(&old) {
                c.size -= n;
            }
        }
    }
}

/// Byte ranges of segment files, by (path, start, end).
type RangeKey = (Arc<str>, u64, u64);
type RangeCache = BoundedCache<RangeKey, bytes::Bytes>;

impl RangeCache {
    fn put(&self, key: RangeKey, b: bytes::Bytes) {
        let n = b.len();
        self.put_sized(key, b, n);
    }
}

/// Row groups decoded whole for key lookups, by (segment handle id, row group).
type DecodedKey = (u64, usize);
struct DecodedCache(BoundedCache<DecodedKey, arrow::array::RecordBatch>);

impl DecodedCache {
    fn get(&self, key: &DecodedKey) -> Option<arrow::array::RecordBatch> {
        self.0.get(key)
    }
    fn put(&self, key: DecodedKey, b: arrow::array::RecordBatch) {
        let n = b.get_array_memory_size();
        self.0.put_sized(key, b, n);
    }
}

/// Ranged reads of one segment file through the object store and the range cache.
struct SegmentReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    cache: Arc<RangeCache>,
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
fn leaf_of(meta: &ArrowReaderMetadata, id: u32) -> Option<usize> {
    let descr = meta.metadata().file_metadata().schema_descr();
    (0..descr.num_columns()).find(|&i| {
        let info = descr.column(i).self_type().get_basic_info().clone();
        info.has_id() && info.id() == id as i32
    })
}

/// Whether row group `md` may hold `probe` in leaf column `leaf`, by its statistics and
/// its bloom filter.
/// The index of the first value of a key column equal to `probe` (floats compare by
/// total order, as the hot tier's key encoding does).
fn position_of(a: &dyn arrow::array::Array, probe: &KeyProbe) -> Result<Option<usize>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{self as dt, DataType, TimeUnit};
    fn find<T: dt::ArrowPrimitiveType>(a: &dyn arrow::array::Array, eq: impl Fn(&T::Native) -> bool) -> Option<usize> {
        let p = a.as_primitive::<T>();
        p.values().iter().enumerate().position(|(i, v)| eq(v) && p.is_valid(i))
    }
    Ok(match (a.data_type(), probe) {
        (DataType::Int64, KeyProbe::I64(v)) => find::<dt::Int64Type>(a, |x| x == v),
        (DataType::Timestamp(TimeUnit::Microsecond, _), KeyProbe::I64(v)) => {
            find::<dt::TimestampMicrosecondType>(a, |x| x == v)
        }
        (DataType::Int32, KeyProbe::I32(v)) => find::<dt::Int32Type>(a, |x| x == v),
        (DataType::Date32, KeyProbe::I32(v)) => find::<dt::Date32Type>(a, |x| x == v),
        (DataType::Float64, KeyProbe::F64(v)) => find::<dt::Float64Type>(a, |x| x.total_cmp(v).is_eq()),
        (DataType::Utf8, KeyProbe::Bytes(v)) => a
            .as_string::<i32>()
            .iter()
            .position(|x| x.map(str::as_bytes) == Some(v)),
        (DataType::Binary, KeyProbe::Bytes(v)) => a.as_binary::<i32>().iter().position(|x| x == Some(v.as_slice())),
        (DataType::Boolean, KeyProbe::Bool(v)) => a.as_boolean().iter().position(|x| x == Some(*v)),
        (t, _) => {
            return Err(StorageError::Corrupt(format!(
                "a key column of type {t} cannot be probed"
            )));
        }
    })
}

fn may_hold(md: &RowGroupMetaData, leaf: usize, bloom: Option<&Sbbf>, probe: &KeyProbe) -> bool {
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
    field_id(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_url_is_checked_and_its_secrets_stay_out_of_errors() {
        let opts = |k: &str, v: &str| ColdStoreOptions([(k.to_string(), v.to_string())].into_iter().collect());
        let e = ColdStore::at_url("gs://bucket", &ColdStoreOptions::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("only s3://"), "{e}");
        let e = ColdStore::at_url("s3://", &ColdStoreOptions::default()).err().unwrap();
        assert!(e.to_string().contains("names no bucket"), "{e}");
        let e = ColdStore::at_url("s3://b", &opts("aws_no_such_option", "s3cr3t-value"))
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("aws_no_such_option") && !e.to_string().contains("s3cr3t"),
            "{e}"
        );
        let mut o = opts("aws_secret_access_key", "s3cr3t-value");
        o.0.insert("aws_access_key_id".into(), "key-id".into());
        o.0.insert("aws_region".into(), "us-east-1".into());
        assert!(!format!("{o:?}").contains("s3cr3t"));
        if let Err(e) = ColdStore::at_url("s3://b/some/prefix", &o) {
            panic!("{e}");
        }
    }

    fn seg(id: u64, covered: u64, key: Option<(i64, i64)>) -> SegmentMeta {
        SegmentMeta {
            id,
            file: format!("s{id}"),
            rows: 1,
            bytes: 1,
            min_seq: 1,
            max_seq: covered,
            covered_seq: covered,
            schema_version: 1,
            columns: vec![ColumnStats {
                id: 7,
                min: key.map(|k| Stat::Int(k.0)),
                max: key.map(|k| Stat::Int(k.1)),
                nulls: 0,
            }],
            created_ms: 0,
            handle: Derived::default(),
        }
    }

    /// The sorted key ranges give what a pass over every segment's statistics gives,
    /// in the same (newest first) order, for overlapping, nested, disjoint and
    /// unbounded segments.
    #[test]
    fn segments_holding_a_key_are_those_whose_range_allows_it_newest_first() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for round in 0..200 {
            let n = 1 + next(40);
            let segs: Vec<SegmentMeta> = (0..n)
                .map(|i| {
                    let key = (next(10) != 0).then(|| {
                        let lo = next(1000) as i64;
                        (lo, lo + next(if round % 2 == 0 { 30 } else { 400 }) as i64)
                    });
                    seg(i, next(5) * 100 + i, key)
                })
                .collect();
            let m = Manifest::new(segs, n, 0);
            for _ in 0..50 {
                let k = Stat::Int(next(1100) as i64 - 20);
                let want: Vec<u64> = m
                    .newest_first()
                    .filter(|s| s.stats(7).is_none_or(|c| c.may_hold(&k)))
                    .map(|s| s.id)
                    .collect();
                let got: Vec<u64> = m.holding(7, &k).iter().map(|s| s.id).collect();
                assert_eq!(got, want, "round {round}, key {k:?}");
                // another column falls back to the full pass
                assert_eq!(m.holding(8, &k).len(), m.segments.len());
            }
        }
    }

    /// A key is found in a column of each type a primary key can have, floats by total
    /// order (so -0.0 is not 0.0), and a probe of the wrong kind is an error.
    #[test]
    fn keys_are_found_in_columns_of_every_key_type() {
        use arrow::array::{
            ArrayRef, BinaryArray, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, StringArray,
            TimestampMicrosecondArray,
        };
        let cases: Vec<(ArrayRef, KeyProbe, Option<usize>)> = vec![
            (Arc::new(Int64Array::from(vec![5, 9, 2])), KeyProbe::I64(2), Some(2)),
            (Arc::new(Int64Array::from(vec![5, 9, 2])), KeyProbe::I64(3), None),
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
