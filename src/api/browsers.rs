//! Defences against web pages: what a page open in a developer's browser could make
//! that browser send to a repobox on the same machine.
//!
//! - **DNS rebinding**: a page's own name re-pointed to 127.0.0.1 reaches the server
//!   with the page's name in `Host`. Without `API_KEYS`, a request must name the server
//!   by a loopback name, an IP address (a rebinding needs a name) or an entry of
//!   `ALLOWED_HOSTS`; anything else is 403. With keys, a page has no key to send.
//! - **Cross-site WebSockets**: browsers let any page open a WebSocket anywhere and
//!   say where it comes from in `Origin` only. An upgrade whose `Origin` is not the
//!   server's own host (or an `ALLOWED_HOSTS` entry) is 403, keys or not.
//! - **Cross-site requests**: a page may send, without asking, a POST with a
//!   `text/plain`, form or multipart body, or no body. State-changing requests with
//!   such a body are 415 (every route takes JSON, bytes or a tar); without keys, those
//!   with a foreign `Origin` are 403. A sandbox's ports are the exception: their pages
//!   post forms to their own servers (`/ports/{port}/…` takes any body); a foreign
//!   `Origin` is still refused there without keys, and with keys a page elsewhere has
//!   neither the key nor the port's SameSite=Strict cookie. Without keys a port's page
//!   is given an opaque origin (`Content-Security-Policy: sandbox`), so its calls to
//!   the API are cross-origin: its own forms and WebSockets, which then say
//!   `Origin: null`, are let through to its server on the forwarding routes only.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::Error;

/// The body types a page may send cross-site without a preflight (besides none).
const SIMPLE_TYPES: &[&str] = &[
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
];

/// Middleware: the checks above, before authentication.
pub(super) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let forwarding = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|path| super::ports::FORWARD_ROUTES.contains(&path.as_str()));
    // A port's page may post a form to its server: there the checks see no content
    // type (the request keeps it), and the Origin check stands.
    let mut headers = std::borrow::Cow::Borrowed(request.headers());
    if forwarding && simple_content_type(request.headers()).is_some() {
        headers.to_mut().remove(header::CONTENT_TYPE);
    }
    // Without keys a port's page has an opaque origin (see `ports`): its own forms and
    // WebSockets say `Origin: null`, and may reach its server (never the API).
    if forwarding
        && headers
            .get(header::ORIGIN)
            .is_some_and(|origin| origin.as_bytes() == b"null")
    {
        headers.to_mut().remove(header::ORIGIN);
    }
    match check(
        request.method(),
        &headers,
        state.config.api_keys.is_empty(),
        state.config.allowed_hosts.items(),
    ) {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

fn check(
    method: &Method,
    headers: &HeaderMap,
    keyless: bool,
    allowed: &[String],
) -> Result<(), Error> {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(host_name);
    if keyless
        && let Some(host) = &host
        && !(is_local_name(host) || is_listed(host, allowed))
    {
        return Err(Error::Forbidden(format!(
            "this server answers to loopback names and IP addresses only (Host {host:?} is neither); add the name to ALLOWED_HOSTS or set API_KEYS"
        )));
    }
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    let changes_state = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state && let Some(kind) = simple_content_type(headers) {
        return Err(Error::UnsupportedMediaType(format!(
            "{kind} bodies are not accepted (a web page can send them cross-site): send JSON with `Content-Type: application/json`, or bytes as application/octet-stream"
        )));
    }
    if (upgrade || (changes_state && keyless))
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|origin| url::Url::parse(origin).ok())
            .and_then(|url| url.host_str().map(|h| host_name(h).to_ascii_lowercase()));
        let same = match (&origin_host, &host) {
            (Some(origin), Some(host)) => origin.eq_ignore_ascii_case(host),
            _ => false,
        };
        let listed = origin_host
            .as_deref()
            .is_some_and(|h| is_listed(h, allowed));
        if !(same || listed) {
            return Err(Error::Forbidden(format!(
                "requests from the web page at {:?} are not accepted: its origin is not this server's host nor in ALLOWED_HOSTS",
                origin.to_str().unwrap_or("?")
            )));
        }
    }
    Ok(())
}

/// The essence of a `Content-Type` a page may send cross-site, if it is one.
fn simple_content_type(headers: &HeaderMap) -> Option<&'static str> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let essence = String::from_utf8_lossy(value.as_bytes())
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    SIMPLE_TYPES.iter().copied().find(|kind| *kind == essence)
}

/// `host[:port]` or `[v6]:port` without the port and the brackets.
fn host_name(authority: &str) -> String {
    let authority = authority.trim();
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
        _ => authority.to_owned(),
    }
    .trim_end_matches('.')
    .to_owned()
}

/// `localhost` or an IP address literal: names a DNS rebinding cannot use.
fn is_local_name(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok()
}

fn is_listed(host: &str, allowed: &[String]) -> bool {
    allowed
        .iter()
        .any(|entry| entry == "*" || host_name(entry).eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hosts_lose_ports_and_brackets() {
        assert_eq!(host_name("localhost:8000"), "localhost");
        assert_eq!(host_name("[::1]:8000"), "::1");
        assert_eq!(host_name("example.com."), "example.com");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn without_keys_only_local_or_listed_hosts_pass() {
        let allowed = ["box.internal".to_owned()];
        for ok in [
            "localhost:8000",
            "127.0.0.1:8000",
            "[::1]:1",
            "10.0.0.5",
            "box.internal:80",
        ] {
            assert!(
                check(&Method::GET, &headers(&[("host", ok)]), true, &allowed).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "evil.example:8000",
            "localhost.evil.example",
            "box.internal.evil",
        ] {
            assert!(
                check(&Method::GET, &headers(&[("host", bad)]), true, &allowed).is_err(),
                "{bad}"
            );
        }
        // With keys the page has nothing to send: any name.
        assert!(
            check(
                &Method::GET,
                &headers(&[("host", "evil.example")]),
                false,
                &[]
            )
            .is_ok()
        );
    }

    #[test]
    fn foreign_origins_cannot_upgrade_or_post() {
        let ws = |origin: &str| {
            headers(&[
                ("host", "localhost:8000"),
                ("upgrade", "websocket"),
                ("origin", origin),
            ])
        };
        assert!(check(&Method::GET, &ws("http://localhost:8000"), false, &[]).is_ok());
        assert!(check(&Method::GET, &ws("https://evil.example"), false, &[]).is_err());
        assert!(check(&Method::GET, &ws("null"), true, &[]).is_err());
        let post = headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "https://evil.example"),
        ]);
        assert!(check(&Method::POST, &post, true, &[]).is_err());
        let listed = ["evil.example".to_owned()];
        assert!(check(&Method::POST, &post, true, &listed).is_ok());
        // No Origin: not a browser.
        assert!(check(&Method::POST, &headers(&[("host", "localhost")]), true, &[]).is_ok());
    }

    #[test]
    fn simple_bodies_cannot_change_state() {
        for kind in [
            "text/plain",
            "Text/Plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let h = headers(&[("content-type", kind)]);
            assert!(
                matches!(
                    check(&Method::POST, &h, false, &[]),
                    Err(Error::UnsupportedMediaType(_))
                ),
                "{kind}"
            );
            assert!(check(&Method::GET, &h, false, &[]).is_ok());
        }
        let h = headers(&[("content-type", "application/octet-stream")]);
        assert!(check(&Method::PUT, &h, false, &[]).is_ok());
    }
}
