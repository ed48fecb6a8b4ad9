//! The HTTP surface: router, shared state, middleware, and the extractors whose
//! rejections speak the service's error shape.
//!
//! Routes live one file per resource; each handler is `<verb>_<resource>` and its
//! name is also its OpenAPI operation id.

mod browsers;
pub mod containers;
pub mod docs;
pub mod exec;
pub mod files;
pub mod git;
pub mod health;
pub mod images;
pub mod jobs;
pub mod ports;
pub mod processes;
pub mod sessions;
pub mod snapshots;
pub mod terminal;
pub mod ui;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderName, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Router, routing::get};
use subtle::ConstantTimeEq;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::error::Error;
use crate::metrics::{Metrics, RequestLabels};
use crate::sandbox::Sandboxes;

/// Everything a handler may need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Settings.
    pub config: Arc<Config>,
    /// The sandboxes (and through them, Docker).
    pub sandboxes: Arc<Sandboxes>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The jobs.
    pub jobs: Arc<crate::job::Jobs>,
    /// When the server started.
    pub started: Instant,
    /// What the engine watcher last found (`/health/ready` answers from it).
    pub readiness: Arc<health::Readiness>,
}

/// Prefix of every API route.
pub use repobox_client::API_PREFIX;
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The API routes with their OpenAPI description.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(docs::base()).nest(
        API_PREFIX,
        OpenApiRouter::new()
            .merge(health::router())
            .merge(containers::router())
            .merge(exec::router())
            .merge(files::router())
            .merge(processes::router())
            .merge(ports::router())
            .merge(terminal::router())
            .merge(sessions::router())
            .merge(git::router())
            .merge(snapshots::router())
            .merge(jobs::router())
            .merge(images::router()),
    )
}

/// The OpenAPI document of a server running with `config`: every route with every
/// status it can answer, the bounds of its settings, security as configured.
pub fn openapi(config: &Config) -> utoipa::openapi::OpenApi {
    let (_, mut openapi) = api_router().split_for_parts();
    docs::complete(&mut openapi);
    docs::configure(&mut openapi, config);
    docs::link_creations(&mut openapi);
    openapi
}

/// The whole application as a service: API, docs, dashboard, metrics, the MCP
/// endpoint, and the middleware stack.
pub fn app(state: AppState) -> Router {
    let (api, mut openapi) = api_router().split_for_parts();
    docs::complete(&mut openapi);
    docs::configure(&mut openapi, &state.config);
    docs::link_creations(&mut openapi);
    // The MCP tools call the API in-process, through the same middleware (keys,
    // metrics, logs) as a request from outside. `/mcp` itself is not in the OpenAPI
    // document: it speaks MCP, not this API (README, "Clients").
    let mcp = crate::mcp::http_service(with_middleware(api.clone(), &state), &state.config);
    let router = api
        .merge(docs::router(openapi))
        .merge(ui::router())
        .route("/metrics", get(render_metrics))
        .route_service("/mcp", mcp);
    let router = with_middleware(router, &state);
    // Trailing slashes are optional on API routes. Rewriting happens before routing;
    // `/docs/` is left alone because Swagger UI lives there.
    Router::new().fallback_service(
        ServiceBuilder::new()
            .map_request(trim_trailing_slash)
            .service(router),
    )
}

/// `router` with the fallbacks and the middleware stack every route has: API keys,
/// metrics, the body limit, request ids and the request span.
fn with_middleware(router: Router<AppState>, state: &AppState) -> Router {
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), refuse_unsupported))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), browsers::guard))
        .layer(middleware::from_fn_with_state(state.clone(), track_metrics))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            std::time::Duration::from_secs(state.config.idle_timeout_secs),
        ))
        .layer(DefaultBodyLimit::max(state.config.max_request_bytes))
        .layer(middleware::from_fn(close_after_an_early_error))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|request: &Request| {
                        let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                        // The path only: queries may carry file names, never secrets, but keep logs lean.
                        tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
                    }),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
        .with_state(state.clone())
}

