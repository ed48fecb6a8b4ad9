//! A small HTTP client of the repobox API: the base URL and key in one place, every
//! error answer turned into [`Error::Api`] with the server's `error` and `detail`.
//! The CLI and the MCP tools reach a server through it; it knows nothing of the
//! server's own modules.

use std::time::Duration;

use anyhow::Context as _;
use futures_util::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

pub mod sse;

use sse::{SseEvent, SseParser};

/// Where the API lives under a server's base URL.
pub const API_PREFIX: &str = "/api/v1";

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error.
    #[error("{error}: {detail}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error's title (`error` of the body).
        error: String,
        /// What went wrong (`detail` of the body).
        detail: String,
    },
    /// The command line (or an MCP tool's arguments) does not make sense, caught before
    /// any call (exit 2, as clap's own errors).
    #[error("{0}")]
    Usage(String),
    /// Anything else: the server unreachable, a local file, a broken stream.
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl Error {
    /// The exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Api { .. } | Error::Other(_) => 1,
        }
    }
}

/// Result of a call; for a command, the exit status to end with.
pub type Result<T = i32> = std::result::Result<T, Error>;

/// A client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    /// `http://host:port`, without a trailing slash or the API prefix.
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of the server at `url` (`http://host:port`; a trailing `/` or
    /// `/api/v1` is accepted), sending `key` as a bearer token when given.
    pub fn new(url: &str, key: Option<String>) -> Result<Self> {
        let base = normalize_base(url)?;
        // No overall timeout: creates clone repositories, streams last as long as
        // their command. Connecting is bounded.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base,
            key: key.filter(|key| !key.is_empty()),
            http,
        })
    }

    /// The server's base URL (`http://host:port`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The API key, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The full URL of API path `path` (`/containers/…`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}{path}", self.base)
    }

    /// A request to API path `path`, authenticated.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// Sends `request`; an error status becomes [`Error::Api`].
    pub async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let response = request.send().await.map_err(|err| self.unreachable(err))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(api_error(response).await)
        }
    }

    fn unreachable(&self, err: reqwest::Error) -> Error {
        let what = if err.is_connect() {
            format!("cannot reach the server at {}", self.base)
        } else {
            format!("request to {} failed", self.base)
        };
        Error::Other(anyhow::Error::new(err).context(what))
    }

    /// GET `path` → JSON.
    pub async fn get(&self, path: &str) -> Result<Value> {
        json(self.send(self.request(Method::GET, path)).await?).await
    }

    /// POST JSON `body` to `path` → JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        json(
            self.send(self.request(Method::POST, path).json(body))
                .await?,
        )
        .await
    }

    /// PATCH JSON `body` to `path` → JSON.
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value> {
        json(
            self.send(self.request(Method::PATCH, path).json(body))
                .await?,
        )
        .await
    }

    /// DELETE `path` (the answer's body, if any, is dropped).
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, path)).await?;
        Ok(())
    }

    /// Sends `request` and reads its answer as Server-Sent Events.
    pub async fn events(
        &self,
        request: RequestBuilder,
    ) -> Result<impl Stream<Item = Result<SseEvent>> + Unpin + use<>> {
        let response = self
            .send(request.header(reqwest::header::ACCEPT, "text/event-stream"))
            .await?;
        let mut parser = SseParser::default();
        let events = response
            .bytes_stream()
            .map(move |chunk| match chunk {
                Ok(chunk) => Ok(parser.push(&chunk)),
                Err(err) => Err(Error::Other(
                    anyhow::Error::new(err).context("the event stream broke"),
                )),
            })
            .flat_map(|batch| {
                futures_util::stream::iter(match batch {
                    Ok(events) => events.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(err) => vec![Err(err)],
                })
            });
        Ok(Box::pin(events))
    }
}

/// `url` without a trailing `/` or API prefix; only `http` and `https`.
fn normalize_base(url: &str) -> Result<String> {
    let parsed = url::Url::parse(url)
        .map_err(|err| Error::Usage(format!("--url {url:?} is not a URL: {err}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(Error::Usage(format!(
            "--url {url:?} must be an http:// or https:// URL of a server"
        )));
    }
    let mut base = url.trim_end_matches('/');
    base = base.strip_suffix(API_PREFIX).unwrap_or(base);
    Ok(base.trim_end_matches('/').to_owned())
}

/// The JSON of a successful answer (`Null` for none).
pub async fn json(response: Response) -> Result<Value> {
    if response.status() == StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    let bytes = response
        .bytes()
        .await
        .context("reading the server's answer")?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&bytes).context("the server's answer is not JSON")?)
}

/// The error an error answer stands for: its JSON `error` and `detail` when it has
/// them, else the status and whatever text came.
pub async fn api_error(response: Response) -> Error {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    error_from_body(status, &body)
}

/// [`api_error`] for a status and body already read (the terminal's refused upgrade).
pub fn error_from_body(status: StatusCode, body: &[u8]) -> Error {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|value| value.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let error =
        field("error").unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let detail = field("detail").unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body).trim().to_owned();
        if text.is_empty() {
            format!("the server answered {status}")
        } else {
            text
        }
    });
    Error::Api {
        status: status.as_u16(),
        error,
        detail,
    }
}

/// Percent-encodes `value` for a query string.
pub fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_drops_slashes_and_the_prefix() {
        for url in [
            "http://127.0.0.1:8000",
            "http://127.0.0.1:8000/",
            "http://127.0.0.1:8000/api/v1",
            "http://127.0.0.1:8000/api/v1/",
        ] {
            assert_eq!(
                normalize_base(url).unwrap(),
                "http://127.0.0.1:8000",
                "{url}"
            );
        }
        assert_eq!(
            normalize_base("https://box.example/repobox/").unwrap(),
            "https://box.example/repobox"
        );
        for bad in ["127.0.0.1:8000", "ftp://h", "not a url"] {
            assert!(matches!(normalize_base(bad), Err(Error::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn error_bodies_give_their_detail() {
        let err = error_from_body(
            StatusCode::NOT_FOUND,
            br#"{"error":"Container not found","detail":"no container with id x","timestamp":"t"}"#,
        );
        assert_eq!(
            err.to_string(),
            "Container not found: no container with id x"
        );
        assert_eq!(err.exit_code(), 1);
        let err = error_from_body(StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(err.to_string(), "Bad Gateway: upstream down");
        let err = error_from_body(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(
            err.to_string(),
            "Bad Gateway: the server answered 502 Bad Gateway"
        );
    }
}
