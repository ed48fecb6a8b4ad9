//! The web dashboard at `/ui` (and `/`, which redirects there): static HTML, CSS and
//! JavaScript modules compiled into the binary from `ui/`, so it works with no
//! internet and no files beside the binary. The pages call the API like any other
//! client, with the key the user types; the assets themselves need none (see
//! `is_open_route`). These routes are not part of the API, nor of its OpenAPI document.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Router, routing::get};

use crate::error::Error;

/// Where the dashboard lives.
pub const UI_PREFIX: &str = "/ui";

/// One embedded file: its path under `/ui/`, its media type, its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $path)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the dashboard. A file added to `ui/` is served once it is listed here.
static ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("app.css", CSS),
    asset!("js/app.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/sandboxes.js", JS),
    asset!("js/sandbox.js", JS),
    asset!("js/jobs.js", JS),
    asset!("js/snapshots.js", JS),
    asset!("js/health.js", JS),
    asset!("vendor/xterm.mjs", JS),
    asset!("vendor/addon-fit.mjs", JS),
    asset!("vendor/xterm.css", CSS),
];

/// Entity tags of [`ASSETS`], in the same order: a hash of the bytes, so a browser
/// revalidates cheaply (304) and never keeps a file of an older server.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            // FNV-1a: stable across builds and processes, unlike `DefaultHasher`'s seed
            // guarantees, and plenty for telling versions of a file apart.
            let hash = asset.bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            HeaderValue::from_str(&format!("\"{hash:016x}\""))
                .unwrap_or(HeaderValue::from_static("\"0\""))
        })
        .collect()
});

/// What the pages may load and talk to: only this server (the WebSocket of the
/// terminal included). Inline styles are allowed because xterm.js sets them.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `/` (a redirect to `/ui/`), `/ui`, `/ui/` and `/ui/{asset}`.
pub(super) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(redirect_to_dashboard))
        .route(UI_PREFIX, get(serve_index))
        .route("/ui/", get(serve_index))
        .route("/ui/{*path}", get(serve_asset))
}

async fn redirect_to_dashboard() -> Redirect {
    // Relative URLs in the page resolve against `/ui/`, so that is where it lives.
    Redirect::to("/ui/")
}

async fn serve_index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn serve_asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn find(path: &str) -> Option<usize> {
    ASSETS.iter().position(|asset| asset.path == path)
}

fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(index) = find(path) else {
        return Error::RouteNotFound(format!("GET {UI_PREFIX}/{path}")).into_response();
    };
    let asset = &ASSETS[index];
    let etag = ETAGS[index].clone();
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.as_bytes() == etag.as_bytes());
    let common = [
        // Not fingerprinted names: always revalidate (cheap, thanks to the ETag).
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, asset.content_type)],
        asset.bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[test]
    fn every_asset_has_a_media_type_matching_its_name() {
        for asset in ASSETS {
            let expected = match asset.path.rsplit('.').next() {
                Some("html") => HTML,
                Some("css") => CSS,
                Some("js" | "mjs") => JS,
                other => panic!("no media type for {other:?}"),
            };
            assert_eq!(asset.content_type, expected, "{}", asset.path);
            assert!(!asset.bytes.is_empty(), "{} is empty", asset.path);
        }
    }

    #[tokio::test]
    async fn the_dashboard_is_html_and_revalidated() {
        for path in ["/ui", "/ui/"] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[header::CONTENT_TYPE], HTML);
            assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
            let etag = response.headers()[header::ETAG]
                .to_str()
                .unwrap()
                .to_owned();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            assert!(body.starts_with(b"<!doctype html>"));
            let again = get(path, Some(&etag)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        }
    }

    #[tokio::test]
    async fn assets_have_their_media_types() {
        let response = get("/ui/js/app.js", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], JS);
        let response = get("/ui/vendor/xterm.css", None).await;
        assert_eq!(response.headers()[header::CONTENT_TYPE], CSS);
    }

    #[tokio::test]
    async fn the_root_redirects_to_the_dashboard() {
        let response = get("/", None).await;
        assert!(response.status().is_redirection());
        assert_eq!(response.headers()[header::LOCATION], "/ui/");
    }

    #[tokio::test]
    async fn an_unknown_asset_is_a_json_404() {
        for path in ["/ui/nope.js", "/ui/../Cargo.toml", "/ui/vendor/"] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["code"], "route_not_found", "{path}");
            assert!(body["detail"].as_str().unwrap().contains("/ui/"), "{path}");
        }
    }
}
