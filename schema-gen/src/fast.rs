//! A direct path for the commonest read: queries whose root fields are all `_by_pk`
//! lookups selecting plain columns. Such a document is answered without async-graphql's
//! validation and field-by-field execution: its arguments are checked here as the
//! validator would check them, each lookup is one `Engine::get_by_pk`, and the result is
//! built as the general executor builds it (the same output conversions, keys in query
//! order).
//!
//! The path only ever answers successful requests. Anything else (another shape, a
//! fragment or directive, a variable missing or of the wrong type, a null in a
//! non-null column, any engine error) returns `None`, and the request takes the general
//! path, which produces the proper errors.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{BaseType, ExecutableDocument, OperationType, Selection, VariableDefinition};
use async_graphql::{Name, Value as Gql};
use kalamdb_engine::context::ExecContext;
use kalamdb_engine::engine::Engine;
use kalamdb_engine::types::Value;
use serde_json::{Map, Value as Json};

use crate::documents::operation;
use crate::meta::{DELETED, SEQ, TableMeta};
use crate::resolvers::RowObj;
use crate::values::{accepts, from_gql, scalar_name};

const TYPENAME: &str = "__typename";

/// The `_by_pk` root fields of one role's schema.
#[derive(Default)]
pub struct FastPaths {
    by_pk: HashMap<String, Arc<TableMeta>>,
}

/// One `_by_pk` lookup of a planned document.
struct Lookup {
    key: Name,
    meta: Arc<TableMeta>,
    pk: Value,
    /// Response keys and the field each reads (a column, `_seq`, `_deleted` or
    /// `__typename`), in query order.
    fields: Vec<(Name, Name)>,
}

impl FastPaths {
    pub fn new(tables: impl IntoIterator<Item = Arc<TableMeta>>) -> Self {
        Self {
            by_pk: tables.into_iter().map(|m| (m.names.by_pk(), m)).collect(),
        }
    }

    /// Answers the document if it has the shape this path serves; `None` sends it to
    /// the general executor.
    pub async fn run(
        &self,
        engine: &Engine,
        ctx: &ExecContext,
        doc: &ExecutableDocument,
        operation_name: Option<&str>,
        variables: &Map<String, Json>,
        max_complexity: usize,
    ) -> Option<Gql> {
        let lookups = self.plan(doc, operation_name, variables, max_complexity)?;
        let mut data = IndexMap::with_capacity(lookups.len());
        for l in lookups {
            let rows = engine.get_by_pk(ctx, &l.meta.id, &l.pk).await.ok()?;
            let value = match rows.rows.into_iter().next() {
                None => Gql::Null,
                Some((seq, values)) => {
                    let row = RowObj {
                        table: rows.table,
                        seq,
                        values,
                        deleted: false,
                    };
                    let mut obj = IndexMap::with_capacity(l.fields.len());
                    for (key, field) in &l.fields {
                        let v = if field.as_str() == TYPENAME {
                            Gql::String(l.meta.names.base.clone())
                        } else {
                            row.get(field.as_str())
                        };
                        // a null in a non-null column is the general executor's error
                        if v == Gql::Null && !l.meta.column(field.as_str()).is_some_and(|c| c.nullable) {
                            return None;
                        }
                        obj.insert(key.clone(), v);
                    }
                    Gql::Object(obj)
                }
            };
            data.insert(l.key, value);
        }
        Some(Gql::Object(data))
    }

