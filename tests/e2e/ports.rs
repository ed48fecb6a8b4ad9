//! Ports: HTTP and WebSockets forwarded to servers inside sandboxes without network,
//! the list of listening ports, the key kept out of the sandbox, clients that stall
//! or leave, and `repobox port-forward`.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{SandboxGuard, TestApp, scratch, spawn_app, test_config, unique, world};

/// A server for the tests, in Python's standard library: `GET /headers` answers the
/// request's path and headers as JSON, `POST` echoes the body, `GET /endless` streams
/// until the client goes, `GET /redirect` sends to `/headers`.
const ECHO_SERVER: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def send(self, status, body, kind="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Service-Worker-Allowed", "/")
        self.send_header("Clear-Site-Data", '"*"')
        self.send_header("Set-Cookie", "repobox_port=stolen; Path=/")
        self.send_header("Set-Cookie", "app=1; Path=/")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/endless":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            chunk = b"x" * 65536
            try:
                while True:
                    self.wfile.write(chunk)
            except Exception:
                return
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/headers")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
        self.send(200, body.encode())

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.send(200, body, "application/octet-stream")

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

/// A WebSocket echo server in Python's standard library: the handshake, then every
/// text or binary frame sent back, until a Close.
const WEBSOCKET_SERVER: &str = r#"
import base64, hashlib, socketserver, struct, sys

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

def read_exact(f, n):
    data = f.read(n)
    if data is None or len(data) < n:
        raise EOFError
    return data

class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        headers = {}
        self.rfile.readline()
        while True:
            line = self.rfile.readline().decode().strip()
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
        self.wfile.flush()
        try:
            while True:
                first, second = read_exact(self.rfile, 2)
                opcode = first & 0x0F
                length = second & 0x7F
                if length == 126:
                    length = struct.unpack(">H", read_exact(self.rfile, 2))[0]
                elif length == 127:
                    length = struct.unpack(">Q", read_exact(self.rfile, 8))[0]
                mask = read_exact(self.rfile, 4) if second & 0x80 else b"\0\0\0\0"
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(read_exact(self.rfile, length)))
                if opcode == 8:
                    self.wfile.write(b"\x88\x00")
                    self.wfile.flush()
                    return
                if opcode in (1, 2):
                    if len(payload) < 126:
                        head = struct.pack(">BB", 0x80 | opcode, len(payload))
                    elif len(payload) < 65536:
                        head = struct.pack(">BBH", 0x80 | opcode, 126, len(payload))
                    else:
                        head = struct.pack(">BBQ", 0x80 | opcode, 127, len(payload))
                    self.wfile.write(head + payload)
                    self.wfile.flush()
        except EOFError:
            return

class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

async fn sandbox(app: &TestApp) -> SandboxGuard {
    let url = world().git.url(&unique("ports"), "simple");
    app.sandbox(json!({ "repo_url": url })).await.1
}

/// Runs `command` in the sandbox; it must exit 0. Returns its stdout.
async fn sh(app: &TestApp, id: &str, command: &str) -> String {
    let result = app
        .exec_with(id, json!({ "command": command, "timeout_secs": 120 }))
        .await;
    assert_eq!(result["exit_code"], 0, "{command}: {result}");
    result["stdout"].as_str().unwrap().to_owned()
}

