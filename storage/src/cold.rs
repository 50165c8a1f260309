//! The cold tier: Parquet segment files and the manifests that list them, kept in an
//! `object_store` (the local filesystem by default).
//!
//! A partition's files live in one directory and carry the table's storage uid in
//! their names, so a table dropped and created again under the same name never mixes
//! its files with the old ones: `t{uid}.manifest.json` and `t{uid}-{segment}.parquet`.
//! Columns are written under their names at flush time with their stable column id as
//! the Parquet field id, so a reader maps them by id across renames; `_seq` is by name.
//!
//! A manifest is replaced with one `put`, which is atomic on every backend. On the
//! local filesystem the writes go through `files`, which syncs each file and its
//! directory before returning, so a write is durable once it returns there as on an
//! object store. Segments are immutable; the metadata, statistics and primary-key
//! bloom filters of each are read once and cached.
//!
//! This module is the object-store side (paths, writes, reads, deletes); `manifest`
//! holds what a manifest lists, `reader` the Parquet reading, `cache` the caches,
//! `files` the durable local writes.

mod cache;
pub mod files;
pub mod manifest;
pub mod reader;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::RwLock;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ArrowPredicate;
use parquet::arrow::arrow_reader::{ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, RowFilter};
use parquet::arrow::arrow_writer::ArrowWriter;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
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
        Path::parse(format!("{}/{file}", self.dir)).map_err(StorageError::cold)
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

use self::cache::{BoundedCache, DecodedCache, RangeCache};
use self::files::{FileOps, LocalFiles, SystemFiles};
use self::manifest::{Manifest, SegmentMeta};
use self::reader::{
    KeyProbe, ReadRequest, SegmentHandle, SegmentReader, SegmentRow, field_id_of, leaf_of, may_hold, position_of,
};

/// How a segment row's whole key compares with the key sought (see
/// [`ColdStore::find_row`]).
pub type KeyOrder<'a> = dyn Fn(&arrow::array::RecordBatch, usize) -> Result<std::cmp::Ordering> + Send + Sync + 'a;

static NEXT_HANDLE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub struct ColdStore {
    store: Arc<dyn ObjectStore>,
    /// The durable writer of a store on the local filesystem (`store` reads there).
    local: Option<LocalFiles>,
    manifests: RwLock<HashMap<ColdDir, Arc<Manifest>>>,
    handles: RwLock<HashMap<String, Arc<SegmentHandle>>>,
    ranges: Arc<RangeCache>,
    decoded: DecodedCache,
}

/// Memory for byte ranges of segments read before (key lookups read the same few)
/// and for row groups decoded by key lookups, by default (see
/// [`ColdStore::with_cache_bytes`]).
const CACHE_BYTES: usize = 192 << 20;

impl std::fmt::Debug for ColdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColdStore")
            .field("store", &self.store.to_string())
            .finish()
    }
}

/// Caches of `bytes` in all: two thirds for byte ranges of segments, one third for
/// decoded row groups.
fn caches(bytes: usize) -> (Arc<RangeCache>, DecodedCache) {
    (
        Arc::new(RangeCache::new(bytes / 3 * 2)),
        DecodedCache(BoundedCache::new(bytes / 3)),
    )
}

