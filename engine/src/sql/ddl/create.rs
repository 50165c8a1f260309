//! CREATE TABLE: columns, their defaults and options, the primary key (one column or
//! several), and the table's options.

use std::collections::HashSet;

use datafusion::sql::sqlparser::ast::{
    self, ColumnOption, CreateTable, CreateTableOptions, Expr, SqlOption, TableConstraint,
};
use kalamdb_auth::{identity::UserId, permissions::AccessLevel, permissions::TableType};
use kalamdb_storage::{hot_store::Partition, seq::now_millis};

use super::{RESERVED_COLUMNS, require_ddl};
use crate::catalog::schema::{ColumnDef, DefaultExpr, FlushPolicy, MAX_KEY_COLUMNS, TableDef, TableSchema};
use crate::context::ExecContext;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::ids::{ColumnId, ColumnName, NamespaceId};
use crate::sql::eval::builtin_call;
use crate::sql::parse::{ident_name, table_id};
use crate::sql::result::SqlResult;
use crate::types::ColumnType;

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

pub(super) fn column_def(def: &ast::ColumnDef, id: ColumnId) -> Result<(ColumnDef, bool)> {
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

fn one_primary_key() -> EngineError {
    EngineError::InvalidInput(
        "a table has one PRIMARY KEY; a key of several columns is the constraint PRIMARY KEY (a, b)".into(),
    )
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
        let mut pk = vec![];
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
                if !pk.is_empty() {
                    return Err(one_primary_key());
                }
                pk.push(i);
            }
            columns.push(def);
        }
        for c in &ct.constraints {
            match c {
                TableConstraint::PrimaryKey(k) if pk.is_empty() => {
                    for kc in &k.columns {
                        let name = kc.column.expr.to_string().to_ascii_lowercase();
                        let i = columns.iter().position(|c| c.name.as_str() == name).ok_or_else(|| {
                            EngineError::ColumnNotFound {
                                table: id.to_string(),
                                column: name.clone(),
                            }
                        })?;
                        if pk.contains(&i) {
                            return Err(EngineError::InvalidInput(format!(
                                "column '{name}' is named twice in the PRIMARY KEY"
                            )));
                        }
                        columns[i].nullable = false;
                        pk.push(i);
                    }
                }
                TableConstraint::PrimaryKey(_) => return Err(one_primary_key()),
                other => return Err(EngineError::Unsupported(format!("constraint {other} is not supported"))),
            }
        }
        if pk.is_empty() {
            return Err(EngineError::InvalidInput("a table needs a PRIMARY KEY".into()));
        }
        if pk.len() > MAX_KEY_COLUMNS {
            return Err(EngineError::InvalidInput(format!(
                "a PRIMARY KEY has at most {MAX_KEY_COLUMNS} columns"
            )));
        }
        if let Some(c) = pk.iter().map(|&i| &columns[i]).find(|c| !c.ty.can_be_key()) {
            return Err(EngineError::InvalidInput(format!(
                "a {} column ('{}') cannot be in the primary key",
                c.ty, c.name
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
}
