//! The shape checks of the direct path: whether a document's arguments and selections
//! are ones the validator accepts and this path serves, checked against the spec, with
//! each use of a variable recorded for binding.

use std::collections::{HashMap, HashSet};

use async_graphql::Name;
use async_graphql::parser::types::{BaseType, Field, Selection, VariableDefinition};
use async_graphql_value::Value as Ast;
use kalamdb_engine::types::ColumnType;

use super::{Selected, TYPENAME};
use crate::meta::TableMeta;
use crate::objects::ORDER_DIRECTIONS;
use crate::spec::{Arg, FilterOp, Operand, RootField};
use crate::values::{accepts, scalar_name};

/// `where` literals nested deeper than this go to the general path.
const MAX_LITERAL_DEPTH: usize = 16;

/// What an input position of the schema takes.
#[derive(Clone, Copy)]
pub(super) enum Want {
    BoolExp,
    Comparison(ColumnType),
    Scalar(ColumnType),
    /// `[T!]`, given as a list literal.
    ScalarList(ColumnType),
    OrderBy,
    /// `<t>_insert_input`: columns, each of its scalar.
    InsertObject,
}

/// The operation's variable definitions, and each use of a variable so far.
pub(super) struct Vars<'a> {
    pub(super) defs: HashMap<&'a str, &'a VariableDefinition>,
    pub(super) uses: Vec<(Name, ColumnType)>,
}

impl Vars<'_> {
    /// A variable in a scalar position: declared exactly as that scalar and non-null
    /// (its value is checked when a request binds it).
    fn scalar(&mut self, name: &Name, ty: ColumnType) -> Option<()> {
        let def = self.defs.get(name.as_str())?;
        let declared = !def.var_type.node.nullable
            && matches!(&def.var_type.node.base, BaseType::Named(n) if n.as_str() == scalar_name(ty));
        if !declared || !def.directives.is_empty() || ty == ColumnType::Json {
            return None;
        }
        self.uses.push((name.clone(), ty));
        Some(())
    }
}

/// Checks an argument's value against what its position takes, recording the
/// variables it uses; `None` for anything the validator might refuse or that this
/// path leaves to the general one.
fn literal(v: &Ast, want: Want, meta: &TableMeta, vars: &mut Vars<'_>, depth: usize) -> Option<()> {
    if depth > MAX_LITERAL_DEPTH {
        return None;
    }
    let all = |items: &[Ast], want: Want, vars: &mut Vars<'_>| {
        items.iter().try_for_each(|i| literal(i, want, meta, vars, depth + 1))
    };
    match (want, v) {
        (Want::Scalar(ColumnType::Json), _) => None,
        (Want::Scalar(ty), Ast::Variable(name)) => vars.scalar(name, ty),
        (_, Ast::Variable(_) | Ast::Null) => None,
        (Want::Scalar(ty), v) => accepts(ty, &v.clone().into_const()?).then_some(()),
        (Want::ScalarList(ty), Ast::List(items)) => all(items, Want::Scalar(ty), vars),
        (Want::Comparison(ty), Ast::Object(ops)) => ops.iter().try_for_each(|(name, value)| {
            let op = FilterOp::from_name(name.as_str()).filter(|op| op.applies_to(ty))?;
            let want = match op.operand() {
                Operand::List => Want::ScalarList(ty),
                operand => Want::Scalar(operand.value_type(ty)),
            };
            literal(value, want, meta, vars, depth + 1)
        }),
        (Want::BoolExp, Ast::Object(fields)) => {
            fields.iter().try_for_each(|(key, value)| match (key.as_str(), value) {
                ("_and" | "_or", Ast::List(items)) => all(items, Want::BoolExp, vars),
                ("_and" | "_or", _) => None,
                ("_not", v) => literal(v, Want::BoolExp, meta, vars, depth + 1),
                (col, v) => {
                    let (_, ty) = meta.filterable(col)?;
                    literal(v, Want::Comparison(ty), meta, vars, depth + 1)
                }
            })
        }
        (Want::InsertObject, Ast::Object(fields)) => fields.iter().try_for_each(|(col, value)| {
            let ty = meta.column(col.as_str())?.ty;
            literal(value, Want::Scalar(ty), meta, vars, depth + 1)
        }),
        (Want::OrderBy, Ast::List(items)) => all(items, Want::OrderBy, vars),
        (Want::OrderBy, Ast::Object(keys)) => keys.iter().try_for_each(|(col, dir)| {
            let (_, ty) = meta.filterable(col.as_str())?;
            let Ast::Enum(d) = dir else {
                return None;
            };
            (ty != ColumnType::Json && ORDER_DIRECTIONS.contains(&d.as_str())).then_some(())
        }),
        _ => None,
    }
}

