//! Tests of the direct path: which documents it serves, and that its answers and
//! errors are the general executor's.

use async_graphql::parser::parse_query;
use kalamdb_engine::ids::{ColumnName, NamespaceId, TableId, TableName};
use kalamdb_engine::read::filter::FilterLimits;
use kalamdb_engine::types::ColumnType;
use serde_json::json;

use super::*;
use crate::meta::ColumnMeta;
use crate::names::TableNames;
use crate::values::scalar_name;

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
    FastPaths::new(
        [(
            Arc::new(TableMeta {
                names: TableNames::new(&id),
                id,
                columns: vec![
                    col("id", ColumnType::Int, false),
                    col("name", ColumnType::Text, false),
                    col("qty", ColumnType::Int, true),
                ],
                pk: vec![0],
            }),
            true,
        )],
        GraphqlLimits::default(),
    )
}

fn served(query: &str, op: Option<&str>, vars: Json) -> bool {
    let doc = parse_query(query).expect("parses");
    let Json::Object(vars) = vars else { panic!() };
    let p = paths();
    p.prepare(&doc, op)
        .and_then(|plan| p.bind(&plan, &vars, limits()))
        .is_some()
}

fn limits() -> FilterLimits {
    FilterLimits {
        max_depth: 8,
        max_nodes: 64,
    }
}

/// A row without a value for a non-null column (one dropped after the document
/// was planned: the field resolves to nothing) stops the object at that field, and
/// the error is the general executor's: its message, the field's location, the
/// path through the list index, and the code.
#[test]
fn a_null_in_a_non_null_field_is_reported_with_its_path() {
    let doc = parse_query("{ shop_items(limit: 2) { id\n label: name } }").expect("parses");
    let plan = paths().prepare(&doc, None).expect("served");
    let p = &plan.fields[0];
    let fields = [Some(RowField::Column(0)), Some(RowField::Missing)];
    let mut out = Vec::new();
    let failed = p.write_object(&mut out, &fields, Seq(1), &[Value::Int(1)], false);
    assert_eq!(failed, Err(1));
    let error = serde_json::to_value(p.error(Failure::NullField(Some(3), 1))).unwrap();
    assert_eq!(
        error,
        json!({
            "message": NON_NULL_MESSAGE,
            "locations": [{"line": 2, "column": 2}],
            "path": ["shop_items", 3, "label"],
            "extensions": {"code": "INTERNAL_ERROR"},
        })
    );
}

