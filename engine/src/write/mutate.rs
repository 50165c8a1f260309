//! The typed write API beyond plain inserts: updates and deletes chosen by a typed
//! filter or by primary key, with `_set` and `_inc` assignments. Rows are found with
//! the read API and changed with a `_seq` compare-and-set, retried while they keep
//! changing under the statement.

use std::sync::Arc;

use kalamdb_auth::permissions::TableOp;

use crate::catalog::schema::TableDef;
use crate::context::ExecContext;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::ids::{ColumnName, TableId};
use crate::read::filter::Filter;
use crate::read::select::SelectRequest;
use crate::types::{Pk, Value};
use crate::write::commit::{AppliedChange, WriteOp};
use crate::write::row_expr::{BinOp, RowExpr};

/// What an insert does when a row with its primary key exists.
#[derive(Debug, Clone, PartialEq)]
pub enum ConflictAction {
    Error,
    DoNothing,
    /// Update these columns from the proposed row (an empty list does nothing).
    Update(Vec<ColumnName>),
}

/// The changes of one write, with the table definition whose current schema orders
/// their values.
#[derive(Debug)]
pub struct Changes {
    pub table: Arc<TableDef>,
    pub changes: Vec<AppliedChange>,
}

/// One assignment of an update.
#[derive(Debug, Clone, PartialEq)]
pub enum Assign {
    Set(Value),
    /// Adds to a numeric column (`_inc`), atomically at commit time.
    Inc(Value),
}

impl Engine {
    fn compile_assignments(table: &TableDef, set: &[(ColumnName, Assign)]) -> Result<Vec<(usize, RowExpr)>> {
        let schema = table.current();
        let mut out: Vec<(usize, RowExpr)> = Vec::with_capacity(set.len());
        for (name, a) in set {
            let i = Self::column_index(table, name.as_str())?;
            let col = &schema.columns[i];
            if schema.is_pk(i) {
                return Err(EngineError::InvalidInput(format!(
                    "the primary key column '{name}' cannot be changed"
                )));
            }
            if out.iter().any(|(j, _)| *j == i) {
                return Err(EngineError::InvalidInput(format!("column '{name}' is assigned twice")));
            }
            let typed = |v: &Value| {
                v.clone().coerce(col.ty).map_err(|e| match e {
                    EngineError::TypeMismatch(m) => EngineError::TypeMismatch(format!("column '{name}': {m}")),
                    other => other,
                })
            };
            let expr = match a {
                Assign::Set(v) => RowExpr::Literal(typed(v)?),
                Assign::Inc(v) => {
                    if !col.ty.is_numeric() {
                        return Err(EngineError::TypeMismatch(format!(
                            "_inc needs a numeric column; '{name}' is {}",
                            col.ty
                        )));
                    }
                    if v.is_null() {
                        return Err(EngineError::InvalidInput(format!("_inc of '{name}' needs a value")));
                    }
                    RowExpr::Binary(
                        BinOp::Add,
                        Box::new(RowExpr::Column(i)),
                        Box::new(RowExpr::Literal(typed(v)?)),
                    )
                }
            };
            out.push((i, expr));
        }
        Ok(out)
    }

    /// Updates every row the caller sees that matches `filter`.
    pub async fn update_where(
        &self,
        ctx: &ExecContext,
        table: &TableId,
        filter: &Filter,
        set: &[(ColumnName, Assign)],
    ) -> Result<Changes> {
        let def = self.table_for(ctx, table, TableOp::Write)?;
        let exprs = Self::compile_assignments(&def, set)?;
        let req = SelectRequest {
            filter: Some(filter.clone()),
            ..SelectRequest::default()
        };
        let (req, exprs, def) = (&req, &exprs, &def);
        self.retrying(|| async move {
            let rows = self.select(ctx, table, req).await?.rows;
            let ops = rows
                .into_iter()
                .map(|(seq, values)| WriteOp::Update {
                    pk: def.current().pk_of(&values),
                    expected_seq: Some(seq),
                    set: exprs.clone(),
                })
                .collect();
            Ok(Changes {
                table: def.clone(),
                changes: self.write(def, ctx, ops).await?.changes,
            })
        })
        .await
    }

    /// Updates the row with this primary key, if the caller sees one.
    pub async fn update_by_pk(
        &self,
        ctx: &ExecContext,
        table: &TableId,
        pk: &Pk,
        set: &[(ColumnName, Assign)],
    ) -> Result<Changes> {
        let def = self.table_for(ctx, table, TableOp::Write)?;
        let exprs = Self::compile_assignments(&def, set)?;
        let pk = def.current().coerce_pk(pk.clone())?;
        let out = self
            .write(
                &def,
                ctx,
                vec![WriteOp::Update {
                    pk,
                    expected_seq: None,
                    set: exprs,
                }],
            )
            .await?;
        Ok(Changes {
            table: def,
            changes: out.changes,
        })
    }

    /// Deletes every row the caller sees that matches `filter`.
    pub async fn delete_where(&self, ctx: &ExecContext, table: &TableId, filter: &Filter) -> Result<Changes> {
        let def = self.table_for(ctx, table, TableOp::Write)?;
        let req = SelectRequest {
            filter: Some(filter.clone()),
            ..SelectRequest::default()
        };
        let (req, def) = (&req, &def);
        self.retrying(|| async move {
            let rows = self.select(ctx, table, req).await?.rows;
            let ops = rows
                .into_iter()
                .map(|(seq, values)| WriteOp::Delete {
                    pk: def.current().pk_of(&values),
                    expected_seq: Some(seq),
                })
                .collect();
            Ok(Changes {
                table: def.clone(),
                changes: self.write(def, ctx, ops).await?.changes,
            })
        })
        .await
    }

    /// Deletes the row with this primary key, if the caller sees one.
    pub async fn delete_by_pk(&self, ctx: &ExecContext, table: &TableId, pk: &Pk) -> Result<Changes> {
        let def = self.table_for(ctx, table, TableOp::Write)?;
        let pk = def.current().coerce_pk(pk.clone())?;
        let out = self
            .write(&def, ctx, vec![WriteOp::Delete { pk, expected_seq: None }])
            .await?;
        Ok(Changes {
            table: def,
            changes: out.changes,
        })
    }
}
