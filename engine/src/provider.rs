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
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType as DfTableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use kalamdb_auth::identity::UserId;
use kalamdb_storage::cold::{ReadRequest, SegmentMeta};
use kalamdb_storage::hot_store::HotStore;
use kalamdb_storage::keys::KeyReader;
use kalamdb_storage::seq::Seq;

use crate::arrow_convert::{rows_to_batch, table_arrow_schema};
use crate::codec::{decode_key_value, partition_prefix};
use crate::cold::{
    ColdTier, conform, filters_allow, key_filter, partition_dir, pk_array, pk_keys, plan_allows, shadowed, unseen_mask,
};
use crate::error::{EngineError, Result};
use crate::reader::{KeyPlan, PartitionReader};
use crate::schema::TableDef;
use crate::types::{ColumnType, Value};

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

/// `pk <op> literal`, normalised so the column is on the left.
fn pk_comparison<'a>(e: &'a Expr, pk: &str) -> Option<(Operator, &'a ScalarValue)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) if c.name == pk => Some((*op, v)),
        (Expr::Literal(v, _), Expr::Column(c)) if c.name == pk => Some((op.swap()?, v)),
        _ => None,
    }
}

/// The narrowest key plan the filters allow. Every filter stays applied above the scan
/// (pushdown is `Inexact`), so a plan only has to cover the matching keys.
pub fn key_plan(table: &TableDef, filters: &[Expr]) -> KeyPlan {
    let schema = table.current();
    let pk = schema.pk_column();
    let (mut lo, mut hi) = (Bound::Unbounded, Bound::Unbounded);
    for f in filters {
        if let Expr::InList(list) = f {
            if !list.negated && matches!(list.expr.as_ref(), Expr::Column(c) if c.name == pk.name.as_str()) {
                let keys: Option<Vec<Value>> = list
                    .list
                    .iter()
                    .map(|e| match e {
                        Expr::Literal(s, _) => scalar_to_key(pk.ty, s),
                        _ => None,
                    })
                    .collect();
                if let Some(keys) = keys {
                    return KeyPlan::Points(keys);
                }
            }
            continue;
        }
        let Some((op, lit)) = pk_comparison(f, pk.name.as_str()) else {
            continue;
        };
        let Some(v) = scalar_to_key(pk.ty, lit) else { continue };
        match op {
            Operator::Eq => return KeyPlan::Points(vec![v]),
            Operator::Gt => lo = Bound::Excluded(v),
            Operator::GtEq => lo = Bound::Included(v),
            Operator::Lt => hi = Bound::Excluded(v),
            Operator::LtEq => hi = Bound::Included(v),
            _ => {}
        }
    }
    match (&lo, &hi) {
        (Bound::Unbounded, Bound::Unbounded) => KeyPlan::All,
        _ => KeyPlan::Range { lo, hi },
    }
}

/// The hot side of a scan: visible rows, and every key the hot tier holds a version of.
struct HotSide {
    rows: Vec<(Seq, Vec<Value>)>,
    keys: HashSet<Vec<u8>>,
    pks: Vec<Value>,
}