/// Writes `text` to `path` in the sandbox through the files API.
async fn put_file(app: &TestApp, id: &str, path: &str, text: &str) {
    let response = app
        .request(
            Method::PUT,
            &format!("/api/v1/containers/{id}/files/raw?file_path={path}"),
        )
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// Starts `command` as a background process and waits until `port` listens.
async fn serve(app: &TestApp, id: &str, command: &str, port: u16) {
    let (status, process) = app
        .post(
            &format!("/api/v1/containers/{id}/processes"),
            &json!({ "command": command }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{process}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, ports) = app.get(&format!("/api/v1/containers/{id}/ports")).await;
        assert_eq!(status, StatusCode::OK, "{ports}");
        if ports
            .as_array()
            .unwrap()
            .iter()
            .any(|listed| listed["port"] == port)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{command} never listened on {port}: {ports}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Ends of connections to `port` established inside the sandbox (a connection over
/// loopback has two).
async fn established(app: &TestApp, id: &str, port: u16) -> usize {
    let out = sh(
        app,
        id,
        &format!(
            "cat /proc/net/tcp /proc/net/tcp6 | awk '$4 == \"01\" && ($2 ~ /:{port:04X}$/ || $3 ~ /:{port:04X}$/)' | wc -l"
        ),
    )
    .await;
    out.trim().parse().unwrap()
}

#[tokio::test]
async fn a_port_serves_pages_files_streams_and_posts() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    let base = format!("/api/v1/containers/{id}/ports");

    // Nothing listens yet: 502 port_closed; not a port: 400.
    let (status, body) = app.get(&format!("{base}/3000/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["code"], "port_closed");
    for bad in ["0", "65536", "http", "-1"] {
        let (status, body) = app.get(&format!("{base}/{bad}/")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["code"], "invalid_request");
    }

    sh(
        app,
        id,
        "mkdir -p /tmp/site/sub && echo '<h1>hello from the sandbox</h1>' > /tmp/site/index.html \
         && printf 'file bytes\\n' > /tmp/site/sub/file.txt \
         && head -c 5242880 /dev/urandom > /tmp/site/big.bin",
    )
    .await;
    let inside = sh(app, id, "sha256sum /tmp/site/big.bin").await;
    serve(
        app,
        id,
        "cd /tmp/site && exec python3 -m http.server 3000 --bind 127.0.0.1",
        3000,
    )
    .await;

    // The list names the port and its process.
    let (status, ports) = app.get(&base).await;
    assert_eq!(status, StatusCode::OK);
    let listed = ports
        .as_array()
        .unwrap()
        .iter()
        .find(|port| port["port"] == 3000)
        .unwrap();
    assert!(
        listed["process"]
            .as_str()
            .unwrap()
            .contains("http.server 3000"),
        "{listed}"
    );
    assert!(listed["pid"].as_u64().is_some(), "{listed}");
    assert_eq!(listed["addresses"], json!(["127.0.0.1"]));

    let page = app.text(&format!("{base}/3000/")).await;
    assert!(page.contains("hello from the sandbox"), "{page}");
    let file = app.text(&format!("{base}/3000/sub/file.txt")).await;
    assert_eq!(file, "file bytes\n");
    // The directory without its slash: http.server's redirect stays under the port.
    let listing = app.text(&format!("{base}/3000/sub")).await;
    assert!(listing.contains("file.txt"), "{listing}");
    // `/ports/3000` goes to `/ports/3000/`.
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}{base}/3000?x=1", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()[header::LOCATION],
        format!("{base}/3000/?x=1").as_str()
    );

    // 5 MiB streamed intact.
    let response = app
        .request(Method::GET, &format!("{base}/3000/big.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.bytes_stream();
    let mut hasher = Sha256::new();
    let mut total = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(total, 5 * 1024 * 1024);
    assert_eq!(
        inside.split_whitespace().next().unwrap(),
        hex(&hasher.finalize())
    );

    // A server on ::1 only (where `localhost` may lead), when the sandbox has IPv6.
    let v6 = app
        .exec(
            id,
            "python3 -c 'import socket; socket.socket(socket.AF_INET6).bind((\"::1\", 0))'",
        )
        .await;
    if v6["exit_code"] == 0 {
        serve(
            app,
            id,
            "cd /tmp/site && exec python3 -m http.server 3001 --bind ::1",
            3001,
        )
        .await;
        let file = app.text(&format!("{base}/3001/sub/file.txt")).await;
        assert_eq!(file, "file bytes\n");
    }

    // A body reaches a server and comes back.
    put_file(app, id, "/tmp/echo.py", ECHO_SERVER).await;
    serve(app, id, "exec python3 /tmp/echo.py 8001", 8001).await;
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let response = app
        .request(Method::POST, &format!("{base}/8001/echo"))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().to_vec(), body);
    // A form post too (pages send them; the API's own routes refuse them).
    let response = app
        .request(Method::POST, &format!("{base}/8001/form"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("a=1&b=2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "a=1&b=2");

    // What the sandbox's server sees, and what it may not send.
    let response = app
        .request(Method::GET, &format!("{base}/8001/headers?q=1"))
        .header(header::COOKIE, "theirs=1")
        .send()
        .await
        .unwrap();
    let headers = response.headers().clone();
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["path"], "/headers?q=1");
    assert_eq!(seen["headers"]["host"], "localhost:8001");
    assert_eq!(
        seen["headers"]["x-forwarded-prefix"],
        format!("{base}/8001")
    );
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["cookie"], "theirs=1");
    assert!(headers.get("service-worker-allowed").is_none());
    assert!(headers.get("clear-site-data").is_none());
    let cookies: Vec<&str> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|value| value.to_str().unwrap())
        .collect();
    assert_eq!(cookies, ["app=1; Path=/"]);
    // A redirect to an absolute path stays under the port.
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}{base}/8001/redirect", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        response.headers()[header::LOCATION],
        format!("{base}/8001/headers").as_str()
    );
}

#[tokio::test]
async fn websockets_reach_a_port() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    put_file(app, id, "/tmp/ws.py", WEBSOCKET_SERVER).await;
    serve(app, id, "exec python3 /tmp/ws.py 8765", 8765).await;

    let ws = app.base.replacen("http://", "ws://", 1);
    let (mut socket, response) =
        tokio_tungstenite::connect_async(format!("{ws}/api/v1/containers/{id}/ports/8765/"))
            .await
            .expect("the upgrade goes through");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "twice"] {
        socket.send(Message::Text(text.into())).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed, Message::Text(text.into()));
    }
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    socket
        .send(Message::Binary(big.clone().into()))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::Binary(big.into()));
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn the_key_stays_out_of_the_sandbox() {
    let dir = scratch();
    let mut config = test_config(dir.path());
    config.api_keys = repobox::config::List(vec!["the-key".to_owned()]);
    let server = spawn_app(config).await;
    let mut app = server.app.clone();
    app.key = Some("the-key".to_owned());
    let sandbox = sandbox(&app).await;
    let id = &sandbox.id;
    put_file(&app, id, "/tmp/echo.py", ECHO_SERVER).await;
    serve(&app, id, "exec python3 /tmp/echo.py 8001", 8001).await;
    serve(&app, id, "exec python3 /tmp/echo.py 8002", 8002).await;
    let base = format!("{}/api/v1/containers/{id}/ports", app.base);
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // With the key as a bearer: nothing of it reaches the sandbox.
    let seen: Value = app
        .request(
            Method::GET,
            &format!("/api/v1/containers/{id}/ports/8001/headers"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    assert!(!seen.to_string().contains("the-key"), "{seen}");

    // No key: 401.
    let response = bare
        .get(format!("{base}/8001/headers"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = bare
        .get(format!("{base}/8001/headers?access_token=wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // The key in the URL: 303 to the URL without it, with the port's cookie.
    let response = bare
        .get(format!("{base}/8001/headers?a=1&access_token=the-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[header::LOCATION].to_str().unwrap();
    assert_eq!(
        location,
        format!("/api/v1/containers/{id}/ports/8001/headers?a=1")
    );
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(
        set_cookie.contains(&format!("Path=/api/v1/containers/{id}/ports/8001/")),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("the-key"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    // The cookie opens this port (a relative asset path), and is not forwarded.
    let response = bare
        .get(format!("{base}/8001/headers?b=2"))
        .header(header::COOKIE, format!("{cookie}; theirs=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["path"], "/headers?b=2");
    assert_eq!(seen["headers"]["cookie"], "theirs=1");
    assert!(!seen.to_string().contains("the-key"), "{seen}");
    // A POST with the cookie (a form on the page): no access_token reaches the server.
    let response = bare
        .post(format!("{base}/8001/x?access_token=the-key&c=3"))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body("posted")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "posted");

    // Not another port, not the API.
    let response = bare
        .get(format!("{base}/8002/headers"))
        .header(header::COOKIE, cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = bare
        .get(format!("{}/api/v1/containers/{id}", app.base))
        .header(header::COOKIE, cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = bare
        .get(format!("{}/api/v1/containers/{id}/ports", app.base))
        .header(header::COOKIE, cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A service worker's script: refused.
    let response = bare
        .get(format!("{base}/8001/sw.js"))
        .header(header::COOKIE, cookie)
        .header("Service-Worker", "script")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    drop(sandbox);
    server.stop().await;
}

/// The test process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test]
async fn a_stalled_or_dropped_client_holds_little_and_ends_its_tunnel() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    put_file(app, id, "/tmp/echo.py", ECHO_SERVER).await;
    serve(app, id, "exec python3 /tmp/echo.py 8001", 8001).await;

    // The sandbox writes without end; the client reads 1 MiB, then stops reading.
    let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(
            format!(
                "GET /api/v1/containers/{id}/ports/8001/endless HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0;
    while read < 1024 * 1024 {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0);
        read += n;
    }
    let before = rss();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 32 * 1024 * 1024,
        "the server held {grown} bytes more for a client that stopped reading"
    );
    // Both ends of the one connection, the agent's and the server's.
    assert_eq!(established(app, id, 8001).await, 2);

    // The client leaves: the connection in the sandbox ends.
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(15);
    while established(app, id, 8001).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the connection in the sandbox outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the port still answers, at once.
    let started = Instant::now();
    let (status, _) = app
        .get(&format!("/api/v1/containers/{id}/ports/8001/headers"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn port_forward_carries_tcp_to_a_port() {
    let app = &world().app;
    let sandbox = sandbox(app).await;
    let id = &sandbox.id;
    put_file(app, id, "/tmp/echo.py", ECHO_SERVER).await;
    serve(app, id, "exec python3 /tmp/echo.py 8001", 8001).await;

    // `repobox ports` lists it.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_repobox"))
        .args(["--url", &app.base, "ports", id])
        .env_remove("REPOBOX_URL")
        .env_remove("REPOBOX_API_KEY")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(
        listed.contains("8001") && listed.contains("echo.py"),
        "{listed}"
    );

    let local = crate::support::free_port();
    let mut forward = tokio::process::Command::new(env!("CARGO_BIN_EXE_repobox"))
        .args([
            "--url",
            &app.base,
            "port-forward",
            id,
            &format!("{local}:8001"),
        ])
        .env_remove("REPOBOX_URL")
        .env_remove("REPOBOX_API_KEY")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen: Value = loop {
        match client
            .get(format!("http://127.0.0.1:{local}/headers"))
            .send()
            .await
        {
            Ok(response) => break response.json().await.unwrap(),
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "port-forward never answered: {err}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(seen["path"], "/headers");
    assert_eq!(seen["headers"]["host"], format!("127.0.0.1:{local}"));
    // Several connections, a body both ways.
    for round in 0..3 {
        let body = format!("round {round}").repeat(10_000);
        let echoed = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{local}/echo"))
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(echoed, body);
    }
    forward.kill().await.unwrap();
}
