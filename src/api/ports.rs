//! Ports (preview URLs): HTTP requests, WebSocket upgrades included, forwarded to a
//! TCP port listening inside a sandbox, through its agent (the sandbox needs no
//! network); the list of listening ports; and a WebSocket that carries one raw TCP
//! connection (`repobox port-forward`).
//!
//! The page a sandbox serves is the sandbox's, and the sandbox is an attacker; it is
//! served on the API's own origin. So the API key never reaches it (no
//! `Authorization`, no `access_token`, no cookie of ours), a browser's key in the URL
//! is traded for a cookie that opens this one port of this one sandbox and nothing
//! else ([`port_token`]), and what would let a page take over the origin (a service
//! worker, `Clear-Site-Data`) is refused or dropped. README, "Security model".

use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{API_PREFIX, AppState, Json};
use crate::agent::Tunnel;
use crate::error::{Error, ErrorBody, Result};
use crate::id::SandboxId;

/// The forwarding routes' templates (under [`API_PREFIX`]): the routes that take the
/// key as `?access_token=` or as a port cookie.
pub(super) const FORWARD_ROUTES: [&str; 3] = [
    "/api/v1/containers/{container_id}/ports/{port}",
    "/api/v1/containers/{container_id}/ports/{port}/",
    "/api/v1/containers/{container_id}/ports/{port}/{*path}",
];

/// Name of the cookie that stands for the key on one port's path.
pub(super) const PORT_COOKIE: &str = "repobox_port";

/// How long a forwarded request waits for the response's head.
const RESPONSE_HEAD_BOUND: Duration = Duration::from_secs(60);

#[derive(OpenApi)]
#[openapi(paths(forward_port))]
struct Forwarding;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(Forwarding::openapi())
        .routes(routes!(list_ports))
        .routes(routes!(connect_port))
        .route("/containers/{container_id}/ports/{port}", any(forward_port))
        .route(
            "/containers/{container_id}/ports/{port}/",
            any(forward_port),
        )
        .route(
            "/containers/{container_id}/ports/{port}/{*path}",
            any(forward_port),
        )
}

/// A TCP port listening inside a sandbox.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Port {
    /// The port.
    #[schema(example = 3000, minimum = 1, maximum = 65535)]
    pub port: u16,
    /// Command line of a process that holds it, when one is found.
    #[schema(example = "python3 -m http.server 3000")]
    pub process: Option<String>,
    /// Pid of that process inside the sandbox.
    pub pid: Option<u32>,
    /// Addresses it listens on (`0.0.0.0`, `127.0.0.1`, `::`, …).
    pub addresses: Vec<String>,
}

/// The TCP ports listening inside the sandbox, by port, each with a process that
/// holds it: what `/ports/{port}/` can reach.
#[utoipa::path(get, path = "/containers/{container_id}/ports", tag = "ports",
    params(("container_id" = String, Path, description = "Sandbox id")),
    responses((status = 200, body = Vec<Port>)))]
pub async fn list_ports(
    State(state): State<AppState>,
    Path(container_id): Path<SandboxId>,
) -> Result<Json<Vec<Port>>> {
    state.sandboxes.get(&container_id)?;
    let agent = state.sandboxes.agent(&container_id).await?;
    let ports = agent.listening_ports().await?;
    Ok(Json(
        ports
            .into_iter()
            .map(|port| Port {
                port: port.port,
                process: port.process,
                pid: port.pid,
                addresses: port.addresses,
            })
            .collect(),
    ))
}

/// A port number from a path: 1 … 65535, or 400.
fn parse_port(raw: &str) -> Result<u16> {
    // Digits only: `+3000` parses as a u16 too, and would be a second path to a port.
    raw.bytes()
        .all(|byte| byte.is_ascii_digit())
        .then(|| raw.parse::<u16>().ok())
        .flatten()
        .filter(|port| *port != 0)
        .ok_or_else(|| {
            Error::invalid(format!(
                "{raw:?} is not a port: give a TCP port number from 1 to 65535"
            ))
        })
}

