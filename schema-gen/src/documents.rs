//! Parsed GraphQL documents by query text. Clients send the same few documents again
//! and again with other variables, so a document seen before skips parsing.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::parser::Positioned;
use async_graphql::parser::parse_query;
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationDefinition};
use kalamdb_engine::error::ErrorCode;
use parking_lot::RwLock;

/// The deepest nesting of brackets (`{`, `[`, `(`) a document may have. The parser,
/// validation and value conversion all recurse once per level, so a document of a few
/// kilobytes nested thousands deep would exhaust the stack; it is refused by a scan of
/// the text before anything recurses. Real documents stay far below it: selections are
/// bounded by the depth limit, and a `where` by the filter depth (two brackets a level).
pub const MAX_NESTING: usize = 128;

/// Why a query text was refused before it ran.
#[derive(Debug, Clone)]
pub struct ParseFailure {
    pub code: ErrorCode,
    pub message: String,
}

/// Whether brackets outside strings and comments nest deeper than `max`, found by one
/// pass over the bytes that never recurses.
fn nests_deeper_than(text: &str, max: usize) -> bool {
    let b = text.as_bytes();
    let (mut i, mut depth) = (0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < b.len() && !b[i..].starts_with(b"\"\"\"") {
                    i += if b[i..].starts_with(b"\\\"\"\"") { 4 } else { 1 };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// How many documents are kept; when full the memory starts over.
const MAX_DOCUMENTS: usize = 1024;
/// Longer query texts are parsed every time, not kept.
const MAX_KEPT_LEN: usize = 16 * 1024;

#[derive(Default)]
pub struct DocumentCache {
    docs: RwLock<HashMap<Arc<str>, Arc<ExecutableDocument>>>,
}

/// A parsed document with its query text; both are shared by every request that
/// sends the same text while it is kept (a subscription holds the text for as long as
/// it runs, so many subscriptions of one document hold one copy).
#[derive(Debug, Clone)]
pub struct Document {
    pub text: Arc<str>,
    pub doc: Arc<ExecutableDocument>,
}

impl DocumentCache {
    /// The document of a query text; a parse error is not kept.
    pub fn parse(&self, query: &str) -> Result<Document, ParseFailure> {
        if let Some((text, doc)) = self.docs.read().get_key_value(query) {
            return Ok(Document {
                text: text.clone(),
                doc: doc.clone(),
            });
        }
        if nests_deeper_than(query, MAX_NESTING) {
            return Err(ParseFailure {
                code: ErrorCode::QueryTooDeep,
                message: format!("the document nests brackets more than {MAX_NESTING} levels deep"),
            });
        }
        let doc = Arc::new(parse_query(query).map_err(|e| ParseFailure {
            code: ErrorCode::GraphqlParseFailed,
            message: e.to_string(),
        })?);
        let text: Arc<str> = query.into();
        if query.len() <= MAX_KEPT_LEN {
            let mut docs = self.docs.write();
            if docs.len() >= MAX_DOCUMENTS {
                docs.clear();
            }
            docs.insert(text.clone(), doc.clone());
        }
        Ok(Document { text, doc })
    }
}

/// The operation a request runs, as async-graphql picks it: the one named by
/// `operationName`, or without a name the document's only operation.
pub fn operation<'a>(doc: &'a ExecutableDocument, name: Option<&str>) -> Option<&'a Positioned<OperationDefinition>> {
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), None) => Some(op),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_document_equals_a_fresh_parse_and_errors_stay_errors() {
        let cache = DocumentCache::default();
        let q = "query($id: BigInt!) { t_by_pk(id: $id) { id name } }";
        let first = cache.parse(q).expect("parses");
        let again = cache.parse(q).expect("parses");
        assert_eq!(format!("{:?}", first.doc), format!("{:?}", again.doc));
        assert_eq!(
            format!("{:?}", again.doc),
            format!("{:?}", parse_query(q).expect("parses"))
        );
        assert!(Arc::ptr_eq(&first.text, &again.text), "one shared copy of the text");
        assert_eq!(&*again.text, q);
        let bad = "{ t(";
        let e1 = cache.parse(bad).expect_err("bad");
        let e2 = cache.parse(bad).expect_err("bad");
        assert_eq!(e1.message, e2.message);
        assert!(cache.docs.read().get(bad).is_none());
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let cache = DocumentCache::default();
        let code = |q: &str| cache.parse(q).err().map(|e| e.code);
        let lists = format!("{{ t(where: {}1{}) {{ id }} }}", "[".repeat(2000), "]".repeat(2000));
        assert_eq!(code(&lists), Some(ErrorCode::QueryTooDeep));
        let nots = format!(
            "{{ t(where: {}{{}}{}) {{ id }} }}",
            "{_not: ".repeat(2000),
            "}".repeat(2000)
        );
        assert_eq!(code(&nots), Some(ErrorCode::QueryTooDeep));
        // brackets in strings, block strings and comments do not count
        let quoted = format!(
            "{{ t(a: \"{0}\", b: \"\"\"{0}\\\"\"\"\"\"\") {{ id }} # {0}\n}}",
            "[".repeat(500)
        );
        assert_eq!(code(&quoted), None);
        let fine = format!("{{ t(where: {}1{}) {{ id }} }}", "[".repeat(100), "]".repeat(100));
        assert_eq!(code(&fine), None);
    }
}
