//! kalamdb-playground: the GraphiQL page served from `/`.
//!
//! The front-end project in this folder (`app/`, `index.html`, `vite.config.js`) is built
//! by `make playground` into `dist/`, which is committed, so that a clean `cargo build`
//! needs no npm. `dist/` is embedded in the binary here. `dist.sha256` records the hash
//! of the sources the bundle was built from; a test below fails when they differ.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "dist/"]
struct Bundle;

/// The page may load and connect to its own origin only (`'self'` covers the same
/// host's WebSocket); GraphiQL's fonts and icons come inline as `data:` URLs.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
     font-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; worker-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Routes for the playground; merged into the API router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/assets/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move {
                serve(&format!("assets/{path}"), &headers)
            }),
        )
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ttf") => "font/ttf",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// Whether `Accept-Encoding` allows gzip (a `q=0` refuses it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Bundle::get(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let gzip = if accepts_gzip(headers) {
        Bundle::get(&format!("{path}.gz"))
    } else {
        None
    };
    let tag = hex(&file.metadata.sha256_hash()[..12]);
    let etag = if gzip.is_some() {
        format!("\"{tag}-gz\"")
    } else {
        format!("\"{tag}\"")
    };
    let is_page = path == "index.html";
    // vite names assets by content hash, so they never change under one URL
    let cache = if is_page {
        "no-cache"
    } else {
        "public, max-age=31536000, immutable"
    };
    let mut resp = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = match &gzip {
            Some(gz) => gz.data.clone(),
            None => file.data.clone(),
        };
        let mut resp = body.into_owned().into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
        if gzip.is_some() {
            resp.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        resp
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if is_page {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use std::path::{Path as FsPath, PathBuf};

    use sha2::{Digest, Sha256};

    use super::*;

    /// The sources `source-hash.js` hashes, in the same way: each file in sorted path
    /// order adds "<path>\n<byte length>\n<bytes>\n".
    const SOURCES: &[&str] = &[
        "index.html",
        "vite.config.js",
        "source-hash.js",
        "package.json",
        "package-lock.json",
        "app",
    ];

    fn files(root: &FsPath, rel: &str, out: &mut Vec<String>) {
        let full = root.join(rel);
        if full.is_dir() {
            for entry in std::fs::read_dir(&full).expect("read source dir") {
                let name = entry.expect("dir entry").file_name();
                files(root, &format!("{rel}/{}", name.to_string_lossy()), out);
            }
        } else {
            out.push(rel.to_string());
        }
    }

    fn source_hash(root: &FsPath) -> String {
        let mut all = Vec::new();
        for s in SOURCES {
            files(root, s, &mut all);
        }
        all.sort();
        let mut hash = Sha256::new();
        for path in all {
            let bytes = std::fs::read(root.join(&path)).expect("read source");
            hash.update(format!("{path}\n{}\n", bytes.len()));
            hash.update(&bytes);
            hash.update(b"\n");
        }
        hex(&hash.finalize())
    }

    #[test]
    fn the_committed_bundle_is_built_from_the_current_sources() {
        // read at run time: a binary built from another checkout may be reused
        let root: PathBuf =
            std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into);
        let recorded = std::fs::read_to_string(root.join("dist.sha256")).expect("web-playground/dist.sha256");
        assert_eq!(
            recorded.trim(),
            source_hash(&root),
            "web-playground/dist is stale: its sources changed since it was built; run `make playground` \
             and commit dist/ and dist.sha256"
        );
    }

    fn get(path: &str, headers: &[(header::HeaderName, &str)]) -> Response {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(name.clone(), HeaderValue::from_str(value).expect("header"));
        }
        serve(path, &map)
    }

    #[test]
    fn the_page_references_only_embedded_assets_of_its_own_origin() {
        let page = Bundle::get("index.html").expect("dist/index.html is embedded");
        let html = String::from_utf8(page.data.into_owned()).expect("utf-8");
        let refs: Vec<&str> = html
            .split(['"', '\''])
            .filter(|s| s.starts_with("./") || s.contains("://"))
            .filter(|s| !s.starts_with("http://www.w3.org/2000/svg"))
            .collect();
        assert!(refs.iter().any(|r| r.ends_with(".js")), "{refs:?}");
        for r in refs {
            let path = r.strip_prefix("./").unwrap_or_else(|| panic!("not a local path: {r}"));
            assert!(Bundle::get(path).is_some(), "{path} is referenced but not embedded");
        }
    }

    #[test]
    fn assets_are_served_with_type_caching_gzip_and_etags() {
        let page = get("index.html", &[]);
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));

        let script = Bundle::iter()
            .find(|p| p.starts_with("assets/") && p.ends_with(".js") && Bundle::get(&format!("{p}.gz")).is_some())
            .expect("a gzipped script");
        let plain = get(&script, &[]);
        assert_eq!(plain.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        assert!(
            plain.headers()[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );

        let gz = get(&script, &[(header::ACCEPT_ENCODING, "br, gzip;q=0.8")]);
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
        assert_ne!(gz.headers()[header::ETAG], plain.headers()[header::ETAG]);
        let refused = get(&script, &[(header::ACCEPT_ENCODING, "gzip;q=0")]);
        assert!(refused.headers().get(header::CONTENT_ENCODING).is_none());

        let etag = plain.headers()[header::ETAG].to_str().unwrap().to_string();
        let again = get(&script, &[(header::IF_NONE_MATCH, &etag)]);
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

        assert_eq!(get("assets/nope.js", &[]).status(), StatusCode::NOT_FOUND);
        assert_eq!(get("../Cargo.toml", &[]).status(), StatusCode::NOT_FOUND);
    }
}
