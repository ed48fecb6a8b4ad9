//! The router without Docker: validation, error bodies and the OpenAPI document,
//! driven through `app(state).oneshot(request)` against a backend that has no engine
//! behind it. Whatever reaches the backend is answered "Docker unreachable", so a
//! request that should have been refused earlier shows up as a 503, not a pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{AppState, app, openapi};
use crate::backend::{Backend, ContainerInfo, ManagedContainer, SandboxSpec, Transport};
use crate::config::{Config, List};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::sandbox::Sandboxes;

/// A backend with no engine: every call fails as an unreachable engine would.
/// `store`: whether it has an image store.
struct NoEngine {
    store: bool,
}

fn unreachable() -> Error {
    Error::EngineUnavailable("no engine behind this test backend".to_owned())
}

#[async_trait::async_trait]
impl Backend for NoEngine {
    fn kind(&self) -> crate::backend::BackendKind {
        crate::backend::BackendKind::Docker
    }
    fn images(&self) -> Option<&dyn crate::backend::ImageStore> {
        self.store
            .then_some(self as &dyn crate::backend::ImageStore)
    }
    fn capabilities(&self) -> &'static [&'static str] {
        &["CHOWN", "KILL"]
    }
    async fn ping(&self, _bound: Duration) -> Result<()> {
        Err(unreachable())
    }
    async fn version(&self) -> Result<String> {
        Err(unreachable())
    }
    async fn create(&self, _spec: &SandboxSpec) -> Result<crate::id::EngineId> {
        Err(unreachable())
    }
    async fn assign(
        &self,
        _engine_id: &crate::id::EngineId,
        _spec: &SandboxSpec,
        _current: crate::backend::Limits,
    ) -> Result<()> {
        Err(unreachable())
    }
    async fn attach(&self, _engine_id: &crate::id::EngineId) -> Result<Transport> {
        Err(unreachable())
    }
    async fn remove(&self, _engine_id: &crate::id::EngineId) -> Result<()> {
        Err(unreachable())
    }
    async fn list_managed(&self, _instance: &str) -> Result<Vec<ManagedContainer>> {
        Err(unreachable())
    }
    async fn disk_limits(&self) -> Result<crate::backend::DiskLimits> {
        Err(unreachable())
    }
    async fn inspect(&self, _engine_id: &crate::id::EngineId) -> Result<Option<ContainerInfo>> {
        Err(unreachable())
    }
}

#[async_trait::async_trait]
impl crate::backend::ImageStore for NoEngine {
    async fn image(&self, _reference: &str) -> Result<Option<crate::backend::ImageInfo>> {
        Err(unreachable())
    }
    fn pull(
        &self,
        _reference: &str,
        _credentials: Option<crate::backend::Credentials>,
    ) -> crate::backend::PullStream {
        Box::pin(futures_util::stream::once(async { Err(unreachable()) }))
    }
    fn build(
        &self,
        _context: crate::backend::BodyStream,
        _spec: crate::backend::BuildSpec,
    ) -> crate::backend::BuildStream {
        Box::pin(futures_util::stream::once(async { Err(unreachable()) }))
    }
    async fn snapshot(
        &self,
        _engine_id: &crate::id::EngineId,
        _reference: &str,
        _labels: std::collections::HashMap<String, String>,
    ) -> Result<crate::backend::ImageInfo> {
        Err(unreachable())
    }
    async fn remove_image(&self, _reference: &str) -> Result<()> {
        Err(unreachable())
    }
    async fn list_images(&self, _label: &str) -> Result<Vec<crate::backend::ImageInfo>> {
        Err(unreachable())
    }
}

struct Harness {
    router: axum::Router,
    sandboxes: Arc<Sandboxes>,
    _dir: tempfile::TempDir,
}

fn harness(edit: impl FnOnce(&mut Config)) -> Harness {
    harness_on(NoEngine { store: true }, edit)
}

