//! The connection loop: accepts TCP connections and serves HTTP/1 (and WebSocket
//! upgrades) on them with bounds that no client can lift.
//!
//! - A client has `header_read_timeout_secs` to send a request's headers, for its first
//!   request and between keep-alive requests alike: idle and half-sent connections are
//!   closed instead of held forever.
//! - At most `max_connections` connections are open at once, and at most
//!   `max_connections_per_ip` from one address (trusted proxies, which carry many
//!   clients, are exempt). A connection over either bound is answered at once with a 503
//!   `TOO_MANY_CONNECTIONS` and closed. A WebSocket holds its slot for as long as it
//!   is open.
//! - At shutdown the loop stops accepting, asks every connection to finish its
//!   request, and after `shutdown_grace_secs` drops whatever still runs (a runaway query
//!   is cancelled with it) rather than wait.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower_service::Service;

use crate::error::ApiCode;

/// The connection bounds, from the configuration.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Addresses exempt from the per-address bound.
    pub trusted_proxies: Vec<IpAddr>,
}

/// Open connections per address.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// A connection's place in the bounds; given back when the connection (or the
/// WebSocket it became) closes.
struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: Option<(Arc<PerIp>, IpAddr)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((per_ip, ip)) = &self.ip {
            let mut m = per_ip.0.lock();
            if let Some(n) = m.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(ip);
                }
            }
        }
    }
}

/// A TCP stream that holds its connection's [`Slot`], so that an upgraded WebSocket
/// (which takes the stream over) keeps counting until it closes.
struct Counted {
    io: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Answers a connection over a bound with a 503 and closes it.
fn refuse(mut tcp: TcpStream, message: &'static str) {
    tokio::spawn(async move {
        let body = serde_json::json!({"error": {"code": ApiCode::TooManyConnections.as_str(), "message": message}})
            .to_string();
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             retry-after: 1\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = tcp.write_all(response.as_bytes()).await;
            let _ = tcp.shutdown().await;
        })
        .await;
    });
}

impl ConnectionLimits {
    /// A slot for a connection from `ip`, or why there is none.
    fn admit(&self, ip: IpAddr, slots: &Arc<Semaphore>, per_ip: &Arc<PerIp>) -> Result<Slot, &'static str> {
        let permit = slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| "the server is at its connection limit; retry shortly")?;
        if self.trusted_proxies.contains(&ip) {
            return Ok(Slot {
                _permit: permit,
                ip: None,
            });
        }
        let mut m = per_ip.0.lock();
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err("too many connections from this address");
        }
        *n += 1;
        Ok(Slot {
            _permit: permit,
            ip: Some((per_ip.clone(), ip)),
        })
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves; then
/// `before_drain` runs (it closes the WebSockets with their close frames), requests
/// in flight get the grace period, and the rest are dropped.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
    before_drain: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        while conns.try_join_next().is_some() {}
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // out of file descriptors, or a connection reset before it was accepted
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let slot = match limits.admit(peer.ip(), &slots, &per_ip) {
            Ok(s) => s,
            Err(message) => {
                tracing::debug!(peer = %peer, message, "connection refused");
                refuse(tcp, message);
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let router = router.clone();
        let mut stop = stop_rx.clone();
        let header_timeout = limits.header_read_timeout;
        conns.spawn(async move {
            serve_connection(
                Counted { io: tcp, _slot: slot },
                peer,
                router,
                header_timeout,
                &mut stop,
            )
            .await;
        });
    }
    drop(listener);
    before_drain.await;
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = conns.len(),
            "requests still running after the shutdown grace period are dropped"
        );
        conns.abort_all();
    }
    Ok(())
}

async fn serve_connection(
    io: Counted,
    peer: SocketAddr,
    router: Router,
    header_timeout: Duration,
    stop: &mut watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
