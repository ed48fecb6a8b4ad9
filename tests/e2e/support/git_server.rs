//! A git smart-HTTP server for tests and benchmarks: `git http-backend` behind a tiny
//! axum app on 127.0.0.1, serving the bare repositories under one directory.
//!
//! Paths are `/<anything>/<name>.git/...`: every prefix before the repository name is
//! ignored, so each test can use a URL of its own (and find its own containers by the
//! `repobox.repo_url` label) while sharing one set of fixtures.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use tokio::io::AsyncWriteExt;

/// A running git server.
pub(crate) struct GitServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Where the bare repositories live.
    #[allow(dead_code, reason = "read by the tests, not by the benchmark")]
    pub root: PathBuf,
    log: Log,
    guards: Guards,
}

/// URL prefixes (`/<prefix>/`) that need basic auth, with the `Authorization` they need.
type Guards = Arc<Mutex<Vec<(String, String)>>>;

/// Every protocol-v2 command served (`ls-refs`, `fetch`), with its request's path.
type Log = Arc<Mutex<Vec<(String, &'static str)>>>;

#[derive(Clone)]
struct Served {
    root: PathBuf,
    log: Log,
    guards: Guards,
}

impl GitServer {
    /// Serves `root` on a fresh port, on the current runtime.
    pub(crate) async fn start(root: PathBuf) -> GitServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind git server");
        let addr: SocketAddr = listener.local_addr().unwrap();
        let log = Log::default();
        let guards = Guards::default();
        let app = axum::Router::new().fallback(serve).with_state(Served {
            root: root.clone(),
            log: log.clone(),
            guards: guards.clone(),
        });
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("git server");
        });
        GitServer {
            base: format!("http://{addr}"),
            root,
            log,
            guards,
        }
    }

    /// From now on, URLs under `prefix` answer 401 unless they carry basic auth of
    /// `user` and `token` (a private repository).
    #[allow(dead_code, reason = "read by the tests, not by the benchmark")]
    pub(crate) fn guard(&self, prefix: &str, user: &str, token: &str) {
        use base64::Engine as _;
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
        self.guards
            .lock()
            .unwrap()
            .push((format!("/{prefix}/"), format!("Basic {pair}")));
    }

    /// The git commands served so far for URLs under `prefix`, in order.
    #[allow(dead_code, reason = "read by the tests, not by the benchmark")]
    pub(crate) fn commands(&self, prefix: &str) -> Vec<&'static str> {
        let start = format!("/{prefix}/");
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(path, _)| path.starts_with(&start))
            .map(|(_, command)| *command)
            .collect()
    }

    /// URL of repository `name` under a unique `prefix`.
    pub(crate) fn url(&self, prefix: &str, name: &str) -> String {
        format!("{}/{prefix}/{name}.git", self.base)
    }
}

async fn serve(State(Served { root, log, guards }): State<Served>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let needed = guards
        .lock()
        .unwrap()
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix.as_str()))
        .map(|(_, authorization)| authorization.clone());
    if let Some(needed) = needed {
        let given = parts
            .headers
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        if given != Some(needed.as_str()) {
            let mut response = status(StatusCode::UNAUTHORIZED);
            response.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Basic realm=\"git\""),
            );
            return response;
        }
    }
    // Keep from the first component ending in `.git` on.
    let Some(start) = path.split('/').position(|part| part.ends_with(".git")) else {
        return status(StatusCode::NOT_FOUND);
    };
    let path_info = format!(
        "/{}",
        path.split('/').skip(start).collect::<Vec<_>>().join("/")
    );
    let body: Bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let find = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    let command = if parts.headers.contains_key("content-encoding") {
        Some("fetch (compressed)")
    } else if find(b"command=fetch") {
        Some("fetch")
    } else if find(b"command=ls-refs") {
        Some("ls-refs")
    } else {
        None
    };
    if let Some(command) = command {
        log.lock().unwrap().push((path.to_owned(), command));
    }
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", &path_info)
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("git http-backend");
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = child
        .wait_with_output()
        .await
        .expect("git http-backend output");
    let _ = writer.await;
    cgi_response(&output.stdout)
}

fn cgi_response(out: &[u8]) -> Response {
    let Some(split) = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
    else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let (head, body) = (&out[..split.0], &out[split.0 + split.1..]);
    let mut response = Response::new(Body::from(body.to_vec()));
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(500);
            *response.status_mut() =
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(name), Ok(value)) = (
            name.parse::<axum::http::HeaderName>(),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

fn status(code: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response
}
