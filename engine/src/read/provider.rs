//! The DataFusion `TableProvider` over a table's partition, both tiers. It pushes
//! projection, limit and primary-key predicates down: `pk = v` and `pk IN (...)` become
//! point lookups (a segment is read only where its key statistics and bloom filter
//! allow), `pk <, <=, >, >=` a key range scan, other `column <op> literal` filters skip
//! segments by their statistics, and a per-user table is only ever read inside the
//! subject user's partition. Cold rows that a hot version or a newer segment shadows
//! are dropped; a segment whose key range meets nothing newer is passed through as is.

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{TableProvider, TableType as DfTableType};
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use futures::{StreamExt, TryStreamExt};
use kalamdb_auth::identity::UserId;
use kalamdb_storage::cold::ColdDir;
use kalamdb_storage::cold::manifest::SegmentMeta;
use kalamdb_storage::cold::reader::ReadRequest;
use kalamdb_storage::hot_store::HotStore;
use kalamdb_storage::keys::KeyReader;
use kalamdb_storage::seq::Seq;

use crate::catalog::schema::{ColumnDef, TableDef};
use crate::codec::{decode_key_value, partition_prefix};
use crate::error::{EngineError, Result};
use crate::ids::IndexName;
use crate::index::{self, Cursor, MAX_INDEX_ROWS};
use crate::read::arrow_convert::{rows_to_batch, table_arrow_schema};
use crate::read::reader::{KeyPlan, PartitionReader};
use crate::tiers::cold::{
    ColdTier, conform, filters_allow, key_filter, partition_dir, pk_arrays, pk_keys, plan_allows, row_group_parts,
    shadowed, unseen_mask,
};
use crate::types::{ColumnType, Pk, Value};

/// A table as DataFusion sees it: the hot rows of one partition and its segments.
#[derive(Debug)]
pub struct TieredTableProvider {
    store: Arc<HotStore>,
    cold: Arc<ColdTier>,
    table: Arc<TableDef>,
    subject: UserId,
    schema: SchemaRef,
}

impl TieredTableProvider {
    pub fn new(store: Arc<HotStore>, cold: Arc<ColdTier>, table: Arc<TableDef>, subject: UserId) -> Self {
        let schema = table_arrow_schema(&table);
        Self {
            store,
            cold,
            table,
            subject,
            schema,
        }
    }
}

/// Converts a literal from a filter to a key value of the primary key's type.
pub fn scalar_to_key(ty: ColumnType, s: &ScalarValue) -> Option<Value> {
    let cast = s.cast_to(&ty.arrow_type()).ok()?;
    Some(match (ty, cast) {
        (ColumnType::Boolean, ScalarValue::Boolean(Some(b))) => Value::Boolean(b),
        (ColumnType::Int, ScalarValue::Int32(Some(i))) => Value::Int(i),
        (ColumnType::BigInt, ScalarValue::Int64(Some(i))) => Value::BigInt(i),
        (ColumnType::Timestamp, ScalarValue::TimestampMicrosecond(Some(t), _)) => Value::Timestamp(t),
        (ColumnType::Date, ScalarValue::Date32(Some(d))) => Value::Date(d),
        (ColumnType::Text | ColumnType::Uuid, ScalarValue::Utf8(Some(s))) => Value::from_text(ty, &s).ok()?,
        (ColumnType::Bytes, ScalarValue::Binary(Some(b))) => Value::Bytes(b),
        _ => return None,
    })
}

/// `column <op> literal`, normalised so the column is on the left.
fn column_comparison<'a>(e: &'a Expr, column: &str) -> Option<(Operator, &'a ScalarValue)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) if c.name == column => Some((*op, v)),
        (Expr::Literal(v, _), Expr::Column(c)) if c.name == column => Some((op.swap()?, v)),
        _ => None,
    }
}

/// The values a filter allows a column: `column = v` or `column IN (v, ...)`.
fn equated_values(f: &Expr, col: &ColumnDef) -> Option<Vec<Value>> {
    if let Expr::InList(list) = f {
        if list.negated || !matches!(list.expr.as_ref(), Expr::Column(c) if c.name == col.name.as_str()) {
            return None;
        }
        return list
            .list
            .iter()
            .map(|e| match e {
                Expr::Literal(s, _) => scalar_to_key(col.ty, s),
                _ => None,
            })
            .collect();
    }
    match column_comparison(f, col.name.as_str())? {
        (Operator::Eq, lit) => Some(vec![scalar_to_key(col.ty, lit)?]),
        _ => None,
    }
}

