//! The typed read API the GraphQL layer calls: selects and aggregates described by
//! typed filters, sort keys and limits, never by SQL text.
//!
//! A select takes the direct path: it reads the one partition the caller may see,
//! narrowed by any primary-key condition, filters the rows in memory and orders them.
//! [`Engine::select_datafusion`] answers the same request through a DataFusion plan;
//! a differential test holds the two to identical results. Aggregates always go
//! through DataFusion.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes as dt;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::provider_as_source;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::functions_aggregate::count::count_all;
use datafusion::functions_aggregate::expr_fn::{avg, count, count_distinct, max, min, sum};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, SortExpr};
use kalamdb_auth::identity::UserId;
use kalamdb_auth::permissions::{TableOp, TableType};
use kalamdb_storage::hot_store::Partition;
use kalamdb_storage::seq::Seq;

use crate::catalog::schema::TableDef;
use crate::codec::{decode_row, row_key};
use crate::context::ExecContext;
use crate::engine::{Engine, Row};
use crate::error::{EngineError, Result};
use crate::ids::{ColumnName, TableId};
use crate::index::plan::IndexChoice;
use crate::index::{self, Cursor, MAX_INDEX_ROWS};
use crate::read::aggregate_rows::{AggSpec, aggregate_rows};
use crate::read::arrow_convert::array_value;
use crate::read::filter::{BoundFilter, BoundOrderKey, FieldRef, Filter, FilterLimits, OrderKey};
use crate::read::provider::{TieredTableProvider, key_plan};
use crate::read::reader::{KeyPlan, PartitionReader};
use crate::read::row_cache::{CachedPartition, MAX_PARTITION_ROWS, PartitionKey};
use crate::types::{ColumnType, Pk, Value};

/// Rows of one table that match a filter, in order, with offset and limit.
#[derive(Debug, Clone, Default)]
pub struct SelectRequest {
    pub filter: Option<Filter>,
    pub order_by: Vec<OrderKey>,
    pub limit: Option<usize>,
    pub offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFn {
    /// `count(*)` without a column, `count(column)` (non-null values) with one.
    Count,
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub func: AggFn,
    pub column: Option<ColumnName>,
}

#[derive(Debug, Clone, Default)]
pub struct AggregateRequest {
    pub filter: Option<Filter>,
    pub group_by: Vec<ColumnName>,
    pub aggregates: Vec<Aggregate>,
}

/// One group: its key values (in `group_by` order) and its aggregate values (in
/// `aggregates` order). Without `group_by` there is exactly one group.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateGroup {
    pub keys: Vec<Value>,
    pub values: Vec<Value>,
}

/// Rows of a read, with the table definition whose current schema orders their values.
#[derive(Debug, Clone)]
pub struct Rows {
    pub table: Arc<TableDef>,
    pub rows: Vec<Row>,
}

/// A select resolved against the table's current schema; its order is total (the
/// primary key breaks ties).
#[derive(Debug, Clone)]
pub(crate) struct BoundSelect {
    pub(crate) table: Arc<TableDef>,
    pub(crate) filter: Option<BoundFilter>,
    pub(crate) order: Vec<BoundOrderKey>,
    pub(crate) limit: Option<usize>,
    pub(crate) offset: usize,
}

impl BoundSelect {
    /// Whether the order is the primary key's, which the partition's key order gives.
    fn in_key_order(&self) -> bool {
        let pk = &self.table.current().pk;
        self.order.len() == pk.len()
            && self
                .order
                .iter()
                .zip(pk)
                .all(|(k, c)| k.field == FieldRef::Column(*c) && !k.descending)
    }

