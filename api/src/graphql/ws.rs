//! GraphQL over WebSocket on `/v1/graphql`: `graphql-transport-ws` and the legacy
//! `graphql-ws` (subscriptions-transport-ws), chosen by `Sec-WebSocket-Protocol`.
//!
//! Our own protocol loop, so that every case closes or answers as PROTOCOL.md says:
//! an invalid message closes 4400, `subscribe` before `connection_ack` 4401, rejected
//! credentials 4403 (also when the token expires), no `connection_init` in time 4408,
//! a duplicate id 4409, a second `connection_init` 4429; a subscription that cannot
//! start gets an `error` message. Close reasons stay within the 123 bytes a close
//! frame allows.
//!
//! Outbound frames go through a queue bounded in bytes. A client that stops reading
//! is cut off (1008) once its queue is full, so memory stays bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::parser::types::{OperationType, Selection};
use async_graphql::{Variables, dynamic::Schema};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use futures::StreamExt;
use kalamdb_auth::permissions::TableType;
use kalamdb_engine::accounts::{Principal, Revocation};
use kalamdb_engine::context::ExecContext;
use kalamdb_engine::error::ErrorCode;
use kalamdb_schema_gen::depth::check_depth;
use kalamdb_schema_gen::documents::operation;
use serde_json::{Map, Value as Json, json};
use tokio::sync::{broadcast, mpsc};

use super::http::Params;
use super::outbox::{Closing, ConnEvent, Out, Outbox, Protocol, close, writer};
use super::realtime::{Member, Membership, Prepared, Sharing, SubRequest};
use super::response::{error_json, is_request_error, response_errors, response_json};
use crate::app::AppState;
use crate::auth::request::{self as http_auth, ACT_AS_HEADER};
use crate::error::ApiCode;

enum Running {
    /// A query or mutation sent over the socket.
    Once(tokio::task::AbortHandle, u64),
    /// Dropping the membership leaves the subscription's group.
    Subscription { _membership: Membership, token: u64 },
}

