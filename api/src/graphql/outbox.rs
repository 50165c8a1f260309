//! The wire side of a GraphQL WebSocket connection: the sub-protocols and close codes,
//! protocol frames, and the connection's outbound queue (bounded in bytes) with the
//! writer task that drains it. The protocol loop (`ws`) and the shared subscription
//! executions (`realtime`) both send through it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use futures::stream::SplitSink;
use serde_json::Value as Json;
use tokio::sync::{Notify, mpsc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// graphql-ws's `graphql-transport-ws`.
    TransportWs,
    /// subscriptions-transport-ws's `graphql-ws`.
    LegacyWs,
}

impl Protocol {
    pub const TRANSPORT: &'static str = "graphql-transport-ws";
    pub const LEGACY: &'static str = "graphql-ws";

    pub fn next_type(self) -> &'static str {
        match self {
            Protocol::TransportWs => "next",
            Protocol::LegacyWs => "data",
        }
    }
}

/// Close codes: RFC 6455's and graphql-transport-ws's.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    /// A client that does not keep up with its messages.
    pub const SLOW_CONSUMER: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const BAD_REQUEST: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const INIT_TIMEOUT: u16 = 4408;
    pub const DUPLICATE_ID: u16 = 4409;
    pub const TOO_MANY_INITS: u16 = 4429;
}

pub(crate) type Closing = (u16, String);

pub(crate) enum Out {
    Text(String),
    /// One payload for several operations of the connection: one frame each,
    /// written together and flushed once.
    Next {
        ty: &'static str,
        ids: Vec<Arc<str>>,
        payload: Arc<str>,
    },
    Ping,
    Close(u16, String),
}

struct OutboxInner {
    tx: mpsc::UnboundedSender<Out>,
    queued: AtomicUsize,
    max_bytes: usize,
    overflowed: AtomicBool,
    wake: Notify,
    /// A close that overtakes the queue ([`Outbox::close_now`]).
    close: parking_lot::Mutex<Option<Closing>>,
    close_wake: Notify,
}

/// A connection's outbound queue, bounded in bytes.
#[derive(Clone)]
pub struct Outbox(Arc<OutboxInner>);

impl Outbox {
    pub(crate) fn new(tx: mpsc::UnboundedSender<Out>, max_bytes: usize) -> Self {
        Self(Arc::new(OutboxInner {
            tx,
            queued: AtomicUsize::new(0),
            max_bytes,
            overflowed: AtomicBool::new(false),
            wake: Notify::new(),
            close: parking_lot::Mutex::new(None),
            close_wake: Notify::new(),
        }))
    }

    /// Closes the connection ahead of everything queued: the writer drops the frames
    /// it has not begun to write and sends the close frame next, so that a client that
    /// fell behind still learns why (1008) once it reads what was already sent.
    pub(crate) fn close_now(&self, code: u16, reason: String) {
        *self.0.close.lock() = Some((code, reason));
        self.0.close_wake.notify_one();
    }

    /// Queues a text frame. Past the bound the frame is dropped and the connection
    /// is marked to be cut off; returns whether the frame was queued.
    pub fn text(&self, s: String) -> bool {
        let n = s.len();
        self.admit(n) && self.0.tx.send(Out::Text(s)).is_ok()
    }

    /// Queues one payload for several of this connection's operations (JSON-encoded
    /// ids), as one frame each, under the same bound.
    pub fn next_all(&self, ty: &'static str, ids: Vec<Arc<str>>, payload: Arc<str>) -> bool {
        let n = ids.iter().map(|id| frame_len(id, ty, Some(&payload))).sum();
        self.admit(n) && self.0.tx.send(Out::Next { ty, ids, payload }).is_ok()
    }

    fn admit(&self, n: usize) -> bool {
        let o = &self.0;
        if o.overflowed.load(Ordering::Acquire) {
            return false;
        }
        let before = o.queued.fetch_add(n, Ordering::AcqRel);
        if before > 0 && before + n > o.max_bytes {
            o.queued.fetch_sub(n, Ordering::AcqRel);
            o.overflowed.store(true, Ordering::Release);
            o.wake.notify_one();
            return false;
        }
        true
    }

    /// Identifies the connection, to group frames by it.
    pub fn conn_id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    pub(crate) fn json(&self, v: Json) {
        self.text(v.to_string());
    }

    pub(crate) fn control(&self, o: Out) {
        let _ = self.0.tx.send(o);
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.0.overflowed.load(Ordering::Acquire)
    }

    /// Resolves when the queue has overflowed (the connection's loop then cuts it off).
    pub(crate) async fn overflow_signal(&self) {
        self.0.wake.notified().await
    }
}