/// A list field's arguments, checked: each a list argument of the spec, once.
pub(super) fn list_arguments(f: &Field, meta: &TableMeta, vars: &mut Vars<'_>) -> Option<()> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(f.arguments.len());
    for (name, value) in &f.arguments {
        let want = match RootField::List.arg(meta, name.node.as_str())? {
            Arg::Where => Want::BoolExp,
            Arg::OrderBy => Want::OrderBy,
            Arg::Limit | Arg::Offset => Want::Scalar(ColumnType::Int),
            _ => return None,
        };
        if !seen.insert(name.node.as_str()) {
            return None;
        }
        literal(&value.node, want, meta, vars, 0)?;
    }
    Some(())
}

/// The key arguments of a `_by_pk` field (one per key column), checked.
pub(super) fn by_pk_argument(f: &Field, meta: &TableMeta, vars: &mut Vars<'_>) -> Option<()> {
    if f.arguments.len() != meta.pk.len() {
        return None;
    }
    for c in meta.pk_columns() {
        let [(_, arg)] = f
            .arguments
            .iter()
            .filter(|(n, _)| n.node.as_str() == c.name.as_str())
            .collect::<Vec<_>>()[..]
        else {
            return None;
        };
        literal(&arg.node, Want::Scalar(c.ty), meta, vars, 0)?;
    }
    Some(())
}

/// The `object` argument of `insert_<t>_one` (without `on_conflict`), checked.
pub(super) fn insert_argument(f: &Field, meta: &TableMeta, vars: &mut Vars<'_>) -> Option<()> {
    let [(arg_name, arg)] = f.arguments.as_slice() else {
        return None;
    };
    if RootField::InsertOne.arg(meta, arg_name.node.as_str()) != Some(Arg::Object) {
        return None;
    }
    literal(&arg.node, Want::InsertObject, meta, vars, 0)
}

/// The selection of a row object, when it is plain fields only.
pub(super) fn plain_fields(f: &Field, meta: &TableMeta) -> Option<Vec<Selected>> {
    leaf_fields(f, |name| name == TYPENAME || meta.has_row_field(name))
}

/// The selection of `<t>_aggregate { aggregate { count } }`: one `aggregate` field
/// that selects only bare `count`s. Returns the `aggregate` field and the counts.
pub(super) fn count_selection(f: &Field) -> Option<(Selected, Vec<Selected>)> {
    let [sel] = f.selection_set.node.items.as_slice() else {
        return None;
    };
    let Selection::Field(agg) = &sel.node else {
        return None;
    };
    let a = &agg.node;
    if a.name.node.as_str() != "aggregate" || !a.arguments.is_empty() || !a.directives.is_empty() {
        return None;
    }
    let counts = leaf_fields(a, |name| name == "count")?;
    let outer = Selected {
        key: a.response_key().node.clone(),
        name: a.name.node.clone(),
        pos: agg.pos,
    };
    Some((outer, counts))
}

/// An aggregate field's arguments, checked: `where` alone (a `group_by` takes the
/// general path).
pub(super) fn aggregate_arguments(f: &Field, meta: &TableMeta, vars: &mut Vars<'_>) -> Option<()> {
    match f.arguments.as_slice() {
        [] => Some(()),
        [(name, value)] if name.node.as_str() == Arg::Where.name() => {
            literal(&value.node, Want::BoolExp, meta, vars, 0)
        }
        _ => None,
    }
}

/// A selection of leaf fields without arguments or directives, each named as `known`
/// allows, under distinct response keys.
fn leaf_fields(f: &Field, known: impl Fn(&str) -> bool) -> Option<Vec<Selected>> {
    let mut fields = Vec::new();
    let mut keys: HashSet<&str> = HashSet::new();
    for s in &f.selection_set.node.items {
        let Selection::Field(field) = &s.node else {
            return None;
        };
        let c = &field.node;
        if !known(c.name.node.as_str())
            || !c.arguments.is_empty()
            || !c.directives.is_empty()
            || !c.selection_set.node.items.is_empty()
            || !keys.insert(c.response_key().node.as_str())
        {
            return None;
        }
        fields.push(Selected {
            key: c.response_key().node.clone(),
            name: c.name.node.clone(),
            pos: field.pos,
        });
    }
    (!fields.is_empty()).then_some(fields)
}
