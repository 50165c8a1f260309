//! The one description of the generated GraphQL surface that several places read:
//! the comparison operators of `<scalar>_comparison_exp` (the column types each
//! applies to, its operand, and the engine filter it becomes) and the arguments of
//! each root field. `objects` generates the input types from it, `inputs` parses
//! with it, `resolvers` declares and reads arguments with it, and `fast` (the direct
//! path) checks documents against it. Adding an operator is one arm in each `match`
//! of [`FilterOp`]; the compiler points at every one.

use async_graphql::Value as Gql;
use async_graphql::dynamic::{InputValue, TypeRef};
use kalamdb_engine::error::{EngineError, Result};
use kalamdb_engine::ids::ColumnName;
use kalamdb_engine::read::filter::{CmpOp, Filter};
use kalamdb_engine::read::pattern::{PatternKind, TextPattern};
use kalamdb_engine::types::ColumnType;

use crate::meta::TableMeta;
use crate::names::TableNames;
use crate::values::{from_gql, scalar_name};

/// What a comparison operator takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// One value of the column's type.
    Value,
    /// A list of values of the column's type.
    List,
    /// A boolean.
    Flag,
    /// A text pattern (LIKE or a regular expression).
    Pattern,
}

impl Operand {
    /// The column type of the operand's values for a column of `ty`.
    pub fn value_type(self, ty: ColumnType) -> ColumnType {
        match self {
            Operand::Value | Operand::List => ty,
            Operand::Flag => ColumnType::Boolean,
            Operand::Pattern => ColumnType::Text,
        }
    }

    /// The operand's GraphQL input type for a column of `ty`.
    pub fn type_ref(self, ty: ColumnType) -> TypeRef {
        let scalar = scalar_name(self.value_type(ty));
        match self {
            Operand::List => TypeRef::named_nn_list(scalar),
            _ => TypeRef::named(scalar),
        }
    }
}

/// A field of `<scalar>_comparison_exp`: Hasura's comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Nin,
    IsNull,
    Like,
    Ilike,
    Nlike,
    Nilike,
    Regex,
    Iregex,
    Nregex,
    Niregex,
}

