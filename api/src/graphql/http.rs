//! `/v1/graphql` over HTTP, as the GraphQL-over-HTTP spec asks:
//! - `POST` with `application/json`, and `GET` with URL parameters (queries only; a
//!   mutation over GET is 405);
//! - the response type follows `Accept`: `application/graphql-response+json` when asked
//!   for, else `application/json`;
//! - a request error has no `data`. A malformed HTTP request (no body, bad JSON, bad
//!   parameter types) is 400; a document that does not parse or validate (or exceeds the
//!   depth or complexity limit) is 400 under `application/graphql-response+json` and 200
//!   under `application/json`. Authentication, method, media type and size errors keep
//!   their own status (401, 405, 415, 413).
//!
//! Every error carries `extensions.code`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use async_graphql::parser::types::OperationType;
use async_graphql::{ServerError, Variables};
use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kalamdb_engine::context::ExecContext;
use kalamdb_engine::error::ErrorCode;
use kalamdb_schema_gen::depth::check_depth;
use kalamdb_schema_gen::documents::operation;
use kalamdb_schema_gen::resolvers::ResponseBudget;
use serde_json::{Map, Value as Json};
use tracing::Instrument;

use super::response::{error_json, is_request_error, response_json, with_code};
use crate::app::AppState;
use crate::auth::request as http_auth;
use crate::body::read_bytes;
use crate::error::{ApiCode, ApiError, status_of};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json; charset=utf-8";
const JSON: &str = "application/json; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    GraphqlResponse,
    Json,
}

impl Media {
    /// Picks the response type from `Accept`, in the order the client lists them.
    fn negotiate(headers: &HeaderMap) -> Self {
        let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return Media::Json;
        };
        for part in accept.split(',') {
            let mime = part.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            match mime.as_str() {
                "application/graphql-response+json" => return Media::GraphqlResponse,
                "application/json" | "*/*" | "application/*" => return Media::Json,
                _ => {}
            }
        }
        Media::Json
    }

    fn content_type(self) -> &'static str {
        match self {
            Media::GraphqlResponse => GRAPHQL_RESPONSE,
            Media::Json => JSON,
        }
    }
}

/// A request that fails before execution.
pub(crate) struct RequestError {
    code: ApiCode,
    errors: Vec<Json>,
}

impl RequestError {
    fn new(code: impl Into<ApiCode>, message: impl Into<String>) -> Self {
        let code = code.into();
        Self {
            code,
            errors: vec![error_json(message.into(), code)],
        }
    }

    fn status(&self, media: Media) -> StatusCode {
        let ApiCode::Engine(code) = self.code else {
            return self.code.status();
        };
        match code {
            ErrorCode::Unauthenticated
            | ErrorCode::TokenExpired
            | ErrorCode::Forbidden
            | ErrorCode::PayloadTooLarge
            | ErrorCode::UserNotFound
            | ErrorCode::Internal => status_of(code),
            // a document that does not parse or validate: 200 for legacy JSON clients
            ErrorCode::GraphqlParseFailed
            | ErrorCode::GraphqlValidationFailed
            | ErrorCode::QueryTooDeep
            | ErrorCode::QueryTooComplex
                if media == Media::Json =>
            {
                StatusCode::OK
            }
            // a malformed HTTP request (body, parameters) is 400 whatever the media type
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn into_response(self, media: Media) -> Response {
        let status = self.status(media);
        let mut resp = respond(status, media, &serde_json::json!({ "errors": self.errors }));
        match self.code {
            ApiCode::MethodNotAllowed => {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            ApiCode::Engine(ErrorCode::Unauthenticated | ErrorCode::TokenExpired) => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"kalamdb\""),
                );
            }
            _ => {}
        }
        resp
    }
}

impl RequestError {
    /// The code and message of the first error.
    pub(crate) fn first(&self) -> (ApiCode, String) {
        let message = self
            .errors
            .first()
            .and_then(|e| e["message"].as_str())
            .unwrap_or("bad request")
            .to_string();
        (self.code, message)
    }
}