/// Forward an HTTP request to `127.0.0.1:{port}` inside the sandbox (any method but
/// TRACE and CONNECT, HEAD and OPTIONS included; a WebSocket or other upgrade
/// included), bodies streamed both ways, the path rewritten to `/{path}` and the
/// query kept (but `access_token`).
///
/// The API key is never forwarded: `Authorization`, `access_token` and the port
/// cookie are removed. A browser may give the key as `?access_token=`: a GET is then
/// answered 303 to the same URL without it, with a cookie (HttpOnly, SameSite=Strict,
/// `Path=/api/v1/containers/{id}/ports/{port}/`) that opens this port of this sandbox
/// only and is not the key. The sandbox's server sees `Host: localhost:{port}`,
/// `X-Forwarded-Prefix: /api/v1/containers/{id}/ports/{port}`, `X-Forwarded-Host` and
/// `X-Forwarded-Proto`; a `Location` it answers with an absolute path is rewritten
/// under that prefix. `Service-Worker: script` requests are refused (403), and
/// `Service-Worker-Allowed` and `Clear-Site-Data` dropped from responses: the page is
/// served on the API's origin. Without `API_KEYS` (where the API would take a
/// same-origin page's calls) the answer carries `Content-Security-Policy: sandbox …`,
/// which gives the page an opaque origin of its own. `/ports/{port}` without a trailing slash redirects (a
/// GET) to `/ports/{port}/`.
#[utoipa::path(method(get, post, put, patch, delete), path = "/containers/{container_id}/ports/{port}/{path}", tag = "ports",
    params(
        ("container_id" = String, Path, description = "Sandbox id"),
        ("port" = u16, Path, description = "TCP port inside the sandbox (1 … 65535)", minimum = 1, maximum = 65535),
        ("path" = String, Path, description = "Path forwarded to the sandbox's server (may be empty, and have slashes)"),
        ("access_token" = Option<String>, Query, description = "The API key, for browsers; traded for a cookie of this port's path, never forwarded"),
    ),
    responses(
        (status = 200, description = "The sandbox's server's answer, whatever its status, headers and body"),
        (status = 101, description = "Switching protocols: an upgrade the sandbox's server accepted"),
        (status = 303, description = "The same URL without `access_token`, with the port's cookie"),
        (status = 400, body = ErrorBody, description = "Not a port number"),
        (status = 403, body = ErrorBody, description = "A service worker's script (`Service-Worker: script`)"),
        (status = 502, body = ErrorBody, description = "Nothing listens on the port (`port_closed`), or its answer is not HTTP (`bad_gateway`)"),
        (status = 504, body = ErrorBody, description = "No response head within 60 seconds (`port_timeout`)"),
    ))]
pub async fn forward_port(
    State(state): State<AppState>,
    params: RawPathParams,
    request: Request,
) -> Result<Response> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    };
    let raw_id = param("container_id").unwrap_or_default();
    let container_id = SandboxId::new(raw_id);
    if matches!(*request.method(), Method::TRACE | Method::CONNECT) {
        let mut refused = Error::MethodNotAllowed(request.method().to_string()).into_response();
        refused.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return Ok(refused);
    }
    let raw_port = param("port").unwrap_or_default();
    let port = parse_port(raw_port)?;
    state.sandboxes.get(&container_id)?;
    let worker_script = {
        let header_is = |name: &str, value: &[u8]| {
            request
                .headers()
                .get(name)
                .is_some_and(|found| found.as_bytes().eq_ignore_ascii_case(value))
        };
        header_is("service-worker", b"script") || header_is("sec-fetch-dest", b"serviceworker")
    };
    if worker_script {
        return Err(Error::Forbidden(
            "service workers cannot be registered from a sandbox's port: its pages share the API's origin".to_owned(),
        ));
    }
    let prefix = format!("{API_PREFIX}/containers/{container_id}/ports/{raw_port}");
    let rest = upstream_path(request.uri().path(), &format!("/ports/{raw_port}"));
    let query = request.uri().query().map(without_access_token);
    let browser_get = matches!(*request.method(), Method::GET | Method::HEAD)
        && !request.headers().contains_key(header::UPGRADE);
    // The key in the URL is traded for the port's cookie before the page sees the URL
    // (its scripts could read `location`); `/ports/3000` goes to `/ports/3000/`, where
    // the page's relative links resolve under its port.
    let query_key = request.extensions().get::<QueryKey>();
    if browser_get && (rest.is_none() || query_key.is_some()) {
        // Behind a TLS proxy that says so, the cookie never travels in clear.
        let secure = request
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"));
        let cookie = query_key.map(|key| {
            format!(
                "{PORT_COOKIE}={}; Path={prefix}/; HttpOnly; SameSite=Strict{}",
                port_token(&key.0, &container_id, port),
                if secure { "; Secure" } else { "" }
            )
        });
        let here = format!("{prefix}{}", rest.unwrap_or("/"));
        return Ok(see_other(&here, query.as_deref(), cookie));
    }
    let path_and_query = match &query {
        Some(query) if !query.is_empty() => format!("{}?{query}", rest.unwrap_or("/")),
        _ => rest.unwrap_or("/").to_owned(),
    };

    let agent = state.sandboxes.agent(&container_id).await?;
    let tunnel = agent.connect_port(port).await?;
    let mut response = forward(request, tunnel, port, &prefix, &path_and_query).await?;
    if state.config.api_keys.is_empty() {
        // Without keys the API asks a same-origin page for nothing: the sandbox's page
        // gets an opaque origin of its own, so that its scripts' calls to the API are
        // cross-origin (refused) and the dashboard's storage is out of their reach.
        response
            .headers_mut()
            .append(header::CONTENT_SECURITY_POLICY, OPAQUE_ORIGIN.clone());
    }
    Ok(response)
}

