//! The cold tier as the engine sees it: where a partition's segments live, how rows
//! become a segment (with per-column statistics), how segments read back in the
//! table's current schema, and which segments a read can skip.
//!
//! Reads of a partition that has segments merge the tiers by primary key: a hot version
//! (row or tombstone) always beats a cold one, and among segments the newer one wins.
//! The hot rows are read before the manifest: a flush writes its manifest before it
//! deletes the hot rows it covered, so a reader never misses a row in between.

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Builder, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use kalamdb_auth::identity::UserId;
use kalamdb_storage::cold::manifest::{ColumnStats, Manifest, SegmentMeta, Stat};
use kalamdb_storage::cold::reader::{KeyFilter, KeyProbe, ReadRequest, SegmentRow, field_id_of, with_field_id};
use kalamdb_storage::cold::{ColdDir, ColdStore, KeyOrder, SEQ_FIELD};
use kalamdb_storage::error::StorageError;
use kalamdb_storage::keys::KeyBuilder;
use kalamdb_storage::seq::Seq;

use crate::catalog::schema::{TableDef, TableSchema};
use crate::codec::{encode_key_value, pk_bytes};
use crate::error::{EngineError, Result};
use crate::ids::TableId;
use crate::read::arrow_convert::{ColBuilder, array_value, constant_array, values_array};
use crate::read::provider::scalar_to_key;
use crate::read::reader::KeyPlan;
use crate::types::{Pk, Value};

/// Rows per Arrow batch while a segment is built.
const BUILD_BATCH_ROWS: usize = 64 * 1024;

/// A directory name for a user id (`.` and `..` are user ids but not path parts).
fn path_part(u: &UserId) -> String {
    let s = u.as_str();
    if s.starts_with('.') {
        format!("~{s}")
    } else {
        s.to_string()
    }
}

/// The directory that holds all partitions of a table: `{namespace}/{table}`.
pub fn table_prefix(table: &TableId) -> String {
    format!("{}/{}", table.namespace, table.table)
}

/// A partition's directory: `{namespace}/{table}` for a shared table,
/// `{namespace}/{table}/{user_id}` for a user's rows of a USER table.
pub fn partition_dir(table: &TableDef, user: Option<&UserId>) -> ColdDir {
    let prefix = table_prefix(&table.id);
    let dir = match user {
        Some(u) => format!("{prefix}/{}", path_part(u)),
        None => prefix,
    };
    ColdDir::new(dir, table.uid.0)
}

/// The user a partition directory name stands for.
pub fn dir_user(name: &str) -> Option<UserId> {
    UserId::parse(name.strip_prefix('~').unwrap_or(name)).ok()
}

pub fn stat_of(v: &Value) -> Option<Stat> {
    Some(match v {
        Value::Null | Value::Json(_) => return None,
        Value::Boolean(b) => Stat::Bool(*b),
        Value::Int(i) | Value::Date(i) => Stat::Int(*i as i64),
        Value::BigInt(i) | Value::Timestamp(i) => Stat::Int(*i),
        Value::Double(d) if d.is_nan() => return None,
        Value::Double(d) => Stat::Float(*d),
        Value::Text(s) => Stat::Text(s.clone()),
        Value::Uuid(u) => Stat::Text(uuid::Uuid::from_bytes(*u).to_string()),
        Value::Bytes(b) => Stat::Bytes(b.clone()),
    })
}

fn probe_of(v: &Value) -> Option<KeyProbe> {
    Some(match v {
        Value::Boolean(b) => KeyProbe::Bool(*b),
        Value::Int(i) | Value::Date(i) => KeyProbe::I32(*i),
        Value::BigInt(i) | Value::Timestamp(i) => KeyProbe::I64(*i),
        Value::Double(d) => KeyProbe::F64(*d),
        Value::Text(s) => KeyProbe::Bytes(s.as_bytes().to_vec()),
        Value::Uuid(u) => KeyProbe::Bytes(uuid::Uuid::from_bytes(*u).to_string().into_bytes()),
        Value::Bytes(b) => KeyProbe::Bytes(b.clone()),
        Value::Null | Value::Json(_) => return None,
    })
}

/// Running min, max and null count of one column; a value without an order (NaN)
/// makes min and max unknown.
#[derive(Default)]
struct StatAcc {
    min: Option<Stat>,
    max: Option<Stat>,
    nulls: u64,
    unordered: bool,
}

