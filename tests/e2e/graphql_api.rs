//! The generated GraphQL API over HTTP: every root field, compared with the same data
//! read through `/v1/sql`.

use kalamdb_tests::{TestServer, rows};
use serde_json::{Value, json};

async fn setup(s: &TestServer) {
    s.root("CREATE NAMESPACE shop").await;
    s.root(
        "CREATE TABLE shop.items (id INT PRIMARY KEY, name TEXT NOT NULL, qty INT, price DOUBLE, \
         tag TEXT, born DATE, big BIGINT) WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')",
    )
    .await;
    let objects = json!([
        {"id": 1, "name": "apple", "qty": 3, "price": 1.25, "tag": "fruit", "born": "2024-01-05", "big": "9007199254740993"},
        {"id": 2, "name": "Banana", "qty": 12, "price": 0.5, "tag": "fruit", "born": "2024-02-01", "big": 2},
        {"id": 3, "name": "bread", "qty": 7, "price": 2.75, "tag": "bakery", "born": null, "big": null},
        {"id": 4, "name": "butter", "qty": null, "price": 3.5, "tag": null, "born": "2023-12-31", "big": -5},
        {"id": 5, "name": "kiwi", "qty": 20, "price": 0.3, "tag": "fruit", "born": "2024-03-03", "big": 7},
        {"id": 6, "name": "Apricot", "qty": 0, "price": 4.0, "tag": "x", "born": "2024-01-01", "big": 8},
        {"id": 7, "name": "bagel", "qty": 9, "price": 1.5, "tag": "bakery", "born": "2024-04-04", "big": 1},
        {"id": 8, "name": "cheese", "qty": 2, "price": null, "tag": null, "born": null, "big": 3},
        {"id": 9, "name": "cake", "qty": 15, "price": 6.0, "tag": "x", "born": "2024-05-05", "big": 4},
        {"id": 10, "name": "melon", "qty": 1, "price": 2.0, "tag": "fruit", "born": "2024-06-06", "big": 5}
    ]);
    let data = s
        .gql_ok(
            "root",
            "mutation($o: [shop_items_insert_input!]!) { insert_shop_items(objects: $o) { affected_rows returning { id name big } } }",
            json!({ "o": objects }),
        )
        .await;
    assert_eq!(data["insert_shop_items"]["affected_rows"], 10);
    // BigInt is a string on output, exact beyond 2^53
    assert_eq!(data["insert_shop_items"]["returning"][0]["big"], "9007199254740993");
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

async fn sql_ids(s: &TestServer, sql: &str) -> Vec<i64> {
    rows(&s.root(sql).await)
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_match_sql() {
    let s = TestServer::start().await;
    setup(&s).await;
    let cases = [
        (
            r#"{_or: [{qty: {_gt: 10}}, {_and: [{name: {_ilike: "%AP%"}}, {_not: {tag: {_is_null: true}}}]}]}"#,
            "qty > 10 OR (name ILIKE '%AP%' AND NOT (tag IS NULL))",
        ),
        (
            r#"{name: {_in: ["apple", "kiwi", "nope"]}}"#,
            "name IN ('apple', 'kiwi', 'nope')",
        ),
        (
            r#"{name: {_like: "b%"}, qty: {_lte: 9}}"#,
            "name LIKE 'b%' AND qty <= 9",
        ),
        (r#"{name: {_nlike: "%e%"}}"#, "name NOT LIKE '%e%'"),
        (r#"{name: {_nilike: "B%"}}"#, "name NOT ILIKE 'B%'"),
        (r#"{tag: {_nin: ["x", "bakery"]}}"#, "tag NOT IN ('x', 'bakery')"),
        (r#"{price: {_gte: 1.5, _lt: 4}}"#, "price >= 1.5 AND price < 4"),
        (
            r#"{born: {_gt: "2024-01-31"}, big: {_neq: "7"}}"#,
            "born > DATE '2024-01-31' AND big <> 7",
        ),
        (
            r#"{_not: {_or: [{qty: {_eq: 3}}, {tag: {_eq: "x"}}]}}"#,
            "NOT (qty = 3 OR tag = 'x')",
        ),
        (r#"{id: {_in: []}}"#, "FALSE"),
        (r#"{name: {_regex: "^b.*(d|l)$"}}"#, "name ~ '^b.*(d|l)$'"),
        (r#"{name: {_iregex: "^AP"}}"#, "name ~* '^AP'"),
        (r#"{tag: {_nregex: "^f"}}"#, "tag !~ '^f'"),
        (r#"{name: {_niregex: "E"}, qty: {_gt: 1}}"#, "name !~* 'E' AND qty > 1"),
    ];
    for (gql_where, sql_where) in cases {
        let q = format!("{{ shop_items(where: {gql_where}) {{ id }} }}");
        let got = ids(&s.gql_ok("root", &q, json!({})).await["shop_items"]);
        let want = sql_ids(&s, &format!("SELECT id FROM shop.items WHERE {sql_where} ORDER BY id")).await;
        assert_eq!(got, want, "{gql_where}");
    }

    // multi-key order with nulls placement, then a page
    let orders = [
        ("[{tag: asc_nulls_first}, {qty: desc}]", "tag ASC NULLS FIRST, qty DESC"),
        ("[{price: desc}]", "price DESC NULLS FIRST"),
        ("[{qty: asc_nulls_last}, {name: desc}]", "qty ASC NULLS LAST, name DESC"),
        ("{born: desc_nulls_last}", "born DESC NULLS LAST"),
    ];
    for (gql_order, sql_order) in orders {
        let q = format!("{{ shop_items(order_by: {gql_order}, limit: 4, offset: 2) {{ id }} }}");
        let got = ids(&s.gql_ok("root", &q, json!({})).await["shop_items"]);
        let want = sql_ids(
            &s,
            &format!("SELECT id FROM shop.items ORDER BY {sql_order}, id LIMIT 4 OFFSET 2"),
        )
        .await;
        assert_eq!(got, want, "{gql_order}");
    }

    // by primary key, with every column type and the system columns
    let d = s
        .gql_ok("root", "{ shop_items_by_pk(id: 1) { id name qty price tag born big _seq _deleted } missing: shop_items_by_pk(id: 404) { id } }", json!({}))
        .await;
    let row = &d["shop_items_by_pk"];
    assert_eq!(row["name"], "apple");
    assert_eq!(row["price"], 1.25);
    assert_eq!(row["born"], "2024-01-05");
    assert_eq!(row["_deleted"], false);
    assert!(row["_seq"].as_str().unwrap().parse::<i64>().unwrap() > 0);
    assert_eq!(d["missing"], Value::Null);

    // aggregates without and with group_by
    let d = s
        .gql_ok(
            "root",
            "{ shop_items_aggregate(where: {qty: {_gt: 0}}) { aggregate { count n: count(columns: [tag]) d: count(columns: [tag], distinct: true) \
             sum { qty price big } avg { qty } min { name born } max { qty price } } } }",
            json!({}),
        )
        .await;
    let a = &d["shop_items_aggregate"]["aggregate"];
    let r = &rows(
        &s.root(
            "SELECT COUNT(*), COUNT(tag), COUNT(DISTINCT tag), SUM(qty), SUM(price), SUM(big), AVG(qty), MIN(name), \
             MIN(born), MAX(qty), MAX(price) FROM shop.items WHERE qty > 0",
        )
        .await,
    )[0];
    assert_eq!(a["count"], r[0]);
    assert_eq!(a["n"], r[1]);
    assert_eq!(a["d"], r[2]);
    assert_eq!(a["sum"]["qty"], json!(r[3].to_string()));
    assert_eq!(a["sum"]["price"], r[4]);
    assert_eq!(a["sum"]["big"], json!(r[5].to_string()));
    assert_eq!(a["avg"]["qty"], r[6]);
    assert_eq!(a["min"]["name"], r[7]);
    assert_eq!(a["min"]["born"], r[8]);
    assert_eq!(a["max"]["qty"], r[9]);
    assert_eq!(a["max"]["price"], r[10]);

    let d = s
        .gql_ok(
            "root",
            "{ shop_items_aggregate(group_by: [tag]) { aggregate { count } groups { keys { tag } aggregate { count sum { qty } max { name } } } } }",
            json!({}),
        )
        .await;
    let groups = d["shop_items_aggregate"]["groups"].as_array().unwrap().clone();
    let want = rows(
        &s.root("SELECT tag, COUNT(*), SUM(qty), MAX(name) FROM shop.items GROUP BY tag ORDER BY tag ASC NULLS LAST")
            .await,
    );
    assert_eq!(groups.len(), want.len());
    for (g, w) in groups.iter().zip(&want) {
        assert_eq!(g["keys"]["tag"], w[0]);
        assert_eq!(g["aggregate"]["count"], w[1]);
        let sum = if w[2].is_null() {
            Value::Null
        } else {
            json!(w[2].to_string())
        };
        assert_eq!(g["aggregate"]["sum"]["qty"], sum);
        assert_eq!(g["aggregate"]["max"]["name"], w[3]);
    }
    assert_eq!(d["shop_items_aggregate"]["aggregate"]["count"], 10);

    // response keys keep the query's order
    let (_, text) = s
        .gql_text(
            "{ zeta: shop_items_by_pk(id: 1) { name id } alpha: _me { role } }",
            None,
            json!({}),
        )
        .await;
    let at = |k: &str| text.find(k).unwrap_or_else(|| panic!("{k} in {text}"));
    assert!(
        at("\"zeta\"") < at("\"alpha\"") && at("\"name\"") < at("\"id\""),
        "{text}"
    );

    // nodes beside aggregates
    let d = s
        .gql_ok(
            "root",
            r#"{ shop_items_aggregate(where: {tag: {_eq: "x"}}) { aggregate { count } nodes { id } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(ids(&d["shop_items_aggregate"]["nodes"]), vec![6, 9]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_match_sql() {
    let s = TestServer::start().await;
    setup(&s).await;

    // upsert: one existing key updates only the named columns, one new key inserts
    let d = s
        .gql_ok(
            "root",
            r#"mutation { insert_shop_items(objects: [{id: 1, name: "ignored", qty: 100}, {id: 11, name: "fig", qty: 4}],
                 on_conflict: {constraint: shop_items_pkey, update_columns: [qty]}) { affected_rows returning { id name qty } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(d["insert_shop_items"]["affected_rows"], 2);
    assert_eq!(
        rows(
            &s.root("SELECT name, qty FROM shop.items WHERE id IN (1, 11) ORDER BY id")
                .await
        ),
        vec![vec![json!("apple"), json!(100)], vec![json!("fig"), json!(4)]]
    );
    // do nothing on conflict
    let d = s
        .gql_ok(
            "root",
            r#"mutation { insert_shop_items_one(object: {id: 2, name: "zzz"}, on_conflict: {constraint: shop_items_pkey}) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(d["insert_shop_items_one"], Value::Null);
    assert_eq!(
        rows(&s.root("SELECT name FROM shop.items WHERE id = 2").await),
        vec![vec![json!("Banana")]]
    );
    // a duplicate without on_conflict fails and writes nothing (all or none)
    let (_, code) = s
        .gql_err(
            "root",
            r#"mutation { insert_shop_items(objects: [{id: 50, name: "new"}, {id: 2, name: "dup"}]) { affected_rows } }"#,
            json!({}),
        )
        .await;
    assert_eq!(code, "DUPLICATE_KEY");
    assert!(rows(&s.root("SELECT id FROM shop.items WHERE id = 50").await).is_empty());
    // insert_one returning defaults and all columns
    let d = s
        .gql_ok(
            "root",
            r#"mutation { insert_shop_items_one(object: {id: 12, name: "date"}) { id name qty tag _seq } }"#,
            json!({}),
        )
        .await;
    assert_eq!(d["insert_shop_items_one"]["name"], "date");
    assert_eq!(d["insert_shop_items_one"]["qty"], Value::Null);

    // _inc with _set, by filter
    let d = s
        .gql_ok(
            "root",
            r#"mutation { update_shop_items(where: {tag: {_eq: "bakery"}}, _inc: {qty: 5, price: 0.25}, _set: {tag: "oven"}) {
                 affected_rows returning { id qty price tag } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(d["update_shop_items"]["affected_rows"], 2);
    let got: Vec<Value> = d["update_shop_items"]["returning"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!([r["id"], r["qty"], r["price"], r["tag"]]))
        .collect();
    let want: Vec<Value> = rows(
        &s.root("SELECT id, qty, price, tag FROM shop.items WHERE tag = 'oven' ORDER BY id")
            .await,
    )
    .into_iter()
    .map(Value::from)
    .collect();
    assert_eq!(got, want);
    assert_eq!(want.len(), 2);
    assert_eq!(want[0][1], 12); // bread: 7 + 5

    // by primary key
    let d = s
        .gql_ok(
            "root",
            "mutation { update_shop_items_by_pk(pk_columns: {id: 5}, _inc: {qty: -1}) { id qty } nope: update_shop_items_by_pk(pk_columns: {id: 404}, _set: {qty: 1}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(d["update_shop_items_by_pk"]["qty"], 19);
    assert_eq!(d["nope"], Value::Null);
    // a value of the wrong type fails validation
    let (_, code) = s
        .gql_err(
            "root",
            "mutation { update_shop_items(where: {}, _set: {qty: \"x\"}) { affected_rows } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "GRAPHQL_VALIDATION_FAILED");

    // deletes return the old rows, flagged
    let d = s
        .gql_ok(
            "root",
            r#"mutation { delete_shop_items(where: {tag: {_eq: "x"}}) { affected_rows returning { id name _deleted } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(d["delete_shop_items"]["affected_rows"], 2);
    assert_eq!(d["delete_shop_items"]["returning"][0]["_deleted"], true);
    assert_eq!(ids(&d["delete_shop_items"]["returning"]), vec![6, 9]);
    let d = s
        .gql_ok(
            "root",
            "mutation { delete_shop_items_by_pk(id: 11) { id name } }",
            json!({}),
        )
        .await;
    assert_eq!(d["delete_shop_items_by_pk"]["name"], "fig");
    let d = s
        .gql_ok("root", "mutation { delete_shop_items_by_pk(id: 11) { id } }", json!({}))
        .await;
    assert_eq!(d["delete_shop_items_by_pk"], Value::Null);
    assert_eq!(
        sql_ids(&s, "SELECT id FROM shop.items ORDER BY id").await,
        vec![1, 2, 3, 4, 5, 7, 8, 10, 12]
    );
    s.stop().await;
}

/// Hasura's regular-expression operators on text columns: in every kind of root field,
/// the same rows as SQL's `~` family, errors with codes for bad patterns, and linear time
/// on a pattern that backtracking engines take exponential time on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regular_expression_filters() {
    let s = TestServer::start().await;
    setup(&s).await;
    let count = |d: &Value| d["shop_items_aggregate"]["aggregate"]["count"].clone();
    let d = s
        .gql_ok(
            "root",
            r#"{ shop_items_aggregate(where: {name: {_iregex: "^b|^a"}}) { aggregate { count } } }"#,
            json!({}),
        )
        .await;
    let want = rows(&s.root("SELECT COUNT(*) FROM shop.items WHERE name ~* '^b|^a'").await);
    assert_eq!(count(&d), want[0][0]);
    assert_eq!(count(&d), json!(6));

    // a write by pattern changes exactly the rows SQL's pattern finds
    let d = s
        .gql_ok(
            "root",
            r#"mutation { update_shop_items(where: {name: {_regex: "^b"}, qty: {_is_null: false}}, _inc: {qty: 100}) { affected_rows } }"#,
            json!({}),
        )
        .await;
    let want = rows(&s.root("SELECT COUNT(*) FROM shop.items WHERE qty >= 100").await);
    assert_eq!(d["update_shop_items"]["affected_rows"], want[0][0]);
    assert_eq!(want[0][0], json!(2));

    // errors: malformed, too long, too large once compiled
    for (pattern, code) in [
        ("(", "INVALID_INPUT"),
        (&"a".repeat(2000)[..], "FILTER_TOO_COMPLEX"),
        (r"\w{1000}\w{1000}", "FILTER_TOO_COMPLEX"),
    ] {
        let (_, body) = s
            .gql(
                "root",
                "query($r: String!) { shop_items(where: {name: {_regex: $r}}) { id } }",
                json!({ "r": pattern }),
            )
            .await;
        assert_eq!(body["errors"][0]["extensions"]["code"], code, "{pattern}: {body}");
    }

    // (a+)+$ over 50,000 a's and a b: linear time, so it simply answers
    s.gql_ok(
        "root",
        "mutation($n: String!) { insert_shop_items_one(object: {id: 100, name: $n}) { id } }",
        json!({ "n": format!("{}b", "a".repeat(50_000)) }),
    )
    .await;
    let d = s
        .gql_ok(
            "root",
            r#"{ shop_items(where: {name: {_regex: "^(a+)+$"}}) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(ids(&d["shop_items"]), Vec::<i64>::new());
    s.stop().await;
}

/// Queries made only of `_by_pk` lookups and list fields, and single `insert_<t>_one`
/// mutations, take a direct path; its answers, byte for byte, and its refusals are
/// those of the general executor (a server with the path off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_path_answers_as_the_general_executor() {
    // a row limit below the table's size, so that both answer TOO_MANY_ROWS too
    let fast = TestServer::start_with(|c| c.max_result_rows = 8).await;
    let general = TestServer::start_with(|c| {
        c.graphql_fast_path = false;
        c.max_result_rows = 8;
    })
    .await;
    for s in [&fast, &general] {
        setup(s).await;
        // every other output type, and text that JSON must escape
        s.root(
            "CREATE TABLE shop.kinds (id INT PRIMARY KEY, ok BOOLEAN, at TIMESTAMP, u UUID, j JSON, b BYTES, \
             s TEXT) WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')",
        )
        .await;
        s.gql_ok(
            "root",
            "mutation($o: [shop_kinds_insert_input!]!) { insert_shop_kinds(objects: $o) { affected_rows } }",
            json!({ "o": [
                {"id": 1, "ok": true, "at": "2024-05-06T07:08:09.123456Z", "u": "67e55044-10b1-426f-9247-bb680e5fe0c8",
                 "j": {"z": [1, 2.5, null, "é"], "a": {"b": false}}, "b": "AP8K", "s": "quote \" slash \\ line\n tab\t \u{1} é 😀 \u{2028}"},
                {"id": 2, "ok": false, "j": "just a string", "s": ""},
                {"id": 3}
            ] }),
        )
        .await;
    }
    let by_id = "query($id: Int!) { shop_items_by_pk(id: $id) { id name qty price tag born big } }";
    let mut cases: Vec<(&str, Option<&str>, Value)> = [1, 3, 4, 8, 99]
        .into_iter()
        .map(|id| (by_id, None, json!({ "id": id })))
        .collect();
    cases.extend([
        (
            "{ a: shop_items_by_pk(id: 2) { __typename n: name big } b: shop_items_by_pk(id: 77) { id } c: shop_items_by_pk(id: 5) { _deleted price } }",
            None,
            json!({}),
        ),
        ("query One($id: Int!) { shop_items_by_pk(id: $id) { name } }", Some("One"), json!({"id": 6})),
        (
            "query A { shop_items_by_pk(id: 1) { name } } query B { shop_items_by_pk(id: 2) { name } }",
            Some("B"),
            json!({}),
        ),
        // refused: a wrong type, out of range, missing, undeclared type, unused variable,
        // unknown column, unknown operation
        (by_id, None, json!({"id": "1"})),
        (by_id, None, json!({"id": 3_000_000_000_i64})),
        (by_id, None, json!({})),
        ("query($id: BigInt!) { shop_items_by_pk(id: $id) { id } }", None, json!({"id": "1"})),
        ("query($id: Int!, $u: Int) { shop_items_by_pk(id: $id) { id } }", None, json!({"id": 1})),
        ("{ shop_items_by_pk(id: 1) { nope } }", None, json!({})),
        ("query One { shop_items_by_pk(id: 1) { id } }", Some("Two"), json!({})),
        // lists: nested boolean expressions, every operator family, orders with nulls,
        // pages, variables, several root fields
        (
            "{ shop_items(where: {_or: [{qty: {_gte: 7}}, {tag: {_is_null: true}}]}, \
             order_by: [{tag: asc_nulls_first}, {price: desc}], limit: 5, offset: 1) { id name tag price } }",
            None,
            json!({}),
        ),
        (
            "query($t: String!, $l: Int!) { shop_items(where: {name: {_ilike: $t}}, order_by: {name: asc}, limit: $l) \
             { __typename id name born big } }",
            None,
            json!({"t": "b%", "l": 3}),
        ),
        (
            "{ shop_items(where: {id: {_in: [1, 3, 5, 99]}, _not: {qty: {_lt: 4}}}) { id qty } }",
            None,
            json!({}),
        ),
        (
            "{ shop_items(where: {tag: {_neq: \"x\"}, name: {_nlike: \"%e%\"}, id: {_nin: [2]}}, \
             order_by: [{qty: desc_nulls_last}]) { id qty } }",
            None,
            json!({}),
        ),
        (
            "query($d: Date!) { shop_items(where: {born: {_lte: $d}, _and: [{price: {_gt: 0.4}}, {big: {_lt: \"9\"}}]}) { id born } }",
            None,
            json!({"d": "2024-02-01"}),
        ),
        ("{ shop_items(order_by: [{price: asc_nulls_first}], limit: 3) { id price } }", None, json!({})),
        ("{ shop_items(where: {qty: {_gt: 1000}}) { id } }", None, json!({})),
        // over the row limit: the list is non-null, so data is null
        ("{ one: shop_items_by_pk(id: 2) { name } shop_items { id name } }", None, json!({})),
        (
            "query($r: String!) { shop_items(where: {_or: [{name: {_iregex: $r}}, {tag: {_nregex: \"^(f|x)\"}}]}, \
             order_by: {id: asc}) { id name tag } }",
            None,
            json!({"r": "^b[aeiou]"}),
        ),
        // a malformed and an over-long regular expression, and one on a number
        ("{ shop_items(where: {name: {_regex: \"(\"}}) { id } }", None, json!({})),
        ("query($r: String!) { shop_items(where: {name: {_regex: $r}}) { id } }", None, json!({"r": "a".repeat(2000)})),
        ("{ shop_items(where: {qty: {_regex: \"1\"}}) { id } }", None, json!({})),
        (
            "{ shop_kinds(order_by: {id: desc}) { id ok at u j b s _deleted __typename } \
             one: shop_kinds_by_pk(id: 1) { s j } }",
            None,
            json!({}),
        ),
        (
            "{ top: shop_items(limit: 2, order_by: {id: desc}) { id } shop_items_by_pk(id: 3) { name } }",
            None,
            json!({}),
        ),
        // lists refused or left to the general path: a negative or too large limit, a
        // wrong literal type, an unknown column, a nullable variable, a single object
        // where a list is due
        ("{ shop_items(limit: -1) { id } }", None, json!({})),
        ("{ shop_items(limit: 10001) { id } }", None, json!({})),
        ("{ shop_items(where: {qty: {_eq: \"3\"}}) { id } }", None, json!({})),
        ("{ shop_items(where: {nope: {_eq: 1}}) { id } }", None, json!({})),
        ("query($l: Int) { shop_items(limit: $l) { id } }", None, json!({"l": 2})),
        ("{ shop_items(where: {_and: {qty: {_eq: 3}}}) { id } }", None, json!({})),
        // insert_one: a new row, then refusals (a duplicate key, a NOT NULL column
        // left out, a wrong type), and the rows as both servers now hold them
        (
            "mutation($n: String!) { insert_shop_items_one(object: {id: 50, name: $n, qty: 4, price: 1.5, \
             born: \"2024-01-02\", big: \"12\"}) { id name qty price born big _deleted __typename } }",
            None,
            json!({"n": "pear"}),
        ),
        ("mutation { insert_shop_items_one(object: {id: 1, name: \"dup\"}) { id } }", None, json!({})),
        ("mutation { insert_shop_items_one(object: {id: 51}) { id } }", None, json!({})),
        ("mutation { insert_shop_items_one(object: {id: 52, qty: 1.5}) { id } }", None, json!({})),
        ("{ shop_items(where: {id: {_gte: 50}}) { id name qty tag } }", None, json!({})),
        // counts: with and without where, aliased, beside other fields, and a filter
        // the engine refuses while counting
        ("{ shop_items_aggregate { aggregate { count } } }", None, json!({})),
        (
            "query($q: Int!) { n: shop_items_aggregate(where: {qty: {_gte: $q}}) { a: aggregate { c: count count } } \
             shop_items_by_pk(id: 2) { name } }",
            None,
            json!({"q": 3}),
        ),
        ("{ shop_items_aggregate(where: {id: {_gt: 1000}}) { aggregate { count } } }", None, json!({})),
        ("{ shop_items_aggregate(where: {name: {_regex: \"(\"}}) { aggregate { count } } }", None, json!({})),
        ("{ shop_items_aggregate(where: {qty: {_eq: \"3\"}}) { aggregate { count } } }", None, json!({})),
    ]);
    for (query, op, vars) in cases {
        let a = fast.gql_text(query, op, vars.clone()).await;
        let b = general.gql_text(query, op, vars.clone()).await;
        assert_eq!(
            a, b,
            "{query} {vars}: the direct path differs from the general executor"
        );
    }
    // the other output types were answered, not refused alike by both
    let (status, body) = fast
        .gql_text("{ shop_kinds(order_by: {id: asc}) { s j b } }", None, json!({}))
        .await;
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["shop_kinds"][0]["j"]["a"]["b"], json!(false), "{body}");
    assert_eq!(body["data"]["shop_kinds"][0]["b"], json!("AP8K"), "{body}");
    assert_eq!(body["data"]["shop_kinds"][1]["s"], json!(""), "{body}");
    // `_seq` (server-specific) against SQL on the same server
    let data = fast
        .gql_ok("root", "{ shop_items_by_pk(id: 7) { _seq } }", json!({}))
        .await;
    let sql = rows(&fast.root("SELECT _seq FROM shop.items WHERE id = 7").await);
    assert_eq!(
        data["shop_items_by_pk"]["_seq"].as_str().map(str::to_string),
        Some(sql[0][0].to_string()),
        "{data} vs {sql:?}"
    );
}

/// `GET /metrics` answers in Prometheus' text format and counts this server's requests
/// by kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_kind() {
    let s = TestServer::start().await;
    s.root("CREATE NAMESPACE m").await;
    for _ in 0..3 {
        s.gql_ok("root", "{ _me { role } }", json!({})).await;
    }
    let resp = s
        .client
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    let ty = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ty.starts_with("text/plain; version=0.0.4"), "{ty}");
    let text = resp.text().await.expect("body");
    for line in [
        "kalamdb_http_requests_total{kind=\"graphql\"} 3",
        "kalamdb_http_requests_total{kind=\"sql\"} 1",
        "kalamdb_http_requests_total{kind=\"metrics\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    s.stop().await;
}