/// The policy that puts a page in an origin of its own (scripts, forms, pop-ups and
/// the like still work; storage and cookies of the API's origin do not).
static OPAQUE_ORIGIN: axum::http::HeaderValue = axum::http::HeaderValue::from_static(
    "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads allow-pointer-lock allow-presentation",
);

/// The key a request was authenticated by when it came as `?access_token=` (set by
/// the key check, read by [`forward_port`] to set the port's cookie).
#[derive(Clone)]
pub(super) struct QueryKey(pub(super) String);

/// What follows `/ports/{port}` in `path` (`None` when nothing does, not even `/`).
fn upstream_path<'a>(path: &'a str, marker: &str) -> Option<&'a str> {
    let at = path.find(marker)? + marker.len();
    Some(&path[at..]).filter(|rest| !rest.is_empty())
}

/// A raw query without its `access_token` pairs (the others as they were written).
fn without_access_token(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            let decoded: String = url::form_urlencoded::parse(name.as_bytes())
                .map(|(name, _)| name.into_owned())
                .collect();
            !pair.is_empty() && decoded != "access_token"
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn see_other(path: &str, query: Option<&str>, cookie: Option<String>) -> Response {
    let location = match query {
        Some(query) if !query.is_empty() => format!("{path}?{query}"),
        _ => path.to_owned(),
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if let Some(cookie) = cookie.and_then(|cookie| HeaderValue::from_str(&cookie).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Headers that belong to one connection (RFC 9110, 7.6.1), never forwarded as
/// they are.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Response headers a sandbox's page must not send: they act on the whole origin,
/// which is the API's.
const ORIGIN_WIDE: [&str; 2] = ["service-worker-allowed", "clear-site-data"];

/// Sends `request` through `tunnel` (HTTP/1.1) and answers with the sandbox's
/// response, its body streamed; an upgrade accepted on both sides is then carried
/// both ways.
async fn forward(
    mut request: Request,
    tunnel: Tunnel,
    port: u16,
    prefix: &str,
    path_and_query: &str,
) -> Result<Response> {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .cloned()
        .filter(|_| connection_has(request.headers(), "upgrade"));
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();

    // The headers `Connection` names are this connection's too (RFC 9110, 7.6.1).
    let named: Vec<String> = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if HOP_BY_HOP.contains(name)
            || named.iter().any(|named| named == name.as_str())
            || *name == header::AUTHORIZATION
            || *name == header::HOST
            || *name == header::COOKIE
            || name.as_str().starts_with("x-forwarded-")
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    if let Some(cookies) = cookies_but_ours(&parts.headers) {
        headers.insert(header::COOKIE, cookies);
    }
    if let Some(upgrade) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade.clone());
    }
    let forwarded = [
        ("host", format!("localhost:{port}")),
        ("x-forwarded-prefix", prefix.to_owned()),
        (
            "x-forwarded-proto",
            parts
                .headers
                .get("x-forwarded-proto")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("http")
                .to_owned(),
        ),
    ];
    for (name, value) in forwarded {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    if let Some(host) = parts.headers.get(header::HOST) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }

    let mut upstream = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(path_and_query)
        .version(hyper::Version::HTTP_11)
        .body(body)
        .map_err(|err| Error::invalid(format!("cannot forward this request: {err}")))?;
    *upstream.headers_mut() = headers;

    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tunnel))
        .await
        .map_err(|err| Error::BadGateway(format!("cannot speak HTTP to port {port}: {err}")))?;
    // The connection (and with it the tunnel) lives until the response's body is read
    // or dropped, or the upgraded streams are done.
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let mut response =
        match tokio::time::timeout(RESPONSE_HEAD_BOUND, sender.send_request(upstream)).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => {
                return Err(Error::BadGateway(format!(
                    "the server on port {port} in the sandbox did not answer with HTTP: {err}"
                )));
            }
            Err(_) => {
                return Err(Error::PortTimeout(format!(
                    "the server on port {port} in the sandbox sent no response within {} seconds",
                    RESPONSE_HEAD_BOUND.as_secs()
                )));
            }
        };
    drop(sender);

    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let mut answer = Response::builder().status(response.status());
    let answer_headers = answer.headers_mut().expect("a fresh builder");
    for (name, value) in response.headers() {
        let keep_for_upgrade =
            switching && (*name == header::CONNECTION || *name == header::UPGRADE);
        if (HOP_BY_HOP.contains(name) && !keep_for_upgrade)
            || ORIGIN_WIDE.contains(&name.as_str())
            || (*name == header::SET_COOKIE && sets_our_cookie(value))
        {
            continue;
        }
        if *name == header::LOCATION
            && let Some(rewritten) = rewrite_location(value, port, prefix)
        {
            answer_headers.append(name.clone(), rewritten);
            continue;
        }
        answer_headers.append(name.clone(), value.clone());
    }

    if switching {
        let Some(client_upgrade) = client_upgrade else {
            return Err(Error::BadGateway(format!(
                "the server on port {port} in the sandbox switched protocols unasked"
            )));
        };
        let sandbox_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (Ok(client), Ok(sandbox)) = tokio::join!(client_upgrade, sandbox_upgrade) else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(
                &mut TokioIo::new(client),
                &mut TokioIo::new(sandbox),
            )
            .await;
        });
        return answer
            .body(Body::empty())
            .map_err(|err| Error::internal(format!("building the 101 answer: {err}")));
    }
    answer
        .body(Body::new(response.into_body()))
        .map_err(|err| Error::internal(format!("building the forwarded answer: {err}")))
}