/// An error answered to a request with a body may leave that body unread, and then
/// the connection cannot carry another request: say so (`Connection: close`), so a
/// keep-alive client opens a new one instead of losing its next request.
async fn close_after_an_early_error(request: Request, next: Next) -> Response {
    let has_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|length| length.as_bytes() != b"0")
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    let mut response = next.run(request).await;
    if has_body && (response.status().is_client_error() || response.status().is_server_error()) {
        response.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

fn trim_trailing_slash(mut request: Request) -> Request {
    let path = request.uri().path();
    // Under a port's prefix the path is the sandbox's page's: `/dir/` is not `/dir`.
    if path.starts_with(API_PREFIX)
        && path.len() > 1
        && path.ends_with('/')
        && !ports::is_forwarded_path(path)
    {
        let trimmed = path.trim_end_matches('/');
        let rebuilt = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        if let Ok(uri) = rebuilt.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
    }
    request
}

async fn route_not_found(method: Method, uri: Uri) -> Error {
    Error::RouteNotFound(format!("{method} {}", uri.path()))
}

async fn method_not_allowed(method: Method) -> Error {
    Error::MethodNotAllowed(method.to_string())
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Routes that stay open when API keys are configured: the probes, and the
/// dashboard's static files (they hold no data; its pages call the API with the key
/// the user types).
fn is_open_route(path: &str) -> bool {
    if path == "/" || path == ui::UI_PREFIX || path.starts_with("/ui/") {
        return true;
    }
    let path = path.trim_end_matches('/');
    path == "/api/v1/health/live" || path == "/api/v1/health/ready"
}

/// Answers 501 (`not_supported`) for the routes of an image store (images, snapshots,
/// forks) when the backend has none; runs after the key check, so an unauthenticated
/// client learns nothing of the backend.
async fn refuse_unsupported(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if state.sandboxes.backend().images().is_none()
        && let Some(route) = crate::backend::image_store_route(request.uri().path())
    {
        let backend = state.sandboxes.backend().kind().as_str();
        return Error::NotSupported(format!(
            "{} {route} is not supported by the {backend} backend: it has no image store (see /api/v1/info, backend.unsupported)",
            request.method()
        ))
        .into_response();
    }
    next.run(request).await
}

async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let keys = state.config.api_keys.items();
    if keys.is_empty() || is_open_route(request.uri().path()) {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_default();
    let forwarding = ports::FORWARD_ROUTES.contains(&route.as_str());
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(key) = bearer {
        return if key_matches(keys, key) {
            next.run(request).await
        } else {
            Error::Unauthorized.into_response()
        };
    }
    // Browsers cannot set headers on a WebSocket nor on a page they open: the terminal
    // and a sandbox's ports take the key as `?access_token=` (spans log the path only,
    // never the query). Their route templates only: not any path that happens to end
    // the same way.
    if route == TERMINAL_ROUTE || forwarding {
        let from_query = request.uri().query().and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == "access_token")
                .map(|(_, value)| value.into_owned())
        });
        if let Some(key) = from_query {
            if !key_matches(keys, &key) {
                return Error::Unauthorized.into_response();
            }
            let mut request = request;
            if forwarding {
                // The forwarding handler trades it for the port's cookie.
                request.extensions_mut().insert(ports::QueryKey(key));
            }
            return next.run(request).await;
        }
    }
    // A port's pages (their relative links, scripts, sockets) come with the port's
    // cookie: it opens that port of that sandbox, nothing else.
    if forwarding
        && let Some(cookie) = ports::port_cookie(request.headers())
        && let Some((id, port)) = ports::forward_target(request.uri().path())
        && ports::cookie_matches(keys, &cookie, &id, port)
    {
        return next.run(request).await;
    }
    Error::Unauthorized.into_response()
}

/// The terminal's route template, which takes `?access_token=` (as do a port's,
/// [`ports::FORWARD_ROUTES`]).
const TERMINAL_ROUTE: &str = "/api/v1/containers/{container_id}/terminal";

/// Whether `presented` is one of `keys`. The digests are compared, not the keys: the
/// time taken says nothing about a key's length or content, and every key is compared.
fn key_matches(keys: &[String], presented: &str) -> bool {
    use sha2::{Digest, Sha256};
    let presented = Sha256::digest(presented.as_bytes());
    let matched = keys.iter().fold(subtle::Choice::from(0), |found, key| {
        found | Sha256::digest(key.as_bytes()).ct_eq(&presented)
    });
    bool::from(matched)
}

async fn track_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let labels = RequestLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    state
        .metrics
        .request_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    state.metrics.requests.get_or_create(&labels).inc();
    response
}

/// `axum::Json`, with rejections in the service's error shape, and integers written
/// as `16596.0` taken for integers (see [`integral_floats_as_integers`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Error> {
        if !has_json_content_type(request.headers()) {
            return Err(Error::UnsupportedMediaType(NOT_JSON.to_owned()));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Error::TooLarge(format!("request body too large: {}", rejection.body_text()))
                } else {
                    Error::invalid(rejection.body_text())
                }
            })?;
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection @ JsonRejection::JsonDataError(_)) => integral_floats_as_integers(&bytes)
                .and_then(|rewritten| axum::Json::<T>::from_bytes(&rewritten).ok())
                .map(|axum::Json(value)| Self(value))
                .ok_or_else(|| rejection.into()),
            Err(rejection) => Err(rejection.into()),
        }
    }
}

