//! GraphQL errors: every engine error becomes a GraphQL error with its stable
//! `extensions.code`, and an extension gives resolver errors their `path`.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextResolve, NextValidation, ResolveInfo,
};
use async_graphql::{
    ErrorExtensions, PathSegment, QueryPathSegment, ServerError, ServerResult, ValidationResult, Value,
};
use kalamdb_engine::error::{EngineError, ErrorCode};

/// A GraphQL error with a code.
pub fn gql_error(code: ErrorCode, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, ext| ext.set("code", code.as_str()))
}

/// An engine error as a GraphQL error; internal detail is logged, not sent.
pub fn engine_error(e: EngineError) -> async_graphql::Error {
    if e.code() == ErrorCode::Internal {
        tracing::error!(error = %e, "internal error in a resolver");
    }
    gql_error(e.code(), e.client_message())
}

/// Fills in the `path` of errors that dynamic resolvers return without one, so that
/// clients (and the HTTP layer) can tell field errors from request errors.
pub struct ErrorPath;

impl ExtensionFactory for ErrorPath {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorPathExtension)
    }
}

struct ErrorPathExtension;

#[async_trait::async_trait]
impl Extension for ErrorPathExtension {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let path = info.path_node;
        next.run(ctx, info).await.map_err(|mut e| {
            if e.path.is_empty() {
                let mut segments = Vec::new();
                let mut node = Some(path);
                while let Some(n) = node {
                    segments.push(match n.segment {
                        QueryPathSegment::Index(i) => PathSegment::Index(i),
                        QueryPathSegment::Name(name) => PathSegment::Field(name.to_string()),
                    });
                    node = n.parent;
                }
                segments.reverse();
                e.path = segments;
            }
            e
        })
    }
}

/// Refuses a document whose complexity (one per field) is over the limit, with the code
/// `QUERY_TOO_COMPLEX`. async-graphql's own limit reports a bare message, which the
/// transport could classify only by its text.
pub struct ComplexityLimit(pub usize);

impl ExtensionFactory for ComplexityLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ComplexityLimitExtension(self.0))
    }
}

struct ComplexityLimitExtension(usize);

#[async_trait::async_trait]
impl Extension for ComplexityLimitExtension {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        if result.complexity > self.0 {
            let mut e = ServerError::new(
                format!(
                    "the query has {} fields, more than the limit of {}",
                    result.complexity, self.0
                ),
                None,
            );
            e.extensions
                .get_or_insert_with(Default::default)
                .set("code", ErrorCode::QueryTooComplex.as_str());
            return Err(vec![e]);
        }
        Ok(result)
    }
}
