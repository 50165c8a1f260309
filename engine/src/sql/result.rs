use serde::Serialize;

/// The answer to one SQL statement.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SqlResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affected_rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl SqlResult {
    pub fn message(m: impl Into<String>) -> Self {
        Self {
            message: Some(m.into()),
            ..Self::default()
        }
    }

    pub fn affected(n: u64) -> Self {
        Self {
            affected_rows: Some(n),
            ..Self::default()
        }
    }

    pub fn table(columns: &[&str], rows: Vec<Vec<serde_json::Value>>) -> Self {
        Self {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
            ..Self::default()
        }
    }
}