/// At most this many whole keys come of equalities on a composite key's columns (the
/// product of their value lists); more read by range or in full.
const MAX_KEY_POINTS: usize = 4096;

/// The narrowest key plan the filters allow: whole keys when each key column is
/// equated to values, else a range of the key's leading column (one value of it: the
/// run of keys that start with it). Every filter stays
/// applied above the scan (pushdown is `Inexact`), so a plan only has to cover the
/// matching keys.
pub fn key_plan(table: &TableDef, filters: &[Expr]) -> KeyPlan {
    let schema = table.current();
    let cols: Vec<&ColumnDef> = schema.pk_columns().collect();
    let mut equated: Vec<Option<Vec<Value>>> = vec![None; cols.len()];
    let (mut lo, mut hi) = (Bound::Unbounded, Bound::Unbounded);
    for f in filters {
        for (slot, col) in equated.iter_mut().zip(&cols) {
            if slot.is_none() {
                *slot = equated_values(f, col);
            }
        }
        let Some((op, lit)) = column_comparison(f, cols[0].name.as_str()) else {
            continue;
        };
        let Some(v) = scalar_to_key(cols[0].ty, lit) else {
            continue;
        };
        match op {
            Operator::Gt => lo = Bound::Excluded(v),
            Operator::GtEq => lo = Bound::Included(v),
            Operator::Lt => hi = Bound::Excluded(v),
            Operator::LtEq => hi = Bound::Included(v),
            _ => {}
        }
    }
    // a composite key's leading column equated to one value: that run of keys
    if let Some([v]) = equated[0].as_deref()
        && equated.iter().any(Option::is_none)
    {
        return KeyPlan::Range {
            lo: Bound::Included(v.clone()),
            hi: Bound::Included(v.clone()),
        };
    }
    let lists: Option<Vec<Vec<Value>>> = equated.into_iter().collect();
    if let Some(lists) = lists
        && lists
            .iter()
            .try_fold(1usize, |n, l| n.checked_mul(l.len()))
            .is_some_and(|n| n <= MAX_KEY_POINTS)
    {
        let mut keys = vec![Pk(vec![])];
        for list in lists {
            keys = keys
                .into_iter()
                .flat_map(|k| {
                    list.iter().map(move |v| {
                        let mut k = k.clone();
                        k.0.push(v.clone());
                        k
                    })
                })
                .collect();
        }
        return KeyPlan::Points(keys);
    }
    match (&lo, &hi) {
        (Bound::Unbounded, Bound::Unbounded) => KeyPlan::All,
        _ => KeyPlan::Range { lo, hi },
    }
}

/// The hot side of a scan: visible rows, every key the hot tier holds a version of,
/// and those keys' leading values.
struct HotSide {
    rows: Vec<(Seq, Vec<Value>)>,
    keys: HashSet<Vec<u8>>,
    leading: Vec<Value>,
}

impl TieredTableProvider {
    /// The keys a scan reads: those primary-key conditions allow, else those a
    /// narrowing index holds (named for `EXPLAIN`) when there are at most
    /// [`MAX_INDEX_ROWS`] of them, else all.
    fn access_plan(&self, filters: &[Expr], user: Option<&UserId>) -> Result<(KeyPlan, Option<IndexName>)> {
        let plan = key_plan(&self.table, filters);
        if plan != KeyPlan::All || self.table.indexes.is_empty() {
            return Ok((plan, None));
        }
        let conds = index::plan::from_exprs(&self.table, filters);
        let Some(choice) = index::plan::choose(&self.table, user, &conds, &[], false)? else {
            return Ok((plan, None));
        };
        let pks = Cursor::new(&choice.ranges, false).next_chunk(&self.store, &self.table, MAX_INDEX_ROWS + 1)?;
        if pks.len() > MAX_INDEX_ROWS {
            return Ok((plan, None));
        }
        Ok((KeyPlan::Points(pks), Some(choice.name)))
    }

    fn scan_hot(&self, plan: &KeyPlan, limit: Option<usize>, with_keys: bool) -> Result<HotSide> {
        let user = self.table.table_type.is_per_user().then_some(&self.subject);
        let reader = PartitionReader {
            store: &self.store,
            table: &self.table,
            user,
        };
        let floor = reader.ttl_floor();
        let prefix = partition_prefix(user).len();
        let lead_ty = self.table.current().leading_pk().ty;
        let mut side = HotSide {
            rows: vec![],
            keys: HashSet::new(),
            leading: vec![],
        };
        reader.scan_stored(plan, |key, row| {
            if with_keys {
                let pk = &key[prefix..];
                if let Some(v) = decode_key_value(&mut KeyReader::new(pk), lead_ty) {
                    side.leading.push(v);
                }
                side.keys.insert(pk.to_vec());
            }
            if !row.deleted && floor.is_none_or(|f| row.seq >= f) {
                side.rows.push((row.seq, row.values));
            }
            with_keys || limit.is_none_or(|l| side.rows.len() < l)
        })?;
        Ok(side)
    }
}

