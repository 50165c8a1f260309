//! `kalamdb sql`: a small client that sends statements to `/v1/sql` and prints the
//! results as tables.

use base64::Engine as _;
use serde_json::Value;

/// Renders a JSON result as a text table (or its message / affected-row count).
pub fn render(result: &Value) -> String {
    if let Some(m) = result.get("message").and_then(Value::as_str) {
        return format!("{m}\n");
    }
    if let Some(n) = result.get("affected_rows") {
        return format!("{n} row(s) affected\n");
    }
    let columns: Vec<String> = result
        .get("columns")
        .and_then(Value::as_array)
        .map(|c| c.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = result
        .get("rows")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r.as_array()
                        .map(|cells| {
                            cells
                                .iter()
                                .map(|c| match c {
                                    Value::String(s) => s.clone(),
                                    Value::Null => "NULL".into(),
                                    other => other.to_string(),
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {c:<w$} ", w = *w))
            .collect();
        format!("|{}|\n", parts.join("|"))
    };
    let sep = format!(
        "+{}+\n",
        widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+")
    );
    let mut out = String::new();
    out.push_str(&sep);
    out.push_str(&line(&columns));
    out.push_str(&sep);
    for r in &rows {
        out.push_str(&line(r));
    }
    out.push_str(&sep);
    out.push_str(&format!("({} row(s))\n", rows.len()));
    out
}

/// Sends one statement; returns the JSON result or the server's error as text.
pub async fn run(client: &reqwest::Client, url: &str, user: &str, password: &str, sql: &str) -> Result<Value, String> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let resp = client
        .post(format!("{}/v1/sql", url.trim_end_matches('/')))
        .header("authorization", format!("Basic {auth}"))
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| format!("bad response ({status}): {e}"))?;
    if let Some(err) = body.get("error") {
        return Err(format!(
            "{}: {}",
            err.get("code").and_then(Value::as_str).unwrap_or("ERROR"),
            err.get("message").and_then(Value::as_str).unwrap_or("")
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_tables() {
        let t = render(&serde_json::json!({"columns": ["id", "title"], "rows": [[1, "a"], [22, null]]}));
        assert!(t.contains("| id | title |"), "{t}");
        assert!(t.contains("| 22 | NULL  |"), "{t}");
        assert!(t.ends_with("(2 row(s))\n"));
        assert_eq!(render(&serde_json::json!({"affected_rows": 3})), "3 row(s) affected\n");
    }
}