/// Whether `Connection` lists `token`.
fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// The request's cookies but the port cookie, as one `Cookie` header (`None` when
/// none is left).
fn cookies_but_ours(headers: &HeaderMap) -> Option<HeaderValue> {
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && cookie_name(pair) != PORT_COOKIE)
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

fn cookie_name(pair: &str) -> &str {
    pair.split('=').next().unwrap_or_default().trim()
}

/// Whether a `Set-Cookie` from the sandbox names the port cookie (which it must not
/// overwrite).
fn sets_our_cookie(value: &HeaderValue) -> bool {
    cookie_name(&String::from_utf8_lossy(value.as_bytes())).eq_ignore_ascii_case(PORT_COOKIE)
}

/// The port cookie's value in `headers`, if any.
pub(super) fn port_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim)
        .find(|pair| cookie_name(pair) == PORT_COOKIE)
        .and_then(|pair| {
            pair.split_once('=')
                .map(|(_, value)| value.trim().to_owned())
        })
}

/// A `Location` the sandbox's server answered with, under the port's prefix when it
/// is an absolute path (`/x`) or names the server itself (`http://localhost:{port}/x`).
fn rewrite_location(value: &HeaderValue, port: u16, prefix: &str) -> Option<HeaderValue> {
    let location = value.to_str().ok()?;
    let path = if location.starts_with('/') && !location.starts_with("//") {
        location
    } else {
        let rest = location
            .strip_prefix("http://")
            .or_else(|| location.strip_prefix("https://"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let own = [format!("localhost:{port}"), format!("127.0.0.1:{port}")];
        if !own.iter().any(|name| name.eq_ignore_ascii_case(authority)) {
            return None;
        }
        if path.is_empty() { "/" } else { path }
    };
    HeaderValue::from_str(&format!("{prefix}{path}")).ok()
}

/// The port cookie's value for a sandbox's port: hex HMAC-SHA256 of
/// `ports:{id}:{port}` keyed by the API key. It opens that port's path only, and
/// tells nothing of the key.
pub(super) fn port_token(key: &str, id: &SandboxId, port: u16) -> String {
    let mac = hmac_sha256(key.as_bytes(), format!("ports:{id}:{port}").as_bytes());
    mac.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|byte| byte ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|byte| byte ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Whether `cookie` is the port cookie of one of `keys` for this sandbox's port;
/// every key is tried, in constant time.
pub(super) fn cookie_matches(keys: &[String], cookie: &str, id: &SandboxId, port: u16) -> bool {
    use subtle::ConstantTimeEq;
    let matched = keys.iter().fold(subtle::Choice::from(0), |found, key| {
        found
            | port_token(key, id, port)
                .as_bytes()
                .ct_eq(cookie.as_bytes())
    });
    bool::from(matched)
}

/// The sandbox id and port a forwarding path names (`/api/v1/containers/{id}/ports/{port}…`).
pub(super) fn forward_target(path: &str) -> Option<(SandboxId, u16)> {
    let rest = path
        .strip_prefix(API_PREFIX)?
        .strip_prefix("/containers/")?;
    let mut segments = rest.splitn(4, '/');
    let id = SandboxId::new(segments.next().filter(|id| !id.is_empty())?);
    (segments.next()? == "ports").then_some(())?;
    let port = parse_port(segments.next()?).ok()?;
    Some((id, port))
}

/// Whether `path` is under a port's forwarding prefix, `/ports/{port}/` with its
/// slash (where a trailing slash is the page's, and kept).
pub(super) fn is_forwarded_path(path: &str) -> bool {
    let Some(rest) = path
        .strip_prefix(API_PREFIX)
        .and_then(|rest| rest.strip_prefix("/containers/"))
    else {
        return false;
    };
    let segments: Vec<&str> = rest.splitn(4, '/').collect();
    segments.len() == 4 && segments[1] == "ports"
}

/// Open one raw TCP connection to `127.0.0.1:{port}` inside the sandbox, carried by a
/// WebSocket: binary frames are the connection's bytes, both ways; an empty binary
/// frame from the client ends its sending side (a half-close); the socket closes when
/// the connection does, and closing it closes the connection. What `repobox
/// port-forward` uses. 502 (`port_closed`) before the upgrade when nothing listens.
#[utoipa::path(get, path = "/containers/{container_id}/tcp/{port}", tag = "ports",
    params(
        ("container_id" = String, Path, description = "Sandbox id"),
        ("port" = u16, Path, description = "TCP port inside the sandbox (1 … 65535)", minimum = 1, maximum = 65535),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, body = ErrorBody, description = "Not a WebSocket request, or not a port"),
        (status = 502, body = ErrorBody, description = "Nothing listens on the port (`port_closed`)"),
    ))]
