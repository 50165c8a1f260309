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
use futures::{FutureExt, StreamExt, TryFutureExt};
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
}

impl SegmentMeta {
    pub fn stats(&self, column: u32) -> Option<&ColumnStats> {
        self.columns.iter().find(|c| c.id == column)
    }
}

/// The segments of one partition, newest last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub segments: Vec<SegmentMeta>,
    pub next_segment: u64,
    /// The highest `covered_seq` of any flush: every hot row at or below it is cold too.
    pub covered_seq: u64,
}

impl Manifest {
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
    pub fn rows(&self) -> u64 {
        self.segments.iter().map(|s| s.rows).sum()
    }
    /// Segments from the newest to the oldest.
    pub fn newest_first(&self) -> impl Iterator<Item = &SegmentMeta> {
        let mut v: Vec<&SegmentMeta> = self.segments.iter().collect();
        v.sort_by_key(|s| std::cmp::Reverse((s.covered_seq, s.id)));
        v.into_iter()
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
    /// Field ids of the columns to read (`_seq` always comes too); `None` for all.
    pub columns: Option<Vec<u32>>,
    pub key: Option<KeyFilter>,
}

/// A segment's metadata and its key column's bloom filters, per row group.
struct SegmentHandle {
    meta: ArrowReaderMetadata,
    blooms: Vec<Option<Sbbf>>,
    key_leaf: Option<usize>,
}

pub struct ColdStore {
    store: Arc<dyn ObjectStore>,
    manifests: RwLock<HashMap<ColdDir, Arc<Manifest>>>,
    handles: RwLock<HashMap<String, Arc<SegmentHandle>>>,
}

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
        }
    }

    /// A store on the local filesystem under `root`.
    pub fn local(root: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(cold_err)?;
        let fs = LocalFileSystem::new_with_prefix(root).map_err(cold_err)?;
        Ok(Self::new(Arc::new(fs)))
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
        let path = dir.path(&seg.file)?;
        let cached = self.handles.read().get(path.as_ref()).cloned();
        if let Some(h) = &cached
            && (key.is_none() || h.key_leaf.is_some())
        {
            return Ok(h.clone());
        }
        let mut reader = SegmentReader {
            store: self.store.clone(),
            path: path.clone(),
            size: seg.bytes,
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
        let h = Arc::new(SegmentHandle { meta, blooms, key_leaf });
        self.handles.write().insert(path.to_string(), h.clone());
        Ok(h)
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
        let h = self.handle(dir, seg, req.key.as_ref().map(|k| k.column)).await?;
        let path = dir.path(&seg.file)?;
        let reader = SegmentReader {
            store: self.store.clone(),
            path,
            size: seg.bytes,
        };
        let mut b = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, h.meta.clone()).with_batch_size(8192);
        let schema_descr = h.meta.metadata().file_metadata().schema_descr_ptr();
        if let Some(cols) = &req.columns {
            let arrow_schema = h.meta.schema();
            let roots: Vec<usize> = arrow_schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name() == SEQ_FIELD || field_id(f).is_some_and(|id| cols.contains(&id)))
                .map(|(i, _)| i)
                .collect();
            b = b.with_projection(ProjectionMask::roots(&schema_descr, roots));
        }
        if let Some(key) = &req.key {
            let Some(leaf) = h.key_leaf else {
                return Ok(vec![]);
            };
            let groups: Vec<usize> = (0..h.meta.metadata().num_row_groups())
                .filter(|&rg| {
                    let md = h.meta.metadata().row_group(rg);
                    let bloom = h.blooms.get(rg).and_then(Option::as_ref);
                    key.probes.iter().any(|p| may_hold(md, leaf, bloom, p))
                })
                .collect();
            if groups.is_empty() {
                return Ok(vec![]);
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
        let mut stream = b.build().map_err(cold_err)?;
        let mut out = vec![];
        while let Some(batch) = stream.next().await {
            out.push(batch.map_err(cold_err)?);
        }
        Ok(out)
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

/// Ranged reads of one segment file through the object store.
struct SegmentReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

fn parquet_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for SegmentReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        self.store.get_range(&self.path, range).map_err(parquet_err).boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(parquet_err) }.boxed()
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