#[async_trait]
impl TableProvider for TieredTableProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> DfTableType {
        DfTableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let df = |e: EngineError| e.into_datafusion();
        let user = self.table.table_type.is_per_user().then_some(&self.subject);
        let (plan, index) = self.access_plan(filters, user).map_err(df)?;
        // a limit may only stop the scan early when no filter is left to apply
        let limit = if filters.is_empty() { limit } else { None };
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let projection = projection.cloned().unwrap_or(all);
        let out = Arc::new(self.schema.project(&projection)?);

        let (hot, manifest) = self
            .cold
            .hot_then_manifest(&self.table, user, |cold| self.scan_hot(&plan, limit, cold))
            .await
            .map_err(df)?;
        let hot_batch = rows_to_batch(&self.table, &self.schema, &projection, &hot.rows).map_err(df)?;
        let mut parts = vec![ScanPart::Rows(vec![hot_batch])];
        let mut source = None;
        if !manifest.is_empty() {
            let table = &self.table;
            let segs: Vec<&SegmentMeta> = manifest
                .newest_first()
                .filter(|s| plan_allows(table, s, &plan))
                .collect();
            let shadow = shadowed(table, &segs, &hot.leading);
            let emit: Vec<bool> = segs.iter().map(|s| filters_allow(table, s, filters)).collect();
            let cols = &table.current().columns;
            let mut wanted: Vec<u32> = projection
                .iter()
                .filter(|&&p| p < cols.len())
                .map(|&p| cols[p].id.0)
                .collect();
            if shadow.iter().any(|s| *s) {
                for key_col in table.current().pk_columns() {
                    if !wanted.contains(&key_col.id.0) {
                        wanted.push(key_col.id.0);
                    }
                }
            }
            let key = match &plan {
                KeyPlan::Points(pks) => key_filter(table, pks),
                _ => None,
            };
            // `_seq` when the scan asks for it, or to count rows when it asks for no column
            let with_seq = projection.contains(&cols.len()) || wanted.is_empty();
            let dir = partition_dir(table, user);
            // A segment that needs no de-duplication and is read whole is decoded as the
            // plan pulls its batches; the others are read first, newest first, to drop
            // the versions that hot rows or newer segments shadow.
            let streams = |sh: bool, em: bool| !sh && em && key.is_none();
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let mut pieces: Vec<Vec<SegmentPiece>> = vec![vec![]; cores];
            let mut next = 0;
            for ((seg, sh), em) in segs.iter().zip(&shadow).zip(&emit) {
                if !streams(*sh, *em) {
                    continue;
                }
                let groups = self
                    .cold
                    .store
                    .row_group_count(&dir, seg)
                    .await
                    .map_err(|e| df(e.into()))?;
                for row_groups in row_group_parts(groups, cores) {
                    pieces[next % cores].push(SegmentPiece {
                        seg: (*seg).clone(),
                        row_groups,
                    });
                    next += 1;
                }
            }
            let reads: Vec<(&SegmentMeta, bool, bool)> = segs
                .iter()
                .zip(shadow.iter().zip(&emit))
                .filter(|(_, (sh, em))| (**sh || **em) && !streams(**sh, **em))
                .map(|(s, (sh, em))| (*s, *sh, *em))
                .collect();
            let chosen: Vec<&SegmentMeta> = reads.iter().map(|r| r.0).collect();
            let read = self
                .cold
                .read_segments(&dir, &chosen, || ReadRequest {
                    columns: Some(wanted.clone()),
                    seq: with_seq,
                    key: key.clone(),
                    row_groups: None,
                })
                .await
                .map_err(df)?;
            let mut seen = hot.keys;
            for ((_, shadowed, emit), chunks) in reads.iter().zip(read) {
                for batches in chunks {
                    let mut part = vec![];
                    for b in batches {
                        let mask = if *shadowed {
                            let pk = pk_arrays(table, &b)
                                .ok_or_else(|| EngineError::Internal("a segment without its key".into()))
                                .map_err(df)?;
                            Some(unseen_mask(pk_keys(table, &pk).map_err(df)?, &mut seen, true))
                        } else {
                            None
                        };
                        if !*emit {
                            continue;
                        }
                        let b = conform(table, &b, &projection, &out).map_err(df)?;
                        part.push(match mask {
                            Some(m) => filter_record_batch(&b, &m)?,
                            None => b,
                        });
                    }
                    if !part.is_empty() {
                        parts.push(ScanPart::Rows(part));
                    }
                }
            }
            parts.extend(
                pieces
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .map(|p| ScanPart::Segments(Arc::new(p))),
            );
            source = Some(Arc::new(SegmentSource {
                cold: self.cold.clone(),
                table: self.table.clone(),
                dir,
                columns: wanted,
                seq: with_seq,
                projection,
            }));
        }
        let keys = plan.describe();
        Ok(Arc::new(TieredScanExec::new(parts, source, out, keys, index)))
    }
}