pub async fn connect_port(
    State(state): State<AppState>,
    Path((container_id, raw_port)): Path<(SandboxId, String)>,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response> {
    let port = parse_port(&raw_port)?;
    state.sandboxes.get(&container_id)?;
    let upgrade = upgrade.map_err(|rejection| {
        Error::invalid(format!(
            "this route speaks WebSocket: {}",
            rejection.body_text()
        ))
    })?;
    let agent = state.sandboxes.agent(&container_id).await?;
    let tunnel = agent.connect_port(port).await?;
    Ok(upgrade.on_upgrade(move |socket| carry(socket, tunnel)))
}

/// Carries `tunnel` over `socket` until either ends.
async fn carry(socket: WebSocket, tunnel: Tunnel) {
    let (mut to_client, mut from_client) = socket.split();
    let (mut reader, mut writer) = tokio::io::split(tunnel);
    let outbound = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let bytes = bytes::Bytes::copy_from_slice(&buf[..n]);
                    if to_client.send(Message::Binary(bytes)).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = to_client.send(Message::Close(None)).await;
    };
    let inbound = async {
        while let Some(Ok(message)) = from_client.next().await {
            let written = match message {
                // An empty frame: the client's side is done (a half-close).
                Message::Binary(bytes) if bytes.is_empty() => writer.shutdown().await,
                Message::Binary(bytes) => writer.write_all(&bytes).await,
                Message::Close(_) => return,
                _ => Ok(()),
            };
            if written.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = outbound => {}
        () = inbound => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231, test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(mac[..4], [0x60, 0xe4, 0x31, 0x59]);
    }

    #[test]
    fn a_port_token_opens_its_own_port_only() {
        let id = SandboxId::from("repo-container-1-2");
        let other = SandboxId::from("repo-container-1-3");
        let keys = vec!["k1".to_owned(), "k2".to_owned()];
        let token = port_token("k2", &id, 3000);
        assert!(cookie_matches(&keys, &token, &id, 3000));
        assert!(!cookie_matches(&keys, &token, &id, 3001));
        assert!(!cookie_matches(&keys, &token, &other, 3000));
        assert!(!cookie_matches(&keys, "k2", &id, 3000));
        assert!(!token.contains("k2"));
    }

    #[test]
    fn the_query_loses_its_access_token_only() {
        assert_eq!(without_access_token("a=1&access_token=k&b=2"), "a=1&b=2");
        assert_eq!(without_access_token("access%5Ftoken=k&x"), "x");
        assert_eq!(without_access_token("access_token=k"), "");
        assert_eq!(without_access_token("q=access_token"), "q=access_token");
    }

    #[test]
    fn forwarding_paths_are_recognised() {
        assert!(is_forwarded_path("/api/v1/containers/x/ports/3000/"));
        assert!(is_forwarded_path("/api/v1/containers/x/ports/3000/a/b/"));
        assert!(!is_forwarded_path("/api/v1/containers/x/ports/3000"));
        assert!(!is_forwarded_path("/api/v1/containers/x/ports/"));
        assert!(!is_forwarded_path("/api/v1/containers/x/files/3000/"));
        let (id, port) =
            forward_target("/api/v1/containers/repo-container-1-2/ports/8080/x").unwrap();
        assert_eq!(
            (id.to_string().as_str(), port),
            ("repo-container-1-2", 8080)
        );
        assert!(forward_target("/api/v1/containers/repo-container-1-2/ports/0/").is_none());
        assert_eq!(
            upstream_path("/containers/x/ports/80/a?b", "/ports/80"),
            Some("/a?b")
        );
        assert_eq!(upstream_path("/containers/x/ports/80", "/ports/80"), None);
    }

    #[test]
    fn locations_are_kept_under_the_prefix() {
        let rewrite = |location: &str| {
            rewrite_location(&HeaderValue::from_str(location).unwrap(), 3000, "/p")
                .map(|value| value.to_str().unwrap().to_owned())
        };
        assert_eq!(rewrite("/sub/").as_deref(), Some("/p/sub/"));
        assert_eq!(rewrite("http://localhost:3000/x").as_deref(), Some("/p/x"));
        assert_eq!(rewrite("http://127.0.0.1:3000").as_deref(), Some("/p/"));
        assert_eq!(rewrite("https://example.com/x"), None);
        assert_eq!(rewrite("//example.com/x"), None);
        assert_eq!(rewrite("relative/x"), None);
    }

    #[test]
    fn the_port_cookie_is_found_and_kept_from_the_sandbox() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; repobox_port=abc; b=2"),
        );
        assert_eq!(port_cookie(&headers).as_deref(), Some("abc"));
        assert_eq!(cookies_but_ours(&headers).unwrap(), "a=1; b=2");
        assert!(sets_our_cookie(&HeaderValue::from_static(
            "repobox_port=x; Path=/"
        )));
        assert!(!sets_our_cookie(&HeaderValue::from_static("session=x")));
    }
}
