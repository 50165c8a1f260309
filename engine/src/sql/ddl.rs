//! DDL and administration: namespaces, tables (create, alter, drop), users, SHOW and
//! DESCRIBE. All of it needs the dba role or higher (users: see
//! `permissions::can_manage_user`), and every change is persisted before it is visible.

use datafusion::sql::sqlparser::ast::{self, AlterTableOperation, ObjectType};
use kalamdb_auth::{identity::Role, identity::UserId, permissions, permissions::TableType};
use kalamdb_storage::{hot_store::Partition, seq::now_millis};
use serde_json::json;

use crate::accounts::users::UserRecord;
use crate::catalog::NamespaceDef;
use crate::catalog::schema::DefaultExpr;
use crate::context::ExecContext;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::ids::{ColumnId, ColumnName, NamespaceId, TableId};
use crate::jobs::{JobKind, JobTarget};
use crate::sql::parse::{Statement, UserChange, ident_name, table_id};
use crate::sql::result::SqlResult;

mod create;

use create::column_def;

const RESERVED_COLUMNS: [&str; 2] = ["_seq", "_deleted"];

pub(crate) fn require_ddl(ctx: &ExecContext) -> Result<()> {
    if permissions::can_run_ddl(ctx.role) {
        Ok(())
    } else {
        Err(EngineError::forbidden(format!(
            "role {} may not change the schema",
            ctx.role
        )))
    }
}

