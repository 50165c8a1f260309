//! GraphQL responses as JSON, shared by HTTP and WebSocket: results with keys in query
//! order, and errors that always carry `extensions.code`.

use async_graphql::ServerError;
use kalamdb_engine::error::ErrorCode;
use serde_json::Value as Json;

use crate::error::ApiCode;

pub(crate) fn error_json(message: String, code: impl Into<ApiCode>) -> Json {
    serde_json::json!({ "message": message, "extensions": { "code": code.into().as_str() } })
}

/// An executed request's result; serialised straight from async-graphql's values so
/// that response keys keep the order of the query.
#[derive(serde::Serialize)]
pub(crate) struct ExecutionResult<'a> {
    data: &'a async_graphql::Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<ServerError>,
}

/// The `errors` of a failed request as a JSON array, each with its code.
pub(crate) fn response_errors(errors: Vec<ServerError>) -> String {
    let errors: Vec<ServerError> = errors
        .into_iter()
        .map(|e| with_code(e, ErrorCode::GraphqlValidationFailed))
        .collect();
    serde_json::to_string(&errors).unwrap_or_else(|_| "[]".into())
}

/// An executed request's result as JSON, keys in query order.
pub(crate) fn response_json(response: async_graphql::Response) -> String {
    let body = ExecutionResult {
        data: &response.data,
        errors: response
            .errors
            .into_iter()
            .map(|e| with_code(e, ErrorCode::Internal))
            .collect(),
    };
    serde_json::to_string(&body).unwrap_or_else(|_| "{}".into())
}

/// A response that failed before execution (parse, validation, limits): no data, and
/// no error tied to a field.
pub(crate) fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// Gives an error `code` unless it carries one.
pub(crate) fn with_code(mut e: ServerError, code: ErrorCode) -> ServerError {
    let ext = e.extensions.get_or_insert_with(Default::default);
    if ext.get("code").is_none() {
        ext.set("code", code.as_str());
    }
    e
}
