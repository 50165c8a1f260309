//! DDL and administration: namespaces, tables (create, alter, drop), users, SHOW and
//! DESCRIBE. All of it needs the dba role or higher (users: see
//! `permissions::can_manage_user`), and every change is persisted before it is visible.

use std::collections::HashSet;

use datafusion::sql::sqlparser::ast::{
    self, AlterTableOperation, ColumnOption, CreateTable, CreateTableOptions, Expr, ObjectType, SqlOption,
    TableConstraint,
};
use kalamdb_auth::{identity::Role, identity::UserId, permissions, permissions::AccessLevel, permissions::TableType};
use kalamdb_storage::{hot_store::Partition, seq::now_millis};
use serde_json::json;

use crate::accounts::users::UserRecord;
use crate::catalog::NamespaceDef;
use crate::catalog::schema::{ColumnDef, DefaultExpr, FlushPolicy, TableDef, TableSchema};
use crate::context::ExecContext;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::ids::{ColumnId, ColumnName, NamespaceId, TableId};
use crate::jobs::{JobKind, JobTarget};
use crate::sql::eval::builtin_call;
use crate::sql::parse::{Statement, UserChange, ident_name, table_id};
use crate::sql::result::SqlResult;
use crate::types::ColumnType;

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

fn default_expr(e: &Expr, ty: ColumnType, col: &str) -> Result<DefaultExpr> {
    if let Some(f) = builtin_call(e) {
        let d = f.as_default();
        let fits = match d {
            DefaultExpr::Now => matches!(ty, ColumnType::Timestamp | ColumnType::Date),
            DefaultExpr::SnowflakeId => matches!(ty, ColumnType::BigInt),
            DefaultExpr::UuidV7 => matches!(ty, ColumnType::Uuid | ColumnType::Text),
            DefaultExpr::CurrentUser => matches!(ty, ColumnType::Text),
            DefaultExpr::Literal(_) => true,
        };
        if !fits {
            return Err(EngineError::TypeMismatch(format!(
                "DEFAULT {} does not fit column '{col}' of type {ty}",
                d.sql()
            )));
        }
        return Ok(d);
    }
    let seq = kalamdb_storage::seq::SeqAllocator::new(kalamdb_storage::seq::Seq::ZERO);
    let nobody = UserId::root();
    let env = crate::sql::eval::EvalEnv {
        params: &[],
        subject: &nobody,
        seq: &seq,
    };
    let v = crate::sql::eval::eval_const(e, ty, &env)
        .map_err(|err| EngineError::InvalidInput(format!("bad DEFAULT for column '{col}': {err}")))?;
    Ok(DefaultExpr::Literal(v.to_json()))
}

fn column_def(def: &ast::ColumnDef, id: ColumnId) -> Result<(ColumnDef, bool)> {
    let name = ColumnName::parse(&ident_name(&def.name))?;
    if RESERVED_COLUMNS.contains(&name.as_str()) || name.as_str().starts_with("__") {
        return Err(EngineError::InvalidInput(format!("column name '{name}' is reserved")));
    }
    let ty_name = def.data_type.to_string();
    let ty = ColumnType::from_sql_name(&ty_name)
        .ok_or_else(|| EngineError::Unsupported(format!("unsupported column type {ty_name} for column '{name}'")))?;
    let (mut nullable, mut default, mut pk) = (true, None, false);
    for opt in &def.options {
        match &opt.option {
            ColumnOption::Null => nullable = true,
            ColumnOption::NotNull => nullable = false,
            ColumnOption::Default(e) => default = Some(default_expr(e, ty, name.as_str())?),
            ColumnOption::PrimaryKey(_) => pk = true,
            other => {
                return Err(EngineError::Unsupported(format!(
                    "column option {other} is not supported"
                )));
            }
        }
    }
    if pk {
        nullable = false;
    }
    Ok((
        ColumnDef {
            id,
            name,
            ty,
            nullable,
            default,
        },
        pk,
    ))
}

fn option_value(e: &Expr) -> Result<String> {
    match e {
        Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => Ok(s.clone()),
            ast::Value::Number(n, _) => Ok(n.clone()),
            other => Err(EngineError::InvalidInput(format!("bad option value {other}"))),
        },
        Expr::Identifier(i) => Ok(i.value.clone()),
        other => Err(EngineError::InvalidInput(format!("bad option value {other}"))),
    }
}

struct TableOptions {
    table_type: TableType,
    access_level: Option<AccessLevel>,
    ttl_seconds: Option<u64>,
    flush_policy: Option<FlushPolicy>,
}

