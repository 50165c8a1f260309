//! GraphQL names derived from a table (Hasura v2's conventions).

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

/// Every type and root-field name one table contributes.
#[derive(Debug, Clone)]
pub struct TableNames {
    pub base: String,
}

impl TableNames {
    pub fn new(id: &TableId) -> Self {
        Self {
            base: graphql_table_name(id),
        }
    }

    fn with(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.base)
    }

    pub fn bool_exp(&self) -> String {
        self.with("bool_exp")
    }
    pub fn order_by(&self) -> String {
        self.with("order_by")
    }
    pub fn select_column(&self) -> String {
        self.with("select_column")
    }
    pub fn update_column(&self) -> String {
        self.with("update_column")
    }
    pub fn constraint(&self) -> String {
        self.with("constraint")
    }
    pub fn pkey(&self) -> String {
        self.with("pkey")
    }
    pub fn on_conflict(&self) -> String {
        self.with("on_conflict")
    }
    pub fn insert_input(&self) -> String {
        self.with("insert_input")
    }
    pub fn set_input(&self) -> String {
        self.with("set_input")
    }
    pub fn inc_input(&self) -> String {
        self.with("inc_input")
    }
    pub fn pk_columns_input(&self) -> String {
        self.with("pk_columns_input")
    }
    pub fn mutation_response(&self) -> String {
        self.with("mutation_response")
    }
    /// Both the aggregate root field and its type.
    pub fn aggregate(&self) -> String {
        self.with("aggregate")
    }
    pub fn aggregate_fields(&self) -> String {
        self.with("aggregate_fields")
    }
    /// `sum`, `avg`, `min` or `max` fields.
    pub fn agg_fn_fields(&self, func: &str) -> String {
        self.with(&format!("{func}_fields"))
    }
    pub fn group(&self) -> String {
        self.with("group")
    }
    pub fn group_key(&self) -> String {
        self.with("group_key")
    }
    /// The change-feed subscription field.
    pub fn changes(&self) -> String {
        self.with("changes")
    }
    /// One change event.
    pub fn change(&self) -> String {
        self.with("change")
    }
    pub fn by_pk(&self) -> String {
        self.with("by_pk")
    }
    pub fn insert(&self) -> String {
        format!("insert_{}", self.base)
    }
    pub fn insert_one(&self) -> String {
        format!("insert_{}_one", self.base)
    }
    pub fn update(&self) -> String {
        format!("update_{}", self.base)
    }
    pub fn update_by_pk(&self) -> String {
        format!("update_{}_by_pk", self.base)
    }
    pub fn delete(&self) -> String {
        format!("delete_{}", self.base)
    }
    pub fn delete_by_pk(&self) -> String {
        format!("delete_{}_by_pk", self.base)
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
        let n = TableNames::new(&t("app", "todos"));
        assert_eq!(n.update_by_pk(), "update_app_todos_by_pk");
        assert_eq!(n.agg_fn_fields("sum"), "app_todos_sum_fields");
    }
}