impl FilterOp {
    pub const ALL: [FilterOp; 17] = [
        FilterOp::Eq,
        FilterOp::Neq,
        FilterOp::Gt,
        FilterOp::Gte,
        FilterOp::Lt,
        FilterOp::Lte,
        FilterOp::In,
        FilterOp::Nin,
        FilterOp::IsNull,
        FilterOp::Like,
        FilterOp::Ilike,
        FilterOp::Nlike,
        FilterOp::Nilike,
        FilterOp::Regex,
        FilterOp::Iregex,
        FilterOp::Nregex,
        FilterOp::Niregex,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FilterOp::Eq => "_eq",
            FilterOp::Neq => "_neq",
            FilterOp::Gt => "_gt",
            FilterOp::Gte => "_gte",
            FilterOp::Lt => "_lt",
            FilterOp::Lte => "_lte",
            FilterOp::In => "_in",
            FilterOp::Nin => "_nin",
            FilterOp::IsNull => "_is_null",
            FilterOp::Like => "_like",
            FilterOp::Ilike => "_ilike",
            FilterOp::Nlike => "_nlike",
            FilterOp::Nilike => "_nilike",
            FilterOp::Regex => "_regex",
            FilterOp::Iregex => "_iregex",
            FilterOp::Nregex => "_nregex",
            FilterOp::Niregex => "_niregex",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.name() == name)
    }

    /// Whether `<scalar>_comparison_exp` of a column type has this operator.
    pub fn applies_to(self, ty: ColumnType) -> bool {
        match self {
            FilterOp::Eq | FilterOp::Neq | FilterOp::In | FilterOp::Nin | FilterOp::IsNull => true,
            // JSON values have no order
            FilterOp::Gt | FilterOp::Gte | FilterOp::Lt | FilterOp::Lte => ty != ColumnType::Json,
            // patterns match text
            op => op.operand() == Operand::Pattern && ty == ColumnType::Text,
        }
    }

    pub fn operand(self) -> Operand {
        match self {
            FilterOp::Eq | FilterOp::Neq | FilterOp::Gt | FilterOp::Gte | FilterOp::Lt | FilterOp::Lte => {
                Operand::Value
            }
            FilterOp::In | FilterOp::Nin => Operand::List,
            FilterOp::IsNull => Operand::Flag,
            FilterOp::Like
            | FilterOp::Ilike
            | FilterOp::Nlike
            | FilterOp::Nilike
            | FilterOp::Regex
            | FilterOp::Iregex
            | FilterOp::Nregex
            | FilterOp::Niregex => Operand::Pattern,
        }
    }

    /// The operators of a column type's comparison input, in schema order.
    pub fn of_type(ty: ColumnType) -> impl Iterator<Item = FilterOp> {
        Self::ALL.into_iter().filter(move |op| op.applies_to(ty))
    }

    /// `column <op> value` as an engine filter; `None` when the value asks for
    /// nothing (`_is_null: null`).
    pub fn to_filter(self, column: &ColumnName, ty: ColumnType, value: &Gql) -> Result<Option<Filter>> {
        if !self.applies_to(ty) {
            return Err(EngineError::InvalidInput(format!(
                "{} does not apply to a {} column",
                self.name(),
                scalar_name(ty)
            )));
        }
        let column = column.clone();
        let compare = |op: CmpOp| -> Result<Option<Filter>> {
            Ok(Some(Filter::Compare {
                column: column.clone(),
                op,
                value: from_gql(ty, value)?,
            }))
        };
        let set = |negated: bool| -> Result<Option<Filter>> {
            let values = match value {
                Gql::List(items) => items.iter().map(|v| from_gql(ty, v)).collect::<Result<_>>()?,
                // GraphQL's input coercion of a single value to a list of one
                Gql::Null => vec![],
                one => vec![from_gql(ty, one)?],
            };
            Ok(Some(Filter::In {
                column: column.clone(),
                values,
                negated,
            }))
        };
        let text = |kind: PatternKind, case_insensitive: bool, negated: bool| -> Result<Option<Filter>> {
            let Gql::String(pattern) = value else {
                return Err(EngineError::TypeMismatch(format!(
                    "{} needs a string pattern",
                    self.name()
                )));
            };
            Ok(Some(Filter::Match {
                column: column.clone(),
                pattern: TextPattern {
                    kind,
                    pattern: pattern.clone(),
                    case_insensitive,
                },
                negated,
            }))
        };
        match self {
            FilterOp::Eq => compare(CmpOp::Eq),
            FilterOp::Neq => compare(CmpOp::Neq),
            FilterOp::Gt => compare(CmpOp::Gt),
            FilterOp::Gte => compare(CmpOp::Gte),
            FilterOp::Lt => compare(CmpOp::Lt),
            FilterOp::Lte => compare(CmpOp::Lte),
            FilterOp::In => set(false),
            FilterOp::Nin => set(true),
            FilterOp::IsNull => match value {
                Gql::Boolean(b) => Ok(Some(Filter::IsNull { column, is_null: *b })),
                Gql::Null => Ok(None),
                _ => Err(EngineError::TypeMismatch("_is_null needs a boolean".into())),
            },
            FilterOp::Like => text(PatternKind::Like, false, false),
            FilterOp::Ilike => text(PatternKind::Like, true, false),
            FilterOp::Nlike => text(PatternKind::Like, false, true),
            FilterOp::Nilike => text(PatternKind::Like, true, true),
            FilterOp::Regex => text(PatternKind::Regex, false, false),
            FilterOp::Iregex => text(PatternKind::Regex, true, false),
            FilterOp::Nregex => text(PatternKind::Regex, false, true),
            FilterOp::Niregex => text(PatternKind::Regex, true, true),
        }
    }
}

