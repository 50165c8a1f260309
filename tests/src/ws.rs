//! A raw GraphQL-over-WebSocket client, for driving the protocols frame by frame.

use std::time::Duration;

use serde_json::{Value, json};

use crate::server::{ROOT_PASSWORD, TestServer, basic, pw};

/// A raw GraphQL-over-WebSocket client: frames in and out as JSON, with timeouts.
pub struct WsClient {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

/// How a WebSocket connection ended, seen from the client.
#[derive(Debug, PartialEq)]
pub enum WsEnd {
    Closed(u16, String),
    /// The connection went away without a close frame.
    Dropped,
}

const WS_WAIT: Duration = Duration::from_secs(15);

impl TestServer {
    /// Opens `/v1/graphql` as a WebSocket with this sub-protocol.
    pub async fn ws(&self, protocol: &str) -> WsClient {
        WsClient::connect(&self.url, protocol).await.expect("ws connect")
    }

    /// A `graphql-transport-ws` connection, initialised as `user` (HTTP Basic in the
    /// `connection_init` payload) and acknowledged.
    pub async fn ws_as(&self, user: &str) -> WsClient {
        let password = if user == "root" {
            ROOT_PASSWORD.to_string()
        } else {
            pw(user)
        };
        WsClient::connect_as(&self.url, &basic(user, &password))
            .await
            .expect("ws connection_init")
    }
}

impl WsClient {
    /// Opens `{base}/v1/graphql` (an `http://` base) as a WebSocket with this
    /// sub-protocol; fails when the server cannot be reached or picks another.
    pub async fn connect(base: &str, protocol: &str) -> Result<Self, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}/v1/graphql", base.replacen("http", "ws", 1));
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        req.headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().map_err(|_| "bad protocol")?);
        let (ws, resp) = tokio_tungstenite::connect_async(req).await.map_err(|e| e.to_string())?;
        let chosen = resp
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok());
        if chosen != Some(protocol) {
            return Err(format!("the server chose sub-protocol {chosen:?}"));
        }
        Ok(WsClient { ws })
    }

    /// A `graphql-transport-ws` connection, initialised with this `Authorization`
    /// value and acknowledged.
    pub async fn connect_as(base: &str, authorization: &str) -> Result<Self, String> {
        let mut c = Self::connect(base, "graphql-transport-ws").await?;
        c.try_send(&json!({ "type": "connection_init", "payload": { "Authorization": authorization } }))
            .await?;
        match c.recv_within(WS_WAIT).await {
            Ok(Some(m)) if m["type"] == "connection_ack" => Ok(c),
            other => Err(format!("no connection_ack: {other:?}")),
        }
    }

    pub fn from_stream(
        ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    ) -> Self {
        Self { ws }
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.try_send_text(text).await.expect("ws send");
    }

    /// Sends a frame; fails when the connection is gone.
    pub async fn try_send(&mut self, v: &Value) -> Result<(), String> {
        self.try_send_text(&v.to_string()).await
    }

    async fn try_send_text(&mut self, text: &str) -> Result<(), String> {
        use futures::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
            .await
            .map_err(|e| e.to_string())
    }

    /// The next message within `wait`, or how the connection ended.
    pub async fn recv_within(&mut self, wait: Duration) -> Result<Option<Value>, WsEnd> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(m) => m,
            };
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Ok(Some(serde_json::from_str(t.as_str()).expect("server sent JSON")));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map_or(WsEnd::Closed(1005, String::new()), |f| {
                        WsEnd::Closed(f.code.into(), f.reason.to_string())
                    }));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(WsEnd::Dropped),
            }
        }
    }

    /// The next message; panics on timeout or close.
    pub async fn recv(&mut self) -> Value {
        match self.recv_within(WS_WAIT).await {
            Ok(Some(v)) => v,
            Ok(None) => panic!("no message within {WS_WAIT:?}"),
            Err(e) => panic!("connection ended: {e:?}"),
        }
    }

    /// Asserts that nothing but keep-alives arrives for `ms` milliseconds.
    pub async fn silent_for(&mut self, ms: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.recv_within(left).await {
                Ok(None) => return,
                Ok(Some(v)) if v["type"] == "ka" => continue,
                other => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Waits for the close frame (or the end of the connection).
    pub async fn closed(&mut self) -> WsEnd {
        loop {
            match self.recv_within(WS_WAIT).await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the connection was not closed within {WS_WAIT:?}"),
                Err(e) => return e,
            }
        }
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// The next message for `id`, which must be `next`; returns its `data`.
    pub async fn next_data(&mut self, id: &str) -> Value {
        loop {
            let m = self.recv().await;
            if m["type"] == "ka" || m["type"] == "ping" || m["type"] == "pong" {
                continue;
            }
            assert_eq!(m["id"], id, "{m}");
            assert_eq!(m["type"], "next", "{m}");
            assert!(m["payload"].get("errors").is_none(), "{m}");
            return m["payload"]["data"].clone();
        }
    }

    /// Change events of `field` for `id` until `n` have arrived (events come in batches).
    pub async fn events(&mut self, id: &str, field: &str, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let data = self.next_data(id).await;
            out.extend(data[field].as_array().expect("a list of events").iter().cloned());
        }
        assert_eq!(out.len(), n, "more events than expected: {out:?}");
        out
    }

    /// The next message for `id`, which must be `error`; returns the first error's code.
    pub async fn error_code(&mut self, id: &str) -> String {
        let m = self.recv().await;
        assert_eq!(m["id"], id, "{m}");
        assert_eq!(m["type"], "error", "{m}");
        m["payload"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no code in {m}"))
            .to_string()
    }

    /// Stops reading, so that the server's queue for this connection fills up.
    pub fn into_inner(
        self,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
        self.ws
    }
}
