//! Answers as PostgreSQL gives them, class by class: one zero, finite doubles,
//! integer overflow, exact float input, upserts that name a key twice, LIKE escapes,
//! sub-microsecond timestamps and the most negative integer literals.

use kalamdb_tests::{TestServer, rows};
use serde_json::{Value, json};

async fn setup(s: &TestServer) {
    s.root("CREATE NAMESPACE p").await;
    s.root(
        "CREATE TABLE p.t (id BIGINT PRIMARY KEY, d DOUBLE, b BIGINT, i INT, s TEXT, ts TIMESTAMP) \
         WITH (TYPE = 'SHARED')",
    )
    .await;
}

fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_zero_is_zero_everywhere() {
    let s = TestServer::start().await;
    setup(&s).await;
    s.gql_ok(
        "root",
        "mutation { insert_p_t(objects: [{id: 1, d: -0.0}, {id: 2, d: 0.0}, {id: 3, d: -1.5}, {id: 4, d: 2}]) { affected_rows } }",
        json!({}),
    )
    .await;
    s.root("INSERT INTO p.t (id, d) VALUES (5, -0.0)").await;
    let s = &s;
    let list = |filter: &str| {
        let q = format!("{{ p_t(where: {filter}, order_by: {{id: asc}}) {{ id d }} }}");
        async move { s.gql_ok("root", &q, json!({})).await["p_t"].clone() }
    };
    let zeros = list("{d: {_eq: 0}}").await;
    assert_eq!(ids(&zeros), [1, 2, 5]);
    // stored as one zero: no -0 comes back
    assert!(
        zeros.as_array().unwrap().iter().all(|r| r["d"] == json!(0.0)),
        "{zeros}"
    );
    assert_eq!(ids(&list("{d: {_lt: 0}}").await), [3]);
    assert_eq!(ids(&list("{d: {_eq: -0.0}}").await), [1, 2, 5]);
    assert_eq!(ids(&list("{d: {_gte: -0.0, _lte: 0}}").await), [1, 2, 5]);
    // a long list is hashed in DataFusion: both zeros still match
    let many: Vec<String> = (0..40)
        .map(|i| format!("{}.5", i + 10))
        .chain(["-0.0".into()])
        .collect();
    let d = s
        .gql_ok(
            "root",
            &format!(
                "{{ p_t_aggregate(where: {{d: {{_in: [{}]}}}}) {{ aggregate {{ count distinct: count(columns: [d], distinct: true) }} }} }}",
                many.join(", ")
            ),
            json!({}),
        )
        .await;
    assert_eq!(d["p_t_aggregate"]["aggregate"], json!({"count": 3, "distinct": 1}));
    // ties in a sort: -0.0 does not sort before 0.0, the key breaks the tie
    let sorted = s
        .gql_ok("root", "{ p_t(order_by: [{d: asc}, {id: desc}]) { id } }", json!({}))
        .await;
    assert_eq!(ids(&sorted["p_t"]), [3, 5, 2, 1, 4]);
    let u = s
        .gql_ok(
            "root",
            "mutation { update_p_t(where: {d: {_eq: 0}}, _set: {s: \"zero\"}) { affected_rows } }",
            json!({}),
        )
        .await;
    assert_eq!(u["update_p_t"]["affected_rows"], 3);
    let r = s.root("SELECT count(DISTINCT d) FROM p.t WHERE d = 0").await;
    assert_eq!(rows(&r), [[json!(1)]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doubles_are_finite_and_overflow_is_an_error() {
    let s = TestServer::start().await;
    setup(&s).await;
    for bad in ["'NaN'", "'Infinity'", "'-inf'"] {
        let (status, code) = s
            .err(
                "root",
                kalamdb_tests::ROOT_PASSWORD,
                &format!("INSERT INTO p.t (id, d) VALUES (9, {bad})"),
            )
            .await;
        assert_eq!((status, code.as_str()), (400, "OUT_OF_RANGE"), "{bad}");
    }
    s.gql_ok(
        "root",
        "mutation { insert_p_t_one(object: {id: 1, d: 1.7976931348623157e308, b: 9223372036854775807, i: 2147483647}) { id } }",
        json!({}),
    )
    .await;
    for inc in ["{d: 1.7976931348623157e308}", "{b: 1}", "{i: 1}"] {
        let (_, code) = s
            .gql_err(
                "root",
                &format!("mutation {{ update_p_t_by_pk(pk_columns: {{id: 1}}, _inc: {inc}) {{ id }} }}"),
                json!({}),
            )
            .await;
        assert_eq!(code, "OUT_OF_RANGE", "{inc}");
    }
    let (_, code) = s
        .gql_err(
            "root",
            "mutation { update_p_t(where: {id: {_eq: 1}}, _inc: {b: -1, i: 1}) { affected_rows } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "OUT_OF_RANGE");
    let (status, code) = s
        .err(
            "root",
            kalamdb_tests::ROOT_PASSWORD,
            "UPDATE p.t SET d = d / 0 WHERE id = 1",
        )
        .await;
    assert_eq!((status, code.as_str()), (400, "INVALID_INPUT"));
    // nothing was written by any of them
    let row = s.gql_ok("root", "{ p_t_by_pk(id: 1) { d b i } }", json!({})).await;
    assert_eq!(
        row["p_t_by_pk"],
        json!({"d": 1.7976931348623157e308, "b": "9223372036854775807", "i": 2147483647})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float_input_round_trips_exactly() {
    let s = TestServer::start().await;
    setup(&s).await;
    let values = [
        123456789.12345679,
        0.1 + 0.2,
        5e-324,
        2.2250738585072014e-308,
        9007199254740993.0,
    ];
    for (i, v) in values.iter().enumerate() {
        // as a literal in the document, and as a variable
        s.gql_ok(
            "root",
            &format!("mutation {{ insert_p_t_one(object: {{id: {i}, d: {v:?}}}) {{ id }} }}"),
            json!({}),
        )
        .await;
        s.gql_ok(
            "root",
            "mutation($o: p_t_insert_input!) { insert_p_t_one(object: $o) { id } }",
            json!({ "o": { "id": 100 + i, "d": v } }),
        )
        .await;
    }
    for (i, v) in values.iter().enumerate() {
        let found = s
            .gql_ok(
                "root",
                "query($d: Float!) { p_t(where: {d: {_eq: $d}}, order_by: {id: asc}) { id d } }",
                json!({ "d": v }),
            )
            .await;
        assert_eq!(ids(&found["p_t"]), [i as i64, 100 + i as i64], "{v:?}");
        assert_eq!(found["p_t"][0]["d"].as_f64(), Some(*v), "{v:?}");
        let literal = s
            .gql_ok(
                "root",
                &format!("{{ p_t(where: {{d: {{_eq: {v:?}}}}}) {{ id }} }}"),
                json!({}),
            )
            .await;
        assert_eq!(ids(&literal["p_t"]).len(), 2, "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smaller_classes_match_postgresql() {
    let s = TestServer::start().await;
    setup(&s).await;
    // an upsert that proposes one key twice is refused whole
    let (_, code) = s
        .gql_err(
            "root",
            "mutation { insert_p_t(objects: [{id: 1, s: \"a\"}, {id: 2, s: \"b\"}, {id: 1, s: \"c\"}], \
             on_conflict: {constraint: p_t_pkey, update_columns: [s]}) { affected_rows } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "INVALID_INPUT");
    let (status, code) = s
        .err(
            "root",
            kalamdb_tests::ROOT_PASSWORD,
            "INSERT INTO p.t (id, s) VALUES (1, 'a'), (1, 'b') ON CONFLICT (id) DO UPDATE SET s = EXCLUDED.s",
        )
        .await;
    assert_eq!((status, code.as_str()), (400, "INVALID_INPUT"));
    assert_eq!(rows(&s.root("SELECT count(*) FROM p.t").await), [[json!(0)]]);
    // DO NOTHING keeps the first, as PostgreSQL does
    s.root("INSERT INTO p.t (id, s) VALUES (1, 'a'), (1, 'b') ON CONFLICT (id) DO NOTHING")
        .await;
    assert_eq!(rows(&s.root("SELECT s FROM p.t").await), [[json!("a")]]);

    // a LIKE pattern that ends in its escape character
    let (_, code) = s
        .gql_err("root", r#"{ p_t(where: {s: {_like: "a\\"}}) { id } }"#, json!({}))
        .await;
    assert_eq!(code, "INVALID_INPUT");

    // the most negative integers as bare literals
    s.root("INSERT INTO p.t (id, b, i) VALUES (-9223372036854775808, -9223372036854775808, -2147483648)")
        .await;
    let r = s.root("SELECT b, i FROM p.t WHERE id = -9223372036854775808").await;
    assert_eq!(rows(&r), [[json!(i64::MIN), json!(i32::MIN)]]);

    // sub-microsecond fractions round to the nearest microsecond
    s.root("INSERT INTO p.t (id, ts) VALUES (7, '2024-05-06 07:08:09.9999996')")
        .await;
    let t = s.gql_ok("root", "{ p_t_by_pk(id: 7) { ts } }", json!({})).await;
    assert_eq!(t["p_t_by_pk"]["ts"], "2024-05-06T07:08:10Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_sums_never_wrap() {
    let s = TestServer::start().await;
    setup(&s).await;
    s.root("INSERT INTO p.t (id, b, i) VALUES (1, 9223372036854775807, 2147483647), (2, -1, 2147483647)")
        .await;
    const SUM: &str = "{ p_t_aggregate { aggregate { sum { b i } avg { b } } } }";
    let a = s.gql_ok("root", SUM, json!({})).await;
    // the sum of INT is a BIGINT past INT's range; of BIGINT, exact
    assert_eq!(
        a["p_t_aggregate"]["aggregate"]["sum"],
        json!({"b": "9223372036854775806", "i": "4294967294"})
    );
    assert_eq!(a["p_t_aggregate"]["aggregate"]["avg"]["b"], json!(4.611686018427388e18));
    s.root("INSERT INTO p.t (id, b) VALUES (3, 2)").await;
    let (_, code) = s.gql_err("root", SUM, json!({})).await;
    assert_eq!(code, "OUT_OF_RANGE");
    let grouped = s
        .gql_err(
            "root",
            "{ p_t_aggregate(where: {id: {_gt: 0}}) { aggregate { sum { b } } } }",
            json!({}),
        )
        .await;
    assert_eq!(grouped.1, "OUT_OF_RANGE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_insensitive_matching_folds_one_way_in_every_path() {
    let s = TestServer::start().await;
    setup(&s).await;
    let texts = [
        "ſ", "s", "S", "İ", "i", "É", "é", "ß", "SS", "\u{212A}", "k", "Σ", "ς", "σ",
    ];
    let values: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| format!("({}, '{t}')", i + 1))
        .collect();
    s.root(&format!("INSERT INTO p.t (id, s) VALUES {}", values.join(", ")))
        .await;
    // what PostgreSQL 15 answers under a C.UTF-8 locale (each character lowercased)
    for (pattern, expected) in [
        ("s", vec![2, 3]),
        ("i", vec![4, 5]),
        ("É", vec![6, 7]),
        ("ss", vec![9]),
        ("K", vec![10, 11]),
        ("ς", vec![13]),
        ("σ", vec![12, 14]),
    ] {
        let list = s
            .gql_ok(
                "root",
                "query($p: String!) { p_t(where: {s: {_ilike: $p}}, order_by: {id: asc}) { id } \
                 p_t_aggregate(where: {s: {_ilike: $p}}) { aggregate { count } } }",
                json!({ "p": pattern }),
            )
            .await;
        assert_eq!(ids(&list["p_t"]), expected, "_ilike {pattern}");
        assert_eq!(
            list["p_t_aggregate"]["aggregate"]["count"],
            json!(expected.len()),
            "_ilike {pattern} in an aggregate"
        );
        let sql = s
            .root(&format!("SELECT id FROM p.t WHERE s ILIKE '{pattern}' ORDER BY id"))
            .await;
        let got: Vec<i64> = rows(&sql).iter().map(|r| r[0].as_i64().unwrap()).collect();
        assert_eq!(got, expected, "ILIKE {pattern} in SQL");
        let lower = s
            .root(&format!(
                "SELECT id FROM p.t WHERE lower(s) = lower('{pattern}') ORDER BY id"
            ))
            .await;
        let got: Vec<i64> = rows(&lower).iter().map(|r| r[0].as_i64().unwrap()).collect();
        assert_eq!(got, expected, "lower() = lower({pattern}) in SQL");
    }
}