impl From<ApiError> for RequestError {
    fn from(e: ApiError) -> Self {
        Self::new(e.code, e.message)
    }
}

fn respond(status: StatusCode, media: Media, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    (status, [(header::CONTENT_TYPE, media.content_type())], bytes).into_response()
}

/// The parameters of one GraphQL request, checked for type.
pub(crate) struct Params {
    pub(crate) query: String,
    pub(crate) operation_name: Option<String>,
    pub(crate) variables: Map<String, Json>,
}

fn bad(message: impl Into<String>) -> RequestError {
    RequestError::new(ErrorCode::BadRequest, message)
}

impl Params {
    pub(crate) fn from_json(body: Json) -> Result<Self, RequestError> {
        let Json::Object(mut obj) = body else {
            return Err(bad("the request body must be a JSON object"));
        };
        let query = match obj.remove("query") {
            Some(Json::String(q)) => q,
            Some(_) => return Err(bad("'query' must be a string")),
            None => return Err(bad("the 'query' parameter is missing")),
        };
        let operation_name = match obj.remove("operationName") {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(s),
            Some(_) => return Err(bad("'operationName' must be a string")),
        };
        let variables = match obj.remove("variables") {
            None | Some(Json::Null) => Map::new(),
            Some(Json::Object(m)) => m,
            Some(_) => return Err(bad("'variables' must be an object")),
        };
        match obj.remove("extensions") {
            None | Some(Json::Null) | Some(Json::Object(_)) => {}
            Some(_) => return Err(bad("'extensions' must be an object")),
        }
        Ok(Self {
            query,
            operation_name,
            variables,
        })
    }

    fn from_url(mut q: HashMap<String, String>) -> Result<Self, RequestError> {
        let mut obj = Map::new();
        if let Some(query) = q.remove("query") {
            obj.insert("query".into(), Json::String(query));
        }
        if let Some(op) = q.remove("operationName").filter(|s| !s.is_empty()) {
            obj.insert("operationName".into(), Json::String(op));
        }
        for key in ["variables", "extensions"] {
            if let Some(text) = q.remove(key).filter(|s| !s.is_empty()) {
                let v: Json =
                    serde_json::from_str(&text).map_err(|_| bad(format!("'{key}' must be URL-encoded JSON")))?;
                obj.insert(key.into(), v);
            }
        }
        Self::from_json(Json::Object(obj))
    }
}

pub async fn post(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let media = Media::negotiate(&headers);
    let result = async {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        if content_type.as_deref() != Some("application/json") {
            return Err(RequestError::new(
                ApiCode::UnsupportedMediaType,
                "POST /v1/graphql takes Content-Type: application/json",
            ));
        }
        let ctx = http_auth::authenticate(&state, &headers, peer).await?;
        let limit = state.config.max_body_bytes;
        let bytes = read_bytes(body, limit)
            .await
            .map_err(|e| RequestError::new(e.code, e.message))?;
        if bytes.is_empty() {
            return Err(bad("the request body is empty"));
        }
        let json: Json = serde_json::from_slice(&bytes).map_err(|_| bad("the request body is not valid JSON"))?;
        Ok((ctx, Params::from_json(json)?))
    }
    .await;
    match result {
        Ok((ctx, params)) => execute(&state, ctx, params, media, false).await,
        Err(e) => e.into_response(media),
    }
}

/// `GET /v1/graphql`: a WebSocket upgrade, or a query in URL parameters.
pub async fn get(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Ok(ws) = upgrade {
        return super::ws::upgrade(ws, state, peer, headers);
    }
    let media = Media::negotiate(&headers);
    let result = async {
        let ctx = http_auth::authenticate(&state, &headers, peer).await?;
        Ok::<_, RequestError>((ctx, Params::from_url(query)?))
    }
    .await;
    match result {
        Ok((ctx, params)) => execute(&state, ctx, params, media, true).await,
        Err(e) => e.into_response(media),
    }
}