/// An argument of a root field. The primary key's own arguments (`_by_pk`,
/// `delete_<t>_by_pk`) are named after its column and are not listed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// `where` of a read: optional.
    Where,
    /// `where` of `update_<t>` and `delete_<t>`: required, so that a forgotten filter
    /// is an error rather than a write to every row.
    WhereRequired,
    OrderBy,
    Limit,
    Offset,
    GroupBy,
    Objects,
    Object,
    OnConflict,
    PkColumns,
    Set,
    Inc,
    SinceSeq,
    InitialBatchSize,
}

impl Arg {
    pub fn name(self) -> &'static str {
        match self {
            Arg::Where | Arg::WhereRequired => "where",
            Arg::OrderBy => "order_by",
            Arg::Limit => "limit",
            Arg::Offset => "offset",
            Arg::GroupBy => "group_by",
            Arg::Objects => "objects",
            Arg::Object => "object",
            Arg::OnConflict => "on_conflict",
            Arg::PkColumns => "pk_columns",
            Arg::Set => "_set",
            Arg::Inc => "_inc",
            Arg::SinceSeq => "since_seq",
            Arg::InitialBatchSize => "initial_batch_size",
        }
    }

    /// The argument as declared on a field of `meta`'s table.
    pub fn input(self, meta: &TableMeta) -> InputValue {
        let n = &meta.names;
        let ty = match self {
            Arg::Where => TypeRef::named(n.bool_exp()),
            Arg::WhereRequired => TypeRef::named_nn(n.bool_exp()),
            Arg::OrderBy => TypeRef::named_nn_list(n.order_by()),
            Arg::Limit | Arg::Offset | Arg::InitialBatchSize => TypeRef::named(TypeRef::INT),
            Arg::GroupBy => TypeRef::named_nn_list(n.select_column()),
            Arg::Objects => TypeRef::named_nn_list_nn(n.insert_input()),
            Arg::Object => TypeRef::named_nn(n.insert_input()),
            Arg::OnConflict => TypeRef::named(n.on_conflict()),
            Arg::PkColumns => TypeRef::named_nn(n.pk_columns_input()),
            Arg::Set => TypeRef::named(n.set_input()),
            Arg::Inc => TypeRef::named(n.inc_input()),
            Arg::SinceSeq => TypeRef::named(scalar_name(ColumnType::BigInt)),
        };
        let input = InputValue::new(self.name(), ty);
        match self {
            Arg::SinceSeq => {
                input.description("Resume after this seq: the changes committed since then, without gap or duplicate.")
            }
            Arg::InitialBatchSize => {
                input.description("Send the current matching rows first, as SNAPSHOT events in batches of this size.")
            }
            _ => input,
        }
    }
}

/// The kinds of root field a table contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootField {
    /// `<t>`, on the query root and, as a live query, on the subscription root.
    List,
    ByPk,
    Aggregate,
    Insert,
    InsertOne,
    Update,
    UpdateByPk,
    Delete,
    DeleteByPk,
    Changes,
}

impl RootField {
    pub const ALL: [RootField; 10] = [
        RootField::List,
        RootField::ByPk,
        RootField::Aggregate,
        RootField::Changes,
        RootField::Insert,
        RootField::InsertOne,
        RootField::Update,
        RootField::UpdateByPk,
        RootField::Delete,
        RootField::DeleteByPk,
    ];

    /// The field's name for a table.
    pub fn name(self, n: &TableNames) -> String {
        match self {
            RootField::List => n.base.clone(),
            RootField::ByPk => n.by_pk(),
            RootField::Aggregate => n.aggregate(),
            RootField::Changes => n.changes(),
            RootField::Insert => n.insert(),
            RootField::InsertOne => n.insert_one(),
            RootField::Update => n.update(),
            RootField::UpdateByPk => n.update_by_pk(),
            RootField::Delete => n.delete(),
            RootField::DeleteByPk => n.delete_by_pk(),
        }
    }

