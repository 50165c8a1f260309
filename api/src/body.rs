//! Request bodies shared by the handlers.

use std::time::Duration;

use axum::body::{Body, Bytes};
use futures::StreamExt;
use kalamdb_engine::error::ErrorCode;

use crate::error::ApiError;

/// How much of an oversized body is still read, and for how long, before its 413 goes
/// out. Closing a socket with unread bytes resets the connection, and a client still
/// sending would then see the reset instead of the answer; reading on (and throwing it
/// away, as web servers' lingering close does) lets the answer arrive. Past either bound
/// the connection is closed anyway.
const DRAIN_BYTES: usize = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// How long a whole request body may take to arrive: a client trickling one (a
/// slow-loris body) holds its connection no longer than this.
const BODY_TIME: Duration = Duration::from_secs(30);

/// Reads a body of at most `limit` bytes, within [`BODY_TIME`].
pub async fn read_bytes(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    tokio::time::timeout(BODY_TIME, read_bounded(body, limit))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("the request body did not arrive within {} s", BODY_TIME.as_secs()),
            ))
        })
}

async fn read_bounded(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::new(ErrorCode::BadRequest, "the request body could not be read"))?;
        if buf.len() + chunk.len() > limit {
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                let mut drained = 0;
                while let Some(Ok(c)) = stream.next().await {
                    drained += c.len();
                    if drained > DRAIN_BYTES {
                        break;
                    }
                }
            })
            .await;
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("request body is larger than {limit} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Reads a JSON body of at most `limit` bytes.
pub async fn read_json<T: serde::de::DeserializeOwned>(body: Body, limit: usize) -> Result<T, ApiError> {
    let bytes = read_bytes(body, limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::new(ErrorCode::InvalidInput, format!("bad JSON body: {e}")))
}