impl StatAcc {
    fn add(&mut self, v: &Value) {
        if v.is_null() {
            self.nulls += 1;
            return;
        }
        let Some(s) = stat_of(v) else {
            self.unordered = true;
            return;
        };
        if self.min.as_ref().is_none_or(|m| s < *m) {
            self.min = Some(s.clone());
        }
        if self.max.as_ref().is_none_or(|m| s > *m) {
            self.max = Some(s);
        }
    }
}

/// The Arrow schema of a segment written under `schema`: its columns with their ids as
/// Parquet field ids, then `_seq`.
pub fn segment_schema(schema: &TableSchema) -> SchemaRef {
    let mut fields: Vec<Field> = schema
        .columns
        .iter()
        .map(|c| with_field_id(Field::new(c.name.as_str(), c.ty.arrow_type(), true), c.id.0))
        .collect();
    fields.push(Field::new(SEQ_FIELD, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// Accumulates rows of one schema version into Arrow batches and statistics.
pub struct SegmentBuilder {
    schema: TableSchema,
    arrow: SchemaRef,
    cols: Vec<ColBuilder>,
    seqs: Int64Builder,
    stats: Vec<StatAcc>,
    pending: usize,
    batches: Vec<RecordBatch>,
    pub rows: u64,
    pub min_seq: Seq,
    pub max_seq: Seq,
}

/// A built segment, ready to be written.
pub struct BuiltSegment {
    pub batches: Vec<RecordBatch>,
    pub rows: u64,
    pub min_seq: Seq,
    pub max_seq: Seq,
    pub schema_version: u32,
    pub columns: Vec<ColumnStats>,
}

impl SegmentBuilder {
    pub fn new(schema: &TableSchema) -> Self {
        Self {
            arrow: segment_schema(schema),
            cols: schema
                .columns
                .iter()
                .map(|c| ColBuilder::new(c.ty, BUILD_BATCH_ROWS))
                .collect(),
            seqs: Int64Builder::with_capacity(BUILD_BATCH_ROWS),
            stats: schema.columns.iter().map(|_| StatAcc::default()).collect(),
            schema: schema.clone(),
            pending: 0,
            batches: vec![],
            rows: 0,
            min_seq: Seq(u64::MAX),
            max_seq: Seq::ZERO,
        }
    }

    pub fn push(&mut self, seq: Seq, values: &[Value]) -> Result<()> {
        for ((b, s), v) in self.cols.iter_mut().zip(&mut self.stats).zip(values) {
            b.push(v);
            s.add(v);
        }
        self.seqs.append_value(seq.as_i64());
        self.min_seq = self.min_seq.min(seq);
        self.max_seq = self.max_seq.max(seq);
        self.rows += 1;
        self.pending += 1;
        if self.pending >= BUILD_BATCH_ROWS {
            self.cut()?;
        }
        Ok(())
    }

    fn cut(&mut self) -> Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        let mut arrays: Vec<ArrayRef> = self
            .schema
            .columns
            .iter()
            .zip(&mut self.cols)
            .map(|(c, b)| std::mem::replace(b, ColBuilder::new(c.ty, BUILD_BATCH_ROWS)).finish())
            .collect();
        arrays.push(Arc::new(self.seqs.finish()));
        self.batches
            .push(RecordBatch::try_new(self.arrow.clone(), arrays).map_err(|e| EngineError::Internal(e.to_string()))?);
        self.pending = 0;
        Ok(())
    }

    pub fn finish(mut self) -> Result<BuiltSegment> {
        self.cut()?;
        let columns = self
            .schema
            .columns
            .iter()
            .zip(self.stats)
            .map(|(c, s)| ColumnStats {
                id: c.id.0,
                min: if s.unordered { None } else { s.min },
                max: if s.unordered { None } else { s.max },
                nulls: s.nulls,
            })
            .collect();
        Ok(BuiltSegment {
            batches: self.batches,
            rows: self.rows,
            min_seq: self.min_seq,
            max_seq: self.max_seq,
            schema_version: self.schema.version,
            columns,
        })
    }
}

/// Maps a segment batch onto columns of the table's current schema, given as indexes
/// into its SQL schema (columns, then `_seq`, then `_deleted`): columns are found by
/// id, columns added since take their backfill value, dropped ones are left out.
pub fn conform(table: &TableDef, batch: &RecordBatch, projection: &[usize], out: &SchemaRef) -> Result<RecordBatch> {
    let cols = &table.current().columns;
    let n = batch.num_rows();
    let schema = batch.schema();
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(projection.len());
    for &p in projection {
        if p < cols.len() {
            let c = &cols[p];
            match schema.fields().iter().position(|f| field_id_of(f) == Some(c.id.0)) {
                Some(i) => arrays.push(batch.column(i).clone()),
                None => arrays.push(constant_array(c.ty, &TableDef::backfill_value(c), n)),
            }
        } else if p == cols.len() {
            let i = schema
                .index_of(SEQ_FIELD)
                .map_err(|_| EngineError::Internal("a segment without _seq".into()))?;
            arrays.push(batch.column(i).clone());
        } else {
            arrays.push(Arc::new(BooleanArray::from(vec![false; n])));
        }
    }
    RecordBatch::try_new_with_options(
        out.clone(),
        arrays,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
    )
    .map_err(|e| EngineError::Internal(e.to_string()))
}

/// The primary key's columns of a segment batch, in key order, found by their ids.
pub fn pk_arrays(table: &TableDef, batch: &RecordBatch) -> Option<Vec<ArrayRef>> {
    let schema = batch.schema();
    table
        .current()
        .pk_columns()
        .map(|c| {
            let i = schema.fields().iter().position(|f| field_id_of(f) == Some(c.id.0))?;
            Some(batch.column(i).clone())
        })
        .collect()
}

/// The primary key of row `i` of a batch's key arrays (see [`pk_arrays`]), encoded as
/// in row keys.
fn pk_key_at(table: &TableDef, pk: &[ArrayRef], i: usize) -> Result<Vec<u8>> {
    let mut k = KeyBuilder::with_capacity(16);
    for (a, c) in pk.iter().zip(table.current().pk_columns()) {
        encode_key_value(&mut k, &array_value(a.as_ref(), i, c.ty)?)?;
    }
    Ok(k.finish())
}

/// The primary keys of a batch's key arrays (see [`pk_arrays`]), encoded as in row keys.
pub fn pk_keys(table: &TableDef, pk: &[ArrayRef]) -> Result<Vec<Vec<u8>>> {
    let n = pk.first().map_or(0, |a| a.len());
    (0..n).map(|i| pk_key_at(table, pk, i)).collect()
}

/// Whether the segment's statistics allow a row with `col <op> v`.
fn stats_allow(stats: &ColumnStats, op: Operator, v: &Stat) -> bool {
    let (Some(min), Some(max)) = (&stats.min, &stats.max) else {
        return true;
    };
    match op {
        Operator::Eq => stats.may_hold(v),
        Operator::Lt => min < v,
        Operator::LtEq => min <= v,
        Operator::Gt => max > v,
        Operator::GtEq => max >= v,
        _ => true,
    }
}

/// Whether the segment may hold rows the key plan covers, by its key statistics.
pub fn plan_allows(table: &TableDef, seg: &SegmentMeta, plan: &KeyPlan) -> bool {
    let Some(stats) = seg.stats(table.current().leading_pk().id.0) else {
        return true;
    };
    let bound = |b: &Bound<Value>, lower: bool| match b {
        Bound::Unbounded => true,
        Bound::Included(v) | Bound::Excluded(v) => stat_of(v).is_none_or(|s| {
            let op = match (b, lower) {
                (Bound::Included(_), true) => Operator::GtEq,
                (Bound::Excluded(_), true) => Operator::Gt,
                (Bound::Included(_), false) => Operator::LtEq,
                _ => Operator::Lt,
            };
            stats_allow(stats, op, &s)
        }),
    };
    match plan {
        KeyPlan::All => true,
        KeyPlan::Points(pks) => pks
            .iter()
            .any(|k| k.0.first().and_then(stat_of).is_none_or(|s| stats.may_hold(&s))),
        KeyPlan::Range { lo, hi } => bound(lo, true) && bound(hi, false),
    }
}

/// Whether the segment may hold rows that pass every filter of the form
/// `column <op> literal`, by its column statistics.
pub fn filters_allow(table: &TableDef, seg: &SegmentMeta, filters: &[Expr]) -> bool {
    let schema = table.current();
    filters.iter().all(|f| {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = f else {
            return true;
        };
        let (name, op, lit) = match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) => (&c.name, *op, v),
            (Expr::Literal(v, _), Expr::Column(c)) => match op.swap() {
                Some(o) => (&c.name, o, v),
                None => return true,
            },
            _ => return true,
        };
        let Some(col) = schema.columns.iter().find(|c| c.name.as_str() == name) else {
            return true;
        };
        let Some(stats) = seg.stats(col.id.0) else { return true };
        match scalar_to_key(col.ty, lit).as_ref().and_then(stat_of) {
            Some(v) => stats_allow(stats, op, &v),
            None => true,
        }
    })
}