fn table_options(opts: &CreateTableOptions) -> Result<TableOptions> {
    let mut o = TableOptions {
        table_type: TableType::User,
        access_level: None,
        ttl_seconds: None,
        flush_policy: None,
    };
    let list: &[SqlOption] = match opts {
        CreateTableOptions::None => &[],
        CreateTableOptions::With(l) => l,
        _ => {
            return Err(EngineError::Unsupported(
                "use WITH (TYPE = '...', ...) for table options".into(),
            ));
        }
    };
    for opt in list {
        let SqlOption::KeyValue { key, value } = opt else {
            return Err(EngineError::Unsupported(format!("unsupported table option {opt}")));
        };
        let v = option_value(value)?;
        let bad = |what: &str| EngineError::InvalidInput(format!("bad {what} '{v}'"));
        match key.value.to_ascii_uppercase().as_str() {
            "TYPE" => o.table_type = v.parse().map_err(|_| bad("TYPE (use USER, SHARED or STREAM)"))?,
            "ACCESS_LEVEL" => {
                o.access_level = Some(
                    v.parse()
                        .map_err(|_| bad("ACCESS_LEVEL (use PUBLIC, PRIVATE or RESTRICTED)"))?,
                )
            }
            "TTL_SECONDS" => o.ttl_seconds = Some(v.parse().ok().filter(|n| *n > 0).ok_or_else(|| bad("TTL_SECONDS"))?),
            "FLUSH_POLICY" => o.flush_policy = Some(FlushPolicy::parse(&v)?),
            "STORAGE_ID" if v.eq_ignore_ascii_case("local") => {}
            "STORAGE_ID" => return Err(bad("STORAGE_ID (only 'local' is configured)")),
            other => return Err(EngineError::InvalidInput(format!("unknown table option {other}"))),
        }
    }
    if o.access_level.is_some() && o.table_type != TableType::Shared {
        return Err(EngineError::InvalidInput(
            "ACCESS_LEVEL applies to SHARED tables only".into(),
        ));
    }
    match (o.table_type, o.ttl_seconds) {
        (TableType::Stream, None) => return Err(EngineError::InvalidInput("a STREAM table needs TTL_SECONDS".into())),
        (TableType::User | TableType::Shared, Some(_)) => {
            return Err(EngineError::InvalidInput(
                "TTL_SECONDS applies to STREAM tables only".into(),
            ));
        }
        _ => {}
    }
    Ok(o)
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
                            json!(i == schema.pk),
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

    pub(crate) async fn create_table(&self, ctx: &ExecContext, ct: &CreateTable) -> Result<SqlResult> {
        require_ddl(ctx)?;
        let id = table_id(&ct.name)?;
        if id.namespace == NamespaceId::system() {
            return Err(EngineError::forbidden("the system namespace is read-only"));
        }
        if ct.query.is_some() || ct.like.is_some() {
            return Err(EngineError::Unsupported(
                "CREATE TABLE ... AS / LIKE is not supported".into(),
            ));
        }
        if !self.catalog.namespace_exists(&id.namespace) {
            return Err(EngineError::NamespaceNotFound(id.namespace.to_string()));
        }
        if self.catalog.table(&id).is_some() {
            if ct.if_not_exists {
                return Ok(SqlResult::message(format!("table {id} already exists")));
            }
            return Err(EngineError::AlreadyExists(format!("table '{id}'")));
        }
        let opts = table_options(&ct.table_options)?;
        let mut columns = Vec::with_capacity(ct.columns.len());
        let mut pk = None;
        let mut seen = HashSet::new();
        for (i, c) in ct.columns.iter().enumerate() {
            let (def, is_pk) = column_def(c, ColumnId(i as u32 + 1))?;
            if !seen.insert(def.name.clone()) {
                return Err(EngineError::InvalidInput(format!(
                    "column '{}' is defined twice",
                    def.name
                )));
            }
            if is_pk {
                if pk.is_some() {
                    return Err(EngineError::InvalidInput(
                        "a table has exactly one PRIMARY KEY column".into(),
                    ));
                }
                pk = Some(i);
            }
            columns.push(def);
        }
        for c in &ct.constraints {
            match c {
                TableConstraint::PrimaryKey(k) if k.columns.len() == 1 && pk.is_none() => {
                    let name = k.columns[0].column.expr.to_string().to_ascii_lowercase();
                    let i = columns.iter().position(|c| c.name.as_str() == name).ok_or_else(|| {
                        EngineError::ColumnNotFound {
                            table: id.to_string(),
                            column: name.clone(),
                        }
                    })?;
                    columns[i].nullable = false;
                    pk = Some(i);
                }
                TableConstraint::PrimaryKey(_) => {
                    return Err(EngineError::InvalidInput(
                        "a table has exactly one PRIMARY KEY column".into(),
                    ));
                }
                other => return Err(EngineError::Unsupported(format!("constraint {other} is not supported"))),
            }
        }
        let pk = pk.ok_or_else(|| EngineError::InvalidInput("a table needs a PRIMARY KEY column".into()))?;
        if !columns[pk].ty.can_be_key() {
            return Err(EngineError::InvalidInput(format!(
                "a {} column cannot be the primary key",
                columns[pk].ty
            )));
        }
        let next_column_id = columns.len() as u32 + 1;
        let uid = self.catalog.allocate_uid();
        let def = TableDef {
            id: id.clone(),
            uid,
            table_type: opts.table_type,
            access_level: opts.access_level.unwrap_or_default(),
            ttl_seconds: opts.ttl_seconds,
            flush_policy: opts.flush_policy,
            versions: vec![TableSchema {
                version: 1,
                columns,
                pk,
            }],
            next_column_id,
            created_at_ms: now_millis(),
            indexes: vec![],
            next_index_id: 1,
        };
        let catalog = self.catalog.clone();
        self.commit
            .exclusive(move |store| -> Result<()> {
                store.create_partition(&Partition::table(uid.0))?;
                catalog.put_table(store, def)?;
                Ok(())
            })
            .await??;
        Ok(SqlResult::message(format!("table {id} created")))
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
                            Some(i) if i == schema.pk => {
                                return Err(EngineError::InvalidInput(
                                    "the primary key column cannot be dropped".into(),
                                ));
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
                                if i < schema.pk {
                                    schema.pk -= 1;
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