/// JSON Schema counts a number whose fraction is zero (`16596.0`) as an integer, so a
/// schema-valid body may carry one where the type wants an integer, which serde
/// refuses. Returns the body with every such number written as an integer, or `None`
/// when it has none (or is not JSON). Only tried after a body failed to deserialize: a
/// float field takes an integer as well, so rewriting never loses a valid body.
fn integral_floats_as_integers(bytes: &[u8]) -> Option<Vec<u8>> {
    fn rewrite(value: &mut serde_json::Value) -> bool {
        use serde_json::Value;
        match value {
            Value::Number(number) => {
                let Some(float) = number.as_f64().filter(|_| number.is_f64()) else {
                    return false;
                };
                // The ends of u64 and i64, exact as floats.
                let (u64_end, i64_start) = (2_f64.powi(64), -(2_f64.powi(63)));
                let integer = if float.fract() != 0.0 {
                    None
                } else if (0.0..u64_end).contains(&float) {
                    #[expect(
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss,
                        reason = "integral and in range"
                    )]
                    Some(serde_json::Number::from(float as u64))
                } else if (i64_start..0.0).contains(&float) {
                    #[expect(clippy::cast_possible_truncation, reason = "integral and in range")]
                    Some(serde_json::Number::from(float as i64))
                } else {
                    None
                };
                integer.map(|integer| *number = integer).is_some()
            }
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, item| rewrite(item) | changed),
            Value::Object(fields) => fields
                .values_mut()
                .fold(false, |changed, field| rewrite(field) | changed),
            _ => false,
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if !rewrite(&mut value) {
        return None;
    }
    serde_json::to_vec(&value).ok()
}

/// What a body that is not JSON is told.
const NOT_JSON: &str = "expected a JSON body with `Content-Type: application/json`";

/// Whether a request says its body is JSON (`application/json` or `application/*+json`).
fn has_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| {
            let essence = essence.trim().to_ascii_lowercase();
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        })
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                Error::UnsupportedMediaType(NOT_JSON.to_owned())
            }
            JsonRejection::JsonSyntaxError(err) => {
                Error::invalid(format!("malformed JSON: {}", err.body_text()))
            }
            JsonRejection::JsonDataError(err) => {
                Error::invalid(format!("invalid request body: {}", err.body_text()))
            }
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Error::TooLarge(format!("request body too large: {}", other.body_text()))
            }
            other => Error::invalid(other.body_text()),
        }
    }
}

/// Parses a JSON request body of at most `limit` bytes, with the same checks and
/// errors as [`Json`] (for routes whose bound is not the global one).
pub async fn json_body<T: serde::de::DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<T, Error> {
    if !has_json_content_type(headers) {
        return Err(Error::UnsupportedMediaType(NOT_JSON.to_owned()));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Error::TooLarge(format!(
            "request body too large: at most {limit} bytes are accepted here"
        ))
    })?;
    match serde_json::from_slice(&bytes) {
        Ok(value) => Ok(value),
        Err(err) if err.classify() == serde_json::error::Category::Data => {
            integral_floats_as_integers(&bytes)
                .and_then(|rewritten| serde_json::from_slice(&rewritten).ok())
                .ok_or_else(|| Error::invalid(format!("invalid request body: {err}")))
        }
        Err(err) => Err(Error::invalid(format!("malformed JSON: {err}"))),
    }
}

/// `axum::extract::Query`, with rejections in the service's error shape.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for Error {
    fn from(rejection: QueryRejection) -> Self {
        Error::invalid(format!("invalid query: {}", rejection.body_text()))
    }
}

#[cfg(test)]
mod router_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_slashes_are_trimmed_on_api_routes_only() {
        let request = |uri: &str| {
            Request::builder()
                .uri(uri)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert_eq!(
            trim_trailing_slash(request("/api/v1/containers/")).uri(),
            "/api/v1/containers"
        );
        assert_eq!(
            trim_trailing_slash(request("/api/v1/health/?x=1")).uri(),
            "/api/v1/health?x=1"
        );
        assert_eq!(trim_trailing_slash(request("/docs/")).uri(), "/docs/");
    }

    #[test]
    fn integers_with_a_zero_fraction_are_written_as_integers() {
        let rewritten = integral_floats_as_integers(
            br#"{"a": 16596.0, "b": [1.0, -2.0, {"c": 0.0}], "d": 1.5, "e": "3.0", "f": 1e300}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&rewritten).unwrap(),
            serde_json::json!({"a": 16596, "b": [1, -2, {"c": 0}], "d": 1.5, "e": "3.0", "f": 1e300})
        );
        // Nothing to rewrite, or not JSON: the original error stands.
        assert!(integral_floats_as_integers(br#"{"a": 1, "b": 1.5}"#).is_none());
        assert!(integral_floats_as_integers(b"{not json").is_none());
    }

    #[test]
    fn probes_are_open() {
        assert!(is_open_route("/api/v1/health/live/"));
        assert!(is_open_route("/api/v1/health/ready"));
        assert!(!is_open_route("/api/v1/health"));
    }

    #[test]
    fn the_dashboard_files_are_open_and_nothing_else() {
        for open in ["/", "/ui", "/ui/", "/ui/js/app.js"] {
            assert!(is_open_route(open), "{open}");
        }
        for closed in [
            "/uix",
            "/metrics",
            "/docs",
            "/api/v1/info",
            "//",
            "/api/v1/ui/x",
        ] {
            assert!(!is_open_route(closed), "{closed}");
        }
    }
}