impl TieredTableProvider {
    fn scan_hot(&self, plan: &KeyPlan, limit: Option<usize>, with_keys: bool) -> Result<HotSide> {
        let user = self.table.table_type.is_per_user().then_some(&self.subject);
        let reader = PartitionReader {
            store: &self.store,
            table: &self.table,
            user,
        };
        let floor = reader.ttl_floor();
        let prefix = partition_prefix(user).len();
        let pk_ty = self.table.current().pk_column().ty;
        let mut side = HotSide {
            rows: vec![],
            keys: HashSet::new(),
            pks: vec![],
        };
        reader.scan_stored(plan, |key, row| {
            if with_keys {
                let pk = &key[prefix..];
                if let Some(v) = decode_key_value(&mut KeyReader::new(pk), pk_ty) {
                    side.pks.push(v);
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
        let plan = key_plan(&self.table, filters);
        // a limit may only stop the scan early when no filter is left to apply
        let limit = if filters.is_empty() { limit } else { None };
        let user = self.table.table_type.is_per_user().then_some(&self.subject);
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let projection = projection.cloned().unwrap_or(all);
        let out = Arc::new(self.schema.project(&projection)?);

        let (hot, manifest) = self
            .cold
            .hot_then_manifest(&self.table, user, |cold| self.scan_hot(&plan, limit, cold))
            .await
            .map_err(df)?;
        let hot_batch = rows_to_batch(&self.table, &self.schema, &projection, &hot.rows).map_err(df)?;
        let mut partitions = vec![vec![hot_batch]];
        if !manifest.is_empty() {
            let table = &self.table;
            let segs: Vec<&SegmentMeta> = manifest
                .newest_first()
                .filter(|s| plan_allows(table, s, &plan))
                .collect();
            let shadow = shadowed(table, &segs, &hot.pks);
            let emit: Vec<bool> = segs.iter().map(|s| filters_allow(table, s, filters)).collect();
            let cols = &table.current().columns;
            let pk_id = table.current().pk_column().id.0;
            let mut wanted: Vec<u32> = projection
                .iter()
                .filter(|&&p| p < cols.len())
                .map(|&p| cols[p].id.0)
                .collect();
            if shadow.iter().any(|s| *s) && !wanted.contains(&pk_id) {
                wanted.push(pk_id);
            }
            let key = match &plan {
                KeyPlan::Points(pks) => key_filter(table, pks),
                _ => None,
            };
            let dir = partition_dir(table, user);
            let reads: Vec<(&SegmentMeta, bool, bool)> = segs
                .iter()
                .zip(shadow.iter().zip(&emit))
                .filter(|(_, (sh, em))| **sh || **em)
                .map(|(s, (sh, em))| (*s, *sh, *em))
                .collect();
            let chosen: Vec<&SegmentMeta> = reads.iter().map(|r| r.0).collect();
            let read = self
                .cold
                .read_segments(&dir, &chosen, || ReadRequest {
                    columns: Some(wanted.clone()),
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
                            let pk = pk_array(table, &b)
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
                        partitions.push(part);
                    }
                }
            }
        }
        Ok(MemorySourceConfig::try_new_exec(&partitions, out, None)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ColumnId, ColumnName, NamespaceId, StorageUid, TableId, TableName};
    use crate::schema::{ColumnDef, TableSchema};
    use datafusion::prelude::{col, lit};
    use kalamdb_auth::permissions::{AccessLevel, TableType};

    fn table() -> TableDef {
        let c = |id, name: &str, ty| ColumnDef {
            id: ColumnId(id),
            name: ColumnName::parse(name).unwrap(),
            ty,
            nullable: true,
            default: None,
        };
        TableDef {
            id: TableId::new(NamespaceId::public(), TableName::parse("t").unwrap()),
            uid: StorageUid(1),
            table_type: TableType::Shared,
            access_level: AccessLevel::Public,
            ttl_seconds: None,
            flush_policy: None,
            versions: vec![TableSchema {
                version: 1,
                pk: 0,
                columns: vec![c(1, "id", ColumnType::BigInt), c(2, "name", ColumnType::Text)],
            }],
            next_column_id: 3,
            created_at_ms: 0,
        }
    }

    #[test]
    fn primary_key_predicates_become_lookups_and_ranges() {
        let t = table();
        assert_eq!(
            key_plan(&t, &[col("id").eq(lit(5i32))]),
            KeyPlan::Points(vec![Value::BigInt(5)])
        );
        assert_eq!(
            key_plan(&t, &[lit(7i64).eq(col("id"))]),
            KeyPlan::Points(vec![Value::BigInt(7)])
        );
        assert_eq!(
            key_plan(&t, &[col("id").in_list(vec![lit(1i64), lit(2i64)], false)]),
            KeyPlan::Points(vec![Value::BigInt(1), Value::BigInt(2)])
        );
        assert_eq!(
            key_plan(&t, &[col("id").gt(lit(3i64)), col("id").lt_eq(lit(9i64))]),
            KeyPlan::Range {
                lo: Bound::Excluded(Value::BigInt(3)),
                hi: Bound::Included(Value::BigInt(9))
            }
        );
        // a literal on the left flips the comparison: 3 < id is id > 3
        assert_eq!(
            key_plan(&t, &[lit(3i64).lt(col("id"))]),
            KeyPlan::Range {
                lo: Bound::Excluded(Value::BigInt(3)),
                hi: Bound::Unbounded
            }
        );
        assert_eq!(key_plan(&t, &[col("name").eq(lit("x"))]), KeyPlan::All);
        assert_eq!(key_plan(&t, &[col("id").in_list(vec![lit(1i64)], true)]), KeyPlan::All);
    }
}