    /// Orders matching rows and cuts the page; `in_order` says they already come in
    /// the requested order. Rows given by reference are ordered by reference and only
    /// the page is copied.
    fn page<R: PageRow>(&self, matched: impl Iterator<Item = R>, wanted: Option<usize>, in_order: bool) -> Vec<Row> {
        let rows: Vec<R> = if in_order {
            matched.take(wanted.unwrap_or(usize::MAX)).collect()
        } else if let Some(w) = wanted.filter(|w| (1..=SMALL_PAGE).contains(w)) {
            // a small page: keep the best `w` rows in order; most rows lose against the
            // worst one kept and cost one comparison
            let mut best: Vec<R> = Vec::with_capacity(w);
            for r in matched {
                if best.len() == w {
                    if self.compare(r.row(), best[w - 1].row()).is_ge() {
                        continue;
                    }
                    best.pop();
                }
                let at = best.partition_point(|b| self.compare(b.row(), r.row()).is_le());
                best.insert(at, r);
            }
            best
        } else {
            let mut rows: Vec<R> = matched.collect();
            if let Some(w) = wanted
                && w < rows.len()
            {
                if w > 0 {
                    rows.select_nth_unstable_by(w - 1, |a, b| self.compare(a.row(), b.row()));
                }
                rows.truncate(w);
            }
            rows.sort_by(|a, b| self.compare(a.row(), b.row()));
            rows
        };
        rows.into_iter().skip(self.offset).map(PageRow::into_row).collect()
    }

    /// A page of a cached partition. In an order the partition keeps, the rows are
    /// walked in that order and a limited page stops once it is full.
    fn page_cached(
        &self,
        part: &CachedPartition,
        wanted: Option<usize>,
        early_stop: bool,
        keep: impl Fn(Seq, &[Value]) -> bool,
    ) -> Vec<Row> {
        let rows = &part.rows;
        if !self.in_key_order()
            && let Some(ix) = part.order(&self.order, |ix| {
                ix.sort_unstable_by(|&a, &b| self.compare(&rows[a as usize], &rows[b as usize]))
            })
        {
            let matched = ix.iter().map(|&i| &rows[i as usize]).filter(|(s, v)| keep(*s, v));
            return self.page(matched, wanted, true);
        }
        self.page(rows.iter().filter(|(s, v)| keep(*s, v)), wanted, early_stop)
    }

    /// The keys the filter narrows the read to.
    fn key_plan(&self) -> KeyPlan {
        // only conditions on the key can narrow the read; most filters have none, and
        // then no expression is built
        let schema = self.table.current();
        let on_key: Vec<Expr> = self
            .filter
            .iter()
            .flat_map(BoundFilter::conjuncts)
            .filter(|c| {
                matches!(c, BoundFilter::Compare { field: FieldRef::Column(i), .. }
                    | BoundFilter::In { field: FieldRef::Column(i), negated: false, .. } if schema.is_pk(*i))
            })
            .map(|c| c.to_df_expr(&self.table))
            .collect();
        if on_key.is_empty() {
            return KeyPlan::All;
        }
        key_plan(&self.table, &on_key)
    }

    /// The index this select reads through, if one narrows it or, for a limited page
    /// with no filter, walks it in order; never when primary-key conditions narrow it.
    fn index_choice(&self, user: Option<&UserId>) -> Result<Option<IndexChoice>> {
        if self.table.indexes.is_empty() || self.limit == Some(0) || self.key_plan() != KeyPlan::All {
            return Ok(None);
        }
        let conds = index::plan::from_filter(self.filter.as_ref());
        let ordered_walk = self.limit.is_some() && self.filter.is_none();
        index::plan::choose(&self.table, user, &conds, &self.order, ordered_walk)
    }

