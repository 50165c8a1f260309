//! Parsed GraphQL documents by query text. Clients send the same few documents again
//! and again with other variables, so a document seen before skips parsing.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::ServerError;
use async_graphql::parser::Positioned;
use async_graphql::parser::parse_query;
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationDefinition};
use parking_lot::RwLock;

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
    pub fn parse(&self, query: &str) -> Result<Document, ServerError> {
        if let Some((text, doc)) = self.docs.read().get_key_value(query) {
            return Ok(Document {
                text: text.clone(),
                doc: doc.clone(),
            });
        }
        let doc = Arc::new(parse_query(query).map_err(ServerError::from)?);
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
}