/// Rows of one segment to decode: all, or some of its row groups.
#[derive(Debug, Clone)]
struct SegmentPiece {
    seg: SegmentMeta,
    row_groups: Option<Vec<usize>>,
}

/// One partition of a scan.
#[derive(Debug)]
enum ScanPart {
    /// Batches already in memory: the hot rows, and segments read ahead to drop
    /// shadowed versions.
    Rows(Vec<RecordBatch>),
    /// Segment pieces decoded one after the other as the plan pulls them.
    Segments(Arc<Vec<SegmentPiece>>),
}

/// What a streamed segment piece is read with and mapped to.
#[derive(Debug)]
struct SegmentSource {
    cold: Arc<ColdTier>,
    table: Arc<TableDef>,
    dir: ColdDir,
    /// Field ids of the columns to read, and whether `_seq` comes too.
    columns: Vec<u32>,
    seq: bool,
    /// The scan's columns, as indexes into the table's SQL schema.
    projection: Vec<usize>,
}

/// The scan of one table partition over both tiers as a DataFusion plan: partitions of
/// rows in memory and partitions of segments whose decoding overlaps the plan's work
/// on what came before (an aggregate, a filter).
#[derive(Debug)]
struct TieredScanExec {
    parts: Vec<ScanPart>,
    source: Option<Arc<SegmentSource>>,
    props: Arc<PlanProperties>,
    /// Which keys are read (`None`: all), for `EXPLAIN`.
    keys: Option<String>,
    /// The index whose entries chose the keys read, if any.
    index: Option<IndexName>,
}

impl TieredScanExec {
    fn new(
        parts: Vec<ScanPart>,
        source: Option<Arc<SegmentSource>>,
        schema: SchemaRef,
        keys: Option<String>,
        index: Option<IndexName>,
    ) -> Self {
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(parts.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            parts,
            source,
            props: Arc::new(props),
            keys,
            index,
        }
    }
}

impl DisplayAs for TieredScanExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let streamed = self.parts.iter().filter(|p| matches!(p, ScanPart::Segments(_))).count();
        write!(
            f,
            "TieredScanExec: partitions={}, streamed={streamed}",
            self.parts.len()
        )?;
        if let Some(k) = &self.keys {
            write!(f, ", keys={k}")?;
        }
        if let Some(ix) = &self.index {
            write!(f, ", index={ix}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for TieredScanExec {
    fn name(&self) -> &str {
        "TieredScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, _: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, partition: usize, _: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let schema = self.props.eq_properties.schema().clone();
        let stream = match (self.parts.get(partition), &self.source) {
            (Some(ScanPart::Rows(batches)), _) => futures::stream::iter(batches.clone().into_iter().map(Ok)).boxed(),
            (Some(ScanPart::Segments(pieces)), Some(src)) => {
                let (pieces, out) = (pieces.clone(), schema.clone());
                let (read_src, src) = (src.clone(), src.clone());
                futures::stream::iter(0..pieces.len())
                    .then(move |i| {
                        let (pieces, src) = (pieces.clone(), read_src.clone());
                        async move {
                            let piece = &pieces[i];
                            let req = ReadRequest {
                                columns: Some(src.columns.clone()),
                                seq: src.seq,
                                key: None,
                                row_groups: piece.row_groups.clone(),
                            };
                            src.cold.store.read_stream(&src.dir, &piece.seg, &req).await
                        }
                    })
                    .try_flatten()
                    .map(move |b| {
                        let b = b.map_err(|e| EngineError::from(e).into_datafusion())?;
                        conform(&src.table, &b, &src.projection, &out).map_err(EngineError::into_datafusion)
                    })
                    .boxed()
            }
            _ => {
                return Err(datafusion::error::DataFusionError::Internal(format!(
                    "TieredScanExec has no partition {partition}"
                )));
            }
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

#[cfg(test)]
mod tests;