impl Running {
    fn token(&self) -> u64 {
        match self {
            Running::Once(_, token) | Running::Subscription { token, .. } => *token,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Once(h, _) = self {
            h.abort();
        }
    }
}

/// `GET /v1/graphql` with an upgrade: picks the sub-protocol and runs the connection.
pub fn upgrade(
    ws: WebSocketUpgrade,
    state: AppState,
    peer: SocketAddr,
    headers: HeaderMap,
) -> axum::response::Response {
    let ws = ws.protocols([Protocol::TRANSPORT, Protocol::LEGACY]);
    let protocol = match ws.selected_protocol().and_then(|v| v.to_str().ok()) {
        Some(Protocol::LEGACY) => Protocol::LegacyWs,
        _ => Protocol::TransportWs,
    };
    let max_message = state.config.max_body_bytes;
    // The read buffer keeps at least this much room free, so a burst of subscribe
    // messages grows it to about twice this and it stays that size: 4 KB keeps an
    // idle connection small; larger messages just take more reads.
    ws.max_message_size(max_message)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .on_upgrade(move |socket| run(socket, protocol, state, peer, headers))
}

struct Conn {
    state: AppState,
    protocol: Protocol,
    peer: SocketAddr,
    upgrade_headers: HeaderMap,
    out: Outbox,
    events: mpsc::UnboundedSender<ConnEvent>,
    init_received: bool,
    /// The caller of `connection_init`: its context, its token's expiry, and the
    /// credentials whose revocation closes the socket.
    principal: Option<Principal>,
    running: HashMap<String, Running>,
}

async fn run(socket: WebSocket, protocol: Protocol, state: AppState, peer: SocketAddr, headers: HeaderMap) {
    let _open = state.realtime.track();
    let (sink, mut stream) = socket.split();
    let (tx, rx) = mpsc::unbounded_channel();
    let out = Outbox::new(tx, state.config.ws_max_queued_bytes);
    let mut writer = tokio::spawn(writer(sink, rx, out.clone()));
    let (events, mut events_rx) = mpsc::unbounded_channel();
    let mut shutdown = state.realtime.shutdown_signal();
    let init_timeout = Duration::from_millis(state.config.ws_init_timeout_ms);
    let keepalive = Duration::from_secs(state.config.ws_keepalive_secs.max(1));
    let keepalive_on = state.config.ws_keepalive_secs > 0;
    let mut conn = Conn {
        state,
        protocol,
        peer,
        upgrade_headers: headers,
        out: out.clone(),
        events,
        init_received: false,
        principal: None,
        running: HashMap::new(),
    };
    let mut revocations = conn.state.engine.accounts().revocations();
    let mut revocations_open = true;
    let init_deadline = tokio::time::sleep(init_timeout);
    tokio::pin!(init_deadline);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    let mut writer_done = false;
    let closing: Option<Closing> = loop {
        let expiry = conn.principal.as_ref().and_then(|p| p.expires_at).map(|exp| {
            let now = kalamdb_storage::seq::now_millis();
            Duration::from_millis((exp * 1000).saturating_sub(now))
        });
        tokio::select! {
            msg = stream.next() => match msg {
                None => break None,
                Some(Err(e)) => {
                    let text = e.to_string();
                    break (text.contains("size") || text.contains("too long"))
                        .then(|| (close::MESSAGE_TOO_BIG, "message too big".to_string()));
                }
                Some(Ok(Message::Text(t))) => {
                    if let Some(c) = conn.on_text(t.as_str()).await {
                        break Some(c);
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    break Some((close::BAD_REQUEST, "binary messages are not part of the protocol".into()));
                }
                Some(Ok(Message::Close(_))) => break Some((close::NORMAL, String::new())),
                Some(Ok(_)) => {}
            },
            _ = &mut init_deadline, if !conn.init_received => {
                break Some((close::INIT_TIMEOUT, "Connection initialisation timeout".into()));
            }
            _ = ticker.tick(), if keepalive_on => conn.keepalive(),
            _ = tokio::time::sleep(expiry.unwrap_or_default()), if expiry.is_some() => {
                break Some((close::FORBIDDEN, "Forbidden: token expired".into()));
            }
            rev = revocations.recv(), if revocations_open => {
                if matches!(rev, Err(broadcast::error::RecvError::Closed)) {
                    revocations_open = false;
                } else if conn.is_revoked(rev) {
                    break Some((close::FORBIDDEN, "Forbidden: session revoked".into()));
                }
            }
            Some(ev) = events_rx.recv() => conn.on_event(ev),
            _ = out.overflow_signal() => {
                if out.overflowed() {
                    break Some((close::SLOW_CONSUMER, "slow consumer: outbound queue full".into()));
                }
            }
            _ = shutdown.changed() => break Some((close::GOING_AWAY, "server shutting down".into())),
            _ = &mut writer => {
                writer_done = true;
                break None;
            }
        }
    };
    conn.running.clear();
    if writer_done {
        return;
    }
    match closing {
        Some((code, reason)) => {
            if code == close::SLOW_CONSUMER {
                tracing::info!(peer = %conn.peer, "closing a WebSocket that stopped reading");
            }
            // a slow consumer's close overtakes its queue and waits for it to read
            // what the socket already holds; other closes follow what is queued
            let wait = if code == close::SLOW_CONSUMER {
                out.close_now(code, reason);
                SLOW_CONSUMER_CLOSE_WAIT
            } else {
                out.control(Out::Close(code, reason));
                Duration::from_secs(2)
            };
            if tokio::time::timeout(wait, &mut writer).await.is_err() {
                writer.abort();
            }
        }
        None => writer.abort(),
    }
}

/// How long a slow consumer has to read what its socket holds before its close frame.
const SLOW_CONSUMER_CLOSE_WAIT: Duration = Duration::from_secs(15);

fn invalid(why: impl Into<String>) -> Option<Closing> {
    Some((close::BAD_REQUEST, why.into()))
}

/// Credentials from the `connection_init` payload (`{"Authorization": ..}` or
/// `{"headers": {..}}`), else from the upgrade request.
fn init_headers(payload: Option<&Json>, upgrade: &HeaderMap) -> HeaderMap {
    let wanted = [header::AUTHORIZATION, HeaderName::from_static(ACT_AS_HEADER)];
    let mut h = HeaderMap::new();
    let mut take = |obj: &Map<String, Json>| {
        for (k, v) in obj {
            let Json::String(s) = v else { continue };
            let Ok(name) = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()) else {
                continue;
            };
            if wanted.contains(&name)
                && let Ok(value) = HeaderValue::from_str(s)
            {
                h.insert(name, value);
            }
        }
    };
    if let Some(Json::Object(p)) = payload {
        take(p);
        if let Some(Json::Object(inner)) = p.get("headers") {
            take(inner);
        }
    }
    for name in wanted {
        if !h.contains_key(&name)
            && let Some(v) = upgrade.get(&name)
        {
            h.insert(name, v.clone());
        }
    }
    h
}

impl Conn {
    fn send_type(&self, ty: &str) {
        self.out.json(json!({ "type": ty }));
    }

