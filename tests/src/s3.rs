//! A fake S3-compatible object store on loopback.

/// A stand-in for an S3-compatible object store on loopback, path-style
/// (`/{bucket}/{key}`): PUT, GET (whole or one byte range), HEAD and DELETE of objects,
/// and ListObjectsV2 with a prefix and delimiter, as `object_store`'s S3 client speaks
/// them. It keeps the objects in memory, so a test can see what the server stored.
pub struct FakeS3 {
    pub url: String,
    objects: S3Objects,
    task: tokio::task::JoinHandle<()>,
}

type S3Objects = std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>>;

const S3_LAST_MODIFIED: &str = "Fri, 27 Nov 2026 09:00:00 GMT";

fn s3_etag(body: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(body);
    format!(
        "\"{}\"",
        d.iter().take(16).map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The byte range a `Range: bytes=...` header asks of an object of `len` bytes.
fn s3_range(h: &str, len: usize) -> Option<std::ops::Range<usize>> {
    let spec = h.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let r = match (a.is_empty(), b.is_empty()) {
        (true, false) => len.saturating_sub(b.parse().ok()?)..len,
        (false, true) => a.parse().ok()?..len,
        (false, false) => a.parse().ok()?..(b.parse::<usize>().ok()? + 1).min(len),
        (true, true) => return None,
    };
    (r.start < r.end && r.end <= len).then_some(r)
}

async fn s3_object(
    axum::extract::State(objects): axum::extract::State<S3Objects>,
    axum::extract::Path((_bucket, key)): axum::extract::Path<(String, String)>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let mut store = objects.lock().unwrap();
    match method {
        axum::http::Method::PUT => {
            let etag = s3_etag(&body);
            store.insert(key, body.to_vec());
            (StatusCode::OK, [(header::ETAG, etag)]).into_response()
        }
        axum::http::Method::DELETE => {
            store.remove(&key);
            StatusCode::NO_CONTENT.into_response()
        }
        axum::http::Method::GET | axum::http::Method::HEAD => {
            let Some(obj) = store.get(&key) else {
                return (StatusCode::NOT_FOUND, "<Error><Code>NoSuchKey</Code></Error>").into_response();
            };
            let etag = s3_etag(obj);
            let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
            let (status, bytes, content_range) = match range {
                None => (StatusCode::OK, obj.clone(), None),
                Some(h) => match s3_range(h, obj.len()) {
                    Some(r) => (
                        StatusCode::PARTIAL_CONTENT,
                        obj[r.clone()].to_vec(),
                        Some(format!("bytes {}-{}/{}", r.start, r.end - 1, obj.len())),
                    ),
                    None => return StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
                },
            };
            let mut resp = if method == axum::http::Method::HEAD {
                let mut r = axum::response::Response::new(axum::body::Body::empty());
                r.headers_mut().insert(header::CONTENT_LENGTH, bytes.len().into());
                r
            } else {
                bytes.into_response()
            };
            *resp.status_mut() = status;
            let h = resp.headers_mut();
            h.insert(header::ETAG, etag.parse().unwrap());
            h.insert(header::LAST_MODIFIED, S3_LAST_MODIFIED.parse().unwrap());
            if let Some(cr) = content_range {
                h.insert(header::CONTENT_RANGE, cr.parse().unwrap());
            }
            resp
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

async fn s3_list(
    axum::extract::State(objects): axum::extract::State<S3Objects>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let delimiter = q.get("delimiter").cloned().unwrap_or_default();
    let store = objects.lock().unwrap();
    let mut contents = String::new();
    let mut listed = 0;
    let mut common = std::collections::BTreeSet::new();
    for (k, v) in store.range(prefix.clone()..) {
        let Some(rest) = k.strip_prefix(&prefix) else { break };
        if !delimiter.is_empty()
            && let Some(i) = rest.find(&delimiter)
        {
            common.insert(format!("{prefix}{}", &rest[..i + delimiter.len()]));
            continue;
        }
        listed += 1;
        contents.push_str(&format!(
            "<Contents><Key>{}</Key><LastModified>2026-11-27T09:00:00.000Z</LastModified><ETag>{}</ETag><Size>{}</Size></Contents>",
            xml_escape(k),
            xml_escape(&s3_etag(v)),
            v.len()
        ));
    }
    let prefixes: String = common
        .iter()
        .map(|p| format!("<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", xml_escape(p)))
        .collect();
    (
        [(axum::http::header::CONTENT_TYPE, "application/xml")],
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Prefix>{}</Prefix><KeyCount>{}</KeyCount>{contents}{prefixes}</ListBucketResult>",
            xml_escape(&prefix),
            listed + common.len()
        ),
    )
        .into_response()
}

impl FakeS3 {
    pub async fn start() -> Self {
        let objects: S3Objects = Default::default();
        let router = axum::Router::new()
            .route("/{bucket}", axum::routing::get(s3_list))
            .route("/{bucket}/{*key}", axum::routing::any(s3_object))
            .with_state(objects.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, objects, task }
    }

    /// The keys of the stored objects, in order.
    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }

    /// The options that point `object_store`'s S3 client here.
    pub fn options(&self) -> kalamdb_storage::cold::ColdStoreOptions {
        let o = [
            ("aws_endpoint", self.url.as_str()),
            ("aws_region", "us-east-1"),
            ("aws_access_key_id", "test-key-id"),
            ("aws_secret_access_key", "test-secret"),
            ("aws_allow_http", "true"),
        ];
        kalamdb_storage::cold::ColdStoreOptions(o.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }
}

impl Drop for FakeS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}