/// The key filter that narrows a segment read to the rows of `pks`: by the key's
/// leading column, so that with a composite key it keeps a superset, which the reader
/// then narrows by whole keys.
pub fn key_filter(table: &TableDef, pks: &[Pk]) -> Option<KeyFilter> {
    let lead = table.current().leading_pk();
    let values: Vec<Value> = pks.iter().filter_map(|k| k.0.first().cloned()).collect();
    let probes: Option<Vec<KeyProbe>> = values.iter().map(probe_of).collect();
    Some(KeyFilter {
        column: lead.id.0,
        values: values_array(lead.ty, &values),
        probes: probes?,
    })
}

/// Whether hot keys and newer segments may shadow rows of each segment: a segment whose
/// key range meets no other segment's and holds no hot key needs no de-duplication.
/// Ranges are of the key's leading column, and `hot_keys` are the hot keys' leading
/// values.
pub fn shadowed(table: &TableDef, segs: &[&SegmentMeta], hot_keys: &[Value]) -> Vec<bool> {
    let pk = table.current().leading_pk().id.0;
    let range = |s: &SegmentMeta| s.stats(pk).and_then(|c| Some((c.min.clone()?, c.max.clone()?)));
    let ranges: Vec<Option<(Stat, Stat)>> = segs.iter().map(|s| range(s)).collect();
    let hot: Vec<Option<Stat>> = hot_keys.iter().map(stat_of).collect();
    (0..segs.len())
        .map(|i| {
            let Some((lo, hi)) = &ranges[i] else { return true };
            let meets_other = ranges
                .iter()
                .enumerate()
                .any(|(j, r)| j != i && r.as_ref().is_none_or(|(l2, h2)| l2 <= hi && lo <= h2));
            meets_other || hot.iter().any(|h| h.as_ref().is_none_or(|h| lo <= h && h <= hi))
        })
        .collect()
}

