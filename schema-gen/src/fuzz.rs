//! A fuzzer of GraphQL requests: documents mutated from a seed corpus, with random
//! variables (filters nested as deep as a JSON body may carry), go through parsing,
//! the depth check, the direct path, the general executor and the filter binder as a
//! plain user. None may panic, abort or overflow the stack.

use std::sync::Arc;

use async_graphql::Variables;
use kalamdb_engine::context::ExecContext;
use kalamdb_engine::engine::Engine;
use kalamdb_engine::fuzz::{Fuzz, fuzz_engine, on_request_stack};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Map, Value as Json, json};

use crate::depth::check_depth;
use crate::registry::SchemaRegistry;
use crate::resolvers::ResponseBudget;
use crate::schema::GraphqlLimits;

const SEEDS: &[&str] = &[
    r#"{ f_t(where: {s: {_like: "a%"}, _or: [{id: {_eq: 1}}, {v: {_gt: 1.5}}]}, order_by: {id: desc}, limit: 5) { id s v _seq } }"#,
    "query($id: BigInt!) { f_t_by_pk(id: $id) { id s } }",
    "{ f_t_aggregate(where: {id: {_in: [1, 2, 3]}}) { aggregate { count max { v } } nodes { id } } }",
    r#"mutation { insert_f_t_one(object: {id: 9, s: "x", v: 2.0}) { id } }"#,
    r#"mutation { update_f_t(where: {id: {_gt: 0}}, _set: {s: "y"}, _inc: {v: 1}) { affected_rows } }"#,
    r#"mutation { delete_f_t(where: {s: {_regex: "^z"}}) { affected_rows } }"#,
    "query q($w: f_t_bool_exp) { a: f_t(where: $w) { id } b: __typename }",
    "query($w: f_t_bool_exp, $o: [f_t_order_by!]) { f_t(where: $w, order_by: $o, offset: 1) { s } }",
    "{ __schema { types { name fields { name } } } }",
    "fragment F on f_t { id s } { f_t { ...F } }",
    r#"{ f_t(where: {_not: {s: {_iregex: "(a+)+$"}}}) { id @skip(if: false) } }"#,
];

const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    ":",
    "$w",
    "\"",
    "_not: ",
    "_and: ",
    "_or: ",
    "_eq: ",
    "_like: ",
    "_in: ",
    "1",
    "-1",
    "1e400",
    "99999999999999999999",
    "null",
    "true",
    "f_t",
    "id",
    "s",
    "...F",
    "@skip(if: true)",
    "query ",
    "mutation ",
    "subscription ",
    "#",
    "\"\"\"",
    "\\u0000",
    "é",
    "\n",
    ",",
    "limit: ",
    "-5",
    "_inc: ",
];

/// A random JSON value nested at most `depth` deep, shaped like filters often enough
/// to reach the binder.
fn random_json(rng: &mut StdRng, depth: usize) -> Json {
    let keys = [
        "_not", "_and", "_or", "id", "s", "v", "_eq", "_like", "_in", "_gt", "_is_null", "x",
    ];
    match rng.random_range(0..if depth == 0 { 5 } else { 8 }) {
        0 => Json::Null,
        1 => json!(rng.random_range(-3i64..1_000_000_000_000)),
        2 => json!(rng.random::<f64>() * 1e300),
        3 => json!(["%", "a%b_", "(a|b)*", "", "é\u{0}"][rng.random_range(0..5)]),
        4 => json!(rng.random::<bool>()),
        5 | 6 => {
            let mut m = Map::new();
            for _ in 0..rng.random_range(1..3) {
                m.insert(
                    keys[rng.random_range(0..keys.len())].to_string(),
                    random_json(rng, depth - 1),
                );
            }
            Json::Object(m)
        }
        _ => Json::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
    }
}

#[test]
fn fuzz_graphql_requests() {
    on_request_stack(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let (engine, _root, user) = fuzz_engine(dir.path(), |_| {}).await;
        let limits = GraphqlLimits::default();
        let registry = SchemaRegistry::new(engine.clone(), limits.clone());
        let mut fuzz = Fuzz::new(5, SEEDS, PIECES);
        while let Some(query) = fuzz.next_input() {
            let depth = fuzz.rng.random_range(0..128);
            let variables = match json!({ "w": random_json(&mut fuzz.rng, depth), "id": 1, "o": random_json(&mut fuzz.rng, 3) })
            {
                Json::Object(m) => m,
                _ => Map::new(),
            };
            run(&engine, &registry, &user, &limits, &query, variables).await;
        }
        assert!(fuzz.runs > 0);
    });
}

/// One request, as the HTTP handler runs it.
async fn run(
    engine: &Arc<Engine>,
    registry: &SchemaRegistry,
    ctx: &ExecContext,
    limits: &GraphqlLimits,
    query: &str,
    variables: Map<String, Json>,
) {
    let Ok(role) = registry.schema_for(ctx.role) else {
        panic!("no schema")
    };
    let Ok(document) = registry.parse(query) else { return };
    if check_depth(&document.doc, limits.max_depth).is_err() {
        return;
    }
    if role.fast.run(engine, ctx, &document, None, &variables).await.is_some() {
        return;
    }
    let mut request = async_graphql::Request::new(query)
        .variables(Variables::from_json(Json::Object(variables)))
        .data(ctx.clone())
        .data(ResponseBudget::new(limits.max_response_bytes));
    request.set_parsed_query(Arc::unwrap_or_clone(document.doc));
    let _ = role.schema.execute(request).await;
}