    fn plan(
        &self,
        doc: &ExecutableDocument,
        operation_name: Option<&str>,
        variables: &Map<String, Json>,
        max_complexity: usize,
    ) -> Option<Vec<Lookup>> {
        if !doc.fragments.is_empty() {
            return None;
        }
        let op = operation(doc, operation_name)?;
        let op = &op.node;
        if op.ty != OperationType::Query || !op.directives.is_empty() {
            return None;
        }
        let defs: HashMap<&str, &VariableDefinition> = op
            .variable_definitions
            .iter()
            .map(|d| (d.node.name.node.as_str(), &d.node))
            .collect();
        if defs.len() != op.variable_definitions.len() {
            return None;
        }
        let mut used: HashSet<String> = HashSet::new();
        let mut keys: HashSet<&str> = HashSet::new();
        let mut complexity = 0usize;
        let mut out = Vec::new();
        for sel in &op.selection_set.node.items {
            let Selection::Field(f) = &sel.node else {
                return None;
            };
            let f = &f.node;
            let meta = self.by_pk.get(f.name.node.as_str())?;
            let key = f.response_key().node.clone();
            if !f.directives.is_empty() || !keys.insert(f.response_key().node.as_str()) {
                return None;
            }
            let pk_col = meta.pk_column();
            let [(arg_name, arg)] = f.arguments.as_slice() else {
                return None;
            };
            if arg_name.node.as_str() != pk_col.name.as_str() {
                return None;
            }
            let input = arg
                .node
                .clone()
                .into_const_with(|name: Name| {
                    let def = defs.get(name.as_str()).ok_or(())?;
                    // the variable must be declared exactly as the argument's type
                    let ok_type = !def.var_type.node.nullable
                        && matches!(&def.var_type.node.base, BaseType::Named(n) if n.as_str() == scalar_name(pk_col.ty));
                    if !ok_type || !def.directives.is_empty() {
                        return Err(());
                    }
                    let value = variables.get(name.as_str()).ok_or(())?;
                    used.insert(name.to_string());
                    Gql::from_json(value.clone()).map_err(|_| ())
                })
                .ok()?;
            if input == Gql::Null || !accepts(pk_col.ty, &input) {
                return None;
            }
            let pk = from_gql(pk_col.ty, &input).ok()?;
            let mut fields = Vec::new();
            let mut sub_keys: HashSet<&str> = HashSet::new();
            for s in &f.selection_set.node.items {
                let Selection::Field(c) = &s.node else {
                    return None;
                };
                let c = &c.node;
                let name = c.name.node.as_str();
                let known = name == TYPENAME || name == SEQ || name == DELETED || meta.column(name).is_some();
                if !known
                    || !c.arguments.is_empty()
                    || !c.directives.is_empty()
                    || !c.selection_set.node.items.is_empty()
                    || !sub_keys.insert(c.response_key().node.as_str())
                {
                    return None;
                }
                complexity += 1;
                fields.push((c.response_key().node.clone(), c.name.node.clone()));
            }
            if fields.is_empty() {
                return None;
            }
            complexity += 1;
            out.push(Lookup {
                key,
                meta: meta.clone(),
                pk,
                fields,
            });
        }
        // every declared variable used, within the complexity limit
        if out.is_empty() || used.len() != defs.len() || complexity > max_complexity {
            return None;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;
    use kalamdb_engine::ids::{ColumnName, NamespaceId, TableId, TableName};
    use kalamdb_engine::types::ColumnType;
    use serde_json::json;

    use super::*;
    use crate::meta::ColumnMeta;
    use crate::names::TableNames;

    fn paths() -> FastPaths {
        let id = TableId {
            namespace: NamespaceId::parse("shop").unwrap(),
            table: TableName::parse("items").unwrap(),
        };
        let col = |name: &str, ty, nullable| ColumnMeta {
            name: ColumnName::parse(name).unwrap(),
            ty,
            nullable,
        };
        FastPaths::new([Arc::new(TableMeta {
            names: TableNames::new(&id),
            id,
            columns: vec![
                col("id", ColumnType::Int, false),
                col("name", ColumnType::Text, false),
                col("qty", ColumnType::Int, true),
            ],
            pk: 0,
        })])
    }

    fn served(query: &str, op: Option<&str>, vars: Json) -> bool {
        let doc = parse_query(query).expect("parses");
        let Json::Object(vars) = vars else { panic!() };
        paths().plan(&doc, op, &vars, 100).is_some()
    }

    #[test]
    fn by_pk_documents_of_plain_columns_are_served() {
        let q = "query($id: Int!) { shop_items_by_pk(id: $id) { id name qty } }";
        assert!(served(q, None, json!({"id": 3})));
        assert!(served(
            "{ a: shop_items_by_pk(id: 1) { __typename n: name _seq _deleted } b: shop_items_by_pk(id: 2) { id } }",
            None,
            json!({})
        ));
        assert!(served(
            "query One($id: Int!) { shop_items_by_pk(id: $id) { name } }",
            Some("One"),
            json!({"id": 1})
        ));
        assert!(served(
            "query A { shop_items_by_pk(id: 1) { name } } query B { shop_items_by_pk(id: 2) { name } }",
            Some("B"),
            json!({})
        ));
    }

    #[test]
    fn anything_else_goes_to_the_general_executor() {
        let q = "query($id: Int!) { shop_items_by_pk(id: $id) { id } }";
        for (query, op, vars) in [
            (q, None, json!({"id": "3"})),               // a string for Int
            (q, None, json!({"id": 3_000_000_000_i64})), // out of Int's range
            (q, None, json!({})),                        // missing
            (q, None, json!({"id": null})),
            (q, Some("Other"), json!({"id": 3})),
            (
                "query($id: BigInt!) { shop_items_by_pk(id: $id) { id } }",
                None,
                json!({"id": 3}),
            ),
            (
                "query($id: Int) { shop_items_by_pk(id: $id) { id } }",
                None,
                json!({"id": 3}),
            ),
            (
                "query($id: Int!, $u: Int) { shop_items_by_pk(id: $id) { id } }",
                None,
                json!({"id": 3}),
            ),
            ("{ shop_items_by_pk(id: 1) { nope } }", None, json!({})),
            ("{ shop_items_by_pk(id: 1) { id @include(if: true) } }", None, json!({})),
            (
                "{ shop_items_by_pk(id: 1) { ...F } } fragment F on shop_items { id }",
                None,
                json!({}),
            ),
            (
                "{ shop_items_by_pk(id: 1) { id } shop_items(limit: 1) { id } }",
                None,
                json!({}),
            ),
            (
                "{ a: shop_items_by_pk(id: 1) { id } a: shop_items_by_pk(id: 2) { id } }",
                None,
                json!({}),
            ),
            ("{ shop_items_by_pk(id: 1) { id id: name } }", None, json!({})),
            ("{ shop_items_by_pk(id: 1.5) { id } }", None, json!({})),
            ("mutation { delete_shop_items_by_pk(id: 1) { id } }", None, json!({})),
        ] {
            assert!(!served(query, op, vars.clone()), "{query} {vars} was served");
        }
    }
}