    /// Whether the field writes (it is on the mutation root).
    pub fn writes(self) -> bool {
        !matches!(
            self,
            RootField::List | RootField::ByPk | RootField::Aggregate | RootField::Changes
        )
    }

    /// The root fields a table contributes to a role's schema: the reads, and the
    /// writes where the role may write (updates only where a column can be set).
    pub fn of_table(meta: &TableMeta, writable: bool) -> impl Iterator<Item = RootField> + '_ {
        let settable = meta.settable().next().is_some();
        Self::ALL.into_iter().filter(move |r| match r {
            RootField::Update | RootField::UpdateByPk => writable && settable,
            r => writable || !r.writes(),
        })
    }

    /// The field's arguments, in declaration order, besides the primary key's.
    pub fn args(self) -> &'static [Arg] {
        match self {
            RootField::List => &[Arg::Where, Arg::OrderBy, Arg::Limit, Arg::Offset],
            RootField::ByPk | RootField::DeleteByPk => &[],
            RootField::Aggregate => &[Arg::Where, Arg::GroupBy],
            RootField::Insert => &[Arg::Objects, Arg::OnConflict],
            RootField::InsertOne => &[Arg::Object, Arg::OnConflict],
            RootField::Update => &[Arg::WhereRequired, Arg::Set, Arg::Inc],
            RootField::UpdateByPk => &[Arg::PkColumns, Arg::Set, Arg::Inc],
            RootField::Delete => &[Arg::WhereRequired],
            RootField::Changes => &[Arg::Where, Arg::SinceSeq, Arg::InitialBatchSize],
        }
    }

    /// Whether the field takes the primary key's column as an argument.
    pub fn takes_pk(self) -> bool {
        matches!(self, RootField::ByPk | RootField::DeleteByPk)
    }

    /// The arguments the field of `meta`'s table declares: `_inc` only where a column
    /// can be incremented.
    fn declared(self, meta: &TableMeta) -> impl Iterator<Item = Arg> + '_ {
        self.args()
            .iter()
            .copied()
            .filter(move |a| *a != Arg::Inc || meta.incrementable().next().is_some())
    }

    /// Every argument of the field as declared, the primary key's columns first.
    pub fn inputs(self, meta: &TableMeta) -> Vec<InputValue> {
        let key = meta
            .pk_columns()
            .filter(|_| self.takes_pk())
            .map(|c| InputValue::new(c.name.as_str(), TypeRef::named_nn(scalar_name(c.ty))));
        key.chain(self.declared(meta).map(|a| a.input(meta))).collect()
    }

    /// The argument of this field that a name stands for.
    pub fn arg(self, meta: &TableMeta, name: &str) -> Option<Arg> {
        self.declared(meta).find(|a| a.name() == name)
    }
}