fn harness_on(backend: NoEngine, edit: impl FnOnce(&mut Config)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults();
    config.data_dir = dir.path().join("data");
    config.cache_dir = dir.path().join("cache");
    config.allowed_git_hosts = List(vec!["git.example".to_owned()]);
    edit(&mut config);
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let sandboxes =
        Arc::new(Sandboxes::open(config.clone(), Arc::new(backend), metrics.clone()).unwrap());
    let jobs = Arc::new(
        crate::job::Jobs::open(config.clone(), sandboxes.clone(), metrics.clone()).unwrap(),
    );
    let router = app(AppState {
        config,
        sandboxes: sandboxes.clone(),
        metrics,
        jobs,
        started: Instant::now(),
        readiness: Default::default(),
    });
    Harness {
        router,
        sandboxes,
        _dir: dir,
    }
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(
            Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }
}

/// The spec's error shape, with our machine code.
fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap_or("")).is_ok(),
        "{body}"
    );
}

#[tokio::test]
async fn a_backend_without_an_image_store_answers_501_for_images_snapshots_and_forks() {
    let harness = harness_on(NoEngine { store: false }, |_| {});
    for path in [
        "/api/v1/images",
        "/api/v1/images/img-1",
        "/api/v1/snapshots",
        "/api/v1/snapshots/snap-1",
        "/api/v1/containers/c-1/snapshots",
    ] {
        let (status, body) = harness.get(path).await;
        assert_error(status, &body, StatusCode::NOT_IMPLEMENTED, "not_supported");
    }
    let (status, body) = harness
        .post_json("/api/v1/containers/c-1/fork", &json!({"count": 1}))
        .await;
    assert_error(status, &body, StatusCode::NOT_IMPLEMENTED, "not_supported");
    let (status, body) = harness.post_json("/api/v1/images", &json!({})).await;
    assert_error(status, &body, StatusCode::NOT_IMPLEMENTED, "not_supported");
    // Other routes go on as before.
    let (status, _) = harness.get("/api/v1/containers/c-1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, info) = harness.get("/api/v1/info").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["backend"]["kind"], "docker", "{info}");
    assert_eq!(info["backend"]["version"], Value::Null, "{info}");
    let unsupported = info["backend"]["unsupported"].as_array().unwrap();
    assert!(unsupported.contains(&json!("/api/v1/containers/{container_id}/fork")));
    assert!(unsupported.contains(&json!("/api/v1/images")));
}

#[tokio::test]
async fn invalid_creates_are_refused_before_the_engine_is_asked() {
    let harness = harness(|_| {});
    let url = "https://git.example/r.git";
    let cases = [
        json!({}),
        json!({"repo_url": "ftp://git.example/r"}),
        json!({"repo_url": "https://evil.example/r"}),
        json!({"repo_url": "file:///etc"}),
        json!({"repo_url": url, "branch": "--upload-pack=x"}),
        json!({"repo_url": url, "branch": "a..b"}),
        json!({"repo_url": url, "commit": "xyz"}),
        json!({"repo_url": url, "commit": "abc12"}),
        json!({"repo_url": url, "max_runtime_secs": 0}),
        json!({"repo_url": url, "max_runtime_secs": 86401}),
        json!({"repo_url": url, "environment_vars": {"1BAD": "x"}}),
        json!({"repo_url": url, "initial_command": ""}),
        json!({"repo_url": url, "resources": {"cpus": 0}}),
        json!({"repo_url": url, "resources": {"memory_mb": 1}}),
        json!({"repo_url": url, "resources": {"pids": 1}}),
        json!({"repo_url": url, "network": "bridge"}),
        json!({"repo_url": url, "network": "host"}),
        json!({"repo_url": 5}),
    ];
    for body in cases {
        let (status, error) = harness.post_json("/api/v1/containers", &body).await;
        assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_request");
    }
    assert_eq!(harness.sandboxes.count(), 0);
}

#[tokio::test]
async fn framework_rejections_are_json_errors() {
    let harness = harness(|config| config.max_request_bytes = 1024);
    let (status, error) = harness
        .send(
            Request::post("/api/v1/containers")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
        )
        .await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_request");
    let (status, error) = harness
        .send(
            Request::post("/api/v1/containers")
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_error(
        status,
        &error,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let big = json!({"repo_url": "x".repeat(2000)});
    let (status, error) = harness.post_json("/api/v1/containers", &big).await;
    assert_error(status, &error, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    let (status, error) = harness.get("/api/v1/nothing-here").await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "route_not_found");
    let (status, error) = harness
        .send(
            Request::patch("/api/v1/health")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_error(
        status,
        &error,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn unknown_sandboxes_are_404_on_every_route() {
    let harness = harness(|_| {});
    let id = "repo-container-1-999";
    for path in [
        format!("/api/v1/containers/{id}"),
        format!("/api/v1/containers/{id}/browse?path=/workspace"),
        format!("/api/v1/containers/{id}/files?file_path=/x"),
        format!("/api/v1/containers/{id}/files/raw?file_path=/x"),
        format!("/api/v1/containers/{id}/archive?path=/x"),
    ] {
        let (status, error) = harness.get(&path).await;
        assert_error(status, &error, StatusCode::NOT_FOUND, "container_not_found");
    }
    for path in ["execute", "execute/stream"] {
        let (status, error) = harness
            .post_json(
                &format!("/api/v1/containers/{id}/{path}"),
                &json!({"command": "true"}),
            )
            .await;
        assert_error(status, &error, StatusCode::NOT_FOUND, "container_not_found");
    }
}

#[tokio::test]
async fn a_valid_create_reaches_the_engine_and_leaves_nothing_when_it_fails() {
    let harness = harness(|_| {});
    let (status, error) = harness
        .post_json(
            "/api/v1/containers",
            &json!({"repo_url": "https://git.example/r.git"}),
        )
        .await;
    // Git or the engine fails first; either way a clean error, nothing registered.
    assert!(
        status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::UNPROCESSABLE_ENTITY,
        "{status}: {error}"
    );
    assert_eq!(harness.sandboxes.count(), 0);
}

#[tokio::test]
async fn keys_are_required_when_configured() {
    let harness = harness(|config| config.api_keys = List(vec!["k1".to_owned()]));
    let (status, error) = harness.get("/api/v1/containers").await;
    assert_error(status, &error, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, _) = harness.get("/api/v1/health/live").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = harness
        .send(
            Request::get("/api/v1/info")
                .header(header::AUTHORIZATION, "Bearer k1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn the_openapi_document_is_what_was_reviewed() {
    // The document of a server with default settings; any API change shows here.
    let mut config = Config::defaults();
    config.api_keys = List(Vec::new());
    let mut document = serde_json::to_value(openapi(&config)).unwrap();
    // The version changes with every release; the API does not.
    document["info"]["version"] = json!("(version)");
    insta::assert_json_snapshot!("openapi", document);
}

#[test]
fn the_document_declares_what_each_route_can_answer() {
    let config = Config::defaults();
    let document = serde_json::to_value(openapi(&config)).unwrap();
    let execute = &document["paths"]["/api/v1/containers/{container_id}/execute"]["post"];
    for status in ["200", "400", "404", "409", "413", "415", "503"] {
        assert!(
            execute["responses"][status].is_object(),
            "execute lacks {status}"
        );
    }
    let timeout =
        &document["components"]["schemas"]["ExecuteCommandRequest"]["properties"]["timeout_secs"];
    assert_eq!(timeout["minimum"], 1.0);
    assert_eq!(timeout["maximum"], config.max_exec_timeout_secs as f64);
    // Without keys, no route asks for one.
    assert!(document.get("security").is_none());
    let mut keyed = Config::defaults();
    keyed.api_keys = List(vec!["k".to_owned()]);
    let document = serde_json::to_value(openapi(&keyed)).unwrap();
    assert!(document["security"].is_array());
    assert!(document["paths"]["/api/v1/containers"]["get"]["responses"]["401"].is_object());
    assert!(document["paths"]["/api/v1/health/live"]["get"]["responses"]["401"].is_null());
}

#[tokio::test]
async fn invalid_jobs_are_refused_whole_and_unknown_jobs_are_404() {
    let harness = harness(|config| {
        config.max_job_repos = 3;
        config.command_allowlist = List(vec!["git".to_owned()]);
    });
    let repo = json!({"repo_url": "https://git.example/r.git"});
    let cases = [
        json!({"repos": [repo]}),
        json!({"command": "git log", "repos": []}),
        json!({"command": "git log", "repos": [repo, repo, repo, repo]}),
        json!({"command": "git log", "repos": [repo, {"repo_url": "https://evil.example/r"}]}),
        json!({"command": "git log", "repos": [{"repo_url": "https://git.example/r", "commit": "xyz"}]}),
        json!({"command": "git log", "repos": [repo], "concurrency": 0}),
        json!({"command": "git log", "repos": [repo], "concurrency": 1000}),
        json!({"command": "git log", "repos": [repo], "timeout_secs": -1}),
        json!({"command": "git log", "repos": [repo], "network": "bridge"}),
        json!({"command": "git log", "repos": [repo], "environment_vars": {"1X": "y"}}),
        // A misspelt field would otherwise run the whole job without it.
        json!({"command": "git log", "repos": [repo], "imageid": "img-1"}),
        json!({"command": "git log", "repos": [{"repo_url": "https://git.example/r.git", "brnach": "x"}]}),
        json!({"command": "git log", "repos": [repo], "image": "x", "image_id": "img-1"}),
    ];
    for body in cases {
        let (status, error) = harness.post_json("/api/v1/jobs", &body).await;
        assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let (status, error) = harness
        .post_json(
            "/api/v1/jobs",
            &json!({"command": "rm -rf /", "repos": [repo]}),
        )
        .await;
    assert_error(status, &error, StatusCode::FORBIDDEN, "command_not_allowed");
    let (status, error) = harness
        .post_json(
            "/api/v1/jobs",
            &json!({"command": "git log", "repos": [repo], "image_id": "img-0123"}),
        )
        .await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "image_not_found");
    let (status, error) = harness
        .post_json(
            "/api/v1/images",
            &json!({"repo_url": "https://git.example/r.git", "from": "dockerfile"}),
        )
        .await;
    assert_error(status, &error, StatusCode::FORBIDDEN, "builds_disabled");
    for body in [
        json!({"repo_url": "https://git.example/r.git", "from": "makefile"}),
        json!({"repo_url": "https://evil.example/r.git", "from": "dockerfile"}),
        json!({"repo_url": "https://git.example/r.git", "from": "dockerfile", "build_args": {"1X": "y"}}),
        json!({"repo_url": "https://git.example/r.git", "from": "dockerfile", "dockerfile_path": "x"}),
    ] {
        let (status, error) = harness.post_json("/api/v1/images", &body).await;
        assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let (status, error) = harness.get("/api/v1/images/img-0123").await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "image_not_found");
    let (status, list) = harness.get("/api/v1/jobs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["jobs"], json!([]), "nothing was started");
    for path in [
        "/api/v1/jobs/job-1-1",
        "/api/v1/jobs/job-1-1/results",
        "/api/v1/jobs/job-1-1/events",
    ] {
        let (status, error) = harness.get(path).await;
        assert_error(status, &error, StatusCode::NOT_FOUND, "job_not_found");
    }
    let (status, error) = harness.get("/api/v1/jobs/job-1-1/results?format=xml").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
}

#[tokio::test]
async fn the_dashboard_files_need_no_key_and_stay_out_of_the_api() {
    let harness = harness(|config| config.api_keys = List(vec!["k1".to_owned()]));
    for path in ["/", "/ui", "/ui/", "/ui/js/app.js", "/ui/vendor/xterm.mjs"] {
        let response = harness
            .router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(
            response.status() == StatusCode::OK || response.status().is_redirection(),
            "{path}: {}",
            response.status()
        );
    }
    let (status, error) = harness.get("/ui/missing.js").await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "route_not_found");
    // Only the static files are open: the API behind them still wants the key.
    let (status, error) = harness.get("/api/v1/containers").await;
    assert_error(status, &error, StatusCode::UNAUTHORIZED, "unauthorized");
    let paths = openapi(&Config::defaults()).paths.paths;
    assert!(paths.keys().all(|path| path.starts_with("/api/v1/")));
}

/// A request as a web page would have its browser send it.
fn from_page(method: &str, path: &str, pairs: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    for (name, value) in pairs {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn without_keys_a_rebound_name_is_refused_on_every_route() {
    let open = harness(|_| {});
    for path in [
        "/api/v1/containers",
        "/api/v1/info",
        "/api/v1/health",
        "/metrics",
        "/docs/",
    ] {
        let (status, error) = open
            .send(from_page(
                "GET",
                path,
                &[("host", "attacker.example:8000")],
                "",
            ))
            .await;
        assert_error(status, &error, StatusCode::FORBIDDEN, "forbidden");
        let (status, _) = open
            .send(from_page("GET", path, &[("host", "localhost:8000")], ""))
            .await;
        assert_ne!(status, StatusCode::FORBIDDEN, "{path}");
    }
    let listed = harness(|config| config.allowed_hosts = List(vec!["box.lan".to_owned()]));
    let (status, _) = listed
        .send(from_page(
            "GET",
            "/api/v1/info",
            &[("host", "box.lan:8000")],
            "",
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    // With keys, a page has no key to send: names are not checked.
    let keyed = harness(|config| config.api_keys = List(vec!["k1".to_owned()]));
    let (status, _) = keyed
        .send(from_page(
            "GET",
            "/api/v1/info",
            &[
                ("host", "repobox.example.com"),
                ("authorization", "Bearer k1"),
            ],
            "",
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn pages_cannot_post_plain_text_or_forms_nor_upgrade_from_elsewhere() {
    let open = harness(|_| {});
    let id = "repo-container-1-999";
    for (path, kind) in [
        (format!("/api/v1/containers/{id}/git/apply"), "text/plain"),
        (
            "/api/v1/jobs/job-1/cancel".to_owned(),
            "text/plain;charset=UTF-8",
        ),
        (
            "/api/v1/containers".to_owned(),
            "application/x-www-form-urlencoded",
        ),
        (
            format!("/api/v1/containers/{id}/execute"),
            "multipart/form-data; boundary=x",
        ),
    ] {
        let (status, error) = open
            .send(from_page(
                "POST",
                &path,
                &[("host", "127.0.0.1:8000"), ("content-type", kind)],
                "{}",
            ))
            .await;
        assert_error(
            status,
            &error,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
    }
    // A body-less POST from a foreign page (a "simple" request): refused by its Origin.
    let (status, error) = open
        .send(from_page(
            "POST",
            "/api/v1/jobs/job-1/cancel",
            &[
                ("host", "127.0.0.1:8000"),
                ("origin", "https://attacker.example"),
            ],
            "",
        ))
        .await;
    assert_error(status, &error, StatusCode::FORBIDDEN, "forbidden");
    // The terminal's WebSocket, keys or not, from a foreign page.
    let keyed = harness(|config| config.api_keys = List(vec!["k1".to_owned()]));
    for h in [&open, &keyed] {
        let (status, error) = h
            .send(from_page(
                "GET",
                &format!("/api/v1/containers/{id}/terminal?access_token=k1"),
                &[
                    ("host", "localhost:8000"),
                    ("origin", "https://attacker.example"),
                    ("connection", "upgrade"),
                    ("upgrade", "websocket"),
                    ("sec-websocket-version", "13"),
                    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ],
                "",
            ))
            .await;
        assert_error(status, &error, StatusCode::FORBIDDEN, "forbidden");
    }
}

#[tokio::test]
async fn the_query_token_is_taken_on_the_terminal_and_port_routes_only() {
    let harness = harness(|config| config.api_keys = List(vec!["k1".to_owned()]));
    let id = "repo-container-1-999";
    // The terminal route and a port's: the token is the key (the sandbox does not
    // exist: 404, not 401).
    for path in [
        format!("/api/v1/containers/{id}/terminal?access_token=k1"),
        format!("/api/v1/containers/{id}/ports/3000/?access_token=k1"),
        format!("/api/v1/containers/{id}/ports/3000/a/b.js?x=1&access_token=k1"),
    ] {
        let (status, error) = harness.get(&path).await;
        assert_error(status, &error, StatusCode::NOT_FOUND, "container_not_found");
    }
    // A port's cookie opens that port's paths: not a key, not another port, not the API.
    let token = super::ports::port_token("k1", &crate::id::SandboxId::from(id), 3000);
    let with_cookie = |path: &str, cookie: &str| {
        Request::get(path)
            .header(header::COOKIE, format!("repobox_port={cookie}"))
            .body(Body::empty())
            .unwrap()
    };
    let (status, error) = harness
        .send(with_cookie(
            &format!("/api/v1/containers/{id}/ports/3000/app.js"),
            &token,
        ))
        .await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "container_not_found");
    for (path, cookie) in [
        (
            format!("/api/v1/containers/{id}/ports/3001/app.js"),
            token.as_str(),
        ),
        (format!("/api/v1/containers/{id}/ports/3000/app.js"), "k1"),
        (format!("/api/v1/containers/{id}/ports"), token.as_str()),
        (format!("/api/v1/containers/{id}"), token.as_str()),
        (format!("/api/v1/containers/{id}/tcp/3000"), token.as_str()),
    ] {
        let (status, error) = harness.send(with_cookie(&path, cookie)).await;
        assert_error(status, &error, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // Paths that merely end in /terminal: the token is not a key there; nor on the
    // port list or the TCP route.
    for path in [
        format!("/api/v1/containers/{id}/files/raw/terminal?access_token=k1"),
        "/api/v1/terminal?access_token=k1".to_owned(),
        format!("/api/v1/containers/{id}/browse/terminal?access_token=k1"),
        format!("/api/v1/containers/{id}/ports?access_token=k1"),
        format!("/api/v1/containers/{id}/tcp/3000?access_token=k1"),
    ] {
        let (status, error) = harness.get(&path).await;
        assert_error(status, &error, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // Keys of other lengths, and prefixes, do not match.
    for wrong in ["k", "k10", "K1", ""] {
        assert!(!super::key_matches(&["k1".to_owned()], wrong), "{wrong:?}");
    }
    assert!(super::key_matches(&["x".to_owned(), "k1".to_owned()], "k1"));
}

/// A POST without a body (a port's route takes any method).
fn post_empty(path: &str) -> Request<Body> {
    Request::post(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn port_routes_check_the_port_and_keep_trailing_slashes() {
    let harness = harness(|_| {});
    let id = "repo-container-1-999";
    for bad in ["0", "65536", "x", "-1", "+80"] {
        let (status, error) = harness
            .get(&format!("/api/v1/containers/{id}/ports/{bad}/"))
            .await;
        assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let (status, error) = harness.get(&format!("/api/v1/containers/{id}/tcp/0")).await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_request");
    for path in ["ports", "ports/3000/", "ports/3000/dir/", "tcp/3000"] {
        let (status, error) = harness
            .get(&format!("/api/v1/containers/{id}/{path}"))
            .await;
        assert_error(status, &error, StatusCode::NOT_FOUND, "container_not_found");
    }
    // Any method but TRACE and CONNECT is forwarded.
    let response = harness
        .router
        .clone()
        .oneshot(
            Request::builder()
                .method("TRACE")
                .uri(format!("/api/v1/containers/{id}/ports/3000/"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(response.headers().contains_key(header::ALLOW));
    // Under a port, a trailing slash is the page's.
    let kept = super::trim_trailing_slash(post_empty(&format!(
        "/api/v1/containers/{id}/ports/3000/dir/"
    )));
    assert_eq!(
        kept.uri().path(),
        format!("/api/v1/containers/{id}/ports/3000/dir/")
    );
    let trimmed =
        super::trim_trailing_slash(post_empty(&format!("/api/v1/containers/{id}/ports/")));
    assert_eq!(
        trimmed.uri().path(),
        format!("/api/v1/containers/{id}/ports")
    );
}

#[tokio::test]
async fn integers_written_with_a_zero_fraction_are_integers() {
    // JSON Schema counts `60.0` as an integer: a schema-valid body, so not a 400.
    let harness = harness(|_| {});
    let id = "repo-container-1-999";
    let patch = |body: Value| {
        Request::patch(format!("/api/v1/containers/{id}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    // The body is read before the sandbox is looked up: 404 means it was taken.
    let (status, error) = harness.send(patch(json!({"max_runtime_secs": 60.0}))).await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "container_not_found");
    let (status, error) = harness
        .post_json(
            &format!("/api/v1/containers/{id}/execute"),
            &json!({"command": "true", "timeout_secs": 30.0}),
        )
        .await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "container_not_found");
    // A fraction is not an integer.
    let (status, error) = harness.send(patch(json!({"max_runtime_secs": 60.5}))).await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_request");
    // A create with one gets as far as a create without.
    let (status, error) = harness
        .post_json(
            "/api/v1/containers",
            &json!({"repo_url": "https://git.example/r.git", "max_runtime_secs": 60.0, "resources": {"cpus": 1.0, "memory_mb": 512.0}}),
        )
        .await;
    assert!(
        status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::UNPROCESSABLE_ENTITY,
        "{status}: {error}"
    );
}

/// Every `$ref` in `value`.
fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields {
                match field {
                    Value::String(target) if name == "$ref" => found.push(target),
                    _ => references(field, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, found)),
        _ => {}
    }
}

#[test]
fn the_document_states_the_constraints_the_server_checks() {
    let config = Config::defaults();
    let document = serde_json::to_value(openapi(&config)).unwrap();
    let mut found = Vec::new();
    references(&document, &mut found);
    for target in found {
        assert!(
            document.pointer(target.trim_start_matches('#')).is_some(),
            "{target} does not resolve"
        );
    }
    let terminal =
        document["paths"]["/api/v1/containers/{container_id}/terminal"]["get"]["parameters"]
            .as_array()
            .unwrap();
    for name in ["cols", "rows"] {
        let parameter = terminal.iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(parameter["schema"]["minimum"], 1.0, "{parameter}");
        assert_eq!(parameter["schema"]["maximum"], 1000.0, "{parameter}");
    }
    let schemas = &document["components"]["schemas"];
    let fork = &schemas["ForkRequest"]["properties"];
    assert_eq!(fork["count"]["minimum"], 1.0);
    assert_eq!(fork["count"]["maximum"], config.max_forks as f64);
    assert_eq!(
        fork["max_runtime_secs"]["maximum"],
        config.max_runtime_secs as f64
    );
    assert_eq!(
        schemas["StartProcessRequest"]["properties"]["timeout_secs"]["maximum"],
        config.max_exec_timeout_secs as f64
    );
    // A name or a number, not an object.
    let signal = &schemas["SignalRequest"]["properties"]["signal"];
    let kinds: Vec<_> = signal["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kind| kind["type"].clone())
        .collect();
    assert_eq!(kinds, [json!("string"), json!("integer")], "{signal}");
    for (schema, field) in [
        ("ExecuteCommandRequest", "command"),
        ("ExecuteCommandRequest", "working_directory"),
        ("StartProcessRequest", "command"),
        ("CreateContainerRequest", "repo_url"),
        ("CreateContainerRequest", "commit"),
        ("JobRepo", "repo_url"),
        ("StdinRequest", "data_base64"),
    ] {
        assert!(
            schemas[schema]["properties"][field]["pattern"].is_string(),
            "{schema}.{field}"
        );
    }
    assert_eq!(
        schemas["CreateSnapshotRequest"]["properties"]["name"]["maxLength"],
        200
    );
    let environment = &schemas["ExecuteCommandRequest"]["properties"]["environment"];
    assert!(
        environment["propertyNames"]["pattern"].is_string(),
        "{environment}"
    );
    let browse =
        &document["paths"]["/api/v1/containers/{container_id}/browse"]["get"]["parameters"];
    let path = browse
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "path")
        .unwrap();
    assert!(path["schema"]["pattern"].is_string(), "{path}");
    let diff = document["paths"]["/api/v1/containers/{container_id}/git/diff"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let base = diff.iter().find(|p| p["name"] == "base").unwrap();
    assert!(base["schema"]["pattern"].is_string(), "{base}");
    // Results as JSON Lines are a documented answer.
    let results =
        &document["paths"]["/api/v1/jobs/{job_id}/results"]["get"]["responses"]["200"]["content"];
    assert!(results["application/json"].is_object(), "{results}");
    assert!(results["application/x-ndjson"].is_object(), "{results}");
}

#[test]
fn creations_link_to_the_routes_behind_their_ids() {
    let document = serde_json::to_value(openapi(&Config::defaults())).unwrap();
    let paths = document["paths"].as_object().unwrap();
    let created = &paths["/api/v1/containers"]["post"]["responses"]["201"]["links"];
    assert_eq!(
        created["get_container"],
        json!({"operationId": "get_container", "parameters": {"container_id": "$response.body#/container_id"}})
    );
    let started =
        &paths["/api/v1/containers/{container_id}/processes"]["post"]["responses"]["201"]["links"];
    assert_eq!(
        started["get_process"]["parameters"],
        json!({"container_id": "$request.path.container_id", "process_id": "$response.body#/process_id"})
    );
    // Every route behind an id is reached by a link, and every link names a route
    // with exactly the parameters it takes.
    let mut targets = std::collections::BTreeMap::new();
    for (path, item) in paths {
        for operation in item.as_object().unwrap().values() {
            if let Some(id) = operation["operationId"].as_str() {
                targets.insert(id.to_owned(), path.clone());
            }
        }
    }
    let mut linked = std::collections::BTreeSet::new();
    for item in paths.values() {
        for operation in item.as_object().unwrap().values() {
            for response in operation["responses"].as_object().into_iter().flatten() {
                for link in response.1["links"].as_object().into_iter().flatten() {
                    let id = link.1["operationId"].as_str().unwrap();
                    let path = &targets[id];
                    let parameters: Vec<_> = link.1["parameters"]
                        .as_object()
                        .unwrap()
                        .keys()
                        .map(|name| format!("{{{name}}}"))
                        .collect();
                    assert_eq!(
                        path.matches('{').count(),
                        parameters.len(),
                        "{id}: {parameters:?}"
                    );
                    assert!(parameters.iter().all(|p| path.contains(p.as_str())), "{id}");
                    linked.insert(id.to_owned());
                }
            }
        }
    }
    for (id, path) in &targets {
        // A port is the client's to choose: no creation answers with one.
        if path.contains('{') && !path.contains("{port}") {
            assert!(linked.contains(id), "no link reaches {id} ({path})");
        }
    }
}