    pub(crate) fn compare(&self, a: &Row, b: &Row) -> std::cmp::Ordering {
        self.order
            .iter()
            .map(|k| k.compare((a.0, &a.1), (b.0, &b.1)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }
}

/// Pages up to this many rows are chosen by insertion into a sorted list.
const SMALL_PAGE: usize = 256;

/// A matching row, owned or borrowed from the row cache.
trait PageRow {
    fn row(&self) -> &Row;
    fn into_row(self) -> Row;
}

impl PageRow for Row {
    fn row(&self) -> &Row {
        self
    }
    fn into_row(self) -> Row {
        self
    }
}

impl PageRow for &Row {
    fn row(&self) -> &Row {
        self
    }
    fn into_row(self) -> Row {
        self.clone()
    }
}

fn scan_source(table: &TableDef) -> String {
    format!("{}_{}", table.id.namespace, table.id.table)
}

impl Engine {
    /// Resolves a table the caller may read and binds a filter against it: the start
    /// of every typed read (select, aggregate, subscription).
    pub(crate) fn bind_read(
        &self,
        ctx: &ExecContext,
        table: &TableId,
        filter: Option<&Filter>,
    ) -> Result<(Arc<TableDef>, Option<BoundFilter>)> {
        let table = self.table_for(ctx, table, TableOp::Read)?;
        let filter = filter.map(|f| f.bind(&table, self.filter_limits())).transpose()?;
        Ok((table, filter))
    }

    pub(crate) fn bind_select(&self, ctx: &ExecContext, table: &TableId, req: &SelectRequest) -> Result<BoundSelect> {
        let (table, filter) = self.bind_read(ctx, table, req.filter.as_ref())?;
        let mut order = req
            .order_by
            .iter()
            .map(|k| k.bind(&table))
            .collect::<Result<Vec<_>>>()?;
        // the primary key breaks ties, so every order is total and pages are stable
        for &c in &table.current().pk {
            if !order.iter().any(|k| k.field == FieldRef::Column(c)) {
                order.push(BoundOrderKey {
                    field: FieldRef::Column(c),
                    descending: false,
                    nulls_first: false,
                });
            }
        }
        Ok(BoundSelect {
            table,
            filter,
            order,
            limit: req.limit,
            offset: req.offset,
        })
    }

    pub fn filter_limits(&self) -> FilterLimits {
        FilterLimits {
            max_depth: self.config.max_filter_depth,
            max_nodes: self.config.max_filter_nodes,
        }
    }

    /// The rows of `table` the caller may see that match the request.
    pub async fn select(&self, ctx: &ExecContext, table: &TableId, req: &SelectRequest) -> Result<Rows> {
        let sel = self.bind_select(ctx, table, req)?;
        let rows = self.select_bound(ctx, &sel).await?;
        Ok(Rows { table: sel.table, rows })
    }

    /// The rows of a bound select.
    pub(crate) async fn select_bound(&self, ctx: &ExecContext, sel: &BoundSelect) -> Result<Vec<Row>> {
        let user = sel.table.table_type.is_per_user().then(|| ctx.subject());
        if let Some(choice) = sel.index_choice(user)?
            && let Some(rows) = self.select_indexed(sel, user, &choice).await?
        {
            return Ok(rows);
        }
        // with no segment the hot tier holds every row: the direct path
        let (direct, manifest) = self
            .cold
            .hot_then_manifest(&sel.table, user, |cold| {
                (!cold).then(|| self.select_direct(ctx, sel)).transpose()
            })
            .await?;
        if let Some(rows) = direct
            && manifest.is_empty()
        {
            return Ok(rows);
        }
        let plan = sel.key_plan();
        let (rows, _) = self.partition_rows(&sel.table, user, &plan).await?;
        let wanted = sel.limit.map(|l| l.saturating_add(sel.offset));
        let matched = rows
            .into_iter()
            .filter(|(s, v)| sel.filter.as_ref().is_none_or(|f| f.matches(*s, v)));
        Ok(sel.page(matched, wanted, sel.in_key_order()))
    }

    /// A select through an index: its entries are walked a chunk at a time, their rows
    /// fetched from both tiers and filtered. A walk in the requested order stops once
    /// the page is full (and past the rows that tie with its last one). `None` when an
    /// unordered walk passes more entries than [`MAX_INDEX_ROWS`]: a full read is
    /// cheaper then.
    async fn select_indexed(
        &self,
        sel: &BoundSelect,
        user: Option<&UserId>,
        choice: &IndexChoice,
    ) -> Result<Option<Vec<Row>>> {
        let table = &sel.table;
        let wanted = sel.limit.map(|l| l.saturating_add(sel.offset));
        let walk = choice.order.as_ref().filter(|_| wanted.is_some());
        let mut cursor = Cursor::new(&choice.ranges, walk.is_some_and(|w| w.reverse));
        // a page the index alone selects takes exactly its rows; with more conditions to
        // pass, twice as many are fetched at a time
        let exact = sel
            .filter
            .as_ref()
            .is_none_or(|f| index::plan::fully_covered(f, choice));
        let chunk = wanted
            .filter(|_| walk.is_some())
            .map_or(256, |w| if exact { w } else { w * 2 }.clamp(8, 256));
        let mut out: Vec<Row> = vec![];
        let mut visited = 0usize;
        'walk: loop {
            if let (Some(w), Some(walk)) = (wanted, walk)
                && walk.exact
                && out.len() >= w
            {
                break;
            }
            let pks = cursor.next_chunk(&self.store, table, chunk)?;
            if pks.is_empty() {
                break;
            }
            visited += pks.len();
            if walk.is_none() && visited > MAX_INDEX_ROWS {
                return Ok(None);
            }
            for row in self.rows_by_keys(table, user, pks).await? {
                if !sel.filter.as_ref().is_none_or(|f| f.matches(row.0, &row.1)) {
                    continue;
                }
                if let (Some(w), Some(walk)) = (wanted, walk)
                    && out.len() >= w
                {
                    let last = &out[w - 1];
                    let ties = walk
                        .keys
                        .iter()
                        .all(|k| k.compare((row.0, &row.1), (last.0, &last.1)).is_eq());
                    if walk.exact || !ties {
                        break 'walk;
                    }
                }
                out.push(row);
            }
        }
        let in_order = walk.is_some_and(|w| w.exact);
        Ok(Some(sel.page(out.into_iter(), wanted, in_order)))
    }

    /// An aggregate whose filter an index narrows to at most [`MAX_INDEX_ROWS`] rows,
    /// computed over those rows in memory; `None` when no index narrows it that far.
    async fn aggregate_indexed(
        &self,
        ctx: &ExecContext,
        table: &Arc<TableDef>,
        filter: Option<&BoundFilter>,
        groups: &[FieldRef],
        specs: &[AggSpec],
    ) -> Result<Option<Vec<AggregateGroup>>> {
        if table.indexes.is_empty() || filter.is_none() {
            return Ok(None);
        }
        let user = table.table_type.is_per_user().then(|| ctx.subject());
        let conds = index::plan::from_filter(filter);
        let Some(choice) = index::plan::choose(table, user, &conds, &[], false)?.filter(|c| c.narrowed) else {
            return Ok(None);
        };
        // counting rows the index alone selects needs no row: its entries are exactly
        // the live rows of both tiers (STREAM rows may have expired under theirs)
        if groups.is_empty()
            && specs.iter().all(|s| s.func == AggFn::Count && s.field.is_none())
            && table.table_type != TableType::Stream
            && filter.is_some_and(|f| index::plan::fully_covered(f, &choice))
        {
            let n = Cursor::new(&choice.ranges, false).count(&self.store, table)?;
            return Ok(Some(vec![AggregateGroup {
                keys: vec![],
                values: vec![Value::BigInt(n as i64); specs.len()],
            }]));
        }
        let pks = Cursor::new(&choice.ranges, false).next_chunk(&self.store, table, MAX_INDEX_ROWS + 1)?;
        if pks.len() > MAX_INDEX_ROWS {
            return Ok(None);
        }
        let mut rows = self.rows_by_keys(table, user, pks).await?;
        rows.retain(|(s, v)| filter.is_none_or(|f| f.matches(*s, v)));
        Ok(aggregate_rows(&rows, groups, specs))
    }

    /// The visible rows of these keys, in the order given (missing ones left out): the
    /// hot versions in one batch, then, for keys the hot tier has no version of, the
    /// newest cold one (as a `_by_pk` lookup finds it).
    pub(crate) async fn rows_by_keys(
        &self,
        table: &Arc<TableDef>,
        user: Option<&UserId>,
        pks: Vec<Pk>,
    ) -> Result<Vec<Row>> {
        let reader = self.reader(table, user);
        let floor = reader.ttl_floor();
        let keys: Vec<Vec<u8>> = pks.iter().map(|pk| row_key(user, pk)).collect::<Result<_>>()?;
        let part = Partition::table(table.uid.0);
        let (hot, manifest) = self
            .cold
            .hot_then_manifest(table, user, |_| {
                self.store
                    .multi_get_with(&part, &keys, |v| v.map(|b| decode_row(table, b)).transpose())?
                    .into_iter()
                    .collect::<Result<Vec<_>>>()
            })
            .await?;
        let cold = !manifest.is_empty() && table.table_type != TableType::Stream;
        let mut out = Vec::with_capacity(pks.len());
        for (pk, found) in pks.iter().zip(hot) {
            match found {
                Some(row) if !row.deleted && floor.is_none_or(|f| row.seq >= f) => out.push((row.seq, row.values)),
                // a tombstone or an expired row: the key has no visible row
                Some(_) => {}
                None if cold => out.extend(self.cold.get(table, user, pk).await?),
                None => {}
            }
        }
        Ok(out)
    }

    /// The direct path: one partition, narrowed by primary-key conditions, filtered
    /// and ordered in memory. In key order it stops as soon as the page is full. A
    /// whole-partition read is served from, or fills, the row cache.
    fn select_direct(&self, ctx: &ExecContext, sel: &BoundSelect) -> Result<Vec<Row>> {
        let table = &sel.table;
        let plan = sel.key_plan();
        let reader = PartitionReader::new(&self.store, table, ctx.subject());
        let wanted = sel.limit.map(|l| l.saturating_add(sel.offset));
        if wanted == Some(0) {
            return Ok(vec![]);
        }
        let floor = reader.ttl_floor();
        let keep = |seq: Seq, values: &[Value]| {
            floor.is_none_or(|f| seq >= f) && sel.filter.as_ref().is_none_or(|f| f.matches(seq, values))
        };
        let early_stop = sel.in_key_order() && wanted.is_some();
        let key: PartitionKey = (table.uid.0, reader.user.cloned());
        let version = table.current().version;
        if plan == KeyPlan::All
            && let Some(part) = self.row_cache.get(&key, version)
        {
            return Ok(sel.page_cached(&part, wanted, early_stop, keep));
        }
        // a complete read of the partition fills the cache; a narrowed or early-stopped
        // one, or one of a partition too large to cache, only collects matches
        let mut filling = plan == KeyPlan::All && !early_stop;
        let generation = self.row_cache.generation();
        let mut all: Vec<Row> = Vec::new();
        let mut matched: Vec<Row> = Vec::new();
        reader.scan(&plan, None, |(seq, values)| {
            if filling {
                all.push((seq, values));
                if all.len() > MAX_PARTITION_ROWS {
                    filling = false;
                    matched.extend(all.drain(..).filter(|(s, v)| keep(*s, v)));
                }
                return true;
            }
            if keep(seq, &values) {
                matched.push((seq, values));
            }
            !early_stop || wanted.is_none_or(|w| matched.len() < w)
        })?;
        if filling {
            let part = Arc::new(CachedPartition::new(all));
            self.row_cache.fill(key, version, generation, part.clone());
            return Ok(sel.page_cached(&part, wanted, early_stop, keep));
        }
        Ok(sel.page(matched.into_iter(), wanted, early_stop))
    }

    fn scan_builder(&self, ctx: &ExecContext, table: &Arc<TableDef>) -> Result<LogicalPlanBuilder> {
        let provider = Arc::new(TieredTableProvider::new(
            self.store.clone(),
            self.cold.clone(),
            table.clone(),
            ctx.subject().clone(),
        ));
        Ok(LogicalPlanBuilder::scan(
            scan_source(table),
            provider_as_source(provider),
            None,
        )?)
    }

    async fn collect(&self, builder: LogicalPlanBuilder) -> Result<Vec<RecordBatch>> {
        let plan = builder.build()?;
        let state = self.statement_state(SessionStateBuilder::new_from_existing(self.df_state.clone()))?;
        self.collect_bounded(DataFrame::new(state, plan)).await
    }

    /// The same request answered by a DataFusion plan (the reference for the direct
    /// path, and the path for anything the direct one does not cover).
    pub async fn select_datafusion(&self, ctx: &ExecContext, table: &TableId, req: &SelectRequest) -> Result<Rows> {
        let sel = self.bind_select(ctx, table, req)?;
        let table = &sel.table;
        let mut b = self.scan_builder(ctx, table)?;
        if let Some(f) = &sel.filter {
            b = b.filter(f.to_df_expr(table))?;
        }
        let sort: Vec<SortExpr> = sel.order.iter().map(|k| k.to_df_sort(table)).collect();
        b = b.sort(sort)?;
        if sel.offset > 0 || sel.limit.is_some() {
            b = b.limit(sel.offset, sel.limit)?;
        }
        let batches = self.collect(b).await?;
        let cols = &table.current().columns;
        let mut rows = Vec::new();
        for batch in &batches {
            let seqs = batch.column(cols.len()).as_primitive::<dt::Int64Type>();
            for i in 0..batch.num_rows() {
                let values = cols
                    .iter()
                    .enumerate()
                    .map(|(ci, c)| array_value(batch.column(ci).as_ref(), i, c.ty))
                    .collect::<Result<Vec<_>>>()?;
                rows.push((Seq(seqs.value(i) as u64), values));
            }
        }
        Ok(Rows {
            table: sel.table.clone(),
            rows,
        })
    }

    /// Aggregates over the matching rows, optionally grouped; groups come ordered by
    /// their keys (nulls last).
    pub async fn aggregate(
        &self,
        ctx: &ExecContext,
        table: &TableId,
        req: &AggregateRequest,
    ) -> Result<Vec<AggregateGroup>> {
        let (table, filter) = self.bind_read(ctx, table, req.filter.as_ref())?;
        let groups = req
            .group_by
            .iter()
            .map(|c| FieldRef::resolve(&table, c))
            .collect::<Result<Vec<_>>>()?;
        // each aggregate checked against its column, with the type of its result
        let mut out_types = Vec::with_capacity(req.aggregates.len());
        let mut specs = Vec::with_capacity(req.aggregates.len());
        for a in &req.aggregates {
            let field = a.column.as_ref().map(|c| FieldRef::resolve(&table, c)).transpose()?;
            let need = |what: &str, ok: fn(ColumnType) -> bool| -> Result<ColumnType> {
                let (f, ty) = field.ok_or_else(|| EngineError::InvalidInput(format!("{what} needs a column")))?;
                if !ok(ty) {
                    return Err(EngineError::TypeMismatch(format!(
                        "{what} does not apply to column '{}' of type {ty}",
                        f.name(&table)
                    )));
                }
                Ok(ty)
            };
            let out = match a.func {
                AggFn::Count => ColumnType::BigInt,
                AggFn::CountDistinct => {
                    need("count distinct", |_| true)?;
                    ColumnType::BigInt
                }
                AggFn::Sum => match need("sum", ColumnType::is_numeric)? {
                    ColumnType::Double => ColumnType::Double,
                    _ => ColumnType::BigInt,
                },
                AggFn::Avg => {
                    need("avg", ColumnType::is_numeric)?;
                    ColumnType::Double
                }
                AggFn::Min => need("min", ColumnType::is_ordered)?,
                AggFn::Max => need("max", ColumnType::is_ordered)?,
            };
            specs.push(AggSpec {
                func: a.func,
                field: field.map(|(f, _)| f),
                ty: field.map_or(ColumnType::BigInt, |(_, t)| t),
            });
            out_types.push(out);
        }
        let group_fields: Vec<FieldRef> = groups.iter().map(|(f, _)| *f).collect();
        if let Some(out) = self
            .aggregate_indexed(ctx, &table, filter.as_ref(), &group_fields, &specs)
            .await?
        {
            return Ok(out);
        }
        let aggr_exprs = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let e = match (s.func, s.field.map(|f| f.df_column(&table))) {
                    (AggFn::Count, None) => count_all(),
                    (AggFn::Count, Some(c)) => count(c),
                    (AggFn::CountDistinct, Some(c)) => count_distinct(c),
                    // integers sum exactly, as in PostgreSQL (whose sum of bigint is
                    // numeric): a total past BIGINT is an error, never a wrapped number
                    (AggFn::Sum, Some(c)) if s.ty != ColumnType::Double => {
                        sum(datafusion::logical_expr::cast(c, dt::DataType::Decimal128(38, 0)))
                    }
                    (AggFn::Sum, Some(c)) => sum(c),
                    (AggFn::Avg, Some(c)) => avg(c),
                    (AggFn::Min, Some(c)) => min(c),
                    (AggFn::Max, Some(c)) => max(c),
                    (_, None) => return Err(EngineError::Internal("an aggregate without its column".into())),
                };
                Ok(e.alias(format!("__agg{i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut b = self.scan_builder(ctx, &table)?;
        if let Some(f) = &filter {
            b = b.filter(f.to_df_expr(&table))?;
        }
        let group_exprs: Vec<Expr> = groups.iter().map(|(f, _)| f.df_column(&table)).collect();
        b = b.aggregate(group_exprs.clone(), aggr_exprs)?;
        if !group_exprs.is_empty() {
            b = b.sort(
                group_exprs
                    .into_iter()
                    .map(|e| SortExpr::new(e, true, false))
                    .collect::<Vec<_>>(),
            )?;
        }
        let batches = self.collect(b).await?;
        let mut out = Vec::new();
        for batch in &batches {
            for i in 0..batch.num_rows() {
                let keys = groups
                    .iter()
                    .enumerate()
                    .map(|(ci, (_, ty))| array_value(batch.column(ci).as_ref(), i, *ty))
                    .collect::<Result<Vec<_>>>()?;
                let values = out_types
                    .iter()
                    .enumerate()
                    .map(|(ai, ty)| aggregate_value(batch.column(groups.len() + ai).as_ref(), i, *ty))
                    .collect::<Result<Vec<_>>>()?;
                out.push(AggregateGroup { keys, values });
            }
        }
        Ok(out)
    }
}

/// An aggregate's value: an exact integer sum (a DECIMAL) as a BIGINT when it fits.
fn aggregate_value(col: &dyn datafusion::arrow::array::Array, i: usize, ty: ColumnType) -> Result<Value> {
    match col.as_primitive_opt::<dt::Decimal128Type>() {
        Some(_) if col.is_null(i) => Ok(Value::Null),
        Some(d) => i64::try_from(d.value(i))
            .map(Value::BigInt)
            .map_err(|_| EngineError::OutOfRange(format!("the sum {} is out of the range of BIGINT", d.value(i)))),
        None => array_value(col, i, ty),
    }
}

#[cfg(test)]
mod tests;