/// The code of a request error, for its HTTP status: the complexity limit's own code,
/// or a validation failure.
fn request_error_code(e: &ServerError) -> ErrorCode {
    let code = e.extensions.as_ref().and_then(|x| x.get("code"));
    if code == Some(&async_graphql::Value::from(ErrorCode::QueryTooComplex.as_str())) {
        ErrorCode::QueryTooComplex
    } else {
        ErrorCode::GraphqlValidationFailed
    }
}

/// The catalog generation a response was served under; it changes with every DDL, so
/// that a client (the playground) knows when to fetch the schema again.
pub const SCHEMA_GENERATION_HEADER: &str = "x-kalamdb-schema-generation";

async fn execute(state: &AppState, ctx: ExecContext, params: Params, media: Media, is_get: bool) -> Response {
    // read before the schema is picked, so that it is never newer than the schema used
    let generation = state.engine.catalog().generation();
    let mut resp = execute_on_schema(state, ctx, params, media, is_get).await;
    resp.headers_mut()
        .insert(SCHEMA_GENERATION_HEADER, HeaderValue::from(generation));
    resp
}

async fn execute_on_schema(state: &AppState, ctx: ExecContext, params: Params, media: Media, is_get: bool) -> Response {
    let span = tracing::info_span!("graphql", user = %ctx.user, role = %ctx.role);
    async move {
        let role_schema = match state.schemas.schema_for(ctx.role) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the GraphQL schema");
                return RequestError::new(ErrorCode::Internal, "internal error").into_response(media);
            }
        };
        let document = match state.schemas.parse(&params.query) {
            Ok(d) => d,
            Err(e) => return RequestError::new(e.code, e.message).into_response(media),
        };
        if let Err(message) = check_depth(&document.doc, state.schemas.limits().max_depth) {
            return RequestError::new(ErrorCode::QueryTooDeep, message).into_response(media);
        }
        let op_type = operation(&document.doc, params.operation_name.as_deref()).map(|op| op.node.ty);
        if is_get && op_type == Some(OperationType::Mutation) {
            return RequestError::new(ApiCode::MethodNotAllowed, "mutations need POST").into_response(media);
        }
        if op_type == Some(OperationType::Subscription) {
            return RequestError::new(
                ErrorCode::BadRequest,
                "subscriptions run over a WebSocket on /v1/graphql",
            )
            .into_response(media);
        }
        if state.config.graphql_fast_path
            && let Some(body) = role_schema
                .fast
                .run(
                    &state.engine,
                    &ctx,
                    &document,
                    params.operation_name.as_deref(),
                    &params.variables,
                )
                .await
        {
            return (StatusCode::OK, [(header::CONTENT_TYPE, media.content_type())], body).into_response();
        }
        let caller = ctx.clone();
        let mut request = async_graphql::Request::new(params.query)
            .variables(Variables::from_json(Json::Object(params.variables)))
            .data(ctx)
            .data(ResponseBudget::new(state.schemas.limits().max_response_bytes));
        if let Some(op) = params.operation_name {
            request = request.operation_name(op);
        }
        request.set_parsed_query(Arc::unwrap_or_clone(document.doc));
        let schema = role_schema.schema;
        let response = schema.execute(request).await;
        for e in &response.errors {
            let forbidden = e
                .extensions
                .as_ref()
                .and_then(|x| x.get("code"))
                .is_some_and(|c| *c == async_graphql::Value::from(ErrorCode::Forbidden.as_str()));
            if forbidden {
                state.engine.accounts().audit_forbidden(&caller, &e.message);
            }
        }
        if is_request_error(&response) {
            let errors: Vec<ServerError> = response
                .errors
                .into_iter()
                .map(|e| with_code(e, ErrorCode::GraphqlValidationFailed))
                .collect();
            let code = errors
                .first()
                .map_or(ErrorCode::GraphqlValidationFailed, request_error_code);
            let errors = errors.iter().filter_map(|e| serde_json::to_value(e).ok()).collect();
            return RequestError {
                code: code.into(),
                errors,
            }
            .into_response(media);
        }
        let body = response_json(response);
        (StatusCode::OK, [(header::CONTENT_TYPE, media.content_type())], body).into_response()
    }
    .instrument(span)
    .await
}
