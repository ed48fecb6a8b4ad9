//! The MCP server as an agent meets it: the official Python MCP client (`mcp` from
//! PyPI, in a venv made by scripts/mcp-venv.sh) against a real server, over stdio
//! (`repobox mcp`, the built binary) and over streamable HTTP (`/mcp`), with and
//! without API keys. The client's side of the scenario is tests/e2e/mcp_client.py.

use std::path::PathBuf;
use std::process::Output;
use std::sync::OnceLock;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    OwnedApp, containers_with_label, scratch, spawn_app, test_config, unique, world,
};

/// The venv's python, made once per test process.
fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mcp-venv.sh");
        let output = std::process::Command::new("bash")
            .arg(script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running scripts/mcp-venv.sh");
        assert!(output.status.success(), "scripts/mcp-venv.sh failed");
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    })
}

/// Runs the client script with `args`; its one JSON line on success.
async fn client(args: &[&str]) -> Value {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/mcp_client.py");
    let output: Output = tokio::process::Command::new(python)
        .arg(script)
        .args(args)
        .env_remove("REPOBOX_URL")
        .env_remove("REPOBOX_API_KEY")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("running the MCP client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the MCP client failed ({:?}):\n{stdout}\n{stderr}",
        output.status.code()
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{stdout}\n{stderr}"))
}

/// Removes every container of a test server's instance when dropped, whatever the
/// test's outcome (the client destroys its sandbox itself; this is the net).
struct InstanceGuard(String);

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        for name in containers_with_label("repobox.instance", &self.0) {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &name])
                .output();
        }
    }
}

async fn server(key: Option<&str>, dir: &std::path::Path) -> (OwnedApp, InstanceGuard) {
    let mut config = test_config(dir);
    if let Some(key) = key {
        config.api_keys = repobox::config::List(vec![key.to_owned()]);
    }
    let server = spawn_app(config).await;
    let mut app = server.app.clone();
    app.key = key.map(str::to_owned);
    let guard = InstanceGuard(app.instance().await);
    (server, guard)
}

/// The scenario over both transports against one server; the sandboxes are gone after.
async fn both_transports(server: &OwnedApp, key: Option<&str>) {
    let world = world();
    let head = world.simple.trunk_head.as_str();
    let base = server.app.base.as_str();
    let mcp_url = format!("{base}/mcp");

    let stdio_repo = world.git.url(&unique("mcp-stdio"), "simple");
    let mut args = vec![
        "stdio",
        env!("CARGO_BIN_EXE_repobox"),
        base,
        &stdio_repo,
        "trunk",
        head,
    ];
    args.extend(key);
    let over_stdio = client(&args).await;

    let http_repo = world.git.url(&unique("mcp-http"), "simple");
    let mut args = vec!["http", &mcp_url, &http_repo, "trunk", head];
    args.extend(key);
    let over_http = client(&args).await;

    let mut app = server.app.clone();
    app.key = key.map(str::to_owned);
    for answer in [over_stdio, over_http] {
        let id = answer["container_id"].as_str().unwrap();
        let (status, body) = app.get(&format!("/api/v1/containers/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
}

#[tokio::test]
async fn mcp_tools_work_over_stdio_and_http() {
    let dir = scratch();
    let (server, _guard) = server(None, dir.path()).await;
    both_transports(&server, None).await;
    server.stop().await;
}

#[tokio::test]
async fn mcp_needs_the_api_key_when_keys_are_set() {
    let dir = scratch();
    let key = "mcp-key";
    let (server, _guard) = server(Some(key), dir.path()).await;
    let mcp_url = format!("{}/mcp", server.app.base);

    // No key, a wrong key: 401 with the API's error shape, before any MCP.
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "curl", "version": "1"}}});
    for presented in [None, Some("wrong-key")] {
        let mut request = server
            .app
            .client
            .post(&mcp_url)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(presented) = presented {
            request = request.bearer_auth(presented);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{presented:?}");
        let body: Value = response.json().await.unwrap();
        assert!(body["detail"].is_string(), "{body}");
    }
    // A real MCP client without the key cannot connect over HTTP, and `repobox mcp`
    // without REPOBOX_API_KEY gets the server's 401 as each tool's error.
    let refused = client(&[
        "refused",
        &mcp_url,
        env!("CARGO_BIN_EXE_repobox"),
        &server.app.base,
    ])
    .await;
    let statuses = refused["statuses"].as_array().unwrap();
    assert!(
        !statuses.is_empty() && statuses.iter().all(|status| status == 401),
        "{refused}"
    );
    // With it: everything, over both transports.
    both_transports(&server, Some(key)).await;
    server.stop().await;
}
