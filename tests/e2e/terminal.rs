//! The terminal: a WebSocket to a login shell on a pseudo-terminal.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{scratch, spawn_app, test_config, unique, world};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads the terminal until its output contains `wanted` (or the shell exits);
/// returns everything read and the exit message, if any.
async fn read_until(socket: &mut Socket, wanted: &str) -> (String, Option<Value>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while Instant::now() < deadline {
        let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(20), socket.next()).await
        else {
            break;
        };
        match message.unwrap() {
            Message::Binary(bytes) => {
                seen.push_str(&String::from_utf8_lossy(&bytes));
                if seen.contains(wanted) {
                    return (seen, None);
                }
            }
            Message::Text(text) => return (seen, Some(serde_json::from_str(&text).unwrap())),
            Message::Close(_) => break,
            _ => {}
        }
    }
    panic!("never saw {wanted:?}; saw {seen:?}");
}

#[tokio::test]
async fn the_terminal_echoes_resizes_and_reports_the_exit() {
    let world = world();
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.api_keys = repobox::config::List(vec!["secret-key".to_owned()]);
    let server = spawn_app(config).await;
    let mut app = server.app.clone();
    app.key = Some("secret-key".to_owned());
    let url = world.git.url(&unique("terminal"), "simple");
    let (_, sandbox) = app.sandbox(json!({ "repo_url": url })).await;
    let ws = server.app.base.replacen("http://", "ws://", 1);

    // Unknown sandbox: 404 before any upgrade; not a WebSocket: 400; no key: 401.
    let (status, _) = app
        .get("/api/v1/containers/repo-container-0-0/terminal")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app
        .get(&format!("/api/v1/containers/{}/terminal", sandbox.id))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let refused =
        tokio_tungstenite::connect_async(format!("{ws}/api/v1/containers/{}/terminal", sandbox.id))
            .await;
    assert!(refused.is_err(), "a terminal without the key");

    // The key as ?access_token= (what a browser can do).
    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "{ws}/api/v1/containers/{}/terminal?cols=100&rows=30&access_token=secret-key",
        sandbox.id
    ))
    .await
    .expect("the terminal opens");
    socket
        .send(Message::Binary(
            "echo typed-$((6*7))\r".as_bytes().to_vec().into(),
        ))
        .await
        .unwrap();
    let (seen, _) = read_until(&mut socket, "typed-42").await;
    assert!(
        seen.contains("echo typed-$((6*7))"),
        "the input is echoed: {seen:?}"
    );
    socket
        .send(Message::Text(
            json!({"type": "resize", "cols": 123, "rows": 45})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    socket
        .send(Message::Binary(
            "stty size; pwd; tty\r".as_bytes().to_vec().into(),
        ))
        .await
        .unwrap();
    let (seen, _) = read_until(&mut socket, "/dev/pts/").await;
    assert!(seen.contains("45 123"), "{seen:?}");
    assert!(seen.contains("/workspace"), "{seen:?}");
    socket
        .send(Message::Binary("exit 5\r".as_bytes().to_vec().into()))
        .await
        .unwrap();
    let (_, exit) = read_until(&mut socket, "\u{0}never").await;
    assert_eq!(exit, Some(json!({"type": "exit", "exit_code": 5})));
    // Then a normal closure (1000), not a Close without a code (read as 1005).
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => {}
            other => panic!("no Close after the exit: {other:?}"),
        }
    };
    let close = close.expect("the Close carries a code");
    assert_eq!(
        close.code,
        tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal
    );

    // A client that goes away ends its shell.
    let (socket, _) = tokio_tungstenite::connect_async(format!(
        "{ws}/api/v1/containers/{}/terminal?access_token=secret-key",
        sandbox.id
    ))
    .await
    .unwrap();
    drop(socket);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, list) = app
            .get(&format!("/api/v1/containers/{}/processes", sandbox.id))
            .await;
        let running = list["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["status"] == "running")
            .count();
        if running == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shell outlived its terminal: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sandbox);
    server.stop().await;
}
