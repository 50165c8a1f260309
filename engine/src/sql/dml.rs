//! INSERT, UPDATE and DELETE. Rows to change are found with a DataFusion query over
//! the caller's view of the table; the change itself is a typed [`WriteOp`] checked
//! again at commit time (`_seq` compare-and-set), and the statement is retried when a
//! row changed in between.

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes as dt;
use datafusion::sql::sqlparser::ast::{
    self, Expr, FromTable, Ident, ObjectName, OnConflictAction, OnInsert, SelectItem, SetExpr, TableFactor, TableObject,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use kalamdb_auth::permissions::TableOp;
use kalamdb_storage::seq::Seq;
use std::sync::Arc;

use crate::catalog::schema::TableDef;
use crate::context::ExecContext;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::read::arrow_convert::array_value;
use crate::sql::eval::{compile_row_expr, eval_const};
use crate::sql::parse::{ident_name, table_id};
use crate::sql::result::SqlResult;
use crate::types::Pk;
use crate::write::commit::{OnConflict, WriteOp};
use crate::write::row_expr::RowExpr;

fn column_name(n: &ObjectName) -> Result<String> {
    match n.0.last() {
        Some(ast::ObjectNamePart::Identifier(i)) => Ok(ident_name(i)),
        _ => Err(EngineError::Syntax(format!("bad column name {n}"))),
    }
}

fn single_table(from: &[ast::TableWithJoins]) -> Result<&ObjectName> {
    match from {
        [t] if t.joins.is_empty() => match &t.relation {
            TableFactor::Table { name, .. } => Ok(name),
            _ => Err(EngineError::Unsupported("the target must be a table".into())),
        },
        _ => Err(EngineError::Unsupported(
            "UPDATE and DELETE take exactly one table, without joins".into(),
        )),
    }
}

fn is_default_keyword(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("DEFAULT"))
}