/// Errors of a planned document are answered here, so its engine calls are made
/// once: a refused insert, a result over the row limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_errors_are_answered_here() {
    use kalamdb_auth::identity::Role;
    use kalamdb_engine::engine::EngineConfig;

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.bcrypt_cost = 4;
    let engine = Engine::open(cfg).await.unwrap();
    let root = ExecContext::system();
    for sql in [
        "CREATE NAMESPACE shop",
        "CREATE TABLE shop.items (id INT PRIMARY KEY, name TEXT NOT NULL, qty INT) \
         WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')",
        "INSERT INTO shop.items (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    ] {
        engine.execute_sql(&root, sql, &[]).await.unwrap();
    }
    let limits = GraphqlLimits {
        max_rows: 2,
        ..GraphqlLimits::default()
    };
    let (_, fast) = crate::schema::build_role_schema(&engine, Role::System, &limits).unwrap();
    let answer = |query: &'static str| {
        let doc = Document {
            text: query.into(),
            doc: Arc::new(parse_query(query).expect("parses")),
        };
        let (engine, fast, root) = (&engine, &fast, &root);
        async move {
            let body = fast
                .run(engine, root, &doc, None, &Map::new())
                .await
                .expect("answered here");
            serde_json::from_slice::<Json>(&body).unwrap()
        }
    };
    let dup = answer("mutation { insert_shop_items_one(object: {id: 1, name: \"x\"}) { id } }").await;
    assert_eq!(dup["data"], Json::Null, "{dup}");
    assert_eq!(dup["errors"][0]["extensions"]["code"], "DUPLICATE_KEY", "{dup}");
    assert_eq!(dup["errors"][0]["path"], json!(["insert_shop_items_one"]), "{dup}");
    let many = answer("{ one: shop_items_by_pk(id: 2) { name } shop_items { id } }").await;
    assert_eq!(many["data"], Json::Null, "{many}");
    assert_eq!(many["errors"][0]["extensions"]["code"], "TOO_MANY_ROWS", "{many}");
    assert_eq!(
        many["errors"][0]["locations"],
        json!([{"line": 1, "column": 41}]),
        "{many}"
    );
    // several failures are all answered here, in field order
    let two = answer("{ a: shop_items { id } b: shop_items_by_pk(id: 1) { qty } c: shop_items { name } }").await;
    assert_eq!(two["data"], Json::Null, "{two}");
    let paths: Vec<&Json> = two["errors"].as_array().unwrap().iter().map(|e| &e["path"]).collect();
    assert_eq!(paths, [&json!(["a"]), &json!(["c"])], "{two}");
    // a document is planned once and bound per request
    let by_id = Document {
        text: "query($id: Int!) { shop_items_by_pk(id: $id) { name } }".into(),
        doc: Arc::new(parse_query("query($id: Int!) { shop_items_by_pk(id: $id) { name } }").unwrap()),
    };
    let name_of = |id: Json| {
        let (engine, fast, root, by_id) = (&engine, &fast, &root, &by_id);
        async move {
            let Json::Object(vars) = json!({ "id": id }) else {
                unreachable!()
            };
            let body = fast.run(engine, root, by_id, None, &vars).await?;
            let v: Json = serde_json::from_slice(&body).unwrap();
            Some(v["data"]["shop_items_by_pk"]["name"].clone())
        }
    };
    assert_eq!(name_of(json!(2)).await, Some(json!("b")));
    assert_eq!(name_of(json!(3)).await, Some(json!("c")));
    assert_eq!(fast.plans.read().get(&*by_id.text).map(Vec::len), Some(1));
    // a value the scalar does not take goes to the general path, which reports it
    assert_eq!(name_of(json!("two")).await, None);
    // nothing was written twice: the first row is as it was
    let id = TableId {
        namespace: NamespaceId::parse("shop").unwrap(),
        table: TableName::parse("items").unwrap(),
    };
    let rows = engine.get_by_pk(&root, &id, &Pk::one(Value::Int(1))).await.unwrap();
    assert_eq!(rows.rows[0].1[1], Value::Text("a".into()));
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
fn counts_are_served() {
    assert!(served(
        "{ shop_items_aggregate { aggregate { count } } }",
        None,
        json!({})
    ));
    assert!(served(
        "query($q: Int!) { a: shop_items_aggregate(where: {qty: {_gt: $q}}) { x: aggregate { n: count count } } \
         shop_items_by_pk(id: 1) { id } }",
        None,
        json!({"q": 2})
    ));
}

#[test]
fn list_documents_with_checked_arguments_are_served() {
    assert!(served("{ shop_items { id name qty } }", None, json!({})));
    assert!(served(
        "query($q: Int!, $n: String!, $l: Int!) { shop_items(where: {_or: [{qty: {_gte: $q}}, \
         {_not: {name: {_ilike: $n}}}], id: {_in: [1, 2, $q]}, _seq: {_gt: \"0\"}}, \
         order_by: [{qty: desc_nulls_last}, {name: asc}], limit: $l, offset: 2) { id _seq } \
         one: shop_items_by_pk(id: $q) { name } }",
        None,
        json!({"q": 3, "n": "a%", "l": 20})
    ));
    assert!(served(
        "mutation($n: String!) { insert_shop_items_one(object: {id: 4, name: $n}) { id name qty _seq } }",
        None,
        json!({"n": "pear"})
    ));
    // one order_by object stands for a list of one, as GraphQL's input coercion says
    assert!(served(
        "{ shop_items(order_by: {qty: asc}, limit: 0) { id } }",
        None,
        json!({})
    ));
}

