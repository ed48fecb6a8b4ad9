//! Foundation: health, info, metrics, docs, errors and authentication.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{scratch, spawn_app, test_config, world};

fn assert_error_shape(body: &Value) {
    assert!(
        body["error"].as_str().is_some_and(|s| !s.is_empty()),
        "no error in {body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|s| !s.is_empty()),
        "no detail in {body}"
    );
    let timestamp = body["timestamp"].as_str().unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
        "bad timestamp in {body}"
    );
}

#[tokio::test]
async fn health_ready_live_info_and_metrics_answer() {
    let app = &world().app;
    for path in ["/api/v1/health", "/api/v1/health/"] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "healthy");
        assert_eq!(body["docker_available"], true);
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        assert!(body["uptime_seconds"].as_f64().unwrap() >= 0.0);
        assert!(body["active_containers"].as_u64().is_some());
    }
    assert_eq!(
        app.get("/api/v1/health/ready").await,
        (StatusCode::OK, json!({"status": "ready"}))
    );
    assert_eq!(
        app.get("/api/v1/health/live").await,
        (StatusCode::OK, json!({"status": "alive"}))
    );

    let (status, info) = app.get("/api/v1/info").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["name"], "repobox");
    assert_eq!(
        info["docker_base_image"],
        repobox::config::DEFAULT_BASE_IMAGE
    );
    assert_eq!(info["allowed_git_hosts"], json!(["127.0.0.1"]));
    assert_eq!(info["network"]["default"], "none");
    for limit in [
        "max_containers",
        "max_runtime_secs",
        "max_exec_timeout_secs",
        "max_output_bytes",
        "max_file_bytes",
    ] {
        assert!(
            info["limits"][limit].as_u64().is_some_and(|n| n > 0),
            "{limit} missing in {info}"
        );
    }
    assert!(
        info["limits"]["max_resources"]["memory_mb"]
            .as_u64()
            .is_some()
    );

    let metrics = app.text("/metrics").await;
    assert!(metrics.contains("repobox_docker_up 1"), "{metrics}");
    assert!(
        metrics.contains(r#"route="/api/v1/health""#),
        "requests are counted by route template: {metrics}"
    );
    assert!(
        metrics.contains("repobox_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let response = world()
        .app
        .request(Method::GET, "/api/v1/health/live")
        .send()
        .await
        .unwrap();
    let id = response
        .headers()
        .get("x-request-id")
        .expect("x-request-id header");
    assert!(!id.is_empty());
}

#[tokio::test]
async fn unreachable_docker_is_reported_and_recovered_from() {
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.docker_host = format!("unix://{}/nothing-listens.sock", dir.path().display());
    let down = spawn_app(config.clone()).await;
    let (status, body) = down.app.get("/api/v1/health/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "not ready");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Docker")),
        "{body}"
    );
    let (status, body) = down.app.get("/api/v1/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["docker_available"], false);
    assert_eq!(body["status"], "unhealthy");
    let (status, body) = down.app.get("/api/v1/containers").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    down.stop().await;

    config.docker_host = repobox::config::Config::defaults().docker_host;
    let up = spawn_app(config).await;
    assert_eq!(up.app.get("/api/v1/health/ready").await.0, StatusCode::OK);
    assert_eq!(
        up.app.get("/api/v1/health").await.1["docker_available"],
        true
    );
    up.stop().await;
}

#[tokio::test]
async fn framework_rejections_use_the_error_shape() {
    let app = &world().app;
    let url = |path: &str| format!("{}{path}", app.base);
    let cases: Vec<(reqwest::RequestBuilder, StatusCode)> = vec![
        (
            app.client
                .post(url("/api/v1/containers"))
                .header("content-type", "application/json")
                .body("{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            app.client
                .post(url("/api/v1/containers"))
                .json(&json!({"repo_url": 42})),
            StatusCode::BAD_REQUEST,
        ),
        (
            app.client
                .post(url("/api/v1/containers"))
                .json(&json!({"branch": "main"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            app.client.post(url("/api/v1/containers")).body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (app.client.get(url("/api/v1/nope")), StatusCode::NOT_FOUND),
        (app.client.get(url("/nope")), StatusCode::NOT_FOUND),
        (
            app.client.put(url("/api/v1/health")),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            app.client.delete(url("/api/v1/containers")),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            app.client
                .post(url("/api/v1/containers"))
                .header("content-type", "application/json")
                .body(format!(
                    "{{\"repo_url\": \"{}\"}}",
                    "a".repeat(2 * 1024 * 1024)
                )),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            app.client.get(url("/api/v1/containers/does-not-exist")),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (request, expected) in cases {
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.expect("error body is JSON");
        assert_eq!(status, expected, "{body}");
        assert_error_shape(&body);
    }
}

#[tokio::test]
async fn api_keys_guard_everything_but_the_probes() {
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.api_keys = repobox::config::List(vec!["first-key".to_owned(), "second-key".to_owned()]);
    let server = spawn_app(config).await;
    let mut app = server.app.clone();
    for path in [
        "/api/v1/health",
        "/api/v1/info",
        "/api/v1/containers",
        "/metrics",
        "/openapi.json",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} without a key");
        assert_error_shape(&body);
    }
    app.key = Some("wrong-key".to_owned());
    assert_eq!(app.get("/api/v1/health").await.0, StatusCode::UNAUTHORIZED);
    app.key = Some("second-key".to_owned());
    assert_eq!(app.get("/api/v1/health").await.0, StatusCode::OK);
    assert_eq!(app.get("/api/v1/info").await.0, StatusCode::OK);
    app.key = None;
    assert_eq!(app.get("/api/v1/health/live").await.0, StatusCode::OK);
    assert_eq!(app.get("/api/v1/health/ready").await.0, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn docs_are_served_offline_and_openapi_names_every_route() {
    let app = &world().app;
    let html = app
        .client
        .get(format!("{}/docs/", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(html.status(), StatusCode::OK);
    let html = html.text().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
    // Every script and stylesheet the page loads comes from this server.
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.ends_with(".js") || s.ends_with(".css"))
        .collect();
    assert!(!assets.is_empty(), "{html}");
    for asset in assets {
        assert!(!asset.starts_with("http"), "external asset {asset}");
        let url = format!("{}/docs/{}", app.base, asset.trim_start_matches("./"));
        let response = app.client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
    }
    let initializer = app
        .client
        .get(format!("{}/docs/swagger-initializer.js", app.base))
        .send()
        .await
        .unwrap();
    assert!(initializer.text().await.unwrap().contains("/openapi.json"));

    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/api/v1/containers", "post"),
        ("/api/v1/containers", "get"),
        ("/api/v1/containers/{container_id}", "get"),
        ("/api/v1/containers/{container_id}", "delete"),
        ("/api/v1/containers/{container_id}/execute", "post"),
        ("/api/v1/containers/{container_id}/execute/stream", "post"),
        ("/api/v1/containers/{container_id}/browse", "get"),
        ("/api/v1/containers/{container_id}/files", "get"),
        ("/api/v1/containers/{container_id}/files/raw", "get"),
        ("/api/v1/containers/{container_id}/files/raw", "put"),
        ("/api/v1/containers/{container_id}/archive", "get"),
        ("/api/v1/containers/{container_id}/archive", "put"),
        ("/api/v1/health", "get"),
        ("/api/v1/health/ready", "get"),
        ("/api/v1/health/live", "get"),
        ("/api/v1/info", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from openapi.json"
        );
    }
}

/// An error answered before the request's body arrived leaves that body unread: the
/// answer says `Connection: close`, so a keep-alive client does not lose its next
/// request on a connection the server is about to drop.
#[tokio::test]
async fn an_error_before_the_body_is_read_closes_the_connection_and_says_so() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = &world().app;
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let body = r#"{"command": "true"}"#;
    stream
        .write_all(
            format!(
                "POST /api/v1/containers/no-such-sandbox/execute HTTP/1.1\r\nHost: {address}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered before the body")
        .unwrap();
    let head = String::from_utf8_lossy(&answer[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
}