impl Engine {
    pub(crate) async fn execute_admin(&self, ctx: &ExecContext, stmt: Statement) -> Result<SqlResult> {
        match stmt {
            Statement::CreateNamespace { name, if_not_exists } => {
                require_ddl(ctx)?;
                if name == NamespaceId::system() || self.catalog.namespace_exists(&name) {
                    if if_not_exists && name != NamespaceId::system() {
                        return Ok(SqlResult::message(format!("namespace {name} already exists")));
                    }
                    return Err(EngineError::AlreadyExists(format!("namespace '{name}'")));
                }
                let (catalog, def) = (
                    self.catalog.clone(),
                    NamespaceDef {
                        id: name.clone(),
                        created_at_ms: now_millis(),
                    },
                );
                self.commit
                    .exclusive(move |store| catalog.put_namespace(store, def))
                    .await??;
                Ok(SqlResult::message(format!("namespace {name} created")))
            }
            Statement::DropNamespace {
                name,
                if_exists,
                cascade,
            } => {
                require_ddl(ctx)?;
                if name == NamespaceId::public() || name == NamespaceId::system() {
                    return Err(EngineError::forbidden(format!("namespace {name} cannot be dropped")));
                }
                if !self.catalog.namespace_exists(&name) {
                    if if_exists {
                        return Ok(SqlResult::message(format!("namespace {name} does not exist")));
                    }
                    return Err(EngineError::NamespaceNotFound(name.to_string()));
                }
                let tables = self.catalog.tables_in(&name);
                if !tables.is_empty() && !cascade {
                    return Err(EngineError::InvalidInput(format!(
                        "namespace {name} still has {} table(s): drop them first or use CASCADE",
                        tables.len()
                    )));
                }
                for t in tables {
                    self.drop_table(&t.id).await?;
                }
                let catalog = self.catalog.clone();
                let ns = name.clone();
                self.commit
                    .exclusive(move |store| catalog.remove_namespace(store, &ns))
                    .await??;
                Ok(SqlResult::message(format!("namespace {name} dropped")))
            }
            Statement::CreateUser {
                name,
                password,
                role,
                if_not_exists,
            } => {
                self.require_user_admin(ctx, role)?;
                let id = UserId::parse(&name)?;
                if self.accounts.users.active(&id).is_some() {
                    if if_not_exists {
                        return Ok(SqlResult::message(format!("user {id} already exists")));
                    }
                    return Err(EngineError::AlreadyExists(format!("user '{id}'")));
                }
                let hash = match password {
                    Some(p) => Some(self.accounts.hash_password(p).await?),
                    None => None,
                };
                let now = now_millis();
                // a name used before starts above the old account's epoch, so that
                // the old account's tokens never work for the new one
                let session_epoch = self.accounts.users.get(&id).map_or(0, |old| old.session_epoch + 1);
                self.accounts.users.put(
                    &self.store,
                    UserRecord {
                        id: id.clone(),
                        role,
                        password_hash: hash,
                        created_at_ms: now,
                        updated_at_ms: now,
                        deleted_at_ms: None,
                        session_epoch,
                    },
                )?;
                Ok(SqlResult::message(format!("user {id} created")))
            }
            Statement::AlterUser { name, change } => {
                let id = UserId::parse(&name)?;
                let mut user = self
                    .accounts
                    .users
                    .active(&id)
                    .ok_or_else(|| EngineError::UserNotFound(id.to_string()))?;
                let own_password = matches!(change, UserChange::Password(_)) && ctx.user == id;
                if !own_password {
                    self.require_user_admin(ctx, user.role)?;
                }
                match change {
                    UserChange::Password(p) => user.password_hash = Some(self.accounts.hash_password(p).await?),
                    UserChange::Role(r) => {
                        self.require_user_admin(ctx, r)?;
                        if id.as_str() == UserId::ROOT {
                            return Err(EngineError::forbidden("the role of root cannot be changed"));
                        }
                        user.role = r;
                    }
                }
                user.updated_at_ms = now_millis();
                user.session_epoch += 1;
                self.accounts.users.put(&self.store, user)?;
                self.accounts.revoke_user_sessions(&id);
                Ok(SqlResult::message(format!("user {id} altered")))
            }
            Statement::DropUser { name, if_exists } => {
                let id = UserId::parse(&name)?;
                let Some(mut user) = self.accounts.users.active(&id) else {
                    if if_exists {
                        return Ok(SqlResult::message(format!("user {id} does not exist")));
                    }
                    return Err(EngineError::UserNotFound(id.to_string()));
                };
                self.require_user_admin(ctx, user.role)?;
                if id.as_str() == UserId::ROOT || id == ctx.user {
                    return Err(EngineError::forbidden(format!(
                        "user {id} cannot be dropped by this session"
                    )));
                }
                let now = now_millis();
                user.deleted_at_ms = Some(now);
                user.updated_at_ms = now;
                user.session_epoch += 1;
                self.accounts.users.put(&self.store, user)?;
                self.accounts.revoke_user_sessions(&id);
                Ok(SqlResult::message(format!("user {id} dropped")))
            }
            Statement::ShowNamespaces => {
                let rows = self
                    .catalog
                    .namespaces()
                    .into_iter()
                    .map(|n| vec![json!(n.id.as_str())])
                    .collect();
                Ok(SqlResult::table(&["namespace"], rows))
            }
            Statement::ShowTables { namespace } => {
                if let Some(ns) = &namespace
                    && !self.catalog.namespace_exists(ns)
                {
                    return Err(EngineError::NamespaceNotFound(ns.to_string()));
                }
                let rows = self
                    .catalog
                    .tables()
                    .into_iter()
                    .filter(|t| namespace.as_ref().is_none_or(|n| &t.id.namespace == n))
                    .filter(|t| {
                        crate::engine::authorize_table(ctx, t, kalamdb_auth::permissions::TableOp::Read).is_ok()
                    })
                    .map(|t| {
                        vec![
                            json!(t.id.namespace.as_str()),
                            json!(t.id.table.as_str()),
                            json!(t.table_type.as_str()),
                            json!((t.table_type == TableType::Shared).then(|| t.access_level.as_str())),
                        ]
                    })
                    .collect();
                Ok(SqlResult::table(
                    &["namespace", "table_name", "table_type", "access_level"],
                    rows,
                ))
            }
            Statement::DescribeTable { table } => {
                let t = self.table_for(ctx, &table, kalamdb_auth::permissions::TableOp::Read)?;
                let schema = t.current();
                let rows = schema
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        vec![
                            json!(c.name.as_str()),
                            json!(c.ty.as_str()),
                            json!(c.nullable),
                            json!(schema.is_pk(i)),
                            json!(c.default.as_ref().map(DefaultExpr::sql)),
                        ]
                    })
                    .collect();
                Ok(SqlResult::table(
                    &["column_name", "data_type", "is_nullable", "is_primary_key", "default"],
                    rows,
                ))
            }
            Statement::CreateIndex {
                name,
                table,
                columns,
                unique,
                if_not_exists,
            } => {
                self.create_index(ctx, name, table, columns, unique, if_not_exists)
                    .await
            }
            Statement::DropIndex {
                namespace,
                name,
                if_exists,
            } => self.drop_index(ctx, namespace, name, if_exists).await,
            Statement::ShowIndexes { table } => self.show_indexes(ctx, table),
            s @ (Statement::FlushTable { .. }
            | Statement::FlushAll { .. }
            | Statement::CompactTable { .. }
            | Statement::KillJob { .. }) => self.execute_maintenance(ctx, s).await,
            Statement::Sql(_) => Err(EngineError::Internal("standard SQL routed to the admin path".into())),
        }
    }

    fn require_user_admin(&self, ctx: &ExecContext, target: Role) -> Result<()> {
        if permissions::can_manage_user(ctx.role, target) {
            Ok(())
        } else {
            Err(EngineError::forbidden(format!(
                "role {} may not manage users of role {target}",
                ctx.role
            )))
        }
    }

    pub(crate) async fn alter_table(
        &self,
        ctx: &ExecContext,
        name: &ast::ObjectName,
        ops: &[AlterTableOperation],
    ) -> Result<SqlResult> {
        require_ddl(ctx)?;
        let id = table_id(name)?;
        let table = self.catalog.resolve(&id)?;
        let mut def = (*table).clone();
        let mut schema = def.current().clone();
        schema.version += 1;
        for op in ops {
            match op {
                AlterTableOperation::AddColumn {
                    column_def: c,
                    if_not_exists,
                    ..
                } => {
                    let (col, is_pk) = column_def(c, ColumnId(def.next_column_id))?;
                    if is_pk {
                        return Err(EngineError::InvalidInput("cannot add a PRIMARY KEY column".into()));
                    }
                    if schema.column_index(col.name.as_str()).is_some() {
                        if *if_not_exists {
                            continue;
                        }
                        return Err(EngineError::AlreadyExists(format!("column '{}'", col.name)));
                    }
                    if !col.nullable && !matches!(col.default, Some(DefaultExpr::Literal(ref v)) if !v.is_null()) {
                        return Err(EngineError::InvalidInput(format!(
                            "NOT NULL column '{}' needs a constant DEFAULT for the existing rows",
                            col.name
                        )));
                    }
                    def.next_column_id += 1;
                    schema.columns.push(col);
                }
                AlterTableOperation::DropColumn {
                    column_names,
                    if_exists,
                    ..
                } => {
                    for n in column_names {
                        let n = ident_name(n);
                        match schema.column_index(&n) {
                            Some(i) if schema.is_pk(i) => {
                                return Err(EngineError::InvalidInput(format!(
                                    "column '{n}' is in the primary key and cannot be dropped"
                                )));
                            }
                            Some(i) => {
                                let id = schema.columns[i].id;
                                if let Some(ix) =
                                    def.indexes.iter().find(|ix| ix.columns.iter().any(|c| c.column == id))
                                {
                                    return Err(EngineError::InvalidInput(format!(
                                        "column '{n}' is in index '{}'; drop the index first",
                                        ix.name
                                    )));
                                }
                                schema.columns.remove(i);
                                for p in schema.pk.iter_mut().filter(|p| **p > i) {
                                    *p -= 1;
                                }
                            }
                            None if *if_exists => {}
                            None => {
                                return Err(EngineError::ColumnNotFound {
                                    table: id.to_string(),
                                    column: n,
                                });
                            }
                        }
                    }
                }
                AlterTableOperation::RenameColumn {
                    old_column_name,
                    new_column_name,
                } => {
                    let (old, new) = (
                        ident_name(old_column_name),
                        ColumnName::parse(&ident_name(new_column_name))?,
                    );
                    if RESERVED_COLUMNS.contains(&new.as_str()) || new.as_str().starts_with("__") {
                        return Err(EngineError::InvalidInput(format!("column name '{new}' is reserved")));
                    }
                    if schema.column_index(new.as_str()).is_some() {
                        return Err(EngineError::AlreadyExists(format!("column '{new}'")));
                    }
                    let i = schema.column_index(&old).ok_or_else(|| EngineError::ColumnNotFound {
                        table: id.to_string(),
                        column: old.clone(),
                    })?;
                    schema.columns[i].name = new;
                }
                other => {
                    return Err(EngineError::Unsupported(format!(
                        "ALTER TABLE {other} is not supported"
                    )));
                }
            }
        }
        def.versions.push(schema);
        let catalog = self.catalog.clone();
        self.commit
            .exclusive(move |store| catalog.put_table(store, def))
            .await??;
        self.live.end_table(table.uid);
        Ok(SqlResult::message(format!("table {id} altered")))
    }

    pub(crate) async fn drop_statement(
        &self,
        ctx: &ExecContext,
        object_type: ObjectType,
        names: &[ast::ObjectName],
        if_exists: bool,
    ) -> Result<SqlResult> {
        require_ddl(ctx)?;
        if object_type != ObjectType::Table {
            return Err(EngineError::Unsupported(format!("DROP {object_type} is not supported")));
        }
        let mut dropped = vec![];
        for n in names {
            let id = table_id(n)?;
            match self.catalog.resolve(&id) {
                Ok(_) => {
                    self.drop_table(&id).await?;
                    dropped.push(id.to_string());
                }
                Err(_) if if_exists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(SqlResult::message(format!(
            "dropped {}",
            if dropped.is_empty() {
                "nothing".into()
            } else {
                dropped.join(", ")
            }
        )))
    }

    async fn drop_table(&self, id: &TableId) -> Result<()> {
        let catalog = self.catalog.clone();
        let id_for_cleanup = id.clone();
        let id = id.clone();
        let dropped = self
            .commit
            .exclusive(move |store| -> Result<_> {
                let t = catalog.remove_table(store, &id)?;
                if let Some(t) = &t {
                    store.drop_partition(&Partition::table(t.uid.0))?;
                    store.drop_partition(&Partition::index(t.uid.0))?;
                }
                Ok(t.map(|t| t.uid))
            })
            .await??;
        if let Some(uid) = dropped {
            self.live.end_table(uid);
            // its segments go in the background
            self.jobs.submit(
                JobKind::Cleanup,
                JobTarget {
                    table: id_for_cleanup,
                    uid,
                },
                now_millis(),
            )?;
        }
        Ok(())
    }
}