impl ColdStore {
    /// A store on an object store, whose puts are durable once they return.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        let (ranges, decoded) = caches(CACHE_BYTES);
        Self {
            store,
            local: None,
            manifests: RwLock::new(HashMap::new()),
            handles: RwLock::new(HashMap::new()),
            ranges,
            decoded,
        }
    }

    /// The same store with `bytes` for its caches.
    pub fn with_cache_bytes(self, bytes: usize) -> Self {
        let (ranges, decoded) = caches(bytes);
        Self {
            ranges,
            decoded,
            ..self
        }
    }

    /// A store on the local filesystem under `root`.
    pub fn local(root: &std::path::Path) -> Result<Self> {
        Self::local_with(root, Arc::new(SystemFiles))
    }

    /// A store on the local filesystem under `root`, written through `ops`.
    pub fn local_with(root: &std::path::Path, ops: Arc<dyn FileOps>) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(StorageError::cold)?;
        let root = root.canonicalize().map_err(StorageError::cold)?;
        let fs = LocalFileSystem::new_with_prefix(&root).map_err(StorageError::cold)?;
        Ok(Self {
            local: Some(LocalFiles::new(root, ops)),
            ..Self::new(Arc::new(fs))
        })
    }

    /// Puts `bytes` at `path`: durably, in place of what was there.
    async fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<()> {
        match &self.local {
            Some(local) => {
                let (local, rel) = (local.clone(), path.to_string());
                tokio::task::spawn_blocking(move || local.put_durably(&rel, &bytes))
                    .await
                    .map_err(StorageError::cold)?
                    .map_err(StorageError::cold)
            }
            None => self
                .store
                .put(path, PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(StorageError::cold),
        }
    }

    /// Deletes the file at `path`, if there is one.
    async fn delete(&self, path: &Path) -> Result<()> {
        let gone = match &self.local {
            Some(local) => {
                let (local, rel) = (local.clone(), path.to_string());
                tokio::task::spawn_blocking(move || local.remove(&rel))
                    .await
                    .map_err(StorageError::cold)?
                    .map_err(StorageError::cold)
            }
            None => match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(StorageError::cold(e)),
            },
        };
        self.handles.write().remove(path.as_ref());
        gone
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
                let bytes = got.bytes().await.map_err(StorageError::cold)?;
                serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt(format!("manifest {path}: {e}")))?
            }
            Err(object_store::Error::NotFound { .. }) => Manifest::default(),
            Err(e) => return Err(StorageError::cold(e)),
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
            let mut w = ArrowWriter::try_new(&mut buf, first.schema(), Some(props)).map_err(StorageError::cold)?;
            for b in batches {
                w.write(b).map_err(StorageError::cold)?;
            }
            w.close().map_err(StorageError::cold)?;
        }
        let size = buf.len() as u64;
        self.put(&dir.path(&dir.segment_file(id))?, buf).await?;
        Ok(size)
    }

    /// Replaces the partition's manifest in one atomic put.
    pub async fn commit_manifest(&self, dir: &ColdDir, m: Manifest) -> Result<Arc<Manifest>> {
        let bytes = serde_json::to_vec_pretty(&m).map_err(StorageError::cold)?;
        self.put(&dir.path(&dir.manifest_file())?, bytes).await?;
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
                .map_err(StorageError::cold)?,
        };
        let key_leaf = key.and_then(|id| leaf_of(&meta, id));
        let mut blooms = vec![];
        if let Some(leaf) = key_leaf {
            let mut b = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta.clone());
            for rg in 0..meta.metadata().num_row_groups() {
                blooms.push(
                    b.get_row_group_column_bloom_filter(rg, leaf)
                        .await
                        .map_err(StorageError::cold)?,
                );
            }
        }
        let key_root = key.and_then(|id| meta.schema().fields().iter().position(|f| field_id_of(f) == Some(id)));
        let field_ids: Arc<[Option<u32>]> = meta.schema().fields().iter().map(|f| field_id_of(f)).collect();
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
    ///
    /// A composite key's leading column is not unique: `rest` then compares a row's
    /// whole key with the one sought, and the rows from the first with the leading
    /// value on (the segment is sorted by the whole key) are tried until it matches or
    /// passes it.
    pub async fn find_row(
        &self,
        dir: &ColdDir,
        seg: &SegmentMeta,
        column: u32,
        probe: &KeyProbe,
        rest: Option<&KeyOrder<'_>>,
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
                    let b = arrow::compute::concat_batches(&first.schema(), &batches).map_err(StorageError::cold)?;
                    self.decoded.put((h.id, rg), b.clone());
                    b
                }
            };
            let Some(mut row) = position_of(group.column(col).as_ref(), probe)? else {
                continue;
            };
            if let Some(order) = rest {
                while row < group.num_rows() {
                    match order(&group, row)? {
                        std::cmp::Ordering::Less => row += 1,
                        std::cmp::Ordering::Equal => break,
                        std::cmp::Ordering::Greater => return Ok(None),
                    }
                }
                if row == group.num_rows() {
                    continue;
                }
            }
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
                        field_id_of(f).is_some_and(|id| cols.contains(&id))
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
        let stream = b.build().map_err(StorageError::cold)?;
        Ok(stream.map(|b| b.map_err(StorageError::cold)).boxed())
    }

    /// Deletes the partition's files that its manifest does not list (segments of a
    /// flush that crashed, temporary files), and forgets cached handles of files gone.
    /// Returns how many were deleted.
    pub async fn delete_unlisted(&self, dir: &ColdDir) -> Result<usize> {
        let m = self.manifest(dir).await?;
        let keep: HashSet<&str> = m.segments.iter().map(|s| s.file.as_str()).collect();
        let manifest = dir.manifest_file();
        let prefix = Path::parse(&dir.dir).map_err(StorageError::cold)?;
        let listed = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(StorageError::cold)?;
        let mut n = 0;
        for obj in listed.objects {
            let Some(name) = obj.location.filename() else { continue };
            if dir.owns(name) && name != manifest && !keep.contains(name) {
                self.delete(&obj.location).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Deletes every file of table `uid` under `prefix`, in all its partitions.
    pub async fn delete_table(&self, prefix: &str, uid: u64) -> Result<usize> {
        let owner = ColdDir::new(prefix, uid);
        let prefix = Path::parse(prefix).map_err(StorageError::cold)?;
        let mut files = self.store.list(Some(&prefix));
        let mut doomed = vec![];
        while let Some(obj) = files.next().await {
            let obj = obj.map_err(StorageError::cold)?;
            if obj.location.filename().is_some_and(|n| owner.owns(n)) {
                doomed.push(obj.location);
            }
        }
        for p in &doomed {
            self.delete(p).await?;
        }
        self.manifests.write().retain(|d, _| d.uid != uid);
        Ok(doomed.len())
    }

    /// Deletes segment files no manifest lists any more (after a compaction).
    pub async fn delete_segments(&self, dir: &ColdDir, files: &[String]) -> Result<()> {
        for f in files {
            self.delete(&dir.path(f)?).await?;
        }
        Ok(())
    }

    /// The names of the subdirectories of `prefix` (the user partitions of a table).
    pub async fn subdirs(&self, prefix: &str) -> Result<Vec<String>> {
        let p = Path::parse(prefix).map_err(StorageError::cold)?;
        let listed = self
            .store
            .list_with_delimiter(Some(&p))
            .await
            .map_err(StorageError::cold)?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|c| c.filename().map(str::to_string))
            .collect())
    }
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
}