/// Something a connection's own tasks tell its loop.
pub enum ConnEvent {
    /// The operation with this id and token ended by itself.
    Finished(String, u64),
}

/// A close reason that fits a close frame (at most 123 bytes).
fn fit_reason(mut s: String) -> String {
    if s.len() > 123 {
        let mut end = 123;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The connection's writer task: frames from the queue to the socket, a burst
/// written together and flushed once. A close from [`Outbox::close_now`] overtakes
/// the queue, even while a write waits for a client that stopped reading.
pub(crate) async fn writer(mut sink: SplitSink<WebSocket, Message>, mut rx: mpsc::UnboundedReceiver<Out>, out: Outbox) {
    let closing = loop {
        tokio::select! {
            biased;
            _ = out.0.close_wake.notified() => {
                if let Some(c) = out.0.close.lock().take() {
                    break c;
                }
            }
            first = rx.recv() => {
                let Some(first) = first else { return };
                tokio::select! {
                    biased;
                    _ = out.0.close_wake.notified() => {
                        // the burst's frames already handed to the socket stay whole
                        if let Some(c) = out.0.close.lock().take() {
                            break c;
                        }
                    }
                    written = write_burst(&mut sink, &mut rx, &out, first) => match written {
                        Burst::Written => {}
                        Burst::Failed => return,
                        Burst::Close(c) => break c,
                    }
                }
            }
        }
    };
    // what is still queued is never sent
    rx.close();
    while rx.try_recv().is_ok() {}
    let (code, reason) = closing;
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: fit_reason(reason).into(),
        })))
        .await;
    let _ = sink.close().await;
}

enum Burst {
    Written,
    Failed,
    /// A close queued in order, after the frames before it.
    Close(Closing),
}

/// Writes `first` and everything queued behind it, then flushes once: one syscall
/// for a burst of frames.
async fn write_burst(
    sink: &mut SplitSink<WebSocket, Message>,
    rx: &mut mpsc::UnboundedReceiver<Out>,
    out: &Outbox,
    first: Out,
) -> Burst {
    let mut next = Some(first);
    while let Some(o) = next.take() {
        let fed = match o {
            Out::Text(s) => {
                let n = s.len();
                let r = sink.feed(Message::Text(s.into())).await;
                out.0.queued.fetch_sub(n, Ordering::AcqRel);
                r
            }
            Out::Next { ty, ids, payload } => {
                let mut r = Ok(());
                for id in ids {
                    let s = frame(&id, ty, Some(&payload));
                    let n = s.len();
                    if r.is_ok() {
                        r = sink.feed(Message::Text(s.into())).await;
                    }
                    out.0.queued.fetch_sub(n, Ordering::AcqRel);
                }
                r
            }
            Out::Ping => sink.feed(Message::Ping(Default::default())).await,
            Out::Close(code, reason) => return Burst::Close((code, reason)),
        };
        if fed.is_err() {
            return Burst::Failed;
        }
        next = rx.try_recv().ok();
    }
    if sink.flush().await.is_err() {
        return Burst::Failed;
    }
    Burst::Written
}

/// One protocol message for the operation `id_json` (a JSON string), built by
/// concatenation: a broadcast builds one per member.
pub fn frame(id_json: &str, ty: &str, payload: Option<&str>) -> String {
    let mut s = String::with_capacity(frame_len(id_json, ty, payload));
    s.push_str(r#"{"id":"#);
    s.push_str(id_json);
    s.push_str(r#","type":""#);
    s.push_str(ty);
    s.push('"');
    if let Some(p) = payload {
        s.push_str(r#","payload":"#);
        s.push_str(p);
    }
    s.push('}');
    s
}

/// The length of [`frame`]'s message.
pub fn frame_len(id_json: &str, ty: &str, payload: Option<&str>) -> usize {
    let head = r#"{"id":,"type":""}"#.len();
    head + id_json.len() + ty.len() + payload.map_or(0, |p| r#","payload":"#.len() + p.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame is valid JSON with the id, type and payload, and the queue bound counts
    /// exactly its length.
    #[test]
    fn frames_are_json_of_the_counted_length() {
        let id = Json::String("sub \"1\"".into()).to_string();
        for (ty, payload) in [("next", Some(r#"{"data":{"x":[1,"é"]}}"#)), ("complete", None)] {
            let f = frame(&id, ty, payload);
            assert_eq!(f.len(), frame_len(&id, ty, payload), "{f}");
            let v: Json = serde_json::from_str(&f).expect("json");
            assert_eq!(v["id"], "sub \"1\"");
            assert_eq!(v["type"], ty);
            let want = payload.map_or(Json::Null, |p| serde_json::from_str(p).unwrap());
            assert_eq!(v.get("payload").cloned().unwrap_or(Json::Null), want);
        }
    }
}