/// Every operator the spec gives a TEXT or INT column is served here, as a literal
/// and as a variable: none falls to the general path unnoticed.
#[test]
fn every_operator_of_the_spec_is_served() {
    use crate::spec::{FilterOp, Operand, sample_operand};
    for (col, ty) in [("name", ColumnType::Text), ("qty", ColumnType::Int)] {
        for op in FilterOp::of_type(ty) {
            let sample = sample_operand(op, ty);
            let literal = format!(
                "{{ shop_items(where: {{{col}: {{{}: {sample}}}}}) {{ id }} }}",
                op.name()
            );
            assert!(served(&literal, None, json!({})), "{literal}");
            let (var_ty, value) = match op.operand() {
                Operand::List => continue,
                operand => (scalar_name(operand.value_type(ty)), sample.into_json().unwrap()),
            };
            let query = format!(
                "query($v: {var_ty}!) {{ shop_items(where: {{{col}: {{{}: $v}}}}) {{ id }} }}",
                op.name()
            );
            assert!(served(&query, None, json!({ "v": value })), "{query}");
        }
    }
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
            "{ shop_items_aggregate(group_by: [name]) { aggregate { count } } }",
            None,
            json!({}),
        ),
        (
            "{ shop_items_aggregate { aggregate { count(distinct: true) } } }",
            None,
            json!({}),
        ),
        (
            "{ shop_items_aggregate { aggregate { count max { qty } } } }",
            None,
            json!({}),
        ),
        (
            "{ shop_items_aggregate { aggregate { c: count c: count } } }",
            None,
            json!({}),
        ),
        ("{ shop_items_aggregate { nodes { id } } }", None, json!({})),
        (
            "{ a: shop_items_by_pk(id: 1) { id } a: shop_items_by_pk(id: 2) { id } }",
            None,
            json!({}),
        ),
        ("{ shop_items_by_pk(id: 1) { id id: name } }", None, json!({})),
        ("{ shop_items_by_pk(id: 1.5) { id } }", None, json!({})),
        ("mutation { delete_shop_items_by_pk(id: 1) { id } }", None, json!({})),
        // inserts: two root fields, on_conflict, a non-column, a wrong type, a null,
        // an object variable, in a query
        (
            "mutation { a: insert_shop_items_one(object: {id: 1}) { id } b: insert_shop_items_one(object: {id: 2}) { id } }",
            None,
            json!({}),
        ),
        (
            "mutation { insert_shop_items_one(object: {id: 1}, on_conflict: {constraint: shop_items_pkey}) { id } }",
            None,
            json!({}),
        ),
        (
            "mutation { insert_shop_items_one(object: {id: 1, _seq: \"1\"}) { id } }",
            None,
            json!({}),
        ),
        (
            "mutation { insert_shop_items_one(object: {id: \"1\"}) { id } }",
            None,
            json!({}),
        ),
        (
            "mutation { insert_shop_items_one(object: {id: 1, qty: null}) { id } }",
            None,
            json!({}),
        ),
        (
            "mutation($o: shop_items_insert_input!) { insert_shop_items_one(object: $o) { id } }",
            None,
            json!({"o": {"id": 1}}),
        ),
        ("{ insert_shop_items_one(object: {id: 1}) { id } }", None, json!({})),
        ("mutation { shop_items_by_pk(id: 1) { id } }", None, json!({})),
        // lists
        ("{ shop_items(where: {qty: {_eq: null}}) { id } }", None, json!({})),
        ("{ shop_items(where: {qty: {_in: 3}}) { id } }", None, json!({})),
        ("{ shop_items(where: {_and: {qty: {_eq: 1}}}) { id } }", None, json!({})),
        ("{ shop_items(where: {qty: {_like: \"a%\"}}) { id } }", None, json!({})),
        ("{ shop_items(where: {qty: {_regex: \"a\"}}) { id } }", None, json!({})),
        ("{ shop_items(where: {name: {_eq: 1}}) { id } }", None, json!({})),
        ("{ shop_items(where: {nope: {_eq: 1}}) { id } }", None, json!({})),
        ("{ shop_items(where: {qty: {_between: 1}}) { id } }", None, json!({})),
        ("{ shop_items(order_by: {qty: sideways}) { id } }", None, json!({})),
        ("{ shop_items(order_by: {qty: \"asc\"}) { id } }", None, json!({})),
        ("{ shop_items(limit: -1) { id } }", None, json!({})),
        ("{ shop_items(limit: 10001) { id } }", None, json!({})),
        ("{ shop_items(first: 1) { id } }", None, json!({})),
        (
            "query($w: shop_items_bool_exp) { shop_items(where: $w) { id } }",
            None,
            json!({"w": {"qty": {"_eq": 1}}}),
        ),
        ("query($n: Int) { shop_items(limit: $n) { id } }", None, json!({"n": 1})),
        (
            "query($q: BigInt!) { shop_items(where: {qty: {_eq: $q}}) { id } }",
            None,
            json!({"q": "1"}),
        ),
        (
            "{ shop_items(where: {_not: {_not: {_not: {_not: {_not: {_not: {_not: {_not: {_not: {id: {_eq: 1}}}}}}}}}}}) { id } }",
            None,
            json!({}),
        ),
    ] {
        assert!(!served(query, op, vars.clone()), "{query} {vars} was served");
    }
}