/// A segment's `groups` row groups split into up to `cores` runs for parallel reads
/// (`None`: one run of them all).
pub fn row_group_parts(groups: usize, cores: usize) -> Vec<Option<Vec<usize>>> {
    let parts = groups.clamp(1, cores);
    if parts == 1 {
        return vec![None];
    }
    (0..parts)
        .map(|p| Some((groups * p / parts..groups * (p + 1) / parts).collect()))
        .collect()
}

/// The cold store and the reads the engine makes of it.
#[derive(Debug)]
pub struct ColdTier {
    pub store: Arc<ColdStore>,
}

impl ColdTier {
    pub async fn manifest(&self, table: &TableDef, user: Option<&UserId>) -> Result<Arc<Manifest>> {
        Ok(self.store.manifest(&partition_dir(table, user)).await?)
    }

    /// Reads a partition's hot rows with `scan` (told whether segments exist), then
    /// its manifest: a flush that completes in between lists the rows it moved (see
    /// the module doc). When the manifest changed meanwhile the hot rows are read
    /// again, up to three times, so that both sides are of one moment.
    pub async fn hot_then_manifest<T>(
        &self,
        table: &TableDef,
        user: Option<&UserId>,
        mut scan: impl FnMut(bool) -> Result<T>,
    ) -> Result<(T, Arc<Manifest>)> {
        let mut attempt = 0;
        loop {
            let before = self.manifest(table, user).await?;
            let hot = scan(!before.is_empty())?;
            let after = self.manifest(table, user).await?;
            attempt += 1;
            if Arc::ptr_eq(&before, &after) || attempt == 3 {
                return Ok((hot, after));
            }
        }
    }

