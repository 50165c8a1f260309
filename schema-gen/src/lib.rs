//! kalamdb-schema-gen: turns the catalog into the GraphQL schema (one per role). For
//! now it holds the naming rules that schema will follow.

use kalamdb_engine::ids::{NamespaceId, TableId};

/// The GraphQL root-field name of a table: `app.todos` is `app_todos`; tables of the
/// `public` namespace go unprefixed.
pub fn graphql_table_name(id: &TableId) -> String {
    if id.namespace == NamespaceId::public() {
        id.table.to_string()
    } else {
        format!("{}_{}", id.namespace, id.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kalamdb_engine::ids::TableName;

    #[test]
    fn names_follow_namespace_prefix_rule() {
        let t = |ns: &str, t: &str| TableId::new(NamespaceId::parse(ns).unwrap(), TableName::parse(t).unwrap());
        assert_eq!(graphql_table_name(&t("app", "todos")), "app_todos");
        assert_eq!(graphql_table_name(&t("public", "todos")), "todos");
    }
}