/// A value that an operator's operand accepts on a column of `ty`, in the operand's
/// shape (for tests).
#[cfg(test)]
pub(crate) fn sample_operand(op: FilterOp, ty: ColumnType) -> Gql {
    let one = |ty: ColumnType| match ty {
        ColumnType::Boolean => Gql::Boolean(true),
        ColumnType::Int | ColumnType::BigInt | ColumnType::Double => Gql::from(1),
        ColumnType::Json => Gql::from_json(serde_json::json!({"a": 1})).unwrap_or(Gql::Null),
        ColumnType::Timestamp => Gql::String("2024-01-02T03:04:05Z".into()),
        ColumnType::Date => Gql::String("2024-01-02".into()),
        ColumnType::Uuid => Gql::String("00000000-0000-0000-0000-000000000001".into()),
        ColumnType::Bytes => Gql::String("AQI=".into()),
        ColumnType::Text => Gql::String("a.*".into()),
    };
    match op.operand() {
        Operand::List => Gql::List(vec![one(ty)]),
        operand => one(operand.value_type(ty)),
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::dynamic::{Field, FieldFuture, FieldValue, Object, Schema};
    use kalamdb_engine::ids::{NamespaceId, TableId, TableName};
    use kalamdb_engine::read::filter::FilterLimits;

    use super::*;
    use crate::meta::ColumnMeta;
    use crate::objects::{comparison_exp, shared_types};
    use crate::values::ALL_TYPES;

    fn column(ty: ColumnType) -> String {
        format!("c_{}", scalar_name(ty).to_lowercase())
    }

    /// A table with one column of each type.
    fn table() -> TableMeta {
        let id = TableId {
            namespace: NamespaceId::parse("app").unwrap(),
            table: TableName::parse("every").unwrap(),
        };
        let mut columns = vec![ColumnMeta {
            name: ColumnName::parse("id").unwrap(),
            ty: ColumnType::Int,
            nullable: false,
        }];
        columns.extend(ALL_TYPES.into_iter().map(|ty| ColumnMeta {
            name: ColumnName::parse(&column(ty)).unwrap(),
            ty,
            nullable: true,
        }));
        TableMeta {
            names: TableNames::new(&id),
            id,
            columns,
            pk: vec![0],
        }
    }

    /// A schema of the shared types whose query root has one field per column type,
    /// taking that type's comparison input.
    fn comparison_schema() -> Schema {
        let mut query = Object::new("Query");
        for ty in ALL_TYPES {
            query = query.field(
                Field::new(column(ty), TypeRef::named(TypeRef::BOOLEAN), |_| {
                    FieldFuture::Value(Some(FieldValue::value(Gql::Boolean(true))))
                })
                .argument(InputValue::new("c", TypeRef::named(comparison_exp(ty)))),
            );
        }
        let mut builder = Schema::build("Query", None, None).register(query);
        for t in shared_types() {
            builder = builder.register(t);
        }
        builder.finish().expect("the shared types form a schema")
    }

    /// Every operator that applies to a type is advertised by the schema with an
    /// operand type the sample fits, and is parsed; every other one is neither.
    #[tokio::test]
    async fn the_schema_and_the_parser_agree_on_every_operator() {
        let schema = comparison_schema();
        let meta = table();
        let limits = FilterLimits {
            max_depth: 8,
            max_nodes: 64,
        };
        for ty in ALL_TYPES {
            for op in FilterOp::ALL {
                let sample = sample_operand(op, ty);
                let query = format!("{{ {}(c: {{{}: {sample}}}) }}", column(ty), op.name());
                let validated = schema.execute(query.as_str()).await.errors.is_empty();
                assert_eq!(validated, op.applies_to(ty), "{query}");

                let mut cond = async_graphql::indexmap::IndexMap::new();
                cond.insert(async_graphql::Name::new(op.name()), sample);
                let mut w = async_graphql::indexmap::IndexMap::new();
                w.insert(async_graphql::Name::new(column(ty)), Gql::Object(cond));
                let parsed = crate::inputs::bool_exp(&meta, &Gql::Object(w), limits);
                assert_eq!(parsed.is_ok(), op.applies_to(ty), "{query}: {parsed:?}");
            }
        }
    }

    #[test]
    fn names_round_trip_and_root_arguments_are_declared_once() {
        for op in FilterOp::ALL {
            assert_eq!(FilterOp::from_name(op.name()), Some(op));
        }
        assert_eq!(FilterOp::from_name("_between"), None);
        let meta = table();
        for root in RootField::ALL {
            let names: Vec<&str> = root.args().iter().map(|a| a.name()).collect();
            let mut unique = names.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), names.len(), "{root:?}");
            for a in root.args() {
                assert_eq!(root.arg(&meta, a.name()), Some(*a));
            }
            assert_eq!(
                root.inputs(&meta).len(),
                root.args().len() + if root.takes_pk() { meta.pk.len() } else { 0 }
            );
        }
        assert_eq!(RootField::List.arg(&meta, "first"), None);
    }
}