    /// Reads segments concurrently, newest first, each narrowed by `req`: per segment,
    /// its rows as chunks in key order. A whole-segment read is split by row groups
    /// over the cores, so that decoding runs in parallel and each chunk can be a
    /// partition of a DataFusion plan.
    pub async fn read_segments(
        &self,
        dir: &ColdDir,
        segs: &[&SegmentMeta],
        req: impl Fn() -> ReadRequest,
    ) -> Result<Vec<Vec<Vec<RecordBatch>>>> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut tasks = Vec::with_capacity(segs.len());
        for seg in segs {
            let template = req();
            let groups = if template.key.is_none() && template.row_groups.is_none() {
                self.store.row_group_count(dir, seg).await?
            } else {
                1
            };
            let parts = row_group_parts(groups, cores);
            let mut seg_tasks = Vec::with_capacity(parts.len());
            for row_groups in parts {
                let mut r = template.clone();
                if row_groups.is_some() {
                    r.row_groups = row_groups;
                }
                let (store, dir, seg) = (self.store.clone(), dir.clone(), (*seg).clone());
                seg_tasks.push(tokio::spawn(async move { store.read(&dir, &seg, &r).await }));
            }
            tasks.push(seg_tasks);
        }
        let mut out = Vec::with_capacity(tasks.len());
        for seg_tasks in tasks {
            let mut chunks = Vec::with_capacity(seg_tasks.len());
            for t in seg_tasks {
                chunks.push(t.await.map_err(|e| EngineError::Internal(e.to_string()))??);
            }
            out.push(chunks);
        }
        Ok(out)
    }

    /// The newest cold version of one key, if any segment holds it: only the segments
    /// whose key range holds it are probed, newest first, and the first row found is
    /// read straight off the decoded row group.
    pub async fn get(&self, table: &TableDef, user: Option<&UserId>, pk: &Pk) -> Result<Option<(Seq, Vec<Value>)>> {
        let dir = partition_dir(table, user);
        let manifest = self.store.manifest(&dir).await?;
        if manifest.is_empty() {
            return Ok(None);
        }
        let Some(lead) = pk.0.first() else { return Ok(None) };
        let Some(probe) = probe_of(lead) else {
            return Ok(None);
        };
        let lead_id = table.current().leading_pk().id.0;
        let segs: Vec<&SegmentMeta> = match stat_of(lead) {
            Some(stat) => manifest.holding(lead_id, &stat),
            None => manifest.newest_first().collect(),
        };
        // a composite key: rows sharing the leading value are told apart by the whole key
        let composite = pk.0.len() > 1;
        let sought = if composite { pk_bytes(pk)? } else { Vec::new() };
        let whole = |b: &RecordBatch, i: usize| -> kalamdb_storage::error::Result<std::cmp::Ordering> {
            let arrays =
                pk_arrays(table, b).ok_or_else(|| StorageError::Corrupt("a segment without its key".into()))?;
            let k = pk_key_at(table, &arrays, i).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            Ok(k.cmp(&sought))
        };
        let rest: Option<&KeyOrder<'_>> = composite.then_some(&whole as &KeyOrder<'_>);
        for seg in segs {
            if let Some(found) = self.store.find_row(&dir, seg, lead_id, &probe, rest).await? {
                return segment_row(table, &found).map(Some);
            }
        }
        Ok(None)
    }
}

/// A segment row as a row of the table's current schema: columns found by id, columns
/// added since with their backfill value.
fn segment_row(table: &TableDef, found: &SegmentRow) -> Result<(Seq, Vec<Value>)> {
    let values = table
        .current()
        .columns
        .iter()
        .map(|c| match found.field_ids.iter().position(|f| *f == Some(c.id.0)) {
            Some(i) => array_value(found.batch.column(i).as_ref(), found.row, c.ty),
            None => Ok(TableDef::backfill_value(c)),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((Seq(found.seq), values))
}

/// The SQL schema of a table projected to `projection` (columns, `_seq`, `_deleted`).
pub fn segment_out_schema(table: &TableDef, projection: &[usize]) -> Schema {
    let full = crate::read::arrow_convert::table_arrow_schema(table);
    full.project(projection).unwrap_or_else(|_| full.as_ref().clone())
}

/// Row `i` of a batch conformed to all columns and `_seq`.
pub fn row_at(table: &TableDef, b: &RecordBatch, i: usize) -> Result<(Seq, Vec<Value>)> {
    use datafusion::arrow::array::AsArray;
    let cols = &table.current().columns;
    let values = cols
        .iter()
        .enumerate()
        .map(|(ci, c)| array_value(b.column(ci).as_ref(), i, c.ty))
        .collect::<Result<Vec<_>>>()?;
    let seq = b
        .column(cols.len())
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
        .value(i);
    Ok((Seq(seq as u64), values))
}

/// Which rows of a pk array to keep: those whose key is not in `seen`; adds every key
/// of the array to `seen` when `record` is set.
pub fn unseen_mask(keys: Vec<Vec<u8>>, seen: &mut HashSet<Vec<u8>>, record: bool) -> BooleanArray {
    let mut mask = Vec::with_capacity(keys.len());
    for k in keys {
        mask.push(!seen.contains(&k));
        if record {
            seen.insert(k);
        }
    }
    BooleanArray::from(mask)
}