impl Engine {
    /// Dispatches the standard statements that sqlparser parsed.
    pub(crate) async fn execute_standard(
        &self,
        ctx: &ExecContext,
        stmt: ast::Statement,
        params: &[serde_json::Value],
    ) -> Result<SqlResult> {
        match stmt {
            ast::Statement::Query(_) | ast::Statement::Explain { .. } => {
                let batches = self.run_query(ctx, stmt, params).await?;
                let (columns, rows) = crate::read::arrow_convert::batches_to_json(&batches)?;
                Ok(SqlResult {
                    columns,
                    rows,
                    ..SqlResult::default()
                })
            }
            ast::Statement::Insert(ins) => self.retrying(|| self.insert_stmt(ctx, &ins, params)).await,
            ast::Statement::Update(upd) => {
                if upd.from.is_some() || upd.returning.is_some() {
                    return Err(EngineError::Unsupported(
                        "UPDATE ... FROM / RETURNING is not supported".into(),
                    ));
                }
                let name = single_table(std::slice::from_ref(&upd.table))?;
                self.retrying(|| self.update_stmt(ctx, name, &upd.assignments, upd.selection.as_ref(), params))
                    .await
            }
            ast::Statement::Delete(del) => {
                if del.using.is_some() || del.returning.is_some() {
                    return Err(EngineError::Unsupported(
                        "DELETE ... USING / RETURNING is not supported".into(),
                    ));
                }
                let from = match &del.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
                };
                let name = single_table(from)?;
                self.retrying(|| self.delete_stmt(ctx, name, del.selection.as_ref(), params))
                    .await
            }
            ast::Statement::CreateTable(ct) => self.create_table(ctx, &ct).await,
            ast::Statement::AlterTable(at) => self.alter_table(ctx, &at.name, &at.operations).await,
            ast::Statement::Drop {
                object_type,
                if_exists,
                names,
                ..
            } => self.drop_statement(ctx, object_type, &names, if_exists).await,
            other => Err(EngineError::Unsupported(format!(
                "statement not supported: {}",
                other
                    .to_string()
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            ))),
        }
    }

    async fn insert_stmt(
        &self,
        ctx: &ExecContext,
        ins: &ast::Insert,
        params: &[serde_json::Value],
    ) -> Result<SqlResult> {
        let TableObject::TableName(name) = &ins.table else {
            return Err(EngineError::Unsupported(
                "INSERT into a table function is not supported".into(),
            ));
        };
        if ins.returning.is_some() {
            return Err(EngineError::Unsupported(
                "INSERT ... RETURNING is not supported in SQL; use GraphQL".into(),
            ));
        }
        let table = self.table_for(ctx, &table_id(name)?, TableOp::Write)?;
        let schema = table.current();
        let columns: Vec<usize> = if ins.columns.is_empty() {
            (0..schema.columns.len()).collect()
        } else {
            ins.columns
                .iter()
                .map(|c| Self::column_index(&table, &column_name(c)?))
                .collect::<Result<_>>()?
        };
        let rows = match ins.source.as_deref().map(|q| q.body.as_ref()) {
            Some(SetExpr::Values(v)) => &v.rows,
            _ => return Err(EngineError::Unsupported("only INSERT ... VALUES is supported".into())),
        };
        let on_conflict = match &ins.on {
            None => OnConflict::Error,
            Some(OnInsert::OnConflict(oc)) => {
                // the target is the primary key: its columns (in any order), or its
                // constraint, named as PostgreSQL names it (`<table>_pkey`)
                let names_key = match &oc.conflict_target {
                    None => true,
                    Some(ast::ConflictTarget::Columns(cols)) => {
                        let mut named: Vec<String> = cols.iter().map(ident_name).collect();
                        let mut key: Vec<String> = schema.pk_columns().map(|c| c.name.to_string()).collect();
                        named.sort();
                        key.sort();
                        named == key
                    }
                    Some(ast::ConflictTarget::OnConstraint(name)) => {
                        name.0.len() == 1 && name.to_string().trim_matches('"') == format!("{}_pkey", table.id.table)
                    }
                };
                if !names_key {
                    return Err(EngineError::InvalidInput(format!(
                        "ON CONFLICT must name the primary key: {} or ON CONSTRAINT {}_pkey",
                        schema.pk_names(),
                        table.id.table
                    )));
                }
                match &oc.action {
                    OnConflictAction::DoNothing => OnConflict::DoNothing,
                    OnConflictAction::DoUpdate(du) => {
                        if du.selection.is_some() {
                            return Err(EngineError::Unsupported(
                                "ON CONFLICT DO UPDATE ... WHERE is not supported".into(),
                            ));
                        }
                        OnConflict::DoUpdate(self.assignments(ctx, &table, &du.assignments, params)?)
                    }
                }
            }
            Some(_) => {
                return Err(EngineError::Unsupported(
                    "use ON CONFLICT (key columns) DO UPDATE / DO NOTHING".into(),
                ));
            }
        };
        let env = self.eval_env(ctx, params);
        let mut ops = Vec::with_capacity(rows.len());
        for row in rows {
            if row.len() != columns.len() {
                return Err(EngineError::InvalidInput(format!(
                    "INSERT has {} column(s) but a row has {} value(s)",
                    columns.len(),
                    row.len()
                )));
            }
            let mut provided = Vec::with_capacity(row.len());
            for (e, &ci) in row.iter().zip(&columns) {
                if is_default_keyword(e) {
                    continue;
                }
                let col = &schema.columns[ci];
                let v = eval_const(e, col.ty, &env).map_err(|err| match err {
                    EngineError::TypeMismatch(m) => EngineError::TypeMismatch(format!("column '{}': {m}", col.name)),
                    other => other,
                })?;
                provided.push((ci, v));
            }
            ops.push(WriteOp::Insert {
                values: Self::build_row(&table, provided, &env)?,
                on_conflict: on_conflict.clone(),
            });
        }
        let out = self.write(&table, ctx, ops).await?;
        Ok(SqlResult::affected(out.changes.len() as u64))
    }

    fn assignments(
        &self,
        ctx: &ExecContext,
        table: &TableDef,
        list: &[ast::Assignment],
        params: &[serde_json::Value],
    ) -> Result<Vec<(usize, RowExpr)>> {
        let env = self.eval_env(ctx, params);
        list.iter()
            .map(|a| {
                let name = match &a.target {
                    ast::AssignmentTarget::ColumnName(n) => column_name(n)?,
                    ast::AssignmentTarget::Tuple(_) => {
                        return Err(EngineError::Unsupported("tuple assignments are not supported".into()));
                    }
                };
                let idx = Self::column_index(table, &name)?;
                let expr = compile_row_expr(&a.value, Some(table.current()), &env)?;
                // check the type now, so that a bad literal fails before anything is read
                if let RowExpr::Literal(v) = &expr {
                    v.clone().coerce(table.current().columns[idx].ty)?;
                }
                Ok((idx, expr))
            })
            .collect()
    }

    async fn update_stmt(
        &self,
        ctx: &ExecContext,
        name: &ObjectName,
        assignments: &[ast::Assignment],
        selection: Option<&Expr>,
        params: &[serde_json::Value],
    ) -> Result<SqlResult> {
        let table = self.table_for(ctx, &table_id(name)?, TableOp::Write)?;
        let set = self.assignments(ctx, &table, assignments, params)?;
        let keys = self.matching_keys(ctx, &table, selection, params).await?;
        let ops = keys
            .into_iter()
            .map(|(pk, seq)| WriteOp::Update {
                pk,
                expected_seq: Some(seq),
                set: set.clone(),
            })
            .collect();
        let out = self.write(&table, ctx, ops).await?;
        Ok(SqlResult::affected(out.changes.len() as u64))
    }

    async fn delete_stmt(
        &self,
        ctx: &ExecContext,
        name: &ObjectName,
        selection: Option<&Expr>,
        params: &[serde_json::Value],
    ) -> Result<SqlResult> {
        let table = self.table_for(ctx, &table_id(name)?, TableOp::Write)?;
        let keys = self.matching_keys(ctx, &table, selection, params).await?;
        let ops = keys
            .into_iter()
            .map(|(pk, seq)| WriteOp::Delete {
                pk,
                expected_seq: Some(seq),
            })
            .collect();
        let out = self.write(&table, ctx, ops).await?;
        Ok(SqlResult::affected(out.changes.len() as u64))
    }

    /// The key and version of every row of `table` (as the caller sees it) that
    /// matches `selection`. The query is an AST built from the catalog's names and the
    /// statement's own parsed WHERE clause.
    async fn matching_keys(
        &self,
        ctx: &ExecContext,
        table: &Arc<TableDef>,
        selection: Option<&Expr>,
        params: &[serde_json::Value],
    ) -> Result<Vec<(Pk, Seq)>> {
        let mut stmts = Parser::parse_sql(&GenericDialect {}, "SELECT k, s FROM t")
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let mut stmt = stmts.pop().ok_or_else(|| EngineError::Internal("template".into()))?;
        let schema = table.current();
        if let ast::Statement::Query(q) = &mut stmt
            && let SetExpr::Select(sel) = q.body.as_mut()
        {
            let column = |name: &str| SelectItem::UnnamedExpr(Expr::Identifier(Ident::with_quote('"', name)));
            sel.projection = schema
                .pk_columns()
                .map(|c| column(c.name.as_str()))
                .chain([column("_seq")])
                .collect();
            if let TableFactor::Table { name, .. } = &mut sel.from[0].relation {
                *name = ObjectName::from(vec![
                    Ident::with_quote('"', table.id.namespace.as_str()),
                    Ident::with_quote('"', table.id.table.as_str()),
                ]);
            }
            sel.selection = selection.cloned();
        }
        let batches: Vec<RecordBatch> = self.run_query(ctx, stmt, params).await?;
        let mut out = Vec::new();
        let n = schema.pk.len();
        for b in &batches {
            let seqs = b.column(n).as_primitive::<dt::Int64Type>();
            for i in 0..b.num_rows() {
                let pk = schema
                    .pk_columns()
                    .enumerate()
                    .map(|(j, c)| array_value(b.column(j).as_ref(), i, c.ty))
                    .collect::<Result<_>>()?;
                out.push((Pk(pk), Seq(seqs.value(i) as u64)));
            }
        }
        Ok(out)
    }
}
