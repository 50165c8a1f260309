//! The DataFusion `TableProvider` over a table's hot rows. It pushes projection, limit
//! and primary-key predicates down: `pk = v` and `pk IN (...)` become point lookups,
//! `pk <, <=, >, >=` a key range scan, and a per-user table is only ever scanned inside
//! the subject user's key prefix.

use std::ops::Bound;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType as DfTableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use kalamdb_auth::identity::UserId;
use kalamdb_storage::hot_store::HotStore;

use crate::arrow_convert::{rows_to_batch, table_arrow_schema};
use crate::reader::{KeyPlan, PartitionReader};
use crate::schema::TableDef;
use crate::types::{ColumnType, Value};

#[derive(Debug)]
pub struct HotTableProvider {
    store: Arc<HotStore>,
    table: Arc<TableDef>,
    subject: UserId,
    schema: SchemaRef,
}

impl HotTableProvider {
    pub fn new(store: Arc<HotStore>, table: Arc<TableDef>, subject: UserId) -> Self {
        let schema = table_arrow_schema(&table);
        Self {
            store,
            table,
            subject,
            schema,
        }
    }
}

/// Converts a literal from a filter to a key value of the primary key's type.
fn scalar_to_key(ty: ColumnType, s: &ScalarValue) -> Option<Value> {
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

#[async_trait]
impl TableProvider for HotTableProvider {
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
        let plan = key_plan(&self.table, filters);
        // a limit may only stop the scan early when no filter is left to apply
        let limit = if filters.is_empty() { limit } else { None };
        let reader = PartitionReader::new(&self.store, &self.table, &self.subject);
        let mut rows = Vec::new();
        reader
            .scan(&plan, limit, |r| {
                rows.push(r);
                true
            })
            .map_err(|e| e.into_datafusion())?;
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let projection = projection.cloned().unwrap_or(all);
        let batch = rows_to_batch(&self.table, &self.schema, &projection, &rows).map_err(|e| e.into_datafusion())?;
        let exec = MemorySourceConfig::try_new_exec(&[vec![batch.clone()]], batch.schema(), None)?;
        Ok(exec)
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