    fn keepalive(&self) {
        match self.protocol {
            // browsers and ws answer a ping frame by themselves; clients need not ping us
            Protocol::TransportWs => self.out.control(Out::Ping),
            Protocol::LegacyWs => {
                if self.principal.is_some() {
                    self.send_type("ka");
                }
            }
        }
    }

    fn on_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Finished(id, token) => {
                if self.running.get(&id).is_some_and(|r| r.token() == token) {
                    self.running.remove(&id);
                }
            }
        }
    }

    fn op_error(&self, id: &str, code: impl Into<ApiCode>, message: impl Into<String>) {
        let errors = json!([error_json(message.into(), code)]);
        self.out.json(json!({ "id": id, "type": "error", "payload": errors }));
    }

    async fn on_text(&mut self, text: &str) -> Option<Closing> {
        let Ok(Json::Object(mut msg)) = serde_json::from_str::<Json>(text) else {
            return invalid("Invalid message: not a JSON object");
        };
        let Some(Json::String(ty)) = msg.remove("type") else {
            return invalid("Invalid message: no type");
        };
        let legacy = self.protocol == Protocol::LegacyWs;
        match ty.as_str() {
            "connection_init" => self.on_init(msg.get("payload")).await,
            "ping" if !legacy => {
                self.send_type("pong");
                None
            }
            "pong" if !legacy => None,
            "subscribe" | "start" if (ty == "start") == legacy => {
                if self.principal.is_none() {
                    return Some((close::UNAUTHORIZED, "Unauthorized".into()));
                }
                let Some(Json::String(id)) = msg.remove("id") else {
                    return invalid("Invalid message: no id");
                };
                let Some(Json::Object(payload)) = msg.remove("payload") else {
                    return invalid("Invalid message: no payload");
                };
                if self.running.contains_key(&id) {
                    if !legacy {
                        return Some((close::DUPLICATE_ID, format!("Subscriber for {id} already exists")));
                    }
                    // subscriptions-transport-ws replaces an operation that reuses an id
                    self.running.remove(&id);
                }
                self.start(id, payload).await;
                None
            }
            "complete" | "stop" if (ty == "stop") == legacy => {
                let Some(Json::String(id)) = msg.remove("id") else {
                    return invalid("Invalid message: no id");
                };
                self.running.remove(&id);
                None
            }
            "connection_terminate" if legacy => Some((close::NORMAL, String::new())),
            other => invalid(format!("Invalid message type '{other}'")),
        }
    }

    /// Whether a revocation ends this connection's credentials. When revocations were
    /// missed (the receiver lagged), the credentials are checked again.
    fn is_revoked(&self, rev: Result<Revocation, broadcast::error::RecvError>) -> bool {
        let Some(p) = &self.principal else { return false };
        match rev {
            Ok(Revocation::Session(s)) => p.session.as_deref() == Some(s.as_str()),
            Ok(Revocation::User(u)) => p.ctx.user == u,
            Err(_) => !self.state.engine.accounts().still_valid(p),
        }
    }

    async fn on_init(&mut self, payload: Option<&Json>) -> Option<Closing> {
        if self.init_received {
            return Some((close::TOO_MANY_INITS, "Too many initialisation requests".into()));
        }
        self.init_received = true;
        if !matches!(payload, None | Some(Json::Null) | Some(Json::Object(_))) {
            return invalid("Invalid message: the connection_init payload must be an object");
        }
        let headers = init_headers(payload, &self.upgrade_headers);
        match http_auth::authenticate_session(&self.state, &headers, self.peer).await {
            Ok(principal) => {
                self.principal = Some(principal);
                self.send_type("connection_ack");
                if self.protocol == Protocol::LegacyWs {
                    self.send_type("ka");
                }
                None
            }
            Err(e) => {
                if self.protocol == Protocol::LegacyWs {
                    self.out.json(json!({
                        "type": "connection_error",
                        "payload": { "message": e.message, "extensions": { "code": e.code.as_str() } }
                    }));
                }
                Some((close::FORBIDDEN, "Forbidden".into()))
            }
        }
    }

    async fn start(&mut self, id: String, payload: Map<String, Json>) {
        let params = match Params::from_json(Json::Object(payload)) {
            Ok(p) => p,
            Err(e) => {
                let (code, message) = e.first();
                return self.op_error(&id, code, message);
            }
        };
        let Some(ctx) = self.principal.as_ref().map(|p| p.ctx.clone()) else {
            return;
        };
        let (text, doc) = match self.state.schemas.parse(&params.query) {
            Ok(d) => (d.text, d.doc),
            Err(e) => return self.op_error(&id, e.code, e.message),
        };
        if let Err(message) = check_depth(&doc, self.state.schemas.limits().max_depth) {
            return self.op_error(&id, ErrorCode::QueryTooDeep, message);
        }
        let op = operation(&doc, params.operation_name.as_deref());
        let Some(op) = op else {
            return self.op_error(
                &id,
                ErrorCode::GraphqlValidationFailed,
                "the document has no such operation; set operationName",
            );
        };
        let schema = match self.state.schemas.schema_for(ctx.role) {
            Ok(s) => s.schema,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the GraphQL schema");
                return self.op_error(&id, ErrorCode::Internal, "internal error");
            }
        };
        let token = self.state.realtime.token();
        let is_subscription = op.node.ty == OperationType::Subscription;
        let root_fields = &op.node.selection_set.node.items;
        if is_subscription && !matches!(root_fields.as_slice(), [f] if matches!(f.node, Selection::Field(_))) {
            return self.op_error(
                &id,
                ErrorCode::GraphqlValidationFailed,
                "a subscription selects exactly one root field",
            );
        }
        let share = is_subscription.then(|| self.sharing(&ctx, root_fields));
        let member = Member {
            out: self.out.clone(),
            protocol: self.protocol,
            id_json: Json::String(id.clone()).to_string().into(),
            id: id.clone(),
            token,
            events: self.events.clone(),
        };
        let running = match share {
            None => {
                let mut request = async_graphql::Request::new(params.query)
                    .variables(Variables::from_json(Json::Object(params.variables)))
                    .data(ctx);
                if let Some(name) = params.operation_name {
                    request = request.operation_name(name);
                }
                Running::Once(tokio::spawn(run_once(schema, request, member)).abort_handle(), token)
            }
            Some(sharing) => {
                let max = self.state.config.max_subscriptions_per_connection;
                let open = self
                    .running
                    .values()
                    .filter(|r| matches!(r, Running::Subscription { .. }))
                    .count();
                if open >= max {
                    return self.op_error(
                        &id,
                        ErrorCode::TooManySubscriptions,
                        format!("at most {max} subscriptions per connection"),
                    );
                }
                let prepared = Prepared {
                    engine: self.state.engine.clone(),
                    schema,
                    ctx,
                    doc: doc.clone(),
                    request: Arc::new(SubRequest {
                        query: text,
                        variables: Json::Object(params.variables).to_string().into(),
                        operation_name: params.operation_name.map(Into::into),
                    }),
                };
                match self.state.realtime.subscribe(sharing, prepared, member).await {
                    Some(m) => Running::Subscription { _membership: m, token },
                    None => return,
                }
            }
        };
        self.running.insert(id, running);
    }

    /// Whether a subscription may share its execution with identical ones: a change
    /// feed with a starting point of its own runs alone; over SHARED tables only,
    /// callers of one role share regardless of who they are.
    fn sharing(&self, ctx: &ExecContext, items: &[async_graphql::Positioned<Selection>]) -> Sharing {
        let mut all_shared = true;
        let mut any_changes = false;
        for item in items {
            let Selection::Field(f) = &item.node else {
                return Sharing::Alone;
            };
            let name = f.node.name.node.as_str();
            let Some((table, is_changes)) = kalamdb_schema_gen::schema::table_of_field(&self.state.engine, name) else {
                return Sharing::Alone;
            };
            if is_changes {
                any_changes = true;
                let starts = f
                    .node
                    .arguments
                    .iter()
                    .any(|(n, _)| matches!(n.node.as_str(), "since_seq" | "initial_batch_size"));
                if starts {
                    return Sharing::Alone;
                }
            }
            all_shared &= table.table_type == TableType::Shared;
        }
        Sharing::Shared {
            subject: (!all_shared).then(|| ctx.subject().clone()),
            replay_last: !any_changes,
        }
    }
}

/// A query or mutation sent over the socket: one result, then `complete`.
async fn run_once(schema: Schema, request: async_graphql::Request, member: Member) {
    let resp = schema.execute(request).await;
    if is_request_error(&resp) {
        member.error(&response_errors(resp.errors));
    } else {
        member.next(&response_json(resp));
        member.complete();
    }
    let _ = member.events.send(ConnEvent::Finished(member.id.clone(), member.token));
}
